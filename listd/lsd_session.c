/* lsd_session: one SMTP server session (RFC 5321, with PIPELINING, 8BITMIME, SIZE, ENHANCEDSTATUSCODES,
 * STARTTLS (RFC 3207), CHUNKING/BDAT (RFC 3030) and SMTPUTF8 (RFC 6531)).
 *
 * A session owns its socket (and its TLS stream once STARTTLS is done), its input and output buffers, the
 * message buffer of the transaction in progress and at most one Redis job, and is freed in one place
 * (session_free), only from the end of an entry point (socket event, timer, job completion), never from deep
 * inside command handling: code below marks it S_DEAD. All socket I/O goes through sock_read/sock_write, which
 * use read/write or GnuTLS records: the buffering and the state machine are the same with and without TLS.
 *
 * States (a command's answer that waits on Redis stops the reading of further commands, so replies always go
 * out in command order and pipelined input simply stays buffered):
 *   S_CMD         reading commands                          timeout smtp.idle_timeout -> 421 4.4.2, close
 *   S_RCPT_WAIT   a recipient lookup is out                 timeout 30 s        -> 451 4.3.0, back to S_CMD
 *   S_DATA        reading message text                      timeout idle        -> 421 4.4.2, close
 *   S_BDAT        reading the octets of one BDAT chunk      timeout idle        -> 421 4.4.2, close
 *   S_STORE_WAIT  the message is being written to Redis     timeout 30 s        -> 451 4.3.0, back to S_CMD
 *   S_TLS_START   "220 Ready to start TLS" going out; nothing is read   timeout idle -> close
 *   S_TLS_HANDSHAKE  the TLS handshake (non-blocking)       timeout 30 s        -> close (no reply possible)
 *   S_CLOSING     last replies going out; then shutdown(SHUT_WR) and drain input until EOF (so the peer
 *                 reads our last reply rather than a reset)  timeout 5 s        -> close
 *   S_DEAD        to be freed by the entry point that sees it
 *
 * STARTTLS: input buffered after the STARTTLS line (commands pipelined before the handshake, the CVE-2011-0411
 * class) is discarded and logged, never executed inside TLS; after the handshake the session starts again
 * (EHLO needed, STARTTLS no longer offered). Refused inside a transaction (503) and once TLS is on (554).
 * BDAT: every chunk is read (or swallowed) whatever the reply, so the octet count keeps the framing; a bad
 * chunk size cannot be framed and closes the session after 501. Errors in a BDAT transaction (no MAIL/RCPT:
 * 503; too big: 552; Redis down: 451) are answered after the chunk is consumed; 552/451 stay for the rest of
 * the transaction, up to BDAT LAST. DATA after BDAT (and RCPT after BDAT) is refused with 503. The text of a
 * BDAT message goes through the same line checks as DATA text (line length, NUL, bare CR, bare LF: refused at
 * LAST, the framing is still safe) and the same durable store.
 * SMTPUTF8: a non-ASCII address in MAIL or RCPT needs the SMTPUTF8 parameter on MAIL (else 553 5.6.7), and must
 * be valid UTF-8 (else 501).
 *
 * Limits: command lines 512 octets with CRLF (500 5.5.2); text lines 1000 octets (the rest of the message is
 * swallowed, then 500 5.5.2, nothing stored); message text over smtp.max_message_size (swallowed, 552 5.3.4);
 * a post over its list's own max_message_size (learnt at RCPT): refused at RCPT when MAIL's SIZE= is larger
 * (552 5.3.4), else swallowed and refused at the end of DATA/BDAT (552 5.3.4 ... the list's limit);
 * smtp.max_recipients (452 4.5.3); 10 bounce recipients a transaction (452 4.5.3: each gets its own copy of the
 * message in the bounce stream); smtp.max_errors (421 4.7.0, close); input and output buffers 64 KiB (reading
 * and command processing pause when full: back-pressure).
 * Line ends: commands may end in CRLF or a bare LF (tolerated, as Postfix does). In message text a bare LF is
 * refused the Postfix way (smtpd_forbid_bare_newline = yes): "550 5.5.2 Error: bare <LF> received" and the
 * connection is closed at once, because after a bare LF the end of the text cannot be told safely (SMTP
 * smuggling). A bare CR or a NUL in the text: the text is swallowed and refused with 550 5.6.0.
 * Mail loops: more than 50 Received: headers: 554 5.4.6.
 */
#include "lsd.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lc_buf.h"
#include "lc_log.h"
#include "lc_loop.h"

#define IN_MAX 65536
#define OUT_MAX 65536
#define OUT_HIGH 16384        /* stop processing commands while this much output is unsent */
#define BOUNCE_RCPT_MAX 10
#define CLOSING_MS 5000
#define RECEIVED_MAX 2048     /* room for our Received: header (helo, ip, hostname, list: < 1,000) */

enum lsd_state { S_CMD, S_RCPT_WAIT, S_DATA, S_BDAT, S_STORE_WAIT, S_TLS_START, S_TLS_HANDSHAKE, S_CLOSING, S_DEAD };

#define IDLE (-1) /* the timeout is smtp.idle_timeout */
static const struct {
    const char *name;
    long timeout_ms;
} states[] = {
    [S_CMD] = {"cmd", IDLE},
    [S_RCPT_WAIT] = {"rcpt-wait", LSD_REDIS_WAIT_MS},
    [S_DATA] = {"data", IDLE},
    [S_BDAT] = {"bdat", IDLE},
    [S_STORE_WAIT] = {"store-wait", LSD_REDIS_WAIT_MS},
    [S_TLS_START] = {"tls-start", IDLE},
    [S_TLS_HANDSHAKE] = {"tls-handshake", LSD_TLS_WAIT_MS},
    [S_CLOSING] = {"closing", CLOSING_MS},
    [S_DEAD] = {"dead", 0},
};

/* What is wrong with the message text (found while swallowing it; answered at the final dot). */
#define DE_TOOLONG 1
#define DE_TOOBIG 2
#define DE_NUL 4
#define DE_BARECR 8
#define DE_HOPS 16
#define DE_BARELF 32   /* BDAT only: in DATA a bare LF closes the session at once */
#define DE_LISTBIG 64  /* over the list's max_message_size */

