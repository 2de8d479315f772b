/* lc_doctor.h: the checks of `listcast doctor` (lc_doctor_check.c) and their DNS record parsers
 * (lc_doctor_rec.c), built as the lc_doctor library that the command (lc_doctor.c) and the web UI (webui/
 * web_doctor.c) link; the parsers alone are also linked by their libFuzzer target (fuzz_doctor.c).
 *
 * Parsers: pure and bounded. Every parser takes (s, len) of one TXT record (the character-strings of one
 * resource record joined, RFC 7208 3.3 / RFC 6376 3.6.2.2), which may hold any octets (a malformed or hostile
 * answer); it never reads past len, never allocates, fills a plain struct and returns 0, or -1 with a one-line
 * reason in ->why.
 * Limits: records longer than DR_REC_MAX are refused; at most DR_TERMS_MAX terms or tags are looked at.
 */
#ifndef LC_DOCTOR_H
#define LC_DOCTOR_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct lc_json;

#define DR_REC_MAX 4096
#define DR_TERMS_MAX 64
#define DR_NAMES_MAX 8
#define DR_NETS_MAX 32
#define DR_NAME_MAX 256

/* dr_is_printable: 1 if s[0..len) is printable ASCII (0x20..0x7e) only. */
int dr_is_printable(const char *s, size_t len);
/* dr_escape writes s for display: printable ASCII as is, other octets as \xHH, cut with "..." to fit out. */
void dr_escape(const char *s, size_t len, char *out, size_t outlen);
/* dr_starts_tag: 1 if the record starts with the version tag (e.g. "v=spf1", case-insensitive) followed by the
 * end, a space (SPF) or, when semi is set, optional spaces and ';' (DMARC, DKIM). */
int dr_starts_tag(const char *s, size_t len, const char *tag, int semi);

/* SPF (RFC 7208): the record "v=spf1 ..." */
struct dr_spf {
    char all;                   /* qualifier of the all mechanism: '+', '-', '~', '?'; 0: none */
    int lookups;                /* include, a, mx, ptr, exists, redirect: DNS-querying terms (limit 10) */
    int nnets;                  /* ip4 mechanisms */
    uint32_t net[DR_NETS_MAX];  /* host order */
    int prefix[DR_NETS_MAX];
    int na, nmx, ninc;
    char a[DR_NAMES_MAX][DR_NAME_MAX];   /* "" = the domain itself */
    char mx[DR_NAMES_MAX][DR_NAME_MAX];
    char inc[DR_NAMES_MAX][DR_NAME_MAX]; /* include targets */
    char redirect[DR_NAME_MAX];          /* redirect= target or "" */
    char why[256];
};
int dr_spf_parse(const char *s, size_t len, struct dr_spf *out);
/* dr_spf_covers: 1 if ip (host order) is in one of the ip4 networks. */
int dr_spf_covers(const struct dr_spf *spf, uint32_t ip);

/* DMARC (RFC 7489): "v=DMARC1; p=...; ..." */
struct dr_dmarc {
    char p[16];      /* none, quarantine or reject */
    char sp[16];     /* "" when absent */
    int pct;         /* 100 when absent */
    char rua[512];   /* "" when absent; every URI is mailto: */
    char why[256];
};
int dr_dmarc_parse(const char *s, size_t len, struct dr_dmarc *out);

/* DKIM key record (RFC 6376 3.6.1): "v=DKIM1; k=rsa; p=BASE64" */
struct dr_dkim {
    char k[16];      /* rsa when absent */
    char p[DR_REC_MAX]; /* the base64 public key with white space removed; "" = revoked */
    int has_p;
    char why[256];
};
int dr_dkim_parse(const char *s, size_t len, struct dr_dkim *out);

/* ---- the checks (lc_doctor_check.c) ----
 * Contract: lc_doctor_run runs every check of one domain in the calling thread, one DNS query or SMTP step at a
 * time (see lc_doctor_check.c for the list and the per-step bounds), and returns the report; it keeps no state
 * between runs and several runs may go on in parallel threads. The process calls ares_library_init once before
 * the first run (c-ares' own rule). A run has no time bound of its own beyond the per-step timeouts unless
 * budget_ms is set: then every wait is cut to what is left of the budget, and the checks after it ran out fail
 * with a timeout (report->cut set). cancel (optional) ends a run the same way from another thread. */

#define LC_DOCTOR_SEL_MAX 16 /* extra selectors */
#define LC_DOCTOR_IPS_MAX 16 /* sending addresses */

enum lc_doctor_status { LC_DOCTOR_OK, LC_DOCTOR_WARN, LC_DOCTOR_FAIL };

struct lc_doctor_check {
    char name[300];    /* mx, spf, spf:ADDR (spf:ip), dkim:SEL (dkim), dmarc, fcrdns:ADDR (fcrdns), starttls:HOST */
    int status;        /* enum lc_doctor_status */
    char detail[1400]; /* what is found or wrong; DNS data in it is escaped by dr_escape (printable ASCII) */
    char fix[2400];    /* the exact record to publish (zone-file line), "" when there is nothing to publish */
};

struct lc_doctor_opts {
    const char *domain;       /* lc_doctor_domain_ok (any case: the report holds it lower-cased) */
    const char *helo;         /* smtp.hostname: the EHLO name, and the MX/PTR target in fixes */
    long mx_port;             /* sender.mx_port: port of the STARTTLS probes */
    const char *dns_servers;  /* dns.servers: "host:port,..." or "" for the system resolver */
    const char *state_dir;    /* state.dir: the local DKIM keys are STATE_DIR/dkim/DOMAIN/SEL.ALG.key */
    const char *const *sels;  /* extra selectors (lc_dkim_name_ok), at most LC_DOCTOR_SEL_MAX */
    int nsel;
    const char *const *ips;   /* sending addresses (IPv4 is checked, IPv6 reported), at most LC_DOCTOR_IPS_MAX */
    int nips;
    long long budget_ms;      /* 0: no bound on the whole run; else its bound in milliseconds */
    const atomic_int *cancel; /* NULL, or a flag another thread sets non-zero to end the run early */
};

struct lc_doctor_report {
    char domain[256];          /* lower-cased */
    int n;
    struct lc_doctor_check *c; /* n checks in the order they ran */
    int cut;                   /* the budget ran out or the run was cancelled before the end */
};

/* lc_doctor_domain_ok: 1 if s is a domain doctor checks (lc_dkim_name_ok, at most 255 octets, a dot). */
int lc_doctor_domain_ok(const char *s);
/* lc_doctor_run runs the checks; NULL with a one-line reason in err when it cannot start (c-ares setup, a bad
 * dns.servers, memory). Free the report with lc_doctor_report_free. */
struct lc_doctor_report *lc_doctor_run(const struct lc_doctor_opts *o, char *err, size_t errlen);
void lc_doctor_report_free(struct lc_doctor_report *r);
/* lc_doctor_failed: 1 if a check failed (the command then exits 1). */
int lc_doctor_failed(const struct lc_doctor_report *r);
/* lc_doctor_status_name: "ok", "warn" or "fail". */
const char *lc_doctor_status_name(int status);
/* lc_doctor_json writes the report as `listcast doctor --json` does: an array of {check, status, detail, fix}
 * (fix null when there is nothing to publish). */
void lc_doctor_json(struct lc_json *j, const struct lc_doctor_report *r);

#endif
