/* exp_post: expand one post into delivery batches.
 *
 * Steps: HMGET lc:post:ID list state (a post already `sending` or `done` was expanded before a crash or by
 * another expander: just XACK); HSCAN lc:active:LIST COUNT 10000 (the next page requested before this one is
 * parsed, see scan()), each page's addresses checked with SMISMEMBER lc:suppress (skipped when the set is
 * empty); sort by domain and drop duplicates (exp_rcpt);
 * resolve every domain (exp_dns) or, with sender.relay, route everything to "relay=HOST:PORT"; group domains
 * by their exact hosts string, order the groups by it (so by first MX host), cut each group into batches of
 * sender.batch_size; write everything with pipelined MULTI/EXEC.
 *
 * Writes: XADD lc:stream:deliveries {post, hosts, rcpts "SUBID ADDR\n..."} per batch; for a null MX, NXDOMAIN
 * or a domain without any mail server address, XADD lc:stream:bounces {rcpt, from "", post, sub, reply} per
 * recipient and HINCRBY lc:postdom:ID DOMAIN:bounced; the recipients of a domain whose DNS failed temporarily
 * after every attempt go into batches with hosts "" (no route yet: the sender defers them into its retry
 * schedule, and each retry comes back for a fresh resolution, exp_reroute.c; SCHEMA.md "Delivery"); the last
 * transaction holds HSET lc:post:ID recipients N state sending (done when nothing was queued), HINCRBY bounced
 * and the XACK, so the state change and
 * the acknowledgement are one atomic step. Each transaction runs under WATCH of a fencing token
 * (lc:postexp:ID, see begin()), so an expander that lost the entry to another writes nothing more; the post
 * hash is not watched, since the sender updates it while later chunks are written. While a post is being expanded the
 * entry is XCLAIMed to ourselves (JUSTID) every TOUCH_MS, so another expander's XAUTOCLAIM leaves it alone.
 *
 * Notices (schema/SCHEMA.md "Notices": a post hash with kind=notice, from listd: confirmations, help replies,
 * moderation notices): no HSCAN and no suppression check; the one recipient `to` (subscriber id `sub`) is routed
 * like any recipient and its batch carries the extra field `from` = `envelope_from` ("" for <>).
 *
 * Complaint pause (issue 7; SCHEMA.md "Complaints"): before a list post is expanded, the list's `paused` field
 * is read and, unless paused already, its complaint rate (LC_LUA_LIST_RATE: complaints / delivered over its
 * latest posts) compared with complaints.pause_rate; at or above it the list gets paused=1, paused_reason and
 * paused_at. A post of a paused list is not expanded and not acknowledged: it stays pending in the stream and
 * exp_loop reads our pending entries again every EXP_PAUSE_RECHECK_MS, so it goes out within seconds of an
 * operator clearing the pause (`listcast list resume LIST`). The check is here, not in bounce (which counts the
 * complaints), so a pause takes effect for the very next post with no extra daemon or timer; notices are never
 * paused (confirmations and help replies still go out).
 *
 * Resuming (exactly once): a transaction holds at most CHUNK_CMDS commands, so a post of over about 100,000
 * recipients (at the default batch size) takes several. Each of them also records, in lc:postprog:ID, how far
 * the writing got: the domains whose recipients are all queued (value "*") and, for the domain being written,
 * its last queued address (recipients are written in address order within a domain). An expander that
 * resumes the post after a crash (its own restart, or another's XAUTOCLAIM) takes the fencing token first,
 * then reads that hash and skips what it names, so no recipient is queued twice; the last transaction
 * deletes it. A subscriber added between the crash and the resumption to a domain already written does not
 * get the post (it was not a subscriber when the post was accepted). Addresses failing lc_addr_norm and bad
 * subscriber ids are skipped with a warning.
 *
 * Fault injection (tests only): LC_EXP_CHUNK_CMDS makes transactions smaller (10 to 100000 commands), and when
 * the file named by LC_EXP_CRASH_FILE exists, the expander deletes it and exits (status 70) right after the
 * next transaction that is not the post's last: a crash between two transactions, which kill -9 cannot hit
 * on purpose (tests/crash_test.py).
 */
#include "exp.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lc_addr.h"
#include "lc_buf.h"
#include "lc_log.h"
#include "lc_redis.h"
#include "lc_schema.h"

#define SCAN_COUNT "10000"
#define CHUNK_CMDS 1000          /* commands per MULTI/EXEC (LC_EXP_CHUNK_CMDS in tests) */
#define PROG_TTL "604800"        /* seconds lc:postprog:ID outlives its last write (7 days) */
#define CHUNK_BYTES (8u << 20)   /* bytes per MULTI/EXEC */
#define TOUCH_MS 20000           /* XCLAIM our entry this often while working (XAUTOCLAIM takes 60 s idle) */
#define WARN_MAX 10              /* warnings about bad subscriber entries per post */

enum { PR_OK = 0, PR_STOP = 1, PR_CONN = -1, PR_DATA = -2, PR_DONE = 2, PR_WATCH = 3, PR_PAUSED = 4 };

static const char *const bounce_reply[] = {
    [EXP_ROUTE_NULLMX] = "550 5.1.10 domain publishes a null MX (RFC 7505)",
    [EXP_ROUTE_NXDOMAIN] = "550 5.1.2 domain does not exist",
    [EXP_ROUTE_NOHOST] = "550 5.4.4 no mail server of the domain has an address",
};

