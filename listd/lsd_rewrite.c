/* lsd_rewrite: pure inspection and rewriting of a message listd accepted (no I/O, no globals; a fuzz target
 * calls it directly: fuzz_lsd_rewrite.c).
 *
 * lsd_msg_scan reads the header once and reports what the policy and loop checks need: Received: count, a
 * List-Id or X-Loop naming this list, the first From: address (normalised), the unfolded Subject, where the
 * body starts, and whether a header line is over 998 octets (RFC 5322 2.1.1) or the header over 64 KB.
 *
 * lsd_rewrite_post builds the copy of a post that is stored and sent, once per post:
 *   - drops List-Id, List-Post, List-Help, List-Subscribe, List-Unsubscribe, List-Unsubscribe-Post, List-Owner,
 *     List-Archive and Precedence fields the post came with (another list's, or forged), and adds ours at the
 *     end of the header: List-Id (RFC 2919, "<L.D>"), List-Post, List-Help, List-Subscribe (RFC 2369),
 *     Precedence: list and X-Loop: L@D. List-Unsubscribe is not added here: the sender adds it per recipient.
 *   - subject prefix: inserted before the subject unless the subject already holds it anywhere (case-insensitive),
 *     so "Re: [news] x" stays as it is; a post without Subject gets "Subject: PREFIX".
 *   - footer: text/plain (or no Content-Type) in 7bit/8bit/binary: appended after the body (after a CRLF if the
 *     body lacks one); multipart/mixed: a text/plain part inserted before the closing boundary (none found:
 *     no footer); text/plain in base64 or quoted-printable: the message becomes multipart/mixed with the
 *     original body as its first part (its Content-Type and Content-Transfer-Encoding move into that part) and
 *     the footer as the second, so encoded text is never edited; any other type: left alone.
 *   - DMARC mitigation (rw->from_mode, decided by the caller; only when the first From: has an address):
 *     LSD_FROM_MUNGE: the first From: becomes From: "NAME via L" <L@D> (NAME: the poster's display name, or
 *     the address when there is none; RFC 2047 encoded words are kept outside the quotes; at most 200 octets),
 *     the poster's field is kept as X-Original-From (any other X-Original-From and any second From: are
 *     dropped) and, unless the post has a Reply-To: (kept as it is, as Mailman and Sympa do: the poster chose
 *     where replies go), Reply-To: gets the poster's From: value. LSD_FROM_WRAP: a new message from the list
 *     (From munged as above, Reply-To, To, Cc, Subject with the prefix, Date, Message-ID, In-Reply-To,
 *     References, the list fields) whose body is the post, byte for byte, as message/rfc822 (inline); with a
 *     footer, multipart/mixed of that part and a text/plain footer part.
 *   - lsd_dmarc_parse / lsd_org_domain: DMARC record syntax (RFC 7489 6.3: first tag v=DMARC1 exactly; p and
 *     sp none/quarantine/reject, case-insensitive; other tags ignored) and the organizational domain as the
 *     last two labels (no public suffix list: see lsd_dns.c).
 * Line ends: the input has CRLF (listd refuses bare LF); a bare LF is tolerated when scanning and copied as it
 * is. Limits: header fields are inspected up to LSD_HDR_MAX octets, values up to LSD_VALUE_MAX; the output is
 * bounded by the caller's max (NULL when it would not fit).
 */
#include "lsd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lc_buf.h"
#include "lc_log.h"

#define LSD_VALUE_MAX 1024 /* unfolded value of a field we look into */

/* ---------------------------------------------------------------- header walking */

struct field {
    const char *start;   /* first octet of the field (its name) */
    size_t len;          /* through the line end of its last continuation line */
    const char *name;
    size_t namelen;
    const char *value;   /* after the colon */
    size_t valuelen;     /* to the end of the field (line ends included) */
};

/* line_end returns the length of the line at p (through its LF, or to end). */
static size_t line_len(const char *p, const char *end)
{
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    return lf ? (size_t)(lf - p) + 1 : (size_t)(end - p);
}

/* content_len is a line's length without its CRLF or LF. */
static size_t content_len(const char *p, size_t n)
{
    if (n && p[n - 1] == '\n')
        n--;
    if (n && p[n - 1] == '\r')
        n--;
    return n;
}

/* header_end returns the offset of the body: after the first empty line, or len when there is none.
 * *hdr gets the length of the header proper (without the empty line). */
static size_t header_end(const char *msg, size_t len, size_t *hdr)
{
    size_t off = 0;
    while (off < len) {
        size_t n = line_len(msg + off, msg + len);
        if (content_len(msg + off, n) == 0) {
            *hdr = off;
            return off + n;
        }
        off += n;
    }
    *hdr = len;
    return len;
}

