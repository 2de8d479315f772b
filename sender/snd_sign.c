/* snd_sign: the DKIM signing thread pool of the sender (sender.sign_threads workers; 0: no pool).
 *
 * Why: a list post is signed once per recipient (its List-Unsubscribe is personal, RFC 8058 wants it signed), and
 * one RSA-2048 signature costs about half a millisecond of CPU: more than everything else the sender does for a
 * copy. In the event-loop thread it would cap the sender at one core's signing rate and stall every connection
 * while it signs. Here the loop thread only hands out jobs and takes results back; the workers sign.
 * Flow (loop thread): when a batch whose post is signed per recipient starts, each of its recipients goes to the
 * backlog (SND_S_QUEUED, an intrusive FIFO in the recipients), so copies are signed ahead, while earlier copies
 * are on the wire. The backlog feeds the pool while fewer than SND_SIGN_INFLIGHT jobs are in it and fewer than
 * SND_SIGN_AHEAD signed header blocks wait in memory. A job is one recipient: the post (referenced) and the
 * recipient's List-Unsubscribe lines, made here; the worker makes the DKIM-Signature fields over a copy of the
 * post's common hash state (snd_dkim_sign_copy, thread-safe) and returns the copy's header block. A connection
 * that takes a recipient whose block is not ready (snd_sign_take) waits for it (its transaction is in state
 * "sign", nothing else is sent on it meanwhile, other connections go on); a recipient still in the backlog then
 * jumps ahead of the pool's other jobs, behind the urgent ones queued before it (so the wait is at most a few
 * jobs per waiting connection, first come first served). Results come back through an
 * eventfd watched by the loop (lc_loop); each names its batch (stream entry id) and index, and is used only if
 * that recipient still waits for this very job (a recipient that got its outcome, or a batch freed meanwhile,
 * drops it).
 * Ownership: a job belongs to the loop thread until it is queued, to the one worker that takes it until it is in
 * the done list, then to the loop thread again; the queue and the done list are under one mutex. Workers read the
 * post's signing state (message hash state and keys), which the post's reference keeps alive and unchanged.
 * A signing failure defers that recipient ("451 4.7.0 ..."): a copy is never sent unsigned.
 * Shutdown (snd_sign_free): workers finish the job in hand and exit; queued and finished jobs are dropped.
 * Limits: SND_SIGN_MAX_THREADS workers; the queue holds at most SND_SIGN_INFLIGHT jobs plus one per connection
 * waiting (urgent jobs); SND_SIGN_AHEAD signed blocks (about 1 KB each) are kept ahead of the connections.
 */
#include "snd.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "lc_log.h"
#include "lc_loop.h"

#define SND_SIGN_INFLIGHT 64  /* jobs handed to the pool ahead of need */
#define SND_SIGN_AHEAD 4096   /* signed header blocks waiting for their connection, at most */

struct snd_sign_job {
    /* loop thread, before the job is queued (the worker reads them) */
    struct snd_post *p;           /* referenced */
    uint64_t sub;
    int ul;
    char unsub[SND_HDR_LINES_MAX];
    /* the worker */
    char *out;                    /* the copy's header block (malloc) */
    int outlen;
    int failed;
    char err[600];
    /* loop thread only */
    char batch[48];
    int idx;
    struct snd_sign_job *next;
};

struct snd_sign {
    struct snd *snd;
    int nthreads;
    pthread_t th[SND_SIGN_MAX_THREADS];
    int efd;
    /* under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct snd_sign_job *todo, *todo_tail;
    struct snd_sign_job *urgent_tail; /* the last urgent job at the head of todo (NULL: none) */
    struct snd_sign_job *done, *done_tail;
    int stop;
    /* loop thread only */
    int inflight;                 /* jobs queued or being signed or done and not yet taken back */
    int held;                     /* recipients holding a signed block (SND_S_READY) */
    struct snd_rcpt *bl_head, *bl_tail; /* the backlog (SND_S_QUEUED) */
    unsigned long nsigned, nfailed, nurgent;
};

/* ---- workers ---- */

