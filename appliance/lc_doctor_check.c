/* lc_doctor_check: the checks of `listcast doctor DOMAIN` (issue 7 item 3), as the lc_doctor library shared by the
 * command (lc_doctor.c) and the web UI (webui/web_doctor.c): bulk-sender compliance of a sending domain: MX, SPF,
 * DKIM (every local key and extra selector), DMARC, forward-confirmed reverse DNS of the sending addresses and
 * STARTTLS of the MX hosts, each ok / warn / fail with what is missing and the exact record to publish.
 *
 * Contract: DNS through c-ares against dns.servers (empty: the system resolver), one query at a time, each
 * bounded by DNS_TIMEOUT_MS; TXT records are parsed by lc_doctor_rec.c (bounded; a malformed answer is a
 * warn/fail naming what is wrong, never a crash). STARTTLS: TCP to each MX host's first IPv4 address at
 * sender.mx_port, banner, EHLO smtp.hostname, STARTTLS, a GnuTLS handshake (certificate verification against
 * the system trust store is reported, not required), every step bounded by SMTP_TIMEOUT_MS. With a budget
 * (lc_doctor_opts.budget_ms) or a cancel flag every one of those waits is also cut to what is left of the
 * budget, so a whole run is bounded. The sending addresses are given by the caller (none given: the SPF and
 * reverse DNS checks say they cannot check). A run keeps its state in one heap block (no static buffers), so
 * runs may go on in parallel threads; the caller has called ares_library_init.
 * Limits: IPv4 sending addresses only (IPv6 is reported as not checked); SPF include: and redirect= are not
 * followed (an address found only there is a warn); at most MAX_SEL selectors, MAX_IPS addresses, MAX_MX MX
 * hosts and MAX_CHECKS checks.
 */
#include "lc_dkim.h"
#include "lc_doctor.h"
#include "lc_json.h"
#include "lc_log.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DNS_TIMEOUT_MS 8000
#define SMTP_TIMEOUT_MS 10000
#define MAX_CHECKS 96
#define MAX_SEL LC_DOCTOR_SEL_MAX
#define MAX_IPS LC_DOCTOR_IPS_MAX
#define MAX_MX 8
#define MAX_TXT 16
#define MAX_A 16
#define SMTP_LINE_MAX 65536

#define ST_OK LC_DOCTOR_OK
#define ST_WARN LC_DOCTOR_WARN
#define ST_FAIL LC_DOCTOR_FAIL
static const char *const st_name[] = {"ok", "warn", "fail"};

struct txts {
    int n, skipped;
    char rec[MAX_TXT][DR_REC_MAX + 1];
    size_t len[MAX_TXT];
    int toolong[MAX_TXT];
};

struct sel {
    char name[256];
    int nkeys;
    char file[2][2400];
    int alg[2];
};

/* the large working buffers of one run (on the heap: runs may go on in parallel threads) */
struct scratch {
    struct txts t;
    struct dr_spf spf;
    struct dr_dkim pub, loc;
    struct sel sels[MAX_SEL];
};

struct doc {
    ares_channel ch;
    char domain[256];
    const char *helo;
    long mx_port;
    const char *state_dir;
    struct lc_doctor_check *c;
    int n;
    struct scratch *s;
    long long deadline;       /* monotonic ms; 0: no budget */
    const atomic_int *cancel; /* NULL or set from another thread */
    int cut;                  /* a wait was cut short by the budget or cancel */
    /* MX hosts found by the mx check */
    int nmx;
    char mx[MAX_MX][256];
    /* outbound addresses */
    int nips;
    char ips[MAX_IPS][64];
};

static void add(struct doc *d, const char *name, int status, const char *fix, const char *fmt, ...) LC_PRINTF(5, 6);
static void add(struct doc *d, const char *name, int status, const char *fix, const char *fmt, ...)
{
    if (d->n >= MAX_CHECKS)
        return;
    struct lc_doctor_check *c = &d->c[d->n++];
    snprintf(c->name, sizeof c->name, "%s", name);
    c->status = status;
    snprintf(c->fix, sizeof c->fix, "%s", fix ? fix : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->detail, sizeof c->detail, fmt, ap);
    va_end(ap);
}

/* txt_record writes a zone-file line NAME. IN TXT "..." with strings of at most 255 octets. */
static void txt_record(const char *name, const char *txt, char *out, size_t outlen)
{
    size_t o = (size_t)snprintf(out, outlen, "%s. IN TXT", name);
    size_t n = strlen(txt);
    for (size_t i = 0; i < n && o + 4 < outlen; i += 255) {
        size_t k = n - i < 255 ? n - i : 255;
        o += (size_t)snprintf(out + o, outlen - o, " \"%.*s\"", (int)k, txt + i);
    }
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* bounded returns ms cut to what is left of the run's budget: 0 when it is spent or the run is cancelled. */
static int bounded(struct doc *d, int ms)
{
    if (d->cancel && atomic_load(d->cancel)) {
        d->cut = 1;
        return 0;
    }
    if (!d->deadline)
        return ms;
    long long left = d->deadline - now_ms();
    if (left <= 0)
        d->cut = 1;
    return left <= 0 ? 0 : left < ms ? (int)left : ms;
}

/* ---- DNS: one synchronous query at a time ---- */

struct dq {
    int done, status;
    unsigned char *abuf;
    int alen;
};

static void dq_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    struct dq *q = arg;
    q->done = 1;
    q->status = status;
    if (status == ARES_SUCCESS && abuf && alen > 0) {
        q->abuf = malloc((size_t)alen);
        if (q->abuf) {
            memcpy(q->abuf, abuf, (size_t)alen);
            q->alen = alen;
        } else {
            q->status = ARES_ENOMEM;
        }
    }
}