/* next_field parses the field at *off (within the header of length hdr); returns 0, or -1 at the end. A line
 * that is neither a field nor a continuation is returned with namelen 0. */
static int next_field(const char *msg, size_t hdr, size_t *off, struct field *f)
{
    if (*off >= hdr)
        return -1;
    const char *p = msg + *off, *end = msg + hdr;
    size_t n = line_len(p, end);
    memset(f, 0, sizeof *f);
    f->start = p;
    const char *colon = memchr(p, ':', content_len(p, n));
    if (colon && p[0] != ' ' && p[0] != '\t') {
        f->name = p;
        f->namelen = (size_t)(colon - p);
        while (f->namelen && (p[f->namelen - 1] == ' ' || p[f->namelen - 1] == '\t'))
            f->namelen--;
        f->value = colon + 1;
    }
    size_t total = n;
    while (p + total < end && (p[total] == ' ' || p[total] == '\t'))
        total += line_len(p + total, end);
    f->len = total;
    if (f->value)
        f->valuelen = (size_t)(p + total - f->value);
    *off += total;
    return 0;
}

static int is_name(const struct field *f, const char *name)
{
    size_t n = strlen(name);
    return f->namelen == n && strncasecmp(f->name, name, n) == 0;
}

/* unfold copies a value without line ends, leading and trailing white space, at most outlen - 1 octets. */
static void unfold(const char *v, size_t n, char *out, size_t outlen)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < outlen; i++) {
        if (v[i] == '\r' || v[i] == '\n')
            continue;
        if (v[i] == '\t' || v[i] == ' ') {
            if (k == 0 || out[k - 1] == ' ')
                continue;
            out[k++] = ' ';
            continue;
        }
        out[k++] = v[i];
    }
    while (k && out[k - 1] == ' ')
        k--;
    out[k] = 0;
}

/* ci_contains reports whether hay holds needle, ignoring case. */
static int ci_contains(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    if (n == 0)
        return 1;
    for (const char *p = hay; *p; p++)
        if (strncasecmp(p, needle, n) == 0)
            return 1;
    return 0;
}

/* strip_angle removes surrounding white space and <> from s in place. */
static char *strip_angle(char *s)
{
    while (*s == ' ')
        s++;
    size_t n = strlen(s);
    while (n && s[n - 1] == ' ')
        s[--n] = 0;
    if (*s == '<' && n >= 2 && s[n - 1] == '>') {
        s[n - 1] = 0;
        s++;
    }
    return s;
}

void lsd_list_id(const char *list, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s", list);
    char *at = strrchr(out, '@');
    if (at)
        *at = '.';
}

/* first_address extracts the first mailbox of an address-list value (unfolded): the text between the first
 * <> outside quotes and comments, or else the first word with an @ outside them. */
static void first_address(const char *v, char *out, size_t outlen)
{
    char plain[LSD_VALUE_MAX];
    size_t k = 0;
    int quote = 0, depth = 0;
    out[0] = 0;
    for (const char *p = v; *p; p++) {
        char c = *p;
        if (quote) {
            if (c == '\\' && p[1])
                p++;
            else if (c == '"')
                quote = 0;
            continue;
        }
        if (depth) {
            if (c == '\\' && p[1])
                p++;
            else if (c == '(')
                depth++;
            else if (c == ')')
                depth--;
            continue;
        }
        if (c == '"') {
            quote = 1;
        } else if (c == '(') {
            depth = 1;
        } else if (c == '<') {
            const char *e = strchr(p + 1, '>');
            if (!e)
                return;
            size_t n = (size_t)(e - p - 1);
            if (n >= outlen)
                return;
            memcpy(out, p + 1, n);
            out[n] = 0;
            return;
        } else if (c == ',' || c == ';') {
            break; /* the first address has no <>: it is in plain */
        } else if (k + 1 < sizeof plain) {
            plain[k++] = c == ':' ? ' ' : c; /* "group: a@b" */
        }
    }
    plain[k] = 0;
    for (char *w = strtok(plain, " "); w; w = strtok(NULL, " ")) {
        if (strchr(w, '@')) {
            snprintf(out, outlen, "%s", w);
            return;
        }
    }
}

