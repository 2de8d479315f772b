/* snd_conn: one SMTP client connection, as an explicit state machine with separate send and receive sides.
 *
 * Session states (table below, each with its timeout): connecting, banner, ehlo, helo, starttls, tls handshake,
 * ready, quit. In the ready
 * state the connection carries transactions, one per recipient (each has its own VERP envelope sender). The
 * send side writes commands as soon as the rules allow and records, for each command, the reply it expects in
 * a FIFO; the receive side takes replies off the FIFO in order (Postfix smtp_proto.c keeps the same split).
 * With PIPELINING (RFC 2920) a transaction is one write, "[RSET] MAIL FROM:<verp> RCPT TO:<rcpt> DATA"; the
 * shared post body goes out after the 354, and the next transaction's commands follow the body in the same
 * write (message content may start a command group). Without PIPELINING each command waits for its reply.
 * With CHUNKING (RFC 3030) and PIPELINING a transaction is "MAIL RCPT BDAT n LAST" followed by the message
 * itself, all in one write, and the next transaction may follow at once (up to SND_CONN_TXN in flight).
 * A transaction's per-recipient bytes are the envelope and, for list posts, the List-Unsubscribe header lines
 * (snd_post_unsub), written into the command buffer; the message body is a segment pointing at the post's shared
 * buffer (writev), never copied. A notice batch's `from` replaces the VERP envelope sender. When the list's
 * domain has DKIM keys, the copy's DKIM-Signature fields go first in the same buffer (snd_dkim.c). A copy signed
 * per recipient by the signing threads (snd_sign.c) may not be signed yet when its recipient is taken: its
 * transaction waits in state "sign" (the last one on the connection; nothing more is written until it is signed)
 * and goes on when snd_conn_signed is called; the transactions before it keep going meanwhile.
 * STARTTLS (GnuTLS, snd_tls.c): when the server offers it and the policy of the next recipient (per domain, else
 * sender.tls) is not `none`, the client sends STARTTLS after EHLO, handshakes, logs the TLS version and cipher,
 * and says EHLO again. A refused STARTTLS or a failed handshake is a failed connection setup (next MX, host
 * marked down); a recipient whose policy is `encrypt` is never given to a connection in clear: it is deferred.
 * Outcomes: 2xx after the final "." delivered; 4xx at MAIL, RCPT, DATA or "." deferred; 5xx bounced; 421 at
 * any point, a refused or timed-out connect, a dropped connection, a failed greeting or a timeout: every
 * recipient in flight moves to its next MX host (snd_rcpt_failover). A malformed or oversized reply (see
 * snd_reply.c) drops the connection and defers the recipients in flight, and so does a reply that cannot answer
 * the command it is taken for (a 3xx to MAIL, RCPT, RSET, BDAT or the final dot, a 2xx to DATA): a server that
 * mis-orders pipelined replies is a protocol error. A deferral goes to the fallback relay and the retry
 * schedule (snd_batch.c). After a transaction that ended
 * without its "." while MAIL was accepted, RSET precedes the next MAIL.
 * Persistent: a ready connection with nothing to do waits SND_IDLE_MS for more work, then sends QUIT (at once
 * when the global limit is reached and another destination waits for a connection slot).
 * Timeouts run on a lazy deadline, sender.reply_timeout for a whole reply: a completed reply or write progress
 * moves it, single bytes trickling in do not (a tarpit cannot hold a connection slot forever); one loop timer
 * checks it.
 * Every failure is handled from a loop callback; the connection is freed at the end of that callback.
 * Limits: at most SND_CONN_TXN transactions in flight, SND_CONN_EXP replies expected, SND_CONN_SEGS output
 * segments. No allocation per transaction: transactions live in a per-connection array and command buffers are
 * recycled.
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

#define SND_CONN_EXP 24
#define SND_CONN_TXN 4
#define SND_CONN_SEGS 16
#define SND_CMD_MAX 16384
#define SND_HDR_MAX SND_COPY_HDR_MAX

enum cstate { C_CONNECTING, C_BANNER, C_EHLO, C_HELO, C_STARTTLS, C_TLSHAKE, C_READY, C_QUIT, C_DEAD };

/* Timeouts: 0 = sender.reply_timeout. */
static const struct {
    const char *name;
    int timeout_ms;
} cstates[] = {
    [C_CONNECTING] = {"connecting", SND_CONNECT_MS},
    [C_BANNER] = {"banner", 0},
    [C_EHLO] = {"ehlo", 0},
    [C_HELO] = {"helo", 0},
    [C_STARTTLS] = {"starttls", 0},
    [C_TLSHAKE] = {"tls handshake", 0},
    [C_READY] = {"ready", 0}, /* SND_IDLE_MS when nothing is in flight */
    [C_QUIT] = {"quit", SND_QUIT_MS},
    [C_DEAD] = {"dead", 0},
};

