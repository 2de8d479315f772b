/* lc_bounce: `listcast bounce parse|ls`: classify a bounce message with the daemon's parser (lc_bounce), and
 * report a list's bounces by reason, by domain and by post (schema/SCHEMA.md lc:bncstat:*:LIST).
 *
 * Contract: `bounce parse` needs no Redis: it reads one message (a file or stdin, at most BNC_MAX_INPUT bytes;
 * larger input is refused) and prints what bnc_parse found, one record per failed recipient (and per
 * complaint), the same classification the bounce daemon applies. When the message names no failure (junk, a
 * human reply, a broken report) it prints one record with an empty recipient and reason "undefined", so a
 * caller always gets an answer. `bounce ls` is read-only.
 * Limits: `bounce ls` prints at most --limit rows a table (default 20) in text mode, every row in JSON.
 */
#include "lc_cli.h"
#include "lc_addr.h"
#include "lc_json.h"
#include "lc_schema.h"

#include "bnc_parse.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BNC_LS_DEFAULT 20
#define BNC_LS_MAX 100000

static const char page_bounce[] =
    "NAME\n"
    "  listcast bounce - classify bounce messages and report a list's bounces\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast bounce parse FILE|- [--all] [--json]\n"
    "  listcast bounce ls LIST@DOMAIN [--limit N] [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  See `listcast bounce parse --help` and `listcast bounce ls --help`.\n"
    "\n"
    "OPTIONS\n" LC_HELP_COMMON_OPTIONS "\n" LC_HELP_EXIT;

static const char page_parse[] =
    "NAME\n"
    "  listcast bounce parse - classify a bounce message\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast bounce parse FILE|- [--all] [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  Reads one message (FILE, or standard input for \"-\") as received at a VERP address, and prints\n"
    "  each failed recipient it reports, with the classification the bounce daemon applies to\n"
    "  subscribers. Understood: RFC 3464 delivery status notifications (in any MIME structure, several\n"
    "  reports in one message, mbox files of several messages), RFC 5965 ARF complaints, Amazon SES JSON\n"
    "  notifications (bare or inside SNS), Apple Mail unsubscribe requests, and the free-text bounces of\n"
    "  qmail, Exim, Postfix, Sendmail, Exchange/Office 365, Gmail, Yahoo, Google Groups, Lotus Notes and\n"
    "  others. RFC 3834 auto-replies and `Action: delayed` reports are not failures.\n"
    "\n"
    "  Text output: one line per recipient, five fields separated by a TAB:\n"
    "    recipient   the failed address (lower case; empty when the message names none)\n"
    "    status      the enhanced status code (RFC 3463), e.g. 5.1.1; \"-\" when unknown\n"
    "    replycode   the SMTP reply code, e.g. 550; 0 when unknown\n"
    "    reason      userunknown hostunknown mailboxfull hasmoved suspend expired filtered rejected\n"
    "                blocked spamdetected virusdetected policyviolation securityerror authfailure\n"
    "                requireptr badreputation contenterror mesgtoobig exceedlimit toomanyconn speeding\n"
    "                systemerror systemfull networkerror mailererror notaccept norelaying\n"
    "                notcompliantrfc syntaxerror onhold undefined feedback delivered (the vocabulary\n"
    "                of the bounce corpus, shared/corpus/bounces/README.md)\n"
    "    hardbounce  1 when the address itself is dead (userunknown, hostunknown, hasmoved, notaccept,\n"
    "                with a permanent 5.x.x status), else 0. Policy, spam, authentication (SPF, DKIM,\n"
    "                DMARC) and reputation rejections are never hard.\n"
    "  An ARF complaint prints as reason \"feedback\". A message that reports no failure prints one line\n"
    "  with an empty recipient, status \"-\", replycode 0, reason \"undefined\" and hardbounce 0.\n"
    "\n"
    "  With --json: a JSON array of objects with exactly the keys recipient (string), status (string,\n"
    "  \"\" when unknown), replycode (integer, 0 when unknown), reason (string) and hardbounce (boolean).\n"
    "\n"
    "OPTIONS\n"
    "  -a, --all          also print delayed and delivered entries (they are not failures)\n"
    LC_HELP_COMMON_OPTIONS
    "\n" LC_HELP_EXIT
    "  A message over 10 MiB, or a FILE that cannot be read, is refused (exit 1).\n"
    "\n"
    "EXAMPLES\n"
    "  listcast bounce parse /var/mail/bounce.eml\n"
    "  listcast bounce parse - --json < bounce.eml\n"
    "  for f in *.eml; do printf '%s\\t' \"$f\"; listcast bounce parse \"$f\" | head -1; done\n";

