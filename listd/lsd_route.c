/* lsd_route: what a recipient is for (routing and posting policy) and durable storage, through Redis.
 *
 * Routing of a normalised recipient R (domain D), in this order:
 *   1. R decodes as a VERP address (lc_verp_decode == 0) and SISMEMBER lc:domains D: a bounce recipient.
 *      A VERP address with a bad signature (-2): 550 5.7.1, decided without Redis.
 *   2. HASH lc:list:R exists: a post recipient, if the list's policy lets the sender post:
 *        open       anyone (the null sender too);
 *        members    the sender is a field of HASH lc:active:R, else 550 5.7.1 only members may post;
 *        moderated, announce
 *                   only the list's owner for now, else 550 5.7.1. There is no moderation queue yet: when it
 *                   comes, moderated posts from others will be held instead of refused.
 *      Any other policy value (or none) refuses with 550 5.7.1 and a warning: fail closed.
 *   3. D is in SET lc:domains: 550 5.1.1 <R>: no such list.
 *   4. anything else: 550 5.7.1 <R>: relay access denied (listd never relays).
 * The lookups of one recipient go out together (one round trip). Redis down, an error reply or a lost
 * connection: 451 4.3.0.
 *
 * Storage: a post is INCR lc:seq:post, then one MULTI/EXEC of SET lc:msg:ID, HSET lc:post:ID, ZADD
 * lc:posts:LIST, XADD lc:stream:posts; bounces are one MULTI/EXEC of one XADD lc:stream:bounces each. The reply
 * is 250 only after EXEC returned, every element without error (with appendfsync always, after the fsync).
 * MULTI/EXEC makes the write all-or-nothing against crashes and lost connections; Redis does not roll back a
 * command that fails at run time inside EXEC (a key of the wrong type: a schema bug), which we report as
 * 451 and log as a warning. A post id taken by INCR and then not used is simply skipped.
 *
 * Jobs: a job owns its copies of the inputs except the message (and bounce recipients), which the caller
 * keeps alive until done() runs or it cancels the job. A cancelled job waits for its outstanding replies and
 * then frees itself; a cancelled post job never sends its MULTI.
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
#include "lc_verp.h"

enum jkind { J_RCPT, J_POST, J_BOUNCE };

struct lsd_job {
    struct lsd_server *srv;
    enum jkind kind;
    int phase;            /* J_POST: 0 INCR, 1 MULTI..EXEC */
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
    int domain_ours, list_found, is_member;
    char policy[32];
    char owner[LC_ADDR_MAX + 1];
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

static void rcpt_reply(struct lsd_job *j, int idx, const redisReply *r)
{
    switch (idx) {
    case 0: /* SISMEMBER lc:domains D */
        j->domain_ours = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        break;
    case 1: /* HMGET lc:list:R policy owner address id */
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 4) {
            for (size_t i = 0; i < r->elements; i++)
                if (r->element[i]->type == REDIS_REPLY_STRING)
                    j->list_found = 1;
            copy_str(j->policy, sizeof j->policy, r->element[0]);
            copy_str(j->owner, sizeof j->owner, r->element[1]);
        } else {
            j->failed = 1;
            snprintf(j->errtxt, sizeof j->errtxt, "HMGET: unexpected reply type %d", r->type);
        }
        break;
    case 2: /* HEXISTS lc:active:R sender */
        j->is_member = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        break;
    }
}

