/* snd_test: unit tests of the sender's pure parts: the SMTP reply parser (snd_reply.c) and the post body
 * builder (snd_post.c). Prints one line per failed check and exits 1 if any failed, 0 otherwise.
 */
#include "snd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lc_log.h"
#include "lc_secret.h"
#include "lc_token.h"

#include <unistd.h>

static int fails, checks;

#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        checks++;                                                                                            \
        if (!(cond)) {                                                                                       \
            fails++;                                                                                         \
            printf("FAIL line %d: ", __LINE__);                                                              \
            printf(__VA_ARGS__);                                                                             \
            printf("\n");                                                                                    \
        }                                                                                                    \
    } while (0)

/* feed_all feeds s in chunks of step bytes; returns the final status and sets *used_total. */
static int feed_all(struct snd_reply *r, const char *s, size_t n, size_t step, size_t *used_total)
{
    size_t off = 0;
    int st = SND_R_MORE;
    while (off < n) {
        size_t chunk = n - off < step ? n - off : step, used;
        st = snd_reply_feed(r, s + off, chunk, &used);
        off += used;
        if (st != SND_R_MORE)
            break;
    }
    *used_total = off;
    return st;
}

static void one(const char *in, int want_st, int want_code, const char *want_text)
{
    for (size_t step = 1; step <= strlen(in) + 1; step = step < 8 ? step + 1 : step * 3) {
        struct snd_reply *r = snd_reply_new();
        size_t used;
        int st = feed_all(r, in, strlen(in), step, &used);
        CHECK(st == want_st, "\"%.40s\" step %zu: status %d, want %d (%s)", in, step, st, want_st,
              snd_reply_error(r));
        if (st == SND_R_DONE && want_st == SND_R_DONE) {
            CHECK(snd_reply_code(r) == want_code, "\"%.40s\": code %d want %d", in, snd_reply_code(r), want_code);
            CHECK(!strcmp(snd_reply_text(r), want_text), "\"%.40s\": text \"%s\"", in, snd_reply_text(r));
        }
        snd_reply_free(r);
    }
}

static void test_reply(void)
{
    one("250 ok\r\n", SND_R_DONE, 250, "250 ok");
    one("250\r\n", SND_R_DONE, 250, "250");
    one("354 go ahead\n", SND_R_DONE, 354, "354 go ahead");
    one("250-mx hello\r\n250-PIPELINING\r\n250 8BITMIME\r\n", SND_R_DONE, 250,
        "250-mx hello\n250-PIPELINING\n250 8BITMIME");
    one("550-5.1.1 a\r\n550 5.1.1 b\r\n", SND_R_DONE, 550, "550-5.1.1 a\n550 5.1.1 b");
    one("250 ok", SND_R_MORE, 0, "");
    one("250-more\r\n", SND_R_MORE, 0, "");
    one("hello there\r\n", SND_R_ERR, 0, "");
    one("25\r\n", SND_R_ERR, 0, "");
    one("250x\r\n", SND_R_ERR, 0, "");
    one("199 no\r\n", SND_R_ERR, 0, "");
    one("650 no\r\n", SND_R_ERR, 0, "");
    one("2a0 no\r\n", SND_R_ERR, 0, "");
    one("250-a\r\n251 b\r\n", SND_R_ERR, 0, "");

    /* NUL inside a line */
    {
        struct snd_reply *r = snd_reply_new();
        size_t used;
        int st = snd_reply_feed(r, "250 a\0b\r\n", 9, &used);
        CHECK(st == SND_R_ERR, "NUL refused");
        snd_reply_free(r);
    }
    /* pipelined replies come out one at a time */
    {
        const char *in = "250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n";
        struct snd_reply *r = snd_reply_new();
        size_t used, off = 0;
        int codes[3], k = 0;
        while (off < strlen(in) && k < 3) {
            int st = snd_reply_feed(r, in + off, strlen(in) - off, &used);
            off += used;
            if (st != SND_R_DONE)
                break;
            codes[k++] = snd_reply_code(r);
            snd_reply_reset(r);
        }
        CHECK(k == 3 && codes[0] == 250 && codes[1] == 250 && codes[2] == 354 && off == strlen(in),
              "three pipelined replies (got %d)", k);
        snd_reply_free(r);
    }
    /* line limits: 4096 octets fine (with or without CR), 4097 refused */
    {
        size_t n = SND_LINE_MAX;
        char *l = lc_malloc(n + 3);
        memset(l, 'x', n);
        memcpy(l, "250 ", 4);
        memcpy(l + n, "\r\n", 3);
        struct snd_reply *r = snd_reply_new();
        size_t used;
        CHECK(feed_all(r, l, n + 2, 1000, &used) == SND_R_DONE, "a %zu-octet line is fine", n);
        CHECK(strlen(snd_reply_text(r)) == n, "its text is whole");
        snd_reply_free(r);
        l[n] = 'x';
        memcpy(l + n + 1, "\r\n", 2);
        r = snd_reply_new();
        CHECK(feed_all(r, l, n + 3, 1000, &used) == SND_R_ERR, "a %zu-octet line is refused", n + 1);
        snd_reply_free(r);
        free(l);
    }
    /* whole reply limit: 64 KB */
    {
        struct snd_reply *r = snd_reply_new();
        char line[128];
        memset(line, 'z', sizeof line);
        memcpy(line, "250-", 4);
        memcpy(line + 100, "\r\n", 2);
        int st = SND_R_MORE, i;
        for (i = 0; i < 1000 && st == SND_R_MORE; i++) {
            size_t used;
            st = snd_reply_feed(r, line, 102, &used);
        }
        CHECK(st == SND_R_ERR && (size_t)i * 101 > SND_REPLY_MAX && (size_t)(i - 1) * 101 <= SND_REPLY_MAX,
              "a reply over %d octets is refused (after %d lines)", SND_REPLY_MAX, i);
        snd_reply_free(r);
    }
    /* quoting for logs */
    {
        char out[64];
        snd_reply_quote("550-a \"b\" \\c\n550 d\te", out, sizeof out);
        CHECK(!strcmp(out, "550-a \\\"b\\\" \\\\c 550 d?e"), "quote: %s", out);
        snd_reply_quote("0123456789", out, 5);
        CHECK(!strcmp(out, "0123"), "quote cut: %s", out);
    }
}