static const char page_ls[] =
    "NAME\n"
    "  listcast bounce ls - report a list's bounces by reason, by domain and by post\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast bounce ls LIST@DOMAIN [--limit N] [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  Prints the list's totals (failures classified by the bounce daemon, complaints), then three\n"
    "  tables, largest counts first: failures by reason (complaints count as \"feedback\"), by recipient\n"
    "  domain, and by post id. Failures are the bounce messages received at VERP addresses and the\n"
    "  permanent refusals the sender met in the SMTP dialogue.\n"
    "  With --json: an object {list, bounces, complaints, by_reason: [{reason, count}], by_domain:\n"
    "  [{domain, count}], by_post: [{post, count}]}, every row, largest counts first.\n"
    LC_HELP_REDIS
    "\n"
    "OPTIONS\n"
    "  -n, --limit N      at most N rows in each text table (default 20)\n"
    LC_HELP_COMMON_OPTIONS
    "\n" LC_HELP_EXIT
    "  A list that does not exist is refused (exit 1).\n"
    "\n"
    "EXAMPLES\n"
    "  listcast bounce ls news@lists.example.org\n"
    "  listcast bounce ls news@lists.example.org --json\n";

const struct lc_page lc_pages_bounce[] = {
    {"bounce", page_bounce},
    {"bounce parse", page_parse},
    {"bounce ls", page_ls},
    {NULL, NULL},
};

/* ---- parse ------------------------------------------------------------------------------------------------ */

