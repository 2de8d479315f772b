/* web_util: request input (urlencoded forms, a small strict JSON reader) and HTML scaffolding for webui.
 *
 * Contract: parsers never trust their input: a form field is decoded into a caller-sized buffer (too long is an
 * error, not a truncation); the JSON reader accepts one object of at most WEB_JSON_KEYS keys whose values are
 * strings, numbers, true/false/null or arrays of at most WEB_JSON_ITEMS strings, nesting no deeper, and refuses
 * anything else with a reason. Output helpers escape every value (HTML or percent-encoding).
 */
#include "web.h"
#include "lc_buf.h"
#include "lc_json.h"
#include "lc_log.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WEB_FORM_FIELDS 64
#define WEB_JSON_KEYS 64
#define WEB_JSON_ITEMS 100000

/* ---- forms ---------------------------------------------------------------------------------------------- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* decode percent-encoding of s[0..n) into out; -1 on a bad escape, a NUL byte or overflow. */
static int form_decode(const char *s, size_t n, char *out, size_t outlen)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (i + 2 >= n)
                return -1;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            c = h * 16 + l;
            i += 2;
        }
        if (c == 0 || k + 1 >= outlen)
            return -1;
        out[k++] = (char)c;
    }
    out[k] = 0;
    return 0;
}

int web_form_check(const char *body)
{
    if (!body)
        return -1;
    int fields = 0;
    const char *p = body;
    while (*p) {
        const char *end = strchr(p, '&');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (!eq || eq == p || ++fields > WEB_FORM_FIELDS)
            return -1;
        for (const char *q = p; q < p + n; q++) {
            if (*q == '%' && (q + 2 >= p + n || hexval(q[1]) < 0 || hexval(q[2]) < 0))
                return -1;
            if ((unsigned char)*q < 0x21 || (unsigned char)*q > 0x7e)
                return -1;
        }
        p += n;
        if (*p == '&')
            p++;
    }
    return 0;
}

int web_form_get(const char *body, const char *name, char *out, size_t outlen)
{
    if (!body)
        return 0;
    size_t nl = strlen(name);
    const char *p = body;
    while (*p) {
        const char *end = strchr(p, '&');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > nl && p[nl] == '=' && !memcmp(p, name, nl)) {
            const char *v = p + nl + 1;
            size_t vn = n - nl - 1;
            for (size_t i = 0; i < vn; i++)
                if (v[i] == '%' && (i + 2 >= vn || hexval(v[i + 1]) < 0 || hexval(v[i + 2]) < 0))
                    return -1;
            return form_decode(v, vn, out, outlen) < 0 ? -1 : 1;
        }
        p += n;
        if (*p == '&')
            p++;
    }
    return 0;
}

/* ---- CSV rows ------------------------------------------------------------------------------------------ */

int web_csv_field(const char *line, char *out, size_t outlen, const char **why)
{
    size_t k = 0;
    const char *p = line;
    while (*p == ' ')
        p++;
    if (*p == '"') {
        p++;
        for (;;) {
            if (!*p) {
                *why = "broken quoting: unterminated quoted field";
                return -1;
            }
            if (*p == '"') {
                if (p[1] == '"') {
                    p += 2;
                    if (k + 1 < outlen)
                        out[k++] = '"';
                    continue;
                }
                p++;
                break;
            }
            if (k + 1 < outlen)
                out[k++] = *p;
            p++;
        }
        while (*p == ' ')
            p++;
        if (*p && *p != ',') {
            *why = "broken quoting: text after a closing quote";
            return -1;
        }
    } else {
        for (; *p && *p != ','; p++) {
            if (*p == '"') {
                *why = "broken quoting: a quote inside an unquoted field";
                return -1;
            }
            if (k + 1 < outlen)
                out[k++] = *p;
        }
        while (k && out[k - 1] == ' ')
            k--;
    }
    out[k] = 0;
    /* the rest of the row must be well quoted too */
    int inq = 0;
    for (; *p; p++) {
        if (*p == '"')
            inq = !inq;
    }
    if (inq) {
        *why = "broken quoting: unterminated quoted field";
        return -1;
    }
    return 0;
}

/* ---- JSON input ----------------------------------------------------------------------------------------- */

