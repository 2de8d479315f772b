/* bnc_ses: Amazon SES notifications (JSON, delivered by mail through SNS) as bounce reports.
 *
 * Contract: bnc_ses_parse() looks for an SES notification object ({"notificationType": "Bounce" |
 * "Complaint" | "Delivery", ...}) in a text, either bare or as the JSON-escaped "Message" string of an SNS
 * envelope, and adds one entry per bouncedRecipients[] / complainedRecipients[] / delivery.recipients[]
 * element: Bounce entries carry emailAddress, status, action and diagnosticCode (bounceType "Transient" makes
 * them soft), Complaint entries are feedback, Delivery entries are delivered (with smtpResponse).
 * The JSON reader is a small bounded recursive-descent scanner over the text: no allocation besides one
 * unescaped copy of an SNS "Message", nesting limited to BNC_JSON_DEPTH, at most BNC_MAX_RCPTS entries;
 * malformed JSON stops the scan with whatever was read (never reads past the text).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnc.h"

#define BNC_JSON_DEPTH 32
#define BNC_JSON_STR 1024

struct js {
    const char *s, *end;
};

static void ws(struct js *j)
{
    while (j->s < j->end && (*j->s == ' ' || *j->s == '\t' || *j->s == '\r' || *j->s == '\n'))
        j->s++;
}

/* Read a JSON string at j->s into out (escapes decoded, \uXXXX as UTF-8 or '?'); 0 or -1 (out then holds what
 * was read, NUL-terminated). */
static int jstr(struct js *j, char *out, size_t outlen)
{
    size_t o = 0;
    ws(j);
    if (j->s >= j->end || *j->s != '"')
        return -1;
    j->s++;
    while (j->s < j->end && *j->s != '"') {
        char c = *j->s++;
        if (c == '\\' && j->s < j->end) {
            char e = *j->s++;
            switch (e) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': {
                unsigned v = 0;
                int k;
                for (k = 0; k < 4 && j->s < j->end && isxdigit((unsigned char)*j->s); k++, j->s++)
                    v = v * 16 + (unsigned)(isdigit((unsigned char)*j->s) ? *j->s - '0' : (tolower(*j->s) - 'a' + 10));
                c = v < 0x80 ? (char)v : '?';
                break;
            }
            default: c = e; break;
            }
        }
        if (out && o + 1 < outlen)
            out[o++] = c;
    }
    if (out && outlen)
        out[o] = 0; /* also when the string is cut short: out never holds stale bytes */
    if (j->s >= j->end)
        return -1;
    j->s++;
    if (out && outlen)
        out[o] = 0;
    return 0;
}

static int skip_value(struct js *j, int depth);

/* Skip an object or array body after its opening bracket. */
static int skip_container(struct js *j, char close, int depth)
{
    if (depth > BNC_JSON_DEPTH)
        return -1;
    for (;;) {
        ws(j);
        if (j->s >= j->end)
            return -1;
        if (*j->s == close) {
            j->s++;
            return 0;
        }
        if (*j->s == ',') {
            j->s++;
            continue;
        }
        if (close == '}') {
            if (jstr(j, NULL, 0) < 0)
                return -1;
            ws(j);
            if (j->s >= j->end || *j->s != ':')
                return -1;
            j->s++;
        }
        if (skip_value(j, depth + 1) < 0)
            return -1;
    }
}

static int skip_value(struct js *j, int depth)
{
    ws(j);
    if (j->s >= j->end)
        return -1;
    char c = *j->s;
    if (c == '"')
        return jstr(j, NULL, 0);
    if (c == '{' || c == '[') {
        j->s++;
        return skip_container(j, c == '{' ? '}' : ']', depth);
    }
    const char *st = j->s;
    while (j->s < j->end && *j->s != ',' && *j->s != '}' && *j->s != ']')
        j->s++; /* number, true, false, null */
    return j->s > st ? 0 : -1; /* a stray '}' or ']' (the wrong closer): malformed, and no progress */
}

/* In the object starting at o (at '{'), find member key; on success j is at its value. */
static int member(const char *o, const char *end, const char *key, struct js *j)
{
    char name[64];
    j->s = o;
    j->end = end;
    ws(j);
    if (j->s >= j->end || *j->s != '{')
        return -1;
    j->s++;
    for (int n = 0; n < 256; n++) {
        ws(j);
        if (j->s >= j->end || *j->s == '}')
            return -1;
        if (*j->s == ',') {
            j->s++;
            continue;
        }
        if (jstr(j, name, sizeof name) < 0)
            return -1;
        ws(j);
        if (j->s >= j->end || *j->s != ':')
            return -1;
        j->s++;
        ws(j);
        if (strcmp(name, key) == 0)
            return 0;
        if (skip_value(j, 1) < 0)
            return -1;
    }
    return -1;
}

static void member_str(const char *o, const char *end, const char *key, char *out, size_t outlen)
{
    struct js j;
    out[0] = 0;
    if (member(o, end, key, &j) == 0 && j.s < j.end && *j.s == '"')
        jstr(&j, out, outlen);
}

/* Call fn for each element of the array member key of object o. */
typedef void (*elem_fn)(struct bnc_report *r, const char *v, const char *end, const char *extra);

static void each(struct bnc_report *r, const char *o, const char *end, const char *key, elem_fn fn,
                 const char *extra)
{
    struct js j;
    if (member(o, end, key, &j) < 0 || j.s >= j.end || *j.s != '[')
        return;
    j.s++;
    for (int n = 0; n < BNC_MAX_RCPTS; n++) {
        ws(&j);
        if (j.s >= j.end || *j.s == ']')
            return;
        if (*j.s == ',') {
            j.s++;
            continue;
        }
        const char *v = j.s;
        fn(r, v, j.end, extra);
        if (skip_value(&j, 1) < 0)
            return;
    }
}

