/* bnc_parse: MIME walk (GMime 3) and RFC 3464 / RFC 5965 field parsing for bounce messages.
 *
 * Contract: see bnc_parse.h. The walk visits parts in document order, counting them (BNC_MAX_PARTS) and
 * following multiparts and attached messages to BNC_MAX_DEPTH. It remembers the first
 * message/delivery-status (or message/global-delivery-status) part, the first message/feedback-report part,
 * the first text/plain part outside attached messages, and the first attached message (the returned
 * original). A delivery-status part gives one entry per recipient group; a group without a Diagnostic-Code
 * is classified with its paragraph of the human-readable text part when one names the recipient.
 * Broken reports are common: when no delivery-status part is found (a boundary that is never used, a
 * forwarded bounce with "> " quoting), a block of DSN fields in the text, or in the raw body when there is
 * no text part, is parsed the same way. Without any DSN fields the free-text recognisers of bnc_text.c run.
 * Before GMime sees the input it is cut after BNC_MAX_PARTS Content-Type lines or 4 * BNC_MAX_PARTS boundary-
 * like lines, so GMime's own recursion and object count stay bounded too; a bounce report always comes
 * before the returned message, so nothing of value is cut.
 */
#include <ctype.h>
#include <gmime/gmime.h>
#include <iconv.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bnc.h"

#define BNC_FIELD_MAX 2048           /* bytes kept of one DSN field value */
#define BNC_HITS_MAX 64
#define BNC_MBOX_MAX 8               /* messages read from one mbox-style input */

struct bnc_report {
    enum bnc_kind kind;
    size_t n, cap;
    struct bnc_rcpt *v;
};

static pthread_once_t gmime_once = PTHREAD_ONCE_INIT;

static void gmime_init_once(void)
{
    g_mime_init();
}

void bnc_init(void)
{
    pthread_once(&gmime_once, gmime_init_once);
}

void bnc_report_free(struct bnc_report *r)
{
    if (!r)
        return;
    free(r->v);
    free(r);
}

enum bnc_kind bnc_report_kind(const struct bnc_report *r)
{
    return r ? r->kind : BNC_K_NONE;
}

size_t bnc_report_count(const struct bnc_report *r)
{
    return r ? r->n : 0;
}

const struct bnc_rcpt *bnc_report_get(const struct bnc_report *r, size_t i)
{
    return (r && i < r->n) ? &r->v[i] : NULL;
}

struct bnc_rcpt *bnc_report_add(struct bnc_report *r)
{
    if (r->n >= BNC_MAX_RCPTS)
        return NULL;
    if (r->n == r->cap) {
        size_t nc = r->cap ? r->cap * 2 : 4;
        struct bnc_rcpt *v = realloc(r->v, nc * sizeof *v);
        if (!v)
            abort();
        r->v = v;
        r->cap = nc;
    }
    struct bnc_rcpt *e = &r->v[r->n++];
    memset(e, 0, sizeof *e);
    e->reason = "undefined";
    return e;
}

/* ---- MIME walk ---- */

struct walk {
    int parts;
    int attached;               /* depth of message/rfc822 nesting at the current point */
    GMimeObject *dsn[BNC_DSN_PARTS]; /* delivery-status parts in order; outside attachments first */
    int ndsn;
    GMimeObject *arf;           /* first feedback-report part */
    GMimeObject *text;          /* first text/plain outside attached messages */
    GMimeObject *html;          /* first text/html outside attached messages (fallback) */
    GMimeObject *headers;       /* first text/rfc822-headers part */
    GMimeMessage *orig;         /* first attached message */
};

static void walk(struct walk *w, GMimeObject *obj, int depth)
{
    if (!obj || depth > BNC_MAX_DEPTH || w->parts >= BNC_MAX_PARTS)
        return;
    w->parts++;
    if (GMIME_IS_MULTIPART(obj)) {
        GMimeMultipart *mp = GMIME_MULTIPART(obj);
        int n = g_mime_multipart_get_count(mp);
        for (int i = 0; i < n && w->parts < BNC_MAX_PARTS; i++)
            walk(w, g_mime_multipart_get_part(mp, i), depth + 1);
        return;
    }
    if (GMIME_IS_MESSAGE_PART(obj)) {
        GMimeMessage *m = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));
        if (!m)
            return;
        if (!w->orig)
            w->orig = m;
        w->attached++;
        walk(w, g_mime_message_get_mime_part(m), depth + 1);
        w->attached--;
        return;
    }
    if (!GMIME_IS_PART(obj))
        return;
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    if (!ct)
        return;
    if (g_mime_content_type_is_type(ct, "message", "delivery-status") ||
        g_mime_content_type_is_type(ct, "message", "global-delivery-status") ||
        g_mime_content_type_is_type(ct, "text", "delivery-status")) {
        /* every report, in document order: a report may return an earlier report (multi-report files) */
        if (w->ndsn < BNC_DSN_PARTS)
            w->dsn[w->ndsn++] = obj;
    } else if (g_mime_content_type_is_type(ct, "message", "feedback-report")) {
        if (!w->arf)
            w->arf = obj;
    } else if (g_mime_content_type_is_type(ct, "text", "rfc822-headers") ||
               g_mime_content_type_is_type(ct, "text", "rfc822-header")) {
        if (!w->headers)
            w->headers = obj;
    } else if (!w->attached && g_mime_content_type_is_type(ct, "text", "plain")) {
        if (!w->text)
            w->text = obj;
    } else if (!w->attached && g_mime_content_type_is_type(ct, "text", "html")) {
        if (!w->html)
            w->html = obj;
    }
}

