/* lc_loop: epoll event loop with one-shot timers and a hiredis adapter. See lc_loop.h.
 *
 * Level-triggered epoll. The fd table is indexed by fd. Timers are a binary min-heap of (when, id); cancel is a
 * linear search (timer counts are in the thousands at most). Stop is signal-safe: a flag plus a byte written to
 * a self-pipe that the loop watches.
 */
#include "lc_loop.h"
#include "lc_log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/async.h>

struct watcher {
    lc_fd_fn *fn;
    void *arg;
    int mask;
};

struct timer {
    int64_t when;
    uint64_t id;
    lc_timer_fn *fn;
    void *arg;
};

struct lc_loop {
    int epfd;
    int wake[2];
    volatile sig_atomic_t stop;
    struct watcher *w;
    int nw;
    struct timer *heap;
    size_t nheap, capheap;
    uint64_t next_id;
    int64_t now;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wake_read(struct lc_loop *loop, int fd, int events, void *arg)
{
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0)
        ;
}

struct lc_loop *lc_loop_new(void)
{
    struct lc_loop *loop = lc_calloc(1, sizeof *loop);
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0)
        lc_fatal("epoll_create1: %s", strerror(errno));
    if (pipe2(loop->wake, O_NONBLOCK | O_CLOEXEC) < 0)
        lc_fatal("pipe2: %s", strerror(errno));
    loop->now = mono_ms();
    lc_loop_watch(loop, loop->wake[0], LC_READ, wake_read, NULL);
    return loop;
}

void lc_loop_free(struct lc_loop *loop)
{
    if (!loop)
        return;
    close(loop->epfd);
    close(loop->wake[0]);
    close(loop->wake[1]);
    free(loop->w);
    free(loop->heap);
    free(loop);
}

int lc_loop_watch(struct lc_loop *loop, int fd, int mask, lc_fd_fn *fn, void *arg)
{
    if (fd < 0)
        return -1;
    if (fd >= loop->nw) {
        int n = loop->nw ? loop->nw : 64;
        while (n <= fd)
            n *= 2;
        loop->w = lc_realloc(loop->w, (size_t)n * sizeof *loop->w);
        memset(loop->w + loop->nw, 0, (size_t)(n - loop->nw) * sizeof *loop->w);
        loop->nw = n;
    }
    struct watcher *w = &loop->w[fd];
    struct epoll_event ev = {0};
    ev.data.fd = fd;
    ev.events = (mask & LC_READ ? EPOLLIN : 0) | (mask & LC_WRITE ? EPOLLOUT : 0);
    int op = w->mask ? (mask ? EPOLL_CTL_MOD : EPOLL_CTL_DEL) : (mask ? EPOLL_CTL_ADD : -1);
    if (op >= 0 && epoll_ctl(loop->epfd, op, fd, &ev) < 0) {
        /* A closed fd leaves epoll by itself; its number may come back: fix the op and try once more. */
        if (op == EPOLL_CTL_MOD && errno == ENOENT)
            op = EPOLL_CTL_ADD;
        else if (op == EPOLL_CTL_ADD && errno == EEXIST)
            op = EPOLL_CTL_MOD;
        else if (op == EPOLL_CTL_DEL)
            op = -1;
        else
            return -1;
        if (op >= 0 && epoll_ctl(loop->epfd, op, fd, &ev) < 0)
            return -1;
    }
    w->mask = mask;
    w->fn = mask ? fn : NULL;
    w->arg = mask ? arg : NULL;
    return 0;
}

static void heap_swap(struct timer *h, size_t a, size_t b)
{
    struct timer t = h[a];
    h[a] = h[b];
    h[b] = t;
}

static int before(const struct timer *a, const struct timer *b)
{
    return a->when < b->when || (a->when == b->when && a->id < b->id);
}

