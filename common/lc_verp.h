/* lc_verp: VERP envelope senders that name a post and a subscriber, signed with the appliance secret.
 *
 * Form: "bounce-P-S-M@DOMAIN" where P is the post id and S the subscriber id, both in lower-case base32hex
 * (digits 0-9 then a-v), and M is 12 base32hex digits: the first 60 bits of
 * HMAC-SHA256(secret, "verp" NUL P NUL S NUL DOMAIN). The local part is at most 7+13+1+13+1+12 = 47 octets and
 * decodes after any change of case. A forged, altered or unsigned address fails lc_verp_decode.
 */
#ifndef LC_VERP_H
#define LC_VERP_H

#include <stddef.h>
#include <stdint.h>

struct lc_secret;

#define LC_VERP_PREFIX "bounce-"

/* lc_verp_encode writes "bounce-P-S-M@domain" to out (NUL-terminated). Returns its length, or -1 if outlen
 * is too small. domain must already be normalised (lower case). */
int lc_verp_encode(const struct lc_secret *s, uint64_t post, uint64_t sub, const char *domain, char *out,
                   size_t outlen);

/* lc_verp_decode checks addr (an address, any case, len bytes) and on success sets *post and *sub and
 * returns 0. Returns -1 if it is not of the VERP form, -2 if it is of the form but the signature is wrong. */
int lc_verp_decode(const struct lc_secret *s, const char *addr, size_t len, uint64_t *post, uint64_t *sub);

/* base32hex helpers (lower case out, any case in); used by cookies too. */
int lc_b32_u64(uint64_t v, char *out, size_t outlen);           /* returns length or -1 */
int lc_b32_parse_u64(const char *p, size_t n, uint64_t *v);     /* 0 or -1 */

#endif