/* Decoded content of a leaf part (transfer encoding undone, charset untouched), NUL-terminated. */
static char *part_bytes(GMimeObject *obj, size_t *len)
{
    *len = 0;
    if (!obj || !GMIME_IS_PART(obj))
        return NULL;
    GMimeDataWrapper *dw = g_mime_part_get_content(GMIME_PART(obj));
    if (!dw)
        return NULL;
    GMimeStream *mem = g_mime_stream_mem_new();
    g_mime_data_wrapper_write_to_stream(dw, mem);
    GByteArray *ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem));
    size_t n = ba ? ba->len : 0;
    if (n > BNC_PART_MAX)
        n = BNC_PART_MAX;
    char *out = malloc(n + 1);
    if (!out)
        abort();
    if (n)
        memcpy(out, ba->data, n);
    out[n] = 0;
    g_object_unref(mem);
    *len = n;
    return out;
}

/* Text of a text part converted to UTF-8 by GMime (falls back to raw bytes), NUL-terminated, capped. */
static char *part_text(GMimeObject *obj, size_t *len)
{
    *len = 0;
    if (!obj)
        return NULL;
    if (GMIME_IS_TEXT_PART(obj)) {
        char *t = g_mime_text_part_get_text(GMIME_TEXT_PART(obj));
        if (t) {
            size_t n = strlen(t);
            if (n > BNC_TEXT_SCAN)
                n = BNC_TEXT_SCAN;
            char *out = malloc(n + 1);
            if (!out)
                abort();
            memcpy(out, t, n);
            out[n] = 0;
            g_free(t);
            *len = n;
            return out;
        }
    }
    char *b = part_bytes(obj, len);
    if (b && *len > BNC_TEXT_SCAN) {
        *len = BNC_TEXT_SCAN;
        b[*len] = 0;
    }
    return b;
}

/* Crude HTML to text: drop tags, turn <br>/<p>/<div>/<tr> into line breaks, decode a few entities. */
static void html_to_text(char *s, size_t *len)
{
    size_t o = 0, n = *len;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '<') {
            size_t j = i + 1;
            while (j < n && s[j] != '>')
                j++;
            if (j - i > 2 && (strncasecmp(s + i + 1, "br", 2) == 0 || strncasecmp(s + i + 1, "p", 1) == 0 ||
                              strncasecmp(s + i + 1, "/p", 2) == 0 || strncasecmp(s + i + 1, "div", 3) == 0 ||
                              strncasecmp(s + i + 1, "/div", 4) == 0 || strncasecmp(s + i + 1, "tr", 2) == 0))
                s[o++] = '\n';
            i = j;
            continue;
        }
        if (s[i] == '&') {
            static const struct {
                const char *e;
                char c;
            } ent[] = {{"&lt;", '<'}, {"&gt;", '>'}, {"&amp;", '&'}, {"&nbsp;", ' '}, {"&quot;", '"'}, {"&#39;", '\''}};
            int done = 0;
            for (size_t k = 0; k < sizeof ent / sizeof ent[0]; k++) {
                size_t el = strlen(ent[k].e);
                if (i + el <= n && strncasecmp(s + i, ent[k].e, el) == 0) {
                    s[o++] = ent[k].c;
                    i += el - 1;
                    done = 1;
                    break;
                }
            }
            if (done)
                continue;
        }
        s[o++] = s[i];
    }
    s[o] = 0;
    *len = o;
}

/* One ISO-2022-JP converter kept open for the process's life, never used: glibc would otherwise unload the
 * module soon after each message's converter is closed and load it again for the next (see bnc_fast.c). */
static pthread_once_t jis_once = PTHREAD_ONCE_INIT;
static iconv_t jis_keep = (iconv_t)-1;

static void jis_keep_open(void)
{
    jis_keep = iconv_open("UTF-8", "ISO-2022-JP");
}

/* Japanese mail systems (Lotus Notes, Domino, m-FILTER) write reports in ISO-2022-JP without declaring it:
 * a text with its escape sequences is converted to UTF-8 (the phrase tables hold the UTF-8 forms), strictly:
 * any invalid or incomplete sequence leaves the text as it is (as g_convert did). Takes ownership of text;
 * returns the text to use. */
static char *jis_to_utf8(char *text, size_t *len)
{
    const char *esc = memchr(text, 0x1b, *len); /* ESC is rare: memchr first, then the sequence */
    while (esc && !((size_t)(text + *len - esc) >= 3 && esc[1] == '$' && esc[2] == 'B'))
        esc = memchr(esc + 1, 0x1b, (size_t)(text + *len - esc - 1));
    if (!esc)
        return text;
    pthread_once(&jis_once, jis_keep_open);
    iconv_t cd = g_mime_iconv_open("UTF-8", "ISO-2022-JP");
    if (cd == (iconv_t)-1)
        return text;
    size_t cap = *len * 3 + 16, room = cap, left = *len;
    char *out = malloc(cap + 1), *in = text, *o = out;
    if (!out)
        abort();
    /* ISO-2022-JP: at most 3 UTF-8 bytes for each 2 input bytes, so the output never runs short */
    int bad = iconv(cd, &in, &left, &o, &room) == (size_t)-1 || left ||
              iconv(cd, NULL, NULL, &o, &room) == (size_t)-1;
    g_mime_iconv_close(cd);
    if (bad) {
        free(out);
        return text;
    }
    free(text);
    *len = (size_t)(o - out);
    out[*len] = 0;
    return out;
}