struct post {
    struct exp *e;
    const char *entry; /* stream entry id */
    uint64_t id;
    char ids[24];      /* id in decimal */
    char key[LC_KEY_MAX];     /* lc:post:ID */
    char domkey[LC_KEY_MAX];  /* lc:postdom:ID */
    char list[LC_ADDR_MAX + 1];
    int notice;                     /* kind=notice: one recipient, envelope sender given */
    char to[LC_ADDR_MAX + 1];       /* notice: its recipient (normalised) */
    uint64_t to_sub;                /* notice: the recipient's subscriber id, or 0 */
    char from[LC_ADDR_MAX + 1];     /* notice: the envelope sender ("" for <>) */
    int64_t touched;
    size_t suppressed, invalid, dups;
    char err[512];
    /* the writer */
    int in_multi;
    size_t queued, bytes;
    char fkey[LC_KEY_MAX];          /* lc:postexp:ID: the fencing token's key */
    char owner[128];                /* our fencing token, set on the first transaction */
    /* progress (see "Resuming" above): the recipients are written in the order of seq (domain indices), each
     * domain from its first unskipped recipient; cur_k/cur_n: every domain seq[< cur_k] is queued and cur_n
     * recipients of seq[cur_k]; com_k: cur_k when the last transaction was committed (seq[com_k..cur_k] may
     * need a progress mark in the open one) */
    char pkey[LC_KEY_MAX];          /* lc:postprog:ID */
    uint32_t *skip;                 /* per domain: leading recipients queued by an earlier expansion */
    int resumed;                    /* lc:postprog:ID held something: an earlier expansion queued batches */
    const size_t *seq;
    size_t nseq, cur_k, cur_n, com_k;
};

static size_t chunk_cmds = CHUNK_CMDS;
static const char *crash_file; /* LC_EXP_CRASH_FILE */

/* fail classifies a failed command on the write connection. */
static int fail(struct post *p, const char *what)
{
    if (p->e->wr->err) {
        lc_warn("post=%s %s: %s", p->ids, what, p->err);
        return PR_CONN;
    }
    lc_warn("post=%s %s failed, left pending: %s", p->ids, what, p->err);
    return PR_DATA;
}

/* touch resets our entry's idle time now and then, so XAUTOCLAIM elsewhere leaves a long expansion alone. */
static void touch(void *arg)
{
    struct post *p = arg;
    int64_t now = exp_now_ms();
    if (now - p->touched < TOUCH_MS || p->e->wr->err)
        return;
    p->touched = now;
    redisReply *r = lc_redis_cmd(p->e->wr, p->err, sizeof p->err, "XCLAIM %s %s %s 0 %s JUSTID", LC_S_POSTS,
                                 LC_G_POSTS, p->e->node, p->entry);
    if (r)
        freeReplyObject(r);
    else
        lc_debug("post=%s heartbeat: %s", p->ids, p->err);
}

static int ack(struct post *p)
{
    redisReply *r = lc_redis_cmd(p->e->wr, p->err, sizeof p->err, "XACK %s %s %s", LC_S_POSTS, LC_G_POSTS,
                                 p->entry);
    if (!r)
        return fail(p, "XACK");
    freeReplyObject(r);
    return PR_OK;
}

static int parse_u64(const char *s, size_t len, uint64_t *out)
{
    if (len == 0 || len > 20)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* ---- reading ---- */

/* load_notice reads the recipient and envelope sender of a notice (HMGET elements 3..5, SCHEMA.md "Notices").
 * A notice without a valid recipient is acknowledged without sending (PR_DONE). */
static int load_notice(struct post *p, const redisReply *r)
{
    const char *why = "no recipient";
    const redisReply *to = r->element[3], *sub = r->element[4], *from = r->element[5];
    p->notice = 1;
    if (to->type != REDIS_REPLY_STRING || lc_addr_norm(to->str, to->len, p->to, &why) < 0) {
        lc_warn("post=%s notice with a bad recipient (%s): acknowledged without sending", p->ids, why);
        return PR_DONE;
    }
    if (sub->type != REDIS_REPLY_STRING || parse_u64(sub->str, sub->len, &p->to_sub) < 0)
        p->to_sub = 0;
    p->from[0] = 0;
    if (from->type == REDIS_REPLY_STRING && from->len > 0 &&
        lc_addr_norm(from->str, from->len, p->from, &why) < 0) {
        lc_warn("post=%s notice with a bad envelope sender (%s): using <>", p->ids, why);
        p->from[0] = 0;
    }
    return PR_OK;
}

/* load reads the post's list and state; PR_DONE when there is nothing to expand (and it was acknowledged). */
static int load(struct post *p)
{
    redisReply *r = lc_redis_cmd(p->e->wr, p->err, sizeof p->err, "HMGET %s list state kind to sub envelope_from",
                                 p->key);
    if (!r)
        return fail(p, "HMGET");
    int rc = PR_OK;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 6) {
        snprintf(p->err, sizeof p->err, "unexpected HMGET reply");
        rc = PR_DATA;
    } else if (r->element[0]->type != REDIS_REPLY_STRING) {
        lc_warn("post=%s has no post hash or no list: acknowledged without expanding", p->ids);
        rc = PR_DONE;
    } else if (r->element[1]->type == REDIS_REPLY_STRING &&
               (!strcmp(r->element[1]->str, LC_PS_SENDING) || !strcmp(r->element[1]->str, LC_PS_DONE))) {
        lc_info("post=%s already expanded state=%s: acknowledged", p->ids, r->element[1]->str);
        rc = PR_DONE;
    } else if (r->element[0]->len > LC_ADDR_MAX) {
        lc_warn("post=%s list name too long: acknowledged without expanding", p->ids);
        rc = PR_DONE;
    } else {
        memcpy(p->list, r->element[0]->str, r->element[0]->len);
        p->list[r->element[0]->len] = 0;
        if (r->element[2]->type == REDIS_REPLY_STRING && !strcmp(r->element[2]->str, "notice"))
            rc = load_notice(p, r);
    }
    freeReplyObject(r);
    if (rc == PR_DATA)
        lc_warn("post=%s: %s", p->ids, p->err);
    if (rc == PR_DONE) {
        rc = ack(p);
        return rc == PR_OK ? PR_DONE : rc;
    }
    return rc;
}

/* paused_check decides whether the post's list is paused (see the top comment): PR_OK to go on, PR_PAUSED to
 * leave the entry pending, PR_CONN/PR_DATA on a Redis failure. */
