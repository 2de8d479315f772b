/* exp_dns: MX and A resolution for the domains of a post, with c-ares, and a cache by TTL.
 *
 * For each domain: query MX. NOERROR with records: sort by preference (then name), drop duplicates, keep the
 * best EXP_DNS_MAX_MX; a single "." record is an RFC 7505 null MX. NOERROR without records (NODATA): the
 * implicit MX of RFC 5321 section 5.1, the domain itself at preference 0. NXDOMAIN: the domain does not exist.
 * Then every MX host's A records (each host name is looked up once, however many domains point to it); the
 * route is "NAME=IP[,IP] NAME=IP ..." in preference order, over the hosts that have an address. Temporary
 * failures (SERVFAIL, REFUSED, timeouts) are tried EXP_DNS_ATTEMPTS times with a short pause; a domain whose
 * every MX host failed that way is EXP_ROUTE_TEMP, one whose hosts have no address at all is EXP_ROUTE_NOHOST.
 *
 * Cache: one entry per domain (its route) and per host name (its addresses). A domain's route lives for the
 * smallest TTL among its MX answer and the A answers used, at most EXP_DNS_TTL_MAX; NXDOMAIN, NODATA for an
 * MX host and "no address" live EXP_DNS_NEG_TTL; temporary failures are not cached (a route that lost only
 * some hosts to a temporary failure lives at most 60 s). Within one exp_dns_resolve call every answer is
 * used, even one with TTL 0. Expired entries are dropped at the start of each call; past EXP_DNS_CACHE_MAX
 * names the cache is emptied.
 *
 * Driving: ARES_OPT_SOCK_STATE_CB keeps the socket list, poll() waits (at most 100 ms, so *stop and the
 * caller's tick are seen), ares_process_fd() reads and handles timeouts. Queries in flight are limited by a
 * window that starts at WINDOW_START, grows by one per answer up to EXP_DNS_INFLIGHT and halves on a timeout;
 * the rest wait in a FIFO. (Measured against dnsmasq: 200 or more queries in flight overflow a server's
 * default 212 KB socket buffer, and every dropped query costs a 2 s timeout; 128 never did.)
 * IPv4 only (the sender connects to A records).
 */
#include "exp.h"

#include <arpa/nameser.h>
#include <ares.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lc_buf.h"
#include "lc_log.h"

#define TIMEOUT_MS 2000  /* per c-ares try */
#define RETRY_PAUSE_MS 250
#define PARTIAL_TTL 60
#define MAX_SOCKS 64
#define WINDOW_START 64 /* queries in flight at first; +1 per answer up to EXP_DNS_INFLIGHT, halved on a timeout */
#define WINDOW_MIN 16
#define SOCK_RCVBUF (1 << 20) /* answers to EXP_DNS_INFLIGHT queries arrive in a burst */

enum ent_state { ST_IDLE, ST_PENDING, ST_DONE };
enum host_status { H_OK, H_NONE, H_TEMP };

struct exp_dns;
struct dom;

struct host { /* an MX host name and its IPv4 addresses */
    struct exp_dns *owner;
    char *name;
    enum ent_state state;
    enum host_status status;
    char *ips; /* "IP[,IP...]" when H_OK */
    int ttl;   /* seconds */
    int64_t expires;
    unsigned round; /* resolve call that produced the answer */
    int attempts;
    struct dom **waiters;
    size_t nwait, capwait;
};

struct mxent {
    int pref;
    struct host *h;
};

struct dom { /* a recipient domain and its route */
    struct exp_dns *owner;
    char *name;
    enum ent_state state;
    enum exp_route_status status;
    char *hosts;
    int64_t expires;
    int attempts;
    int mx_ttl;
    struct mxent *mx;
    int nmx;
    int waiting; /* MX hosts whose A lookup is still pending */
};

struct job {
    int is_mx;
    void *ent;
    int64_t due;
};

