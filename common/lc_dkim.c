/* lc_dkim: DKIM signing, relaxed/relaxed, rsa-sha256 and ed25519-sha256 (see lc_dkim.h for the contract).
 *
 * Layout: key handling (GnuTLS abstract private keys), the two relaxed canonicalizations, a bounded header
 * parser, the per-message state (body hash, h= list, SHA-256 state of the common fields) and the signer.
 * Limits: LC_DKIM_MAX_HEADER, LC_DKIM_MAX_FIELDS; the DKIM-Signature field built here is at most a few KB.
 */
#include "lc_dkim.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lc_buf.h"
#include "lc_log.h"

#define KEYFILE_MAX 65536
#define SIGFIELD_MAX 8192
#define FOLD_AT 76

/* Header names signed when present (in this order), each over-signed; the first ones are signed even when
 * absent, so that they cannot be added later. */
static const char *const signed_names[] = {
    "from", "reply-to", "subject", "date", "to", "cc", "message-id", "sender", "in-reply-to", "references",
    "mime-version", "content-type", "content-transfer-encoding", "content-disposition", "list-id", "list-post",
    "list-help", "list-subscribe", "list-owner", "list-archive", "auto-submitted", NULL};
#define ALWAYS_SIGNED 7 /* from .. message-id */

/* ---- small helpers ---- */

static void seterr(char *err, size_t errlen, const char *fmt, ...) LC_PRINTF(3, 4);
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* base64 writes the encoding of p (n octets) and a NUL; out needs 4*((n+2)/3)+1 octets. Returns the length. */
static size_t base64(const unsigned char *p, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        out[o++] = b64[v >> 18 & 63];
        out[o++] = b64[v >> 12 & 63];
        out[o++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? b64[v & 63] : '=';
    }
    out[o] = 0;
    return o;
}

int lc_dkim_alg_parse(const char *s)
{
    if (!strcmp(s, "rsa"))
        return LC_DKIM_RSA;
    if (!strcmp(s, "ed25519"))
        return LC_DKIM_ED25519;
    return -1;
}

const char *lc_dkim_alg_name(int alg)
{
    return alg == LC_DKIM_RSA ? "rsa" : alg == LC_DKIM_ED25519 ? "ed25519" : "?";
}