/* ---- RFC 3464 fields ---- */

static int starts_field(const char *p, size_t n, const char *name)
{
    size_t k = strlen(name);
    return n > k && strncasecmp(p, name, k) == 0 && (p[k] == ':' || p[k] == ' ');
}

struct dsn_group {
    char final[BNC_ADDR_LEN];
    char orig[BNC_ADDR_LEN];
    char action[24];
    char status[BNC_STATUS_LEN];
    char diag[BNC_FIELD_MAX];
    int has_final, has_orig, any;
};

static void copy_trim(char *out, size_t outlen, const char *v, size_t n)
{
    while (n && (*v == ' ' || *v == '\t'))
        v++, n--;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r'))
        n--;
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, v, n);
    out[n] = 0;
}

/* "rfc822; <a@b>" -> "a@b" (lower case); the address type is ignored, xtext "+XX" is decoded. */
static void dsn_addr(char *out, const char *v)
{
    char tmp[BNC_FIELD_MAX];
    const char *semi = strchr(v, ';');
    const char *p = semi ? semi + 1 : v;
    size_t o = 0;
    for (; *p && o + 1 < sizeof tmp; p++) {
        if (*p == '+' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
            char h[3] = {p[1], p[2], 0};
            tmp[o++] = (char)strtol(h, NULL, 16);
            p += 2;
        } else {
            tmp[o++] = *p;
        }
    }
    tmp[o] = 0;
    out[0] = 0;
    if (bnc_addr_extract(tmp, o, out, 0) < 0)
        out[0] = 0;
}

static void group_field(struct dsn_group *g, const char *name, size_t nlen, const char *val, size_t vlen)
{
    char v[BNC_FIELD_MAX];
    copy_trim(v, sizeof v, val, vlen);
    g->any = 1;
    if (nlen == 15 && strncasecmp(name, "Final-Recipient", 15) == 0) {
        dsn_addr(g->final, v);
        g->has_final = 1;
    } else if (nlen == 18 && strncasecmp(name, "Original-Recipient", 18) == 0) {
        dsn_addr(g->orig, v);
        g->has_orig = 1;
    } else if (nlen == 6 && strncasecmp(name, "Action", 6) == 0) {
        copy_trim(g->action, sizeof g->action, v, strlen(v));
    } else if (nlen == 6 && strncasecmp(name, "Status", 6) == 0) {
        size_t k = 0;
        while (v[k] && (isdigit((unsigned char)v[k]) || v[k] == '.'))
            k++;
        if (bnc_status_ok(v, k) && k < sizeof g->status) {
            memcpy(g->status, v, k);
            g->status[k] = 0;
        }
    } else if (nlen == 15 && strncasecmp(name, "Diagnostic-Code", 15) == 0) {
        const char *semi = strchr(v, ';');
        /* keep "smtp; 550 ..." as "550 ..."; an untyped value is kept whole, and so is the type "x-unix" (a
         * local delivery program's exit status or output: the classifier reads it as a mailer error) */
        const char *t = (semi && semi - v < 24 && strncasecmp(v, "x-unix", 6) != 0) ? semi + 1 : v;
        while (*t == ' ')
            t++;
        bnc_copy(g->diag, sizeof g->diag, t);
    }
}

/* Recipients without a useful diagnostic are classified with the report text; past this many, they are not
 * (bounds the work a report with a thousand recipients can cause). */
#define BNC_TEXT_FALLBACKS 16