struct exp_dns {
    ares_channel ch;
    struct exp_map *doms, *hosts;
    struct job *ready; /* FIFO: ready[head..nready) */
    size_t head, nready, capready;
    struct job *later; /* retries waiting for their time */
    size_t nlater, caplater;
    int inflight;
    int window; /* in-flight limit now */
    size_t busy; /* domains of the current call not yet done */
    unsigned round;
    struct exp_dns_stats *stats;
    struct pollfd socks[MAX_SOCKS];
    int nsocks;
};

int64_t exp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sock_state(void *arg, ares_socket_t fd, int readable, int writable)
{
    struct exp_dns *d = arg;
    short ev = (short)((readable ? POLLIN : 0) | (writable ? POLLOUT : 0));
    for (int i = 0; i < d->nsocks; i++) {
        if (d->socks[i].fd != fd)
            continue;
        if (ev)
            d->socks[i].events = ev;
        else
            d->socks[i] = d->socks[--d->nsocks];
        return;
    }
    if (!ev)
        return;
    if (d->nsocks == MAX_SOCKS)
        lc_panic("exp_dns: more than %d c-ares sockets", MAX_SOCKS);
    d->socks[d->nsocks++] = (struct pollfd){.fd = fd, .events = ev};
}

struct exp_dns *exp_dns_new(const char *servers, char *err, size_t errlen)
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
    struct exp_dns *d = lc_calloc(1, sizeof *d);
    struct ares_options opt;
    memset(&opt, 0, sizeof opt);
    opt.timeout = TIMEOUT_MS;
    opt.tries = 1; /* one round over the servers per attempt; we retry ourselves, with a pause */
    opt.flags = ARES_FLAG_NOSEARCH;
    opt.sock_state_cb = sock_state;
    opt.sock_state_cb_data = d;
    opt.socket_receive_buffer_size = SOCK_RCVBUF;
    int mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS | ARES_OPT_SOCK_STATE_CB | ARES_OPT_SOCK_RCVBUF;
    int st = ares_init_options(&d->ch, &opt, mask);
    if (st != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares init: %s", ares_strerror(st));
        free(d);
        return NULL;
    }
    if (servers && *servers) {
        st = ares_set_servers_ports_csv(d->ch, servers);
        if (st != ARES_SUCCESS) {
            snprintf(err, errlen, "dns.servers \"%s\": %s", servers, ares_strerror(st));
            ares_destroy(d->ch);
            free(d);
            return NULL;
        }
    }
    d->doms = exp_map_new();
    d->hosts = exp_map_new();
    d->window = WINDOW_START;
    return d;
}

static void free_host(void *val, void *arg)
{
    struct host *h = val;
    free(h->name);
    free(h->ips);
    free(h->waiters);
    free(h);
}

static void free_dom(void *val, void *arg)
{
    struct dom *m = val;
    free(m->name);
    free(m->hosts);
    free(m->mx);
    free(m);
}

static int keep_none(void *val, void *arg)
{
    return 0;
}

void exp_dns_free(struct exp_dns *d)
{
    if (!d)
        return;
    ares_destroy(d->ch); /* callbacks run now with ARES_EDESTRUCTION: entries must still exist */
    exp_map_filter(d->doms, keep_none, free_dom, NULL);
    exp_map_filter(d->hosts, keep_none, free_host, NULL);
    exp_map_free(d->doms);
    exp_map_free(d->hosts);
    free(d->ready);
    free(d->later);
    free(d);
}

/* ---- jobs ---- */

static void push_ready(struct exp_dns *d, int is_mx, void *ent)
{
    if (d->head > 0 && d->head == d->nready)
        d->head = d->nready = 0;
    if (d->nready == d->capready) {
        if (d->head > d->capready / 2) {
            memmove(d->ready, d->ready + d->head, (d->nready - d->head) * sizeof *d->ready);
            d->nready -= d->head;
            d->head = 0;
        } else {
            d->capready = d->capready ? d->capready * 2 : 256;
            d->ready = lc_realloc(d->ready, d->capready * sizeof *d->ready);
        }
    }
    d->ready[d->nready++] = (struct job){is_mx, ent, 0};
}