int lc_dkim_name_ok(const char *s)
{
    size_t n = strlen(s), lab = 0;
    if (n == 0 || n > 253)
        return 0;
    for (size_t i = 0; i <= n; i++) {
        char c = s[i];
        if (c == '.' || c == 0) {
            if (lab == 0 || lab > 63 || s[i - 1] == '-' || s[i - lab] == '-')
                return 0;
            lab = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return 0;
        lab++;
    }
    return 1;
}

/* ---- keys ---- */

struct lc_dkim_key {
    int alg;
    unsigned bits;
    gnutls_privkey_t pk;
    char domain[254];
    char selector[254];
};

static struct lc_dkim_key *key_wrap(gnutls_privkey_t pk, int alg, const char *domain, const char *selector,
                                    const char *what, char *err, size_t errlen)
{
    unsigned bits = 0;
    int pa = gnutls_privkey_get_pk_algorithm(pk, &bits);
    int want = alg == LC_DKIM_RSA ? GNUTLS_PK_RSA : GNUTLS_PK_EDDSA_ED25519;
    if (alg != LC_DKIM_RSA && alg != LC_DKIM_ED25519) {
        seterr(err, errlen, "%s: unknown DKIM algorithm", what);
    } else if (pa != want) {
        const char *n = gnutls_pk_algorithm_get_name((gnutls_pk_algorithm_t)(pa < 0 ? 0 : pa));
        seterr(err, errlen, "%s: a %s key, not %s", what, n ? n : "unknown", lc_dkim_alg_name(alg));
    } else if (alg == LC_DKIM_RSA && (bits < LC_DKIM_RSA_MIN || bits > LC_DKIM_RSA_MAX)) {
        seterr(err, errlen, "%s: RSA key of %u bits (%d..%d allowed)", what, bits, LC_DKIM_RSA_MIN, LC_DKIM_RSA_MAX);
    } else if (!lc_dkim_name_ok(domain) || !lc_dkim_name_ok(selector)) {
        seterr(err, errlen, "%s: bad domain or selector name", what);
    } else {
        struct lc_dkim_key *k = lc_calloc(1, sizeof *k);
        k->alg = alg;
        k->bits = bits;
        k->pk = pk;
        snprintf(k->domain, sizeof k->domain, "%s", domain);
        snprintf(k->selector, sizeof k->selector, "%s", selector);
        for (char *c = k->domain; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c + 32);
        return k;
    }
    gnutls_privkey_deinit(pk);
    return NULL;
}

struct lc_dkim_key *lc_dkim_key_generate(int alg, const char *domain, const char *selector, char *err,
                                         size_t errlen)
{
    gnutls_privkey_t pk;
    if (gnutls_privkey_init(&pk) < 0) {
        seterr(err, errlen, "gnutls_privkey_init failed");
        return NULL;
    }
    int rc = alg == LC_DKIM_RSA ? gnutls_privkey_generate2(pk, GNUTLS_PK_RSA, LC_DKIM_RSA_BITS, 0, NULL, 0)
                                : gnutls_privkey_generate2(pk, GNUTLS_PK_EDDSA_ED25519, 256, 0, NULL, 0);
    if (rc < 0) {
        seterr(err, errlen, "key generation failed: %s", gnutls_strerror(rc));
        gnutls_privkey_deinit(pk);
        return NULL;
    }
    return key_wrap(pk, alg, domain, selector, "new key", err, errlen);
}

struct lc_dkim_key *lc_dkim_key_from_pem(const char *pem, size_t len, int alg, const char *domain,
                                         const char *selector, char *err, size_t errlen)
{
    gnutls_privkey_t pk;
    if (gnutls_privkey_init(&pk) < 0) {
        seterr(err, errlen, "gnutls_privkey_init failed");
        return NULL;
    }
    gnutls_datum_t d = {(unsigned char *)(uintptr_t)pem, (unsigned)len};
    int rc = gnutls_privkey_import_x509_raw(pk, &d, GNUTLS_X509_FMT_PEM, NULL, 0);
    if (rc < 0) {
        seterr(err, errlen, "not a PEM private key: %s", gnutls_strerror(rc));
        gnutls_privkey_deinit(pk);
        return NULL;
    }
    return key_wrap(pk, alg, domain, selector, "key", err, errlen);
}

struct lc_dkim_key *lc_dkim_key_load(const char *path, int alg, const char *domain, const char *selector,
                                     char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        seterr(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = lc_malloc(KEYFILE_MAX);
    size_t n = 0;
    ssize_t r;
    while (n < KEYFILE_MAX && (r = read(fd, buf + n, KEYFILE_MAX - n)) != 0) {
        if (r < 0) {
            if (errno == EINTR)
                continue;
            seterr(err, errlen, "%s: %s", path, strerror(errno));
            close(fd);
            free(buf);
            return NULL;
        }
        n += (size_t)r;
    }
    close(fd);
    struct lc_dkim_key *k = NULL;
    if (n >= KEYFILE_MAX) {
        seterr(err, errlen, "%s: larger than %d octets", path, KEYFILE_MAX);
    } else {
        char why[256];
        k = lc_dkim_key_from_pem(buf, n, alg, domain, selector, why, sizeof why);
        if (!k)
            seterr(err, errlen, "%s: %s", path, why);
    }
    explicit_bzero(buf, KEYFILE_MAX);
    free(buf);
    return k;
}

void lc_dkim_key_free(struct lc_dkim_key *k)
{
    if (!k)
        return;
    gnutls_privkey_deinit(k->pk);
    free(k);
}

int lc_dkim_key_alg(const struct lc_dkim_key *k)
{
    return k->alg;
}

unsigned lc_dkim_key_bits(const struct lc_dkim_key *k)
{
    return k->bits;
}

const char *lc_dkim_key_domain(const struct lc_dkim_key *k)
{
    return k->domain;
}

const char *lc_dkim_key_selector(const struct lc_dkim_key *k)
{
    return k->selector;
}

int lc_dkim_key_pem(const struct lc_dkim_key *k, char **out, size_t *len)
{
    gnutls_x509_privkey_t x;
    gnutls_datum_t d = {NULL, 0};
    if (gnutls_privkey_export_x509(k->pk, &x) < 0)
        return -1;
    int rc = gnutls_x509_privkey_export2_pkcs8(x, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN, &d);
    gnutls_x509_privkey_deinit(x);
    if (rc < 0)
        return -1;
    *out = lc_malloc(d.size + 1);
    memcpy(*out, d.data, d.size);
    (*out)[d.size] = 0;
    *len = d.size;
    gnutls_memset(d.data, 0, d.size);
    gnutls_free(d.data);
    return 0;
}

int lc_dkim_key_txt(const struct lc_dkim_key *k, char *out, size_t outlen)
{
    gnutls_pubkey_t pub;
    gnutls_datum_t d = {NULL, 0};
    int rc = -1;
    if (gnutls_pubkey_init(&pub) < 0)
        return -1;
    if (gnutls_pubkey_import_privkey(pub, k->pk, 0, 0) < 0)
        goto out;
    if (k->alg == LC_DKIM_RSA) {
        if (gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, &d) < 0)
            goto out;
    } else {
        gnutls_ecc_curve_t curve;
        if (gnutls_pubkey_export_ecc_raw2(pub, &curve, &d, NULL, 0) < 0 || d.size != 32)
            goto out;
    }
    char *p = lc_malloc(4 * (d.size / 3 + 1) + 1);
    base64(d.data, d.size, p);
    int n = snprintf(out, outlen, "v=DKIM1; k=%s; p=%s", lc_dkim_alg_name(k->alg), p);
    free(p);
    rc = n < 0 || (size_t)n >= outlen ? -1 : 0;
out:
    gnutls_free(d.data);
    gnutls_pubkey_deinit(pub);
    return rc;
}

/* ---- canonicalization ---- */

/* A sink collects canonical octets for a hash or a buffer, in chunks. */
struct sink {
    gnutls_hash_hd_t h;   /* or */
    struct lc_buf *b;
    int fail;
    size_t n;
    char buf[4096];
};

static void sink_flush(struct sink *s)
{
    if (s->n == 0)
        return;
    if (s->h)
        gnutls_hash(s->h, s->buf, s->n);
    else if (s->b && lc_buf_append(s->b, s->buf, s->n) < 0)
        s->fail = 1;
    s->n = 0;
}

static void sink_put(struct sink *s, const char *p, size_t n)
{
    while (n) {
        if (s->n == sizeof s->buf)
            sink_flush(s);
        size_t k = sizeof s->buf - s->n;
        if (k > n)
            k = n;
        memcpy(s->buf + s->n, p, k);
        s->n += k;
        p += k;
        n -= k;
    }
}

static void sink_c(struct sink *s, char c)
{
    if (s->n == sizeof s->buf)
        sink_flush(s);
    s->buf[s->n++] = c;
}

/* canon_header writes "name:value" (relaxed) and, if crlf, "\r\n". -1 if there is no colon. */
static int canon_header(struct sink *s, const char *f, size_t len, int crlf)
{
    const char *colon = memchr(f, ':', len);
    if (!colon)
        return -1;
    size_t nl = (size_t)(colon - f);
    while (nl && is_wsp(f[nl - 1]))
        nl--;
    for (size_t i = 0; i < nl; i++) {
        char c = f[i];
        sink_c(s, c >= 'A' && c <= 'Z' ? (char)(c + 32) : c);
    }
    sink_c(s, ':');
    const char *v = colon + 1, *end = f + len;
    int pend = 0, any = 0;
    while (v < end) {
        char c = *v;
        if (c == '\r' && v + 1 < end && v[1] == '\n') { /* unfold: drop CRLF */
            v += 2;
            continue;
        }
        v++;
        if (is_wsp(c)) {
            pend = 1;
            continue;
        }
        if (pend && any)
            sink_c(s, ' ');
        pend = 0;
        any = 1;
        sink_c(s, c);
    }
    if (crlf)
        sink_put(s, "\r\n", 2);
    return 0;
}

int lc_dkim_canon_header(const char *field, size_t len, struct lc_buf *out)
{
    struct sink *s = lc_calloc(1, sizeof *s);
    s->b = out;
    size_t before = lc_buf_len(out);
    int rc = canon_header(s, field, len, 1);
    sink_flush(s);
    if (s->fail)
        rc = -1;
    if (rc < 0)
        lc_buf_truncate(out, before);
    free(s);
    return rc;
}

static void canon_body(struct sink *s, const char *p, size_t len)
{
    size_t empty = 0; /* empty lines not yet written (dropped if nothing follows) */
    size_t i = 0;
    while (i < len) {
        /* one line: up to CRLF or the end */
        const char *nl = NULL;
        for (const char *q = memchr(p + i, '\r', len - i); q; q = memchr(q + 1, '\r', (size_t)(p + len - q - 1)))
            if (q + 1 < p + len && q[1] == '\n') {
                nl = q;
                break;
            }
        size_t end = nl ? (size_t)(nl - p) : len;
        /* is it empty after canonicalization (only WSP)? */
        size_t k = i;
        while (k < end && is_wsp(p[k]))
            k++;
        if (k == end) {
            empty++;
        } else {
            for (; empty; empty--)
                sink_put(s, "\r\n", 2);
            int pend = 0;
            size_t run = i;
            for (size_t j = i; j < end; j++) {
                if (is_wsp(p[j])) {
                    if (!pend)
                        sink_put(s, p + run, j - run);
                    pend = 1;
                    continue;
                }
                if (pend) {
                    sink_c(s, ' ');
                    run = j;
                    pend = 0;
                }
            }
            if (!pend)
                sink_put(s, p + run, end - run);
            sink_put(s, "\r\n", 2);
        }
        i = nl ? end + 2 : len;
    }
}

int lc_dkim_canon_body(const char *body, size_t len, struct lc_buf *out)
{
    struct sink *s = lc_calloc(1, sizeof *s);
    s->b = out;
    size_t before = lc_buf_len(out);
    canon_body(s, body, len);
    sink_flush(s);
    int rc = s->fail ? -1 : 0;
    if (rc < 0)
        lc_buf_truncate(out, before);
    free(s);
    return rc;
}

int lc_dkim_body_hash(const char *body, size_t len, char out[45])
{
    unsigned char dig[32];
    struct sink *s = lc_calloc(1, sizeof *s);
    if (gnutls_hash_init(&s->h, GNUTLS_DIG_SHA256) < 0) {
        free(s);
        return -1;
    }
    canon_body(s, body, len);
    sink_flush(s);
    gnutls_hash_deinit(s->h, dig);
    free(s);
    base64(dig, sizeof dig, out);
    return 0;
}

/* ---- header parsing ---- */

struct field {
    uint32_t off, len; /* in the header copy, with the final CRLF */
    uint32_t nlen;     /* name length (no trailing WSP) */
};

/* parse_header splits h (hlen octets, the header block without the empty line) into fields. Returns the number
 * of fields, or -1 + err. */
static int parse_header(const char *h, size_t hlen, struct field *f, int max, char *err, size_t errlen)
{
    int n = 0;
    size_t i = 0, line = 0;
    while (i < hlen) {
        line++;
        if (is_wsp(h[i])) {
            seterr(err, errlen, "header line %zu: continuation without a field", line);
            return -1;
        }
        size_t start = i;
        /* the field runs to a CRLF not followed by WSP */
        for (;;) {
            const char *q = NULL;
            for (size_t j = i; j + 1 < hlen; j++)
                if (h[j] == '\r' && h[j + 1] == '\n') {
                    q = h + j;
                    break;
                }
            if (!q) {
                i = hlen;
                break;
            }
            i = (size_t)(q - h) + 2;
            if (i < hlen && is_wsp(h[i])) {
                line++;
                continue;
            }
            break;
        }
        size_t nl = 0;
        while (start + nl < i && h[start + nl] != ':') {
            unsigned char c = (unsigned char)h[start + nl];
            if (c < 33 || c > 126) {
                if (is_wsp((char)c)) { /* obsolete WSP before the colon (RFC 5322 4.5.8) */
                    size_t w = nl;
                    while (start + w < i && is_wsp(h[start + w]))
                        w++;
                    if (start + w < i && h[start + w] == ':')
                        break;
                }
                seterr(err, errlen, "header line %zu: malformed field name", line);
                return -1;
            }
            nl++;
        }
        if (nl == 0 || memchr(h + start, ':', i - start) == NULL) {
            seterr(err, errlen, "header line %zu: no field name and colon", line);
            return -1;
        }
        if (n >= max) {
            seterr(err, errlen, "more than %d header fields", max);
            return -1;
        }
        f[n].off = (uint32_t)start;
        f[n].len = (uint32_t)(i - start);
        f[n].nlen = (uint32_t)nl;
        n++;
    }
    return n;
}

static int name_is(const char *h, const struct field *f, const char *name)
{
    return strlen(name) == f->nlen && strncasecmp(h + f->off, name, f->nlen) == 0;
}

/* ---- messages ---- */

struct lc_dkim_msg {
    char *hdr;                 /* the header block (copy) */
    struct field *f;
    int nf;
    char bh[45];
    gnutls_hash_hd_t common;   /* SHA-256 of the common signed fields */
    char *hlist;               /* h= of the common part, e.g. "from:from:subject:subject" */
    const char *pc[LC_DKIM_MAX_PERCOPY];
    char pcbuf[LC_DKIM_MAX_PERCOPY][64];
    int npc;
};

struct lc_dkim_msg *lc_dkim_msg_new(const char *msg, size_t len, const char *const *percopy, char *err,
                                    size_t errlen)
{
    /* the header block ends at the first empty line (or the end of the message) */
    size_t hlen = 0, blen;
    const char *body;
    if (len >= 2 && msg[0] == '\r' && msg[1] == '\n') {
        hlen = 0;
        body = msg + 2;
    } else {
        const char *e = NULL;
        size_t lim = len < (size_t)LC_DKIM_MAX_HEADER + 4 ? len : (size_t)LC_DKIM_MAX_HEADER + 4;
        for (size_t j = 0; j + 3 < lim; j++)
            if (msg[j] == '\r' && msg[j + 1] == '\n' && msg[j + 2] == '\r' && msg[j + 3] == '\n') {
                e = msg + j;
                break;
            }
        if (!e && len > LC_DKIM_MAX_HEADER) {
            seterr(err, errlen, "header block over %d octets", LC_DKIM_MAX_HEADER);
            return NULL;
        }
        hlen = e ? (size_t)(e - msg) + 2 : len; /* with the last field's CRLF */
        body = e ? e + 4 : msg + len;
    }
    blen = (size_t)(msg + len - body);
    if (hlen > LC_DKIM_MAX_HEADER) {
        seterr(err, errlen, "header block over %d octets", LC_DKIM_MAX_HEADER);
        return NULL;
    }
    struct lc_dkim_msg *m = lc_calloc(1, sizeof *m);
    m->hdr = lc_malloc(hlen + 1);
    memcpy(m->hdr, msg, hlen);
    m->hdr[hlen] = 0;
    size_t maxf = hlen / 3 + 1 < LC_DKIM_MAX_FIELDS ? hlen / 3 + 1 : LC_DKIM_MAX_FIELDS;
    m->f = lc_calloc(maxf, sizeof *m->f);
    m->nf = parse_header(m->hdr, hlen, m->f, (int)maxf, err, errlen);
    if (m->nf < 0)
        goto fail;
    for (int i = 0; percopy && percopy[i]; i++) {
        if (i >= LC_DKIM_MAX_PERCOPY || strlen(percopy[i]) >= sizeof m->pcbuf[0]) {
            seterr(err, errlen, "too many or too long per-copy header names");
            goto fail;
        }
        for (size_t c = 0; percopy[i][c]; c++) {
            char ch = percopy[i][c];
            m->pcbuf[i][c] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
        }
        m->pc[i] = m->pcbuf[i];
        m->npc = i + 1;
    }
    if (lc_dkim_body_hash(body, blen, m->bh) < 0) {
        seterr(err, errlen, "SHA-256 unavailable");
        goto fail;
    }
    if (gnutls_hash_init(&m->common, GNUTLS_DIG_SHA256) < 0) {
        seterr(err, errlen, "SHA-256 unavailable");
        m->common = NULL;
        goto fail;
    }
    /* the common part: each signed name that is not per-copy, instances bottom up, then once more */
    struct lc_buf *hl = lc_buf_new(SIGFIELD_MAX);
    struct sink *s = lc_calloc(1, sizeof *s);
    s->h = m->common;
    for (int k = 0; signed_names[k]; k++) {
        const char *name = signed_names[k];
        int skip = 0;
        for (int j = 0; j < m->npc; j++)
            skip |= !strcmp(m->pc[j], name);
        if (skip)
            continue;
        int count = 0;
        for (int i = m->nf - 1; i >= 0; i--)
            if (name_is(m->hdr, &m->f[i], name)) {
                canon_header(s, m->hdr + m->f[i].off, m->f[i].len, 1);
                count++;
            }
        if (count == 0 && k >= ALWAYS_SIGNED)
            continue;
        for (int c = 0; c <= count; c++)
            if (lc_buf_printf(hl, "%s%s", lc_buf_len(hl) ? ":" : "", name) < 0) {
                seterr(err, errlen, "too many signed header fields");
                free(s);
                lc_buf_free(hl);
                goto fail;
            }
    }
    sink_flush(s);
    free(s);
    m->hlist = lc_buf_steal(hl, NULL);
    lc_buf_free(hl);
    return m;
fail:
    lc_dkim_msg_free(m);
    return NULL;
}

void lc_dkim_msg_free(struct lc_dkim_msg *m)
{
    if (!m)
        return;
    if (m->common) {
        unsigned char dig[32];
        gnutls_hash_deinit(m->common, dig);
    }
    free(m->hdr);
    free(m->f);
    free(m->hlist);
    free(m);
}

const char *lc_dkim_msg_bh(const struct lc_dkim_msg *m)
{
    return m->bh;
}

/* fold_append appends text to the field being built in b, breaking the line (CRLF TAB) before a word that would
 * pass FOLD_AT; *col is the current column. Words are split at "; " boundaries by the caller. */
static int fold_append(struct lc_buf *b, size_t *col, const char *text, size_t n)
{
    if (*col + n > FOLD_AT && *col > 1) {
        if (lc_buf_append(b, "\r\n\t", 3) < 0)
            return -1;
        *col = 1;
    } else if (*col > 0 && lc_buf_len(b) && lc_buf_data(b)[lc_buf_len(b) - 1] == ';') {
        if (lc_buf_append(b, " ", 1) < 0)
            return -1;
        (*col)++;
    }
    if (lc_buf_append(b, text, n) < 0)
        return -1;
    *col += n;
    return 0;
}

/* fold_list appends "h=a:b:c;" breaking after a ':' where a line would pass FOLD_AT. */
static int fold_list(struct lc_buf *b, size_t *col, const char *tag, const char *list)
{
    if (fold_append(b, col, tag, strlen(tag)) < 0)
        return -1;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) + 1 : strlen(p);
        if (*col + n > FOLD_AT) {
            if (lc_buf_append(b, "\r\n\t", 3) < 0)
                return -1;
            *col = 1;
        }
        if (lc_buf_append(b, p, n) < 0)
            return -1;
        *col += n;
        p += n;
    }
    if (lc_buf_append(b, ";", 1) < 0)
        return -1;
    (*col)++;
    return 0;
}

