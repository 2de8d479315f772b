/* snd_queue: the sender's two Redis connections, the stream reader and every Redis write.
 *
 * Reader connection: creates the group (XGROUP CREATE ... 0 MKSTREAM; BUSYGROUP is fine), then loops
 * XREADGROUP GROUP sender NODE COUNT n BLOCK 1000 STREAMS lc:stream:deliveries ID, with ID "0" first (this
 * consumer's own pending entries, left by a previous run: paged from the last id seen until a read returns
 * none) and ">" after. n is at most 16 and never more than the free batch slots (sender.concurrency*2 batches
 * in memory); with no free slot it stops reading until a batch is committed. An entry already in memory (a
 * re-read after a reconnect) is skipped.
 * Write connection: post loads (GET lc:msg:ID, HMGET lc:post:ID list created kind, then for list posts HGET
 * lc:list:LIST list_unsubscribe), batch commits, and every
 * claim_ms/2 (sender.claim_idle) a heartbeat (XCLAIM ... 0 ID... JUSTID on the batches in memory, so that live work never
 * looks idle to a peer) then XAUTOCLAIM of entries idle over claim_ms (crashed peers).
 * Commit, one MULTI/EXEC per batch: HINCRBY lc:post:ID delivered/deferred/bounced, HINCRBY lc:postdom:ID
 * DOMAIN:outcome, XADD lc:stream:bounces * rcpt VERP from "" post ID sub SUBID reply TEXT for each bounce,
 * ZADD lc:retry of the deferred recipients (snd_retry.c), HSET lc:postdefer:ID ADDR "TIME attempt N: REPLY" of
 * each deferred recipient (+ EXPIRE max_lifetime + 1 day) and HDEL of each retried one that ended delivered or
 * bounced, XACK, and a small Lua script that sets state=done
 * once delivered+bounced reaches recipients. `deferred` counts recipients waiting for a retry: a first attempt
 * deferred adds one, a retried recipient that ends delivered or bounced takes one off, a retry deferred again
 * changes nothing (the same for DOMAIN:deferred).
 * Every SND_RETRY_POLL_MS the write connection runs the due-retry poller (SND_LUA_RETRY_POLL: due recipients
 * back to lc:stream:deliveries, or, those without a route, to lc:stream:posts for the expander), and every
 * SND_TLSPOL_MS it reloads the STARTTLS policy table (HGETALL lc:tlspolicy); the reader starts only after the
 * first load, so no batch is sent under a policy not yet known.
 * Failures: either connection reconnects on its own with backoff (SND_REDIS_BACKOFF_MIN doubling to _MAX);
 * loads and commits cut off by a disconnect are re-sent once the write connection is back (a commit whose
 * EXEC ran but whose answer was lost is then counted twice: at-least-once). An error answer to a commit is
 * retried after SND_COMMIT_RETRY_MS.
 */
#include "snd.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lc_buf.h"
#include "lc_log.h"
#include "lc_loop.h"
#include "lc_redis.h"
#include "lc_schema.h"
#include "lc_verp.h"

struct snd_queue {
    struct snd *snd;
    char *url;
    redisAsyncContext *rd, *wr;
    int rd_up, wr_up;
    int rd_backoff, wr_backoff;
    uint64_t rd_timer, wr_timer, read_retry, tick;
    char next_id[48];     /* "0"-scan position, or ">" */
    int reading;
    int claiming;
    char claim_cursor[48];
    int64_t next_claim, next_gc, next_poll, next_tlspol;
    int polling, tlspol_loaded, tlspol_loading;
    struct lc_buf *member;  /* scratch for retry members */
};

static const char done_script[] = LC_LUA_POST_DONE;

static void tlspol_load(struct snd_queue *q);

static void rd_connect(struct snd_queue *q);
static void wr_connect(struct snd_queue *q);
static void read_more(struct snd_queue *q);
static void claim(struct snd_queue *q);

/* cmd sends a command whose arguments are NUL-terminated strings (argc of them, after fn and privdata).
 * Returns 0, or -1 if hiredis refused it (the connection is going away: fn will not be called). */
static int cmd(redisAsyncContext *ac, redisCallbackFn *fn, void *pd, int argc, ...)
{
    const char *argv[16];
    size_t lens[16];
    va_list ap;
    if (argc > 16)
        lc_panic("redis command with %d arguments", argc);
    va_start(ap, argc);
    for (int i = 0; i < argc; i++) {
        argv[i] = va_arg(ap, const char *);
        lens[i] = strlen(argv[i]);
    }
    va_end(ap);
    if (redisAsyncCommandArgv(ac, fn, pd, argc, argv, lens) != REDIS_OK) {
        lc_debug("redis: command %s not sent (disconnecting)", argv[0]);
        return -1;
    }
    return 0;
}

