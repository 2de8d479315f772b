/* test_common: unit tests of common/ (buffers, configuration, addresses, VERP, base32) and schema/.
 * Prints one line per failed check and "N passed, N failed" at the end; exits non-zero on any failure. */
#include "lc_addr.h"
#include "lc_buf.h"
#include "lc_cfg.h"
#include "lc_log.h"
#include "lc_loop.h"
#include "lc_schema.h"
#include "lc_secret.h"
#include "lc_token.h"
#include "lc_verp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

static int passed, failed;

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (cond)                                                                                            \
            passed++;                                                                                        \
        else {                                                                                               \
            failed++;                                                                                        \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                                           \
        }                                                                                                    \
    } while (0)

static void test_buf(void)
{
    struct lc_buf *b = lc_buf_new(10);
    CHECK(lc_buf_len(b) == 0 && lc_buf_data(b)[0] == 0);
    CHECK(lc_buf_puts(b, "hello") == 0);
    CHECK(lc_buf_printf(b, "%d", 12345) == 0);
    CHECK(lc_buf_len(b) == 10 && !strcmp(lc_buf_data(b), "hello12345"));
    CHECK(lc_buf_puts(b, "x") == -1);           /* over the maximum: refused */
    CHECK(lc_buf_len(b) == 10);                  /* and unchanged */
    CHECK(lc_buf_printf(b, "%s", "y") == -1);
    lc_buf_consume(b, 5);
    CHECK(!strcmp(lc_buf_data(b), "12345"));
    lc_buf_truncate(b, 2);
    CHECK(!strcmp(lc_buf_data(b), "12"));
    size_t n;
    char *s = lc_buf_steal(b, &n);
    CHECK(n == 2 && !strcmp(s, "12") && lc_buf_len(b) == 0);
    free(s);
    lc_buf_consume(b, 100);
    CHECK(lc_buf_len(b) == 0);
    lc_buf_free(b);
    lc_buf_free(NULL);

    struct lc_buf *big = lc_buf_new(1 << 20);
    for (int i = 0; i < 100000; i++)
        lc_buf_append(big, "0123456789", 10);
    CHECK(lc_buf_len(big) == 1000000);
    lc_buf_free(big);
}