static void bounced(struct bnc_report *r, const char *v, const char *end, const char *bounce_type)
{
    char addr[BNC_ADDR_LEN * 2], status[32], action[32], diag[BNC_JSON_STR];
    member_str(v, end, "emailAddress", addr, sizeof addr);
    member_str(v, end, "status", status, sizeof status);
    member_str(v, end, "action", action, sizeof action);
    member_str(v, end, "diagnosticCode", diag, sizeof diag);
    struct bnc_rcpt *e = bnc_report_add(r);
    if (!e)
        return;
    if (bnc_addr_extract(addr, strlen(addr), e->recipient, 0) < 0)
        e->recipient[0] = 0;
    size_t k = 0;
    while (status[k] && (isdigit((unsigned char)status[k]) || status[k] == '.'))
        k++;
    if (bnc_status_ok(status, k) && k < sizeof e->status) {
        memcpy(e->status, status, k);
        e->status[k] = 0;
    }
    int transient = bounce_type && strcmp(bounce_type, "Transient") == 0;
    if (!strcmp(action, "delayed"))
        e->action = BNC_DELAYED;
    else
        e->action = BNC_FAILED;
    if (transient && e->status[0] == '5')
        e->status[0] = '4';
    const char *d = diag;
    const char *semi = strchr(diag, ';');
    if (semi && semi - diag < 24)
        d = semi + 1;
    while (*d == ' ')
        d++;
    bnc_norm(d, strlen(d), e->diag, sizeof e->diag);
    bnc_classify(e, d, strlen(d));
}

static void complained(struct bnc_report *r, const char *v, const char *end, const char *type)
{
    char addr[BNC_ADDR_LEN * 2];
    member_str(v, end, "emailAddress", addr, sizeof addr);
    struct bnc_rcpt *e = bnc_report_add(r);
    if (!e)
        return;
    if (bnc_addr_extract(addr, strlen(addr), e->recipient, 0) < 0)
        e->recipient[0] = 0;
    e->action = BNC_FEEDBACK;
    snprintf(e->diag, sizeof e->diag, "feedback-type=%.64s", type && *type ? type : "abuse");
    bnc_classify(e, NULL, 0);
}

static void delivered(struct bnc_report *r, const char *v, const char *end, const char *resp)
{
    char addr[BNC_ADDR_LEN * 2];
    struct js j = {v, end};
    if (jstr(&j, addr, sizeof addr) < 0)
        return;
    struct bnc_rcpt *e = bnc_report_add(r);
    if (!e)
        return;
    if (bnc_addr_extract(addr, strlen(addr), e->recipient, 0) < 0)
        e->recipient[0] = 0;
    e->action = BNC_DELIVERED;
    if (resp) {
        bnc_norm(resp, strlen(resp), e->diag, sizeof e->diag);
        e->replycode = atoi(resp);
        bnc_find_status(e->diag, e->status, sizeof e->status);
    }
    bnc_classify(e, NULL, 0);
}

/* Parse one notification object o..end. */
static int notification(struct bnc_report *r, const char *o, const char *end)
{
    char type[32], sub[32];
    struct js j;
    member_str(o, end, "notificationType", type, sizeof type);
    size_t before = bnc_report_count(r);
    if (!strcmp(type, "Bounce") && member(o, end, "bounce", &j) == 0) {
        const char *b = j.s;
        member_str(b, end, "bounceType", sub, sizeof sub);
        each(r, b, end, "bouncedRecipients", bounced, sub);
    } else if (!strcmp(type, "Complaint") && member(o, end, "complaint", &j) == 0) {
        const char *c = j.s;
        member_str(c, end, "complaintFeedbackType", sub, sizeof sub);
        each(r, c, end, "complainedRecipients", complained, sub);
    } else if (!strcmp(type, "Delivery") && member(o, end, "delivery", &j) == 0) {
        const char *d = j.s;
        char resp[BNC_JSON_STR];
        member_str(d, end, "smtpResponse", resp, sizeof resp);
        each(r, d, end, "recipients", delivered, resp);
    }
    return bnc_report_count(r) > before ? 0 : -1;
}

int bnc_ses_parse(struct bnc_report *r, const char *text, size_t len)
{
    static const char key[] = "\"notificationType\"";
    static const char esc[] = "\\\"notificationType\\\"";
    const char *end = text + len;
    /* an SNS envelope: the notification is the JSON string value of "Message" */
    const char *p = memmem(text, len, esc, sizeof esc - 1);
    if (p) {
        /* walk back to the opening quote of the string value */
        const char *q = p;
        while (q > text && !(q[-1] == '"' && (q - 1 == text || q[-2] != '\\')))
            q--;
        if (q == text)
            return -1;
        struct js j = {q - 1, end};
        size_t cap = (size_t)(end - q) + 1;
        char *buf = malloc(cap);
        if (!buf)
            abort();
        int rc = -1;
        if (jstr(&j, buf, cap) == 0)
            rc = bnc_ses_parse(r, buf, strlen(buf));
        free(buf);
        return rc;
    }
    p = memmem(text, len, key, sizeof key - 1);
    if (!p)
        return -1;
    /* the object that holds it: the nearest '{' before */
    const char *o = p;
    while (o > text && *o != '{')
        o--;
    if (*o != '{')
        return -1;
    return notification(r, o, end);
}