/* What a BDAT chunk's octets are for. */
enum bdat_mode { B_STORE, B_DISCARD };

struct lsd_session {
    struct lsd_server *srv;
    struct lsd_session *next, *prev;
    uint64_t id;
    int fd;
    char ip[64];
    enum lsd_state state;
    int mask;                 /* current watch mask */
    int eof;                  /* the peer closed its side */
    int shut;                 /* we did shutdown(SHUT_WR) */
    struct lc_buf *in, *out;
    size_t inoff;             /* consumed part of in (compacted after each processing round) */
    int skip_cmd;             /* swallowing the rest of an overlong command line */
    uint64_t timer;
    int64_t timer_at, deadline;
    int errors;
    struct lsd_job *job;
    /* session */
    int helo_seen, esmtp;
    char helo[256];
    /* transaction */
    int have_mail;
    char sender[LC_ADDR_MAX + 1]; /* normalised; "" for <> */
    enum lsd_rcpt_kind kind;
    char list[LC_ADDR_MAX + 1];
    int nrcpt;
    struct lsd_bounce_rcpt bounces[BOUNCE_RCPT_MAX];
    int nbounce;
    char pending[LC_ADDR_MAX + 1]; /* the recipient being looked up */
    long long mail_size;      /* MAIL SIZE=, or -1 */
    long long list_max;       /* the list's own max_message_size (posts), 0: none */
    /* DATA */
    struct lc_buf *msg;
    size_t body_len;          /* text octets, without our Received: header */
    int data_skip;            /* swallowing the rest of an overlong text line */
    int data_err;             /* DE_* */
    int in_headers, hops;
    /* SMTPUTF8, TLS */
    int smtputf8;             /* MAIL had SMTPUTF8 */
    struct lsd_tls_conn *tlsc;/* the TLS stream (handshake in progress or done) */
    int tls_on;               /* handshake done: I/O through tlsc */
    int hs_want;              /* handshake: LC_READ or LC_WRITE */
    char tls_desc[96];
    /* BDAT */
    int txn_bdat;             /* this transaction used BDAT */
    long long bdat_left;      /* octets of the current chunk still to read */
    int bdat_last;
    enum bdat_mode bdat_mode;
    char bdat_err[LSD_REPLY_MAX]; /* B_DISCARD: the reply after the chunk */
    int bdat_sticky;          /* the error stays for the rest of the transaction */
    char bline[LSD_TEXT_LINE_MAX]; /* the incomplete last line of the chunks so far */
    size_t blen;
    int bskip;                /* swallowing the rest of an overlong text line */
};

static void on_io(struct lc_loop *loop, int fd, int events, void *arg);
static void on_timer(struct lc_loop *loop, void *arg);
static void on_job_entry(void *arg, const struct lsd_result *res);
static void process(struct lsd_session *s);
static void settle(struct lsd_session *s);

/* ---------------------------------------------------------------- timers and state */

/* arm sets the deadline of the current state from now; a timer firing early re-arms itself. */
static void arm(struct lsd_session *s)
{
    struct lc_loop *loop = s->srv->loop;
    long t = states[s->state].timeout_ms;
    if (t == IDLE)
        t = s->srv->idle_ms;
    s->deadline = lc_loop_now(loop) + t;
    if (s->timer && s->timer_at <= s->deadline)
        return;
    if (s->timer)
        lc_loop_cancel(loop, s->timer);
    s->timer = lc_loop_timer(loop, t, on_timer, s);
    s->timer_at = s->deadline;
}

static void set_state(struct lsd_session *s, enum lsd_state st)
{
    if (s->state == S_DEAD)
        return;
    if (s->state != st)
        lc_debug("session=%llu %s -> %s", (unsigned long long)s->id, states[s->state].name, states[st].name);
    s->state = st;
    if (st != S_DEAD)
        arm(s);
}

/* ---------------------------------------------------------------- replies */

static void reply(struct lsd_session *s, const char *fmt, ...) LC_PRINTF(2, 3);

static void reply(struct lsd_session *s, const char *fmt, ...)
{
    char line[LSD_REPLY_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 3, fmt, ap); /* room for CR LF NUL */
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof line - 4)
        n = (int)(sizeof line - 4);
    line[n++] = '\r';
    line[n++] = '\n';
    line[n] = 0; /* the error count below reads the line as a string */
    if (s->state == S_DEAD)
        return;
    if (lc_buf_append(s->out, line, (size_t)n) < 0) {
        lc_warn("session=%llu client=%s output buffer full: closing", (unsigned long long)s->id, s->ip);
        set_state(s, S_DEAD);
        return;
    }
    int code = atoi(line);
    if (code >= 500 || (code == 452 && strstr(line, " 4.5.3 ")))
        s->errors++;
}

/* check_errors closes a session that has made too many errors. */
static void check_errors(struct lsd_session *s)
{
    if (s->errors < s->srv->max_errors || s->state == S_CLOSING || s->state == S_DEAD)
        return;
    lc_info("session=%llu client=%s too many errors: closing", (unsigned long long)s->id, s->ip);
    reply(s, "421 4.7.0 %s Error: too many errors", s->srv->hostname);
    set_state(s, S_CLOSING);
}

/* ---------------------------------------------------------------- transaction */

static void txn_reset(struct lsd_session *s)
{
    s->have_mail = 0;
    s->sender[0] = 0;
    s->kind = LSD_RCPT_NONE;
    s->list[0] = 0;
    s->nrcpt = 0;
    s->nbounce = 0;
    s->pending[0] = 0;
    s->mail_size = -1;
    s->list_max = 0;
    lc_buf_free(s->msg);
    s->msg = NULL;
    s->body_len = 0;
    s->data_skip = 0;
    s->data_err = 0;
    s->in_headers = 0;
    s->hops = 0;
    s->smtputf8 = 0;
    s->txn_bdat = 0;
    s->bdat_sticky = 0;
    s->bdat_err[0] = 0;
    s->blen = 0;
    s->bskip = 0;
}

