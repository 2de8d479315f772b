/* bnc_probe: bounce probes, out and back (issue 5). The bounce daemon is the one owner of the probe state.
 *
 * When bounces disable a subscriber (LC_LUA_BOUNCE_FAIL: status disabled, out of lc:active:LIST), the same script
 * sets probe=pending and adds the subscriber's key to lc:probe:pending (ZSET, scored by the time the probe is
 * due: now + the list's `probe_delay`, default 900 s; nothing when the list's `probe` is 0). Every
 * BNC_PROBE_EVERY_MS (and at once after a batch that disabled someone) this module:
 *   1. sends the due probes (ZRANGEBYSCORE lc:probe:pending, at most BNC_PROBE_BATCH a round): reads the
 *      subscriber and the list, reserves a post id (INCR lc:seq:post), builds the probe message, signs the VERP
 *      envelope sender of that post id and the subscriber (common/lc_verp.h, the appliance secret) and stores it
 *      with LC_LUA_PROBE_SEND as a notice (SCHEMA.md "Notices": kind=notice, to, sub, envelope_from; plus probe=1)
 *      in the same script that re-checks probe=pending, sets probe=sent, probe_post, probe_at and moves the key
 *      from lc:probe:pending to lc:probe:sent. A crash before the script sends nothing and leaves the probe
 *      pending (the reserved id is skipped); after it, the notice exists exactly once. Two daemons racing for one
 *      probe store one notice: the second script finds probe=sent.
 *   2. checks the probes in flight (ZRANGEBYSCORE lc:probe:sent, the score being the next check time, backing
 *      off from 1 s to BNC_PROBE_STEP_MAX s with the probe's age) with LC_LUA_PROBE_CHECK on the notice's
 *      counters, which the sender keeps like any post's: delivered >= 1 re-enables (status active, back into
 *      lc:active:LIST, score 0, disabled_* and probe* removed); bounced >= 1 is left to the bounce entry the
 *      sender or expander wrote with it (LC_LUA_BOUNCE_FAIL knows the reason: a dead mailbox unsubscribes, a
 *      policy refusal leaves the subscriber disabled with probe=refused) and unsubscribes here only when that
 *      entry has not decided within BNC_PROBE_GRACE_S; a probe with neither outcome sender.max_lifetime + 1 day
 *      after it was queued (the sender bounces it as `expired` long before: that is a bounce) becomes probe=lost.
 * A DSN that comes back later to the probe's VERP address is attributed to the probe by bnc_act.c and handled
 * inside LC_LUA_BOUNCE_FAIL (unsubscribes even a re-enabled subscriber).
 * Message: From L-owner@D (L-request@D when the list has no owner), To the subscriber, a Subject and a short
 * text saying delivery from the list was suspended because mail bounced and that receiving this is enough for
 * delivery to resume; Date, Message-ID, Auto-Submitted: auto-generated, X-Loop: L@D.
 * Limits: BNC_PROBE_BATCH probes sent and BNC_PROBE_BATCH checked a round, a few synchronous round trips each
 * (probes are rare; the indexes mean no SCAN ever); a message is at most BNC_PROBE_MSG_MAX octets.
 */
#include "bnc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "lc_addr.h"
#include "lc_buf.h"
#include "lc_cfg.h"
#include "lc_log.h"
#include "lc_redis.h"
#include "lc_schema.h"
#include "lc_verp.h"

#define BNC_PROBE_EVERY_MS 1000
#define BNC_PROBE_BATCH "64"        /* probes sent, and probes checked, per round */
#define BNC_PROBE_GRACE_S 300       /* a counted bounce waits this long for its bounce entry to decide */
#define BNC_PROBE_STEP_MAX 300      /* longest pause between two checks of one probe (s) */
#define BNC_PROBE_BROKEN_RETRY 3600 /* a subscriber hash we cannot build a probe from: try again after (s) */
#define BNC_PROBE_MSG_MAX 8192

struct bnc_probe {
    const struct lc_cfg *cfg;
    const struct lc_secret *secret;
    long long giveup_s;      /* sender.max_lifetime + 1 day */
    char sha_send[48];       /* LC_LUA_PROBE_SEND, LC_LUA_PROBE_CHECK: loaded on connect */
    char sha_check[48];
    int64_t next_ms;
    int kicked;
};

enum { P_OK = 0, P_RECONNECT = -1 };

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct bnc_probe *bnc_probe_new(const struct lc_cfg *cfg, const struct lc_secret *secret)
{
    struct bnc_probe *p = lc_calloc(1, sizeof *p);
    p->cfg = cfg;
    p->secret = secret;
    p->giveup_s = lc_cfg_int(cfg, "sender.max_lifetime") + 86400;
    return p;
}