static void body(const char *in, size_t n, const char *want, int eight)
{
    struct snd_post p;
    memset(&p, 0, sizeof p);
    snd_post_set_body(&p, in, n);
    CHECK(p.len == strlen(want) && !memcmp(p.body, want, p.len), "body of \"%.30s\": \"%.*s\"", in, (int)p.len,
          p.body);
    CHECK(p.eightbit == eight, "8bit of \"%.30s\"", in);
    /* the size the server sees: the body without ".\r\n" and with stuffed dots removed */
    size_t dots = 0;
    for (size_t i = 0; i + 3 < p.len; i++)
        if (p.body[i] == '.' && (i == 0 || p.body[i - 1] == '\n'))
            dots++;
    CHECK(p.msglen == p.len - 3 - dots, "size of \"%.30s\": %zu", in, p.msglen);
    /* the BDAT form: the same octets without the stuffed dots and the final ".\r\n" */
    char *un = malloc(p.len + 1);
    size_t u = 0;
    for (size_t i = 0; i + 3 < p.len; i++)
        if (!(p.body[i] == '.' && (i == 0 || p.body[i - 1] == '\n')))
            un[u++] = p.body[i];
    CHECK(u == p.msglen && !memcmp(un, p.raw, u), "raw form of \"%.30s\"", in);
    free(un);
    free(p.body);
    free(p.raw);
}

static void test_body(void)
{
    body("a\r\nb\r\n", 6, "a\r\nb\r\n.\r\n", 0);
    body("", 0, ".\r\n", 0);
    body("no end", 6, "no end\r\n.\r\n", 0);
    body(".x\r\n..y\r\n.\r\nz.\r\n", 16, "..x\r\n...y\r\n..\r\nz.\r\n.\r\n", 0);
    body("a\nb\n", 4, "a\r\nb\r\n.\r\n", 0);
    body("a\rb\r", 4, "a\r\nb\r\n.\r\n", 0);
    body("a\n.b", 4, "a\r\n..b\r\n.\r\n", 0);
    body("Gr\xc3\xbc\xc3\x9f" "e\r\n", 9, "Gr\xc3\xbc\xc3\x9f" "e\r\n.\r\n", 1);
}

static void test_unsub(void)
{
    struct snd_post p;
    char out[2048], err[200];
    memset(&p, 0, sizeof p);
    CHECK(snd_post_set_list(&p, "Announce@Lists.Example.ORG", 26) == 0, "set_list");
    CHECK(!strcmp(p.local, "announce") && !strcmp(p.domain, "lists.example.org"), "list %s @ %s", p.local, p.domain);
    char path[] = "/tmp/snd_test_secretXXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    if (fd < 0)
        return;
    close(fd);
    unlink(path);
    struct lc_secret *sec = lc_secret_load(path, 1, err, sizeof err);
    CHECK(sec != NULL, "secret: %s", err);
    if (!sec)
        return;
    int n = snd_post_unsub(&p, sec, "https://lists.example.org", 42, out, sizeof out);
    char tok[LC_TOKEN_MAX];
    lc_token_make(sec, LC_TOK_ONECLICK, 42, 0, tok, sizeof tok);
    char want[1024];
    snprintf(want, sizeof want,
             "List-Unsubscribe: <mailto:announce-unsubscribe@lists.example.org?subject=unsubscribe%%20%s>,\r\n"
             " <https://lists.example.org/u/%s>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
             tok, tok);
    CHECK(n == (int)strlen(want) && !strcmp(out, want), "unsub header: %s", out);
    CHECK(snd_post_unsub(&p, sec, "https://x", 42, out, 20) == -1, "unsub header: too small");
    p.notice = 1;
    CHECK(snd_post_unsub(&p, sec, "https://x", 42, out, sizeof out) == 0, "no header for notices");
    lc_secret_free(sec);
    unlink(path);
}

int main(void)
{
    lc_log_init("snd_test");
    test_reply();
    test_body();
    test_unsub();
    printf("snd_test: %d checks, %d failed\n", checks, fails);
    return fails ? 1 : 0;
}
