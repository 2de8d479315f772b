/* exp_loop: the expander's stream loop over lc:stream:posts (consumer group "expander").
 *
 * Two synchronous connections: `rd` blocks in XREADGROUP (BLOCK 1000, so the stop flag is seen within about a
 * second), `wr` runs everything else. After each (re)connect the group is created if missing (id 0,
 * MKSTREAM), our own pending entries are read first (XREADGROUP ... STREAMS key <last id>, from "0"), then
 * new ones (">"). Every CLAIM_EVERY_MS, XAUTOCLAIM takes entries idle for more than CLAIM_IDLE_MS from any
 * consumer (a dead expander, or our own entries left pending after a data error), at most CLAIM_MAX a round.
 *
 * Failures: a Redis connection error drops both connections; reconnects back off from 100 ms to 5 s; after
 * FAIL_LIMIT_MS without a successful step exp_run returns -1 (main exits 1, the supervisor restarts us).
 */
#include "exp.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lc_log.h"
#include "lc_redis.h"
#include "lc_schema.h"

#define RD_TIMEOUT_MS 5000   /* > BLOCK 1000 */
#define WR_TIMEOUT_MS 10000
#define CLAIM_IDLE_MS "60000"
#define CLAIM_EVERY_MS 30000
#define CLAIM_MAX 100
#define FAIL_LIMIT_MS 30000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

struct loop {
    struct exp *e;
    int pending;          /* reading our own pending entries */
    char last[64];        /* last pending entry handled */
    char cursor[64];      /* XAUTOCLAIM cursor */
    int64_t next_claim;
    int64_t next_recheck; /* re-read our pending entries then, while posts of paused lists wait */
};

static void disconnect(struct exp *e)
{
    if (e->rd)
        redisFree(e->rd);
    if (e->wr)
        redisFree(e->wr);
    e->rd = e->wr = NULL;
}

static int connect_both(struct exp *e, char *err, size_t errlen)
{
    e->rd = lc_redis_connect(e->url, RD_TIMEOUT_MS, err, errlen);
    if (!e->rd)
        return -1;
    e->wr = lc_redis_connect(e->url, WR_TIMEOUT_MS, err, errlen);
    if (!e->wr || lc_redis_group(e->wr, LC_S_POSTS, LC_G_POSTS, err, errlen) < 0) {
        disconnect(e);
        return -1;
    }
    return 0;
}

