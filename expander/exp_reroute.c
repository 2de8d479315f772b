/* exp_reroute: a fresh route for retried recipients that had none (temporary DNS failure).
 *
 * Contract: an lc:stream:posts entry that has a `rcpts` field is a reroute entry (schema/SCHEMA.md "Delivery:
 * retries"). The sender's retry poller writes it, in the Lua script that takes the due recipients out of
 * lc:retry, for recipients whose batch had hosts "" (the expander found no route: the domain's DNS failed
 * temporarily after every attempt). Fields: post (ID), rcpts ("SUBID ADDR" a line), attempts ("ATTEMPTS FIRST"
 * a line, by position: attempts made so far and the unix time of the first) and, for notices, from (the
 * envelope sender). The recipients' domains are resolved again (exp_dns never caches a temporary failure, so
 * this asks DNS anew) and, in ONE MULTI/EXEC that ends with the XACK of the entry:
 *   - domains with a route, and domains that failed temporarily again (hosts ""): XADD lc:stream:deliveries
 *     {post, hosts, rcpts, attempts, [from]} in batches of at most sender.batch_size, grouped by hosts. The
 *     sender sees attempts > 0: a final outcome takes the recipient off `deferred`, a deferral goes back into
 *     lc:retry (or, past sender.max_lifetime, bounces as expired) and leaves `deferred` alone;
 *   - null MX, NXDOMAIN, no address (permanent): XADD lc:stream:bounces {rcpt, from "", post, sub, reply} (not
 *     for sub 0, a notice to a non-subscriber), HINCRBY lc:post:ID bounced +n deferred -n and lc:postdom:ID
 *     DOMAIN:bounced +n DOMAIN:deferred -n, HDEL of their lc:postdefer:ID fields, then LC_LUA_POST_DONE (these may be the post's last recipients).
 * No HSCAN, no suppression check (the recipient was chosen when the post was expanded), and `recipients` and
 * `state` are not touched. An entry whose post hash is gone, or without a usable recipient line, is
 * acknowledged with a warning and nothing else. While DNS is being asked, the entry is XCLAIMed to ourselves
 * every TOUCH_MS so another expander's XAUTOCLAIM leaves it alone.
 * One lookup per burst: retries of a domain deferred together come due together (within the jitter) in many
 * reroute entries; a domain that failed temporarily here is not asked again for TEMP_MEMO_MS (its recipients get
 * hosts "" at once), so a big failing domain costs one lookup per burst instead of one per entry, and the
 * expander is not held up for seconds per entry. TEMP_MEMO_MS is far below sender.retry_min's default (300 s),
 * so each retry of a recipient still gets a fresh lookup.
 * Crash safety: nothing is written before EXEC; a crash leaves the entry pending (read again after a restart,
 * or claimed by another expander after 60 s idle). An EXEC whose answer was lost is written again
 * (at-least-once, as everywhere in the pipeline).
 * Limits: EXP_REROUTE_MAX recipient lines per entry (the poller writes at most sender.batch_size); malformed
 * lines are dropped with a warning (they stay counted in `deferred`: such an entry was not written by listcast).
 */
#include "exp.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lc_addr.h"
#include "lc_buf.h"
#include "lc_log.h"
#include "lc_redis.h"
#include "lc_schema.h"

#define TOUCH_MS 20000
#define TEMP_MEMO_MS 5000 /* a temporary failure answers the same domain's other reroute entries this long */
#define TEMP_MEMO_MAX 10000 /* domains remembered at most (then the memo is emptied) */

struct rr {              /* one recipient of the entry */
    uint64_t sub;
    char *addr;          /* normalised (owned) */
    const char *dom;     /* in addr, after '@' */
    int attempts;
    long long first;
    char *hosts;         /* after routing (owned): the route, "" (temporary failure again), NULL (bounce) */
    enum exp_route_status st;
};

struct rrun {
    struct exp *e;
    const char *entry;
    char ids[24];
    char key[LC_KEY_MAX], domkey[LC_KEY_MAX], deferkey[LC_KEY_MAX];
    const char *from;    /* notices: the envelope sender; NULL: VERP */
    size_t from_len;
    int64_t touched;
    size_t queued;       /* commands queued in the transaction */
    char err[512];
};

const char *exp_bounce_reply(enum exp_route_status st)
{
    switch (st) { /* the same replies as a first expansion (exp_post.c) */
    case EXP_ROUTE_NULLMX:
        return "550 5.1.10 domain publishes a null MX (RFC 7505)";
    case EXP_ROUTE_NXDOMAIN:
        return "550 5.1.2 domain does not exist";
    case EXP_ROUTE_NOHOST:
        return "550 5.4.4 no mail server of the domain has an address";
    default:
        return "451 4.4.3 temporary DNS failure";
    }
}

