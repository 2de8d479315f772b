/* web: private header of listcast-webui, the admin web UI and JSON API daemon (webui/web_*.c).
 *
 * Pages need a login (session cookie, CSRF token on every form); the JSON API takes the same session (with the
 * CSRF token in an X-CSRF-Token header for writes) or an API token (Authorization: Bearer, made by `listcast
 * admin token`). Public endpoints (/u/TOKEN one-click unsubscribe, /confirm/TOKEN, /login, /healthz) need none.
 *
 * Threads: libmicrohttpd runs a small pool of epoll threads (WEB_THREADS) that call the request handler; the
 * main thread only waits for SIGTERM/SIGINT. Redis access goes through a pool of synchronous connections, one
 * per thread at most (web_db), each reconnected after an I/O error. The domain checks of /doctor (web_doctor.c)
 * run in threads of their own while their requests are suspended (MHD_suspend_connection): they never hold a
 * pool thread.
 */
#ifndef WEB_H
#define WEB_H

#include <stddef.h>
#include <stdint.h>
#include <hiredis/hiredis.h>

struct lc_buf;
struct lc_cfg;
struct lc_secret;
struct lc_json;
struct MHD_Connection;

#define WEB_THREADS 4
#define WEB_BODY_MAX (64 * 1024 * 1024) /* largest response body (CSV export of 1,000,000 subscribers) */
#define WEB_REQ_MAX (1024 * 1024)       /* largest request body, but CSV imports (413 beyond) */
#define WEB_IMPORT_MAX (256LL * 1024 * 1024) /* largest CSV import */

/* ---- web_db.c: the Redis connections ---- */
struct web_db;
struct web_db *web_db_new(const char *url);
void web_db_free(struct web_db *db);
/* web_db_get takes a connection of the pool and returns it, connecting first if needed; on failure it returns
 * NULL (with err) and still holds the slot. Always pair with web_db_put, in the same thread. */
redisContext *web_db_get(struct web_db *db, char *err, size_t errlen);
/* web_db_put gives the slot back; a connection that saw an I/O or protocol error is dropped. */
void web_db_put(struct web_db *db);
/* web_db_ping returns 0 if Redis answers PING, else -1. */
int web_db_ping(struct web_db *db);

/* ---- the application and one request ---- */
struct web_doctor;

struct web_app {
    struct web_db *db;
    const struct lc_cfg *cfg;
    const struct lc_secret *secret;
    int https;           /* served over TLS: cookies get Secure */
    struct web_doctor *doctor; /* the domain checks (web_doctor.c) */
};

enum web_auth { WEB_AUTH_NONE, WEB_AUTH_SESSION, WEB_AUTH_BEARER };

struct web_import; /* web_subs.c: a CSV import in progress */
struct web_doctor_job; /* web_doctor.c: a domain check, running or done */

/* web_req.doc_wait: where a request waiting for a domain check is (under the web_doctor lock) */
enum { WEB_DOC_NONE, WEB_DOC_REGISTERED, WEB_DOC_SUSPENDED, WEB_DOC_WAKE };

struct web_req {
    struct MHD_Connection *conn;
    const char *method;   /* "GET" (HEAD is served as GET), "POST" */
    const char *url;      /* path, percent-decoded */
    char ip[64];          /* client address */
    struct lc_buf *body;  /* request body (bounded by WEB_REQ_MAX); NULL for streaming routes */
    int too_big;          /* the body passed its bound: 413 */
    enum web_auth auth;
    char user[65];        /* logged-in admin */
    char csrf[65];        /* the session's CSRF token */
    struct web_import *imp; /* streaming CSV import, when the route is one */
    int handled;          /* a streaming route answered already */
    struct web_doctor_job *doctor; /* the domain check this request shows (a reference), or NULL */
    int doc_wait;         /* WEB_DOC_* */
    int suspended;        /* the route suspended the connection: no response now, the handler runs again */
};

struct web_resp {
    int status;             /* HTTP status */
    const char *type;       /* Content-Type */
    struct lc_buf *body;    /* owned by the caller of the handler */
    char location[1024];    /* Location header when not empty (redirects) */
    char cookie[256];       /* Set-Cookie header when not empty */
    const char *disposition; /* Content-Disposition when not NULL */
};

