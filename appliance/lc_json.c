/* lc_json: streaming JSON writer with strict string escaping. See lc_json.h for the contract.
 *
 * The writer keeps a small stack of open containers (object/array, members written so far) and whether a key
 * is waiting for its value; that is enough to place separators and to refuse malformed documents.
 */
#include "lc_json.h"
#include "lc_buf.h"
#include "lc_log.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_DEPTH 32

struct lc_json {
    FILE *f;
    struct lc_buf *b;
    int pretty;
    int err;
    int depth;
    int after_key; /* a key was written, its value is due */
    int done;      /* the top-level value is complete */
    char kind[JSON_DEPTH];  /* '{' or '[' */
    long count[JSON_DEPTH]; /* members written in each open container */
};

static void emit(struct lc_json *j, const void *p, size_t n)
{
    if (j->err || n == 0)
        return;
    if (j->f) {
        if (fwrite(p, 1, n, j->f) != n)
            j->err = 1;
    } else if (lc_buf_append(j->b, p, n) < 0) {
        j->err = 1;
    }
}

static void emits(struct lc_json *j, const char *s)
{
    emit(j, s, strlen(s));
}

static void newline(struct lc_json *j, int depth)
{
    static const char spaces[] = "                                                                ";
    if (!j->pretty)
        return;
    emit(j, "\n", 1);
    size_t n = (size_t)depth * 2;
    while (n > 0 && !j->err) {
        size_t k = n < sizeof spaces - 1 ? n : sizeof spaces - 1;
        emit(j, spaces, k);
        n -= k;
    }
}

static struct lc_json *mk(FILE *f, struct lc_buf *b, int pretty)
{
    struct lc_json *j = lc_calloc(1, sizeof *j);
    j->f = f;
    j->b = b;
    j->pretty = pretty;
    return j;
}

struct lc_json *lc_json_new_file(FILE *f, int pretty)
{
    return mk(f, NULL, pretty);
}

struct lc_json *lc_json_new_buf(struct lc_buf *b, int pretty)
{
    return mk(NULL, b, pretty);
}

int lc_json_free(struct lc_json *j)
{
    if (!j)
        return 0;
    int bad = j->err || j->depth != 0 || !j->done;
    if (!bad && j->pretty)
        emit(j, "\n", 1);
    if (j->f && fflush(j->f) != 0)
        j->err = 1;
    bad = bad || j->err;
    free(j);
    return bad ? -1 : 0;
}

/* before_value places the separator for a value; returns -1 (and marks the writer broken) on misuse. */
static int before_value(struct lc_json *j)
{
    if (j->err)
        return -1;
    if (j->depth == 0) {
        if (j->done)
            j->err = 1;
        return j->err ? -1 : 0;
    }
    if (j->kind[j->depth - 1] == '{') {
        if (!j->after_key)
            j->err = 1;
        return j->err ? -1 : 0;
    }
    if (j->count[j->depth - 1]++ > 0)
        emit(j, ",", 1);
    newline(j, j->depth);
    return j->err ? -1 : 0;
}

static void after_value(struct lc_json *j)
{
    j->after_key = 0;
    if (j->depth == 0)
        j->done = 1;
}

static void open_container(struct lc_json *j, char kind)
{
    if (before_value(j) < 0)
        return;
    if (j->depth >= JSON_DEPTH) {
        j->err = 1;
        return;
    }
    emit(j, kind == '{' ? "{" : "[", 1);
    j->after_key = 0;
    j->kind[j->depth] = kind;
    j->count[j->depth] = 0;
    j->depth++;
}

void lc_json_obj(struct lc_json *j)
{
    open_container(j, '{');
}

void lc_json_arr(struct lc_json *j)
{
    open_container(j, '[');
}

void lc_json_end(struct lc_json *j)
{
    if (j->err)
        return;
    if (j->depth == 0 || j->after_key) {
        j->err = 1;
        return;
    }
    j->depth--;
    if (j->count[j->depth] > 0)
        newline(j, j->depth);
    emit(j, j->kind[j->depth] == '{' ? "}" : "]", 1);
    after_value(j);
}