struct web_jkey {
    char *key;
    int type; /* 's' string, 'n' number, 'b' bool, 'z' null, 'a' array of strings */
    char *str;
    char **items;
    size_t nitems;
};

struct web_jv {
    struct web_jkey k[WEB_JSON_KEYS];
    size_t n;
};

struct jp {
    const char *s, *end;
    char *err;
    size_t errlen;
};

static void ws(struct jp *p)
{
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r'))
        p->s++;
}

static int jfail(struct jp *p, const char *what)
{
    if (!*p->err)
        snprintf(p->err, p->errlen, "malformed JSON: %s", what);
    return -1;
}

static void put_utf8(struct lc_buf *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | cp >> 6);
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | cp >> 12);
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | cp >> 18);
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    lc_buf_append(b, u, n);
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(s[i]);
        if (h < 0)
            return -1;
        v = v * 16 + (unsigned)h;
    }
    *out = v;
    return 0;
}

/* jstring parses a string at p->s (which is '"') into a new heap string (no NUL bytes allowed). */
static char *jstring(struct jp *p)
{
    struct lc_buf *b = lc_buf_new(WEB_REQ_MAX);
    p->s++;
    while (p->s < p->end && *p->s != '"') {
        unsigned char c = (unsigned char)*p->s;
        if (c < 0x20)
            goto bad;
        if (c != '\\') {
            lc_buf_append(b, p->s++, 1);
            continue;
        }
        if (++p->s >= p->end)
            goto bad;
        char e = *p->s++;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (simple && e) {
            static const char map[] = "\"\\/\b\f\n\r\t";
            lc_buf_append(b, &map[simple - "\"\\/bfnrt"], 1);
        } else if (e == 'u') {
            unsigned cp;
            if (p->end - p->s < 4 || hex4(p->s, &cp) < 0)
                goto bad;
            p->s += 4;
            if (cp >= 0xd800 && cp < 0xdc00) {
                unsigned lo;
                if (p->end - p->s < 6 || p->s[0] != '\\' || p->s[1] != 'u' || hex4(p->s + 2, &lo) < 0 ||
                    lo < 0xdc00 || lo > 0xdfff)
                    goto bad;
                p->s += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                goto bad;
            }
            if (cp == 0)
                goto bad;
            put_utf8(b, cp);
        } else {
            goto bad;
        }
    }
    if (p->s >= p->end)
        goto bad;
    p->s++;
    char *out = lc_buf_steal(b, NULL);
    lc_buf_free(b);
    return out;
bad:
    lc_buf_free(b);
    jfail(p, "bad string");
    return NULL;
}

static int jscalar(struct jp *p, struct web_jkey *k)
{
    static const struct {
        const char *w;
        int t;
    } words[] = {{"true", 'b'}, {"false", 'b'}, {"null", 'z'}};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(words[i].w);
        if ((size_t)(p->end - p->s) >= n && !memcmp(p->s, words[i].w, n)) {
            k->type = words[i].t;
            k->str = lc_strdup(words[i].w);
            p->s += n;
            return 0;
        }
    }
    const char *st = p->s;
    if (p->s < p->end && *p->s == '-')
        p->s++;
    size_t digits = 0;
    while (p->s < p->end && ((*p->s >= '0' && *p->s <= '9') || *p->s == '.' || *p->s == 'e' || *p->s == 'E' ||
                             *p->s == '+' || *p->s == '-'))
        p->s++, digits++;
    if (!digits || p->s - st > 40)
        return jfail(p, "unexpected value");
    char tmp[48];
    memcpy(tmp, st, (size_t)(p->s - st));
    tmp[p->s - st] = 0;
    char *e;
    strtod(tmp, &e);
    if (*e)
        return jfail(p, "bad number");
    k->type = 'n';
    k->str = lc_strdup(tmp);
    return 0;
}

static void jkey_clear(struct web_jkey *k)
{
    free(k->key);
    free(k->str);
    for (size_t i = 0; i < k->nitems; i++)
        free(k->items[i]);
    free(k->items);
}

void web_json_free(struct web_jv *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++)
        jkey_clear(&v->k[i]);
    free(v);
}

