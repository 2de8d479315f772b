/* web_pages: dashboard, post detail, list settings and their JSON API; /healthz and the stylesheet.
 *
 * Contract: every value taken from Redis is HTML-escaped (web_html_esc) or JSON-escaped (lc_json) on output;
 * pages have no script and no inline style (the CSP is default-src 'self'): progress bars are <progress>
 * elements, charts inline SVG with presentation attributes, the look comes from /style.css. Data is read with
 * lc_view (shared with the CLI) into copies; pages are rendered after the Redis connection is given back.
 * Limits: the dashboard shows at most WEB_LISTS lists and the WEB_POSTS newest posts; /api/lists returns at
 * most WEB_API_LISTS lists; list settings are bounded (WEB_SETTING_MAX bytes each); a post shows at most
 * WEB_DEFERS deferred recipients (HSCAN of lc:postdefer:ID) and how many more there are.
 */
#include "web.h"
#include "lc_buf.h"
#include "lc_cfg.h"
#include "lc_json.h"
#include "lc_log.h"
#include "lc_view.h"
#include "lc_addr.h"
#include "lc_listset.h"
#include "lc_schema.h"
#include "lc_redis.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WEB_LISTS 200
#define WEB_POSTS 20
#define WEB_API_LISTS 10000
#define WEB_DEFERS 200 /* deferred recipients shown on a post's page and in /api/posts/ID */

static int lc_word_in_list(const char *w, const char *const *words)
{
    for (; *words; words++)
        if (!strcmp(w, *words))
            return 1;
    return 0;
}

static const char style_css[] =
    "body{font-family:system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}\n"
    "header{background:#1d2430;color:#fff;padding:.8em 1.5em}\n"
    "header h1{margin:0;font-size:1.3em}header p{margin:.2em 0 0;color:#b8c0cc;font-size:.9em}\n"
    "main{padding:1em 1.5em;max-width:80em}\n"
    "h2{font-size:1.1em;margin:1.2em 0 .5em}\n"
    "table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002}\n"
    "th,td{padding:.4em .7em;text-align:left;border-bottom:1px solid #e3e6ea;font-size:.92em}\n"
    "th{background:#eef0f3;font-weight:600}\n"
    "td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}\n"
    "progress{width:10em;vertical-align:middle}\n"
    ".state{font-size:.8em;padding:.1em .5em;border-radius:.8em;background:#e3e6ea}\n"
    ".state-sending{background:#fff1c2}.state-done{background:#d5f2dc}\n"
    ".empty{color:#5c6675;font-style:italic}\n"
    "td.warn{color:#a4262c;font-weight:600}\n"
    "footer{padding:1em 1.5em;color:#5c6675;font-size:.85em}\n"
    "code{background:#eef0f3;padding:0 .3em}\n"
    "header h1 a{color:#fff;text-decoration:none}header nav{float:right;margin-top:-1.6em}\n"
    "header nav a{color:#fff;margin-right:1em}.who{color:#b8c0cc;margin-right:.5em}\n"
    "form.inline{display:inline}form.card{background:#fff;padding:1em;box-shadow:0 1px 2px #0002;max-width:40em}\n"
    "form.card label{display:block;margin:.4em 0}input,select,textarea{font:inherit;padding:.2em .4em}\n"
    "textarea{width:100%;min-height:4em}button{font:inherit;padding:.25em .9em;cursor:pointer}\n"
    ".error{color:#a40000;font-weight:600}.msg{font-size:1.1em}.hint{color:#5c6675}\n"
    ".charts{display:flex;gap:2em;flex-wrap:wrap}.chart{background:#fff;padding:.5em;box-shadow:0 1px 2px #0002}\n"
    ".pager a{margin-right:1em}h2.title{font-size:1.25em}table.kv{width:auto}\n"
    "section.held{background:#fff;padding:.5em 1em;margin:1em 0;box-shadow:0 1px 2px #0002}\n"
    "pre.excerpt{max-height:12em;overflow:auto;background:#f6f7f9;padding:.5em;font-size:.85em}\n"
    ".doc-ok .state{background:#d5f2dc}.doc-warn .state{background:#fff1c2}.doc-fail .state{background:#f8d0d0}\n"
    "pre.fix{white-space:pre-wrap;word-break:break-all;margin:0;font-size:.85em;background:#eef0f3;padding:.3em}\n";

void web_page_health(struct web_app *app, struct web_resp *r)
{
    r->type = "text/plain; charset=utf-8";
    if (web_db_ping(app->db) == 0) {
        r->status = 200;
        lc_buf_puts(r->body, "ok\n");
    } else {
        r->status = 503;
        lc_buf_puts(r->body, "redis unavailable\n");
    }
}

void web_page_style(struct web_app *app, struct web_resp *r)
{
    (void)app;
    r->type = "text/css; charset=utf-8";
    lc_buf_puts(r->body, style_css);
}

/* ---- dashboard ---------------------------------------------------------------------------------------------- */

struct dash {
    struct lc_list_view *lists;
    size_t nlists, total_lists;
    struct lc_post_view posts[WEB_POSTS];
    size_t nposts;
    double warn_rate, pause_rate; /* complaints.warn_rate / pause_rate (issue 7); a bad value reads as 0 */
};