static void test_cfg(void)
{
    char err[512];
    struct lc_cfg *c = lc_cfg_new();
    CHECK(!strcmp(lc_cfg_str(c, "smtp.listen"), "127.0.0.1:2525"));
    CHECK(!strcmp(lc_cfg_str(c, "http.listen"), "127.0.0.1:8025"));
    CHECK(lc_cfg_int(c, "sender.mx_port") == 25);
    CHECK(lc_cfg_set(c, "sender.mx_port=2600", err, sizeof err) == 0 && lc_cfg_int(c, "sender.mx_port") == 2600);
    CHECK(lc_cfg_set(c, "sender.mx_port=abc", err, sizeof err) == -1 && strstr(err, "sender.mx_port"));
    CHECK(lc_cfg_set(c, "sender.mx_port=70000", err, sizeof err) == -1 && strstr(err, "out of range"));
    CHECK(lc_cfg_set(c, "nope.key=1", err, sizeof err) == -1 && strstr(err, "nope.key"));
    CHECK(lc_cfg_set(c, "smtp.listen=nohost", err, sizeof err) == -1 && strstr(err, "smtp.listen"));
    CHECK(lc_cfg_set(c, "dns.servers=127.0.0.1:53,[::1]:5353", err, sizeof err) == 0);
    CHECK(lc_cfg_set(c, "dns.servers=127.0.0.1:53,", err, sizeof err) == -1);
    CHECK(lc_cfg_set(c, "redis.url=http://x", err, sizeof err) == -1 && strstr(err, "redis.url"));
    CHECK(lc_cfg_set(c, "log.verbose=yes", err, sizeof err) == 0 && lc_cfg_int(c, "log.verbose") == 1);
    CHECK(lc_cfg_set(c, "novalue", err, sizeof err) == -1);
    CHECK(lc_cfg_set(c, "sender.tls=encrypt", err, sizeof err) == 0 && !strcmp(lc_cfg_str(c, "sender.tls"), "encrypt"));
    CHECK(lc_cfg_set(c, "sender.tls=none", err, sizeof err) == 0);
    CHECK(lc_cfg_set(c, "sender.tls=mayb", err, sizeof err) == -1 && strstr(err, "sender.tls"));
    CHECK(lc_cfg_set(c, "sender.tls=ma", err, sizeof err) == -1);
    CHECK(lc_cfg_set(c, "sender.tls=", err, sizeof err) == -1);

    char path[] = "/tmp/lc_cfg_testXXXXXX";
    int fd = mkstemp(path);
    const char *text = "# comment\n\nstate.dir = /tmp/x\n  sender.per_mx=5  \n";
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    char *argv[] = {"prog", "--config", path, "pos1", "--set", "sender.per_mx=7", "--set=smtp.hostname=mx.test",
                    "pos2", NULL};
    int argc = 8;
    CHECK(lc_cfg_args(c, &argc, argv, err, sizeof err) == 0);
    CHECK(argc == 3 && !strcmp(argv[1], "pos1") && !strcmp(argv[2], "pos2") && argv[3] == NULL);
    CHECK(lc_cfg_int(c, "sender.per_mx") == 7);             /* --set wins over the file */
    CHECK(!strcmp(lc_cfg_str(c, "state.dir"), "/tmp/x"));
    CHECK(lc_cfg_finish(c, err, sizeof err) == 0);
    CHECK(!strcmp(lc_cfg_str(c, "secret.file"), "/tmp/x/secret"));
    CHECK(!strcmp(lc_cfg_str(c, "smtp.hostname"), "mx.test"));
    CHECK(*lc_cfg_str(c, "node.name") != 0);

    char *out[64];
    int n = lc_cfg_argv(c, out);
    int found = 0;
    for (int i = 0; i + 1 < n; i += 2)
        if (!strcmp(out[i], "--set") && !strcmp(out[i + 1], "sender.per_mx=7"))
            found = 1;
    CHECK(found && out[n] == NULL);

    fd = open(path, O_WRONLY | O_TRUNC);
    const char *bad = "sender.concurrency = 10\nbogus = 1\n";
    CHECK(write(fd, bad, strlen(bad)) == (ssize_t)strlen(bad));
    close(fd);
    struct lc_cfg *c2 = lc_cfg_new();
    CHECK(lc_cfg_load(c2, path, err, sizeof err) == -1 && strstr(err, ":2:") && strstr(err, "bogus"));
    lc_cfg_free(c2);
    c2 = lc_cfg_new();
    CHECK(lc_cfg_set(c2, "sender.per_mx=50", err, sizeof err) == 0 &&
          lc_cfg_set(c2, "sender.concurrency=10", err, sizeof err) == 0);
    CHECK(lc_cfg_finish(c2, err, sizeof err) == -1 && strstr(err, "sender.per_mx"));
    lc_cfg_free(c2);
    unlink(path);
    lc_cfg_free(c);
}

static void test_addr(void)
{
    char out[LC_ADDR_MAX + 1];
    const char *why;
#define OK(a, want) CHECK(lc_addr_norm(a, strlen(a), out, &why) == 0 && !strcmp(out, want))
#define BAD(a) CHECK(lc_addr_norm(a, strlen(a), out, &why) == -1)
    OK("Alice@Example.ORG", "alice@example.org");
    OK("a.b+tag@sub.example.co.uk", "a.b+tag@sub.example.co.uk");
    OK("x@[127.0.0.1]", "x@[127.0.0.1]");
    BAD("");
    BAD("noat");
    BAD("@example.org");
    BAD("a@");
    BAD("a@localhost");
    BAD(".a@example.org");
    BAD("a.@example.org");
    BAD("a..b@example.org");
    BAD("a b@example.org");
    BAD("\"q\"@example.org");
    BAD("a@-x.org");
    BAD("a@x-.org");
    BAD("a@x..org");
    BAD("a@[300.0.0.1]");
    char longlocal[80];
    memset(longlocal, 'a', 65);
    strcpy(longlocal + 65, "@x.org");
    BAD(longlocal);
    CHECK(!strcmp(lc_addr_domain("a@b.c"), "b.c"));
#undef OK
#undef BAD
}

