/* web_subs: subscribers of a list in listcast-webui: paged prefix search, add/remove/disable, CSV import (streamed)
 * and export, page and JSON API.
 *
 * Contract: subscribers are written exactly as `listcast sub add/rm` write them (appliance/lc_sub.c; the Lua
 * scripts below are the same): add keeps an existing id and sets status active, or creates the hash, lc:subids
 * entry and lc:members entry; it enters lc:active unless the address is suppressed. remove sets status
 * unsubscribed and leaves lc:active; disable sets status disabled and leaves lc:active.
 * Listing pages through lc:members with ZRANGEBYLEX from the prefix (or after the last address shown), so a page
 * costs the same on a list of 1,000,000 as on a list of 10.
 * CSV import: the first field of each row is the address (RFC 4180 quoting; a header row "address"/"email" is
 * skipped); the body is parsed as it arrives, valid rows are written in pipelined batches of WEB_IMP_BATCH, and
 * every refused row (broken quoting, invalid address, duplicate in the file, line too long) is reported with its
 * line number and reason: in the answer and in lc:importerr:ID; progress is kept in lc:import:ID.
 * Limits: rows of at most WEB_IMP_LINE bytes; WEB_IMP_DUPS distinct addresses per import tracked for duplicates;
 * WEB_IMP_ERRS refused rows stored; pages of at most WEB_PAGE_MAX subscribers.
 */
#include "web.h"
#include "lc_addr.h"
#include "lc_buf.h"
#include "lc_json.h"
#include "lc_log.h"
#include "lc_redis.h"
#include "lc_schema.h"

#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WEB_PAGE_DEFAULT 50
#define WEB_PAGE_MAX 1000
#define WEB_IMP_BATCH 1000
#define WEB_IMP_LINE 4096
#define WEB_IMP_DUPS (4u << 20) /* table slots: up to ~2,000,000 distinct addresses */
#define WEB_IMP_ERRS 10000
#define WEB_IMP_REPORT 1000

static const char add_lua[] = LC_LUA_SUB_ADD;
static const char rm_lua[] = LC_LUA_SUB_RM;

static void list_link(struct lc_buf *b, const char *list, const char *suffix)
{
    lc_buf_puts(b, "/lists/");
    web_url_esc(b, list);
    lc_buf_puts(b, suffix);
}

/* open_list normalises and checks the list; answers 404/503 and returns -1 when it cannot be used. */
static int open_list(struct web_app *app, const struct web_req *req, const char *arg, char *list,
                     struct web_resp *r)
{
    int ex = web_list_norm(app, arg, list);
    if (ex <= 0) {
        web_err(r, req, ex < 0 ? 503 : 404, ex < 0 ? "redis unavailable" : "no such list");
        return -1;
    }
    return 0;
}

/* ---- listing -------------------------------------------------------------------------------------------- */

struct sub_row {
    char addr[LC_ADDR_MAX + 1];
    char status[16];
    char score[24];
    char reason[200];
    char probe[16];       /* bounce probe of a subscriber disabled by bounces: pending, sent, refused, lost, or "" */
    long long id;
};

/* load_page reads up to limit subscribers starting at prefix (after `after` when set); returns the count or -1. */
static long load_page(struct web_app *app, const char *list, const char *prefix, const char *after, long limit,
                      struct sub_row *rows)
{
    char kmem[LC_KEY_MAX], ksub[LC_KEY_MAX], err[256], min[LC_ADDR_MAX + 2], max[LC_ADDR_MAX + 3];
    lc_key_members(kmem, sizeof kmem, list);
    if (after && *after && strcmp(after, prefix) >= 0)
        snprintf(min, sizeof min, "(%s", after);
    else
        snprintf(min, sizeof min, "[%s", prefix);
    if (*prefix)
        snprintf(max, sizeof max, "[%s\xff", prefix);
    else
        snprintf(max, sizeof max, "+");
    long n = -1;
    redisContext *rc = web_db_get(app->db, err, sizeof err);
    if (rc) {
        char slimit[24];
        snprintf(slimit, sizeof slimit, "%ld", limit);
        const char *argv[] = {"ZRANGEBYLEX", kmem, min, max, "LIMIT", "0", slimit};
        redisReply *z = lc_redis_cmdv(rc, 7, argv, NULL, err, sizeof err);
        if (z && z->type == REDIS_REPLY_ARRAY) {
            n = 0;
            for (size_t i = 0; i < z->elements && (long)i < limit; i++) {
                if (z->element[i]->type != REDIS_REPLY_STRING || z->element[i]->len > LC_ADDR_MAX)
                    continue;
                snprintf(rows[n].addr, sizeof rows[n].addr, "%s", z->element[i]->str);
                lc_key_sub(ksub, sizeof ksub, list, rows[n].addr);
                redisAppendCommand(rc, "HMGET %s status bounce_score last_bounce_reason id probe", ksub);
                n++;
            }
            for (long i = 0; i < n; i++) {
                redisReply *h = NULL;
                if (redisGetReply(rc, (void **)&h) != REDIS_OK || !h) {
                    n = -1;
                    break;
                }
                if (h->type == REDIS_REPLY_ARRAY && h->elements == 5) {
                    redisReply **e = h->element;
                    snprintf(rows[i].status, sizeof rows[i].status, "%s", e[0]->type == REDIS_REPLY_STRING ? e[0]->str : "?");
                    snprintf(rows[i].score, sizeof rows[i].score, "%s", e[1]->type == REDIS_REPLY_STRING ? e[1]->str : "0");
                    snprintf(rows[i].reason, sizeof rows[i].reason, "%s", e[2]->type == REDIS_REPLY_STRING ? e[2]->str : "");
                    rows[i].id = e[3]->type == REDIS_REPLY_STRING ? atoll(e[3]->str) : 0;
                    snprintf(rows[i].probe, sizeof rows[i].probe, "%s", e[4]->type == REDIS_REPLY_STRING ? e[4]->str : "");
                }
                freeReplyObject(h);
            }
        }
        freeReplyObject(z);
    }
    web_db_put(app->db);
    return n;
}

