/* snd.h: private header of listcast-sender, the delivery engine of listcast.
 *
 * The sender reads recipient batches from the Redis stream lc:stream:deliveries (group "sender", consumer
 * node.name), delivers each recipient in its own SMTP transaction with a signed VERP envelope sender over
 * persistent, pipelined connections, and acknowledges a batch (counters, bounce entries, retries, the last reply
 * of each deferred recipient in lc:postdefer:ID, and XACK in one MULTI/EXEC) once every recipient in it has an outcome. One epoll loop;
 * per-recipient DKIM signatures are made by a pool of signing threads (snd_sign.c), the only other threads. Files:
 *   snd_main.c   main(): arguments, configuration, log, secret, loop, signals, run, clean exit.
 *   snd_queue.c  Redis: the blocking reader (XREADGROUP), the write connection (post loads, commits, XAUTOCLAIM,
 *                heartbeat XCLAIM), reconnect with backoff, the housekeeping tick.
 *   snd_post.c   the post cache: message body built once per post (dot-stuffed, CRLF, ".\r\n"), list domain.
 *   snd_batch.c  batches: stream entry parsing, recipient routing along the MX list, outcomes and their log.
 *   snd_dest.c   destinations (one IP:port each): recipient queues, connection limits, down marking.
 *   snd_conn.c   one SMTP client connection: explicit state machine, pipelining, timeouts.
 *   snd_reply.c  a bounded SMTP reply parser (pure, no I/O).
 *   snd_tls.c    STARTTLS client sessions (GnuTLS, no certificate verification: RFC 7435 opportunistic) and the
 *                per-domain TLS policy cache (lc:tlspolicy).
 *   snd_retry.c  the retry schedule: backoff with jitter, expiry, the lc:retry members and the due-retry poller.
 *   snd_dkim.c   DKIM: the key directory STATE.DIR/dkim/DOMAIN/ (rescanned when it changes), the per-post signing
 *                state and each copy's DKIM-Signature and List-Unsubscribe lines.
 *   snd_sign.c   the signing thread pool (sender.sign_threads): per-recipient signatures made ahead of the
 *                connections, results back to the loop through an eventfd.
 * Ownership: struct snd owns the batch list, the post cache and the destination table; a batch owns its
 * recipients and holds a reference on its post; a destination owns its connections; a connection holds
 * references on the posts whose bodies are in its output queue and borrows the recipients it is working on
 * (a batch is never freed while one of its recipients lacks an outcome).
 * Deferred recipients (4xx, no reachable MX, protocol errors) go to sender.fallback_relay first (first attempt
 * only), then into the retry schedule lc:retry (written in the batch's commit), from which a poller moves due
 * recipients back into lc:stream:deliveries as new batches; past sender.max_lifetime they bounce as expired.
 */
#ifndef SND_H
#define SND_H

#include <stddef.h>
#include <stdint.h>

#include "lc_addr.h"

struct lc_loop;
struct lc_cfg;
struct lc_secret;
struct redisReply;

#define SND_PROG "listcast-sender"

#define SND_READ_COUNT 16          /* entries per XREADGROUP */
#define SND_READ_BLOCK_MS 1000     /* XREADGROUP BLOCK */
/* sender.claim_idle (claim_ms): entries idle longer belong to a dead consumer; the XAUTOCLAIM and heartbeat
 * period is half of it, so live work is touched twice within any idle window. */
