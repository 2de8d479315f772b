/* web_http: the libmicrohttpd server of listcast-webui: request bodies, routing, authentication, headers, TLS.
 *
 * Contract: GET (and HEAD, served as GET without body) and POST only. A request body is read into a bounded
 * buffer (WEB_REQ_MAX; a larger Content-Length, or a chunked body passing it, answers 413 and runs nothing);
 * CSV imports stream instead (bounded by WEB_IMPORT_MAX). Routes (see README "Admin web UI and JSON API"):
 * public: /healthz, /style.css, /login, /u/TOKEN, /confirm/TOKEN; everything else needs a session (pages
 * redirect to /login) or an API token (/api answers 401). A POST by session must carry the session's CSRF token
 * (form field csrf or X-CSRF-Token header) or it answers 403 and changes nothing. Every response carries a
 * Content-Security-Policy (default-src 'self', no framing), X-Frame-Options DENY, X-Content-Type-Options
 * nosniff, Referrer-Policy no-referrer and Cache-Control no-store.
 * A route may suspend its connection (the domain checks of /doctor, which run in threads of their own): the
 * handler then answers nothing and is called again once the route resumes it.
 * Limits: WEB_THREADS threads, WEB_CONN_LIMIT connections, 30 s idle timeout, 64 KiB of memory per connection
 * (bounds the request line and headers), responses up to WEB_BODY_MAX.
 */
#include "web.h"
#include "lc_buf.h"
#include "lc_log.h"
#include "lc_net.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WEB_CONN_LIMIT 512
#define WEB_CONN_TIMEOUT_S 30
#define WEB_CONN_MEMORY (64 * 1024)
#define WEB_CSP "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"

struct web_server {
    struct MHD_Daemon *mhd;
    struct web_app *app;
};

/* per-connection request state, from the first call of the handler to the completion callback */
struct web_cstate {
    struct web_req req;
    char method[8];
    char *url;
    struct web_resp early; /* a response decided before the body was read (413, 401, refused import) */
    int has_early;
};

static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = 0;
    lc_warn("microhttpd: %s", line);
}

static enum MHD_Result send_resp(struct MHD_Connection *conn, struct web_resp *r, const char *method,
                                 const char *url)
{
    size_t len = 0;
    char *body = lc_buf_steal(r->body, &len);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->type);
    MHD_add_response_header(resp, "Content-Security-Policy", WEB_CSP);
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (r->status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->location[0] ? r->location : "GET, HEAD");
    else if (r->location[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, r->location);
    if (r->cookie[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_SET_COOKIE, r->cookie);
    if (r->disposition)
        MHD_add_response_header(resp, "Content-Disposition", r->disposition);
    if (r->status == 429)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "60");
    if (r->status == 401 && !strncmp(url, "/api", 4))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"listcast\"");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    if (r->status >= 500)
        lc_warn("http %s %.200s %d", method, url, r->status);
    else
        lc_debug("http %s %.200s %d", method, url, r->status);
    return ret;
}

/* ---- routing ------------------------------------------------------------------------------------------- */

/* after(url, prefix) returns the rest of url after prefix, or NULL. */
static const char *after(const char *url, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(url, prefix, n) ? NULL : url + n;
}

/* split_list splits "LIST[/SUFFIX]" where SUFFIX is one of the known words: list gets LIST, returns SUFFIX
 * ("" for none) or NULL when the list part is empty or too long. */
static const char *split_list(const char *rest, char *list, size_t listlen)
{
    static const char *const sfx[] = {"/subscribers", "/import", "/export", "/bounces", NULL};
    size_t n = strlen(rest);
    const char *suffix = "";
    for (int i = 0; sfx[i]; i++) {
        size_t k = strlen(sfx[i]);
        if (n > k && !strcmp(rest + n - k, sfx[i])) {
            suffix = sfx[i] + 1;
            n -= k;
            break;
        }
    }
    if (n == 0 || n >= listlen)
        return NULL;
    memcpy(list, rest, n);
    list[n] = 0;
    return suffix;
}