static void push_later(struct exp_dns *d, int is_mx, void *ent, int64_t due)
{
    if (d->nlater == d->caplater) {
        d->caplater = d->caplater ? d->caplater * 2 : 64;
        d->later = lc_realloc(d->later, d->caplater * sizeof *d->later);
    }
    d->later[d->nlater++] = (struct job){is_mx, ent, due};
}

static void mx_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen);
static void a_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen);

/* issue moves due retries to the FIFO and starts queries up to the in-flight limit. */
static void issue(struct exp_dns *d, int64_t now)
{
    for (size_t i = 0; i < d->nlater;) {
        if (d->later[i].due <= now) {
            push_ready(d, d->later[i].is_mx, d->later[i].ent);
            d->later[i] = d->later[--d->nlater];
        } else {
            i++;
        }
    }
    while (d->inflight < d->window && d->head < d->nready) {
        struct job j = d->ready[d->head++];
        d->inflight++;
        d->stats->queries++;
        if (j.is_mx) {
            struct dom *m = j.ent;
            lc_debug("dns query MX %s", m->name);
            ares_query(d->ch, m->name, ns_c_in, ns_t_mx, mx_cb, m);
        } else {
            struct host *h = j.ent;
            lc_debug("dns query A %s", h->name);
            ares_query(d->ch, h->name, ns_c_in, ns_t_a, a_cb, h);
        }
    }
}

/* ---- answers ---- */

/* answered adapts the in-flight window: a timeout most likely means a query or answer was dropped in a
 * full socket buffer (ours or the server's), so back off; every answer lets the window grow by one. */
static void answered(struct exp_dns *d, int status)
{
    if (status == ARES_ETIMEOUT) {
        d->window = d->window / 2 < WINDOW_MIN ? WINDOW_MIN : d->window / 2;
    } else if (d->window < EXP_DNS_INFLIGHT) {
        d->window++;
    }
}

static int temporary(int status)
{
    return status != ARES_SUCCESS && status != ARES_ENODATA && status != ARES_ENOTFOUND &&
           status != ARES_EBADNAME;
}

/* skip_name returns the offset after the (possibly compressed) name at off, or -1. */
static int skip_name(const unsigned char *a, int alen, int off)
{
    for (int guard = 0; guard < 128 && off < alen; guard++) {
        unsigned n = a[off];
        if (n == 0)
            return off + 1;
        if ((n & 0xC0) == 0xC0)
            return off + 2 <= alen ? off + 2 : -1;
        if (n & 0xC0)
            return -1;
        off += 1 + (int)n;
    }
    return -1;
}

/* answer_ttl returns the smallest TTL of the answer records of type want (dflt if there is none). */
static int answer_ttl(const unsigned char *a, int alen, int want, int dflt)
{
    if (!a || alen < 12)
        return dflt;
    int qd = a[4] << 8 | a[5], an = a[6] << 8 | a[7], off = 12, ttl = -1;
    for (int i = 0; i < qd; i++) {
        off = skip_name(a, alen, off);
        if (off < 0 || off + 4 > alen)
            return dflt;
        off += 4;
    }
    for (int i = 0; i < an; i++) {
        off = skip_name(a, alen, off);
        if (off < 0 || off + 10 > alen)
            break;
        int type = a[off] << 8 | a[off + 1];
        uint32_t t = (uint32_t)a[off + 4] << 24 | (uint32_t)a[off + 5] << 16 | (uint32_t)a[off + 6] << 8 | a[off + 7];
        int rdlen = a[off + 8] << 8 | a[off + 9];
        if (type == want) {
            int v = t > 0x7fffffffu ? 0 : (int)(t > EXP_DNS_TTL_MAX ? EXP_DNS_TTL_MAX : t); /* RFC 2181 8 */
            if (ttl < 0 || v < ttl)
                ttl = v;
        }
        off += 10 + rdlen;
    }
    return ttl < 0 ? dflt : ttl;
}

