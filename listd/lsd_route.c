/* lsd_route: what a recipient is for (routing and posting policy), the job engine of listd's Redis work, and
 * durable storage of bounces.
 *
 * Routing of a normalised recipient R (domain D), in this order:
 *   1. R decodes as a VERP address (lc_verp_decode == 0) and SISMEMBER lc:domains D: a bounce recipient.
 *      A VERP address with a bad signature (-2): 550 5.7.1, decided without Redis.
 *   2. R is a command address of list L@D (lsd_addr_parse, in memory): L-subscribe, L-unsubscribe, L-help,
 *      L-owner, L-request, L-confirm-TOKEN, L-approve-TOKEN, L-reject-TOKEN. A token is checked in memory
 *      first: forged, expired or for another action: 550 5.7.1 with the reason, without Redis. The null sender
 *      gets 550 5.7.1 at every command address but L-owner (no auto-replies to bounces, no confirmations by
 *      auto-responders). Then HASH lc:list:L must exist (else 550 5.1.1), and L-owner needs an owner.
 *   3. HASH lc:list:R exists: a post recipient, if the list's policy lets the sender try:
 *        open       anyone (the null sender too);
 *        members    not the null sender; an envelope sender that is not an active subscriber is let through
 *                   here, because the From: address may be one: lsd_post.c decides at the end of DATA;
 *        moderated  not the null sender (posts of others are held at the end of DATA);
 *        announce   the list's owner or one of its moderators (envelope sender), else 550 5.7.1.
 *      Any other policy value (or none) refuses with 550 5.7.1 and a warning: fail closed.
 *   4. D is in SET lc:domains: 550 5.1.1 <R>: no such list.
 *   5. anything else: 550 5.7.1 <R>: relay access denied (listd never relays).
 * The lookups of one recipient go out together (one round trip). Redis down, an error reply or a lost
 * connection: 451 4.3.0. A recipient accepted for a list (post or command) comes back as LSD_RCPT_POST with
 * res->list = R itself; lsd_store_post parses R again and hands the message to lsd_post.c or lsd_cmds.c.
 *
 * lsd_store_post first checks the header (lsd_msg_scan): a header line over 998 octets (554 5.6.0), a header
 * over 64 KB (552 5.3.4), this list's List-Id or X-Loop or more than 30 Received: fields (554 5.4.6, a loop):
 * refused in the dialogue, nothing stored.
 *
 * Bounces are one MULTI/EXEC of one XADD lc:stream:bounces each. The reply is 250 only after EXEC returned,
 * every element without error (with appendfsync always, after the fsync).
 *
 * Jobs: a job owns its copies of the inputs except the message (and bounce recipients), which the caller
 * keeps alive until done() runs or it cancels the job. A cancelled job waits for its outstanding replies and
 * then frees itself without running further steps, so it sends nothing more and never touches the message.
 */
#include "lsd.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "lc_log.h"
#include "lc_schema.h"
#include "lc_token.h"
#include "lc_verp.h"

enum jkind { J_RCPT, J_BOUNCE, J_OP };

struct lsd_job {
    struct lsd_server *srv;
    enum jkind kind;
    int phase;            /* J_BOUNCE: 1 (MULTI..EXEC) */
    int nsent, ngot;
    int failed;
    char errtxt[160];     /* the first failure, for the log */
    lsd_job_fn *done;     /* NULL once cancelled or finished */
    void *arg;
    struct lsd_result res;
    char rcpt[LC_ADDR_MAX + 1];
    char sender[LC_ADDR_MAX + 1];
    char list[LC_ADDR_MAX + 1];
    /* J_RCPT answers */
    int verp;             /* 1: R is a valid VERP address */
    uint64_t post, sub;
    struct lsd_addr addr; /* what R is for */
    int domain_ours, list_found, is_member;
    char policy[32];
    char owner[LC_ADDR_MAX + 1];
    char moderators[1024];
    long long list_max;   /* the list's max_message_size (0: none) */
    /* J_OP */
    lsd_step_fn *next;
    void *ctx;
    void (*ctx_free)(void *);
    int ended;
    int waiting;          /* lsd_job_wait: a step waits for something other than Redis */
    /* storage inputs (borrowed) */
    const char *msg;
    size_t len;
    const struct lsd_bounce_rcpt *rcpts;
    int nrcpts;
    uint64_t *ids;        /* J_BOUNCE: post and sub of each recipient (owned copy, for the log) */
    long long created;
};