void lsd_msg_scan(const char *msg, size_t len, const char *list, struct lsd_msginfo *mi)
{
    memset(mi, 0, sizeof *mi);
    size_t hdr;
    mi->body = header_end(msg, len, &hdr);
    mi->hdrlen = hdr;
    if (hdr > LSD_HDR_MAX) {
        mi->err = LSD_MSG_HEADER;
        hdr = LSD_HDR_MAX;
    }
    for (size_t off = 0; off < hdr;) { /* line lengths */
        size_t n = line_len(msg + off, msg + hdr);
        if (content_len(msg + off, n) > LSD_HDR_LINE_MAX) {
            if (!mi->err)
                mi->err = LSD_MSG_LINE;
            break;
        }
        off += n;
    }
    char listid[LC_ADDR_MAX + 1];
    lsd_list_id(list, listid, sizeof listid);
    struct field f;
    char v[LSD_VALUE_MAX];
    int have_from = 0;
    for (size_t off = 0; next_field(msg, hdr, &off, &f) == 0;) {
        if (!f.name)
            continue;
        if (is_name(&f, "Received")) {
            mi->hops++;
        } else if (is_name(&f, "List-Id")) {
            unfold(f.value, f.valuelen, v, sizeof v);
            /* List-Id: [phrase] <list-id>: compare the part in <> (or the whole value) */
            const char *lt = strrchr(v, '<');
            char *id = strip_angle(lt ? (char *)lt : v);
            if (strcasecmp(id, listid) == 0)
                mi->loop = 1;
        } else if (is_name(&f, "X-Loop")) {
            unfold(f.value, f.valuelen, v, sizeof v);
            if (strcasecmp(strip_angle(v), list) == 0)
                mi->loop = 1;
        } else if (is_name(&f, "From") && !have_from) {
            have_from = 1;
            unfold(f.value, f.valuelen, v, sizeof v);
            char a[LSD_VALUE_MAX];
            const char *why;
            first_address(v, a, sizeof a);
            if (*a && lc_addr_norm(a, strlen(a), mi->from, &why) < 0)
                mi->from[0] = 0;
        } else if (is_name(&f, "Subject") && !mi->has_subject) {
            mi->has_subject = 1;
            unfold(f.value, f.valuelen, mi->subject, sizeof mi->subject);
        }
    }
}

/* ---------------------------------------------------------------- rewriting */

enum footer_mode { F_NONE, F_APPEND, F_MIXED, F_WRAP };

static const char *const dropped[] = {"List-Id", "List-Post", "List-Help", "List-Subscribe", "List-Unsubscribe",
                                      "List-Unsubscribe-Post", "List-Owner", "List-Archive", "Precedence", NULL};

/* param finds parameter name in a Content-Type value (unfolded), writing its value (unquoted) to out. */
static int param(const char *v, const char *name, char *out, size_t outlen)
{
    size_t n = strlen(name);
    const char *p = strchr(v, ';');
    while (p) {
        p++;
        while (*p == ' ')
            p++;
        if (strncasecmp(p, name, n) == 0) {
            const char *q = p + n;
            while (*q == ' ')
                q++;
            if (*q == '=') {
                q++;
                while (*q == ' ')
                    q++;
                size_t k = 0;
                if (*q == '"') {
                    for (q++; *q && *q != '"' && k + 1 < outlen; q++) {
                        if (*q == '\\' && q[1])
                            q++;
                        out[k++] = *q;
                    }
                } else {
                    for (; *q && *q != ';' && *q != ' ' && k + 1 < outlen; q++)
                        out[k++] = *q;
                }
                out[k] = 0;
                return k > 0 ? 0 : -1;
            }
        }
        p = strchr(p, ';'); /* a quoted ';' is not handled: a boundary with ';' is not found, so no footer */
    }
    return -1;
}

/* media_type copies the type/subtype of a Content-Type value, lower-cased. */
static void media_type(const char *v, char *out, size_t outlen)
{
    size_t k = 0;
    for (; *v && *v != ';' && *v != ' ' && *v != '(' && k + 1 < outlen; v++)
        out[k++] = (char)((*v >= 'A' && *v <= 'Z') ? *v + 32 : *v);
    out[k] = 0;
}

/* memfind is memmem for a NUL-terminated needle. */
static const char *memfind(const char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    if (m == 0 || m > n)
        return NULL;
    for (size_t i = 0; i + m <= n; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, m) == 0)
            return hay + i;
    return NULL;
}

/* closing_boundary finds the start of the last line "--B--" (trailing white space allowed) of the body. */
static const char *closing_boundary(const char *body, size_t n, const char *b)
{
    char delim[LSD_VALUE_MAX + 8];
    snprintf(delim, sizeof delim, "--%s--", b);
    size_t dl = strlen(delim);
    const char *found = NULL;
    for (size_t off = 0; off < n;) {
        size_t ll = line_len(body + off, body + n);
        size_t cl = content_len(body + off, ll);
        if (cl >= dl && memcmp(body + off, delim, dl) == 0) {
            size_t k = dl;
            while (k < cl && (body[off + k] == ' ' || body[off + k] == '\t'))
                k++;
            if (k == cl)
                found = body + off;
        }
        off += ll;
    }
    return found;
}

