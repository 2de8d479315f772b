/* bnc_fast: a single-pass scanner that takes well-formed bounce messages apart without GMime.
 *
 * Contract: bnc_fast_parse() looks at one message (already cut by bnc_parse's bounded_len) and, when it is
 * sure to see exactly what GMime would, extracts what the MIME walk of bnc_parse.c collects: the
 * delivery-status parts in document order, the first feedback-report and text/rfc822-headers parts, the first
 * text/plain (else text/html) part outside attached messages, with transfer encodings undone and the text
 * converted to UTF-8 as g_mime_text_part_get_text does (GMime's own converter and charset names, invalid bytes
 * dropped); the headers the rules read (From, To, Return-Path, Subject, X-Failed-Recipients, Auto-Submitted,
 * Precedence, ...), unfolded and trimmed as GMime gives them, RFC 2047 encoded words and raw 8-bit text decoded
 * by GMime's own g_mime_utils_header_decode_text; the To of the first attached message. It hands them to
 * bnc_analyse() (bnc_parse.c), the rules both paths share, so the two cannot disagree once their inputs agree.
 * Reports, free text, ARF, SES and auto-replies all go this way.
 * "Sure" is deliberately narrow; the scanner declines (returns 0, having added nothing; the GMime path runs) on:
 * a NUL byte; a header line that is not "Name: value", a continuation, or (after the first line of a block) a
 * line without any colon; a header block without its blank line; a lone CR in a header the rules read; a
 * repeated Content-Type or Content-Transfer-Encoding; a Content-Type with comments, backslashes, RFC 2231
 * parameters, anything but ';' after the type, a repeated boundary or charset, or an empty charset;
 * multipart/digest; message parts other than message/rfc822 and the report types; an attached message that
 * mentions a report type or the enclosing boundary; a line starting with a boundary that is not exactly that
 * boundary (or its end); transfer encodings other than 7bit, 8bit, binary, quoted-printable (every '=' followed
 * by two upper-case hex digits or a line break) and base64 (alphabet, line breaks, correct final padding);
 * more than BNC_FAST_PARTS parts or BNC_FAST_DEPTH levels.
 * Where GMime's behaviour is particular it is copied: a part's content ends before the line break that
 * precedes its boundary line, counted as two bytes when the boundary line ends in CRLF and one otherwise (and
 * is empty when the blank line after its headers is that line break); a boundary line may carry trailing white
 * space; a multipart without its closing line ends at the end of the message, or at the enclosing part's
 * boundary; a multipart without a boundary parameter, or whose boundary is never used, has no parts (all
 * preface); a header line without a colon is dropped with the lines folded under it; the first of repeated
 * headers counts, but the last Subject.
 * tests/bounce_test.py runs both paths over every corpus file and requires equal results; the fuzz target
 * compares them wherever the scanner answers.
 * Converters: glibc unloads a charset's module soon after its last converter is closed, so one converter per
 * charset met is kept open for the process's life (at most BNC_KEEP_CHARSETS; a mutex-guarded table, the only
 * global state here).
 * Limits: no allocation besides the decoded copies (each at most its part's size; a charset conversion's
 * output at most BNC_TEXT_SCAN + 64 bytes) and the header values; recursion depth bounded by BNC_FAST_DEPTH.
 */
#include <errno.h>
#include <gmime/gmime.h>
#include <iconv.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bnc.h"

#define BNC_FAST_PARTS 64
#define BNC_FAST_DEPTH 4
#define BNC_FAST_BOUNDARY 200

/* Headers the rules use besides the MIME ones (struct bnc_view), by index. */
enum { H_FROM, H_TO, H_RP, H_XFR, H_APPLE, H_AUTOSUB, H_PREC, H_SUBJECT, H_AR1, H_AR2, H_AR3, H_N };
static const struct {
    const char *name;
    size_t len;
} hnames[H_N] = {{"From", 4}, {"To", 2}, {"Return-Path", 11}, {"X-Failed-Recipients", 19},
                 {"X-Apple-Unsubscribe", 19}, {"Auto-Submitted", 14}, {"Precedence", 10}, {"Subject", 7},
                 {"X-Autoreply", 11}, {"X-Autorespond", 13}, {"X-Vacation", 10}};

