/* snd_conn: one SMTP client connection, as an explicit state machine with separate send and receive sides.
 *
 * Session states (table below, each with its timeout): connecting, banner, ehlo, helo, ready, quit. In the ready
 * state the connection carries transactions, one per recipient (each has its own VERP envelope sender). The
 * send side writes commands as soon as the rules allow and records, for each command, the reply it expects in
 * a FIFO; the receive side takes replies off the FIFO in order (Postfix smtp_proto.c keeps the same split).
 * With PIPELINING (RFC 2920) a transaction is one write, "[RSET] MAIL FROM:<verp> RCPT TO:<rcpt> DATA"; the
 * shared post body goes out after the 354, and the next transaction's commands follow the body in the same
 * write (message content may start a command group). Without PIPELINING each command waits for its reply.
 * Outcomes: 2xx after the final "." delivered; 4xx at MAIL, RCPT, DATA or "." deferred; 5xx bounced; 421 at
 * any point, a refused or timed-out connect, a dropped connection, a failed greeting or a timeout: every
 * recipient in flight moves to its next MX host (snd_rcpt_failover). A malformed or oversized reply (see
 * snd_reply.c) drops the connection and defers the recipients in flight. After a transaction that ended
 * without its "." while MAIL was accepted, RSET precedes the next MAIL.
 * Persistent: a ready connection with nothing to do waits SND_IDLE_MS for more work, then sends QUIT (at once
 * when the global limit is reached and another destination waits for a connection slot).
 * Timeouts run on a lazy deadline: I/O progress moves it, one loop timer checks it.
 * Every failure is handled from a loop callback; the connection is freed at the end of that callback.
 * Limits: at most 2 transactions in flight, SND_CONN_EXP replies expected, SND_CONN_SEGS output segments.
 */
#include "snd.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "lc_buf.h"
#include "lc_log.h"
#include "lc_loop.h"
#include "lc_net.h"
#include "lc_verp.h"

#define SND_CONN_EXP 16
#define SND_CONN_TXN 2
#define SND_CONN_SEGS 8
#define SND_CMD_MAX 16384

enum cstate { C_CONNECTING, C_BANNER, C_EHLO, C_HELO, C_READY, C_QUIT, C_DEAD };

static const struct {
    const char *name;
    int timeout_ms;
} cstates[] = {
    [C_CONNECTING] = {"connecting", SND_CONNECT_MS},
    [C_BANNER] = {"banner", SND_REPLY_MS},
    [C_EHLO] = {"ehlo", SND_REPLY_MS},
    [C_HELO] = {"helo", SND_REPLY_MS},
    [C_READY] = {"ready", SND_REPLY_MS}, /* SND_IDLE_MS when nothing is in flight */
    [C_QUIT] = {"quit", SND_QUIT_MS},
    [C_DEAD] = {"dead", 0},
};

/* Replies the receive side expects, in order. */
enum xkind { X_BANNER, X_EHLO, X_HELO, X_RSET, X_MAIL, X_RCPT, X_DATA, X_DOT, X_QUIT };
static const char *const xnames[] = {"banner", "EHLO", "HELO", "RSET", "MAIL FROM", "RCPT TO", "DATA",
                                     "end of data", "QUIT"};

/* Send state of a transaction: the next thing to write. */
enum nx { NX_MAIL, NX_RCPT, NX_DATA, NX_WAIT354, NX_DOT, NX_END };

struct txn {
    struct snd_rcpt *r;
    enum nx next;
    int pending;  /* expected replies not yet received */
    int mail_ok;  /* MAIL FROM got 2xx: the server is in a transaction */
    int settled;  /* the recipient has its outcome (later replies only end the transaction) */
};

struct seg {
    struct lc_buf *b;      /* commands (owned), or */
    struct snd_post *p;    /* a post body (referenced) */
    size_t off;
};

struct snd_conn {
    struct snd *snd;
    struct snd_dest *d;
    uint64_t id;
    int fd;
    int conn_errno;        /* a connect() that failed at once, reported from the timer */
    enum cstate st;
    int established;       /* reached C_READY once */
    int mask;
    int64_t deadline;
    uint64_t timer;
    int64_t timer_at;
    struct snd_reply *rp;
    int pipelining, eightbitmime, size;
    struct {
        enum xkind k;
        struct txn *t;
    } exp[SND_CONN_EXP];
    int xh, xn;
    struct txn *txn[SND_CONN_TXN]; /* oldest first */
    int ntxn;
    int need_rset;
    struct seg seg[SND_CONN_SEGS];
    int sh, sn;
    int dead;
    int in_cb;
    unsigned long ntx;     /* transactions finished */
};

