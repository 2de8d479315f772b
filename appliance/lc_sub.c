/* lc_sub: `listcast sub add|rm|ls|show`: subscribers of a list (schema/SCHEMA.md "Subscribers").
 *
 * Contract: each address is normalised (lc_addr_norm) and changed by one Lua script, atomically: `add` keeps
 * an existing subscriber's id (VERP addresses of old posts still resolve) and sets it active, or creates it
 * (id from INCR lc:seq:sub, hash, lc:subids entry, lc:members); then it enters lc:active unless the address is
 * on the global suppression list. `rm` sets status unsubscribed and removes it from lc:active (the hash and
 * the lc:members entry stay). Scripts are sent pipelined in batches of SUB_BATCH, so 100,000 addresses
 * take seconds. Invalid addresses are reported (one stderr line each, at most SUB_MAX_MSGS) and skipped; the
 * exit status is then 1. `sub ls` pages through lc:members with ZRANGEBYLEX.
 * Limits: input lines of at most 1,023 bytes; the first word of a line is the address.
 */
#include "lc_cli.h"
#include "lc_addr.h"
#include "lc_json.h"
#include "lc_redis.h"
#include "lc_schema.h"
#include "lc_view.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SUB_BATCH 1000      /* scripts per pipelined batch */
#define SUB_MAX_MSGS 100    /* refusal lines printed on stderr */
#define SUB_JSON_REFUSED 1000
#define SUB_LS_PAGE 1000

static const char add_lua[] = LC_LUA_SUB_ADD;
static const char rm_lua[] = LC_LUA_SUB_RM;

#define SUB_INPUT_HELP                                                                                        \
    "  ADDR arguments are subscriber addresses; an ADDR of \"-\" reads addresses from standard input, one a\n"\
    "  line: the first word of each line is taken (so the output of `listcast sub ls` can be fed back),\n"    \
    "  blank lines and lines starting with '#' are skipped. Addresses are lower-cased.\n"

static const char page_sub[] =
    "NAME\n"
    "  listcast sub - manage the subscribers of a list\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast sub add LIST@DOMAIN ADDR...|- [--json]\n"
    "  listcast sub rm LIST@DOMAIN ADDR...|- [--json]\n"
    "  listcast sub ls LIST@DOMAIN [--status STATUS] [--json]\n"
    "  listcast sub show LIST@DOMAIN ADDR [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  See `listcast sub add --help` and the pages of rm, ls and show.\n"
    LC_HELP_REDIS
    "\n"
    "OPTIONS\n" LC_HELP_COMMON_OPTIONS "\n" LC_HELP_EXIT;

static const char page_add[] =
    "NAME\n"
    "  listcast sub add - subscribe addresses to a list\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast sub add LIST@DOMAIN ADDR... [--json]\n"
    "  listcast sub add LIST@DOMAIN - [--json] < FILE\n"
    "\n"
    "DESCRIPTION\n"
    "  Subscribes each address with status active, without a confirmation message (the operator vouches\n"
    "  for the addresses). An address that was subscribed before keeps its subscriber id and becomes\n"
    "  active again; one that is active stays as it is. An address on the global suppression list is\n"
    "  subscribed but receives no posts until it is taken off that list.\n"
    SUB_INPUT_HELP
    "  Addresses are sent to Redis in pipelined batches of 1,000; on a terminal, a progress bar is drawn on\n"
    "  stderr when there are more than 1,000. Invalid addresses are reported on stderr, one line each, and\n"
    "  skipped; the others are still subscribed.\n"
    "  Output: a summary line (added, re-activated, already active, suppressed, refused). With --json: an\n"
    "  object {list, added, reactivated, unchanged, suppressed, refused, invalid: [{address, reason}]}.\n"
    LC_HELP_REDIS
    "\n"
    "OPTIONS\n" LC_HELP_COMMON_OPTIONS "\n" LC_HELP_EXIT
    "  Exit status 1 also when any address was refused as invalid (the valid ones are subscribed), or\n"
    "  when the list does not exist.\n"
    "\n"
    "EXAMPLES\n"
    "  listcast sub add demo@listcast.test alice@example.org bob@example.net\n"
    "  listcast sub add news@lists.example.org - < subscribers.txt\n"
    "  listcast sub ls old@lists.example.org --status active | listcast sub add new@lists.example.org -\n";

