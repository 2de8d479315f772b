/* web: private header of listcast-webui, the admin web UI and JSON API daemon (webui/web_*.c).
 *
 * This first version is read-only and has no login: it binds to loopback by default (http.listen,
 * 127.0.0.1:8025) and must not be exposed beyond it. Login (slow salted password hashes), sessions, CSRF
 * protection of forms, editing and one-click unsubscribe come in a later issue.
 *
 * Threads: libmicrohttpd runs one internal epoll thread (MHD_USE_EPOLL_INTERNAL_THREAD) that calls the
 * request handler; the main thread only waits for SIGTERM/SIGINT. All Redis access goes through one
 * synchronous connection guarded by a mutex (web_db), reconnected after an I/O error.
 */
#ifndef WEB_H
#define WEB_H

#include <stddef.h>
#include <hiredis/hiredis.h>

struct lc_buf;
struct lc_cfg;

/* ---- web_db.c: the one Redis connection ---- */
struct web_db;
struct web_db *web_db_new(const char *url);
void web_db_free(struct web_db *db);
/* web_db_get locks the connection and returns it, connecting first if needed; on failure it returns NULL
 * (with err) and still holds the lock. Always pair with web_db_put. */
redisContext *web_db_get(struct web_db *db, char *err, size_t errlen);
/* web_db_put unlocks; a connection that saw an I/O or protocol error is dropped (reconnected next time). */
void web_db_put(struct web_db *db);
/* web_db_ping returns 0 if Redis answers PING, else -1. */
int web_db_ping(struct web_db *db);

/* ---- web_pages.c: route handlers; each fills a response ---- */
struct web_resp {
    int status;             /* HTTP status */
    const char *type;       /* Content-Type */
    struct lc_buf *body;    /* owned by the caller of the handler */
};

struct web_app {
    struct web_db *db;
    const struct lc_cfg *cfg;
};

void web_page_health(struct web_app *app, struct web_resp *r);
void web_page_dashboard(struct web_app *app, struct web_resp *r);
void web_page_style(struct web_app *app, struct web_resp *r);
void web_api_lists(struct web_app *app, struct web_resp *r);
void web_api_post(struct web_app *app, const char *id, struct web_resp *r);
/* web_json_error sets status and a body {"error": msg}. */
void web_json_error(struct web_resp *r, int status, const char *msg);
/* web_html_esc appends s HTML-escaped (& < > " ') to b. */
void web_html_esc(struct lc_buf *b, const char *s);

/* ---- web_http.c: the libmicrohttpd server ---- */
struct web_server;
/* web_server_start listens on hostport and serves app; NULL + err on failure. */
struct web_server *web_server_start(struct web_app *app, const char *hostport, char *err, size_t errlen);
void web_server_stop(struct web_server *s);

#define WEB_BODY_MAX (8 * 1024 * 1024) /* largest response body */

#endif