static int is_get(const struct web_req *req)
{
    return !strcmp(req->method, "GET");
}

static void not_allowed(struct web_resp *r, const char *allow)
{
    web_json_error(r, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed");
    snprintf(r->location, sizeof r->location, "%s", allow);
}

/* the routes that need a login; req is authenticated and, for POST, CSRF-checked */
static void route_private(struct web_app *app, struct web_req *req, struct web_resp *r)
{
    const char *url = req->url, *rest;
    int get = is_get(req);
    char list[512];
    if (!strcmp(url, "/")) {
        get ? web_page_dashboard(app, req, r) : not_allowed(r, "GET, HEAD");
    } else if (!strcmp(url, "/logout")) {
        get ? not_allowed(r, "POST") : web_do_logout(app, req, r);
    } else if (!strcmp(url, "/lists") || !strcmp(url, "/api/lists")) {
        if (get)
            web_is_api(req) ? web_api_lists(app, r) : web_redirect(r, "/");
        else
            web_do_list_create(app, req, r);
    } else if ((rest = after(url, "/posts/")) || (rest = after(url, "/api/posts/"))) {
        if (!get)
            not_allowed(r, "GET, HEAD");
        else
            web_is_api(req) ? web_api_post(app, rest, r) : web_page_post(app, req, rest, r);
    } else if (!strcmp(url, "/moderation") || !strcmp(url, "/api/moderation")) {
        get ? web_page_moderation(app, req, r) : not_allowed(r, "GET, HEAD");
    } else if ((rest = after(url, "/moderation/")) || (rest = after(url, "/api/moderation/"))) {
        get ? not_allowed(r, "POST") : web_do_moderate(app, req, rest, r);
    } else if (!strcmp(url, "/doctor") || !strcmp(url, "/api/doctor")) {
        get ? web_doctor(app, req, NULL, r) : not_allowed(r, "GET, HEAD");
    } else if ((rest = after(url, "/doctor/")) || (rest = after(url, "/api/doctor/"))) {
        get ? web_doctor(app, req, rest, r) : not_allowed(r, "GET, HEAD");
    } else if ((rest = after(url, "/imports/")) || (rest = after(url, "/api/imports/"))) {
        get ? web_page_import(app, req, rest, r) : not_allowed(r, "GET, HEAD");
    } else if ((rest = after(url, "/lists/")) || (rest = after(url, "/api/lists/"))) {
        const char *sfx = split_list(rest, list, sizeof list);
        if (!sfx) {
            web_err(r, req, 404, "not found");
        } else if (!*sfx) {
            if (get)
                web_is_api(req) ? web_api_list(app, list, r) : web_page_list(app, req, list, r);
            else
                web_do_list_save(app, req, list, r);
        } else if (!strcmp(sfx, "subscribers")) {
            if (web_is_api(req))
                web_api_subs(app, req, list, r);
            else
                get ? web_page_subs(app, req, list, r) : web_do_subs(app, req, list, r);
        } else if (!strcmp(sfx, "bounces")) {
            get ? web_bounces(app, req, list, r) : not_allowed(r, "GET, HEAD");
        } else if (!strcmp(sfx, "export")) {
            get ? web_export(app, req, list, r) : not_allowed(r, "GET, HEAD");
        } else { /* import: POST streams (see handler); GET shows the form */
            get ? web_page_import_form(app, req, list, r) : web_err(r, req, 400, "empty import");
        }
    } else {
        web_err(r, req, 404, "not found");
    }
}

static void route(struct web_app *app, struct web_req *req, struct web_resp *r)
{
    const char *url = req->url, *rest;
    int get = is_get(req);
    if (!strcmp(url, "/healthz")) {
        get ? web_page_health(app, r) : not_allowed(r, "GET, HEAD");
        return;
    }
    if (!strcmp(url, "/style.css")) {
        get ? web_page_style(app, r) : not_allowed(r, "GET, HEAD");
        return;
    }
    if (!strcmp(url, "/login")) {
        get ? web_page_login(app, req, r) : web_do_login(app, req, r);
        return;
    }
    if ((rest = after(url, "/u/"))) {
        web_public_unsub(app, req, rest, r);
        return;
    }
    if ((rest = after(url, "/confirm/"))) {
        web_public_confirm(app, req, rest, r);
        return;
    }
    if (req->auth == WEB_AUTH_NONE) {
        if (web_is_api(req))
            web_json_error(r, 401, "authentication required (Authorization: Bearer TOKEN, or a session)");
        else if (get)
            web_redirect(r, "/login");
        else
            web_html_error(r, req, 403, "Your session has expired or you are not logged in; nothing was changed. "
                                        "Log in and try again.");
        return;
    }
    if (!get) {
        char csrf[80] = "";
        const char *body = req->body ? lc_buf_data(req->body) : "";
        const char *ct = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (ct && !strncasecmp(ct, "application/x-www-form-urlencoded", 33) &&
            web_form_get(body, "csrf", csrf, sizeof csrf) < 0)
            csrf[0] = 0;
        if (!web_auth_csrf_ok(req, csrf)) {
            lc_warn("http %s %.200s refused: missing or wrong CSRF token user=%s", req->method, url, req->user);
            web_err(r, req, 403, "missing or wrong CSRF token; nothing was changed");
            return;
        }
    }
    route_private(app, req, r);
}

/* is_import tells whether a POST goes to a streaming CSV import; fills list. */
static int is_import(const char *url, char *list, size_t listlen)
{
    const char *rest = after(url, "/lists/");
    if (!rest)
        rest = after(url, "/api/lists/");
    const char *sfx = rest ? split_list(rest, list, listlen) : NULL;
    return sfx && !strcmp(sfx, "import");
}

/* ---- the handler ---------------------------------------------------------------------------------------- */

static void client_ip(struct MHD_Connection *conn, char *out, size_t outlen)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, outlen, "unknown");
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)outlen);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)outlen);
}