void bnc_probe_free(struct bnc_probe *p)
{
    free(p);
}

void bnc_probe_kick(struct bnc_probe *p)
{
    p->kicked = 1;
}

static int load(redisContext *rc, const char *script, char *sha, size_t shalen, char *err, size_t errlen)
{
    const char *a[] = {"SCRIPT", "LOAD", script};
    redisReply *r = redisCommandArgv(rc, 3, a, NULL);
    int ok = r && r->type == REDIS_REPLY_STRING && r->len < shalen;
    if (ok)
        snprintf(sha, shalen, "%s", r->str);
    else
        snprintf(err, errlen, "redis: SCRIPT LOAD: %s", r ? (r->str ? r->str : "unexpected reply") : rc->errstr);
    if (r)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

int bnc_probe_load(struct bnc_probe *p, struct redisContext *rc, char *err, size_t errlen)
{
    if (load(rc, LC_LUA_PROBE_SEND, p->sha_send, sizeof p->sha_send, err, errlen) < 0 ||
        load(rc, LC_LUA_PROBE_CHECK, p->sha_check, sizeof p->sha_check, err, errlen) < 0)
        return -1;
    p->next_ms = 0;
    return 0;
}

/* Run one command. Returns the reply (caller frees; may be an error reply, already logged), or NULL when the
 * connection is lost. *reconnect is set for a lost connection or a NOSCRIPT error. */
static redisReply *run(redisContext *rc, int argc, const char **argv, int *reconnect)
{
    redisReply *r = redisCommandArgv(rc, argc, argv, NULL);
    if (!r) {
        *reconnect = 1;
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        lc_warn("probe: redis: %s: %.*s", argv[0], (int)r->len, r->str);
        if (!strncmp(r->str, "NOSCRIPT", 8))
            *reconnect = 1;
    }
    return r;
}

/* A copy of element i of an array reply into out ("" when absent or not a string). */
static void field(const redisReply *r, size_t i, char *out, size_t outlen)
{
    out[0] = 0;
    if (r && r->type == REDIS_REPLY_ARRAY && i < r->elements && r->element[i]->type == REDIS_REPLY_STRING &&
        r->element[i]->len < outlen) {
        memcpy(out, r->element[i]->str, r->element[i]->len);
        out[r->element[i]->len] = 0;
    }
}

static int parse_id(const char *s, uint64_t *v)
{
    if (!*s || strlen(s) > 20)
        return -1;
    for (const char *q = s; *q; q++)
        if (*q < '0' || *q > '9')
            return -1;
    errno = 0;
    unsigned long long x = strtoull(s, NULL, 10);
    if (errno || x == 0)
        return -1;
    *v = (uint64_t)x;
    return 0;
}

/* A bounce reason or status as stored by bnc_act.c, or "" when it holds anything else (it goes into a text). */
static const char *word(const char *s)
{
    if (!*s || strlen(s) > 32)
        return "";
    for (const char *q = s; *q; q++)
        if (!((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '.' || *q == '-'))
            return "";
    return s;
}

/* The address LOCAL<suffix>@DOMAIN of list (listd's command addresses, listd/lsd_route.c). */
static void list_addr(const char *list, const char *suffix, char *out, size_t outlen)
{
    const char *at = strrchr(list, '@');
    snprintf(out, outlen, "%.*s%s%s", (int)(at - list), list, suffix, at);
}

/* build writes the probe message for subscriber addr of list (post id, the last bounce reason and status) into
 * b. Returns 0, or -1 when it does not fit. */
static int build(struct lc_buf *b, const char *list, const char *addr, uint64_t id, int has_owner,
                 const char *reason, const char *status)
{
    char from[LC_ADDR_MAX + 32], unsub[LC_ADDR_MAX + 32], date[64];
    list_addr(list, has_owner ? "-owner" : "-request", from, sizeof from);
    list_addr(list, "-unsubscribe", unsub, sizeof unsub);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd)
        rnd = (uint64_t)now ^ ((uint64_t)getpid() << 32) ^ id;
    int rc = lc_buf_printf(b,
                           "From: <%s>\r\nTo: <%s>\r\nSubject: Delivery from %s is suspended: mail to you bounced\r\n"
                           "Date: %s\r\nMessage-ID: <probe.%" PRIu64 ".%016" PRIx64 "@%s>\r\n"
                           "Auto-Submitted: auto-generated\r\nX-Loop: %s\r\nMIME-Version: 1.0\r\n"
                           "Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n",
                           from, addr, list, date, id, rnd, lc_addr_domain(list), list);
    rc |= lc_buf_printf(b,
                        "Hello,\r\n\r\n"
                        "Messages from the mailing list %s to your address\r\n%s\r\n"
                        "have been bouncing, so delivery to you was suspended.\r\n",
                        list, addr);
    if (*reason)
        rc |= lc_buf_printf(b, "The last bounce said: %s%s%s%s.\r\n", reason, *status ? " (status " : "", status,
                            *status ? ")" : "");
    rc |= lc_buf_printf(b,
                        "\r\nThis message is a test of your address. If it reaches you, there is nothing\r\n"
                        "to do: receiving it is enough for delivery from %s to resume.\r\n"
                        "If it bounces too, the address will be removed from the list.\r\n\r\n"
                        "To leave the list instead, send a message to %s.\r\n",
                        list, unsub);
    return rc ? -1 : 0;
}

/* ---- 1. sending ---- */

/* send_one queues the probe of the subscriber whose key is member (a due entry of lc:probe:pending). */
static int send_one(struct bnc_probe *p, redisContext *rc, const char *member, long long now)
{
    int recon = 0;
    const char *hm[] = {"HMGET", member, "status", "probe", "id", "address", "list", "last_bounce_reason",
                        "last_bounce_status"};
    redisReply *r = run(rc, 9, hm, &recon);
    if (!r)
        return P_RECONNECT;
    char status[32], probe[32], ids[32], addr_raw[LC_ADDR_MAX + 1], list_raw[LC_ADDR_MAX + 1], reason[40],
        st[40];
    field(r, 0, status, sizeof status);
    field(r, 1, probe, sizeof probe);
    field(r, 2, ids, sizeof ids);
    field(r, 3, addr_raw, sizeof addr_raw);
    field(r, 4, list_raw, sizeof list_raw);
    field(r, 5, reason, sizeof reason);
    field(r, 6, st, sizeof st);
    int bad_reply = r->type != REDIS_REPLY_ARRAY;
    freeReplyObject(r);
    if (bad_reply)
        return recon ? P_RECONNECT : P_OK;

    /* what we need to build the message; "0" makes the script clean up or re-schedule instead */
    char addr[LC_ADDR_MAX + 1], list[LC_ADDR_MAX + 1], klist[LC_KEY_MAX];
    const char *why = "";
    uint64_t sub = 0;
    int usable = strcmp(status, LC_ST_DISABLED) == 0 && strcmp(probe, "pending") == 0;
    int broken = 0;
    char subcheck[24] = "";
    if (usable && parse_id(ids, &sub) == 0)
        snprintf(subcheck, sizeof subcheck, "%" PRIu64, sub);
    if (usable && (strcmp(subcheck, ids) || lc_addr_norm(addr_raw, strlen(addr_raw), addr, &why) < 0 ||
                   strcmp(addr, addr_raw) || lc_addr_norm(list_raw, strlen(list_raw), list, &why) < 0 ||
                   strcmp(list, list_raw)))
        usable = 0, broken = 1;
    if (lc_key_list(klist, sizeof klist, usable ? list : list_raw) < 0)
        usable = 0, broken = 1, klist[0] = 0;
    int has_owner = 0;
    if (usable) {
        const char *hl[] = {"HMGET", klist, "owner", "probe"};
        r = run(rc, 4, hl, &recon);
        if (!r)
            return P_RECONNECT;
        char owner[8], lprobe[8];
        field(r, 0, owner, sizeof owner);
        field(r, 1, lprobe, sizeof lprobe);
        has_owner = r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->type == REDIS_REPLY_STRING &&
                    r->element[0]->len > 0;
        freeReplyObject(r);
        if (!strcmp(lprobe, "0"))
            usable = 0; /* the script removes the probe */
    }
    uint64_t id = 0;
    if (usable) {
        const char *in[] = {"INCR", LC_K_SEQ_POST};
        r = run(rc, 2, in, &recon);
        if (!r)
            return P_RECONNECT;
        if (r->type == REDIS_REPLY_INTEGER && r->integer > 0)
            id = (uint64_t)r->integer;
        freeReplyObject(r);
        if (!id)
            return recon ? P_RECONNECT : P_OK;
    }

    char verp[LC_ADDR_MAX + 1] = "", kmsg[LC_KEY_MAX], kpost[LC_KEY_MAX];
    struct lc_buf *msg = lc_buf_new(BNC_PROBE_MSG_MAX);
    if (id && (lc_verp_encode(p->secret, id, sub, lc_addr_domain(list), verp, sizeof verp) < 0 ||
               build(msg, list, addr, id, has_owner, word(reason), word(st)) < 0)) {
        lc_warn("probe sub=%s list=%s rcpt=<%s>: message does not fit", ids, list, addr);
        id = 0, broken = 1;
    }
    if (!id)
        lc_buf_reset(msg);
    lc_key_msg(kmsg, sizeof kmsg, id);
    lc_key_post(kpost, sizeof kpost, id);
    char sid[24], ssize[24], snow[24], sfirst[24], sretry[24], ssub[24];
    snprintf(sid, sizeof sid, "%" PRIu64, id);
    snprintf(ssub, sizeof ssub, "%" PRIu64, sub);
    snprintf(ssize, sizeof ssize, "%zu", lc_buf_len(msg));
    snprintf(snow, sizeof snow, "%lld", now);
    snprintf(sfirst, sizeof sfirst, "%lld", now + 1);
    snprintf(sretry, sizeof sretry, "%lld", broken ? now + BNC_PROBE_BROKEN_RETRY : now + 1);
    const char *ev[] = {"EVALSHA", p->sha_send, "7", member, LC_K_PROBE_PENDING, LC_K_PROBE_SENT, kmsg, kpost,
                        LC_S_POSTS, klist, sid, list, addr, ssub, verp, lc_buf_data(msg), ssize, snow, sfirst,
                        sretry};
    size_t lens[20];
    for (int i = 0; i < 20; i++)
        lens[i] = strlen(ev[i]);
    lens[15] = lc_buf_len(msg);
    if (!id) { /* nothing to send: the script cleans up or re-schedules */
        ev[11] = list_raw;
        ev[12] = addr_raw;
        lens[11] = strlen(list_raw);
        lens[12] = strlen(addr_raw);
    }
    r = redisCommandArgv(rc, 20, ev, lens);
    lc_buf_free(msg);
    if (!r)
        return P_RECONNECT;
    if (r->type == REDIS_REPLY_ERROR) {
        lc_warn("probe sub=%s: redis: %.*s", ids, (int)r->len, r->str);
        recon = !strncmp(r->str, "NOSCRIPT", 8);
        freeReplyObject(r);
        return recon ? P_RECONNECT : P_OK;
    }
    long long res = r->type == REDIS_REPLY_INTEGER ? r->integer : -9;
    freeReplyObject(r);
    switch (res) {
    case 1:
        lc_info("probe post=%" PRIu64 " sub=%" PRIu64 " list=%s rcpt=<%s> from=<%s> queued", id, sub, list, addr,
                verp);
        break;
    case 0:
        lc_debug("probe key=%s: no longer pending", member);
        break;
    case -1:
        lc_info("probe sub=%s list=%s rcpt=<%s>: probes are off for the list, left disabled", ids, list_raw,
                addr_raw);
        break;
    case -2:
        lc_debug("probe key=%s: changed while the probe was built, again next round", member);
        break;
    case -3:
        if (broken)
            lc_warn("probe key=%s: cannot build a probe (id=%s address=%s list=%s %s), retrying in %d s", member,
                    ids, addr_raw, list_raw, why, BNC_PROBE_BROKEN_RETRY);
        break;
    default:
        lc_warn("probe key=%s: unexpected reply from the send script", member);
    }
    return P_OK;
}

/* ---- 2. checking ---- */

static int check_one(struct bnc_probe *p, redisContext *rc, const char *member, long long now)
{
    int recon = 0;
    const char *hm[] = {"HMGET", member, "probe_post", "probe_at", "list", "address", "id"};
    redisReply *r = run(rc, 7, hm, &recon);
    if (!r)
        return P_RECONNECT;
    char post[32], at[32], list[LC_ADDR_MAX + 1], addr[LC_ADDR_MAX + 1], ids[32];
    field(r, 0, post, sizeof post);
    field(r, 1, at, sizeof at);
    field(r, 2, list, sizeof list);
    field(r, 3, addr, sizeof addr);
    field(r, 4, ids, sizeof ids);
    freeReplyObject(r);
    uint64_t pid = 0;
    if (parse_id(post, &pid) < 0)
        snprintf(post, sizeof post, "0"); /* the script drops the index entry */
    char kactive[LC_KEY_MAX], kpost[LC_KEY_MAX];
    if (lc_key_active(kactive, sizeof kactive, list) < 0)
        lc_key_active(kactive, sizeof kactive, "");
    lc_key_post(kpost, sizeof kpost, pid);
    long long age = now - strtoll(at, NULL, 10);
    long long step = age / 8;
    step = step < 1 ? 1 : step > BNC_PROBE_STEP_MAX ? BNC_PROBE_STEP_MAX : step;
    char snow[24], sgrace[24], sgive[24], snext[24];
    snprintf(snow, sizeof snow, "%lld", now);
    snprintf(sgrace, sizeof sgrace, "%d", BNC_PROBE_GRACE_S);
    snprintf(sgive, sizeof sgive, "%lld", p->giveup_s);
    snprintf(snext, sizeof snext, "%lld", now + step);
    const char *ev[] = {"EVALSHA", p->sha_check, "5", member, LC_K_PROBE_SENT, kactive, LC_K_SUPPRESS, kpost,
                        post, snow, sgrace, sgive, snext};
    r = run(rc, 13, ev, &recon);
    if (!r)
        return P_RECONNECT;
    long long res = r->type == REDIS_REPLY_INTEGER ? r->integer : -9;
    freeReplyObject(r);
    if (recon)
        return P_RECONNECT;
    switch (res) {
    case 1:
        lc_info("probe post=%s sub=%s list=%s rcpt=<%s> delivered: delivery re-enabled", post, ids, list, addr);
        break;
    case 6:
        lc_info("probe post=%s sub=%s list=%s rcpt=<%s> delivered: re-enabled, still suppressed", post, ids, list,
                addr);
        break;
    case 2:
        lc_debug("probe post=%s sub=%s bounced: waiting for its bounce entry", post, ids);
        break;
    case 3:
        lc_info("probe post=%s sub=%s list=%s rcpt=<%s> bounced (no bounce entry decided in %d s): unsubscribed",
                post, ids, list, addr, BNC_PROBE_GRACE_S);
        break;
    case 4:
        lc_warn("probe post=%s sub=%s list=%s rcpt=<%s> no outcome after %lld s: probe=lost, left disabled", post,
                ids, list, addr, p->giveup_s);
        break;
    case 5:
        lc_warn("probe post=%s sub=%s list=%s rcpt=<%s> post is gone: probe=lost, left disabled", post, ids, list,
                addr);
        break;
    default:
        break; /* 0 no longer in flight, 7 no outcome yet, -9 error (logged) */
    }
    return P_OK;
}

/* ---- the round ---- */

typedef int (*each_fn)(struct bnc_probe *p, redisContext *rc, const char *member, long long now);

/* Apply fn to the due members of index (score <= now), at most BNC_PROBE_BATCH. */
static int due(struct bnc_probe *p, redisContext *rc, const char *index, each_fn fn, long long now,
               volatile sig_atomic_t *stop)
{
    char snow[24];
    snprintf(snow, sizeof snow, "%lld", now);
    const char *a[] = {"ZRANGEBYSCORE", index, "-inf", snow, "LIMIT", "0", BNC_PROBE_BATCH};
    int recon = 0;
    redisReply *r = run(rc, 7, a, &recon);
    if (!r)
        return P_RECONNECT;
    int rcode = P_OK;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements && !*stop; i++) {
        const redisReply *m = r->element[i];
        if (m->type != REDIS_REPLY_STRING)
            continue;
        if (m->len >= LC_KEY_MAX || strncmp(m->str, "lc:sub:", 7) || memchr(m->str, 0, m->len)) {
            lc_warn("probe: %s holds a member that is no subscriber key: removed", index);
            const char *z[] = {"ZREM", index, m->str};
            size_t zl[] = {4, strlen(index), m->len};
            redisReply *x = redisCommandArgv(rc, 3, z, zl);
            if (!x) {
                rcode = P_RECONNECT;
                break;
            }
            freeReplyObject(x);
            continue;
        }
        if (fn(p, rc, m->str, now) == P_RECONNECT) {
            rcode = P_RECONNECT;
            break;
        }
    }
    freeReplyObject(r);
    return rcode;
}

int bnc_probe_tick(struct bnc_probe *p, struct redisContext *rc, volatile sig_atomic_t *stop)
{
    int64_t t = mono_ms();
    if (!rc || (!p->kicked && t < p->next_ms))
        return P_OK;
    p->kicked = 0;
    p->next_ms = t + BNC_PROBE_EVERY_MS;
    long long now = (long long)time(NULL);
    if (due(p, rc, LC_K_PROBE_PENDING, send_one, now, stop) == P_RECONNECT)
        return P_RECONNECT;
    return due(p, rc, LC_K_PROBE_SENT, check_one, now, stop);
}
