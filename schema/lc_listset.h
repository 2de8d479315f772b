/* lc_listset: the tunable settings of a list (fields of lc:list:LIST) that take a number or one word, with
 * their bounds, defaults and help, in one table read by `listcast list set/show` and the web UI alike, so both
 * accept exactly the same values. The daemons that read a setting keep their own fallback to the default for a
 * value that is absent or out of bounds (a hand-edited hash), so this table is the gate, not the only guard.
 * The address-valued and free-text settings (owner, owners, moderators, subject_prefix, footer) are checked
 * where they are edited, as before. See schema/SCHEMA.md for what each daemon does with a setting.
 */
#ifndef LC_LISTSET_H
#define LC_LISTSET_H

#include <stddef.h>

enum lc_listset_kind {
    LC_LS_NUM,  /* a decimal number in [lo, hi] */
    LC_LS_INT,  /* an integer in [lo, hi] */
    LC_LS_WORD, /* one of the words of choices */
};

struct lc_listset {
    const char *name;    /* the lc:list:LIST field, e.g. "bounce_threshold" */
    const char *opt;     /* the CLI option, e.g. "--bounce-threshold" */
    enum lc_listset_kind kind;
    double lo, hi;       /* LC_LS_NUM, LC_LS_INT */
    const char *choices; /* LC_LS_WORD: the allowed words, space separated; the first is the default */
    const char *def;     /* the value that applies when the field is absent */
    const char *help;    /* one line for --help and the web UI */
};

/* lc_listsets: the table, ended by an entry with name NULL; at most LC_LISTSET_MAX entries. */
#define LC_LISTSET_MAX 16
#define LC_LISTSET_VAL 32 /* longest value, with its NUL */
extern const struct lc_listset lc_listsets[];

/* lc_listset_find returns the setting named name (field name, or CLI option with its leading "--"), or NULL. */
const struct lc_listset *lc_listset_find(const char *name);

/* lc_listset_check checks val for s. An empty val means "back to the default" (the caller deletes the field).
 * On success writes the value to store (at most outlen octets with the NUL: numbers as given, words lower
 * case) and returns 0; otherwise returns -1 with a one-line text naming the accepted values in why (whylen
 * octets). Thread-safe. */
int lc_listset_check(const struct lc_listset *s, const char *val, char *out, size_t outlen, char *why, size_t whylen);

#endif