/* Replies the receive side expects, in order. */
enum xkind { X_BANNER, X_EHLO, X_HELO, X_STARTTLS, X_RSET, X_MAIL, X_RCPT, X_DATA, X_DOT, X_BDAT, X_QUIT };
static const char *const xnames[] = {"banner", "EHLO", "HELO", "STARTTLS", "RSET", "MAIL FROM", "RCPT TO", "DATA",
                                     "end of data", "BDAT", "QUIT"};

/* Send state of a transaction: the next thing to write. */
enum nx { NX_SIGN, NX_MAIL, NX_RCPT, NX_DATA, NX_WAIT354, NX_DOT, NX_END }; /* NX_SIGN: waits for its signature */

struct txn {
    int used;
    struct snd_rcpt *r;
    int hdrlen;   /* the copy's own header lines (DKIM-Signature, List-Unsubscribe) */
    char hdr[SND_HDR_MAX];
    enum nx next;
    int pending;  /* expected replies not yet received */
    int mail_ok;  /* MAIL FROM got 2xx: the server is in a transaction */
    int settled;  /* the recipient has its outcome (later replies only end the transaction) */
};

struct seg {
    struct lc_buf *b;      /* commands (owned), or */
    struct snd_post *p;    /* a post body (referenced) */
    int raw;               /* p->raw (BDAT) instead of p->body */
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
    int pipelining, eightbitmime, size, chunking, starttls;
    struct snd_tls *tls;   /* after STARTTLS */
    int tls_want;          /* C_TLSHAKE: LC_READ or LC_WRITE */
    size_t tls_pend;       /* a TLS send that would block: repeated with (NULL, 0) */
    int pumping;
    char name[256];        /* the MX host name (SNI) */
    struct txn tpool[SND_CONN_TXN];
    struct lc_buf *spare[SND_CONN_SEGS]; /* recycled command buffers */
    int nspare;
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

static int state_ms(const struct snd_conn *c)
{
    return cstates[c->st].timeout_ms ? cstates[c->st].timeout_ms : c->snd->reply_ms;
}

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
    arm(c, idle(c) ? SND_IDLE_MS : state_ms(c));
}

/* ---- output ---- */

static void update_mask(struct snd_conn *c)
{
    if (c->dead || c->fd < 0)
        return;
    int mask = c->st == C_CONNECTING ? LC_WRITE
               : c->st == C_TLSHAKE  ? c->tls_want
                                     : (LC_READ | (c->sn || c->tls_pend ? LC_WRITE : 0));
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
    if (s->b && c->nspare < SND_CONN_SEGS) {
        lc_buf_reset(s->b);
        c->spare[c->nspare++] = s->b;
    } else {
        lc_buf_free(s->b);
    }
    snd_post_unref(s->p);
    memset(s, 0, sizeof *s);
    c->sh = (c->sh + 1) % SND_CONN_SEGS;
    c->sn--;
}

static const char *seg_base(const struct seg *s)
{
    return s->b ? lc_buf_data(s->b) : s->raw ? s->p->raw : s->p->body;
}