static long page_limit(const struct web_req *req)
{
    const char *l = web_query(req, "limit");
    long v = l ? atol(l) : WEB_PAGE_DEFAULT;
    return v < 1 ? 1 : v > WEB_PAGE_MAX ? WEB_PAGE_MAX : v;
}

static void lower_copy(char *out, size_t outlen, const char *s)
{
    size_t i = 0;
    for (; s && s[i] && i < outlen - 1; i++)
        out[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    out[i] = 0;
}

void web_page_subs(struct web_app *app, struct web_req *req, const char *arg, struct web_resp *r)
{
    char list[LC_ADDR_MAX + 1], prefix[LC_ADDR_MAX + 1], after[LC_ADDR_MAX + 1];
    if (open_list(app, req, arg, list, r) < 0)
        return;
    lower_copy(prefix, sizeof prefix, web_query(req, "prefix"));
    lower_copy(after, sizeof after, web_query(req, "after"));
    long limit = page_limit(req);
    struct sub_row *rows = lc_calloc((size_t)limit, sizeof *rows);
    long n = load_page(app, list, prefix, after, limit, rows);
    if (n < 0) {
        free(rows);
        web_html_error(r, req, 503, "redis unavailable");
        return;
    }
    char title[LC_ADDR_MAX + 32];
    snprintf(title, sizeof title, "Subscribers of %s", list);
    web_page_start(r, req, title, 0);
    struct lc_buf *b = r->body;
    const char *msg = web_query(req, "msg");
    if (msg && strlen(msg) < 300) {
        lc_buf_puts(b, "<p class=\"msg\" id=\"msg\">");
        web_html_esc(b, msg);
        lc_buf_puts(b, "</p>\n");
    }
    lc_buf_puts(b, "<p><a href=\"");
    list_link(b, list, "");
    lc_buf_puts(b, "\">Settings</a> &middot; <a href=\"");
    list_link(b, list, "/import");
    lc_buf_puts(b, "\">Import CSV</a> &middot; <a href=\"");
    list_link(b, list, "/export");
    lc_buf_puts(b, "\">Export CSV</a></p>\n<form method=\"get\" class=\"inline\" id=\"search\" action=\"");
    list_link(b, list, "/subscribers");
    lc_buf_puts(b, "\"><input name=\"prefix\" placeholder=\"address prefix\" value=\"");
    web_html_esc(b, prefix);
    lc_buf_puts(b, "\"> <button type=\"submit\">Search</button></form>\n<form method=\"post\" class=\"inline\" "
                   "id=\"add-sub\" action=\"");
    list_link(b, list, "/subscribers");
    lc_buf_puts(b, "\">");
    web_csrf_field(b, req);
    lc_buf_puts(b, "<input type=\"hidden\" name=\"action\" value=\"add\"> <input name=\"address\" id=\"add-address\" "
                   "placeholder=\"new@example.org\" required> <button type=\"submit\">Add</button></form>\n");
    lc_buf_puts(b, "<table id=\"subs\"><thead><tr><th>Address</th><th>Status</th><th class=\"num\">Bounce score</th>"
                   "<th>Last bounce reason</th><th></th></tr></thead><tbody>\n");
    for (long i = 0; i < n; i++) {
        lc_buf_puts(b, "<tr><td>");
        web_html_esc(b, rows[i].addr);
        lc_buf_puts(b, "</td><td>");
        web_html_esc(b, rows[i].status);
        if (*rows[i].probe) { /* where the bounce probe stands (README "Bounce handling") */
            lc_buf_puts(b, " <span class=\"probe\">(probe ");
            web_html_esc(b, rows[i].probe);
            lc_buf_puts(b, ")</span>");
        }
        lc_buf_puts(b, "</td><td class=\"num\">");
        web_html_esc(b, rows[i].score);
        lc_buf_puts(b, "</td><td>");
        web_html_esc(b, rows[i].reason);
        lc_buf_puts(b, "</td><td>");
        static const char *const acts[] = {"disable", "remove"};
        for (int k = 0; k < 2; k++) {
            lc_buf_puts(b, "<form method=\"post\" class=\"inline\" action=\"");
            list_link(b, list, "/subscribers");
            lc_buf_puts(b, "\">");
            web_csrf_field(b, req);
            lc_buf_printf(b, "<input type=\"hidden\" name=\"action\" value=\"%s\"><input type=\"hidden\" "
                             "name=\"address\" value=\"", acts[k]);
            web_html_esc(b, rows[i].addr);
            lc_buf_printf(b, "\"><button type=\"submit\">%s</button></form> ", acts[k]);
        }
        lc_buf_puts(b, "</td></tr>\n");
    }
    lc_buf_puts(b, "</tbody></table>\n");
    if (n == 0)
        lc_buf_puts(b, "<p class=\"empty\">No subscribers here.</p>\n");
    lc_buf_puts(b, "<p class=\"pager\">");
    if (n == limit) {
        lc_buf_puts(b, "<a id=\"next\" href=\"");
        list_link(b, list, "/subscribers?prefix=");
        web_url_esc(b, prefix);
        lc_buf_puts(b, "&amp;after=");
        web_url_esc(b, rows[n - 1].addr);
        lc_buf_printf(b, "&amp;limit=%ld\">Next page</a>", limit);
    }
    lc_buf_puts(b, "</p>\n");
    web_page_end(r);
    free(rows);
}

/* ---- changes -------------------------------------------------------------------------------------------- */

/* change applies action (add/remove/disable) to n raw addresses; counts results; refused gets invalid ones.
 * Returns 0 or -1 (Redis). */
static int change(struct web_app *app, const char *list, const char *action, const char *const *addrs, size_t n,
                  long *changed, long *unchanged, struct lc_buf *refused)
{
    char err[256], now[24];
    snprintf(now, sizeof now, "%lld", (long long)time(NULL));
    int add = !strcmp(action, "add");
    const char *status = !strcmp(action, "disable") ? "disabled" : "unsubscribed";
    int rcode = 0;
    size_t i = 0;
    while (i < n && rcode == 0) {
        redisContext *rc = web_db_get(app->db, err, sizeof err);
        if (!rc) {
            web_db_put(app->db);
            return -1;
        }
        size_t sent = 0;
        for (; i < n && sent < WEB_IMP_BATCH; i++) {
            char a[LC_ADDR_MAX + 1], ksub[LC_KEY_MAX], kmem[LC_KEY_MAX], kact[LC_KEY_MAX];
            const char *why;
            if (lc_addr_norm(addrs[i], strlen(addrs[i]), a, &why) < 0) {
                if (lc_buf_len(refused))
                    lc_buf_puts(refused, "; ");
                lc_buf_printf(refused, "%.100s: %s", addrs[i], why);
                continue;
            }
            lc_key_sub(ksub, sizeof ksub, list, a);
            lc_key_members(kmem, sizeof kmem, list);
            lc_key_active(kact, sizeof kact, list);
            if (add) {
                const char *argv[] = {"EVAL", add_lua, "6", ksub, LC_K_SUBIDS, kmem, kact, LC_K_SEQ_SUB,
                                      LC_K_SUPPRESS, a, list, now, "active"};
                redisAppendCommandArgv(rc, 13, argv, NULL);
            } else {
                const char *argv[] = {"EVAL", rm_lua, "2", ksub, kact, a, status};
                redisAppendCommandArgv(rc, 7, argv, NULL);
            }
            sent++;
        }
        for (size_t k = 0; k < sent; k++) {
            redisReply *x = NULL;
            if (redisGetReply(rc, (void **)&x) != REDIS_OK || !x || x->type != REDIS_REPLY_INTEGER) {
                rcode = -1;
            } else {
                long long v = x->integer % 10;
                if (add ? v == 1 || v == 2 : v == 1)
                    (*changed)++;
                else
                    (*unchanged)++;
            }
            freeReplyObject(x);
        }
        web_db_put(app->db);
    }
    return rcode;
}

static int action_ok(const char *a)
{
    return !strcmp(a, "add") || !strcmp(a, "remove") || !strcmp(a, "disable");
}

void web_do_subs(struct web_app *app, struct web_req *req, const char *arg, struct web_resp *r)
{
    char list[LC_ADDR_MAX + 1], action[16], addr[1024];
    if (open_list(app, req, arg, list, r) < 0)
        return;
    const char *body = lc_buf_data(req->body);
    if (web_form_check(body) < 0 || web_form_get(body, "action", action, sizeof action) != 1 || !action_ok(action) ||
        web_form_get(body, "address", addr, sizeof addr) != 1) {
        web_html_error(r, req, 400, "Malformed form: action (add, remove or disable) and address are required; "
                                    "nothing was changed.");
        return;
    }
    long changed = 0, unchanged = 0;
    struct lc_buf *refused = lc_buf_new(4096);
    const char *one[] = {addr};
    if (change(app, list, action, one, 1, &changed, &unchanged, refused) < 0) {
        lc_buf_free(refused);
        web_html_error(r, req, 503, "redis unavailable");
        return;
    }
    if (lc_buf_len(refused)) {
        char msg[4200];
        snprintf(msg, sizeof msg, "Refused: %s. Nothing was changed.", lc_buf_data(refused));
        lc_buf_free(refused);
        web_html_error(r, req, 400, msg);
        return;
    }
    lc_buf_free(refused);
    lc_info("list=%s %s <%s> by user=%s%s", list, action, addr, req->user, changed ? "" : " (no change)");
    char msg[1200];
    snprintf(msg, sizeof msg, "%s: %s%s", action, addr, changed ? "" : " (no change)");
    struct lc_buf *loc = lc_buf_new(4096);
    list_link(loc, list, "/subscribers?msg=");
    web_url_esc(loc, msg);
    web_redirect(r, lc_buf_data(loc));
    lc_buf_free(loc);
}

void web_api_subs(struct web_app *app, struct web_req *req, const char *arg, struct web_resp *r)
{
    char list[LC_ADDR_MAX + 1];
    if (open_list(app, req, arg, list, r) < 0)
        return;
    if (!strcmp(req->method, "GET")) {
        char prefix[LC_ADDR_MAX + 1], after[LC_ADDR_MAX + 1];
        lower_copy(prefix, sizeof prefix, web_query(req, "prefix"));
        lower_copy(after, sizeof after, web_query(req, "after"));
        long limit = page_limit(req);
        struct sub_row *rows = lc_calloc((size_t)limit, sizeof *rows);
        long n = load_page(app, list, prefix, after, limit, rows);
        if (n < 0) {
            free(rows);
            web_json_error(r, 503, "redis unavailable");
            return;
        }
        r->type = "application/json";
        struct lc_json *j = lc_json_new_buf(r->body, 0);
        lc_json_obj(j);
        lc_json_key(j, "subscribers");
        lc_json_arr(j);
        for (long i = 0; i < n; i++) {
            lc_json_obj(j);
            lc_json_kstr(j, "address", rows[i].addr);
            lc_json_kint(j, "id", rows[i].id);
            lc_json_kstr(j, "status", rows[i].status);
            lc_json_knum(j, "bounce_score", atof(rows[i].score));
            lc_json_kstr(j, "last_bounce_reason", *rows[i].reason ? rows[i].reason : NULL);
            lc_json_kstr(j, "probe", *rows[i].probe ? rows[i].probe : NULL);
            lc_json_end(j);
        }
        lc_json_end(j);
        lc_json_kstr(j, "next", n == limit ? rows[n - 1].addr : NULL);
        lc_json_end(j);
        lc_json_free(j);
        free(rows);
        return;
    }
    char err[256];
    struct web_jv *jv = web_json_parse(lc_buf_data(req->body), lc_buf_len(req->body), err, sizeof err);
    if (!jv) {
        web_json_error(r, 400, err);
        return;
    }
    const char *action = web_json_str(jv, "action");
    size_t n = 0;
    const char *const *addrs = web_json_strs(jv, "addresses", &n);
    if (!action || !action_ok(action) || !addrs) {
        web_json_free(jv);
        web_json_error(r, 400, "expected {\"action\": \"add\"|\"remove\"|\"disable\", \"addresses\": [...]}");
        return;
    }
    /* validate first: an invalid address refuses the whole request, so nothing is half done */
    struct lc_buf *refused = lc_buf_new(64 * 1024);
    for (size_t i = 0; i < n; i++) {
        char a[LC_ADDR_MAX + 1];
        const char *why;
        if (lc_addr_norm(addrs[i], strlen(addrs[i]), a, &why) < 0) {
            if (lc_buf_len(refused))
                lc_buf_puts(refused, "; ");
            lc_buf_printf(refused, "%.100s: %s", addrs[i], why);
        }
    }
    if (lc_buf_len(refused)) {
        char msg[8192];
        snprintf(msg, sizeof msg, "invalid addresses, nothing was changed: %s", lc_buf_data(refused));
        web_json_error(r, 400, msg);
        lc_buf_free(refused);
        web_json_free(jv);
        return;
    }
    long changed = 0, unchanged = 0;
    int rc = change(app, list, action, addrs, n, &changed, &unchanged, refused);
    lc_info("list=%s api %s of %zu addresses by user=%s: %ld changed", list, action, n, req->user, changed);
    web_json_free(jv);
    lc_buf_free(refused);
    if (rc < 0) {
        web_json_error(r, 503, "redis unavailable");
        return;
    }
    r->type = "application/json";
    struct lc_json *j = lc_json_new_buf(r->body, 0);
    lc_json_obj(j);
    lc_json_kint(j, "changed", changed);
    lc_json_kint(j, "unchanged", unchanged);
    lc_json_end(j);
    lc_json_free(j);
}

/* ---- export -------------------------------------------------------------------------------------------- */

static void csv_field(struct lc_buf *b, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        lc_buf_puts(b, s);
        return;
    }
    lc_buf_puts(b, "\"");
    for (; *s; s++)
        lc_buf_append(b, *s == '"' ? "\"\"" : s, *s == '"' ? 2 : 1);
    lc_buf_puts(b, "\"");
}

