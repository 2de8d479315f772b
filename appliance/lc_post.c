/* lc_post: `listcast post ls|show`: posts of a list and their delivery progress (schema/SCHEMA.md "Posts").
 *
 * Contract: read-only. Posts are read through lc_view (the web UI shows the same numbers); `pending` is
 * recipients - delivered - bounced, never below 0 (deferred recipients are still pending).
 * Limits: `post ls` shows at most --limit posts (default 20, at most 10,000); `post show` prints at most
 * POST_TEXT_DOMAINS domains in text mode (every domain in JSON).
 */
#include "lc_cli.h"
#include "lc_addr.h"
#include "lc_json.h"
#include "lc_view.h"
#include "lc_redis.h"
#include "lc_schema.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POST_LS_DEFAULT 20
#define POST_LS_MAX 10000
#define POST_TEXT_DOMAINS 50

static const char page_post[] =
    "NAME\n"
    "  listcast post - show posts and their delivery progress\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast post ls LIST@DOMAIN [--limit N] [--json]\n"
    "  listcast post show ID [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  See `listcast post ls --help` and `listcast post show --help`.\n"
    LC_HELP_REDIS
    "\n"
    "OPTIONS\n" LC_HELP_COMMON_OPTIONS "\n" LC_HELP_EXIT;

static const char page_ls[] =
    "NAME\n"
    "  listcast post ls - show the latest posts of a list\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast post ls LIST@DOMAIN [--limit N] [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  Prints the newest posts of the list first, one a line: id, state (queued: stored, not yet expanded;\n"
    "  sending: batches are being delivered; done: every recipient has a final outcome), creation time,\n"
    "  recipients, delivered, deferred (will be retried), bounced, pending (recipients - delivered -\n"
    "  bounced) and the envelope sender. With --json: an array of objects {id, list, state, from, size,\n"
    "  created, recipients, delivered, deferred, bounced, pending}.\n"
    LC_HELP_REDIS
    "\n"
    "OPTIONS\n"
    "  -n, --limit N      show at most N posts (default 20, at most 10000)\n"
    LC_HELP_COMMON_OPTIONS
    "\n" LC_HELP_EXIT
    "\n"
    "EXAMPLES\n"
    "  listcast post ls demo@listcast.test\n"
    "  listcast post ls news@lists.example.org --limit 100 --json\n";

static const char page_show[] =
    "NAME\n"
    "  listcast post show - show one post and its delivery progress\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast post show ID [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  Prints the post's list, envelope sender, state, creation time, size and its counters: recipients,\n"
    "  delivered, deferred (a temporary failure; will be retried), bounced and pending (recipients -\n"
    "  delivered - bounced, never below 0). While the post is sending, a progress bar line shows the share\n"
    "  of recipients with a final outcome. Then a table of the per-domain counters, busiest domains first\n"
    "  (at most 50 in text mode).\n"
    "  With --json: an object {id, list, state, from, size, created, recipients, delivered, deferred,\n"
    "  bounced, pending, domains: [{domain, delivered, deferred, bounced}]}, the same as the web UI's\n"
    "  GET /api/posts/ID.\n"
    LC_HELP_REDIS
    "\n"
    "OPTIONS\n" LC_HELP_COMMON_OPTIONS "\n" LC_HELP_EXIT
    "  A post that does not exist is refused (exit 1); an ID that is not a positive number is a usage\n"
    "  error (exit 2).\n"
    "\n"
    "EXAMPLES\n"
    "  listcast post show 12\n"
    "  watch -n1 listcast post show 12\n"
    "  listcast post show 12 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"pending\"])'\n";

static const char page_resume[] =
    "NAME\n"
    "  listcast list resume - resume the sending of a list paused for its complaint rate\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast list resume LIST@DOMAIN [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  The expander pauses a list when its complaint rate (ARF complaints / copies delivered over the list's\n"
    "  latest 1000 posts) reaches complaints.pause_rate: the list hash gets paused=1 and paused_reason, and\n"
    "  its posts wait, queued, re-checked every few seconds. resume clears the pause and restarts the rate\n"
    "  count after the list's last sent post (field rate_after), so the complaints that caused the pause do\n"
    "  not pause it again at once; the waiting posts go out within seconds. A list that is not paused is\n"
    "  refused (exit 1). With --json: {\"list\", \"resumed\", \"rate_after\"}.\n"
    LC_HELP_REDIS
    "\n"
    "OPTIONS\n" LC_HELP_COMMON_OPTIONS "\n" LC_HELP_EXIT;

