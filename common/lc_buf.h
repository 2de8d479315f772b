/* lc_buf: one growable byte buffer with a hard maximum, always NUL-terminated.
 *
 * Contract: the data is data[0..len) followed by a NUL that is not counted in len. Appends that would make
 * len exceed the maximum set at creation fail with -1 and leave the buffer unchanged, so a caller can turn
 * "too long" into a protocol error instead of an unbounded allocation. Allocation failure aborts.
 * The buffer owns its storage; lc_buf_free(NULL) is a no-op.
 */
#ifndef LC_BUF_H
#define LC_BUF_H

#include <stddef.h>
#include "lc_log.h"

struct lc_buf;

/* lc_buf_new makes an empty buffer that may grow to at most max bytes (not counting the NUL). */
struct lc_buf *lc_buf_new(size_t max);
void lc_buf_free(struct lc_buf *b);

const char *lc_buf_data(const struct lc_buf *b);
char *lc_buf_mdata(struct lc_buf *b);
size_t lc_buf_len(const struct lc_buf *b);
size_t lc_buf_max(const struct lc_buf *b);

/* Appends; each returns 0, or -1 when the result would pass the maximum (nothing appended then). */
int lc_buf_append(struct lc_buf *b, const void *p, size_t n);
int lc_buf_puts(struct lc_buf *b, const char *s);
int lc_buf_printf(struct lc_buf *b, const char *fmt, ...) LC_PRINTF(2, 3);

/* lc_buf_reset empties the buffer (keeps its storage). */
void lc_buf_reset(struct lc_buf *b);
/* lc_buf_consume drops the first n bytes (n is clamped to len). */
void lc_buf_consume(struct lc_buf *b, size_t n);
/* lc_buf_truncate shortens to n bytes (no-op if n >= len). */
void lc_buf_truncate(struct lc_buf *b, size_t n);
/* lc_buf_steal returns the storage (NUL-terminated, caller frees) and empties the buffer. */
char *lc_buf_steal(struct lc_buf *b, size_t *len);

#endif