/* put_footer appends the footer text with CRLF line ends (a final CRLF added if missing). */
static int put_footer(struct lc_buf *o, const char *footer)
{
    for (const char *p = footer; *p;) {
        size_t n = strcspn(p, "\r\n");
        if (lc_buf_append(o, p, n) < 0 || lc_buf_append(o, "\r\n", 2) < 0)
            return -1;
        p += n;
        if (*p == '\r' && p[1] == '\n')
            p += 2;
        else if (*p)
            p++;
    }
    return 0;
}

static int put_part_header(struct lc_buf *o, const char *boundary)
{
    return lc_buf_printf(o, "--%s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
                            "Content-Disposition: inline\r\n\r\n", boundary);
}

/* ---------------------------------------------------------------- DMARC mitigation (From munging, wrapping) */

/* display_name extracts the display name of an address-list value (unfolded): the phrase before the first <>
 * outside quotes and comments, unquoted, white space collapsed; "" for a bare addr-spec. *raw is set when the
 * phrase was not quoted (it may hold RFC 2047 encoded words, which must stay outside quotes). */
static void display_name(const char *v, char *out, size_t outlen, int *raw)
{
    size_t k = 0;
    int quote = 0, depth = 0, found = 0;
    *raw = 1;
    for (const char *p = v; *p && k + 1 < outlen; p++) {
        char c = *p;
        if (quote) {
            if (c == '\\' && p[1])
                c = *++p;
            else if (c == '"') {
                quote = 0;
                continue;
            }
            out[k++] = c;
            continue;
        }
        if (depth) {
            if (c == '\\' && p[1])
                p++;
            else if (c == '(')
                depth++;
            else if (c == ')')
                depth--;
            continue;
        }
        if (c == '"') {
            quote = 1;
            *raw = 0;
        } else if (c == '(') {
            depth = 1;
        } else if (c == '<') {
            found = 1;
            break;
        } else if (c == ',' || c == ';') {
            break;
        } else {
            out[k++] = c;
        }
    }
    out[k] = 0;
    if (!found) {
        out[0] = 0;
        return;
    }
    /* collapse white space, drop control characters */
    size_t j = 0;
    for (size_t i = 0; out[i]; i++) {
        unsigned char c = (unsigned char)out[i];
        if (c == ' ' || c == '\t') {
            if (j && out[j - 1] != ' ')
                out[j++] = ' ';
        } else if (c >= 0x20 && c != 0x7f) {
            out[j++] = (char)c;
        }
    }
    while (j && out[j - 1] == ' ')
        j--;
    out[j] = 0;
}

/* phrase_safe: every octet is atext, space, '=' or '?' (a phrase of atoms and RFC 2047 encoded words). */
static int phrase_safe(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr(" !#$%&'*+-/=?^_`{|}~", c)))
            return 0;
    }
    return 1;
}

#define NAME_MAX_OCTETS 200 /* of the poster's name in the rewritten From: */

/* put_munged_from writes From: "NAME via LOCAL" <LIST> for the poster with display name field value v
 * (unfolded) and address addr. */
static int put_munged_from(struct lc_buf *o, const char *v, const char *addr, const char *list, const char *local)
{
    char name[LSD_VALUE_MAX];
    int raw;
    display_name(v, name, sizeof name, &raw);
    if (raw && strstr(name, "=?") && phrase_safe(name) && strlen(name) <= NAME_MAX_OCTETS)
        return lc_buf_printf(o, "From: %s via \"%s\" <%s>\r\n", name, local, list);
    const char *n = *name ? name : addr;
    size_t len = strlen(n);
    if (len > NAME_MAX_OCTETS) { /* cut, not inside a UTF-8 sequence */
        len = NAME_MAX_OCTETS;
        while (len > 0 && ((unsigned char)n[len] & 0xc0) == 0x80)
            len--;
    }
    int rc = lc_buf_puts(o, "From: \"");
    for (size_t i = 0; i < len; i++) {
        if (n[i] == '"' || n[i] == '\\')
            rc |= lc_buf_append(o, "\\", 1);
        rc |= lc_buf_append(o, n + i, 1);
    }
    rc |= lc_buf_printf(o, " via %s\" <%s>\r\n", local, list);
    return rc;
}