static int sign_one(const struct lc_dkim_msg *m, const struct lc_dkim_key *k, gnutls_hash_hd_t base,
                    const char *hlist, time_t t, struct lc_buf *out, char *err, size_t errlen)
{
    struct lc_buf *f = lc_buf_new(SIGFIELD_MAX);
    char tmp[600];
    size_t col = 0;
    int rc = -1;
    int ok = lc_buf_puts(f, "DKIM-Signature: v=1;") == 0;
    col = lc_buf_len(f);
    snprintf(tmp, sizeof tmp, "a=%s-sha256;", lc_dkim_alg_name(k->alg));
    ok = ok && fold_append(f, &col, tmp, strlen(tmp)) == 0;
    ok = ok && fold_append(f, &col, "c=relaxed/relaxed;", 18) == 0;
    snprintf(tmp, sizeof tmp, "d=%s;", k->domain);
    ok = ok && fold_append(f, &col, tmp, strlen(tmp)) == 0;
    snprintf(tmp, sizeof tmp, "s=%s;", k->selector);
    ok = ok && fold_append(f, &col, tmp, strlen(tmp)) == 0;
    if (t > 0) {
        snprintf(tmp, sizeof tmp, "t=%lld;", (long long)t);
        ok = ok && fold_append(f, &col, tmp, strlen(tmp)) == 0;
    }
    ok = ok && fold_list(f, &col, "h=", hlist) == 0;
    snprintf(tmp, sizeof tmp, "bh=%s;", m->bh);
    ok = ok && fold_append(f, &col, tmp, strlen(tmp)) == 0;
    ok = ok && fold_append(f, &col, "b=", 2) == 0;
    if (!ok) {
        seterr(err, errlen, "DKIM-Signature field too long");
        goto out;
    }
    /* hash the field as it stands (b= empty), relaxed, without a final CRLF */
    gnutls_hash_hd_t h = gnutls_hash_copy(base);
    if (!h) {
        seterr(err, errlen, "SHA-256 state copy failed");
        goto out;
    }
    struct sink *s = lc_calloc(1, sizeof *s);
    s->h = h;
    canon_header(s, lc_buf_data(f), lc_buf_len(f), 0);
    sink_flush(s);
    free(s);
    unsigned char dig[32];
    gnutls_hash_deinit(h, dig);
    gnutls_datum_t d = {dig, sizeof dig}, sig = {NULL, 0};
    int grc = k->alg == LC_DKIM_RSA ? gnutls_privkey_sign_hash2(k->pk, GNUTLS_SIGN_RSA_SHA256, 0, &d, &sig)
                                    : gnutls_privkey_sign_data2(k->pk, GNUTLS_SIGN_EDDSA_ED25519, 0, &d, &sig);
    if (grc < 0) {
        seterr(err, errlen, "%s signature with selector %s failed: %s", lc_dkim_alg_name(k->alg), k->selector,
               gnutls_strerror(grc));
        goto out;
    }
    char *bv = lc_malloc(4 * (sig.size / 3 + 1) + 1);
    size_t bn = base64(sig.data, sig.size, bv);
    gnutls_free(sig.data);
    for (size_t i = 0; ok && i < bn;) {
        size_t room = col < FOLD_AT ? FOLD_AT - col : 0;
        if (room < 8) {
            ok = lc_buf_append(f, "\r\n\t", 3) == 0;
            col = 1;
            continue;
        }
        size_t n = bn - i < room ? bn - i : room;
        ok = lc_buf_append(f, bv + i, n) == 0;
        col += n;
        i += n;
    }
    free(bv);
    ok = ok && lc_buf_append(f, "\r\n", 2) == 0;
    if (!ok || lc_buf_append(out, lc_buf_data(f), lc_buf_len(f)) < 0) {
        seterr(err, errlen, "DKIM-Signature field too long");
        goto out;
    }
    rc = 0;
out:
    lc_buf_free(f);
    return rc;
}