const struct lc_page lc_pages_post[] = {
    {"post", page_post},
    {"post ls", page_ls},
    {"post show", page_show},
    {"list resume", page_resume},
    {NULL, NULL},
};

static int cmd_ls(struct lc_ctx *ctx, int argc, char **argv)
{
    static const struct lc_opt opts[] = {{"limit", 'n', 1, 1}, {NULL, 0, 0, 0}};
    struct lc_optstate st;
    const char *list_arg = NULL;
    long limit = POST_LS_DEFAULT;
    int o, status;
    lc_opt_init(&st, argc, argv);
    while ((o = lc_opt_next(ctx, &st, opts, &status)) != -1) { /* --limit is checked where it stands */
        if (o == -2)
            return status;
        if (o == 1) {
            char *end;
            errno = 0;
            limit = strtol(st.arg, &end, 10);
            if (errno || *end || end == st.arg || limit < 1 || limit > POST_LS_MAX)
                return lc_usage(ctx, "post ls: --limit: '%.50s' is not a number from 1 to %d", st.arg,
                                POST_LS_MAX);
        } else if (list_arg) {
            return lc_usage(ctx, "post ls: unexpected argument '%.200s'", st.arg);
        } else {
            list_arg = st.arg;
        }
    }
    if (!list_arg)
        return lc_usage(ctx, "post ls: missing LIST@DOMAIN (see listcast post ls --help)");
    char list[LC_ADDR_MAX + 1], err[512];
    if ((status = lc_list_open(ctx, list_arg, list)) != LC_EXIT_OK)
        return status;
    uint64_t *ids;
    long long total;
    long n = lc_view_post_ids(ctx->rc, list, limit, &ids, &total, err, sizeof err);
    if (n < 0)
        return lc_refused(ctx, "%s", err);
    struct lc_json *j = ctx->json ? lc_json_out() : NULL;
    if (j)
        lc_json_arr(j);
    else if (n == 0)
        printf("no posts to %s yet\n", list);
    else
        printf("%8s  %-8s  %-23s  %10s  %10s  %9s  %8s  %8s  %s\n", "ID", "STATE", "CREATED", "RECIPIENTS",
               "DELIVERED", "DEFERRED", "BOUNCED", "PENDING", "FROM");
    for (long i = 0; i < n; i++) {
        struct lc_post_view p;
        int got = lc_view_post(ctx->rc, ids[i], 0, &p, err, sizeof err);
        if (got < 0) {
            status = lc_refused(ctx, "%s", err);
            break;
        }
        if (got == 0)
            continue; /* listed but gone: expired or half-written */
        if (j) {
            lc_view_post_json(j, &p);
        } else {
            char when[64];
            lc_fmt_time(p.created, when, sizeof when);
            printf("%8llu  %-8s  %-23s  %10lld  %10lld  %9lld  %8lld  %8lld  %s\n", (unsigned long long)p.id,
                   p.state, when, p.recipients, p.delivered, p.deferred, p.bounced, p.pending,
                   *p.from ? p.from : "<>");
        }
        lc_view_post_clear(&p);
    }
    free(ids);
    if (j) {
        lc_json_end(j);
        return lc_json_done(j, status);
    }
    if (status == LC_EXIT_OK && total > n)
        printf("(%lld older posts not shown; use --limit)\n", total - n);
    return status;
}

static int parse_id(const char *s, uint64_t *id)
{
    if (!*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 19)
        return -1;
    *id = strtoull(s, NULL, 10);
    return *id > 0 ? 0 : -1;
}

/* rates reads complaints.warn_rate and complaints.pause_rate; -1 after a usage error naming the key. */
int lc_complaint_rates(struct lc_ctx *ctx, double *warn, double *pause)
{
    const char *w = lc_cfg_str(ctx->cfg, "complaints.warn_rate"), *pz = lc_cfg_str(ctx->cfg, "complaints.pause_rate");
    if (lc_view_rate_parse(w, warn) < 0) {
        lc_usage(ctx, "complaints.warn_rate: '%.50s' is not a fraction between 0 and 1", w);
        return -1;
    }
    if (lc_view_rate_parse(pz, pause) < 0) {
        lc_usage(ctx, "complaints.pause_rate: '%.50s' is not a fraction between 0 and 1", pz);
        return -1;
    }
    return 0;
}