/* ---- connections ---- */

static void rd_retry(struct lc_loop *loop, void *arg)
{
    struct snd_queue *q = arg;
    q->rd_timer = 0;
    rd_connect(q);
}

static void wr_retry(struct lc_loop *loop, void *arg)
{
    struct snd_queue *q = arg;
    q->wr_timer = 0;
    wr_connect(q);
}

static void backoff(struct snd_queue *q, int *ms, uint64_t *timer, lc_timer_fn *fn)
{
    if (q->snd->stopping || *timer)
        return;
    *timer = lc_loop_timer(q->snd->loop, *ms, fn, q);
    *ms = *ms * 2 > SND_REDIS_BACKOFF_MAX ? SND_REDIS_BACKOFF_MAX : *ms * 2;
}

static void on_group(redisAsyncContext *ac, void *r, void *pd)
{
    redisReply *reply = r;
    if (reply && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "BUSYGROUP", 9) != 0)
        lc_warn("redis: XGROUP CREATE %s %s: %s", LC_S_DELIVERIES, LC_G_DELIVERIES, reply->str);
}

static void rd_on_connect(const redisAsyncContext *ac, int status)
{
    struct snd_queue *q = ac->data;
    if (q->snd->stopping)
        return;
    if (status != REDIS_OK) {
        lc_warn("redis reader: cannot connect to %s: %s (retry in %d ms)", q->url, ac->errstr, q->rd_backoff);
        q->rd = NULL;
        backoff(q, &q->rd_backoff, &q->rd_timer, rd_retry);
        return;
    }
    lc_info("redis reader: connected to %s", q->url);
    q->rd_up = 1;
    q->rd_backoff = SND_REDIS_BACKOFF_MIN;
    cmd(q->rd, on_group, q, 6, "XGROUP", "CREATE", LC_S_DELIVERIES, LC_G_DELIVERIES, "0", "MKSTREAM");
    snprintf(q->next_id, sizeof q->next_id, "0");
    q->reading = 0;
    read_more(q);
}

static void rd_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct snd_queue *q = ac->data;
    q->rd = NULL;
    q->rd_up = 0;
    q->reading = 0;
    if (q->snd->stopping)
        return;
    lc_warn("redis reader: disconnected: %s (retry in %d ms)", ac->errstr[0] ? ac->errstr : "closed",
            q->rd_backoff);
    backoff(q, &q->rd_backoff, &q->rd_timer, rd_retry);
}

static void rd_connect(struct snd_queue *q)
{
    char err[300];
    redisAsyncContext *ac = lc_redis_connect_async(q->url, err, sizeof err);
    if (!ac) {
        lc_warn("redis reader: %s (retry in %d ms)", err, q->rd_backoff);
        backoff(q, &q->rd_backoff, &q->rd_timer, rd_retry);
        return;
    }
    ac->data = q;
    redisAsyncSetConnectCallback(ac, rd_on_connect);
    redisAsyncSetDisconnectCallback(ac, rd_on_disconnect);
    lc_loop_redis(q->snd->loop, ac);
    q->rd = ac;
}

static void resume_writes(struct snd_queue *q)
{
    struct snd *snd = q->snd;
    for (struct snd_post *p = snd->posts; p; p = p->next)
        if (p->state == SND_P_NEW && p->waiters)
            snd_queue_load(snd, p);
    for (struct snd_batch *b = snd->batches; b; b = b->next)
        if (b->state == SND_B_COMMIT_WAIT)
            snd_queue_commit(b);
}

static void wr_on_connect(const redisAsyncContext *ac, int status)
{
    struct snd_queue *q = ac->data;
    if (q->snd->stopping)
        return;
    if (status != REDIS_OK) {
        lc_warn("redis writer: cannot connect to %s: %s (retry in %d ms)", q->url, ac->errstr, q->wr_backoff);
        q->wr = NULL;
        backoff(q, &q->wr_backoff, &q->wr_timer, wr_retry);
        return;
    }
    lc_info("redis writer: connected to %s", q->url);
    q->wr_up = 1;
    q->wr_backoff = SND_REDIS_BACKOFF_MIN;
    q->claiming = 0;
    q->polling = 0;
    q->tlspol_loading = 0;
    tlspol_load(q);
    resume_writes(q);
    q->next_claim = lc_loop_now(q->snd->loop); /* look for orphaned entries at once */
}