static void test_verp(void)
{
    unsigned char key[32];
    for (int i = 0; i < 32; i++)
        key[i] = (unsigned char)i;
    struct lc_secret *s = lc_secret_from(key, sizeof key);
    char v[400];
    int n = lc_verp_encode(s, 12345, 67890, "lists.example.org", v, sizeof v);
    CHECK(n > 0 && (size_t)n == strlen(v));
    CHECK(!strncmp(v, "bounce-", 7));
    const char *at = strchr(v, '@');
    CHECK(at && at - v <= 64);
    uint64_t p = 0, sb = 0;
    CHECK(lc_verp_decode(s, v, strlen(v), &p, &sb) == 0 && p == 12345 && sb == 67890);
    /* survives upper-casing of the whole address */
    char up[400];
    for (size_t i = 0; i <= strlen(v); i++)
        up[i] = (char)((v[i] >= 'a' && v[i] <= 'z') ? v[i] - 32 : v[i]);
    CHECK(lc_verp_decode(s, up, strlen(up), &p, &sb) == 0 && p == 12345 && sb == 67890);
    /* largest ids fit in 64 octets */
    n = lc_verp_encode(s, UINT64_MAX, UINT64_MAX, "d.example", v, sizeof v);
    CHECK(n > 0 && strchr(v, '@') - v <= 64);
    CHECK(lc_verp_decode(s, v, strlen(v), &p, &sb) == 0 && p == UINT64_MAX && sb == UINT64_MAX);
    /* tampering: other sub id, other domain, other key, changed mac */
    lc_verp_encode(s, 5, 6, "a.example", v, sizeof v);
    char t[400];
    strcpy(t, v);
    t[9] = '7'; /* bounce-5-6-... : index 9 is the sub id */
    CHECK(lc_verp_decode(s, t, strlen(t), &p, &sb) == -2);
    strcpy(t, v);
    strcpy(strchr(t, '@'), "@b.example");
    CHECK(lc_verp_decode(s, t, strlen(t), &p, &sb) == -2);
    strcpy(t, v);
    char *m = strchr(t, '@') - 1;
    *m = *m == '0' ? '1' : '0';
    CHECK(lc_verp_decode(s, t, strlen(t), &p, &sb) == -2);
    key[0] ^= 1;
    struct lc_secret *s2 = lc_secret_from(key, sizeof key);
    CHECK(lc_verp_decode(s2, v, strlen(v), &p, &sb) == -2);
    lc_secret_free(s2);
    /* not of the form */
    const char *forms[] = {"news@a.example", "bounce-@a.example", "bounce-5-6-short@a.example",
                           "bounce-05-6-000000000000@a.example", "bounce-5-6-00000000000w@a.example",
                           "bounce-5-6-000000000000", "bounce-5-6-7-000000000000@a.example"};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++)
        CHECK(lc_verp_decode(s, forms[i], strlen(forms[i]), &p, &sb) == -1);
    CHECK(lc_verp_encode(s, 1, 2, "a.example", v, 10) == -1);
    lc_secret_free(s);

    char b[16];
    uint64_t x;
    CHECK(lc_b32_u64(0, b, sizeof b) == 1 && !strcmp(b, "0"));
    CHECK(lc_b32_u64(32, b, sizeof b) == 2 && !strcmp(b, "10"));
    CHECK(lc_b32_parse_u64("V", 1, &x) == 0 && x == 31);
    CHECK(lc_b32_parse_u64("w", 1, &x) == -1);
    CHECK(lc_b32_parse_u64("g000000000000", 13, &x) == -1); /* 65th bit */
}

static void test_secret(void)
{
    char dir[] = "/tmp/lc_secretXXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256], err[256];
    snprintf(path, sizeof path, "%s/secret", dir);
    CHECK(lc_secret_load(path, 0, err, sizeof err) == NULL);      /* missing, not created */
    struct lc_secret *a = lc_secret_load(path, 1, err, sizeof err);
    struct lc_secret *b = lc_secret_load(path, 1, err, sizeof err); /* same key on the second start */
    CHECK(a && b);
    unsigned char ma[32], mb[32];
    lc_secret_mac(a, "x", 1, ma);
    lc_secret_mac(b, "x", 1, mb);
    CHECK(memcmp(ma, mb, 32) == 0);
    lc_secret_free(a);
    lc_secret_free(b);
    FILE *f = fopen(path, "w");
    fputs("nothex\n", f);
    fclose(f);
    CHECK(lc_secret_load(path, 1, err, sizeof err) == NULL && strstr(err, "hex"));
    unlink(path);
    rmdir(dir);
}

static void test_schema(void)
{
    char k[LC_KEY_MAX];
    CHECK(lc_key_list(k, sizeof k, "a@b.c") > 0 && !strcmp(k, "lc:list:a@b.c"));
    CHECK(lc_key_sub(k, sizeof k, "a@b.c", "x@y.z") > 0 && !strcmp(k, "lc:sub:a@b.c:x@y.z"));
    CHECK(lc_key_post(k, sizeof k, 42) > 0 && !strcmp(k, "lc:post:42"));
    CHECK(lc_key_msg(k, 5, 42) == -1);
}

