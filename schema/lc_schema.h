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
#define LC_K_HELD_INDEX "lc:heldidx"          /* ZSET: ids of the posts held for moderation, scored by id */
#define LC_K_RETRY "lc:retry"                 /* ZSET: deferred recipients waiting for a retry, scored by due time */
#define LC_K_TLSPOLICY "lc:tlspolicy"         /* HASH domain -> STARTTLS policy none|may|encrypt (sender) */
#define LC_K_PROBE_PENDING "lc:probe:pending" /* ZSET sub key -> unix time a bounce probe is due (bounce) */
#define LC_K_PROBE_SENT "lc:probe:sent"       /* ZSET sub key -> unix time of the probe's next check (bounce) */

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

/* LC_LUA_POST_DONE: EVAL with KEYS[1] = lc:post:ID. Sets state=done once the post is `sending` (the expander
 * wrote every batch and the recipient count) and delivered+bounced reaches recipients; returns 1 when it did.
 * Run by whoever may finish a post last (the sender after a batch, the expander after writing the recipient
 * count), inside their MULTI/EXEC, so no interleaving leaves a finished post `sending`, and a post still being
 * expanded (state queued, recipients not yet known) is never taken for finished. */
#define LC_LUA_POST_DONE                                                                                     \
    "local r = redis.call('HMGET', KEYS[1], 'recipients', 'delivered', 'bounced', 'state') "                 \
    "local n = tonumber(r[1]) "                                                                              \
    "if n and r[4] == 'sending' and (tonumber(r[2]) or 0) + (tonumber(r[3]) or 0) >= n then "                \
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

/* LC_LUA_BOUNCE_FAIL: one failure of a subscriber, applied atomically with the acknowledgement of its bounce
 * stream entry (bounce/bnc_act.c; no WATCH: the script reads the score it adds to). KEYS[1] = lc:sub:LIST:ADDR,
 * [2] = lc:active:LIST, [3] = lc:post:ID, [4] = lc:postbnc:ID, [5] = lc:list:LIST, [6..8] = lc:bncstat:{reason,
 * domain,post}:LIST, [9] = lc:stream:bounces. ARGV[1] = entry id, [2] = group, [3] = subscriber id, [4] = address,
 * [5] = reason, [6] = hard (0/1), [7] = the reason when it says the address is dead (disables at once) else "",
 * [8] = enhanced status or "-", [9] = now (unix s), [10] = 1 to move the recipient from delivered to bounced in
 * the post (a DSN; same rule as LC_LUA_POST_DSN), [11] = post id to count in bncstat:post ("" = none),
 * [12] = the address's domain, [13] = 1 when the failure is evidence against the mailbox (not a policy, spam,
 * authentication or reputation refusal: see bnc_act.c), else 0; KEYS[10] = lc:probe:pending, [11] = lc:probe:sent.
 * The list's bounce_hard/soft/threshold/stale_days (defaults 1, 0.5, 5, 7 days) decide the score (reset to 0
 * when the last bounce is stale) and whether to disable (status disabled, HDEL lc:active, and unless the list's
 * `probe` is 0: probe=pending and ZADD lc:probe:pending at now + the list's `probe_delay`, default 900 s).
 * A failure of a bounce probe (post hash probe=1 whose `sub` is this subscriber) that is evidence against the
 * mailbox unsubscribes (status unsubscribed, unsubscribed_reason probe, probe fields and index entries removed),
 * even after the subscriber was re-enabled; another failure of the in-flight probe sets probe=refused (left
 * disabled, out of lc:probe:sent). Without a subscriber hash (no status) only the entry is acknowledged.
 * Returns {0} (no subscriber) or {1, new score as written, 1 if it disabled an active subscriber, 1 if stale,
 * probe outcome: 0 not a probe failure, 1 unsubscribed, 2 refused (left disabled), 3 probe failure, no change}. */