/* Read all of f, up to max + 1 bytes (so the caller can tell "too large"). */
static char *slurp(FILE *f, size_t max, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        abort();
    for (;;) {
        if (n == cap) {
            if (cap > max)
                break;
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb)
                abort();
            buf = nb;
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        if (k == 0)
            break;
        n += k;
    }
    if (ferror(f)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static void put_record(struct lc_json *j, const char *rcpt, const char *status, int code, const char *reason,
                       int hard)
{
    if (j) {
        lc_json_obj(j);
        lc_json_kstr(j, "recipient", rcpt);
        lc_json_kstr(j, "status", status);
        lc_json_kint(j, "replycode", code);
        lc_json_kstr(j, "reason", reason);
        lc_json_kbool(j, "hardbounce", hard);
        lc_json_end(j);
    } else {
        printf("%s\t%s\t%d\t%s\t%d\n", rcpt, status[0] ? status : "-", code, reason, hard);
    }
}

static int cmd_parse(struct lc_ctx *ctx, int argc, char **argv)
{
    static const struct lc_opt opts[] = {{"all", 'a', 0, 1}, {NULL, 0, 0, 0}};
    const char *val[1] = {NULL}, *pos[1] = {NULL};
    int status = lc_args(ctx, argc, argv, opts, val, pos, 1);
    if (status >= 0)
        return status;
    if (!pos[0])
        return lc_usage(ctx, "bounce parse: missing FILE or - (see listcast bounce parse --help)");
    int all = val[0] != NULL;
    FILE *f = strcmp(pos[0], "-") ? fopen(pos[0], "rb") : stdin;
    if (!f)
        return lc_refused(ctx, "bounce parse: %.200s: %s", pos[0], strerror(errno));
    size_t len = 0;
    char *msg = slurp(f, BNC_MAX_INPUT, &len);
    int rerr = errno;
    if (f != stdin)
        fclose(f);
    if (!msg)
        return lc_refused(ctx, "bounce parse: %.200s: %s", pos[0], strerror(rerr));
    struct bnc_report *rep = NULL;
    char err[256];
    if (bnc_parse(msg, len, &rep, err, sizeof err) < 0) {
        free(msg);
        bnc_report_free(rep);
        return lc_refused(ctx, "bounce parse: %.200s: %s", pos[0], err);
    }
    free(msg);
    struct lc_json *j = ctx->json ? lc_json_out() : NULL;
    if (j)
        lc_json_arr(j);
    int shown = 0;
    for (size_t i = 0; i < bnc_report_count(rep); i++) {
        const struct bnc_rcpt *e = bnc_report_get(rep, i);
        if (e->action != BNC_FAILED && e->action != BNC_FEEDBACK && !all)
            continue;
        put_record(j, e->recipient, e->status, e->replycode, e->reason, e->hard);
        shown++;
    }
    if (!shown)
        put_record(j, "", "", 0, "undefined", 0);
    bnc_report_free(rep);
    if (!j)
        return LC_EXIT_OK;
    lc_json_end(j);
    return lc_json_done(j, LC_EXIT_OK);
}

/* ---- ls --------------------------------------------------------------------------------------------------- */

struct row {
    const char *name;
    long long count;
};

static int by_count(const void *a, const void *b)
{
    const struct row *x = a, *y = b;
    if (x->count != y->count)
        return x->count < y->count ? 1 : -1;
    return strcmp(x->name, y->name);
}

/* HGETALL key into rows (pointers into the reply, which the caller frees). */
static struct row *hash_rows(redisReply *r, size_t *n)
{
    *n = 0;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2)
        return NULL;
    struct row *v = calloc(r->elements / 2, sizeof *v);
    if (!v)
        abort();
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        if (r->element[i]->type != REDIS_REPLY_STRING || r->element[i + 1]->type != REDIS_REPLY_STRING)
            continue;
        v[*n].name = r->element[i]->str;
        v[*n].count = strtoll(r->element[i + 1]->str, NULL, 10);
        (*n)++;
    }
    qsort(v, *n, sizeof *v, by_count);
    return v;
}

static void put_table(struct lc_json *j, const char *title, const char *key, const char *col, struct row *v,
                      size_t n, long limit, int numeric)
{
    if (j) {
        lc_json_key(j, key);
        lc_json_arr(j);
        for (size_t i = 0; i < n; i++) {
            lc_json_obj(j);
            if (numeric)
                lc_json_kint(j, col, strtoll(v[i].name, NULL, 10));
            else
                lc_json_kstr(j, col, v[i].name);
            lc_json_kint(j, "count", v[i].count);
            lc_json_end(j);
        }
        lc_json_end(j);
        return;
    }
    printf("\n%s\n", title);
    if (!n) {
        printf("  (none)\n");
        return;
    }
    printf("  %-40s %10s\n", col, "COUNT");
    for (size_t i = 0; i < n && (long)i < limit; i++)
        printf("  %-40s %10lld\n", v[i].name, v[i].count);
    if ((long)n > limit)
        printf("  ... %zu more (--limit, --json)\n", n - (size_t)limit);
}