#define POST_TEXT_DEFERS 10   /* deferred recipients `post show` prints (JSON: POST_JSON_DEFERS) */
#define POST_JSON_DEFERS 200  /* as many as the web UI's /api/posts/ID */

/* print_defers prints the count of deferred recipients and the first POST_TEXT_DEFERS with their last replies. */
static void print_defers(const struct lc_post_view *p)
{
    if (!p->ndefer_total)
        return;
    printf("\ndeferred recipients: %lld (last reply of each)\n", p->ndefer_total);
    for (size_t i = 0; i < p->ndefer && i < POST_TEXT_DEFERS; i++) {
        char when[64];
        lc_fmt_time(p->defer[i].at, when, sizeof when);
        printf("  <%s>  %s  attempt %lld: %s\n", p->defer[i].address, when, p->defer[i].attempt, p->defer[i].reply);
    }
    if (p->ndefer_total > POST_TEXT_DEFERS)
        printf("  and %lld more\n", p->ndefer_total - POST_TEXT_DEFERS);
}

static void print_post_text(const struct lc_post_view *p, double warn, double pause)
{
    char when[64];
    lc_fmt_time(p->created, when, sizeof when);
    printf("post:        %llu\n", (unsigned long long)p->id);
    printf("list:        %s\n", p->list);
    printf("from:        <%s>\n", p->from);
    printf("state:       %s\n", p->state);
    printf("created:     %s\n", when);
    printf("size:        %lld bytes\n", p->size);
    printf("recipients:  %lld\n", p->recipients);
    printf("delivered:   %lld\n", p->delivered);
    printf("deferred:    %lld (will be retried)\n", p->deferred);
    printf("bounced:     %lld\n", p->bounced);
    printf("pending:     %lld\n", p->pending);
    char rate[128];
    lc_view_rate_fmt(rate, sizeof rate, p->complaints, p->delivered);
    const char *lvl = lc_view_rate_level(p->complaints, p->delivered, warn, pause);
    printf("complaints:  %lld, rate %s%s\n", p->complaints, rate,
           !strcmp(lvl, "pause")  ? "  WARNING: at or above complaints.pause_rate"
           : !strcmp(lvl, "warn") ? "  WARNING: at or above complaints.warn_rate"
                                  : "");
    if (!strcmp(p->state, "sending")) {
        char bar[160];
        long long final = p->delivered + p->bounced;
        lc_view_bar(bar, sizeof bar, 40, final, p->recipients);
        printf("progress:    %s  %lld of %lld recipients have a final outcome\n", bar, final, p->recipients);
    }
    if (p->ndom == 0)
        return;
    int w = 6;
    for (size_t i = 0; i < p->ndom && i < POST_TEXT_DOMAINS; i++)
        if ((int)strlen(p->dom[i].domain) > w)
            w = (int)strlen(p->dom[i].domain);
    if (w > 60)
        w = 60;
    printf("\n%-*s  %10s  %9s  %8s\n", w, "DOMAIN", "DELIVERED", "DEFERRED", "BOUNCED");
    for (size_t i = 0; i < p->ndom && i < POST_TEXT_DOMAINS; i++)
        printf("%-*s  %10lld  %9lld  %8lld\n", w, p->dom[i].domain, p->dom[i].delivered, p->dom[i].deferred,
               p->dom[i].bounced);
    if (p->ndom > POST_TEXT_DOMAINS)
        printf("(%zu more domains; see --json)\n", p->ndom - POST_TEXT_DOMAINS);
}

static int cmd_show(struct lc_ctx *ctx, int argc, char **argv)
{
    const char *id_arg = NULL;
    int status = lc_args(ctx, argc, argv, NULL, NULL, &id_arg, 1);
    if (status >= 0)
        return status;
    uint64_t id;
    if (!id_arg)
        return lc_usage(ctx, "post show: missing ID (see listcast post show --help)");
    if (parse_id(id_arg, &id) < 0)
        return lc_usage(ctx, "post show: '%.50s' is not a post id (a positive number)", id_arg);
    double warn, pause;
    if (lc_complaint_rates(ctx, &warn, &pause) < 0)
        return LC_EXIT_USAGE;
    redisContext *rc = lc_redis(ctx);
    if (!rc)
        return LC_EXIT_REFUSED;
    char err[512];
    struct lc_post_view p;
    int got = lc_view_post(rc, id, 1, &p, err, sizeof err);
    if (got > 0 && lc_view_post_defers(rc, &p, ctx->json ? POST_JSON_DEFERS : POST_TEXT_DEFERS, err, sizeof err) < 0) {
        lc_view_post_clear(&p);
        got = -1;
    }
    if (got < 0)
        return lc_refused(ctx, "%s", err);
    if (got == 0)
        return lc_refused(ctx, "no such post: %llu", (unsigned long long)id);
    status = LC_EXIT_OK;
    if (ctx->json) {
        struct lc_json *j = lc_json_out();
        lc_view_post_json(j, &p);
        status = lc_json_done(j, LC_EXIT_OK);
    } else {
        print_post_text(&p, warn, pause);
        print_defers(&p);
    }
    lc_view_post_clear(&p);
    return status;
}