#define LC_LUA_BOUNCE_FAIL                                                                                   \
    "local function num(v, def, lo, hi) "                                                                    \
    "if not v or v == '' or string.find(v, '%s$') then return def end "                                     \
    "local x = tonumber(v) if not x or x ~= x or x < lo or x > hi then return def end return x end "         \
    "local s = redis.call('HMGET', KEYS[1], 'status', 'bounce_score', 'last_bounce_at') "                    \
    "if s[1] then "                                                                                          \
    "local p = redis.call('HMGET', KEYS[5], 'bounce_hard', 'bounce_soft', 'bounce_threshold', "              \
    "'bounce_stale_days', 'probe', 'probe_delay') "                                                          \
    "local ph, ps, pt = num(p[1], 1, 0, 1000), num(p[2], 0.5, 0, 1000), num(p[3], 5, 0.001, 1e6) "           \
    "local stale_s = math.floor(num(p[4], 7, 0, 36500) * 86400) "                                            \
    "local score, last, now = tonumber(s[2] or '') or 0, tonumber(s[3] or '') or 0, tonumber(ARGV[9]) "      \
    "local stale = 0 "                                                                                       \
    "if score > 0 and last > 0 and stale_s > 0 and now - last > stale_s then stale = 1 end "                 \
    "if stale == 1 or score ~= score or score < 0 then score = 0 end "                                       \
    "if ARGV[6] == '1' then score = score + ph else score = score + ps end "                                 \
    "local str = string.format('%.6f', score) str = string.gsub(str, '0+$', '') "                            \
    "str = string.gsub(str, '%.$', '') "                                                                     \
    "local active = s[1] == '" LC_ST_ACTIVE "' "                                                             \
    "local dis = (active or s[1] == '" LC_ST_DISABLED "') and (score >= pt or ARGV[7] ~= '') "               \
    "local why = 'threshold' if ARGV[7] ~= '' then why = ARGV[7] end "                                       \
    "redis.call('HSET', KEYS[1], 'bounce_score', str) "                                                      \
    "redis.call('HINCRBY', KEYS[1], 'bounces', 1) "                                                          \
    "redis.call('HSET', KEYS[1], 'last_bounce_reason', ARGV[5], 'last_bounce_at', ARGV[9], "                 \
    "'last_bounce_status', ARGV[8]) "                                                                        \
    "if ARGV[10] == '1' and redis.call('EXISTS', KEYS[3]) == 1 and redis.call('SADD', KEYS[4], ARGV[3]) == 1 " \
    "then if (tonumber(redis.call('HGET', KEYS[3], 'delivered')) or 0) > 0 then "                            \
    "redis.call('HINCRBY', KEYS[3], 'delivered', -1) end redis.call('HINCRBY', KEYS[3], 'bounced', 1) end "  \
    "local d = 0 "                                                                                           \
    "if dis and active then redis.call('HSET', KEYS[1], 'status', '" LC_ST_DISABLED "', 'disabled_at', "     \
    "ARGV[9], 'disabled_reason', why) d = 1 "                                                                \
    "redis.call('HDEL', KEYS[1], 'probe', 'probe_post', 'probe_at', 'probe_bounced_at') "                    \
    "if p[5] ~= '0' then redis.call('HSET', KEYS[1], 'probe', 'pending') "                                   \
    "redis.call('ZADD', KEYS[10], now + math.floor(num(p[6], 900, 0, 2592000)), KEYS[1]) end end "           \
    "if dis then redis.call('HDEL', KEYS[2], ARGV[4]) end "                                                  \
    "local pr = 0 "                                                                                          \
    "if ARGV[11] ~= '' then local q = redis.call('HMGET', KEYS[3], 'probe', 'sub') "                         \
    "if q[1] == '1' and q[2] == ARGV[3] then pr = 3 "                                                        \
    "local c = redis.call('HMGET', KEYS[1], 'status', 'probe', 'probe_post') "                               \
    "if c[1] == '" LC_ST_ACTIVE "' or c[1] == '" LC_ST_DISABLED "' then "                                    \
    "if ARGV[13] == '1' then redis.call('HSET', KEYS[1], 'status', '" LC_ST_UNSUBSCRIBED "', "               \
    "'unsubscribed_at', ARGV[9], 'unsubscribed_reason', 'probe') "                                           \
    "redis.call('HDEL', KEYS[1], 'probe', 'probe_post', 'probe_at', 'probe_bounced_at') "                    \
    "redis.call('HDEL', KEYS[2], ARGV[4]) redis.call('ZREM', KEYS[10], KEYS[1]) "                            \
    "redis.call('ZREM', KEYS[11], KEYS[1]) pr = 1 d = 0 "                                                    \
    "elseif c[2] == 'sent' and c[3] == ARGV[11] then redis.call('HSET', KEYS[1], 'probe', 'refused') "       \
    "redis.call('ZREM', KEYS[11], KEYS[1]) pr = 2 end end end end "                                          \
    "redis.call('HINCRBY', KEYS[6], ARGV[5], 1) redis.call('HINCRBY', KEYS[7], ARGV[12], 1) "                \
    "if ARGV[11] ~= '' then redis.call('HINCRBY', KEYS[8], ARGV[11], 1) end "                                \
    "redis.call('HINCRBY', KEYS[5], 'bounces', 1) "                                                          \
    "redis.call('XACK', KEYS[9], ARGV[2], ARGV[1]) redis.call('XDEL', KEYS[9], ARGV[1]) "                    \
    "return {1, str, d, stale, pr} end "                                                                     \
    "redis.call('XACK', KEYS[9], ARGV[2], ARGV[1]) redis.call('XDEL', KEYS[9], ARGV[1]) return {0}"