static void test_token(void)
{
    unsigned char key[32] = {9, 8, 7};
    struct lc_secret *s = lc_secret_from(key, sizeof key);
    char t[LC_TOKEN_MAX], u[LC_TOKEN_MAX];
    int action;
    uint64_t id;
    int64_t exp;
    int n = lc_token_make(s, LC_TOK_SUBSCRIBE, 4242, 1800000000, t, sizeof t);
    CHECK(n > 0 && (size_t)n == strlen(t) && t[0] == 's');
    CHECK(lc_token_check(s, t, (size_t)n, 1700000000, &action, &id, &exp) == LC_TOK_OK && action == 's' &&
          id == 4242 && exp == 1800000000);
    for (int i = 0; i <= n; i++) /* upper-cased by a mail system: still valid */
        u[i] = (char)((t[i] >= 'a' && t[i] <= 'z') ? t[i] - 32 : t[i]);
    CHECK(lc_token_check(s, u, (size_t)n, 1700000000, &action, &id, &exp) == LC_TOK_OK && id == 4242);
    CHECK(lc_token_check(s, t, (size_t)n, 1900000000, &action, &id, &exp) == LC_TOK_EXPIRED && id == 4242);
    strcpy(u, t);
    u[0] = 'u'; /* same id and expiry, other action */
    CHECK(lc_token_check(s, u, (size_t)n, 1700000000, &action, &id, &exp) == LC_TOK_FORGED);
    strcpy(u, t);
    u[1] = u[1] == '1' ? '2' : '1'; /* other subscriber */
    CHECK(lc_token_check(s, u, (size_t)n, 1700000000, &action, &id, &exp) == LC_TOK_FORGED);
    strcpy(u, t);
    u[n - 1] = u[n - 1] == '0' ? '1' : '0';
    CHECK(lc_token_check(s, u, (size_t)n, 1700000000, &action, &id, &exp) == LC_TOK_FORGED);
    n = lc_token_make(s, LC_TOK_ONECLICK, UINT64_MAX, 0, t, sizeof t); /* never expires; longest id */
    CHECK(n > 0 && n < LC_TOKEN_MAX);
    CHECK(lc_token_check(s, t, (size_t)n, INT64_MAX, &action, &id, &exp) == LC_TOK_OK && id == UINT64_MAX);
    CHECK(lc_token_make(s, 'x', 1, 0, t, sizeof t) == -1);
    CHECK(lc_token_make(s, LC_TOK_APPROVE, 1, 0, t, 5) == -1);
    const char *bad[] = {"", "s", "x1-0-0000000000000000", "s1-0-000000000000000", "s1--0000000000000000",
                         "s01-0-0000000000000000", "s1-0-000000000000000w", "s1-0-0000000000000000-"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(lc_token_check(s, bad[i], strlen(bad[i]), 0, &action, &id, &exp) == LC_TOK_MALFORMED);
    CHECK(strcmp(lc_token_why(LC_TOK_EXPIRED), "expired token") == 0);
    lc_secret_free(s);
}

static char order[16];
static int norder;

static void tick(struct lc_loop *loop, void *arg)
{
    order[norder++] = *(const char *)arg;
    if (*(const char *)arg == 'c')
        lc_loop_stop(loop);
}

static void on_pipe(struct lc_loop *loop, int fd, int events, void *arg)
{
    char c;
    int *got = arg;
    if (read(fd, &c, 1) == 1)
        *got = c;
    lc_loop_watch(loop, fd, 0, NULL, NULL); /* a callback may remove its own watcher */
}

static void test_loop(void)
{
    struct lc_loop *loop = lc_loop_new();
    static const char a = 'a', b = 'b', c = 'c', x = 'x';
    int p[2];
    CHECK(pipe(p) == 0);
    int got = 0;
    CHECK(lc_loop_watch(loop, p[0], LC_READ, on_pipe, &got) == 0);
    CHECK(write(p[1], "z", 1) == 1);
    lc_loop_timer(loop, 30, tick, (void *)&c);
    lc_loop_timer(loop, 10, tick, (void *)&b);
    uint64_t id = lc_loop_timer(loop, 5, tick, (void *)&x);
    lc_loop_timer(loop, 0, tick, (void *)&a);
    lc_loop_cancel(loop, id);
    lc_loop_cancel(loop, 9999);
    int64_t t0 = lc_loop_now(loop);
    lc_loop_run(loop);
    order[norder] = 0;
    CHECK(!strcmp(order, "abc")); /* in time order, cancelled one never ran */
    if (strcmp(order, "abc"))
        printf("order: %s\n", order);
    CHECK(got == 'z');
    CHECK(lc_loop_now(loop) - t0 >= 25);
    close(p[0]);
    close(p[1]);
    lc_loop_free(loop);
}

int main(void)
{
    lc_log_init("test_common");
    test_buf();
    test_cfg();
    test_addr();
    test_verp();
    test_secret();
    test_schema();
    test_loop();
    test_token();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