/* load_dash reads everything the page shows under the Redis lock; 0 or -1 (err). */
static int load_dash(struct web_app *app, struct dash *d, char *err, size_t errlen)
{
    memset(d, 0, sizeof *d);
    if (lc_view_rate_parse(lc_cfg_str(app->cfg, "complaints.warn_rate"), &d->warn_rate) < 0)
        d->warn_rate = 0;
    if (lc_view_rate_parse(lc_cfg_str(app->cfg, "complaints.pause_rate"), &d->pause_rate) < 0)
        d->pause_rate = 0;
    redisContext *rc = web_db_get(app->db, err, errlen);
    int rcode = -1;
    if (rc) {
        long n = lc_view_lists(rc, WEB_LISTS, &d->lists, &d->total_lists, err, errlen);
        if (n >= 0) {
            d->nlists = (size_t)n;
            uint64_t *ids = NULL;
            long np = lc_view_recent_posts(rc, d->lists, d->nlists, WEB_POSTS, &ids, err, errlen);
            rcode = np < 0 ? -1 : 0;
            for (long i = 0; i < np && rcode == 0; i++) {
                int got = lc_view_post(rc, ids[i], 0, &d->posts[d->nposts], err, errlen);
                if (got < 0)
                    rcode = -1;
                else if (got == 1)
                    d->nposts++;
            }
            free(ids);
        }
    }
    web_db_put(app->db);
    return rcode;
}

static void free_dash(struct dash *d)
{
    lc_view_lists_free(d->lists, d->nlists);
    for (size_t i = 0; i < d->nposts; i++)
        lc_view_post_clear(&d->posts[i]);
}

static void td_num(struct lc_buf *b, long long v)
{
    lc_buf_printf(b, "<td class=\"num\">%lld</td>", v);
}

static void td_text(struct lc_buf *b, const char *s)
{
    lc_buf_puts(b, "<td>");
    web_html_esc(b, s);
    lc_buf_puts(b, "</td>");
}

static void list_link(struct lc_buf *b, const char *list, const char *suffix)
{
    lc_buf_puts(b, "/lists/");
    web_url_esc(b, list);
    lc_buf_puts(b, suffix);
}

/* td_complaints renders a list's complaint rate cell: the rate, a warning class at warn_rate or pause_rate, and
 * "paused" when the expander paused the list (resume: `listcast post resume LIST`). */
static void td_complaints(struct lc_buf *b, const struct dash *d, const struct lc_list_view *v)
{
    const char *lvl = lc_view_rate_level(v->rate_complaints, v->rate_delivered, d->warn_rate, d->pause_rate);
    int warn = v->paused || !strcmp(lvl, "warn") || !strcmp(lvl, "pause");
    lc_buf_printf(b, "<td class=\"num complaints%s\" title=\"complaints / delivered, latest posts\">",
                  warn ? " warn" : "");
    if (v->rate_delivered > 0)
        lc_buf_printf(b, "%.3f%%", 100.0 * (double)v->rate_complaints / (double)v->rate_delivered);
    else
        lc_buf_puts(b, "-");
    if (warn && !v->paused)
        lc_buf_puts(b, " &#9888;");
    if (v->paused)
        lc_buf_puts(b, " <strong class=\"paused\">paused</strong>");
    lc_buf_puts(b, "</td>");
}

static void render_lists(struct lc_buf *b, const struct web_req *req, const struct dash *d)
{
    lc_buf_puts(b, "<section><h2>Lists</h2>\n");
    if (d->nlists == 0) {
        lc_buf_puts(b, "<p class=\"empty\">No lists yet.</p>\n");
    } else {
        lc_buf_puts(b, "<table id=\"lists\"><thead><tr><th>List</th><th>Policy</th><th>Owner</th><th class=\"num\">"
                       "Subscribers</th><th class=\"num\">Active</th><th class=\"num\">Posts</th><th class=\"num\">"
                       "Complaints</th><th></th></tr>"
                       "</thead><tbody>\n");
        for (size_t i = 0; i < d->nlists; i++) {
            const struct lc_list_view *v = &d->lists[i];
            lc_buf_puts(b, "<tr><td><a href=\"");
            list_link(b, v->address, "");
            lc_buf_puts(b, "\">");
            web_html_esc(b, v->address);
            lc_buf_puts(b, "</a></td>");
            td_text(b, v->policy);
            td_text(b, *v->owner ? v->owner : "-");
            td_num(b, v->members);
            td_num(b, v->active);
            td_num(b, v->posts);
            td_complaints(b, d, v);
            lc_buf_puts(b, "<td><a href=\"");
            list_link(b, v->address, "/subscribers");
            lc_buf_puts(b, "\">subscribers</a></td></tr>\n");
        }
        lc_buf_puts(b, "</tbody></table>\n");
        if (d->total_lists > d->nlists)
            lc_buf_printf(b, "<p class=\"empty\">%zu more lists not shown.</p>\n", d->total_lists - d->nlists);
    }
    lc_buf_puts(b, "<h2>Create a list</h2><form method=\"post\" action=\"/lists\" class=\"card\" id=\"create-list\">");
    web_csrf_field(b, req);
    lc_buf_puts(b, "<label>Address <input name=\"address\" id=\"new-list\" required placeholder=\"news@lists.example"
                   ".org\"></label><label>Policy <select name=\"policy\" id=\"new-policy\"><option>members</option>"
                   "<option>open</option><option>moderated</option><option>announce</option></select></label>"
                   "<label>Owner <input name=\"owner\" placeholder=\"owner@example.org\"></label>"
                   "<button type=\"submit\">Create</button></form></section>\n");
}

static void state_badge(struct lc_buf *b, const char *state)
{
    char cls[24] = "";
    size_t k = 0;
    for (const char *s = state; *s && k < sizeof cls - 1; s++)
        if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z'))
            cls[k++] = *s;
    cls[k] = 0;
    lc_buf_printf(b, "<span class=\"state state-%s\">", cls);
    web_html_esc(b, *state ? state : "?");
    lc_buf_puts(b, "</span>");
}