/* LC_LUA_BOUNCE_COMPLAINT: an ARF complaint, applied atomically with the acknowledgement of its bounce stream
 * entry. KEYS[1] = lc:suppress, [2] = lc:active:LIST, [3] = lc:sub:LIST:ADDR, [4] = lc:list:LIST,
 * [5] = lc:post:ID, [6..8] = lc:bncstat:{reason,domain,post}:LIST, [9] = lc:stream:bounces. ARGV[1] = entry id,
 * [2] = group, [3] = address, [4] = now (unix s), [5] = the address's domain, [6] = post id to count in
 * bncstat:post ("" = none). Unsubscribes and suppresses the address, counts the complaint in the list, the post
 * (when it exists) and the report hashes (reason `feedback`). Returns 1. */
#define LC_LUA_BOUNCE_COMPLAINT                                                                              \
    "redis.call('SADD', KEYS[1], ARGV[3]) redis.call('HDEL', KEYS[2], ARGV[3]) "                             \
    "redis.call('HSET', KEYS[3], 'status', '" LC_ST_UNSUBSCRIBED "', 'complained_at', ARGV[4]) "              \
    "redis.call('HINCRBY', KEYS[4], 'complaints', 1) "                                                       \
    "if redis.call('EXISTS', KEYS[5]) == 1 then redis.call('HINCRBY', KEYS[5], 'complaints', 1) end "        \
    "redis.call('HINCRBY', KEYS[6], 'feedback', 1) redis.call('HINCRBY', KEYS[7], ARGV[5], 1) "              \
    "if ARGV[6] ~= '' then redis.call('HINCRBY', KEYS[8], ARGV[6], 1) end "                                  \
    "redis.call('XACK', KEYS[9], ARGV[2], ARGV[1]) redis.call('XDEL', KEYS[9], ARGV[1]) return 1"

/* LC_LUA_PROBE_SEND: queue the bounce probe of one disabled subscriber as a notice (SCHEMA.md "Notices" and
 * "Bounce probes"; bounce/bnc_probe.c), once. KEYS[1] = lc:sub:LIST:ADDR, [2] = lc:probe:pending,
 * [3] = lc:probe:sent, [4] = lc:msg:ID, [5] = lc:post:ID, [6] = lc:stream:posts, [7] = lc:list:LIST.
 * ARGV[1] = the notice's post id (INCR lc:seq:post; "0": the caller cannot send this one now), [2] = list,
 * [3] = address, [4] = subscriber id, [5] = envelope sender (the signed VERP address of ID and the subscriber),
 * [6] = the message, [7] = its size, [8] = now (unix s), [9] = when to check the probe first, [10] = when to try
 * again after "0". Returns 1 queued (notice stored with probe=1 and XADDed; the subscriber's probe=sent,
 * probe_post=ID, probe_at=now; moved from lc:probe:pending to lc:probe:sent); 0 no longer due (not disabled, or
 * no probe pending: index entry and a stale probe=pending removed); -1 probes turned off for the list (probe
 * removed, left disabled); -2 the subscriber changed under the caller (nothing written: read it again);
 * -3 "0" was passed (re-scheduled at ARGV[10]). */
