/* web_http: the libmicrohttpd server of listcast-webui: routing, method checks, security headers.
 *
 * Contract: only GET and HEAD are served (405 with "Allow: GET, HEAD" otherwise; libmicrohttpd leaves the body
 * out of HEAD replies); request bodies are never read. Routes: /healthz, /, /style.css, /api/lists,
 * /api/posts/ID; anything else is a JSON 404. Every response carries Content-Security-Policy
 * "default-src 'self'", X-Frame-Options DENY, X-Content-Type-Options nosniff, Referrer-Policy no-referrer and
 * Cache-Control no-store.
 * Limits: 64 connections, 30 s idle timeout, 64 KiB of memory per connection (bounds the request line and
 * headers), responses up to WEB_BODY_MAX.
 */
#include "web.h"
#include "lc_buf.h"
#include "lc_log.h"
#include "lc_net.h"

#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WEB_CONN_LIMIT 64
#define WEB_CONN_TIMEOUT_S 30
#define WEB_CONN_MEMORY (64 * 1024)

struct web_server {
    struct MHD_Daemon *mhd;
    struct web_app *app;
};

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
    MHD_add_response_header(resp, "Content-Security-Policy", "default-src 'self'");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (r->status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    if (r->status >= 500)
        lc_warn("http %s %.200s %d", method, url, r->status);
    else
        lc_debug("http %s %.200s %d", method, url, r->status);
    return ret;
}

static void route(struct web_app *app, const char *url, struct web_resp *r)
{
    static const char posts[] = "/api/posts/";
    if (!strcmp(url, "/healthz"))
        web_page_health(app, r);
    else if (!strcmp(url, "/"))
        web_page_dashboard(app, r);
    else if (!strcmp(url, "/style.css"))
        web_page_style(app, r);
    else if (!strcmp(url, "/api/lists"))
        web_api_lists(app, r);
    else if (!strncmp(url, posts, sizeof posts - 1))
        web_api_post(app, url + sizeof posts - 1, r);
    else
        web_json_error(r, MHD_HTTP_NOT_FOUND, "not found");
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                               const char *version, const char *upload_data, size_t *upload_data_size,
                               void **con_cls)
{
    (void)version;
    (void)upload_data;
    (void)con_cls;
    struct web_server *s = cls;
    struct web_resp r = {200, "text/plain; charset=utf-8", lc_buf_new(WEB_BODY_MAX)};
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        web_json_error(&r, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed");
    } else if (*upload_data_size) {
        *upload_data_size = 0; /* a GET with a body: ignore the body */
        lc_buf_free(r.body);
        return MHD_YES;
    } else {
        route(s->app, url, &r);
    }
    enum MHD_Result ret = send_resp(conn, &r, method, url);
    lc_buf_free(r.body);
    return ret;
}

struct web_server *web_server_start(struct web_app *app, const char *hostport, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (lc_net_parse(hostport, &ss, &sslen) < 0) {
        snprintf(err, errlen, "http.listen: cannot parse \"%s\"", hostport);
        return NULL;
    }
    struct web_server *s = lc_calloc(1, sizeof *s);
    s->app = app;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    s->mhd = MHD_start_daemon(flags, 0, NULL, NULL, handler, s,
                              MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, /* first, so it gets every message */
                              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)WEB_CONN_LIMIT,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)WEB_CONN_TIMEOUT_S,
                              MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)WEB_CONN_MEMORY,
                              MHD_OPTION_END);
    if (!s->mhd) {
        snprintf(err, errlen, "cannot listen on %s (address in use?)", hostport);
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
