/* web_public: the two public endpoints of listcast-webui: RFC 8058 one-click unsubscribe (/u/TOKEN) and
 * subscription confirmation links (/confirm/TOKEN), both with signed lc_token tokens (common/lc_token.h).
 *
 * Contract:
 * - /u/TOKEN, TOKEN = LC_TOK_ONECLICK for a subscriber id. POST with the body "List-Unsubscribe=One-Click"
 *   unsubscribes at once (status unsubscribed, out of lc:active:LIST; the hash and lc:members entry stay, as
 *   `listcast sub rm` does) and answers 200; GET only shows a page with a button (a form POST), so a link
 *   scanner that follows the URL unsubscribes no one. Repeating it is harmless (200, "already").
 * - /confirm/TOKEN, TOKEN = LC_TOK_SUBSCRIBE (status unconfirmed -> active, into lc:active unless suppressed) or
 *   LC_TOK_UNSUBSCRIBE (-> unsubscribed). GET shows a confirm button; POST applies it once: the token is
 *   remembered in lc:usedtok:TOKEN (SET NX, until it expires) in the same Lua script that applies it.
 * - A malformed or forged token answers 400, an expired one 410, a used one 409, each with a page saying so;
 *   none of them changes anything. Tokens need no login and no CSRF token: the signed token is the authority.
 */
#include "web.h"
#include "lc_buf.h"
#include "lc_cfg.h"
#include "lc_log.h"
#include "lc_schema.h"
#include "lc_secret.h"
#include "lc_token.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* KEYS: sub hash, active, used-token key (or the sub hash again when reuse is allowed).
 * ARGV: action (s/u/o), addr, ttl of the used-token mark (0: none), id.
 * Returns -2 token used, -1 no such subscriber, 0 nothing to change, 1 changed. */
