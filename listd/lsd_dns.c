/* lsd_dns: DMARC policy lookups for listd (RFC 7489 6.6.3), with c-ares driven by listd's epoll loop.
 *
 * Contract: lsd_dmarc_lookup(D) asks TXT _dmarc.D; the TXT records (character-strings of one record joined)
 * that start with v=DMARC1 count: exactly one: its p= applies; several: no policy (RFC 7489 6.6.3 step 5); none
 * (or NXDOMAIN / NODATA): the organizational domain's record is asked (TXT _dmarc.ORG), whose sp= applies when
 * present, else its p=. ORG is the last two labels of D (lsd_org_domain): an approximation, because listd has
 * no public suffix list; for D under a multi-label public suffix (example.co.uk) ORG is the suffix itself
 * (co.uk), which publishes no DMARC record, so such a subdomain without its own record gets no policy: the
 * cost is a From: kept that could have been rewritten, never a rewrite that should not be.
 * No policy is also the answer to a malformed reply (logged as a warning), a temporary failure (SERVFAIL,
 * REFUSED, timeout: logged), a name that is not a plain ASCII host name (IDN in UTF-8, address literals), and
 * a lookup that took longer than LSD_DMARC_WAIT_MS (answered then; the query goes on and fills the cache) —
 * the same choice Mailman makes: a DNS problem never holds a post back.
 *
 * Cache: one entry per queried name: the record found (p, sp), none, several, or a failure; records live for
 * their TTL (at least MIN_TTL, at most MAX_TTL), "no record" for NEG_TTL, failures for FAIL_TTL (so a dead
 * resolver costs one wait per domain a minute, not one per post). At most CACHE_MAX entries: when full it is
 * emptied. Expired entries are found and replaced on use.
 * Loop integration: ARES_OPT_SOCK_STATE_CB registers c-ares' sockets with lc_loop_watch; one loop timer follows
 * ares_timeout(); each lookup has its own deadline timer. dns.servers ("host:port,...") replaces the system
 * resolver (ares_set_servers_ports_csv).
 */
#include "lsd.h"

#include <arpa/nameser.h>
#include <ares.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include "lc_log.h"
#include "lc_loop.h"

#define TRY_MS 1000        /* per c-ares try */
#define TRIES 2
#define MIN_TTL 60
#define MAX_TTL 86400
#define NEG_TTL 300
#define FAIL_TTL 60
#define CACHE_BUCKETS 1024
#define CACHE_MAX 10000
#define NAME_MAX_LEN 253

enum ckind { C_REC, C_NOREC, C_MULTI, C_FAIL };

struct centry {
    struct centry *next;
    enum ckind kind;
    int p, sp;
    time_t expires;
    char why[96];         /* C_FAIL: what went wrong */
    char name[];          /* "_dmarc.D" */
};

struct lookup {
    struct lsd_dns *d;
    struct lookup *next, *prev;
    char dom[NAME_MAX_LEN + 1], org[NAME_MAX_LEN + 1];
    int stage;            /* 0: _dmarc.dom, 1: _dmarc.org */
    int done;             /* fn called */
    int inflight;         /* a query is out */
    uint64_t deadline;    /* loop timer */
    uint64_t finish;      /* loop timer that delivers the answer (never from inside c-ares) */
    enum lsd_dmarc pol;
    char why[200];
    lsd_dmarc_fn *fn;
    void *arg;
};

struct lsd_dns {
    struct lc_loop *loop;
    ares_channel ch;
    uint64_t timer;
    int nq;               /* queries in flight */
    struct lookup *lookups;
    struct centry *cache[CACHE_BUCKETS];
    int ncache;
    int destroying;
    int system_resolver; /* no dns.servers: special-use names are never sent out (special_use()) */
};

/* ---------------------------------------------------------------- cache */

static unsigned hash(const char *s)
{
    unsigned h = 5381;
    for (; *s; s++)
        h = h * 33 + (unsigned char)*s;
    return h % CACHE_BUCKETS;
}

