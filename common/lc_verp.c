/* lc_verp: signed VERP envelope senders. See lc_verp.h for the format. */
#include "lc_verp.h"
#include "lc_secret.h"

#include <string.h>

static const char b32[] = "0123456789abcdefghijklmnopqrstuv";

int lc_b32_u64(uint64_t v, char *out, size_t outlen)
{
    char tmp[16];
    int n = 0;
    do {
        tmp[n++] = b32[v & 31];
        v >>= 5;
    } while (v);
    if ((size_t)n + 1 > outlen)
        return -1;
    for (int i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = 0;
    return n;
}

static int b32val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'v')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'V')
        return c - 'A' + 10;
    return -1;
}

int lc_b32_parse_u64(const char *p, size_t n, uint64_t *v)
{
    /* 13 digits hold 65 bits: for 64 the first of 13 digits may be at most 15 ('f'). No leading zeros, so each
     * value has one encoding. */
    if (n == 0 || n > 13 || (n > 1 && p[0] == '0'))
        return -1;
    uint64_t r = 0;
    for (size_t i = 0; i < n; i++) {
        int d = b32val(p[i]);
        if (d < 0 || (i == 0 && n == 13 && d > 15))
            return -1;
        r = (r << 5) | (uint64_t)d;
    }
    *v = r;
    return 0;
}

/* mac12 writes the 12-digit signature of (post, sub, domain) to out[13]. */
static void mac12(const struct lc_secret *s, const char *p, size_t pn, const char *sb, size_t sn,
                  const char *domain, size_t dn, char out[13])
{
    char msg[4 + 1 + 13 + 1 + 13 + 1 + 256];
    size_t n = 0;
    memcpy(msg, "verp", 4);
    n = 4;
    msg[n++] = 0;
    memcpy(msg + n, p, pn);
    n += pn;
    msg[n++] = 0;
    memcpy(msg + n, sb, sn);
    n += sn;
    msg[n++] = 0;
    memcpy(msg + n, domain, dn);
    n += dn;
    unsigned char mac[32];
    lc_secret_mac(s, msg, n, mac);
    /* first 60 bits, 5 bits a digit, most significant first */
    uint64_t bits = 0;
    for (int i = 0; i < 8; i++)
        bits = (bits << 8) | mac[i];
    for (int i = 0; i < 12; i++)
        out[i] = b32[(bits >> (59 - 5 * i)) & 31];
    out[12] = 0;
}

int lc_verp_encode(const struct lc_secret *s, uint64_t post, uint64_t sub, const char *domain, char *out,
                   size_t outlen)
{
    char p[16], sb[16], m[13];
    int pn = lc_b32_u64(post, p, sizeof p), sn = lc_b32_u64(sub, sb, sizeof sb);
    size_t dn = strlen(domain);
    if (dn > 255)
        return -1;
    mac12(s, p, (size_t)pn, sb, (size_t)sn, domain, dn, m);
    size_t need = strlen(LC_VERP_PREFIX) + (size_t)pn + 1 + (size_t)sn + 1 + 12 + 1 + dn;
    if (need + 1 > outlen)
        return -1;
    char *o = out;
    memcpy(o, LC_VERP_PREFIX, strlen(LC_VERP_PREFIX));
    o += strlen(LC_VERP_PREFIX);
    memcpy(o, p, (size_t)pn);
    o += pn;
    *o++ = '-';
    memcpy(o, sb, (size_t)sn);
    o += sn;
    *o++ = '-';
    memcpy(o, m, 12);
    o += 12;
    *o++ = '@';
    memcpy(o, domain, dn);
    o += dn;
    *o = 0;
    return (int)need;
}

int lc_verp_decode(const struct lc_secret *s, const char *addr, size_t len, uint64_t *post, uint64_t *sub)
{
    size_t plen = strlen(LC_VERP_PREFIX);
    const char *at = memchr(addr, '@', len);
    if (!at || len < plen || strncasecmp(addr, LC_VERP_PREFIX, plen) != 0)
        return -1;
    const char *lp = addr + plen, *le = at;
    const char *d1 = memchr(lp, '-', (size_t)(le - lp));
    if (!d1)
        return -1;
    const char *d2 = memchr(d1 + 1, '-', (size_t)(le - d1 - 1));
    if (!d2 || le - d2 - 1 != 12)
        return -1;
    uint64_t pv, sv;
    if (lc_b32_parse_u64(lp, (size_t)(d1 - lp), &pv) < 0 || lc_b32_parse_u64(d1 + 1, (size_t)(d2 - d1 - 1), &sv) < 0)
        return -1;
    for (int i = 0; i < 12; i++)
        if (b32val(d2[1 + i]) < 0)
            return -1;
    size_t dn = len - (size_t)(at + 1 - addr);
    if (dn == 0 || dn > 255)
        return -1;
    char dom[256], p[16], sb[16], m[13];
    for (size_t i = 0; i < dn; i++) {
        char c = at[1 + i];
        dom[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    int pn = lc_b32_u64(pv, p, sizeof p), sn = lc_b32_u64(sv, sb, sizeof sb);
    mac12(s, p, (size_t)pn, sb, (size_t)sn, dom, dn, m);
    /* compare case-insensitively, in constant time */
    unsigned diff = 0;
    for (int i = 0; i < 12; i++) {
        char c = d2[1 + i];
        if (c >= 'A' && c <= 'V')
            c = (char)(c + 32);
        diff |= (unsigned)(c ^ m[i]);
    }
    if (diff)
        return -2;
    *post = pv;
    *sub = sv;
    return 0;
}
