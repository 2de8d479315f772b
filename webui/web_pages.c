/* web_pages: the routes of listcast-webui: /healthz, the HTML dashboard, its stylesheet and the JSON API.
 *
 * Contract: every value taken from Redis is HTML-escaped (web_html_esc) or JSON-escaped (lc_json) on output;
 * the page has no script and no inline style (the CSP is default-src 'self'): progress bars are <progress>
 * elements, the look comes from /style.css. Data is read with lc_view (shared with the CLI), under the Redis
 * lock, into copies; the page is rendered after the lock is released.
 * Limits: the dashboard shows at most WEB_LISTS lists and the WEB_POSTS newest posts; /api/lists returns at
 * most WEB_API_LISTS lists.
 */
#include "web.h"
#include "lc_buf.h"
#include "lc_cfg.h"
#include "lc_json.h"
#include "lc_log.h"
#include "lc_view.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WEB_LISTS 200
#define WEB_POSTS 20
#define WEB_API_LISTS 10000

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
    "footer{padding:1em 1.5em;color:#5c6675;font-size:.85em}\n"
    "code{background:#eef0f3;padding:0 .3em}\n";

void web_html_esc(struct lc_buf *b, const char *s)
{
    const char *run = s;
    for (; *s; s++) {
        const char *rep = NULL;
        switch (*s) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&#39;"; break;
        default: break;
        }
        if (rep) {
            lc_buf_append(b, run, (size_t)(s - run));
            lc_buf_puts(b, rep);
            run = s + 1;
        }
    }
    lc_buf_append(b, run, (size_t)(s - run));
}

void web_json_error(struct web_resp *r, int status, const char *msg)
{
    lc_buf_reset(r->body);
    r->status = status;
    r->type = "application/json";
    struct lc_json *j = lc_json_new_buf(r->body, 0);
    lc_json_obj(j);
    lc_json_kstr(j, "error", msg);
    lc_json_end(j);
    lc_json_free(j);
}

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
};

/* load_dash reads everything the page shows under the Redis lock; 0 or -1 (err). */
static int load_dash(struct web_app *app, struct dash *d, char *err, size_t errlen)
{
    memset(d, 0, sizeof *d);
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

static void render_lists(struct lc_buf *b, const struct dash *d)
{
    lc_buf_puts(b, "<section><h2>Lists</h2>\n");
    if (d->nlists == 0) {
        lc_buf_puts(b, "<p class=\"empty\">No lists yet. Create one with "
                       "<code>listcast list create LIST@DOMAIN</code>.</p></section>\n");
        return;
    }
    lc_buf_puts(b, "<table><thead><tr><th>List</th><th>Policy</th><th>Owner</th><th class=\"num\">Subscribers"
                   "</th><th class=\"num\">Active</th><th class=\"num\">Posts</th></tr></thead><tbody>\n");
    for (size_t i = 0; i < d->nlists; i++) {
        const struct lc_list_view *v = &d->lists[i];
        lc_buf_puts(b, "<tr>");
        td_text(b, v->address);
        td_text(b, v->policy);
        td_text(b, *v->owner ? v->owner : "-");
        td_num(b, v->members);
        td_num(b, v->active);
        td_num(b, v->posts);
        lc_buf_puts(b, "</tr>\n");
    }
    lc_buf_puts(b, "</tbody></table>\n");
    if (d->total_lists > d->nlists)
        lc_buf_printf(b, "<p class=\"empty\">%zu more lists not shown.</p>\n", d->total_lists - d->nlists);
    lc_buf_puts(b, "</section>\n");
}

static void render_posts(struct lc_buf *b, const struct dash *d)
{
    lc_buf_puts(b, "<section><h2>Latest posts</h2>\n");
    if (d->nposts == 0) {
        lc_buf_puts(b, "<p class=\"empty\">No posts yet.</p></section>\n");
        return;
    }
    lc_buf_puts(b, "<table><thead><tr><th class=\"num\">Post</th><th>List</th><th>From</th><th>Created</th>"
                   "<th>State</th><th>Progress</th><th class=\"num\">Recipients</th><th class=\"num\">Delivered"
                   "</th><th class=\"num\">Deferred</th><th class=\"num\">Bounced</th><th class=\"num\">Pending"
                   "</th></tr></thead><tbody>\n");
    for (size_t i = 0; i < d->nposts; i++) {
        const struct lc_post_view *p = &d->posts[i];
        char when[64] = "-";
        time_t t = (time_t)p->created;
        struct tm tm;
        if (p->created > 0 && gmtime_r(&t, &tm))
            strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
        long long final = p->delivered + p->bounced, total = p->recipients > 0 ? p->recipients : 0;
        if (final > total)
            final = total;
        lc_buf_printf(b, "<tr><td class=\"num\"><a href=\"/api/posts/%llu\">%llu</a></td>",
                      (unsigned long long)p->id, (unsigned long long)p->id);
        td_text(b, p->list);
        td_text(b, *p->from ? p->from : "<>");
        td_text(b, when);
        /* the state is escaped twice over: as a class name (letters only) and as text */
        char cls[24] = "";
        size_t k = 0;
        for (const char *s = p->state; *s && k < sizeof cls - 1; s++)
            if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z'))
                cls[k++] = *s;
        cls[k] = 0;
        lc_buf_printf(b, "<td><span class=\"state state-%s\">", cls);
        web_html_esc(b, *p->state ? p->state : "?");
        lc_buf_puts(b, "</span></td>");
        if (total > 0)
            lc_buf_printf(b, "<td><progress value=\"%lld\" max=\"%lld\">%lld%%</progress> %lld%%</td>", final,
                          total, final * 100 / total, final * 100 / total);
        else
            lc_buf_puts(b, "<td><progress></progress></td>");
        td_num(b, p->recipients);
        td_num(b, p->delivered);
        td_num(b, p->deferred);
        td_num(b, p->bounced);
        td_num(b, p->pending);
        lc_buf_puts(b, "</tr>\n");
    }
    lc_buf_puts(b, "</tbody></table></section>\n");
}

void web_page_dashboard(struct web_app *app, struct web_resp *r)
{
    struct dash d;
    char err[512];
    struct lc_buf *b = r->body;
    r->type = "text/html; charset=utf-8";
    int ok = load_dash(app, &d, err, sizeof err) == 0;
    lc_buf_puts(b, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                   "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                   "<meta http-equiv=\"refresh\" content=\"5\">"
                   "<title>listcast</title><link rel=\"stylesheet\" href=\"/style.css\"></head>\n<body>\n"
                   "<header><h1>listcast</h1><p>node ");
    web_html_esc(b, lc_cfg_str(app->cfg, "node.name"));
    lc_buf_puts(b, " &middot; SMTP on ");
    web_html_esc(b, lc_cfg_str(app->cfg, "smtp.listen"));
    lc_buf_puts(b, "</p></header>\n<main>\n");
    if (!ok) {
        r->status = 503;
        lc_buf_puts(b, "<section><h2>Redis unavailable</h2><p class=\"empty\">");
        web_html_esc(b, err);
        lc_buf_puts(b, "</p></section>\n");
    } else {
        render_lists(b, &d);
        render_posts(b, &d);
    }
    lc_buf_puts(b, "</main>\n<footer>Read-only view, refreshed every 5 s. JSON: <a href=\"/api/lists\">"
                   "/api/lists</a>, /api/posts/ID. Sign-in and editing come in a later version.</footer>\n"
                   "</body></html>\n");
    free_dash(&d);
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
    if (rc)
        got = lc_view_post(rc, pid, 1, &p, err, sizeof err);
    web_db_put(app->db);
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