/* ---- web_util.c: forms, JSON input, HTML scaffolding ---- */
/* web_form_get finds field name in an application/x-www-form-urlencoded body (or query string) and decodes it
 * into out (at most outlen-1 bytes). Returns 1 found, 0 missing, -1 malformed or too long. */
int web_form_get(const char *body, const char *name, char *out, size_t outlen);
/* web_form_check returns 0 when body is a well-formed urlencoded form of at most 64 fields, else -1. */
int web_form_check(const char *body);
/* web_csv_field extracts the first field of a CSV row (RFC 4180 quoting, one line) into out (truncated to
 * outlen-1 bytes) and checks the quoting of the rest of the row; 0, or -1 with *why (static) on broken quoting. */
int web_csv_field(const char *line, char *out, size_t outlen, const char **why);
/* A small strict JSON reader for request bodies: an object whose values are strings, numbers, booleans,
 * null or arrays of strings. */
struct web_jv;
struct web_jv *web_json_parse(const char *text, size_t len, char *err, size_t errlen);
void web_json_free(struct web_jv *v);
/* web_json_str returns the string value of key, or NULL if missing or not a string. */
const char *web_json_str(const struct web_jv *v, const char *key);
/* web_json_has reports whether key is present (of any type). */
int web_json_has(const struct web_jv *v, const char *key);
/* web_json_strs returns the array of strings of key (count in *n), or NULL if missing or not an array. */
const char *const *web_json_strs(const struct web_jv *v, const char *key, size_t *n);

/* web_html_esc appends s HTML-escaped (& < > " ') to b. */
void web_html_esc(struct lc_buf *b, const char *s);
/* web_url_esc appends s percent-encoded for a path segment or query value. */
void web_url_esc(struct lc_buf *b, const char *s);
/* web_page_start writes the document head and the navigation (with a logout form when req is logged in). */
void web_page_start(struct web_resp *r, const struct web_req *req, const char *title, int refresh);
void web_page_end(struct web_resp *r);
/* web_csrf_field writes the hidden CSRF input of req's session. */
void web_csrf_field(struct lc_buf *b, const struct web_req *req);
/* web_html_error answers an HTML page with status and a message. */
void web_html_error(struct web_resp *r, const struct web_req *req, int status, const char *msg);
/* web_json_error sets status and a body {"error": msg}. */
void web_json_error(struct web_resp *r, int status, const char *msg);
/* web_redirect answers 303 See Other to location. */
void web_redirect(struct web_resp *r, const char *location);
/* web_random_hex fills out with 2*nbytes random hex digits (GnuTLS nonce RNG) and a NUL. */
void web_random_hex(char *out, size_t nbytes);
/* web_sha256_hex writes the SHA-256 of s as 64 hex digits and a NUL to out[65]. */
void web_sha256_hex(const char *s, char out[65]);
/* web_query returns a query-string argument of the request, or NULL. */
const char *web_query(const struct web_req *req, const char *name);
/* web_is_api reports whether the request is for the JSON API (/api/...). */
int web_is_api(const struct web_req *req);
/* web_err answers an error in the request's flavour: JSON for /api, else HTML. */
void web_err(struct web_resp *r, const struct web_req *req, int status, const char *msg);

/* ---- web_auth.c: login, sessions, CSRF, API tokens ---- */
/* web_auth_identify looks at the request's cookie / Authorization header and fills req->auth, user, csrf. */
void web_auth_identify(struct web_app *app, struct web_req *req);
/* web_auth_csrf_ok checks a write: bearer requests pass; session requests need the CSRF token in the form
 * field "csrf" (given) or the X-CSRF-Token header. */
int web_auth_csrf_ok(const struct web_req *req, const char *given);
void web_page_login(struct web_app *app, struct web_req *req, struct web_resp *r);
void web_do_login(struct web_app *app, struct web_req *req, struct web_resp *r);
void web_do_logout(struct web_app *app, struct web_req *req, struct web_resp *r);

/* ---- web_public.c: one-click unsubscribe and confirmation links ---- */
void web_public_unsub(struct web_app *app, struct web_req *req, const char *token, struct web_resp *r);
void web_public_confirm(struct web_app *app, struct web_req *req, const char *token, struct web_resp *r);