static void *worker(void *arg)
{
    struct snd_sign *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->stop && !s->todo)
            pthread_cond_wait(&s->cv, &s->mu);
        if (s->stop) {
            pthread_mutex_unlock(&s->mu);
            return NULL;
        }
        struct snd_sign_job *j = s->todo;
        s->todo = j->next;
        if (!s->todo)
            s->todo_tail = NULL;
        if (s->urgent_tail == j)
            s->urgent_tail = NULL;
        j->next = NULL;
        pthread_mutex_unlock(&s->mu);

        j->failed = snd_dkim_sign_copy(j->p, j->unsub, (size_t)j->ul, &j->out, &j->outlen, j->err, sizeof j->err) < 0;

        pthread_mutex_lock(&s->mu);
        int wake = s->done == NULL; /* the loop drains the whole list per wake-up */
        if (s->done_tail)
            s->done_tail->next = j;
        else
            s->done = j;
        s->done_tail = j;
        pthread_mutex_unlock(&s->mu);
        if (wake) {
            uint64_t one = 1;
            ssize_t w = write(s->efd, &one, sizeof one);
            (void)w; /* an eventfd write fails only when the counter would overflow: it is then non-zero anyway */
        }
    }
}

/* ---- loop thread ---- */

static void job_free(struct snd_sign_job *j)
{
    snd_post_unref(j->p);
    free(j->out);
    free(j);
}

/* submit queues r's job; urgent (a connection waits for it): after the urgent jobs already queued, before the
 * others, so urgent jobs are taken first and in the order they came. */