/* host_name_ok: an MX target we can use as a token in the hosts field (LDH, dots, underscores). */
static int host_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253)
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '.' || *p == '_'))
            return 0;
    return 1;
}

static void finish_dom(struct exp_dns *d, struct dom *m, enum exp_route_status st, int ttl)
{
    free(m->hosts);
    m->hosts = NULL;
    if (st == EXP_ROUTE_OK) {
        struct lc_buf *b = lc_buf_new((size_t)EXP_DNS_MAX_MX * (256 + EXP_DNS_MAX_IPS * 16) + 16);
        int any_temp = 0;
        ttl = m->mx_ttl;
        for (int i = 0; i < m->nmx; i++) {
            struct host *h = m->mx[i].h;
            if (h->status == H_OK) {
                lc_buf_printf(b, "%s%s=%s", lc_buf_len(b) ? " " : "", h->name, h->ips);
                if (h->ttl < ttl)
                    ttl = h->ttl;
            } else if (h->status == H_TEMP) {
                any_temp = 1;
            }
        }
        if (lc_buf_len(b) > 0) {
            m->hosts = lc_buf_steal(b, NULL);
            if (any_temp && ttl > PARTIAL_TTL)
                ttl = PARTIAL_TTL;
        } else if (any_temp) {
            st = EXP_ROUTE_TEMP;
            ttl = 0;
        } else {
            st = EXP_ROUTE_NOHOST;
            ttl = EXP_DNS_NEG_TTL;
        }
        lc_buf_free(b);
    }
    if (ttl > EXP_DNS_TTL_MAX)
        ttl = EXP_DNS_TTL_MAX;
    m->status = st;
    m->expires = exp_now_ms() + (int64_t)ttl * 1000;
    m->state = ST_DONE;
    free(m->mx);
    m->mx = NULL;
    m->nmx = 0;
    if (d->busy == 0)
        lc_panic("exp_dns: finished domain %s twice", m->name);
    d->busy--;
    lc_debug("dns domain %s status=%d hosts=%s ttl=%d", m->name, (int)st, m->hosts ? m->hosts : "", ttl);
}

static int host_ready(const struct exp_dns *d, const struct host *h, int64_t now)
{
    return h->state == ST_DONE && (h->expires > now || h->round == d->round);
}

/* want_host adds host name to m's MX list (looking it up unless cached). */
static void want_host(struct exp_dns *d, struct dom *m, int pref, const char *name, int64_t now)
{
    for (int i = 0; i < m->nmx; i++)
        if (strcmp(m->mx[i].h->name, name) == 0)
            return; /* same host at a worse preference */
    struct host *h = exp_map_get(d->hosts, name);
    if (!h) {
        h = lc_calloc(1, sizeof *h);
        h->owner = d;
        h->name = lc_strdup(name);
        exp_map_put(d->hosts, h->name, h);
    }
    m->mx[m->nmx++] = (struct mxent){pref, h};
    if (host_ready(d, h, now))
        return;
    if (h->state != ST_PENDING) {
        h->state = ST_PENDING;
        h->attempts = 0;
        push_ready(d, 0, h);
    }
    if (h->nwait == h->capwait) {
        h->capwait = h->capwait ? h->capwait * 2 : 4;
        h->waiters = lc_realloc(h->waiters, h->capwait * sizeof *h->waiters);
    }
    h->waiters[h->nwait++] = m;
    m->waiting++;
}