static void dsn_add_group(struct bnc_report *r, const struct dsn_group *g, const char *text, size_t tlen,
                          const struct bnc_hit *hits, int nh, const char **text_cmd)
{
    if (!g->has_final && !g->has_orig)
        return;
    struct bnc_rcpt *e = bnc_report_add(r);
    if (!e)
        return;
    bnc_copy(e->recipient, sizeof e->recipient, g->final[0] ? g->final : g->orig);
    bnc_copy(e->status, sizeof e->status, g->status);
    if (strncasecmp(g->action, "failed", 6) == 0)
        e->action = BNC_FAILED;
    else if (strncasecmp(g->action, "delayed", 7) == 0)
        e->action = BNC_DELAYED;
    else if (strncasecmp(g->action, "delivered", 9) == 0 || strncasecmp(g->action, "relayed", 7) == 0 ||
             strncasecmp(g->action, "expanded", 8) == 0)
        e->action = BNC_DELIVERED;
    else if (g->status[0] == '2')
        e->action = BNC_DELIVERED; /* no (or an unknown) Action: go by the status class */
    else if (g->status[0] == '4' && !g->action[0])
        e->action = BNC_DELAYED;
    else
        e->action = BNC_FAILED;
    /* the SMTP command the rejection answered: the diagnostic rarely says, the human-readable part often
     * does (Postfix "in reply to end of DATA command", Sendmail's transcript ">>> DATA") */
    if (text && r->n <= BNC_TEXT_FALLBACKS) {
        for (int i = 0; i < nh && !e->command[0]; i++)
            if (strcmp(hits[i].addr, e->recipient) == 0 && hits[i].len)
                bnc_copy(e->command, sizeof e->command, bnc_find_command(text + hits[i].off, hits[i].len));
        if (!e->command[0] && nh <= 1) {
            if (!*text_cmd) /* the whole text's answer, the same for every group: looked up once */
                *text_cmd = bnc_find_command(text, tlen);
            bnc_copy(e->command, sizeof e->command, *text_cmd);
        }
    }
    if (g->diag[0]) {
        bnc_norm(g->diag, strlen(g->diag), e->diag, sizeof e->diag);
        bnc_classify(e, g->diag, strlen(g->diag));
        if (strcmp(e->reason, "undefined") != 0 || !text)
            return;
    }
    if (!text || r->n > BNC_TEXT_FALLBACKS) {
        if (!g->diag[0])
            bnc_classify(e, NULL, 0);
        return;
    }
    /* no (useful) diagnostic: use the report text's paragraph about this recipient, else the whole text */
    for (int i = 0; i < nh; i++)
        if (strcmp(hits[i].addr, e->recipient) == 0 && hits[i].len) {
            if (!e->diag[0])
                bnc_norm(text + hits[i].off, hits[i].len, e->diag, sizeof e->diag);
            bnc_classify(e, text + hits[i].off, hits[i].len);
            if (strcmp(e->reason, "undefined") != 0)
                return;
        }
    bnc_classify(e, text, tlen);
}

static void parse_dsn(struct bnc_report *r, const char *body, size_t len, const char *text, size_t tlen)
{
    static __thread struct bnc_hit hits[BNC_HITS_MAX];
    int nh = text ? bnc_text_scan(text, tlen, NULL, hits, BNC_HITS_MAX) : 0;
    const char *text_cmd = NULL;
    struct dsn_group g;
    char name[64], val[BNC_FIELD_MAX];
    size_t namelen = 0, vlen = 0;
    int have_field = 0;
    memset(&g, 0, sizeof g);

    size_t i = 0;
    for (;;) {
        /* read one line */
        size_t st = i;
        while (i < len && body[i] != '\n')
            i++;
        size_t n = i - st;
        int eof = i >= len;
        if (!eof)
            i++;
        const char *line = body + st;
        if (n && line[n - 1] == '\r')
            n--;
        int cont = n && (line[0] == ' ' || line[0] == '\t');
        if (cont && have_field) {
            if (vlen + 1 < sizeof val) {
                val[vlen++] = ' ';
                size_t k = n;
                const char *c = line;
                while (k && (*c == ' ' || *c == '\t'))
                    c++, k--;
                if (vlen + k >= sizeof val)
                    k = sizeof val - 1 - vlen;
                memcpy(val + vlen, c, k);
                vlen += k;
            }
            if (!eof)
                continue;
        }
        /* flush the pending field */
        if (have_field) {
            int is_rcpt = (namelen == 15 && strncasecmp(name, "Final-Recipient", 15) == 0);
            int is_orig = (namelen == 18 && strncasecmp(name, "Original-Recipient", 18) == 0);
            /* a recipient field in a group that already has one starts a new group (no blank line) */
            if ((is_rcpt && g.has_final) || (is_orig && g.has_orig)) {
                dsn_add_group(r, &g, text, tlen, hits, nh, &text_cmd);
                memset(&g, 0, sizeof g);
            }
            group_field(&g, name, namelen, val, vlen);
            have_field = 0;
        }
        if (n == 0 || cont) {
            if (n == 0 && g.any) {
                dsn_add_group(r, &g, text, tlen, hits, nh, &text_cmd);
                memset(&g, 0, sizeof g);
            }
        } else {
            const char *colon = memchr(line, ':', n);
            if (colon && colon > line && (size_t)(colon - line) < sizeof name) {
                namelen = (size_t)(colon - line);
                memcpy(name, line, namelen);
                while (namelen && (name[namelen - 1] == ' ' || name[namelen - 1] == '\t'))
                    namelen--;
                name[namelen] = 0;
                vlen = n - (size_t)(colon - line) - 1;
                if (vlen >= sizeof val)
                    vlen = sizeof val - 1;
                memcpy(val, colon + 1, vlen);
                have_field = 1;
            }
        }
        if (eof) {
            if (have_field) {
                group_field(&g, name, namelen, val, vlen);
                have_field = 0;
            }
            if (g.any)
                dsn_add_group(r, &g, text, tlen, hits, nh, &text_cmd);
            break;
        }
        if (r->n >= BNC_MAX_RCPTS)
            break;
    }
}

/* A delivery-status block in plain text (a report whose MIME structure is broken, or a forwarded bounce):
 * from the field block holding the first Final-/Original-Recipient line to the end, quote marks ("> ")
 * removed. Returns a malloc'd copy or NULL. */