#define LC_LUA_PROBE_SEND                                                                                    \
    "local s = redis.call('HMGET', KEYS[1], 'status', 'probe', 'id', 'address') "                            \
    "if s[1] ~= '" LC_ST_DISABLED "' or s[2] ~= 'pending' then redis.call('ZREM', KEYS[2], KEYS[1]) "        \
    "if s[2] == 'pending' then redis.call('HDEL', KEYS[1], 'probe') end return 0 end "                       \
    "if redis.call('HGET', KEYS[7], 'probe') == '0' then redis.call('HDEL', KEYS[1], 'probe') "              \
    "redis.call('ZREM', KEYS[2], KEYS[1]) return -1 end "                                                    \
    "if ARGV[1] == '0' then redis.call('ZADD', KEYS[2], ARGV[10], KEYS[1]) return -3 end "                   \
    "if s[3] ~= ARGV[4] or s[4] ~= ARGV[3] or redis.call('EXISTS', KEYS[5]) == 1 then return -2 end "        \
    "redis.call('SET', KEYS[4], ARGV[6]) "                                                                   \
    "redis.call('HSET', KEYS[5], 'id', ARGV[1], 'list', ARGV[2], 'kind', 'notice', 'to', ARGV[3], 'sub', "   \
    "ARGV[4], 'envelope_from', ARGV[5], 'from', '', 'size', ARGV[7], 'created', ARGV[8], 'state', '"         \
    LC_PS_QUEUED "', 'recipients', '0', 'delivered', '0', 'deferred', '0', 'bounced', '0', 'probe', '1') "   \
    "redis.call('XADD', KEYS[6], '*', 'post', ARGV[1]) "                                                     \
    "redis.call('HSET', KEYS[1], 'probe', 'sent', 'probe_post', ARGV[1], 'probe_at', ARGV[8]) "              \
    "redis.call('HDEL', KEYS[1], 'probe_bounced_at') "                                                       \
    "redis.call('ZREM', KEYS[2], KEYS[1]) redis.call('ZADD', KEYS[3], ARGV[9], KEYS[1]) return 1"

/* LC_LUA_PROBE_CHECK: the outcome of one probe in flight (bounce/bnc_probe.c, polling lc:probe:sent).
 * KEYS[1] = lc:sub:LIST:ADDR, [2] = lc:probe:sent, [3] = lc:active:LIST, [4] = lc:suppress, [5] = lc:post:ID.
 * ARGV[1] = the probe's post id as the caller read it, [2] = now (unix s), [3] = grace (s) left to the bounce
 * entry of a counted bounce, [4] = give-up age (s), [5] = when to check again. The post's counters decide:
 * delivered >= 1: re-enabled (status active, bounce_score 0, disabled_* and probe* removed, back into
 * lc:active:LIST as address -> id unless suppressed), returns 1 (6 when suppressed: active, not in lc:active);
 * bounced >= 1: the bounce entry (LC_LUA_BOUNCE_FAIL) decides; if the subscriber is still waiting ARGV[3] s
 * after the bounce was first seen here (probe_bounced_at), unsubscribed (reason probe), returns 3, else 2;
 * neither, past the give-up age: probe=lost (left disabled), returns 4; the post is gone: probe=lost, returns 5;
 * else re-scheduled at ARGV[5], returns 7. A probe no longer in flight (probe not `sent`, another probe_post, or
 * status no longer disabled) leaves the index (and its probe fields, when the status changed): returns 0. */