/* owner_match compares the sender with the list's owner field, normalising the owner. */
static int owner_match(const char *sender, const char *owner)
{
    char norm[LC_ADDR_MAX + 1];
    const char *why;
    if (!*sender || !*owner || lc_addr_norm(owner, strlen(owner), norm, &why) < 0)
        return 0;
    return strcmp(norm, sender) == 0;
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
    if (j->list_found) {
        if (!strcmp(j->policy, "open")) {
            /* anyone may post */
        } else if (!strcmp(j->policy, "members")) {
            if (!j->is_member) {
                set_reply(res, 550, "550 5.7.1 <%s>: only members may post", j->rcpt);
                return;
            }
        } else if (!strcmp(j->policy, "moderated") || !strcmp(j->policy, "announce")) {
            /* No moderation queue yet: only the owner posts; others are refused, not held. */
            if (!owner_match(j->sender, j->owner)) {
                set_reply(res, 550, "550 5.7.1 <%s>: only the list owner may post to this %s list", j->rcpt,
                          j->policy);
                return;
            }
        } else {
            lc_warn("list=%s has unknown policy \"%s\": refusing posts", j->rcpt, j->policy);
            set_reply(res, 550, "550 5.7.1 <%s>: list does not accept posts", j->rcpt);
            return;
        }
        res->kind = LSD_RCPT_POST;
        snprintf(res->list, sizeof res->list, "%s", j->rcpt);
        set_reply(res, 250, "250 2.1.5 Ok");
        return;
    }
    if (j->domain_ours)
        set_reply(res, 550, "550 5.1.1 <%s>: no such list", j->rcpt);
    else
        set_reply(res, 550, "550 5.7.1 <%s>: relay access denied", j->rcpt);
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
    const char *dom = lc_addr_domain(rcpt);
    const char *a0[] = {"SISMEMBER", LC_K_DOMAINS, dom};
    jsendv(j, 3, a0);
    if (!j->verp) {
        char klist[LC_KEY_MAX], kact[LC_KEY_MAX];
        if (lc_key_list(klist, sizeof klist, rcpt) < 0 || lc_key_active(kact, sizeof kact, rcpt) < 0)
            lc_panic("key too long for %s", rcpt);
        const char *a1[] = {"HMGET", klist, "policy", "owner", "address", "id"};
        jsendv(j, 6, a1);
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

/* ---------------------------------------------------------------- storage */

static int exec_ok(struct lsd_job *j, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY) {
        snprintf(j->errtxt, sizeof j->errtxt, "EXEC: %s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "transaction not executed");
        return 0;
    }
    for (size_t i = 0; i < r->elements; i++) {
        if (r->element[i]->type == REDIS_REPLY_ERROR) {
            snprintf(j->errtxt, sizeof j->errtxt, "EXEC element %zu: %s (written partly: schema violation)", i,
                     r->element[i]->str);
            return 0;
        }
    }
    return 1;
}

/* send_post_txn sends MULTI .. EXEC for post j->post. */
static void send_post_txn(struct lsd_job *j)
{
    char id[24], size[24], created[24];
    char kmsg[LC_KEY_MAX], kpost[LC_KEY_MAX], kposts[LC_KEY_MAX];
    snprintf(id, sizeof id, "%" PRIu64, j->post);
    snprintf(size, sizeof size, "%zu", j->len);
    snprintf(created, sizeof created, "%lld", j->created);
    if (lc_key_msg(kmsg, sizeof kmsg, j->post) < 0 || lc_key_post(kpost, sizeof kpost, j->post) < 0 ||
        lc_key_posts(kposts, sizeof kposts, j->list) < 0)
        lc_panic("key too long for list %s", j->list);

    const char *multi[] = {"MULTI"};
    if (jsendv(j, 1, multi) < 0)
        return;
    const char *set[] = {"SET", kmsg, j->msg};
    size_t setl[] = {3, strlen(kmsg), j->len};
    jsend(j, 3, set, setl);
    const char *hset[] = {"HSET", kpost, "id", id, "list", j->list, "from", j->sender, "size", size,
                          "created", created, "state", LC_PS_QUEUED, "recipients", "0", "delivered", "0",
                          "deferred", "0", "bounced", "0"};
    size_t hsetl[sizeof hset / sizeof hset[0]];
    for (size_t i = 0; i < sizeof hset / sizeof hset[0]; i++)
        hsetl[i] = strlen(hset[i]);
    jsend(j, (int)(sizeof hset / sizeof hset[0]), hset, hsetl);
    const char *zadd[] = {"ZADD", kposts, created, id};
    jsendv(j, 4, zadd);
    const char *xadd[] = {"XADD", LC_S_POSTS, "*", "post", id};
    jsendv(j, 5, xadd);
    const char *exec[] = {"EXEC"};
    if (jsendv(j, 1, exec) < 0) {
        /* Only when the connection is dying, which discards the open MULTI anyway; DISCARD if it is not. */
        const char *discard[] = {"DISCARD"};
        j->failed = 0;
        jsendv(j, 1, discard);
        j->failed = 1;
    }
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

static void store_done(struct lsd_job *j)
{
    struct lsd_result *res = &j->res;
    if (j->failed) {
        if (j->kind == J_POST)
            lc_warn("post list=%s from=<%s> size=%zu not stored: %s", j->list, j->sender, j->len, j->errtxt);
        else
            lc_warn("bounce from=<%s> size=%zu not stored: %s", j->sender, j->len, j->errtxt);
        set_tempfail(res);
        return;
    }
    if (j->kind == J_POST) {
        lc_info("post=%" PRIu64 " accepted list=%s from=<%s> size=%zu", j->post, j->list, j->sender, j->len);
        res->post = j->post;
        set_reply(res, 250, "250 2.0.0 Ok: queued as post %" PRIu64, j->post);
    } else {
        for (int i = 0; i < j->nrcpts; i++)
            lc_info("bounce accepted post=%" PRIu64 " sub=%" PRIu64 " from=<%s> size=%zu", j->ids[2 * i],
                    j->ids[2 * i + 1], j->sender, j->len);
        set_reply(res, 250, "250 2.0.0 Ok: queued as bounce");
    }
}

static void job_reply(const struct redisReply *reply, void *arg)
{
    struct lsd_job *j = arg;
    const redisReply *r = reply;
    int idx = j->ngot++;
    if (!r) {
        if (!j->failed)
            snprintf(j->errtxt, sizeof j->errtxt, "connection to redis lost");
        j->failed = 1;
    } else if (r->type == REDIS_REPLY_ERROR && !(j->kind != J_RCPT && j->phase == 1 && idx == j->nsent - 1)) {
        /* an error reply (EXEC's own error is looked at by exec_ok below) */
        if (!j->failed)
            snprintf(j->errtxt, sizeof j->errtxt, "%s", r->str);
        j->failed = 1;
    } else if (!j->failed) {
        if (j->kind == J_RCPT) {
            rcpt_reply(j, idx, r);
        } else if (j->phase == 0 && j->kind == J_POST) {
            if (r->type == REDIS_REPLY_INTEGER && r->integer > 0) {
                j->post = (uint64_t)r->integer;
            } else {
                j->failed = 1;
                snprintf(j->errtxt, sizeof j->errtxt, "INCR: unexpected reply");
            }
        } else if (idx == j->nsent - 1) {
            if (!exec_ok(j, r))
                j->failed = 1;
        }
    }
    if (j->ngot < j->nsent)
        return;

    /* every reply of this phase is in */
    if (j->kind == J_RCPT) {
        rcpt_decide(j);
        finish(j);
        return;
    }
    if (j->kind == J_POST && j->phase == 0 && !j->failed) {
        if (!j->done) { /* cancelled: the message may be gone; store nothing */
            finish(j);
            return;
        }
        j->phase = 1;
        j->ngot = j->nsent = 0;
        send_post_txn(j);
        if (j->nsent > 0)
            return;
        j->failed = 1;
    }
    store_done(j);
    finish(j);
}

int lsd_store_post(struct lsd_server *srv, const char *list, const char *sender, const char *msg, size_t len,
                   lsd_job_fn *done, void *arg, struct lsd_job **jobp, struct lsd_result *res)
{
    memset(res, 0, sizeof *res);
    *jobp = NULL;
    struct lsd_job *j = job_new(srv, J_POST, done, arg);
    snprintf(j->list, sizeof j->list, "%s", list);
    snprintf(j->sender, sizeof j->sender, "%s", sender);
    j->msg = msg;
    j->len = len;
    j->created = (long long)time(NULL);
    const char *incr[] = {"INCR", LC_K_SEQ_POST};
    if (jsendv(j, 2, incr) < 0) {
        lc_warn("post list=%s from=<%s> size=%zu not stored: redis is down", list, sender, len);
        free(j);
        set_tempfail(res);
        return LSD_DONE;
    }
    *jobp = j;
    return LSD_PENDING;
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