static char *find_dsn_block(const char *text, size_t len, size_t *outlen)
{
    size_t i = 0, prev_start = 0, block = (size_t)-1;
    int in_fields = 0;
    while (i < len) {
        size_t st = i;
        while (i < len && text[i] != '\n')
            i++;
        size_t n = i - st;
        if (i < len)
            i++;
        const char *p = text + st;
        while (n && (*p == '>' || (*p == ' ' && p > text + st && p[-1] == '>'))) {
            p++;
            n--;
        }
        int field = 0;
        const char *colon = memchr(p, ':', n);
        if (colon && colon > p && colon - p < 40) {
            field = 1;
            for (const char *c = p; c < colon; c++)
                if (!isalnum((unsigned char)*c) && *c != '-')
                    field = 0;
        }
        int cont = n && (*p == ' ' || *p == '\t');
        if (field && !in_fields) {
            prev_start = st;
            in_fields = 1;
        } else if (!field && !cont) {
            in_fields = 0;
        }
        if (field && (starts_field(p, n, "Final-Recipient") || starts_field(p, n, "Original-Recipient"))) {
            block = prev_start;
            break;
        }
    }
    if (block == (size_t)-1)
        return NULL;
    /* copy without quote marks */
    char *out = malloc(len - block + 1);
    if (!out)
        abort();
    size_t o = 0;
    for (i = block; i < len;) {
        size_t st = i;
        while (i < len && text[i] != '\n')
            i++;
        size_t k = st;
        while (k < i && (text[k] == '>' || (text[k] == ' ' && k > st && text[k - 1] == '>')))
            k++;
        memcpy(out + o, text + k, i - k);
        o += i - k;
        if (i < len) {
            out[o++] = '\n';
            i++;
        }
    }
    out[o] = 0;
    *outlen = o;
    return out;
}

/* ---- RFC 5965 feedback report ---- */

/* The value of the first line "field: value" in body into out; returns the offset just past that line, or 0
 * when there is none. */
static size_t field_value_from(const char *body, size_t len, const char *field, char *out, size_t outlen)
{
    size_t fl = strlen(field);
    out[0] = 0;
    for (size_t i = 0; i < len;) {
        size_t st = i;
        while (i < len && body[i] != '\n')
            i++;
        size_t n = i - st;
        if (i < len)
            i++;
        if (n > fl && strncasecmp(body + st, field, fl) == 0 && body[st + fl] == ':') {
            copy_trim(out, outlen, body + st + fl + 1, n - fl - 1);
            return i;
        }
    }
    return 0;
}

static void field_value(const char *body, size_t len, const char *field, char *out, size_t outlen)
{
    field_value_from(body, len, field, out, outlen);
}

/* Apple Mail's unsubscribe request ("X-Apple-Unsubscribe: true", sent by the recipient's client to the
 * List-Unsubscribe mailto: address): a complaint-like opt-out by its From address. */
static int apple_unsubscribe(struct bnc_report *r, const struct bnc_view *v)
{
    const char *h = v->apple;
    const char *from = v->from;
    if (!h || strncasecmp(h, "true", 4) != 0 || !from)
        return 0;
    struct bnc_rcpt *e = bnc_report_add(r);
    if (!e)
        return 0;
    if (bnc_addr_extract(from, strlen(from), e->recipient, 0) < 0)
        e->recipient[0] = 0;
    e->action = BNC_FEEDBACK;
    bnc_copy(e->diag, sizeof e->diag, "feedback-type=unsubscribe (apple mail)");
    bnc_classify(e, NULL, 0);
    return 1;
}

static void parse_arf(struct bnc_report *r, const char *body, size_t len, const char *orig_to, const char *hdrs,
                      size_t hlen)
{
    char v[BNC_FIELD_MAX], addr[BNC_ADDR_LEN] = "", type[BNC_FIELD_MAX];
    field_value(body, len, "Feedback-Type", type, sizeof type);
    /* one entry per Original-Rcpt-To (RFC 5965 allows several) */
    size_t off = 0;
    int n = 0;
    while (off < len && n < BNC_MAX_RCPTS) {
        size_t used = field_value_from(body + off, len - off, "Original-Rcpt-To", v, sizeof v);
        if (!used)
            break;
        off += used;
        if (!v[0] || bnc_addr_extract(v, strlen(v), addr, 0) < 0)
            continue;
        struct bnc_rcpt *e = bnc_report_add(r);
        if (!e)
            return;
        bnc_copy(e->recipient, sizeof e->recipient, addr);
        e->action = BNC_FEEDBACK;
        snprintf(e->diag, sizeof e->diag, "feedback-type=%.64s", type[0] ? type : "unknown");
        bnc_classify(e, NULL, 0);
        n++;
    }
    if (n)
        return;
    addr[0] = 0;
    if (!addr[0] && orig_to)
        bnc_addr_extract(orig_to, strlen(orig_to), addr, 0);
    if (!addr[0] && hdrs) {
        field_value(hdrs, hlen, "To", v, sizeof v);
        if (v[0])
            bnc_addr_extract(v, strlen(v), addr, 0);
    }
    struct bnc_rcpt *e = bnc_report_add(r);
    if (!e)
        return;
    bnc_copy(e->recipient, sizeof e->recipient, addr);
    e->action = BNC_FEEDBACK;
    snprintf(e->diag, sizeof e->diag, "feedback-type=%.64s", type[0] ? type : "unknown");
    bnc_classify(e, NULL, 0);
}