#define SND_TICK_MS 1000           /* housekeeping tick */
#define SND_COMMIT_RETRY_MS 5000   /* a failed commit is tried again after this */
#define SND_REDIS_BACKOFF_MIN 250  /* reconnect backoff, doubling up to the max */
#define SND_REDIS_BACKOFF_MAX 30000
#define SND_MAX_TARGETS 32         /* NAME/IP pairs per batch */
#define SND_MAX_RCPTS 10000        /* recipients per batch (sender.batch_size is at most 10,000) */
#define SND_RCPTS_PER_CONN 10      /* queued recipients that justify one more connection to a host */
#define SND_CONNECT_MS 30000       /* connect timeout */
#define SND_IDLE_MS 10000          /* an idle connection is closed (QUIT) after this */
#define SND_QUIT_MS 10000          /* wait for the QUIT reply at most this long */
#define SND_LINE_MAX 4096          /* one reply line, without CRLF */
#define SND_REPLY_MAX 65536        /* one whole (multi-line) reply */
#define SND_RETRY_POLL_MS 1000     /* due-retry poller period */
#define SND_RETRY_MOVE 1000        /* recipients moved back to work per poll */
/* the deferral of a recipient whose batch has no route (hosts "": the expander's DNS lookup failed temporarily) */
#define SND_NOROUTE_REPLY "451 4.4.3 temporary DNS failure: no route to the recipient's domain yet"
/* lc:postdefer:ID: a deferred recipient's last deferral "UNIX_TIME attempt N: REPLY", at most this many octets;
 * the hash lives sender.max_lifetime plus this long */
#define SND_DEFER_VALUE_MAX 300
#define SND_DEFER_TTL_EXTRA 86400
#define SND_TLSPOL_MS 30000        /* lc:tlspolicy reload period */
#define SND_HDR_LINES_MAX 2048     /* per-recipient List-Unsubscribe lines */
#define SND_COPY_HDR_MAX 16384     /* a copy's own header lines: DKIM-Signature fields and List-Unsubscribe */
#define SND_SIGN_MAX_THREADS 64    /* sender.sign_threads at most */

/* ---- the daemon ---- */

struct snd_post;
struct snd_dest;
struct snd_conn;
struct snd_queue;
struct snd_batch;

struct snd {
    struct lc_loop *loop;
    const struct lc_cfg *cfg;
    const struct lc_secret *secret;
    const char *node;      /* consumer name */
    const char *helo;      /* EHLO name */
    const char *relay;     /* "" or HOST:PORT taking every delivery */
    const char *fallback;  /* "" or HOST:PORT taking recipients whose first attempt was deferred */
    const char *public_url; /* http.public_url, without a trailing '/' */
    int tls;               /* enum snd_tls_policy: sender.tls */
    int reply_ms;          /* sender.reply_timeout */
    int claim_ms;          /* sender.claim_idle */
    int mx_backoff_ms;     /* sender.mx_backoff */
    int retry_min, retry_max, max_lifetime; /* seconds */
    int batch_size;
    struct snd_tls_ctx *tlsctx; /* GnuTLS credentials and the policy table */
    struct snd_dkim *dkim;      /* DKIM keys (snd_dkim.c) */
    struct snd_sign *sign;      /* the signing thread pool (snd_sign.c); NULL: sign in the loop thread */
    int mx_port;
    int concurrency;       /* global connection limit */
    int per_mx;            /* connections to one destination */
    int max_batches;       /* batches held in memory */
    int stopping;
    struct snd_queue *q;
    struct snd_batch *batches; /* every batch in memory (doubly linked) */
    int nbatches;
    struct snd_post *posts;    /* post cache (snd_post.c) */
    struct snd_dest **dests;   /* destination hash table (snd_dest.c) */
    int ndests;
    int nconns;                /* open connections, all destinations */
    uint64_t nconns_total;     /* connections opened since start (ids) */
};

/* ---- snd_reply.c: bounded SMTP reply parser ---- */

enum snd_reply_st { SND_R_MORE = 0, SND_R_DONE = 1, SND_R_ERR = -1 };
struct snd_reply;

/* snd_reply_new makes a parser for one connection; snd_reply_free(NULL) is a no-op. */
struct snd_reply *snd_reply_new(void);
void snd_reply_free(struct snd_reply *r);
/* snd_reply_feed consumes bytes up to the end of one reply: SND_R_DONE (a reply is complete; *used bytes were
 * taken), SND_R_MORE (all n bytes taken), SND_R_ERR (malformed or over a limit; see snd_reply_error). */
