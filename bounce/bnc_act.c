/* bnc_act: the bounce daemon's work loop: read lc:stream:bounces, classify, update the subscriber.
 *
 * Contract: one synchronous Redis connection (a blocking read returns after BLOCK 1000 ms, so SIGTERM is
 * seen within about a second). On start and after every reconnect the consumer first re-reads its own
 * pending entries (XREADGROUP ... 0), then new ones (">"); every BNC_CLAIM_EVERY_MS it takes over entries
 * idle for more than BNC_CLAIM_IDLE_MS from dead consumers (XAUTOCLAIM).
 * An entry is {rcpt, from, post, sub, msg} from listd (a bounce message received at a VERP address) or
 * {rcpt, from, post, sub, reply} from the sender (the text of a 5xx reply). The subscriber is found by
 * HGET lc:subids SUB; a VERP rcpt is checked again with lc_verp_decode and must name the same post and
 * subscriber, else the entry is dropped (a forged or altered bounce changes nothing). A listd entry without a
 * VERP rcpt is dropped too; a sender reply entry may carry the plain recipient address (it comes from our
 * own sender, which signed nothing for it to check).
 * A failure updates lc:sub:LIST:ADDR in one MULTI/EXEC (WATCHed, so the disable decision sees the score it
 * adds to) that also acknowledges and deletes the entry: a crash before EXEC leaves the entry pending and
 * nothing written, a crash after leaves nothing to redo. The list's policy (lc:list:LIST bounce_hard,
 * bounce_soft, bounce_threshold, bounce_stale_days; defaults 1, 0.5, 5, 7) decides: bounce_score += hard or
 * soft, after a reset to 0 when the last bounce is older than the stale period (decay); the subscriber is
 * disabled (status disabled, removed from lc:active:LIST, probe=pending for the probe sender) when the score
 * reaches the threshold or a hard bounce says the address is dead (userunknown, hostunknown, hasmoved).
 * Every failure also counts in the list's report hashes (lc:bncstat:{reason,domain,post}:LIST) and the list's
 * `bounces` counter.
 * lc:post:ID bounced is counted only for listd's entries (the sender already counted its own 5xx replies), and
 * moves the recipient out of delivered, once per post and subscriber (LC_LUA_POST_DSN in schema/).
 * An ARF complaint unsubscribes (status unsubscribed, HDEL lc:active:LIST), suppresses the address (SADD
 * lc:suppress) and counts in the list's and the post's `complaints` and the report hashes. Delay notices,
 * auto-replies and messages that name no failure change nothing and are logged.
 * Limits: COUNT BNC_READ_COUNT entries a read (messages are at most 10 MiB each), WATCH retries bounded.
 */
#include "bnc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lc_addr.h"
#include "lc_cfg.h"
#include "lc_log.h"
#include "lc_redis.h"
#include "lc_schema.h"
#include "lc_secret.h"
#include "lc_verp.h"

#define BNC_READ_COUNT "5"
#define BNC_BLOCK_MS "1000"
#define BNC_CLAIM_IDLE_MS "60000"
#define BNC_CLAIM_EVERY_MS 30000
#define BNC_CLAIM_ROUNDS 20
#define BNC_DEF_HARD 1.0        /* per-list defaults (lc:list:LIST bounce_* fields override) */
#define BNC_DEF_SOFT 0.5
#define BNC_DEF_THRESHOLD 5.0
#define BNC_DEF_STALE_DAYS 7.0
#define BNC_WATCH_TRIES 5
#define BNC_CMD_TIMEOUT_MS 15000

struct bnc_daemon {
    const struct lc_cfg *cfg;
    const struct lc_secret *secret;
    const char *url;
    const char *node;
    redisContext *rc;
    int pending_done;       /* own pending entries re-read since the last (re)connect */
    char pending_cursor[64];
    int64_t next_claim_ms;
    int fails;              /* consecutive connection failures, for backoff */
};

/* The fields of one stream entry (pointers into the reply; msg/reply may hold NULs). */
struct entry {
    const char *id;
    const char *rcpt, *from, *post, *sub, *msg, *reply;
    size_t rcpt_len, msg_len, reply_len;
};

