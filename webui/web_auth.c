/* web_auth: admin login, sessions, CSRF tokens and API tokens of listcast-webui (schema/SCHEMA.md "Admin web UI").
 *
 * Contract:
 * - Passwords are checked against lc:admin:USER pwhash, "pbkdf2-sha256$ITER$SALT$HASH" (written by `listcast
 *   admin add`), with gnutls_pbkdf2 and a constant-time comparison. Unknown users cost the same PBKDF2 run.
 * - Logins are throttled before the password is looked at: WEB_FAIL_IP failures from one client address or
 *   WEB_FAIL_USER failures for one user within WEB_FAIL_WINDOW seconds answer 429 with Retry-After.
 * - A login makes a session: 32 random bytes (hex) in the cookie "lcsid" (HttpOnly, SameSite=Strict, Path=/,
 *   Secure over HTTPS) and lc:session:SID {user, csrf, created} with a TTL of WEB_SESSION_TTL seconds.
 * - Every form of a session carries its csrf value; writes by session need it (form field or X-CSRF-Token
 *   header). The login form itself carries a signed, time-limited token (HMAC of the server secret).
 * - API tokens: "Authorization: Bearer TOKEN"; lc:apitokens maps SHA-256(TOKEN) to the user.
 */
#include "web.h"
#include "lc_buf.h"
#include "lc_log.h"
#include "lc_schema.h"
#include "lc_secret.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WEB_SESSION_TTL 43200 /* 12 h */
#define WEB_FAIL_WINDOW 900
#define WEB_FAIL_IP 20
#define WEB_FAIL_USER 10
#define WEB_LOGIN_TOKEN_TTL 3600
#define WEB_USER_MAX 64
#define WEB_PW_MAX 1024
#define WEB_PBKDF2_MIN_ITER 10000
#define WEB_PBKDF2_MAX_ITER 10000000

static int is_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return 0;
    return strspn(s, "0123456789abcdef") == n;
}

/* a user name: 1..64 of [A-Za-z0-9._@-] (the CLI refuses others) */
static int user_ok(const char *u)
{
    size_t n = strlen(u);
    return n > 0 && n <= WEB_USER_MAX &&
           strspn(u, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-") == n;
}

/* ---- identification ------------------------------------------------------------------------------------ */

static void identify_bearer(struct web_app *app, struct web_req *req, const char *token)
{
    size_t n = strlen(token);
    if (n < 16 || n > 256)
        return;
    char h[65], err[256];
    web_sha256_hex(token, h);
    redisContext *rc = web_db_get(app->db, err, sizeof err);
    if (rc) {
        redisReply *r = redisCommand(rc, "HGET %s %s", LC_K_APITOKENS, h);
        if (r && r->type == REDIS_REPLY_STRING && r->len <= WEB_USER_MAX) {
            snprintf(req->user, sizeof req->user, "%s", r->str);
            req->auth = WEB_AUTH_BEARER;
        }
        freeReplyObject(r);
    }
    web_db_put(app->db);
}

void web_auth_identify(struct web_app *app, struct web_req *req)
{
    req->auth = WEB_AUTH_NONE;
    const char *az = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (az && !strncasecmp(az, "Bearer ", 7)) {
        identify_bearer(app, req, az + 7);
        return;
    }
    const char *sid = MHD_lookup_connection_value(req->conn, MHD_COOKIE_KIND, "lcsid");
    if (!sid || !is_hex(sid, 64))
        return;
    char key[LC_KEY_MAX], err[256];
    lc_key_session(key, sizeof key, sid);
    redisContext *rc = web_db_get(app->db, err, sizeof err);
    if (rc) {
        redisReply *r = redisCommand(rc, "HMGET %s user csrf", key);
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->type == REDIS_REPLY_STRING &&
            r->element[1]->type == REDIS_REPLY_STRING && r->element[0]->len <= WEB_USER_MAX &&
            r->element[1]->len == 64) {
            snprintf(req->user, sizeof req->user, "%s", r->element[0]->str);
            snprintf(req->csrf, sizeof req->csrf, "%s", r->element[1]->str);
            req->auth = WEB_AUTH_SESSION;
        }
        freeReplyObject(r);
    }
    web_db_put(app->db);
}