struct memo {              /* a domain whose lookup just failed temporarily */
    char *name;
    int64_t until;         /* exp_now_ms() */
};
static struct exp_map *temp_memo; /* name -> struct memo (process lifetime) */

static int memo_keep(void *val, void *arg)
{
    return ((struct memo *)val)->until > *(const int64_t *)arg;
}

static void memo_drop(void *val, void *arg)
{
    (void)arg;
    struct memo *m = val;
    free(m->name);
    free(m);
}

static void memo_put(const char *name, int64_t now)
{
    struct memo *m = exp_map_get(temp_memo, name);
    if (m) {
        m->until = now + TEMP_MEMO_MS;
        return;
    }
    if (exp_map_count(temp_memo) >= TEMP_MEMO_MAX) {
        int64_t never = INT64_MAX;
        exp_map_filter(temp_memo, memo_keep, memo_drop, &never);
    }
    m = lc_malloc(sizeof *m);
    m->name = lc_strdup(name);
    m->until = now + TEMP_MEMO_MS;
    exp_map_put(temp_memo, m->name, m);
}

static const redisReply *field(const redisReply *f, const char *name)
{
    if (!f || f->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < f->elements; i += 2)
        if (f->element[i]->type == REDIS_REPLY_STRING && f->element[i + 1]->type == REDIS_REPLY_STRING &&
            !strcmp(f->element[i]->str, name))
            return f->element[i + 1];
    return NULL;
}

static int parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 20)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static void touch(void *arg)
{
    struct rrun *x = arg;
    int64_t now = exp_now_ms();
    if (now - x->touched < TOUCH_MS || x->e->wr->err)
        return;
    x->touched = now;
    redisReply *r = lc_redis_cmd(x->e->wr, x->err, sizeof x->err, "XCLAIM %s %s %s 0 %s JUSTID", LC_S_POSTS,
                                 LC_G_POSTS, x->e->node, x->entry);
    if (r)
        freeReplyObject(r);
}

/* parse_rcpts reads the rcpts lines and, by position, the attempts lines. Returns the count. */
static size_t parse_rcpts(struct rrun *x, const redisReply *rcpts, const redisReply *att, struct rr **out)
{
    size_t cap = 1;
    for (size_t i = 0; i < rcpts->len; i++)
        cap += rcpts->str[i] == '\n';
    if (cap > EXP_REROUTE_MAX)
        cap = EXP_REROUTE_MAX;
    struct rr *v = lc_calloc(cap, sizeof *v);
    size_t n = 0, bad = 0;
    const char *s = rcpts->str, *end = s + rcpts->len;
    const char *a = att ? att->str : NULL, *aend = att ? att->str + att->len : NULL;
    long long now = (long long)time(NULL);
    while (s < end && n < cap) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *le = nl ? nl : end;
        int attempts = 1;
        long long first = now;
        if (a && a < aend) { /* the matching attempts line */
            const char *anl = memchr(a, '\n', (size_t)(aend - a));
            char line[64];
            size_t ln = (size_t)((anl ? anl : aend) - a);
            snprintf(line, sizeof line, "%.*s", (int)(ln < sizeof line - 1 ? ln : sizeof line - 1), a);
            int at;
            long long f;
            if (sscanf(line, "%d %lld", &at, &f) == 2 && at > 0 && at < 100000 && f > 0) {
                attempts = at;
                first = f;
            }
            a = anl ? anl + 1 : aend;
        }
        const char *sp = memchr(s, ' ', (size_t)(le - s));
        char norm[LC_ADDR_MAX + 1];
        const char *why = NULL;
        uint64_t sub;
        if (le == s) {
            /* an empty line: nothing */
        } else if (!sp || parse_u64(s, (size_t)(sp - s), &sub) < 0 ||
                   lc_addr_norm(sp + 1, (size_t)(le - sp - 1), norm, &why) < 0 || !strchr(norm, '@')) {
            if (bad++ < 5)
                lc_warn("post=%s entry=%s: bad recipient line \"%.*s\" dropped", x->ids, x->entry,
                        (int)(le - s > 200 ? 200 : le - s), s);
        } else {
            v[n].sub = sub;
            v[n].addr = lc_strdup(norm);
            v[n].dom = strrchr(v[n].addr, '@') + 1;
            v[n].attempts = attempts;
            v[n].first = first;
            n++;
        }
        s = le + 1;
    }
    *out = v;
    return n;
}