static size_t seg_len(const struct seg *s)
{
    return s->b ? lc_buf_len(s->b) : s->raw ? s->p->msglen : s->p->len;
}

/* out_raw appends octets to the command buffer at the end of the output queue. */
static void out_raw(struct snd_conn *c, const char *p, size_t n)
{
    struct seg *s = c->sn ? &c->seg[(c->sh + c->sn - 1) % SND_CONN_SEGS] : NULL;
    if (!s || !s->b) {
        s = seg_push(c);
        s->b = c->nspare ? c->spare[--c->nspare] : lc_buf_new(SND_CMD_MAX);
    }
    if (lc_buf_append(s->b, p, n) < 0)
        lc_panic("conn=%llu: command buffer full", (unsigned long long)c->id);
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
    out_raw(c, line, (size_t)n + 2);
}

static void out_body(struct snd_conn *c, struct snd_post *p, int raw)
{
    struct seg *s = seg_push(c);
    s->p = p;
    s->raw = raw;
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
    snd_tls_free(c->tls);
    c->tls = NULL;
    c->tls_pend = 0;
    while (c->sn)
        seg_pop(c);
    for (int i = 0; i < c->ntxn; i++) {
        if (c->txn[i]->next == NX_SIGN)
            snd_sign_unwait(c->txn[i]->r);
        c->txn[i]->used = 0;
    }
    c->ntxn = 0;
    c->xn = 0;
}

static void conn_destroy(struct snd_conn *c)
{
    conn_release(c);
    while (c->nspare)
        lc_buf_free(c->spare[--c->nspare]);
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
    t->used = 0;
}

static void send_mail(struct snd_conn *c, struct txn *t)
{
    struct snd_batch *b = t->r->batch;
    char verp[LC_ADDR_MAX + 1], params[80] = "";
    if (b->from) {
        snprintf(verp, sizeof verp, "%s", b->from);
    } else if (lc_verp_encode(c->snd->secret, b->post, t->r->sub, b->p->domain, verp, sizeof verp) < 0) {
        lc_panic("post=%llu: VERP address too long for domain %s", (unsigned long long)b->post, b->p->domain);
    }
    size_t pl = 0;
    if (c->size)
        pl += (size_t)snprintf(params + pl, sizeof params - pl, " SIZE=%zu", b->p->msglen + (size_t)t->hdrlen);
    if (c->eightbitmime && b->p->eightbit)
        snprintf(params + pl, sizeof params - pl, " BODY=8BITMIME");
    out_cmd(c, "MAIL FROM:<%s>%s", verp, params);
}

static int use_bdat(const struct snd_conn *c)
{
    return c->chunking && c->pipelining;
}

/* txn_new takes a free transaction slot for r and builds its header lines (snd_dkim_copy). If they cannot be
 * made (a signing failure), r is deferred and NULL returned: a copy is never sent unsigned when it should be
 * signed. */
static struct txn *txn_new(struct snd_conn *c, struct snd_rcpt *r)
{
    struct txn *t = NULL;
    for (int i = 0; i < SND_CONN_TXN && !t; i++)
        if (!c->tpool[i].used)
            t = &c->tpool[i];
    if (!t)
        lc_panic("conn=%llu: no free transaction slot", (unsigned long long)c->id);
    t->used = 1;
    t->r = r;
    t->next = NX_MAIL;
    t->pending = t->mail_ok = t->settled = 0;
    const struct snd_batch *b = r->batch;
    char err[600], reply[700];
    if (r->sign != SND_S_NONE) { /* signed by the pool */
        t->hdrlen = snd_sign_take(r, c, t->hdr, sizeof t->hdr, err, sizeof err);
        if (t->hdrlen == -2) {
            t->hdrlen = 0;
            t->next = NX_SIGN;
            return t;
        }
    } else {
        t->hdrlen = snd_dkim_copy(c->snd, b->p, b->from == NULL, r->sub, t->hdr, sizeof t->hdr, err, sizeof err);
    }
    if (t->hdrlen < 0) {
        t->used = 0;
        lc_warn("post=%llu rcpt=<%s>: cannot make the copy's header lines: %s", (unsigned long long)b->post, r->addr,
                err);
        snprintf(reply, sizeof reply, "451 4.7.0 %s", err);
        snd_rcpt_outcome(r, SND_O_DEFERRED, reply);
        return NULL;
    }
    return t;
}