/* What an entry turned out to be, after classification. */
struct outcome {
    uint64_t post, sub;
    char list[LC_ADDR_MAX + 1];
    char addr[LC_ADDR_MAX + 1];
    int from_listd;  /* msg entry (count the post), not the sender's reply entry */
};

enum step { STEP_OK = 0, STEP_REDIS = -1 }; /* STEP_REDIS: connection lost, reconnect and retry */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct bnc_daemon *bnc_daemon_new(const struct lc_cfg *cfg, const struct lc_secret *secret)
{
    struct bnc_daemon *d = lc_calloc(1, sizeof *d);
    d->cfg = cfg;
    d->secret = secret;
    d->url = lc_cfg_str(cfg, "redis.url");
    d->node = lc_cfg_str(cfg, "node.name");
    return d;
}

void bnc_daemon_free(struct bnc_daemon *d)
{
    if (!d)
        return;
    if (d->rc)
        redisFree(d->rc);
    free(d);
}

/* ---- Redis helpers ---- */

static void drop_connection(struct bnc_daemon *d, const char *why)
{
    lc_warn("redis: %s; reconnecting", why);
    if (d->rc)
        redisFree(d->rc);
    d->rc = NULL;
}

/* Run one command (NUL-terminated arguments). Returns the reply (caller frees) or NULL: then either the
 * connection is gone (d->rc dropped) or the reply was an error (logged). */