static void wr_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct snd_queue *q = ac->data;
    q->wr = NULL;
    q->wr_up = 0;
    q->claiming = 0;
    q->polling = 0;
    q->tlspol_loading = 0;
    if (q->snd->stopping)
        return;
    lc_warn("redis writer: disconnected: %s (retry in %d ms)", ac->errstr[0] ? ac->errstr : "closed",
            q->wr_backoff);
    backoff(q, &q->wr_backoff, &q->wr_timer, wr_retry);
}

static void wr_connect(struct snd_queue *q)
{
    char err[300];
    redisAsyncContext *ac = lc_redis_connect_async(q->url, err, sizeof err);
    if (!ac) {
        lc_warn("redis writer: %s (retry in %d ms)", err, q->wr_backoff);
        backoff(q, &q->wr_backoff, &q->wr_timer, wr_retry);
        return;
    }
    ac->data = q;
    redisAsyncSetConnectCallback(ac, wr_on_connect);
    redisAsyncSetDisconnectCallback(ac, wr_on_disconnect);
    lc_loop_redis(q->snd->loop, ac);
    q->wr = ac;
}

/* ---- reading ---- */

/* add_entries starts a batch for each [id, fields] element of an entry array; returns the count and copies the
 * last id to last (if not NULL). */
static int add_entries(struct snd_queue *q, const redisReply *entries, char *last, size_t lastlen)
{
    int n = 0;
    if (!entries || entries->type != REDIS_REPLY_ARRAY)
        return 0;
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 || e->element[0]->type != REDIS_REPLY_STRING ||
            e->element[0]->len >= 48)
            continue;
        const char *id = e->element[0]->str;
        if (last)
            snprintf(last, lastlen, "%s", id);
        snd_batch_add(q->snd, id, e->element[1]);
        n++;
    }
    return n;
}

static void read_retry(struct lc_loop *loop, void *arg)
{
    struct snd_queue *q = arg;
    q->read_retry = 0;
    read_more(q);
}

static void on_read(redisAsyncContext *ac, void *r, void *pd)
{
    struct snd_queue *q = pd;
    redisReply *reply = r;
    q->reading = 0;
    if (q->snd->stopping || !reply)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        lc_warn("redis: XREADGROUP %s: %s (retry in 1 s)", LC_S_DELIVERIES, reply->str);
        if (!strncmp(reply->str, "NOGROUP", 7) && q->rd)
            cmd(q->rd, on_group, q, 6, "XGROUP", "CREATE", LC_S_DELIVERIES, LC_G_DELIVERIES, "0", "MKSTREAM");
        if (!q->read_retry)
            q->read_retry = lc_loop_timer(q->snd->loop, 1000, read_retry, q);
        return;
    }
    int n = 0, before = q->snd->nbatches;
    char last[48] = "";
    if (reply->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < reply->elements; i++) {
            const redisReply *s = reply->element[i];
            if (s->type == REDIS_REPLY_ARRAY && s->elements == 2)
                n += add_entries(q, s->element[1], last, sizeof last);
        }
    if (strcmp(q->next_id, ">") != 0) {
        if (n == 0) {
            lc_info("pending entries of consumer %s re-read; now reading new entries", q->snd->node);
            snprintf(q->next_id, sizeof q->next_id, ">");
        } else {
            lc_info("re-read %d pending entries of consumer %s (%d not already in memory)", n, q->snd->node,
                    q->snd->nbatches - before);
            snprintf(q->next_id, sizeof q->next_id, "%s", last);
        }
    }
    read_more(q);
}

static void read_more(struct snd_queue *q)
{
    struct snd *snd = q->snd;
    if (!q->rd_up || q->reading || snd->stopping || q->read_retry || !q->tlspol_loaded)
        return;
    int room = snd->max_batches - snd->nbatches;
    if (room <= 0)
        return;
    char count[16];
    snprintf(count, sizeof count, "%d", room < SND_READ_COUNT ? room : SND_READ_COUNT);
    char block[16];
    snprintf(block, sizeof block, "%d", SND_READ_BLOCK_MS);
    q->reading = cmd(q->rd, on_read, q, 11, "XREADGROUP", "GROUP", LC_G_DELIVERIES, snd->node, "COUNT", count,
                     "BLOCK", block, "STREAMS", LC_S_DELIVERIES, q->next_id) == 0;
}

void snd_queue_more(struct snd *snd)
{
    if (snd->q)
        read_more(snd->q);
}

/* ---- post loads ---- */