int lc_dkim_sign(const struct lc_dkim_msg *m, struct lc_dkim_key *const *keys, size_t nkeys, const char *extra,
                 size_t extralen, time_t t, struct lc_buf *out, char *err, size_t errlen)
{
    size_t before = lc_buf_len(out);
    struct field xf[16];
    int nx = 0;
    if (extralen) {
        nx = parse_header(extra, extralen, xf, (int)(sizeof xf / sizeof xf[0]), err, errlen);
        if (nx < 0)
            return -1;
    }
    for (int i = 0; i < nx; i++) {
        int known = 0;
        for (int j = 0; j < m->npc; j++)
            known |= name_is(extra, &xf[i], m->pc[j]);
        if (!known) {
            seterr(err, errlen, "per-copy header field \"%.*s\" not declared", (int)xf[i].nlen, extra + xf[i].off);
            return -1;
        }
    }
    gnutls_hash_hd_t h = gnutls_hash_copy(m->common);
    if (!h) {
        seterr(err, errlen, "SHA-256 state copy failed");
        return -1;
    }
    struct lc_buf *hl = lc_buf_new(SIGFIELD_MAX);
    struct sink *s = lc_calloc(1, sizeof *s);
    s->h = h;
    int ok = lc_buf_puts(hl, m->hlist) == 0;
    for (int j = 0; j < m->npc && ok; j++) {
        int count = 0;
        for (int i = m->nf - 1; i >= 0; i--) /* the message's instances first: they are lower down */
            if (name_is(m->hdr, &m->f[i], m->pc[j])) {
                canon_header(s, m->hdr + m->f[i].off, m->f[i].len, 1);
                count++;
            }
        for (int i = nx - 1; i >= 0; i--)
            if (name_is(extra, &xf[i], m->pc[j])) {
                canon_header(s, extra + xf[i].off, xf[i].len, 1);
                count++;
            }
        if (count == 0)
            continue;
        for (int c = 0; c <= count && ok; c++)
            ok = lc_buf_printf(hl, "%s%s", lc_buf_len(hl) ? ":" : "", m->pc[j]) == 0;
    }
    sink_flush(s);
    free(s);
    int rc = 0;
    if (!ok) {
        seterr(err, errlen, "too many signed header fields");
        rc = -1;
    }
    for (size_t k = 0; k < nkeys && rc == 0; k++)
        rc = sign_one(m, keys[k], h, lc_buf_data(hl), t, out, err, errlen);
    unsigned char dig[32];
    gnutls_hash_deinit(h, dig);
    lc_buf_free(hl);
    if (rc < 0)
        lc_buf_truncate(out, before);
    return rc;
}