static void conn_io(struct lc_loop *loop, int fd, int events, void *arg);
static void conn_timer(struct lc_loop *loop, void *arg);
static void pump(struct snd_conn *c);

/* ---- deadline ---- */

static void arm(struct snd_conn *c, int ms)
{
    struct lc_loop *loop = c->snd->loop;
    c->deadline = lc_loop_now(loop) + ms;
    if (c->timer && c->timer_at <= c->deadline)
        return; /* the pending timer fires first and re-arms for the rest */
    if (c->timer)
        lc_loop_cancel(loop, c->timer);
    c->timer = lc_loop_timer(loop, ms, conn_timer, c);
    c->timer_at = c->deadline;
}

static int idle(const struct snd_conn *c)
{
    return c->st == C_READY && c->ntxn == 0 && c->xn == 0 && c->sn == 0;
}

/* rearm sets the deadline for the current state (I/O progress calls it too). */
static void rearm(struct snd_conn *c)
{
    if (c->dead)
        return;
    arm(c, idle(c) ? SND_IDLE_MS : cstates[c->st].timeout_ms);
}

/* ---- output ---- */

static void update_mask(struct snd_conn *c)
{
    if (c->dead || c->fd < 0)
        return;
    int mask = c->st == C_CONNECTING ? LC_WRITE : (LC_READ | (c->sn ? LC_WRITE : 0));
    if (mask != c->mask) {
        c->mask = mask;
        if (lc_loop_watch(c->snd->loop, c->fd, mask, conn_io, c) < 0)
            lc_panic("conn=%llu: cannot watch fd %d", (unsigned long long)c->id, c->fd);
    }
}

static struct seg *seg_push(struct snd_conn *c)
{
    if (c->sn == SND_CONN_SEGS)
        lc_panic("conn=%llu: output segments full", (unsigned long long)c->id);
    struct seg *s = &c->seg[(c->sh + c->sn++) % SND_CONN_SEGS];
    memset(s, 0, sizeof *s);
    return s;
}

static void seg_pop(struct snd_conn *c)
{
    struct seg *s = &c->seg[c->sh];
    lc_buf_free(s->b);
    snd_post_unref(s->p);
    memset(s, 0, sizeof *s);
    c->sh = (c->sh + 1) % SND_CONN_SEGS;
    c->sn--;
}

static void out_cmd(struct snd_conn *c, const char *fmt, ...) LC_PRINTF(2, 3);
static void out_cmd(struct snd_conn *c, const char *fmt, ...)
{
    char line[1100];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line - 2)
        lc_panic("conn=%llu: command too long", (unsigned long long)c->id);
    lc_debug("conn=%llu > %s", (unsigned long long)c->id, line);
    memcpy(line + n, "\r\n", 2);
    struct seg *s = c->sn ? &c->seg[(c->sh + c->sn - 1) % SND_CONN_SEGS] : NULL;
    if (!s || !s->b) {
        s = seg_push(c);
        s->b = lc_buf_new(SND_CMD_MAX);
    }
    if (lc_buf_append(s->b, line, (size_t)n + 2) < 0)
        lc_panic("conn=%llu: command buffer full", (unsigned long long)c->id);
}

static void out_body(struct snd_conn *c, struct snd_post *p)
{
    struct seg *s = seg_push(c);
    s->p = p;
    snd_post_ref(p);
}

static void expect(struct snd_conn *c, enum xkind k, struct txn *t)
{
    if (c->xn == SND_CONN_EXP)
        lc_panic("conn=%llu: too many replies expected", (unsigned long long)c->id);
    int i = (c->xh + c->xn++) % SND_CONN_EXP;
    c->exp[i].k = k;
    c->exp[i].t = t;
    if (t)
        t->pending++;
}

/* ---- closing ---- */

static void conn_release(struct snd_conn *c)
{
    if (c->timer)
        lc_loop_cancel(c->snd->loop, c->timer);
    c->timer = 0;
    if (c->fd >= 0) {
        if (c->mask)
            lc_loop_watch(c->snd->loop, c->fd, 0, NULL, NULL);
        close(c->fd);
        c->fd = -1;
    }
    c->mask = 0;
    while (c->sn)
        seg_pop(c);
    for (int i = 0; i < c->ntxn; i++)
        free(c->txn[i]);
    c->ntxn = 0;
    c->xn = 0;
}