static void on_msg(redisAsyncContext *ac, void *r, void *pd)
{
    struct snd_post *p = pd;
    redisReply *reply = r;
    if (p->snd->stopping || p->state != SND_P_LOADING)
        return;
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        if (reply)
            lc_warn("post=%llu: GET message: %s", (unsigned long long)p->id, reply->str);
        p->state = SND_P_NEW; /* loaded again when the write connection is back, or on the next tick */
    } else if (reply->type == REDIS_REPLY_STRING) {
        snd_post_set_body(p, reply->str, reply->len);
    } else {
        p->state = SND_P_MISSING;
    }
}

static void on_listset(redisAsyncContext *ac, void *r, void *pd);
static void post_loaded(struct snd_post *p);

static void on_list(redisAsyncContext *ac, void *r, void *pd)
{
    struct snd_post *p = pd;
    redisReply *reply = r;
    const redisReply *list = NULL;
    if (p->snd->stopping || p->state == SND_P_NEW) {
        snd_post_unref(p);
        return;
    }
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        if (reply)
            lc_warn("post=%llu: HMGET list: %s", (unsigned long long)p->id, reply->str);
        p->state = SND_P_NEW;
        snd_post_unref(p);
        return;
    }
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3) {
        list = reply->element[0];
        if (reply->element[1]->type == REDIS_REPLY_STRING)
            p->created = strtoll(reply->element[1]->str, NULL, 10);
        p->notice = reply->element[2]->type == REDIS_REPLY_STRING && !strcmp(reply->element[2]->str, "notice");
    }
    if (p->state == SND_P_LOADING) {
        if (list && list->type == REDIS_REPLY_STRING && snd_post_set_list(p, list->str, list->len) == 0) {
            char lk[LC_KEY_MAX];
            if (!p->notice && lc_key_list(lk, sizeof lk, list->str) >= 0) { /* a list post: its setting first */
                if (cmd(ac, on_listset, p, 3, "HGET", lk, "list_unsubscribe") == 0)
                    return; /* on_listset goes on, with the reference */
                p->state = SND_P_NEW; /* the connection is going away; loaded again once it is back */
                snd_post_unref(p);
                return;
            }
            p->state = SND_P_READY;
        } else {
            p->state = SND_P_MISSING;
        }
    }
    post_loaded(p);
}

/* on_listset takes a list post's list_unsubscribe setting (lc:list:LIST): personal (absent) or mailto. */
static void on_listset(redisAsyncContext *ac, void *r, void *pd)
{
    struct snd_post *p = pd;
    redisReply *reply = r;
    if (p->snd->stopping || p->state != SND_P_LOADING) {
        snd_post_unref(p);
        return;
    }
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        if (reply)
            lc_warn("post=%llu: HGET list_unsubscribe: %s", (unsigned long long)p->id, reply->str);
        p->state = SND_P_NEW;
        snd_post_unref(p);
        return;
    }
    p->unsub = reply->type == REDIS_REPLY_STRING && !strcmp(reply->str, "mailto") ? SND_UNSUB_MAILTO
                                                                                 : SND_UNSUB_PERSONAL;
    p->state = SND_P_READY;
    post_loaded(p);
}

/* post_loaded ends a load (READY or MISSING): log, signing state, the batches that waited for the post start;
 * drops the load's reference. */
static void post_loaded(struct snd_post *p)
{
    if (p->state == SND_P_READY) {
        lc_info("post=%llu loaded size=%zu domain=%s%s%s", (unsigned long long)p->id, p->msglen, p->domain,
                p->notice ? " kind=notice" : "", p->unsub == SND_UNSUB_MAILTO ? " list_unsubscribe=mailto" : "");
        snd_dkim_post(p->snd, p);
    }
    if (p->state == SND_P_MISSING)
        lc_warn("post=%llu: message or list missing in Redis", (unsigned long long)p->id);
    struct snd_batch *b = p->waiters;
    p->waiters = NULL;
    while (b) {
        struct snd_batch *nb = b->wnext;
        b->wnext = NULL;
        snd_batch_start(b);
        b = nb;
    }
    snd_post_unref(p);
}

void snd_queue_load(struct snd *snd, struct snd_post *p)
{
    struct snd_queue *q = snd->q;
    if (!q || !q->wr_up || p->state != SND_P_NEW)
        return;
    char mk[LC_KEY_MAX], pk[LC_KEY_MAX];
    lc_key_msg(mk, sizeof mk, p->id);
    lc_key_post(pk, sizeof pk, p->id);
    p->state = SND_P_LOADING;
    snd_post_ref(p); /* dropped by on_list */
    if (cmd(q->wr, on_msg, p, 2, "GET", mk) < 0 ||
        cmd(q->wr, on_list, p, 5, "HMGET", pk, "list", "created", "kind") < 0) {
        p->state = SND_P_NEW; /* the connection is going away; loaded again once it is back */
        snd_post_unref(p);
    }
}