static void set_reply(struct lsd_result *res, int code, const char *fmt, ...) LC_PRINTF(3, 4);

static void set_reply(struct lsd_result *res, int code, const char *fmt, ...)
{
    va_list ap;
    res->code = code;
    va_start(ap, fmt);
    vsnprintf(res->text, sizeof res->text, fmt, ap);
    va_end(ap);
}

static void set_tempfail(struct lsd_result *res)
{
    memset(res, 0, sizeof *res);
    set_reply(res, 451, "451 4.3.0 Temporary lookup or storage failure, try again later");
}

static struct lsd_job *job_new(struct lsd_server *srv, enum jkind kind, lsd_job_fn *done, void *arg)
{
    struct lsd_job *j = lc_calloc(1, sizeof *j);
    j->srv = srv;
    j->kind = kind;
    j->done = done;
    j->arg = arg;
    return j;
}

void lsd_job_cancel(struct lsd_job *job)
{
    if (job)
        job->done = NULL;
}

static void job_reply(const struct redisReply *reply, void *arg);

/* jsend sends one command of the job; on failure marks the job failed. Returns 0 or -1. */
static int jsend(struct lsd_job *j, int argc, const char **argv, const size_t *lens)
{
    if (j->failed)
        return -1;
    if (lsd_redis_send(j->srv->redis, argc, argv, lens, job_reply, j) < 0) {
        j->failed = 1;
        snprintf(j->errtxt, sizeof j->errtxt, "redis is down");
        return -1;
    }
    j->nsent++;
    return 0;
}

/* jsendv: jsend with NUL-terminated strings. */
static int jsendv(struct lsd_job *j, int argc, const char **argv)
{
    size_t lens[16];
    if (argc > 16)
        lc_panic("jsendv: too many arguments");
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return jsend(j, argc, argv, lens);
}

/* finish hands the result to the caller (unless cancelled) and frees the job. */
static void finish(struct lsd_job *j)
{
    lsd_job_fn *fn = j->done;
    j->done = NULL;
    if (fn)
        fn(j->arg, &j->res);
    if (j->ctx_free)
        j->ctx_free(j->ctx);
    free(j->ids);
    free(j);
}

/* ---------------------------------------------------------------- routing */

static void copy_str(char *dst, size_t dstlen, const redisReply *r)
{
    dst[0] = 0;
    if (r && r->type == REDIS_REPLY_STRING) {
        size_t n = r->len < dstlen - 1 ? r->len : dstlen - 1;
        memcpy(dst, r->str, n);
        dst[n] = 0;
    }
}

/* ---------------------------------------------------------------- addresses (pure) */

static const struct {
    const char *suffix;        /* "-subscribe", or "-confirm-" for a token address */
    enum lsd_addr_kind kind;
    int token;
} suffixes[] = {
    {"-subscribe", LSD_A_SUBSCRIBE, 0}, {"-unsubscribe", LSD_A_UNSUBSCRIBE, 0}, {"-help", LSD_A_HELP, 0},
    {"-owner", LSD_A_OWNER, 0},         {"-request", LSD_A_REQUEST, 0},         {"-confirm-", LSD_A_CONFIRM, 1},
    {"-approve-", LSD_A_APPROVE, 1},    {"-reject-", LSD_A_REJECT, 1},
};

