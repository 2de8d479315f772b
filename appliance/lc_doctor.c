/* lc_doctor: `listcast doctor DOMAIN [--selector S]... [--ip ADDR]...`: bulk-sender compliance checks of a
 * sending domain (issue 7 item 3): MX, SPF, DKIM (every local key and --selector), DMARC, forward-confirmed
 * reverse DNS of the sending addresses and STARTTLS of the MX hosts, each ok / warn / fail with what is missing
 * and the exact record to publish.
 *
 * Contract: DNS through c-ares against dns.servers (empty: the system resolver), one query at a time, each
 * bounded by DNS_TIMEOUT_MS; TXT records are parsed by lc_doctor_rec.c (bounded; a malformed answer is a
 * warn/fail naming what is wrong, never a crash). STARTTLS: TCP to each MX host's first IPv4 address at
 * sender.mx_port, banner, EHLO smtp.hostname, STARTTLS, a GnuTLS handshake (certificate verification against
 * the system trust store is reported, not required), every step bounded by SMTP_TIMEOUT_MS. The sending
 * addresses are the host's outbound addresses, given with --ip (none given: the SPF and reverse DNS checks say
 * they cannot check). Output: one block per check, or with --json an array of {check, status, detail, fix}
 * (fix null when there is nothing to publish). Exit 0 when no check failed, 1 when one did, 2 on usage errors.
 * Limits: IPv4 sending addresses only (IPv6 is reported as not checked); SPF include: and redirect= are not
 * followed (an address found only there is a warn); at most MAX_SEL selectors, MAX_IPS addresses, MAX_MX MX
 * hosts are checked.
 */
#include "lc_cli.h"
#include "lc_dkim.h"
#include "lc_doctor.h"
#include "lc_json.h"

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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DNS_TIMEOUT_MS 8000
#define SMTP_TIMEOUT_MS 10000
#define MAX_CHECKS 96
#define MAX_SEL 16
#define MAX_IPS 16
#define MAX_MX 8
#define MAX_TXT 16
#define MAX_A 16
#define SMTP_LINE_MAX 65536

static const char page_doctor[] =
    "NAME\n"
    "  listcast doctor - check a sending domain's DNS and MX hosts against the bulk-sender rules\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast doctor DOMAIN [--selector S]... [--ip ADDR]... [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  Checks, with the DNS servers of dns.servers (or the system resolver):\n"
    "    mx          MX records (a null MX or none at all fails: bounces and list mail cannot arrive)\n"
    "    spf         one TXT \"v=spf1 ...\" at DOMAIN, well-formed, ending in -all or ~all, at most 10 lookups\n"
    "    spf:ADDR    the record authorizes each sending address (ip4, a and mx terms are checked)\n"
    "    dkim:S      the TXT at S._domainkey.DOMAIN for every key in STATE.DIR/dkim/DOMAIN and every\n"
    "                --selector: published, well-formed, and its p= is the local key's public key\n"
    "    dmarc       the TXT at _dmarc.DOMAIN: present, v=DMARC1, its p= policy, a rua= report address\n"
    "    fcrdns:ADDR forward-confirmed reverse DNS: the PTR of each sending address, and the A records of\n"
    "                that name, which must hold the address\n"
    "    starttls:H  each MX host (port sender.mx_port) offers STARTTLS and the TLS handshake completes\n"
    "  Each check is ok, warn or fail, with what is missing and the exact record to publish. The sending\n"
    "  addresses are this host's outbound addresses; without --ip the address checks say they cannot check.\n"
    "  With --json: an array of {\"check\", \"status\", \"detail\", \"fix\"} (fix null when nothing to publish).\n"
    "\n"
    "OPTIONS\n"
    "  --selector S       also check the DKIM selector S (repeatable)\n"
    "  --ip ADDR          a sending IPv4 address of this host (repeatable)\n" LC_HELP_COMMON_OPTIONS
    "\n"
    "EXIT STATUS\n"
    "  0 no check failed, 1 at least one check failed (or Redis/DNS setup failed), 2 usage error.\n"
    "\n"
    "EXAMPLES\n"
    "  listcast doctor lists.example.org --ip 203.0.113.5\n"
    "  listcast doctor lists.example.org --selector s1 --json\n";

const struct lc_page lc_pages_doctor[] = {{"doctor", page_doctor}, {NULL, NULL}};

enum { ST_OK, ST_WARN, ST_FAIL };
static const char *const st_name[] = {"ok", "warn", "fail"};

struct check {
    char name[300];
    int status;
    char detail[1400];
    char fix[2400];
};