static int cmp_dom(const void *a, const void *b)
{
    const struct rr *x = a, *y = b;
    int c = strcmp(x->dom, y->dom);
    return c ? c : strcmp(x->addr, y->addr);
}

/* cmp_route orders by hosts (bounces, hosts NULL, last), then domain and address. */
static int cmp_route(const void *a, const void *b)
{
    const struct rr *x = a, *y = b;
    if (!x->hosts != !y->hosts)
        return x->hosts ? -1 : 1;
    int c = x->hosts ? strcmp(x->hosts, y->hosts) : 0;
    return c ? c : cmp_dom(a, b);
}

static void qcmd(struct rrun *x, int argc, const char **argv)
{
    size_t lens[16];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    redisAppendCommandArgv(x->e->wr, argc, argv, lens);
    x->queued++;
}

/* exec_all sends EXEC and reads every reply: 0, -1 (connection) or -2 (an error answer: left pending). */
static int exec_all(struct rrun *x)
{
    redisContext *c = x->e->wr;
    const char *exec[1] = {"EXEC"};
    qcmd(x, 1, exec);
    int rc = 0;
    for (size_t i = 0; i < x->queued; i++) {
        void *v = NULL;
        if (redisGetReply(c, &v) != REDIS_OK || !v) {
            lc_warn("post=%s entry=%s reroute: redis: %s", x->ids, x->entry, c->errstr[0] ? c->errstr : "lost");
            return -1;
        }
        redisReply *r = v;
        if (r->type == REDIS_REPLY_ERROR && rc == 0) {
            snprintf(x->err, sizeof x->err, "%s", r->str);
            rc = -2;
        } else if (i + 1 == x->queued && r->type == REDIS_REPLY_ARRAY) {
            for (size_t j = 0; j < r->elements && rc == 0; j++)
                if (r->element[j]->type == REDIS_REPLY_ERROR) {
                    snprintf(x->err, sizeof x->err, "%s", r->element[j]->str);
                    rc = -2;
                }
        }
        freeReplyObject(r);
    }
    if (rc == -2)
        lc_warn("post=%s entry=%s reroute transaction failed, left pending: %s", x->ids, x->entry, x->err);
    return rc;
}

/* queue_batch queues one XADD of the deliveries stream. */
static void queue_batch(struct rrun *x, const char *hosts, struct lc_buf *rc, struct lc_buf *at)
{
    const char *argv[13] = {"XADD", LC_S_DELIVERIES, "*", "post", x->ids, "hosts", hosts, "rcpts",
                            lc_buf_data(rc), "attempts", lc_buf_data(at)};
    int argc = 11;
    char from[LC_ADDR_MAX + 1];
    if (x->from) {
        snprintf(from, sizeof from, "%.*s", (int)x->from_len, x->from);
        argv[argc++] = "from";
        argv[argc++] = from;
    }
    qcmd(x, argc, argv);
    lc_buf_reset(rc);
    lc_buf_reset(at);
}

