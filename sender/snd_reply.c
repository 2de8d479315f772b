/* snd_reply: a bounded parser of SMTP replies (RFC 5321 4.2), pure: bytes in, one reply out at a time.
 *
 * Contract: feed bytes as they arrive; the parser takes bytes up to the end of one complete reply and stops
 * there, so pipelined replies that arrive in one read come out one by one. A reply line is three digits (first
 * 2..5), then ' ' (last line), '-' (more lines follow) or the end of the line; every line of a reply carries the
 * same code. LF alone ends a line too (CR before it is dropped). NUL octets are refused.
 * Limits: a line may be up to SND_LINE_MAX (4 KB, well past RFC 5321's 512) octets without its CRLF, a whole
 * reply up to SND_REPLY_MAX (64 KB); anything past that, or any malformed line, is SND_R_ERR and the caller
 * drops the connection. After SND_R_ERR the parser must be reset (or dropped) before further use.
 */
#include "snd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lc_buf.h"
#include "lc_log.h"

struct snd_reply {
    struct lc_buf *line;  /* the current line, without its line end */
    struct lc_buf *text;  /* the lines so far, '\n' between them */
    int code;             /* code of the first line, 0 before it */
    int done;
    const char *err;
};

struct snd_reply *snd_reply_new(void)
{
    struct snd_reply *r = lc_calloc(1, sizeof *r);
    r->line = lc_buf_new(SND_LINE_MAX + 1); /* + the CR that may precede LF */
    r->text = lc_buf_new(SND_REPLY_MAX);
    return r;
}

void snd_reply_free(struct snd_reply *r)
{
    if (!r)
        return;
    lc_buf_free(r->line);
    lc_buf_free(r->text);
    free(r);
}

void snd_reply_reset(struct snd_reply *r)
{
    lc_buf_reset(r->line);
    lc_buf_reset(r->text);
    r->code = 0;
    r->done = 0;
    r->err = NULL;
}

int snd_reply_code(const struct snd_reply *r)
{
    return r->code;
}

const char *snd_reply_text(const struct snd_reply *r)
{
    return lc_buf_data(r->text);
}

const char *snd_reply_error(const struct snd_reply *r)
{
    return r->err ? r->err : "no error";
}

static int fail(struct snd_reply *r, const char *why)
{
    r->err = why;
    return SND_R_ERR;
}

/* end_line checks the line in r->line and adds it to the reply; returns SND_R_DONE, SND_R_MORE or SND_R_ERR. */
static int end_line(struct snd_reply *r)
{
    char *l = lc_buf_mdata(r->line);
    size_t n = lc_buf_len(r->line);
    if (n && l[n - 1] == '\r')
        lc_buf_truncate(r->line, --n);
    if (n > SND_LINE_MAX)
        return fail(r, "reply line too long");
    if (n < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' || l[2] > '9')
        return fail(r, "malformed reply line");
    if (n > 3 && l[3] != ' ' && l[3] != '-')
        return fail(r, "malformed reply line");
    if (memchr(l, 0, n))
        return fail(r, "NUL in reply");
    int code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
    if (r->code && code != r->code)
        return fail(r, "reply code changes within a multi-line reply");
    r->code = code;
    if (lc_buf_len(r->text) && lc_buf_append(r->text, "\n", 1) < 0)
        return fail(r, "reply too long");
    if (lc_buf_append(r->text, l, n) < 0)
        return fail(r, "reply too long");
    int last = n == 3 || l[3] == ' ';
    lc_buf_reset(r->line);
    if (last) {
        r->done = 1;
        return SND_R_DONE;
    }
    return SND_R_MORE;
}

int snd_reply_feed(struct snd_reply *r, const char *p, size_t n, size_t *used)
{
    size_t i = 0;
    *used = 0;
    if (r->err)
        return SND_R_ERR;
    if (r->done)
        return SND_R_DONE;
    while (i < n) {
        const char *nl = memchr(p + i, '\n', n - i);
        size_t take = nl ? (size_t)(nl - (p + i)) : n - i;
        if (lc_buf_append(r->line, p + i, take) < 0)
            return fail(r, "reply line too long");
        i += take;
        if (!nl)
            break;
        i++; /* the LF */
        int st = end_line(r);
        if (st != SND_R_MORE) {
            *used = i;
            return st;
        }
    }
    *used = i;
    return SND_R_MORE;
}

void snd_reply_quote(const char *text, char *out, size_t outlen)
{
    size_t o = 0;
    if (!outlen)
        return;
    for (const unsigned char *s = (const unsigned char *)text; *s && o + 1 < outlen; s++) {
        unsigned char c = *s;
        if (c == '"' || c == '\\') {
            if (o + 2 >= outlen)
                break;
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c == '\n') {
            out[o++] = ' ';
        } else if (c < 0x20 || c == 0x7f) {
            out[o++] = '?';
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = 0;
}
