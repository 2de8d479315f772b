/* lsd_post: what happens to a post at the end of DATA, and moderation.
 *
 * A post (RCPT routed it to list L, lsd_route.c) is decided here with the list as it is now:
 *   1. one MULTI/EXEC read: HMGET lc:list:L policy owner moderators subject_prefix footer dmarc_mitigation,
 *      HEXISTS lc:active:L
 *      for the envelope sender and for the From: address;
 *   2. policy: open: stored; members: the envelope sender or the From: address must be an active subscriber,
 *      else 550 5.7.1 (refused in the dialogue: no backscatter); announce: the envelope sender or From: must be
 *      an owner or moderator; moderated: owners and moderators post directly, everybody else is held;
 *   3. DMARC (issue 7): unless the list's dmarc_mitigation is "none", the From: domain's DMARC policy is looked
 *      up (lsd_dns.c: asynchronous, cached, bounded by LSD_DMARC_WAIT_MS; the job waits with lsd_job_wait); for
 *      p=quarantine or p=reject the post's From: is rewritten to the list ("munge", the default) or the post
 *      is wrapped in a message from the list ("wrap"); otherwise, and on any DNS problem, From: is kept;
 *   4. the message is rewritten once (lsd_rewrite_post: List-* headers, subject prefix, footer, the DMARC
 *      decision) and what is stored is the rewritten copy;
 *   5. stored: INCR lc:seq:post, then MULTI SET lc:msg:ID, HSET lc:post:ID, ZADD lc:posts:L, XADD
 *      lc:stream:posts EXEC, and only then 250;
 *      held: INCRBY lc:seq:post 1+N (the post's id and one notice for each of the N owners and moderators),
 *      then MULTI HSET lc:held:ID {list, from, size, created, msg} EXPIRE 14 days, the N notices EXEC, and 250
 *      "held for moderation". Each notice carries signed addresses L-approve-TOKEN@D and L-reject-TOKEN@D
 *      (lc_token, id = the post id, expiring with the hold).
 * Approving (mail to L-approve-TOKEN) runs one Lua script that moves lc:held:ID into the post keys and the
 * stream and deletes it, so a held post is released at most once; rejecting deletes it. A token whose hold is
 * gone (approved, rejected or expired) or for another list changes nothing: 550 5.7.1 with the reason. A
 * moderated list without owner or moderators cannot hold anything: the post is refused (550 5.7.1).
 */
#include "lsd.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "lc_buf.h"
#include "lc_schema.h"

#define MOD_MAX 20              /* owners and moderators that get a moderation notice */
#define EXCERPT_MAX 4096        /* octets of the held message shown in the notice */

static const char approve_lua[] = LC_LUA_HELD_APPROVE;
static const char reject_lua[] = LC_LUA_HELD_REJECT;

struct pctx {
    struct lsd_input in;
    char policy[32];
    char owner[LC_ADDR_MAX + 1];
    char moderators[1024];
    char prefix[256];
    char footer[4096];
    char mods[MOD_MAX][LC_ADDR_MAX + 1]; /* who gets a moderation notice */
    int nmods;
    int hold;
    uint64_t id, tok_id;
    char *out;               /* the rewritten message */
    size_t outlen;
    char mitigation[16];     /* the list's dmarc_mitigation: munge (default), wrap or none */
    enum lsd_from_mode from_mode;
    char dmarc[240];         /* for the log: what was decided and why */
};

static void pctx_free(void *p)
{
    struct pctx *c = p;
    if (c)
        free(c->out);
    free(c);
}

static void copy_elem(char *dst, size_t n, const redisReply *r)
{
    dst[0] = 0;
    if (r && r->type == REDIS_REPLY_STRING)
        snprintf(dst, n, "%.*s", (int)r->len, r->str);
}

static int is_privileged(const struct pctx *c, const char *a)
{
    return *a && (lsd_addr_in(a, c->owner) || lsd_addr_in(a, c->moderators));
}

/* add_mod adds the addresses of a space or comma separated list to c->mods, without duplicates. */
static void add_mods(struct pctx *c, const char *list)
{
    while (*list && c->nmods < MOD_MAX) {
        list += strspn(list, " ,\t");
        size_t n = strcspn(list, " ,\t");
        if (n == 0)
            break;
        char norm[LC_ADDR_MAX + 1];
        const char *why;
        if (lc_addr_norm(list, n, norm, &why) == 0) {
            int dup = 0;
            for (int i = 0; i < c->nmods; i++)
                dup |= !strcmp(c->mods[i], norm);
            if (!dup)
                snprintf(c->mods[c->nmods++], sizeof c->mods[0], "%s", norm);
        }
        list += n;
    }
}

