/* lsd_cmds: email commands of a list L@D, run at the end of DATA (RCPT accepted them: lsd_route.c).
 *
 *   L-subscribe, or L-request with "subscribe": double opt-in for the envelope sender A. One Lua script creates
 *     the subscriber with status unconfirmed (the key shapes of `listcast sub add`: id from lc:seq:sub,
 *     lc:sub:L:A, lc:subids, lc:members:L; not lc:active:L) or keeps an existing one (an unsubscribed or
 *     disabled one becomes unconfirmed); then a confirmation notice to A whose Reply-To is L-confirm-TOKEN@D
 *     and which holds the link http.public_url/confirm/TOKEN, TOKEN = lc_token(LC_TOK_SUBSCRIBE, subscriber id,
 *     now + confirm.lifetime). An active subscriber gets "you are subscribed already" instead (the SMTP reply
 *     is the same, so the dialogue does not tell who is subscribed).
 *   L-unsubscribe, or L-request with "unsubscribe": a confirmation notice with LC_TOK_UNSUBSCRIBE, or "you are
 *     not subscribed".
 *   L-help, or L-request with "help": the list's commands.
 *   L-request: the first word of the Subject, else of the first non-empty body line (up to 5 lines, quoted
 *     lines skipped): subscribe/join, unsubscribe/leave, help; anything else: 550 5.5.2, nothing sent.
 *   L-confirm-TOKEN (mail anything, e.g. a reply): the token's subscriber must belong to L (lc:subids), and the
 *     token is used once: SET NX lc:usedtok:TOKEN EXAT expiry (shared with the web link). Then status active +
 *     lc:active:L (subscribe), or unsubscribed and out of lc:active:L (unsubscribe). A forged or expired token
 *     was refused at RCPT; a reused one, or one for another list, gets 550 5.7.1 here: the reason goes into the
 *     SMTP reply, nothing is mailed to a possibly forged address.
 *   L-owner: forwarded to the list's owner as a notice (the message as received, with X-Loop: L@D on top so
 *     that it cannot come back), envelope sender <>.
 * Amplification: at most one notice of each kind (sub, unsub, help) per address and list an hour
 * (lc:rl:KIND:L:A, SET EX 3600 in the transaction that queues the notice); more: 550 5.7.1 saying so.
 */
#include "lsd.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "lc_buf.h"
#include "lc_schema.h"

#define NOTICE_MAX 16384

/* KEYS: sub hash, subids, sub counter, members, rate key. ARGV: addr, list, now, unconfirmed, active.
 * Returns {-1} when rate limited, else {id, previous status ("new" for a new subscriber)}. */
static const char sub_lua[] =
    "if redis.call('EXISTS', KEYS[5]) == 1 then return {-1, ''} end "
    "local h = redis.call('HMGET', KEYS[1], 'id', 'status') "
    "if h[1] then "
    "  if h[2] ~= ARGV[5] then redis.call('HSET', KEYS[1], 'status', ARGV[4]) end "
    "  redis.call('ZADD', KEYS[4], 0, ARGV[1]) "
    "  return {tonumber(h[1]), h[2] or ''} end "
    "local id = redis.call('INCR', KEYS[3]) "
    "redis.call('HSET', KEYS[1], 'id', id, 'address', ARGV[1], 'list', ARGV[2], 'status', ARGV[4], "
    "'bounce_score', '0', 'bounces', '0', 'created', ARGV[3]) "
    "redis.call('HSET', KEYS[2], id, ARGV[2] .. ' ' .. ARGV[1]) "
    "redis.call('ZADD', KEYS[4], 0, ARGV[1]) "
    "return {id, 'new'}";

/* KEYS: used token, sub hash, active, members. ARGV: action (s/u), id, addr, expiry (0: none), active,
 * unsubscribed. Returns 1 done, 0 token used before, -1 the subscriber does not match. */