static const char page_rm[] =
    "NAME\n"
    "  listcast sub rm - unsubscribe addresses from a list\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast sub rm LIST@DOMAIN ADDR...|- [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  Sets each subscriber's status to unsubscribed: it receives no further posts. The subscriber record\n"
    "  (id, bounce history) is kept, so `sub add` later restores the same subscriber.\n"
    SUB_INPUT_HELP
    "  Output: a summary line (removed, already unsubscribed, not subscribed, refused). With --json: an\n"
    "  object {list, removed, unchanged, unknown, refused, invalid: [{address, reason}]}.\n"
    LC_HELP_REDIS
    "\n"
    "OPTIONS\n" LC_HELP_COMMON_OPTIONS "\n" LC_HELP_EXIT
    "  Exit status 1 also when any address was invalid or not a subscriber of the list.\n"
    "\n"
    "EXAMPLES\n"
    "  listcast sub rm demo@listcast.test bob@demo.test\n";

static const char page_ls[] =
    "NAME\n"
    "  listcast sub ls - show the subscribers of a list\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast sub ls LIST@DOMAIN [--status STATUS] [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  Prints every subscriber of the list (any status unless --status is given), in address order, one\n"
    "  a line: the address, its status and its bounce score. With --json: an array of objects {address,\n"
    "  id, status, bounce_score}. The list is read in pages of 1,000, so it may be any size.\n"
    LC_HELP_REDIS
    "\n"
    "OPTIONS\n"
    "  -s, --status STATUS  show only subscribers with STATUS: active, unconfirmed, disabled (by bounces)\n"
    "                       or unsubscribed\n"
    LC_HELP_COMMON_OPTIONS
    "\n" LC_HELP_EXIT
    "\n"
    "EXAMPLES\n"
    "  listcast sub ls demo@listcast.test\n"
    "  listcast sub ls demo@listcast.test --status disabled --json\n";

static const char page_show[] =
    "NAME\n"
    "  listcast sub show - show one subscriber\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast sub show LIST@DOMAIN ADDR [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  Prints the subscriber's id, status (active, unconfirmed, disabled or unsubscribed), bounce score\n"
    "  (1 per hard bounce, 0.5 per soft one), number of bounces, last bounce reason and time, creation\n"
    "  time, and whether the address is suppressed and receives posts; for a subscriber disabled by bounces,\n"
    "  why (threshold or the hard reason) and its bounce probe: pending (not sent yet), sent (waiting for\n"
    "  its outcome), refused (refused for a policy reason: left disabled for the operator) or lost, with\n"
    "  the probe's post id and when it was sent (see README \"Bounce handling\"). With --json: an object\n"
    "  {address, list, id, status, bounce_score (number), bounces, last_bounce_reason (string or null),\n"
    "  last_bounce_at (number or null), created, suppressed, receives_posts, disabled_reason, probe,\n"
    "  probe_post, probe_at, unsubscribed_reason (each a string or number, or null)}.\n"
    LC_HELP_REDIS
    "\n"
    "OPTIONS\n" LC_HELP_COMMON_OPTIONS "\n" LC_HELP_EXIT
    "  An address that is not a subscriber of the list is refused (exit 1); a malformed one is a usage\n"
    "  error (exit 2).\n"
    "\n"
    "EXAMPLES\n"
    "  listcast sub show demo@listcast.test alice@demo.test --json\n";

const struct lc_page lc_pages_sub[] = {
    {"sub", page_sub},
    {"sub add", page_add},
    {"sub rm", page_rm},
    {"sub ls", page_ls},
    {"sub show", page_show},
    {NULL, NULL},
};

/* ---- the batch engine ------------------------------------------------------------------------------------ */

enum batch_op { OP_ADD, OP_RM };