/* queue_all queues the batches, bounces and counters of the routed recipients (sorted by cmp_route). */
static void queue_all(struct rrun *x, struct rr *v, size_t n, size_t *nbatches, size_t *nbounced)
{
    struct exp *e = x->e;
    struct lc_buf *rc = lc_buf_new((size_t)e->batch_size * (LC_ADDR_MAX + 24) + 64);
    struct lc_buf *at = lc_buf_new((size_t)e->batch_size * 48 + 64);
    size_t inbatch = 0;
    for (size_t i = 0; i < n && v[i].hosts; i++) {
        if (lc_buf_printf(rc, "%s%" PRIu64 " %s", inbatch ? "\n" : "", v[i].sub, v[i].addr) < 0 ||
            lc_buf_printf(at, "%s%d %lld", inbatch ? "\n" : "", v[i].attempts, v[i].first) < 0)
            lc_panic("post=%s reroute batch buffer too small", x->ids);
        inbatch++;
        int last = i + 1 == n || !v[i + 1].hosts || strcmp(v[i].hosts, v[i + 1].hosts);
        if (last || inbatch == (size_t)e->batch_size) {
            queue_batch(x, v[i].hosts, rc, at);
            (*nbatches)++;
            inbatch = 0;
        }
    }
    lc_buf_free(rc);
    lc_buf_free(at);
    size_t first = 0;
    while (first < n && v[first].hosts)
        first++;
    for (size_t i = first; i < n;) { /* permanent failures, domain by domain */
        size_t j = i;
        while (j < n && !strcmp(v[j].dom, v[i].dom))
            j++;
        const char *reply = exp_bounce_reply(v[i].st);
        char num[24], neg[24], fb[300], fd[300];
        snprintf(num, sizeof num, "%zu", j - i);
        snprintf(neg, sizeof neg, "-%zu", j - i);
        snprintf(fb, sizeof fb, "%s:bounced", v[i].dom);
        snprintf(fd, sizeof fd, "%s:deferred", v[i].dom);
        const char *h1[4] = {"HINCRBY", x->domkey, fb, num}, *h2[4] = {"HINCRBY", x->domkey, fd, neg};
        qcmd(x, 4, h1);
        qcmd(x, 4, h2);
        lc_info("post=%s domain=%s bounced=%zu reply=%s (on a retry)", x->ids, v[i].dom, j - i, reply);
        for (size_t k = i; k < j; k++) {
            char sub[24];
            const char *hd[3] = {"HDEL", x->deferkey, v[k].addr}; /* no longer waiting: off the deferral list */
            qcmd(x, 3, hd);
            if (v[k].sub == 0)
                continue;
            snprintf(sub, sizeof sub, "%" PRIu64, v[k].sub);
            const char *xb[13] = {"XADD", LC_S_BOUNCES, "*", "rcpt", v[k].addr, "from", "", "post", x->ids,
                                  "sub", sub, "reply", reply};
            qcmd(x, 13, xb);
        }
        *nbounced += j - i;
        i = j;
    }
    if (*nbounced) {
        char num[24], neg[24];
        snprintf(num, sizeof num, "%zu", *nbounced);
        snprintf(neg, sizeof neg, "-%zu", *nbounced);
        const char *h1[4] = {"HINCRBY", x->key, "bounced", num}, *h2[4] = {"HINCRBY", x->key, "deferred", neg};
        const char *fin[4] = {"EVAL", LC_LUA_POST_DONE, "1", x->key};
        qcmd(x, 4, h1);
        qcmd(x, 4, h2);
        qcmd(x, 4, fin);
    }
}

/* ack_only acknowledges an unusable entry: 0 or -1 (connection). */
static int ack_only(struct rrun *x)
{
    redisReply *r = lc_redis_cmd(x->e->wr, x->err, sizeof x->err, "XACK %s %s %s", LC_S_POSTS, LC_G_POSTS,
                                 x->entry);
    if (!r) {
        lc_warn("entry=%s XACK: %s", x->entry, x->err);
        return x->e->wr->err ? -1 : 0;
    }
    freeReplyObject(r);
    return 0;
}

/* route resolves the recipients' domains (v sorted by domain) and sets each one's hosts and status.
 * Returns 0, or 1 when *stop was set. */
static int route(struct rrun *x, struct rr *v, size_t n, long *dns_ms)
{
    struct exp *e = x->e;
    size_t nd = 0;
    const char **names = lc_malloc((n ? n : 1) * sizeof *names);
    for (size_t i = 0; i < n; i++)
        if (i == 0 || strcmp(v[i].dom, v[i - 1].dom))
            names[nd++] = v[i].dom;
    struct exp_route *routes = lc_calloc(nd ? nd : 1, sizeof *routes);
    char *relay = NULL;
    int rc = 0;
    if (*e->relay) {
        size_t len = strlen(e->relay) + 7;
        relay = lc_malloc(len);
        snprintf(relay, len, "relay=%s", e->relay);
        for (size_t i = 0; i < nd; i++)
            routes[i] = (struct exp_route){EXP_ROUTE_OK, relay};
    } else {
        int64_t t0 = exp_now_ms();
        if (!temp_memo)
            temp_memo = exp_map_new();
        exp_map_filter(temp_memo, memo_keep, memo_drop, &t0);
        /* ask DNS only for the domains not in the memo (their routes are filled in place afterwards) */
        const char **ask = lc_malloc((nd ? nd : 1) * sizeof *ask);
        size_t *pos = lc_malloc((nd ? nd : 1) * sizeof *pos), na = 0;
        for (size_t i = 0; i < nd; i++) {
            if (exp_map_get(temp_memo, names[i])) {
                routes[i] = (struct exp_route){EXP_ROUTE_TEMP, NULL};
            } else {
                pos[na] = i;
                ask[na++] = names[i];
            }
        }
        struct exp_route *got = lc_calloc(na ? na : 1, sizeof *got);
        struct exp_dns_stats st;
        if (na > 0)
            rc = exp_dns_resolve(e->dns, ask, na, got, &st, touch, x, e->stop);
        int64_t t1 = exp_now_ms();
        for (size_t k = 0; k < na && rc == 0; k++) {
            routes[pos[k]] = got[k];
            if (got[k].status == EXP_ROUTE_TEMP)
                memo_put(ask[k], t1);
        }
        *dns_ms = (long)(t1 - t0);
        free(got);
        free(pos);
        free(ask);
    }
    if (rc == 0) {
        size_t d = 0;
        for (size_t i = 0; i < n; i++) {
            if (i > 0 && strcmp(v[i].dom, v[i - 1].dom))
                d++;
            v[i].st = routes[d].status;
            v[i].hosts = routes[d].status == EXP_ROUTE_OK     ? lc_strdup(routes[d].hosts)
                         : routes[d].status == EXP_ROUTE_TEMP ? lc_strdup("")
                                                              : NULL;
        }
        for (size_t i = 0; i < nd; i++)
            if (routes[i].status == EXP_ROUTE_TEMP)
                lc_info("post=%s domain=%s temporary DNS failure again: queued without a route (sender defers)",
                        x->ids, names[i]);
            else if (routes[i].status == EXP_ROUTE_OK)
                lc_info("post=%s domain=%s resolved on a retry hosts=%s", x->ids, names[i], routes[i].hosts);
    }
    free(relay);
    free(routes);
    free(names);
    return rc;
}