/* lc_list_resume (`listcast list resume`, dispatched from lc_list.c) clears a list's pause (SCHEMA.md "Complaints"): rate_after = the highest id of the list's posts
 * that were sent (state sending or done) among its latest LC_RATE_WINDOW, so the rate starts again after it. */
int lc_list_resume(struct lc_ctx *ctx, int argc, char **argv)
{
    const char *list_arg = NULL;
    int status = lc_args(ctx, argc, argv, NULL, NULL, &list_arg, 1);
    if (status >= 0)
        return status;
    if (!list_arg)
        return lc_usage(ctx, "list resume: missing LIST@DOMAIN (see listcast list resume --help)");
    char list[LC_ADDR_MAX + 1];
    if ((status = lc_list_open(ctx, list_arg, list)) != LC_EXIT_OK)
        return status;
    redisContext *rc = ctx->rc;
    char kl[LC_KEY_MAX], kp[LC_KEY_MAX], err[512];
    lc_key_list(kl, sizeof kl, list);
    lc_key_posts(kp, sizeof kp, list);
    redisReply *r = lc_redis_cmd(rc, err, sizeof err, "HGET %s paused", kl);
    if (!r)
        return lc_refused(ctx, "%s", err);
    int paused = r->type == REDIS_REPLY_STRING && !strcmp(r->str, "1");
    freeReplyObject(r);
    if (!paused)
        return lc_refused(ctx, "list %s is not paused", list);
    r = lc_redis_cmd(rc, err, sizeof err, "ZREVRANGE %s 0 %d", kp, LC_RATE_WINDOW - 1);
    if (!r)
        return lc_refused(ctx, "%s", err);
    uint64_t after = 0;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        uint64_t id;
        char kpost[LC_KEY_MAX];
        if (r->element[i]->type != REDIS_REPLY_STRING || parse_id(r->element[i]->str, &id) < 0 || id <= after)
            continue;
        lc_key_post(kpost, sizeof kpost, id);
        redisReply *st = lc_redis_cmd(rc, err, sizeof err, "HGET %s state", kpost);
        if (!st) {
            freeReplyObject(r);
            return lc_refused(ctx, "%s", err);
        }
        if (st->type == REDIS_REPLY_STRING && (!strcmp(st->str, LC_PS_SENDING) || !strcmp(st->str, LC_PS_DONE)))
            after = id;
        freeReplyObject(st);
    }
    freeReplyObject(r);
    r = lc_redis_cmd(rc, err, sizeof err, "EVAL %s 1 %s %llu", 
                     "redis.call('HDEL', KEYS[1], 'paused', 'paused_reason', 'paused_at') "
                     "redis.call('HSET', KEYS[1], 'rate_after', ARGV[1]) return 1",
                     kl, (unsigned long long)after);
    if (!r)
        return lc_refused(ctx, "%s", err);
    freeReplyObject(r);
    if (ctx->json) {
        struct lc_json *j = lc_json_out();
        lc_json_obj(j);
        lc_json_kstr(j, "list", list);
        lc_json_kbool(j, "resumed", 1);
        lc_json_kint(j, "rate_after", (long long)after);
        lc_json_end(j);
        return lc_json_done(j, LC_EXIT_OK);
    }
    printf("resumed %s: its waiting posts go out within seconds; the complaint rate counts posts after %llu\n",
           list, (unsigned long long)after);
    return LC_EXIT_OK;
}

int lc_cmd_post(struct lc_ctx *ctx, int argc, char **argv)
{
    static const struct lc_subcmd subs[] = {
        {"post ls", cmd_ls}, {"post show", cmd_show}, {NULL, NULL}};
    return lc_dispatch(ctx, argc, argv, subs, "ls or show");
}
