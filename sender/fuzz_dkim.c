/* fuzz_dkim: libFuzzer target for common/lc_dkim's header parser and relaxed canonicalizations.
 *
 * Input: a message (CRLF line ends expected, anything accepted). If it holds a NUL octet, the part after the
 * first NUL is a copy's extra header lines. Checks: the relaxed body form is idempotent, has no line ending in
 * WSP, no empty line at its end and ends in CRLF unless empty; a header field's relaxed form is idempotent;
 * lc_dkim_msg_new either refuses the message or gives a state that signs (Ed25519, a key made once) or
 * refuses the extra lines cleanly, writing nothing then. Memory errors are ASan's job.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lc_buf.h"
#include "lc_dkim.h"
#include "lc_log.h"

static struct lc_dkim_key *key;

static void check_body(const char *p, size_t n)
{
    struct lc_buf *a = lc_buf_new(4 * n + 16), *b = lc_buf_new(4 * n + 16);
    if (lc_dkim_canon_body(p, n, a) < 0)
        abort();
    const char *s = lc_buf_data(a);
    size_t l = lc_buf_len(a);
    if (l && (l < 2 || s[l - 2] != '\r' || s[l - 1] != '\n'))
        abort(); /* a non-empty body ends in CRLF */
    if (l >= 4 && !memcmp(s + l - 4, "\r\n\r\n", 4))
        abort(); /* no empty line at the end */
    for (size_t i = 0; i + 2 < l; i++)
        if ((s[i] == ' ' || s[i] == '\t') && s[i + 1] == '\r' && s[i + 2] == '\n')
            abort(); /* no WSP before a line end */
    if (lc_dkim_canon_body(s, l, b) < 0 || lc_buf_len(b) != l || memcmp(lc_buf_data(b), s, l) != 0)
        abort(); /* idempotent */
    lc_buf_free(a);
    lc_buf_free(b);
}

static void check_header(const char *p, size_t n)
{
    const char *e = memchr(p, '\n', n);
    size_t fl = e ? (size_t)(e - p) + 1 : n;
    struct lc_buf *a = lc_buf_new(2 * fl + 16), *b = lc_buf_new(2 * fl + 16);
    if (lc_dkim_canon_header(p, fl, a) == 0) {
        if (lc_dkim_canon_header(lc_buf_data(a), lc_buf_len(a), b) < 0 || lc_buf_len(b) != lc_buf_len(a) ||
            memcmp(lc_buf_data(a), lc_buf_data(b), lc_buf_len(a)) != 0) {
            /* a value holding a bare CR LF pair is not idempotent by design: CRLF is unfolded once */
            if (!memmem(lc_buf_data(a), lc_buf_len(a) - 2, "\r\n", 2))
                abort();
        }
    }
    lc_buf_free(a);
    lc_buf_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const pc[] = {"List-Unsubscribe", "List-Unsubscribe-Post", NULL};
    char err[512];
    if (!key) {
        lc_log_init("fuzz_dkim");
        key = lc_dkim_key_generate(LC_DKIM_ED25519, "lists.test", "f", err, sizeof err);
        if (!key) {
            fprintf(stderr, "fuzz_dkim: %s\n", err);
            abort();
        }
    }
    const char *p = (const char *)data;
    const char *nul = memchr(p, 0, size);
    size_t mlen = nul ? (size_t)(nul - p) : size;
    const char *extra = nul ? nul + 1 : "";
    size_t xlen = nul ? size - mlen - 1 : 0;
    check_body(p, mlen);
    check_header(p, mlen);
    struct lc_dkim_msg *m = lc_dkim_msg_new(p, mlen, pc, err, sizeof err);
    if (m) {
        struct lc_buf *out = lc_buf_new(1 << 20);
        if (lc_dkim_sign(m, &key, 1, extra, xlen, 1, out, err, sizeof err) < 0) {
            if (lc_buf_len(out) != 0)
                abort(); /* nothing written on failure */
        } else if (strncmp(lc_buf_data(out), "DKIM-Signature: v=1; a=ed25519-sha256;", 38) != 0) {
            abort();
        }
        lc_buf_free(out);
        lc_dkim_msg_free(m);
    }
    return 0;
}