void web_export(struct web_app *app, struct web_req *req, const char *arg, struct web_resp *r)
{
    char list[LC_ADDR_MAX + 1], after[LC_ADDR_MAX + 1] = "";
    if (open_list(app, req, arg, list, r) < 0)
        return;
    struct sub_row *rows = lc_calloc(WEB_PAGE_MAX, sizeof *rows);
    struct lc_buf *b = r->body;
    lc_buf_puts(b, "address,status,bounce_score,last_bounce_reason\r\n");
    for (;;) {
        long n = load_page(app, list, "", after, WEB_PAGE_MAX, rows);
        if (n < 0) {
            free(rows);
            web_err(r, req, 503, "redis unavailable");
            return;
        }
        for (long i = 0; i < n; i++) {
            csv_field(b, rows[i].addr);
            lc_buf_puts(b, ",");
            csv_field(b, rows[i].status);
            lc_buf_puts(b, ",");
            csv_field(b, rows[i].score);
            lc_buf_puts(b, ",");
            csv_field(b, rows[i].reason);
            if (lc_buf_puts(b, "\r\n") < 0) {
                free(rows);
                web_err(r, req, 500, "export too large");
                return;
            }
        }
        if (n < WEB_PAGE_MAX)
            break;
        snprintf(after, sizeof after, "%s", rows[n - 1].addr);
    }
    free(rows);
    r->type = "text/csv; charset=utf-8";
    r->disposition = "attachment; filename=\"subscribers.csv\"";
}