static void heap_up(struct timer *h, size_t i)
{
    while (i > 0 && before(&h[i], &h[(i - 1) / 2])) {
        heap_swap(h, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(struct timer *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && before(&h[l], &h[m]))
            m = l;
        if (r < n && before(&h[r], &h[m]))
            m = r;
        if (m == i)
            return;
        heap_swap(h, i, m);
        i = m;
    }
}

uint64_t lc_loop_timer(struct lc_loop *loop, long ms, lc_timer_fn *fn, void *arg)
{
    if (loop->nheap == loop->capheap) {
        loop->capheap = loop->capheap ? loop->capheap * 2 : 64;
        loop->heap = lc_realloc(loop->heap, loop->capheap * sizeof *loop->heap);
    }
    struct timer *t = &loop->heap[loop->nheap];
    t->when = mono_ms() + (ms < 0 ? 0 : ms);
    t->id = ++loop->next_id;
    t->fn = fn;
    t->arg = arg;
    uint64_t id = t->id; /* read before heap_up moves the slot */
    heap_up(loop->heap, loop->nheap++);
    return id;
}

void lc_loop_cancel(struct lc_loop *loop, uint64_t id)
{
    for (size_t i = 0; i < loop->nheap; i++) {
        if (loop->heap[i].id != id)
            continue;
        loop->heap[i] = loop->heap[--loop->nheap];
        if (i < loop->nheap) {
            heap_up(loop->heap, i);
            heap_down(loop->heap, loop->nheap, i);
        }
        return;
    }
}

int64_t lc_loop_now(struct lc_loop *loop)
{
    return loop->now;
}

static void run_timers(struct lc_loop *loop)
{
    /* Run only timers due now; timers added by callbacks wait for the next iteration. */
    int64_t now = loop->now;
    size_t budget = loop->nheap;
    while (budget-- && loop->nheap && loop->heap[0].when <= now && !loop->stop) {
        struct timer t = loop->heap[0];
        loop->heap[0] = loop->heap[--loop->nheap];
        heap_down(loop->heap, loop->nheap, 0);
        t.fn(loop, t.arg);
    }
}

void lc_loop_run(struct lc_loop *loop)
{
    struct epoll_event evs[256];
    loop->stop = 0;
    while (!loop->stop) {
        int timeout = -1;
        loop->now = mono_ms();
        if (loop->nheap) {
            int64_t d = loop->heap[0].when - loop->now;
            timeout = d < 0 ? 0 : (d > 60000 ? 60000 : (int)d);
        }
        int n = epoll_wait(loop->epfd, evs, 256, timeout);
        if (n < 0 && errno != EINTR)
            lc_fatal("epoll_wait: %s", strerror(errno));
        loop->now = mono_ms();
        for (int i = 0; i < n && !loop->stop; i++) {
            int fd = evs[i].data.fd;
            if (fd >= loop->nw)
                continue;
            struct watcher *w = &loop->w[fd];
            int events = 0;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                events |= LC_READ;
            if (evs[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
                events |= LC_WRITE;
            events &= w->mask;
            if (events && w->fn)
                w->fn(loop, fd, events, w->arg);
        }
        run_timers(loop);
    }
}

void lc_loop_stop(struct lc_loop *loop)
{
    loop->stop = 1;
    char c = 1;
    ssize_t r = write(loop->wake[1], &c, 1);
    (void)r;
}

static struct lc_loop *sig_loop;

static void on_signal(int sig)
{
    (void)sig;
    if (sig_loop)
        lc_loop_stop(sig_loop);
}

void lc_loop_signals(struct lc_loop *loop)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sig_loop = loop;
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

static volatile sig_atomic_t *sig_flag;

static void on_flag_signal(int sig)
{
    (void)sig;
    if (sig_flag)
        *sig_flag = 1;
}

void lc_flag_signals(volatile sig_atomic_t *flag)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sig_flag = flag;
    sa.sa_handler = on_flag_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

/* hiredis adapter */

struct redis_ev {
    struct lc_loop *loop;
    redisAsyncContext *ac;
    int fd;
    int mask;
};

static void redis_io(struct lc_loop *loop, int fd, int events, void *arg)
{
    struct redis_ev *e = arg;
    /* One direction per call: handling a read may free the context (and e). Level-triggered epoll brings the
     * other direction back on the next iteration. */
    if (events & LC_READ)
        redisAsyncHandleRead(e->ac);
    else if (events & LC_WRITE)
        redisAsyncHandleWrite(e->ac);
}

static void redis_update(struct redis_ev *e, int add, int bit)
{
    int mask = add ? (e->mask | bit) : (e->mask & ~bit);
    if (mask == e->mask)
        return;
    e->mask = mask;
    lc_loop_watch(e->loop, e->fd, mask, redis_io, e);
}

static void redis_add_read(void *p) { redis_update(p, 1, LC_READ); }
static void redis_del_read(void *p) { redis_update(p, 0, LC_READ); }
static void redis_add_write(void *p) { redis_update(p, 1, LC_WRITE); }
static void redis_del_write(void *p) { redis_update(p, 0, LC_WRITE); }

static void redis_cleanup(void *p)
{
    struct redis_ev *e = p;
    lc_loop_watch(e->loop, e->fd, 0, NULL, NULL);
    free(e);
}

int lc_loop_redis(struct lc_loop *loop, redisAsyncContext *ac)
{
    if (ac->ev.data)
        return -1;
    struct redis_ev *e = lc_calloc(1, sizeof *e);
    e->loop = loop;
    e->ac = ac;
    e->fd = ac->c.fd;
    ac->ev.addRead = redis_add_read;
    ac->ev.delRead = redis_del_read;
    ac->ev.addWrite = redis_add_write;
    ac->ev.delWrite = redis_del_write;
    ac->ev.cleanup = redis_cleanup;
    ac->ev.data = e;
    /* A non-blocking connect completes when the socket turns writable; hiredis handles that in its write
     * handler and removes the write interest when it has nothing to send. */
    redis_update(e, 1, LC_WRITE);
    return 0;
}
