/* lc_token: signed stateless tokens. See lc_token.h for the form. */
#include "lc_token.h"
#include "lc_secret.h"
#include "lc_verp.h"

#include <stdio.h>
#include <string.h>

static const char b32[] = "0123456789abcdefghijklmnopqrstuv";

static int known_action(int a)
{
    return a == LC_TOK_SUBSCRIBE || a == LC_TOK_UNSUBSCRIBE || a == LC_TOK_ONECLICK || a == LC_TOK_APPROVE ||
           a == LC_TOK_REJECT || a == LC_TOK_PROBE;
}

/* mac16 writes 16 digits of the signature over the text fields to out[17]. */
static void mac16(const struct lc_secret *s, char action, const char *id, size_t idn, const char *exp, size_t expn,
                  char out[17])
{
    char msg[3 + 1 + 1 + 1 + 13 + 1 + 13];
    size_t n = 0;
    memcpy(msg, "tok", 3);
    n = 3;
    msg[n++] = 0;
    msg[n++] = action;
    msg[n++] = 0;
    memcpy(msg + n, id, idn);
    n += idn;
    msg[n++] = 0;
    memcpy(msg + n, exp, expn);
    n += expn;
    unsigned char mac[32];
    lc_secret_mac(s, msg, n, mac);
    /* 80 bits = 10 bytes, 5 bits a digit, most significant first */
    for (int i = 0; i < 16; i++) {
        int bit = i * 5, byte = bit / 8, shift = bit % 8;
        unsigned v = ((unsigned)mac[byte] << 8 | mac[byte + 1]) >> (11 - shift);
        out[i] = b32[v & 31];
    }
    out[16] = 0;
}

int lc_token_make(const struct lc_secret *s, int action, uint64_t id, int64_t expires, char *out, size_t outlen)
{
    if (!known_action(action) || expires < 0)
        return -1;
    char ids[16], exps[16], m[17];
    int idn = lc_b32_u64(id, ids, sizeof ids), expn = lc_b32_u64((uint64_t)expires, exps, sizeof exps);
    mac16(s, (char)action, ids, (size_t)idn, exps, (size_t)expn, m);
    int n = snprintf(out, outlen, "%c%s-%s-%s", action, ids, exps, m);
    return (n < 0 || (size_t)n >= outlen) ? -1 : n;
}

enum lc_tok_result lc_token_check(const struct lc_secret *s, const char *tok, size_t len, int64_t now, int *action,
                                  uint64_t *id, int64_t *expires)
{
    if (len < 1 + 1 + 1 + 1 + 1 + 16 || len > LC_TOKEN_MAX - 1)
        return LC_TOK_MALFORMED;
    char a = tok[0];
    if (a >= 'A' && a <= 'Z')
        a = (char)(a + 32);
    if (!known_action(a))
        return LC_TOK_MALFORMED;
    const char *p = tok + 1, *end = tok + len;
    const char *d1 = memchr(p, '-', (size_t)(end - p));
    if (!d1)
        return LC_TOK_MALFORMED;
    const char *d2 = memchr(d1 + 1, '-', (size_t)(end - d1 - 1));
    if (!d2 || end - d2 - 1 != 16)
        return LC_TOK_MALFORMED;
    for (int i = 0; i < 16; i++) {
        char c = d2[1 + i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'v') || (c >= 'A' && c <= 'V')))
            return LC_TOK_MALFORMED;
    }
    uint64_t idv, expv;
    if (lc_b32_parse_u64(p, (size_t)(d1 - p), &idv) < 0 || lc_b32_parse_u64(d1 + 1, (size_t)(d2 - d1 - 1), &expv) < 0 ||
        expv > (uint64_t)INT64_MAX)
        return LC_TOK_MALFORMED;
    char ids[16], exps[16], m[17];
    int idn = lc_b32_u64(idv, ids, sizeof ids), expn = lc_b32_u64(expv, exps, sizeof exps);
    mac16(s, a, ids, (size_t)idn, exps, (size_t)expn, m);
    unsigned diff = 0;
    for (int i = 0; i < 16; i++) {
        char c = d2[1 + i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + 32);
        diff |= (unsigned)(c ^ m[i]);
    }
    if (diff)
        return LC_TOK_FORGED;
    *action = a;
    *id = idv;
    *expires = (int64_t)expv;
    if (expv != 0 && (int64_t)expv < now)
        return LC_TOK_EXPIRED;
    return LC_TOK_OK;
}

const char *lc_token_why(enum lc_tok_result r)
{
    switch (r) {
    case LC_TOK_OK:
        return "valid";
    case LC_TOK_MALFORMED:
        return "not a valid token";
    case LC_TOK_FORGED:
        return "forged or altered token";
    case LC_TOK_EXPIRED:
        return "expired token";
    }
    return "unknown";
}