void lsd_addr_parse(const char *rcpt, struct lsd_addr *a)
{
    memset(a, 0, sizeof *a);
    a->kind = LSD_A_POST;
    snprintf(a->list, sizeof a->list, "%s", rcpt);
    const char *at = strrchr(rcpt, '@');
    if (!at)
        return;
    size_t llen = (size_t)(at - rcpt);
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        const char *sfx = suffixes[i].suffix;
        size_t sl = strlen(sfx), base;
        if (suffixes[i].token) {
            /* L-confirm-TOKEN: the first occurrence after a non-empty list name */
            const char *p = NULL;
            for (size_t k = 1; k + sl < llen && !p; k++)
                if (memcmp(rcpt + k, sfx, sl) == 0)
                    p = rcpt + k;
            if (!p)
                continue;
            base = (size_t)(p - rcpt);
            size_t tl = llen - base - sl;
            if (tl == 0 || tl >= sizeof a->token)
                continue;
            memcpy(a->token, p + sl, tl);
            a->token[tl] = 0;
        } else {
            if (llen <= sl || memcmp(rcpt + llen - sl, sfx, sl) != 0)
                continue;
            base = llen - sl;
        }
        a->kind = suffixes[i].kind;
        snprintf(a->list, sizeof a->list, "%.*s%s", (int)base, rcpt, at);
        return;
    }
}

void lsd_addr_make(const char *list, enum lsd_addr_kind kind, const char *token, char *out, size_t outlen)
{
    const char *at = strrchr(list, '@');
    int llen = at ? (int)(at - list) : (int)strlen(list);
    const char *dom = at ? at : "";
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        if (suffixes[i].kind == kind) {
            snprintf(out, outlen, "%.*s%s%s%s", llen, list, suffixes[i].suffix, suffixes[i].token ? token : "",
                     dom);
            return;
        }
    }
    snprintf(out, outlen, "%s", list);
}

/* ---------------------------------------------------------------- routing */

static void rcpt_reply(struct lsd_job *j, int idx, const redisReply *r)
{
    switch (idx) {
    case 0: /* SISMEMBER lc:domains D */
        j->domain_ours = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        break;
    case 1: /* HMGET lc:list:L policy owner address id moderators max_message_size */
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 6) {
            for (size_t i = 0; i < r->elements; i++)
                if (r->element[i]->type == REDIS_REPLY_STRING)
                    j->list_found = 1;
            copy_str(j->policy, sizeof j->policy, r->element[0]);
            copy_str(j->owner, sizeof j->owner, r->element[1]);
            copy_str(j->moderators, sizeof j->moderators, r->element[4]);
            char max[32];
            copy_str(max, sizeof max, r->element[5]);
            j->list_max = lsd_size_setting(max);
        } else {
            j->failed = 1;
            snprintf(j->errtxt, sizeof j->errtxt, "HMGET: unexpected reply type %d", r->type);
        }
        break;
    case 2: /* HEXISTS lc:active:L sender */
        j->is_member = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        break;
    }
}

/* addr_in reports whether the normalised address a is one of the addresses in list (separated by spaces or
 * commas; each normalised before comparing). */
int lsd_addr_in(const char *a, const char *list)
{
    if (!*a)
        return 0;
    while (*list) {
        size_t skip = strspn(list, " ,\t"), n;
        list += skip;
        n = strcspn(list, " ,\t");
        if (n == 0)
            break;
        char norm[LC_ADDR_MAX + 1];
        const char *why;
        if (lc_addr_norm(list, n, norm, &why) == 0 && strcmp(norm, a) == 0)
            return 1;
        list += n;
    }
    return 0;
}

long long lsd_size_setting(const char *v)
{
    if (!*v || strspn(v, "0123456789") != strlen(v) || strlen(v) > 18)
        return 0;
    return strtoll(v, NULL, 10);
}

