/* bnc_text: free-text bounce recognition (messages without a message/delivery-status part).
 *
 * Contract: works on the decoded text of a bounce's first text part (UTF-8 or any ASCII-compatible charset).
 * The text is cut where the returned message begins (qmail "--- Below this line is a copy of the message.",
 * Exim "------ This is a copy of the message", Postfix/Sendmail/Exchange markers, or the first header-like
 * "Received:"/"Return-Path:" line), then recipients are found: first lines that start with an address
 * (qmail "<a@b>:", Exim "  a@b", Postfix "<a@b>: host ... said: ...", Sendmail "<a@b>\n (reason: ...)"),
 * each described by the rest of its line and the following lines up to a blank line or the next recipient;
 * else any address in the text that is not excluded, described by its paragraph and the next.
 * Limits: at most BNC_LINES_MAX lines are examined, descriptions are at most BNC_HIT_LINES lines; no
 * allocation.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "bnc.h"

#define BNC_LINES_MAX 4000
#define BNC_HIT_LINES 12

static int addr_char(unsigned char c)
{
    if (isalnum(c) || c >= 0x80)
        return 1;
    return strchr("!#$%&'*+-/=?^_`{|}~.", c) != NULL && c != 0;
}

static int dom_char(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '.' || c >= 0x80;
}

long bnc_addr_extract(const char *s, size_t n, char *out, int need_dot)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '@')
            continue;
        size_t a = i, b = i + 1;
        int quoted = 0;
        if (i > 1 && s[i - 1] == '"') {
            /* a quoted local part ("a..b"@example.org) is kept with its quotes */
            size_t q = i - 1;
            while (q > 0 && s[q - 1] != '"' && s[q - 1] != '<' && s[q - 1] != '\n' && i - q < 64)
                q--;
            if (q > 0 && s[q - 1] == '"' && q + 1 < i) {
                a = q - 1;
                quoted = 1;
            }
        }
        while (!quoted && a > 0 && addr_char((unsigned char)s[a - 1]) && s[a - 1] != '/')
            a--;
        /* "mailto:" and quoting may precede the local part */
        while (a < i && (s[a] == '.' || s[a] == '\'' || s[a] == '`'))
            a++;
        if (b < n && s[b] == '[') { /* address literal */
            while (b < n && s[b] != ']' && b - i < 64)
                b++;
            if (b < n && s[b] == ']')
                b++;
        } else {
            while (b < n && dom_char((unsigned char)s[b]))
                b++;
        }
        while (b > i + 1 && (s[b - 1] == '.' || s[b - 1] == '-'))
            b--;
        size_t local = i - a, dom = b - i - 1;
        if (local == 0 || dom == 0 || local > 64 || dom > 255)
            continue;
        if (need_dot && !memchr(s + i + 1, '.', dom))
            continue;
        if (s[i + 1] == '.')
            continue;
        /* "mailto:x@y" embedded after a display address: take the part after the colon */
        size_t len = b - a;
        if (len + 1 > BNC_ADDR_LEN)
            continue;
        for (size_t k = 0; k < len; k++) {
            unsigned char c = (unsigned char)s[a + k];
            out[k] = (char)(c < 0x80 ? tolower(c) : c);
        }
        out[len] = 0;
        return (long)b;
    }
    return -1;
}

struct line {
    const char *s; /* content after quote marks and leading white space */
    size_t n;
    size_t off;    /* offset of the raw line start in the text */
    int indent;
    int blank;
};

static int split_lines(const char *text, size_t len, struct line *lines, int max)
{
    int nl = 0;
    size_t i = 0;
    while (i < len && nl < max) {
        size_t st = i;
        while (i < len && text[i] != '\n')
            i++;
        size_t en = i;
        if (i < len)
            i++;
        if (en > st && text[en - 1] == '\r')
            en--;
        const char *p = text + st;
        size_t n = en - st;
        /* strip a forwarded-message quote prefix ("> ", ">> ") */
        while (n && (*p == '>' || *p == '|') ) {
            p++;
            n--;
            if (n && *p == ' ') {
                p++;
                n--;
            }
        }
        int indent = 0;
        while (n && (*p == ' ' || *p == '\t')) {
            p++;
            n--;
            indent = 1;
        }
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        lines[nl].s = p;
        lines[nl].n = n;
        lines[nl].off = st;
        lines[nl].indent = indent;
        lines[nl].blank = (n == 0);
        nl++;
    }
    return nl;
}