/* pump is the send side: it writes every command the rules allow now. */
static void pump(struct snd_conn *c)
{
    if (c->dead || c->pumping)
        return;
    c->pumping = 1;
    while (c->st == C_READY && !c->dead) {
        struct txn *t = c->ntxn ? c->txn[c->ntxn - 1] : NULL;
        if (t && t->next <= NX_DATA) {
            if (t->next == NX_SIGN)
                break; /* snd_conn_signed goes on */
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
                if (use_bdat(c)) {
                    struct snd_post *p = t->r->batch->p;
                    out_cmd(c, "BDAT %zu LAST", p->msglen + (size_t)t->hdrlen);
                    if (t->hdrlen)
                        out_raw(c, t->hdr, (size_t)t->hdrlen);
                    out_body(c, p, 1);
                    expect(c, X_BDAT, t);
                    t->next = NX_DOT; /* all written: the final reply is all that is left */
                } else {
                    out_cmd(c, "DATA");
                    expect(c, X_DATA, t);
                    t->next = NX_WAIT354;
                }
                break;
            }
            continue;
        }
        /* Start another transaction? Pipelined: once the previous one's body is on its way. */
        if (c->ntxn >= (c->pipelining ? SND_CONN_TXN : 1) || (t && t->next == NX_WAIT354) ||
            (!c->pipelining && c->xn) || c->xn + 5 > SND_CONN_EXP || c->sn + 4 > SND_CONN_SEGS)
            break;
        struct snd_rcpt *r = snd_dest_pull(c->d);
        if (!r)
            break;
        if (r->tls == SND_TLS_ENCRYPT && !c->tls) {
            snd_rcpt_outcome(r, SND_O_DEFERRED,
                             "450 4.7.10 TLS policy encrypt: the server does not offer STARTTLS; not sent in clear");
            continue;
        }
        struct txn *nt = txn_new(c, r);
        if (nt)
            c->txn[c->ntxn++] = nt;
    }
    c->pumping = 0;
    if (c->dead)
        return;
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
            else if (sp == 8 && !strncasecmp(k, "CHUNKING", 8))
                c->chunking = 1;
            else if (sp == 8 && !strncasecmp(k, "STARTTLS", 8))
                c->starttls = 1;
        }
        l = e;
    }
}

static void become_ready(struct snd_conn *c)
{
    c->st = C_READY;
    c->established = 1;
    lc_debug("conn=%llu host=%s ready pipelining=%d chunking=%d 8bitmime=%d size=%d tls=%d", (unsigned long long)c->id,
             snd_dest_label(c->d), c->pipelining, c->chunking, c->eightbitmime, c->size, c->tls != NULL);
    snd_dest_ready(c->d, c);
}

/* want_tls: STARTTLS now? Offered, not yet on, and the next recipient's policy (or sender.tls) is not none. */
static int want_tls(const struct snd_conn *c)
{
    if (c->tls || !c->starttls)
        return 0;
    const struct snd_rcpt *r = snd_dest_peek(c->d);
    return (r ? r->tls : c->snd->tls) != SND_TLS_NONE;
}

