/* web_mod: the moderation queue and the bounce report of listcast-webui: posts listd holds for moderation (lc:held:ID, see
 * schema/SCHEMA.md "Moderation and email commands"), read, approve, reject; page and JSON API.
 *
 * Contract: approving runs the same Lua script as listd's L-approve-TOKEN address (listd/lsd_post.c): it moves
 * lc:held:ID into lc:msg:ID, lc:post:ID (state queued), lc:posts:LIST and the posts stream and deletes the hold,
 * atomically, so a post is released at most once whoever approves it (mail or web); rejecting deletes the hold.
 * A hold that is gone (approved, rejected, expired) changes nothing: 404 with the reason.
 * The queue is read from the index listd writes with each hold (lc:heldidx, a ZSET of ids), never by scanning
 * the key space (which holds a hash per subscriber: millions of keys).
 * Limits: at most WEB_MOD_MAX holds shown, WEB_MOD_ROUNDS round trips of WEB_MOD_PAGE ids; a message excerpt of
 * WEB_MOD_EXCERPT octets is shown.
 * Also the bounce report of a list (web_bounces): the bounce daemon's counters lc:bncstat:{reason,domain,post}:LIST,
 * largest first, WEB_BNC_ROWS rows a table on the page (all in JSON).
 */
#include "web.h"
#include "lc_addr.h"
#include "lc_buf.h"
#include "lc_json.h"
#include "lc_log.h"
#include "lc_redis.h"
#include "lc_schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WEB_MOD_PAGE 256  /* ids of the index read a round trip */
#define WEB_MOD_ROUNDS 64 /* round trips at most (stale ids are removed as they are met) */
#define WEB_MOD_MAX 200
#define WEB_MOD_EXCERPT 2048

static const char approve_lua[] = LC_LUA_HELD_APPROVE;
static const char reject_lua[] = LC_LUA_HELD_REJECT;

struct held {
    unsigned long long id;
    char list[512], from[512], subject[512];
    long long size, created;
    char excerpt[WEB_MOD_EXCERPT + 1];
};

/* subject_of copies the Subject header of msg (first line only) into out. */
static void subject_of(const char *msg, char *out, size_t outlen)
{
    out[0] = 0;
    const char *p = msg;
    while (*p && !(p[0] == '\r' && p[1] == '\n') && *p != '\n') {
        if (!strncasecmp(p, "Subject:", 8)) {
            p += 8;
            while (*p == ' ')
                p++;
            size_t n = strcspn(p, "\r\n");
            snprintf(out, outlen, "%.*s", (int)(n < outlen ? n : outlen - 1), p);
            return;
        }
        p += strcspn(p, "\n");
        if (*p)
            p++;
    }
}

/* load_held reads the held posts from their index (lc:heldidx, lowest id first), WEB_MOD_PAGE ids a round trip,
 * dropping from the index the ids whose hold is gone (expired after 14 days; approving and rejecting remove
 * their own); returns the count (by id) or -1; *partial when more are held than WEB_MOD_MAX. */