static int cmd_ls(struct lc_ctx *ctx, int argc, char **argv)
{
    static const struct lc_opt opts[] = {{"limit", 'n', 1, 1}, {NULL, 0, 0, 0}};
    const char *val[1] = {NULL}, *pos[1] = {NULL};
    int status = lc_args(ctx, argc, argv, opts, val, pos, 1);
    if (status >= 0)
        return status;
    long limit = BNC_LS_DEFAULT;
    if (val[0]) {
        char *end;
        errno = 0;
        limit = strtol(val[0], &end, 10);
        if (errno || *end || end == val[0] || limit < 1 || limit > BNC_LS_MAX)
            return lc_usage(ctx, "bounce ls: --limit: '%.50s' is not a number from 1 to %d", val[0], BNC_LS_MAX);
    }
    if (!pos[0])
        return lc_usage(ctx, "bounce ls: missing LIST@DOMAIN (see listcast bounce ls --help)");
    char list[LC_ADDR_MAX + 1], listkey[LC_KEY_MAX], keys[3][LC_KEY_MAX];
    if ((status = lc_list_open(ctx, pos[0], list)) != LC_EXIT_OK)
        return status;
    static const char *const kinds[3] = {"reason", "domain", "post"};
    if (lc_key_list(listkey, sizeof listkey, list) < 0)
        return lc_refused(ctx, "bounce ls: list address too long");
    for (int k = 0; k < 3; k++)
        if (lc_key_bncstat(keys[k], sizeof keys[k], kinds[k], list) < 0)
            return lc_refused(ctx, "bounce ls: list address too long");
    redisAppendCommand(ctx->rc, "HMGET %s bounces complaints", listkey);
    for (int k = 0; k < 3; k++)
        redisAppendCommand(ctx->rc, "HGETALL %s", keys[k]);
    redisReply *r[4] = {NULL, NULL, NULL, NULL};
    for (int k = 0; k < 4; k++) {
        void *v = NULL;
        if (redisGetReply(ctx->rc, &v) != REDIS_OK || !v) {
            for (int i = 0; i < k; i++)
                freeReplyObject(r[i]);
            return lc_refused(ctx, "bounce ls: redis: %s", ctx->rc->errstr[0] ? ctx->rc->errstr : "no reply");
        }
        r[k] = v;
    }
    long long bounces = 0, complaints = 0;
    if (r[0]->type == REDIS_REPLY_ARRAY && r[0]->elements == 2) {
        if (r[0]->element[0]->type == REDIS_REPLY_STRING)
            bounces = strtoll(r[0]->element[0]->str, NULL, 10);
        if (r[0]->element[1]->type == REDIS_REPLY_STRING)
            complaints = strtoll(r[0]->element[1]->str, NULL, 10);
    }
    size_t n[3];
    struct row *rows[3];
    for (int k = 0; k < 3; k++)
        rows[k] = hash_rows(r[k + 1], &n[k]);
    struct lc_json *j = ctx->json ? lc_json_out() : NULL;
    if (j) {
        lc_json_obj(j);
        lc_json_kstr(j, "list", list);
        lc_json_kint(j, "bounces", bounces);
        lc_json_kint(j, "complaints", complaints);
    } else {
        printf("list        %s\nbounces     %lld\ncomplaints  %lld\n", list, bounces, complaints);
    }
    put_table(j, "BY REASON", "by_reason", "reason", rows[0], n[0], limit, 0);
    put_table(j, "BY DOMAIN", "by_domain", "domain", rows[1], n[1], limit, 0);
    put_table(j, "BY POST", "by_post", "post", rows[2], n[2], limit, 1);
    for (int k = 0; k < 3; k++)
        free(rows[k]);
    for (int k = 0; k < 4; k++)
        freeReplyObject(r[k]);
    if (j) {
        lc_json_end(j);
        return lc_json_done(j, LC_EXIT_OK);
    }
    return LC_EXIT_OK;
}

int lc_cmd_bounce(struct lc_ctx *ctx, int argc, char **argv)
{
    static const struct lc_subcmd subs[] = {{"bounce parse", cmd_parse}, {"bounce ls", cmd_ls}, {NULL, NULL}};
    return lc_dispatch(ctx, argc, argv, subs, "parse or ls");
}