/* ---- commits ---- */

struct domcount {
    const char *dom;
    int n[4]; /* counter deltas: delivered, deferred, bounced (index by outcome) */
};

static void on_exec(redisAsyncContext *ac, void *r, void *pd)
{
    struct snd_batch *b = pd;
    redisReply *reply = r;
    struct snd *snd = b->snd;
    if (snd->stopping)
        return;
    if (!reply) {
        b->state = SND_B_COMMIT_WAIT; /* sent again when the write connection is back */
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY) {
        lc_warn("post=%llu batch=%s: commit failed: %s (retry in %d s)", (unsigned long long)b->post, b->id,
                reply->type == REDIS_REPLY_ERROR ? reply->str : "no answer", SND_COMMIT_RETRY_MS / 1000);
        b->state = SND_B_COMMIT_WAIT;
        b->retry_at = lc_loop_now(snd->loop) + SND_COMMIT_RETRY_MS;
        return;
    }
    int done = 0;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        if (e->type == REDIS_REPLY_ERROR)
            lc_warn("post=%llu batch=%s: commit: command %zu: %s", (unsigned long long)b->post, b->id, i + 1, e->str);
    }
    if (!b->drop && reply->elements && reply->element[reply->elements - 1]->type == REDIS_REPLY_INTEGER)
        done = reply->element[reply->elements - 1]->integer == 1;
    int n[4] = {0};
    for (int i = 0; i < b->nrcpts; i++)
        n[b->rcpts[i].outcome]++;
    if (n[SND_O_DEFERRED] && !b->drop)
        lc_info("post=%llu batch=%s: %d recipients scheduled for a retry", (unsigned long long)b->post, b->id,
                n[SND_O_DEFERRED]);
    lc_info("post=%llu batch=%s acknowledged delivered=%d deferred=%d bounced=%d%s", (unsigned long long)b->post,
            b->id, n[SND_O_DELIVERED], n[SND_O_DEFERRED], n[SND_O_BOUNCED], b->drop ? " (unusable entry)" : "");
    if (done)
        lc_info("post=%llu done", (unsigned long long)b->post);
    snd_batch_free(b);
    read_more(snd->q);
}

static const char *rcpt_domain(const struct snd_rcpt *r)
{
    const char *at = strrchr(r->addr, '@');
    return at && at[1] ? at + 1 : "invalid";
}

/* zadd_retries queues one ZADD lc:retry of the batch's deferred recipients (in the commit's MULTI). */
static void zadd_retries(struct snd_queue *q, struct snd_batch *b, int ndefer)
{
    int argc = 2 + 2 * ndefer, k = 0;
    const char **argv = lc_calloc((size_t)argc, sizeof *argv);
    size_t *lens = lc_calloc((size_t)argc, sizeof *lens);
    char *scores = lc_calloc((size_t)ndefer, 24);
    char **members = lc_calloc((size_t)ndefer, sizeof *members);
    int64_t now = b->started ? b->started : snd_now();
    argv[k++] = "ZADD";
    argv[k++] = LC_K_RETRY;
    int m = 0;
    for (int i = 0; i < b->nrcpts; i++) {
        const struct snd_rcpt *r = &b->rcpts[i];
        if (r->outcome != SND_O_DEFERRED)
            continue;
        char *sc = scores + 24 * m;
        snprintf(sc, 24, "%lld", (long long)r->due);
        if (snd_retry_member(r, now, q->member) < 0) {
            lc_warn("post=%llu rcpt=<%s>: retry entry too long: not scheduled", (unsigned long long)b->post, r->addr);
            continue;
        }
        members[m] = lc_strdup(lc_buf_data(q->member));
        argv[k++] = sc;
        argv[k++] = members[m];
        m++;
    }
    for (int i = 0; i < k; i++)
        lens[i] = strlen(argv[i]);
    if (k > 2)
        redisAsyncCommandArgv(q->wr, NULL, NULL, k, argv, lens);
    for (int i = 0; i < m; i++)
        free(members[i]);
    free(members);
    free(scores);
    free(lens);
    free(argv);
}