static void rcpt_result(struct lsd_session *s, const struct lsd_result *res)
{
    const char *rcpt = s->pending;
    if (res->code == 250 && res->kind == LSD_RCPT_POST) {
        if (s->kind == LSD_RCPT_BOUNCE || (s->kind == LSD_RCPT_POST && strcmp(s->list, res->list) != 0)) {
            reply(s, "452 4.5.3 <%s>: one list per transaction, and no posts with bounces: send it again in a new "
                     "transaction", rcpt);
            return;
        }
        if (res->list_max > 0 && s->mail_size > res->list_max) { /* RFC 1870 6.1: per-recipient limit */
            lc_info("session=%llu client=%s reject RCPT from=<%s> to=<%s>: SIZE=%lld over the list's limit %lld",
                    (unsigned long long)s->id, s->ip, s->sender, rcpt, s->mail_size, res->list_max);
            reply(s, "552 5.3.4 <%s>: message size exceeds the list's limit (%lld octets)", rcpt, res->list_max);
            return;
        }
        if (s->kind == LSD_RCPT_NONE) {
            s->kind = LSD_RCPT_POST;
            snprintf(s->list, sizeof s->list, "%s", res->list);
        }
        s->list_max = res->list_max;
        s->nrcpt++;
        lc_debug("session=%llu rcpt=<%s> post list=%s", (unsigned long long)s->id, rcpt, res->list);
        reply(s, "%s", res->text);
        return;
    }
    if (res->code == 250 && res->kind == LSD_RCPT_BOUNCE) {
        if (s->kind == LSD_RCPT_POST) {
            reply(s, "452 4.5.3 <%s>: no bounces with posts: send it again in a new transaction", rcpt);
            return;
        }
        int dup = 0;
        for (int i = 0; i < s->nbounce; i++)
            dup |= !strcmp(s->bounces[i].addr, rcpt);
        if (!dup) {
            if (s->nbounce >= BOUNCE_RCPT_MAX) {
                reply(s, "452 4.5.3 Error: too many bounce recipients, send the rest in a new transaction");
                return;
            }
            struct lsd_bounce_rcpt *b = &s->bounces[s->nbounce++];
            snprintf(b->addr, sizeof b->addr, "%s", rcpt);
            b->post = res->post;
            b->sub = res->sub;
        }
        s->kind = LSD_RCPT_BOUNCE;
        s->nrcpt++;
        lc_debug("session=%llu rcpt=<%s> bounce post=%llu sub=%llu", (unsigned long long)s->id, rcpt,
                 (unsigned long long)res->post, (unsigned long long)res->sub);
        reply(s, "%s", res->text);
        return;
    }
    lc_info("session=%llu client=%s reject RCPT from=<%s> to=<%s>: %s", (unsigned long long)s->id, s->ip,
            s->sender, rcpt, res->text);
    reply(s, "%s", res->text);
}

/* on_job handles the completion of a Redis job (lookup or storage); on_job_entry wraps it. */
static void on_job(void *arg, const struct lsd_result *res)
{
    struct lsd_session *s = arg;
    s->job = NULL;
    if (s->state == S_RCPT_WAIT) {
        set_state(s, S_CMD);
        rcpt_result(s, res);
    } else if (s->state == S_STORE_WAIT) {
        set_state(s, S_CMD);
        if (res->code != 250)
            lc_info("session=%llu client=%s message from=<%s> not accepted: %s", (unsigned long long)s->id, s->ip,
                    s->sender, res->text);
        reply(s, "%s", res->text);
        txn_reset(s);
    } else {
        lc_panic("session=%llu job done in state %s", (unsigned long long)s->id, states[s->state].name);
    }
    check_errors(s);
    process(s);
}

/* ---------------------------------------------------------------- commands */

static void do_ehlo(struct lsd_session *s, const struct lsd_cmd *c)
{
    txn_reset(s);
    s->helo_seen = 1;
    s->esmtp = c->verb == LSD_V_EHLO;
    snprintf(s->helo, sizeof s->helo, "%.*s", (int)c->arglen, c->arg);
    const char *h = s->srv->hostname;
    if (!s->esmtp) {
        reply(s, "250 %s", h);
        return;
    }
    reply(s, "250-%s\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE %lld\r\n%s250-CHUNKING\r\n250-SMTPUTF8\r\n"
             "250 ENHANCEDSTATUSCODES", h, s->srv->max_size, s->srv->tls && !s->tlsc ? "250-STARTTLS\r\n" : "");
}

/* has8bit tells whether p[0..n) has an octet >= 0x80. */
static int has8bit(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] >= 0x80)
            return 1;
    return 0;
}

/* utf8_ok checks that p[0..n) is well-formed UTF-8 (RFC 3629: no overlongs, no surrogates, <= U+10FFFF). */
static int utf8_ok(const char *p, size_t n)
{
    const unsigned char *u = (const unsigned char *)p;
    size_t i = 0;
    while (i < n) {
        unsigned c = u[i];
        size_t k;
        unsigned lo = 0x80, hi = 0xbf;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            if (c == 0xe0)
                lo = 0xa0;
            if (c == 0xed)
                hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            if (c == 0xf0)
                lo = 0x90;
            if (c == 0xf4)
                hi = 0x8f;
        } else {
            return 0;
        }
        if (k >= n - i)
            return 0;
        if (u[i + 1] < lo || u[i + 1] > hi)
            return 0;
        for (size_t j = 2; j <= k; j++)
            if (u[i + j] < 0x80 || u[i + j] > 0xbf)
                return 0;
        i += k + 1;
    }
    return 1;
}

/* addr_8bit_check: a non-ASCII address needs SMTPUTF8 (553 5.6.7) and valid UTF-8 (501). 0 ok, -1 replied. */
static int addr_8bit_check(struct lsd_session *s, const char *p, size_t n, int utf8, const char *what)
{
    if (!has8bit(p, n))
        return 0;
    if (!utf8) {
        reply(s, "553 5.6.7 Error: non-ASCII %s address needs MAIL FROM:<...> SMTPUTF8", what);
        return -1;
    }
    if (!utf8_ok(p, n)) {
        reply(s, "501 %s Bad %s address syntax (invalid UTF-8)", *what == 's' ? "5.1.7" : "5.1.3", what);
        return -1;
    }
    return 0;
}