/* dns runs one query; returns the c-ares status (ARES_SUCCESS: q->abuf holds the answer, caller frees). */
static int dns(struct doc *d, const char *name, int type, struct dq *q)
{
    memset(q, 0, sizeof *q);
    ares_query(d->ch, name, ns_c_in, type, dq_cb, q);
    long long deadline = now_ms() + bounded(d, DNS_TIMEOUT_MS);
    while (!q->done) {
        if (now_ms() >= deadline || (d->cancel && atomic_load(d->cancel))) {
            ares_cancel(d->ch);
            if (!q->done) {
                q->done = 1;
                q->status = ARES_ETIMEOUT;
            }
            q->status = ARES_ETIMEOUT;
            break;
        }
        ares_socket_t socks[ARES_GETSOCK_MAXNUM];
        int bits = ares_getsock(d->ch, socks, ARES_GETSOCK_MAXNUM);
        struct pollfd pf[ARES_GETSOCK_MAXNUM];
        int n = 0;
        for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
            unsigned ub = (unsigned)bits; /* ARES_GETSOCK_WRITABLE shifts an int into its sign bit */
            short ev = (short)(((ub >> i) & 1u ? POLLIN : 0) | ((ub >> (i + ARES_GETSOCK_MAXNUM)) & 1u ? POLLOUT : 0));
            if (ev)
                pf[n++] = (struct pollfd){.fd = socks[i], .events = ev};
        }
        struct timeval maxtv = {0, 100000}, tv, *tvp = ares_timeout(d->ch, &maxtv, &tv);
        int ms = tvp ? (int)(tvp->tv_sec * 1000 + tvp->tv_usec / 1000) : 100;
        int r = poll(pf, (nfds_t)n, ms);
        if (r > 0) {
            for (int i = 0; i < n; i++)
                if (pf[i].revents)
                    ares_process_fd(d->ch, (pf[i].revents & (POLLIN | POLLERR | POLLHUP)) ? pf[i].fd : ARES_SOCKET_BAD,
                                    (pf[i].revents & (POLLOUT | POLLERR | POLLHUP)) ? pf[i].fd : ARES_SOCKET_BAD);
        } else {
            ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
        }
    }
    return q->status;
}

/* dns_why describes a failed lookup. */
static const char *dns_why(int status)
{
    switch (status) {
    case ARES_ENOTFOUND:
        return "the name does not exist (NXDOMAIN)";
    case ARES_ENODATA:
        return "no record of that type (NODATA)";
    case ARES_EBADRESP:
        return "malformed DNS answer";
    default:
        return ares_strerror(status);
    }
}

/* dns_txt fetches the TXT records at name, each record's strings joined. Status as dns(). */
static int dns_txt(struct doc *d, const char *name, struct txts *t)
{
    struct dq q;
    memset(t, 0, sizeof *t);
    int st = dns(d, name, ns_t_txt, &q);
    if (st != ARES_SUCCESS)
        return st;
    struct ares_txt_ext *list = NULL;
    st = ares_parse_txt_reply_ext(q.abuf, q.alen, &list);
    free(q.abuf);
    if (st != ARES_SUCCESS)
        return st == ARES_ENODATA ? st : ARES_EBADRESP;
    int cur = -1;
    for (struct ares_txt_ext *x = list; x; x = x->next) {
        if (x->record_start || cur < 0) {
            if (t->n >= MAX_TXT) {
                t->skipped++;
                cur = -2;
                continue;
            }
            cur = t->n++;
        }
        if (cur < 0)
            continue;
        if (t->len[cur] + x->length > DR_REC_MAX) {
            t->toolong[cur] = 1;
            continue;
        }
        memcpy(t->rec[cur] + t->len[cur], x->txt, x->length);
        t->len[cur] += x->length;
        t->rec[cur][t->len[cur]] = 0;
    }
    ares_free_data(list);
    return ARES_SUCCESS;
}

/* dns_a fetches up to max IPv4 addresses of name (host order). Returns the c-ares status. */
static int dns_a(struct doc *d, const char *name, uint32_t *ips, int max, int *n)
{
    struct dq q;
    *n = 0;
    int st = dns(d, name, ns_t_a, &q);
    if (st != ARES_SUCCESS)
        return st;
    struct ares_addrttl at[MAX_A];
    int nat = MAX_A;
    st = ares_parse_a_reply(q.abuf, q.alen, NULL, at, &nat);
    free(q.abuf);
    if (st != ARES_SUCCESS)
        return st == ARES_ENODATA ? st : ARES_EBADRESP;
    for (int i = 0; i < nat && *n < max; i++)
        ips[(*n)++] = ntohl(at[i].ipaddr.s_addr);
    return *n ? ARES_SUCCESS : ARES_ENODATA;
}

static void ip_str(uint32_t ip, char *out, size_t outlen)
{
    struct in_addr a = {htonl(ip)};
    inet_ntop(AF_INET, &a, out, (socklen_t)outlen);
}

/* ---- MX ---- */

static int cmp_mx(const void *a, const void *b)
{
    const struct ares_mx_reply *x = *(struct ares_mx_reply *const *)a, *y = *(struct ares_mx_reply *const *)b;
    return x->priority != y->priority ? (x->priority < y->priority ? -1 : 1) : strcmp(x->host, y->host);
}

