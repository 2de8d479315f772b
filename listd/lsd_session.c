/* lsd_session: one SMTP server session (RFC 5321, with PIPELINING, 8BITMIME, SIZE, ENHANCEDSTATUSCODES).
 *
 * A session owns its socket, its input and output buffers, the message buffer of the transaction in progress
 * and at most one Redis job, and is freed in one place (session_free), only from the end of an entry point
 * (socket event, timer, job completion), never from deep inside command handling: code below marks it S_DEAD.
 *
 * States (a command's answer that waits on Redis stops the reading of further commands, so replies always go
 * out in command order and pipelined input simply stays buffered):
 *   S_CMD         reading commands                          timeout 300 s idle  -> 421 4.4.2, close
 *   S_RCPT_WAIT   a recipient lookup is out                 timeout 30 s        -> 451 4.3.0, back to S_CMD
 *   S_DATA        reading message text                      timeout 300 s idle  -> 421 4.4.2, close
 *   S_STORE_WAIT  the message is being written to Redis     timeout 30 s        -> 451 4.3.0, back to S_CMD
 *   S_CLOSING     last replies going out; then shutdown(SHUT_WR) and drain input until EOF (so the peer
 *                 reads our last reply rather than a reset)  timeout 5 s        -> close
 *   S_DEAD        to be freed by the entry point that sees it
 *
 * Limits: command lines 512 octets with CRLF (500 5.5.2); text lines 1000 octets (the rest of the message is
 * swallowed, then 500 5.5.2, nothing stored); message text over smtp.max_message_size (swallowed, 552 5.3.4);
 * 100 recipients (452 4.5.3); 10 bounce recipients a transaction (452 4.5.3: each gets its own copy of the
 * message in the bounce stream); 20 errors (421 4.7.0, close); input and output buffers 64 KiB (reading and
 * command processing pause when full: back-pressure).
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

enum lsd_state { S_CMD, S_RCPT_WAIT, S_DATA, S_STORE_WAIT, S_CLOSING, S_DEAD };

static const struct {
    const char *name;
    long timeout_ms;
} states[] = {
    [S_CMD] = {"cmd", LSD_IDLE_MS},
    [S_RCPT_WAIT] = {"rcpt-wait", LSD_REDIS_WAIT_MS},
    [S_DATA] = {"data", LSD_IDLE_MS},
    [S_STORE_WAIT] = {"store-wait", LSD_REDIS_WAIT_MS},
    [S_CLOSING] = {"closing", CLOSING_MS},
    [S_DEAD] = {"dead", 0},
};

/* What is wrong with the message text (found while swallowing it; answered at the final dot). */
#define DE_TOOLONG 1
#define DE_TOOBIG 2
#define DE_NUL 4
#define DE_BARECR 8
#define DE_HOPS 16

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
    /* DATA */
    struct lc_buf *msg;
    size_t body_len;          /* text octets, without our Received: header */
    int data_skip;            /* swallowing the rest of an overlong text line */
    int data_err;             /* DE_* */
    int in_headers, hops;
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
    int n = vsnprintf(line, sizeof line - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof line - 3)
        n = (int)(sizeof line - 3);
    line[n++] = '\r';
    line[n++] = '\n';
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
    if (s->errors < LSD_ERRORS_MAX || s->state == S_CLOSING || s->state == S_DEAD)
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
    lc_buf_free(s->msg);
    s->msg = NULL;
    s->body_len = 0;
    s->data_skip = 0;
    s->data_err = 0;
    s->in_headers = 0;
    s->hops = 0;
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
        if (s->kind == LSD_RCPT_NONE) {
            s->kind = LSD_RCPT_POST;
            snprintf(s->list, sizeof s->list, "%s", res->list);
        }
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
    reply(s, "250-%s\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE %lld\r\n250 ENHANCEDSTATUSCODES", h,
          s->srv->max_size);
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
    if (c->pathlen && lc_addr_norm(c->path, c->pathlen, norm, &why) < 0) {
        reply(s, "501 5.1.7 Bad sender address syntax (%s)", why);
        return;
    }
    txn_reset(s);
    s->have_mail = 1;
    snprintf(s->sender, sizeof s->sender, "%s", norm);
    reply(s, "250 2.1.0 Ok");
}

