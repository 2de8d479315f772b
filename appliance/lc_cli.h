/* lc_cli: private header of the `listcast` command-line tool (appliance/lc_*.c).
 *
 * Every command is a function `int lc_cmd_NAME(struct lc_ctx *, int argc, char **argv)` with argv[0] the
 * command word; it returns the process exit status: LC_EXIT_OK, LC_EXIT_REFUSED (the operation was refused or
 * failed: list exists, no such list, Redis unreachable) or LC_EXIT_USAGE (bad command line). Every error is one
 * line "listcast: reason" on stderr, printed by lc_usage / lc_refused.
 */
#ifndef LC_CLI_H
#define LC_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <hiredis/hiredis.h>

#include "lc_cfg.h"
#include "lc_log.h"

#define LC_EXIT_OK 0
#define LC_EXIT_REFUSED 1
#define LC_EXIT_USAGE 2

struct lc_json;

/* One invocation of the tool. */
struct lc_ctx {
    struct lc_cfg *cfg;   /* loaded and finished */
    int json;             /* --json: machine-readable output on stdout */
    const char *cmd;      /* "sub add" etc., for messages */
    redisContext *rc;     /* connected on first use by lc_redis */
};

/* ---- option parsing (lc_main.c) -------------------------------------------------------------------------- */

/* An option a command accepts. Every command also accepts --json and -h/--help. */
struct lc_opt {
    const char *lng;  /* "policy" for --policy */
    char shrt;        /* 'p' for -p, or 0 */
    int has_arg;
    int id;           /* > 0 */
};

struct lc_optstate {
    int argc;
    char **argv;
    int i;                    /* next argv index */
    int only_pos;             /* after "--" */
    const char *arg;          /* the option's argument (NULL if it takes none), or the positional argument */
    const struct lc_opt *opt; /* the option returned, an element of the caller's table */
};

/* lc_opt_init starts parsing argv[1..] (argv[0] is the command word). */
void lc_opt_init(struct lc_optstate *st, int argc, char **argv);
/* lc_opt_next returns the id of the next option of opts (may be NULL), 0 for a positional argument (st->arg),
 * or -1 at the end. It handles the common options of the command ctx->cmd itself: --json sets ctx->json,
 * -h/--help prints the manual page ctx->cmd; that, or a usage error (printed), returns -2 with *status the
 * exit status the command returns. "-" alone is a positional argument. */
int lc_opt_next(struct lc_ctx *ctx, struct lc_optstate *st, const struct lc_opt *opts, int *status);
/* lc_args parses the whole command line of the command ctx->cmd: val[k] (when not NULL) gets the argument of
 * each opts[k] given ("" for an option without one; the last one given wins), pos[0..npos-1] the positional
 * arguments in order; what is not given is left as it is. A further positional argument is a usage error.
 * Returns -1 when the command goes on, else the exit status it returns at once (help or error printed). */
int lc_args(struct lc_ctx *ctx, int argc, char **argv, const struct lc_opt *opts, const char **val,
            const char **pos, int npos);

/* A subcommand: its name for messages and manual pages ("list create"; the word after the space is what
 * selects it) and its function, called with argv from the subcommand word. */
struct lc_subcmd {
    const char *name;
    int (*fn)(struct lc_ctx *ctx, int argc, char **argv);
};
/* lc_dispatch runs the subcommand argv[1] of the command ctx->cmd, from the NULL-terminated table subs, with
 * ctx->cmd set to its name. A missing or unknown subcommand is a usage error naming the choices ("create, ls
 * or show"). */
int lc_dispatch(struct lc_ctx *ctx, int argc, char **argv, const struct lc_subcmd *subs, const char *choices);

/* ---- messages and helpers (lc_main.c) --------------------------------------------------------------------- */

int lc_usage(struct lc_ctx *ctx, const char *fmt, ...) LC_PRINTF(2, 3);   /* prints, returns LC_EXIT_USAGE */
int lc_refused(struct lc_ctx *ctx, const char *fmt, ...) LC_PRINTF(2, 3); /* prints, returns LC_EXIT_REFUSED */
/* lc_help prints a manual page to stdout and returns LC_EXIT_OK. */
int lc_help(const char *page);

/* lc_redis_url_of computes the Redis URL: redis.url, or unix://STATE.DIR/redis.sock (the embedded Redis of
 * `listcast up`) when redis.url is empty. Returns 0 or -1 (path too long). */
int lc_redis_url_of(const struct lc_cfg *cfg, char *out, size_t outlen);
/* lc_redis returns the context's Redis connection, connecting on first use; NULL after printing why. */
redisContext *lc_redis(struct lc_ctx *ctx);
/* lc_redis_script loads a Lua script (SCRIPT LOAD) and writes its SHA1 (41 bytes) to sha; 0 or -1 + err. */
int lc_redis_script(redisContext *rc, const char *body, char *sha, char *err, size_t errlen);