static void do_mail(struct lsd_session *s, const struct lsd_cmd *c)
{
    if (!s->helo_seen) {
        reply(s, "503 5.5.1 Error: send HELO/EHLO first");
        return;
    }
    if (s->have_mail) {
        reply(s, "503 5.5.1 Error: nested MAIL command");
        return;
    }
    if (c->size > s->srv->max_size) {
        reply(s, "552 5.3.4 Message size exceeds fixed limit");
        return;
    }
    char norm[LC_ADDR_MAX + 1] = "";
    const char *why;
    if (addr_8bit_check(s, c->path, c->pathlen, c->smtputf8, "sender") < 0)
        return;
    if (c->pathlen && lc_addr_norm(c->path, c->pathlen, norm, &why) < 0) {
        reply(s, "501 5.1.7 Bad sender address syntax (%s)", why);
        return;
    }
    txn_reset(s);
    s->have_mail = 1;
    s->mail_size = c->size;
    s->smtputf8 = c->smtputf8;
    snprintf(s->sender, sizeof s->sender, "%s", norm);
    reply(s, "250 2.1.0 Ok");
}

static void do_rcpt(struct lsd_session *s, const struct lsd_cmd *c)
{
    if (!s->have_mail) {
        reply(s, "503 5.5.1 Error: need MAIL command");
        return;
    }
    if (s->txn_bdat) {
        reply(s, "503 5.5.1 Error: RCPT after BDAT");
        return;
    }
    if (s->nrcpt >= s->srv->max_rcpt) {
        reply(s, "452 4.5.3 Error: too many recipients");
        return;
    }
    if (addr_8bit_check(s, c->path, c->pathlen, s->smtputf8, "recipient") < 0)
        return;
    const char *why;
    if (lc_addr_norm(c->path, c->pathlen, s->pending, &why) < 0) {
        s->pending[0] = 0;
        reply(s, "501 5.1.3 Bad recipient address syntax (%s)", why);
        return;
    }
    struct lsd_result res;
    if (lsd_route_rcpt(s->srv, s->pending, s->sender, on_job_entry, s, &s->job, &res) == LSD_PENDING) {
        set_state(s, S_RCPT_WAIT);
        return;
    }
    rcpt_result(s, &res);
}

static void add_received(struct lsd_session *s)
{
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
    int v6 = strchr(s->ip, ':') != NULL;
    const char *with = s->smtputf8 ? (s->tls_on ? "UTF8SMTPS" : "UTF8SMTP")
                                   : s->esmtp ? (s->tls_on ? "ESMTPS" : "ESMTP")
                                              : (s->tls_on ? "SMTPS" : "SMTP");
    lc_buf_printf(s->msg, "Received: from %s ([%s%s])\r\n\tby %s (listcast listd) with %s", s->helo,
                  v6 ? "IPv6:" : "", s->ip, s->srv->hostname, with);
    if (s->tls_on)
        lc_buf_printf(s->msg, "\r\n\t(%s)", s->tls_desc);
    if (s->kind == LSD_RCPT_POST)
        lc_buf_printf(s->msg, "\r\n\tfor <%s>", s->list);
    lc_buf_printf(s->msg, ";\r\n\t%s\r\n", date);
}

/* msg_start makes the message buffer of a transaction, with our Received: header. */
static void msg_start(struct lsd_session *s)
{
    s->msg = lc_buf_new((size_t)s->srv->max_size + RECEIVED_MAX);
    add_received(s);
    s->body_len = 0;
    s->data_skip = 0;
    s->data_err = 0;
    s->in_headers = 1;
    s->hops = 0;
    s->blen = 0;
    s->bskip = 0;
}

