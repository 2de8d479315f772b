/* snd_batch: delivery batches: parsing a stream entry, routing recipients along their MX list, outcomes.
 *
 * Contract: a batch is one lc:stream:deliveries entry: post (ID), hosts ("NAME=IP[,IP...] ..." in preference
 * order, or "relay=HOST:PORT"), rcpts ("SUBID ADDR" a line). The MX list is flattened into targets (each IP of
 * each name, in order); a recipient starts at the first target and moves to the next one when a connection
 * fails (refused, dropped, 421, timeout) or the target is marked down; past the last one it is deferred. Every
 * recipient gets exactly one outcome (delivered, deferred, bounced), logged as one line; the last outcome hands
 * the batch to snd_queue_commit. An entry that cannot be used (deleted, no post, no recipients, post gone from
 * Redis) is acknowledged without counting anything, with a warning. A recipient line whose address is not a
 * valid mailbox is bounced locally ("550 5.1.3"), so the bounce daemon sees it.
 * sender.relay, when set, replaces every batch's hosts. Host names must be numeric IPs (no DNS here).
 * A batch with an empty hosts field has no route (the expander's DNS lookup failed temporarily): its recipients
 * are deferred with SND_NOROUTE_REPLY (after the fallback relay on a first attempt), and their retries go back
 * to the expander for a fresh lookup (snd_retry.c).
 * A notice batch carries `from`: the envelope sender of every recipient instead of VERP. A retry batch (from the
 * poller, snd_retry.c) carries `attempts`, one "ATTEMPTS FIRST" line per recipient line.
 * sender.fallback_relay, when set, is appended as the last target; only first attempts use it: a recipient whose
 * first attempt is deferred (a 4xx reply, a protocol error, or no MX host left) moves to it before it is
 * scheduled for a retry. A deferral is final for the batch: the recipient goes into lc:retry with its due time
 * (or, past sender.max_lifetime, bounces with a 4.4.7 "expired" reply).
 * Limits: SND_MAX_TARGETS targets and SND_MAX_RCPTS recipients per batch (more are refused with a warning).
 */
#include "snd.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <hiredis/hiredis.h>

#include "lc_log.h"
#include "lc_net.h"

const char *snd_outcome_name(enum snd_outcome o)
{
    switch (o) {
    case SND_O_DELIVERED:
        return "delivered";
    case SND_O_DEFERRED:
        return "deferred";
    case SND_O_BOUNCED:
        return "bounced";
    default:
        return "none";
    }
}

struct snd_batch *snd_batch_find(struct snd *snd, const char *id)
{
    for (struct snd_batch *b = snd->batches; b; b = b->next)
        if (!strcmp(b->id, id))
            return b;
    return NULL;
}

/* field finds a value in an entry's field/value array; NULL if absent. */
static const redisReply *field(const redisReply *f, const char *name)
{
    if (!f || f->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING && k->len == strlen(name) &&
            !memcmp(k->str, name, k->len))
            return v;
    }
    return NULL;
}

static int parse_u64(const char *p, size_t n, uint64_t *v)
{
    uint64_t r = 0;
    if (n == 0 || n > 20)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (r > (UINT64_MAX - d) / 10)
            return -1;
        r = r * 10 + d;
    }
    *v = r;
    return 0;
}

/* add_target appends one target; returns 0 or -1 (bad address or too many). */
static int add_target(struct snd_batch *b, const char *name, size_t nlen, const char *ip, size_t iplen, int port,
                      const char *hostport)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    char tmp[80];
    if (b->ntargets >= SND_MAX_TARGETS || nlen == 0 || nlen > 255)
        return -1;
    if (hostport) {
        if (lc_net_parse(hostport, &ss, &sl) < 0)
            return -1;
    } else {
        if (iplen == 0 || iplen >= sizeof tmp)
            return -1;
        memcpy(tmp, ip, iplen);
        tmp[iplen] = 0;
        if (lc_net_addr(tmp, port, &ss, &sl) < 0)
            return -1;
    }
    struct snd_target *t = &b->targets[b->ntargets++];
    memcpy(t->name, name, nlen);
    t->name[nlen] = 0;
    for (char *c = t->name; *c; c++)
        if (!isgraph((unsigned char)*c))
            *c = '?';
    lc_net_ntop(&ss, t->key, sizeof t->key);
    return 0;
}