static const char apply_lua[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end\n"
    "if tonumber(ARGV[3]) > 0 then\n"
    "  if not redis.call('SET', KEYS[3], ARGV[4], 'NX', 'EX', ARGV[3]) then return -2 end\n"
    "end\n"
    "local st = redis.call('HGET', KEYS[1], 'status')\n"
    "if ARGV[1] == 's' then\n"
    "  if st ~= 'unconfirmed' then return 0 end\n"
    "  redis.call('HSET', KEYS[1], 'status', 'active')\n"
    "  redis.call('ZADD', KEYS[4], 0, ARGV[2])\n"
    "  if redis.call('SISMEMBER', KEYS[5], ARGV[2]) == 0 then\n"
    "    redis.call('HSET', KEYS[2], ARGV[2], redis.call('HGET', KEYS[1], 'id'))\n"
    "  end\n"
    "  return 1\n"
    "end\n"
    "redis.call('HDEL', KEYS[2], ARGV[2])\n"
    "if st == 'unsubscribed' then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'status', 'unsubscribed')\n"
    "return 1\n";

static int tok_ok_chars(const char *t)
{
    size_t n = strlen(t);
    return n > 0 && n < LC_TOKEN_MAX && strspn(t, "0123456789abcdefghijklmnopqrstuvABCDEFGHIJKLMNOPQRSTUV-") == n;
}

static void page(struct web_resp *r, int status, const char *title, const char *msg, const char *action,
                 const char *button, const char *field)
{
    lc_buf_reset(r->body);
    r->status = status;
    web_page_start(r, NULL, title, 0);
    struct lc_buf *b = r->body;
    lc_buf_puts(b, "<p class=\"msg\" id=\"msg\">");
    web_html_esc(b, msg);
    lc_buf_puts(b, "</p>\n");
    if (action) {
        lc_buf_puts(b, "<form method=\"post\" action=\"");
        web_html_esc(b, action);
        lc_buf_puts(b, "\">");
        if (field) {
            lc_buf_puts(b, "<input type=\"hidden\" name=\"List-Unsubscribe\" value=\"");
            web_html_esc(b, field);
            lc_buf_puts(b, "\">");
        }
        lc_buf_puts(b, "<button type=\"submit\" id=\"confirm\">");
        web_html_esc(b, button);
        lc_buf_puts(b, "</button></form>\n");
    }
    web_page_end(r);
}

/* lookup resolves a subscriber id to its list and address (from lc:subids); 1, 0 unknown, -1 error. */
static int lookup(redisContext *rc, uint64_t id, char *list, size_t listlen, char *addr, size_t addrlen)
{
    redisReply *r = redisCommand(rc, "HGET %s %llu", LC_K_SUBIDS, (unsigned long long)id);
    int got = -1;
    if (r && r->type == REDIS_REPLY_NIL) {
        got = 0;
    } else if (r && r->type == REDIS_REPLY_STRING) {
        const char *sp = strchr(r->str, ' ');
        got = 0;
        if (sp && (size_t)(sp - r->str) < listlen && strlen(sp + 1) < addrlen) {
            memcpy(list, r->str, (size_t)(sp - r->str));
            list[sp - r->str] = 0;
            snprintf(addr, addrlen, "%s", sp + 1);
            got = 1;
        }
    }
    freeReplyObject(r);
    return got;
}

/* apply runs apply_lua for subscriber id; returns its result, or -3 on a Redis error; list/addr filled. */
static int apply(struct web_app *app, int action, uint64_t id, const char *token, long long ttl, char *list,
                 char *addr)
{
    char err[256], ksub[LC_KEY_MAX], kact[LC_KEY_MAX], kused[LC_KEY_MAX], kmem[LC_KEY_MAX];
    char lower[LC_TOKEN_MAX];
    size_t i = 0;
    for (; token[i] && i < sizeof lower - 1; i++)
        lower[i] = (char)(token[i] >= 'A' && token[i] <= 'Z' ? token[i] + 32 : token[i]);
    lower[i] = 0;
    int res = -3;
    redisContext *rc = web_db_get(app->db, err, sizeof err);
    if (rc) {
        int got = lookup(rc, id, list, 512, addr, 512);
        if (got == 0) {
            res = -1;
        } else if (got == 1) {
            lc_key_sub(ksub, sizeof ksub, list, addr);
            lc_key_active(kact, sizeof kact, list);
            lc_key_usedtok(kused, sizeof kused, lower);
            lc_key_members(kmem, sizeof kmem, list);
            char act[2] = {(char)action, 0}, sttl[24], sid[24];
            snprintf(sttl, sizeof sttl, "%lld", ttl);
            snprintf(sid, sizeof sid, "%llu", (unsigned long long)id);
            redisReply *r = redisCommand(rc, "EVAL %s 5 %s %s %s %s %s %s %s %s %s", apply_lua, ksub, kact, kused,
                                         kmem, LC_K_SUPPRESS, act, addr, sttl, sid);
            if (r && r->type == REDIS_REPLY_INTEGER)
                res = (int)r->integer;
            else
                lc_warn("token apply sub=%llu: %s", (unsigned long long)id, r ? r->str : rc->errstr);
            freeReplyObject(r);
        }
    }
    web_db_put(app->db);
    return res;
}

/* check verifies token for one of the wanted actions; on failure fills r and returns -1. */
static int check(struct web_app *app, const char *token, const char *want, int *action, uint64_t *id,
                 int64_t *expires, struct web_resp *r)
{
    if (!tok_ok_chars(token)) {
        page(r, 400, "Invalid link", "This link is not valid: it is malformed. Nothing was changed.", NULL, NULL,
             NULL);
        return -1;
    }
    enum lc_tok_result res = lc_token_check(app->secret, token, strlen(token), (int64_t)time(NULL), action, id,
                                            expires);
    if (res == LC_TOK_OK && !strchr(want, *action))
        res = LC_TOK_FORGED; /* a signed token for another purpose */
    if (res == LC_TOK_EXPIRED) {
        page(r, 410, "Link expired", "This link has expired; nothing was changed. Ask for a new one by mail.", NULL,
             NULL, NULL);
        return -1;
    }
    if (res != LC_TOK_OK) {
        lc_warn("token refused: %s", lc_token_why(res));
        char msg[160];
        snprintf(msg, sizeof msg, "This link is not valid (%s). Nothing was changed.", lc_token_why(res));
        page(r, 400, "Invalid link", msg, NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

void web_public_unsub(struct web_app *app, struct web_req *req, const char *token, struct web_resp *r)
{
    int action;
    uint64_t id;
    int64_t expires;
    if (check(app, token, "o", &action, &id, &expires, r) < 0)
        return;
    char self[128];
    snprintf(self, sizeof self, "/u/%s", token);
    if (!strcmp(req->method, "GET")) {
        page(r, 200, "Unsubscribe", "Press the button to unsubscribe from this list.", self, "Unsubscribe",
             "One-Click");
        return;
    }
    char v[32];
    if (web_form_get(lc_buf_data(req->body), "List-Unsubscribe", v, sizeof v) != 1 || strcmp(v, "One-Click")) {
        page(r, 400, "Unsubscribe", "A one-click unsubscribe needs the body List-Unsubscribe=One-Click. Nothing "
             "was changed.", self, "Unsubscribe", "One-Click");
        return;
    }
    char list[512] = "", addr[512] = "";
    int res = apply(app, 'o', id, token, 0, list, addr);
    if (res == -3) {
        page(r, 503, "Try again", "The service is busy; please try again in a minute.", NULL, NULL, NULL);
    } else if (res == -1) {
        page(r, 404, "Unsubscribe", "This subscription does not exist any more.", NULL, NULL, NULL);
    } else {
        lc_info("sub=%llu list=%s addr=<%s> unsubscribed (one-click)%s", (unsigned long long)id, list, addr,
                res ? "" : " already");
        char msg[1200];
        snprintf(msg, sizeof msg, "%s is %s unsubscribed from %s.", addr, res ? "now" : "already", list);
        page(r, 200, "Unsubscribed", msg, NULL, NULL, NULL);
    }
}

void web_public_confirm(struct web_app *app, struct web_req *req, const char *token, struct web_resp *r)
{
    int action;
    uint64_t id;
    int64_t expires;
    if (check(app, token, "su", &action, &id, &expires, r) < 0)
        return;
    int sub = action == LC_TOK_SUBSCRIBE;
    char self[128];
    snprintf(self, sizeof self, "/confirm/%s", token);
    if (!strcmp(req->method, "GET")) {
        page(r, 200, sub ? "Confirm subscription" : "Confirm unsubscription",
             sub ? "Press the button to confirm your subscription." : "Press the button to confirm that you want "
             "to leave the list.", self, sub ? "Confirm subscription" : "Confirm unsubscription", NULL);
        return;
    }
    long long ttl = expires > 0 ? (long long)expires - (long long)time(NULL) + 60
                                : lc_cfg_int(app->cfg, "confirm.lifetime");
    if (ttl < 60)
        ttl = 60;
    char list[512] = "", addr[512] = "";
    int res = apply(app, action, id, token, ttl, list, addr);
    char msg[1200];
    switch (res) {
    case -3:
        page(r, 503, "Try again", "The service is busy; please try again in a minute.", NULL, NULL, NULL);
        break;
    case -2:
        page(r, 409, "Link used", "This link was used already; nothing was changed.", NULL, NULL, NULL);
        break;
    case -1:
        page(r, 404, "Not found", "This subscription does not exist any more; nothing was changed.", NULL, NULL,
             NULL);
        break;
    default:
        lc_info("sub=%llu list=%s addr=<%s> %s confirmed by link%s", (unsigned long long)id, list, addr,
                sub ? "subscription" : "unsubscription", res ? "" : " (no change)");
        if (sub)
            snprintf(msg, sizeof msg, res ? "%s is now subscribed to %s." : "%s: nothing to confirm for %s "
                     "(already active, or removed).", addr, list);
        else
            snprintf(msg, sizeof msg, "%s is %s unsubscribed from %s.", addr, res ? "now" : "already", list);
        page(r, 200, sub ? "Subscribed" : "Unsubscribed", msg, NULL, NULL, NULL);
    }
}