/* postdefer queues, in the commit's MULTI, the batch's changes to lc:postdefer:ID: HSET of each deferred
 * recipient's last deferral (with EXPIRE: sender.max_lifetime + SND_DEFER_TTL_EXTRA) and HDEL of each retried
 * recipient that ended delivered or bounced. */
static void postdefer(struct snd_queue *q, struct snd_batch *b)
{
    char key[LC_KEY_MAX], ttl[32];
    if (lc_key_postdefer(key, sizeof key, b->post) < 0)
        return;
    const char **argv = lc_calloc((size_t)(2 + 2 * b->nrcpts), sizeof *argv);
    size_t *lens = lc_calloc((size_t)(2 + 2 * b->nrcpts), sizeof *lens);
    for (int pass = 0; pass < 2; pass++) { /* 0: HSET deferred, 1: HDEL resolved retries */
        int k = 0;
        argv[k++] = pass == 0 ? "HSET" : "HDEL";
        argv[k++] = key;
        for (int i = 0; i < b->nrcpts; i++) {
            const struct snd_rcpt *r = &b->rcpts[i];
            if (pass == 0 && r->outcome == SND_O_DEFERRED && r->reply) {
                argv[k++] = r->addr;
                argv[k++] = r->reply;
            } else if (pass == 1 && r->outcome != SND_O_DEFERRED && r->attempt > 0) {
                argv[k++] = r->addr;
            }
        }
        if (k == 2)
            continue;
        for (int i = 0; i < k; i++)
            lens[i] = strlen(argv[i]);
        redisAsyncCommandArgv(q->wr, NULL, NULL, k, argv, lens);
        if (pass == 0) {
            snprintf(ttl, sizeof ttl, "%lld", (long long)q->snd->max_lifetime + SND_DEFER_TTL_EXTRA);
            cmd(q->wr, NULL, NULL, 3, "EXPIRE", key, ttl);
        }
    }
    free(lens);
    free(argv);
}

void snd_queue_commit(struct snd_batch *b)
{
    struct snd *snd = b->snd;
    struct snd_queue *q = snd->q;
    if (!q || !q->wr_up || b->state != SND_B_COMMIT_WAIT || b->retry_at > lc_loop_now(snd->loop))
        return;
    redisAsyncContext *ac = q->wr;
    char pk[LC_KEY_MAX], dk[LC_KEY_MAX], num[32], field[300], post[32], sub[32];
    static const char *const names[4] = {"none", "delivered", "deferred", "bounced"};
    lc_key_post(pk, sizeof pk, b->post);
    lc_key_postdom(dk, sizeof dk, b->post);
    snprintf(post, sizeof post, "%llu", (unsigned long long)b->post);
    cmd(ac, NULL, NULL, 1, "MULTI");
    if (!b->drop) {
        int total[4] = {0};
        struct domcount *dc = lc_calloc((size_t)b->nrcpts, sizeof *dc);
        int ndc = 0;
        int ndefer = 0;
        for (int i = 0; i < b->nrcpts; i++) {
            const struct snd_rcpt *r = &b->rcpts[i];
            const char *dom = rcpt_domain(r);
            int j;
            for (j = 0; j < ndc && strcmp(dc[j].dom, dom); j++)
                ;
            if (j == ndc)
                dc[ndc++].dom = dom;
            /* deferred = waiting for a retry: a retried recipient that is final leaves it */
            if (r->outcome == SND_O_DEFERRED) {
                ndefer++;
                if (r->attempt == 0) {
                    dc[j].n[SND_O_DEFERRED]++;
                    total[SND_O_DEFERRED]++;
                }
            } else {
                dc[j].n[r->outcome]++;
                total[r->outcome]++;
                if (r->attempt > 0) {
                    dc[j].n[SND_O_DEFERRED]--;
                    total[SND_O_DEFERRED]--;
                }
            }
        }
        for (int o = SND_O_DELIVERED; o <= SND_O_BOUNCED; o++)
            if (total[o] != 0) {
                snprintf(num, sizeof num, "%d", total[o]);
                cmd(ac, NULL, NULL, 4, "HINCRBY", pk, names[o], num);
            }
        for (int j = 0; j < ndc; j++)
            for (int o = SND_O_DELIVERED; o <= SND_O_BOUNCED; o++)
                if (dc[j].n[o] != 0) {
                    snprintf(num, sizeof num, "%d", dc[j].n[o]);
                    snprintf(field, sizeof field, "%s:%s", dc[j].dom, names[o]);
                    cmd(ac, NULL, NULL, 4, "HINCRBY", dk, field, num);
                }
        free(dc);
        for (int i = 0; i < b->nrcpts; i++) {
            const struct snd_rcpt *r = &b->rcpts[i];
            char verp[LC_ADDR_MAX + 1];
            if (r->outcome != SND_O_BOUNCED || r->sub == 0) /* sub 0: a notice to a non-subscriber */
                continue;
            if (lc_verp_encode(snd->secret, b->post, r->sub, b->p->domain, verp, sizeof verp) < 0)
                continue;
            snprintf(sub, sizeof sub, "%llu", (unsigned long long)r->sub);
            cmd(ac, NULL, NULL, 13, "XADD", LC_S_BOUNCES, "*", "rcpt", verp, "from", "", "post", post, "sub", sub,
                "reply", r->reply ? r->reply : "");
        }
        if (ndefer)
            zadd_retries(q, b, ndefer);
        postdefer(q, b);
    }
    cmd(ac, NULL, NULL, 4, "XACK", LC_S_DELIVERIES, LC_G_DELIVERIES, b->id);
    if (!b->drop)
        cmd(ac, NULL, NULL, 4, "EVAL", done_script, "1", pk);
    b->state = cmd(ac, on_exec, b, 1, "EXEC") == 0 ? SND_B_COMMITTING : SND_B_COMMIT_WAIT;
}