struct batch {
    enum batch_op op;
    redisContext *rc;
    const char *list;
    char sha[41];
    char now[32];
    char kactive[LC_KEY_MAX], kmembers[LC_KEY_MAX];
    int queued;
    char (*qaddr)[LC_ADDR_MAX + 1]; /* the queued addresses, to name them in messages */
    long long unknown_msgs;
    long long done;         /* addresses with a reply */
    long long n0, n1, n2;   /* add: unchanged, added, reactivated; rm: unchanged, removed, unknown */
    long long suppressed;
    long long refused;
    int failed;
    char err[512];
    /* progress */
    int tty;
    long long total;        /* known number of addresses, or 0 */
    long long bytes, size;  /* stdin bytes read / size of a regular stdin file */
    int shown;
    struct timespec start, last;
    /* invalid addresses, for --json */
    char **bad_addr;
    const char **bad_why;
    size_t nbad;
};

static int batch_flush(struct batch *b)
{
    int total = b->queued;
    for (int k = 0; k < total; k++, b->queued--) {
        void *p = NULL;
        if (redisGetReply(b->rc, &p) != REDIS_OK || !p) {
            snprintf(b->err, sizeof b->err, "redis: %s", b->rc->errstr[0] ? b->rc->errstr : "connection lost");
            b->failed = 1;
            return -1;
        }
        redisReply *r = p;
        if (r->type == REDIS_REPLY_ERROR) {
            if (!b->failed)
                snprintf(b->err, sizeof b->err, "redis: %.*s", (int)r->len, r->str);
            b->failed = 1;
        } else if (r->type == REDIS_REPLY_INTEGER) {
            long long v = r->integer;
            if (v >= 10) {
                b->suppressed++;
                v -= 10;
            }
            if (v == 0)
                b->n0++;
            else if (v == 1)
                b->n1++;
            else
                b->n2++; /* add: 2 re-activated; rm: -1 unknown */
            if (v == -1 && b->unknown_msgs++ < SUB_MAX_MSGS) {
                const char *addr = b->qaddr[k];
                if (b->shown)
                    fputc('\n', stderr), b->shown = 0;
                fprintf(stderr, "listcast: %s is not a subscriber of %s\n", addr, b->list);
            }
        }
        b->done++;
        freeReplyObject(r);
    }
    return b->failed ? -1 : 0;
}