static void submit(struct snd_sign *s, struct snd_rcpt *r, int urgent)
{
    struct snd_batch *b = r->batch;
    struct snd_sign_job *j = lc_calloc(1, sizeof *j);
    j->p = b->p;
    snd_post_ref(j->p);
    j->sub = r->sub;
    j->ul = snd_dkim_unsub(s->snd, b->p, r->sub, j->unsub, sizeof j->unsub);
    snprintf(j->batch, sizeof j->batch, "%s", b->id);
    j->idx = (int)(r - b->rcpts);
    r->job = j;
    r->sign = SND_S_RUNNING;
    s->inflight++;
    if (urgent)
        s->nurgent++;
    pthread_mutex_lock(&s->mu);
    if (urgent && s->urgent_tail) {
        j->next = s->urgent_tail->next;
        s->urgent_tail->next = j;
    } else if (urgent || !s->todo) {
        j->next = s->todo;
        s->todo = j;
    } else {
        s->todo_tail->next = j;
    }
    if (!j->next)
        s->todo_tail = j;
    if (urgent)
        s->urgent_tail = j;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void backlog_remove(struct snd_sign *s, struct snd_rcpt *r)
{
    if (r->sprev)
        r->sprev->snext = r->snext;
    else
        s->bl_head = r->snext;
    if (r->snext)
        r->snext->sprev = r->sprev;
    else
        s->bl_tail = r->sprev;
    r->sprev = r->snext = NULL;
}

/* feed hands backlog recipients to the pool while it has room. */
static void feed(struct snd_sign *s)
{
    if (s->snd->stopping)
        return;
    while (s->bl_head && s->inflight < SND_SIGN_INFLIGHT && s->inflight + s->held < SND_SIGN_AHEAD) {
        struct snd_rcpt *r = s->bl_head;
        backlog_remove(s, r);
        submit(s, r, 0);
    }
}

/* deliver takes one finished job back: the recipient it was made for gets its block (if it still wants it). */
static void deliver(struct snd_sign *s, struct snd_sign_job *j)
{
    struct snd_batch *b = snd_batch_find(s->snd, j->batch);
    struct snd_rcpt *r = b && j->idx < b->nrcpts ? &b->rcpts[j->idx] : NULL;
    if (!r || r->job != j) {
        job_free(j);
        return;
    }
    r->job = NULL;
    if (j->failed) {
        s->nfailed++;
        r->sign = SND_S_FAILED;
        r->hdr = lc_strdup(j->err);
        r->hdrlen = 0;
        lc_warn("post=%llu rcpt=<%s> dkim signing failed: %s", (unsigned long long)b->post, r->addr, j->err);
    } else {
        s->nsigned++;
        s->held++;
        r->sign = SND_S_READY;
        r->hdr = j->out;
        r->hdrlen = j->outlen;
        j->out = NULL;
    }
    job_free(j);
    struct snd_conn *c = r->waiter;
    if (c) {
        r->waiter = NULL;
        snd_conn_signed(c, r);
    }
}

static void on_done(struct lc_loop *loop, int fd, int events, void *arg)
{
    struct snd_sign *s = arg;
    uint64_t v;
    ssize_t n = read(fd, &v, sizeof v);
    if (n < 0 && errno != EAGAIN && errno != EINTR)
        lc_panic("sign pool: eventfd read: %s", strerror(errno));
    pthread_mutex_lock(&s->mu);
    struct snd_sign_job *list = s->done;
    s->done = s->done_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    while (list) {
        struct snd_sign_job *j = list;
        list = j->next;
        j->next = NULL;
        s->inflight--;
        deliver(s, j);
    }
    feed(s);
}

struct snd_sign *snd_sign_new(struct snd *snd, int nthreads, char *err, size_t errlen)
{
    if (nthreads < 1)
        return NULL;
    if (nthreads > SND_SIGN_MAX_THREADS)
        nthreads = SND_SIGN_MAX_THREADS;
    struct snd_sign *s = lc_calloc(1, sizeof *s);
    s->snd = snd;
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    for (int i = 0; i < nthreads; i++) {
        int rc = pthread_create(&s->th[i], NULL, worker, s);
        if (rc != 0) {
            snprintf(err, errlen, "cannot start signing thread %d: %s", i + 1, strerror(rc));
            snd_sign_free(s);
            return NULL;
        }
        s->nthreads++;
    }
    if (lc_loop_watch(snd->loop, s->efd, LC_READ, on_done, s) < 0) {
        snprintf(err, errlen, "cannot watch the signing pool's eventfd");
        snd_sign_free(s);
        return NULL;
    }
    return s;
}

void snd_sign_free(struct snd_sign *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->nthreads; i++)
        pthread_join(s->th[i], NULL);
    for (int pass = 0; pass < 2; pass++) {
        struct snd_sign_job *j = pass ? s->done : s->todo;
        while (j) {
            struct snd_sign_job *nj = j->next;
            job_free(j);
            j = nj;
        }
    }
    if (s->nsigned || s->nfailed)
        lc_info("sign pool stopped: %lu copies signed, %lu failures, %lu urgent", s->nsigned, s->nfailed,
                s->nurgent);
    lc_loop_watch(s->snd->loop, s->efd, 0, NULL, NULL);
    close(s->efd);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int snd_sign_threads(const struct snd_sign *s)
{
    return s ? s->nthreads : 0;
}

void snd_sign_batch(struct snd_batch *b)
{
    struct snd_sign *s = b->snd->sign;
    if (!s || !snd_dkim_per_copy(b->p) || b->from)
        return;
    for (int i = 0; i < b->nrcpts; i++) {
        struct snd_rcpt *r = &b->rcpts[i];
        if (r->reply || r->outcome != SND_O_NONE || r->sign != SND_S_NONE)
            continue;
        r->sign = SND_S_QUEUED;
        r->snext = NULL;
        r->sprev = s->bl_tail;
        if (s->bl_tail)
            s->bl_tail->snext = r;
        else
            s->bl_head = r;
        s->bl_tail = r;
    }
    feed(s);
}

int snd_sign_take(struct snd_rcpt *r, struct snd_conn *c, char *out, size_t outlen, char *err, size_t errlen)
{
    struct snd_sign *s = r->batch->snd->sign;
    switch (r->sign) {
    case SND_S_READY:
        if ((size_t)r->hdrlen >= outlen) {
            snprintf(err, errlen, "DKIM-Signature fields too long (%d octets)", r->hdrlen);
            return -1;
        }
        memcpy(out, r->hdr, (size_t)r->hdrlen);
        return r->hdrlen;
    case SND_S_FAILED:
        snprintf(err, errlen, "DKIM signing failed: %s", r->hdr ? r->hdr : "?");
        return -1;
    case SND_S_QUEUED:
        backlog_remove(s, r);
        submit(s, r, 1);
        r->waiter = c;
        return -2;
    case SND_S_RUNNING:
        r->waiter = c;
        return -2;
    default:
        snprintf(err, errlen, "no signing state");
        return -1;
    }
}

void snd_sign_unwait(struct snd_rcpt *r)
{
    r->waiter = NULL;
}

void snd_sign_forget(struct snd_rcpt *r)
{
    struct snd_sign *s = r->batch->snd->sign;
    if (r->sign == SND_S_NONE || !s)
        return;
    if (r->sign == SND_S_QUEUED)
        backlog_remove(s, r);
    if (r->sign == SND_S_READY)
        s->held--;
    r->job = NULL; /* a job in the pool is dropped when it comes back */
    r->waiter = NULL;
    free(r->hdr);
    r->hdr = NULL;
    r->hdrlen = 0;
    r->sign = SND_S_NONE;
    feed(s);
}