static void check_mx(struct doc *d)
{
    char fix[600];
    snprintf(fix, sizeof fix, "%s. IN MX 10 %s.", d->domain, d->helo);
    struct dq q;
    int st = dns(d, d->domain, ns_t_mx, &q);
    if (st == ARES_ENOTFOUND) {
        add(d, "mx", ST_FAIL, fix, "%s does not exist in the DNS (NXDOMAIN)", d->domain);
        return;
    }
    if (st == ARES_ENODATA) {
        uint32_t ips[4];
        int n;
        if (dns_a(d, d->domain, ips, 4, &n) == ARES_SUCCESS) {
            add(d, "mx", ST_WARN, fix, "no MX record: mail goes to the domain's own A record (implicit MX); publish "
                "an MX for the host running listcast");
            snprintf(d->mx[0], sizeof d->mx[0], "%s", d->domain);
            d->nmx = 1;
        } else {
            add(d, "mx", ST_FAIL, fix, "no MX record and no address: bounces and list mail cannot arrive");
        }
        return;
    }
    if (st != ARES_SUCCESS) {
        add(d, "mx", ST_FAIL, NULL, "MX lookup failed: %s", dns_why(st));
        return;
    }
    struct ares_mx_reply *list = NULL;
    st = ares_parse_mx_reply(q.abuf, q.alen, &list);
    free(q.abuf);
    if (st != ARES_SUCCESS || !list) {
        add(d, "mx", ST_FAIL, fix, "MX answer could not be parsed: %s",
            dns_why(st == ARES_SUCCESS ? ARES_EBADRESP : st));
        ares_free_data(list);
        return;
    }
    struct ares_mx_reply *v[64];
    int n = 0;
    for (struct ares_mx_reply *r = list; r && n < 64; r = r->next)
        v[n++] = r;
    qsort(v, (size_t)n, sizeof *v, cmp_mx);
    if (n == 1 && (!v[0]->host[0] || !strcmp(v[0]->host, "."))) {
        add(d, "mx", ST_FAIL, fix, "%s publishes a null MX (RFC 7505): it accepts no mail, so bounces to the VERP "
            "addresses and mail to the lists cannot arrive", d->domain);
        ares_free_data(list);
        return;
    }
    char hosts[1000] = "";
    size_t o = 0;
    int noaddr = 0;
    for (int i = 0; i < n; i++) {
        uint32_t ips[4];
        int na;
        int ok = dns_a(d, v[i]->host, ips, 4, &na) == ARES_SUCCESS;
        noaddr += !ok;
        if (o < sizeof hosts)
            o += (size_t)snprintf(hosts + o, sizeof hosts - o, "%s%u %s%s", i ? ", " : "", v[i]->priority,
                                  v[i]->host, ok ? "" : " (no address)");
        if (ok && d->nmx < MAX_MX)
            snprintf(d->mx[d->nmx++], sizeof d->mx[0], "%s", v[i]->host);
    }
    if (noaddr == n)
        add(d, "mx", ST_FAIL, fix, "no MX host has an IPv4 address: %s", hosts);
    else if (noaddr)
        add(d, "mx", ST_WARN, NULL, "some MX hosts have no IPv4 address: %s", hosts);
    else
        add(d, "mx", ST_OK, NULL, "%s", hosts);
    ares_free_data(list);
}

/* ---- SPF ---- */

/* spf_name_has asks whether the A records of name (or the MX hosts' A records with mx) hold ip. */
static int spf_name_has(struct doc *d, const char *name, int mx, uint32_t ip)
{
    const char *target = *name ? name : d->domain;
    if (!mx) {
        uint32_t ips[MAX_A];
        int n;
        if (dns_a(d, target, ips, MAX_A, &n) == ARES_SUCCESS)
            for (int i = 0; i < n; i++)
                if (ips[i] == ip)
                    return 1;
        return 0;
    }
    struct dq q;
    if (dns(d, target, ns_t_mx, &q) != ARES_SUCCESS)
        return 0;
    struct ares_mx_reply *list = NULL;
    int found = 0, k = 0;
    if (ares_parse_mx_reply(q.abuf, q.alen, &list) == ARES_SUCCESS)
        for (struct ares_mx_reply *r = list; r && !found && k < 10; r = r->next, k++)
            if (r->host[0])
                found = spf_name_has(d, r->host, 0, ip);
    ares_free_data(list);
    free(q.abuf);
    return found;
}

static void spf_suggest(struct doc *d, const struct dr_spf *have, const char *rec, char *out, size_t outlen)
{
    char txt[DR_REC_MAX + 400];
    size_t o = 0;
    if (have && rec) { /* the published record, with the missing ip4 terms before its all / at its end */
        const char *all = NULL;
        for (const char *p = rec; (p = strstr(p, "all")) != NULL; p++)
            if ((p == rec || p[-1] == ' ' || ((p[-1] == '-' || p[-1] == '~' || p[-1] == '?' || p[-1] == '+') &&
                                              (p - 1 == rec || p[-2] == ' '))) &&
                (p[3] == 0 || p[3] == ' '))
                all = p[-1] == ' ' ? p : p - 1;
        size_t head = all ? (size_t)(all - rec) : strlen(rec);
        while (head > 0 && rec[head - 1] == ' ')
            head--;
        o = (size_t)snprintf(txt, sizeof txt, "%.*s", (int)head, rec);
        for (int i = 0; i < d->nips && o < sizeof txt; i++) {
            struct in_addr a;
            if (inet_pton(AF_INET, d->ips[i], &a) == 1 && !dr_spf_covers(have, ntohl(a.s_addr)))
                o += (size_t)snprintf(txt + o, sizeof txt - o, " ip4:%s", d->ips[i]);
        }
        if (o < sizeof txt)
            snprintf(txt + o, sizeof txt - o, " %s", all ? all : "~all");
    } else {
        o = (size_t)snprintf(txt, sizeof txt, "v=spf1 mx");
        for (int i = 0; i < d->nips && o < sizeof txt; i++)
            o += (size_t)snprintf(txt + o, sizeof txt - o, " ip4:%s", d->ips[i]);
        if (o < sizeof txt)
            snprintf(txt + o, sizeof txt - o, " -all");
    }
    txt_record(d->domain, txt, out, outlen);
}