static int starts_ci(const char *s, size_t n, const char *prefix)
{
    size_t k = strlen(prefix);
    return n >= k && strncasecmp(s, prefix, k) == 0;
}

/* Lower-case (ASCII) copy of s[0..n) into out (outlen bytes, truncating), NUL-terminated; NULs become
 * spaces so strstr sees the whole text. The matchers below lower-case a text once and strstr it for each
 * phrase (a strncasecmp at every position for every phrase was the parser's hottest loop). */
static const char *lower_copy(const char *s, size_t n, char *out, size_t outlen)
{
    if (n >= outlen)
        n = outlen - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = c == 0 ? ' ' : (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
    }
    out[n] = 0;
    return out;
}

/* Does the lower-cased text contain one of the NULL-terminated lower-case phrases? */
static int has_any(const char *low, const char *const *phrases)
{
    for (const char *const *p = phrases; *p; p++)
        if (strstr(low, *p))
            return 1;
    return 0;
}

/* Markers of the returned message (the rest is the original, not the report). */
static const char *const cut_markers[] = {
    "--- below this line is a copy of the message",
    "------ this is a copy of the message",
    "----- original message -----",
    "----- original message follows",
    "-----original message-----",
    "------ original message ------",
    "--- the header of the original message is following",
    "------- returned message --------",
    "----- unsent message below -----",
    "----- unsent message follows -----",
    "----- message header follows -----",
    "----- the following is a copy of",
    "--- original message follows",
    "original message headers:",
    "message headers follow",
    "the original message headers are included as attachment",
    "------ this is a copy of the headers of the message",
    "-- original message --",
    NULL,
};

size_t bnc_text_end(const char *text, size_t len)
{
    size_t i = 0, lines = 0;
    int seen_text = 0;
    while (i < len && lines < BNC_LINES_MAX) {
        size_t st = i;
        while (i < len && text[i] != '\n')
            i++;
        size_t n = i - st;
        if (i < len)
            i++;
        lines++;
        const char *p = text + st;
        size_t m = n;
        while (m && (*p == ' ' || *p == '\t' || *p == '>')) {
            p++;
            m--;
        }
        /* every marker has a run of dashes or one of these words: most lines are skipped at once */
        char low[201];
        lower_copy(p, m < 200 ? m : 200, low, sizeof low);
        if ((strstr(low, "--") || strstr(low, "original") || strstr(low, "headers")) && has_any(low, cut_markers))
            return st;
        /* a header block of the returned message, after some report text */
        if (seen_text && (starts_ci(text + st, n, "Received: ") || starts_ci(text + st, n, "Return-Path:") ||
                          starts_ci(text + st, n, "DKIM-Signature:") || starts_ci(text + st, n, "X-Received:")))
            return st;
        if (m)
            seen_text = 1;
    }
    return i < len ? i : len;
}

/* Addresses that are never the failed recipient: the reporting system's own. In a line-start position
 * (strict) only mailer-daemon is refused; elsewhere also postmaster, no-reply and the exclude list. */
static int excluded(const char *addr, const char *const *exclude, int strict)
{
    if (strncmp(addr, "mailer-daemon@", 14) == 0 || strncmp(addr, "mailer_daemon@", 14) == 0)
        return 1;
    if (strict)
        return 0;
    if (strncmp(addr, "postmaster@", 11) == 0 || strncmp(addr, "noreply@", 8) == 0 ||
        strncmp(addr, "no-reply@", 9) == 0)
        return 1;
    for (const char *const *e = exclude; e && *e; e++)
        if (**e && strcmp(addr, *e) == 0)
            return 1;
    return 0;
}

static int seen(const struct bnc_hit *hits, int nh, const char *addr)
{
    for (int i = 0; i < nh; i++)
        if (strcmp(hits[i].addr, addr) == 0)
            return 1;
    return 0;
}

/* Does the line start with an address ("<a@b>", "a@b:", "a@b on date", "RCPT TO:<a@b>")? Returns the
 * offset past the address (and its closing bracket/colon) or -1. */