static int cmp_mx(const void *a, const void *b)
{
    const struct ares_mx_reply *x = *(struct ares_mx_reply *const *)a, *y = *(struct ares_mx_reply *const *)b;
    if (x->priority != y->priority)
        return x->priority < y->priority ? -1 : 1;
    return strcmp(x->host, y->host);
}

/* route_mx turns an MX answer into the domain's host list; returns 0, or 1 when it already finished m. */
static int route_mx(struct exp_dns *d, struct dom *m, unsigned char *abuf, int alen, int64_t now)
{
    struct ares_mx_reply *list = NULL;
    int st = ares_parse_mx_reply(abuf, alen, &list);
    if (st == ARES_ENODATA) { /* e.g. only a CNAME came back: as NODATA */
        m->mx = lc_calloc(1, sizeof *m->mx);
        m->mx_ttl = EXP_DNS_NEG_TTL;
        want_host(d, m, 0, m->name, now);
        return 0;
    }
    if (st != ARES_SUCCESS) {
        lc_warn("dns MX %s: bad answer: %s", m->name, ares_strerror(st));
        finish_dom(d, m, EXP_ROUTE_TEMP, 0);
        return 1;
    }
    size_t n = 0;
    for (struct ares_mx_reply *r = list; r; r = r->next)
        n++;
    struct ares_mx_reply **v = lc_calloc(n, sizeof *v);
    n = 0;
    for (struct ares_mx_reply *r = list; r; r = r->next) {
        size_t len = strlen(r->host);
        if (len > 0 && r->host[len - 1] == '.')
            r->host[len - 1] = 0;
        for (char *p = r->host; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p + 32);
        v[n++] = r;
    }
    m->mx_ttl = answer_ttl(abuf, alen, ns_t_mx, EXP_DNS_NEG_TTL);
    if (n == 1 && (v[0]->host[0] == 0 || strcmp(v[0]->host, ".") == 0)) {
        free(v);
        ares_free_data(list);
        finish_dom(d, m, EXP_ROUTE_NULLMX, m->mx_ttl);
        return 1;
    }
    qsort(v, n, sizeof *v, cmp_mx);
    m->mx = lc_calloc(EXP_DNS_MAX_MX, sizeof *m->mx);
    for (size_t i = 0; i < n && m->nmx < EXP_DNS_MAX_MX; i++) {
        if (!host_name_ok(v[i]->host)) { /* "." among other MX records, or an unusable name: skip it */
            lc_debug("dns MX %s: skipping target \"%s\"", m->name, v[i]->host);
            continue;
        }
        want_host(d, m, v[i]->priority, v[i]->host, now);
    }
    free(v);
    ares_free_data(list);
    if (m->nmx == 0) {
        finish_dom(d, m, EXP_ROUTE_NOHOST, EXP_DNS_NEG_TTL);
        return 1;
    }
    return 0;
}

static void mx_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dom *m = arg;
    struct exp_dns *d = m->owner;
    d->inflight--;
    if (status == ARES_ECANCELLED || status == ARES_EDESTRUCTION) {
        m->state = ST_IDLE;
        return;
    }
    answered(d, status);
    int64_t now = exp_now_ms();
    if (temporary(status)) {
        if (++m->attempts < EXP_DNS_ATTEMPTS) {
            lc_debug("dns MX %s: %s, trying again", m->name, ares_strerror(status));
            push_later(d, 1, m, now + RETRY_PAUSE_MS * m->attempts);
        } else {
            lc_warn("dns MX %s: %s after %d attempts", m->name, ares_strerror(status), m->attempts);
            finish_dom(d, m, EXP_ROUTE_TEMP, 0);
        }
        return;
    }
    if (status == ARES_ENOTFOUND || status == ARES_EBADNAME) {
        finish_dom(d, m, EXP_ROUTE_NXDOMAIN, EXP_DNS_NEG_TTL);
        return;
    }
    if (status == ARES_ENODATA) { /* RFC 5321 5.1: no MX records: the domain is its own MX */
        m->mx = lc_calloc(1, sizeof *m->mx);
        m->mx_ttl = EXP_DNS_NEG_TTL;
        want_host(d, m, 0, m->name, now);
    } else if (route_mx(d, m, abuf, alen, now)) {
        return;
    }
    if (m->waiting == 0)
        finish_dom(d, m, EXP_ROUTE_OK, 0);
}