static void do_data(struct lsd_session *s)
{
    if (s->txn_bdat) {
        reply(s, "503 5.5.1 Error: DATA after BDAT: one or the other in a transaction");
        return;
    }
    if (!s->have_mail) {
        reply(s, "503 5.5.1 Error: need MAIL command");
        return;
    }
    if (s->nrcpt == 0) {
        reply(s, "503 5.5.1 Error: need RCPT command");
        return;
    }
    if (!lsd_redis_up(s->srv->redis)) {
        reply(s, "451 4.3.0 Temporary lookup or storage failure, try again later");
        return;
    }
    msg_start(s);
    set_state(s, S_DATA);
    reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void do_starttls(struct lsd_session *s)
{
    if (!s->srv->tls) {
        reply(s, "502 5.5.1 Error: command not implemented");
        return;
    }
    if (s->tlsc) {
        reply(s, "554 5.5.1 Error: TLS already active");
        return;
    }
    if (!s->helo_seen) {
        reply(s, "503 5.5.1 Error: send HELO/EHLO first");
        return;
    }
    if (s->have_mail) {
        reply(s, "503 5.5.1 Error: MAIL transaction in progress");
        return;
    }
    reply(s, "220 2.0.0 Ready to start TLS");
    size_t extra = lc_buf_len(s->in) - s->inoff;
    if (extra) { /* CVE-2011-0411 class: never execute these inside TLS */
        lc_info("session=%llu client=%s improper command pipelining after STARTTLS: %zu octets discarded",
                (unsigned long long)s->id, s->ip, extra);
        s->inoff += extra;
    }
    set_state(s, S_TLS_START);
}

/* bdat_fail sets the reply given after the chunk is swallowed; sticky: for the rest of the transaction. */
static void bdat_fail(struct lsd_session *s, int sticky, const char *text)
{
    s->bdat_mode = B_DISCARD;
    snprintf(s->bdat_err, sizeof s->bdat_err, "%s", text);
    if (sticky) {
        s->bdat_sticky = 1;
        lc_buf_free(s->msg); /* nothing of this transaction will be stored */
        s->msg = NULL;
    }
}

static void bdat_chunk_end(struct lsd_session *s);

static void do_bdat(struct lsd_session *s, const struct lsd_cmd *c)
{
    s->bdat_left = c->chunk;
    s->bdat_last = c->last;
    s->bdat_mode = B_STORE;
    if (!s->have_mail) {
        bdat_fail(s, 0, "503 5.5.1 Error: need MAIL command");
    } else if (s->nrcpt == 0) {
        bdat_fail(s, 0, "503 5.5.1 Error: need RCPT command");
    } else if (s->bdat_sticky) {
        s->bdat_mode = B_DISCARD; /* the transaction's error again */
    } else {
        if (!s->txn_bdat) {
            s->txn_bdat = 1;
            if (!lsd_redis_up(s->srv->redis))
                bdat_fail(s, 1, "451 4.3.0 Temporary lookup or storage failure, try again later");
            else
                msg_start(s);
        }
        unsigned long long total = s->body_len + s->blen + (unsigned long long)c->chunk;
        if (s->msg && total > (unsigned long long)s->srv->max_size)
            bdat_fail(s, 1, "552 5.3.4 Message size exceeds fixed limit");
        else if (s->msg && s->list_max > 0 && total > (unsigned long long)s->list_max)
            bdat_fail(s, 1, "552 5.3.4 Error: message size exceeds the list's limit");
    }
    set_state(s, S_BDAT);
    if (s->bdat_left == 0)
        bdat_chunk_end(s);
}

static void command(struct lsd_session *s, const char *line, size_t len)
{
    struct lsd_cmd c;
    switch (lsd_cmd_parse(line, len, &c)) {
    case LSD_CMD_OK:
        break;
    case LSD_CMD_UNKNOWN:
        reply(s, "500 5.5.1 Error: command not recognized");
        return;
    case LSD_CMD_NOTIMPL:
        reply(s, "502 5.5.1 Error: command not implemented");
        return;
    case LSD_CMD_SYNTAX:
        reply(s, "501 5.5.4 %s", c.why);
        if (c.verb == LSD_V_BDAT) { /* the chunk cannot be framed: its octets would be read as commands */
            lc_info("session=%llu client=%s bad BDAT size: closing", (unsigned long long)s->id, s->ip);
            txn_reset(s);
            set_state(s, S_CLOSING);
        }
        return;
    case LSD_CMD_PARAM:
        reply(s, "555 5.5.4 %s", c.why);
        return;
    }
    switch (c.verb) {
    case LSD_V_EHLO:
    case LSD_V_HELO:
        do_ehlo(s, &c);
        break;
    case LSD_V_MAIL:
        do_mail(s, &c);
        break;
    case LSD_V_RCPT:
        do_rcpt(s, &c);
        break;
    case LSD_V_DATA:
        do_data(s);
        break;
    case LSD_V_RSET:
        txn_reset(s);
        reply(s, "250 2.0.0 Ok");
        break;
    case LSD_V_NOOP:
        reply(s, "250 2.0.0 Ok");
        break;
    case LSD_V_QUIT:
        reply(s, "221 2.0.0 Bye");
        set_state(s, S_CLOSING);
        break;
    case LSD_V_VRFY:
        reply(s, "252 2.0.0 Cannot VRFY addresses; send mail and it will be delivered or bounced");
        break;
    case LSD_V_HELP:
        reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP%s",
              s->srv->tls ? " STARTTLS" : "");
        break;
    case LSD_V_STARTTLS:
        do_starttls(s);
        break;
    case LSD_V_BDAT:
        do_bdat(s, &c);
        break;
    case LSD_V_NONE:
        reply(s, "500 5.5.1 Error: command not recognized");
        break;
    }
}

/* ---------------------------------------------------------------- DATA */

/* message_end ends the text of a message (the final dot of DATA, or BDAT LAST): refuse it, or store it. */
static void message_end(struct lsd_session *s)
{
    set_state(s, S_CMD);
    int e = s->data_err;
    if (e) {
        const char *r = (e & DE_TOOLONG) ? "500 5.5.2 Error: line too long"
                        : (e & DE_TOOBIG) ? "552 5.3.4 Error: message too big"
                        : (e & DE_LISTBIG) ? "552 5.3.4 Error: message size exceeds the list's limit"
                        : (e & DE_BARELF) ? "550 5.5.2 Error: bare <LF> received"
                        : (e & DE_NUL)    ? "550 5.6.0 Error: message contains NUL characters"
                        : (e & DE_BARECR) ? "550 5.6.0 Error: bare <CR> received"
                                          : "554 5.4.6 Error: too many hops (mail loop?)";
        lc_info("session=%llu client=%s message from=<%s> refused: %s", (unsigned long long)s->id, s->ip,
                s->sender, r);
        reply(s, "%s", r);
        txn_reset(s);
        return;
    }
    struct lsd_result res;
    const char *m = lc_buf_data(s->msg);
    size_t n = lc_buf_len(s->msg);
    int rc;
    if (s->kind == LSD_RCPT_POST)
        rc = lsd_store_post(s->srv, s->list, s->sender, m, n, on_job_entry, s, &s->job, &res);
    else
        rc = lsd_store_bounces(s->srv, s->sender, s->bounces, s->nbounce, m, n, on_job_entry, s, &s->job, &res);
    if (rc == LSD_PENDING) {
        set_state(s, S_STORE_WAIT);
        return;
    }
    reply(s, "%s", res.text);
    txn_reset(s);
}

/* text_line takes one complete line of message text p[0..n) (n includes the CRLF; dot-unstuffed), from DATA
 * or BDAT: checks it and keeps it. */