static const char confirm_lua[] =
    "local id = redis.call('HGET', KEYS[2], 'id') "
    "if not id or id ~= ARGV[2] then return -1 end "
    "local ok "
    "if ARGV[4] ~= '0' then ok = redis.call('SET', KEYS[1], '1', 'NX', 'EXAT', ARGV[4]) "
    "else ok = redis.call('SET', KEYS[1], '1', 'NX') end "
    "if not ok then return 0 end "
    "if ARGV[1] == 's' then "
    "  redis.call('HSET', KEYS[2], 'status', ARGV[5]) redis.call('HSET', KEYS[3], ARGV[3], ARGV[2]) "
    "  redis.call('ZADD', KEYS[4], 0, ARGV[3]) "
    "else redis.call('HSET', KEYS[2], 'status', ARGV[6]) redis.call('HDEL', KEYS[3], ARGV[3]) end "
    "return 1";

struct cctx {
    struct lsd_input in;
    enum lsd_addr_kind what;     /* SUBSCRIBE, UNSUBSCRIBE, HELP, OWNER, CONFIRM */
    const char *rate;            /* "sub", "unsub", "help" */
    char owner[LC_ADDR_MAX + 1];
    uint64_t sub;                /* subscriber id (0: none) */
    char status[32];             /* previous status */
    int action;                  /* CONFIRM: LC_TOK_SUBSCRIBE or LC_TOK_UNSUBSCRIBE */
    int64_t expires;
    struct lc_buf *msg;          /* the notice */
};

static void cctx_free(void *p)
{
    struct cctx *c = p;
    if (c)
        lc_buf_free(c->msg);
    free(c);
}

static void tempfail(struct lsd_job *j)
{
    lsd_job_end(j, 451, "451 4.3.0 Temporary lookup or storage failure, try again later");
}

/* ---------------------------------------------------------------- notices */

static void help_text(struct lc_buf *b, const char *list)
{
    char sub[LC_ADDR_MAX + 32], unsub[LC_ADDR_MAX + 32], help[LC_ADDR_MAX + 32], req[LC_ADDR_MAX + 32],
        owner[LC_ADDR_MAX + 32];
    lsd_addr_make(list, LSD_A_SUBSCRIBE, NULL, sub, sizeof sub);
    lsd_addr_make(list, LSD_A_UNSUBSCRIBE, NULL, unsub, sizeof unsub);
    lsd_addr_make(list, LSD_A_HELP, NULL, help, sizeof help);
    lsd_addr_make(list, LSD_A_REQUEST, NULL, req, sizeof req);
    lsd_addr_make(list, LSD_A_OWNER, NULL, owner, sizeof owner);
    lc_buf_printf(b, "Commands of the list %s (send any message to the address):\r\n\r\n"
                     "  subscribe:    %s\r\n  unsubscribe:  %s\r\n  this help:    %s\r\n"
                     "  the owner:    %s\r\n\r\n"
                     "Or send \"subscribe\", \"unsubscribe\" or \"help\" as the subject to %s.\r\n"
                     "Subscribing and unsubscribing ask for a confirmation first.\r\nTo post, write to %s.\r\n",
                  list, sub, unsub, help, owner, req, list);
}