/* put_field writes a field under name with the raw value of f (folding kept), ending in CRLF. */
static int put_field(struct lc_buf *o, const char *name, const struct field *f)
{
    const char *fend = f->start + f->len;
    int rc = lc_buf_printf(o, "%s:", name);
    rc |= lc_buf_append(o, f->value, f->valuelen);
    if (fend[-1] != '\n')
        rc |= lc_buf_append(o, "\r\n", 2);
    return rc;
}

/* put_subject writes the Subject field f with the prefix (unless the subject holds it already). */
static int put_subject(struct lc_buf *o, const struct field *f, const char *prefix)
{
    char v[LSD_VALUE_MAX];
    unfold(f->value, f->valuelen, v, sizeof v);
    if (!*prefix || ci_contains(v, prefix))
        return put_field(o, "Subject", f);
    const char *val = f->value, *fend = f->start + f->len;
    while (val < fend && (*val == ' ' || *val == '\t'))
        val++;
    int empty = val == fend || *val == '\r' || *val == '\n';
    int rc = lc_buf_printf(o, "Subject: %s%s", prefix, empty ? "" : " ");
    rc |= lc_buf_append(o, val, (size_t)(fend - val));
    if (fend[-1] != '\n')
        rc |= lc_buf_append(o, "\r\n", 2);
    return rc;
}

/* pick_boundary finds a boundary "=_listcast_N_LEN" that does not occur in the n octets at b; -1 if none. */
static int pick_boundary(const char *b, size_t n, size_t len, char *nb, size_t nblen)
{
    for (unsigned i = 0; i < 100; i++) {
        snprintf(nb, nblen, "=_listcast_%u_%zu", i, len);
        char delim[80];
        snprintf(delim, sizeof delim, "--%s", nb);
        if (!memfind(b, n, delim))
            return 0;
    }
    return -1;
}

static int put_list_fields(struct lc_buf *o, const char *list)
{
    char listid[LC_ADDR_MAX + 1], local[LC_ADDR_MAX + 1];
    lsd_list_id(list, listid, sizeof listid);
    snprintf(local, sizeof local, "%s", list);
    char *at = strrchr(local, '@');
    const char *dom = at ? at + 1 : "";
    if (at)
        *at = 0;
    return lc_buf_printf(o, "List-Id: <%s>\r\nList-Post: <mailto:%s>\r\nList-Help: <mailto:%s-help@%s>\r\n"
                            "List-Subscribe: <mailto:%s-subscribe@%s>\r\nPrecedence: list\r\nX-Loop: %s\r\n",
                         listid, list, local, dom, local, dom, list);
}

/* wrap_post builds the LSD_FROM_WRAP form: a new message from the list whose body is the post, untouched, as
 * message/rfc822 (and the footer, if any, as a second part of a multipart/mixed). The outer header: From
 * (munged), Reply-To (the post's, else its From), To, Cc, Subject (prefixed), Date, Message-ID, In-Reply-To,
 * References, MIME-Version and the list fields. fromv/from: the first From's unfolded value and address. */
