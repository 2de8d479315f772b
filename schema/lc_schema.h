/* lc_schema: the only place Redis key names are built. What each key holds, who writes it and who reads it
 * is documented in schema/SCHEMA.md; keep the two in step.
 *
 * Every builder writes a NUL-terminated key into out (LC_KEY_MAX bytes is always enough for normalised
 * addresses, which are at most LC_ADDR_MAX octets) and returns its length, or -1 if outlen is too small.
 */
#ifndef LC_SCHEMA_H
#define LC_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#define LC_KEY_MAX 768

/* Fixed keys. */
#define LC_K_LISTS "lc:lists"                 /* SET of list addresses */
#define LC_K_DOMAINS "lc:domains"             /* SET of domains that have at least one list */
#define LC_K_SUBIDS "lc:subids"               /* HASH subscriber id -> "LIST ADDR" */
#define LC_K_SEQ_LIST "lc:seq:list"           /* counter: list ids */
#define LC_K_SEQ_SUB "lc:seq:sub"             /* counter: subscriber ids */
#define LC_K_SEQ_POST "lc:seq:post"           /* counter: post ids */
#define LC_K_SUPPRESS "lc:suppress"           /* SET of globally suppressed addresses */
#define LC_K_RETRY "lc:retry"                 /* ZSET: deferred recipients waiting for a retry, scored by due time */
#define LC_K_TLSPOLICY "lc:tlspolicy"         /* HASH domain -> STARTTLS policy none|may|encrypt (sender) */

/* Streams and their consumer groups. */
#define LC_S_POSTS "lc:stream:posts"          /* listd -> expander: field post=<id> */
#define LC_G_POSTS "expander"
#define LC_S_DELIVERIES "lc:stream:deliveries" /* expander -> sender: post, hosts, rcpts */
#define LC_G_DELIVERIES "sender"
#define LC_S_BOUNCES "lc:stream:bounces"      /* listd -> bounce: rcpt, from, post, sub, msg */
#define LC_G_BOUNCES "bounce"

/* Subscriber status values (field "status" of a subscriber hash). */
#define LC_ST_ACTIVE "active"
#define LC_ST_UNCONFIRMED "unconfirmed"
#define LC_ST_DISABLED "disabled"
#define LC_ST_UNSUBSCRIBED "unsubscribed"

/* Post states (field "state" of a post hash). */
#define LC_PS_QUEUED "queued"     /* stored by listd, not yet expanded */
#define LC_PS_SENDING "sending"   /* expanded: batches in the deliveries stream */
#define LC_PS_DONE "done"         /* every recipient has a final outcome */

/* LC_LUA_POST_DONE: EVAL with KEYS[1] = lc:post:ID. Sets state=done once delivered+bounced reaches recipients;
 * returns 1 when it did. Run by whoever may finish a post last (the sender after a batch, the expander after
 * writing the recipient count), inside their MULTI/EXEC, so no interleaving leaves a finished post `sending`. */
#define LC_LUA_POST_DONE                                                                                     \
    "local r = redis.call('HMGET', KEYS[1], 'recipients', 'delivered', 'bounced', 'state') "                 \
    "local n = tonumber(r[1]) "                                                                              \
    "if n and (tonumber(r[2]) or 0) + (tonumber(r[3]) or 0) >= n and r[4] ~= 'done' then "                   \
    "redis.call('HSET', KEYS[1], 'state', 'done') return 1 end return 0"

/* LC_LUA_POST_DSN: EVAL with KEYS[1] = lc:post:ID, KEYS[2] = lc:postbnc:ID, ARGV[1] = subscriber id. A bounce
 * message (DSN) comes after the receiving MX accepted the copy, which the sender counted as delivered: move that
 * recipient from delivered to bounced, once per post and subscriber (a repeated DSN changes nothing), and only if
 * the post exists. pending (recipients - delivered - bounced) is unchanged. Returns 1 if it counted. */
#define LC_LUA_POST_DSN                                                                                      \
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end "                                               \
    "if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end "                                        \
    "if (tonumber(redis.call('HGET', KEYS[1], 'delivered')) or 0) > 0 then "                                 \
    "redis.call('HINCRBY', KEYS[1], 'delivered', -1) end "                                                   \
    "redis.call('HINCRBY', KEYS[1], 'bounced', 1) return 1"

/* Per-key builders. */
int lc_key_list(char *out, size_t outlen, const char *list);                 /* lc:list:LIST (HASH) */
int lc_key_members(char *out, size_t outlen, const char *list);              /* lc:members:LIST (ZSET) */
int lc_key_active(char *out, size_t outlen, const char *list);               /* lc:active:LIST (HASH) */
int lc_key_sub(char *out, size_t outlen, const char *list, const char *addr); /* lc:sub:LIST:ADDR (HASH) */
int lc_key_post(char *out, size_t outlen, uint64_t post);                     /* lc:post:ID (HASH) */
int lc_key_msg(char *out, size_t outlen, uint64_t post);                      /* lc:msg:ID (STRING) */
int lc_key_posts(char *out, size_t outlen, const char *list);                /* lc:posts:LIST (ZSET) */
int lc_key_postdom(char *out, size_t outlen, uint64_t post);                  /* lc:postdom:ID (HASH) */
int lc_key_postbnc(char *out, size_t outlen, uint64_t post);                  /* lc:postbnc:ID (SET) */
/* bounce: per-list bounce report counters, KIND is "reason", "domain" or "post" (HASH name -> count). */
int lc_key_bncstat(char *out, size_t outlen, const char *kind, const char *list); /* lc:bncstat:KIND:LIST */
/* listd: held posts and rate limits of email commands (SCHEMA.md "Moderation and email commands"). */
int lc_key_held(char *out, size_t outlen, uint64_t post);                     /* lc:held:ID (HASH, TTL) */
int lc_key_ratelimit(char *out, size_t outlen, const char *what, const char *list,
                     const char *addr);                                       /* lc:rl:WHAT:LIST:ADDR (TTL) */

/* Admin web UI (webui/, `listcast admin`): accounts, API tokens, sessions, login throttling, used tokens. */
#define LC_K_ADMINS "lc:admins"               /* SET of admin user names */
#define LC_K_APITOKENS "lc:apitokens"         /* HASH sha256hex(API token) -> user name */
#define LC_K_SEQ_IMPORT "lc:seq:import"       /* counter: CSV import ids */
int lc_key_admin(char *out, size_t outlen, const char *user);                 /* lc:admin:USER (HASH) */
int lc_key_session(char *out, size_t outlen, const char *sid);                /* lc:session:SID (HASH, TTL) */
int lc_key_loginfail(char *out, size_t outlen, const char *kind, const char *who); /* lc:loginfail:KIND:WHO */
int lc_key_usedtok(char *out, size_t outlen, const char *token);              /* lc:usedtok:TOKEN (STRING, TTL) */
int lc_key_import(char *out, size_t outlen, uint64_t id);                     /* lc:import:ID (HASH) */
int lc_key_importerr(char *out, size_t outlen, uint64_t id);                  /* lc:importerr:ID (LIST) */

#endif
