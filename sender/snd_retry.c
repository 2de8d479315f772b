/* snd_retry: the per-recipient retry schedule of deferred recipients (4xx replies, no MX left, protocol errors).
 *
 * Contract: a deferred recipient's next attempt is due after sender.retry_min seconds, doubling with every attempt
 * up to sender.retry_max, with +-10% jitter (so recipients deferred together do not come back together). Its
 * lifetime starts at the post's `created` time (the first attempt when the post has none); the last attempt is
 * made at the end of sender.max_lifetime, and a deferral at or past that end is a bounce with the reply
 * "451 4.4.7 ... expired", which the bounce daemon classifies as reason `expired` (bounce/bnc_reason.c maps the
 * status 4.4.7 and the word "expired" to it).
 * A deferred recipient is written to the ZSET lc:retry (schema LC_K_RETRY), scored by its due time in unix
 * seconds, in the same MULTI/EXEC that acknowledges its batch (snd_queue.c), so a crash loses nothing. Member:
 * "POST\nSUB\nATTEMPTS\nFIRST\nADDR\nHOSTS\nFROM" where ATTEMPTS counts the attempts made, FIRST is the unix time of
 * the first, HOSTS the batch's hosts field and FROM "-" (VERP) or "F" followed by a notice's envelope sender.
 * The poller (SND_LUA_RETRY_POLL, run every SND_RETRY_POLL_MS by snd_queue.c) moves due members back into
 * lc:stream:deliveries atomically, rebuilt as batches grouped by post, hosts and sender, each entry with the
 * extra field `attempts` ("ATTEMPTS FIRST" a line, in the order of its rcpts lines). Any sender may run it.
 * Members whose HOSTS is empty had no route (the expander's DNS lookup failed temporarily, snd_batch.c defers
 * such a batch with SND_NOROUTE_REPLY): the same script writes them, grouped the same way, as reroute entries
 * {post, rcpts, attempts[, from]} to lc:stream:posts, so the expander resolves their domains afresh
 * (expander/exp_reroute.c) and writes their batches, with `attempts` carried through.
 * Limits: SND_RETRY_MOVE members per poll; a member is at most LC_ADDR_MAX + the hosts field + 100 octets.
 */
#include "snd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lc_buf.h"
#include "lc_log.h"

const char snd_lua_retry_poll[] =
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2])) "
    "if #due == 0 then return {0, 0} end "
    "local bs = tonumber(ARGV[3]) "
    "local groups, order = {}, {} "
    "for _, m in ipairs(due) do "
    "  local f = {} "
    "  for part in string.gmatch(m .. '\\n', '([^\\n]*)\\n') do f[#f + 1] = part end "
    "  if #f == 7 then "
    "    local k = f[1] .. '\\n' .. f[6] .. '\\n' .. f[7] "
    "    local g = groups[k] "
    "    if not g or g.n >= bs then "
    "      g = {post = f[1], hosts = f[6], from = f[7], r = {}, a = {}, n = 0} "
    "      groups[k] = g order[#order + 1] = g "
    "    end "
    "    g.n = g.n + 1 g.r[g.n] = f[2] .. ' ' .. f[5] g.a[g.n] = f[3] .. ' ' .. f[4] "
    "  end "
    "end "
    "local rerouted = 0 "
    "for _, g in ipairs(order) do "
    "  if string.find(g.hosts, '^%s*$') then "
    "    rerouted = rerouted + g.n "
    "    if string.sub(g.from, 1, 1) == 'F' then "
    "      redis.call('XADD', KEYS[3], '*', 'post', g.post, 'rcpts', table.concat(g.r, '\\n'), "
    "        'attempts', table.concat(g.a, '\\n'), 'from', string.sub(g.from, 2)) "
    "    else "
    "      redis.call('XADD', KEYS[3], '*', 'post', g.post, 'rcpts', table.concat(g.r, '\\n'), "
    "        'attempts', table.concat(g.a, '\\n')) "
    "    end "
    "  elseif string.sub(g.from, 1, 1) == 'F' then "
    "    redis.call('XADD', KEYS[2], '*', 'post', g.post, 'hosts', g.hosts, 'rcpts', table.concat(g.r, '\\n'), "
    "      'attempts', table.concat(g.a, '\\n'), 'from', string.sub(g.from, 2)) "
    "  else "
    "    redis.call('XADD', KEYS[2], '*', 'post', g.post, 'hosts', g.hosts, 'rcpts', table.concat(g.r, '\\n'), "
    "      'attempts', table.concat(g.a, '\\n')) "
    "  end "
    "end "
    "for i = 1, #due, 500 do redis.call('ZREM', KEYS[1], unpack(due, i, math.min(i + 499, #due))) end "
    "return {#due, rerouted}";

int64_t snd_now(void)
{
    return (int64_t)time(NULL);
}

int snd_retry_plan(const struct snd *snd, struct snd_rcpt *r, int64_t now, char *out, size_t outlen)
{
    const struct snd_batch *b = r->batch;
    int64_t first = r->first ? r->first : now;
    int64_t origin = b->p && b->p->created > 0 && b->p->created <= now ? b->p->created : first;
    int64_t end = origin + snd->max_lifetime;
    if (now >= end) {
        snprintf(out, outlen, "451 4.4.7 delivery time expired: not delivered after %d attempts in %lld s",
                 r->attempt + 1, (long long)(now - origin));
        return 1;
    }
    int64_t d = snd->retry_min;
    for (int i = 0; i < r->attempt && d < snd->retry_max; i++)
        d *= 2;
    if (d > snd->retry_max)
        d = snd->retry_max;
    int64_t span = d / 5; /* jitter: d - 10% .. d + 10% */
    if (span > 0)
        d += (int64_t)(random() % (span + 1)) - span / 2;
    if (d < 1)
        d = 1;
    r->due = now + d < end ? now + d : end;
    return 0;
}

int snd_retry_member(const struct snd_rcpt *r, int64_t now, struct lc_buf *out)
{
    const struct snd_batch *b = r->batch;
    lc_buf_reset(out);
    return lc_buf_printf(out, "%llu\n%llu\n%d\n%lld\n%s\n%s\n%s%s", (unsigned long long)b->post,
                         (unsigned long long)r->sub, r->attempt + 1, (long long)(r->first ? r->first : now), r->addr,
                         b->hosts ? b->hosts : "", b->from ? "F" : "-", b->from ? b->from : "");
}

void snd_retry_attempts(struct snd_batch *b, const char *s, size_t n)
{
    size_t i = 0;
    int k = 0;
    while (i < n && k < b->nrcpts) {
        const char *nl = memchr(s + i, '\n', n - i);
        size_t le = nl ? (size_t)(nl - s) : n;
        char line[64];
        size_t ln = le - i < sizeof line - 1 ? le - i : sizeof line - 1;
        memcpy(line, s + i, ln);
        line[ln] = 0;
        i = le + 1;
        int att = 0;
        long long first = 0;
        if (sscanf(line, "%d %lld", &att, &first) == 2 && att > 0 && att < 100000 && first > 0) {
            b->rcpts[k].attempt = att;
            b->rcpts[k].first = first;
        }
        k++;
    }
}