/* build_notice writes the notice for c (subscribe/unsubscribe/help) into c->msg. */
static void build_notice(struct lsd_job *j, struct cctx *c)
{
    struct lsd_server *srv = lsd_job_srv(j);
    const char *L = c->in.addr.list, *A = c->in.sender;
    char subj[LC_ADDR_MAX + 100], tok[LC_TOKEN_MAX], confirm[LC_ADDR_MAX + 64], when[64];
    c->msg = lc_buf_new(NOTICE_MAX);
    int confirmable = (c->what == LSD_A_SUBSCRIBE && strcmp(c->status, LC_ST_ACTIVE) != 0) ||
                      (c->what == LSD_A_UNSUBSCRIBE && c->sub && strcmp(c->status, LC_ST_UNSUBSCRIBED) != 0);
    if (c->what == LSD_A_HELP) {
        snprintf(subj, sizeof subj, "Help for the list %s", L);
        lsd_notice_head(c->msg, L, A, subj, NULL, 1);
        help_text(c->msg, L);
        return;
    }
    int sub = c->what == LSD_A_SUBSCRIBE;
    if (!confirmable) {
        snprintf(subj, sizeof subj, "%s %s", sub ? "You are subscribed to" : "You are not subscribed to", L);
        lsd_notice_head(c->msg, L, A, subj, NULL, 1);
        lc_buf_printf(c->msg, "Someone (probably you) asked to %s <%s> %s the list %s.\r\n%s\r\n\r\n",
                      sub ? "subscribe" : "unsubscribe", A, sub ? "to" : "from", L,
                      sub ? "That address is subscribed already: nothing changed."
                          : "That address is not subscribed: nothing changed.");
        help_text(c->msg, L);
        return;
    }
    int64_t expires = (int64_t)time(NULL) + srv->confirm_lifetime;
    if (lc_token_make(srv->secret, sub ? LC_TOK_SUBSCRIBE : LC_TOK_UNSUBSCRIBE, c->sub, expires, tok, sizeof tok) < 0)
        lc_panic("lc_token_make");
    lsd_addr_make(L, LSD_A_CONFIRM, tok, confirm, sizeof confirm);
    time_t e = (time_t)expires;
    struct tm tm;
    gmtime_r(&e, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
    snprintf(subj, sizeof subj, "Confirm: %s %s %s", sub ? "subscribe to" : "unsubscribe from", L, tok);
    lsd_notice_head(c->msg, L, A, subj, confirm, 1);
    lc_buf_printf(c->msg, "Someone (probably you) asked to %s <%s> %s the list %s.\r\n\r\n"
                          "To confirm, reply to this message (the reply goes to %s),\r\n"
                          "or open this link:\r\n\r\n  %s/confirm/%s\r\n\r\n"
                          "The request expires at %s. If you did not ask for it, ignore this message:\r\n"
                          "nothing changes without a confirmation.\r\n",
                  sub ? "subscribe" : "unsubscribe", A, sub ? "to" : "from", L, confirm, srv->public_url, tok, when);
}

static void notice_stored(struct lsd_job *j, const redisReply *r)
{
    struct cctx *c = lsd_job_ctx(j);
    char err[200];
    if (!lsd_exec_ok(r, err, sizeof err)) {
        lc_warn("list=%s notice to <%s> not stored: %s", c->in.addr.list, c->in.sender, err);
        tempfail(j);
        return;
    }
    switch (c->what) {
    case LSD_A_SUBSCRIBE:
    case LSD_A_UNSUBSCRIBE:
        lc_info("list=%s sub=%" PRIu64 " %s request from=<%s> status=%s", c->in.addr.list, c->sub,
                c->what == LSD_A_SUBSCRIBE ? "subscribe" : "unsubscribe", c->in.sender, c->status);
        lsd_job_end(j, 250, "250 2.0.0 Ok: request received, a message about it is on its way to <%s>", c->in.sender);
        break;
    case LSD_A_HELP:
        lsd_job_end(j, 250, "250 2.0.0 Ok: help is on its way to <%s>", c->in.sender);
        break;
    default:
        lc_info("list=%s message from=<%s> forwarded to the owner <%s>", c->in.addr.list, c->in.sender, c->owner);
        lsd_job_end(j, 250, "250 2.0.0 Ok: forwarded to the list owner");
        break;
    }
}

/* got_notice_id stores the notice (and the rate limit mark) in one MULTI/EXEC. */
static void got_notice_id(struct lsd_job *j, const redisReply *r)
{
    struct cctx *c = lsd_job_ctx(j);
    if (r->type != REDIS_REPLY_INTEGER || r->integer <= 0) {
        tempfail(j);
        return;
    }
    const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"};
    lsd_job_cmd(j, 1, multi, NULL);
    if (c->rate) {
        char kr[LC_KEY_MAX], ttl[24];
        snprintf(ttl, sizeof ttl, "%d", LSD_RATE_TTL);
        if (lc_key_ratelimit(kr, sizeof kr, c->rate, c->in.addr.list, c->in.sender) < 0)
            lc_panic("key too long");
        const char *set[] = {"SET", kr, "1", "EX", ttl};
        lsd_job_cmd(j, 5, set, NULL);
    }
    const char *to = c->what == LSD_A_OWNER ? c->owner : c->in.sender;
    lsd_notice_queue(j, (uint64_t)r->integer, c->in.addr.list, to, c->what == LSD_A_OWNER ? 0 : c->sub,
                     lc_buf_data(c->msg), lc_buf_len(c->msg));
    lsd_job_cmd(j, 1, exec, NULL);
    lsd_job_then(j, notice_stored);
}

static void send_notice(struct lsd_job *j)
{
    const char *incr[] = {"INCR", LC_K_SEQ_POST};
    lsd_job_cmd(j, 2, incr, NULL);
    lsd_job_then(j, got_notice_id);
}

static void rate_limited(struct lsd_job *j, struct cctx *c)
{
    lc_info("list=%s %s request from=<%s> rate limited", c->in.addr.list, c->rate, c->in.sender);
    lsd_job_end(j, 550, "550 5.7.1 <%s>: a message about this was sent to <%s> less than an hour ago; "
                        "please use that one (nothing sent now)", c->in.rcpt, c->in.sender);
}

/* ---------------------------------------------------------------- subscribe, unsubscribe, help */

static void got_sub(struct lsd_job *j, const redisReply *r)
{
    struct cctx *c = lsd_job_ctx(j);
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_INTEGER) {
        tempfail(j);
        return;
    }
    if (r->element[0]->integer < 0) {
        rate_limited(j, c);
        return;
    }
    c->sub = (uint64_t)r->element[0]->integer;
    if (r->element[1]->type == REDIS_REPLY_STRING)
        snprintf(c->status, sizeof c->status, "%.*s", (int)r->element[1]->len, r->element[1]->str);
    build_notice(j, c);
    send_notice(j);
}