static void cache_clear(struct lsd_dns *d)
{
    for (int i = 0; i < CACHE_BUCKETS; i++) {
        while (d->cache[i]) {
            struct centry *e = d->cache[i];
            d->cache[i] = e->next;
            free(e);
        }
    }
    d->ncache = 0;
}

static const struct centry *cache_get(struct lsd_dns *d, const char *name)
{
    time_t now = time(NULL);
    for (struct centry **pp = &d->cache[hash(name)]; *pp; pp = &(*pp)->next) {
        struct centry *e = *pp;
        if (strcmp(e->name, name) != 0)
            continue;
        if (e->expires > now)
            return e;
        *pp = e->next; /* expired */
        free(e);
        d->ncache--;
        return NULL;
    }
    return NULL;
}

static void cache_put(struct lsd_dns *d, const char *name, enum ckind kind, int p, int sp, int ttl, const char *why)
{
    struct centry *old;
    while ((old = (struct centry *)cache_get(d, name)) != NULL) { /* replace */
        for (struct centry **pp = &d->cache[hash(name)]; *pp; pp = &(*pp)->next) {
            if (*pp == old) {
                *pp = old->next;
                free(old);
                d->ncache--;
                break;
            }
        }
    }
    if (d->ncache >= CACHE_MAX)
        cache_clear(d);
    size_t n = strlen(name);
    struct centry *e = lc_calloc(1, sizeof *e + n + 1);
    memcpy(e->name, name, n + 1);
    e->kind = kind;
    e->p = p;
    e->sp = sp;
    e->expires = time(NULL) + ttl;
    snprintf(e->why, sizeof e->why, "%s", why ? why : "");
    unsigned h = hash(name);
    e->next = d->cache[h];
    d->cache[h] = e;
    d->ncache++;
}

/* ---------------------------------------------------------------- loop integration */

static void on_timer(struct lc_loop *loop, void *arg);

/* arm follows ares_timeout with the loop timer while queries are out. */
static void arm(struct lsd_dns *d)
{
    if (d->timer) {
        lc_loop_cancel(d->loop, d->timer);
        d->timer = 0;
    }
    if (d->nq == 0 || d->destroying)
        return;
    struct timeval max = {1, 0}, tv, *tvp = ares_timeout(d->ch, &max, &tv);
    long ms = tvp ? (long)tvp->tv_sec * 1000 + tvp->tv_usec / 1000 + 1 : 1000;
    d->timer = lc_loop_timer(d->loop, ms, on_timer, d);
}

static void on_timer(struct lc_loop *loop, void *arg)
{
    struct lsd_dns *d = arg;
    d->timer = 0;
    ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    arm(d);
}

static void on_fd(struct lc_loop *loop, int fd, int events, void *arg)
{
    struct lsd_dns *d = arg;
    ares_process_fd(d->ch, (events & LC_READ) ? fd : ARES_SOCKET_BAD, (events & LC_WRITE) ? fd : ARES_SOCKET_BAD);
    arm(d);
}

static void sock_state(void *arg, ares_socket_t fd, int readable, int writable)
{
    struct lsd_dns *d = arg;
    int mask = (readable ? LC_READ : 0) | (writable ? LC_WRITE : 0);
    if (lc_loop_watch(d->loop, fd, mask, mask ? on_fd : NULL, mask ? d : NULL) < 0 && mask)
        lc_warn("dns: cannot watch socket %d", (int)fd);
}

