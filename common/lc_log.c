/* lc_log: one-line logging to stderr, and aborting allocation helpers. See lc_log.h. */
#include "lc_log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *progname = "listcast";
static int verbose;

void lc_log_init(const char *name)
{
    if (name) {
        const char *slash = strrchr(name, '/');
        progname = slash ? slash + 1 : name;
    }
}

void lc_log_verbose(int on)
{
    verbose = on;
}

static void emit(const char *level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void emit(const char *level, const char *fmt, va_list ap)
{
    char line[2048];
    int saved = errno;
    int n = snprintf(line, sizeof line, "%s[%ld]: %s: ", progname, (long)getpid(), level);
    if (n < 0)
        n = 0;
    if ((size_t)n < sizeof line)
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    size_t len = strnlen(line, sizeof line - 2);
    line[len++] = '\n';
    /* One write per line so lines from several processes do not interleave. */
    ssize_t w = write(2, line, len);
    (void)w;
    errno = saved;
}

#define LOGFN(name, level)                                                                                   \
    void name(const char *fmt, ...)                                                                          \
    {                                                                                                        \
        va_list ap;                                                                                          \
        va_start(ap, fmt);                                                                                   \
        emit(level, fmt, ap);                                                                                \
        va_end(ap);                                                                                          \
    }

LOGFN(lc_info, "info")
LOGFN(lc_warn, "warning")

void lc_debug(const char *fmt, ...)
{
    if (!verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    emit("debug", fmt, ap);
    va_end(ap);
}

void lc_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit("fatal", fmt, ap);
    va_end(ap);
    exit(1);
}

void lc_panic(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit("panic", fmt, ap);
    va_end(ap);
    abort();
}

void *lc_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        lc_panic("out of memory (%zu bytes)", n);
    return p;
}

void *lc_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        lc_panic("out of memory (%zu x %zu bytes)", n, size);
    return p;
}

void *lc_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        lc_panic("out of memory (%zu bytes)", n);
    return q;
}

char *lc_strdup(const char *s)
{
    return lc_strndup(s, strlen(s));
}

char *lc_strndup(const char *s, size_t n)
{
    char *p = lc_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}