static void check_spf(struct doc *d)
{
    struct txts *t = &d->s->t;
    struct dr_spf *spf = &d->s->spf;
    char fix[sizeof((struct lc_doctor_check *)0)->fix], shown[600];
    int st = dns_txt(d, d->domain, t);
    if (st != ARES_SUCCESS && st != ARES_ENODATA) {
        spf_suggest(d, NULL, NULL, fix, sizeof fix);
        add(d, "spf", ST_FAIL, st == ARES_ENOTFOUND ? fix : NULL, "TXT lookup of %s failed: %s", d->domain,
            dns_why(st));
        return;
    }
    int idx[MAX_TXT], n = 0;
    for (int i = 0; i < t->n; i++)
        if (dr_starts_tag(t->rec[i], t->len[i], "v=spf1", 0))
            idx[n++] = i;
    if (n == 0) {
        spf_suggest(d, NULL, NULL, fix, sizeof fix);
        add(d, "spf", ST_FAIL, fix, "no SPF record (TXT \"v=spf1 ...\") at %s", d->domain);
        return;
    }
    if (n > 1) {
        spf_suggest(d, NULL, NULL, fix, sizeof fix);
        add(d, "spf", ST_FAIL, fix, "%d SPF records at %s: receivers treat that as a permanent error (RFC 7208 "
            "4.5); publish exactly one", n, d->domain);
        return;
    }
    const char *rec = t->rec[idx[0]];
    size_t len = t->len[idx[0]];
    dr_escape(rec, len, shown, sizeof shown);
    if (t->toolong[idx[0]] || dr_spf_parse(rec, len, spf) < 0) {
        spf_suggest(d, NULL, NULL, fix, sizeof fix);
        add(d, "spf", ST_FAIL, fix, "malformed SPF record \"%s\": %s", shown,
            t->toolong[idx[0]] ? "longer than the parser's limit" : spf->why);
        return;
    }
    spf_suggest(d, spf, rec, fix, sizeof fix);
    if (spf->lookups > 10)
        add(d, "spf", ST_FAIL, NULL, "\"%s\": %d DNS-querying terms, over the limit of 10 (RFC 7208 4.6.4: "
            "permerror)", shown, spf->lookups);
    else if (spf->all == '+')
        add(d, "spf", ST_FAIL, fix, "\"%s\" ends in +all: it authorizes every host on the Internet", shown);
    else if (spf->all == '?')
        add(d, "spf", ST_WARN, fix, "\"%s\" ends in ?all (neutral): end it in -all or ~all", shown);
    else if (!spf->all && !spf->redirect[0])
        add(d, "spf", ST_WARN, fix, "\"%s\" has no all mechanism (the default is neutral): end it in -all or ~all",
            shown);
    else
        add(d, "spf", ST_OK, NULL, "\"%s\"", shown);

    if (d->nips == 0) {
        add(d, "spf:ip", ST_WARN, NULL, "no sending address given (--ip ADDR): cannot check that the SPF record "
            "authorizes this host's outbound addresses");
        return;
    }
    for (int i = 0; i < d->nips; i++) {
        char name[100];
        snprintf(name, sizeof name, "spf:%s", d->ips[i]);
        struct in_addr a;
        if (inet_pton(AF_INET, d->ips[i], &a) != 1) {
            add(d, name, ST_WARN, NULL, "not an IPv4 address: not checked");
            continue;
        }
        uint32_t ip = ntohl(a.s_addr);
        const char *how = NULL;
        char by[300];
        if (dr_spf_covers(spf, ip))
            how = "an ip4 term";
        for (int k = 0; !how && k < spf->na; k++)
            if (spf_name_has(d, spf->a[k], 0, ip)) {
                snprintf(by, sizeof by, "a%s%s", spf->a[k][0] ? ":" : "", spf->a[k]);
                how = by;
            }
        for (int k = 0; !how && k < spf->nmx; k++)
            if (spf_name_has(d, spf->mx[k], 1, ip)) {
                snprintf(by, sizeof by, "mx%s%s", spf->mx[k][0] ? ":" : "", spf->mx[k]);
                how = by;
            }
        if (how)
            add(d, name, ST_OK, NULL, "authorized by %s", how);
        else if (spf->ninc || spf->redirect[0])
            add(d, name, ST_WARN, fix, "not in the record's ip4, a or mx terms; its include/redirect terms are not "
                "followed: check that %s covers it, or add ip4:%s", spf->ninc ? spf->inc[0] : spf->redirect,
                d->ips[i]);
        else
            add(d, name, ST_FAIL, fix, "%s is not authorized by the SPF record: receivers see SPF fail or softfail",
                d->ips[i]);
    }
}

/* ---- DMARC ---- */