static long load_held(struct web_app *app, struct held *out, int *partial)
{
    char err[256];
    long n = 0;
    *partial = 0;
    redisContext *rc = web_db_get(app->db, err, sizeof err);
    if (!rc) {
        web_db_put(app->db);
        return -1;
    }
    long long from = 0;
    for (int round = 0; round < WEB_MOD_ROUNDS && !*partial; round++) {
        redisReply *r = redisCommand(rc, "ZRANGE %s %lld %lld", LC_K_HELD_INDEX, from, from + WEB_MOD_PAGE - 1);
        if (!r || r->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(r);
            n = -1;
            break;
        }
        size_t m = r->elements;
        for (size_t i = 0; i < m; i++) {
            char kh[LC_KEY_MAX];
            const char *num = r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : "";
            if (!*num || strspn(num, "0123456789") != strlen(num) || strlen(num) > 19)
                num = "0"; /* not an id: its (missing) hold removes it below */
            lc_key_held(kh, sizeof kh, strtoull(num, NULL, 10));
            redisAppendCommand(rc, "HMGET %s list from size created msg", kh);
        }
        long stale = 0;
        const char **gone = lc_calloc(m ? m : 1, sizeof *gone); /* members whose hold is gone */
        size_t ngone = 0;
        for (size_t i = 0; i < m; i++) {
            void *v = NULL;
            if (redisGetReply(rc, &v) != REDIS_OK) {
                n = -1;
                break;
            }
            redisReply *h = v;
            const char *num = r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : "";
            if (h->type == REDIS_REPLY_ARRAY && h->elements == 5 && h->element[0]->type == REDIS_REPLY_STRING) {
                if (n == WEB_MOD_MAX) {
                    *partial = 1;
                } else {
                    struct held *x = &out[n++];
                    memset(x, 0, sizeof *x);
                    x->id = strtoull(num, NULL, 10);
                    snprintf(x->list, sizeof x->list, "%s", h->element[0]->str);
                    if (h->element[1]->type == REDIS_REPLY_STRING)
                        snprintf(x->from, sizeof x->from, "%s", h->element[1]->str);
                    x->size = h->element[2]->type == REDIS_REPLY_STRING ? atoll(h->element[2]->str) : 0;
                    x->created = h->element[3]->type == REDIS_REPLY_STRING ? atoll(h->element[3]->str) : 0;
                    if (h->element[4]->type == REDIS_REPLY_STRING) {
                        snprintf(x->excerpt, sizeof x->excerpt, "%s", h->element[4]->str);
                        subject_of(x->excerpt, x->subject, sizeof x->subject);
                    }
                }
            } else if (h->type == REDIS_REPLY_ARRAY && r->element[i]->type == REDIS_REPLY_STRING) {
                gone[ngone++] = r->element[i]->str; /* the hold is gone: dropped from the index below */
            }
            freeReplyObject(h);
        }
        if (n >= 0 && ngone) { /* one ZREM, after every pipelined reply is read */
            const char **zv = lc_calloc(ngone + 2, sizeof *zv);
            zv[0] = "ZREM", zv[1] = LC_K_HELD_INDEX;
            memcpy(zv + 2, gone, ngone * sizeof *gone);
            redisReply *z = lc_redis_cmdv(rc, (int)ngone + 2, zv, NULL, err, sizeof err);
            stale = z && z->type == REDIS_REPLY_INTEGER ? (long)z->integer : 0;
            freeReplyObject(z);
            free(zv);
        }
        free(gone);
        freeReplyObject(r);
        if (n < 0 || m < WEB_MOD_PAGE)
            break;
        from += WEB_MOD_PAGE - stale; /* the removed entries no longer take places before the next page */
    }
    web_db_put(app->db);
    return n;
}

void web_page_moderation(struct web_app *app, struct web_req *req, struct web_resp *r)
{
    int partial;
    struct held *h = lc_calloc(WEB_MOD_MAX, sizeof *h);
    long n = load_held(app, h, &partial);
    if (n < 0) {
        free(h);
        web_err(r, req, 503, "redis unavailable");
        return;
    }
    if (web_is_api(req)) {
        r->type = "application/json";
        struct lc_json *j = lc_json_new_buf(r->body, 0);
        lc_json_obj(j);
        lc_json_key(j, "held");
        lc_json_arr(j);
        for (long i = 0; i < n; i++) {
            lc_json_obj(j);
            lc_json_kint(j, "id", (long long)h[i].id);
            lc_json_kstr(j, "list", h[i].list);
            lc_json_kstr(j, "from", h[i].from);
            lc_json_kstr(j, "subject", h[i].subject);
            lc_json_kint(j, "size", h[i].size);
            lc_json_kint(j, "created", h[i].created);
            lc_json_kstr(j, "excerpt", h[i].excerpt);
            lc_json_end(j);
        }
        lc_json_end(j);
        lc_json_kbool(j, "partial", partial);
        lc_json_end(j);
        lc_json_free(j);
        free(h);
        return;
    }
    web_page_start(r, req, "Moderation queue", 0);
    struct lc_buf *b = r->body;
    const char *msg = web_query(req, "msg");
    if (msg && strlen(msg) < 300) {
        lc_buf_puts(b, "<p class=\"msg\" id=\"msg\">");
        web_html_esc(b, msg);
        lc_buf_puts(b, "</p>\n");
    }
    if (n == 0)
        lc_buf_puts(b, "<p class=\"empty\" id=\"no-held\">No post is held for moderation.</p>\n");
    for (long i = 0; i < n; i++) {
        char when[64] = "-";
        time_t t = (time_t)h[i].created;
        struct tm tm;
        if (t > 0 && gmtime_r(&t, &tm))
            strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
        lc_buf_printf(b, "<section class=\"held\" id=\"held-%llu\"><h2>Post %llu to ", h[i].id, h[i].id);
        web_html_esc(b, h[i].list);
        lc_buf_puts(b, "</h2><p>From <code>");
        web_html_esc(b, h[i].from);
        lc_buf_puts(b, "</code>, subject <strong>");
        web_html_esc(b, h[i].subject);
        lc_buf_printf(b, "</strong>, %lld bytes, held since %s</p><pre class=\"excerpt\">", h[i].size, when);
        web_html_esc(b, h[i].excerpt);
        lc_buf_puts(b, "</pre>");
        static const char *const acts[] = {"approve", "reject"};
        for (int k = 0; k < 2; k++) {
            lc_buf_printf(b, "<form method=\"post\" class=\"inline\" action=\"/moderation/%llu\">", h[i].id);
            web_csrf_field(b, req);
            lc_buf_printf(b, "<input type=\"hidden\" name=\"action\" value=\"%s\"><button type=\"submit\" "
                             "class=\"%s\">%s</button></form> ", acts[k], acts[k], k ? "Reject" : "Approve");
        }
        lc_buf_puts(b, "</section>\n");
    }
    if (partial)
        lc_buf_puts(b, "<p class=\"hint\">More held posts exist than are shown.</p>\n");
    web_page_end(r);
    free(h);
}