static void progress(struct lc_buf *b, const struct lc_post_view *p)
{
    long long final = p->delivered + p->bounced, total = p->recipients > 0 ? p->recipients : 0;
    if (final > total)
        final = total;
    if (total > 0)
        lc_buf_printf(b, "<progress value=\"%lld\" max=\"%lld\">%lld%%</progress> <span class=\"pct\">%lld%%</span>",
                      final, total, final * 100 / total, final * 100 / total);
    else
        lc_buf_puts(b, "<progress></progress>");
}

static void render_posts(struct lc_buf *b, const struct dash *d)
{
    lc_buf_puts(b, "<section><h2>Latest posts</h2>\n");
    if (d->nposts == 0) {
        lc_buf_puts(b, "<p class=\"empty\">No posts yet.</p></section>\n");
        return;
    }
    lc_buf_puts(b, "<table id=\"posts\"><thead><tr><th class=\"num\">Post</th><th>List</th><th>From</th><th>Created"
                   "</th><th>State</th><th>Progress</th><th class=\"num\">Recipients</th><th class=\"num\">Delivered"
                   "</th><th class=\"num\">Deferred</th><th class=\"num\">Bounced</th><th class=\"num\">Pending"
                   "</th><th class=\"num\">Rate/s</th></tr></thead><tbody>\n");
    long long now = (long long)time(NULL);
    for (size_t i = 0; i < d->nposts; i++) {
        const struct lc_post_view *p = &d->posts[i];
        char when[64] = "-";
        time_t t = (time_t)p->created;
        struct tm tm;
        if (p->created > 0 && gmtime_r(&t, &tm))
            strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
        lc_buf_printf(b, "<tr><td class=\"num\"><a href=\"/posts/%llu\">%llu</a></td>", (unsigned long long)p->id,
                      (unsigned long long)p->id);
        td_text(b, p->list);
        td_text(b, *p->from ? p->from : "<>");
        td_text(b, when);
        lc_buf_puts(b, "<td>");
        state_badge(b, p->state);
        lc_buf_puts(b, "</td><td>");
        progress(b, p);
        lc_buf_puts(b, "</td>");
        td_num(b, p->recipients);
        td_num(b, p->delivered);
        td_num(b, p->deferred);
        td_num(b, p->bounced);
        td_num(b, p->pending);
        long long age = now - p->created;
        if (strcmp(p->state, "done") != 0 && age > 0)
            td_num(b, p->delivered / age);
        else
            lc_buf_puts(b, "<td class=\"num\">-</td>");
        lc_buf_puts(b, "</tr>\n");
    }
    lc_buf_puts(b, "</tbody></table></section>\n");
}

/* chart draws one bar per post (oldest left) of value/total in percent, as inline SVG. */
static void chart(struct lc_buf *b, const struct dash *d, const char *title, const char *id, int bounced,
                  const char *color)
{
    const int W = 360, H = 120, pad = 20;
    lc_buf_printf(b, "<figure class=\"chart\" id=\"%s\"><figcaption>", id);
    web_html_esc(b, title);
    lc_buf_printf(b, "</figcaption><svg width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\">"
                     "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#888\"/>"
                     "<text x=\"0\" y=\"12\" font-size=\"10\">100%%</text><text x=\"0\" y=\"%d\" font-size=\"10\">0"
                     "</text>", W, H, W, H, pad, H - pad, W, H - pad, H - pad);
    size_t n = d->nposts;
    double bw = n ? (double)(W - pad - 10) / (double)n : 0;
    for (size_t k = 0; k < n; k++) {
        const struct lc_post_view *p = &d->posts[n - 1 - k]; /* oldest first */
        double total = p->recipients > 0 ? (double)p->recipients : 0;
        double v = bounced ? (double)p->bounced : (double)p->delivered;
        double frac = total > 0 ? v / total : 0;
        double h = frac * (H - 2 * pad);
        lc_buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>post %llu: "
                         "%.1f%%</title></rect>", pad + 5 + k * bw, H - pad - h, bw > 2 ? bw - 2 : 1, h, color,
                      (unsigned long long)p->id, frac * 100);
    }
    lc_buf_puts(b, "</svg></figure>\n");
}

void web_page_dashboard(struct web_app *app, struct web_req *req, struct web_resp *r)
{
    struct dash d;
    char err[512];
    int ok = load_dash(app, &d, err, sizeof err) == 0;
    web_page_start(r, req, "Dashboard", 5);
    struct lc_buf *b = r->body;
    lc_buf_puts(b, "<p class=\"hint\">node ");
    web_html_esc(b, lc_cfg_str(app->cfg, "node.name"));
    lc_buf_puts(b, " &middot; SMTP on ");
    web_html_esc(b, lc_cfg_str(app->cfg, "smtp.listen"));
    lc_buf_puts(b, " &middot; refreshed every 5 s</p>\n");
    if (!ok) {
        r->status = 503;
        lc_buf_puts(b, "<section><h2>Redis unavailable</h2><p class=\"empty\">");
        web_html_esc(b, err);
        lc_buf_puts(b, "</p></section>\n");
    } else {
        render_posts(b, &d);
        if (d.nposts) {
            lc_buf_puts(b, "<section><h2>Rates by post (oldest left)</h2><div class=\"charts\">");
            chart(b, &d, "Delivered, % of recipients", "chart-delivered", 0, "#2e8b57");
            chart(b, &d, "Bounced (incl. complaints), % of recipients", "chart-bounced", 1, "#c0392b");
            lc_buf_puts(b, "</div></section>\n");
        }
        render_lists(b, req, &d);
    }
    web_page_end(r);
    free_dash(&d);
}

