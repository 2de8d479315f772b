/* lc_loop: the one event loop of a listcast daemon: epoll for file descriptors, plus one-shot timers.
 *
 * A watcher is registered for an fd with a callback and a mask of LC_READ|LC_WRITE; lc_loop_watch changes the
 * mask (0 removes the fd). Callbacks run on the loop thread; a callback may add or remove any watcher or
 * timer, including its own. Timers are one-shot, millisecond resolution, kept in a binary heap.
 * lc_loop_redis attaches a hiredis async context to the loop (hiredis 0.14 adapter API).
 */
#ifndef LC_LOOP_H
#define LC_LOOP_H

#include <stdint.h>

#define LC_READ 1
#define LC_WRITE 2

struct lc_loop;
struct redisAsyncContext;

typedef void lc_fd_fn(struct lc_loop *loop, int fd, int events, void *arg);
typedef void lc_timer_fn(struct lc_loop *loop, void *arg);

struct lc_loop *lc_loop_new(void);
void lc_loop_free(struct lc_loop *loop);

/* lc_loop_watch sets fd's callback, argument and event mask; mask 0 stops watching the fd. Returns 0 or -1. */
int lc_loop_watch(struct lc_loop *loop, int fd, int mask, lc_fd_fn *fn, void *arg);

/* lc_loop_timer schedules fn(arg) once after ms milliseconds; returns an id > 0 for lc_loop_cancel. */
uint64_t lc_loop_timer(struct lc_loop *loop, long ms, lc_timer_fn *fn, void *arg);
/* lc_loop_cancel cancels a pending timer (unknown or fired ids are ignored). */
void lc_loop_cancel(struct lc_loop *loop, uint64_t id);

/* lc_loop_now returns a monotonic clock in milliseconds (cached per loop iteration). */
int64_t lc_loop_now(struct lc_loop *loop);

/* lc_loop_run runs until lc_loop_stop; lc_loop_stop may be called from a callback or a signal handler. */
void lc_loop_run(struct lc_loop *loop);
void lc_loop_stop(struct lc_loop *loop);

/* lc_loop_signals makes SIGINT and SIGTERM stop the loop and ignores SIGPIPE. */
void lc_loop_signals(struct lc_loop *loop);

/* lc_flag_signals makes SIGINT and SIGTERM set *flag (for daemons without a loop, which check it between
 * blocking calls) and ignores SIGPIPE. */
#include <signal.h>
void lc_flag_signals(volatile sig_atomic_t *flag);

/* lc_loop_redis attaches an async hiredis context; returns 0 or -1 (already attached). */
int lc_loop_redis(struct lc_loop *loop, struct redisAsyncContext *ac);

#endif
