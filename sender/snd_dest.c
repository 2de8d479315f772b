/* snd_dest: delivery destinations (one IP:port each): recipient queues and connection scheduling.
 *
 * Contract: recipients are queued at the destination of their current target; the destination's connections
 * pull them one at a time (one SMTP transaction each). Connections are opened as the queue justifies them: one
 * per SND_RCPTS_PER_CONN queued recipients, at most sender.per_mx per destination (lowered to the number that
 * work when a further connection fails to open) and sender.concurrency in all. When the global limit is
 * reached, an idle connection of a destination with nothing queued is closed (QUIT) to make room, and the
 * destination waits for a free slot; a connection that runs out of work while a destination waits gives up its
 * slot at once. A destination whose connection fails before the greeting is done while
 * no other connection to it works is marked down for sender.mx_backoff: its queue moves to each recipient's next MX
 * and new recipients skip it.
 * Limits: a hash table of SND_DEST_BUCKETS chains; destinations are freed by snd_dest_gc once unused.
 */
#include "snd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "lc_log.h"
#include "lc_loop.h"
#include "lc_net.h"

#define SND_DEST_BUCKETS 1024

struct snd_dest {
    struct snd *snd;
    char key[80];                /* "ip:port" */
    struct sockaddr_storage ss;
    socklen_t sl;
    struct snd_rcpt *qhead, *qtail;
    int nqueued;
    struct snd_conn **conns;     /* every open connection, closing ones included */
    int nconns, capconns;
    int limit;                   /* connection cap: sender.per_mx, lowered after a failed open */
    int64_t down_until;          /* loop ms; skipped until then */
    int waiting;                 /* wants a connection slot that the global limit denies */
    char name[256];              /* the MX name of the latest target queued here (SNI, logs) */
    struct snd_dest *hnext;
};

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % SND_DEST_BUCKETS;
}

const char *snd_dest_label(const struct snd_dest *d)
{
    return d->key;
}

static struct snd_dest *dest_get(struct snd *snd, const char *key)
{
    if (!snd->dests)
        snd->dests = lc_calloc(SND_DEST_BUCKETS, sizeof *snd->dests);
    unsigned h = hash(key);
    for (struct snd_dest *d = snd->dests[h]; d; d = d->hnext)
        if (!strcmp(d->key, key))
            return d;
    struct snd_dest *d = lc_calloc(1, sizeof *d);
    if (lc_net_parse(key, &d->ss, &d->sl) < 0)
        lc_panic("destination key %s does not parse", key);
    d->snd = snd;
    snprintf(d->key, sizeof d->key, "%s", key);
    d->limit = snd->per_mx;
    d->hnext = snd->dests[h];
    snd->dests[h] = d;
    snd->ndests++;
    return d;
}

static int is_down(const struct snd_dest *d)
{
    return d->down_until && d->down_until > lc_loop_now(d->snd->loop);
}

/* evict_idle closes one idle connection of a destination with an empty queue; 1 if a slot will free up. */
static int evict_idle(struct snd *snd)
{
    struct snd_conn *victim = NULL;
    for (int h = 0; h < SND_DEST_BUCKETS; h++)
        for (struct snd_dest *d = snd->dests[h]; d; d = d->hnext)
            for (int i = 0; i < d->nconns; i++) {
                if (snd_conn_closing(d->conns[i]))
                    return 1; /* a slot is already on its way */
                if (!victim && d->nqueued == 0 && snd_conn_idle(d->conns[i]))
                    victim = d->conns[i];
            }
    if (!victim)
        return 0;
    snd_conn_quit(victim);
    return 1;
}

/* sched hands queued recipients to idle connections and opens the connections the queue justifies. */
static void sched(struct snd_dest *d)
{
    struct snd *snd = d->snd;
    if (is_down(d))
        return;
    for (int i = 0; i < d->nconns && d->nqueued; i++)
        if (snd_conn_idle(d->conns[i]))
            snd_conn_kick(d->conns[i]);
    int open = 0;
    for (int i = 0; i < d->nconns; i++)
        open += !snd_conn_closing(d->conns[i]);
    int want = (d->nqueued + SND_RCPTS_PER_CONN - 1) / SND_RCPTS_PER_CONN;
    if (want > d->limit)
        want = d->limit;
    d->waiting = 0;
    while (d->nqueued && open < want) {
        if (snd->nconns >= snd->concurrency) {
            d->waiting = 1;
            evict_idle(snd);
            break;
        }
        if (d->nconns == d->capconns) {
            d->capconns = d->capconns ? 2 * d->capconns : 4;
            d->conns = lc_realloc(d->conns, (size_t)d->capconns * sizeof *d->conns);
        }
        d->conns[d->nconns++] = snd_conn_new(snd, d, &d->ss, (unsigned)d->sl, d->name);
        snd->nconns++;
        open++;
    }
}