static int ct_equal(const char *a, const char *b)
{
    size_t n = strlen(a);
    if (n != strlen(b))
        return 0;
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

int web_auth_csrf_ok(const struct web_req *req, const char *given)
{
    if (req->auth == WEB_AUTH_BEARER)
        return 1;
    if (req->auth != WEB_AUTH_SESSION || !*req->csrf)
        return 0;
    if (!given || !*given)
        given = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-CSRF-Token");
    return given && ct_equal(given, req->csrf);
}

/* ---- the login form's own token ------------------------------------------------------------------------- */

static void login_mac(const struct web_app *app, long long ts, char out[33])
{
    char msg[64];
    int n = snprintf(msg, sizeof msg, "login%c%lld", 0, ts);
    unsigned char mac[32];
    lc_secret_mac(app->secret, msg, (size_t)n, mac);
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", mac[i]);
}

static void login_token(const struct web_app *app, char *out, size_t outlen)
{
    long long ts = (long long)time(NULL);
    char mac[33];
    login_mac(app, ts, mac);
    snprintf(out, outlen, "%lld.%s", ts, mac);
}

static int login_token_ok(const struct web_app *app, const char *tok)
{
    char *dot;
    long long ts = strtoll(tok, &dot, 10);
    long long now = (long long)time(NULL);
    if (*dot != '.' || ts <= 0 || ts > now + 60 || now - ts > WEB_LOGIN_TOKEN_TTL)
        return 0;
    char mac[33];
    login_mac(app, ts, mac);
    return ct_equal(dot + 1, mac);
}

/* ---- password check ------------------------------------------------------------------------------------- */

static int unhex(const char *s, unsigned char *out, size_t max, size_t *n)
{
    size_t len = strlen(s);
    if (len % 2 || len / 2 > max || strspn(s, "0123456789abcdef") != len)
        return -1;
    for (size_t i = 0; i < len / 2; i++) {
        unsigned v;
        sscanf(s + 2 * i, "%2x", &v);
        out[i] = (unsigned char)v;
    }
    *n = len / 2;
    return 0;
}

/* pw_verify returns 1 when pw matches the stored hash, 0 otherwise (also for a malformed hash). */
static int pw_verify(const char *stored, const char *pw)
{
    char alg[32], salth[130], hashh[130];
    long iter = 0;
    unsigned char salt[64], want[64], got[64];
    size_t nsalt = 0, nwant = 0;
    if (!stored || sscanf(stored, "%31[^$]$%ld$%129[^$]$%129s", alg, &iter, salth, hashh) != 4 ||
        strcmp(alg, "pbkdf2-sha256") != 0 || iter < WEB_PBKDF2_MIN_ITER || iter > WEB_PBKDF2_MAX_ITER ||
        unhex(salth, salt, sizeof salt, &nsalt) < 0 || unhex(hashh, want, sizeof want, &nwant) < 0 || nwant < 16)
        return 0;
    gnutls_datum_t key = {(unsigned char *)pw, (unsigned)strlen(pw)}, sd = {salt, (unsigned)nsalt};
    if (gnutls_pbkdf2(GNUTLS_MAC_SHA256, &key, &sd, (unsigned)iter, got, nwant) < 0)
        return 0;
    unsigned char d = 0;
    for (size_t i = 0; i < nwant; i++)
        d |= (unsigned char)(got[i] ^ want[i]);
    return d == 0;
}

/* ---- pages ---------------------------------------------------------------------------------------------- */

static void login_form(struct web_app *app, struct web_req *req, struct web_resp *r, int status, const char *msg,
                       const char *user)
{
    lc_buf_reset(r->body);
    r->status = status;
    struct web_req anon = *req;
    anon.auth = WEB_AUTH_NONE;
    web_page_start(r, &anon, "Log in", 0);
    struct lc_buf *b = r->body;
    if (msg) {
        lc_buf_puts(b, "<p class=\"error\" id=\"login-error\">");
        web_html_esc(b, msg);
        lc_buf_puts(b, "</p>\n");
    }
    char tok[64];
    login_token(app, tok, sizeof tok);
    lc_buf_puts(b, "<form method=\"post\" action=\"/login\" class=\"card\"><input type=\"hidden\" name=\"csrf\" "
                   "value=\"");
    web_html_esc(b, tok);
    lc_buf_puts(b, "\"><label>User <input name=\"user\" id=\"user\" autocomplete=\"username\" required value=\"");
    web_html_esc(b, user ? user : "");
    lc_buf_puts(b, "\"></label><label>Password <input name=\"password\" id=\"password\" type=\"password\" "
                   "autocomplete=\"current-password\" required></label><button type=\"submit\" id=\"login\">"
                   "Log in</button></form>\n<p class=\"hint\">Accounts are made with "
                   "<code>listcast admin add USER</code>.</p>\n");
    web_page_end(r);
}

void web_page_login(struct web_app *app, struct web_req *req, struct web_resp *r)
{
    if (req->auth != WEB_AUTH_NONE) {
        web_redirect(r, "/");
        return;
    }
    login_form(app, req, r, 200, NULL, NULL);
}

/* count_fails reads the failure counters; returns the seconds to wait, 0 when a login may be tried, -1 on a
 * Redis error. */
static long long count_fails(redisContext *rc, const char *kip, const char *kuser)
{
    redisReply *r = redisCommand(rc, "MGET %s %s", kip, kuser);
    long long wait = -1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        long long fip = r->element[0]->type == REDIS_REPLY_STRING ? atoll(r->element[0]->str) : 0;
        long long fus = r->element[1]->type == REDIS_REPLY_STRING ? atoll(r->element[1]->str) : 0;
        wait = 0;
        const char *k = fip >= WEB_FAIL_IP ? kip : fus >= WEB_FAIL_USER ? kuser : NULL;
        if (k) {
            redisReply *t = redisCommand(rc, "TTL %s", k);
            wait = t && t->type == REDIS_REPLY_INTEGER && t->integer > 0 ? t->integer : WEB_FAIL_WINDOW;
            freeReplyObject(t);
        }
    }
    freeReplyObject(r);
    return wait;
}