struct doc {
    struct lc_ctx *ctx;
    ares_channel ch;
    char domain[256];
    const char *helo;
    long mx_port;
    struct check *c;
    int n;
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
    struct check *c = &d->c[d->n++];
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

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* dns runs one query; returns the c-ares status (ARES_SUCCESS: q->abuf holds the answer, caller frees). */
static int dns(struct doc *d, const char *name, int type, struct dq *q)
{
    memset(q, 0, sizeof *q);
    ares_query(d->ch, name, ns_c_in, type, dq_cb, q);
    long long deadline = now_ms() + DNS_TIMEOUT_MS;
    while (!q->done) {
        if (now_ms() >= deadline) {
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

struct txts {
    int n, skipped;
    char rec[MAX_TXT][DR_REC_MAX + 1];
    size_t len[MAX_TXT];
    int toolong[MAX_TXT];
};

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
        add(d, "mx", ST_FAIL, fix, "MX answer could not be parsed: %s", dns_why(st == ARES_SUCCESS ? ARES_EBADRESP : st));
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
    static struct txts t;
    static struct dr_spf spf;
    char fix[sizeof((struct check *)0)->fix], shown[600];
    int st = dns_txt(d, d->domain, &t);
    if (st != ARES_SUCCESS && st != ARES_ENODATA) {
        spf_suggest(d, NULL, NULL, fix, sizeof fix);
        add(d, "spf", ST_FAIL, st == ARES_ENOTFOUND ? fix : NULL, "TXT lookup of %s failed: %s", d->domain,
            dns_why(st));
        return;
    }
    int idx[MAX_TXT], n = 0;
    for (int i = 0; i < t.n; i++)
        if (dr_starts_tag(t.rec[i], t.len[i], "v=spf1", 0))
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
    const char *rec = t.rec[idx[0]];
    size_t len = t.len[idx[0]];
    dr_escape(rec, len, shown, sizeof shown);
    if (t.toolong[idx[0]] || dr_spf_parse(rec, len, &spf) < 0) {
        spf_suggest(d, NULL, NULL, fix, sizeof fix);
        add(d, "spf", ST_FAIL, fix, "malformed SPF record \"%s\": %s", shown,
            t.toolong[idx[0]] ? "longer than the parser's limit" : spf.why);
        return;
    }
    spf_suggest(d, &spf, rec, fix, sizeof fix);
    if (spf.lookups > 10)
        add(d, "spf", ST_FAIL, NULL, "\"%s\": %d DNS-querying terms, over the limit of 10 (RFC 7208 4.6.4: "
            "permerror)", shown, spf.lookups);
    else if (spf.all == '+')
        add(d, "spf", ST_FAIL, fix, "\"%s\" ends in +all: it authorizes every host on the Internet", shown);
    else if (spf.all == '?')
        add(d, "spf", ST_WARN, fix, "\"%s\" ends in ?all (neutral): end it in -all or ~all", shown);
    else if (!spf.all && !spf.redirect[0])
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
        if (dr_spf_covers(&spf, ip))
            how = "an ip4 term";
        for (int k = 0; !how && k < spf.na; k++)
            if (spf_name_has(d, spf.a[k], 0, ip)) {
                snprintf(by, sizeof by, "a%s%s", spf.a[k][0] ? ":" : "", spf.a[k]);
                how = by;
            }
        for (int k = 0; !how && k < spf.nmx; k++)
            if (spf_name_has(d, spf.mx[k], 1, ip)) {
                snprintf(by, sizeof by, "mx%s%s", spf.mx[k][0] ? ":" : "", spf.mx[k]);
                how = by;
            }
        if (how)
            add(d, name, ST_OK, NULL, "authorized by %s", how);
        else if (spf.ninc || spf.redirect[0])
            add(d, name, ST_WARN, fix, "not in the record's ip4, a or mx terms; its include/redirect terms are not "
                "followed: check that %s covers it, or add ip4:%s", spf.ninc ? spf.inc[0] : spf.redirect,
                d->ips[i]);
        else
            add(d, name, ST_FAIL, fix, "%s is not authorized by the SPF record: receivers see SPF fail or softfail",
                d->ips[i]);
    }
}

/* ---- DMARC ---- */

static void check_dmarc(struct doc *d)
{
    static struct txts t;
    struct dr_dmarc dm;
    char name[300], fix[sizeof((struct check *)0)->fix], txt[600], shown[600];
    snprintf(name, sizeof name, "_dmarc.%s", d->domain);
    snprintf(txt, sizeof txt, "v=DMARC1; p=none; rua=mailto:postmaster@%s", d->domain);
    txt_record(name, txt, fix, sizeof fix);
    int st = dns_txt(d, name, &t);
    if (st != ARES_SUCCESS && st != ARES_ENODATA && st != ARES_ENOTFOUND) {
        add(d, "dmarc", ST_FAIL, NULL, "TXT lookup of %s failed: %s", name, dns_why(st));
        return;
    }
    int idx[MAX_TXT], n = 0;
    for (int i = 0; i < t.n; i++)
        if (dr_starts_tag(t.rec[i], t.len[i], "v=DMARC1", 1))
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
    dr_escape(t.rec[idx[0]], t.len[idx[0]], shown, sizeof shown);
    if (t.toolong[idx[0]] || dr_dmarc_parse(t.rec[idx[0]], t.len[idx[0]], &dm) < 0) {
        add(d, "dmarc", ST_FAIL, fix, "malformed DMARC record \"%s\": %s", shown,
            t.toolong[idx[0]] ? "too long" : dm.why);
        return;
    }
    if (!dm.rua[0]) {
        char with[DR_REC_MAX + 100];
        snprintf(with, sizeof with, "%.*s; rua=mailto:postmaster@%s", (int)t.len[idx[0]], t.rec[idx[0]], d->domain);
        txt_record(name, with, fix, sizeof fix);
        add(d, "dmarc", ST_WARN, fix, "p=%s, but no rua= address: you get no aggregate reports", dm.p);
        return;
    }
    add(d, "dmarc", ST_OK, NULL, "p=%s%s%s, pct=%d, rua=%s", dm.p, dm.sp[0] ? ", sp=" : "", dm.sp, dm.pct, dm.rua);
}

/* ---- DKIM ---- */

struct sel {
    char name[256];
    int nkeys;
    char file[2][2400];
    int alg[2];
};

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
    static struct txts t;
    static struct dr_dkim pub, loc;
    char check[300], name[600], fix[sizeof((struct check *)0)->fix] = "", txt[LC_DKIM_TXT_MAX], err[1024];
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
    int st = dns_txt(d, name, &t);
    if (st != ARES_SUCCESS && st != ARES_ENODATA && st != ARES_ENOTFOUND) {
        add(d, check, ST_FAIL, NULL, "TXT lookup of %s failed: %s", name, dns_why(st));
        return;
    }
    int n = 0, matched = 0, revoked = 0;
    char bad[400] = "";
    for (int i = 0; i < t.n; i++) {
        if (t.toolong[i] || dr_dkim_parse(t.rec[i], t.len[i], &pub) < 0) {
            dr_escape(t.rec[i], t.len[i], shown, 120);
            if (!bad[0])
                snprintf(bad, sizeof bad, "\"%.120s\": %.250s", shown, t.toolong[i] ? "too long" : pub.why);
            continue;
        }
        n++;
        if (!pub.p[0]) {
            revoked++;
            continue;
        }
        for (int k = 0; k < nwant; k++)
            if (dr_dkim_parse(want[k], strlen(want[k]), &loc) == 0 && !strcmp(loc.p, pub.p) && !strcmp(loc.k, pub.k))
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
    static struct sel sels[MAX_SEL];
    int n = 0;
    char dir[2300];
    snprintf(dir, sizeof dir, "%s/dkim/%s", lc_cfg_str(d->ctx->cfg, "state.dir"), d->domain);
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
    int fd;
    char buf[SMTP_LINE_MAX];
    size_t len;
};

/* smtp_reply reads one whole reply; returns its code, or -1 (timeout, closed, malformed); text gets the lines. */
static int smtp_reply(struct smtp *s, char *text, size_t textlen)
{
    long long deadline = now_ms() + SMTP_TIMEOUT_MS;
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
        if (left <= 0 || poll(&pf, 1, (int)left) <= 0)
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
        if (poll(&pf, 1, SMTP_TIMEOUT_MS) <= 0)
            return -1;
        ssize_t w = write(s->fd, line + off, n - off);
        if (w <= 0)
            return -1;
        off += (size_t)w;
    }
    return 0;
}

static int tcp_connect(uint32_t ip, long port)
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
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (poll(&pf, 1, SMTP_TIMEOUT_MS) <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
        close(fd);
        errno = soerr ? soerr : ETIMEDOUT;
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK); /* blocking for GnuTLS, bounded by SO_RCVTIMEO/SO_SNDTIMEO */
    struct timeval tv = {SMTP_TIMEOUT_MS / 1000, 0};
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
    struct smtp s = {.fd = tcp_connect(ips[0], d->mx_port)};
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
        gnutls_handshake_set_timeout(ses, SMTP_TIMEOUT_MS);
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

/* ---- the command ---- */

static void print(struct doc *d)
{
    if (d->ctx->json) {
        struct lc_json *j = lc_json_out();
        lc_json_arr(j);
        for (int i = 0; i < d->n; i++) {
            lc_json_obj(j);
            lc_json_kstr(j, "check", d->c[i].name);
            lc_json_kstr(j, "status", st_name[d->c[i].status]);
            lc_json_kstr(j, "detail", d->c[i].detail);
            lc_json_kstr(j, "fix", d->c[i].fix[0] ? d->c[i].fix : NULL);
            lc_json_end(j);
        }
        lc_json_end(j);
        lc_json_done(j, LC_EXIT_OK);
        return;
    }
    int nst[3] = {0, 0, 0};
    for (int i = 0; i < d->n; i++) {
        nst[d->c[i].status]++;
        printf("%-4s  %-22s %s\n", st_name[d->c[i].status], d->c[i].name, d->c[i].detail);
        if (d->c[i].fix[0])
            printf("      %-22s publish: %s\n", "", d->c[i].fix);
    }
    printf("\n%s: %d ok, %d warn, %d fail\n", d->domain, nst[0], nst[1], nst[2]);
}

int lc_cmd_doctor(struct lc_ctx *ctx, int argc, char **argv)
{
    enum { O_SEL = 1, O_IP };
    static const struct lc_opt opts[] = {{"selector", 's', 1, O_SEL}, {"ip", 0, 1, O_IP}, {NULL, 0, 0, 0}};
    const char *sels[MAX_SEL], *domain = NULL;
    int nsel = 0, status;
    struct doc d = {.ctx = ctx};
    struct lc_optstate st;
    lc_opt_init(&st, argc, argv);
    int o;
    while ((o = lc_opt_next(ctx, &st, opts, &status)) != -1) {
        if (o == -2)
            return status;
        if (o == O_SEL) {
            if (nsel >= MAX_SEL)
                return lc_usage(ctx, "doctor: at most %d --selector", MAX_SEL);
            if (strlen(st.arg) > 63 || !lc_dkim_name_ok(st.arg))
                return lc_usage(ctx, "doctor: '%.100s' is not a selector", st.arg);
            sels[nsel++] = st.arg;
        } else if (o == O_IP) {
            struct in_addr a4;
            struct in6_addr a6;
            if (d.nips >= MAX_IPS)
                return lc_usage(ctx, "doctor: at most %d --ip", MAX_IPS);
            if (inet_pton(AF_INET, st.arg, &a4) != 1 && inet_pton(AF_INET6, st.arg, &a6) != 1)
                return lc_usage(ctx, "doctor: '%.100s' is not an IP address", st.arg);
            snprintf(d.ips[d.nips++], sizeof d.ips[0], "%s", st.arg);
        } else if (!domain) {
            domain = st.arg;
        } else {
            return lc_usage(ctx, "doctor: unexpected argument '%.200s'", st.arg);
        }
    }
    if (!domain)
        return lc_usage(ctx, "doctor: missing DOMAIN (see listcast doctor --help)");
    if (strlen(domain) >= sizeof d.domain || !lc_dkim_name_ok(domain) || !strchr(domain, '.'))
        return lc_usage(ctx, "doctor: '%.100s' is not a domain name", domain);
    snprintf(d.domain, sizeof d.domain, "%s", domain);
    for (char *c = d.domain; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c + 32);
    d.helo = lc_cfg_str(ctx->cfg, "smtp.hostname");
    d.mx_port = (long)lc_cfg_int(ctx->cfg, "sender.mx_port");

    int rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS)
        return lc_refused(ctx, "c-ares: %s", ares_strerror(rc));
    struct ares_options opt;
    memset(&opt, 0, sizeof opt);
    opt.timeout = 2000;
    opt.tries = 3;
    opt.flags = ARES_FLAG_NOSEARCH;
    if ((rc = ares_init_options(&d.ch, &opt, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS)) != ARES_SUCCESS) {
        ares_library_cleanup();
        return lc_refused(ctx, "c-ares init: %s", ares_strerror(rc));
    }
    const char *servers = lc_cfg_str(ctx->cfg, "dns.servers");
    if (*servers && (rc = ares_set_servers_ports_csv(d.ch, servers)) != ARES_SUCCESS) {
        ares_destroy(d.ch);
        ares_library_cleanup();
        return lc_refused(ctx, "dns.servers '%s': %s", servers, ares_strerror(rc));
    }
    d.c = calloc(MAX_CHECKS, sizeof *d.c);
    if (!d.c) {
        ares_destroy(d.ch);
        ares_library_cleanup();
        return lc_refused(ctx, "out of memory");
    }
    check_mx(&d);
    check_spf(&d);
    check_dkim(&d, sels, nsel);
    check_dmarc(&d);
    check_fcrdns(&d);
    for (int i = 0; i < d.nmx; i++)
        check_tls_host(&d, d.mx[i]);
    ares_destroy(d.ch);
    ares_library_cleanup();
    print(&d);
    int failed = 0;
    for (int i = 0; i < d.n; i++)
        failed |= d.c[i].status == ST_FAIL;
    free(d.c);
    return failed ? LC_EXIT_REFUSED : LC_EXIT_OK;
}
