/* lc_json: a small streaming JSON writer for the listcast CLI and the web UI.
 *
 * Contract: the caller emits values in document order (lc_json_obj / lc_json_arr open a container,
 * lc_json_end closes the innermost one, lc_json_key names the next value inside an object); the writer inserts
 * commas, colons and (when pretty) newlines and indentation. Strings are escaped per RFC 8259: '"', '\\' and
 * control characters are escaped, U+2028/U+2029 are escaped (safe inside <script>), and bytes that are not
 * valid UTF-8 are replaced by U+FFFD, so the output is always valid JSON whatever the data in Redis holds.
 * Non-finite numbers are written as null.
 *
 * Limits: nesting depth 32. Misuse (a value where a key is due, too deep, unbalanced end) and output errors
 * (a full lc_buf, a stdio error) are sticky: every later call is a no-op and lc_json_free returns -1.
 */
#ifndef LC_JSON_H
#define LC_JSON_H

#include <stddef.h>
#include <stdio.h>

struct lc_buf;
struct lc_json;

/* lc_json_new_file writes to a stdio stream (not closed by lc_json_free); pretty indents by two spaces. */
struct lc_json *lc_json_new_file(FILE *f, int pretty);
/* lc_json_new_buf appends to an lc_buf owned by the caller. */
struct lc_json *lc_json_new_buf(struct lc_buf *b, int pretty);
/* lc_json_free ends the document (a newline when pretty) and frees the writer; returns 0, or -1 if the
 * output failed or the document was not complete and balanced. lc_json_free(NULL) returns 0. */
int lc_json_free(struct lc_json *j);

void lc_json_obj(struct lc_json *j);
void lc_json_arr(struct lc_json *j);
void lc_json_end(struct lc_json *j);
void lc_json_key(struct lc_json *j, const char *key);

void lc_json_str(struct lc_json *j, const char *s);          /* NULL writes null */
void lc_json_strn(struct lc_json *j, const char *s, size_t n);
void lc_json_int(struct lc_json *j, long long v);
void lc_json_num(struct lc_json *j, double v);
void lc_json_bool(struct lc_json *j, int v);
void lc_json_null(struct lc_json *j);

/* Key + value in one call. */
void lc_json_kstr(struct lc_json *j, const char *key, const char *s);
void lc_json_kint(struct lc_json *j, const char *key, long long v);
void lc_json_knum(struct lc_json *j, const char *key, double v);
void lc_json_kbool(struct lc_json *j, const char *key, int v);

#endif