/* ---- free text ---- */

static void lower_addr_of(const char *hdr, char *out)
{
    out[0] = 0;
    if (hdr)
        bnc_addr_extract(hdr, strlen(hdr), out, 0);
}

static void parse_text(struct bnc_report *r, const char *text, size_t len, const struct bnc_view *v)
{
    static __thread struct bnc_hit hits[BNC_HITS_MAX];
    char from[BNC_ADDR_LEN], to[BNC_ADDR_LEN], rp[BNC_ADDR_LEN];
    lower_addr_of(v->from, from);
    lower_addr_of(v->to, to);
    lower_addr_of(v->rp, rp);
    const char *exclude[] = {from, to, rp, NULL};

    size_t end = bnc_text_end(text, len);
    int nh = bnc_text_scan(text, end, exclude, hits, BNC_HITS_MAX);
    /* X-Failed-Recipients (Exim, Google) names the failed addresses outright: it wins over addresses found
     * in a text that may name only the sender (localised Google Groups notices) */
    const char *xfr = v->xfr;
    if (xfr) {
        static __thread struct bnc_hit xh[BNC_HITS_MAX];
        int nx = 0;
        size_t xl = strlen(xfr), off = 0;
        while (off < xl && nx < BNC_HITS_MAX) {
            long e = bnc_addr_extract(xfr + off, xl - off, xh[nx].addr, 0);
            if (e < 0)
                break;
            off += (size_t)e;
            xh[nx].off = 0;
            xh[nx].len = end;
            for (int i = 0; i < nh; i++)
                if (strcmp(hits[i].addr, xh[nx].addr) == 0) {
                    xh[nx].off = hits[i].off;
                    xh[nx].len = hits[i].len;
                }
            nx++;
        }
        if (nx) {
            memcpy(hits, xh, (size_t)nx * sizeof hits[0]);
            nh = nx;
        }
    }
    if (nh == 0) {
        /* Exim names them in a header; else the returned message's To: */
        const char *xf = v->xfr;
        char a[BNC_ADDR_LEN] = "";
        if (xf)
            bnc_addr_extract(xf, strlen(xf), a, 0);
        if (!a[0] && v->has_orig)
            lower_addr_of(v->orig_to, a);
        if (!a[0] && end < len) {
            char val[BNC_FIELD_MAX];
            field_value(text + end, len - end, "To", val, sizeof val);
            if (val[0])
                bnc_addr_extract(val, strlen(val), a, 1);
        }
        bnc_copy(hits[0].addr, sizeof hits[0].addr, a);
        hits[0].off = 0;
        hits[0].len = end;
        nh = 1;
    }
    for (int i = 0; i < nh; i++) {
        struct bnc_rcpt *e = bnc_report_add(r);
        if (!e)
            return;
        bnc_copy(e->recipient, sizeof e->recipient, hits[i].addr);
        e->action = BNC_FAILED;
        bnc_norm(text + hits[i].off, hits[i].len, e->diag, sizeof e->diag);
        bnc_classify(e, text + hits[i].off, hits[i].len);
        if (strcmp(e->reason, "undefined") == 0 && hits[i].len < end) {
            bnc_classify(e, text, end);
        }
        /* Google Groups refuses a post (no such group, or no permission to post) in the poster's language */
        size_t al = strlen(e->recipient);
        if (!strcmp(e->reason, "undefined") && al > 17 && !strcmp(e->recipient + al - 17, "@googlegroups.com") &&
            from[0] && (strstr(from, "@googlemail.com") || strstr(from, "@google.com"))) {
            e->reason = "rejected";
            e->hard = 0;
        }
    }
}

/* ---- entry point ---- */

/* Cut the input so GMime builds a bounded number of objects (see the file comment). */
static size_t bounded_len(const char *s, size_t len)
{
    /* too short to hold more lines of either kind than allowed: 4 * BNC_MAX_PARTS + 1 lines "--\n" need more
     * (and BNC_MAX_PARTS + 1 lines "content-type\n" more still) */
    if (len <= 3u * 4u * BNC_MAX_PARTS)
        return len;
    unsigned ct = 0, dash = 0;
    for (size_t i = 0; i < len;) {
        size_t st = i;
        const char *nl = memchr(s + i, '\n', len - i);
        i = nl ? (size_t)(nl - s) + 1 : len;
        size_t n = i - st;
        if (n >= 12 && (s[st] | 0x20) == 'c' && strncasecmp(s + st, "content-type", 12) == 0 &&
            ++ct > BNC_MAX_PARTS)
            return st;
        if (n >= 2 && s[st] == '-' && s[st + 1] == '-' && ++dash > 4 * BNC_MAX_PARTS)
            return st;
    }
    return len;
}

/* Is s[0..n) an mbox separator line, "From SENDER DATE" with a time "hh:mm" and a year in the date? */
static int mbox_from_line(const char *s, size_t n)
{
    if (n < 20 || n > 200 || memcmp(s, "From ", 5) != 0 || s[5] == ' ' || memchr(s, ':', n) == NULL)
        return 0;
    int digits = 0, colon_time = 0;
    for (size_t i = 5; i < n; i++) {
        if (isdigit((unsigned char)s[i])) {
            if (++digits >= 4 && colon_time)
                return 1;
        } else {
            if (s[i] == ':' && digits >= 1 && i + 2 < n && isdigit((unsigned char)s[i + 1]))
                colon_time = 1;
            digits = 0;
        }
    }
    return 0;
}