static void check_dmarc(struct doc *d)
{
    struct txts *t = &d->s->t;
    struct dr_dmarc dm;
    char name[300], fix[sizeof((struct lc_doctor_check *)0)->fix], txt[600], shown[600];
    snprintf(name, sizeof name, "_dmarc.%s", d->domain);
    snprintf(txt, sizeof txt, "v=DMARC1; p=none; rua=mailto:postmaster@%s", d->domain);
    txt_record(name, txt, fix, sizeof fix);
    int st = dns_txt(d, name, t);
    if (st != ARES_SUCCESS && st != ARES_ENODATA && st != ARES_ENOTFOUND) {
        add(d, "dmarc", ST_FAIL, NULL, "TXT lookup of %s failed: %s", name, dns_why(st));
        return;
    }
    int idx[MAX_TXT], n = 0;
    for (int i = 0; i < t->n; i++)
        if (dr_starts_tag(t->rec[i], t->len[i], "v=DMARC1", 1))
            idx[n++] = i;
    if (n == 0) {
        add(d, "dmarc", ST_FAIL, fix, "no DMARC record (TXT \"v=DMARC1; ...\") at %s: bulk mail without DMARC is "
            "refused by the large mailbox providers", name);
        return;
    }
    if (n > 1) {
        add(d, "dmarc", ST_FAIL, fix, "%d DMARC records at %s: receivers ignore them all (RFC 7489 6.6.3)", n, name);
        return;
    }
    dr_escape(t->rec[idx[0]], t->len[idx[0]], shown, sizeof shown);
    if (t->toolong[idx[0]] || dr_dmarc_parse(t->rec[idx[0]], t->len[idx[0]], &dm) < 0) {
        add(d, "dmarc", ST_FAIL, fix, "malformed DMARC record \"%s\": %s", shown,
            t->toolong[idx[0]] ? "too long" : dm.why);
        return;
    }
    if (!dm.rua[0]) {
        char with[DR_REC_MAX + 100];
        snprintf(with, sizeof with, "%.*s; rua=mailto:postmaster@%s", (int)t->len[idx[0]], t->rec[idx[0]], d->domain);
        txt_record(name, with, fix, sizeof fix);
        add(d, "dmarc", ST_WARN, fix, "p=%s, but no rua= address: you get no aggregate reports", dm.p);
        return;
    }
    add(d, "dmarc", ST_OK, NULL, "p=%s%s%s, pct=%d, rua=%s", dm.p, dm.sp[0] ? ", sp=" : "", dm.sp, dm.pct, dm.rua);
}

/* ---- DKIM ---- */

static int cmp_sel(const void *a, const void *b)
{
    return strcmp(((const struct sel *)a)->name, ((const struct sel *)b)->name);
}

static struct sel *sel_get(struct sel *s, int *n, const char *name)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp(s[i].name, name))
            return &s[i];
    if (*n >= MAX_SEL)
        return NULL;
    memset(&s[*n], 0, sizeof s[*n]);
    snprintf(s[*n].name, sizeof s[*n].name, "%s", name);
    return &s[(*n)++];
}

static void check_dkim_sel(struct doc *d, const struct sel *s)
{
    struct txts *t = &d->s->t;
    struct dr_dkim *pub = &d->s->pub, *loc = &d->s->loc;
    char check[300], name[600], fix[sizeof((struct lc_doctor_check *)0)->fix] = "", txt[LC_DKIM_TXT_MAX], err[1024];
    char shown[600], locwhy[1200] = "";
    snprintf(check, sizeof check, "dkim:%.250s", s->name);
    snprintf(name, sizeof name, "%.250s._domainkey.%.300s", s->name, d->domain);
    /* the local keys' records */
    char want[2][LC_DKIM_TXT_MAX];
    int nwant = 0;
    for (int k = 0; k < s->nkeys; k++) {
        struct lc_dkim_key *key = lc_dkim_key_load(s->file[k], s->alg[k], d->domain, s->name, err, sizeof err);
        if (!key || lc_dkim_key_txt(key, txt, sizeof txt) < 0) {
            snprintf(locwhy, sizeof locwhy, "local key unusable: %s", key ? "cannot export the public key" : err);
        } else {
            snprintf(want[nwant++], sizeof want[0], "%s", txt);
            if (!fix[0])
                txt_record(name, txt, fix, sizeof fix);
        }
        lc_dkim_key_free(key);
    }
    if (locwhy[0] && nwant == 0) {
        add(d, check, ST_FAIL, NULL, "%s (the sender defers this domain's mail until it is fixed or removed)",
            locwhy);
        return;
    }
    int st = dns_txt(d, name, t);
    if (st != ARES_SUCCESS && st != ARES_ENODATA && st != ARES_ENOTFOUND) {
        add(d, check, ST_FAIL, NULL, "TXT lookup of %s failed: %s", name, dns_why(st));
        return;
    }
    int n = 0, matched = 0, revoked = 0;
    char bad[400] = "";
    for (int i = 0; i < t->n; i++) {
        if (t->toolong[i] || dr_dkim_parse(t->rec[i], t->len[i], pub) < 0) {
            dr_escape(t->rec[i], t->len[i], shown, 120);
            if (!bad[0])
                snprintf(bad, sizeof bad, "\"%.120s\": %.250s", shown, t->toolong[i] ? "too long" : pub->why);
            continue;
        }
        n++;
        if (!pub->p[0]) {
            revoked++;
            continue;
        }
        for (int k = 0; k < nwant; k++)
            if (dr_dkim_parse(want[k], strlen(want[k]), loc) == 0 && !strcmp(loc->p, pub->p) && !strcmp(loc->k, pub->k))
                matched = 1;
    }
    if (n == 0) {
        if (bad[0])
            add(d, check, ST_FAIL, fix[0] ? fix : NULL, "malformed DKIM record at %s: %s", name, bad);
        else
            add(d, check, ST_FAIL, fix[0] ? fix : NULL, "no DKIM record at %s%s", name,
                nwant ? ": receivers cannot verify the signatures of this key" : " (and no local key for it)");
        return;
    }
    if (nwant == 0) {
        if (revoked == n)
            add(d, check, ST_WARN, NULL, "%s publishes a revoked key (empty p=); no local key for this selector",
                name);
        else
            add(d, check, ST_OK, NULL, "%s is published (no local key under state.dir to compare)", name);
        return;
    }
    if (!matched) {
        add(d, check, ST_FAIL, fix, "%s publishes %s, not the public key of the local key%s: signatures fail",
            name, revoked == n ? "a revoked key (empty p=)" : "a different key", s->nkeys > 1 ? "s" : "");
        return;
    }
    if (locwhy[0])
        add(d, check, ST_WARN, NULL, "%s matches one local key, but %s", name, locwhy);
    else
        add(d, check, ST_OK, NULL, "%s matches the local key (%s)", name,
            s->nkeys > 1 ? "two algorithms" : lc_dkim_alg_name(s->alg[0]));
}