int snd_reply_feed(struct snd_reply *r, const char *p, size_t n, size_t *used);
/* After SND_R_DONE: the code (200..599) and the text, lines joined by '\n', each with its "250-"/"250 ". */
int snd_reply_code(const struct snd_reply *r);
const char *snd_reply_text(const struct snd_reply *r);
/* snd_reply_reset readies the parser for the next reply. */
void snd_reply_reset(struct snd_reply *r);
const char *snd_reply_error(const struct snd_reply *r);
/* snd_reply_quote writes text as a log-safe quoted value body (no quotes added; '"' '\\' escaped, line breaks
 * shown as a space, other control octets as '?'), cut to outlen-1 octets. */
void snd_reply_quote(const char *text, char *out, size_t outlen);

/* ---- snd_post.c: post cache ---- */

enum snd_post_st { SND_P_NEW, SND_P_LOADING, SND_P_READY, SND_P_MISSING };
/* lc:list:LIST list_unsubscribe: personal (default; RFC 8058 one-click per subscriber, signed per copy) or mailto
 * (one List-Unsubscribe for every copy, <mailto:LIST-unsubscribe@DOMAIN>: signed once per post). */
enum snd_unsub { SND_UNSUB_PERSONAL = 0, SND_UNSUB_MAILTO = 1 };

struct snd_post {
    struct snd *snd;
    uint64_t id;
    int refs;
    enum snd_post_st state;
    char *body;          /* dot-stuffed message with CRLF line ends and the final ".\r\n" */
    size_t len;
    size_t msglen;       /* the message as the server receives it, CRLF and unstuffed (SIZE=) */
    int eightbit;        /* has octets >= 0x80 (BODY=8BITMIME) */
    char *raw;           /* the message with CRLF line ends, not dot-stuffed, no final dot (BDAT); msglen long */
    char domain[256];    /* list domain, lower case: the VERP domain */
    char local[LC_ADDR_MAX + 1]; /* list local part (List-Unsubscribe: LOCAL-unsubscribe@DOMAIN) */
    int notice;          /* kind = notice: no List-Unsubscribe header */
    int unsub;           /* enum snd_unsub: the list's list_unsubscribe setting when the post was loaded */
    int64_t created;     /* unix s, 0 if unknown: the start of max_lifetime */
    struct snd_dkim_set *dkim_set; /* the keys it is signed with (referenced), NULL: unsigned */
    struct lc_dkim_msg *dkim_msg;  /* body hash and common header hash state */
    char *dkim_sig;      /* notices: the DKIM-Signature fields, made once */
    size_t dkim_siglen;
    char *dkim_err;      /* the post cannot be signed: its copies are deferred with this reply */
    struct snd_batch *waiters; /* batches waiting for the load (linked by wnext) */
    struct snd_post *next, *prev;
};

/* snd_post_get returns the cached post (a new SND_P_NEW one if absent) with one more reference. */
struct snd_post *snd_post_get(struct snd *snd, uint64_t id);
void snd_post_ref(struct snd_post *p);
/* snd_post_unref drops a reference; the last one evicts and frees the post. NULL is a no-op. */
void snd_post_unref(struct snd_post *p);
/* snd_post_set_body builds the wire body from the stored message (len bytes). */
void snd_post_set_body(struct snd_post *p, const char *msg, size_t len);
/* snd_post_set_list takes the list address and keeps its domain; returns 0 or -1 (not an address). */
int snd_post_set_list(struct snd_post *p, const char *list, size_t len);
/* snd_post_unsub writes the per-recipient List-Unsubscribe and List-Unsubscribe-Post header lines (CRLF ended)
 * for subscriber sub into out; returns the length, 0 for notices (no header), or -1 if it does not fit. */
int snd_post_unsub(const struct snd_post *p, const struct lc_secret *secret, const char *public_url, uint64_t sub,
                   char *out, size_t outlen);