#define LC_LUA_PROBE_CHECK                                                                                   \
    "local s = redis.call('HMGET', KEYS[1], 'status', 'probe', 'probe_post', 'probe_at', "                   \
    "'probe_bounced_at', 'address', 'id') "                                                                  \
    "if s[2] ~= 'sent' or s[3] ~= ARGV[1] then redis.call('ZREM', KEYS[2], KEYS[1]) return 0 end "           \
    "local now, grace = tonumber(ARGV[2]), tonumber(ARGV[3]) "                                               \
    "if s[1] ~= '" LC_ST_DISABLED "' then "                                                                  \
    "redis.call('HDEL', KEYS[1], 'probe', 'probe_post', 'probe_at', 'probe_bounced_at') "                    \
    "redis.call('ZREM', KEYS[2], KEYS[1]) return 0 end "                                                     \
    "if redis.call('EXISTS', KEYS[5]) == 0 then redis.call('HSET', KEYS[1], 'probe', 'lost') "               \
    "redis.call('ZREM', KEYS[2], KEYS[1]) return 5 end "                                                     \
    "local p = redis.call('HMGET', KEYS[5], 'delivered', 'bounced') "                                        \
    "if (tonumber(p[1]) or 0) >= 1 then "                                                                    \
    "redis.call('HSET', KEYS[1], 'status', '" LC_ST_ACTIVE "', 'bounce_score', '0') "                        \
    "redis.call('HDEL', KEYS[1], 'disabled_at', 'disabled_reason', 'probe', 'probe_post', 'probe_at', "      \
    "'probe_bounced_at') redis.call('ZREM', KEYS[2], KEYS[1]) "                                              \
    "if redis.call('SISMEMBER', KEYS[4], s[6]) == 1 then return 6 end "                                      \
    "redis.call('HSET', KEYS[3], s[6], s[7]) return 1 end "                                                  \
    "if (tonumber(p[2]) or 0) >= 1 then local seen = tonumber(s[5] or '') "                                  \
    "if not seen then seen = now redis.call('HSET', KEYS[1], 'probe_bounced_at', ARGV[2]) end "              \
    "if now - seen >= grace then redis.call('HSET', KEYS[1], 'status', '" LC_ST_UNSUBSCRIBED "', "           \
    "'unsubscribed_at', ARGV[2], 'unsubscribed_reason', 'probe') "                                           \
    "redis.call('HDEL', KEYS[1], 'probe', 'probe_post', 'probe_at', 'probe_bounced_at') "                    \
    "redis.call('HDEL', KEYS[3], s[6]) redis.call('ZREM', KEYS[2], KEYS[1]) return 3 end "                   \
    "redis.call('ZADD', KEYS[2], seen + grace, KEYS[1]) return 2 end "                                       \
    "if now - (tonumber(s[4] or '') or now) >= tonumber(ARGV[4]) then "                                      \
    "redis.call('HSET', KEYS[1], 'probe', 'lost') redis.call('ZREM', KEYS[2], KEYS[1]) return 4 end "        \
    "redis.call('ZADD', KEYS[2], ARGV[5], KEYS[1]) return 7"

/* LC_LUA_LIST_RATE: the list's complaint rate window (issue 7). EVAL with KEYS[1] = lc:posts:LIST, KEYS[2] =
 * lc:list:LIST, ARGV[1] = LC_RATE_WINDOW. Sums `delivered` and `complaints` of the list's newest ARGV[1] posts
 * whose id is above the list's `rate_after` (set when an operator resumes a paused list, so the complaints
 * that caused the pause no longer count). Returns {delivered, complaints, posts counted}. */
#define LC_RATE_WINDOW 1000
#define LC_LUA_LIST_RATE                                                                                     \
    "local after = tonumber(redis.call('HGET', KEYS[2], 'rate_after') or '0') or 0 "                         \
    "local ids = redis.call('ZREVRANGE', KEYS[1], 0, (tonumber(ARGV[1]) or 1000) - 1) "                      \
    "local d, c, n = 0, 0, 0 "                                                                               \
    "for _, id in ipairs(ids) do local x = tonumber(id) if x and x > after then "                            \
    "local v = redis.call('HMGET', 'lc:post:' .. id, 'delivered', 'complaints') "                            \
    "d = d + (tonumber(v[1]) or 0) c = c + (tonumber(v[2]) or 0) n = n + 1 end end "                         \
    "return {d, c, n}"

/* LC_LUA_SUB_ADD subscribes (CLI `sub add`, web UI add and CSV import): one shape of subscriber keys everywhere.
 * KEYS: lc:sub:LIST:ADDR, lc:subids, lc:members:LIST, lc:active:LIST, lc:seq:sub, lc:suppress.
 * ARGV: address, list, now (unix s), status ("active"). A new subscriber gets an id; an existing one keeps it.
 * Returns 1 added, 2 re-activated, 0 already active; plus 10 when the address is suppressed (then it is kept
 * out of lc:active). */