/* tls_step drives the handshake; done: log the session and say EHLO again. */
static void tls_step(struct snd_conn *c)
{
    char err[200];
    int want = LC_READ;
    int rc = snd_tls_handshake(c->tls, &want, err, sizeof err);
    if (rc < 0) {
        conn_close(c, F_NEXT_MX, err);
        return;
    }
    if (rc == 0) {
        c->tls_want = want;
        update_mask(c);
        return;
    }
    char desc[200];
    snd_tls_describe(c->tls, desc, sizeof desc);
    lc_info("conn=%llu host=%s tls=%s", (unsigned long long)c->id, snd_dest_label(c->d), desc);
    c->pipelining = c->eightbitmime = c->size = c->chunking = c->starttls = 0;
    out_cmd(c, "EHLO %s", c->snd->helo);
    expect(c, X_EHLO, NULL);
    c->st = C_EHLO;
    update_mask(c);
    rearm(c);
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
    if (cls == 3 && k != X_DATA && k != X_BANNER) {
        /* only DATA may be answered with 3xx: the server mis-ordered pipelined replies or is broken */
        snprintf(why, sizeof why, "protocol error: %d in reply to %s", code, xnames[k]);
        conn_close(c, c->established ? F_DEFER : F_NEXT_MX, why);
        return;
    }
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
            if (want_tls(c)) {
                out_cmd(c, "STARTTLS");
                expect(c, X_STARTTLS, NULL);
                c->st = C_STARTTLS;
                break;
            }
            become_ready(c);
        } else if (c->tls) {
            reply_why(why, sizeof why, k, text);
            conn_close(c, F_NEXT_MX, why);
            return;
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
    case X_STARTTLS:
        if (cls != 2) {
            reply_why(why, sizeof why, k, text);
            conn_close(c, F_NEXT_MX, why);
            return;
        }
        c->tls = snd_tls_new(c->snd->tlsctx, c->fd, c->name);
        if (!c->tls) {
            conn_close(c, F_NEXT_MX, "cannot start a TLS session");
            return;
        }
        c->st = C_TLSHAKE; /* the handshake starts once the reply is taken (do_read) */
        return;
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
            settle(c, t, code, text);
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
                if (t->hdrlen)
                    out_raw(c, t->hdr, (size_t)t->hdrlen);
                out_body(c, t->r->batch->p, 0);
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
            settle(c, t, code, text);
        t->next = NX_END;
        break;
    case X_BDAT:
        if (!t->settled)
            settle(c, t, code, text);
        else if (cls == 2)
            lc_warn("conn=%llu host=%s: BDAT accepted after MAIL or RCPT failed", (unsigned long long)c->id,
                    snd_dest_label(c->d));
        if (cls != 2)
            c->need_rset |= t->mail_ok;
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
    for (int round = 0; round < 8 && !c->dead && c->st != C_TLSHAKE; round++) {
        ssize_t n;
        char why[200];
        if (c->tls) {
            n = snd_tls_recv(c->tls, buf, sizeof buf, why, sizeof why);
            if (n == -2)
                return;
            if (n == -1) {
                conn_close(c, F_NEXT_MX, why);
                return;
            }
        } else {
            n = read(c->fd, buf, sizeof buf);
        }
        if (n == 0) {
            on_eof(c);
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            snprintf(why, sizeof why, "read: %s", strerror(errno));
            conn_close(c, F_NEXT_MX, why);
            return;
        }
        /* no rearm here: only a whole reply (handle_reply -> pump) moves the deadline */
        const char *p = buf;
        size_t left = (size_t)n;
        while (left && !c->dead) {
            size_t used;
            int st = snd_reply_feed(c->rp, p, left, &used);
            p += used;
            left -= used;
            if (st == SND_R_ERR) {
                snprintf(why, sizeof why, "bad reply from the server: %s", snd_reply_error(c->rp));
                conn_close(c, F_DEFER, why);
                return;
            }
            if (st == SND_R_DONE) {
                handle_reply(c, snd_reply_code(c->rp), snd_reply_text(c->rp));
                if (!c->dead)
                    snd_reply_reset(c->rp);
                if (!c->dead && c->st == C_TLSHAKE) {
                    if (left) { /* RFC 3207 5: nothing may follow the STARTTLS reply in clear */
                        conn_close(c, F_NEXT_MX, "protocol error: data after the STARTTLS reply");
                        return;
                    }
                    tls_step(c);
                    return;
                }
            }
        }
        if ((size_t)n < sizeof buf && !(c->tls && snd_tls_pending(c->tls)))
            return;
    }
}