static void a_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct host *h = arg;
    struct exp_dns *d = h->owner;
    d->inflight--;
    if (status == ARES_ECANCELLED || status == ARES_EDESTRUCTION) {
        h->state = ST_IDLE;
        return;
    }
    answered(d, status);
    int64_t now = exp_now_ms();
    if (temporary(status) && ++h->attempts < EXP_DNS_ATTEMPTS) {
        lc_debug("dns A %s: %s, trying again", h->name, ares_strerror(status));
        push_later(d, 0, h, now + RETRY_PAUSE_MS * h->attempts);
        return;
    }
    free(h->ips);
    h->ips = NULL;
    h->status = H_NONE;
    h->ttl = EXP_DNS_NEG_TTL;
    if (temporary(status)) {
        lc_warn("dns A %s: %s after %d attempts", h->name, ares_strerror(status), h->attempts);
        h->status = H_TEMP;
        h->ttl = 0;
    } else if (status == ARES_SUCCESS) {
        struct ares_addrttl at[EXP_DNS_MAX_IPS];
        int nat = EXP_DNS_MAX_IPS;
        if (ares_parse_a_reply(abuf, alen, NULL, at, &nat) == ARES_SUCCESS && nat > 0) {
            char buf[EXP_DNS_MAX_IPS * 16 + 1];
            size_t len = 0;
            int ttl = EXP_DNS_TTL_MAX;
            for (int i = 0; i < nat; i++) {
                char ip[16];
                if (!ares_inet_ntop(AF_INET, &at[i].ipaddr, ip, sizeof ip))
                    continue;
                len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", len ? "," : "", ip);
                int t = at[i].ttl < 0 ? 0 : at[i].ttl;
                if (t < ttl)
                    ttl = t;
            }
            if (len > 0) {
                h->ips = lc_strdup(buf);
                h->status = H_OK;
                h->ttl = ttl;
            }
        }
    }
    h->state = ST_DONE;
    h->round = d->round;
    h->expires = now + (int64_t)h->ttl * 1000;
    /* Tell the domains waiting for this host; take the list first, finish_dom may not touch it but a later
     * want_host may grow it again. */
    struct dom **w = h->waiters;
    size_t nw = h->nwait;
    h->waiters = NULL;
    h->nwait = h->capwait = 0;
    for (size_t i = 0; i < nw; i++)
        if (--w[i]->waiting == 0 && w[i]->state == ST_PENDING)
            finish_dom(d, w[i], EXP_ROUTE_OK, 0);
    free(w);
}

/* ---- the call ---- */

struct purge_arg {
    int64_t now;
    int all;
};

static int keep_dom(void *val, void *arg)
{
    const struct dom *m = val;
    const struct purge_arg *p = arg;
    return !p->all && m->state == ST_DONE && m->expires > p->now;
}

static int keep_host(void *val, void *arg)
{
    const struct host *h = val;
    const struct purge_arg *p = arg;
    return !p->all && h->state == ST_DONE && h->expires > p->now;
}

static void purge(struct exp_dns *d, int all)
{
    struct purge_arg p = {exp_now_ms(), all};
    if (exp_map_count(d->doms) + exp_map_count(d->hosts) > EXP_DNS_CACHE_MAX)
        p.all = 1;
    exp_map_filter(d->doms, keep_dom, free_dom, &p);
    exp_map_filter(d->hosts, keep_host, free_host, &p);
}