static char *wrap_post(const char *msg, size_t len, const struct lsd_rewrite *rw, size_t max, size_t *outlen,
                       const char *fromv, const char *from)
{
    static const char *const copied[] = {"To", "Cc", "Date", "Message-ID", "In-Reply-To", "References", NULL};
    size_t hdr;
    header_end(msg, len, &hdr);
    size_t scan_hdr = hdr > LSD_HDR_MAX ? LSD_HDR_MAX : hdr;
    const char *prefix = rw->prefix ? rw->prefix : "", *footer = rw->footer ? rw->footer : "";
    char local[LC_ADDR_MAX + 1], nb[64] = "";
    snprintf(local, sizeof local, "%s", rw->list);
    char *at = strrchr(local, '@');
    if (at)
        *at = 0;
    if (*footer && pick_boundary(msg, len, len, nb, sizeof nb) < 0)
        footer = "";
    struct lc_buf *o = lc_buf_new(max);
    int rc = put_munged_from(o, fromv, from, rw->list, local);
    struct field f;
    int have_rt = 0, have_subject = 0, have_from = 0;
    for (size_t off = 0; next_field(msg, scan_hdr, &off, &f) == 0;) /* Reply-To first, then the rest */
        if (f.name && is_name(&f, "Reply-To") && !have_rt) {
            have_rt = 1;
            rc |= put_field(o, "Reply-To", &f);
        }
    for (size_t off = 0; rc == 0 && next_field(msg, scan_hdr, &off, &f) == 0;) {
        if (!f.name)
            continue;
        if (is_name(&f, "From") && !have_from) {
            have_from = 1;
            if (!have_rt)
                rc |= put_field(o, "Reply-To", &f);
        } else if (is_name(&f, "Subject") && !have_subject) {
            have_subject = 1;
            rc |= put_subject(o, &f, prefix);
        } else {
            for (int i = 0; copied[i]; i++)
                if (is_name(&f, copied[i]))
                    rc |= put_field(o, copied[i], &f);
        }
    }
    if (*prefix && !have_subject)
        rc |= lc_buf_printf(o, "Subject: %s\r\n", prefix);
    rc |= lc_buf_puts(o, "MIME-Version: 1.0\r\n");
    rc |= put_list_fields(o, rw->list);
    int eight = 0;
    for (size_t i = 0; i < len && !eight; i++)
        eight = (unsigned char)msg[i] >= 0x80;
    const char *cte = eight ? "Content-Transfer-Encoding: 8bit\r\n" : "";
    int ends_crlf = len >= 1 && msg[len - 1] == '\n';
    if (!*footer) {
        rc |= lc_buf_printf(o, "Content-Type: message/rfc822\r\nContent-Disposition: inline\r\n%s\r\n", cte);
        rc |= lc_buf_append(o, msg, len);
        if (!ends_crlf)
            rc |= lc_buf_append(o, "\r\n", 2);
    } else {
        rc |= lc_buf_printf(o, "Content-Type: multipart/mixed; boundary=\"%s\"\r\n%s\r\n"
                               "This is a multi-part message in MIME format.\r\n\r\n--%s\r\n"
                               "Content-Type: message/rfc822\r\nContent-Disposition: inline\r\n%s\r\n",
                            nb, cte, nb, cte);
        rc |= lc_buf_append(o, msg, len);
        if (!ends_crlf)
            rc |= lc_buf_append(o, "\r\n", 2);
        rc |= put_part_header(o, nb);
        rc |= put_footer(o, footer);
        rc |= lc_buf_printf(o, "--%s--\r\n", nb);
    }
    if (rc != 0) {
        lc_buf_free(o);
        return NULL;
    }
    char *out = lc_buf_steal(o, outlen);
    lc_buf_free(o);
    return out;
}

/* ---------------------------------------------------------------- DMARC records (RFC 7489 6.3, 6.4) */

static int dmarc_value(const char *v, size_t n)
{
    if (n == 4 && strncasecmp(v, "none", 4) == 0)
        return LSD_DMARC_NONE;
    if (n == 10 && strncasecmp(v, "quarantine", 10) == 0)
        return LSD_DMARC_QUARANTINE;
    if (n == 6 && strncasecmp(v, "reject", 6) == 0)
        return LSD_DMARC_REJECT;
    return -1;
}

int lsd_dmarc_parse(const char *txt, size_t len, struct lsd_dmarc_rec *rec)
{
    rec->p = rec->sp = -1;
    const char *p = txt, *end = txt + len;
    for (int i = 0; p < end; i++) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *tend = semi ? semi : end;
        const char *eq = memchr(p, '=', (size_t)(tend - p));
        const char *n0 = p, *n1 = eq ? eq : tend, *v0 = eq ? eq + 1 : tend, *v1 = tend;
        while (n0 < n1 && (*n0 == ' ' || *n0 == '\t'))
            n0++;
        while (n1 > n0 && (n1[-1] == ' ' || n1[-1] == '\t'))
            n1--;
        while (v0 < v1 && (*v0 == ' ' || *v0 == '\t'))
            v0++;
        while (v1 > v0 && (v1[-1] == ' ' || v1[-1] == '\t'))
            v1--;
        size_t nl = (size_t)(n1 - n0), vl = (size_t)(v1 - v0);
        if (i == 0) {
            if (!eq || nl != 1 || *n0 != 'v' || vl != 6 || memcmp(v0, "DMARC1", 6) != 0)
                return -1; /* not a DMARC record */
        } else if (eq && nl == 1 && (*n0 == 'p' || *n0 == 'P')) {
            rec->p = dmarc_value(v0, vl);
        } else if (eq && nl == 2 && strncasecmp(n0, "sp", 2) == 0) {
            rec->sp = dmarc_value(v0, vl);
        }
        if (!semi)
            break;
        p = semi + 1;
    }
    return 0;
}