static long line_addr(const struct line *l, char *out)
{
    const char *p = l->s;
    size_t n = l->n;
    size_t k = 0, skip = 0;
    /* Sendmail's transcript: "554 <a@b>... 550 Host unknown" */
    if (n > 5 && (p[0] == '4' || p[0] == '5') && isdigit((unsigned char)p[1]) && isdigit((unsigned char)p[2]) &&
        p[3] == ' ' && p[4] == '<') {
        p += 4;
        n -= 4;
        skip = 4;
    }
    if (n && *p == '<')
        k = 1;
    else if (n > 7 && strncasecmp(p, "mailto:", 7) == 0)
        k = 7;
    /* the address must be the first token */
    size_t j = k;
    while (j < n && p[j] != '@' && addr_char((unsigned char)p[j]))
        j++;
    if (j >= n || p[j] != '@' || j == k)
        return -1;
    long e = bnc_addr_extract(p + k, n - k, out, 1);
    if (e < 0)
        return -1;
    size_t end = k + (size_t)e;
    if (end < n && p[end] == '>')
        end++;
    /* "a@b <c@d>: reason" (Exim's "incorrectly constructed" notice quotes the bad To: text): an RFC 5322
     * name-addr whose display name looks like an address; the mailbox is the one in angle brackets */
    if (k == 0) {
        size_t q = end;
        while (q < n && p[q] == ' ')
            q++;
        const char *gt = q < n && p[q] == '<' ? memchr(p + q, '>', n - q) : NULL;
        char in[BNC_ADDR_LEN];
        if (gt && q > end && bnc_addr_extract(p + q + 1, (size_t)(gt - (p + q + 1)), in, 1) >= 0) {
            bnc_copy(out, BNC_ADDR_LEN, in);
            end = (size_t)(gt - p) + 1;
        }
    }
    while (end < n && (p[end] == ':' || p[end] == '.' || p[end] == ' ' || p[end] == ','))
        end++;
    return (long)(end + skip);
}

int bnc_text_scan(const char *text, size_t len, const char *const *exclude, struct bnc_hit *hits, int max)
{
    static __thread struct line lines[BNC_LINES_MAX];
    int nl = split_lines(text, len, lines, BNC_LINES_MAX);
    int nh = 0;
    char addr[BNC_ADDR_LEN];

    /* Pass 1: lines that start with an address. */
    for (int i = 0; i < nl && nh < max; i++) {
        if (lines[i].blank)
            continue;
        long e = line_addr(&lines[i], addr);
        if (e < 0 || excluded(addr, exclude, 1))
            continue;
        /* a lone address followed by more addresses on the same line is a list, not a report line */
        if (seen(hits, nh, addr)) {
            /* a later mention (e.g. Sendmail's transcript) extends nothing */
            continue;
        }
        struct bnc_hit *h = &hits[nh++];
        bnc_copy(h->addr, sizeof h->addr, addr);
        h->off = lines[i].off + (size_t)(lines[i].s - (text + lines[i].off)) + (size_t)e;
        size_t end = lines[i].off + (size_t)(lines[i].s - (text + lines[i].off)) + lines[i].n;
        /* a Sendmail transcript line ("554 <a@b>... reason") is complete in itself */
        int own_line = isdigit((unsigned char)lines[i].s[0]);
        int j;
        for (j = i + 1; !own_line && j < nl && j <= i + BNC_HIT_LINES; j++) {
            if (lines[j].blank) {
                /* a lone address line: its reason may follow after one blank line */
                if (end <= h->off && j + 1 < nl && !lines[j + 1].blank)
                    continue;
                break;
            }
            char tmp[BNC_ADDR_LEN];
            if (line_addr(&lines[j], tmp) >= 0 && strcmp(tmp, addr) != 0)
                break;
            end = lines[j].off + (size_t)(lines[j].s - (text + lines[j].off)) + lines[j].n;
        }
        h->len = end > h->off ? end - h->off : 0;
    }
    if (nh)
        return nh;

    /* Pass 2: addresses anywhere, described by their paragraph and the next one. */
    for (int i = 0; i < nl && nh < max; i++) {
        const char *p = lines[i].s;
        size_t n = lines[i].n;
        while (n && nh < max) {
            long e = bnc_addr_extract(p, n, addr, 1);
            if (e < 0)
                break;
            /* skip addresses inside URLs */
            const char *at = memchr(p, '@', (size_t)e);
            int url = 0;
            for (const char *q = p; at && q < at; q++)
                if (*q == '/' && q + 1 < at && q[1] == '/')
                    url = 1;
            if (!url && !excluded(addr, exclude, 0) && !seen(hits, nh, addr)) {
                struct bnc_hit *h = &hits[nh++];
                bnc_copy(h->addr, sizeof h->addr, addr);
                int a = i, b = i, paras = 0;
                while (a > 0 && !lines[a - 1].blank && i - a < BNC_HIT_LINES)
                    a--;
                while (b + 1 < nl && b - i < BNC_HIT_LINES) {
                    if (lines[b + 1].blank) {
                        if (++paras > 1)
                            break;
                        while (b + 1 < nl && lines[b + 1].blank)
                            b++;
                        continue;
                    }
                    b++;
                }
                h->off = lines[a].off;
                size_t end = lines[b].off + (size_t)(lines[b].s - (text + lines[b].off)) + lines[b].n;
                h->len = end > h->off ? end - h->off : 0;
            }
            p += e;
            n -= (size_t)e;
        }
    }
    return nh;
}