static void conn_destroy(struct snd_conn *c)
{
    conn_release(c);
    snd_reply_free(c->rp);
    free(c);
}

enum fail_mode { F_QUIET, F_NEXT_MX, F_DEFER };

/* conn_close ends the connection: recipients in flight move on (F_NEXT_MX) or are deferred (F_DEFER); with
 * F_QUIET nothing is in flight and nothing is logged above debug. The memory goes at the end of the callback. */
static void conn_close(struct snd_conn *c, enum fail_mode mode, const char *why)
{
    if (c->dead)
        return;
    struct snd_rcpt *inflight[SND_CONN_TXN];
    int n = 0, setup = !c->established;
    for (int i = 0; i < c->ntxn; i++)
        if (!c->txn[i]->settled)
            inflight[n++] = c->txn[i]->r;
    if (mode == F_QUIET && n)
        mode = F_NEXT_MX;
    if (mode == F_QUIET)
        lc_debug("conn=%llu host=%s closed after %lu transactions: %s", (unsigned long long)c->id,
                 snd_dest_label(c->d), c->ntx, why);
    else
        lc_info("conn=%llu host=%s %s in state %s after %lu transactions: %s (%d recipients in flight %s)",
                (unsigned long long)c->id, snd_dest_label(c->d), setup ? "connection failed" : "connection lost",
                cstates[c->st].name, c->ntx, why, n, mode == F_DEFER ? "deferred" : "move to the next MX");
    conn_release(c);
    c->st = C_DEAD;
    c->dead = 1;
    snd_dest_gone(c->d, c, setup && mode != F_QUIET, why);
    for (int i = 0; i < n; i++) {
        if (mode == F_DEFER)
            snd_rcpt_outcome(inflight[i], SND_O_DEFERRED, why);
        else
            snd_rcpt_failover(inflight[i], why);
    }
    if (!c->in_cb)
        conn_destroy(c);
}

/* ---- transactions ---- */

static void settle(struct snd_conn *c, struct txn *t, int code, const char *text)
{
    t->settled = 1;
    if (code >= 200 && code < 300)
        snd_rcpt_outcome(t->r, SND_O_DELIVERED, text);
    else if (code >= 500)
        snd_rcpt_outcome(t->r, SND_O_BOUNCED, text);
    else
        snd_rcpt_outcome(t->r, SND_O_DEFERRED, text);
}

static void txn_maybe_end(struct snd_conn *c, struct txn *t)
{
    if (!t || t->pending || t->next != NX_END)
        return;
    int i;
    for (i = 0; i < c->ntxn && c->txn[i] != t; i++)
        ;
    if (i == c->ntxn)
        lc_panic("conn=%llu: ending a transaction it does not have", (unsigned long long)c->id);
    if (!t->settled)
        lc_panic("conn=%llu: transaction for <%s> ended without an outcome", (unsigned long long)c->id, t->r->addr);
    for (; i + 1 < c->ntxn; i++)
        c->txn[i] = c->txn[i + 1];
    c->ntxn--;
    c->ntx++;
    free(t);
}

static void send_mail(struct snd_conn *c, struct txn *t)
{
    struct snd_batch *b = t->r->batch;
    char verp[LC_ADDR_MAX + 1], params[80] = "";
    if (lc_verp_encode(c->snd->secret, b->post, t->r->sub, b->p->domain, verp, sizeof verp) < 0)
        lc_panic("post=%llu: VERP address too long for domain %s", (unsigned long long)b->post, b->p->domain);
    size_t pl = 0;
    if (c->size)
        pl += (size_t)snprintf(params + pl, sizeof params - pl, " SIZE=%zu", b->p->msglen);
    if (c->eightbitmime && b->p->eightbit)
        snprintf(params + pl, sizeof params - pl, " BODY=8BITMIME");
    out_cmd(c, "MAIL FROM:<%s>%s", verp, params);
}