/* lc_norm_list checks and normalises a list address argument; prints a usage error and returns -1 if bad. */
int lc_norm_list(struct lc_ctx *ctx, const char *arg, char *out);
/* lc_list_need checks that a list exists; returns 0, or -1 after printing why not (no such list, Redis). */
int lc_list_need(struct lc_ctx *ctx, const char *list);
/* lc_list_open is lc_norm_list (into out, LC_ADDR_MAX + 1 bytes) then lc_list_need; returns LC_EXIT_OK or the
 * exit status (usage error for a malformed address, refused for a missing list), the reason printed. */
int lc_list_open(struct lc_ctx *ctx, const char *arg, char *out);
/* lc_word_in reports whether w is one of the NULL-terminated words. */
int lc_word_in(const char *w, const char *const *words);
/* lc_fmt_time renders a unix time as "YYYY-MM-DD HH:MM:SS UTC" ("-" for 0). */
void lc_fmt_time(long long t, char *out, size_t outlen);
/* lc_json_out starts JSON output on stdout; lc_json_done finishes it (returns an exit status). */
struct lc_json *lc_json_out(void);
int lc_json_done(struct lc_json *j, int status);

/* ---- commands --------------------------------------------------------------------------------------------- */

int lc_cmd_up(struct lc_ctx *ctx, int argc, char **argv);     /* lc_up.c */
int lc_cmd_list(struct lc_ctx *ctx, int argc, char **argv);   /* lc_list.c */
int lc_cmd_sub(struct lc_ctx *ctx, int argc, char **argv);    /* lc_sub.c */
int lc_cmd_post(struct lc_ctx *ctx, int argc, char **argv);   /* lc_post.c */
int lc_cmd_bounce(struct lc_ctx *ctx, int argc, char **argv); /* lc_bounce.c */
int lc_cmd_admin(struct lc_ctx *ctx, int argc, char **argv);  /* lc_admin.c */
int lc_cmd_dkim(struct lc_ctx *ctx, int argc, char **argv);   /* lc_dkim.c */
/* lc_list_resume runs `listcast list resume LIST` (lc_post.c, beside the rate views). */
int lc_list_resume(struct lc_ctx *ctx, int argc, char **argv);
/* lc_complaint_rates reads complaints.warn_rate and complaints.pause_rate; -1 after a usage error naming the key. */
int lc_complaint_rates(struct lc_ctx *ctx, double *warn, double *pause);
int lc_cmd_doctor(struct lc_ctx *ctx, int argc, char **argv); /* lc_doctor.c */

/* Manual pages of each command (in the command's file); NULL-terminated {name, text} tables. */
struct lc_page {
    const char *name; /* "list create" */
    const char *text;
};
extern const struct lc_page lc_pages_up[], lc_pages_list[], lc_pages_sub[], lc_pages_post[];
extern const struct lc_page lc_pages_bounce[]; /* lc_bounce.c */
extern const struct lc_page lc_pages_admin[];  /* lc_admin.c */
extern const struct lc_page lc_pages_dkim[];   /* lc_dkim.c */
extern const struct lc_page lc_pages_doctor[]; /* lc_doctor.c */

/* Used by `listcast up --demo` (lc_up.c). */
/* lc_list_ensure creates a list unless it exists; returns 1 created, 0 existed, -1 error (err). */
int lc_list_ensure(redisContext *rc, const char *list, const char *policy, const char *owner, char *err,
                   size_t errlen);
/* lc_sub_add_many subscribes normalised addresses; returns 0 or -1 (err). */
int lc_sub_add_many(redisContext *rc, const char *list, const char *const *addrs, size_t n, char *err,
                    size_t errlen);

/* Text for the OPTIONS and EXIT STATUS sections that every page shares. */
#define LC_HELP_COMMON_OPTIONS                                                                                 \
    "  --config FILE      read the configuration from FILE (one \"key = value\" a line)\n"                    \
    "  --set KEY=VALUE    override one configuration key; may be repeated; applied after --config\n"           \
    "  --json             print machine-readable JSON on stdout instead of text\n"                             \
    "  -h, --help         print this manual page and exit\n"
#define LC_HELP_EXIT                                                                                           \
    "EXIT STATUS\n"                                                                                            \
    "  0  success\n"                                                                                           \
    "  1  the operation was refused or failed (for example: the list exists, no such list or subscriber,\n"    \
    "     Redis unreachable); the reason is printed as one line \"listcast: reason\" on stderr\n"              \
    "  2  usage error (unknown option or command, missing or malformed argument, unknown configuration key\n"  \
    "     or bad value); one line \"listcast: reason\" on stderr\n"
#define LC_HELP_REDIS                                                                                          \
    "  The tool talks to the Redis named by redis.url; when redis.url is empty it uses the embedded Redis\n"   \
    "  of `listcast up`, at unix://STATE.DIR/redis.sock (state.dir defaults to /var/lib/listcast).\n"

#endif