static void do_rcpt(struct lsd_session *s, const struct lsd_cmd *c)
{
    if (!s->have_mail) {
        reply(s, "503 5.5.1 Error: need MAIL command");
        return;
    }
    if (s->nrcpt >= LSD_RCPT_MAX) {
        reply(s, "452 4.5.3 Error: too many recipients");
        return;
    }
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
    lc_buf_printf(s->msg, "Received: from %s ([%s%s])\r\n\tby %s (listcast listd) with %s", s->helo,
                  v6 ? "IPv6:" : "", s->ip, s->srv->hostname, s->esmtp ? "ESMTP" : "SMTP");
    if (s->kind == LSD_RCPT_POST)
        lc_buf_printf(s->msg, "\r\n\tfor <%s>", s->list);
    lc_buf_printf(s->msg, ";\r\n\t%s\r\n", date);
}

static void do_data(struct lsd_session *s)
{
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
    s->msg = lc_buf_new((size_t)s->srv->max_size + RECEIVED_MAX);
    add_received(s);
    s->body_len = 0;
    s->data_skip = 0;
    s->data_err = 0;
    s->in_headers = 1;
    s->hops = 0;
    set_state(s, S_DATA);
    reply(s, "354 End data with <CR><LF>.<CR><LF>");
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
        reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP");
        break;
    case LSD_V_NONE:
        reply(s, "500 5.5.1 Error: command not recognized");
        break;
    }
}

/* ---------------------------------------------------------------- DATA */

static void data_end(struct lsd_session *s)
{
    set_state(s, S_CMD);
    int e = s->data_err;
    if (e) {
        const char *r = (e & DE_TOOLONG) ? "500 5.5.2 Error: line too long"
                        : (e & DE_TOOBIG) ? "552 5.3.4 Error: message too big"
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

/* data_line takes one complete text line p[0..n) (n includes the CRLF). */
static void data_line(struct lsd_session *s, const char *p, size_t n)
{
    if (n == 3 && p[0] == '.') {
        data_end(s);
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
    if (s->data_err & DE_TOOBIG)
        return;
    if (s->body_len + n > (size_t)s->srv->max_size) {
        s->data_err |= DE_TOOBIG;
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

static void flush(struct lsd_session *s)
{
    while (lc_buf_len(s->out) > 0) {
        ssize_t n = write(s->fd, lc_buf_data(s->out), lc_buf_len(s->out));
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
        ssize_t n = read(s->fd, buf, room < sizeof buf ? room : sizeof buf);
        if (n > 0) {
            if (s->state == S_CLOSING)
                continue; /* draining */
            if (lc_buf_append(s->in, buf, (size_t)n) < 0)
                lc_panic("session input overflow");
            if (s->state == S_CMD || s->state == S_DATA)
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

/* settle ends every entry point: flushes output, handles EOF and closing, frees a dead session, or sets the
 * watch mask for what the session waits on next. */
static void settle(struct lsd_session *s)
{
    if (s->state != S_DEAD)
        flush(s);
    if (s->eof && s->state != S_DEAD) {
        if (s->state == S_CLOSING) {
            set_state(s, S_DEAD);
        } else if (s->state == S_CMD || s->state == S_DATA) {
            if (s->state == S_DATA)
                lc_info("session=%llu client=%s lost connection during DATA", (unsigned long long)s->id, s->ip);
            set_state(s, lc_buf_len(s->out) ? S_CLOSING : S_DEAD);
        }
        /* waiting on Redis: the answer still goes out (the peer may only have half-closed) */
    }
    if (s->state == S_CLOSING && lc_buf_len(s->out) == 0 && !s->shut) {
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
    if (!s->eof && lc_buf_len(s->in) < lc_buf_max(s->in) &&
        (lc_buf_len(s->out) < OUT_HIGH || s->state == S_CLOSING))
        mask |= LC_READ;
    if (lc_buf_len(s->out) > 0)
        mask |= LC_WRITE;
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
        lc_info("session=%llu client=%s timeout in state %s", (unsigned long long)s->id, s->ip,
                states[s->state].name);
        txn_reset(s);
        reply(s, "421 4.4.2 %s Error: timeout exceeded", s->srv->hostname);
        set_state(s, S_CLOSING);
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
    if (s->state != S_CLOSING && s->state != S_DEAD && lc_buf_len(s->out) == 0 && n > 0) {
        ssize_t w = write(s->fd, line, (size_t)n);
        (void)w;
    }
    session_free(s);
}