struct lsd_dns *lsd_dns_new(struct lc_loop *loop, const char *servers, char *err, size_t errlen)
{
    static int lib_ready;
    if (!lib_ready) {
        int st = ares_library_init(ARES_LIB_INIT_ALL);
        if (st != ARES_SUCCESS) {
            snprintf(err, errlen, "c-ares: %s", ares_strerror(st));
            return NULL;
        }
        lib_ready = 1;
    }
    struct lsd_dns *d = lc_calloc(1, sizeof *d);
    d->loop = loop;
    struct ares_options opt;
    memset(&opt, 0, sizeof opt);
    opt.timeout = TRY_MS;
    opt.tries = TRIES;
    opt.flags = ARES_FLAG_NOSEARCH;
    opt.sock_state_cb = sock_state;
    opt.sock_state_cb_data = d;
    int st = ares_init_options(&d->ch, &opt,
                               ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS | ARES_OPT_SOCK_STATE_CB);
    if (st != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares init: %s", ares_strerror(st));
        free(d);
        return NULL;
    }
    d->system_resolver = !servers || !*servers;
    if (servers && *servers && (st = ares_set_servers_ports_csv(d->ch, servers)) != ARES_SUCCESS) {
        snprintf(err, errlen, "dns.servers \"%s\": %s", servers, ares_strerror(st));
        ares_destroy(d->ch);
        free(d);
        return NULL;
    }
    return d;
}

/* ---------------------------------------------------------------- lookups */

static void query(struct lookup *l);

static void lookup_free(struct lookup *l)
{
    struct lsd_dns *d = l->d;
    if (l->deadline)
        lc_loop_cancel(d->loop, l->deadline);
    if (l->finish)
        lc_loop_cancel(d->loop, l->finish);
    if (l->prev)
        l->prev->next = l->next;
    else
        d->lookups = l->next;
    if (l->next)
        l->next->prev = l->prev;
    free(l);
}

/* answer calls the lookup's callback once. */
static void answer(struct lookup *l, enum lsd_dmarc pol, const char *why)
{
    if (l->done)
        return;
    l->done = 1;
    l->fn(l->arg, pol, why);
}

static const char *pname(int p)
{
    return p == LSD_DMARC_REJECT ? "reject" : p == LSD_DMARC_QUARANTINE ? "quarantine" : "none";
}

/* step decides with the cache what the lookup's next stage is: 1 decided (*pol, why), 0 a query is needed. */
static int step(struct lsd_dns *d, const char *dom, const char *org, int *stage, enum lsd_dmarc *pol, char *why,
                size_t whylen)
{
    for (;;) {
        char name[NAME_MAX_LEN + 16];
        snprintf(name, sizeof name, "_dmarc.%s", *stage == 0 ? dom : org);
        const struct centry *e = cache_get(d, name);
        if (!e)
            return 0;
        *pol = LSD_DMARC_NONE;
        switch (e->kind) {
        case C_REC: {
            int v = *stage == 1 && e->sp >= 0 ? e->sp : e->p;
            if (v < 0) {
                snprintf(why, whylen, "%s: no valid p= tag", name);
            } else {
                *pol = (enum lsd_dmarc)v;
                snprintf(why, whylen, "%s=%s at %s", *stage == 1 && e->sp >= 0 ? "sp" : "p", pname(v), name);
            }
            return 1;
        }
        case C_MULTI:
            snprintf(why, whylen, "%s: several DMARC records (none applies)", name);
            return 1;
        case C_FAIL:
            snprintf(why, whylen, "%s: %s", name, e->why);
            return 1;
        case C_NOREC:
            if (*stage == 0 && *org) {
                *stage = 1;
                continue;
            }
            snprintf(why, whylen, "no DMARC record");
            return 1;
        }
    }
}

/* answer_ttl: the smallest TTL of the TXT records in the answer section (dflt if none). */
static int answer_ttl(const unsigned char *a, int alen, int dflt)
{
    if (!a || alen < 12)
        return dflt;
    int qd = a[4] << 8 | a[5], an = a[6] << 8 | a[7], off = 12, ttl = -1;
    for (int i = 0; i < qd + an; i++) {
        for (int guard = 0; guard < 128; guard++) { /* skip a name */
            if (off >= alen)
                return ttl < 0 ? dflt : ttl;
            unsigned n = a[off];
            if (n == 0) {
                off++;
                break;
            }
            if ((n & 0xC0) == 0xC0) {
                off += 2;
                break;
            }
            off += 1 + (int)n;
        }
        if (i < qd) {
            off += 4;
            continue;
        }
        if (off + 10 > alen)
            break;
        int type = a[off] << 8 | a[off + 1];
        uint32_t t = (uint32_t)a[off + 4] << 24 | (uint32_t)a[off + 5] << 16 | (uint32_t)a[off + 6] << 8 | a[off + 7];
        if (type == ns_t_txt && (ttl < 0 || (t < 0x7fffffffu && (int)t < ttl)))
            ttl = t > 0x7fffffffu ? 0 : (int)t;
        off += 10 + (a[off + 8] << 8 | a[off + 9]);
    }
    return ttl < 0 ? dflt : ttl;
}