/* pump is the send side: it writes every command the rules allow now. */
static void pump(struct snd_conn *c)
{
    if (c->dead)
        return;
    while (c->st == C_READY) {
        struct txn *t = c->ntxn ? c->txn[c->ntxn - 1] : NULL;
        if (t && t->next <= NX_DATA) {
            if (!c->pipelining && c->xn)
                break;
            if (t->next == NX_MAIL && c->need_rset) {
                out_cmd(c, "RSET");
                expect(c, X_RSET, NULL);
                c->need_rset = 0;
                continue;
            }
            switch (t->next) {
            case NX_MAIL:
                send_mail(c, t);
                expect(c, X_MAIL, t);
                t->next = NX_RCPT;
                break;
            case NX_RCPT:
                out_cmd(c, "RCPT TO:<%s>", t->r->addr);
                expect(c, X_RCPT, t);
                t->next = NX_DATA;
                break;
            default:
                out_cmd(c, "DATA");
                expect(c, X_DATA, t);
                t->next = NX_WAIT354;
                break;
            }
            continue;
        }
        /* Start another transaction? Pipelined: once the previous one's body is on its way. */
        if (c->ntxn >= (c->pipelining ? SND_CONN_TXN : 1) || (t && t->next == NX_WAIT354) ||
            (!c->pipelining && c->xn) || c->xn + 4 > SND_CONN_EXP)
            break;
        struct snd_rcpt *r = snd_dest_pull(c->d);
        if (!r)
            break;
        t = lc_calloc(1, sizeof *t);
        t->r = r;
        t->next = NX_MAIL;
        c->txn[c->ntxn++] = t;
    }
    if (idle(c))
        snd_dest_idle(c->d, c); /* may send QUIT */
    update_mask(c);
    rearm(c);
}

/* ---- receive side ---- */

static void parse_ehlo(struct snd_conn *c, const char *text)
{
    const char *l = strchr(text, '\n');
    while (l) {
        l++;
        const char *e = strchr(l, '\n');
        size_t n = e ? (size_t)(e - l) : strlen(l);
        if (n > 4) {
            const char *k = l + 4;
            size_t kn = n - 4, sp;
            for (sp = 0; sp < kn && k[sp] != ' '; sp++)
                ;
            if (sp == 10 && !strncasecmp(k, "PIPELINING", 10))
                c->pipelining = 1;
            else if (sp == 8 && !strncasecmp(k, "8BITMIME", 8))
                c->eightbitmime = 1;
            else if (sp == 4 && !strncasecmp(k, "SIZE", 4))
                c->size = 1;
        }
        l = e;
    }
}

static void become_ready(struct snd_conn *c)
{
    c->st = C_READY;
    c->established = 1;
    lc_debug("conn=%llu host=%s ready pipelining=%d 8bitmime=%d size=%d", (unsigned long long)c->id,
             snd_dest_label(c->d), c->pipelining, c->eightbitmime, c->size);
    snd_dest_ready(c->d, c);
}

/* reply_why formats "<what>: <reply>" for failure reasons, on one line. */
static void reply_why(char *out, size_t outlen, enum xkind k, const char *text)
{
    int n = snprintf(out, outlen, "%s: %.400s", xnames[k], text);
    for (int i = 0; i >= 0 && i < n && (size_t)i < outlen && out[i]; i++)
        if ((unsigned char)out[i] < 0x20)
            out[i] = out[i] == '\n' ? ' ' : '?';
}

