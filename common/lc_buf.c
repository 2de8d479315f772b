/* lc_buf: bounded growable buffer. See lc_buf.h. */
#include "lc_buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lc_buf {
    char *data;
    size_t len;
    size_t cap; /* allocated bytes, including room for the NUL */
    size_t max;
};

struct lc_buf *lc_buf_new(size_t max)
{
    struct lc_buf *b = lc_calloc(1, sizeof *b);
    b->cap = 64;
    b->data = lc_malloc(b->cap);
    b->data[0] = 0;
    b->max = max;
    return b;
}

void lc_buf_free(struct lc_buf *b)
{
    if (!b)
        return;
    free(b->data);
    free(b);
}

const char *lc_buf_data(const struct lc_buf *b) { return b->data; }
char *lc_buf_mdata(struct lc_buf *b) { return b->data; }
size_t lc_buf_len(const struct lc_buf *b) { return b->len; }
size_t lc_buf_max(const struct lc_buf *b) { return b->max; }

/* reserve makes room for n more bytes plus the NUL; -1 if that passes the maximum. */
static int reserve(struct lc_buf *b, size_t n)
{
    if (n > b->max - b->len)
        return -1;
    size_t need = b->len + n + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    b->data = lc_realloc(b->data, cap);
    b->cap = cap;
    return 0;
}

int lc_buf_append(struct lc_buf *b, const void *p, size_t n)
{
    if (reserve(b, n) < 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

int lc_buf_puts(struct lc_buf *b, const char *s)
{
    return lc_buf_append(b, s, strlen(s));
}

int lc_buf_printf(struct lc_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || reserve(b, (size_t)n) < 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void lc_buf_reset(struct lc_buf *b)
{
    b->len = 0;
    b->data[0] = 0;
}

void lc_buf_consume(struct lc_buf *b, size_t n)
{
    if (n >= b->len) {
        lc_buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = 0;
}

void lc_buf_truncate(struct lc_buf *b, size_t n)
{
    if (n >= b->len)
        return;
    b->len = n;
    b->data[n] = 0;
}

char *lc_buf_steal(struct lc_buf *b, size_t *len)
{
    char *p = b->data;
    if (len)
        *len = b->len;
    b->cap = 64;
    b->data = lc_malloc(b->cap);
    b->data[0] = 0;
    b->len = 0;
    return p;
}