static void parse_hosts2(struct snd_batch *b, const char *s, size_t n);

/* parse_hosts fills b->targets from a hosts field (or the configured relay), then the fallback relay. */
static void parse_hosts(struct snd_batch *b, const char *s, size_t n)
{
    struct snd *snd = b->snd;
    b->targets = lc_calloc(SND_MAX_TARGETS, sizeof *b->targets);
    b->hosts = lc_malloc(n + 1);
    memcpy(b->hosts, s, n);
    b->hosts[n] = 0;
    for (char *c = b->hosts; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' '; /* a retry member keeps it on one line */
    b->fb = -1;
    if (*snd->relay) {
        if (add_target(b, "relay", 5, NULL, 0, 0, snd->relay) < 0)
            lc_warn("sender.relay %s: not a numeric HOST:PORT", snd->relay);
    } else {
        parse_hosts2(b, s, n);
    }
    if (*snd->fallback) {
        if (add_target(b, "fallback", 8, NULL, 0, 0, snd->fallback) < 0)
            lc_warn("sender.fallback_relay %s: not a numeric HOST:PORT", snd->fallback);
        else
            b->fb = b->ntargets - 1;
    }
}

static void parse_hosts2(struct snd_batch *b, const char *s, size_t n)
{
    struct snd *snd = b->snd;
    size_t i = 0;
    while (i < n) {
        while (i < n && isspace((unsigned char)s[i]))
            i++;
        size_t st = i;
        while (i < n && !isspace((unsigned char)s[i]))
            i++;
        if (i == st)
            break;
        const char *tok = s + st, *eq = memchr(tok, '=', i - st);
        if (!eq) {
            lc_warn("batch=%s: hosts: no '=' in \"%.*s\"", b->id, (int)(i - st > 200 ? 200 : i - st), tok);
            continue;
        }
        size_t nlen = (size_t)(eq - tok);
        const char *v = eq + 1, *end = s + i;
        if (nlen == 5 && !memcmp(tok, "relay", 5)) {
            char hp[128];
            size_t hl = (size_t)(end - v);
            if (hl >= sizeof hp || (memcpy(hp, v, hl), hp[hl] = 0, add_target(b, tok, nlen, NULL, 0, 0, hp) < 0))
                lc_warn("batch=%s: hosts: bad relay \"%.*s\"", b->id, (int)(hl > 200 ? 200 : hl), v);
            continue;
        }
        while (v < end) {
            const char *comma = memchr(v, ',', (size_t)(end - v));
            const char *ve = comma ? comma : end;
            if (add_target(b, tok, nlen, v, (size_t)(ve - v), snd->mx_port, NULL) < 0)
                lc_warn("batch=%s: hosts: unusable target \"%.*s\"", b->id, (int)(i - st > 200 ? 200 : i - st),
                        tok);
            v = comma ? comma + 1 : end;
        }
    }
}

/* parse_rcpts fills b->rcpts; bad addresses get a local bounce reply (outcome set at start). */
static void parse_rcpts(struct snd_batch *b, const char *s, size_t n)
{
    size_t lines = 1;
    for (size_t i = 0; i < n; i++)
        lines += s[i] == '\n';
    if (lines > SND_MAX_RCPTS)
        lines = SND_MAX_RCPTS;
    b->rcpts = lc_calloc(lines, sizeof *b->rcpts);
    b->pool = lc_malloc(n + lines + 1); /* an address never grows when normalised or sanitised */
    size_t i = 0, pl = 0;
    while (i < n) {
        const char *nl = memchr(s + i, '\n', n - i);
        size_t le = nl ? (size_t)(nl - s) : n;
        const char *l = s + i;
        size_t ln = le - i;
        i = le + 1;
        if (ln && l[ln - 1] == '\r')
            ln--;
        if (ln == 0)
            continue;
        if ((size_t)b->nrcpts >= lines) {
            lc_warn("batch=%s: more than %d recipients: the rest are ignored", b->id, SND_MAX_RCPTS);
            break;
        }
        const char *sp = memchr(l, ' ', ln);
        uint64_t sub;
        if (!sp || parse_u64(l, (size_t)(sp - l), &sub) < 0) {
            lc_warn("batch=%s: bad recipient line \"%.*s\" ignored", b->id, (int)(ln > 200 ? 200 : ln), l);
            continue;
        }
        struct snd_rcpt *r = &b->rcpts[b->nrcpts++];
        r->batch = b;
        r->sub = sub;
        const char *a = sp + 1, *why = NULL;
        size_t an = (size_t)(l + ln - a);
        char norm[LC_ADDR_MAX + 1];
        if (lc_addr_norm(a, an, norm, &why) < 0) {
            snprintf(norm, sizeof norm, "%.*s", (int)(an > 200 ? 200 : an), a);
            for (char *c = norm; *c; c++)
                if (!isgraph((unsigned char)*c) || *c == '<' || *c == '>')
                    *c = '?';
            size_t rl = strlen(why) + 64;
            r->reply = lc_malloc(rl);
            snprintf(r->reply, rl, "550 5.1.3 bad recipient address syntax: %s", why);
        }
        size_t nl2 = strlen(norm);
        if (nl2 > an)
            lc_panic("batch=%s: normalised address longer than its input", b->id);
        memcpy(b->pool + pl, norm, nl2 + 1);
        r->addr = b->pool + pl;
        pl += nl2 + 1;
    }
}

void snd_batch_add(struct snd *snd, const char *id, const redisReply *fields)
{
    if (snd_batch_find(snd, id))
        return; /* already being worked on (a re-read after a reconnect) */
    struct snd_batch *b = lc_calloc(1, sizeof *b);
    b->snd = snd;
    snprintf(b->id, sizeof b->id, "%s", id);
    b->next = snd->batches;
    if (b->next)
        b->next->prev = b;
    snd->batches = b;
    snd->nbatches++;

    const redisReply *post = field(fields, "post"), *hosts = field(fields, "hosts"), *rcpts = field(fields, "rcpts");
    const redisReply *from = field(fields, "from"), *attempts = field(fields, "attempts");
    b->fb = -1;
    b->started = snd_now();
    if (!post || parse_u64(post->str, post->len, &b->post) < 0 || b->post == 0 || !rcpts) {
        lc_warn("batch=%s: entry without post or rcpts: acknowledged and ignored", b->id);
        b->drop = 1;
        b->state = SND_B_COMMIT_WAIT;
        snd_queue_commit(b);
        return;
    }
    parse_rcpts(b, rcpts->str, rcpts->len);
    if (b->nrcpts == 0) {
        lc_warn("post=%llu batch=%s: no recipients: acknowledged and ignored", (unsigned long long)b->post, b->id);
        b->drop = 1;
        b->state = SND_B_COMMIT_WAIT;
        snd_queue_commit(b);
        return;
    }
    parse_hosts(b, hosts ? hosts->str : "", hosts ? hosts->len : 0);
    if (attempts)
        snd_retry_attempts(b, attempts->str, attempts->len);
    if (from) {
        char norm[LC_ADDR_MAX + 1];
        const char *why;
        if (from->len == 0) {
            b->from = lc_strdup("");
        } else if (lc_addr_norm(from->str, from->len, norm, &why) == 0) {
            b->from = lc_strdup(norm);
        } else {
            lc_warn("post=%llu batch=%s: bad from \"%.*s\" (%s): the null sender is used",
                    (unsigned long long)b->post, b->id, (int)(from->len > 200 ? 200 : from->len), from->str, why);
            b->from = lc_strdup("");
        }
    }
    lc_debug("post=%llu batch=%s: %d recipients, %d targets", (unsigned long long)b->post, b->id, b->nrcpts,
             b->ntargets);
    b->state = SND_B_LOADING;
    b->p = snd_post_get(snd, b->post);
    switch (b->p->state) {
    case SND_P_READY:
    case SND_P_MISSING:
        snd_batch_start(b);
        break;
    case SND_P_NEW:
        b->wnext = b->p->waiters;
        b->p->waiters = b;
        snd_queue_load(snd, b->p);
        break;
    case SND_P_LOADING:
        b->wnext = b->p->waiters;
        b->p->waiters = b;
        break;
    }
}

void snd_batch_start(struct snd_batch *b)
{
    if (b->p->state == SND_P_MISSING) {
        lc_warn("post=%llu batch=%s: the post's message or list is not in Redis: acknowledged, not sent",
                (unsigned long long)b->post, b->id);
        b->drop = 1;
        b->state = SND_B_COMMIT_WAIT;
        snd_queue_commit(b);
        return;
    }
    b->state = SND_B_SENDING;
    b->left = b->nrcpts;
    /* hosts "": the expander found no route (temporary DNS failure); deferred at once (or, on a first attempt,
     * tried at the fallback relay), and the retry poller hands them back to the expander */
    int noroute = !*b->snd->relay && b->hosts && !b->hosts[strspn(b->hosts, " \t")];
    for (int i = 0; i < b->nrcpts; i++) {
        struct snd_rcpt *r = &b->rcpts[i];
        const char *at = strrchr(r->addr, '@');
        r->tls = (unsigned char)snd_tls_policy_of(b->snd->tlsctx, at ? at + 1 : "", b->snd->tls);
    }
    snd_sign_batch(b); /* per-recipient signatures start now, ahead of the connections (snd_sign.c) */
    for (int i = 0; i < b->nrcpts; i++) {
        struct snd_rcpt *r = &b->rcpts[i];
        if (b->p->dkim_err && !r->reply) { /* never sent unsigned when the domain has keys (snd_dkim.c) */
            r->hop = -1;
            snd_rcpt_outcome(r, SND_O_DEFERRED, b->p->dkim_err);
        } else if (r->reply) {
            char *why = r->reply;
            r->reply = NULL;
            r->hop = -1; /* no host: a local verdict */
            snd_rcpt_outcome(r, SND_O_BOUNCED, why);
            free(why);
        } else {
            snd_rcpt_route(r, noroute ? SND_NOROUTE_REPLY : "no usable MX host for this batch");
        }
    }
}

void snd_batch_free(struct snd_batch *b)
{
    if (!b)
        return;
    struct snd *snd = b->snd;
    if (b->prev)
        b->prev->next = b->next;
    else
        snd->batches = b->next;
    if (b->next)
        b->next->prev = b->prev;
    snd->nbatches--;
    for (int i = 0; i < b->nrcpts; i++) {
        snd_sign_forget(&b->rcpts[i]);
        free(b->rcpts[i].reply);
    }
    free(b->rcpts);
    free(b->pool);
    free(b->targets);
    free(b->hosts);
    free(b->from);
    snd_post_unref(b->p);
    free(b);
}

void snd_rcpt_host(const struct snd_rcpt *r, char *out, size_t outlen)
{
    const struct snd_batch *b = r->batch;
    if (b->ntargets == 0 || r->hop < 0) {
        snprintf(out, outlen, "none");
        return;
    }
    int i = r->hop < b->ntargets ? r->hop : b->ntargets - 1;
    snprintf(out, outlen, "%s[%s]", b->targets[i].name, b->targets[i].key);
}

int snd_rcpt_ntargets(const struct snd_rcpt *r)
{
    const struct snd_batch *b = r->batch;
    return b->fb >= 0 && r->attempt > 0 ? b->fb : b->ntargets;
}

void snd_rcpt_route(struct snd_rcpt *r, const char *why)
{
    struct snd_batch *b = r->batch;
    int skipped = 0, nt = snd_rcpt_ntargets(r);
    while (r->hop < nt) {
        if (snd_dest_enqueue(b->snd, &b->targets[r->hop], r) == 0)
            return;
        skipped = 1;
        r->hop++;
    }
    char reason[600];
    if (b->ntargets == 0)
        snprintf(reason, sizeof reason, "%s", why);
    else if (skipped)
        snprintf(reason, sizeof reason, "%s; no MX host left (hosts that failed within %d s are skipped)", why,
                 b->snd->mx_backoff_ms / 1000);
    else
        snprintf(reason, sizeof reason, "%s; no MX host left", why);
    snd_rcpt_outcome(r, SND_O_DEFERRED, reason);
}

void snd_rcpt_failover(struct snd_rcpt *r, const char *why)
{
    char host[400];
    snd_rcpt_host(r, host, sizeof host);
    lc_debug("post=%llu rcpt=<%s> host=%s failed (%s): next MX", (unsigned long long)r->batch->post, r->addr, host,
             why);
    r->hop++;
    snd_rcpt_route(r, why);
}

/* defer_value makes the lc:postdefer:ID value of a deferral: "UNIX_TIME attempt N: REPLY" with line breaks and
 * other control octets shown as a space, cut to SND_DEFER_VALUE_MAX octets (never inside a UTF-8 sequence). */
static char *defer_value(int64_t now, int attempt, const char *reply)
{
    char *v = lc_malloc(SND_DEFER_VALUE_MAX + 1);
    int n = snprintf(v, SND_DEFER_VALUE_MAX + 1, "%lld attempt %d: ", (long long)now, attempt);
    size_t k = n < 0 ? 0 : (size_t)n > SND_DEFER_VALUE_MAX ? SND_DEFER_VALUE_MAX : (size_t)n;
    const unsigned char *p = (const unsigned char *)(reply ? reply : "");
    size_t start = k;
    for (; *p && k < SND_DEFER_VALUE_MAX; p++) {
        unsigned char c = *p;
        if (c < 0x20 || c == 0x7f)
            c = ' ';
        if (c == ' ' && k > start && v[k - 1] == ' ')
            continue; /* "451-a\n451 b" reads as one line */
        v[k++] = (char)c;
    }
    if (*p && k > start) { /* cut: drop a partial UTF-8 sequence at the end */
        size_t e = k;
        while (e > start && ((unsigned char)v[e - 1] & 0xC0) == 0x80)
            e--;
        if (e > start && ((unsigned char)v[e - 1] & 0x80)) {
            unsigned char lead = (unsigned char)v[e - 1];
            size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
            if (k - (e - 1) < need)
                k = e - 1;
        }
    }
    while (k > start && v[k - 1] == ' ')
        k--;
    v[k] = '\0';
    return v;
}

void snd_rcpt_outcome(struct snd_rcpt *r, enum snd_outcome o, const char *reply)
{
    struct snd_batch *b = r->batch;
    if (r->outcome != SND_O_NONE || o == SND_O_NONE)
        lc_panic("post=%llu rcpt=<%s>: second outcome %s after %s", (unsigned long long)b->post, r->addr,
                 snd_outcome_name(o), snd_outcome_name(r->outcome));
    char host[400], q[600], exp[200];
    if (o == SND_O_DEFERRED && r->attempt == 0 && b->fb >= 0 && r->hop >= 0 && r->hop < b->fb) {
        snd_rcpt_host(r, host, sizeof host);
        snd_reply_quote(reply, q, sizeof q);
        lc_info("post=%llu rcpt=<%s> deferred host=%s reply=\"%s\": trying the fallback relay %s",
                (unsigned long long)b->post, r->addr, host, q, b->targets[b->fb].key);
        r->hop = b->fb;
        snd_rcpt_route(r, reply);
        return;
    }
    int64_t now = snd_now();
    if (o == SND_O_DEFERRED && snd_retry_plan(b->snd, r, now, exp, sizeof exp) == 1) {
        snd_reply_quote(reply, q, sizeof q);
        lc_info("post=%llu rcpt=<%s> expired after %d attempts, last reply=\"%s\"", (unsigned long long)b->post,
                r->addr, r->attempt + 1, q);
        o = SND_O_BOUNCED;
        reply = exp;
    }
    r->outcome = o;
    snd_sign_forget(r);
    if (o == SND_O_BOUNCED)
        r->reply = lc_strdup(reply);
    else if (o == SND_O_DEFERRED)
        r->reply = defer_value(now, r->attempt + 1, reply);
    snd_rcpt_host(r, host, sizeof host);
    snd_reply_quote(reply, q, sizeof q);
    if (o == SND_O_DEFERRED)
        lc_info("post=%llu rcpt=<%s> deferred host=%s reply=\"%s\" attempt=%d retry_in=%llds",
                (unsigned long long)b->post, r->addr, host, q, r->attempt + 1, (long long)(r->due - now));
    else
        lc_info("post=%llu rcpt=<%s> %s host=%s reply=\"%s\"", (unsigned long long)b->post, r->addr,
                snd_outcome_name(o), host, q);
    if (--b->left == 0) {
        b->state = SND_B_COMMIT_WAIT;
        snd_queue_commit(b);
    }
}