/* store turns a TXT answer for name into a cache entry. */
static void store(struct lsd_dns *d, const char *name, int status, unsigned char *abuf, int alen)
{
    if (status == ARES_ENODATA || status == ARES_ENOTFOUND) {
        cache_put(d, name, C_NOREC, -1, -1, NEG_TTL, NULL);
        return;
    }
    if (status != ARES_SUCCESS) {
        lc_info("dmarc %s: %s: no policy applied", name, ares_strerror(status));
        cache_put(d, name, C_FAIL, -1, -1, FAIL_TTL, ares_strerror(status));
        return;
    }
    struct ares_txt_ext *txt = NULL;
    int st = ares_parse_txt_reply_ext(abuf, alen, &txt);
    if (st == ARES_ENODATA) {
        cache_put(d, name, C_NOREC, -1, -1, NEG_TTL, NULL);
        return;
    }
    if (st != ARES_SUCCESS) {
        lc_warn("dmarc %s: malformed answer (%s): no policy applied", name, ares_strerror(st));
        cache_put(d, name, C_FAIL, -1, -1, NEG_TTL, "malformed answer");
        return;
    }
    int found = 0;
    struct lsd_dmarc_rec rec = {-1, -1}, one;
    char buf[4096];
    size_t n = 0;
    int truncated = 0;
    for (struct ares_txt_ext *t = txt; t; t = t->next) { /* records: the strings of one are joined */
        if (t->record_start && t != txt) {
            if (!truncated && lsd_dmarc_parse(buf, n, &one) == 0 && found++ == 0)
                rec = one;
            n = 0;
            truncated = 0;
        }
        if (n + t->length > sizeof buf)
            truncated = 1;
        else {
            memcpy(buf + n, t->txt, t->length);
            n += t->length;
        }
    }
    if (txt && !truncated && lsd_dmarc_parse(buf, n, &one) == 0 && found++ == 0)
        rec = one;
    ares_free_data(txt);
    int ttl = answer_ttl(abuf, alen, NEG_TTL);
    ttl = ttl < MIN_TTL ? MIN_TTL : ttl > MAX_TTL ? MAX_TTL : ttl;
    if (found == 0)
        cache_put(d, name, C_NOREC, -1, -1, NEG_TTL, NULL);
    else if (found > 1)
        cache_put(d, name, C_MULTI, -1, -1, ttl, NULL);
    else
        cache_put(d, name, C_REC, rec.p, rec.sp, ttl, NULL);
}

static void on_finish(struct lc_loop *loop, void *arg)
{
    struct lookup *l = arg;
    l->finish = 0;
    answer(l, l->pol, l->why);
    lookup_free(l);
}

static void qcb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct lookup *l = arg;
    struct lsd_dns *d = l->d;
    d->nq--;
    l->inflight = 0;
    if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
        answer(l, LSD_DMARC_NONE, "resolver stopped");
        lookup_free(l);
        return;
    }
    char name[NAME_MAX_LEN + 16];
    snprintf(name, sizeof name, "_dmarc.%s", l->stage == 0 ? l->dom : l->org);
    store(d, name, status, abuf, alen);
    if (step(d, l->dom, l->org, &l->stage, &l->pol, l->why, sizeof l->why) || l->done)
        l->finish = lc_loop_timer(d->loop, 0, on_finish, l); /* answered (or the deadline passed) */
    else
        query(l);
}