static void rcpt_decide(struct lsd_job *j)
{
    struct lsd_result *res = &j->res;
    if (j->failed) {
        lc_warn("rcpt=<%s> lookup failed: %s", j->rcpt, j->errtxt);
        set_tempfail(res);
        return;
    }
    if (j->verp) {
        if (!j->domain_ours) {
            set_reply(res, 550, "550 5.7.1 <%s>: relay access denied", j->rcpt);
            return;
        }
        res->kind = LSD_RCPT_BOUNCE;
        res->post = j->post;
        res->sub = j->sub;
        set_reply(res, 250, "250 2.1.5 Ok");
        return;
    }
    if (j->list_found && j->addr.kind != LSD_A_POST) {
        if (j->addr.kind == LSD_A_OWNER && !*j->owner) {
            set_reply(res, 550, "550 5.1.1 <%s>: this list has no owner", j->rcpt);
            return;
        }
    } else if (j->list_found) {
        int privileged = lsd_addr_in(j->sender, j->owner) || lsd_addr_in(j->sender, j->moderators);
        if (!strcmp(j->policy, "open")) {
            /* anyone may post */
        } else if (!strcmp(j->policy, "members") || !strcmp(j->policy, "moderated")) {
            if (!*j->sender) {
                set_reply(res, 550, "550 5.7.1 <%s>: %s", j->rcpt,
                          !strcmp(j->policy, "members") ? "only members may post" : "no posts from the null sender");
                return;
            }
        } else if (!strcmp(j->policy, "announce")) {
            if (!privileged) {
                set_reply(res, 550, "550 5.7.1 <%s>: only the list's owners and moderators may post to this announce list",
                          j->rcpt);
                return;
            }
        } else {
            lc_warn("list=%s has unknown policy \"%s\": refusing posts", j->rcpt, j->policy);
            set_reply(res, 550, "550 5.7.1 <%s>: list does not accept posts", j->rcpt);
            return;
        }
    } else if (j->domain_ours) {
        set_reply(res, 550, "550 5.1.1 <%s>: no such list", j->rcpt);
        return;
    } else {
        set_reply(res, 550, "550 5.7.1 <%s>: relay access denied", j->rcpt);
        return;
    }
    res->kind = LSD_RCPT_POST;
    snprintf(res->list, sizeof res->list, "%s", j->rcpt);
    if (j->addr.kind == LSD_A_POST)
        res->list_max = j->list_max;
    set_reply(res, 250, "250 2.1.5 Ok");
}

/* token_precheck checks the token of a command address in memory; returns 0 (go on) or -1 with *res set. */
static int token_precheck(struct lsd_server *srv, const char *rcpt, const struct lsd_addr *a, struct lsd_result *res)
{
    if (a->kind != LSD_A_CONFIRM && a->kind != LSD_A_APPROVE && a->kind != LSD_A_REJECT)
        return 0;
    int action;
    uint64_t id;
    int64_t expires;
    enum lc_tok_result tr =
        lc_token_check(srv->secret, a->token, strlen(a->token), (int64_t)time(NULL), &action, &id, &expires);
    const char *what = a->kind == LSD_A_CONFIRM ? "confirmation" : "moderation";
    if (tr != LC_TOK_OK) {
        lc_info("rcpt=<%s> %s token refused: %s", rcpt, what, lc_token_why(tr));
        set_reply(res, 550, "550 5.7.1 <%s>: %s token refused (%s): nothing changed", rcpt, what, lc_token_why(tr));
        return -1;
    }
    int want = a->kind == LSD_A_APPROVE ? LC_TOK_APPROVE : a->kind == LSD_A_REJECT ? LC_TOK_REJECT : 0;
    if ((want && action != want) || (!want && action != LC_TOK_SUBSCRIBE && action != LC_TOK_UNSUBSCRIBE)) {
        set_reply(res, 550, "550 5.7.1 <%s>: this token is not for this address: nothing changed", rcpt);
        return -1;
    }
    return 0;
}