static void handle_reply(struct snd_conn *c, int code, const char *text)
{
    char why[512];
    char q[300];
    snd_reply_quote(text, q, sizeof q);
    lc_debug("conn=%llu < %s", (unsigned long long)c->id, q);
    if (c->xn == 0) {
        if (code == 421) /* the server times us out or shuts down while we are idle */
            conn_close(c, F_QUIET, text);
        else
            conn_close(c, F_DEFER, "unexpected reply while nothing was asked");
        return;
    }
    enum xkind k = c->exp[c->xh].k;
    struct txn *t = c->exp[c->xh].t;
    c->xh = (c->xh + 1) % SND_CONN_EXP;
    c->xn--;
    if (t)
        t->pending--;
    if (code == 421 && k != X_QUIT) {
        reply_why(why, sizeof why, k, text);
        conn_close(c, F_NEXT_MX, why);
        return;
    }
    int cls = code / 100;
    switch (k) {
    case X_BANNER:
        if (cls != 2) {
            reply_why(why, sizeof why, k, text);
            conn_close(c, F_NEXT_MX, why);
            return;
        }
        out_cmd(c, "EHLO %s", c->snd->helo);
        expect(c, X_EHLO, NULL);
        c->st = C_EHLO;
        break;
    case X_EHLO:
        if (cls == 2) {
            parse_ehlo(c, text);
            become_ready(c);
        } else {
            out_cmd(c, "HELO %s", c->snd->helo);
            expect(c, X_HELO, NULL);
            c->st = C_HELO;
        }
        break;
    case X_HELO:
        if (cls != 2) {
            reply_why(why, sizeof why, k, text);
            conn_close(c, F_NEXT_MX, why);
            return;
        }
        become_ready(c);
        break;
    case X_RSET:
        if (cls != 2) {
            reply_why(why, sizeof why, k, text);
            conn_close(c, F_NEXT_MX, why);
            return;
        }
        break;
    case X_MAIL:
    case X_RCPT:
        if (cls == 2) {
            if (k == X_MAIL)
                t->mail_ok = 1;
        } else if (!t->settled) {
            settle(c, t, cls == 3 ? 451 : code, text);
        }
        if (t->settled && !c->pipelining) {
            t->next = NX_END; /* nothing more is sent for it */
            c->need_rset |= t->mail_ok;
        }
        break;
    case X_DATA:
        if (code == 354) {
            if (t->settled) {
                out_cmd(c, "."); /* a server that says 354 with no recipient: end the empty message */
            } else {
                out_body(c, t->r->batch->p);
            }
            expect(c, X_DOT, t);
            t->next = NX_DOT;
        } else {
            if (!t->settled) {
                if (cls == 2 || cls == 3) {
                    conn_close(c, F_DEFER, "DATA: unexpected reply");
                    return;
                }
                settle(c, t, code, text);
            }
            t->next = NX_END;
            c->need_rset |= t->mail_ok;
        }
        break;
    case X_DOT:
        if (!t->settled)
            settle(c, t, cls == 3 ? 451 : code, text);
        t->next = NX_END;
        break;
    case X_QUIT:
        conn_close(c, F_QUIET, "QUIT");
        return;
    }
    if (c->dead)
        return;
    txn_maybe_end(c, t);
    pump(c);
}

static void on_eof(struct snd_conn *c)
{
    if (c->st == C_QUIT || idle(c))
        conn_close(c, F_QUIET, "closed by the server");
    else
        conn_close(c, F_NEXT_MX, "connection closed by the server");
}

static void do_read(struct snd_conn *c)
{
    char buf[16384];
    for (int round = 0; round < 8 && !c->dead; round++) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n == 0) {
            on_eof(c);
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            char why[200];
            snprintf(why, sizeof why, "read: %s", strerror(errno));
            conn_close(c, F_NEXT_MX, why);
            return;
        }
        rearm(c);
        const char *p = buf;
        size_t left = (size_t)n;
        while (left && !c->dead) {
            size_t used;
            int st = snd_reply_feed(c->rp, p, left, &used);
            p += used;
            left -= used;
            if (st == SND_R_ERR) {
                char why[200];
                snprintf(why, sizeof why, "bad reply from the server: %s", snd_reply_error(c->rp));
                conn_close(c, F_DEFER, why);
                return;
            }
            if (st == SND_R_DONE) {
                handle_reply(c, snd_reply_code(c->rp), snd_reply_text(c->rp));
                if (!c->dead)
                    snd_reply_reset(c->rp);
            }
        }
        if ((size_t)n < sizeof buf)
            return;
    }
}

static void do_write(struct snd_conn *c)
{
    while (c->sn) {
        struct iovec iov[SND_CONN_SEGS];
        int niov = 0;
        for (int i = 0; i < c->sn; i++) {
            struct seg *s = &c->seg[(c->sh + i) % SND_CONN_SEGS];
            const char *base = s->b ? lc_buf_data(s->b) : s->p->body;
            size_t len = s->b ? lc_buf_len(s->b) : s->p->len;
            iov[niov].iov_base = (void *)(base + s->off);
            iov[niov].iov_len = len - s->off;
            niov++;
        }
        ssize_t n = writev(c->fd, iov, niov);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            char why[200];
            snprintf(why, sizeof why, "write: %s", strerror(errno));
            conn_close(c, F_NEXT_MX, why);
            return;
        }
        size_t w = (size_t)n;
        while (w && c->sn) {
            struct seg *s = &c->seg[c->sh];
            size_t len = (s->b ? lc_buf_len(s->b) : s->p->len) - s->off;
            if (w < len) {
                s->off += w;
                w = 0;
            } else {
                w -= len;
                seg_pop(c);
            }
        }
        rearm(c);
    }
    update_mask(c);
}

