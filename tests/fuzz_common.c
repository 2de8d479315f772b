/* fuzz_common: libFuzzer target for common/'s parsers of untrusted input: mailbox addresses (lc_addr_norm),
 * VERP addresses (lc_verp_decode), signed tokens (lc_token_check) and configuration assignments (lc_cfg_set).
 * The first input byte picks the parser. Checks invariants, not just absence of crashes: a normalised address
 * re-normalises to itself, and a decoded VERP address or token re-encodes to the same text (case aside). */
#include "lc_addr.h"
#include "lc_cfg.h"
#include "lc_secret.h"
#include "lc_token.h"
#include "lc_verp.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct lc_secret *key;
    if (!key) {
        unsigned char k[32] = {1, 2, 3};
        key = lc_secret_from(k, sizeof k);
    }
    if (size < 1 || size > 4096)
        return 0;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 4) {
    case 3: { /* tokens: a valid one re-makes to itself (case aside) */
        int action;
        uint64_t id;
        int64_t exp;
        if (lc_token_check(key, p, n, 0, &action, &id, &exp) == LC_TOK_OK) {
            char t[LC_TOKEN_MAX];
            int len = lc_token_make(key, action, id, exp, t, sizeof t);
            if (len != (int)n || strncasecmp(t, p, n) != 0)
                abort();
        }
        break;
    }
    case 0: {
        char out[LC_ADDR_MAX + 1], again[LC_ADDR_MAX + 1];
        const char *why;
        if (lc_addr_norm(p, n, out, &why) == 0) {
            if (strlen(out) != n || lc_addr_norm(out, n, again, &why) != 0 || strcmp(out, again) != 0)
                abort();
        }
        break;
    }
    case 1: {
        uint64_t post, sub;
        if (lc_verp_decode(key, p, n, &post, &sub) == 0) {
            char enc[400];
            const char *at = memchr(p, '@', n);
            char dom[300];
            size_t dn = n - (size_t)(at + 1 - p);
            for (size_t i = 0; i < dn; i++)
                dom[i] = (char)((at[1 + i] >= 'A' && at[1 + i] <= 'Z') ? at[1 + i] + 32 : at[1 + i]);
            dom[dn] = 0;
            int len = lc_verp_encode(key, post, sub, dom, enc, sizeof enc);
            if (len != (int)n || strncasecmp(enc, p, n) != 0)
                abort();
        }
        break;
    }
    default: {
        char *s = malloc(n + 1), err[512];
        memcpy(s, p, n);
        s[n] = 0;
        struct lc_cfg *c = lc_cfg_new();
        (void)lc_cfg_set(c, s, err, sizeof err);
        lc_cfg_free(c);
        free(s);
        break;
    }
    }
    return 0;
}