struct fhdr {
    const char *ct, *cte; /* values (folded lines included), NULL when absent */
    size_t ctlen, ctelen;
    int want;             /* also collect hv[] (the message's own headers) */
    const char *hv[H_N];  /* the first of each (the last Subject, as g_mime_message_get_subject), raw, folded */
    size_t hvlen[H_N];
};

/* A parsed Content-Type: lower-cased type and subtype, the parameters we use. */
struct ftype {
    char type[32], sub[64];
    char charset[64];
    char boundary[BNC_FAST_BOUNDARY + 1];
    int has_boundary;
};

struct fpart {
    const char *p;
    size_t n;
    const char *cte;
    size_t ctelen;
    char charset[64];
};

struct fscan {
    int parts;
    int has_orig;
    int hdr_bad;            /* a header the rules may use could not be read as GMime gives it */
    char *orig_to;          /* its To, as GMime gives it (NULL: none) */
    struct fpart dsn[BNC_DSN_PARTS];
    int ndsn;
    const char *bstack[BNC_FAST_DEPTH]; /* boundaries of the enclosing multiparts, outermost first */
    int nbstack;
    struct fpart text, html, arf, hdrs;
    int has_text, has_html, has_arf, has_hdrs;
};

/* End of the line starting at p (just past its '\n'), or NULL when the line has none. */
static const char *line_end(const char *p, const char *end)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    return nl ? nl + 1 : NULL;
}