static redisReply *cmd(struct bnc_daemon *d, int argc, const char **argv)
{
    if (!d->rc)
        return NULL;
    redisReply *r = redisCommandArgv(d->rc, argc, argv, NULL);
    if (!r) {
        drop_connection(d, d->rc->errstr[0] ? d->rc->errstr : "connection lost");
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        lc_warn("redis: %s: %.*s", argv[0], (int)r->len, r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* Queue one command of a pipeline (NULL-terminated argument list). */
static void append(struct bnc_daemon *d, const char **argv)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    redisAppendCommandArgv(d->rc, argc, argv, NULL);
}

/* Read n queued replies; the last one is returned (caller frees), the others must not be errors.
 * Returns NULL on a lost connection (dropped) or an error reply (logged). */
static redisReply *collect(struct bnc_daemon *d, int n)
{
    redisReply *last = NULL;
    int bad = 0;
    for (int i = 0; i < n; i++) {
        void *v = NULL;
        if (redisGetReply(d->rc, &v) != REDIS_OK || !v) {
            if (last)
                freeReplyObject(last);
            drop_connection(d, d->rc->errstr[0] ? d->rc->errstr : "connection lost");
            return NULL;
        }
        redisReply *r = v;
        if (r->type == REDIS_REPLY_ERROR) {
            lc_warn("redis: %.*s", (int)r->len, r->str);
            bad = 1;
        }
        if (last)
            freeReplyObject(last);
        last = r;
    }
    if (bad && last) {
        freeReplyObject(last);
        return NULL;
    }
    return last;
}

static int ensure_connected(struct bnc_daemon *d, volatile sig_atomic_t *stop)
{
    char err[256];
    while (!d->rc && !*stop) {
        d->rc = lc_redis_connect(d->url, BNC_CMD_TIMEOUT_MS, err, sizeof err);
        if (d->rc && lc_redis_group(d->rc, LC_S_BOUNCES, LC_G_BOUNCES, err, sizeof err) == 0) {
            if (d->fails)
                lc_info("redis: connected again");
            d->fails = 0;
            d->pending_done = 0;
            strcpy(d->pending_cursor, "0");
            d->next_claim_ms = 0;
            return 0;
        }
        if (d->rc) {
            redisFree(d->rc);
            d->rc = NULL;
        }
        d->fails++;
        long wait_ms = 250L << (d->fails < 6 ? d->fails : 6); /* 0.5 s .. 16 s */
        lc_warn("%s (attempt %d, retrying in %ld ms)", err, d->fails, wait_ms);
        for (long waited = 0; waited < wait_ms && !*stop; waited += 100) {
            struct timespec ts = {0, 100 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return d->rc ? 0 : -1;
}

/* ---- entries ---- */

static int parse_u64(const char *s, uint64_t *v)
{
    if (!s || !*s || strlen(s) > 20)
        return -1;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return -1;
    errno = 0;
    unsigned long long x = strtoull(s, NULL, 10);
    if (errno)
        return -1;
    *v = (uint64_t)x;
    return 0;
}

static void entry_fields(struct entry *e, const redisReply *f)
{
    for (size_t i = 0; f && f->type == REDIS_REPLY_ARRAY && i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        if (!strcmp(k->str, "rcpt")) {
            e->rcpt = v->str;
            e->rcpt_len = v->len;
        } else if (!strcmp(k->str, "from")) {
            e->from = v->str;
        } else if (!strcmp(k->str, "post")) {
            e->post = v->str;
        } else if (!strcmp(k->str, "sub")) {
            e->sub = v->str;
        } else if (!strcmp(k->str, "msg")) {
            e->msg = v->str;
            e->msg_len = v->len;
        } else if (!strcmp(k->str, "reply")) {
            e->reply = v->str;
            e->reply_len = v->len;
        }
    }
}

/* Acknowledge and delete an entry that changes nothing. */
static int finish(struct bnc_daemon *d, const char *id)
{
    const char *a1[] = {"MULTI", NULL};
    const char *a2[] = {"XACK", LC_S_BOUNCES, LC_G_BOUNCES, id, NULL};
    const char *a3[] = {"XDEL", LC_S_BOUNCES, id, NULL};
    const char *a4[] = {"EXEC", NULL};
    append(d, a1);
    append(d, a2);
    append(d, a3);
    append(d, a4);
    redisReply *r = collect(d, 4);
    if (!r)
        return d->rc ? STEP_OK : STEP_REDIS;
    freeReplyObject(r);
    return STEP_OK;
}

static int is_dead_reason(const char *reason)
{
    return !strcmp(reason, "userunknown") || !strcmp(reason, "hostunknown") || !strcmp(reason, "hasmoved");
}

/* A list's bounce policy (lc:list:LIST fields, defaults when absent or out of range). */
struct policy {
    double hard, soft, threshold;
    long stale_s;
};

static double field_num(const redisReply *v, double def, double min, double max)
{
    if (!v || v->type != REDIS_REPLY_STRING || !v->len)
        return def;
    char *end;
    double x = strtod(v->str, &end);
    if (*end || x != x || x < min || x > max)
        return def;
    return x;
}

static void policy_of(const redisReply *r, struct policy *p)
{
    const redisReply *e[4] = {NULL, NULL, NULL, NULL};
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 4)
        for (int i = 0; i < 4; i++)
            e[i] = r->element[i];
    p->hard = field_num(e[0], BNC_DEF_HARD, 0, 1000);
    p->soft = field_num(e[1], BNC_DEF_SOFT, 0, 1000);
    p->threshold = field_num(e[2], BNC_DEF_THRESHOLD, 0.001, 1e6);
    p->stale_s = (long)(field_num(e[3], BNC_DEF_STALE_DAYS, 0, 36500) * 86400.0);
}

/* The domain part of an address ("" when none). */
static const char *domain_of(const char *addr)
{
    const char *at = strrchr(addr, '@');
    return at ? at + 1 : "";
}

/* Format a score the way HINCRBYFLOAT does for our values: no trailing zeros ("1", "0.5", "4.5"). */
static void fmt_score(char *out, size_t n, double v)
{
    snprintf(out, n, "%.6f", v);
    char *dot = strchr(out, '.');
    if (dot) {
        char *e = out + strlen(out) - 1;
        while (e > dot && *e == '0')
            *e-- = 0;
        if (e == dot)
            *e = 0;
    }
}

/* Apply one failure to the subscriber (see the file comment). */
static int apply_failure(struct bnc_daemon *d, const char *id, const struct outcome *o, const struct bnc_rcpt *f)
{
    char subkey[LC_KEY_MAX], activekey[LC_KEY_MAX], postkey[LC_KEY_MAX], bnckey[LC_KEY_MAX], listkey[LC_KEY_MAX];
    char rkey[LC_KEY_MAX], dkey[LC_KEY_MAX], pkey[LC_KEY_MAX];
    char postid[24], subid[24], now[24], scorestr[32];
    if (lc_key_sub(subkey, sizeof subkey, o->list, o->addr) < 0 ||
        lc_key_active(activekey, sizeof activekey, o->list) < 0 || lc_key_post(postkey, sizeof postkey, o->post) < 0 ||
        lc_key_postbnc(bnckey, sizeof bnckey, o->post) < 0 || lc_key_list(listkey, sizeof listkey, o->list) < 0 ||
        lc_key_bncstat(rkey, sizeof rkey, "reason", o->list) < 0 ||
        lc_key_bncstat(dkey, sizeof dkey, "domain", o->list) < 0 ||
        lc_key_bncstat(pkey, sizeof pkey, "post", o->list) < 0) {
        lc_warn("bounce post=%" PRIu64 " sub=%" PRIu64 " dropped: key too long", o->post, o->sub);
        return finish(d, id);
    }
    snprintf(postid, sizeof postid, "%" PRIu64, o->post);
    snprintf(subid, sizeof subid, "%" PRIu64, o->sub);
    time_t tnow = time(NULL);
    snprintf(now, sizeof now, "%lld", (long long)tnow);
    const char *status = f->status[0] ? f->status : "-";

    for (int attempt = 0; attempt < BNC_WATCH_TRIES; attempt++) {
        const char *w[] = {"WATCH", subkey, NULL};
        const char *g[] = {"HMGET", subkey, "status", "bounce_score", "last_bounce_at", NULL};
        const char *x[] = {"EXISTS", postkey, NULL};
        const char *l[] = {"HMGET", listkey, "bounce_hard", "bounce_soft", "bounce_threshold", "bounce_stale_days",
                           NULL};
        append(d, w);
        append(d, g);
        append(d, x);
        append(d, l);
        void *v;
        redisReply *rr[4] = {NULL, NULL, NULL, NULL};
        int got = 0;
        for (; got < 4 && redisGetReply(d->rc, &v) == REDIS_OK && v; got++)
            rr[got] = v;
        if (got < 4) {
            for (int i = 0; i < got; i++)
                freeReplyObject(rr[i]);
            drop_connection(d, d->rc->errstr[0] ? d->rc->errstr : "connection lost");
            return STEP_REDIS;
        }
        redisReply *rg = rr[1], *rx = rr[2];
        char cur_status[32] = "";
        double score = 0;
        long long last_at = 0;
        int have_sub = 0, post_exists = rx->type == REDIS_REPLY_INTEGER && rx->integer == 1;
        if (rg->type == REDIS_REPLY_ARRAY && rg->elements == 3) {
            if (rg->element[0]->type == REDIS_REPLY_STRING) {
                have_sub = 1;
                snprintf(cur_status, sizeof cur_status, "%.31s", rg->element[0]->str);
            }
            if (rg->element[1]->type == REDIS_REPLY_STRING)
                score = strtod(rg->element[1]->str, NULL);
            if (rg->element[2]->type == REDIS_REPLY_STRING)
                last_at = strtoll(rg->element[2]->str, NULL, 10);
        }
        struct policy pol;
        policy_of(rr[3], &pol);
        for (int i = 0; i < 4; i++)
            freeReplyObject(rr[i]);
        if (!have_sub) {
            const char *u[] = {"UNWATCH", NULL};
            redisReply *r = cmd(d, 1, u);
            if (!r)
                return d->rc ? STEP_OK : STEP_REDIS;
            freeReplyObject(r);
            lc_warn("bounce post=%s sub=%s rcpt=<%s> dropped: no subscriber hash", postid, subid, o->addr);
            return finish(d, id);
        }
        /* decay: a score whose last bounce is stale starts again */
        int stale = score > 0 && last_at > 0 && pol.stale_s > 0 && (long long)tnow - last_at > pol.stale_s;
        if (stale || score != score || score < 0)
            score = 0;
        double newscore = score + (f->hard ? pol.hard : pol.soft);
        fmt_score(scorestr, sizeof scorestr, newscore);
        int active = !strcmp(cur_status, LC_ST_ACTIVE);
        int dead = f->hard && is_dead_reason(f->reason);
        int disable = (active || !strcmp(cur_status, LC_ST_DISABLED)) && (newscore >= pol.threshold || dead);
        const char *why = dead ? f->reason : "threshold";

        const char *m[] = {"MULTI", NULL};
        const char *c1[] = {"HSET", subkey, "bounce_score", scorestr, NULL};
        const char *c2[] = {"HINCRBY", subkey, "bounces", "1", NULL};
        const char *c3[] = {"HSET", subkey, "last_bounce_reason", f->reason, "last_bounce_at", now,
                            "last_bounce_status", status, NULL};
        const char *c4[] = {"EVAL", LC_LUA_POST_DSN, "2", postkey, bnckey, subid, NULL};
        const char *c5[] = {"HSET", subkey, "status", LC_ST_DISABLED, "disabled_at", now, "disabled_reason", why,
                            "probe", "pending", NULL};
        const char *c6[] = {"HDEL", activekey, o->addr, NULL};
        const char *s1[] = {"HINCRBY", rkey, f->reason, "1", NULL};
        const char *s2[] = {"HINCRBY", dkey, domain_of(o->addr), "1", NULL};
        const char *s3[] = {"HINCRBY", pkey, postid, "1", NULL};
        const char *s4[] = {"HINCRBY", listkey, "bounces", "1", NULL};
        const char *c7[] = {"XACK", LC_S_BOUNCES, LC_G_BOUNCES, id, NULL};
        const char *c8[] = {"XDEL", LC_S_BOUNCES, id, NULL};
        const char *e[] = {"EXEC", NULL};
        int n = 0;
        append(d, m), n++;
        append(d, c1), n++;
        append(d, c2), n++;
        append(d, c3), n++;
        if (o->from_listd && post_exists)
            append(d, c4), n++;
        if (disable && active)
            append(d, c5), n++;
        if (disable)
            append(d, c6), n++;
        append(d, s1), n++;
        append(d, s2), n++;
        if (o->post)
            append(d, s3), n++;
        append(d, s4), n++;
        append(d, c7), n++;
        append(d, c8), n++;
        append(d, e), n++;
        redisReply *r = collect(d, n);
        if (!r)
            return d->rc ? STEP_OK : STEP_REDIS; /* an error reply: logged, entry stays pending */
        if (r->type == REDIS_REPLY_NIL) {
            freeReplyObject(r); /* the subscriber changed under us: read it again */
            continue;
        }
        freeReplyObject(r);
        lc_info("bounce post=%s sub=%s rcpt=<%s> status=%s reason=%s hard=%d score=%s%s", postid, subid, o->addr,
                status, f->reason, f->hard, scorestr, stale ? " (stale score reset)" : "");
        if (disable && active)
            lc_info("sub=%s list=%s rcpt=<%s> disabled score=%s reason=%s probe=pending", subid, o->list, o->addr,
                    scorestr, why);
        return STEP_OK;
    }
    lc_warn("bounce post=%s sub=%s rcpt=<%s> left pending: subscriber kept changing", postid, subid, o->addr);
    return STEP_OK;
}

/* An ARF complaint: the subscriber is unsubscribed, the address gets no more mail from any list, and the
 * complaint counts against the list and the post. */
static int apply_complaint(struct bnc_daemon *d, const char *id, const struct outcome *o, const struct bnc_rcpt *f)
{
    char activekey[LC_KEY_MAX], subkey[LC_KEY_MAX], listkey[LC_KEY_MAX], postkey[LC_KEY_MAX];
    char rkey[LC_KEY_MAX], dkey[LC_KEY_MAX], pkey[LC_KEY_MAX], postid[24], now[24];
    if (lc_key_active(activekey, sizeof activekey, o->list) < 0 || lc_key_sub(subkey, sizeof subkey, o->list, o->addr) < 0 ||
        lc_key_list(listkey, sizeof listkey, o->list) < 0 || lc_key_post(postkey, sizeof postkey, o->post) < 0 ||
        lc_key_bncstat(rkey, sizeof rkey, "reason", o->list) < 0 ||
        lc_key_bncstat(dkey, sizeof dkey, "domain", o->list) < 0 ||
        lc_key_bncstat(pkey, sizeof pkey, "post", o->list) < 0)
        return finish(d, id);
    snprintf(postid, sizeof postid, "%" PRIu64, o->post);
    snprintf(now, sizeof now, "%lld", (long long)time(NULL));
    const char *x[] = {"EXISTS", postkey, NULL};
    redisReply *rx = cmd(d, 2, x);
    if (!rx)
        return d->rc ? STEP_OK : STEP_REDIS;
    int post_exists = rx->type == REDIS_REPLY_INTEGER && rx->integer == 1;
    freeReplyObject(rx);
    const char *m[] = {"MULTI", NULL};
    const char *c1[] = {"SADD", LC_K_SUPPRESS, o->addr, NULL};
    const char *c2[] = {"HDEL", activekey, o->addr, NULL};
    const char *c3[] = {"HSET", subkey, "status", LC_ST_UNSUBSCRIBED, "complained_at", now, NULL};
    const char *c4[] = {"HINCRBY", listkey, "complaints", "1", NULL};
    const char *c5[] = {"HINCRBY", postkey, "complaints", "1", NULL};
    const char *s1[] = {"HINCRBY", rkey, "feedback", "1", NULL};
    const char *s2[] = {"HINCRBY", dkey, domain_of(o->addr), "1", NULL};
    const char *s3[] = {"HINCRBY", pkey, postid, "1", NULL};
    const char *c6[] = {"XACK", LC_S_BOUNCES, LC_G_BOUNCES, id, NULL};
    const char *c7[] = {"XDEL", LC_S_BOUNCES, id, NULL};
    const char *e[] = {"EXEC", NULL};
    int n = 0;
    append(d, m), n++;
    append(d, c1), n++;
    append(d, c2), n++;
    append(d, c3), n++;
    append(d, c4), n++;
    if (post_exists)
        append(d, c5), n++;
    append(d, s1), n++;
    append(d, s2), n++;
    if (o->post)
        append(d, s3), n++;
    append(d, c6), n++;
    append(d, c7), n++;
    append(d, e), n++;
    redisReply *r = collect(d, n);
    if (!r)
        return d->rc ? STEP_OK : STEP_REDIS;
    freeReplyObject(r);
    lc_info("complaint post=%" PRIu64 " sub=%" PRIu64 " rcpt=<%s> %s unsubscribed suppressed", o->post, o->sub,
            o->addr, f->diag);
    return STEP_OK;
}

/* Pick the report entry that speaks about the subscriber: a failure naming the address, else the first
 * failure (the subscriber's mail was forwarded and failed further on), else a complaint. */
static const struct bnc_rcpt *pick(const struct bnc_report *rep, const char *addr)
{
    const struct bnc_rcpt *first = NULL, *feedback = NULL;
    for (size_t i = 0; i < bnc_report_count(rep); i++) {
        const struct bnc_rcpt *e = bnc_report_get(rep, i);
        if (e->action == BNC_FAILED) {
            if (!strcasecmp(e->recipient, addr))
                return e;
            if (!first)
                first = e;
        } else if (e->action == BNC_FEEDBACK && !feedback) {
            feedback = e;
        }
    }
    return first ? first : feedback;
}

static int handle_entry(struct bnc_daemon *d, const char *id, const redisReply *fields)
{
    struct entry e;
    struct outcome o;
    memset(&e, 0, sizeof e);
    memset(&o, 0, sizeof o);
    e.id = id;
    if (!fields || fields->type != REDIS_REPLY_ARRAY)
        return finish(d, id); /* deleted while pending */
    entry_fields(&e, fields);
    if (parse_u64(e.post, &o.post) < 0 || parse_u64(e.sub, &o.sub) < 0 || (!e.msg && !e.reply)) {
        lc_warn("bounce entry=%s dropped: missing or bad fields", id);
        return finish(d, id);
    }
    o.from_listd = e.msg != NULL;

    /* the VERP address must be ours and name this post and subscriber */
    size_t plen = strlen(LC_VERP_PREFIX);
    if (e.rcpt && e.rcpt_len >= plen && !strncasecmp(e.rcpt, LC_VERP_PREFIX, plen)) {
        uint64_t vp = 0, vs = 0;
        int v = lc_verp_decode(d->secret, e.rcpt, e.rcpt_len, &vp, &vs);
        if (v < 0 || vp != o.post || vs != o.sub) {
            const char *why = v == -2 ? "forged" : v < 0 ? "malformed" : "mismatched";
            lc_warn("bounce entry=%s post=%" PRIu64 " sub=%" PRIu64 " dropped: %s VERP address <%.*s>", id, o.post,
                    o.sub, why, (int)(e.rcpt_len > 200 ? 200 : e.rcpt_len), e.rcpt);
            return finish(d, id);
        }
    } else if (o.from_listd) {
        lc_warn("bounce entry=%s post=%" PRIu64 " sub=%" PRIu64 " dropped: not a VERP address", id, o.post, o.sub);
        return finish(d, id);
    }

    /* who is it */
    const char *h[] = {"HGET", LC_K_SUBIDS, e.sub, NULL};
    redisReply *r = cmd(d, 3, h);
    if (!r)
        return d->rc ? STEP_OK : STEP_REDIS;
    const char *sp = r->type == REDIS_REPLY_STRING ? memchr(r->str, ' ', r->len) : NULL;
    size_t llen = sp ? (size_t)(sp - r->str) : 0, alen = sp ? r->len - llen - 1 : 0;
    if (!sp || llen == 0 || llen > LC_ADDR_MAX || alen == 0 || alen > LC_ADDR_MAX) {
        freeReplyObject(r);
        lc_warn("bounce post=%" PRIu64 " sub=%" PRIu64 " dropped: unknown subscriber id", o.post, o.sub);
        return finish(d, id);
    }
    memcpy(o.list, r->str, llen);
    o.list[llen] = 0;
    memcpy(o.addr, sp + 1, alen);
    o.addr[alen] = 0;
    freeReplyObject(r);

    /* what happened */
    if (e.reply) {
        struct bnc_rcpt f;
        char text[BNC_DIAG_LEN * 4];
        size_t n = e.reply_len < sizeof text - 1 ? e.reply_len : sizeof text - 1;
        memcpy(text, e.reply, n);
        text[n] = 0;
        if (bnc_classify_reply(text, &f) < 0) {
            lc_info("bounce post=%" PRIu64 " sub=%" PRIu64 " rcpt=<%s> ignored: not a failure reply", o.post, o.sub,
                    o.addr);
            return finish(d, id);
        }
        return apply_failure(d, id, &o, &f);
    }
    struct bnc_report *rep = NULL;
    char err[160];
    if (bnc_parse(e.msg, e.msg_len, &rep, err, sizeof err) < 0) {
        lc_warn("bounce post=%" PRIu64 " sub=%" PRIu64 " rcpt=<%s> ignored: %s", o.post, o.sub, o.addr, err);
        bnc_report_free(rep);
        return finish(d, id);
    }
    const struct bnc_rcpt *f = pick(rep, o.addr);
    int rc;
    if (f && f->action == BNC_FAILED) {
        rc = apply_failure(d, id, &o, f);
    } else if (f && f->action == BNC_FEEDBACK) {
        rc = apply_complaint(d, id, &o, f);
    } else {
        const char *what = "no failure reported";
        const char *st = "";
        for (size_t i = 0; i < bnc_report_count(rep); i++)
            if (bnc_report_get(rep, i)->action == BNC_DELAYED) {
                what = "delayed";
                st = bnc_report_get(rep, i)->status;
                break;
            }
        if (bnc_report_kind(rep) == BNC_K_AUTOREPLY)
            what = "auto-reply";
        lc_info("bounce post=%" PRIu64 " sub=%" PRIu64 " rcpt=<%s> %s%s%s kind=%s: no change", o.post, o.sub, o.addr,
                what, *st ? " status=" : "", st, bnc_kind_name(bnc_report_kind(rep)));
        rc = finish(d, id);
    }
    bnc_report_free(rep);
    return rc;
}

/* Handle an array of [id, fields] entries; returns the number handled or STEP_REDIS. last_id gets the id of
 * the last entry seen (for the pending cursor). */
static int handle_entries(struct bnc_daemon *d, const redisReply *entries, char *last_id, size_t last_len,
                          volatile sig_atomic_t *stop)
{
    int n = 0;
    if (!entries || entries->type != REDIS_REPLY_ARRAY)
        return 0;
    for (size_t i = 0; i < entries->elements && !*stop; i++) {
        const redisReply *en = entries->element[i];
        if (en->type != REDIS_REPLY_ARRAY || en->elements < 1 || en->element[0]->type != REDIS_REPLY_STRING)
            continue;
        const char *id = en->element[0]->str;
        if (last_id)
            snprintf(last_id, last_len, "%s", id);
        if (handle_entry(d, id, en->elements > 1 ? en->element[1] : NULL) == STEP_REDIS)
            return STEP_REDIS;
        n++;
    }
    return n;
}

/* One XREADGROUP: own pending entries first (cursor), then new ones. */
static int read_once(struct bnc_daemon *d, volatile sig_atomic_t *stop)
{
    const char *pend[] = {"XREADGROUP", "GROUP", LC_G_BOUNCES, d->node, "COUNT", BNC_READ_COUNT,
                          "STREAMS", LC_S_BOUNCES, d->pending_cursor, NULL};
    const char *fresh[] = {"XREADGROUP", "GROUP", LC_G_BOUNCES, d->node, "COUNT", BNC_READ_COUNT,
                           "BLOCK", BNC_BLOCK_MS, "STREAMS", LC_S_BOUNCES, ">", NULL};
    int pending = !d->pending_done;
    redisReply *r = pending ? cmd(d, 9, pend) : cmd(d, 11, fresh);
    if (!r) {
        if (d->rc) /* an error reply (e.g. NOGROUP after a FLUSHALL): make the group again */
            drop_connection(d, "read failed");
        return STEP_REDIS;
    }
    int n = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 && r->element[0]->type == REDIS_REPLY_ARRAY &&
        r->element[0]->elements == 2) {
        n = handle_entries(d, r->element[0]->element[1], pending ? d->pending_cursor : NULL,
                           sizeof d->pending_cursor, stop);
    }
    freeReplyObject(r);
    if (n == STEP_REDIS)
        return STEP_REDIS;
    if (pending && n == 0) {
        d->pending_done = 1;
        lc_debug("own pending entries done");
    }
    return STEP_OK;
}

/* XAUTOCLAIM entries idle too long (their consumer died), a bounded number of rounds. */
static int claim(struct bnc_daemon *d, volatile sig_atomic_t *stop)
{
    char cursor[64] = "0-0";
    for (int round = 0; round < BNC_CLAIM_ROUNDS && !*stop; round++) {
        const char *a[] = {"XAUTOCLAIM", LC_S_BOUNCES, LC_G_BOUNCES, d->node, BNC_CLAIM_IDLE_MS, cursor,
                           "COUNT", BNC_READ_COUNT, NULL};
        redisReply *r = cmd(d, 8, a);
        if (!r)
            return d->rc ? STEP_OK : STEP_REDIS;
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 || r->element[0]->type != REDIS_REPLY_STRING) {
            freeReplyObject(r);
            return STEP_OK;
        }
        snprintf(cursor, sizeof cursor, "%.63s", r->element[0]->str);
        size_t claimed = r->element[1]->type == REDIS_REPLY_ARRAY ? r->element[1]->elements : 0;
        if (claimed)
            lc_info("claimed %zu idle bounce entries", claimed);
        int n = handle_entries(d, r->element[1], NULL, 0, stop);
        freeReplyObject(r);
        if (n == STEP_REDIS)
            return STEP_REDIS;
        if (!strcmp(cursor, "0-0"))
            break;
    }
    return STEP_OK;
}

int bnc_daemon_run(struct bnc_daemon *d, volatile sig_atomic_t *stop)
{
    while (!*stop) {
        if (ensure_connected(d, stop) < 0)
            break;
        if (d->pending_done && now_ms() >= d->next_claim_ms) {
            d->next_claim_ms = now_ms() + BNC_CLAIM_EVERY_MS;
            if (claim(d, stop) == STEP_REDIS)
                continue;
        }
        read_once(d, stop);
    }
    return 0;
}