/* Length of the first message of an mbox-style concatenation (messages separated by a blank line and a
 * "From " line); len when there is one message. */
static size_t first_message(const char *s, size_t len)
{
    /* memchr for the rare 'F' is several times faster than memmem for "\nFrom " on short messages */
    for (const char *p = s; (p = memchr(p, 'F', len - (size_t)(p - s))) != NULL; p++) {
        if (p == s || p[-1] != '\n' || (size_t)(s + len - p) < 5 || memcmp(p, "From ", 5) != 0)
            continue;
        size_t st = (size_t)(p - s);
        /* the separator follows a blank line */
        if (!(st >= 2 && (s[st - 2] == '\n' || (s[st - 2] == '\r' && st >= 3 && s[st - 3] == '\n'))))
            continue;
        const char *e = memchr(s + st, '\n', len - st);
        size_t n = e ? (size_t)(e - (s + st)) : len - st;
        if (mbox_from_line(s + st, n))
            return st;
    }
    return len;
}

static void parse_one(struct bnc_report *r, const char *s, size_t len);

static __thread enum bnc_path path_mode;
static __thread unsigned long fast_hits;

void bnc_parse_set_path(enum bnc_path p)
{
    path_mode = p;
}

unsigned long bnc_parse_fast_hits(void)
{
    return fast_hits;
}

/* The raw body of s[0..len) (after the first blank line, capped at BNC_TEXT_SCAN) as a new string, or NULL
 * when there is no blank line: the text of a message without a usable text part. */
static char *raw_body(const char *s, size_t len, size_t *tlen)
{
    *tlen = 0;
    const char *body = NULL;
    for (size_t i = 0; i + 1 < len; i++)
        if (s[i] == '\n' && (s[i + 1] == '\n' || (s[i + 1] == '\r' && i + 2 < len && s[i + 2] == '\n'))) {
            body = s + i + 1;
            break;
        }
    if (!body)
        return NULL;
    size_t n = (size_t)(s + len - body);
    if (n > BNC_TEXT_SCAN)
        n = BNC_TEXT_SCAN;
    char *text = malloc(n + 1);
    if (!text)
        abort();
    memcpy(text, body, n);
    text[n] = 0;
    *tlen = n;
    return text;
}


int bnc_parse(const void *msg, size_t len, struct bnc_report **out, char *err, size_t errlen)
{
    *out = NULL;
    if (len > BNC_MAX_INPUT) {
        snprintf(err, errlen, "message too large (%zu bytes, limit %u)", len, BNC_MAX_INPUT);
        return -1;
    }
    bnc_init();
    struct bnc_report *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    *out = r;
    const char *s = msg;
    /* a file may hold several messages mbox-style (a report about a report): each is parsed, in order */
    for (int k = 0; k < BNC_MBOX_MAX && len > 0; k++) {
        /* an mbox "From " line is not a header */
        if (len >= 5 && memcmp(s, "From ", 5) == 0) {
            const char *nl = memchr(s, '\n', len);
            size_t skip = nl ? (size_t)(nl - s) + 1 : len;
            s += skip;
            len -= skip;
        }
        size_t one = first_message(s, len);
        enum bnc_kind kind = r->kind;
        size_t before = r->n;
        parse_one(r, s, one);
        if (before && kind != BNC_K_NONE)
            r->kind = kind; /* the first message's kind stands */
        s += one;
        len -= one;
    }
    return 0;
}

/* Parse one message s[0..len) and add its entries to r. */
static void parse_one(struct bnc_report *r, const char *s, size_t len)
{
    len = bounded_len(s, len);
    if (path_mode != BNC_PATH_GMIME) {
        if (bnc_fast_parse(r, s, len)) {
            fast_hits++;
            return;
        }
        if (path_mode == BNC_PATH_FAST)
            return;
    }

    GMimeStream *stream = g_mime_stream_mem_new_with_buffer(s, len);
    GMimeParser *parser = g_mime_parser_new_with_stream(stream);
    g_object_unref(stream);
    GMimeMessage *m = g_mime_parser_construct_message(parser, NULL);
    g_object_unref(parser);
    if (!m)
        return;

    struct walk w;
    memset(&w, 0, sizeof w);
    walk(&w, g_mime_message_get_mime_part(m), 0);

    size_t tlen = 0, hlen = 0;
    char *text = NULL, *html = NULL;
    if (w.text)
        text = part_text(w.text, &tlen);
    if ((!text || !tlen) && w.html)
        html = part_text(w.html, &hlen);

    struct bnc_view v;
    memset(&v, 0, sizeof v);
    GMimeObject *mo = GMIME_OBJECT(m);
    v.from = g_mime_object_get_header(mo, "From");
    v.to = g_mime_object_get_header(mo, "To");
    v.rp = g_mime_object_get_header(mo, "Return-Path");
    v.xfr = g_mime_object_get_header(mo, "X-Failed-Recipients");
    v.apple = g_mime_object_get_header(mo, "X-Apple-Unsubscribe");
    v.autosub = g_mime_object_get_header(mo, "Auto-Submitted");
    v.prec = g_mime_object_get_header(mo, "Precedence");
    v.subject = g_mime_message_get_subject(m);
    v.has_ar_hdr = g_mime_object_get_header(mo, "X-Autoreply") != NULL ||
                   g_mime_object_get_header(mo, "X-Autorespond") != NULL ||
                   g_mime_object_get_header(mo, "X-Vacation") != NULL;
    v.has_orig = w.orig != NULL;
    v.orig_to = w.orig ? g_mime_object_get_header(GMIME_OBJECT(w.orig), "To") : NULL;

    char *bodies[BNC_DSN_PARTS];
    size_t blens[BNC_DSN_PARTS];
    int nb = 0;
    for (int k = 0; k < w.ndsn; k++)
        if ((bodies[nb] = part_bytes(w.dsn[k], &blens[nb])))
            nb++;
    size_t alen = 0, hdrlen = 0;
    v.has_arf = w.arf != NULL;
    char *arf = w.arf ? part_bytes(w.arf, &alen) : NULL;
    char *hdrs = w.arf && w.headers ? part_bytes(w.headers, &hdrlen) : NULL;
    bnc_analyse(r, s, len, text, tlen, html, hlen, bodies, blens, nb, &v, arf, alen, hdrs, hdrlen, 0);
    free(arf);
    free(hdrs);
    g_object_unref(m);
}

