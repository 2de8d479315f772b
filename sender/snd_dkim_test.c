/* snd_dkim_test: unit tests of common/lc_dkim (relaxed canonicalization against RFC 6376 3.4.5 and edge cases,
 * header selection, per-copy signing, key loading errors, the GMP RSA signatures against GnuTLS's for the same
 * keys and digests) and of the sender's key directory (snd_dkim.c).
 *
 * Usage: snd_dkim_test                      run the unit tests (exit 0 if all pass)
 *        snd_dkim_test sign KEY ALG DOMAIN SELECTOR [EXTRA_FILE] < MSG
 *                                           print the signed copy (DKIM-Signature, extra lines, message):
 *                                           tests/dkim_test.py checks such copies with dkimpy
 *        snd_dkim_test bench KEY ALG N      sign N per-recipient copies of a list post; print copies/s
 * Limits: messages up to 16 MiB on stdin.
 */
#include "snd.h"

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lc_buf.h"
#include "lc_dkim.h"
#include "lc_log.h"
#include "lc_secret.h"

static int fails, passes;

#define CHECK(cond, what)                                                                                      \
    do {                                                                                                       \
        if (cond) {                                                                                            \
            passes++;                                                                                          \
        } else {                                                                                               \
            fails++;                                                                                           \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, what);                                     \
        }                                                                                                      \
    } while (0)

static int canon_h_is(const char *in, const char *want)
{
    struct lc_buf *b = lc_buf_new(4096);
    int rc = lc_dkim_canon_header(in, strlen(in), b);
    int ok = rc == 0 && !strcmp(lc_buf_data(b), want);
    if (!ok)
        fprintf(stderr, "  header [%s] -> [%s] want [%s]\n", in, lc_buf_data(b), want);
    lc_buf_free(b);
    return ok;
}

static int canon_b_is(const char *in, const char *want)
{
    struct lc_buf *b = lc_buf_new(4096);
    int rc = lc_dkim_canon_body(in, strlen(in), b);
    int ok = rc == 0 && !strcmp(lc_buf_data(b), want);
    if (!ok)
        fprintf(stderr, "  body [%s] -> [%s] want [%s]\n", in, lc_buf_data(b), want);
    lc_buf_free(b);
    return ok;
}