/* ---- post detail ---------------------------------------------------------------------------------------- */

static int parse_id(const char *id, uint64_t *out)
{
    if (!*id || strspn(id, "0123456789") != strlen(id) || strlen(id) > 19)
        return -1;
    *out = strtoull(id, NULL, 10);
    return *out ? 0 : -1;
}

/* render_defers writes the "Deferred recipients" table: each recipient waiting for a retry with its last reply. */
static void render_defers(struct lc_buf *b, const struct lc_post_view *p)
{
    lc_buf_puts(b, "<h2>Deferred recipients</h2>");
    if (!p->ndefer) {
        lc_buf_puts(b, "<p class=\"empty\">No recipient is waiting for a retry.</p>\n");
        return;
    }
    lc_buf_puts(b, "<table id=\"deferrals\"><thead><tr><th>Address</th><th>Last reply</th><th>When</th><th class="
                   "\"num\">Attempt</th></tr></thead><tbody>\n");
    for (size_t i = 0; i < p->ndefer; i++) {
        const struct lc_defer_view *d = &p->defer[i];
        char when[64] = "-";
        time_t t = (time_t)d->at;
        struct tm tm;
        if (d->at > 0 && gmtime_r(&t, &tm))
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
        lc_buf_puts(b, "<tr>");
        td_text(b, d->address);
        td_text(b, d->reply);
        td_text(b, when);
        td_num(b, d->attempt);
        lc_buf_puts(b, "</tr>\n");
    }
    lc_buf_puts(b, "</tbody></table>\n");
    if (p->ndefer_total > (long long)p->ndefer)
        lc_buf_printf(b, "<p id=\"deferrals-more\">and %lld more</p>\n", p->ndefer_total - (long long)p->ndefer);
}

void web_page_post(struct web_app *app, struct web_req *req, const char *id, struct web_resp *r)
{
    uint64_t pid;
    if (parse_id(id, &pid) < 0) {
        web_html_error(r, req, 404, "no such post");
        return;
    }
    char err[512];
    struct lc_post_view p;
    memset(&p, 0, sizeof p);
    int got = -1;
    redisContext *rc = web_db_get(app->db, err, sizeof err);
    if (rc) {
        got = lc_view_post(rc, pid, 1, &p, err, sizeof err);
        if (got > 0 && lc_view_post_defers(rc, &p, WEB_DEFERS, err, sizeof err) < 0)
            got = -1;
    }
    web_db_put(app->db);
    if (got <= 0) {
        lc_view_post_clear(&p);
        web_html_error(r, req, got < 0 ? 503 : 404, got < 0 ? "redis unavailable" : "no such post");
        return;
    }
    char title[64];
    snprintf(title, sizeof title, "Post %llu", (unsigned long long)pid);
    web_page_start(r, req, title, strcmp(p.state, "done") ? 3 : 0);
    struct lc_buf *b = r->body;
    lc_buf_puts(b, "<table class=\"kv\"><tbody><tr><th>List</th>");
    td_text(b, p.list);
    lc_buf_puts(b, "</tr><tr><th>From</th>");
    td_text(b, *p.from ? p.from : "<>");
    lc_buf_puts(b, "</tr><tr><th>State</th><td id=\"post-state\">");
    state_badge(b, p.state);
    lc_buf_puts(b, "</td></tr><tr><th>Progress</th><td id=\"post-progress\">");
    progress(b, &p);
    lc_buf_printf(b, "</td></tr><tr><th>Recipients</th><td>%lld</td></tr><tr><th>Delivered</th><td>%lld</td></tr>"
                     "<tr><th>Deferred</th><td>%lld</td></tr><tr><th>Bounced</th><td>%lld</td></tr><tr><th>Pending"
                     "</th><td>%lld</td></tr><tr><th>Size</th><td>%lld bytes</td></tr></tbody></table>\n",
                  p.recipients, p.delivered, p.deferred, p.bounced, p.pending, p.size);
    lc_buf_puts(b, "<h2>By domain</h2>");
    if (!p.ndom) {
        lc_buf_puts(b, "<p class=\"empty\">No deliveries yet.</p>");
    } else {
        lc_buf_puts(b, "<table id=\"domains\"><thead><tr><th>Domain</th><th class=\"num\">Delivered</th><th class="
                       "\"num\">Deferred</th><th class=\"num\">Bounced</th></tr></thead><tbody>\n");
        for (size_t i = 0; i < p.ndom && i < 1000; i++) {
            lc_buf_puts(b, "<tr>");
            td_text(b, p.dom[i].domain);
            td_num(b, p.dom[i].delivered);
            td_num(b, p.dom[i].deferred);
            td_num(b, p.dom[i].bounced);
            lc_buf_puts(b, "</tr>\n");
        }
        lc_buf_puts(b, "</tbody></table>\n");
    }
    render_defers(b, &p);
    web_page_end(r);
    lc_view_post_clear(&p);
}

/* ---- lists: create, settings ------------------------------------------------------------------------------ */

#define WEB_SETTING_MAX 4096

static const char *const policies[] = {"open", "members", "moderated", "announce", NULL};
/* settings fields a form or JSON may write (see schema/SCHEMA.md) */
static const char *const settings[] = {"policy", "owner", "owners", "moderators", "subject_prefix", "footer",
                                       "max_message_size", NULL};