static void early(struct web_cstate *cs, int status, const char *msg)
{
    cs->has_early = 1;
    web_err(&cs->early, &cs->req, status, msg);
}

static void cstate_free(struct web_cstate *cs)
{
    if (!cs)
        return;
    web_import_free(cs->req.imp);
    web_doctor_release(&cs->req);
    lc_buf_free(cs->req.body);
    lc_buf_free(cs->early.body);
    free(cs->url);
    free(cs);
}

/* first_call sets up the request state once the headers are in. */
static struct web_cstate *first_call(struct web_server *s, struct MHD_Connection *conn, const char *url,
                                     const char *method)
{
    struct web_cstate *cs = lc_calloc(1, sizeof *cs);
    struct web_req *req = &cs->req;
    snprintf(cs->method, sizeof cs->method, "%s", !strcmp(method, "HEAD") ? "GET" : method);
    cs->url = lc_strdup(url);
    req->conn = conn;
    req->method = cs->method;
    req->url = cs->url;
    cs->early = (struct web_resp){200, "text/plain; charset=utf-8", lc_buf_new(1024 * 1024), "", "", NULL};
    client_ip(conn, req->ip, sizeof req->ip);
    if (strcmp(method, "GET") && strcmp(method, "HEAD") && strcmp(method, "POST")) {
        cs->has_early = 1;
        web_json_error(&cs->early, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed");
        snprintf(cs->early.location, sizeof cs->early.location, "GET, HEAD, POST");
        return cs;
    }
    if (strncmp(url, "/healthz", 8) && strncmp(url, "/style.css", 10))
        web_auth_identify(s->app, req);
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    long long clen = cl ? atoll(cl) : 0;
    char list[512];
    if (!strcmp(method, "POST") && is_import(url, list, sizeof list)) {
        if (req->auth == WEB_AUTH_NONE) {
            early(cs, web_is_api(req) ? 401 : 403, "not logged in; nothing was imported");
        } else if (clen > WEB_IMPORT_MAX) {
            early(cs, 413, "CSV file too large");
        } else {
            const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
            int multipart = ct && !strncasecmp(ct, "multipart/form-data", 19);
            if (!multipart && !web_auth_csrf_ok(req, NULL)) {
                early(cs, 403, "missing or wrong CSRF token; nothing was imported");
            } else {
                req->imp = web_import_begin(s->app, req, list, multipart, &cs->early);
                if (!req->imp)
                    cs->has_early = 1;
            }
        }
        return cs;
    }
    if (clen > WEB_REQ_MAX) {
        early(cs, 413, "request body too large");
        return cs;
    }
    req->body = lc_buf_new(WEB_REQ_MAX);
    return cs;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                               const char *version, const char *upload_data, size_t *upload_data_size,
                               void **con_cls)
{
    (void)version;
    struct web_server *s = cls;
    struct web_cstate *cs = *con_cls;
    if (!cs) {
        *con_cls = first_call(s, conn, url, method);
        return MHD_YES;
    }
    struct web_req *req = &cs->req;
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (cs->has_early)
            return MHD_YES; /* discard the rest of a refused body */
        if (req->imp) {
            if (web_import_feed(req->imp, upload_data, n) < 0) {
                web_import_finish(req->imp, req, &cs->early);
                cs->has_early = 1;
            }
        } else if (lc_buf_append(req->body, upload_data, n) < 0) {
            early(cs, 413, "request body too large");
        }
        return MHD_YES;
    }
    if (cs->has_early)
        return send_resp(conn, &cs->early, cs->method, cs->url);
    struct web_resp r = {200, "text/plain; charset=utf-8", lc_buf_new(WEB_BODY_MAX), "", "", NULL};
    if (req->imp)
        web_import_finish(req->imp, req, &r);
    else
        route(s->app, req, &r);
    if (req->suspended) { /* the route suspended the connection: it answers when resumed */
        req->suspended = 0;
        lc_buf_free(r.body);
        return MHD_YES;
    }
    enum MHD_Result ret = send_resp(conn, &r, cs->method, cs->url);
    lc_buf_free(r.body);
    return ret;
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    cstate_free(*con_cls);
    *con_cls = NULL;
}