/* snd_post_free_all frees the cache at exit (references are ignored). */
void snd_post_free_all(struct snd *snd);

/* ---- snd_dkim.c: DKIM signing ---- */

struct snd_dkim;
struct snd_dkim_set;
struct lc_dkim_msg;
/* snd_dkim_new reads the keys under STATE.DIR/dkim (logging each domain's keys or why they are unusable). */
struct snd_dkim *snd_dkim_new(const char *state_dir);
void snd_dkim_free(struct snd_dkim *dk);
/* snd_dkim_post prepares a loaded post for signing with the current keys of its domain; sets p->dkim_err if
 * the domain has keys but the post cannot be signed. */
void snd_dkim_post(struct snd *snd, struct snd_post *p);
/* snd_dkim_post_free drops a post's signing state. */
void snd_dkim_post_free(struct snd_post *p);
/* snd_dkim_per_copy: 1 if the post's copies are signed one by one (a signed list post with a personal
 * List-Unsubscribe), 0 if they share the signature made by snd_dkim_post (or are not signed). */
int snd_dkim_per_copy(const struct snd_post *p);
/* snd_dkim_unsub writes subscriber sub's List-Unsubscribe lines (snd_post_unsub; none if too long, logged). */
int snd_dkim_unsub(struct snd *snd, const struct snd_post *p, uint64_t sub, char *out, size_t outlen);
/* snd_dkim_sign_copy makes a copy's header block: its DKIM-Signature fields over the post and the unsub lines,
 * then those lines, in a new buffer (*out, *outlen). Thread-safe (the signing threads call it): it only reads the
 * post's signing state. 0, or -1 + err. */
int snd_dkim_sign_copy(const struct snd_post *p, const char *unsub, size_t ul, char **out, int *outlen, char *err,
                       size_t errlen);
/* snd_dkim_copy writes a copy's own header lines into out: its DKIM-Signature fields (if the post is signed),
 * then, when unsub, the List-Unsubscribe lines of subscriber sub. Returns the length, or -1 + err. */
int snd_dkim_copy(struct snd *snd, const struct snd_post *p, int unsub, uint64_t sub, char *out, size_t outlen,
                  char *err, size_t errlen);

/* ---- snd_sign.c: the signing thread pool ---- */

/* A recipient's signing state: NONE (not signed by the pool: the copy is made in the loop thread when sent),
 * QUEUED (in the backlog), RUNNING (a job in the pool), READY (hdr holds the header block), FAILED. */
enum snd_sign_st { SND_S_NONE = 0, SND_S_QUEUED, SND_S_RUNNING, SND_S_READY, SND_S_FAILED };
struct snd_sign;
struct snd_sign_job;
struct snd_rcpt;
/* snd_sign_new starts nthreads (1..SND_SIGN_MAX_THREADS) signing threads and watches their eventfd; NULL + err. */
struct snd_sign *snd_sign_new(struct snd *snd, int nthreads, char *err, size_t errlen);
/* snd_sign_free stops and joins the threads and drops unfinished jobs (after the batches are freed, before the
 * posts). NULL is a no-op. */
void snd_sign_free(struct snd_sign *s);
int snd_sign_threads(const struct snd_sign *s);
/* snd_sign_batch queues the signatures of a starting batch's recipients (a post signed per copy only). */
void snd_sign_batch(struct snd_batch *b);
/* snd_sign_take gives a connection the header block of a queued recipient: its length (copied to out), -1 + err
 * (signing failed: defer it), or -2: not ready, c waits; snd_conn_signed(c, r) is called when it is. */
int snd_sign_take(struct snd_rcpt *r, struct snd_conn *c, char *out, size_t outlen, char *err, size_t errlen);
/* snd_sign_unwait: the connection waiting for r goes away. */
void snd_sign_unwait(struct snd_rcpt *r);
/* snd_sign_forget drops r's signing state (its outcome is final, or its batch is freed). */
void snd_sign_forget(struct snd_rcpt *r);

