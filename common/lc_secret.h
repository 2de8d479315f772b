/* lc_secret: the appliance's HMAC key (VERP addresses, cookies, tokens), and HMAC helpers.
 *
 * The secret file holds 64 hex digits (32 random bytes) and a newline; it is created on first start with
 * mode 0600 (O_EXCL, so two processes starting at once agree on one key).
 */
#ifndef LC_SECRET_H
#define LC_SECRET_H

#include <stddef.h>

#define LC_SECRET_LEN 32

struct lc_secret;

/* lc_secret_load reads the key from path, creating it first if create is set and it is missing.
 * Returns the key or NULL with a reason in err. */
struct lc_secret *lc_secret_load(const char *path, int create, char *err, size_t errlen);
/* lc_secret_from makes a key from raw bytes (tests). */
struct lc_secret *lc_secret_from(const unsigned char *key, size_t len);
void lc_secret_free(struct lc_secret *s);

/* lc_secret_mac computes HMAC-SHA256(key, msg) into out[32]. */
void lc_secret_mac(const struct lc_secret *s, const void *msg, size_t len, unsigned char out[32]);

#endif