int lsd_route_rcpt(struct lsd_server *srv, const char *rcpt, const char *sender, lsd_job_fn *done, void *arg,
                   struct lsd_job **jobp, struct lsd_result *res)
{
    memset(res, 0, sizeof *res);
    *jobp = NULL;
    uint64_t post = 0, sub = 0;
    int v = lc_verp_decode(srv->secret, rcpt, strlen(rcpt), &post, &sub);
    if (v == -2) {
        set_reply(res, 550, "550 5.7.1 <%s>: invalid bounce address", rcpt);
        return LSD_DONE;
    }
    struct lsd_addr a;
    lsd_addr_parse(rcpt, &a);
    if (v != 0 && a.kind != LSD_A_POST) {
        if (!*sender && a.kind != LSD_A_OWNER) {
            set_reply(res, 550, "550 5.7.1 <%s>: no commands from the null sender", rcpt);
            return LSD_DONE;
        }
        if (token_precheck(srv, rcpt, &a, res) < 0)
            return LSD_DONE;
    }
    if (!lsd_redis_up(srv->redis)) {
        set_tempfail(res);
        return LSD_DONE;
    }
    struct lsd_job *j = job_new(srv, J_RCPT, done, arg);
    snprintf(j->rcpt, sizeof j->rcpt, "%s", rcpt);
    snprintf(j->sender, sizeof j->sender, "%s", sender);
    j->verp = v == 0;
    j->post = post;
    j->sub = sub;
    j->addr = a;
    const char *dom = lc_addr_domain(rcpt);
    const char *a0[] = {"SISMEMBER", LC_K_DOMAINS, dom};
    jsendv(j, 3, a0);
    if (!j->verp) {
        char klist[LC_KEY_MAX], kact[LC_KEY_MAX];
        if (lc_key_list(klist, sizeof klist, a.list) < 0 || lc_key_active(kact, sizeof kact, a.list) < 0)
            lc_panic("key too long for %s", rcpt);
        const char *a1[] = {"HMGET", klist, "policy", "owner", "address", "id", "moderators", "max_message_size"};
        jsendv(j, 8, a1);
        if (*sender) {
            const char *a2[] = {"HEXISTS", kact, sender};
            jsendv(j, 3, a2);
        }
    }
    if (j->nsent == 0) {
        free(j);
        set_tempfail(res);
        return LSD_DONE;
    }
    *jobp = j;
    return LSD_PENDING;
}

/* ---------------------------------------------------------------- storage of bounces */

int lsd_exec_ok(const struct redisReply *r, char *err, size_t errlen)
{
    if (r->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errlen, "EXEC: %s", r->type == REDIS_REPLY_ERROR ? r->str : "transaction not executed");
        return 0;
    }
    for (size_t i = 0; i < r->elements; i++) {
        if (r->element[i]->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "EXEC element %zu: %s (written partly: schema violation)", i, r->element[i]->str);
            return 0;
        }
    }
    return 1;
}

static void send_bounce_txn(struct lsd_job *j)
{
    const char *multi[] = {"MULTI"};
    if (jsendv(j, 1, multi) < 0)
        return;
    for (int i = 0; i < j->nrcpts; i++) {
        char post[24], sub[24];
        snprintf(post, sizeof post, "%" PRIu64, j->rcpts[i].post);
        snprintf(sub, sizeof sub, "%" PRIu64, j->rcpts[i].sub);
        const char *xadd[] = {"XADD", LC_S_BOUNCES, "*", "rcpt", j->rcpts[i].addr, "from", j->sender,
                              "post", post, "sub", sub, "msg", j->msg};
        size_t n = sizeof xadd / sizeof xadd[0];
        size_t lens[sizeof xadd / sizeof xadd[0]];
        for (size_t k = 0; k + 1 < n; k++)
            lens[k] = strlen(xadd[k]);
        lens[n - 1] = j->len;
        jsend(j, (int)n, xadd, lens);
    }
    const char *exec[] = {"EXEC"};
    if (jsendv(j, 1, exec) < 0) {
        const char *discard[] = {"DISCARD"};
        j->failed = 0;
        jsendv(j, 1, discard);
        j->failed = 1;
    }
}

static void bounce_done(struct lsd_job *j)
{
    struct lsd_result *res = &j->res;
    if (j->failed) {
        lc_warn("bounce from=<%s> size=%zu not stored: %s", j->sender, j->len, j->errtxt);
        set_tempfail(res);
        return;
    }
    for (int i = 0; i < j->nrcpts; i++)
        lc_info("bounce accepted post=%" PRIu64 " sub=%" PRIu64 " from=<%s> size=%zu", j->ids[2 * i],
                j->ids[2 * i + 1], j->sender, j->len);
    set_reply(res, 250, "250 2.0.0 Ok: queued as bounce");
}

/* ---------------------------------------------------------------- the job engine (J_OP) */

struct lsd_job *lsd_job_new(struct lsd_server *srv, const struct lsd_input *in, lsd_job_fn *done, void *arg,
                            void *ctx, void (*ctx_free)(void *))
{
    struct lsd_job *j = job_new(srv, J_OP, done, arg);
    snprintf(j->rcpt, sizeof j->rcpt, "%s", in->rcpt);
    snprintf(j->sender, sizeof j->sender, "%s", in->sender);
    j->ctx = ctx;
    j->ctx_free = ctx_free;
    return j;
}