static void stored(struct lsd_job *j, const redisReply *r)
{
    struct pctx *c = lsd_job_ctx(j);
    char err[200];
    if (!lsd_exec_ok(r, err, sizeof err)) {
        lc_warn("post list=%s from=<%s> not stored: %s", c->in.addr.list, c->in.sender, err);
        lsd_job_end(j, 451, "451 4.3.0 Temporary lookup or storage failure, try again later");
        return;
    }
    if (c->hold) {
        lc_info("post=%" PRIu64 " held list=%s from=<%s> size=%zu moderators=%d%s", c->id, c->in.addr.list,
                c->in.sender, c->outlen, c->nmods, c->dmarc);
        lsd_job_end(j, 250, "250 2.0.0 Ok: held for moderation as post %" PRIu64, c->id);
        return;
    }
    lc_info("post=%" PRIu64 " accepted list=%s from=<%s> size=%zu%s", c->id, c->in.addr.list, c->in.sender, c->outlen,
            c->dmarc);
    lsd_job_end(j, 250, "250 2.0.0 Ok: queued as post %" PRIu64, c->id);
}

/* mod_notice builds the moderation notice for post c->id to rcpt. */
static void mod_notice(struct lsd_job *j, struct pctx *c, uint64_t nid, const char *rcpt, int64_t expires)
{
    struct lsd_server *srv = lsd_job_srv(j);
    char ta[LC_TOKEN_MAX], tr[LC_TOKEN_MAX], aa[LC_ADDR_MAX + 64], ra[LC_ADDR_MAX + 64], subj[400], when[64];
    if (lc_token_make(srv->secret, LC_TOK_APPROVE, c->id, expires, ta, sizeof ta) < 0 ||
        lc_token_make(srv->secret, LC_TOK_REJECT, c->id, expires, tr, sizeof tr) < 0)
        lc_panic("lc_token_make");
    lsd_addr_make(c->in.addr.list, LSD_A_APPROVE, ta, aa, sizeof aa);
    lsd_addr_make(c->in.addr.list, LSD_A_REJECT, tr, ra, sizeof ra);
    time_t e = (time_t)expires;
    struct tm tm;
    gmtime_r(&e, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
    snprintf(subj, sizeof subj, "Post %" PRIu64 " to %s awaits your approval", c->id, c->in.addr.list);
    struct lc_buf *b = lc_buf_new(EXCERPT_MAX + 8192);
    lsd_notice_head(b, c->in.addr.list, rcpt, subj, aa, 0);
    lc_buf_printf(b, "A message to %s is held for moderation.\r\n\r\n  From (envelope): <%s>\r\n"
                     "  From (header):   <%s>\r\n  Subject:         %.200s\r\n  Size:            %zu octets\r\n\r\n"
                     "To approve it, send any message to (or reply to this one):\r\n  %s\r\n\r\n"
                     "To reject it, send any message to:\r\n  %s\r\n\r\n"
                     "Without a decision it is discarded at %s.\r\n\r\n--- the beginning of the held message ---\r\n",
                  c->in.addr.list, c->in.sender, c->in.mi.from, c->in.mi.subject, c->outlen, aa, ra, when);
    size_t n = c->outlen < EXCERPT_MAX ? c->outlen : EXCERPT_MAX;
    while (n > 0 && n < c->outlen && c->out[n - 1] != '\n')
        n--;
    lc_buf_append(b, c->out, n);
    if (n && c->out[n - 1] != '\n')
        lc_buf_puts(b, "\r\n");
    lsd_notice_queue(j, nid, c->in.addr.list, rcpt, 0, lc_buf_data(b), lc_buf_len(b));
    lc_buf_free(b);
}

static void got_id(struct lsd_job *j, const redisReply *r)
{
    struct pctx *c = lsd_job_ctx(j);
    if (r->type != REDIS_REPLY_INTEGER || r->integer <= c->nmods) {
        lsd_job_end(j, 451, "451 4.3.0 Temporary lookup or storage failure, try again later");
        return;
    }
    uint64_t last = (uint64_t)r->integer;
    c->id = last - (uint64_t)(c->hold ? c->nmods : 0);
    char ids[24], size[24], created[24], k1[LC_KEY_MAX], k2[LC_KEY_MAX], k3[LC_KEY_MAX];
    long long now = (long long)time(NULL);
    snprintf(ids, sizeof ids, "%" PRIu64, c->id);
    snprintf(size, sizeof size, "%zu", c->outlen);
    snprintf(created, sizeof created, "%lld", now);
    const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"};
    lsd_job_cmd(j, 1, multi, NULL);
    if (c->hold) {
        char ttl[24];
        snprintf(ttl, sizeof ttl, "%d", LSD_HOLD_TTL);
        lc_key_held(k1, sizeof k1, c->id);
        const char *hset[] = {"HSET", k1, "list", c->in.addr.list, "from", c->in.sender, "size", size,
                              "created", created, "msg", c->out};
        size_t hl[12];
        for (int i = 0; i < 11; i++)
            hl[i] = strlen(hset[i]);
        hl[11] = c->outlen;
        lsd_job_cmd(j, 12, hset, hl);
        const char *exp[] = {"EXPIRE", k1, ttl};
        lsd_job_cmd(j, 3, exp, NULL);
        char hid[24];
        snprintf(hid, sizeof hid, "%" PRIu64, c->id);
        const char *zadd[] = {"ZADD", LC_K_HELD_INDEX, hid, hid}; /* the moderation queue's index (web UI) */
        lsd_job_cmd(j, 4, zadd, NULL);
        for (int i = 0; i < c->nmods; i++)
            mod_notice(j, c, c->id + 1 + (uint64_t)i, c->mods[i], now + LSD_HOLD_TTL);
    } else {
        lc_key_msg(k1, sizeof k1, c->id);
        lc_key_post(k2, sizeof k2, c->id);
        lc_key_posts(k3, sizeof k3, c->in.addr.list);
        const char *set[] = {"SET", k1, c->out};
        size_t sl[] = {3, strlen(k1), c->outlen};
        lsd_job_cmd(j, 3, set, sl);
        const char *hset[] = {"HSET", k2, "id", ids, "list", c->in.addr.list, "from", c->in.sender, "size", size,
                              "created", created, "state", LC_PS_QUEUED, "recipients", "0", "delivered", "0",
                              "deferred", "0", "bounced", "0"};
        lsd_job_cmd(j, (int)(sizeof hset / sizeof hset[0]), hset, NULL);
        const char *zadd[] = {"ZADD", k3, created, ids};
        lsd_job_cmd(j, 4, zadd, NULL);
        const char *xadd[] = {"XADD", LC_S_POSTS, "*", "post", ids};
        lsd_job_cmd(j, 5, xadd, NULL);
    }
    lsd_job_cmd(j, 1, exec, NULL);
    lsd_job_then(j, stored);
}

static void rewrite_store(struct lsd_job *j);
static void dmarc_apply(struct pctx *c, enum lsd_dmarc pol, const char *why);
static void dmarc_answer(void *arg, enum lsd_dmarc pol, const char *why);

static void decide(struct lsd_job *j, const redisReply *r)
{
    struct pctx *c = lsd_job_ctx(j);
    struct lsd_server *srv = lsd_job_srv(j);
    const char *L = c->in.addr.list;
    char err[200];
    if (!lsd_exec_ok(r, err, sizeof err) || r->elements != 3 || r->element[0]->type != REDIS_REPLY_ARRAY ||
        r->element[0]->elements != 6) {
        lc_warn("post list=%s: list lookup failed: %s", L, err);
        lsd_job_end(j, 451, "451 4.3.0 Temporary lookup or storage failure, try again later");
        return;
    }
    const redisReply *h = r->element[0];
    copy_elem(c->policy, sizeof c->policy, h->element[0]);
    copy_elem(c->owner, sizeof c->owner, h->element[1]);
    copy_elem(c->moderators, sizeof c->moderators, h->element[2]);
    copy_elem(c->prefix, sizeof c->prefix, h->element[3]);
    copy_elem(c->footer, sizeof c->footer, h->element[4]);
    copy_elem(c->mitigation, sizeof c->mitigation, h->element[5]);
    int env_member = r->element[1]->type == REDIS_REPLY_INTEGER && r->element[1]->integer == 1;
    int from_member = r->element[2]->type == REDIS_REPLY_INTEGER && r->element[2]->integer == 1;
    int priv = is_privileged(c, c->in.sender) || is_privileged(c, c->in.mi.from);
    if (!*c->policy) {
        lsd_job_end(j, 550, "550 5.1.1 <%s>: no such list", L);
        return;
    }
    if (!strcmp(c->policy, "members")) {
        if (!env_member && !from_member && !priv) {
            lsd_job_end(j, 550, "550 5.7.1 <%s>: only members may post (neither <%s> nor the From: address <%s> "
                                "is a subscriber)", L, c->in.sender, c->in.mi.from);
            return;
        }
    } else if (!strcmp(c->policy, "announce")) {
        if (!priv) {
            lsd_job_end(j, 550, "550 5.7.1 <%s>: only the list's owners and moderators may post to this announce "
                                "list", L);
            return;
        }
    } else if (!strcmp(c->policy, "moderated")) {
        if (!priv) {
            c->hold = 1;
            add_mods(c, c->owner);
            add_mods(c, c->moderators);
            if (c->nmods == 0) {
                lc_warn("list=%s is moderated but has no owner or moderator: refusing a post", L);
                lsd_job_end(j, 550, "550 5.7.1 <%s>: this moderated list has no moderator", L);
                return;
            }
        }
    } else if (strcmp(c->policy, "open") != 0) {
        lsd_job_end(j, 550, "550 5.7.1 <%s>: list does not accept posts", L);
        return;
    }
    /* DMARC: the From: domain's policy decides whether the list's mitigation applies */
    enum lsd_from_mode mode = LSD_FROM_MUNGE;
    if (!strcmp(c->mitigation, "none"))
        mode = LSD_FROM_KEEP;
    else if (!strcmp(c->mitigation, "wrap"))
        mode = LSD_FROM_WRAP;
    else if (*c->mitigation && strcmp(c->mitigation, "munge") != 0)
        lc_warn("list=%s has unknown dmarc_mitigation \"%s\": using munge", L, c->mitigation);
    if (mode == LSD_FROM_KEEP || !*c->in.mi.from || !srv->dns) {
        rewrite_store(j);
        return;
    }
    c->from_mode = mode;
    enum lsd_dmarc pol;
    char why[200];
    if (lsd_dmarc_lookup(srv->dns, lc_addr_domain(c->in.mi.from), dmarc_answer, j, &pol, why, sizeof why) ==
        LSD_PENDING) {
        lsd_job_wait(j);
        return;
    }
    dmarc_apply(c, pol, why);
    rewrite_store(j);
}

/* dmarc_apply keeps the list's mitigation mode only when the policy is quarantine or reject. */
static void dmarc_apply(struct pctx *c, enum lsd_dmarc pol, const char *why)
{
    if (pol == LSD_DMARC_NONE) {
        c->from_mode = LSD_FROM_KEEP;
        return;
    }
    snprintf(c->dmarc, sizeof c->dmarc, " dmarc=%s (%.180s)", c->from_mode == LSD_FROM_WRAP ? "wrapped" : "munged",
             why);
}

static void dmarc_resume(struct lsd_job *j, const redisReply *r)
{
    rewrite_store(j);
}

/* dmarc_answer: the lookup's answer; the job goes on (or is freed if the session gave up meanwhile). */
static void dmarc_answer(void *arg, enum lsd_dmarc pol, const char *why)
{
    struct lsd_job *j = arg;
    struct pctx *c = lsd_job_ctx(j);
    dmarc_apply(c, pol, why);
    lsd_job_resume(j, dmarc_resume);
}

/* rewrite_store rewrites the post once (lsd_rewrite_post, with the DMARC decision) and reserves its id. */
static void rewrite_store(struct lsd_job *j)
{
    struct pctx *c = lsd_job_ctx(j);
    struct lsd_server *srv = lsd_job_srv(j);
    const char *L = c->in.addr.list;
    struct lsd_rewrite rw = {L, c->prefix, c->footer, c->from_mode};
    c->out = lsd_rewrite_post(c->in.msg, c->in.len, &rw,
                              (size_t)srv->max_size + 3 * LSD_HDR_MAX + sizeof c->footer, &c->outlen);
    if (!c->out) {
        lsd_job_end(j, 552, "552 5.3.4 Error: message too big after adding the list's headers and footer");
        return;
    }
    char n[24];
    snprintf(n, sizeof n, "%d", 1 + (c->hold ? c->nmods : 0));
    const char *incr[] = {"INCRBY", LC_K_SEQ_POST, n};
    lsd_job_cmd(j, 3, incr, NULL);
    lsd_job_then(j, got_id);
}

int lsd_post_start(struct lsd_server *srv, const struct lsd_input *in, lsd_job_fn *done, void *arg,
                   struct lsd_job **jobp, struct lsd_result *res)
{
    struct pctx *c = lc_calloc(1, sizeof *c);
    c->in = *in;
    struct lsd_job *j = lsd_job_new(srv, in, done, arg, c, pctx_free);
    char kl[LC_KEY_MAX], ka[LC_KEY_MAX];
    if (lc_key_list(kl, sizeof kl, in->addr.list) < 0 || lc_key_active(ka, sizeof ka, in->addr.list) < 0)
        lc_panic("key too long for %s", in->addr.list);
    const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"};
    const char *hmget[] = {"HMGET", kl, "policy", "owner", "moderators", "subject_prefix", "footer",
                           "dmarc_mitigation"};
    const char *h1[] = {"HEXISTS", ka, *in->sender ? in->sender : "-"};
    const char *h2[] = {"HEXISTS", ka, *in->mi.from ? in->mi.from : "-"};
    lsd_job_cmd(j, 1, multi, NULL);
    lsd_job_cmd(j, 8, hmget, NULL);
    lsd_job_cmd(j, 3, h1, NULL);
    lsd_job_cmd(j, 3, h2, NULL);
    lsd_job_cmd(j, 1, exec, NULL);
    lsd_job_then(j, decide);
    return lsd_job_start(j, jobp, res);
}

/* ---------------------------------------------------------------- approve / reject */

struct mctx {
    struct lsd_input in;
    uint64_t id;
};

static void moderated(struct lsd_job *j, const redisReply *r)
{
    struct mctx *c = lsd_job_ctx(j);
    int approve = c->in.addr.kind == LSD_A_APPROVE;
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -2;
    if (v == 1) {
        lc_info("post=%" PRIu64 " %s list=%s by=<%s>", c->id, approve ? "approved" : "rejected", c->in.addr.list,
                c->in.sender);
        lsd_job_end(j, 250, "250 2.0.0 Ok: post %" PRIu64 " %s", c->id,
                    approve ? "approved and queued" : "rejected and discarded");
    } else if (v == 0) {
        lsd_job_end(j, 550, "550 5.7.1 <%s>: post %" PRIu64 " is no longer held (already approved, rejected or "
                            "expired): nothing changed", c->in.rcpt, c->id);
    } else {
        lsd_job_end(j, 550, "550 5.7.1 <%s>: this token is for a post of another list: nothing changed", c->in.rcpt);
    }
}

int lsd_mod_start(struct lsd_server *srv, const struct lsd_input *in, lsd_job_fn *done, void *arg,
                  struct lsd_job **jobp, struct lsd_result *res)
{
    int action;
    uint64_t id;
    int64_t expires;
    int want = in->addr.kind == LSD_A_APPROVE ? LC_TOK_APPROVE : LC_TOK_REJECT;
    enum lc_tok_result tr = lc_token_check(srv->secret, in->addr.token, strlen(in->addr.token), (int64_t)time(NULL),
                                           &action, &id, &expires);
    if (tr != LC_TOK_OK || action != want) {
        memset(res, 0, sizeof *res);
        res->code = 550;
        snprintf(res->text, sizeof res->text, "550 5.7.1 <%s>: moderation token refused (%s): nothing changed", in->rcpt,
                 tr != LC_TOK_OK ? lc_token_why(tr) : "for another action");
        *jobp = NULL;
        return LSD_DONE;
    }
    struct mctx *c = lc_calloc(1, sizeof *c);
    c->in = *in;
    c->id = id;
    struct lsd_job *j = lsd_job_new(srv, in, done, arg, c, free);
    char kh[LC_KEY_MAX], km[LC_KEY_MAX], kp[LC_KEY_MAX], kps[LC_KEY_MAX], ids[24], now[24];
    lc_key_held(kh, sizeof kh, id);
    lc_key_msg(km, sizeof km, id);
    lc_key_post(kp, sizeof kp, id);
    if (lc_key_posts(kps, sizeof kps, in->addr.list) < 0)
        lc_panic("key too long for %s", in->addr.list);
    snprintf(ids, sizeof ids, "%" PRIu64, id);
    snprintf(now, sizeof now, "%lld", (long long)time(NULL));
    if (want == LC_TOK_APPROVE) {
        const char *ev[] = {"EVAL", approve_lua, "6", kh, km, kp, kps, LC_S_POSTS, LC_K_HELD_INDEX, in->addr.list,
                            ids, now, LC_PS_QUEUED};
        lsd_job_cmd(j, 13, ev, NULL);
    } else {
        const char *ev[] = {"EVAL", reject_lua, "2", kh, LC_K_HELD_INDEX, in->addr.list, ids};
        lsd_job_cmd(j, 7, ev, NULL);
    }
    lsd_job_then(j, moderated);
    return lsd_job_start(j, jobp, res);
}