/* Read a header block at p; returns the start of the content (after the blank line) or NULL to decline. */
static const char *headers(const char *p, const char *end, struct fhdr *h, int want)
{
    memset(h, 0, sizeof *h);
    h->want = want;
    const char **last = NULL;
    size_t *lastlen = NULL;
    for (int lines = 0; lines < 4096; lines++) {
        const char *e = line_end(p, end);
        if (!e)
            return NULL;
        size_t n = (size_t)(e - p);
        if (n == 1 || (n == 2 && p[0] == '\r'))
            return e; /* the blank line */
        if (p[0] == ' ' || p[0] == '\t') {
            if (!lines)
                return NULL;
            if (last)
                *lastlen = (size_t)(e - *last);
            p = e;
            continue;
        }
        const char *c = p;
        while (c < e && *c > ' ' && *c < 127 && *c != ':')
            c++;
        if (lines && !memchr(p, ':', n)) {
            /* a line without a colon after a header (an unindented parameter line): GMime drops it, and the
             * lines folded under it */
            last = NULL;
            p = e;
            continue;
        }
        if (c == p || c >= e || *c != ':')
            return NULL;
        size_t nl = (size_t)(c - p);
        last = NULL;
        if (nl == 12 && !strncasecmp(p, "Content-Type", 12)) {
            if (h->ct)
                return NULL;
            last = &h->ct;
            lastlen = &h->ctlen;
        } else if (nl == 25 && !strncasecmp(p, "Content-Transfer-Encoding", 25)) {
            if (h->cte)
                return NULL;
            last = &h->cte;
            lastlen = &h->ctelen;
        }
        for (int k = 0; !last && want && k < H_N; k++)
            if (nl == hnames[k].len && !strncasecmp(p, hnames[k].name, nl) && (!h->hv[k] || k == H_SUBJECT)) {
                last = &h->hv[k];
                lastlen = &h->hvlen[k];
            }
        if (last) {
            *last = c + 1;
            *lastlen = (size_t)(e - (c + 1));
        }
        p = e;
    }
    return NULL;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int is_tok(char c)
{
    return c > ' ' && c < 127 && !strchr("()<>@,;:\\\"/[]?=", c);
}

/* Read a token into out (lower-cased); 0 or -1. */
static int token(const char **pp, const char *end, char *out, size_t outlen)
{
    const char *p = *pp;
    size_t o = 0;
    while (p < end && is_tok(*p)) {
        if (o + 1 >= outlen)
            return -1;
        char c = *p++;
        out[o++] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    out[o] = 0;
    *pp = p;
    return o ? 0 : -1;
}

/* Parse a Content-Type value (absent: text/plain). 0 or -1 to decline. */
static int ctype(const struct fhdr *h, struct ftype *t)
{
    memset(t, 0, sizeof *t);
    if (!h->ct) {
        strcpy(t->type, "text");
        strcpy(t->sub, "plain");
        return 0;
    }
    const char *p = h->ct, *end = h->ct + h->ctlen;
    int quoted = 0;
    for (const char *q = p; q < end; q++) /* comments, and escapes in quoted strings: the GMime path */
        if (*q == '"')
            quoted = !quoted;
        else if (*q == '\\' || (*q == '(' && !quoted))
            return -1;
    while (p < end && is_ws(*p))
        p++;
    if (token(&p, end, t->type, sizeof t->type) < 0 || p >= end || *p != '/')
        return -1;
    p++;
    if (token(&p, end, t->sub, sizeof t->sub) < 0)
        return -1;
    int seen_cs = 0;
    for (;;) {
        while (p < end && is_ws(*p))
            p++;
        if (p >= end)
            return 0;
        if (*p != ';')
            return -1;
        p++;
        while (p < end && is_ws(*p))
            p++;
        if (p >= end)
            return 0;
        char name[64], val[BNC_FAST_BOUNDARY + 1];
        if (token(&p, end, name, sizeof name) < 0 || strchr(name, '*'))
            return -1;
        while (p < end && is_ws(*p))
            p++;
        if (p >= end || *p != '=')
            return -1;
        p++;
        while (p < end && is_ws(*p))
            p++;
        size_t o = 0;
        if (p < end && *p == '"') {
            p++;
            while (p < end && *p != '"') {
                if (*p == '\r' || *p == '\n' || o + 1 >= sizeof val)
                    return -1;
                val[o++] = *p++;
            }
            if (p >= end)
                return -1;
            p++;
        } else {
            while (p < end && is_tok(*p)) {
                if (o + 1 >= sizeof val)
                    return -1;
                val[o++] = *p++;
            }
        }
        val[o] = 0;
        if (!strcmp(name, "boundary")) {
            if (t->has_boundary || !o)
                return -1;
            memcpy(t->boundary, val, o + 1);
            t->has_boundary = 1;
        } else if (!strcmp(name, "charset")) {
            if (seen_cs || !o || o >= sizeof t->charset) /* "": iconv would take the locale's */
                return -1;
            memcpy(t->charset, val, o + 1);
            seen_cs = 1;
        }
    }
}

/* Does the line at p (n bytes, line break included) start with "--" + b? Sets *is_exact when the rest is
 * nothing, "--", and trailing white space. */
static int boundary_line(const char *p, size_t n, const char *b, size_t bl, int *is_exact)
{
    if (n < bl + 2 || p[0] != '-' || p[1] != '-' || memcmp(p + 2, b, bl) != 0)
        return 0;
    const char *q = p + 2 + bl, *e = p + n;
    if (e - q >= 2 && q[0] == '-' && q[1] == '-')
        q += 2;
    while (q < e && is_ws(*q))
        q++;
    *is_exact = q == e;
    return 1;
}

/* Does p[0..n) name a report type ("delivery-status", "feedback-report", "rfc822-header"), in any case? One
 * pass over the dashes (a returned message can be large, and base64 has none). */
static int names_report(const char *p, size_t n)
{
    static const struct {
        const char *pre, *post;
        size_t a, b;
    } k[] = {{"delivery", "status", 8, 6}, {"feedback", "report", 8, 6}, {"rfc822", "header", 6, 6}};
    const char *end = p + n;
    for (const char *d = memchr(p, '-', n); d; d = memchr(d + 1, '-', (size_t)(end - d - 1))) {
        size_t before = (size_t)(d - p), after = (size_t)(end - d - 1);
        for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
            if (before >= k[i].a && after >= k[i].b && !strncasecmp(d - k[i].a, k[i].pre, k[i].a) &&
                !strncasecmp(d + 1, k[i].post, k[i].b))
                return 1;
    }
    return 0;
}

static int cte_ok(const char *v, size_t n)
{
    while (n && is_ws(*v))
        v++, n--;
    while (n && is_ws(v[n - 1]))
        n--;
    if (!n)
        return 1;
    static const char *ok[] = {"7bit", "8bit", "binary", "quoted-printable", "base64"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (n == strlen(ok[i]) && !strncasecmp(v, ok[i], n))
            return 1;
    return 0;
}

/* A transfer encoding that leaves the content as it is (multiparts and attached messages must have one). */
static int cte_identity(const char *v, size_t n)
{
    while (n && is_ws(*v))
        v++, n--;
    while (n && is_ws(v[n - 1]))
        n--;
    return !n || (n == 4 && (!strncasecmp(v, "7bit", 4) || !strncasecmp(v, "8bit", 4))) ||
           (n == 6 && !strncasecmp(v, "binary", 6));
}

static int leaf(struct fscan *f, const struct fhdr *h, const struct ftype *t, const char *p, size_t n)
{
    struct fpart part = {p, n, h->cte, h->ctelen, ""};
    memcpy(part.charset, t->charset, sizeof part.charset);
    if (!cte_ok(h->cte, h->ctelen))
        return -1;
    if (!strcmp(t->type, "message")) {
        if (!strcmp(t->sub, "delivery-status") || !strcmp(t->sub, "global-delivery-status")) {
            if (f->ndsn >= BNC_DSN_PARTS)
                return -1;
            f->dsn[f->ndsn++] = part;
            return 0;
        }
        if (!strcmp(t->sub, "feedback-report")) {
            if (!f->has_arf) {
                f->arf = part;
                f->has_arf = 1;
            }
            return 0;
        }
        return -1; /* the other message types: the GMime path */
    }
    if (!strcmp(t->type, "text")) {
        if (!strcmp(t->sub, "delivery-status")) {
            if (f->ndsn >= BNC_DSN_PARTS)
                return -1;
            f->dsn[f->ndsn++] = part;
        } else if (!strcmp(t->sub, "rfc822-headers") || !strcmp(t->sub, "rfc822-header")) {
            if (!f->has_hdrs) {
                f->hdrs = part;
                f->has_hdrs = 1;
            }
        } else if (!strcmp(t->sub, "plain")) {
            if (!f->has_text) {
                f->text = part;
                f->has_text = 1;
            }
        } else if (!strcmp(t->sub, "html")) {
            if (!f->has_html) {
                f->html = part;
                f->has_html = 1;
            }
        }
    }
    return 0;
}

/* ---- converters kept loaded ----
 * glibc loads a charset's converter module on iconv_open and unloads it a few iconv_close calls after its last
 * user closed it: a stream of messages in changing charsets then costs a dlopen and a dlclose per message (GMime
 * opens a converter for each encoded word and each text part). One converter to UTF-8 is kept open, for the
 * life of the process, for each charset met (at most BNC_KEEP_CHARSETS, names GMime maps to iconv's), so its
 * module stays loaded; conversions still open their own descriptors (a descriptor has state: not shared). */
#define BNC_KEEP_CHARSETS 64

static pthread_mutex_t keep_mu = PTHREAD_MUTEX_INITIALIZER;
static const char *keep_name[BNC_KEEP_CHARSETS]; /* iconv names (our copies) */
static iconv_t keep_cd[BNC_KEEP_CHARSETS];
static int nkeep;

static void keep_charset(const char *charset, size_t n)
{
    char name[64];
    if (n == 0 || n >= sizeof name)
        return;
    memcpy(name, charset, n);
    name[n] = 0;
    const char *iname = g_mime_charset_iconv_name(name);
    if (!iname)
        return;
    pthread_mutex_lock(&keep_mu);
    int found = 0;
    for (int i = 0; i < nkeep && !found; i++)
        found = !strcasecmp(keep_name[i], iname);
    if (!found && nkeep < BNC_KEEP_CHARSETS) {
        /* a charset iconv lacks is not remembered: made-up names cannot fill the table */
        iconv_t cd = iconv_open("UTF-8", iname);
        if (cd != (iconv_t)-1) {
            size_t il = strlen(iname);
            char *copy = malloc(il + 1);
            if (!copy)
                abort();
            memcpy(copy, iname, il + 1);
            keep_name[nkeep] = copy;
            keep_cd[nkeep] = cd;
            nkeep++;
        }
    }
    pthread_mutex_unlock(&keep_mu);
}

/* Keep the converters of the charsets named by the RFC 2047 encoded words of v[0..n) ("=?charset?" or
 * "=?charset*lang?"). */
static void keep_word_charsets(const char *v, size_t n)
{
    for (size_t i = 0; i + 2 < n; i++) {
        if (v[i] != '=' || v[i + 1] != '?')
            continue;
        size_t a = i + 2, b = a;
        while (b < n && b - a < 64 && v[b] != '?' && v[b] != '*' && v[b] > ' ' && (unsigned char)v[b] < 0x7f)
            b++;
        if (b < n && (v[b] == '?' || v[b] == '*'))
            keep_charset(v + a, b - a);
        i = b > i + 2 ? b - 1 : i + 1;
    }
}

/* A header value as GMime gives it: line breaks of folded lines removed, white space at both ends trimmed, and
 * (when it holds "=?" or a byte outside ASCII) RFC 2047 encoded words and raw 8-bit text decoded to UTF-8 by
 * GMime's own g_mime_utils_header_decode_text, the function g_mime_header_get_value applies to the same unfolded
 * text. *out gets a new string (NULL when v is NULL). -1 to decline: a lone CR (GMime's unfolding differs). */
static int hvalue(const char *v, size_t n, char **out)
{
    *out = NULL;
    if (!v)
        return 0;
    char *o = malloc(n + 1);
    if (!o)
        abort();
    size_t k = 0;
    int decode = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c == '\r' && (i + 1 >= n || v[i + 1] != '\n')) {
            free(o);
            return -1;
        }
        if (c >= 0x80 || (c == '=' && i + 1 < n && v[i + 1] == '?'))
            decode = 1;
        if (c != '\r' && c != '\n')
            o[k++] = (char)c;
    }
    size_t a = 0;
    while (a < k && (o[a] == ' ' || o[a] == '\t'))
        a++;
    while (k > a && (o[k - 1] == ' ' || o[k - 1] == '\t'))
        k--;
    memmove(o, o + a, k - a);
    o[k - a] = 0;
    if (decode) {
        keep_word_charsets(o, strlen(o));
        char *d = g_mime_utils_header_decode_text(NULL, o);
        free(o);
        if (!d)
            return -1;
        size_t dl = strlen(d);
        o = malloc(dl + 1);
        if (!o)
            abort();
        memcpy(o, d, dl + 1);
        g_free(d);
    }
    *out = o;
    return 0;
}

/* Walk a multipart body p[0..n) with boundary b. 0 or -1 to decline. */
static int multipart(struct fscan *f, const char *p, size_t n, const char *b, int depth, const char *msg_end);

/* One part of a multipart with boundary b: headers from start (ending before hend), content body..stop. */
static int one_part(struct fscan *f, const char *start, const char *hend, const char *stop, const char *b, size_t bl,
                    int depth, const char *msg_end)
{
    if (++f->parts > BNC_FAST_PARTS)
        return -1;
    struct fhdr h;
    const char *body = headers(start, hend, &h, 0);
    if (!body || (body > stop && body != hend))
        return -1;
    if (body > stop) /* the blank line after the headers is the one before the boundary: no content */
        body = stop;
    struct ftype t;
    if (ctype(&h, &t) < 0)
        return -1;
    size_t bn = (size_t)(stop - body);
    if (!strcmp(t.type, "multipart")) {
        if (!cte_identity(h.cte, h.ctelen) || !strcmp(t.sub, "digest") || depth + 1 >= BNC_FAST_DEPTH)
            return -1;
        if (!t.has_boundary)
            return 0; /* GMime reads it all as the preface: no part */
        for (int i = 0; i < f->nbstack; i++) /* an enclosing boundary again: GMime gives its lines to us */
            if (!strcmp(f->bstack[i], t.boundary))
                return -1;
        return multipart(f, body, bn, t.boundary, depth + 1, msg_end);
    }
    if (!strcmp(t.type, "message") && !strcmp(t.sub, "rfc822")) {
        /* the returned message: only its reports would count (and its text/rfc822-headers part, for an ARF
         * report), and an inner part using an enclosing boundary would split differently */
        if (!cte_identity(h.cte, h.ctelen) || names_report(body, bn) || memmem(body, bn, b, bl))
            return -1;
        for (int i = 0; i < f->nbstack; i++)
            if (memmem(body, bn, f->bstack[i], strlen(f->bstack[i])))
                return -1;
        if (!f->has_orig) {
            struct fhdr oh;
            f->has_orig = 1;
            if (!headers(body, stop, &oh, 1) || hvalue(oh.hv[H_TO], oh.hvlen[H_TO], &f->orig_to) < 0)
                f->hdr_bad = 1;
        }
        return 0;
    }
    return leaf(f, &h, &t, body, bn);
}

/* Walk a multipart body p[0..n) with boundary b. 0 or -1 to decline. msg_end: the end of the whole message (a
 * closing boundary line at the end of p continues there; a top-level multipart may lack its closing line, then
 * its last part runs to the end, as GMime reads it). */
static int multipart_parts(struct fscan *f, const char *p, size_t n, const char *b, int depth,
                           const char *msg_end);

static int multipart(struct fscan *f, const char *p, size_t n, const char *b, int depth, const char *msg_end)
{
    if (depth >= BNC_FAST_DEPTH)
        return -1;
    int saved = f->nbstack;
    f->bstack[depth] = b;
    f->nbstack = depth + 1;
    int r = multipart_parts(f, p, n, b, depth, msg_end);
    f->nbstack = saved;
    return r;
}

static int multipart_parts(struct fscan *f, const char *p, size_t n, const char *b, int depth,
                           const char *msg_end)
{
    const char *end = p + n;
    size_t bl = strlen(b);
    const char *start = NULL; /* content start of the current part */
    int closed = 0;
    while (p < end) {
        if (end - p < 2 || p[0] != '-' || p[1] != '-') {
            /* only a line starting with "--" can be a boundary line: skip to the next one */
            const char *q = memmem(p, (size_t)(end - p), "\n--", 3);
            p = q ? q + 1 : end;
            continue;
        }
        const char *e = line_end(p, end);
        if (!e)
            e = end;
        int exact = 0;
        if (boundary_line(p, (size_t)(e - p), b, bl, &exact)) {
            if (!exact)
                return -1;
            if (start) {
                /* the line break before the boundary line belongs to it: 2 bytes when the line ends in CRLF. A
                 * nested multipart's closing line ends where its parent's part does: its line break follows. */
                const char *le = e;
                if (e == end && e[-1] != '\n' && end < msg_end && *end == '\n')
                    le = end + 1;
                else if (e == end && e[-1] != '\n' && msg_end - end >= 2 && end[0] == '\r' && end[1] == '\n')
                    le = end + 2;
                size_t brk = (le - p >= 2 && le[-1] == '\n' && le[-2] == '\r') ? 2 : 1;
                if (le[-1] != '\n' || (size_t)(p - start) < brk)
                    return -1;
                const char *stop = p - brk;
                if (brk == 2 ? (stop[0] != '\r' || stop[1] != '\n') : stop[0] != '\n')
                    return -1;
                if (one_part(f, start, p, stop, b, bl, depth, msg_end) < 0)
                    return -1;
            }
            const char *q = p + 2 + bl;
            if (q + 1 < e && q[0] == '-' && q[1] == '-') {
                closed = 1;
                break;
            }
            start = e;
        }
        p = e;
    }
    if (!closed) {
        if (!start)
            return 0; /* the boundary never used: GMime reads it all as the preface, no part */
        if (start >= end)
            return -1;
        /* unclosed: the last part runs to the end of the message, or of the enclosing part (GMime ends it at
         * the enclosing boundary, whose line break is already outside p[0..n)) */
        return one_part(f, start, end, end, b, bl, depth, msg_end);
    }
    return f->parts ? 0 : -1;
}

/* ---- transfer decoding ---- */

static int hexv(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static int b64v(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Decode a part's content into a new NUL-terminated buffer (at most cap bytes kept); NULL to decline. */
static char *decode(const struct fpart *pt, size_t cap, size_t *outlen)
{
    const char *v = pt->cte;
    size_t vn = pt->ctelen;
    while (vn && is_ws(*v))
        v++, vn--;
    while (vn && is_ws(v[vn - 1]))
        vn--;
    char *out = malloc(pt->n + 1);
    if (!out)
        abort();
    size_t o = 0;
    const char *s = pt->p, *e = pt->p + pt->n;
    if (vn == 16 && !strncasecmp(v, "quoted-printable", 16)) {
        while (s < e) {
            if (*s != '=') {
                out[o++] = *s++;
                continue;
            }
            if (e - s >= 3 && s[1] == '\r' && s[2] == '\n') {
                s += 3;
            } else if (e - s >= 2 && s[1] == '\n') {
                s += 2;
            } else if (e - s >= 3 && hexv(s[1]) >= 0 && hexv(s[2]) >= 0) {
                out[o++] = (char)(hexv(s[1]) * 16 + hexv(s[2]));
                s += 3;
            } else {
                free(out);
                return NULL;
            }
        }
    } else if (vn == 6 && !strncasecmp(v, "base64", 6)) {
        unsigned acc = 0;
        int bits = 0, pad = 0;
        for (; s < e; s++) {
            if (*s == '\r' || *s == '\n')
                continue;
            if (*s == '=') {
                pad++;
                continue;
            }
            int x = b64v(*s);
            if (x < 0 || pad) {
                free(out);
                return NULL;
            }
            acc = (acc << 6) | (unsigned)x;
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                out[o++] = (char)((acc >> bits) & 0xff);
            }
        }
        /* whole quanta only, with the padding they need */
        if ((bits == 0 && pad) || (bits == 2 && pad != 1) || (bits == 4 && pad != 2) || bits > 4) {
            free(out);
            return NULL;
        }
    } else {
        memcpy(out, s, pt->n);
        o = pt->n;
    }
    if (o > cap)
        o = cap;
    out[o] = 0;
    *outlen = o;
    return out;
}

/* Charsets in which ASCII text converts to itself (GMime's conversion would change nothing). */
static int ascii_compatible(const char *cs)
{
    return !strcasecmp(cs, "us-ascii") || !strcasecmp(cs, "ascii") || !strcasecmp(cs, "utf-8") ||
           !strcasecmp(cs, "utf8") || !strncasecmp(cs, "iso-8859-", 9) || !strncasecmp(cs, "windows-125", 11);
}

/* out_grow makes the conversion buffer *out (capacity *cap, plus its NUL) by octets longer, keeping the write
 * position *o and the room left *room. */
static void out_grow(char **out, char **o, size_t *cap, size_t *room, size_t by)
{
    size_t used = (size_t)(*o - *out);
    *cap += by;
    char *n = realloc(*out, *cap + 1);
    if (!n)
        abort();
    *out = n;
    *o = n + used;
    *room = *cap - used;
}

/* t[0..*len) converted from charset to UTF-8 exactly as g_mime_text_part_get_text does it: through GMime's
 * converter (g_mime_iconv_open maps the MIME name), bytes that are no valid sequence are dropped one at a time,
 * an incomplete sequence at the end is dropped, the converter flushed; a charset GMime cannot open leaves the
 * bytes as they are. Takes ownership of t; returns the text to use. */
static char *charset_to_utf8(char *t, size_t *len, const char *charset)
{
    keep_charset(charset, strlen(charset));
    iconv_t cd = g_mime_iconv_open("UTF-8", charset);
    if (cd == (iconv_t)-1)
        return t;
    /* only the first BNC_TEXT_SCAN bytes of the result are used, and conversion is sequential: the output stops
     * once it holds them (a prefix of the whole conversion), which bounds the buffer whatever the part's size */
    size_t cap = *len * 5 + 16, room, left = *len;
    if (cap > BNC_TEXT_SCAN + 64)
        cap = BNC_TEXT_SCAN + 64;
    room = cap;
    char *out = malloc(cap + 1), *in = t, *o = out;
    if (!out)
        abort();
    while (left > 0) {
        if (iconv(cd, &in, &left, &o, &room) != (size_t)-1)
            continue;
        if (errno == E2BIG) {
            if ((size_t)(o - out) >= BNC_TEXT_SCAN)
                break;
            out_grow(&out, &o, &cap, &room, 64);
        } else if (errno == EILSEQ) {
            in++;
            left--;
        } else {
            break; /* EINVAL: an incomplete sequence at the end */
        }
    }
    for (;;) { /* flush (a stateful charset's return to its initial state) */
        if (iconv(cd, NULL, NULL, &o, &room) != (size_t)-1 || errno != E2BIG)
            break;
        out_grow(&out, &o, &cap, &room, 16);
    }
    g_mime_iconv_close(cd);
    free(t);
    *len = (size_t)(o - out);
    out[*len] = 0;
    return out;
}

/* Text of a text part as part_text() in bnc_parse.c gives it (content decoded, converted to UTF-8 when a charset
 * is named, cut at a NUL as strlen would, capped at BNC_TEXT_SCAN), or NULL to decline (a transfer encoding the
 * scanner does not take). */
static char *text_of(const struct fpart *pt, size_t *len)
{
    char *t = decode(pt, (size_t)-1, len);
    if (!t)
        return NULL;
    if (pt->charset[0]) {
        int ascii = 1;
        for (size_t i = 0; i < *len && ascii; i++)
            if ((unsigned char)t[i] >= 0x80)
                ascii = 0;
        if (!ascii || !ascii_compatible(pt->charset))
            t = charset_to_utf8(t, len, pt->charset);
    }
    *len = strnlen(t, *len);
    if (*len > BNC_TEXT_SCAN)
        *len = BNC_TEXT_SCAN;
    t[*len] = 0;
    return t;
}

/* Scan one message; 0 with f, top and vals filled, or -1 to decline. */
static int scan(const char *s, size_t len, struct fscan *f, struct fhdr *top, char **vals)
{
    const char *end = s + len;
    const char *body = headers(s, end, top, 1);
    struct ftype t;
    if (!body || ctype(top, &t) < 0 || !cte_ok(top->cte, top->ctelen))
        return -1;
    for (int k = 0; k < H_N; k++)
        if (hvalue(top->hv[k], top->hvlen[k], &vals[k]) < 0)
            f->hdr_bad = 1;
    if (!strcmp(t.type, "multipart")) {
        if (!strcmp(t.sub, "digest") || !cte_identity(top->cte, top->ctelen))
            return -1;
        if (!t.has_boundary)
            return 0; /* GMime reads it all as the preface: no part */
        return multipart(f, body, (size_t)(end - body), t.boundary, 0, end);
    }
    if (!strcmp(t.type, "message") && strcmp(t.sub, "delivery-status") && strcmp(t.sub, "global-delivery-status"))
        return -1;
    return leaf(f, top, &t, body, (size_t)(end - body));
}

int bnc_fast_parse(struct bnc_report *r, const char *s, size_t len)
{
    if (len == 0 || memchr(s, 0, len))
        return 0;
    struct fscan f;
    struct fhdr top;
    char *vals[H_N] = {NULL};
    memset(&f, 0, sizeof f);
    size_t tlen = 0, hlen = 0;
    char *text = NULL, *html = NULL;
    char *bodies[BNC_DSN_PARTS];
    size_t blens[BNC_DSN_PARTS];
    int nb = 0, ok = scan(s, len, &f, &top, vals) == 0;
    if (ok && f.has_text && !(text = text_of(&f.text, &tlen)))
        ok = 0;
    if (ok && !tlen && f.has_html && !(html = text_of(&f.html, &hlen)))
        ok = 0;
    for (; ok && nb < f.ndsn; nb++)
        if (!(bodies[nb] = decode(&f.dsn[nb], BNC_PART_MAX, &blens[nb])))
            ok = 0;
    size_t alen = 0, hdrlen = 0;
    char *arf = NULL, *hdrs = NULL;
    if (ok && f.has_arf && !(arf = decode(&f.arf, BNC_PART_MAX, &alen)))
        ok = 0;
    if (ok && f.has_arf && f.has_hdrs && !(hdrs = decode(&f.hdrs, BNC_PART_MAX, &hdrlen)))
        ok = 0;
    if (ok) {
        struct bnc_view v;
        memset(&v, 0, sizeof v);
        v.from = vals[H_FROM];
        v.to = vals[H_TO];
        v.rp = vals[H_RP];
        v.xfr = vals[H_XFR];
        v.apple = vals[H_APPLE];
        v.autosub = vals[H_AUTOSUB];
        v.prec = vals[H_PREC];
        v.subject = vals[H_SUBJECT];
        v.has_ar_hdr = vals[H_AR1] || vals[H_AR2] || vals[H_AR3];
        v.has_orig = f.has_orig;
        v.orig_to = f.orig_to;
        v.has_arf = f.has_arf;
        /* with a header we could not read, only an answer from the delivery-status parts is sure */
        if (!bnc_analyse(r, s, len, text, tlen, html, hlen, bodies, blens, nb, &v, arf, alen, hdrs, hdrlen,
                         f.hdr_bad) &&
            f.hdr_bad)
            ok = 0;
    } else {
        for (int i = 0; i < nb; i++)
            free(bodies[i]);
        free(text);
        free(html);
    }
    for (int k = 0; k < H_N; k++)
        free(vals[k]);
    free(f.orig_to);
    free(arf);
    free(hdrs);
    return ok;
}