/* Phrases that open a non-delivery report (matched case-insensitively within the first lines). */
static const char *const bounce_intros[] = {
    "qmail-send program", "this message was created automatically by mail delivery software",
    "this is the mail system at host", "this is the postfix program", "i'm sorry to have to inform you",
    "the original message was received at", "could not be delivered", "couldn't be delivered",
    "delivery to the following recipient", "delivery has failed", "permanent error", "permanent failure",
    "following address(es) failed", "had permanent fatal errors", "unable to deliver", "undeliverable",
    "undelivered mail", "did not reach the following recipient", "was not delivered", "delivery failed",
    "failed to deliver", "returned to sender", "returning message to sender", "not be delivered",
    "there was an error delivering", "following addresses had delivery errors", "mail delivery failed",
    "delivery status notification", "non-delivery", "nondelivery", "your message cannot be delivered",
    "message could not be sent", "failure reasons", "rejected your message", "your message was rejected",
    "sorry, we were unable to deliver", "transcript of session follows", "unable to be delivered",
    "delivery to the following recipients failed", "message you sent", "temporary failure", "retry timeout",
    NULL,
};

static const char *const bounce_subjects[] = {
    "undeliver", "returned mail", "delivery status notification", "failure notice", "delivery failure",
    "mail delivery failed", "delivery has failed", "could not be delivered", "non remis", "unzustellbar",
    "nondeliver", "non-deliver", "mail delivery system", "mail system error", "failed mail", "bounce",
    "delivery notification", "returned to sender", "delivery failed", "undelivered", "not delivered",
    "delivery problem", "delivery error", "mail error", "warning: could not send", "rejected",
    "message not delivered", "mail could not be delivered", "failure delivery",
    "permanent failure", "delivery report",
    NULL,
};

int bnc_text_is_bounce(const char *from, const char *subject, const char *text, size_t len)
{
    static const char *const senders[] = {"mailer-daemon", "mailer_daemon", "postmaster", "post_master",
                                          "mail delivery", "mail administrator", "mail deliver",
                                          "delivery subsystem", "mail system", NULL};
    char low[4097];
    if (from && has_any(lower_copy(from, strlen(from), low, sizeof low), senders))
        return 1;
    if (subject && has_any(lower_copy(subject, strlen(subject), low, sizeof low), bounce_subjects))
        return 1;
    if (text && has_any(lower_copy(text, len, low, sizeof low), bounce_intros))
        return 1;
    return 0;
}

int bnc_text_is_autoreply(const char *auto_submitted, const char *subject, int has_autoreply_header)
{
    if (has_autoreply_header)
        return 1;
    if (auto_submitted && strncasecmp(auto_submitted, "auto-replied", 12) == 0)
        return 1;
    if (subject) {
        static const char *const subj[] = {
            "out of office", "out of the office", "auto:", "automatic reply", "auto reply", "autoreply",
            "auto-reply", "vacation", "abwesenheit", "absence", "away from", "autosvar", "respuesta automatica",
            "risposta automatica", "automatische antwort", "r\xc3\xa9ponse automatique", NULL};
        char low[1025];
        if (has_any(lower_copy(subject, strlen(subject), low, sizeof low), subj))
            return 1;
    }
    return 0;
}