static void connected(struct snd_conn *c)
{
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
    if (err) {
        char why[200];
        snprintf(why, sizeof why, "connect to %s: %s", snd_dest_label(c->d), strerror(err));
        conn_close(c, F_NEXT_MX, why);
        return;
    }
    lc_debug("conn=%llu host=%s connected", (unsigned long long)c->id, snd_dest_label(c->d));
    c->st = C_BANNER;
    expect(c, X_BANNER, NULL);
    update_mask(c);
    rearm(c);
}

static void conn_io(struct lc_loop *loop, int fd, int events, void *arg)
{
    struct snd_conn *c = arg;
    c->in_cb++;
    if (c->st == C_CONNECTING) {
        connected(c);
    } else {
        if (events & LC_READ)
            do_read(c);
        if (!c->dead && (events & LC_WRITE))
            do_write(c);
    }
    c->in_cb--;
    if (c->dead && !c->in_cb)
        conn_destroy(c);
}

static void conn_timer(struct lc_loop *loop, void *arg)
{
    struct snd_conn *c = arg;
    c->timer = 0;
    int64_t now = lc_loop_now(loop);
    if (now < c->deadline) {
        c->timer = lc_loop_timer(loop, (long)(c->deadline - now), conn_timer, c);
        c->timer_at = c->deadline;
        return;
    }
    c->in_cb++;
    char why[200];
    if (c->st == C_CONNECTING && c->conn_errno) {
        snprintf(why, sizeof why, "connect to %s: %s", snd_dest_label(c->d), strerror(c->conn_errno));
        conn_close(c, F_NEXT_MX, why);
    } else if (idle(c)) {
        snd_conn_quit(c);
    } else if (c->st == C_QUIT) {
        conn_close(c, F_QUIET, "no reply to QUIT");
    } else {
        snprintf(why, sizeof why, "timeout after %d s in state %s%s%s", cstates[c->st].timeout_ms / 1000,
                 cstates[c->st].name, c->xn ? " waiting for the reply to " : "", c->xn ? xnames[c->exp[c->xh].k] : "");
        conn_close(c, F_NEXT_MX, why);
    }
    c->in_cb--;
    if (c->dead && !c->in_cb)
        conn_destroy(c);
}

/* ---- exported ---- */

struct snd_conn *snd_conn_new(struct snd *snd, struct snd_dest *d, const void *sa, unsigned salen)
{
    struct snd_conn *c = lc_calloc(1, sizeof *c);
    c->snd = snd;
    c->d = d;
    c->id = ++snd->nconns_total;
    c->rp = snd_reply_new();
    c->st = C_CONNECTING;
    c->fd = lc_net_connect(sa, (socklen_t)salen);
    if (c->fd < 0) {
        c->conn_errno = errno ? errno : EIO;
        arm(c, 0); /* reported from the loop, never from inside this call */
        return c;
    }
    lc_debug("conn=%llu host=%s connecting", (unsigned long long)c->id, snd_dest_label(d));
    update_mask(c);
    rearm(c);
    return c;
}

void snd_conn_kick(struct snd_conn *c)
{
    if (idle(c))
        pump(c);
}

int snd_conn_idle(const struct snd_conn *c)
{
    return !c->dead && idle(c);
}

int snd_conn_live(const struct snd_conn *c)
{
    return !c->dead && c->established && c->st == C_READY;
}

int snd_conn_closing(const struct snd_conn *c)
{
    return c->dead || c->st == C_QUIT;
}

void snd_conn_quit(struct snd_conn *c)
{
    if (!idle(c))
        return;
    out_cmd(c, "QUIT");
    expect(c, X_QUIT, NULL);
    c->st = C_QUIT;
    update_mask(c);
    rearm(c);
}

void snd_conn_free(struct snd_conn *c)
{
    if (!c)
        return;
    if (!c->dead && idle(c) && c->fd >= 0) {
        ssize_t w = write(c->fd, "QUIT\r\n", 6); /* best effort: we do not wait for the reply */
        (void)w;
    }
    conn_destroy(c);
}