void web_do_login(struct web_app *app, struct web_req *req, struct web_resp *r)
{
    const char *body = lc_buf_data(req->body);
    char user[WEB_USER_MAX + 2], pw[WEB_PW_MAX + 1], tok[80];
    if (web_form_check(body) < 0 || web_form_get(body, "user", user, sizeof user) != 1 ||
        web_form_get(body, "password", pw, sizeof pw) != 1 || web_form_get(body, "csrf", tok, sizeof tok) != 1) {
        login_form(app, req, r, 400, "Malformed login form: user, password and the form token are required.",
                   NULL);
        return;
    }
    if (!login_token_ok(app, tok)) {
        login_form(app, req, r, 403, "The form expired or was not made by this server; please try again.", NULL);
        return;
    }
    if (!user_ok(user)) {
        login_form(app, req, r, 401, "Wrong user name or password.", NULL);
        return;
    }
    char kip[LC_KEY_MAX], kuser[LC_KEY_MAX], kadm[LC_KEY_MAX], err[256];
    lc_key_loginfail(kip, sizeof kip, "ip", req->ip);
    lc_key_loginfail(kuser, sizeof kuser, "user", user);
    lc_key_admin(kadm, sizeof kadm, user);
    char *stored = NULL;
    long long wait = -1;
    redisContext *rc = web_db_get(app->db, err, sizeof err);
    if (rc) {
        wait = count_fails(rc, kip, kuser);
        redisReply *h = wait == 0 ? redisCommand(rc, "HGET %s pwhash", kadm) : NULL;
        if (h && h->type == REDIS_REPLY_STRING)
            stored = lc_strdup(h->str);
        freeReplyObject(h);
    }
    web_db_put(app->db);
    if (wait < 0) {
        login_form(app, req, r, 503, "The store is unavailable; try again shortly.", user);
        return;
    }
    if (wait > 0) {
        lc_warn("login user=%s ip=%s throttled for %llds", user, req->ip, wait);
        char msg[160];
        snprintf(msg, sizeof msg, "Too many failed logins; try again in %lld seconds.", wait);
        login_form(app, req, r, 429, msg, user);
        return;
    }
    /* an unknown user costs a PBKDF2 run too, so timing does not tell which user names exist */
    int ok = pw_verify(stored ? stored : "pbkdf2-sha256$100000$00000000000000000000000000000000$"
                                         "0000000000000000000000000000000000000000000000000000000000000000",
                       pw);
    ok = ok && stored;
    free(stored);
    memset(pw, 0, sizeof pw);
    char sid[65], csrf[65], ks[LC_KEY_MAX];
    web_random_hex(sid, 32);
    web_random_hex(csrf, 32);
    lc_key_session(ks, sizeof ks, sid);
    int stored_ok = 0;
    rc = web_db_get(app->db, err, sizeof err);
    if (rc) {
        if (ok) {
            redisAppendCommand(rc, "HSET %s user %s csrf %s created %lld", ks, user, csrf, (long long)time(NULL));
            redisAppendCommand(rc, "EXPIRE %s %d", ks, WEB_SESSION_TTL);
            redisAppendCommand(rc, "DEL %s", kuser);
        } else {
            redisAppendCommand(rc, "INCR %s", kip);
            redisAppendCommand(rc, "EXPIRE %s %d NX", kip, WEB_FAIL_WINDOW);
            redisAppendCommand(rc, "INCR %s", kuser);
            redisAppendCommand(rc, "EXPIRE %s %d NX", kuser, WEB_FAIL_WINDOW);
        }
        stored_ok = 1;
        for (int i = 0; i < (ok ? 3 : 4); i++) {
            redisReply *x = NULL;
            if (redisGetReply(rc, (void **)&x) != REDIS_OK || !x || x->type == REDIS_REPLY_ERROR)
                stored_ok = 0;
            freeReplyObject(x);
        }
    }
    web_db_put(app->db);
    if (!stored_ok) {
        login_form(app, req, r, 503, "The store is unavailable; try again shortly.", user);
        return;
    }
    if (!ok) {
        lc_warn("login user=%s ip=%s refused: wrong user or password", user, req->ip);
        login_form(app, req, r, 401, "Wrong user name or password.", user);
        return;
    }
    lc_info("login user=%s ip=%s session started", user, req->ip);
    web_redirect(r, "/");
    snprintf(r->cookie, sizeof r->cookie, "lcsid=%s; Path=/; Max-Age=%d; HttpOnly; SameSite=Strict%s", sid,
             WEB_SESSION_TTL, app->https ? "; Secure" : "");
}

void web_do_logout(struct web_app *app, struct web_req *req, struct web_resp *r)
{
    char csrf[80] = "";
    if (req->auth != WEB_AUTH_SESSION) {
        web_redirect(r, "/login");
        return;
    }
    if (web_form_get(lc_buf_data(req->body), "csrf", csrf, sizeof csrf) != 1 || !web_auth_csrf_ok(req, csrf)) {
        web_html_error(r, req, 403, "Missing or wrong form token (CSRF); nothing was changed.");
        return;
    }
    const char *sid = MHD_lookup_connection_value(req->conn, MHD_COOKIE_KIND, "lcsid");
    char ks[LC_KEY_MAX], err[256];
    if (sid && is_hex(sid, 64)) {
        lc_key_session(ks, sizeof ks, sid);
        redisContext *rc = web_db_get(app->db, err, sizeof err);
        if (rc)
            freeReplyObject(redisCommand(rc, "DEL %s", ks));
        web_db_put(app->db);
    }
    lc_info("logout user=%s", req->user);
    web_redirect(r, "/login");
    snprintf(r->cookie, sizeof r->cookie, "lcsid=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict%s",
             app->https ? "; Secure" : "");
}