static int paused_check(struct post *p)
{
    static uint64_t logged[32]; /* posts whose wait was logged at info level (later rechecks: debug) */
    static unsigned nlogged;
    char lkey[LC_KEY_MAX], pkey[LC_KEY_MAX], reason[256];
    if (lc_key_list(lkey, sizeof lkey, p->list) < 0 || lc_key_posts(pkey, sizeof pkey, p->list) < 0)
        return PR_OK;
    redisReply *r = lc_redis_cmd(p->e->wr, p->err, sizeof p->err, "HMGET %s paused paused_reason", lkey);
    if (!r)
        return fail(p, "HMGET paused");
    int paused = r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->type == REDIS_REPLY_STRING &&
                 !strcmp(r->element[0]->str, "1");
    snprintf(reason, sizeof reason, "%s",
             paused && r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str : "paused by an operator");
    freeReplyObject(r);
    if (!paused) {
        if (p->e->pause_rate <= 0)
            return PR_OK;
        r = lc_redis_cmd(p->e->wr, p->err, sizeof p->err, "EVAL %s 2 %s %s %d", LC_LUA_LIST_RATE, pkey, lkey,
                         LC_RATE_WINDOW);
        if (!r)
            return fail(p, "EVAL list rate");
        long long d = 0, c = 0;
        if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 && r->element[0]->type == REDIS_REPLY_INTEGER &&
            r->element[1]->type == REDIS_REPLY_INTEGER) {
            d = r->element[0]->integer;
            c = r->element[1]->integer;
        }
        freeReplyObject(r);
        if (d <= 0 || (double)c / (double)d < p->e->pause_rate)
            return PR_OK;
        snprintf(reason, sizeof reason,
                 "complaint rate %.3f%% (%lld complaints / %lld delivered over the latest posts) reached "
                 "complaints.pause_rate %.3f%%", 100.0 * (double)c / (double)d, c, d, 100.0 * p->e->pause_rate);
        char now[24];
        snprintf(now, sizeof now, "%lld", (long long)time(NULL));
        r = lc_redis_cmd(p->e->wr, p->err, sizeof p->err, "HSET %s paused 1 paused_reason %s paused_at %s", lkey,
                         reason, now);
        if (!r)
            return fail(p, "HSET paused");
        freeReplyObject(r);
        lc_warn("list=%s paused: %s (resume: listcast list resume %s)", p->list, reason, p->list);
    }
    p->e->paused_waiting++;
    int seen = 0;
    for (unsigned i = 0; i < nlogged && i < 32; i++)
        seen |= logged[i] == p->id;
    if (seen) {
        lc_debug("post=%s list=%s still paused: waiting", p->ids, p->list);
    } else {
        logged[nlogged++ % 32] = p->id;
        lc_info("post=%s list=%s paused: not expanded, waiting (%s)", p->ids, p->list, reason);
    }
    return PR_PAUSED;
}