/* got_unsub handles MULTI EXISTS rate, HMGET sub id status EXEC. */
static void got_unsub(struct lsd_job *j, const redisReply *r)
{
    struct cctx *c = lsd_job_ctx(j);
    char err[200];
    if (!lsd_exec_ok(r, err, sizeof err) || r->elements != 2 || r->element[1]->type != REDIS_REPLY_ARRAY ||
        r->element[1]->elements != 2) {
        tempfail(j);
        return;
    }
    if (r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer == 1) {
        rate_limited(j, c);
        return;
    }
    const redisReply *h = r->element[1];
    if (h->element[0]->type == REDIS_REPLY_STRING)
        c->sub = strtoull(h->element[0]->str, NULL, 10);
    if (h->element[1]->type == REDIS_REPLY_STRING)
        snprintf(c->status, sizeof c->status, "%.*s", (int)h->element[1]->len, h->element[1]->str);
    build_notice(j, c);
    send_notice(j);
}

static void got_help_rate(struct lsd_job *j, const redisReply *r)
{
    struct cctx *c = lsd_job_ctx(j);
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
        rate_limited(j, c);
        return;
    }
    build_notice(j, c);
    send_notice(j);
}

static void start_command(struct lsd_job *j, struct cctx *c)
{
    const char *L = c->in.addr.list, *A = c->in.sender;
    char ks[LC_KEY_MAX], kr[LC_KEY_MAX], km[LC_KEY_MAX], now[24];
    c->rate = c->what == LSD_A_SUBSCRIBE ? "sub" : c->what == LSD_A_UNSUBSCRIBE ? "unsub" : "help";
    if (lc_key_sub(ks, sizeof ks, L, A) < 0 || lc_key_ratelimit(kr, sizeof kr, c->rate, L, A) < 0 ||
        lc_key_members(km, sizeof km, L) < 0)
        lc_panic("key too long for %s", L);
    if (c->what == LSD_A_SUBSCRIBE) {
        snprintf(now, sizeof now, "%lld", (long long)time(NULL));
        const char *ev[] = {"EVAL", sub_lua, "5", ks, LC_K_SUBIDS, LC_K_SEQ_SUB, km, kr, A, L, now,
                            LC_ST_UNCONFIRMED, LC_ST_ACTIVE};
        lsd_job_cmd(j, 13, ev, NULL);
        lsd_job_then(j, got_sub);
    } else if (c->what == LSD_A_UNSUBSCRIBE) {
        const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"}, *ex[] = {"EXISTS", kr},
                   *hm[] = {"HMGET", ks, "id", "status"};
        lsd_job_cmd(j, 1, multi, NULL);
        lsd_job_cmd(j, 2, ex, NULL);
        lsd_job_cmd(j, 4, hm, NULL);
        lsd_job_cmd(j, 1, exec, NULL);
        lsd_job_then(j, got_unsub);
    } else {
        const char *ex[] = {"EXISTS", kr};
        lsd_job_cmd(j, 2, ex, NULL);
        lsd_job_then(j, got_help_rate);
    }
}

