/* lsd_cmd: parse one SMTP command line (RFC 5321 4.1) into a struct. Pure: no I/O, no allocation, no global
 * state, so a libFuzzer target can call lsd_cmd_parse directly.
 *
 * Contract: the caller removes the line end (CRLF, or a bare LF) and enforces the 512-octet line limit; the
 * parser reads exactly len octets (NUL bytes included: they are refused). Pointers in the result point into the
 * line. The verb is case-insensitive; "FROM:" and "TO:" too. Tolerated, as Postfix does: trailing white space,
 * several spaces between words, spaces after "FROM:"/"TO:". Not tolerated: a path without angle brackets.
 * Path syntax beyond the brackets (the mailbox itself) is checked by lc_addr_norm in the session, not here.
 * MAIL parameters: SIZE=<digits> (RFC 1870), BODY=7BIT|8BITMIME (RFC 6152) and SMTPUTF8 (RFC 6531); any other
 * is LSD_CMD_PARAM (555 5.5.4). RCPT takes no parameters. UTF-8 in a path is passed on (the session decides,
 * from SMTPUTF8, whether it is allowed). STARTTLS takes no argument (RFC 3207); BDAT is "BDAT <size> [LAST]"
 * with a size of 1 to 18 digits (RFC 3030).
 */
#include "lsd.h"

#include <string.h>
#include <strings.h>

static int is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

static int word_is(const char *p, size_t n, const char *w)
{
    return strlen(w) == n && strncasecmp(p, w, n) == 0;
}

static enum lsd_cmd_err fail(struct lsd_cmd *cmd, enum lsd_cmd_err e, const char *why)
{
    cmd->why = why;
    return e;
}

static const char *skip_sp(const char *p, const char *end)
{
    while (p < end && *p == ' ')
        p++;
    return p;
}

/* parse_path reads "<...>" at *pp; sets path/pathlen (source route dropped). Returns 0 or -1. */
static int parse_path(const char **pp, const char *end, struct lsd_cmd *cmd)
{
    const char *p = *pp;
    if (p >= end || *p != '<')
        return -1;
    p++;
    const char *start = p;
    while (p < end && *p != '>') {
        unsigned char c = (unsigned char)*p;
        if (is_ctl(c) || c == ' ' || c == '<')
            return -1;
        p++;
    }
    if (p >= end)
        return -1;
    const char *stop = p;
    /* A source route "@a,@b:user@d" is to be accepted and ignored (RFC 5321 4.1.2, C). */
    if (start < stop && *start == '@') {
        const char *colon = memchr(start, ':', (size_t)(stop - start));
        if (!colon)
            return -1;
        start = colon + 1;
    }
    cmd->path = start;
    cmd->pathlen = (size_t)(stop - start);
    *pp = p + 1;
    return 0;
}

static enum lsd_cmd_err parse_mail_params(const char *p, const char *end, struct lsd_cmd *cmd)
{
    int have_size = 0, have_body = 0;
    while (p < end) {
        if (*p != ' ')
            return fail(cmd, LSD_CMD_SYNTAX, "Syntax: MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME]");
        p = skip_sp(p, end);
        if (p >= end)
            break;
        const char *k = p;
        while (p < end && *p != ' ' && *p != '=')
            p++;
        size_t kn = (size_t)(p - k);
        const char *v = NULL;
        size_t vn = 0;
        if (p < end && *p == '=') {
            v = ++p;
            while (p < end && *p != ' ')
                p++;
            vn = (size_t)(p - v);
        }
        for (const char *q = k; q < p; q++)
            if (is_ctl((unsigned char)*q) || (unsigned char)*q >= 0x80)
                return fail(cmd, LSD_CMD_SYNTAX, "bad character in parameter");
        if (word_is(k, kn, "SIZE")) {
            if (have_size++ || !v || vn == 0 || vn > 18)
                return fail(cmd, LSD_CMD_SYNTAX, "bad SIZE parameter");
            long long n = 0;
            for (size_t i = 0; i < vn; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return fail(cmd, LSD_CMD_SYNTAX, "bad SIZE parameter");
                n = n * 10 + (v[i] - '0');
            }
            cmd->size = n;
        } else if (word_is(k, kn, "SMTPUTF8")) {
            if (cmd->smtputf8++ || v)
                return fail(cmd, LSD_CMD_SYNTAX, "bad SMTPUTF8 parameter");
        } else if (word_is(k, kn, "BODY")) {
            if (have_body++ || !v)
                return fail(cmd, LSD_CMD_SYNTAX, "bad BODY parameter");
            if (word_is(v, vn, "7BIT"))
                cmd->body = LSD_BODY_7BIT;
            else if (word_is(v, vn, "8BITMIME"))
                cmd->body = LSD_BODY_8BITMIME;
            else
                return fail(cmd, LSD_CMD_SYNTAX, "bad BODY parameter");
        } else {
            return fail(cmd, LSD_CMD_PARAM, "unsupported parameter");
        }
    }
    return LSD_CMD_OK;
}