/* The rules after the MIME walk, shared by the GMime path and the fast scanner (bnc_fast.c): the report text is
 * text (else html made text, else the raw body of s[0..len)); the delivery-status bodies give entries; without
 * them an SES notification, an Apple unsubscribe, a DSN block in the text, the ARF report (arf, with hdrs, its
 * text/rfc822-headers part), and last the free-text recognisers or the auto-reply check. Takes ownership of
 * text, html and bodies[]. Returns 1 when the delivery-status bodies gave entries. */
int bnc_analyse(struct bnc_report *r, const char *s, size_t len, char *text, size_t tlen, char *html, size_t hlen,
                char **bodies, const size_t *blens, int nb, const struct bnc_view *v, const char *arf, size_t alen,
                const char *hdrs, size_t hdrlen, int dsn_only)
{
    size_t start_n = r->n;
    if ((!text || !tlen) && html) {
        /* no usable text part: the html one made text, else (or a multipart whose boundary is never used) the
         * raw body */
        free(text);
        text = html;
        tlen = hlen;
        html_to_text(text, &tlen);
    } else {
        free(html);
    }
    if (!text || !tlen) {
        free(text);
        text = raw_body(s, len, &tlen);
    }
    if (text)
        text = jis_to_utf8(text, &tlen);
    const char *from = v->from;
    const char *subject = v->subject;

    for (int k = 0; k < nb; k++) {
        size_t blen = blens[k];
        char *body = jis_to_utf8(bodies[k], &blen);
        size_t end = text ? bnc_text_end(text, tlen) : 0;
        parse_dsn(r, body, blen, text, end);
        free(body);
        if (r->n > start_n)
            r->kind = BNC_K_DSN;
    }
    int dsn = r->n > start_n;
    if (dsn_only && !dsn) {
        free(text);
        return 0;
    }
    if (r->n == start_n && !v->has_arf && text && bnc_ses_parse(r, text, tlen) == 0)
        r->kind = r->v[start_n].action == BNC_FEEDBACK ? BNC_K_ARF : BNC_K_DSN;
    if (r->n == start_n && !v->has_arf && apple_unsubscribe(r, v))
        r->kind = BNC_K_ARF;
    if (r->n == start_n && !v->has_arf && text) {
        size_t blen;
        char *body = find_dsn_block(text, tlen, &blen);
        if (body) {
            size_t end = bnc_text_end(text, tlen);
            parse_dsn(r, body, blen, text, end);
            free(body);
        }
        if (r->n > start_n)
            r->kind = BNC_K_DSN;
    }
    if (r->n == start_n && v->has_arf && arf) {
        parse_arf(r, arf, alen, v->orig_to, hdrs, hdrlen);
        r->kind = BNC_K_ARF;
    }
    if (r->n == start_n && (r->kind == BNC_K_NONE || start_n > 0)) {
        int has_ar_hdr = v->has_ar_hdr;
        const char *prec = v->prec;
        if (prec && strncasecmp(prec, "auto_reply", 10) == 0)
            has_ar_hdr = 1;
        /* an auto-reply says so in its headers; a bounce's sender or subject outweighs that (Exim marks its
         * bounces auto-replied), a bounce-like sentence in an auto-reply's text does not */
        int autoreply = bnc_text_is_autoreply(v->autosub, subject, has_ar_hdr);
        int bounce_hdr = bnc_text_is_bounce(from, subject, NULL, 0) || v->xfr != NULL;
        if (text && (bounce_hdr || (!autoreply && bnc_text_is_bounce(NULL, NULL, text, tlen)))) {
            parse_text(r, text, tlen, v);
            r->kind = BNC_K_TEXT;
        } else if (autoreply) {
            r->kind = BNC_K_AUTOREPLY;
        }
    }
    free(text);
    return dsn;
}