/* ---- import -------------------------------------------------------------------------------------------- */

struct web_import {
    struct web_app *app;
    struct web_req *req;
    char list[LC_ADDR_MAX + 1];
    uint64_t id;
    struct MHD_PostProcessor *pp;
    int csrf_checked, failed;
    char csrf[80];
    size_t ncsrf;
    struct lc_buf *line;
    int overlong;
    long lineno, rows, added, existing, refused;
    uint64_t *dups;
    size_t ndups;
    char (*batch)[LC_ADDR_MAX + 1];
    size_t nbatch;
    struct lc_buf *errs;   /* refused rows not yet pushed to Redis, "LINE\tREASON\tROW\n" */
    size_t nerrs_mem;
    struct lc_buf *report; /* the first WEB_IMP_REPORT refused rows, same form */
    size_t nreport;
    int status;            /* an HTTP status set when the import failed */
    char why[256];
};

static uint64_t fnv(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h ? h : 1;
}

/* dup_seen records h; returns 1 if it was there already. */
static int dup_seen(struct web_import *imp, uint64_t h)
{
    if (!imp->dups)
        imp->dups = lc_calloc(WEB_IMP_DUPS, sizeof *imp->dups);
    if (imp->ndups >= WEB_IMP_DUPS / 2)
        return 0; /* table full: no more duplicate detection (Redis still makes it idempotent) */
    size_t i = (size_t)(h & (WEB_IMP_DUPS - 1));
    while (imp->dups[i]) {
        if (imp->dups[i] == h)
            return 1;
        i = (i + 1) & (WEB_IMP_DUPS - 1);
    }
    imp->dups[i] = h;
    imp->ndups++;
    return 0;
}