static void check_dkim(struct doc *d, const char *const *extra, int nextra)
{
    struct sel *sels = d->s->sels;
    int n = 0;
    char dir[2300];
    snprintf(dir, sizeof dir, "%s/dkim/%s", d->state_dir, d->domain);
    DIR *dh = opendir(dir);
    struct dirent *de;
    while (dh && (de = readdir(dh)) != NULL) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.' || l <= 4 || l >= 256 || strcmp(de->d_name + l - 4, ".key"))
            continue;
        char selname[256];
        snprintf(selname, sizeof selname, "%.*s", (int)(l - 4), de->d_name);
        char *dot = strrchr(selname, '.');
        int alg = dot ? lc_dkim_alg_parse(dot + 1) : -1;
        if (alg < 0)
            continue;
        *dot = 0;
        struct sel *s = sel_get(sels, &n, selname);
        if (s && s->nkeys < 2) {
            int w = snprintf(s->file[s->nkeys], sizeof s->file[0], "%s/%s", dir, de->d_name);
            if (w < 0 || (size_t)w >= sizeof s->file[0])
                continue; /* a path too long to hold: not a key we could read */
            s->alg[s->nkeys++] = alg;
        }
    }
    if (dh)
        closedir(dh);
    for (int i = 0; i < nextra; i++)
        sel_get(sels, &n, extra[i]);
    if (n == 0) {
        add(d, "dkim", ST_WARN, NULL, "no DKIM key for %s under %s and no --selector: mail goes out unsigned; make "
            "one with: listcast dkim keygen %s --selector s1", d->domain, dir, d->domain);
        return;
    }
    qsort(sels, (size_t)n, sizeof sels[0], cmp_sel);
    for (int i = 0; i < n; i++)
        check_dkim_sel(d, &sels[i]);
}

/* ---- forward-confirmed reverse DNS ---- */

static void check_fcrdns(struct doc *d)
{
    if (d->nips == 0) {
        add(d, "fcrdns", ST_WARN, NULL, "no sending address given (--ip ADDR): cannot check reverse DNS");
        return;
    }
    for (int i = 0; i < d->nips; i++) {
        char name[100], rev[100], fix[600];
        snprintf(name, sizeof name, "fcrdns:%s", d->ips[i]);
        struct in_addr a;
        if (inet_pton(AF_INET, d->ips[i], &a) != 1) {
            add(d, name, ST_WARN, NULL, "not an IPv4 address: not checked");
            continue;
        }
        uint32_t ip = ntohl(a.s_addr);
        snprintf(rev, sizeof rev, "%u.%u.%u.%u.in-addr.arpa", ip & 255, ip >> 8 & 255, ip >> 16 & 255, ip >> 24);
        snprintf(fix, sizeof fix, "%s. IN PTR %s.  (ask the owner of the address block)", rev, d->helo);
        struct dq q;
        int st = dns(d, rev, ns_t_ptr, &q);
        if (st != ARES_SUCCESS) {
            add(d, name, ST_FAIL, fix, "no PTR record for %s: %s", d->ips[i], dns_why(st));
            continue;
        }
        struct hostent *he = NULL;
        st = ares_parse_ptr_reply(q.abuf, q.alen, &a, sizeof a, AF_INET, &he);
        free(q.abuf);
        if (st != ARES_SUCCESS || !he || !he->h_name || !he->h_name[0]) {
            add(d, name, ST_FAIL, fix, "PTR answer for %s could not be used: %s", d->ips[i],
                dns_why(st == ARES_SUCCESS ? ARES_EBADRESP : st));
            if (he)
                ares_free_hostent(he);
            continue;
        }
        char ptr[256], shown[300];
        snprintf(ptr, sizeof ptr, "%s", he->h_name);
        ares_free_hostent(he);
        dr_escape(ptr, strlen(ptr), shown, sizeof shown);
        uint32_t ips[MAX_A];
        int n = 0, found = 0;
        st = dns_a(d, ptr, ips, MAX_A, &n);
        for (int k = 0; k < n; k++)
            found |= ips[k] == ip;
        if (found) {
            add(d, name, ST_OK, NULL, "PTR %s, whose A records hold %s", shown, d->ips[i]);
        } else {
            snprintf(fix, sizeof fix, "%s. IN A %s", ptr, d->ips[i]);
            add(d, name, ST_FAIL, fix, "PTR %s, but %s", shown,
                st == ARES_SUCCESS ? "its A records do not hold the address" : dns_why(st));
        }
    }
}

/* ---- STARTTLS ---- */

struct smtp {
    struct doc *d;
    int fd;
    char buf[SMTP_LINE_MAX];
    size_t len;
};