static void test_canon(void)
{
    /* RFC 6376 3.4.5 */
    CHECK(canon_h_is("A: X\r\n", "a:X\r\n"), "3.4.5 header A");
    CHECK(canon_h_is("B : Y\t\r\n\tZ  \r\n", "b:Y Z\r\n"), "3.4.5 header B (folded, WSP before colon)");
    CHECK(canon_b_is(" C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n"), "3.4.5 body");
    /* more */
    CHECK(canon_h_is("Subject:   hello   world  ", "subject:hello world\r\n"), "no final CRLF, WSP runs");
    CHECK(canon_h_is("X-Empty:\r\n", "x-empty:\r\n"), "empty value");
    CHECK(canon_h_is("X-Fold: a\r\n b\r\n\tc\r\n", "x-fold:a b c\r\n"), "multi-line fold");
    CHECK(canon_h_is("FROM:\t<a@b>", "from:<a@b>\r\n"), "name lower-cased, tab after colon");
    struct lc_buf *b = lc_buf_new(100);
    CHECK(lc_dkim_canon_header("no colon here", 13, b) == -1, "a field without a colon is refused");
    lc_buf_free(b);
    CHECK(canon_b_is("", ""), "empty body stays empty (relaxed)");
    CHECK(canon_b_is("\r\n\r\n", ""), "only empty lines: empty");
    CHECK(canon_b_is("a", "a\r\n"), "CRLF added to a last line without one");
    CHECK(canon_b_is("a  \t\r\n \t \r\nb\r\n  \r\n", "a\r\n\r\nb\r\n"), "WSP-only lines count as empty");
    CHECK(canon_b_is("  lead", " lead\r\n"), "leading WSP reduced to one SP, not removed");
    CHECK(canon_b_is("x\ry\r\n", "x\ry\r\n"), "bare CR is content");
    char bh[45];
    lc_dkim_body_hash("", 0, bh);
    CHECK(!strcmp(bh, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="), "body hash of the empty body");
    lc_dkim_body_hash("\r\n", 2, bh);
    CHECK(!strcmp(bh, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="), "body hash of CRLF (relaxed: empty)");
}

static const char *const pc[] = {"List-Unsubscribe", "List-Unsubscribe-Post", NULL};

static char *field_tag(const char *sig, const char *tag)
{
    /* unfolded value of tag in the first DKIM-Signature field */
    static char out[4096];
    size_t o = 0;
    const char *p = strstr(sig, tag);
    if (!p)
        return NULL;
    p += strlen(tag);
    while (*p && *p != ';' && o + 1 < sizeof out) {
        if (*p != '\r' && *p != '\n' && *p != '\t' && *p != ' ')
            out[o++] = *p;
        p++;
    }
    out[o] = 0;
    return out;
}

static void test_msg(void)
{
    char err[256];
    const char *msg = "Received: x\r\nFrom: A <a@x.test>\r\nTo: l@y.test\r\nSubject: one\r\n two\r\n"
                      "To: second@y.test\r\nDKIM-Signature: v=1; old\r\n\r\nbody\r\n";
    struct lc_dkim_msg *m = lc_dkim_msg_new(msg, strlen(msg), pc, err, sizeof err);
    CHECK(m != NULL, "message parsed");
    if (!m)
        return;
    char bh[45];
    lc_dkim_body_hash("body\r\n", 6, bh);
    CHECK(!strcmp(lc_dkim_msg_bh(m), bh), "body hash of the message's body");
    struct lc_dkim_key *k = lc_dkim_key_generate(LC_DKIM_ED25519, "Y.test", "s1", err, sizeof err);
    CHECK(k != NULL, "ed25519 key generated");
    struct lc_buf *out = lc_buf_new(65536);
    const char *extra = "List-Unsubscribe: <mailto:u@y.test>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n";
    CHECK(lc_dkim_sign(m, &k, 1, extra, strlen(extra), 1700000000, out, err, sizeof err) == 0, "signed");
    const char *h = field_tag(lc_buf_data(out), "h=");
    CHECK(h && !strcmp(h, "from:from:reply-to:subject:subject:date:to:to:to:cc:message-id:list-unsubscribe:list-unsubscribe:"
                          "list-unsubscribe-post:list-unsubscribe-post"),
          "h= lists each present name count+1 times, per-copy names last, no dkim-signature, no received");
    if (h)
        fprintf(stderr, "  h=%s\n", h);
    CHECK(!strcmp(field_tag(lc_buf_data(out), "d="), "y.test"), "d= lower case");
    CHECK(!strcmp(field_tag(lc_buf_data(out), "bh="), bh), "bh= is the body hash");
    CHECK(!strncmp(lc_buf_data(out), "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;", 57), "field start");
    /* every line at most 78 octets, ends CRLF */
    const char *s = lc_buf_data(out);
    int longest = 0, cur = 0;
    for (; *s; s++) {
        if (*s == '\n') {
            longest = cur > longest ? cur : longest;
            cur = 0;
        } else {
            cur++;
        }
    }
    CHECK(longest <= 79, "lines folded");
    lc_buf_reset(out);
    const char *bad = "Subject: extra\r\n";
    CHECK(lc_dkim_sign(m, &k, 1, bad, strlen(bad), 0, out, err, sizeof err) == -1 && lc_buf_len(out) == 0,
          "an extra field that is not per-copy is refused, nothing written");
    lc_buf_free(out);
    lc_dkim_key_free(k);
    lc_dkim_msg_free(m);

    const char *bad1 = " continuation\r\nFrom: a@b\r\n\r\nx";
    CHECK(lc_dkim_msg_new(bad1, strlen(bad1), NULL, err, sizeof err) == NULL, "leading continuation refused");
    const char *bad2 = "From a@b Mon\r\nTo: x\r\n\r\nx";
    CHECK(lc_dkim_msg_new(bad2, strlen(bad2), NULL, err, sizeof err) == NULL, "mbox From_ line refused");
    const char *ok2 = "From: a@b";
    m = lc_dkim_msg_new(ok2, strlen(ok2), NULL, err, sizeof err);
    CHECK(m != NULL, "header only, no final CRLF");
    lc_dkim_msg_free(m);
    m = lc_dkim_msg_new("\r\nbody only", 11, NULL, err, sizeof err);
    CHECK(m != NULL, "no header at all");
    lc_dkim_msg_free(m);
}

static void test_keys(const char *tmp)
{
    char err[512], path[512];
    struct lc_dkim_key *k = lc_dkim_key_generate(LC_DKIM_RSA, "x.test", "sel", err, sizeof err);
    CHECK(k && lc_dkim_key_bits(k) == 2048, "rsa-2048 generated");
    char *pem;
    size_t len;
    CHECK(lc_dkim_key_pem(k, &pem, &len) == 0 && strstr(pem, "BEGIN PRIVATE KEY"), "PKCS#8 PEM");
    char txt[LC_DKIM_TXT_MAX];
    CHECK(lc_dkim_key_txt(k, txt, sizeof txt) == 0 && !strncmp(txt, "v=DKIM1; k=rsa; p=MIIBIjAN", 26), "rsa TXT");
    snprintf(path, sizeof path, "%s/k.pem", tmp);
    FILE *f = fopen(path, "w");
    fwrite(pem, 1, len, f);
    fclose(f);
    struct lc_dkim_key *k2 = lc_dkim_key_load(path, LC_DKIM_RSA, "x.test", "sel", err, sizeof err);
    CHECK(k2 != NULL, "rsa key loads");
    lc_dkim_key_free(k2);
    k2 = lc_dkim_key_load(path, LC_DKIM_ED25519, "x.test", "sel", err, sizeof err);
    CHECK(k2 == NULL && strstr(err, "not ed25519"), "an RSA key is not taken as Ed25519");
    fprintf(stderr, "  (%s)\n", err);
    free(pem);
    lc_dkim_key_free(k);
    k = lc_dkim_key_generate(LC_DKIM_ED25519, "x.test", "sel", err, sizeof err);
    CHECK(lc_dkim_key_txt(k, txt, sizeof txt) == 0 && !strncmp(txt, "v=DKIM1; k=ed25519; p=", 22) &&
              strlen(txt) == 22 + 44,
          "ed25519 TXT is the raw 32-octet key");
    lc_dkim_key_free(k);
    /* a 512-bit RSA key is refused */
    gnutls_privkey_t pk;
    gnutls_privkey_init(&pk);
    if (gnutls_privkey_generate2(pk, GNUTLS_PK_RSA, 512, 0, NULL, 0) == 0) {
        gnutls_x509_privkey_t x;
        gnutls_datum_t d;
        gnutls_privkey_export_x509(pk, &x);
        gnutls_x509_privkey_export2_pkcs8(x, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN, &d);
        k2 = lc_dkim_key_from_pem((const char *)d.data, d.size, LC_DKIM_RSA, "x.test", "s", err, sizeof err);
        CHECK(k2 == NULL && strstr(err, "512 bits"), "a 512-bit RSA key is refused");
        fprintf(stderr, "  (%s)\n", err);
        gnutls_free(d.data);
        gnutls_x509_privkey_deinit(x);
    }
    gnutls_privkey_deinit(pk);
    k2 = lc_dkim_key_from_pem("garbage", 7, LC_DKIM_RSA, "x.test", "s", err, sizeof err);
    CHECK(k2 == NULL && strstr(err, "not a PEM"), "garbage is refused");
    snprintf(path, sizeof path, "%s/none.pem", tmp);
    k2 = lc_dkim_key_load(path, LC_DKIM_RSA, "x.test", "s", err, sizeof err);
    CHECK(k2 == NULL && strstr(err, "No such file"), "a missing file is refused");
    CHECK(lc_dkim_name_ok("s2024._x") && !lc_dkim_name_ok("a..b") && !lc_dkim_name_ok("-a") &&
              !lc_dkim_name_ok("a/b") && !lc_dkim_name_ok(""),
          "name check");
}

/* rsa_same: the GMP signature of a few digests equals GnuTLS's for key k (RSASSA-PKCS1-v1_5 is deterministic). */
static int rsa_same(struct lc_dkim_key *k)
{
    char err[256];
    unsigned char dig[32], a[512], b[512];
    int same = 1;
    for (int i = 0; i < 4 && same; i++) {
        for (int j = 0; j < 32; j++)
            dig[j] = (unsigned char)(i == 0 ? 0 : i == 1 ? 0xff : (j * 37 + i * 101) & 0xff);
        unsigned char c[512];
        long na = lc_dkim_key_sign_digest(k, dig, LC_DKIM_VIA_DEFAULT, a, sizeof a, err, sizeof err);
        long nb = lc_dkim_key_sign_digest(k, dig, LC_DKIM_VIA_GNUTLS, b, sizeof b, err, sizeof err);
        long nc = lc_dkim_key_sign_digest(k, dig, LC_DKIM_VIA_GMP, c, sizeof c, err, sizeof err);
        same = na > 0 && na == nb && na == nc && na == (long)(lc_dkim_key_bits(k) + 7) / 8 &&
               !memcmp(a, b, (size_t)na) && !memcmp(c, b, (size_t)na);
        if (!same)
            fprintf(stderr, "  rsa-%u digest %d: default (%s) %ld octets, GnuTLS %ld, GMP %ld: differ (%s)\n",
                    lc_dkim_key_bits(k), i, lc_dkim_key_fast(k) ? "IFMA" : "GMP", na, nb, nc, err);
    }
    return same;
}

static void test_rsa_gmp(void)
{
    char err[512];
    struct lc_dkim_key *k = lc_dkim_key_generate(LC_DKIM_RSA, "x.test", "sel", err, sizeof err);
    CHECK(k && rsa_same(k), "rsa-2048: the signatures (IFMA where the CPU has it, GMP) equal GnuTLS's");
    fprintf(stderr, "  (rsa-2048 default path on this CPU: %s)\n", k && lc_dkim_key_fast(k) ? "AVX-512 IFMA" : "GMP");
    for (int i = 0; k && i < 200; i++) { /* more digests through the default path, checked against GnuTLS */
        unsigned char dig[32], a[512], b[512];
        for (int j = 0; j < 32; j++)
            dig[j] = (unsigned char)(i * 7 + j * 13 + (i >> 3));
        long na = lc_dkim_key_sign_digest(k, dig, LC_DKIM_VIA_DEFAULT, a, sizeof a, err, sizeof err);
        long nb = lc_dkim_key_sign_digest(k, dig, LC_DKIM_VIA_GNUTLS, b, sizeof b, err, sizeof err);
        if (na != 256 || nb != 256 || memcmp(a, b, 256)) {
            CHECK(0, "rsa-2048: 200 more digests agree with GnuTLS");
            break;
        }
        if (i == 199)
            CHECK(1, "rsa-2048: 200 more digests agree with GnuTLS");
    }
    lc_dkim_key_free(k);
    static const unsigned sizes[] = {1024, 1031, 2047, 3072};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        gnutls_privkey_t pk;
        gnutls_privkey_init(&pk);
        if (gnutls_privkey_generate2(pk, GNUTLS_PK_RSA, sizes[i], 0, NULL, 0) == 0) {
            gnutls_x509_privkey_t x;
            gnutls_datum_t d;
            gnutls_privkey_export_x509(pk, &x);
            gnutls_x509_privkey_export2_pkcs8(x, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN, &d);
            k = lc_dkim_key_from_pem((const char *)d.data, d.size, LC_DKIM_RSA, "x.test", "s", err, sizeof err);
            char what[100];
            snprintf(what, sizeof what, "rsa-%u: the signatures equal GnuTLS's", sizes[i]);
            CHECK(k && lc_dkim_key_bits(k) == sizes[i] && rsa_same(k), what);
            lc_dkim_key_free(k);
            gnutls_free(d.data);
            gnutls_x509_privkey_deinit(x);
        } else {
            fprintf(stderr, "  (GnuTLS does not make %u-bit keys: skipped)\n", sizes[i]);
        }
        gnutls_privkey_deinit(pk);
    }
    /* Ed25519 still goes through GnuTLS: both paths are the same call */
    k = lc_dkim_key_generate(LC_DKIM_ED25519, "x.test", "sel", err, sizeof err);
    unsigned char dig[32] = {1}, a[128], b[128];
    long na = lc_dkim_key_sign_digest(k, dig, LC_DKIM_VIA_DEFAULT, a, sizeof a, err, sizeof err);
    long nb = lc_dkim_key_sign_digest(k, dig, LC_DKIM_VIA_GNUTLS, b, sizeof b, err, sizeof err);
    CHECK(na == 64 && nb == 64 && !memcmp(a, b, 64), "ed25519 signatures (deterministic) agree");
    lc_dkim_key_free(k);
}

static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *b = lc_malloc(cap);
    size_t r;
    while ((r = fread(b + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            if (cap >= (16u << 20))
                break;
            cap *= 2;
            b = lc_realloc(b, cap);
        }
    }
    *len = n;
    return b;
}

static int cmd_sign(int argc, char **argv)
{
    char err[512];
    if (argc < 6)
        return 2;
    struct lc_dkim_key *k = lc_dkim_key_load(argv[2], lc_dkim_alg_parse(argv[3]), argv[4], argv[5], err, sizeof err);
    if (!k) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    size_t len, xlen = 0;
    char *msg = read_all(stdin, &len), *extra = NULL;
    if (argc > 6) {
        FILE *f = fopen(argv[6], "rb");
        if (!f)
            return 1;
        extra = read_all(f, &xlen);
        fclose(f);
    }
    struct lc_dkim_msg *m = lc_dkim_msg_new(msg, len, pc, err, sizeof err);
    if (!m) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    struct lc_buf *out = lc_buf_new(1 << 20);
    if (lc_dkim_sign(m, &k, 1, extra ? extra : "", xlen, time(NULL), out, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    fwrite(lc_buf_data(out), 1, lc_buf_len(out), stdout);
    if (extra)
        fwrite(extra, 1, xlen, stdout);
    fwrite(msg, 1, len, stdout);
    lc_buf_free(out);
    lc_dkim_msg_free(m);
    lc_dkim_key_free(k);
    free(msg);
    free(extra);
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmd_bench(int argc, char **argv)
{
    char err[512];
    if (argc < 5)
        return 2;
    int alg = lc_dkim_alg_parse(argv[3]);
    struct lc_dkim_key *k = !strcmp(argv[2], "-") ? lc_dkim_key_generate(alg, "lists.test", "b", err, sizeof err)
                                                  : lc_dkim_key_load(argv[2], alg, "lists.test", "b", err, sizeof err);
    if (!k) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    long n = atol(argv[4]);
    struct lc_buf *msg = lc_buf_new(1 << 20);
    lc_buf_puts(msg, "From: Poster <poster@example.test>\r\nTo: news@lists.test\r\nSubject: bench\r\n"
                     "Message-ID: <b@example.test>\r\nDate: Mon, 23 Nov 2026 12:00:00 +0000\r\n"
                     "List-Id: <news.lists.test>\r\nList-Post: <mailto:news@lists.test>\r\n\r\n");
    for (int i = 0; i < 100; i++)
        lc_buf_puts(msg, "Body line of the benchmark post, some forty octets or more.\r\n");
    struct lc_secret *sec = NULL;
    (void)sec;
    double t0 = now_s();
    struct lc_dkim_msg *m = lc_dkim_msg_new(lc_buf_data(msg), lc_buf_len(msg), pc, err, sizeof err);
    double tprep = now_s() - t0;
    struct lc_buf *out = lc_buf_new(65536);
    char extra[1024];
    t0 = now_s();
    for (long i = 0; i < n; i++) {
        int xl = snprintf(extra, sizeof extra,
                          "List-Unsubscribe: <mailto:news-unsubscribe@lists.test?subject=unsubscribe%%20T%ld>,\r\n"
                          " <http://127.0.0.1:8025/u/T%ld>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
                          i, i);
        lc_buf_reset(out);
        if (lc_dkim_sign(m, &k, 1, extra, (size_t)xl, time(NULL), out, err, sizeof err) < 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    }
    double dt = now_s() - t0;
    printf("%s per-recipient: %ld copies in %.3f s = %.0f copies/s (message prepared once in %.3f ms)\n", argv[3],
           n, dt, (double)n / dt, tprep * 1e3);
    lc_buf_free(out);
    lc_buf_free(msg);
    lc_dkim_msg_free(m);
    lc_dkim_key_free(k);
    return 0;
}

int main(int argc, char **argv)
{
    lc_log_init("snd_dkim_test");
    if (argc > 1 && !strcmp(argv[1], "sign"))
        return cmd_sign(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "bench"))
        return cmd_bench(argc, argv);
    char tmp[] = "/tmp/snd_dkim_test.XXXXXX";
    if (!mkdtemp(tmp))
        return 1;
    test_canon();
    test_msg();
    test_keys(tmp);
    test_rsa_gmp();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
    printf("%d passed, %d failed\n", passes, fails);
    return fails ? 1 : 0;
}
