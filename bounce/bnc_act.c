/* bnc_act: the bounce daemon's work loop: read lc:stream:bounces, classify, update the subscriber.
 *
 * Contract: one synchronous Redis connection (a blocking read returns after BLOCK 1000 ms, so SIGTERM is
 * seen within about a second). On start and after every reconnect the consumer first re-reads its own
 * pending entries (XREADGROUP ... 0), then new ones (">"); every BNC_CLAIM_EVERY_MS it takes over entries
 * idle for more than BNC_CLAIM_IDLE_MS from dead consumers (XAUTOCLAIM).
 * An entry is {rcpt, from, post, sub, msg} from listd (a bounce message received at a VERP address) or
 * {rcpt, from, post, sub, reply} from the sender (the text of a 5xx reply). The subscriber is found by
 * HGET lc:subids SUB; a VERP rcpt is checked again with lc_verp_decode and must name the same post and
 * subscriber, else the entry is dropped (a forged or altered bounce changes nothing). A listd entry without a
 * VERP rcpt is dropped too; a sender reply entry may carry the plain recipient address (it comes from our
 * own sender, which signed nothing for it to check).
 * Entries are handled a batch at a time (one XREADGROUP of up to BNC_READ_COUNT): the subscribers are looked
 * up in one pipelined round, the messages parsed, then every entry's update is sent pipelined, so one AOF fsync
 * covers many bounces. A failure updates lc:sub:LIST:ADDR with one Lua script (LC_LUA_BOUNCE_FAIL in schema/,
 * no WATCH: it reads the score it adds to) that also acknowledges and deletes the entry: a crash before it runs
 * leaves the entry pending and nothing written, a crash after leaves nothing to redo. The list's policy
 * (lc:list:LIST bounce_hard, bounce_soft, bounce_threshold, bounce_stale_days; defaults 1, 0.5, 5, 7) decides:
 * bounce_score += hard or soft, after a reset to 0 when the last bounce is older than the stale period (decay);
 * the subscriber is disabled (status disabled, removed from lc:active:LIST, probe=pending and lc:probe:pending for
 * bnc_probe.c unless the list's probe is 0) when the score reaches the threshold or a hard bounce says the address
 * is dead (userunknown, hostunknown, hasmoved). A failure attributed to a bounce probe (its post hash has probe=1
 * and names this subscriber) unsubscribes in the same script when it is evidence against the mailbox
 * (probe_evidence: not a policy/spam/authentication refusal, not x.7.x), else marks the probe refused.
 * Every failure also counts in the list's report hashes (lc:bncstat:{reason,domain,post}:LIST) and the list's
 * `bounces` counter.
 * lc:post:ID bounced is counted only for listd's entries (the sender already counted its own 5xx replies), and
 * moves the recipient out of delivered, once per post and subscriber (the LC_LUA_POST_DSN rule).
 * An ARF complaint (LC_LUA_BOUNCE_COMPLAINT, which acknowledges the entry too) unsubscribes (status
 * unsubscribed, HDEL lc:active:LIST), suppresses the address (SADD lc:suppress) and counts in the list's and
 * the post's `complaints` and the report hashes. Delay notices, auto-replies and messages that name no failure
 * change nothing and are logged.
 * Entries that change nothing are acknowledged and deleted in a MULTI/EXEC of their own, in the same pipeline.
 * Between reads the same connection runs a round of bounce probes (bnc_probe_tick: at most every second, or
 * at once after a batch that disabled someone).
 * Limits: COUNT BNC_READ_COUNT entries a read (messages are at most smtp.max_message_size each, so a batch of
 * large messages can hold much memory for one round).
 */
#include "bnc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lc_addr.h"
#include "lc_cfg.h"
#include "lc_log.h"
#include "lc_redis.h"
#include "lc_schema.h"
#include "lc_secret.h"
#include "lc_verp.h"

#define BNC_READ_COUNT "128" /* entries a batch: one fsync covers up to this many bounces */
#define BNC_BLOCK_MS "1000"
#define BNC_CLAIM_IDLE_MS "60000"
#define BNC_CLAIM_EVERY_MS 30000
#define BNC_CLAIM_ROUNDS 20
#define BNC_CMD_TIMEOUT_MS 15000

