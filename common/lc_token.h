/* lc_token: stateless signed tokens for confirmation cookies, one-click unsubscribe links and moderation
 * addresses. Shared by listd (reply addresses L-confirm-TOKEN@D, moderation addresses), the sender (the
 * per-recipient List-Unsubscribe header) and webui (confirmation and one-click URLs).
 *
 * Form: ACTION ID "-" EXPIRES "-" MAC, all lower-case base32hex (lc_verp.h), so a token survives the
 * lower-casing of an email local part. ACTION is one letter (enum lc_tok_action); ID is the subject of the
 * action (a subscriber id, or a post id for moderation); EXPIRES is a unix time in seconds, 0 for never; MAC is
 * 16 digits (80 bits) of HMAC-SHA256(secret, "tok" NUL ACTION NUL ID NUL EXPIRES), all in their text form.
 * At most 1 + 13 + 1 + 13 + 1 + 16 = 45 octets. A token says nothing about who may use it twice: callers that
 * must refuse reuse remember used tokens (see schema/SCHEMA.md).
 */
#ifndef LC_TOKEN_H
#define LC_TOKEN_H

#include <stddef.h>
#include <stdint.h>

struct lc_secret;

#define LC_TOKEN_MAX 48 /* longest token plus NUL */

enum lc_tok_action {
    LC_TOK_SUBSCRIBE = 's',   /* confirm a subscription: ID = subscriber id (status unconfirmed) */
    LC_TOK_UNSUBSCRIBE = 'u', /* confirm an unsubscription by email: ID = subscriber id */
    LC_TOK_ONECLICK = 'o',    /* RFC 8058 one-click unsubscribe: ID = subscriber id, never expires */
    LC_TOK_APPROVE = 'a',     /* moderation: approve held post ID */
    LC_TOK_REJECT = 'r',      /* moderation: reject held post ID */
    LC_TOK_PROBE = 'p',       /* bounce probe: ID = subscriber id */
};

enum lc_tok_result {
    LC_TOK_OK = 0,
    LC_TOK_MALFORMED = -1, /* not a token */
    LC_TOK_FORGED = -2,    /* of the form, but the signature is wrong */
    LC_TOK_EXPIRED = -3,   /* signed, but past its expiry */
};

/* lc_token_make writes a token to out (LC_TOKEN_MAX bytes suffice). Returns its length, or -1 if action is not
 * one of enum lc_tok_action or outlen is too small. */
int lc_token_make(const struct lc_secret *s, int action, uint64_t id, int64_t expires, char *out, size_t outlen);

/* lc_token_check verifies tok (len octets, any case) at time now. On LC_TOK_OK sets *action, *id, *expires;
 * on LC_TOK_EXPIRED sets them too (so the caller can say what expired). Constant-time MAC comparison. */
enum lc_tok_result lc_token_check(const struct lc_secret *s, const char *tok, size_t len, int64_t now, int *action,
                                  uint64_t *id, int64_t *expires);

/* lc_token_why returns a short English reason for a result ("forged", "expired", ...). */
const char *lc_token_why(enum lc_tok_result r);

#endif