#define LC_LUA_SUB_ADD                                                                                       \
    "local id = redis.call('HGET', KEYS[1], 'id')\n"                                                         \
    "local r = 0\n"                                                                                          \
    "if not id then\n"                                                                                       \
    "  id = redis.call('INCR', KEYS[5])\n"                                                                   \
    "  redis.call('HSET', KEYS[1], 'id', id, 'address', ARGV[1], 'list', ARGV[2], 'status', ARGV[4],\n"      \
    "             'bounce_score', '0', 'bounces', '0', 'created', ARGV[3])\n"                                \
    "  redis.call('HSET', KEYS[2], id, ARGV[2] .. ' ' .. ARGV[1])\n"                                         \
    "  r = 1\n"                                                                                              \
    "else\n"                                                                                                 \
    "  if redis.call('HGET', KEYS[1], 'status') ~= ARGV[4] then r = 2 end\n"                                 \
    "  redis.call('HSET', KEYS[1], 'status', ARGV[4])\n"                                                     \
    "end\n"                                                                                                  \
    "redis.call('ZADD', KEYS[3], 0, ARGV[1])\n"                                                              \
    "if redis.call('SISMEMBER', KEYS[6], ARGV[1]) == 1 then\n"                                               \
    "  redis.call('HDEL', KEYS[4], ARGV[1])\n"                                                               \
    "  return r + 10\n"                                                                                      \
    "end\n"                                                                                                  \
    "redis.call('HSET', KEYS[4], ARGV[1], id)\n"                                                             \
    "return r\n"

/* LC_LUA_SUB_RM sets a subscriber's status to ARGV[2] (unsubscribed or disabled) and takes it out of
 * lc:active. KEYS: lc:sub:LIST:ADDR, lc:active:LIST. ARGV: address, new status.
 * Returns -1 not a subscriber, 0 already in that status, 1 changed. */
#define LC_LUA_SUB_RM                                                                                        \
    "if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end\n"                                             \
    "local was = redis.call('HGET', KEYS[1], 'status')\n"                                                    \
    "redis.call('HSET', KEYS[1], 'status', ARGV[2])\n"                                                       \
    "redis.call('HDEL', KEYS[2], ARGV[1])\n"                                                                 \
    "if was == ARGV[2] then return 0 end\n"                                                                  \
    "return 1\n"

/* LC_LUA_HELD_APPROVE releases a held post into the post pipeline exactly once (listd's L-approve-TOKEN
 * address and the web UI's moderation queue). KEYS: lc:held:HELD, lc:msg:ID, lc:post:ID, lc:posts:LIST,
 * lc:stream:posts, lc:heldidx. ARGV: list, post id (the held post's own), now (unix s), state ("queued").
 * Returns 1 released, 0 no such held post (already approved, rejected or expired: its index entry, if any, is
 * removed), -1 held for another list. */
#define LC_LUA_HELD_APPROVE                                                                                  \
    "if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('ZREM', KEYS[6], ARGV[2]) return 0 end "          \
    "local h = redis.call('HMGET', KEYS[1], 'list', 'from', 'size', 'msg') "                                 \
    "if h[1] ~= ARGV[1] then return -1 end "                                                                 \
    "redis.call('SET', KEYS[2], h[4]) "                                                                      \
    "redis.call('HSET', KEYS[3], 'id', ARGV[2], 'list', h[1], 'from', h[2], 'size', h[3], 'created', ARGV[3], " \
    "'state', ARGV[4], 'recipients', '0', 'delivered', '0', 'deferred', '0', 'bounced', '0') "               \
    "redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2]) "                                                         \
    "redis.call('XADD', KEYS[5], '*', 'post', ARGV[2]) "                                                     \
    "redis.call('DEL', KEYS[1]) redis.call('ZREM', KEYS[6], ARGV[2]) return 1"

/* LC_LUA_HELD_REJECT discards a held post. KEYS: lc:held:HELD, lc:heldidx. ARGV: list, post id. Returns 1, 0
 * or -1 as above. */
#define LC_LUA_HELD_REJECT                                                                                   \
    "if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[2]) return 0 end "          \
    "if redis.call('HGET', KEYS[1], 'list') ~= ARGV[1] then return -1 end "                                  \
    "redis.call('DEL', KEYS[1]) redis.call('ZREM', KEYS[2], ARGV[2]) return 1"

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
int lc_key_postexp(char *out, size_t outlen, uint64_t post);                  /* lc:postexp:ID (STRING) */
int lc_key_postprog(char *out, size_t outlen, uint64_t post);                 /* lc:postprog:ID (HASH) */
int lc_key_postdefer(char *out, size_t outlen, uint64_t post);                /* lc:postdefer:ID (HASH, TTL) */
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
