/* lc_log: one-line event logging for every listcast process.
 *
 * Lines go to stderr as "PROG[PID]: LEVEL: text". Under systemd stderr is the journal, so nothing else is
 * needed there. Levels: info (events: accept, deliver, defer, bounce), warn (carry on), fatal (exit 1; the
 * supervisor restarts us), panic (a bug: abort()). Lines are cut at 2,048 bytes.
 */
#ifndef LC_LOG_H
#define LC_LOG_H

#include <stdarg.h>
#include <stddef.h>

#define LC_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* lc_log_init sets the program name shown on each line (not copied: pass a string that lives forever). */
void lc_log_init(const char *progname);
/* lc_log_verbose turns debug lines on or off. */
void lc_log_verbose(int on);

void lc_debug(const char *fmt, ...) LC_PRINTF(1, 2);
void lc_info(const char *fmt, ...) LC_PRINTF(1, 2);
void lc_warn(const char *fmt, ...) LC_PRINTF(1, 2);
void lc_fatal(const char *fmt, ...) LC_PRINTF(1, 2) __attribute__((noreturn));
void lc_panic(const char *fmt, ...) LC_PRINTF(1, 2) __attribute__((noreturn));

/* Allocation helpers: abort on failure, never return NULL. */
void *lc_malloc(size_t n);
void *lc_calloc(size_t n, size_t size);
void *lc_realloc(void *p, size_t n);
char *lc_strdup(const char *s);
char *lc_strndup(const char *s, size_t n);

#endif
