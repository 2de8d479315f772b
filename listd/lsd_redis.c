/* lsd_redis: listd's one asynchronous Redis connection, kept alive across Redis restarts.
 *
 * States: DOWN (no context; a reconnect timer is pending), CONNECTING (context made, PING sent), UP (PING
 * answered). Commands are sent only when UP; otherwise lsd_redis_send fails at once and the session answers
 * 451 4.3.0. When the connection drops, hiredis runs every pending callback with a NULL reply (so each waiting
 * session answers 451) and we go DOWN and retry after a backoff that doubles from 100 ms to 5 s and resets once
 * a PING is answered. A new connection whose PING gets no answer in 5 s is dropped and retried. A lost Redis
 * never stops listd. (A Redis that hangs after answering is not detected here: each waiting session gives up
 * after LSD_REDIS_WAIT_MS with 451.)
 *
 * hiredis 0.14 detail: the context's pending callbacks run (with NULL) before onDisconnect, while the context
 * is flagged DISCONNECTING/FREEING; lsd_redis_up() checks those flags so callbacks do not queue new commands
 * on a dying context.
 */
#include "lsd.h"

#include <stdlib.h>
#include <string.h>

#include "lc_log.h"
#include "lc_loop.h"
#include "lc_redis.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define PING_WAIT_MS 5000   /* a new connection that does not answer PING by then is dropped and retried */

enum rstate { R_DOWN, R_CONNECTING, R_UP };
static const char *const rstate_names[] = {"down", "connecting", "up"};

struct lsd_redis {
    struct lc_loop *loop;
    char *url;
    redisAsyncContext *ac;
    enum rstate state;
    long backoff_ms;
    uint64_t timer;
    uint64_t ping_timer;
    int was_up;   /* log "lost"/"back" once per outage */
    int freeing;
};

struct pending {
    struct lsd_redis *r;
    lsd_redis_fn *fn;
    void *arg;
};

static void connect_now(struct lc_loop *loop, void *arg);

static void set_state(struct lsd_redis *r, enum rstate st)
{
    if (r->state != st)
        lc_debug("redis %s -> %s", rstate_names[r->state], rstate_names[st]);
    r->state = st;
}

static void schedule(struct lsd_redis *r)
{
    if (r->timer || r->freeing)
        return;
    r->timer = lc_loop_timer(r->loop, r->backoff_ms, connect_now, r);
    r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

/* lost forgets a context that hiredis is freeing (or has failed) and schedules a reconnect. */
static void lost(struct lsd_redis *r, const redisAsyncContext *ac, const char *why)
{
    if (ac != r->ac)
        return;
    r->ac = NULL;
    set_state(r, R_DOWN);
    if (r->was_up) {
        lc_warn("redis %s: connection lost (%s); answering 451 until it is back", r->url, why);
        r->was_up = 0;
    }
    schedule(r);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct lsd_redis *r = ac->data;
    if (status != REDIS_OK && r)
        lost(r, ac, ac->errstr[0] ? ac->errstr : "connect failed");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct lsd_redis *r = ac->data;
    if (r)
        lost(r, ac, status == REDIS_OK ? "closed" : (ac->errstr[0] ? ac->errstr : "error"));
}

static void on_ping(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct lsd_redis *r = privdata;
    redisReply *rep = reply;
    if (!rep) {
        lost(r, ac, ac->errstr[0] ? ac->errstr : "connection lost");
        return;
    }
    if (ac != r->ac)
        return;
    if (rep->type == REDIS_REPLY_ERROR) {
        /* e.g. LOADING after a restart: try again shortly, keep the connection */
        lc_debug("redis PING: %.*s", (int)rep->len, rep->str);
        redisAsyncDisconnect(ac);
        return;
    }
    set_state(r, R_UP);
    r->backoff_ms = BACKOFF_MIN_MS;
    if (!r->was_up)
        lc_info("redis %s: connected", r->url);
    r->was_up = 1;
}

/* ping_late drops a connection that did not answer its first PING in time (runs from a timer, so freeing the
 * context here is safe). */
static void ping_late(struct lc_loop *loop, void *arg)
{
    struct lsd_redis *r = arg;
    r->ping_timer = 0;
    if (r->state != R_CONNECTING || !r->ac)
        return;
    lc_warn("redis %s: no answer to PING in %d ms: reconnecting", r->url, PING_WAIT_MS);
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    set_state(r, R_DOWN);
    redisAsyncFree(ac);
    schedule(r);
}

static void connect_now(struct lc_loop *loop, void *arg)
{
    struct lsd_redis *r = arg;
    char err[512];
    r->timer = 0;
    redisAsyncContext *ac = lc_redis_connect_async(r->url, err, sizeof err);
    if (!ac) {
        lc_debug("redis connect: %s", err);
        if (r->was_up) {
            lc_warn("redis %s: %s", r->url, err);
            r->was_up = 0;
        }
        schedule(r);
        return;
    }
    ac->data = r;
    if (lc_loop_redis(loop, ac) < 0)
        lc_panic("redis context attached twice");
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    set_state(r, R_CONNECTING);
    if (redisAsyncCommand(ac, on_ping, r, "PING") != REDIS_OK) {
        r->ac = NULL;
        redisAsyncFree(ac);
        set_state(r, R_DOWN);
        schedule(r);
        return;
    }
    if (r->ping_timer)
        lc_loop_cancel(loop, r->ping_timer);
    r->ping_timer = lc_loop_timer(loop, PING_WAIT_MS, ping_late, r);
}

struct lsd_redis *lsd_redis_new(struct lc_loop *loop, const char *url)
{
    struct lsd_redis *r = lc_calloc(1, sizeof *r);
    r->loop = loop;
    r->url = lc_strdup(url);
    r->backoff_ms = BACKOFF_MIN_MS;
    r->was_up = 1; /* so that a Redis missing at start is logged once as a warning */
    connect_now(loop, r);
    return r;
}

void lsd_redis_free(struct lsd_redis *r)
{
    if (!r)
        return;
    r->freeing = 1;
    if (r->timer)
        lc_loop_cancel(r->loop, r->timer);
    if (r->ping_timer)
        lc_loop_cancel(r->loop, r->ping_timer);
    if (r->ac) {
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        ac->data = NULL;
        redisAsyncFree(ac); /* runs pending callbacks with NULL */
    }
    free(r->url);
    free(r);
}

int lsd_redis_up(const struct lsd_redis *r)
{
    return r->state == R_UP && r->ac && !(r->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING)) &&
           r->ac->err == 0;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct pending *p = privdata;
    /* A NULL reply means the context is going away: forget it first, so that callbacks see Redis down. */
    if (!reply)
        lost(p->r, ac, ac->errstr[0] ? ac->errstr : "connection lost");
    p->fn(reply, p->arg);
    free(p);
}

int lsd_redis_send(struct lsd_redis *r, int argc, const char **argv, const size_t *lens, lsd_redis_fn *fn,
                   void *arg)
{
    if (!lsd_redis_up(r))
        return -1;
    struct pending *p = lc_malloc(sizeof *p);
    p->r = r;
    p->fn = fn;
    p->arg = arg;
    if (redisAsyncCommandArgv(r->ac, on_reply, p, argc, argv, lens) != REDIS_OK) {
        free(p);
        return -1;
    }
    return 0;
}