/* ---- snd_batch.c: batches and recipients ---- */

enum snd_outcome { SND_O_NONE = 0, SND_O_DELIVERED, SND_O_DEFERRED, SND_O_BOUNCED };
enum snd_batch_st { SND_B_LOADING, SND_B_SENDING, SND_B_COMMIT_WAIT, SND_B_COMMITTING };

struct snd_target {
    char name[256];      /* MX host name (or "relay") for logs */
    char key[80];        /* "ip:port" ("[v6]:port"): the destination key, as lc_net_ntop writes it */
};

struct snd_rcpt {
    struct snd_batch *batch;
    uint64_t sub;
    const char *addr;            /* normalised, in the batch's pool */
    int hop;                     /* index of the target being tried (-1: bounced locally, no host) */
    int attempt;                 /* attempts made before this one (0: first attempt) */
    int64_t first;               /* unix s of the first attempt (0: this one) */
    int64_t due;                 /* SND_O_DEFERRED: unix s of the next attempt */
    unsigned char tls;           /* enum snd_tls_policy for the recipient's domain */
    unsigned char sign;          /* enum snd_sign_st (snd_sign.c) */
    enum snd_outcome outcome;
    char *reply;                 /* reply text of a bounce, or (deferred) the lc:postdefer:ID value (owned) */
    struct snd_rcpt *next;       /* destination queue link */
    /* signing (snd_sign.c, loop thread only) */
    struct snd_rcpt *sprev, *snext; /* the signing backlog (SND_S_QUEUED) */
    struct snd_sign_job *job;    /* SND_S_RUNNING: the job made for it */
    struct snd_conn *waiter;     /* a connection whose transaction waits for the signature */
    char *hdr;                   /* SND_S_READY: the copy's header block; SND_S_FAILED: why (owned) */
    int hdrlen;
};

struct snd_batch {
    struct snd *snd;
    char id[48];                 /* stream entry id */
    uint64_t post;
    struct snd_post *p;          /* referenced */
    struct snd_target *targets;
    int ntargets;
    struct snd_rcpt *rcpts;
    int nrcpts;
    char *pool;                  /* the recipients' addresses, NUL-separated */
    int left;                    /* recipients without an outcome */
    int fb;                      /* index of the fallback relay target, -1 if none */
    char *hosts;                 /* the entry's hosts field (owned), kept for retries */
    char *from;                  /* the entry's from field (notices; owned), NULL: VERP per recipient */
    int64_t started;             /* unix s the batch started */
    int drop;                    /* unusable entry: acknowledge only, count nothing */
    enum snd_batch_st state;
    int64_t retry_at;            /* SND_B_COMMIT_WAIT: not before (loop ms) */
    struct snd_batch *next, *prev, *wnext;
};

/* snd_batch_find returns the batch in memory for a stream entry id, or NULL. */
struct snd_batch *snd_batch_find(struct snd *snd, const char *id);
/* snd_batch_add makes a batch from a stream entry (an array reply of field/value pairs, or NIL for an entry
 * that was deleted) and starts it: sends it, waits for its post, or (unusable) queues its bare XACK. */
void snd_batch_add(struct snd *snd, const char *id, const struct redisReply *fields);
/* snd_batch_start routes every recipient of a batch whose post is loaded (or drops it if the post is gone). */
void snd_batch_start(struct snd_batch *b);
/* snd_batch_free unlinks and frees a batch (after its commit, or at exit). */
void snd_batch_free(struct snd_batch *b);
/* snd_rcpt_route queues a recipient at its current target, skipping targets that are down; none left: deferred
 * with why. */
void snd_rcpt_route(struct snd_rcpt *r, const char *why);
/* snd_rcpt_failover moves a recipient to its next target after a connection failure (why: the reason). */
void snd_rcpt_failover(struct snd_rcpt *r, const char *why);
/* snd_rcpt_outcome records a final outcome, logs it, and commits the batch when it was the last one. reply is
 * the server's reply text or a local reason. */
