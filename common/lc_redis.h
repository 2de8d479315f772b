/* lc_redis: connect to Redis from a redis.url, synchronously (CLI, batch daemons) or asynchronously (loops).
 *
 * URL forms: "redis://HOST:PORT[/DB]" (numeric HOST or localhost), "unix:///path/to/redis.sock[?db=N]" and
 * "unix:/path". An empty URL is refused (the supervisor always sets one).
 */
#ifndef LC_REDIS_H
#define LC_REDIS_H

#include <stddef.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

/* lc_redis_connect connects (timeout_ms for connect and each command; 0 = none) and selects the DB.
 * Returns a context, or NULL with a reason in err. */
redisContext *lc_redis_connect(const char *url, int timeout_ms, char *err, size_t errlen);
/* lc_redis_connect_async starts an async connection (attach it with lc_loop_redis). NULL + err on error.
 * A non-zero DB is selected by queuing SELECT first. */
redisAsyncContext *lc_redis_connect_async(const char *url, char *err, size_t errlen);

/* lc_redis_cmd runs a command (argv form) and checks the reply is not an error; returns the reply (caller
 * frees with freeReplyObject) or NULL with a reason in err. */
redisReply *lc_redis_cmdv(redisContext *rc, int argc, const char **argv, const size_t *lens, char *err,
                          size_t errlen);
redisReply *lc_redis_cmd(redisContext *rc, char *err, size_t errlen, const char *fmt, ...);

/* lc_redis_group ensures a consumer group exists on a stream (XGROUP CREATE STREAM GROUP 0 MKSTREAM; BUSYGROUP is fine).
 * Returns 0 or -1 with err. Groups start at "0" so nothing written before the group existed is missed. */
int lc_redis_group(redisContext *rc, const char *stream, const char *group, char *err, size_t errlen);

#endif