/* request_command finds the command of a mail to L-request: 0 and *kind, or -1. */
static int request_command(const struct lsd_input *in, enum lsd_addr_kind *kind)
{
    static const struct {
        const char *word;
        enum lsd_addr_kind kind;
    } words[] = {{"subscribe", LSD_A_SUBSCRIBE}, {"join", LSD_A_SUBSCRIBE},  {"unsubscribe", LSD_A_UNSUBSCRIBE},
                 {"leave", LSD_A_UNSUBSCRIBE},   {"help", LSD_A_HELP}};
    char line[256];
    const char *p = in->msg + in->mi.body, *end = in->msg + in->len;
    for (int n = -1; n < 5; n++) {
        if (n < 0) {
            snprintf(line, sizeof line, "%s", in->mi.subject);
        } else {
            while (p < end && (*p == '\r' || *p == '\n'))
                p++;
            if (p >= end)
                break;
            const char *lf = memchr(p, '\n', (size_t)(end - p));
            size_t ll = lf ? (size_t)(lf - p) : (size_t)(end - p);
            snprintf(line, sizeof line, "%.*s", (int)(ll < sizeof line - 1 ? ll : sizeof line - 1), p);
            p += ll;
            if (line[0] == '>')
                continue;
        }
        char *w = line + strspn(line, " \t");
        if (!strncasecmp(w, "re:", 3))
            w += 3 + strspn(w + 3, " \t");
        size_t wl = strcspn(w, " \t\r\n");
        for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
            if (wl == strlen(words[i].word) && !strncasecmp(w, words[i].word, wl)) {
                *kind = words[i].kind;
                return 0;
            }
        }
        if (n >= 0 && wl > 0)
            return -1; /* the first text line is not a command */
    }
    return -1;
}

/* ---------------------------------------------------------------- confirm */

static void confirmed(struct lsd_job *j, const redisReply *r)
{
    struct cctx *c = lsd_job_ctx(j);
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -2;
    int sub = c->action == LC_TOK_SUBSCRIBE;
    if (v == 1) {
        lc_info("list=%s sub=%" PRIu64 " %s confirmed by email from=<%s>", c->in.addr.list, c->sub,
                sub ? "subscription" : "unsubscription", c->in.sender);
        lsd_job_end(j, 250, "250 2.0.0 Ok: <%s> is now %s %s", c->owner, sub ? "subscribed to" : "unsubscribed from",
                    c->in.addr.list);
    } else if (v == 0) {
        lsd_job_end(j, 550, "550 5.7.1 <%s>: confirmation token already used: nothing changed", c->in.rcpt);
    } else {
        lsd_job_end(j, 550, "550 5.7.1 <%s>: confirmation token does not match a subscriber: nothing changed",
                    c->in.rcpt);
    }
}

/* got_subid: HGET lc:subids ID -> "LIST ADDR". */
static void got_subid(struct lsd_job *j, const redisReply *r)
{
    struct cctx *c = lsd_job_ctx(j);
    const char *L = c->in.addr.list;
    size_t ll = strlen(L);
    if (r->type != REDIS_REPLY_STRING || r->len <= ll + 1 || memcmp(r->str, L, ll) != 0 || r->str[ll] != ' ' ||
        r->len - ll - 1 > LC_ADDR_MAX) {
        lsd_job_end(j, 550, "550 5.7.1 <%s>: confirmation token is not for a subscriber of %s: nothing changed",
                    c->in.rcpt, L);
        return;
    }
    snprintf(c->owner, sizeof c->owner, "%.*s", (int)(r->len - ll - 1), r->str + ll + 1); /* the address */
    char ku[LC_KEY_MAX], ks[LC_KEY_MAX], ka[LC_KEY_MAX], km[LC_KEY_MAX], ids[24], exat[24];
    if (lc_key_usedtok(ku, sizeof ku, c->in.addr.token) < 0 || lc_key_sub(ks, sizeof ks, L, c->owner) < 0 ||
        lc_key_active(ka, sizeof ka, L) < 0 || lc_key_members(km, sizeof km, L) < 0)
        lc_panic("key too long for %s", L);
    snprintf(ids, sizeof ids, "%" PRIu64, c->sub);
    snprintf(exat, sizeof exat, "%lld", (long long)c->expires);
    const char *ev[] = {"EVAL", confirm_lua, "4", ku, ks, ka, km, c->action == LC_TOK_SUBSCRIBE ? "s" : "u", ids,
                        c->owner, exat, LC_ST_ACTIVE, LC_ST_UNSUBSCRIBED};
    lsd_job_cmd(j, 13, ev, NULL);
    lsd_job_then(j, confirmed);
}