static void nap(struct exp *e, long ms)
{
    for (long left = ms; left > 0 && !*e->stop; left -= 100) {
        struct timespec ts = {0, (left < 100 ? left : 100) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* handle expands one stream entry [id, [field, value, ...]]; returns exp_post_run's code (0, -1, 1). */
static int handle(struct exp *e, const redisReply *ent)
{
    if (ent->type != REDIS_REPLY_ARRAY || ent->elements < 2 || ent->element[0]->type != REDIS_REPLY_STRING) {
        lc_warn("unexpected stream entry shape: ignored");
        return 0;
    }
    const char *id = ent->element[0]->str;
    const redisReply *f = ent->element[1];
    const char *post = NULL;
    size_t plen = 0;
    int reroute = 0; /* a `rcpts` field: retried recipients to route again (exp_reroute.c) */
    if (f->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i + 1 < f->elements; i += 2) {
            if (f->element[i]->type == REDIS_REPLY_STRING && !strcmp(f->element[i]->str, "post") &&
                f->element[i + 1]->type == REDIS_REPLY_STRING) {
                post = f->element[i + 1]->str;
                plen = f->element[i + 1]->len;
            }
            reroute |= f->element[i]->type == REDIS_REPLY_STRING && !strcmp(f->element[i]->str, "rcpts");
        }
    if (post && reroute) {
        lc_debug("entry=%s post=%.*s reroute", id, (int)plen, post);
        return exp_reroute_run(e, id, f);
    }
    if (!post) {
        char err[256];
        lc_warn("entry=%s has no post field (deleted entry?): acknowledged", id);
        redisReply *r = lc_redis_cmd(e->wr, err, sizeof err, "XACK %s %s %s", LC_S_POSTS, LC_G_POSTS, id);
        if (!r) {
            lc_warn("XACK %s: %s", id, err);
            return e->wr->err ? -1 : 0;
        }
        freeReplyObject(r);
        return 0;
    }
    lc_debug("entry=%s post=%.*s", id, (int)plen, post);
    return exp_post_run(e, id, post, plen);
}

/* autoclaim takes over abandoned entries and expands them. 0, -1 (connection) or 1 (stop). */
static int autoclaim(struct loop *l)
{
    struct exp *e = l->e;
    char err[512];
    for (int n = 0; n < CLAIM_MAX && !*e->stop;) {
        redisReply *r = lc_redis_cmd(e->wr, err, sizeof err, "XAUTOCLAIM %s %s %s " CLAIM_IDLE_MS " %s COUNT 10",
                                     LC_S_POSTS, LC_G_POSTS, e->node, l->cursor);
        if (!r) {
            lc_warn("XAUTOCLAIM: %s", err);
            return e->wr->err ? -1 : 0;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 || r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[0]->len >= sizeof l->cursor || r->element[1]->type != REDIS_REPLY_ARRAY) {
            lc_warn("XAUTOCLAIM: unexpected reply");
            freeReplyObject(r);
            return 0;
        }
        memcpy(l->cursor, r->element[0]->str, r->element[0]->len + 1);
        int rc = 0;
        for (size_t i = 0; i < r->element[1]->elements && rc == 0; i++, n++) {
            const redisReply *ent = r->element[1]->element[i];
            if (ent->type == REDIS_REPLY_ARRAY && ent->elements >= 1 && ent->element[0]->type == REDIS_REPLY_STRING)
                lc_info("entry=%s claimed (idle over " CLAIM_IDLE_MS " ms)", ent->element[0]->str);
            rc = handle(e, ent);
        }
        freeReplyObject(r);
        if (rc != 0)
            return rc;
        if (!strcmp(l->cursor, "0-0"))
            break;
    }
    return 0;
}

/* step reads at most one entry and expands it. 0, -1 (connection) or 1 (stop). */
static int step(struct loop *l)
{
    struct exp *e = l->e;
    int64_t now = exp_now_ms();
    if (now >= l->next_claim) {
        l->next_claim = now + CLAIM_EVERY_MS;
        int rc = autoclaim(l);
        if (rc != 0)
            return rc;
    }
    if (!l->pending && e->paused_waiting > 0 && now >= l->next_recheck) {
        l->next_recheck = now + EXP_PAUSE_RECHECK_MS;
        e->paused_waiting = 0; /* exp_post_run counts the posts still paused again */
        l->pending = 1;
        snprintf(l->last, sizeof l->last, "0");
    }
    redisReply *r;
    if (l->pending)
        r = redisCommand(e->rd, "XREADGROUP GROUP %s %s COUNT 1 STREAMS %s %s", LC_G_POSTS, e->node, LC_S_POSTS,
                         l->last);
    else
        r = redisCommand(e->rd, "XREADGROUP GROUP %s %s COUNT 1 BLOCK 1000 STREAMS %s >", LC_G_POSTS, e->node,
                         LC_S_POSTS);
    if (!r) {
        if (*e->stop)
            return 1;
        lc_warn("XREADGROUP: %s", e->rd->errstr[0] ? e->rd->errstr : "connection lost");
        return -1;
    }
    if (r->type == REDIS_REPLY_ERROR) { /* e.g. NOGROUP after the stream was deleted: reconnect recreates it */
        lc_warn("XREADGROUP: %s", r->str);
        freeReplyObject(r);
        return -1;
    }
    const redisReply *ents = NULL;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->type == REDIS_REPLY_ARRAY &&
        r->element[0]->elements == 2 && r->element[0]->element[1]->type == REDIS_REPLY_ARRAY)
        ents = r->element[0]->element[1];
    if (!ents || ents->elements == 0) {
        if (l->pending) {
            lc_debug("own pending entries done");
            l->pending = 0;
        }
        freeReplyObject(r);
        return 0;
    }
    const redisReply *ent = ents->element[0];
    int rc = handle(e, ent);
    if (rc == 0 && l->pending && ent->type == REDIS_REPLY_ARRAY && ent->elements >= 1 &&
        ent->element[0]->type == REDIS_REPLY_STRING && ent->element[0]->len < sizeof l->last)
        memcpy(l->last, ent->element[0]->str, ent->element[0]->len + 1);
    freeReplyObject(r);
    return rc;
}

int exp_run(struct exp *e)
{
    struct loop l = {.e = e};
    int64_t fail_since = 0;
    long backoff = BACKOFF_MIN_MS;
    char err[512];
    while (!*e->stop) {
        if (!e->rd) {
            if (connect_both(e, err, sizeof err) < 0) {
                int64_t now = exp_now_ms();
                if (!fail_since)
                    fail_since = now;
                if (now - fail_since >= FAIL_LIMIT_MS) {
                    lc_warn("%s: giving up after %ld s", err, (long)((now - fail_since) / 1000));
                    return -1;
                }
                lc_warn("%s (retrying in %ld ms)", err, backoff);
                nap(e, backoff);
                backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            lc_debug("connected to %s as %s", e->url, e->node);
            l.pending = 1;
            snprintf(l.last, sizeof l.last, "0");
            snprintf(l.cursor, sizeof l.cursor, "0-0");
            l.next_claim = 0;
        }
        int rc = step(&l);
        if (rc < 0) {
            disconnect(e);
            if (!fail_since)
                fail_since = exp_now_ms();
            if (exp_now_ms() - fail_since >= FAIL_LIMIT_MS) {
                lc_warn("redis failing for %d s: giving up", FAIL_LIMIT_MS / 1000);
                return -1;
            }
            nap(e, backoff);
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        if (rc == 0) {
            fail_since = 0;
            backoff = BACKOFF_MIN_MS;
        }
    }
    disconnect(e);
    return 0;
}