struct bnc_daemon {
    const struct lc_cfg *cfg;
    const struct lc_secret *secret;
    const char *url;
    const char *node;
    redisContext *rc;
    int pending_done;       /* own pending entries re-read since the last (re)connect */
    char pending_cursor[64];
    int64_t next_claim_ms;
    int fails;              /* consecutive connection failures, for backoff */
    char sha_fail[48];      /* SHA1 of LC_LUA_BOUNCE_FAIL / LC_LUA_BOUNCE_COMPLAINT, loaded on connect */
    char sha_complaint[48];
    int reload;             /* a NOSCRIPT reply: reconnect (and load the scripts again) */
    struct bnc_probe *probe; /* bounce probes (bnc_probe.c), run between reads on the same connection */
};

/* The fields of one stream entry (pointers into the reply; msg/reply may hold NULs). */
struct entry {
    const char *id;
    const char *rcpt, *from, *post, *sub, *msg, *reply;
    size_t rcpt_len, msg_len, reply_len;
};

/* What an entry turned out to be, after classification. */
struct outcome {
    uint64_t post, sub;
    char list[LC_ADDR_MAX + 1];
    char addr[LC_ADDR_MAX + 1];
    int from_listd;  /* msg entry (count the post), not the sender's reply entry */
};

enum step { STEP_OK = 0, STEP_REDIS = -1 }; /* STEP_REDIS: connection lost, reconnect and retry */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct bnc_daemon *bnc_daemon_new(const struct lc_cfg *cfg, const struct lc_secret *secret)
{
    struct bnc_daemon *d = lc_calloc(1, sizeof *d);
    d->cfg = cfg;
    d->secret = secret;
    d->url = lc_cfg_str(cfg, "redis.url");
    d->node = lc_cfg_str(cfg, "node.name");
    d->probe = bnc_probe_new(cfg, secret);
    return d;
}

void bnc_daemon_free(struct bnc_daemon *d)
{
    if (!d)
        return;
    if (d->rc)
        redisFree(d->rc);
    bnc_probe_free(d->probe);
    free(d);
}

/* ---- Redis helpers ---- */

static void drop_connection(struct bnc_daemon *d, const char *why)
{
    lc_warn("redis: %s; reconnecting", why);
    if (d->rc)
        redisFree(d->rc);
    d->rc = NULL;
}

/* Run one command (NUL-terminated arguments). Returns the reply (caller frees) or NULL: then either the
 * connection is gone (d->rc dropped) or the reply was an error (logged). */