static void refuse(struct web_import *imp, const char *reason, const char *row)
{
    imp->refused++;
    char clean[201];
    size_t k = 0;
    for (; row[k] && k < 200; k++)
        clean[k] = (row[k] == '\t' || (unsigned char)row[k] < 0x20) ? ' ' : row[k];
    clean[k] = 0;
    if ((long)imp->refused <= WEB_IMP_ERRS) {
        lc_buf_printf(imp->errs, "%ld\t%s\t%s\n", imp->lineno, reason, clean);
        imp->nerrs_mem++;
    }
    if (imp->nreport < WEB_IMP_REPORT) {
        lc_buf_printf(imp->report, "%ld\t%s\t%s\n", imp->lineno, reason, clean);
        imp->nreport++;
    }
}

static int flush(struct web_import *imp, const char *state)
{
    char err[256], now[24], kimp[LC_KEY_MAX], kerr[LC_KEY_MAX];
    snprintf(now, sizeof now, "%lld", (long long)time(NULL));
    lc_key_import(kimp, sizeof kimp, imp->id);
    lc_key_importerr(kerr, sizeof kerr, imp->id);
    redisContext *rc = web_db_get(imp->app->db, err, sizeof err);
    int ok = rc != NULL;
    size_t sent = 0, extra = 0;
    if (rc) {
        for (size_t i = 0; i < imp->nbatch; i++) {
            char ksub[LC_KEY_MAX], kmem[LC_KEY_MAX], kact[LC_KEY_MAX];
            lc_key_sub(ksub, sizeof ksub, imp->list, imp->batch[i]);
            lc_key_members(kmem, sizeof kmem, imp->list);
            lc_key_active(kact, sizeof kact, imp->list);
            const char *argv[] = {"EVAL", add_lua, "6", ksub, LC_K_SUBIDS, kmem, kact, LC_K_SEQ_SUB, LC_K_SUPPRESS,
                                  imp->batch[i], imp->list, now, "active"};
            redisAppendCommandArgv(rc, 13, argv, NULL);
            sent++;
        }
        const char *e = lc_buf_data(imp->errs);
        while (*e) {
            const char *nl = strchr(e, '\n');
            redisAppendCommand(rc, "RPUSH %s %b", kerr, e, (size_t)(nl - e));
            extra++;
            e = nl + 1;
        }
        for (size_t k = 0; k < sent + extra; k++) {
            redisReply *x = NULL;
            if (redisGetReply(rc, (void **)&x) != REDIS_OK || !x || x->type == REDIS_REPLY_ERROR) {
                ok = 0;
            } else if (k < sent && x->type == REDIS_REPLY_INTEGER) {
                long long v = x->integer % 10;
                if (v == 1 || v == 2)
                    imp->added++;
                else
                    imp->existing++;
            }
            freeReplyObject(x);
        }
        redisReply *x = redisCommand(rc, "HSET %s state %s rows %ld added %ld existing %ld refused %ld finished %s",
                                     kimp, state, imp->rows, imp->added, imp->existing, imp->refused,
                                     strcmp(state, "running") ? now : "0");
        if (!x || x->type == REDIS_REPLY_ERROR)
            ok = 0;
        freeReplyObject(x);
    }
    web_db_put(imp->app->db);
    imp->nbatch = 0;
    lc_buf_reset(imp->errs);
    imp->nerrs_mem = 0;
    if (!ok) {
        imp->failed = 1;
        imp->status = 503;
        snprintf(imp->why, sizeof imp->why, "redis unavailable during the import (rows up to line %ld were "
                 "handled)", imp->lineno);
    }
    return ok ? 0 : -1;
}