/* ---- XAUTOCLAIM and heartbeat ---- */

static void heartbeat(struct snd_queue *q)
{
    struct snd *snd = q->snd;
    const char *argv[6 + 100 + 1];
    size_t lens[6 + 100 + 1];
    struct snd_batch *b = snd->batches;
    while (b) {
        int argc = 0;
        argv[argc++] = "XCLAIM";
        argv[argc++] = LC_S_DELIVERIES;
        argv[argc++] = LC_G_DELIVERIES;
        argv[argc++] = snd->node;
        argv[argc++] = "0";
        for (; b && argc < 5 + 100; b = b->next)
            if (!b->drop)
                argv[argc++] = b->id;
        argv[argc++] = "JUSTID";
        if (argc == 6)
            break;
        for (int i = 0; i < argc; i++)
            lens[i] = strlen(argv[i]);
        redisAsyncCommandArgv(q->wr, NULL, NULL, argc, argv, lens);
    }
}

static void on_claim(redisAsyncContext *ac, void *r, void *pd)
{
    struct snd_queue *q = pd;
    redisReply *reply = r;
    q->claiming = 0;
    if (q->snd->stopping || !reply)
        return;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 || reply->element[0]->type != REDIS_REPLY_STRING) {
        if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOGROUP", 7) != 0)
            lc_warn("redis: XAUTOCLAIM %s: %s", LC_S_DELIVERIES, reply->str);
        snprintf(q->claim_cursor, sizeof q->claim_cursor, "0-0");
        return;
    }
    int before = q->snd->nbatches;
    int n = add_entries(q, reply->element[1], NULL, 0);
    if (n)
        lc_info("claimed %d entries idle over %d s from other consumers (%d new batches)", n,
                q->snd->claim_ms / 1000, q->snd->nbatches - before);
    snprintf(q->claim_cursor, sizeof q->claim_cursor, "%s", reply->element[0]->str);
    if (strcmp(q->claim_cursor, "0-0") != 0)
        claim(q); /* the scan goes on while there is room */
}

static void claim(struct snd_queue *q)
{
    struct snd *snd = q->snd;
    int room = snd->max_batches - snd->nbatches;
    if (!q->wr_up || q->claiming || room <= 0)
        return;
    char count[16], idle[16];
    snprintf(count, sizeof count, "%d", room < SND_READ_COUNT ? room : SND_READ_COUNT);
    snprintf(idle, sizeof idle, "%d", q->snd->claim_ms);
    if (!q->claim_cursor[0])
        snprintf(q->claim_cursor, sizeof q->claim_cursor, "0-0");
    q->claiming = cmd(q->wr, on_claim, q, 8, "XAUTOCLAIM", LC_S_DELIVERIES, LC_G_DELIVERIES, snd->node, idle,
                      q->claim_cursor, "COUNT", count) == 0;
}

/* ---- due retries and the TLS policy ---- */