static void query(struct lookup *l)
{
    char name[NAME_MAX_LEN + 16];
    snprintf(name, sizeof name, "_dmarc.%s", l->stage == 0 ? l->dom : l->org);
    lc_debug("dns query TXT %s", name);
    l->inflight = 1;
    l->d->nq++;
    ares_query(l->d->ch, name, ns_c_in, ns_t_txt, qcb, l); /* may call qcb at once */
}

static void on_deadline(struct lc_loop *loop, void *arg)
{
    struct lookup *l = arg;
    l->deadline = 0;
    lc_info("dmarc %s: no answer in %d ms: no policy applied", l->dom, LSD_DMARC_WAIT_MS);
    answer(l, LSD_DMARC_NONE, "timeout");
    /* the query goes on and fills the cache; qcb frees the lookup */
}

/* name_ok: a plain ASCII host name we can ask about. */
static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NAME_MAX_LEN - 7 || s[0] == '.' || strstr(s, ".."))
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
              *s == '.' || *s == '_'))
            return 0;
    return 1;
}

/* special_use tells whether a name is under a special-use top-level domain (RFC 2606, RFC 6761: test, example,
 * invalid, localhost), which has no public DNS: with the system resolver such names are not sent out at all.
 * With dns.servers set (a local resolver, as in the tests) they are looked up like any other. */
static int special_use(const char *name)
{
    static const char *const tlds[] = {"test", "example", "invalid", "localhost"};
    size_t n = strlen(name);
    while (n && name[n - 1] == '.')
        n--;
    for (size_t i = 0; i < sizeof tlds / sizeof tlds[0]; i++) {
        size_t t = strlen(tlds[i]);
        if (n >= t && strncasecmp(name + n - t, tlds[i], t) == 0 && (n == t || name[n - t - 1] == '.'))
            return 1;
    }
    return 0;
}

int lsd_dmarc_lookup(struct lsd_dns *d, const char *domain, lsd_dmarc_fn *fn, void *arg, enum lsd_dmarc *policy,
                     char *why, size_t whylen)
{
    *policy = LSD_DMARC_NONE;
    if (!name_ok(domain)) {
        snprintf(why, whylen, "not a plain host name: no lookup");
        return LSD_DONE;
    }
    if (d->system_resolver && special_use(domain)) {
        snprintf(why, whylen, "special-use domain: no lookup");
        return LSD_DONE;
    }
    char dom[NAME_MAX_LEN + 1], org[NAME_MAX_LEN + 1];
    size_t n = strlen(domain);
    while (n && domain[n - 1] == '.')
        n--;
    for (size_t i = 0; i < n; i++)
        dom[i] = (char)((domain[i] >= 'A' && domain[i] <= 'Z') ? domain[i] + 32 : domain[i]);
    dom[n] = 0;
    lsd_org_domain(dom, org, sizeof org);
    int stage = 0;
    if (step(d, dom, org, &stage, policy, why, whylen))
        return LSD_DONE;
    struct lookup *l = lc_calloc(1, sizeof *l);
    l->d = d;
    memcpy(l->dom, dom, sizeof dom);
    memcpy(l->org, org, sizeof org);
    l->stage = stage;
    l->fn = fn;
    l->arg = arg;
    l->next = d->lookups;
    if (l->next)
        l->next->prev = l;
    d->lookups = l;
    l->deadline = lc_loop_timer(d->loop, LSD_DMARC_WAIT_MS, on_deadline, l);
    query(l);
    arm(d);
    return LSD_PENDING;
}

void lsd_dns_free(struct lsd_dns *d)
{
    if (!d)
        return;
    d->destroying = 1;
    if (d->timer)
        lc_loop_cancel(d->loop, d->timer);
    d->timer = 0;
    ares_destroy(d->ch); /* every pending query's callback runs now (ARES_EDESTRUCTION) */
    while (d->lookups) { /* those whose answer was about to be delivered */
        answer(d->lookups, LSD_DMARC_NONE, "resolver stopped");
        lookup_free(d->lookups);
    }
    cache_clear(d);
    free(d);
}