/* smtp_reply reads one whole reply; returns its code, or -1 (timeout, closed, malformed); text gets the lines. */
static int smtp_reply(struct smtp *s, char *text, size_t textlen)
{
    long long deadline = now_ms() + bounded(s->d, SMTP_TIMEOUT_MS);
    size_t o = 0;
    text[0] = 0;
    for (;;) {
        char *nl;
        while ((nl = memchr(s->buf, '\n', s->len)) != NULL) {
            size_t ll = (size_t)(nl - s->buf) + 1;
            char line[1024];
            size_t cl = ll < sizeof line ? ll : sizeof line - 1;
            memcpy(line, s->buf, cl);
            line[cl] = 0;
            memmove(s->buf, s->buf + ll, s->len - ll);
            s->len -= ll;
            if (cl < 4 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' || line[2] < '0' ||
                line[2] > '9' || (line[3] != ' ' && line[3] != '-' && line[3] != '\r' && line[3] != '\n'))
                return -1;
            line[strcspn(line, "\r\n")] = 0;
            if (o < textlen)
                o += (size_t)snprintf(text + o, textlen - o, "%s%s", o ? "\n" : "", line);
            if (line[3] != '-')
                return (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        }
        if (s->len == sizeof s->buf)
            return -1;
        long long left = deadline - now_ms();
        struct pollfd pf = {s->fd, POLLIN, 0};
        int pr = 0;
        /* in slices of at most 200 ms, so a cancel is seen soon */
        while (left > 0 && !(s->d->cancel && atomic_load(s->d->cancel)) &&
               (pr = poll(&pf, 1, left < 200 ? (int)left : 200)) == 0)
            left = deadline - now_ms();
        if (pr <= 0)
            return -1;
        ssize_t r = read(s->fd, s->buf + s->len, sizeof s->buf - s->len);
        if (r <= 0)
            return -1;
        s->len += (size_t)r;
    }
}

static int smtp_send(struct smtp *s, const char *line)
{
    size_t n = strlen(line), off = 0;
    while (off < n) {
        struct pollfd pf = {s->fd, POLLOUT, 0};
        int ms = bounded(s->d, SMTP_TIMEOUT_MS);
        if (ms <= 0 || poll(&pf, 1, ms) <= 0)
            return -1;
        ssize_t w = write(s->fd, line + off, n - off);
        if (w <= 0)
            return -1;
        off += (size_t)w;
    }
    return 0;
}

static int tcp_connect(struct doc *d, uint32_t ip, long port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr = {htonl(ip)}};
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    struct pollfd pf = {fd, POLLOUT, 0};
    int soerr = 0, ms = bounded(d, SMTP_TIMEOUT_MS);
    socklen_t sl = sizeof soerr;
    if (ms <= 0 || poll(&pf, 1, ms) <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
        close(fd);
        errno = soerr ? soerr : ETIMEDOUT;
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK); /* blocking for GnuTLS, bounded by SO_RCVTIMEO/SO_SNDTIMEO */
    ms = bounded(d, SMTP_TIMEOUT_MS);
    struct timeval tv = {ms / 1000, ms > 0 ? (ms % 1000) * 1000 : 1000}; /* {0, 0} would be no timeout */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
}