/* KEYS: list hash, list counter, set of lists, set of domains. ARGV: address, policy, owner, created, domain.
 * The same script as `listcast list create` (appliance/lc_list.c). Returns the new id, or 0 if it exists. */
static const char create_lua[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
    "local id = redis.call('INCR', KEYS[2])\n"
    "redis.call('HSET', KEYS[1], 'address', ARGV[1], 'id', id, 'policy', ARGV[2], 'owner', ARGV[3],\n"
    "           'created', ARGV[4])\n"
    "redis.call('SADD', KEYS[3], ARGV[1])\n"
    "redis.call('SADD', KEYS[4], ARGV[5])\n"
    "return id\n";

int web_list_norm(struct web_app *app, const char *arg, char *out)
{
    const char *why;
    if (lc_addr_norm(arg, strlen(arg), out, &why) < 0)
        return 0;
    char key[LC_KEY_MAX], err[256];
    lc_key_list(key, sizeof key, out);
    int res = -1;
    redisContext *rc = web_db_get(app->db, err, sizeof err);
    if (rc) {
        redisReply *x = redisCommand(rc, "EXISTS %s", key);
        if (x && x->type == REDIS_REPLY_INTEGER)
            res = x->integer ? 1 : 0;
        freeReplyObject(x);
    }
    web_db_put(app->db);
    return res;
}

/* field reads a named input from the JSON body (API) or the form: 1 given, 0 not, -1 malformed/too long. */
static int field(const struct web_req *req, const struct web_jv *jv, const char *name, char *out, size_t outlen)
{
    if (jv) {
        const char *s = web_json_str(jv, name);
        if (!s)
            return web_json_has(jv, name) ? -1 : 0;
        if (strlen(s) >= outlen)
            return -1;
        snprintf(out, outlen, "%s", s);
        return 1;
    }
    return web_form_get(lc_buf_data(req->body), name, out, outlen);
}

/* body_input parses the request body: JSON for the API (*jv), a form for pages; -1 after answering 400. */
static int body_input(const struct web_req *req, struct web_jv **jv, struct web_resp *r)
{
    *jv = NULL;
    if (web_is_api(req)) {
        char err[256];
        *jv = web_json_parse(lc_buf_data(req->body), lc_buf_len(req->body), err, sizeof err);
        if (!*jv) {
            web_json_error(r, 400, err);
            return -1;
        }
        return 0;
    }
    if (web_form_check(lc_buf_data(req->body)) < 0) {
        web_html_error(r, req, 400, "Malformed form; nothing was changed.");
        return -1;
    }
    return 0;
}

void web_do_list_create(struct web_app *app, struct web_req *req, struct web_resp *r)
{
    struct web_jv *jv;
    if (body_input(req, &jv, r) < 0)
        return;
    char addr[LC_ADDR_MAX + 1], policy[32] = "members", owner[LC_ADDR_MAX + 1] = "", list[LC_ADDR_MAX + 1],
        oarg[LC_ADDR_MAX + 1] = "";
    const char *why = "missing";
    int fa = field(req, jv, "address", addr, sizeof addr), fp = field(req, jv, "policy", policy, sizeof policy),
        fo = field(req, jv, "owner", oarg, sizeof oarg);
    web_json_free(jv);
    if (fa != 1 || lc_addr_norm(addr, strlen(addr), list, &why) < 0) {
        char msg[200];
        snprintf(msg, sizeof msg, "bad list address (%s); nothing was changed", fa == 1 ? why : "missing");
        web_err(r, req, 400, msg);
        return;
    }
    if (fp < 0 || !lc_word_in_list(policy, policies)) {
        web_err(r, req, 400, "unknown policy (open, members, moderated or announce); nothing was changed");
        return;
    }
    if (fo < 0 || (*oarg && lc_addr_norm(oarg, strlen(oarg), owner, &why) < 0)) {
        web_err(r, req, 400, "bad owner address; nothing was changed");
        return;
    }
    char klist[LC_KEY_MAX], created[24], err[256];
    lc_key_list(klist, sizeof klist, list);
    snprintf(created, sizeof created, "%lld", (long long)time(NULL));
    long long id = -1;
    redisContext *rc = web_db_get(app->db, err, sizeof err);
    if (rc) {
        const char *argv[] = {"EVAL", create_lua, "4", klist, LC_K_SEQ_LIST, LC_K_LISTS, LC_K_DOMAINS, list, policy,
                              owner, created, lc_addr_domain(list)};
        redisReply *x = lc_redis_cmdv(rc, 12, argv, NULL, err, sizeof err);
        if (x && x->type == REDIS_REPLY_INTEGER)
            id = x->integer;
        freeReplyObject(x);
    }
    web_db_put(app->db);
    if (id < 0) {
        web_err(r, req, 503, "redis unavailable");
        return;
    }
    if (id == 0) {
        web_err(r, req, 409, "the list exists already");
        return;
    }
    lc_info("list=%s created policy=%s by user=%s", list, policy, req->user);
    if (web_is_api(req)) {
        web_api_list(app, list, r);
        r->status = 201;
    } else {
        struct lc_buf *loc = lc_buf_new(2048);
        list_link(loc, list, "");
        web_redirect(r, lc_buf_data(loc));
        lc_buf_free(loc);
    }
}

/* addr_list normalises a list of addresses separated by commas or spaces into one space between normalised
 * addresses (the form of lc:list:LIST moderators); -1 if one is invalid. */
static int addr_list(char *s)
{
    char out[WEB_SETTING_MAX] = "", a[LC_ADDR_MAX + 1];
    size_t k = 0;
    for (char *p = s; *p;) {
        p += strspn(p, ", \t\n");
        size_t n = strcspn(p, ", \t\n");
        if (!n)
            break;
        const char *why;
        if (lc_addr_norm(p, n, a, &why) < 0 || k + strlen(a) + 2 >= sizeof out)
            return -1;
        k += (size_t)snprintf(out + k, sizeof out - k, "%s%s", k ? " " : "", a);
        p += n;
    }
    snprintf(s, WEB_SETTING_MAX, "%s", out);
    return 0;
}

void web_do_list_save(struct web_app *app, struct web_req *req, const char *arg, struct web_resp *r)
{
    char list[LC_ADDR_MAX + 1];
    int ex = web_list_norm(app, arg, list);
    if (ex <= 0) {
        web_err(r, req, ex < 0 ? 503 : 404, ex < 0 ? "redis unavailable" : "no such list");
        return;
    }
    struct web_jv *jv;
    if (body_input(req, &jv, r) < 0)
        return;
    const char *argv[4 + 2 * 8 + 2 * LC_LISTSET_MAX];
    char vals[8][WEB_SETTING_MAX];
    int argc = 2, bad = 0;
    char klist[LC_KEY_MAX];
    lc_key_list(klist, sizeof klist, list);
    argv[0] = "HSET";
    argv[1] = klist;
    for (int i = 0; settings[i]; i++) {
        int f = field(req, jv, settings[i], vals[i], sizeof vals[i]);
        if (f < 0) {
            bad = 1;
            continue;
        }
        if (f == 0)
            continue;
        if (!strcmp(settings[i], "policy") && !lc_word_in_list(vals[i], policies))
            bad = 1;
        if (!strcmp(settings[i], "max_message_size") && *vals[i] &&
            strspn(vals[i], "0123456789") != strlen(vals[i]))
            bad = 1;
        if (strchr(vals[i], '\r') && strcmp(settings[i], "footer") != 0)
            bad = 1;
        if ((!strcmp(settings[i], "owners") || !strcmp(settings[i], "moderators")) && addr_list(vals[i]) < 0)
            bad = 1;
        argv[argc++] = settings[i];
        argv[argc++] = vals[i];
    }
    /* the numeric and one-word settings of schema/lc_listset.c: set, or back to the default when empty */
    const char *hdel[2 + LC_LISTSET_MAX];
    char tun[LC_LISTSET_MAX][LC_LISTSET_VAL], tunin[WEB_SETTING_MAX], why[256] = "";
    int ndel = 2;
    hdel[0] = "HDEL";
    hdel[1] = klist;
    for (int i = 0; lc_listsets[i].name && i < LC_LISTSET_MAX; i++) {
        const struct lc_listset *ls = &lc_listsets[i];
        int f = field(req, jv, ls->name, tunin, sizeof tunin);
        if (f == 0)
            continue;
        if (f < 0 || lc_listset_check(ls, tunin, tun[i], sizeof tun[i], why, sizeof why) < 0) {
            bad = 1;
            if (!*why)
                snprintf(why, sizeof why, "%s: value too long", ls->name);
            continue;
        }
        if (*tun[i]) {
            argv[argc++] = ls->name;
            argv[argc++] = tun[i];
        } else {
            hdel[ndel++] = ls->name;
        }
    }
    web_json_free(jv);
    if (bad) {
        char msg[512];
        snprintf(msg, sizeof msg, "bad setting (%s); nothing was changed",
                 *why ? why : "unknown policy, an invalid owner or moderator address, a size that is not a number, "
                              "or a value too long");
        web_err(r, req, 400, msg);
        return;
    }
    char err[256];
    int ok = argc == 2 && ndel == 2;
    if (argc > 2 || ndel > 2) {
        redisContext *rc = web_db_get(app->db, err, sizeof err);
        if (rc) {
            /* one MULTI/EXEC: the fields set and the fields reset change together */
            redisReply *x = lc_redis_cmd(rc, err, sizeof err, "MULTI");
            ok = x != NULL;
            freeReplyObject(x);
            if (ok && argc > 2) {
                x = lc_redis_cmdv(rc, argc, argv, NULL, err, sizeof err);
                ok = x != NULL;
                freeReplyObject(x);
            }
            if (ok && ndel > 2) {
                x = lc_redis_cmdv(rc, ndel, hdel, NULL, err, sizeof err);
                ok = x != NULL;
                freeReplyObject(x);
            }
            x = lc_redis_cmd(rc, err, sizeof err, ok ? "EXEC" : "DISCARD");
            ok = ok && x && x->type == REDIS_REPLY_ARRAY;
            freeReplyObject(x);
        }
        web_db_put(app->db);
    }
    if (!ok) {
        web_err(r, req, 503, "redis unavailable");
        return;
    }
    lc_info("list=%s settings saved (%d fields, %d reset) by user=%s", list, (argc - 2) / 2, ndel - 2, req->user);
    if (web_is_api(req)) {
        web_api_list(app, list, r);
    } else {
        struct lc_buf *loc = lc_buf_new(2048);
        list_link(loc, list, "?saved=1");
        web_redirect(r, lc_buf_data(loc));
        lc_buf_free(loc);
    }
}

/* load_settings reads the list's settings fields into vals (empty when missing); 1, 0 no list, -1 error. */
static int load_settings(struct web_app *app, const char *list, char vals[][WEB_SETTING_MAX])
{
    char klist[LC_KEY_MAX], err[256];
    lc_key_list(klist, sizeof klist, list);
    int res = -1;
    redisContext *rc = web_db_get(app->db, err, sizeof err);
    if (rc) {
        redisReply *x = redisCommand(rc, "HMGET %s policy owner owners moderators subject_prefix footer "
                                         "max_message_size address", klist);
        if (x && x->type == REDIS_REPLY_ARRAY && x->elements == 8) {
            res = x->element[7]->type == REDIS_REPLY_STRING;
            for (int i = 0; i < 7; i++)
                snprintf(vals[i], WEB_SETTING_MAX, "%s",
                         x->element[i]->type == REDIS_REPLY_STRING ? x->element[i]->str : "");
        }
        freeReplyObject(x);
    }
    web_db_put(app->db);
    return res;
}

/* load_tuning reads the list's lc_listset fields into tun (empty when absent: the default applies); 0 or -1. */
static int load_tuning(struct web_app *app, const char *list, char tun[][LC_LISTSET_VAL])
{
    char klist[LC_KEY_MAX], err[256];
    lc_key_list(klist, sizeof klist, list);
    const char *argv[2 + LC_LISTSET_MAX];
    int argc = 2, n = 0;
    argv[0] = "HMGET";
    argv[1] = klist;
    for (; lc_listsets[n].name && n < LC_LISTSET_MAX; n++)
        argv[argc++] = lc_listsets[n].name;
    int res = -1;
    redisContext *rc = web_db_get(app->db, err, sizeof err);
    if (rc) {
        redisReply *x = lc_redis_cmdv(rc, argc, argv, NULL, err, sizeof err);
        if (x && x->type == REDIS_REPLY_ARRAY && x->elements == (size_t)n) {
            res = 0;
            for (int i = 0; i < n; i++)
                snprintf(tun[i], LC_LISTSET_VAL, "%s",
                         x->element[i]->type == REDIS_REPLY_STRING ? x->element[i]->str : "");
        }
        freeReplyObject(x);
    }
    web_db_put(app->db);
    return res;
}

/* render_tuning writes the form fields of the lc_listset settings: a select for words, a number input otherwise
 * (empty: the default, shown as the placeholder). */
static void render_tuning(struct lc_buf *b, char tun[][LC_LISTSET_VAL])
{
    lc_buf_puts(b, "<fieldset><legend>Delivery and bounces</legend>");
    for (int i = 0; lc_listsets[i].name && i < LC_LISTSET_MAX; i++) {
        const struct lc_listset *ls = &lc_listsets[i];
        lc_buf_printf(b, "<label title=\"");
        web_html_esc(b, ls->help);
        lc_buf_printf(b, "\">%s ", ls->name);
        if (ls->kind == LC_LS_WORD) {
            lc_buf_printf(b, "<select name=\"%s\">", ls->name);
            const char *cur = *tun[i] ? tun[i] : ls->def;
            for (const char *p = ls->choices; *p;) {
                size_t m = strcspn(p, " ");
                lc_buf_printf(b, "<option%s>%.*s</option>", strlen(cur) == m && !strncmp(cur, p, m) ? " selected" : "",
                              (int)m, p);
                p += m;
                p += strspn(p, " ");
            }
            lc_buf_puts(b, "</select>");
        } else {
            lc_buf_printf(b, "<input name=\"%s\" inputmode=\"decimal\" placeholder=\"%s\" value=\"", ls->name, ls->def);
            web_html_esc(b, tun[i]);
            lc_buf_puts(b, "\">");
        }
        lc_buf_puts(b, "</label>");
    }
    lc_buf_puts(b, "</fieldset>");
}

void web_page_list(struct web_app *app, struct web_req *req, const char *arg, struct web_resp *r)
{
    char list[LC_ADDR_MAX + 1];
    const char *why;
    static char zero[1];
    (void)zero;
    if (lc_addr_norm(arg, strlen(arg), list, &why) < 0) {
        web_html_error(r, req, 404, "no such list");
        return;
    }
    char (*vals)[WEB_SETTING_MAX] = lc_calloc(8, WEB_SETTING_MAX);
    int got = load_settings(app, list, vals);
    if (got <= 0) {
        free(vals);
        web_html_error(r, req, got < 0 ? 503 : 404, got < 0 ? "redis unavailable" : "no such list");
        return;
    }
    web_page_start(r, req, list, 0);
    struct lc_buf *b = r->body;
    if (web_query(req, "saved"))
        lc_buf_puts(b, "<p class=\"msg\" id=\"saved\">Settings saved.</p>\n");
    lc_buf_puts(b, "<p><a href=\"");
    list_link(b, list, "/subscribers");
    lc_buf_puts(b, "\">Subscribers</a> &middot; <a href=\"");
    list_link(b, list, "/import");
    lc_buf_puts(b, "\">Import CSV</a> &middot; <a href=\"");
    list_link(b, list, "/export");
    lc_buf_puts(b, "\">Export CSV</a> &middot; <a href=\"");
    list_link(b, list, "/bounces");
    lc_buf_puts(b, "\">Bounce report</a> &middot; <a id=\"doctor-link\" href=\"/doctor/");
    web_url_esc(b, lc_addr_domain(list));
    lc_buf_puts(b, "\">Check the sending domain</a></p>\n<h2>Settings</h2><form method=\"post\" class=\"card\" "
                   "id=\"settings\" action=\"");
    list_link(b, list, "");
    lc_buf_puts(b, "\">");
    web_csrf_field(b, req);
    lc_buf_puts(b, "<label>Policy <select name=\"policy\">");
    for (int i = 0; policies[i]; i++) {
        lc_buf_printf(b, "<option%s>%s</option>", strcmp(vals[0], policies[i]) ? "" : " selected", policies[i]);
    }
    lc_buf_puts(b, "</select></label>");
    static const char *const labels[] = {NULL, "Owner", "Owners (addresses)", "Moderators (addresses)",
                                         "Subject prefix", "Footer", "Largest message (bytes, 0 = default)"};
    for (int i = 1; i < 7; i++) {
        lc_buf_printf(b, "<label>%s ", labels[i]);
        if (i == 5) {
            lc_buf_printf(b, "<textarea name=\"%s\">", settings[i]);
            web_html_esc(b, vals[i]);
            lc_buf_puts(b, "</textarea>");
        } else {
            lc_buf_printf(b, "<input name=\"%s\" value=\"", settings[i]);
            web_html_esc(b, vals[i]);
            lc_buf_puts(b, "\">");
        }
        lc_buf_puts(b, "</label>");
    }
    char tun[LC_LISTSET_MAX][LC_LISTSET_VAL];
    if (load_tuning(app, list, tun) == 0)
        render_tuning(b, tun);
    lc_buf_puts(b, "<button type=\"submit\" id=\"save\">Save</button></form>\n");
    web_page_end(r);
    free(vals);
}

/* ---- JSON API ---------------------------------------------------------------------------------------------- */

void web_api_lists(struct web_app *app, struct web_resp *r)
{
    char err[512];
    struct lc_list_view *v = NULL;
    size_t total = 0;
    long n = -1;
    redisContext *rc = web_db_get(app->db, err, sizeof err);
    if (rc)
        n = lc_view_lists(rc, WEB_API_LISTS, &v, &total, err, sizeof err);
    web_db_put(app->db);
    if (n < 0) {
        lc_warn("api lists: %s", err);
        web_json_error(r, 503, "redis unavailable");
        return;
    }
    r->type = "application/json";
    struct lc_json *j = lc_json_new_buf(r->body, 0);
    lc_json_arr(j);
    for (long i = 0; i < n; i++)
        lc_view_list_json(j, &v[i]);
    lc_json_end(j);
    if (lc_json_free(j) < 0)
        web_json_error(r, 500, "response too large");
    lc_view_lists_free(v, (size_t)n);
}

void web_api_post(struct web_app *app, const char *id, struct web_resp *r)
{
    if (!*id || strspn(id, "0123456789") != strlen(id) || strlen(id) > 19) {
        web_json_error(r, 404, "not found");
        return;
    }
    uint64_t pid = strtoull(id, NULL, 10);
    if (pid == 0) {
        web_json_error(r, 404, "not found");
        return;
    }
    char err[512];
    struct lc_post_view p;
    int got = -1;
    memset(&p, 0, sizeof p);
    redisContext *rc = web_db_get(app->db, err, sizeof err);
    if (rc) {
        got = lc_view_post(rc, pid, 1, &p, err, sizeof err);
        if (got > 0 && lc_view_post_defers(rc, &p, WEB_DEFERS, err, sizeof err) < 0)
            got = -1;
    }
    web_db_put(app->db);
    if (got <= 0)
        lc_view_post_clear(&p);
    if (got < 0) {
        lc_warn("api post=%llu: %s", (unsigned long long)pid, err);
        web_json_error(r, 503, "redis unavailable");
        return;
    }
    if (got == 0) {
        web_json_error(r, 404, "no such post");
        return;
    }
    r->type = "application/json";
    struct lc_json *j = lc_json_new_buf(r->body, 0);
    lc_view_post_json(j, &p);
    if (lc_json_free(j) < 0)
        web_json_error(r, 500, "response too large");
    lc_view_post_clear(&p);
}

void web_api_list(struct web_app *app, const char *arg, struct web_resp *r)
{
    char list[LC_ADDR_MAX + 1], err[512];
    const char *why;
    if (lc_addr_norm(arg, strlen(arg), list, &why) < 0) {
        web_json_error(r, 404, "no such list");
        return;
    }
    struct lc_list_view v;
    memset(&v, 0, sizeof v);
    int got = -1;
    redisContext *rc = web_db_get(app->db, err, sizeof err);
    if (rc)
        got = lc_view_list(rc, list, &v, err, sizeof err);
    web_db_put(app->db);
    char (*vals)[WEB_SETTING_MAX] = lc_calloc(8, WEB_SETTING_MAX);
    char tun[LC_LISTSET_MAX][LC_LISTSET_VAL];
    if (got == 1 && (load_settings(app, list, vals) < 0 || load_tuning(app, list, tun) < 0))
        got = -1;
    if (got <= 0) {
        web_json_error(r, got < 0 ? 503 : 404, got < 0 ? "redis unavailable" : "no such list");
    } else {
        lc_buf_reset(r->body);
        r->type = "application/json";
        struct lc_json *j = lc_json_new_buf(r->body, 0);
        lc_json_obj(j);
        lc_json_kstr(j, "address", v.address);
        lc_json_kint(j, "id", v.id);
        lc_json_kint(j, "created", v.created);
        lc_json_kint(j, "subscribers", v.members);
        lc_json_kint(j, "active", v.active);
        lc_json_kint(j, "posts", v.posts);
        for (int i = 0; settings[i]; i++)
            lc_json_kstr(j, settings[i], vals[i]);
        for (int i = 0; lc_listsets[i].name && i < LC_LISTSET_MAX; i++) /* the value in effect */
            lc_json_kstr(j, lc_listsets[i].name, *tun[i] ? tun[i] : lc_listsets[i].def);
        lc_json_end(j);
        if (lc_json_free(j) < 0)
            web_json_error(r, 500, "response too large");
    }
    free(vals);
    lc_view_list_clear(&v);
}