static void row(struct web_import *imp, char *line)
{
    imp->lineno++;
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\r'))
        line[--n] = 0;
    if (imp->overlong) {
        imp->overlong = 0;
        refuse(imp, "line too long", line);
        return;
    }
    const char *s = line;
    while (*s == ' ' || *s == '\t')
        s++;
    if (!*s)
        return;
    char field[WEB_IMP_LINE + 1], a[LC_ADDR_MAX + 1];
    const char *why;
    if (web_csv_field(line, field, sizeof field, &why) < 0) {
        imp->rows++;
        refuse(imp, why, line);
        return;
    }
    if (imp->rows == 0 && imp->refused == 0 && (!strcasecmp(field, "address") || !strcasecmp(field, "email")))
        return; /* header row */
    imp->rows++;
    if (lc_addr_norm(field, strlen(field), a, &why) < 0) {
        char reason[128];
        snprintf(reason, sizeof reason, "invalid address: %s", why);
        refuse(imp, reason, line);
        return;
    }
    if (dup_seen(imp, fnv(a))) {
        refuse(imp, "duplicate address in the file", line);
        return;
    }
    snprintf(imp->batch[imp->nbatch++], LC_ADDR_MAX + 1, "%s", a);
    if (imp->nbatch == WEB_IMP_BATCH)
        flush(imp, "running");
}

static int feed_csv(struct web_import *imp, const char *data, size_t len)
{
    for (size_t i = 0; i < len && !imp->failed; i++) {
        char c = data[i];
        if (c == '\n') {
            row(imp, lc_buf_mdata(imp->line));
            lc_buf_reset(imp->line);
        } else if (c == 0) {
            imp->overlong = imp->overlong; /* NUL bytes are dropped; the row then fails its own checks */
        } else if (lc_buf_append(imp->line, &c, 1) < 0) {
            imp->overlong = 1;
        }
    }
    return imp->failed ? -1 : 0;
}

static enum MHD_Result pp_iter(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
                               const char *content_type, const char *transfer_encoding, const char *data,
                               uint64_t off, size_t size)
{
    (void)kind;
    (void)filename;
    (void)content_type;
    (void)transfer_encoding;
    (void)off;
    struct web_import *imp = cls;
    if (imp->failed)
        return MHD_NO;
    if (!strcmp(key, "csrf")) {
        if (imp->ncsrf + size >= sizeof imp->csrf)
            size = 0;
        memcpy(imp->csrf + imp->ncsrf, data, size);
        imp->ncsrf += size;
        imp->csrf[imp->ncsrf] = 0;
        return MHD_YES;
    }
    if (!strcmp(key, "file")) {
        if (!imp->csrf_checked) {
            if (!web_auth_csrf_ok(imp->req, imp->csrf)) {
                imp->failed = 1;
                imp->status = 403;
                snprintf(imp->why, sizeof imp->why, "missing or wrong CSRF token; nothing was imported");
                return MHD_NO;
            }
            imp->csrf_checked = 1;
        }
        return feed_csv(imp, data, size) < 0 ? MHD_NO : MHD_YES;
    }
    return MHD_YES;
}

struct web_import *web_import_begin(struct web_app *app, struct web_req *req, const char *arg, int multipart,
                                    struct web_resp *r)
{
    char list[LC_ADDR_MAX + 1];
    if (open_list(app, req, arg, list, r) < 0)
        return NULL;
    const char *ct = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!multipart && !(ct && (!strncasecmp(ct, "text/csv", 8) || !strncasecmp(ct, "text/plain", 10)))) {
        web_err(r, req, 415, "send the CSV as text/csv (API) or multipart/form-data (form)");
        return NULL;
    }
    struct web_import *imp = lc_calloc(1, sizeof *imp);
    imp->app = app;
    imp->req = req;
    snprintf(imp->list, sizeof imp->list, "%s", list);
    imp->csrf_checked = !multipart;
    if (multipart) {
        imp->pp = MHD_create_post_processor(req->conn, 64 * 1024, pp_iter, imp);
        if (!imp->pp) {
            free(imp);
            web_err(r, req, 400, "malformed multipart form (no boundary)");
            return NULL;
        }
    }
    char err[256], kimp[LC_KEY_MAX];
    redisContext *rc = web_db_get(app->db, err, sizeof err);
    if (rc) {
        redisReply *x = redisCommand(rc, "INCR %s", LC_K_SEQ_IMPORT);
        if (x && x->type == REDIS_REPLY_INTEGER)
            imp->id = (uint64_t)x->integer;
        freeReplyObject(x);
        if (imp->id) {
            lc_key_import(kimp, sizeof kimp, imp->id);
            freeReplyObject(redisCommand(rc, "HSET %s list %s state running rows 0 added 0 existing 0 refused 0 "
                                             "started %lld user %s", kimp, list, (long long)time(NULL), req->user));
        }
    }
    web_db_put(app->db);
    if (!imp->id) {
        if (imp->pp)
            MHD_destroy_post_processor(imp->pp);
        free(imp);
        web_err(r, req, 503, "redis unavailable");
        return NULL;
    }
    imp->line = lc_buf_new(WEB_IMP_LINE);
    imp->errs = lc_buf_new(8 * 1024 * 1024);
    imp->report = lc_buf_new(1024 * 1024);
    imp->batch = lc_calloc(WEB_IMP_BATCH, sizeof *imp->batch);
    lc_info("import=%llu list=%s started by user=%s", (unsigned long long)imp->id, list, req->user);
    return imp;
}