void web_do_moderate(struct web_app *app, struct web_req *req, const char *id, struct web_resp *r)
{
    char action[16] = "";
    if (web_is_api(req)) {
        char err[256];
        struct web_jv *jv = web_json_parse(lc_buf_data(req->body), lc_buf_len(req->body), err, sizeof err);
        if (!jv) {
            web_json_error(r, 400, err);
            return;
        }
        const char *a = web_json_str(jv, "action");
        snprintf(action, sizeof action, "%s", a ? a : "");
        web_json_free(jv);
    } else if (web_form_check(lc_buf_data(req->body)) < 0 ||
               web_form_get(lc_buf_data(req->body), "action", action, sizeof action) != 1) {
        action[0] = 0;
    }
    int approve = !strcmp(action, "approve");
    if (!approve && strcmp(action, "reject") != 0) {
        web_err(r, req, 400, "action must be approve or reject; nothing was changed");
        return;
    }
    if (!*id || strspn(id, "0123456789") != strlen(id) || strlen(id) > 19) {
        web_err(r, req, 404, "no such held post");
        return;
    }
    unsigned long long pid = strtoull(id, NULL, 10);
    char kh[LC_KEY_MAX], km[LC_KEY_MAX], kp[LC_KEY_MAX], kps[LC_KEY_MAX], ids[24], now[24], err[256];
    lc_key_held(kh, sizeof kh, pid);
    lc_key_msg(km, sizeof km, pid);
    lc_key_post(kp, sizeof kp, pid);
    snprintf(ids, sizeof ids, "%llu", pid);
    snprintf(now, sizeof now, "%lld", (long long)time(NULL));
    long long res = -2;
    char list[512] = "";
    redisContext *rc = web_db_get(app->db, err, sizeof err);
    if (rc) {
        redisReply *x = redisCommand(rc, "HGET %s list", kh);
        if (x && x->type == REDIS_REPLY_NIL)
            res = 0;
        else if (x && x->type == REDIS_REPLY_STRING && x->len < sizeof list)
            snprintf(list, sizeof list, "%s", x->str);
        freeReplyObject(x);
        if (*list && lc_key_posts(kps, sizeof kps, list) >= 0) {
            redisReply *y;
            if (approve) {
                const char *ev[] = {"EVAL", approve_lua, "6", kh, km, kp, kps, LC_S_POSTS, LC_K_HELD_INDEX, list,
                                    ids, now, LC_PS_QUEUED};
                y = lc_redis_cmdv(rc, 13, ev, NULL, err, sizeof err);
            } else {
                const char *ev[] = {"EVAL", reject_lua, "2", kh, LC_K_HELD_INDEX, list, ids};
                y = lc_redis_cmdv(rc, 7, ev, NULL, err, sizeof err);
            }
            if (y && y->type == REDIS_REPLY_INTEGER)
                res = y->integer;
            freeReplyObject(y);
        }
    }
    web_db_put(app->db);
    if (res == -2) {
        web_err(r, req, 503, "redis unavailable");
        return;
    }
    if (res != 1) {
        web_err(r, req, 404, "this post is no longer held (approved, rejected or expired); nothing was changed");
        return;
    }
    lc_info("post=%llu %s list=%s by user=%s (web)", pid, approve ? "approved" : "rejected", list, req->user);
    if (web_is_api(req)) {
        r->type = "application/json";
        struct lc_json *j = lc_json_new_buf(r->body, 0);
        lc_json_obj(j);
        lc_json_kint(j, "id", (long long)pid);
        lc_json_kstr(j, "result", approve ? "approved" : "rejected");
        lc_json_end(j);
        lc_json_free(j);
        return;
    }
    char loc[128];
    snprintf(loc, sizeof loc, "/moderation?msg=post+%llu+%s", pid, approve ? "approved" : "rejected");
    web_redirect(r, loc);
}

