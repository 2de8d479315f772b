/* web_db: a small pool of synchronous Redis connections for the web UI, reconnected on error.
 *
 * Contract: web_db_get takes a free slot of the pool (or waits for one), (re)connects it and returns its
 * connection; web_db_put gives the slot back and drops a connection whose context has an error flag (I/O
 * error, timeout, protocol error), so the next request reconnects. The slot held is remembered per thread, so a
 * thread holds at most one. Commands time out after WEB_DB_TIMEOUT_MS, so a stuck Redis cannot hold a slot
 * forever. Reconnects are rate-limited to one per WEB_DB_RETRY_MS, so a dead Redis costs a request a fast 503.
 */
#include "web.h"
#include "lc_log.h"
#include "lc_redis.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WEB_DB_TIMEOUT_MS 2000
#define WEB_DB_RETRY_MS 250
#define WEB_DB_SLOTS WEB_THREADS

struct web_slot {
    redisContext *rc;
    int busy;
};

struct web_db {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *url;
    struct web_slot slot[WEB_DB_SLOTS];
    long long last_try; /* monotonic ms of the last failed connect */
    char last_err[256];
};

static __thread struct web_slot *held;

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct web_db *web_db_new(const char *url)
{
    struct web_db *db = lc_calloc(1, sizeof *db);
    pthread_mutex_init(&db->mu, NULL);
    pthread_cond_init(&db->cv, NULL);
    db->url = lc_strdup(url);
    return db;
}

void web_db_free(struct web_db *db)
{
    if (!db)
        return;
    for (int i = 0; i < WEB_DB_SLOTS; i++)
        if (db->slot[i].rc)
            redisFree(db->slot[i].rc);
    pthread_cond_destroy(&db->cv);
    pthread_mutex_destroy(&db->mu);
    free(db->url);
    free(db);
}

redisContext *web_db_get(struct web_db *db, char *err, size_t errlen)
{
    if (held)
        lc_panic("web_db_get: this thread holds a connection already");
    pthread_mutex_lock(&db->mu);
    struct web_slot *s = NULL;
    while (!s) {
        for (int i = 0; i < WEB_DB_SLOTS && !s; i++) /* prefer a connected free slot */
            if (!db->slot[i].busy && db->slot[i].rc)
                s = &db->slot[i];
        for (int i = 0; i < WEB_DB_SLOTS && !s; i++)
            if (!db->slot[i].busy)
                s = &db->slot[i];
        if (!s)
            pthread_cond_wait(&db->cv, &db->mu);
    }
    s->busy = 1;
    held = s;
    if (s->rc) {
        pthread_mutex_unlock(&db->mu);
        return s->rc;
    }
    long long now = mono_ms();
    if (db->last_try && now - db->last_try < WEB_DB_RETRY_MS) {
        snprintf(err, errlen, "%s", db->last_err);
        pthread_mutex_unlock(&db->mu);
        return NULL;
    }
    pthread_mutex_unlock(&db->mu);
    redisContext *rc = lc_redis_connect(db->url, WEB_DB_TIMEOUT_MS, err, errlen);
    pthread_mutex_lock(&db->mu);
    if (!rc) {
        db->last_try = now;
        snprintf(db->last_err, sizeof db->last_err, "%s", err);
        pthread_mutex_unlock(&db->mu);
        lc_warn("redis connect failed: %s", err);
        return NULL;
    }
    db->last_try = 0;
    s->rc = rc;
    pthread_mutex_unlock(&db->mu);
    lc_debug("redis connected url=%s", db->url);
    return rc;
}

void web_db_put(struct web_db *db)
{
    struct web_slot *s = held;
    if (!s)
        return;
    held = NULL;
    pthread_mutex_lock(&db->mu);
    if (s->rc && s->rc->err) {
        lc_warn("redis connection dropped: %s", s->rc->errstr);
        redisFree(s->rc);
        s->rc = NULL;
    }
    s->busy = 0;
    pthread_cond_signal(&db->cv);
    pthread_mutex_unlock(&db->mu);
}

int web_db_ping(struct web_db *db)
{
    char err[256];
    int ok = -1;
    redisContext *rc = web_db_get(db, err, sizeof err);
    if (rc) {
        redisReply *r = redisCommand(rc, "PING");
        if (r && r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "PONG"))
            ok = 0;
        freeReplyObject(r);
    }
    web_db_put(db);
    return ok;
}