static void text_line(struct lsd_session *s, const char *p, size_t n)
{
    if (memchr(p, 0, n))
        s->data_err |= DE_NUL;
    if (n > 2 && memchr(p, '\r', n - 2))
        s->data_err |= DE_BARECR;
    if (s->in_headers) {
        if (n == 2)
            s->in_headers = 0;
        else if (n >= 9 && strncasecmp(p, "Received:", 9) == 0 && ++s->hops > LSD_HOPS_MAX)
            s->data_err |= DE_HOPS;
    }
    if (s->data_err & (DE_TOOBIG | DE_LISTBIG))
        return;
    long long lim = s->srv->max_size;
    int big = DE_TOOBIG;
    if (s->list_max > 0 && s->list_max < lim) {
        lim = s->list_max;
        big = DE_LISTBIG;
    }
    if (s->body_len + n > (size_t)lim) {
        s->data_err |= big;
        lc_buf_free(s->msg); /* nothing will be stored: give the memory back now */
        s->msg = lc_buf_new(RECEIVED_MAX);
        return;
    }
    if (s->data_err) /* refused anyway: do not keep the text */
        return;
    if (lc_buf_append(s->msg, p, n) < 0)
        lc_panic("session=%llu message buffer overflow", (unsigned long long)s->id);
    s->body_len += n;
}

/* data_line takes one complete DATA line p[0..n) (n includes the CRLF). */
static void data_line(struct lsd_session *s, const char *p, size_t n)
{
    if (n == 3 && p[0] == '.') {
        message_end(s);
        return;
    }
    if (n > LSD_TEXT_LINE_MAX) {
        s->data_err |= DE_TOOLONG;
        return;
    }
    if (p[0] == '.') { /* dot-unstuffing (RFC 5321 4.5.2) */
        p++;
        n--;
    }
    text_line(s, p, n);
}

/* data_feed consumes message text from the input buffer. */
static void data_feed(struct lsd_session *s)
{
    while (s->state == S_DATA) {
        const char *p = lc_buf_data(s->in) + s->inoff;
        size_t avail = lc_buf_len(s->in) - s->inoff;
        if (avail == 0)
            return;
        const char *lf = memchr(p, '\n', avail);
        if (s->data_skip) {
            if (!lf) {
                s->inoff += avail;
                return;
            }
            s->inoff += (size_t)(lf - p) + 1;
            s->data_skip = 0;
            continue;
        }
        if (!lf) {
            if (avail >= LSD_TEXT_LINE_MAX) {
                s->data_err |= DE_TOOLONG;
                s->data_skip = 1;
                s->inoff += avail;
            }
            return;
        }
        size_t n = (size_t)(lf - p) + 1;
        if (n < 2 || p[n - 2] != '\r') {
            lc_info("session=%llu client=%s bare <LF> in message text: closing", (unsigned long long)s->id, s->ip);
            reply(s, "550 5.5.2 Error: bare <LF> received");
            txn_reset(s);
            set_state(s, S_CLOSING);
            return;
        }
        s->inoff += n;
        data_line(s, p, n);
    }
}

/* ---------------------------------------------------------------- BDAT */

/* bdat_text cuts chunk octets into lines for text_line (lines may span chunks: the tail waits in bline). */
static void bdat_text(struct lsd_session *s, const char *p, size_t n)
{
    while (n > 0) {
        const char *lf = memchr(p, '\n', n);
        size_t seg = lf ? (size_t)(lf - p) + 1 : n;
        if (s->bskip) {
            if (lf)
                s->bskip = 0;
        } else if (s->blen + seg > LSD_TEXT_LINE_MAX) {
            s->data_err |= DE_TOOLONG;
            s->blen = 0;
            s->bskip = !lf;
        } else if (!lf) {
            memcpy(s->bline + s->blen, p, seg);
            s->blen += seg;
        } else {
            const char *line = p;
            size_t len = seg;
            if (s->blen) {
                memcpy(s->bline + s->blen, p, seg);
                line = s->bline;
                len = s->blen + seg;
                s->blen = 0;
            }
            if (len < 2 || line[len - 2] != '\r')
                s->data_err |= DE_BARELF;
            else
                text_line(s, line, len);
        }
        p += seg;
        n -= seg;
    }
}

/* bdat_chunk_end answers a chunk whose octets are all read; after LAST, ends the message. */
static void bdat_chunk_end(struct lsd_session *s)
{
    set_state(s, S_CMD);
    if (s->bdat_mode == B_DISCARD) {
        int repeat = s->bdat_sticky > 1;
        reply(s, "%s", s->bdat_err);
        if (repeat && s->errors > 0)
            s->errors--; /* one error per failed transaction, not one per chunk */
        if (s->bdat_sticky)
            s->bdat_sticky = 2;
        else
            s->bdat_err[0] = 0;
        if (s->bdat_last && s->bdat_sticky) {
            lc_info("session=%llu client=%s message from=<%s> refused: %s", (unsigned long long)s->id, s->ip,
                    s->sender, s->bdat_err);
            txn_reset(s);
        }
        return;
    }
    if (!s->bdat_last) {
        reply(s, "250 2.0.0 Ok: %lld octets", (long long)(s->body_len + s->blen));
        return;
    }
    if (s->bskip)
        s->bskip = 0;
    else if (s->blen) { /* the text does not end in CRLF: end its last line */
        if (s->blen + 2 > LSD_TEXT_LINE_MAX) {
            s->data_err |= DE_TOOLONG;
        } else {
            memcpy(s->bline + s->blen, "\r\n", 2);
            text_line(s, s->bline, s->blen + 2);
        }
        s->blen = 0;
    }
    message_end(s);
}

/* bdat_feed consumes the octets of the current chunk from the input buffer. */
static void bdat_feed(struct lsd_session *s)
{
    size_t avail = lc_buf_len(s->in) - s->inoff;
    size_t n = (unsigned long long)s->bdat_left < avail ? (size_t)s->bdat_left : avail;
    if (n && s->bdat_mode == B_STORE)
        bdat_text(s, lc_buf_data(s->in) + s->inoff, n);
    s->inoff += n;
    s->bdat_left -= (long long)n;
    if (s->bdat_left == 0)
        bdat_chunk_end(s);
}

/* ---------------------------------------------------------------- input processing */