static void check_tls_host(struct doc *d, const char *host)
{
    char name[300], text[2048], ips_s[32];
    snprintf(name, sizeof name, "starttls:%s", host);
    uint32_t ips[4];
    int n;
    int st = dns_a(d, host, ips, 4, &n);
    if (st != ARES_SUCCESS) {
        add(d, name, ST_FAIL, NULL, "no IPv4 address for %s: %s", host, dns_why(st));
        return;
    }
    ip_str(ips[0], ips_s, sizeof ips_s);
    struct smtp s = {.d = d, .fd = tcp_connect(d, ips[0], d->mx_port)};
    if (s.fd < 0) {
        add(d, name, ST_FAIL, NULL, "cannot connect to %s port %ld: %s", ips_s, d->mx_port, strerror(errno));
        return;
    }
    char ehlo[400];
    snprintf(ehlo, sizeof ehlo, "EHLO %s\r\n", d->helo);
    int code = smtp_reply(&s, text, sizeof text);
    if (code != 220) {
        add(d, name, ST_FAIL, NULL, "%s:%ld: no 220 greeting (%s)", ips_s, d->mx_port, code < 0 ? "timeout or "
            "malformed reply" : text);
        goto out;
    }
    if (smtp_send(&s, ehlo) < 0 || (code = smtp_reply(&s, text, sizeof text)) != 250) {
        add(d, name, ST_FAIL, NULL, "%s:%ld: EHLO refused (%s)", ips_s, d->mx_port, code < 0 ? "no reply" : text);
        goto out;
    }
    int offered = 0;
    for (char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        if (strlen(line) >= 12 && !strncasecmp(line + 4, "STARTTLS", 8) &&
            (line[12] == 0 || line[12] == '\n' || line[12] == ' '))
            offered = 1;
    if (!offered) {
        add(d, name, ST_WARN, NULL, "%s (%s:%ld) does not offer STARTTLS: mail to %s travels unencrypted", host,
            ips_s, d->mx_port, d->domain);
        smtp_send(&s, "QUIT\r\n");
        goto out;
    }
    if (smtp_send(&s, "STARTTLS\r\n") < 0 || (code = smtp_reply(&s, text, sizeof text)) != 220) {
        add(d, name, ST_FAIL, NULL, "%s:%ld offers STARTTLS but answers it with %s", ips_s, d->mx_port,
            code < 0 ? "no valid reply" : text);
        goto out;
    }
    gnutls_certificate_credentials_t cred = NULL;
    gnutls_session_t ses = NULL;
    int rc = gnutls_certificate_allocate_credentials(&cred);
    if (rc >= 0) {
        (void)gnutls_certificate_set_x509_system_trust(cred);
        rc = gnutls_init(&ses, GNUTLS_CLIENT);
    }
    if (rc >= 0 && (rc = gnutls_set_default_priority(ses)) >= 0 &&
        (rc = gnutls_credentials_set(ses, GNUTLS_CRD_CERTIFICATE, cred)) >= 0) {
        gnutls_server_name_set(ses, GNUTLS_NAME_DNS, host, strlen(host));
        gnutls_transport_set_int(ses, s.fd);
        int ms = bounded(d, SMTP_TIMEOUT_MS);
        gnutls_handshake_set_timeout(ses, ms > 0 ? (unsigned)ms : 1); /* 0 would be GnuTLS' default */
        do
            rc = gnutls_handshake(ses);
        while (rc < 0 && !gnutls_error_is_fatal(rc));
    }
    if (rc < 0) {
        add(d, name, ST_FAIL, NULL, "%s:%ld: STARTTLS offered, but the TLS handshake failed: %s", ips_s, d->mx_port,
            gnutls_strerror(rc));
    } else {
        unsigned vst = 0;
        char verify[300] = "certificate verified";
        if (gnutls_certificate_verify_peers3(ses, host, &vst) < 0 || vst) {
            gnutls_datum_t out = {NULL, 0};
            if (gnutls_certificate_verification_status_print(vst, GNUTLS_CRT_X509, &out, 0) >= 0 && out.data) {
                snprintf(verify, sizeof verify, "certificate not verified: %s", (const char *)out.data);
                gnutls_free(out.data);
            } else {
                snprintf(verify, sizeof verify, "certificate not verified");
            }
        }
        add(d, name, ST_OK, NULL, "%s:%ld: STARTTLS, %s %s; %s", ips_s, d->mx_port,
            gnutls_protocol_get_name(gnutls_protocol_get_version(ses)),
            gnutls_cipher_get_name(gnutls_cipher_get(ses)), verify);
        gnutls_bye(ses, GNUTLS_SHUT_WR);
    }
    if (ses)
        gnutls_deinit(ses);
    if (cred)
        gnutls_certificate_free_credentials(cred);
out:
    close(s.fd);
}


/* ---- the run ---- */

int lc_doctor_domain_ok(const char *s)
{
    return strlen(s) < sizeof((struct lc_doctor_report *)0)->domain && lc_dkim_name_ok(s) && strchr(s, '.');
}

const char *lc_doctor_status_name(int status)
{
    return status >= ST_OK && status <= ST_FAIL ? st_name[status] : "?";
}

int lc_doctor_failed(const struct lc_doctor_report *r)
{
    for (int i = 0; i < r->n; i++)
        if (r->c[i].status == ST_FAIL)
            return 1;
    return 0;
}

void lc_doctor_report_free(struct lc_doctor_report *r)
{
    if (!r)
        return;
    free(r->c);
    free(r);
}

void lc_doctor_json(struct lc_json *j, const struct lc_doctor_report *r)
{
    lc_json_arr(j);
    for (int i = 0; i < r->n; i++) {
        lc_json_obj(j);
        lc_json_kstr(j, "check", r->c[i].name);
        lc_json_kstr(j, "status", lc_doctor_status_name(r->c[i].status));
        lc_json_kstr(j, "detail", r->c[i].detail);
        lc_json_kstr(j, "fix", r->c[i].fix[0] ? r->c[i].fix : NULL);
        lc_json_end(j);
    }
    lc_json_end(j);
}

struct lc_doctor_report *lc_doctor_run(const struct lc_doctor_opts *o, char *err, size_t errlen)
{
    struct doc d = {.helo = o->helo ? o->helo : "", .mx_port = o->mx_port,
                    .state_dir = o->state_dir ? o->state_dir : "", .cancel = o->cancel};
    if (!lc_doctor_domain_ok(o->domain)) {
        snprintf(err, errlen, "'%.100s' is not a domain name", o->domain);
        return NULL;
    }
    snprintf(d.domain, sizeof d.domain, "%s", o->domain);
    for (char *c = d.domain; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c + 32);
    for (int i = 0; i < o->nips && d.nips < MAX_IPS; i++)
        snprintf(d.ips[d.nips++], sizeof d.ips[0], "%s", o->ips[i]);
    struct ares_options opt;
    memset(&opt, 0, sizeof opt);
    opt.timeout = 2000;
    opt.tries = 3;
    opt.flags = ARES_FLAG_NOSEARCH;
    int rc;
    if ((rc = ares_init_options(&d.ch, &opt, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS)) != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares init: %s", ares_strerror(rc));
        return NULL;
    }
    const char *servers = o->dns_servers ? o->dns_servers : "";
    if (*servers && (rc = ares_set_servers_ports_csv(d.ch, servers)) != ARES_SUCCESS) {
        ares_destroy(d.ch);
        snprintf(err, errlen, "dns.servers '%s': %s", servers, ares_strerror(rc));
        return NULL;
    }
    struct lc_doctor_report *r = calloc(1, sizeof *r);
    d.c = calloc(MAX_CHECKS, sizeof *d.c);
    d.s = malloc(sizeof *d.s);
    if (!r || !d.c || !d.s) {
        ares_destroy(d.ch);
        free(r);
        free(d.c);
        free(d.s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (o->budget_ms > 0)
        d.deadline = now_ms() + o->budget_ms;
    const char *sels[MAX_SEL];
    int nsel = 0;
    for (int i = 0; i < o->nsel && nsel < MAX_SEL; i++)
        sels[nsel++] = o->sels[i];
    check_mx(&d);
    check_spf(&d);
    check_dkim(&d, sels, nsel);
    check_dmarc(&d);
    check_fcrdns(&d);
    for (int i = 0; i < d.nmx; i++)
        check_tls_host(&d, d.mx[i]);
    ares_destroy(d.ch);
    free(d.s);
    snprintf(r->domain, sizeof r->domain, "%s", d.domain);
    r->n = d.n;
    r->c = d.c;
    r->cut = d.cut;
    return r;
}