struct web_jv *web_json_parse(const char *text, size_t len, char *err, size_t errlen)
{
    struct jp p = {text, text + len, err, errlen};
    *err = 0;
    if (memchr(text, 0, len)) {
        snprintf(err, errlen, "malformed JSON: NUL byte");
        return NULL;
    }
    struct web_jv *v = lc_calloc(1, sizeof *v);
    ws(&p);
    if (p.s >= p.end || *p.s != '{') {
        snprintf(err, errlen, "malformed JSON: expected an object");
        goto bad;
    }
    p.s++;
    ws(&p);
    if (p.s < p.end && *p.s == '}') {
        p.s++;
        goto tail;
    }
    for (;;) {
        ws(&p);
        if (p.s >= p.end || *p.s != '"') {
            jfail(&p, "expected a key");
            goto bad;
        }
        if (v->n >= WEB_JSON_KEYS) {
            snprintf(err, errlen, "JSON object has too many keys");
            goto bad;
        }
        struct web_jkey *k = &v->k[v->n++];
        if (!(k->key = jstring(&p)))
            goto bad;
        ws(&p);
        if (p.s >= p.end || *p.s != ':') {
            jfail(&p, "expected ':'");
            goto bad;
        }
        p.s++;
        ws(&p);
        if (p.s < p.end && *p.s == '"') {
            k->type = 's';
            if (!(k->str = jstring(&p)))
                goto bad;
        } else if (p.s < p.end && *p.s == '[') {
            k->type = 'a';
            p.s++;
            ws(&p);
            size_t cap = 0;
            if (p.s < p.end && *p.s == ']') {
                p.s++;
            } else {
                for (;;) {
                    ws(&p);
                    if (p.s >= p.end || *p.s != '"') {
                        snprintf(err, errlen, "malformed JSON: arrays hold strings only");
                        goto bad;
                    }
                    if (k->nitems >= WEB_JSON_ITEMS) {
                        snprintf(err, errlen, "JSON array too long (at most %d items)", WEB_JSON_ITEMS);
                        goto bad;
                    }
                    char *s = jstring(&p);
                    if (!s)
                        goto bad;
                    if (k->nitems == cap) {
                        cap = cap ? cap * 2 : 16;
                        k->items = lc_realloc(k->items, cap * sizeof *k->items);
                    }
                    k->items[k->nitems++] = s;
                    ws(&p);
                    if (p.s < p.end && *p.s == ',') {
                        p.s++;
                        continue;
                    }
                    if (p.s < p.end && *p.s == ']') {
                        p.s++;
                        break;
                    }
                    jfail(&p, "expected ',' or ']'");
                    goto bad;
                }
            }
        } else if (jscalar(&p, k) < 0) {
            goto bad;
        }
        ws(&p);
        if (p.s < p.end && *p.s == ',') {
            p.s++;
            continue;
        }
        if (p.s < p.end && *p.s == '}') {
            p.s++;
            break;
        }
        jfail(&p, "expected ',' or '}'");
        goto bad;
    }
tail:
    ws(&p);
    if (p.s != p.end) {
        snprintf(err, errlen, "malformed JSON: text after the object");
        goto bad;
    }
    return v;
bad:
    if (!*err)
        snprintf(err, errlen, "malformed JSON");
    web_json_free(v);
    return NULL;
}

static const struct web_jkey *jfind(const struct web_jv *v, const char *key)
{
    for (size_t i = 0; v && i < v->n; i++)
        if (!strcmp(v->k[i].key, key))
            return &v->k[i];
    return NULL;
}

const char *web_json_str(const struct web_jv *v, const char *key)
{
    const struct web_jkey *k = jfind(v, key);
    return k && (k->type == 's' || k->type == 'n') ? k->str : NULL;
}

int web_json_has(const struct web_jv *v, const char *key)
{
    return jfind(v, key) != NULL;
}

const char *const *web_json_strs(const struct web_jv *v, const char *key, size_t *n)
{
    const struct web_jkey *k = jfind(v, key);
    if (!k || k->type != 'a')
        return NULL;
    *n = k->nitems;
    return (const char *const *)(k->items ? k->items : (char **)"");
}

/* ---- output helpers ----------------------------------------------------------------------------------------- */

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