void lsd_org_domain(const char *domain, char *out, size_t outlen)
{
    out[0] = 0;
    size_t n = strlen(domain);
    while (n && domain[n - 1] == '.')
        n--;
    int dots = 0;
    size_t cut = 0;
    for (size_t i = n; i > 0; i--) {
        if (domain[i - 1] == '.' && ++dots == 2) {
            cut = i;
            break;
        }
    }
    if (dots < 2 || n - cut >= outlen)
        return;
    for (size_t i = cut; i < n; i++)
        out[i - cut] = (char)((domain[i] >= 'A' && domain[i] <= 'Z') ? domain[i] + 32 : domain[i]);
    out[n - cut] = 0;
}

char *lsd_rewrite_post(const char *msg, size_t len, const struct lsd_rewrite *rw, size_t max, size_t *outlen)
{
    size_t hdr, body = header_end(msg, len, &hdr);
    const char *b = msg + body;
    size_t blen = len - body;
    const char *prefix = rw->prefix ? rw->prefix : "", *footer = rw->footer ? rw->footer : "";
    size_t scan_hdr = hdr > LSD_HDR_MAX ? LSD_HDR_MAX : hdr;

    /* first pass: the facts that decide the footer mode */
    struct field f;
    char v[LSD_VALUE_MAX], ctype[128] = "", cte[64] = "", boundary[LSD_VALUE_MAX] = "";
    int have_ct = 0, have_mime = 0, have_subject = 0, have_from = 0, have_rt = 0;
    char fromv[LSD_VALUE_MAX] = "", from[LSD_VALUE_MAX] = "";
    for (size_t off = 0; next_field(msg, scan_hdr, &off, &f) == 0;) {
        if (!f.name)
            continue;
        if (is_name(&f, "From") && !have_from) {
            have_from = 1;
            unfold(f.value, f.valuelen, fromv, sizeof fromv);
            first_address(fromv, from, sizeof from);
        } else if (is_name(&f, "Reply-To")) {
            have_rt = 1;
        } else if (is_name(&f, "Content-Type") && !have_ct) {
            have_ct = 1;
            unfold(f.value, f.valuelen, v, sizeof v);
            media_type(v, ctype, sizeof ctype);
            if (param(v, "boundary", boundary, sizeof boundary) < 0)
                boundary[0] = 0;
        } else if (is_name(&f, "Content-Transfer-Encoding") && !*cte) {
            unfold(f.value, f.valuelen, v, sizeof v);
            media_type(v, cte, sizeof cte);
        } else if (is_name(&f, "MIME-Version")) {
            have_mime = 1;
        }
    }
    /* DMARC mitigation applies to a post whose (first) From: has an address */
    enum lsd_from_mode fmode = *from ? rw->from_mode : LSD_FROM_KEEP;
    if (fmode == LSD_FROM_WRAP)
        return wrap_post(msg, len, rw, max, outlen, fromv, from);
    enum footer_mode mode = F_NONE;
    const char *close = NULL;
    char nb[64] = "";
    if (*footer) {
        int encoded = !strcmp(cte, "base64") || !strcmp(cte, "quoted-printable");
        if (!have_ct || !*ctype || !strcmp(ctype, "text/plain")) {
            mode = encoded ? F_WRAP : F_APPEND;
        } else if (!strcmp(ctype, "multipart/mixed") && *boundary && !encoded) {
            close = closing_boundary(b, blen, boundary);
            mode = close ? F_MIXED : F_NONE;
        }
        if (mode == F_WRAP) {
            for (unsigned i = 0; i < 100 && mode == F_WRAP; i++) {
                snprintf(nb, sizeof nb, "=_listcast_%u_%zu", i, len);
                char delim[80];
                snprintf(delim, sizeof delim, "--%s", nb);
                if (!memfind(b, blen, delim))
                    break;
                if (i == 99)
                    mode = F_NONE;
            }
        }
    }

    struct lc_buf *o = lc_buf_new(max);
    int rc = 0;
    char listid[LC_ADDR_MAX + 1], local[LC_ADDR_MAX + 1];
    lsd_list_id(rw->list, listid, sizeof listid);
    snprintf(local, sizeof local, "%s", rw->list);
    char *at = strrchr(local, '@');
    const char *dom = at ? at + 1 : "";
    if (at)
        *at = 0;
    struct lc_buf *moved = lc_buf_new(LSD_HDR_MAX + 64); /* F_WRAP: the fields that move into the first part */

    /* the header, field by field (fields past LSD_HDR_MAX are copied as they are) */
    size_t off = 0;
    int from_seen = 0;
    while (rc == 0 && next_field(msg, hdr, &off, &f) == 0) {
        int drop = 0;
        if (f.name && (size_t)(f.start - msg) < scan_hdr) {
            for (int i = 0; dropped[i]; i++)
                drop |= is_name(&f, dropped[i]);
            if (fmode == LSD_FROM_MUNGE && is_name(&f, "X-Original-From"))
                continue; /* ours replaces it */
            if (fmode == LSD_FROM_MUNGE && is_name(&f, "From")) {
                if (!from_seen) { /* the poster's From: becomes the list's; a second From: is dropped */
                    from_seen = 1;
                    rc |= put_munged_from(o, fromv, from, rw->list, local);
                    rc |= put_field(o, "X-Original-From", &f);
                    if (!have_rt)
                        rc |= put_field(o, "Reply-To", &f);
                }
                continue;
            }
            if (mode == F_WRAP && (is_name(&f, "Content-Type") || is_name(&f, "Content-Transfer-Encoding"))) {
                if (lc_buf_append(moved, f.start, f.len) < 0 ||
                    (f.start[f.len - 1] != '\n' && lc_buf_append(moved, "\r\n", 2) < 0))
                    rc = -1;
                continue;
            }
            if (!drop && *prefix && is_name(&f, "Subject") && !have_subject) {
                have_subject = 1;
                unfold(f.value, f.valuelen, v, sizeof v);
                if (!ci_contains(v, prefix)) {
                    const char *val = f.value, *fend = f.start + f.len;
                    while (val < fend && (*val == ' ' || *val == '\t'))
                        val++;
                    int empty = val == fend || *val == '\r' || *val == '\n';
                    rc |= lc_buf_printf(o, "Subject: %s%s", prefix, empty ? "" : " ");
                    rc |= lc_buf_append(o, val, (size_t)(fend - val));
                    if (fend[-1] != '\n')
                        rc |= lc_buf_append(o, "\r\n", 2);
                    continue;
                }
            }
        }
        if (drop)
            continue;
        rc |= lc_buf_append(o, f.start, f.len);
        if (f.len && f.start[f.len - 1] != '\n')
            rc |= lc_buf_append(o, "\r\n", 2);
    }
    if (*prefix && !have_subject) /* no Subject at all */
        rc |= lc_buf_printf(o, "Subject: %s\r\n", prefix);
    rc |= lc_buf_printf(o, "List-Id: <%s>\r\nList-Post: <mailto:%s>\r\nList-Help: <mailto:%s-help@%s>\r\n"
                           "List-Subscribe: <mailto:%s-subscribe@%s>\r\nPrecedence: list\r\nX-Loop: %s\r\n",
                        listid, rw->list, local, dom, local, dom, rw->list);
    if (mode == F_WRAP) {
        if (!have_mime)
            rc |= lc_buf_puts(o, "MIME-Version: 1.0\r\n");
        rc |= lc_buf_printf(o, "Content-Type: multipart/mixed; boundary=\"%s\"\r\n", nb);
    }
    rc |= lc_buf_append(o, "\r\n", 2);

    /* the body */
    switch (mode) {
    case F_NONE:
        rc |= lc_buf_append(o, b, blen);
        break;
    case F_APPEND:
        rc |= lc_buf_append(o, b, blen);
        if (blen && b[blen - 1] != '\n')
            rc |= lc_buf_append(o, "\r\n", 2);
        rc |= lc_buf_append(o, "\r\n", 2);
        rc |= put_footer(o, footer);
        break;
    case F_MIXED:
        rc |= lc_buf_append(o, b, (size_t)(close - b));
        if (close > b && close[-1] != '\n')
            rc |= lc_buf_append(o, "\r\n", 2);
        rc |= put_part_header(o, boundary);
        rc |= put_footer(o, footer);
        rc |= lc_buf_append(o, close, blen - (size_t)(close - b));
        break;
    case F_WRAP:
        rc |= lc_buf_printf(o, "This is a multi-part message in MIME format.\r\n\r\n--%s\r\n", nb);
        if (lc_buf_len(moved) == 0)
            rc |= lc_buf_puts(o, "Content-Type: text/plain\r\n");
        rc |= lc_buf_append(o, lc_buf_data(moved), lc_buf_len(moved));
        rc |= lc_buf_append(o, "\r\n", 2);
        rc |= lc_buf_append(o, b, blen);
        if (blen && b[blen - 1] != '\n')
            rc |= lc_buf_append(o, "\r\n", 2);
        rc |= put_part_header(o, nb);
        rc |= put_footer(o, footer);
        rc |= lc_buf_printf(o, "--%s--\r\n", nb);
        break;
    }
    lc_buf_free(moved);
    if (rc != 0) {
        lc_buf_free(o);
        return NULL;
    }
    char *out = lc_buf_steal(o, outlen);
    lc_buf_free(o);
    return out;
}