static redisReply *cmd(struct bnc_daemon *d, int argc, const char **argv)
{
    if (!d->rc)
        return NULL;
    redisReply *r = redisCommandArgv(d->rc, argc, argv, NULL);
    if (!r) {
        drop_connection(d, d->rc->errstr[0] ? d->rc->errstr : "connection lost");
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        lc_warn("redis: %s: %.*s", argv[0], (int)r->len, r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* Queue one command of a pipeline (NULL-terminated argument list). */
static void append(struct bnc_daemon *d, const char **argv)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    redisAppendCommandArgv(d->rc, argc, argv, NULL);
}

/* SCRIPT LOAD a script into the connection's server; its SHA1 goes to sha. 0 or -1 (err). */
static int load_script(struct bnc_daemon *d, const char *script, char *sha, size_t shalen, char *err, size_t errlen)
{
    const char *a[] = {"SCRIPT", "LOAD", script};
    redisReply *r = redisCommandArgv(d->rc, 3, a, NULL);
    int ok = r && r->type == REDIS_REPLY_STRING && r->len < shalen;
    if (ok)
        snprintf(sha, shalen, "%s", r->str);
    else
        snprintf(err, errlen, "redis: SCRIPT LOAD: %s", r ? (r->str ? r->str : "unexpected reply") : d->rc->errstr);
    if (r)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

static int ensure_connected(struct bnc_daemon *d, volatile sig_atomic_t *stop)
{
    char err[256];
    while (!d->rc && !*stop) {
        d->rc = lc_redis_connect(d->url, BNC_CMD_TIMEOUT_MS, err, sizeof err);
        if (d->rc && lc_redis_group(d->rc, LC_S_BOUNCES, LC_G_BOUNCES, err, sizeof err) == 0 &&
            load_script(d, LC_LUA_BOUNCE_FAIL, d->sha_fail, sizeof d->sha_fail, err, sizeof err) == 0 &&
            load_script(d, LC_LUA_BOUNCE_COMPLAINT, d->sha_complaint, sizeof d->sha_complaint, err, sizeof err) == 0 &&
            bnc_probe_load(d->probe, d->rc, err, sizeof err) == 0) {
            if (d->fails)
                lc_info("redis: connected again");
            d->fails = 0;
            d->pending_done = 0;
            strcpy(d->pending_cursor, "0");
            d->next_claim_ms = 0;
            return 0;
        }
        if (d->rc) {
            redisFree(d->rc);
            d->rc = NULL;
        }
        d->fails++;
        long wait_ms = 250L << (d->fails < 6 ? d->fails : 6); /* 0.5 s .. 16 s */
        lc_warn("%s (attempt %d, retrying in %ld ms)", err, d->fails, wait_ms);
        for (long waited = 0; waited < wait_ms && !*stop; waited += 100) {
            struct timespec ts = {0, 100 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return d->rc ? 0 : -1;
}

/* ---- entries ---- */

static int parse_u64(const char *s, uint64_t *v)
{
    if (!s || !*s || strlen(s) > 20)
        return -1;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return -1;
    errno = 0;
    unsigned long long x = strtoull(s, NULL, 10);
    if (errno)
        return -1;
    *v = (uint64_t)x;
    return 0;
}

static void entry_fields(struct entry *e, const redisReply *f)
{
    for (size_t i = 0; f && f->type == REDIS_REPLY_ARRAY && i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        if (!strcmp(k->str, "rcpt")) {
            e->rcpt = v->str;
            e->rcpt_len = v->len;
        } else if (!strcmp(k->str, "from")) {
            e->from = v->str;
        } else if (!strcmp(k->str, "post")) {
            e->post = v->str;
        } else if (!strcmp(k->str, "sub")) {
            e->sub = v->str;
        } else if (!strcmp(k->str, "msg")) {
            e->msg = v->str;
            e->msg_len = v->len;
        } else if (!strcmp(k->str, "reply")) {
            e->reply = v->str;
            e->reply_len = v->len;
        }
    }
}

/* ---- one batch ----
 *
 * A batch is the entries of one XREADGROUP (or XAUTOCLAIM) reply. Round 1 checks every entry's fields and
 * VERP address and pipelines one HGET lc:subids per remaining entry (reads: no fsync); then every message is
 * parsed and classified on this thread; round 2 pipelines one command group per entry, each of which writes
 * the entry's effects and its XACK+XDEL atomically: LC_LUA_BOUNCE_FAIL / LC_LUA_BOUNCE_COMPLAINT by EVALSHA,
 * or MULTI XACK XDEL EXEC for an entry that changes nothing. Redis answers them after one AOF fsync per read
 * of the pipeline instead of one per entry. A crash anywhere leaves each entry either untouched and pending or
 * applied and acknowledged; Lua scripts run in order, so two bounces of one subscriber in a batch add up. */

enum job_kind { JOB_ACK = 0, JOB_LOOKUP, JOB_FAIL, JOB_COMPLAINT, JOB_SKIP /* left pending */ };

struct job {
    const char *id;
    struct entry e;
    struct outcome o;
    enum job_kind kind;
    struct bnc_rcpt f;  /* the failure or complaint to apply */
    long long now;
};

static int is_dead_reason(const char *reason)
{
    return !strcmp(reason, "userunknown") || !strcmp(reason, "hostunknown") || !strcmp(reason, "hasmoved");
}

/* Whether a failure of a bounce probe is evidence that the mailbox is dead (LC_LUA_BOUNCE_FAIL ARGV[13]): any
 * failure but a refusal of the message or of us (policy, spam, virus, authentication such as SPF/DKIM/DMARC,
 * reputation, blocklists, rate limits: the reasons below, and every x.7.x status), which says nothing about
 * the mailbox. `expired` (the sender gave up after sender.max_lifetime) counts as evidence. */
static int probe_evidence(const struct bnc_rcpt *f)
{
    static const char *const policy[] = {"blocked", "spamdetected", "virusdetected", "policyviolation",
                                         "securityerror", "authfailure", "requireptr", "badreputation",
                                         "contenterror", "rejected", "notcompliantrfc", "speeding", "toomanyconn",
                                         "norelaying", "syntaxerror", "mesgtoobig", "exceedlimit"};
    if ((f->status[0] == '4' || f->status[0] == '5') && !strncmp(f->status + 1, ".7.", 3))
        return 0;
    for (size_t i = 0; i < sizeof policy / sizeof policy[0]; i++)
        if (f->reason && !strcmp(f->reason, policy[i]))
            return 0;
    return 1;
}

/* The domain part of an address ("" when none). */
static const char *domain_of(const char *addr)
{
    const char *at = strrchr(addr, '@');
    return at ? at + 1 : "";
}

/* Pick the report entry that speaks about the subscriber: a failure naming the address, else the first
 * failure (the subscriber's mail was forwarded and failed further on), else a complaint. */
static const struct bnc_rcpt *pick(const struct bnc_report *rep, const char *addr)
{
    const struct bnc_rcpt *first = NULL, *feedback = NULL;
    for (size_t i = 0; i < bnc_report_count(rep); i++) {
        const struct bnc_rcpt *e = bnc_report_get(rep, i);
        if (e->action == BNC_FAILED) {
            if (!strcasecmp(e->recipient, addr))
                return e;
            if (!first)
                first = e;
        } else if (e->action == BNC_FEEDBACK && !feedback) {
            feedback = e;
        }
    }
    return first ? first : feedback;
}

/* Round 1, before the lookup: fields and VERP check. Leaves j->kind JOB_LOOKUP, or JOB_ACK (logged). */
static void job_check(struct bnc_daemon *d, struct job *j, const redisReply *fields)
{
    struct entry *e = &j->e;
    struct outcome *o = &j->o;
    j->kind = JOB_ACK;
    e->id = j->id;
    if (!fields || fields->type != REDIS_REPLY_ARRAY)
        return; /* deleted while pending */
    entry_fields(e, fields);
    if (parse_u64(e->post, &o->post) < 0 || parse_u64(e->sub, &o->sub) < 0 || (!e->msg && !e->reply)) {
        lc_warn("bounce entry=%s dropped: missing or bad fields", j->id);
        return;
    }
    o->from_listd = e->msg != NULL;

    /* the VERP address must be ours and name this post and subscriber */
    size_t plen = strlen(LC_VERP_PREFIX);
    if (e->rcpt && e->rcpt_len >= plen && !strncasecmp(e->rcpt, LC_VERP_PREFIX, plen)) {
        uint64_t vp = 0, vs = 0;
        int v = lc_verp_decode(d->secret, e->rcpt, e->rcpt_len, &vp, &vs);
        if (v < 0 || vp != o->post || vs != o->sub) {
            const char *why = v == -2 ? "forged" : v < 0 ? "malformed" : "mismatched";
            lc_warn("bounce entry=%s post=%" PRIu64 " sub=%" PRIu64 " dropped: %s VERP address <%.*s>", j->id,
                    o->post, o->sub, why, (int)(e->rcpt_len > 200 ? 200 : e->rcpt_len), e->rcpt);
            return;
        }
    } else if (o->from_listd) {
        lc_warn("bounce entry=%s post=%" PRIu64 " sub=%" PRIu64 " dropped: not a VERP address", j->id, o->post,
                o->sub);
        return;
    }
    j->kind = JOB_LOOKUP;
}

/* After the lookup: who it is (r = HGET lc:subids reply), then what happened. Sets j->kind. */
static void job_classify(struct job *j, const redisReply *r)
{
    struct outcome *o = &j->o;
    struct entry *e = &j->e;
    j->kind = JOB_ACK;
    const char *sp = r && r->type == REDIS_REPLY_STRING ? memchr(r->str, ' ', r->len) : NULL;
    size_t llen = sp ? (size_t)(sp - r->str) : 0, alen = sp ? r->len - llen - 1 : 0;
    if (!sp || llen == 0 || llen > LC_ADDR_MAX || alen == 0 || alen > LC_ADDR_MAX) {
        lc_warn("bounce post=%" PRIu64 " sub=%" PRIu64 " dropped: unknown subscriber id", o->post, o->sub);
        return;
    }
    memcpy(o->list, r->str, llen);
    o->list[llen] = 0;
    memcpy(o->addr, sp + 1, alen);
    o->addr[alen] = 0;

    if (e->reply) {
        char text[BNC_DIAG_LEN * 4];
        size_t n = e->reply_len < sizeof text - 1 ? e->reply_len : sizeof text - 1;
        memcpy(text, e->reply, n);
        text[n] = 0;
        if (bnc_classify_reply(text, &j->f) < 0) {
            lc_info("bounce post=%" PRIu64 " sub=%" PRIu64 " rcpt=<%s> ignored: not a failure reply", o->post,
                    o->sub, o->addr);
            return;
        }
        j->kind = JOB_FAIL;
        return;
    }
    struct bnc_report *rep = NULL;
    char err[160];
    if (bnc_parse(e->msg, e->msg_len, &rep, err, sizeof err) < 0) {
        lc_warn("bounce post=%" PRIu64 " sub=%" PRIu64 " rcpt=<%s> ignored: %s", o->post, o->sub, o->addr, err);
        bnc_report_free(rep);
        return;
    }
    const struct bnc_rcpt *f = pick(rep, o->addr);
    if (f && f->action == BNC_FAILED) {
        j->f = *f;
        j->kind = JOB_FAIL;
    } else if (f && f->action == BNC_FEEDBACK) {
        j->f = *f;
        j->kind = JOB_COMPLAINT;
    } else {
        const char *what = "no failure reported";
        const char *st = "";
        for (size_t i = 0; i < bnc_report_count(rep); i++)
            if (bnc_report_get(rep, i)->action == BNC_DELAYED) {
                what = "delayed";
                st = bnc_report_get(rep, i)->status;
                break;
            }
        if (bnc_report_kind(rep) == BNC_K_AUTOREPLY)
            what = "auto-reply";
        lc_info("bounce post=%" PRIu64 " sub=%" PRIu64 " rcpt=<%s> %s%s%s kind=%s: no change", o->post, o->sub,
                o->addr, what, *st ? " status=" : "", st, bnc_kind_name(bnc_report_kind(rep)));
    }
    bnc_report_free(rep);
}

/* The keys of the list and post a job touches (both scripts use them); -1 when one is too long. */
struct job_keys {
    char sub[LC_KEY_MAX], active[LC_KEY_MAX], post[LC_KEY_MAX], postbnc[LC_KEY_MAX], list[LC_KEY_MAX];
    char reason[LC_KEY_MAX], domain[LC_KEY_MAX], bpost[LC_KEY_MAX];
};

static int job_keys(const struct outcome *o, struct job_keys *k)
{
    if (lc_key_sub(k->sub, sizeof k->sub, o->list, o->addr) < 0 ||
        lc_key_active(k->active, sizeof k->active, o->list) < 0 || lc_key_post(k->post, sizeof k->post, o->post) < 0 ||
        lc_key_postbnc(k->postbnc, sizeof k->postbnc, o->post) < 0 ||
        lc_key_list(k->list, sizeof k->list, o->list) < 0 ||
        lc_key_bncstat(k->reason, sizeof k->reason, "reason", o->list) < 0 ||
        lc_key_bncstat(k->domain, sizeof k->domain, "domain", o->list) < 0 ||
        lc_key_bncstat(k->bpost, sizeof k->bpost, "post", o->list) < 0) {
        lc_warn("bounce post=%" PRIu64 " sub=%" PRIu64 " dropped: key too long", o->post, o->sub);
        return -1;
    }
    return 0;
}

/* Round 2: queue the job's command group; returns the number of replies it will produce. */
static int job_queue(struct bnc_daemon *d, struct job *j)
{
    char postid[24], subid[24], now[24];
    struct job_keys *k = NULL;
    if (j->kind == JOB_FAIL || j->kind == JOB_COMPLAINT) {
        k = lc_malloc(sizeof *k);
        if (job_keys(&j->o, k) < 0)
            j->kind = JOB_ACK;
    }
    snprintf(postid, sizeof postid, "%" PRIu64, j->o.post);
    snprintf(subid, sizeof subid, "%" PRIu64, j->o.sub);
    j->now = (long long)time(NULL);
    snprintf(now, sizeof now, "%lld", j->now);
    int n;
    if (j->kind == JOB_SKIP) {
        n = 0;
    } else if (j->kind == JOB_FAIL) {
        const struct bnc_rcpt *f = &j->f;
        const char *dead = f->hard && is_dead_reason(f->reason) ? f->reason : "";
        const char *a[] = {"EVALSHA", d->sha_fail, "11", k->sub, k->active, k->post, k->postbnc, k->list, k->reason,
                           k->domain, k->bpost, LC_S_BOUNCES, LC_K_PROBE_PENDING, LC_K_PROBE_SENT, j->id,
                           LC_G_BOUNCES, subid, j->o.addr, f->reason, f->hard ? "1" : "0", dead,
                           f->status[0] ? f->status : "-", now, j->o.from_listd ? "1" : "0", j->o.post ? postid : "",
                           domain_of(j->o.addr), probe_evidence(f) ? "1" : "0", NULL};
        append(d, a);
        n = 1;
    } else if (j->kind == JOB_COMPLAINT) {
        const char *a[] = {"EVALSHA", d->sha_complaint, "9", LC_K_SUPPRESS, k->active, k->sub, k->list, k->post,
                           k->reason, k->domain, k->bpost, LC_S_BOUNCES, j->id, LC_G_BOUNCES, j->o.addr, now,
                           domain_of(j->o.addr), j->o.post ? postid : "", NULL};
        append(d, a);
        n = 1;
    } else {
        const char *a1[] = {"MULTI", NULL};
        const char *a2[] = {"XACK", LC_S_BOUNCES, LC_G_BOUNCES, j->id, NULL};
        const char *a3[] = {"XDEL", LC_S_BOUNCES, j->id, NULL};
        const char *a4[] = {"EXEC", NULL};
        append(d, a1);
        append(d, a2);
        append(d, a3);
        append(d, a4);
        n = 4;
    }
    free(k);
    return n;
}

/* Round 2: read the job's replies (n of them) and log the outcome. Returns STEP_REDIS on a lost connection;
 * an error reply is logged and leaves the entry pending (a NOSCRIPT also reconnects, which loads the scripts
 * again and re-reads the pending entries). */
static int job_reply(struct bnc_daemon *d, struct job *j, int n)
{
    redisReply *last = NULL;
    int bad = 0;
    for (int i = 0; i < n; i++) {
        void *v = NULL;
        if (redisGetReply(d->rc, &v) != REDIS_OK || !v) {
            if (last)
                freeReplyObject(last);
            drop_connection(d, d->rc->errstr[0] ? d->rc->errstr : "connection lost");
            return STEP_REDIS;
        }
        redisReply *r = v;
        if (r->type == REDIS_REPLY_ERROR) {
            lc_warn("bounce entry=%s left pending: redis: %.*s", j->id, (int)r->len, r->str);
            if (!strncmp(r->str, "NOSCRIPT", 8))
                d->reload = 1;
            bad = 1;
        }
        if (last)
            freeReplyObject(last);
        last = r;
    }
    if (bad || !last) {
        if (last)
            freeReplyObject(last);
        return STEP_OK;
    }
    const struct outcome *o = &j->o;
    const struct bnc_rcpt *f = &j->f;
    if (j->kind == JOB_FAIL) {
        if (last->type == REDIS_REPLY_ARRAY && last->elements >= 1 && last->element[0]->type == REDIS_REPLY_INTEGER &&
            last->element[0]->integer == 0) {
            lc_warn("bounce post=%" PRIu64 " sub=%" PRIu64 " rcpt=<%s> dropped: no subscriber hash", o->post, o->sub,
                    o->addr);
        } else if (last->type == REDIS_REPLY_ARRAY && last->elements >= 5 &&
                   last->element[1]->type == REDIS_REPLY_STRING) {
            const char *score = last->element[1]->str;
            int disabled = last->element[2]->type == REDIS_REPLY_INTEGER && last->element[2]->integer == 1;
            int stale = last->element[3]->type == REDIS_REPLY_INTEGER && last->element[3]->integer == 1;
            long long probe = last->element[4]->type == REDIS_REPLY_INTEGER ? last->element[4]->integer : 0;
            const char *status = f->status[0] ? f->status : "-";
            lc_info("bounce post=%" PRIu64 " sub=%" PRIu64 " rcpt=<%s> status=%s reason=%s hard=%d score=%s%s",
                    o->post, o->sub, o->addr, status, f->reason, f->hard, score, stale ? " (stale score reset)" : "");
            if (disabled) {
                lc_info("sub=%" PRIu64 " list=%s rcpt=<%s> disabled score=%s reason=%s", o->sub, o->list, o->addr,
                        score, f->hard && is_dead_reason(f->reason) ? f->reason : "threshold");
                bnc_probe_kick(d->probe);
            }
            if (probe == 1)
                lc_info("probe post=%" PRIu64 " sub=%" PRIu64 " list=%s rcpt=<%s> failed status=%s reason=%s: "
                        "unsubscribed", o->post, o->sub, o->list, o->addr, status, f->reason);
            else if (probe == 2)
                lc_info("probe post=%" PRIu64 " sub=%" PRIu64 " list=%s rcpt=<%s> refused status=%s reason=%s (not "
                        "evidence of a dead mailbox): probe=refused, left disabled", o->post, o->sub, o->list,
                        o->addr, status, f->reason);
        }
    } else if (j->kind == JOB_COMPLAINT) {
        lc_info("complaint post=%" PRIu64 " sub=%" PRIu64 " rcpt=<%s> %s unsubscribed suppressed", o->post, o->sub,
                o->addr, f->diag);
    }
    freeReplyObject(last);
    return STEP_OK;
}

/* Handle an array of [id, fields] entries as one batch; returns the number handled or STEP_REDIS. last_id
 * gets the id of the last entry seen (for the pending cursor). */
static int handle_entries(struct bnc_daemon *d, const redisReply *entries, char *last_id, size_t last_len,
                          volatile sig_atomic_t *stop)
{
    if (!entries || entries->type != REDIS_REPLY_ARRAY || entries->elements == 0 || *stop)
        return 0;
    size_t cap = entries->elements;
    struct job *jobs = lc_calloc(cap, sizeof *jobs);
    int *nrep = lc_calloc(cap, sizeof *nrep);
    size_t nj = 0;
    int rc = STEP_OK;
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *en = entries->element[i];
        if (en->type != REDIS_REPLY_ARRAY || en->elements < 1 || en->element[0]->type != REDIS_REPLY_STRING)
            continue;
        struct job *j = &jobs[nj++];
        j->id = en->element[0]->str;
        if (last_id)
            snprintf(last_id, last_len, "%s", j->id);
        job_check(d, j, en->elements > 1 ? en->element[1] : NULL);
        if (j->kind == JOB_LOOKUP) {
            const char *h[] = {"HGET", LC_K_SUBIDS, j->e.sub, NULL};
            append(d, h);
        }
    }
    /* round 1: who they are, then what happened to them */
    for (size_t i = 0; i < nj; i++) {
        if (jobs[i].kind != JOB_LOOKUP)
            continue;
        void *v = NULL;
        if (redisGetReply(d->rc, &v) != REDIS_OK || !v) {
            drop_connection(d, d->rc->errstr[0] ? d->rc->errstr : "connection lost");
            rc = STEP_REDIS;
            goto out;
        }
        redisReply *r = v;
        if (r->type == REDIS_REPLY_ERROR) {
            lc_warn("bounce entry=%s left pending: redis: HGET: %.*s", jobs[i].id, (int)r->len, r->str);
            jobs[i].kind = JOB_SKIP;
        } else {
            job_classify(&jobs[i], r);
        }
        freeReplyObject(r);
    }
    /* round 2: every entry's effects and acknowledgement, pipelined */
    for (size_t i = 0; i < nj; i++)
        nrep[i] = job_queue(d, &jobs[i]);
    for (size_t i = 0; i < nj; i++)
        if (job_reply(d, &jobs[i], nrep[i]) == STEP_REDIS) {
            rc = STEP_REDIS;
            goto out;
        }
    if (d->reload) {
        d->reload = 0;
        drop_connection(d, "script cache flushed");
        rc = STEP_REDIS;
    }
out:
    free(jobs);
    free(nrep);
    return rc == STEP_REDIS ? STEP_REDIS : (int)nj;
}

/* One XREADGROUP: own pending entries first (cursor), then new ones. */
static int read_once(struct bnc_daemon *d, volatile sig_atomic_t *stop)
{
    const char *pend[] = {"XREADGROUP", "GROUP", LC_G_BOUNCES, d->node, "COUNT", BNC_READ_COUNT,
                          "STREAMS", LC_S_BOUNCES, d->pending_cursor, NULL};
    const char *fresh[] = {"XREADGROUP", "GROUP", LC_G_BOUNCES, d->node, "COUNT", BNC_READ_COUNT,
                           "BLOCK", BNC_BLOCK_MS, "STREAMS", LC_S_BOUNCES, ">", NULL};
    int pending = !d->pending_done;
    redisReply *r = pending ? cmd(d, 9, pend) : cmd(d, 11, fresh);
    if (!r) {
        if (d->rc) /* an error reply (e.g. NOGROUP after a FLUSHALL): make the group again */
            drop_connection(d, "read failed");
        return STEP_REDIS;
    }
    int n = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 && r->element[0]->type == REDIS_REPLY_ARRAY &&
        r->element[0]->elements == 2) {
        n = handle_entries(d, r->element[0]->element[1], pending ? d->pending_cursor : NULL,
                           sizeof d->pending_cursor, stop);
    }
    freeReplyObject(r);
    if (n == STEP_REDIS)
        return STEP_REDIS;
    if (pending && n == 0) {
        d->pending_done = 1;
        lc_debug("own pending entries done");
    }
    return STEP_OK;
}

/* XAUTOCLAIM entries idle too long (their consumer died), a bounded number of rounds. */
static int claim(struct bnc_daemon *d, volatile sig_atomic_t *stop)
{
    char cursor[64] = "0-0";
    for (int round = 0; round < BNC_CLAIM_ROUNDS && !*stop; round++) {
        const char *a[] = {"XAUTOCLAIM", LC_S_BOUNCES, LC_G_BOUNCES, d->node, BNC_CLAIM_IDLE_MS, cursor,
                           "COUNT", BNC_READ_COUNT, NULL};
        redisReply *r = cmd(d, 8, a);
        if (!r)
            return d->rc ? STEP_OK : STEP_REDIS;
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 || r->element[0]->type != REDIS_REPLY_STRING) {
            freeReplyObject(r);
            return STEP_OK;
        }
        snprintf(cursor, sizeof cursor, "%.63s", r->element[0]->str);
        size_t claimed = r->element[1]->type == REDIS_REPLY_ARRAY ? r->element[1]->elements : 0;
        if (claimed)
            lc_info("claimed %zu idle bounce entries", claimed);
        int n = handle_entries(d, r->element[1], NULL, 0, stop);
        freeReplyObject(r);
        if (n == STEP_REDIS)
            return STEP_REDIS;
        if (!strcmp(cursor, "0-0"))
            break;
    }
    return STEP_OK;
}

int bnc_daemon_run(struct bnc_daemon *d, volatile sig_atomic_t *stop)
{
    while (!*stop) {
        if (ensure_connected(d, stop) < 0)
            break;
        if (d->pending_done && now_ms() >= d->next_claim_ms) {
            d->next_claim_ms = now_ms() + BNC_CLAIM_EVERY_MS;
            if (claim(d, stop) == STEP_REDIS)
                continue;
        }
        read_once(d, stop);
        if (d->rc && bnc_probe_tick(d->probe, d->rc, stop) < 0)
            drop_connection(d, "probe round failed");
    }
    return 0;
}