/* parse_envelope handles "MAIL FROM:<path> params" and "RCPT TO:<path>" after the verb. */
static enum lsd_cmd_err parse_envelope(const char *p, const char *end, struct lsd_cmd *cmd, int mail)
{
    const char *kw = mail ? "FROM:" : "TO:";
    const char *usage = mail ? "Syntax: MAIL FROM:<address>" : "Syntax: RCPT TO:<address>";
    size_t kwn = strlen(kw);
    if (p >= end || *p != ' ')
        return fail(cmd, LSD_CMD_SYNTAX, usage);
    p = skip_sp(p, end);
    if ((size_t)(end - p) < kwn || strncasecmp(p, kw, kwn) != 0)
        return fail(cmd, LSD_CMD_SYNTAX, usage);
    p = skip_sp(p + kwn, end);
    if (parse_path(&p, end, cmd) < 0)
        return fail(cmd, LSD_CMD_SYNTAX, usage);
    if (!mail) {
        if (cmd->pathlen == 0)
            return fail(cmd, LSD_CMD_SYNTAX, "empty recipient");
        if (p < end && *p != ' ')
            return fail(cmd, LSD_CMD_SYNTAX, usage);
        p = skip_sp(p, end);
        if (p < end)
            return fail(cmd, LSD_CMD_PARAM, "RCPT parameters are not supported");
        return LSD_CMD_OK;
    }
    return parse_mail_params(p, end, cmd);
}

static const struct {
    const char *name;
    enum lsd_verb verb;
} verbs[] = {
    {"EHLO", LSD_V_EHLO}, {"HELO", LSD_V_HELO}, {"MAIL", LSD_V_MAIL}, {"RCPT", LSD_V_RCPT},
    {"DATA", LSD_V_DATA}, {"RSET", LSD_V_RSET}, {"NOOP", LSD_V_NOOP}, {"QUIT", LSD_V_QUIT},
    {"VRFY", LSD_V_VRFY}, {"HELP", LSD_V_HELP}, {"STARTTLS", LSD_V_STARTTLS}, {"BDAT", LSD_V_BDAT},
};

/* Verbs of RFC 5321 and common extensions that listd knows of and does not offer: 502, not 500. */
static const char *const notimpl[] = {"EXPN", "TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML",
                                      "AUTH", "XCLIENT", "XFORWARD"};

enum lsd_cmd_err lsd_cmd_parse(const char *line, size_t len, struct lsd_cmd *cmd)
{
    memset(cmd, 0, sizeof *cmd);
    cmd->size = -1;
    const char *end = line + len;
    while (end > line && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    const char *p = line;
    while (p < end && *p != ' ')
        p++;
    size_t vn = (size_t)(p - line);
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        if (word_is(line, vn, verbs[i].name))
            cmd->verb = verbs[i].verb;
    if (cmd->verb == LSD_V_NONE) {
        for (size_t i = 0; i < sizeof notimpl / sizeof notimpl[0]; i++)
            if (word_is(line, vn, notimpl[i]))
                return fail(cmd, LSD_CMD_NOTIMPL, "command not implemented");
        return fail(cmd, LSD_CMD_UNKNOWN, "command unrecognized");
    }
    for (const char *q = p; q < end; q++)
        if (is_ctl((unsigned char)*q) && *q != '\t')
            return fail(cmd, LSD_CMD_SYNTAX, "control character in command");
    const char *arg = skip_sp(p, end);
    size_t argn = (size_t)(end - arg);

    switch (cmd->verb) {
    case LSD_V_EHLO:
    case LSD_V_HELO:
        if (argn == 0 || argn > 255)
            return fail(cmd, LSD_CMD_SYNTAX, cmd->verb == LSD_V_EHLO ? "Syntax: EHLO hostname"
                                                                      : "Syntax: HELO hostname");
        for (size_t i = 0; i < argn; i++) {
            unsigned char c = (unsigned char)arg[i];
            if (c <= 0x20 || c >= 0x7f)
                return fail(cmd, LSD_CMD_SYNTAX, "bad character in host name");
        }
        cmd->arg = arg;
        cmd->arglen = argn;
        return LSD_CMD_OK;
    case LSD_V_MAIL:
        return parse_envelope(p, end, cmd, 1);
    case LSD_V_RCPT:
        return parse_envelope(p, end, cmd, 0);
    case LSD_V_BDAT: {
        const char *q = arg;
        while (q < end && *q >= '0' && *q <= '9')
            q++;
        size_t dn = (size_t)(q - arg);
        if (dn == 0 || dn > 18 || (q < end && *q != ' '))
            return fail(cmd, LSD_CMD_SYNTAX, "Syntax: BDAT size [LAST]");
        cmd->chunk = 0;
        for (const char *d = arg; d < q; d++)
            cmd->chunk = cmd->chunk * 10 + (*d - '0');
        q = skip_sp(q, end);
        if (q < end) {
            if (!word_is(q, (size_t)(end - q), "LAST"))
                return fail(cmd, LSD_CMD_SYNTAX, "Syntax: BDAT size [LAST]");
            cmd->last = 1;
        }
        return LSD_CMD_OK;
    }
    case LSD_V_DATA:
    case LSD_V_RSET:
    case LSD_V_QUIT:
    case LSD_V_STARTTLS:
        if (argn)
            return fail(cmd, LSD_CMD_SYNTAX, "this command takes no argument");
        return LSD_CMD_OK;
    case LSD_V_VRFY:
        if (argn == 0)
            return fail(cmd, LSD_CMD_SYNTAX, "Syntax: VRFY address");
        /* fall through */
    case LSD_V_NOOP:
    case LSD_V_HELP:
        cmd->arg = arg;
        cmd->arglen = argn;
        return LSD_CMD_OK;
    case LSD_V_NONE:
        break;
    }
    return fail(cmd, LSD_CMD_UNKNOWN, "command unrecognized");
}