struct web_server *web_server_start(struct web_app *app, const char *hostport, const char *cert_pem,
                                    const char *key_pem, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (lc_net_parse(hostport, &ss, &sslen) < 0) {
        snprintf(err, errlen, "http.listen: cannot parse \"%s\"", hostport);
        return NULL;
    }
    struct web_server *s = lc_calloc(1, sizeof *s);
    s->app = app;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (cert_pem && key_pem)
        flags |= MHD_USE_TLS;
    struct MHD_OptionItem tls[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)cert_pem},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)key_pem},
        {MHD_OPTION_END, 0, NULL},
    };
    struct MHD_OptionItem none[] = {{MHD_OPTION_END, 0, NULL}};
    s->mhd = MHD_start_daemon(flags, 0, NULL, NULL, handler, s,
                              MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, /* first, so it gets every message */
                              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                              MHD_OPTION_THREAD_POOL_SIZE, (unsigned)WEB_THREADS,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)WEB_CONN_LIMIT,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)WEB_CONN_TIMEOUT_S,
                              MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)WEB_CONN_MEMORY,
                              MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
                              MHD_OPTION_ARRAY, (cert_pem && key_pem) ? tls : none,
                              MHD_OPTION_END);
    if (!s->mhd) {
        snprintf(err, errlen, "cannot listen on %s (address in use, or a bad TLS certificate/key?)", hostport);
        free(s);
        return NULL;
    }
    return s;
}

void web_server_stop(struct web_server *s)
{
    if (!s)
        return;
    MHD_stop_daemon(s->mhd);
    free(s);
}