/* utf8_len returns the length of the valid UTF-8 sequence at s (at most n bytes), or 0 if it is invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (n < len)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

/* escape_to calls out(arg, p, n) for the escaped, quoted form of s. */
static void escape_to(const char *s, size_t n, void (*out)(void *, const char *, size_t), void *arg)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0; /* run: start of the pending stretch of bytes copied as they are */
    out(arg, "\"", 1);
    while (i < n) {
        unsigned char c = p[i];
        const char *rep = NULL;
        char tmp[8];
        size_t adv = 1;
        if (c == '"')
            rep = "\\\"";
        else if (c == '\\')
            rep = "\\\\";
        else if (c == '\n')
            rep = "\\n";
        else if (c == '\r')
            rep = "\\r";
        else if (c == '\t')
            rep = "\\t";
        else if (c == '\b')
            rep = "\\b";
        else if (c == '\f')
            rep = "\\f";
        else if (c < 0x20 || c == 0x7f) {
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
            rep = tmp;
        } else if (c >= 0x80) {
            adv = utf8_len(p + i, n - i);
            if (adv == 0) {
                rep = "\\ufffd";
                adv = 1;
            } else if (adv == 3 && c == 0xE2 && p[i + 1] == 0x80 && (p[i + 2] == 0xA8 || p[i + 2] == 0xA9)) {
                rep = p[i + 2] == 0xA8 ? "\\u2028" : "\\u2029";
            }
        }
        if (rep) {
            if (i > run)
                out(arg, s + run, i - run);
            out(arg, rep, strlen(rep));
            run = i + adv;
        }
        i += adv;
    }
    if (n > run)
        out(arg, s + run, n - run);
    out(arg, "\"", 1);
}

static void out_json(void *arg, const char *p, size_t n)
{
    emit(arg, p, n);
}

void lc_json_key(struct lc_json *j, const char *key)
{
    if (j->err)
        return;
    if (j->depth == 0 || j->kind[j->depth - 1] != '{' || j->after_key) {
        j->err = 1;
        return;
    }
    if (j->count[j->depth - 1]++ > 0)
        emit(j, ",", 1);
    newline(j, j->depth);
    escape_to(key, strlen(key), out_json, j);
    emits(j, j->pretty ? ": " : ":");
    j->after_key = 1;
}

void lc_json_strn(struct lc_json *j, const char *s, size_t n)
{
    if (before_value(j) < 0)
        return;
    escape_to(s, n, out_json, j);
    after_value(j);
}

void lc_json_str(struct lc_json *j, const char *s)
{
    if (!s)
        lc_json_null(j);
    else
        lc_json_strn(j, s, strlen(s));
}

static void raw_value(struct lc_json *j, const char *text)
{
    if (before_value(j) < 0)
        return;
    emits(j, text);
    after_value(j);
}

void lc_json_int(struct lc_json *j, long long v)
{
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%lld", v);
    raw_value(j, tmp);
}

void lc_json_num(struct lc_json *j, double v)
{
    char tmp[40];
    if (!isfinite(v)) {
        raw_value(j, "null");
        return;
    }
    if (v == (double)(long long)v && fabs(v) < 1e15)
        snprintf(tmp, sizeof tmp, "%lld", (long long)v);
    else
        snprintf(tmp, sizeof tmp, "%.15g", v);
    raw_value(j, tmp);
}

void lc_json_bool(struct lc_json *j, int v)
{
    raw_value(j, v ? "true" : "false");
}

void lc_json_null(struct lc_json *j)
{
    raw_value(j, "null");
}

void lc_json_kstr(struct lc_json *j, const char *key, const char *s)
{
    lc_json_key(j, key);
    lc_json_str(j, s);
}

void lc_json_kint(struct lc_json *j, const char *key, long long v)
{
    lc_json_key(j, key);
    lc_json_int(j, v);
}

void lc_json_knum(struct lc_json *j, const char *key, double v)
{
    lc_json_key(j, key);
    lc_json_num(j, v);
}

void lc_json_kbool(struct lc_json *j, const char *key, int v)
{
    lc_json_key(j, key);
    lc_json_bool(j, v);
}