/* ---- web_pages.c: dashboard, lists, posts ---- */
void web_page_health(struct web_app *app, struct web_resp *r);
void web_page_style(struct web_app *app, struct web_resp *r);
void web_page_dashboard(struct web_app *app, struct web_req *req, struct web_resp *r);
void web_page_post(struct web_app *app, struct web_req *req, const char *id, struct web_resp *r);
void web_page_list(struct web_app *app, struct web_req *req, const char *list, struct web_resp *r);
void web_do_list_create(struct web_app *app, struct web_req *req, struct web_resp *r);
void web_do_list_save(struct web_app *app, struct web_req *req, const char *list, struct web_resp *r);
void web_api_lists(struct web_app *app, struct web_resp *r);
void web_api_list(struct web_app *app, const char *list, struct web_resp *r);
void web_api_post(struct web_app *app, const char *id, struct web_resp *r);
/* web_list_norm normalises a list address argument and checks the list exists: 1 yes, 0 no such list
 * (or malformed), -1 Redis error. */
int web_list_norm(struct web_app *app, const char *arg, char *out);

/* ---- web_subs.c: subscribers, CSV import and export ---- */
void web_page_subs(struct web_app *app, struct web_req *req, const char *list, struct web_resp *r);
void web_do_subs(struct web_app *app, struct web_req *req, const char *list, struct web_resp *r);
void web_api_subs(struct web_app *app, struct web_req *req, const char *list, struct web_resp *r);
void web_page_import_form(struct web_app *app, struct web_req *req, const char *list, struct web_resp *r);
void web_export(struct web_app *app, struct web_req *req, const char *list, struct web_resp *r);
void web_page_import(struct web_app *app, struct web_req *req, const char *id, struct web_resp *r);
/* Streaming import: begin (after auth; NULL + resp filled when refused), feed body chunks, finish. */
struct web_import *web_import_begin(struct web_app *app, struct web_req *req, const char *list, int multipart,
                                    struct web_resp *r);
/* web_import_feed takes a chunk of the request body; 0, or -1 when the import was refused (r filled). */
int web_import_feed(struct web_import *imp, const char *data, size_t len);
void web_import_finish(struct web_import *imp, struct web_req *req, struct web_resp *r);
void web_import_free(struct web_import *imp);

/* ---- web_mod.c: the moderation queue (held posts) ---- */
void web_page_moderation(struct web_app *app, struct web_req *req, struct web_resp *r);
void web_do_moderate(struct web_app *app, struct web_req *req, const char *id, struct web_resp *r);
/* web_bounces: a list's bounce report (by reason, domain and post), page or JSON. */
void web_bounces(struct web_app *app, struct web_req *req, const char *list, struct web_resp *r);

/* ---- web_doctor.c: the sending-domain checks of `listcast doctor` (/doctor, /api/doctor) ---- */
struct web_doctor *web_doctor_new(const struct lc_cfg *cfg);
/* web_doctor_stop refuses new checks, cancels the running ones and waits for their threads (which resume the
 * connections waiting on them): call it before web_server_stop. */
void web_doctor_stop(struct web_doctor *d);
void web_doctor_free(struct web_doctor *d);
/* web_doctor serves GET /doctor and /api/doctor (domain NULL: the sending domains, or the check of the query
 * argument domain) and /doctor/DOMAIN, /api/doctor/DOMAIN. It may suspend the connection (req->suspended) until
 * the check ends; the handler is then called again and answers. */
void web_doctor(struct web_app *app, struct web_req *req, const char *domain, struct web_resp *r);
/* web_doctor_release drops the request's reference to its check (at the end of the request). */
void web_doctor_release(struct web_req *req);

/* ---- web_http.c: the libmicrohttpd server ---- */
struct web_server;
/* web_server_start listens on hostport and serves app (HTTPS when cert and key are PEM texts); NULL + err. */
struct web_server *web_server_start(struct web_app *app, const char *hostport, const char *cert_pem,
                                    const char *key_pem, char *err, size_t errlen);
void web_server_stop(struct web_server *s);

#endif
