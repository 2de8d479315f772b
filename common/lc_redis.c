/* lc_redis: Redis connections from a redis.url. See lc_redis.h. */
#include "lc_redis.h"
#include "lc_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct target {
    int unix_socket;
    char path[512]; /* socket path, or host */
    int port;
    int db;
};

static int parse_url(const char *url, struct target *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    if (!url || !*url) {
        snprintf(err, errlen, "redis.url is empty");
        return -1;
    }
    if (!strncmp(url, "unix:", 5)) {
        const char *p = url + 5;
        if (!strncmp(p, "//", 2))
            p += 2;
        const char *q = strchr(p, '?');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        if (n == 0 || n >= sizeof t->path || *p != '/') {
            snprintf(err, errlen, "redis.url: bad unix socket path in \"%.200s\"", url);
            return -1;
        }
        memcpy(t->path, p, n);
        t->path[n] = 0;
        t->unix_socket = 1;
        if (q) {
            if (strncmp(q, "?db=", 4) != 0) {
                snprintf(err, errlen, "redis.url: unknown parameter in \"%.200s\"", url);
                return -1;
            }
            char *end;
            t->db = (int)strtol(q + 4, &end, 10);
            if (*end || t->db < 0 || t->db > 15) {
                snprintf(err, errlen, "redis.url: bad db in \"%.200s\"", url);
                return -1;
            }
        }
        return 0;
    }
    if (!strncmp(url, "redis://", 8)) {
        const char *p = url + 8;
        const char *at = strchr(p, '@');
        if (at) {
            snprintf(err, errlen, "redis.url: passwords in the URL are not supported yet");
            return -1;
        }
        const char *slash = strchr(p, '/');
        size_t hn = slash ? (size_t)(slash - p) : strlen(p);
        char hp[500];
        if (hn == 0 || hn >= sizeof hp) {
            snprintf(err, errlen, "redis.url: bad host in \"%.200s\"", url);
            return -1;
        }
        memcpy(hp, p, hn);
        hp[hn] = 0;
        char *colon = strrchr(hp, ':');
        t->port = 6379;
        if (colon) {
            char *end;
            *colon = 0;
            long port = strtol(colon + 1, &end, 10);
            if (*end || port <= 0 || port > 65535) {
                snprintf(err, errlen, "redis.url: bad port in \"%.200s\"", url);
                return -1;
            }
            t->port = (int)port;
        }
        snprintf(t->path, sizeof t->path, "%s", hp);
        if (slash && slash[1]) {
            char *end;
            t->db = (int)strtol(slash + 1, &end, 10);
            if (*end || t->db < 0 || t->db > 15) {
                snprintf(err, errlen, "redis.url: bad db in \"%.200s\"", url);
                return -1;
            }
        }
        return 0;
    }
    snprintf(err, errlen, "redis.url: \"%.200s\" is not a redis:// or unix: URL", url);
    return -1;
}

redisContext *lc_redis_connect(const char *url, int timeout_ms, char *err, size_t errlen)
{
    struct target t;
    if (parse_url(url, &t, err, errlen) < 0)
        return NULL;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *rc;
    if (t.unix_socket)
        rc = timeout_ms ? redisConnectUnixWithTimeout(t.path, tv) : redisConnectUnix(t.path);
    else
        rc = timeout_ms ? redisConnectWithTimeout(t.path, t.port, tv) : redisConnect(t.path, t.port);
    if (!rc) {
        snprintf(err, errlen, "redis %s: cannot allocate context", url);
        return NULL;
    }
    if (rc->err) {
        snprintf(err, errlen, "redis %s: %s", url, rc->errstr);
        redisFree(rc);
        return NULL;
    }
    if (timeout_ms)
        redisSetTimeout(rc, tv);
    if (t.db) {
        redisReply *r = lc_redis_cmd(rc, err, errlen, "SELECT %d", t.db);
        if (!r) {
            redisFree(rc);
            return NULL;
        }
        freeReplyObject(r);
    }
    return rc;
}

redisAsyncContext *lc_redis_connect_async(const char *url, char *err, size_t errlen)
{
    struct target t;
    if (parse_url(url, &t, err, errlen) < 0)
        return NULL;
    redisAsyncContext *ac = t.unix_socket ? redisAsyncConnectUnix(t.path) : redisAsyncConnect(t.path, t.port);
    if (!ac) {
        snprintf(err, errlen, "redis %s: cannot allocate context", url);
        return NULL;
    }
    if (ac->err) {
        snprintf(err, errlen, "redis %s: %s", url, ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    if (t.db)
        redisAsyncCommand(ac, NULL, NULL, "SELECT %d", t.db);
    return ac;
}

static redisReply *checked(redisContext *rc, redisReply *r, char *err, size_t errlen)
{
    if (!r) {
        snprintf(err, errlen, "redis: %s", rc->errstr[0] ? rc->errstr : "connection lost");
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "redis: %.*s", (int)r->len, r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

redisReply *lc_redis_cmdv(redisContext *rc, int argc, const char **argv, const size_t *lens, char *err,
                          size_t errlen)
{
    return checked(rc, redisCommandArgv(rc, argc, argv, lens), err, errlen);
}

redisReply *lc_redis_cmd(redisContext *rc, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(rc, fmt, ap);
    va_end(ap);
    return checked(rc, r, err, errlen);
}

int lc_redis_group(redisContext *rc, const char *stream, const char *group, char *err, size_t errlen)
{
    redisReply *r = redisCommand(rc, "XGROUP CREATE %s %s 0 MKSTREAM", stream, group);
    if (!r) {
        snprintf(err, errlen, "redis: %s", rc->errstr[0] ? rc->errstr : "connection lost");
        return -1;
    }
    int rcode = 0;
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0) {
        snprintf(err, errlen, "redis: XGROUP CREATE %s %s: %.*s", stream, group, (int)r->len, r->str);
        rcode = -1;
    }
    freeReplyObject(r);
    return rcode;
}
