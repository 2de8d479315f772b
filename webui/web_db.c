/* web_db: one synchronous Redis connection for the web UI, guarded by a mutex, reconnected on error.
 *
 * Contract: web_db_get locks and (re)connects; web_db_put unlocks and drops a connection whose context has
 * an error flag (I/O error, timeout, protocol error), so the next request reconnects. Commands time out after
 * WEB_DB_TIMEOUT_MS, so a stuck Redis cannot hold the lock forever. Reconnects are rate-limited to one per
 * WEB_DB_RETRY_MS, so a dead Redis costs a request a fast 503, not a connect timeout each.
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

struct web_db {
    pthread_mutex_t mu;
    char *url;
    redisContext *rc;
    long long last_try; /* monotonic ms of the last failed connect */
    char last_err[256];
};

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
    db->url = lc_strdup(url);
    return db;
}

void web_db_free(struct web_db *db)
{
    if (!db)
        return;
    if (db->rc)
        redisFree(db->rc);
    pthread_mutex_destroy(&db->mu);
    free(db->url);
    free(db);
}

redisContext *web_db_get(struct web_db *db, char *err, size_t errlen)
{
    pthread_mutex_lock(&db->mu);
    if (db->rc)
        return db->rc;
    long long now = mono_ms();
    if (db->last_try && now - db->last_try < WEB_DB_RETRY_MS) {
        snprintf(err, errlen, "%s", db->last_err);
        return NULL;
    }
    db->rc = lc_redis_connect(db->url, WEB_DB_TIMEOUT_MS, err, errlen);
    if (!db->rc) {
        db->last_try = now;
        snprintf(db->last_err, sizeof db->last_err, "%s", err);
        lc_warn("redis connect failed: %s", err);
        return NULL;
    }
    db->last_try = 0;
    lc_info("redis connected url=%s", db->url);
    return db->rc;
}

void web_db_put(struct web_db *db)
{
    if (db->rc && db->rc->err) {
        lc_warn("redis connection dropped: %s", db->rc->errstr);
        redisFree(db->rc);
        db->rc = NULL;
    }
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