/* process runs buffered input through the state machine as far as the state allows. */
static void process(struct lsd_session *s)
{
    for (;;) {
        if (s->state == S_DATA) {
            data_feed(s);
            if (s->state == S_DATA)
                break; /* needs more input */
            check_errors(s);
            continue;
        }
        if (s->state == S_BDAT) {
            if (lc_buf_len(s->out) >= OUT_HIGH)
                break;
            bdat_feed(s);
            if (s->state == S_BDAT)
                break; /* needs more input */
            check_errors(s);
            continue;
        }
        if (s->state != S_CMD || lc_buf_len(s->out) >= OUT_HIGH)
            break;
        const char *p = lc_buf_data(s->in) + s->inoff;
        size_t avail = lc_buf_len(s->in) - s->inoff;
        const char *lf = avail ? memchr(p, '\n', avail) : NULL;
        if (s->skip_cmd) {
            if (!lf) {
                s->inoff += avail;
                break;
            }
            s->inoff += (size_t)(lf - p) + 1;
            s->skip_cmd = 0;
            reply(s, "500 5.5.2 Error: line too long");
            check_errors(s);
            continue;
        }
        if (!lf) {
            if (avail >= LSD_CMD_LINE_MAX) {
                s->skip_cmd = 1;
                s->inoff += avail;
                continue;
            }
            break;
        }
        size_t n = (size_t)(lf - p) + 1;
        s->inoff += n;
        if (n > LSD_CMD_LINE_MAX) {
            reply(s, "500 5.5.2 Error: line too long");
        } else {
            size_t len = n - 1;
            if (len && p[len - 1] == '\r')
                len--;
            command(s, p, len);
        }
        check_errors(s);
    }
    if (s->inoff) {
        lc_buf_consume(s->in, s->inoff);
        s->inoff = 0;
    }
}

/* ---------------------------------------------------------------- socket I/O */

/* sock_read and sock_write: read(2)/write(2) semantics, in clear or through the TLS stream. */
static ssize_t sock_read(struct lsd_session *s, void *buf, size_t n)
{
    if (s->tls_on)
        return lsd_tls_read(s->tlsc, buf, n);
    return read(s->fd, buf, n);
}

static ssize_t sock_write(struct lsd_session *s, const void *buf, size_t n)
{
    if (s->tls_on)
        return lsd_tls_write(s->tlsc, buf, n);
    return write(s->fd, buf, n);
}