static double elapsed(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

static void progress(struct batch *b, int final)
{
    if (!b->tty)
        return;
    long long seen = b->done + b->queued + b->refused;
    if (!b->shown && (seen <= 1000 || final))
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (b->shown && !final && elapsed(&b->last, &now) < 0.1)
        return;
    b->last = now;
    b->shown = 1;
    char bar[160];
    if (b->total > 0)
        lc_view_bar(bar, sizeof bar, 30, seen, b->total);
    else if (b->size > 0)
        lc_view_bar(bar, sizeof bar, 30, b->bytes, b->size);
    else
        snprintf(bar, sizeof bar, "[reading standard input]");
    double secs = elapsed(&b->start, &now);
    fprintf(stderr, "\r%s %lld addresses, %.0f/s%s", bar, seen, secs > 0 ? (double)seen / secs : 0.0,
            final ? "\n" : "");
    fflush(stderr);
}

static void batch_bad(struct batch *b, const char *addr, const char *why)
{
    if (b->refused < SUB_MAX_MSGS) {
        if (b->shown)
            fputc('\n', stderr), b->shown = 0;
        fprintf(stderr, "listcast: invalid address '%.200s': %s\n", addr, why);
    } else if (b->refused == SUB_MAX_MSGS) {
        fprintf(stderr, "listcast: more invalid addresses; not shown\n");
    }
    if (b->nbad < SUB_JSON_REFUSED) {
        b->bad_addr = lc_realloc(b->bad_addr, (b->nbad + 1) * sizeof *b->bad_addr);
        b->bad_why = lc_realloc(b->bad_why, (b->nbad + 1) * sizeof *b->bad_why);
        b->bad_addr[b->nbad] = lc_strndup(addr, 320);
        b->bad_why[b->nbad] = why;
        b->nbad++;
    }
    b->refused++;
}

/* batch_push queues one normalised address; flushes every SUB_BATCH. Returns 0 or -1 (b->err). */
static int batch_push(struct batch *b, const char *addr)
{
    char ksub[LC_KEY_MAX];
    if (lc_key_sub(ksub, sizeof ksub, b->list, addr) < 0) {
        batch_bad(b, addr, "too long");
        return 0;
    }
    if (b->op == OP_ADD) {
        const char *argv[] = {"EVALSHA", b->sha, "6", ksub, LC_K_SUBIDS, b->kmembers, b->kactive,
                              LC_K_SEQ_SUB, LC_K_SUPPRESS, addr, b->list, b->now, LC_ST_ACTIVE};
        redisAppendCommandArgv(b->rc, (int)(sizeof argv / sizeof argv[0]), argv, NULL);
    } else {
        const char *argv[] = {"EVALSHA", b->sha, "2", ksub, b->kactive, addr, LC_ST_UNSUBSCRIBED};
        redisAppendCommandArgv(b->rc, (int)(sizeof argv / sizeof argv[0]), argv, NULL);
    }
    snprintf(b->qaddr[b->queued], sizeof b->qaddr[b->queued], "%s", addr);
    b->queued++;
    progress(b, 0);
    if (b->queued >= SUB_BATCH)
        return batch_flush(b);
    return 0;
}

/* batch_one checks and queues one address argument or input word. */
static int batch_one(struct batch *b, const char *word, size_t len)
{
    char norm[LC_ADDR_MAX + 1];
    const char *why = "invalid";
    if (lc_addr_norm(word, len, norm, &why) < 0) {
        char shown[LC_ADDR_MAX + 1];
        size_t n = len < LC_ADDR_MAX ? len : LC_ADDR_MAX;
        memcpy(shown, word, n);
        shown[n] = 0;
        batch_bad(b, shown, why);
        return 0;
    }
    return batch_push(b, norm);
}

/* batch_stdin reads addresses from standard input, one a line (first word). */
static int batch_stdin(struct batch *b)
{
    char line[1024];
    struct stat sb;
    if (fstat(0, &sb) == 0 && S_ISREG(sb.st_mode))
        b->size = (long long)sb.st_size;
    while (fgets(line, sizeof line, stdin)) {
        size_t n = strlen(line);
        b->bytes += (long long)n;
        if (n == sizeof line - 1 && line[n - 1] != '\n') { /* overlong: skip the rest of it */
            int c;
            while ((c = getchar()) != EOF && c != '\n')
                b->bytes++;
            batch_bad(b, "(line too long)", "lines are limited to 1,023 bytes");
            continue;
        }
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        size_t w = strcspn(p, " \t\r\n");
        if (w == 0 || *p == '#')
            continue;
        if (batch_one(b, p, w) < 0)
            return -1;
    }
    if (ferror(stdin)) {
        snprintf(b->err, sizeof b->err, "error reading standard input");
        return -1;
    }
    return 0;
}

static int batch_start(struct batch *b, enum batch_op op, redisContext *rc, const char *list, char *err,
                       size_t errlen)
{
    memset(b, 0, sizeof *b);
    b->op = op;
    b->rc = rc;
    b->list = list;
    snprintf(b->now, sizeof b->now, "%lld", (long long)time(NULL));
    lc_key_active(b->kactive, sizeof b->kactive, list);
    lc_key_members(b->kmembers, sizeof b->kmembers, list);
    b->qaddr = lc_calloc(SUB_BATCH, sizeof *b->qaddr);
    return lc_redis_script(rc, op == OP_ADD ? add_lua : rm_lua, b->sha, err, errlen);
}

static void batch_free(struct batch *b)
{
    free(b->qaddr);
    for (size_t i = 0; i < b->nbad; i++)
        free(b->bad_addr[i]);
    free(b->bad_addr);
    free(b->bad_why);
}

int lc_sub_add_many(redisContext *rc, const char *list, const char *const *addrs, size_t n, char *err,
                    size_t errlen)
{
    struct batch b;
    if (batch_start(&b, OP_ADD, rc, list, err, errlen) < 0) {
        batch_free(&b);
        return -1;
    }
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i++)
        r = batch_push(&b, addrs[i]);
    if (r == 0)
        r = batch_flush(&b);
    if (r < 0)
        snprintf(err, errlen, "%s", b.err);
    batch_free(&b);
    return r;
}