void *lsd_job_ctx(struct lsd_job *j)
{
    return j->ctx;
}

struct lsd_server *lsd_job_srv(struct lsd_job *j)
{
    return j->srv;
}

void lsd_job_cmd(struct lsd_job *j, int argc, const char **argv, const size_t *lens)
{
    if (lens) {
        jsend(j, argc, argv, lens);
        return;
    }
    size_t *l = lc_malloc((size_t)argc * sizeof *l);
    for (int i = 0; i < argc; i++)
        l[i] = strlen(argv[i]);
    jsend(j, argc, argv, l);
    free(l);
}

void lsd_job_then(struct lsd_job *j, lsd_step_fn *next)
{
    j->next = next;
}

void lsd_job_end(struct lsd_job *j, int code, const char *fmt, ...)
{
    va_list ap;
    j->ended = 1;
    j->res.code = code;
    va_start(ap, fmt);
    vsnprintf(j->res.text, sizeof j->res.text, fmt, ap);
    va_end(ap);
}

int lsd_job_start(struct lsd_job *j, struct lsd_job **jobp, struct lsd_result *res)
{
    *jobp = NULL;
    if (j->nsent > j->ngot) {
        *jobp = j;
        return LSD_PENDING;
    }
    if (j->failed || !j->ended) {
        if (!j->ended)
            lc_warn("action not stored: %s", j->failed ? j->errtxt : "no step");
        set_tempfail(&j->res);
    }
    *res = j->res;
    j->done = NULL;
    finish(j);
    return LSD_DONE;
}

/* run_step runs step next with reply r (NULL after a wait), then finishes the job unless more is out. */
static void run_step(struct lsd_job *j, lsd_step_fn *next, const redisReply *r)
{
    if (!j->failed && !j->ended) {
        if (next)
            next(j, r);
        if (j->waiting)
            return; /* lsd_job_resume comes later (a waiting step sends nothing and does not end) */
        j->waiting = 0;
        if (j->ngot < j->nsent && !j->failed)
            return; /* the next step is out */
        if (!j->ended && !j->failed) {
            j->failed = 1;
            snprintf(j->errtxt, sizeof j->errtxt, "a step neither ended nor sent a command");
        }
        if (j->ngot < j->nsent)
            return; /* failed while sending: wait for what is out */
    }
    if (j->failed) {
        lc_warn("rcpt=<%s> from=<%s> action failed: %s", j->rcpt, j->sender, j->errtxt);
        set_tempfail(&j->res);
    }
    finish(j);
}

/* op_reply handles a reply of an action job: the last reply of a step runs the next step. */
static void op_reply(struct lsd_job *j, const redisReply *r)
{
    if (!r) {
        if (!j->failed)
            snprintf(j->errtxt, sizeof j->errtxt, "connection to redis lost");
        j->failed = 1;
    } else if (r->type == REDIS_REPLY_ERROR) {
        if (!j->failed)
            snprintf(j->errtxt, sizeof j->errtxt, "%s", r->str);
        j->failed = 1;
    }
    if (j->ngot < j->nsent)
        return;
    if (!j->done) { /* cancelled: run nothing more */
        finish(j);
        return;
    }
    lsd_step_fn *next = j->next;
    j->next = NULL;
    run_step(j, next, r);
}

void lsd_job_wait(struct lsd_job *j)
{
    j->waiting = 1;
}

void lsd_job_resume(struct lsd_job *j, lsd_step_fn *next)
{
    j->waiting = 0;
    if (!j->done) { /* cancelled meanwhile */
        finish(j);
        return;
    }
    run_step(j, next, NULL);
}