/* scan_page adds one HSCAN page (field/value pairs) to the recipient set. */
static int scan_page(struct post *p, redisReply *page, int check_suppress)
{
    size_t npairs = page->elements / 2;
    if (npairs == 0)
        return PR_OK;
    char(*norm)[LC_ADDR_MAX + 1] = lc_malloc(npairs * sizeof *norm);
    uint64_t *subid = lc_malloc(npairs * sizeof *subid);
    const char **argv = lc_malloc((npairs + 2) * sizeof *argv);
    size_t *lens = lc_malloc((npairs + 2) * sizeof *lens);
    size_t n = 0;
    int rc = PR_OK;
    for (size_t i = 0; i < npairs; i++) {
        redisReply *f = page->element[2 * i], *v = page->element[2 * i + 1];
        const char *why = NULL;
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            why = "not a string";
        else if (lc_addr_norm(f->str, f->len, norm[n], &why) < 0)
            why = why ? why : "bad address";
        else if (parse_u64(v->str, v->len, &subid[n]) < 0)
            why = "bad subscriber id";
        else
            why = NULL;
        if (why) {
            if (p->invalid++ < WARN_MAX)
                lc_warn("post=%s list=%s skipping subscriber entry \"%.80s\": %s", p->ids, p->list,
                        f->type == REDIS_REPLY_STRING ? f->str : "?", why);
            continue;
        }
        argv[n + 2] = norm[n];
        lens[n + 2] = strlen(norm[n]);
        n++;
    }
    redisReply *sm = NULL;
    if (check_suppress && n > 0) {
        argv[0] = "SMISMEMBER";
        lens[0] = 10;
        argv[1] = LC_K_SUPPRESS;
        lens[1] = strlen(LC_K_SUPPRESS);
        sm = lc_redis_cmdv(p->e->wr, (int)n + 2, argv, lens, p->err, sizeof p->err);
        if (!sm) {
            rc = fail(p, "SMISMEMBER");
            goto out;
        }
        if (sm->type != REDIS_REPLY_ARRAY || sm->elements != n) {
            snprintf(p->err, sizeof p->err, "unexpected SMISMEMBER reply");
            rc = fail(p, "SMISMEMBER");
            goto out;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (sm && sm->element[i]->type == REDIS_REPLY_INTEGER && sm->element[i]->integer == 1) {
            p->suppressed++;
            lc_debug("post=%s rcpt=<%s> suppressed", p->ids, norm[i]);
            continue;
        }
        if (exp_rcpts_add(p->e->rcpts, norm[i], lens[i + 2], subid[i]) < 0) {
            snprintf(p->err, sizeof p->err, "more than %u recipients", EXP_RCPTS_MAX);
            rc = PR_DATA;
            lc_warn("post=%s: %s, left pending", p->ids, p->err);
            goto out;
        }
    }
out:
    if (sm)
        freeReplyObject(sm);
    free(norm);
    free(subid);
    free(argv);
    free(lens);
    return rc;
}

/* scan_send pipelines HSCAN akey cursor: written out now, so Redis computes the next page while we parse this
 * one; scan_recv reads its reply (NULL on a failure, p->err set). */
static int scan_send(struct post *p, const char *akey, const char *cursor)
{
    redisContext *c = p->e->wr;
    int done = 0;
    if (redisAppendCommand(c, "HSCAN %s %s COUNT " SCAN_COUNT, akey, cursor) != REDIS_OK)
        goto err;
    while (!done)
        if (redisBufferWrite(c, &done) != REDIS_OK)
            goto err;
    return PR_OK;
err:
    snprintf(p->err, sizeof p->err, "redis: %s", c->errstr[0] ? c->errstr : "connection lost");
    return fail(p, "HSCAN");
}

static redisReply *scan_recv(struct post *p)
{
    redisContext *c = p->e->wr;
    void *v = NULL;
    if (redisGetReply(c, &v) != REDIS_OK || !v) {
        snprintf(p->err, sizeof p->err, "redis: %s", c->errstr[0] ? c->errstr : "connection lost");
        return NULL;
    }
    redisReply *r = v;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(p->err, sizeof p->err, "redis: %.*s", (int)r->len, r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* scan reads every active subscriber of the list. Without a suppression check (the usual case: lc:suppress
 * empty) the next HSCAN is sent before the current page is parsed, so Redis and we work at the same time; with
 * one, the SMISMEMBER of a page goes on the same connection, so the pages are read one after another. */
static int scan(struct post *p)
{
    char akey[LC_KEY_MAX];
    if (lc_key_active(akey, sizeof akey, p->list) < 0) {
        lc_warn("post=%s list=%s: bad list name: acknowledged without expanding", p->ids, p->list);
        int rc = ack(p);
        return rc == PR_OK ? PR_DONE : rc;
    }
    redisReply *r = lc_redis_cmd(p->e->wr, p->err, sizeof p->err, "SCARD %s", LC_K_SUPPRESS);
    if (!r)
        return fail(p, "SCARD");
    int check_suppress = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
    freeReplyObject(r);
    char cursor[32] = "0";
    int rc = scan_send(p, akey, cursor);
    if (rc != PR_OK)
        return rc;
    for (;;) {
        r = scan_recv(p);
        if (!r)
            return fail(p, "HSCAN");
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[0]->len >= sizeof cursor || r->element[1]->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(r);
            snprintf(p->err, sizeof p->err, "unexpected HSCAN reply");
            return fail(p, "HSCAN");
        }
        memcpy(cursor, r->element[0]->str, r->element[0]->len + 1);
        int last = !strcmp(cursor, "0"), pending = 0;
        touch(p); /* nothing outstanding on the connection here */
        if (!last && !check_suppress && !*p->e->stop) {
            if ((rc = scan_send(p, akey, cursor)) != PR_OK) {
                freeReplyObject(r);
                return rc;
            }
            pending = 1;
        }
        rc = scan_page(p, r->element[1], check_suppress);
        freeReplyObject(r);
        if (rc == PR_OK && *p->e->stop)
            rc = PR_STOP;
        if (rc != PR_OK) {
            if (pending) { /* read the HSCAN already sent, so the connection is in step again */
                redisReply *x = scan_recv(p);
                if (!x)
                    return PR_CONN;
                freeReplyObject(x);
            }
            return rc;
        }
        if (last)
            return PR_OK;
        if (!pending && (rc = scan_send(p, akey, cursor)) != PR_OK)
            return rc;
    }
}

/* ---- writing ---- */

/* begin starts a transaction. The first one writes our fencing token to lc:postexp:ID (we own the stream
 * entry now: it was delivered or claimed to us); every one WATCHes that key and checks it still holds our
 * token, so an expander presumed dead (its entry claimed by another) writes nothing more. The post hash itself
 * is not watched: the sender updates its counters while later batches are still being written. A post already
 * `sending` or `done` was finished by someone else: acknowledge. */
/* fence_take writes our fencing token (once per post): an expander that held the post before can commit nothing
 * after this. */
static int fence_take(struct post *p)
{
    if (p->owner[0])
        return PR_OK;
    snprintf(p->owner, sizeof p->owner, "%s:%ld:%lld", p->e->node, (long)getpid(), (long long)exp_now_ms());
    redisReply *r = lc_redis_cmd(p->e->wr, p->err, sizeof p->err, "SET %s %s EX 86400", p->fkey, p->owner);
    if (!r)
        return fail(p, "SET fence");
    freeReplyObject(r);
    return PR_OK;
}

static int begin(struct post *p)
{
    redisReply *r;
    int rc0 = fence_take(p);
    if (rc0 != PR_OK)
        return rc0;
    r = lc_redis_cmd(p->e->wr, p->err, sizeof p->err, "WATCH %s", p->fkey);
    if (!r)
        return fail(p, "WATCH");
    freeReplyObject(r);
    r = lc_redis_cmd(p->e->wr, p->err, sizeof p->err, "GET %s", p->fkey);
    if (!r)
        return fail(p, "GET fence");
    int ours = r->type == REDIS_REPLY_STRING && !strcmp(r->str, p->owner);
    freeReplyObject(r);
    if (!ours) {
        r = lc_redis_cmd(p->e->wr, p->err, sizeof p->err, "UNWATCH");
        if (r)
            freeReplyObject(r);
        snprintf(p->err, sizeof p->err, "another expander took the post over");
        lc_warn("post=%s %s: stopping", p->ids, p->err);
        return PR_DATA;
    }
    r = lc_redis_cmd(p->e->wr, p->err, sizeof p->err, "HGET %s state", p->key);
    if (!r)
        return fail(p, "HGET state");
    int done = r->type == REDIS_REPLY_STRING && (!strcmp(r->str, LC_PS_SENDING) || !strcmp(r->str, LC_PS_DONE));
    freeReplyObject(r);
    if (done) {
        lc_info("post=%s expanded meanwhile by another expander: acknowledged", p->ids);
        r = lc_redis_cmd(p->e->wr, p->err, sizeof p->err, "UNWATCH");
        if (!r)
            return fail(p, "UNWATCH");
        freeReplyObject(r);
        int rc = ack(p);
        return rc == PR_OK ? PR_DONE : rc;
    }
    redisAppendCommand(p->e->wr, "MULTI");
    p->in_multi = 1;
    p->queued = p->bytes = 0;
    return PR_OK;
}

static int add(struct post *p, int argc, const char **argv, const size_t *lens);

/* prog_emit queues, in the open transaction, the progress marks of the recipients queued since the last
 * commit: "*" for the domains seq[com_k..cur_k) and the last queued address of seq[cur_k] (or "*" when all of
 * it is queued). */
static int prog_emit(struct post *p)
{
    if (!p->seq || !p->in_multi || (p->com_k == p->cur_k && p->cur_n == 0) || p->com_k >= p->nseq)
        return PR_OK;
    struct exp_rcpts *s = p->e->rcpts;
    size_t end = p->cur_k < p->nseq ? p->cur_k : p->nseq - 1, m = end - p->com_k + 1;
    const char **argv = lc_malloc((2 + 2 * m) * sizeof *argv);
    size_t *lens = lc_malloc((2 + 2 * m) * sizeof *lens), n = 0;
    argv[n++] = "HSET", argv[n++] = p->pkey;
    for (size_t k = p->com_k; k <= end; k++) {
        const struct exp_domain *dom = exp_rcpts_domain(s, p->seq[k]);
        const char *v = "*";
        if (k == p->cur_k) {
            if (p->cur_n == 0)
                break; /* nothing of it queued yet */
            if (p->cur_n < dom->count)
                v = exp_rcpts_get(s, dom->first + p->cur_n - 1)->addr;
        }
        argv[n++] = dom->name, argv[n++] = v;
    }
    for (size_t i = 0; i < n; i++)
        lens[i] = strlen(argv[i]);
    int rc = n > 2 ? add(p, (int)n, argv, lens) : PR_OK;
    free(argv);
    free(lens);
    if (rc != PR_OK)
        return rc;
    const char *ex[3] = {"EXPIRE", p->pkey, PROG_TTL};
    size_t exl[3] = {6, strlen(p->pkey), strlen(PROG_TTL)};
    if (n > 2 && (rc = add(p, 3, ex, exl)) != PR_OK)
        return rc;
    p->com_k = p->cur_k;
    return PR_OK;
}

/* prog_at notes that every recipient before position (k, n) of seq is queued in the open transaction. */
static void prog_at(struct post *p, size_t k, size_t n)
{
    p->cur_k = k, p->cur_n = n;
}

/* prog_seq starts a new writing order (after the progress of the previous one went into the transaction). */
static int prog_seq(struct post *p, const size_t *seq, size_t nseq)
{
    int rc = prog_emit(p);
    p->seq = seq, p->nseq = nseq, p->cur_k = p->com_k = 0, p->cur_n = 0;
    return rc;
}

/* prog_load reads what an earlier expansion of this post queued (lc:postprog:ID) into p->skip. Called after our
 * fencing token is written, so an expander that lost the post cannot commit more after this read. */
static int prog_load(struct post *p)
{
    struct exp_rcpts *s = p->e->rcpts;
    size_t ndom = exp_rcpts_ndomains(s);
    p->skip = lc_calloc(ndom ? ndom : 1, sizeof *p->skip);
    redisReply *r = lc_redis_cmd(p->e->wr, p->err, sizeof p->err, "HGETALL %s", p->pkey);
    if (!r)
        return fail(p, "HGETALL progress");
    size_t marks = 0, skipped = 0;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        const redisReply *f = r->element[i], *v = r->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        p->resumed = 1;
        marks++;
        size_t lo = 0, hi = ndom; /* the domains are in name order (exp_rcpt.c) */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (strcmp(exp_rcpts_domain(s, mid)->name, f->str) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo == ndom || strcmp(exp_rcpts_domain(s, lo)->name, f->str))
            continue; /* no subscriber of that domain any more */
        const struct exp_domain *dom = exp_rcpts_domain(s, lo);
        uint32_t n = dom->count;
        if (strcmp(v->str, "*")) /* the recipients up to and including that address */
            for (n = 0; n < dom->count && strcmp(exp_rcpts_get(s, dom->first + n)->addr, v->str) <= 0; n++)
                ;
        p->skip[lo] = n;
        skipped += n;
    }
    freeReplyObject(r);
    if (p->resumed)
        lc_info("post=%s resumed: %zu recipients over %zu domains were queued by an earlier expansion: skipped",
                p->ids, skipped, marks);
    return PR_OK;
}

/* commit sends EXEC and reads every reply of the transaction. PR_OK, PR_CONN, PR_DATA or PR_WATCH. */
static int commit(struct post *p)
{
    redisContext *c = p->e->wr;
    redisAppendCommand(c, "EXEC");
    p->in_multi = 0;
    int rc = PR_OK;
    for (size_t i = 0; i < p->queued + 2; i++) {
        void *v = NULL;
        if (redisGetReply(c, &v) != REDIS_OK || !v) {
            snprintf(p->err, sizeof p->err, "redis: %s", c->errstr[0] ? c->errstr : "connection lost");
            return fail(p, "EXEC");
        }
        redisReply *r = v;
        if (r->type == REDIS_REPLY_ERROR && rc == PR_OK) {
            snprintf(p->err, sizeof p->err, "%.*s", (int)r->len, r->str);
            rc = PR_DATA;
        } else if (i == p->queued + 1 && rc == PR_OK) {
            if (r->type == REDIS_REPLY_NIL) {
                rc = PR_WATCH;
            } else if (r->type == REDIS_REPLY_ARRAY) {
                for (size_t j = 0; j < r->elements; j++)
                    if (r->element[j]->type == REDIS_REPLY_ERROR) {
                        snprintf(p->err, sizeof p->err, "%.*s", (int)r->element[j]->len, r->element[j]->str);
                        rc = PR_DATA;
                        break;
                    }
            }
        }
        freeReplyObject(r);
    }
    if (rc == PR_DATA)
        lc_warn("post=%s transaction failed, left pending: %s", p->ids, p->err);
    return rc;
}

/* add queues one command in the current transaction, starting one if needed. */
static int add(struct post *p, int argc, const char **argv, const size_t *lens)
{
    if (!p->in_multi) {
        int rc = begin(p);
        if (rc != PR_OK)
            return rc;
    }
    redisAppendCommandArgv(p->e->wr, argc, argv, lens);
    p->queued++;
    for (int i = 0; i < argc; i++)
        p->bytes += lens[i];
    return PR_OK;
}

/* flush commits the current transaction when it is full (or when force is set). When the WATCH fired (our
 * fencing token changed: another expander took the post over) we stop and leave the entry to it. */
static int flush(struct post *p, int force)
{
    if (!p->in_multi || (!force && p->queued < chunk_cmds && p->bytes < CHUNK_BYTES))
        return PR_OK;
    int rc = force ? PR_OK : prog_emit(p); /* the last transaction deletes the progress instead */
    if (rc != PR_OK)
        return rc;
    rc = commit(p);
    if (rc == PR_WATCH) {
        snprintf(p->err, sizeof p->err, "another expander took post %s over during the transaction", p->ids);
        rc = PR_DATA;
        lc_warn("post=%s: %s, left pending", p->ids, p->err);
    }
    if (rc == PR_OK && !force && crash_file && unlink(crash_file) == 0) {
        lc_warn("post=%s fault injection (LC_EXP_CRASH_FILE): exiting after a transaction that is not the last",
                p->ids);
        _exit(70);
    }
    return rc;
}

struct plan {
    const char *const *names; /* domain names */
    const struct exp_route *routes;
};

static int cmp_group(const void *a, const void *b, void *arg)
{
    const struct plan *pl = arg;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int c = strcmp(pl->routes[x].hosts, pl->routes[y].hosts);
    return c ? c : strcmp(pl->names[x], pl->names[y]);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* count_hosts counts distinct MX host names over the distinct hosts strings of the ordered domains. */
static size_t count_hosts(const struct exp_route *routes, const size_t *order, size_t n)
{
    size_t cap = 16, k = 0, distinct = 0;
    char **names = lc_malloc(cap * sizeof *names);
    for (size_t i = 0; i < n; i++) {
        const char *h = routes[order[i]].hosts;
        if (i > 0 && !strcmp(h, routes[order[i - 1]].hosts))
            continue;
        while (*h) {
            size_t len = strcspn(h, "=");
            if (k == cap) {
                cap *= 2;
                names = lc_realloc(names, cap * sizeof *names);
            }
            names[k++] = lc_strndup(h, len);
            h += strcspn(h, " ");
            h += strspn(h, " ");
        }
    }
    qsort(names, k, sizeof *names, cmp_str);
    for (size_t i = 0; i < k; i++)
        if (i == 0 || strcmp(names[i], names[i - 1]))
            distinct++;
    for (size_t i = 0; i < k; i++)
        free(names[i]);
    free(names);
    return distinct;
}

struct totals {
    size_t rcpts, batches, bounced, deferred, mx_hosts;
    long dns_ms, scan_ms, sort_ms, write_ms;
};

static int write_batch(struct post *p, const char *hosts, struct lc_buf *rcpts)
{
    const char *argv[11] = {"XADD", LC_S_DELIVERIES, "*", "post", p->ids, "hosts", hosts, "from", p->from,
                            "rcpts", lc_buf_data(rcpts)};
    size_t lens[11];
    for (int i = 0; i < 10; i++)
        lens[i] = strlen(argv[i]);
    lens[10] = lc_buf_len(rcpts);
    int rc;
    if (p->notice) { /* the extra field "from": the sender uses it as MAIL FROM */
        rc = add(p, 11, argv, lens);
    } else {
        argv[7] = argv[9];
        lens[7] = lens[9];
        argv[8] = argv[10];
        lens[8] = lens[10];
        rc = add(p, 9, argv, lens);
    }
    lc_buf_reset(rcpts);
    return rc == PR_OK ? flush(p, 0) : rc;
}

/* write_batches queues the batches of the routable domains, group by group. */
static int write_batches(struct post *p, const struct plan *pl, const size_t *order, size_t nok,
                         struct totals *t)
{
    struct exp_rcpts *s = p->e->rcpts;
    struct lc_buf *b = lc_buf_new((size_t)p->e->batch_size * (LC_ADDR_MAX + 24) + 64);
    int rc = prog_seq(p, order, nok);
    size_t inbatch = 0;
    for (size_t k = 0; k < nok && rc == PR_OK; k++) {
        size_t di = order[k];
        const char *hosts = pl->routes[di].hosts;
        const struct exp_domain *dom = exp_rcpts_domain(s, di);
        for (uint32_t j = p->skip[di]; j < dom->count && rc == PR_OK; j++) {
            const struct exp_rcpt *r = exp_rcpts_get(s, dom->first + j);
            char line[24 + LC_ADDR_MAX + 2], *q = line + 24;
            uint64_t v = r->subid;
            do
                *--q = (char)('0' + v % 10);
            while ((v /= 10) != 0);
            size_t alen = strlen(r->addr), nlen = (size_t)(line + 24 - q);
            line[24] = ' ';
            memcpy(line + 25, r->addr, alen);
            line[25 + alen] = '\n';
            if (lc_buf_append(b, q, nlen + alen + 2) < 0)
                lc_panic("post=%s batch buffer too small", p->ids);
            if (++inbatch == (size_t)p->e->batch_size) {
                prog_at(p, k, j + 1); /* the batch takes everything up to here */
                rc = write_batch(p, hosts, b);
                t->batches++;
                inbatch = 0;
            }
        }
        /* a group ends where the next domain's hosts differ */
        if (rc == PR_OK && inbatch > 0 && (k + 1 == nok || strcmp(hosts, pl->routes[order[k + 1]].hosts))) {
            prog_at(p, k + 1, 0);
            rc = write_batch(p, hosts, b);
            t->batches++;
            inbatch = 0;
        }
    }
    if (rc == PR_OK && inbatch == 0)
        prog_at(p, nok, 0); /* (a domain skipped whole at the end leaves nothing in the buffer) */
    lc_buf_free(b);
    return rc;
}

/* write_failed queues bounces for the domains that cannot be routed (temporary failures, queued with hosts ""
 * by write_batches, are only counted for the log). */
static int write_failed(struct post *p, const struct plan *pl, size_t ndom, struct totals *t)
{
    struct exp_rcpts *s = p->e->rcpts;
    size_t *fails = lc_malloc((ndom ? ndom : 1) * sizeof *fails), nf = 0;
    for (size_t di = 0; di < ndom; di++)
        if (pl->routes[di].status != EXP_ROUTE_OK && pl->routes[di].status != EXP_ROUTE_TEMP)
            fails[nf++] = di;
    /* (without failed domains the batches' marks need not be written: the last transaction is next) */
    int rc = nf ? prog_seq(p, fails, nf) : PR_OK;
    for (size_t di = 0, k = 0; di < ndom && rc == PR_OK; di++) {
        enum exp_route_status st = pl->routes[di].status;
        const struct exp_domain *dom = exp_rcpts_domain(s, di);
        if (st == EXP_ROUTE_OK)
            continue;
        if (st == EXP_ROUTE_TEMP) { /* queued with hosts "" by write_batches: the sender counts the deferral */
            lc_warn("post=%s domain=%s recipients=%" PRIu32 " temporary DNS failure: queued without a route "
                    "(the sender defers them; each retry resolves the domain again)", p->ids, dom->name,
                    dom->count);
            t->deferred += dom->count;
            continue;
        }
        t->bounced += dom->count; /* the post's count is written by the last transaction, so all of them */
        uint32_t from = p->skip[di];
        size_t kk = k++;
        prog_at(p, kk, from);
        if (from == dom->count)
            continue; /* an earlier expansion queued them all */
        char field[300];
        snprintf(field, sizeof field, "%s:bounced", dom->name);
        char num[24];
        snprintf(num, sizeof num, "%" PRIu32, dom->count);
        const char *hv[4] = {"HINCRBY", p->domkey, field, num};
        size_t hl[4] = {7, strlen(p->domkey), strlen(field), strlen(num)};
        if (from == 0 && (rc = add(p, 4, hv, hl)) != PR_OK) /* with the first bounce: one transaction */
            break;
        const char *reply = bounce_reply[st];
        lc_info("post=%s domain=%s bounced=%" PRIu32 " reply=%s", p->ids, dom->name, dom->count - from, reply);
        for (uint32_t j = from; j < dom->count; j++) {
            const struct exp_rcpt *r = exp_rcpts_get(s, dom->first + j);
            char sub[24];
            snprintf(sub, sizeof sub, "%" PRIu64, r->subid);
            const char *argv[13] = {"XADD", LC_S_BOUNCES, "*", "rcpt", r->addr, "from", "", "post", p->ids,
                                    "sub", sub, "reply", reply};
            size_t lens[13];
            for (int i = 0; i < 13; i++)
                lens[i] = strlen(argv[i]);
            if ((rc = add(p, 13, argv, lens)) != PR_OK)
                break;
            prog_at(p, kk, j + 1);
            if ((rc = flush(p, 0)) != PR_OK)
                break;
        }
    }
    if (rc == PR_OK)
        prog_at(p, nf, 0);
    p->seq = NULL; /* fails is freed: the last transaction deletes the progress instead of adding to it */
    free(fails);
    return rc;
}

/* write_final queues the post's new state and the acknowledgement, and commits. */
static int write_final(struct post *p, const struct totals *t)
{
    char n[24], b[24];
    snprintf(n, sizeof n, "%zu", t->rcpts);
    snprintf(b, sizeof b, "%zu", t->bounced);
    /* no-route batches count as batches; so do those an earlier expansion queued (LC_LUA_POST_DONE below ends
     * the post if the sender finished them all) */
    const char *state = t->batches == 0 && !p->resumed ? LC_PS_DONE : LC_PS_SENDING;
    const char *hset[6] = {"HSET", p->key, "recipients", n, "state", state};
    const char *hb[4] = {"HINCRBY", p->key, "bounced", b};
    const char *xack[4] = {"XACK", LC_S_POSTS, LC_G_POSTS, p->entry};
    /* The sender may have finished every batch of an earlier chunk before this count lands. */
    const char *fin[4] = {"EVAL", LC_LUA_POST_DONE, "1", p->key};
    size_t l6[6], l4[4];
    int rc;
    for (int i = 0; i < 6; i++)
        l6[i] = strlen(hset[i]);
    if ((rc = add(p, 6, hset, l6)) != PR_OK)
        return rc;
    for (int i = 0; i < 4; i++)
        l4[i] = strlen(hb[i]);
    if (t->bounced && (rc = add(p, 4, hb, l4)) != PR_OK)
        return rc;
    for (int i = 0; i < 4; i++)
        l4[i] = strlen(fin[i]);
    if (strcmp(state, LC_PS_DONE) != 0 && (rc = add(p, 4, fin, l4)) != PR_OK)
        return rc;
    for (int i = 0; i < 4; i++)
        l4[i] = strlen(xack[i]);
    if ((rc = add(p, 4, xack, l4)) != PR_OK)
        return rc;
    const char *del[3] = {"DEL", p->fkey, p->pkey};
    size_t l3[3] = {3, strlen(p->fkey), strlen(p->pkey)};
    if ((rc = add(p, 3, del, l3)) != PR_OK)
        return rc;
    return flush(p, 1);
}

/* route resolves (or relays) and writes everything. */
static int route_and_write(struct post *p, struct totals *t)
{
    struct exp *e = p->e;
    struct exp_rcpts *s = e->rcpts;
    size_t ndom = exp_rcpts_ndomains(s);
    const char **names = lc_malloc((ndom ? ndom : 1) * sizeof *names);
    struct exp_route *routes = lc_calloc(ndom ? ndom : 1, sizeof *routes);
    size_t *order = lc_malloc((ndom ? ndom : 1) * sizeof *order);
    char *relay = NULL;
    int rc = PR_OK;
    for (size_t i = 0; i < ndom; i++)
        names[i] = exp_rcpts_domain(s, i)->name;
    if (*e->relay) {
        size_t n = strlen(e->relay) + 7;
        relay = lc_malloc(n);
        snprintf(relay, n, "relay=%s", e->relay);
        for (size_t i = 0; i < ndom; i++)
            routes[i] = (struct exp_route){EXP_ROUTE_OK, relay};
    } else if (ndom > 0) {
        struct exp_dns_stats st;
        int64_t t0 = exp_now_ms();
        rc = exp_dns_resolve(e->dns, names, ndom, routes, &st, touch, p, e->stop) ? PR_STOP : PR_OK;
        t->dns_ms = (long)(exp_now_ms() - t0);
        lc_debug("post=%s dns domains=%zu cached=%lu queries=%lu", p->ids, ndom, st.cached, st.queries);
    }
    if (rc == PR_OK && *e->stop)
        rc = PR_STOP;
    struct plan pl = {names, routes};
    size_t nok = 0;
    for (size_t i = 0; i < ndom && rc == PR_OK; i++) {
        if (routes[i].status == EXP_ROUTE_TEMP)
            routes[i].hosts = ""; /* no route yet: a batch the sender defers (SCHEMA.md "Delivery") */
        if (routes[i].status == EXP_ROUTE_OK || routes[i].status == EXP_ROUTE_TEMP)
            order[nok++] = i;
    }
    int64_t tw = exp_now_ms();
    if (rc == PR_OK && (rc = fence_take(p)) == PR_OK)
        rc = prog_load(p);
    if (rc == PR_OK) {
        qsort_r(order, nok, sizeof *order, cmp_group, &pl);
        t->mx_hosts = count_hosts(routes, order, nok);
        rc = write_batches(p, &pl, order, nok, t);
    }
    if (rc == PR_OK)
        rc = write_failed(p, &pl, ndom, t);
    if (rc == PR_OK)
        rc = write_final(p, t);
    t->write_ms = (long)(exp_now_ms() - tw);
    free(names);
    free(routes);
    free(order);
    free(relay);
    return rc;
}

int exp_post_run(struct exp *e, const char *entry_id, const char *post_field, size_t post_len)
{
    struct post *p = lc_calloc(1, sizeof *p);
    p->e = e;
    p->entry = entry_id;
    p->touched = exp_now_ms();
    int rc;
    if (parse_u64(post_field, post_len, &p->id) < 0) {
        lc_warn("entry=%s post field \"%.*s\" is not a post id: acknowledged", entry_id,
                (int)(post_len > 40 ? 40 : post_len), post_field);
        snprintf(p->ids, sizeof p->ids, "?");
        rc = ack(p);
        free(p);
        return rc == PR_CONN ? -1 : 0;
    }
    snprintf(p->ids, sizeof p->ids, "%" PRIu64, p->id);
    lc_key_post(p->key, sizeof p->key, p->id);
    lc_key_postdom(p->domkey, sizeof p->domkey, p->id);
    lc_key_postexp(p->fkey, sizeof p->fkey, p->id);
    lc_key_postprog(p->pkey, sizeof p->pkey, p->id);
    static int env_read;
    if (!env_read) { /* fault injection, tests only (see the top comment) */
        env_read = 1;
        const char *v = getenv("LC_EXP_CHUNK_CMDS");
        long n = v ? strtol(v, NULL, 10) : 0;
        if (n >= 10 && n <= 100000)
            chunk_cmds = (size_t)n;
        crash_file = getenv("LC_EXP_CRASH_FILE");
        if (crash_file && !*crash_file)
            crash_file = NULL;
    }
    exp_rcpts_reset(e->rcpts);
    struct totals t = {0};
    rc = load(p);
    if (rc == PR_OK && p->notice) { /* a notice goes to its one recipient: no expansion, no suppression */
        if (exp_rcpts_add(e->rcpts, p->to, strlen(p->to), p->to_sub) < 0)
            lc_panic("post=%s recipient set full with one recipient", p->ids);
        lc_info("post=%s notice to=<%s> sub=%" PRIu64 " from=<%s>", p->ids, p->to, p->to_sub, p->from);
    } else if (rc == PR_OK && (rc = paused_check(p)) == PR_OK) {
        int64_t ts = exp_now_ms();
        rc = scan(p);
        t.scan_ms = (long)(exp_now_ms() - ts);
    }
    if (rc == PR_OK) {
        int64_t ts = exp_now_ms();
        p->dups = exp_rcpts_finish(e->rcpts);
        t.sort_ms = (long)(exp_now_ms() - ts);
        t.rcpts = exp_rcpts_count(e->rcpts);
        rc = route_and_write(p, &t);
    }
    if (p->in_multi) /* stopped inside a transaction: the connection holds half of it, drop the connection */
        rc = PR_CONN;
    if (rc == PR_OK)
        lc_info("post=%s expanded recipients=%zu domains=%zu batches=%zu mx_hosts=%zu dns_ms=%ld bounced=%zu "
                "noroute=%zu suppressed=%zu invalid=%zu scan_ms=%ld sort_ms=%ld write_ms=%ld", p->ids, t.rcpts,
                exp_rcpts_ndomains(e->rcpts), t.batches, t.mx_hosts, t.dns_ms, t.bounced, t.deferred, p->suppressed,
                p->invalid, t.scan_ms, t.sort_ms, t.write_ms);
    if (p->dups)
        lc_debug("post=%s %zu duplicate subscriber entries dropped", p->ids, p->dups);
    exp_rcpts_reset(e->rcpts);
    free(p->skip);
    free(p);
    switch (rc) {
    case PR_CONN:
        return -1;
    case PR_STOP:
        return 1;
    default:
        return 0;
    }
}