/* cancel stops every query (on *stop) and forgets whatever was half done. */
static void cancel(struct exp_dns *d)
{
    ares_cancel(d->ch);
    d->head = d->nready = d->nlater = 0;
    d->busy = 0;
    purge(d, 0); /* drops every entry not ST_DONE */
}

static void set_literal(struct exp_dns *d, struct dom *m, int64_t now)
{
    /* "[1.2.3.4]": deliver to that address. */
    size_t n = strlen(m->name);
    free(m->hosts);
    m->hosts = lc_malloc(2 * n + 2);
    snprintf(m->hosts, 2 * n + 2, "%s=%.*s", m->name, (int)(n - 2), m->name + 1);
    m->status = EXP_ROUTE_OK;
    m->state = ST_DONE;
    m->expires = now + (int64_t)EXP_DNS_TTL_MAX * 1000;
}

int exp_dns_resolve(struct exp_dns *d, const char *const *domains, size_t n, struct exp_route *routes,
                    struct exp_dns_stats *stats, exp_dns_tick_fn *tick, void *tick_arg,
                    volatile sig_atomic_t *stop)
{
    memset(stats, 0, sizeof *stats);
    d->stats = stats;
    d->round++;
    purge(d, 0);
    int64_t now = exp_now_ms();
    struct dom **ents = lc_malloc((n ? n : 1) * sizeof *ents);
    for (size_t i = 0; i < n; i++) {
        struct dom *m = exp_map_get(d->doms, domains[i]);
        if (!m) {
            m = lc_calloc(1, sizeof *m);
            m->owner = d;
            m->name = lc_strdup(domains[i]);
            exp_map_put(d->doms, m->name, m);
        }
        ents[i] = m;
        if (m->state == ST_DONE && m->expires > now) {
            stats->cached++;
            continue;
        }
        if (m->name[0] == '[') {
            set_literal(d, m, now);
            continue;
        }
        m->state = ST_PENDING;
        m->attempts = 0;
        m->waiting = 0;
        d->busy++;
        push_ready(d, 1, m);
    }
    int rc = 0;
    while (d->busy > 0) {
        if (*stop) {
            cancel(d);
            rc = 1;
            break;
        }
        now = exp_now_ms();
        issue(d, now);
        if (d->busy == 0)
            break;
        if (d->inflight == 0 && d->head == d->nready && d->nlater == 0)
            lc_panic("exp_dns: %zu domains pending with nothing in flight", d->busy);
        long wait = 100;
        struct timeval maxtv = {0, 100000}, tv, *tvp = ares_timeout(d->ch, &maxtv, &tv);
        if (tvp)
            wait = tvp->tv_sec * 1000 + tvp->tv_usec / 1000;
        for (size_t i = 0; i < d->nlater; i++)
            if (d->later[i].due - now < wait)
                wait = d->later[i].due - now;
        if (wait < 0)
            wait = 0;
        struct pollfd pf[MAX_SOCKS];
        int np = d->nsocks;
        memcpy(pf, d->socks, (size_t)np * sizeof *pf);
        int r = poll(pf, (nfds_t)np, (int)wait);
        if (r > 0) {
            for (int i = 0; i < np; i++) {
                if (!pf[i].revents)
                    continue;
                ares_socket_t rfd = (pf[i].revents & (POLLIN | POLLERR | POLLHUP)) ? pf[i].fd : ARES_SOCKET_BAD;
                ares_socket_t wfd = (pf[i].revents & (POLLOUT | POLLERR | POLLHUP)) ? pf[i].fd : ARES_SOCKET_BAD;
                ares_process_fd(d->ch, rfd, wfd);
            }
        }
        ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* timeouts */
        if (tick)
            tick(tick_arg);
    }
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) {
            routes[i].status = ents[i]->status;
            routes[i].hosts = ents[i]->status == EXP_ROUTE_OK ? ents[i]->hosts : NULL;
        }
    }
    free(ents);
    d->stats = NULL;
    return rc;
}