/* tls_write sends the output queue through the TLS session, one segment at a time. */
static void tls_write(struct snd_conn *c)
{
    char why[200];
    while (c->sn || c->tls_pend) {
        long n;
        if (c->tls_pend) {
            n = snd_tls_send(c->tls, NULL, 0, why, sizeof why);
        } else {
            struct seg *s = &c->seg[c->sh];
            size_t len = seg_len(s) - s->off;
            n = snd_tls_send(c->tls, seg_base(s) + s->off, len, why, sizeof why);
            if (n == -2)
                c->tls_pend = len;
        }
        if (n == -2)
            break;
        if (n < 0) {
            conn_close(c, F_NEXT_MX, why);
            return;
        }
        c->tls_pend = 0;
        size_t w = (size_t)n;
        while (w && c->sn) {
            struct seg *s = &c->seg[c->sh];
            size_t len = seg_len(s) - s->off;
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

static void do_write(struct snd_conn *c)
{
    if (c->tls) {
        tls_write(c);
        return;
    }
    while (c->sn) {
        struct iovec iov[SND_CONN_SEGS];
        int niov = 0;
        for (int i = 0; i < c->sn; i++) {
            struct seg *s = &c->seg[(c->sh + i) % SND_CONN_SEGS];
            iov[niov].iov_base = (void *)(seg_base(s) + s->off);
            iov[niov].iov_len = seg_len(s) - s->off;
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
            size_t len = seg_len(s) - s->off;
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
    } else if (c->st == C_TLSHAKE) {
        tls_step(c);
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
        snprintf(why, sizeof why, "timeout after %d s in state %s%s%s", state_ms(c) / 1000,
                 cstates[c->st].name, c->xn ? " waiting for the reply to " : "", c->xn ? xnames[c->exp[c->xh].k] : "");
        conn_close(c, F_NEXT_MX, why);
    }
    c->in_cb--;
    if (c->dead && !c->in_cb)
        conn_destroy(c);
}

/* ---- exported ---- */

struct snd_conn *snd_conn_new(struct snd *snd, struct snd_dest *d, const void *sa, unsigned salen, const char *name)
{
    struct snd_conn *c = lc_calloc(1, sizeof *c);
    c->snd = snd;
    c->d = d;
    snprintf(c->name, sizeof c->name, "%s", name ? name : "");
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

void snd_conn_signed(struct snd_conn *c, struct snd_rcpt *r)
{
    int i;
    for (i = 0; i < c->ntxn && !(c->txn[i]->r == r && c->txn[i]->next == NX_SIGN); i++)
        ;
    if (c->dead || i == c->ntxn)
        return;
    struct txn *t = c->txn[i];
    char err[600], reply[700];
    c->in_cb++;
    t->hdrlen = snd_sign_take(r, c, t->hdr, sizeof t->hdr, err, sizeof err);
    if (t->hdrlen >= 0) {
        t->next = NX_MAIL;
    } else { /* not sent unsigned: deferred, and the transaction (nothing of it was written) goes */
        t->hdrlen = 0;
        for (; i + 1 < c->ntxn; i++)
            c->txn[i] = c->txn[i + 1];
        c->ntxn--;
        t->used = 0;
        lc_warn("post=%llu rcpt=<%s>: cannot make the copy's header lines: %s", (unsigned long long)r->batch->post,
                r->addr, err);
        snprintf(reply, sizeof reply, "451 4.7.0 %s", err);
        snd_rcpt_outcome(r, SND_O_DEFERRED, reply);
    }
    pump(c);
    c->in_cb--;
    if (c->dead && !c->in_cb)
        conn_destroy(c);
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