static void job_reply(const struct redisReply *reply, void *arg)
{
    struct lsd_job *j = arg;
    const redisReply *r = reply;
    int idx = j->ngot++;
    if (j->kind == J_OP) {
        op_reply(j, r);
        return;
    }
    if (!r) {
        if (!j->failed)
            snprintf(j->errtxt, sizeof j->errtxt, "connection to redis lost");
        j->failed = 1;
    } else if (r->type == REDIS_REPLY_ERROR && !(j->kind == J_BOUNCE && idx == j->nsent - 1)) {
        /* an error reply (EXEC's own error is looked at by lsd_exec_ok below) */
        if (!j->failed)
            snprintf(j->errtxt, sizeof j->errtxt, "%s", r->str);
        j->failed = 1;
    } else if (!j->failed) {
        if (j->kind == J_RCPT)
            rcpt_reply(j, idx, r);
        else if (idx == j->nsent - 1 && !lsd_exec_ok(r, j->errtxt, sizeof j->errtxt))
            j->failed = 1;
    }
    if (j->ngot < j->nsent)
        return;
    if (j->kind == J_RCPT)
        rcpt_decide(j);
    else
        bounce_done(j);
    finish(j);
}

/* ---------------------------------------------------------------- end of DATA */

int lsd_store_post(struct lsd_server *srv, const char *list, const char *sender, const char *msg, size_t len,
                   lsd_job_fn *done, void *arg, struct lsd_job **jobp, struct lsd_result *res)
{
    memset(res, 0, sizeof *res);
    *jobp = NULL;
    struct lsd_input *in = lc_calloc(1, sizeof *in);
    snprintf(in->rcpt, sizeof in->rcpt, "%s", list);
    snprintf(in->sender, sizeof in->sender, "%s", sender);
    lsd_addr_parse(list, &in->addr);
    in->msg = msg;
    in->len = len;
    lsd_msg_scan(msg, len, in->addr.list, &in->mi);
    int rc = LSD_DONE;
    if (in->mi.err == LSD_MSG_LINE) {
        set_reply(res, 554, "554 5.6.0 Error: a header line is longer than %d octets", LSD_HDR_LINE_MAX);
    } else if (in->mi.err == LSD_MSG_HEADER) {
        set_reply(res, 552, "552 5.3.4 Error: the message header is larger than %d octets", LSD_HDR_MAX);
    } else if (in->mi.loop) {
        set_reply(res, 554, "554 5.4.6 Error: mail loop: the message already went through %s", in->addr.list);
    } else if (in->mi.hops > LSD_LOOP_HOPS) {
        set_reply(res, 554, "554 5.4.6 Error: too many hops (%d Received: fields), mail loop?", in->mi.hops);
    } else if (!lsd_redis_up(srv->redis)) {
        set_tempfail(res);
    } else if (in->addr.kind == LSD_A_POST) {
        rc = lsd_post_start(srv, in, done, arg, jobp, res);
    } else if (in->addr.kind == LSD_A_APPROVE || in->addr.kind == LSD_A_REJECT) {
        rc = lsd_mod_start(srv, in, done, arg, jobp, res);
    } else {
        rc = lsd_cmds_start(srv, in, done, arg, jobp, res);
    }
    if (rc == LSD_DONE && res->code != 250)
        lc_info("rcpt=<%s> from=<%s> size=%zu refused: %s", list, sender, len, res->text);
    free(in);
    return rc;
}

int lsd_store_bounces(struct lsd_server *srv, const char *sender, const struct lsd_bounce_rcpt *rcpts, int n,
                      const char *msg, size_t len, lsd_job_fn *done, void *arg, struct lsd_job **jobp,
                      struct lsd_result *res)
{
    memset(res, 0, sizeof *res);
    *jobp = NULL;
    struct lsd_job *j = job_new(srv, J_BOUNCE, done, arg);
    snprintf(j->sender, sizeof j->sender, "%s", sender);
    j->rcpts = rcpts;
    j->nrcpts = n;
    j->ids = lc_calloc((size_t)n * 2 + 1, sizeof *j->ids);
    for (int i = 0; i < n; i++) {
        j->ids[2 * i] = rcpts[i].post;
        j->ids[2 * i + 1] = rcpts[i].sub;
    }
    j->msg = msg;
    j->len = len;
    j->phase = 1;
    send_bounce_txn(j);
    if (j->nsent == 0) {
        lc_warn("bounce from=<%s> size=%zu not stored: redis is down", sender, len);
        free(j->ids);
        free(j);
        set_tempfail(res);
        return LSD_DONE;
    }
    *jobp = j;
    return LSD_PENDING;
}