int web_import_feed(struct web_import *imp, const char *data, size_t len)
{
    if (imp->failed)
        return -1;
    if (imp->pp) {
        if (MHD_post_process(imp->pp, data, len) != MHD_YES && !imp->failed) {
            imp->failed = 1;
            imp->status = 400;
            snprintf(imp->why, sizeof imp->why, "malformed multipart form");
        }
        return imp->failed ? -1 : 0;
    }
    return feed_csv(imp, data, len);
}

static void report_json(struct web_import *imp, struct web_resp *r)
{
    lc_buf_reset(r->body);
    r->type = "application/json";
    struct lc_json *j = lc_json_new_buf(r->body, 0);
    lc_json_obj(j);
    lc_json_kint(j, "id", (long long)imp->id);
    lc_json_kstr(j, "list", imp->list);
    lc_json_kstr(j, "state", imp->failed ? "failed" : "done");
    if (imp->failed)
        lc_json_kstr(j, "error", imp->why);
    lc_json_kint(j, "rows", imp->rows);
    lc_json_kint(j, "added", imp->added);
    lc_json_kint(j, "existing", imp->existing);
    lc_json_kint(j, "refused", imp->refused);
    lc_json_key(j, "refused_rows");
    lc_json_arr(j);
    const char *e = lc_buf_data(imp->report);
    while (*e) {
        const char *t1 = strchr(e, '\t'), *t2 = strchr(t1 + 1, '\t'), *nl = strchr(t2 + 1, '\n');
        lc_json_obj(j);
        lc_json_kint(j, "line", atoll(e));
        lc_json_key(j, "reason");
        lc_json_strn(j, t1 + 1, (size_t)(t2 - t1 - 1));
        lc_json_key(j, "row");
        lc_json_strn(j, t2 + 1, (size_t)(nl - t2 - 1));
        lc_json_end(j);
        e = nl + 1;
    }
    lc_json_end(j);
    lc_json_end(j);
    lc_json_free(j);
}