void snd_rcpt_outcome(struct snd_rcpt *r, enum snd_outcome o, const char *reply);
/* snd_rcpt_host formats "name[ip:port]" of the recipient's current (or last) target, or "none". */
void snd_rcpt_host(const struct snd_rcpt *r, char *out, size_t outlen);
const char *snd_outcome_name(enum snd_outcome o);
/* snd_rcpt_ntargets is the number of targets the recipient may use (the fallback relay on a first attempt only). */
int snd_rcpt_ntargets(const struct snd_rcpt *r);

/* ---- snd_retry.c: the retry schedule ---- */

/* snd_retry_plan decides what a deferral means: 1 (expired: bounce with the 4.4.7 reply written to out) or 0
 * (r->due set to the next attempt). now: unix s. */
int snd_retry_plan(const struct snd *snd, struct snd_rcpt *r, int64_t now, char *out, size_t outlen);
/* snd_retry_member writes the lc:retry member of a deferred recipient to b (reset first); -1 if too long. */
struct lc_buf;
int snd_retry_member(const struct snd_rcpt *r, int64_t now, struct lc_buf *b);
/* snd_retry_attempts parses an entry's attempts field into the batch's recipients (by position). */
void snd_retry_attempts(struct snd_batch *b, const char *s, size_t n);
/* SND_LUA_RETRY_POLL moves due members of KEYS[1] (lc:retry) into KEYS[2] (lc:stream:deliveries), grouped by
 * post, hosts and from, at most ARGV[3] recipients per batch; ARGV[1] = now (unix s), ARGV[2] = max members.
 * Members without hosts (no route: temporary DNS failure) go to KEYS[3] (lc:stream:posts) as reroute entries
 * for the expander instead. Returns {members moved, of which rerouted}. */
extern const char snd_lua_retry_poll[];

/* ---- snd_tls.c: STARTTLS ---- */

enum snd_tls_policy { SND_TLS_NONE = 0, SND_TLS_MAY = 1, SND_TLS_ENCRYPT = 2 };
struct snd_tls_ctx;
struct snd_tls;

/* snd_tls_policy_parse maps "none"/"may"/"encrypt" to the enum; -1 otherwise. */
int snd_tls_policy_parse(const char *s, size_t n);
const char *snd_tls_policy_name(int pol);
/* snd_tls_ctx_new makes the client credentials; NULL (with err) if GnuTLS fails. */
struct snd_tls_ctx *snd_tls_ctx_new(char *err, size_t errlen);
void snd_tls_ctx_free(struct snd_tls_ctx *x);
/* snd_tls_policy_set replaces the per-domain table from an HGETALL reply (field/value strings). */
void snd_tls_policy_set(struct snd_tls_ctx *x, const struct redisReply *hash);
/* snd_tls_policy_of returns the policy for a recipient domain (the table's, else def). */
int snd_tls_policy_of(const struct snd_tls_ctx *x, const char *domain, int def);
/* snd_tls_new starts a client session on fd; NULL on failure. */
struct snd_tls *snd_tls_new(struct snd_tls_ctx *x, int fd, const char *servername);
void snd_tls_free(struct snd_tls *t);
/* snd_tls_handshake: 1 done, 0 in progress (*want: LC_READ or LC_WRITE), -1 failed (why in err). */
int snd_tls_handshake(struct snd_tls *t, int *want, char *err, size_t errlen);
/* snd_tls_recv/send: bytes, 0 (recv: the peer closed), -2 would block, -1 error (why in err). A send that
 * would block must be repeated with the same arguments. */
long snd_tls_recv(struct snd_tls *t, char *buf, size_t n, char *err, size_t errlen);
long snd_tls_send(struct snd_tls *t, const char *buf, size_t n, char *err, size_t errlen);
/* snd_tls_pending: decrypted bytes buffered in the session. */
size_t snd_tls_pending(struct snd_tls *t);
/* snd_tls_describe writes "TLS1.3 cipher=AES-256-GCM" for the log. */
void snd_tls_describe(struct snd_tls *t, char *out, size_t outlen);

