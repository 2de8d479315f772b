/* lc_listset: the table of a list's numeric and one-word settings (see lc_listset.h). Bounds match the ones the
 * reading daemons apply (schema/lc_schema.h LC_LUA_BOUNCE_FAIL, bounce/bnc_probe.c, sender/snd_queue.c,
 * listd/lsd_post.c). Values are at most 32 octets; no locale-dependent parsing (strtod is used only after the
 * characters were checked to be digits and at most one '.'). */
#include "lc_listset.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LS_VAL_MAX LC_LISTSET_VAL

const struct lc_listset lc_listsets[] = {
    {"dmarc_mitigation", "--dmarc-mitigation", LC_LS_WORD, 0, 0, "munge wrap none", "munge",
     "what listd does to a post whose From: domain publishes DMARC p=quarantine or p=reject: munge (From: "
     "\"Name via LIST\"), wrap (message/rfc822 inside a message from the list) or none"},
    {"list_unsubscribe", "--list-unsubscribe", LC_LS_WORD, 0, 0, "personal mailto", "personal",
     "personal: each copy gets its own RFC 8058 one-click List-Unsubscribe (DKIM signs every copy); mailto: one "
     "List-Unsubscribe <mailto:LIST-unsubscribe@DOMAIN> for all copies (DKIM signs the post once)"},
    {"bounce_hard", "--bounce-hard", LC_LS_NUM, 0, 1000, NULL, "1", "bounce score a hard bounce adds"},
    {"bounce_soft", "--bounce-soft", LC_LS_NUM, 0, 1000, NULL, "0.5", "bounce score a soft bounce adds"},
    {"bounce_threshold", "--bounce-threshold", LC_LS_NUM, 0.001, 1000000, NULL, "5",
     "bounce score at which delivery to a subscriber is disabled"},
    {"bounce_stale_days", "--bounce-stale-days", LC_LS_NUM, 0, 36500, NULL, "7",
     "a score whose last bounce is older than this many days starts again from 0 (0: never)"},
    {"probe", "--probe", LC_LS_WORD, 0, 0, "1 0", "1",
     "1: send a probe to a subscriber disabled by bounces (delivered: re-enabled; bounced: unsubscribed); 0: no "
     "probes, disabled subscribers stay disabled"},
    {"probe_delay", "--probe-delay", LC_LS_INT, 0, 2592000, NULL, "900",
     "seconds from disabling a subscriber to sending its probe (at most 30 days)"},
    {NULL, NULL, LC_LS_WORD, 0, 0, NULL, NULL, NULL},
};

const struct lc_listset *lc_listset_find(const char *name)
{
    if (!name)
        return NULL;
    for (const struct lc_listset *s = lc_listsets; s->name; s++)
        if (!strcmp(name, s->name) || !strcmp(name, s->opt))
            return s;
    return NULL;
}

/* word_in reports whether w (lower-cased copy) is one of the space separated words of list. */
static int word_in(const char *w, const char *list)
{
    size_t n = strlen(w);
    for (const char *p = list; *p;) {
        size_t m = strcspn(p, " ");
        if (m == n && !strncmp(p, w, n))
            return 1;
        p += m;
        p += strspn(p, " ");
    }
    return 0;
}

int lc_listset_check(const struct lc_listset *s, const char *val, char *out, size_t outlen, char *why, size_t whylen)
{
    size_t n = strlen(val);
    if (n == 0) {
        if (outlen)
            out[0] = '\0';
        return 0;
    }
    if (n >= LS_VAL_MAX || n >= outlen)
        goto bad;
    if (s->kind == LC_LS_WORD) {
        char w[LS_VAL_MAX];
        for (size_t i = 0; i <= n; i++)
            w[i] = (char)(val[i] >= 'A' && val[i] <= 'Z' ? val[i] - 'A' + 'a' : val[i]);
        if (!word_in(w, s->choices))
            goto bad;
        memcpy(out, w, n + 1);
        return 0;
    }
    size_t digits = 0, dots = 0;
    for (size_t i = 0; i < n; i++) {
        if (val[i] >= '0' && val[i] <= '9')
            digits++;
        else if (val[i] == '.' && s->kind == LC_LS_NUM)
            dots++;
        else
            goto bad;
    }
    if (!digits || dots > 1 || val[0] == '.' || val[n - 1] == '.')
        goto bad;
    double x = strtod(val, NULL);
    if (!isfinite(x) || x < s->lo || x > s->hi)
        goto bad;
    memcpy(out, val, n + 1);
    return 0;
bad:
    if (s->kind == LC_LS_WORD)
        snprintf(why, whylen, "%s must be one of: %s", s->name, s->choices);
    else
        snprintf(why, whylen, "%s must be %s from %.10g to %.10g", s->name,
                 s->kind == LC_LS_INT ? "a whole number" : "a number", s->lo, s->hi);
    return -1;
}