static void report_rows_html(struct lc_buf *b, const char *e)
{
    if (!*e)
        return;
    lc_buf_puts(b, "<h2>Refused rows</h2><table id=\"refused\"><thead><tr><th class=\"num\">Line</th><th>Reason"
                   "</th><th>Row</th></tr></thead><tbody>\n");
    while (*e) {
        const char *t1 = strchr(e, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL, *nl = t2 ? strchr(t2 + 1, '\n') : NULL;
        if (!nl)
            break;
        char buf[512];
        lc_buf_printf(b, "<tr><td class=\"num\">%lld</td><td>", atoll(e));
        snprintf(buf, sizeof buf, "%.*s", (int)(t2 - t1 - 1), t1 + 1);
        web_html_esc(b, buf);
        lc_buf_puts(b, "</td><td><code>");
        snprintf(buf, sizeof buf, "%.*s", (int)(nl - t2 - 1), t2 + 1);
        web_html_esc(b, buf);
        lc_buf_puts(b, "</code></td></tr>\n");
        e = nl + 1;
    }
    lc_buf_puts(b, "</tbody></table>\n");
}

void web_import_finish(struct web_import *imp, struct web_req *req, struct web_resp *r)
{
    if (!imp->failed && imp->pp && !imp->csrf_checked) {
        imp->failed = 1;
        imp->status = web_auth_csrf_ok(req, imp->csrf) ? 400 : 403;
        snprintf(imp->why, sizeof imp->why, "%s", imp->status == 403 ? "missing or wrong CSRF token; nothing was "
                 "imported" : "the form has no file field; nothing was imported");
    }
    if (!imp->failed && lc_buf_len(imp->line)) {
        row(imp, lc_buf_mdata(imp->line));
        lc_buf_reset(imp->line);
    }
    if (!imp->failed)
        flush(imp, "done");
    else
        flush(imp, "failed");
    lc_info("import=%llu list=%s %s rows=%ld added=%ld existing=%ld refused=%ld", (unsigned long long)imp->id,
            imp->list, imp->failed ? "failed" : "done", imp->rows, imp->added, imp->existing, imp->refused);
    if (web_is_api(req)) {
        report_json(imp, r);
        r->status = imp->failed ? imp->status : 200;
        return;
    }
    lc_buf_reset(r->body);
    r->status = imp->failed ? imp->status : 200;
    web_page_start(r, req, "Import report", 0);
    struct lc_buf *b = r->body;
    if (imp->failed) {
        lc_buf_puts(b, "<p class=\"error\">");
        web_html_esc(b, imp->why);
        lc_buf_puts(b, "</p>");
    }
    lc_buf_printf(b, "<p class=\"msg\" id=\"import-summary\">Import %llu into ", (unsigned long long)imp->id);
    web_html_esc(b, imp->list);
    lc_buf_printf(b, ": %ld rows, %ld added, %ld already subscribed, %ld refused.</p>\n<p><a href=\"",
                  imp->rows, imp->added, imp->existing, imp->refused);
    list_link(b, imp->list, "/subscribers");
    lc_buf_puts(b, "\">Subscribers</a></p>\n");
    report_rows_html(b, lc_buf_data(imp->report));
    web_page_end(r);
}

void web_import_free(struct web_import *imp)
{
    if (!imp)
        return;
    if (imp->pp)
        MHD_destroy_post_processor(imp->pp);
    lc_buf_free(imp->line);
    lc_buf_free(imp->errs);
    lc_buf_free(imp->report);
    free(imp->batch);
    free(imp->dups);
    free(imp);
}

void web_page_import_form(struct web_app *app, struct web_req *req, const char *arg, struct web_resp *r)
{
    char list[LC_ADDR_MAX + 1];
    if (open_list(app, req, arg, list, r) < 0)
        return;
    char title[LC_ADDR_MAX + 32];
    snprintf(title, sizeof title, "Import subscribers into %s", list);
    web_page_start(r, req, title, 0);
    struct lc_buf *b = r->body;
    lc_buf_puts(b, "<p class=\"hint\">A CSV file whose first column is the address (a header row <code>address"
                   "</code> or <code>email</code> is skipped). Valid rows are subscribed (status active); refused rows "
                   "are listed with their line and reason.</p>\n<form method=\"post\" enctype=\"multipart/form-data\" "
                   "class=\"card\" id=\"import\" action=\"");
    list_link(b, list, "/import");
    lc_buf_puts(b, "\">");
    web_csrf_field(b, req);
    lc_buf_puts(b, "<label>CSV file <input type=\"file\" name=\"file\" id=\"csv\" accept=\".csv,text/csv\" required>"
                   "</label><button type=\"submit\" id=\"upload\">Import</button></form>\n");
    web_page_end(r);
}

void web_page_import(struct web_app *app, struct web_req *req, const char *id, struct web_resp *r)
{
    if (!*id || strspn(id, "0123456789") != strlen(id) || strlen(id) > 19) {
        web_err(r, req, 404, "no such import");
        return;
    }
    uint64_t iid = strtoull(id, NULL, 10);
    char kimp[LC_KEY_MAX], kerr[LC_KEY_MAX], err[256];
    lc_key_import(kimp, sizeof kimp, iid);
    lc_key_importerr(kerr, sizeof kerr, iid);
    char f[8][512] = {{0}};
    static const char *const names[] = {"list", "state", "rows", "added", "existing", "refused", "started",
                                        "finished"};
    struct lc_buf *rows = lc_buf_new(1024 * 1024);
    int got = -1;
    redisContext *rc = web_db_get(app->db, err, sizeof err);
    if (rc) {
        redisReply *x = redisCommand(rc, "HMGET %s list state rows added existing refused started finished", kimp);
        if (x && x->type == REDIS_REPLY_ARRAY && x->elements == 8) {
            got = x->element[0]->type == REDIS_REPLY_STRING;
            for (int i = 0; i < 8; i++)
                if (x->element[i]->type == REDIS_REPLY_STRING)
                    snprintf(f[i], sizeof f[i], "%s", x->element[i]->str);
        }
        freeReplyObject(x);
        x = got == 1 ? redisCommand(rc, "LRANGE %s 0 %d", kerr, WEB_IMP_REPORT - 1) : NULL;
        for (size_t i = 0; x && x->type == REDIS_REPLY_ARRAY && i < x->elements; i++)
            if (x->element[i]->type == REDIS_REPLY_STRING && strchr(x->element[i]->str, '\t'))
                lc_buf_printf(rows, "%s\n", x->element[i]->str);
        freeReplyObject(x);
    }
    web_db_put(app->db);
    if (got <= 0) {
        lc_buf_free(rows);
        web_err(r, req, got < 0 ? 503 : 404, got < 0 ? "redis unavailable" : "no such import");
        return;
    }
    if (web_is_api(req)) {
        r->type = "application/json";
        struct lc_json *j = lc_json_new_buf(r->body, 0);
        lc_json_obj(j);
        lc_json_kint(j, "id", (long long)iid);
        for (int i = 0; i < 8; i++) {
            if (i >= 2)
                lc_json_kint(j, names[i], atoll(f[i]));
            else
                lc_json_kstr(j, names[i], f[i]);
        }
        lc_json_end(j);
        lc_json_free(j);
        lc_buf_free(rows);
        return;
    }
    char title[64];
    snprintf(title, sizeof title, "Import %llu", (unsigned long long)iid);
    web_page_start(r, req, title, strcmp(f[1], "running") ? 0 : 2);
    struct lc_buf *b = r->body;
    lc_buf_puts(b, "<p class=\"msg\" id=\"import-summary\">");
    web_html_esc(b, f[0]);
    lc_buf_puts(b, ": ");
    web_html_esc(b, f[1]);
    lc_buf_printf(b, ", %lld rows, %lld added, %lld already subscribed, %lld refused.</p>\n", atoll(f[2]),
                  atoll(f[3]), atoll(f[4]), atoll(f[5]));
    report_rows_html(b, lc_buf_data(rows));
    web_page_end(r);
    lc_buf_free(rows);
}