/* ---- snd_dest.c: destinations ---- */

/* snd_dest_enqueue queues r at target t (creating the destination); if the destination is down, returns -1
 * and queues nothing. */
int snd_dest_enqueue(struct snd *snd, const struct snd_target *t, struct snd_rcpt *r);
/* snd_dest_peek returns the next queued recipient without taking it (NULL: none). */
struct snd_rcpt *snd_dest_peek(struct snd_dest *d);
/* snd_dest_pull hands the next queued recipient to a connection (NULL: none). */
struct snd_rcpt *snd_dest_pull(struct snd_dest *d);
/* snd_dest_ready tells that a connection finished its greeting (it may now carry transactions). */
void snd_dest_ready(struct snd_dest *d, struct snd_conn *c);
/* snd_dest_idle tells that a ready connection ran out of work: it QUITs at once if another destination waits
 * for a slot. */
void snd_dest_idle(struct snd_dest *d, struct snd_conn *c);
/* snd_dest_gone tells that a connection closed; setup_failed: it never got ready (connect, banner, EHLO,
 * STARTTLS): the host is marked down for sender.mx_backoff when no other connection to it works. */
void snd_dest_gone(struct snd_dest *d, struct snd_conn *c, int setup_failed, const char *why);
/* snd_dest_label returns "ip:port". */
const char *snd_dest_label(const struct snd_dest *d);
/* snd_dest_sched_all gives waiting destinations the connection slots that are free. */
void snd_dest_sched_all(struct snd *snd);
/* snd_dest_gc frees destinations with no queue, no connection and no down mark. */
void snd_dest_gc(struct snd *snd);
/* snd_dest_free_all closes every connection (QUIT where idle) and frees every destination (exit). */
void snd_dest_free_all(struct snd *snd);

/* ---- snd_conn.c: SMTP client connections ---- */

/* snd_conn_new starts a connection to a destination; failures are reported later from the loop, never from
 * inside this call. */
struct snd_conn *snd_conn_new(struct snd *snd, struct snd_dest *d, const void *sa, unsigned salen, const char *name);
/* snd_conn_kick makes an idle ready connection take queued work. */
void snd_conn_kick(struct snd_conn *c);
/* snd_conn_idle: 1 if the connection is ready and carries no transaction. */
int snd_conn_idle(const struct snd_conn *c);
/* snd_conn_live: 1 if the connection got ready and is not closing. */
int snd_conn_live(const struct snd_conn *c);
/* snd_conn_closing: 1 once QUIT is sent. */
int snd_conn_closing(const struct snd_conn *c);
/* snd_conn_quit sends QUIT on an idle connection (to free its slot). */
void snd_conn_quit(struct snd_conn *c);
/* snd_conn_signed: the signature r's transaction on c waited for is there (or failed): the transaction goes on. */
void snd_conn_signed(struct snd_conn *c, struct snd_rcpt *r);
/* snd_conn_free closes at once (QUIT first if idle) and frees; recipients in flight keep no outcome (exit). */
void snd_conn_free(struct snd_conn *c);

/* ---- snd_queue.c: Redis ---- */

/* snd_queue_new connects both Redis connections (retrying with backoff) and starts reading. */
struct snd_queue *snd_queue_new(struct snd *snd, const char *url);
void snd_queue_free(struct snd_queue *q);
/* snd_queue_load asks Redis for a post's message and list (when the write connection is up). */
void snd_queue_load(struct snd *snd, struct snd_post *p);
/* snd_queue_commit writes a finished batch: counters, bounces, XACK, done check, in one MULTI/EXEC. */
void snd_queue_commit(struct snd_batch *b);
/* snd_queue_more reads more entries if there is room (called when a batch is freed). */
void snd_queue_more(struct snd *snd);
/* snd_now is the wall clock in unix seconds. */
int64_t snd_now(void);

#endif