int exp_reroute_run(struct exp *e, const char *entry_id, const struct redisReply *fields)
{
    struct rrun x = {.e = e, .entry = entry_id, .touched = exp_now_ms()};
    const redisReply *post = field(fields, "post"), *rcpts = field(fields, "rcpts");
    const redisReply *att = field(fields, "attempts"), *from = field(fields, "from");
    uint64_t id;
    snprintf(x.ids, sizeof x.ids, "?");
    if (!post || parse_u64(post->str, post->len, &id) < 0 || id == 0 || !rcpts) {
        lc_warn("entry=%s: reroute entry without a post id: acknowledged", entry_id);
        return ack_only(&x);
    }
    snprintf(x.ids, sizeof x.ids, "%" PRIu64, id);
    lc_key_post(x.key, sizeof x.key, id);
    lc_key_postdom(x.domkey, sizeof x.domkey, id);
    lc_key_postdefer(x.deferkey, sizeof x.deferkey, id);
    if (from) {
        x.from = from->str;
        x.from_len = from->len > LC_ADDR_MAX ? LC_ADDR_MAX : from->len;
    }
    redisReply *r = lc_redis_cmd(e->wr, x.err, sizeof x.err, "EXISTS %s", x.key);
    if (!r) {
        lc_warn("post=%s entry=%s EXISTS: %s", x.ids, entry_id, x.err);
        return e->wr->err ? -1 : 0;
    }
    int exists = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    if (!exists) {
        lc_warn("post=%s entry=%s: the post is gone: retry dropped, acknowledged", x.ids, entry_id);
        return ack_only(&x);
    }
    struct rr *v = NULL;
    size_t n = parse_rcpts(&x, rcpts, att, &v);
    int rc = 0;
    long dns_ms = 0;
    if (n == 0) {
        lc_warn("post=%s entry=%s: reroute entry without a usable recipient: acknowledged", x.ids, entry_id);
        rc = ack_only(&x);
        goto out;
    }
    qsort(v, n, sizeof *v, cmp_dom);
    if (route(&x, v, n, &dns_ms) != 0 || *e->stop) {
        rc = 1;
        goto out;
    }
    qsort(v, n, sizeof *v, cmp_route);
    size_t nbatches = 0, nbounced = 0, noroute = 0;
    for (size_t i = 0; i < n; i++)
        noroute += v[i].hosts && !*v[i].hosts;
    const char *multi[1] = {"MULTI"};
    qcmd(&x, 1, multi);
    queue_all(&x, v, n, &nbatches, &nbounced);
    const char *xack[4] = {"XACK", LC_S_POSTS, LC_G_POSTS, entry_id};
    qcmd(&x, 4, xack);
    rc = exec_all(&x);
    if (rc == 0)
        lc_info("post=%s entry=%s rerouted recipients=%zu routed=%zu noroute=%zu bounced=%zu batches=%zu "
                "dns_ms=%ld", x.ids, entry_id, n, n - noroute - nbounced, noroute, nbounced, nbatches, dns_ms);
    rc = rc == -1 ? -1 : 0;
out:
    for (size_t i = 0; i < n; i++) {
        free(v[i].addr);
        free(v[i].hosts);
    }
    free(v);
    return rc;
}