static void on_poll(redisAsyncContext *ac, void *r, void *pd)
{
    struct snd_queue *q = pd;
    redisReply *reply = r;
    q->polling = 0;
    if (q->snd->stopping || !reply)
        return;
    long long moved = 0, rerouted = 0;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 && reply->element[0]->type == REDIS_REPLY_INTEGER &&
        reply->element[1]->type == REDIS_REPLY_INTEGER) {
        moved = reply->element[0]->integer;
        rerouted = reply->element[1]->integer;
    }
    if (reply->type == REDIS_REPLY_ERROR)
        lc_warn("redis: retry poller: %s", reply->str);
    else if (moved > rerouted)
        lc_info("retry: %lld due recipients moved back to %s", moved - rerouted, LC_S_DELIVERIES);
    if (rerouted > 0)
        lc_info("retry: %lld due recipients without a route sent to %s for a fresh DNS lookup", rerouted,
                LC_S_POSTS);
    if (moved >= SND_RETRY_MOVE)
        q->next_poll = 0; /* more are due: go on at the next tick */
}

static void retry_poll(struct snd_queue *q)
{
    char now[32], max[16], bs[16];
    if (!q->wr_up || q->polling)
        return;
    snprintf(now, sizeof now, "%lld", (long long)snd_now());
    snprintf(max, sizeof max, "%d", SND_RETRY_MOVE);
    snprintf(bs, sizeof bs, "%d", q->snd->batch_size);
    q->polling = cmd(q->wr, on_poll, q, 9, "EVAL", snd_lua_retry_poll, "3", LC_K_RETRY, LC_S_DELIVERIES, LC_S_POSTS,
                     now, max, bs) == 0;
}

static void on_tlspol(redisAsyncContext *ac, void *r, void *pd)
{
    struct snd_queue *q = pd;
    redisReply *reply = r;
    q->tlspol_loading = 0;
    if (q->snd->stopping || !reply)
        return;
    if (reply->type != REDIS_REPLY_ARRAY) {
        lc_warn("redis: HGETALL %s: %s", LC_K_TLSPOLICY, reply->type == REDIS_REPLY_ERROR ? reply->str : "not a hash");
        return;
    }
    snd_tls_policy_set(q->snd->tlsctx, reply);
    if (!q->tlspol_loaded) {
        q->tlspol_loaded = 1;
        read_more(q);
    }
}

static void tlspol_load(struct snd_queue *q)
{
    if (!q->wr_up || q->tlspol_loading)
        return;
    q->next_tlspol = lc_loop_now(q->snd->loop) + SND_TLSPOL_MS;
    q->tlspol_loading = cmd(q->wr, on_tlspol, q, 2, "HGETALL", LC_K_TLSPOLICY) == 0;
}

/* ---- housekeeping ---- */

static void tick(struct lc_loop *loop, void *arg)
{
    struct snd_queue *q = arg;
    struct snd *snd = q->snd;
    int64_t now = lc_loop_now(loop);
    q->tick = lc_loop_timer(loop, SND_TICK_MS, tick, q);
    if (q->wr_up) {
        resume_writes(q);
        if (now >= q->next_claim) {
            q->next_claim = now + q->snd->claim_ms / 2;
            heartbeat(q);
            claim(q);
        }
        if (now >= q->next_poll) {
            q->next_poll = now + SND_RETRY_POLL_MS;
            retry_poll(q);
        }
        if (now >= q->next_tlspol)
            tlspol_load(q);
    }
    if (now >= q->next_gc) {
        q->next_gc = now + q->snd->claim_ms / 2;
        snd_dest_gc(snd);
        lc_debug("batches=%d connections=%d destinations=%d", snd->nbatches, snd->nconns, snd->ndests);
    }
    read_more(q);
}

struct snd_queue *snd_queue_new(struct snd *snd, const char *url)
{
    struct snd_queue *q = lc_calloc(1, sizeof *q);
    q->snd = snd;
    q->url = lc_strdup(url);
    q->rd_backoff = q->wr_backoff = SND_REDIS_BACKOFF_MIN;
    q->member = lc_buf_new(LC_ADDR_MAX + 65536);
    snprintf(q->next_id, sizeof q->next_id, "0");
    snd->q = q;
    wr_connect(q);
    rd_connect(q);
    q->tick = lc_loop_timer(snd->loop, SND_TICK_MS, tick, q);
    return q;
}

void snd_queue_free(struct snd_queue *q)
{
    if (!q)
        return;
    struct lc_loop *loop = q->snd->loop;
    uint64_t timers[] = {q->rd_timer, q->wr_timer, q->read_retry, q->tick};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++)
        if (timers[i])
            lc_loop_cancel(loop, timers[i]);
    if (q->rd)
        redisAsyncFree(q->rd);
    if (q->wr)
        redisAsyncFree(q->wr);
    q->snd->q = NULL;
    lc_buf_free(q->member);
    free(q->url);
    free(q);
}