/* ---------------------------------------------------------------- owner */

static void got_owner(struct lsd_job *j, const redisReply *r)
{
    struct cctx *c = lsd_job_ctx(j);
    if (r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > LC_ADDR_MAX) {
        lsd_job_end(j, 550, "550 5.1.1 <%s>: this list has no owner", c->in.rcpt);
        return;
    }
    char raw[LC_ADDR_MAX + 1];
    const char *why;
    snprintf(raw, sizeof raw, "%.*s", (int)r->len, r->str);
    if (lc_addr_norm(raw, strlen(raw), c->owner, &why) < 0) {
        lsd_job_end(j, 550, "550 5.1.1 <%s>: this list has no valid owner", c->in.rcpt);
        return;
    }
    c->msg = lc_buf_new(c->in.len + 1024);
    lc_buf_printf(c->msg, "X-Loop: %s\r\nDelivered-To: %s\r\n", c->in.addr.list, c->in.rcpt);
    lc_buf_append(c->msg, c->in.msg, c->in.len);
    send_notice(j);
}

int lsd_cmds_start(struct lsd_server *srv, const struct lsd_input *in, lsd_job_fn *done, void *arg,
                   struct lsd_job **jobp, struct lsd_result *res)
{
    memset(res, 0, sizeof *res);
    *jobp = NULL;
    struct cctx *c = lc_calloc(1, sizeof *c);
    c->in = *in;
    c->what = in->addr.kind;
    if (c->what == LSD_A_REQUEST && request_command(in, &c->what) < 0) {
        free(c);
        res->code = 550;
        snprintf(res->text, sizeof res->text, "550 5.5.2 <%s>: no command found: put subscribe, unsubscribe or "
                                              "help in the subject", in->rcpt);
        return LSD_DONE;
    }
    if (c->what == LSD_A_CONFIRM) {
        uint64_t id;
        enum lc_tok_result tr = lc_token_check(srv->secret, in->addr.token, strlen(in->addr.token), (int64_t)time(NULL),
                                               &c->action, &id, &c->expires);
        if (tr != LC_TOK_OK || (c->action != LC_TOK_SUBSCRIBE && c->action != LC_TOK_UNSUBSCRIBE)) {
            free(c);
            res->code = 550;
            snprintf(res->text, sizeof res->text, "550 5.7.1 <%s>: confirmation token refused (%s): nothing changed",
                     in->rcpt, tr != LC_TOK_OK ? lc_token_why(tr) : "for another action");
            return LSD_DONE;
        }
        c->sub = id;
    }
    struct lsd_job *j = lsd_job_new(srv, in, done, arg, c, cctx_free);
    if (c->what == LSD_A_CONFIRM) {
        char ids[24];
        snprintf(ids, sizeof ids, "%" PRIu64, c->sub);
        const char *hg[] = {"HGET", LC_K_SUBIDS, ids};
        lsd_job_cmd(j, 3, hg, NULL);
        lsd_job_then(j, got_subid);
    } else if (c->what == LSD_A_OWNER) {
        char kl[LC_KEY_MAX];
        if (lc_key_list(kl, sizeof kl, in->addr.list) < 0)
            lc_panic("key too long");
        const char *hg[] = {"HGET", kl, "owner"};
        lsd_job_cmd(j, 3, hg, NULL);
        lsd_job_then(j, got_owner);
    } else {
        start_command(j, c);
    }
    return lsd_job_start(j, jobp, res);
}