int snd_dest_enqueue(struct snd *snd, const struct snd_target *t, struct snd_rcpt *r)
{
    struct snd_dest *d = dest_get(snd, t->key);
    if (is_down(d))
        return -1;
    if (strcmp(d->name, t->name))
        snprintf(d->name, sizeof d->name, "%s", t->name);
    r->next = NULL;
    if (d->qtail)
        d->qtail->next = r;
    else
        d->qhead = r;
    d->qtail = r;
    d->nqueued++;
    sched(d);
    return 0;
}

struct snd_rcpt *snd_dest_peek(struct snd_dest *d)
{
    return d->qhead;
}

struct snd_rcpt *snd_dest_pull(struct snd_dest *d)
{
    struct snd_rcpt *r = d->qhead;
    if (!r)
        return NULL;
    d->qhead = r->next;
    if (!d->qhead)
        d->qtail = NULL;
    r->next = NULL;
    d->nqueued--;
    return r;
}

void snd_dest_ready(struct snd_dest *d, struct snd_conn *c)
{
    if (d->down_until) {
        lc_info("host=%s up again", d->key);
        d->down_until = 0;
    }
}

void snd_dest_gone(struct snd_dest *d, struct snd_conn *c, int setup_failed, const char *why)
{
    struct snd *snd = d->snd;
    int i;
    for (i = 0; i < d->nconns && d->conns[i] != c; i++)
        ;
    if (i == d->nconns)
        lc_panic("host=%s: closing a connection it does not have", d->key);
    d->conns[i] = d->conns[--d->nconns];
    snd->nconns--;
    if (setup_failed) {
        int live = 0;
        for (i = 0; i < d->nconns; i++)
            live += snd_conn_live(d->conns[i]);
        if (live == 0) {
            d->down_until = lc_loop_now(snd->loop) + snd->mx_backoff_ms;
            lc_warn("host=%s down for %d s: %s (%d queued recipients move to their next MX)", d->key,
                    snd->mx_backoff_ms / 1000, why, d->nqueued);
            struct snd_rcpt *r;
            while ((r = snd_dest_pull(d)))
                snd_rcpt_failover(r, why);
        } else {
            d->limit = live;
            lc_info("host=%s connection limit now %d: %s", d->key, live, why);
        }
    }
    sched(d);
    snd_dest_sched_all(snd);
}

void snd_dest_idle(struct snd_dest *d, struct snd_conn *c)
{
    struct snd *snd = d->snd;
    if (snd->nconns < snd->concurrency || d->nqueued)
        return;
    for (int h = 0; h < SND_DEST_BUCKETS; h++)
        for (struct snd_dest *e = snd->dests[h]; e; e = e->hnext)
            if (e->waiting && e->nqueued) {
                snd_conn_quit(c);
                return;
            }
}

void snd_dest_sched_all(struct snd *snd)
{
    if (!snd->dests || snd->nconns >= snd->concurrency)
        return;
    for (int h = 0; h < SND_DEST_BUCKETS && snd->nconns < snd->concurrency; h++)
        for (struct snd_dest *d = snd->dests[h]; d; d = d->hnext)
            if (d->waiting && d->nqueued)
                sched(d);
}

static void dest_free(struct snd_dest *d)
{
    for (int i = 0; i < d->nconns; i++)
        snd_conn_free(d->conns[i]);
    d->snd->nconns -= d->nconns;
    d->snd->ndests--;
    free(d->conns);
    free(d);
}

void snd_dest_gc(struct snd *snd)
{
    if (!snd->dests)
        return;
    for (int h = 0; h < SND_DEST_BUCKETS; h++) {
        struct snd_dest **pp = &snd->dests[h];
        while (*pp) {
            struct snd_dest *d = *pp;
            if (d->nconns == 0 && d->nqueued == 0 && !is_down(d)) {
                *pp = d->hnext;
                dest_free(d);
            } else {
                pp = &d->hnext;
            }
        }
    }
}

void snd_dest_free_all(struct snd *snd)
{
    if (!snd->dests)
        return;
    for (int h = 0; h < SND_DEST_BUCKETS; h++)
        while (snd->dests[h]) {
            struct snd_dest *d = snd->dests[h];
            snd->dests[h] = d->hnext;
            dest_free(d);
        }
    free(snd->dests);
    snd->dests = NULL;
}