static void flush(struct lsd_session *s)
{
    while (lc_buf_len(s->out) > 0) {
        ssize_t n = sock_write(s, lc_buf_data(s->out), lc_buf_len(s->out));
        if (n > 0) {
            lc_buf_consume(s->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        lc_debug("session=%llu write: %s", (unsigned long long)s->id, n < 0 ? strerror(errno) : "closed");
        set_state(s, S_DEAD);
        return;
    }
}

static void read_input(struct lsd_session *s)
{
    char buf[16384];
    for (;;) {
        size_t room = lc_buf_max(s->in) - lc_buf_len(s->in);
        if (room == 0)
            return;
        ssize_t n = sock_read(s, buf, room < sizeof buf ? room : sizeof buf);
        if (n > 0) {
            if (s->state == S_CLOSING)
                continue; /* draining */
            if (lc_buf_append(s->in, buf, (size_t)n) < 0)
                lc_panic("session input overflow");
            if (s->state == S_CMD || s->state == S_DATA || s->state == S_BDAT)
                arm(s);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0)
            lc_debug("session=%llu read: %s", (unsigned long long)s->id, strerror(errno));
        s->eof = 1;
        return;
    }
}

static void session_free(struct lsd_session *s)
{
    struct lsd_server *srv = s->srv;
    lc_debug("session=%llu disconnect from %s", (unsigned long long)s->id, s->ip);
    lsd_job_cancel(s->job);
    if (s->timer)
        lc_loop_cancel(srv->loop, s->timer);
    lc_loop_watch(srv->loop, s->fd, 0, NULL, NULL);
    lsd_tls_conn_free(s->tlsc);
    close(s->fd);
    lc_buf_free(s->in);
    lc_buf_free(s->out);
    lc_buf_free(s->msg);
    if (s->prev)
        s->prev->next = s->next;
    else
        srv->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    srv->nsessions--;
    free(s);
}

/* tls_step advances the TLS handshake; when it is done the session starts again, in TLS. */
static void tls_step(struct lsd_session *s)
{
    char err[200];
    int r = lsd_tls_handshake(s->tlsc, &s->hs_want, err, sizeof err);
    if (r > 0)
        return;
    if (r < 0) {
        lc_info("session=%llu client=%s TLS handshake failed: %s", (unsigned long long)s->id, s->ip, err);
        set_state(s, S_DEAD);
        return;
    }
    s->tls_on = 1;
    lsd_tls_describe(s->tlsc, s->tls_desc, sizeof s->tls_desc);
    lc_info("session=%llu client=%s TLS established: %s", (unsigned long long)s->id, s->ip, s->tls_desc);
    /* RFC 3207 4.2: forget everything learnt from the client before TLS */
    txn_reset(s);
    s->helo_seen = 0;
    s->esmtp = 0;
    s->helo[0] = 0;
    set_state(s, S_CMD);
    read_input(s); /* the client may have sent its first command with the handshake's last flight */
    process(s);
}

/* tls_begin starts the handshake once "220 Ready to start TLS" is out; input that came meanwhile is dropped. */
static void tls_begin(struct lsd_session *s)
{
    size_t extra = lc_buf_len(s->in);
    if (extra)
        lc_info("session=%llu client=%s improper command pipelining after STARTTLS: %zu octets discarded",
                (unsigned long long)s->id, s->ip, extra);
    lc_buf_reset(s->in);
    s->inoff = 0;
    s->skip_cmd = 0;
    s->tlsc = lsd_tls_conn_new(s->srv->tls, s->fd);
    set_state(s, S_TLS_HANDSHAKE);
    tls_step(s);
}

/* settle ends every entry point: flushes output, handles EOF and closing, frees a dead session, or sets the
 * watch mask for what the session waits on next. */
static void settle(struct lsd_session *s)
{
    /* TLS: records already decrypted inside GnuTLS get no socket event: take them while there is room */
    for (int i = 0; i < 16 && s->tls_on && (s->state == S_CMD || s->state == S_DATA || s->state == S_BDAT) &&
                    !s->eof && lc_buf_len(s->in) < lc_buf_max(s->in) && lsd_tls_pending(s->tlsc) > 0;
         i++) {
        read_input(s);
        process(s);
    }
    if (s->state != S_DEAD && s->state != S_TLS_HANDSHAKE)
        flush(s);
    if (s->state == S_TLS_START && lc_buf_len(s->out) == 0)
        tls_begin(s);
    if (s->eof && s->state != S_DEAD) {
        if (s->state == S_CLOSING || s->state == S_TLS_START) {
            set_state(s, S_DEAD);
        } else if (s->state == S_CMD || s->state == S_DATA || s->state == S_BDAT) {
            if (s->state != S_CMD)
                lc_info("session=%llu client=%s lost connection during %s: nothing stored",
                        (unsigned long long)s->id, s->ip, s->state == S_DATA ? "DATA" : "BDAT");
            set_state(s, lc_buf_len(s->out) ? S_CLOSING : S_DEAD);
        }
        /* waiting on Redis: the answer still goes out (the peer may only have half-closed) */
    }
    if (s->state == S_CLOSING && lc_buf_len(s->out) == 0 && !s->shut) {
        if (s->tls_on)
            lsd_tls_bye(s->tlsc);
        shutdown(s->fd, SHUT_WR);
        s->shut = 1;
        if (s->eof)
            set_state(s, S_DEAD);
    }
    if (s->state == S_DEAD) {
        session_free(s);
        return;
    }
    int mask = 0;
    if (s->state == S_TLS_HANDSHAKE) {
        mask = s->hs_want;
    } else {
        if (!s->eof && s->state != S_TLS_START && lc_buf_len(s->in) < lc_buf_max(s->in) &&
            (lc_buf_len(s->out) < OUT_HIGH || s->state == S_CLOSING))
            mask |= LC_READ;
        if (lc_buf_len(s->out) > 0)
            mask |= LC_WRITE;
    }
    if (mask != s->mask) {
        if (lc_loop_watch(s->srv->loop, s->fd, mask, on_io, s) < 0) {
            lc_warn("session=%llu epoll: %s", (unsigned long long)s->id, strerror(errno));
            session_free(s);
            return;
        }
        s->mask = mask;
    }
}

static void on_io(struct lc_loop *loop, int fd, int events, void *arg)
{
    struct lsd_session *s = arg;
    if (s->state == S_TLS_HANDSHAKE) {
        tls_step(s);
        settle(s);
        return;
    }
    if (events & LC_WRITE)
        flush(s);
    if ((events & LC_READ) && s->state != S_DEAD)
        read_input(s);
    if (s->state != S_DEAD)
        process(s);
    settle(s);
}

static void on_timer(struct lc_loop *loop, void *arg)
{
    struct lsd_session *s = arg;
    s->timer = 0;
    int64_t now = lc_loop_now(loop);
    if (now < s->deadline) {
        s->timer = lc_loop_timer(loop, (long)(s->deadline - now), on_timer, s);
        s->timer_at = s->deadline;
        return;
    }
    switch (s->state) {
    case S_CMD:
    case S_DATA:
    case S_BDAT:
        lc_info("session=%llu client=%s timeout in state %s", (unsigned long long)s->id, s->ip,
                states[s->state].name);
        txn_reset(s);
        reply(s, "421 4.4.2 %s Error: timeout exceeded", s->srv->hostname);
        set_state(s, S_CLOSING);
        break;
    case S_TLS_START:
    case S_TLS_HANDSHAKE:
        lc_info("session=%llu client=%s timeout in state %s", (unsigned long long)s->id, s->ip,
                states[s->state].name);
        set_state(s, S_DEAD);
        break;
    case S_RCPT_WAIT:
    case S_STORE_WAIT:
        lc_warn("session=%llu client=%s no answer from redis in %d s", (unsigned long long)s->id, s->ip,
                LSD_REDIS_WAIT_MS / 1000);
        lsd_job_cancel(s->job);
        s->job = NULL;
        if (s->state == S_STORE_WAIT)
            txn_reset(s);
        set_state(s, S_CMD);
        reply(s, "451 4.3.0 Temporary lookup or storage failure, try again later");
        process(s);
        break;
    case S_CLOSING:
    case S_DEAD:
        set_state(s, S_DEAD);
        break;
    }
    settle(s);
}

/* on_job_entry wraps on_job so that a job completion ends like every entry point. */
static void on_job_entry(void *arg, const struct lsd_result *res)
{
    on_job(arg, res);
    settle(arg);
}

/* ---------------------------------------------------------------- life cycle */

void lsd_session_new(struct lsd_server *srv, int fd, const char *ip)
{
    struct lsd_session *s = lc_calloc(1, sizeof *s);
    s->srv = srv;
    s->id = ++srv->next_sid;
    s->fd = fd;
    snprintf(s->ip, sizeof s->ip, "%s", ip);
    s->in = lc_buf_new(IN_MAX);
    s->out = lc_buf_new(OUT_MAX);
    s->next = srv->sessions;
    if (s->next)
        s->next->prev = s;
    srv->sessions = s;
    srv->nsessions++;
    lc_debug("session=%llu connect from %s", (unsigned long long)s->id, ip);
    s->state = S_CMD;
    arm(s);
    reply(s, "220 %s ESMTP listcast", srv->hostname);
    settle(s);
}

void lsd_session_shutdown(struct lsd_session *s)
{
    char line[400];
    int n = snprintf(line, sizeof line, "421 4.3.2 %s Service shutting down\r\n", s->srv->hostname);
    if (s->state != S_CLOSING && s->state != S_DEAD && s->state != S_TLS_HANDSHAKE && s->state != S_TLS_START &&
        lc_buf_len(s->out) == 0 && n > 0) {
        ssize_t w = sock_write(s, line, (size_t)n);
        (void)w;
    }
    session_free(s);
}

int lsd_session_count_ip(const struct lsd_server *srv, const char *ip)
{
    int n = 0;
    for (const struct lsd_session *s = srv->sessions; s; s = s->next)
        n += strcmp(s->ip, ip) == 0;
    return n;
}
