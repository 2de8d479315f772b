/* lc_doctor.h: the DNS record parsers of `listcast doctor` (lc_doctor_rec.c), pure and bounded, shared by the
 * command (lc_doctor.c) and its libFuzzer target (fuzz_doctor.c).
 *
 * Contract: every parser takes (s, len) of one TXT record (the character-strings of one resource record joined,
 * RFC 7208 3.3 / RFC 6376 3.6.2.2), which may hold any octets (a malformed or hostile answer); it never reads
 * past len, never allocates, fills a plain struct and returns 0, or -1 with a one-line reason in ->why.
 * Limits: records longer than DR_REC_MAX are refused; at most DR_TERMS_MAX terms or tags are looked at.
 */
#ifndef LC_DOCTOR_H
#define LC_DOCTOR_H

#include <stddef.h>
#include <stdint.h>

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

#endif