void web_url_esc(struct lc_buf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-._~@", c))
            lc_buf_append(b, s, 1);
        else
            lc_buf_printf(b, "%%%02X", c);
    }
}

void web_csrf_field(struct lc_buf *b, const struct web_req *req)
{
    lc_buf_puts(b, "<input type=\"hidden\" name=\"csrf\" value=\"");
    web_html_esc(b, req->csrf);
    lc_buf_puts(b, "\">");
}

void web_page_start(struct web_resp *r, const struct web_req *req, const char *title, int refresh)
{
    struct lc_buf *b = r->body;
    r->type = "text/html; charset=utf-8";
    lc_buf_puts(b, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                   "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    if (refresh > 0)
        lc_buf_printf(b, "<meta http-equiv=\"refresh\" content=\"%d\">", refresh);
    lc_buf_puts(b, "<title>");
    web_html_esc(b, title);
    lc_buf_puts(b, " - listcast</title><link rel=\"stylesheet\" href=\"/style.css\"></head>\n<body>\n<header>"
                   "<h1><a href=\"/\">listcast</a></h1>");
    if (req && req->auth != WEB_AUTH_NONE) {
        lc_buf_puts(b, "<nav><a href=\"/\">Dashboard</a> <a href=\"/moderation\">Moderation</a> "
                       "<a href=\"/doctor\">Domain doctor</a> <span class=\"who\">");
        web_html_esc(b, req->user);
        lc_buf_puts(b, "</span> <form method=\"post\" action=\"/logout\" class=\"inline\">");
        web_csrf_field(b, req);
        lc_buf_puts(b, "<button type=\"submit\">Log out</button></form></nav>");
    }
    lc_buf_puts(b, "</header>\n<main>\n<h2 class=\"title\">");
    web_html_esc(b, title);
    lc_buf_puts(b, "</h2>\n");
}

void web_page_end(struct web_resp *r)
{
    lc_buf_puts(r->body, "</main>\n<footer>listcast admin &middot; JSON API under <code>/api/</code></footer>\n"
                         "</body></html>\n");
}

void web_html_error(struct web_resp *r, const struct web_req *req, int status, const char *msg)
{
    lc_buf_reset(r->body);
    r->status = status;
    r->location[0] = 0;
    char title[32];
    snprintf(title, sizeof title, "Error %d", status);
    web_page_start(r, req, title, 0);
    lc_buf_puts(r->body, "<p class=\"error\">");
    web_html_esc(r->body, msg);
    lc_buf_puts(r->body, "</p>\n");
    web_page_end(r);
}

void web_json_error(struct web_resp *r, int status, const char *msg)
{
    lc_buf_reset(r->body);
    r->status = status;
    r->type = "application/json";
    r->location[0] = 0;
    struct lc_json *j = lc_json_new_buf(r->body, 0);
    lc_json_obj(j);
    lc_json_kstr(j, "error", msg);
    lc_json_end(j);
    lc_json_free(j);
}

int web_is_api(const struct web_req *req)
{
    return !strncmp(req->url, "/api/", 5) || !strcmp(req->url, "/api");
}

void web_err(struct web_resp *r, const struct web_req *req, int status, const char *msg)
{
    if (web_is_api(req))
        web_json_error(r, status, msg);
    else
        web_html_error(r, req, status, msg);
}

void web_redirect(struct web_resp *r, const char *location)
{
    lc_buf_reset(r->body);
    r->status = 303;
    r->type = "text/plain; charset=utf-8";
    snprintf(r->location, sizeof r->location, "%s", location);
    lc_buf_puts(r->body, "see other\n");
}

void web_random_hex(char *out, size_t nbytes)
{
    unsigned char raw[64];
    if (nbytes > sizeof raw)
        lc_panic("web_random_hex: %zu bytes", nbytes);
    if (gnutls_rnd(GNUTLS_RND_KEY, raw, nbytes) < 0)
        lc_fatal("gnutls_rnd failed");
    for (size_t i = 0; i < nbytes; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    out[2 * nbytes] = 0;
}

void web_sha256_hex(const char *s, char out[65])
{
    unsigned char d[32];
    gnutls_hash_fast(GNUTLS_DIG_SHA256, s, strlen(s), d);
    for (size_t i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

const char *web_query(const struct web_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}