/* ---- sub add / sub rm ----------------------------------------------------------------------------------- */

static int cmd_add_rm(struct lc_ctx *ctx, int argc, char **argv, enum batch_op op)
{
    const char *name = op == OP_ADD ? "sub add" : "sub rm";
    struct lc_optstate st;
    const char *list_arg = NULL;
    int o, status, naddr = 0, use_stdin = 0;
    char **addrs = lc_calloc((size_t)argc + 1, sizeof *addrs);
    lc_opt_init(&st, argc, argv);
    while ((o = lc_opt_next(ctx, &st, NULL, &status)) != -1) { /* "-" twice is refused where it stands */
        if (o == -2) {
            free(addrs);
            return status;
        }
        if (!list_arg) {
            list_arg = st.arg;
        } else {
            if (!strcmp(st.arg, "-")) {
                if (use_stdin++) {
                    free(addrs);
                    return lc_usage(ctx, "%s: \"-\" given twice", name);
                }
            }
            addrs[naddr++] = (char *)st.arg;
        }
    }
    if (!list_arg || naddr == 0) {
        free(addrs);
        return lc_usage(ctx, "%s: usage: listcast %s LIST@DOMAIN ADDR...|- (see listcast %s --help)", name, name,
                        name);
    }
    char list[LC_ADDR_MAX + 1], err[512];
    if ((status = lc_list_open(ctx, list_arg, list)) != LC_EXIT_OK) {
        free(addrs);
        return status;
    }
    struct batch b;
    if (batch_start(&b, op, ctx->rc, list, err, sizeof err) < 0) {
        batch_free(&b);
        free(addrs);
        return lc_refused(ctx, "%s", err);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    b.tty = isatty(2);
    b.start = t0;
    b.total = use_stdin ? 0 : naddr;
    int r = 0;
    for (int i = 0; i < naddr && r == 0; i++)
        r = strcmp(addrs[i], "-") ? batch_one(&b, addrs[i], strlen(addrs[i])) : batch_stdin(&b);
    if (r == 0)
        r = batch_flush(&b);
    progress(&b, 1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    free(addrs);
    if (r < 0) {
        int s = lc_refused(ctx, "%s (%lld addresses done before the error)", b.err, b.done);
        batch_free(&b);
        return s;
    }
    status = (b.refused || (op == OP_RM && b.n2)) ? LC_EXIT_REFUSED : LC_EXIT_OK;
    if (ctx->json) {
        struct lc_json *j = lc_json_out();
        lc_json_obj(j);
        lc_json_kstr(j, "list", list);
        if (op == OP_ADD) {
            lc_json_kint(j, "added", b.n1);
            lc_json_kint(j, "reactivated", b.n2);
            lc_json_kint(j, "unchanged", b.n0);
            lc_json_kint(j, "suppressed", b.suppressed);
        } else {
            lc_json_kint(j, "removed", b.n1);
            lc_json_kint(j, "unchanged", b.n0);
            lc_json_kint(j, "unknown", b.n2);
        }
        lc_json_kint(j, "refused", b.refused);
        lc_json_key(j, "invalid");
        lc_json_arr(j);
        for (size_t i = 0; i < b.nbad; i++) {
            lc_json_obj(j);
            lc_json_kstr(j, "address", b.bad_addr[i]);
            lc_json_kstr(j, "reason", b.bad_why[i]);
            lc_json_end(j);
        }
        lc_json_end(j);
        lc_json_knum(j, "seconds", elapsed(&t0, &t1));
        lc_json_end(j);
        status = lc_json_done(j, status);
    } else if (op == OP_ADD) {
        printf("%s: %lld added, %lld re-activated, %lld already active, %lld refused", list, b.n1, b.n2, b.n0,
               b.refused);
        if (b.suppressed)
            printf(", %lld suppressed (subscribed, but on the suppression list: no posts)", b.suppressed);
        printf(" (%.2f s)\n", elapsed(&t0, &t1));
    } else {
        printf("%s: %lld removed, %lld already unsubscribed, %lld not subscribed, %lld refused\n", list, b.n1,
               b.n0, b.n2, b.refused);
    }
    if (b.refused && !ctx->json)
        fprintf(stderr, "listcast: %lld invalid address%s refused\n", b.refused, b.refused == 1 ? "" : "es");
    batch_free(&b);
    return status;
}

/* ---- sub ls ------------------------------------------------------------------------------------------------ */

static const char *const statuses[] = {LC_ST_ACTIVE, LC_ST_UNCONFIRMED, LC_ST_DISABLED, LC_ST_UNSUBSCRIBED,
                                       NULL};

static int cmd_ls(struct lc_ctx *ctx, int argc, char **argv)
{
    static const struct lc_opt opts[] = {{"status", 's', 1, 1}, {NULL, 0, 0, 0}};
    const char *want = NULL, *list_arg = NULL;
    int status = lc_args(ctx, argc, argv, opts, &want, &list_arg, 1);
    if (status >= 0)
        return status;
    if (!list_arg)
        return lc_usage(ctx, "sub ls: missing LIST@DOMAIN (see listcast sub ls --help)");
    if (want && !lc_word_in(want, statuses))
        return lc_usage(ctx, "sub ls: unknown status '%.100s' (active, unconfirmed, disabled or unsubscribed)",
                        want);
    char list[LC_ADDR_MAX + 1], err[512];
    if ((status = lc_list_open(ctx, list_arg, list)) != LC_EXIT_OK)
        return status;
    redisContext *rc = ctx->rc;
    char kmembers[LC_KEY_MAX], lo[LC_ADDR_MAX + 2] = "-";
    lc_key_members(kmembers, sizeof kmembers, list);
    struct lc_json *j = ctx->json ? lc_json_out() : NULL;
    if (j)
        lc_json_arr(j);
    for (;;) {
        redisReply *page = lc_redis_cmd(rc, err, sizeof err, "ZRANGEBYLEX %s %s + LIMIT 0 %d", kmembers, lo,
                                        SUB_LS_PAGE);
        if (!page || page->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(page);
            status = lc_refused(ctx, "%s", page ? "redis: unexpected reply" : err);
            break;
        }
        size_t n = page->elements;
        for (size_t i = 0; i < n; i++) {
            char ksub[LC_KEY_MAX];
            lc_key_sub(ksub, sizeof ksub, list, page->element[i]->str ? page->element[i]->str : "");
            redisAppendCommand(rc, "HMGET %s status id bounce_score", ksub);
        }
        for (size_t i = 0; i < n; i++) {
            void *p = NULL;
            if (redisGetReply(rc, &p) != REDIS_OK || !p) {
                status = lc_refused(ctx, "redis: %s", rc->errstr);
                break;
            }
            redisReply *h = p;
            const char *addr = page->element[i]->str ? page->element[i]->str : "";
            const char *s = "", *id = "0", *score = "0";
            if (h->type == REDIS_REPLY_ARRAY && h->elements == 3) {
                if (h->element[0]->type == REDIS_REPLY_STRING)
                    s = h->element[0]->str;
                if (h->element[1]->type == REDIS_REPLY_STRING)
                    id = h->element[1]->str;
                if (h->element[2]->type == REDIS_REPLY_STRING)
                    score = h->element[2]->str;
            }
            if (!want || !strcmp(want, s)) {
                if (j) {
                    lc_json_obj(j);
                    lc_json_kstr(j, "address", addr);
                    lc_json_kint(j, "id", strtoll(id, NULL, 10));
                    lc_json_kstr(j, "status", s);
                    lc_json_knum(j, "bounce_score", strtod(score, NULL));
                    lc_json_end(j);
                } else {
                    printf("%-40s  %-12s  %s\n", addr, *s ? s : "?", score);
                }
            }
            freeReplyObject(h);
        }
        if (status == LC_EXIT_OK && n > 0) {
            const redisReply *last = page->element[n - 1];
            snprintf(lo, sizeof lo, "(%.*s", (int)(last->len < LC_ADDR_MAX ? last->len : LC_ADDR_MAX),
                     last->str ? last->str : "");
        }
        freeReplyObject(page);
        if (status != LC_EXIT_OK || n < SUB_LS_PAGE)
            break;
    }
    if (j) {
        lc_json_end(j);
        status = lc_json_done(j, status);
    }
    return status;
}

/* ---- sub show ---------------------------------------------------------------------------------------------- */

static const redisReply *field(const redisReply *r, const char *name)
{
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2)
        if (r->element[i]->type == REDIS_REPLY_STRING && !strcmp(r->element[i]->str, name) &&
            r->element[i + 1]->type == REDIS_REPLY_STRING)
            return r->element[i + 1];
    return NULL;
}

static const char *fstr(const redisReply *r, const char *name)
{
    const redisReply *v = field(r, name);
    return v ? v->str : NULL;
}

static int cmd_show(struct lc_ctx *ctx, int argc, char **argv)
{
    const char *arg[2] = {NULL, NULL}; /* LIST@DOMAIN ADDR */
    int rcode = lc_args(ctx, argc, argv, NULL, NULL, arg, 2);
    if (rcode >= 0)
        return rcode;
    const char *list_arg = arg[0], *addr_arg = arg[1];
    if (!addr_arg)
        return lc_usage(ctx, "sub show: usage: listcast sub show LIST@DOMAIN ADDR (see listcast sub show --help)");
    char list[LC_ADDR_MAX + 1], addr[LC_ADDR_MAX + 1], err[512];
    const char *why = "invalid";
    if (lc_norm_list(ctx, list_arg, list) < 0)
        return LC_EXIT_USAGE;
    if (lc_addr_norm(addr_arg, strlen(addr_arg), addr, &why) < 0)
        return lc_usage(ctx, "sub show: invalid address '%.200s': %s", addr_arg, why);
    if (lc_list_need(ctx, list) < 0)
        return LC_EXIT_REFUSED;
    redisContext *rc = ctx->rc;
    char ksub[LC_KEY_MAX], kactive[LC_KEY_MAX];
    lc_key_sub(ksub, sizeof ksub, list, addr);
    lc_key_active(kactive, sizeof kactive, list);
    redisReply *h = lc_redis_cmd(rc, err, sizeof err, "HGETALL %s", ksub);
    if (!h)
        return lc_refused(ctx, "%s", err);
    if (h->type != REDIS_REPLY_ARRAY || h->elements == 0) {
        freeReplyObject(h);
        return lc_refused(ctx, "%s is not a subscriber of %s", addr, list);
    }
    redisReply *sup = lc_redis_cmd(rc, err, sizeof err, "SISMEMBER %s %s", LC_K_SUPPRESS, addr);
    redisReply *act = sup ? lc_redis_cmd(rc, err, sizeof err, "HEXISTS %s %s", kactive, addr) : NULL;
    if (!act) {
        freeReplyObject(h);
        freeReplyObject(sup);
        return lc_refused(ctx, "%s", err);
    }
    int suppressed = sup->integer > 0, receives = act->integer > 0;
    freeReplyObject(sup);
    freeReplyObject(act);
    const char *status = fstr(h, "status") ? fstr(h, "status") : "";
    const char *reason = fstr(h, "last_bounce_reason");
    const char *last_at = fstr(h, "last_bounce_at");
    long long id = fstr(h, "id") ? strtoll(fstr(h, "id"), NULL, 10) : 0;
    long long bounces = fstr(h, "bounces") ? strtoll(fstr(h, "bounces"), NULL, 10) : 0;
    long long created = fstr(h, "created") ? strtoll(fstr(h, "created"), NULL, 10) : 0;
    double score = fstr(h, "bounce_score") ? strtod(fstr(h, "bounce_score"), NULL) : 0;
    const char *dis = fstr(h, "disabled_reason"), *probe = fstr(h, "probe"), *unsub = fstr(h, "unsubscribed_reason");
    const char *probe_post = fstr(h, "probe_post"), *probe_at = fstr(h, "probe_at");
    dis = dis && *dis ? dis : NULL, probe = probe && *probe ? probe : NULL, unsub = unsub && *unsub ? unsub : NULL;
    rcode = LC_EXIT_OK;
    if (ctx->json) {
        struct lc_json *j = lc_json_out();
        lc_json_obj(j);
        lc_json_kstr(j, "address", addr);
        lc_json_kstr(j, "list", list);
        lc_json_kint(j, "id", id);
        lc_json_kstr(j, "status", status);
        lc_json_knum(j, "bounce_score", score);
        lc_json_kint(j, "bounces", bounces);
        lc_json_kstr(j, "last_bounce_reason", reason && *reason ? reason : NULL);
        lc_json_key(j, "last_bounce_at");
        if (last_at && *last_at)
            lc_json_int(j, strtoll(last_at, NULL, 10));
        else
            lc_json_null(j);
        lc_json_kint(j, "created", created);
        lc_json_kbool(j, "suppressed", suppressed);
        lc_json_kbool(j, "receives_posts", receives);
        lc_json_kstr(j, "disabled_reason", dis);
        lc_json_kstr(j, "probe", probe);
        const char *const nums[2][2] = {{"probe_post", probe_post}, {"probe_at", probe_at}};
        for (int i = 0; i < 2; i++) {
            lc_json_key(j, nums[i][0]);
            if (nums[i][1] && *nums[i][1])
                lc_json_int(j, strtoll(nums[i][1], NULL, 10));
            else
                lc_json_null(j);
        }
        lc_json_kstr(j, "unsubscribed_reason", unsub);
        lc_json_end(j);
        rcode = lc_json_done(j, LC_EXIT_OK);
    } else {
        char t1[64], t2[64];
        lc_fmt_time(created, t1, sizeof t1);
        lc_fmt_time(last_at ? strtoll(last_at, NULL, 10) : 0, t2, sizeof t2);
        printf("address:             %s\n", addr);
        printf("list:                %s\n", list);
        printf("id:                  %lld\n", id);
        printf("status:              %s%s\n", status,
               suppressed ? " (suppressed: on the global suppression list)" : "");
        printf("receives posts:      %s\n", receives ? "yes" : "no");
        printf("bounce score:        %g\n", score);
        printf("bounces:             %lld\n", bounces);
        printf("last bounce:         %s\n", t2);
        printf("last bounce reason:  %s\n", reason && *reason ? reason : "-");
        printf("created:             %s\n", t1);
        if (dis)
            printf("disabled because:    %s\n", dis);
        if (probe && probe_post && *probe_post) {
            char t3[64];
            lc_fmt_time(probe_at ? strtoll(probe_at, NULL, 10) : 0, t3, sizeof t3);
            printf("bounce probe:        %s (post %s, sent %s)\n", probe, probe_post, t3);
        } else if (probe) {
            printf("bounce probe:        %s\n", probe);
        }
        if (unsub)
            printf("unsubscribed by:     %s\n", unsub);
    }
    freeReplyObject(h);
    return rcode;
}

static int cmd_add(struct lc_ctx *ctx, int argc, char **argv)
{
    return cmd_add_rm(ctx, argc, argv, OP_ADD);
}

static int cmd_rm(struct lc_ctx *ctx, int argc, char **argv)
{
    return cmd_add_rm(ctx, argc, argv, OP_RM);
}

int lc_cmd_sub(struct lc_ctx *ctx, int argc, char **argv)
{
    static const struct lc_subcmd subs[] = {
        {"sub add", cmd_add},
        {"sub rm", cmd_rm},
        {"sub ls", cmd_ls},
        {"sub show", cmd_show},
        {NULL, NULL},
    };
    return lc_dispatch(ctx, argc, argv, subs, "add, rm, ls or show");
}