/* ---- bounce report: lc:bncstat:{reason,domain,post}:LIST, written by the bounce daemon ---------------------- */

#define WEB_BNC_ROWS 100

struct bnc_row {
    char name[256];
    long long n;
};

static int cmp_bnc(const void *a, const void *b)
{
    const struct bnc_row *x = a, *y = b;
    if (x->n != y->n)
        return x->n < y->n ? 1 : -1;
    return strcmp(x->name, y->name);
}

void web_bounces(struct web_app *app, struct web_req *req, const char *arg, struct web_resp *r)
{
    static const char *const kinds[] = {"reason", "domain", "post"};
    char list[LC_ADDR_MAX + 1], err[256];
    int ex = web_list_norm(app, arg, list);
    if (ex <= 0) {
        web_err(r, req, ex < 0 ? 503 : 404, ex < 0 ? "redis unavailable" : "no such list");
        return;
    }
    struct bnc_row *rows[3] = {NULL, NULL, NULL};
    size_t nrows[3] = {0, 0, 0};
    long long total[3] = {0, 0, 0};
    int ok = 1;
    redisContext *rc = web_db_get(app->db, err, sizeof err);
    for (int k = 0; k < 3 && rc && ok; k++) {
        char key[LC_KEY_MAX];
        lc_key_bncstat(key, sizeof key, kinds[k], list);
        redisReply *x = redisCommand(rc, "HGETALL %s", key);
        if (!x || x->type != REDIS_REPLY_ARRAY) {
            ok = 0;
        } else {
            rows[k] = lc_calloc(x->elements / 2 + 1, sizeof *rows[k]);
            for (size_t i = 0; i + 1 < x->elements; i += 2) {
                if (x->element[i]->type != REDIS_REPLY_STRING || x->element[i + 1]->type != REDIS_REPLY_STRING)
                    continue;
                struct bnc_row *b = &rows[k][nrows[k]++];
                snprintf(b->name, sizeof b->name, "%s", x->element[i]->str);
                b->n = atoll(x->element[i + 1]->str);
                total[k] += b->n;
            }
            qsort(rows[k], nrows[k], sizeof *rows[k], cmp_bnc);
        }
        freeReplyObject(x);
    }
    web_db_put(app->db);
    if (!rc || !ok) {
        for (int k = 0; k < 3; k++)
            free(rows[k]);
        web_err(r, req, 503, "redis unavailable");
        return;
    }
    if (web_is_api(req)) {
        r->type = "application/json";
        struct lc_json *j = lc_json_new_buf(r->body, 0);
        lc_json_obj(j);
        lc_json_kstr(j, "list", list);
        for (int k = 0; k < 3; k++) {
            char name[16];
            snprintf(name, sizeof name, "by_%s", kinds[k]);
            lc_json_key(j, name);
            lc_json_obj(j);
            for (size_t i = 0; i < nrows[k]; i++)
                lc_json_kint(j, rows[k][i].name, rows[k][i].n);
            lc_json_end(j);
        }
        lc_json_end(j);
        lc_json_free(j);
    } else {
        char title[LC_ADDR_MAX + 32];
        snprintf(title, sizeof title, "Bounces of %s", list);
        web_page_start(r, req, title, 0);
        struct lc_buf *b = r->body;
        static const char *const heads[] = {"By reason", "By domain", "By post"};
        for (int k = 0; k < 3; k++) {
            lc_buf_printf(b, "<h2>%s</h2>", heads[k]);
            if (!nrows[k]) {
                lc_buf_puts(b, "<p class=\"empty\">No bounces.</p>\n");
                continue;
            }
            lc_buf_printf(b, "<table id=\"bounces-%s\"><thead><tr><th>%s</th><th class=\"num\">Failures</th>"
                             "<th class=\"num\">Share</th></tr></thead><tbody>\n", kinds[k], kinds[k]);
            for (size_t i = 0; i < nrows[k] && i < WEB_BNC_ROWS; i++) {
                lc_buf_puts(b, "<tr><td>");
                if (k == 2)
                    lc_buf_printf(b, "<a href=\"/posts/%lld\">%lld</a>", atoll(rows[k][i].name),
                                  atoll(rows[k][i].name));
                else
                    web_html_esc(b, rows[k][i].name);
                lc_buf_printf(b, "</td><td class=\"num\">%lld</td><td class=\"num\">%.1f%%</td></tr>\n", rows[k][i].n,
                              total[k] ? 100.0 * (double)rows[k][i].n / (double)total[k] : 0.0);
            }
            lc_buf_puts(b, "</tbody></table>\n");
        }
        web_page_end(r);
    }
    for (int k = 0; k < 3; k++)
        free(rows[k]);
}
