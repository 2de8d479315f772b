/* lsd.h: private header of listd, the SMTP front door of listcast.
 *
 * listd takes mail for list addresses (posts) and for signed VERP addresses (bounces) on ONE epoll loop,
 * answers 250 only after the message is durable in Redis, and never relays. Files:
 *   lsd_main.c     main(): arguments, configuration, log, secret, loop, run.
 *   lsd_server.c   the listening socket, the session registry and the concurrency limit.
 *   lsd_session.c  one SMTP session: I/O, the state machine, commands, DATA reception.
 *   lsd_cmd.c      a pure parser of one SMTP command line (a fuzz target can call it directly).
 *   lsd_route.c    RCPT routing and posting policy (Redis lookups) and durable storage (MULTI/EXEC).
 *   lsd_redis.c    the async Redis connection, with reconnect and backoff.
 *   lsd_rewrite.c  pure: header facts of a message (loops, From, Subject) and the rewriting of posts.
 *   lsd_post.c     what happens to an accepted post: policy at end of DATA, moderation (hold, approve, reject).
 *   lsd_cmds.c     email commands: subscribe, unsubscribe, confirm, help, request, owner.
 *   lsd_notice.c   notices (one-off mail from the appliance, SCHEMA.md "Notices"): text and storage.
 *   lsd_tls.c      STARTTLS with GnuTLS: credentials loaded at start, one non-blocking TLS stream a session.
 *   lsd_dns.c      DMARC policy lookups (TXT _dmarc.DOMAIN) with c-ares on the event loop, cached by TTL.
 * Limits (RFC 5321 4.5.3.1 and the brief): command lines 512 octets with CRLF, text lines 1000; from the
 * configuration: smtp.max_recipients, smtp.max_errors, smtp.idle_timeout, smtp.max_sessions,
 * smtp.max_sessions_per_ip, smtp.max_message_size.
 */
#ifndef LSD_H
#define LSD_H

#include <stddef.h>
#include <stdint.h>

#include "lc_addr.h"
#include "lc_log.h"
#include "lc_token.h"

struct lc_loop;
struct lc_cfg;
struct lc_secret;
struct redisReply;

#define LSD_PROG "listcast-listd"

#define LSD_CMD_LINE_MAX 512     /* octets, CRLF included (RFC 5321 4.5.3.1.4) */
#define LSD_TEXT_LINE_MAX 1000   /* octets, CRLF included (RFC 5321 4.5.3.1.6) */
#define LSD_TLS_WAIT_MS 30000    /* longest TLS handshake */
#define LSD_REDIS_WAIT_MS 30000  /* longest wait for a Redis answer before 451 */
#define LSD_HOPS_MAX 50          /* Received: headers before a message is taken for a loop */
#define LSD_REPLY_MAX (LC_ADDR_MAX + 200)

/* ---- lsd_cmd.c: one command line -> struct (pure, no I/O, no allocation) ---- */

enum lsd_verb {
    LSD_V_NONE = 0,
    LSD_V_EHLO,
    LSD_V_HELO,
    LSD_V_MAIL,
    LSD_V_RCPT,
    LSD_V_DATA,
    LSD_V_RSET,
    LSD_V_NOOP,
    LSD_V_QUIT,
    LSD_V_VRFY,
    LSD_V_HELP,
    LSD_V_STARTTLS, /* RFC 3207 */
    LSD_V_BDAT,     /* RFC 3030 */
};

enum lsd_cmd_err {
    LSD_CMD_OK = 0,
    LSD_CMD_UNKNOWN,  /* 500 5.5.1 unknown command */
    LSD_CMD_NOTIMPL,  /* 502 5.5.1 recognised, not implemented (EXPN, TURN, ...) */
    LSD_CMD_SYNTAX,   /* 501 5.5.4 bad arguments */
    LSD_CMD_PARAM,    /* 555 5.5.4 unknown MAIL/RCPT parameter (RFC 5321 4.5.3.x) */
};

enum lsd_body { LSD_BODY_NONE = 0, LSD_BODY_7BIT, LSD_BODY_8BITMIME };

struct lsd_cmd {
    enum lsd_verb verb;
    const char *arg;      /* EHLO/HELO domain, VRFY/HELP/NOOP argument; points into the line */
    size_t arglen;
    const char *path;     /* MAIL/RCPT: the mailbox between < and > (source route removed); len 0 = <> */
    size_t pathlen;
    long long size;       /* MAIL SIZE=, or -1 */
    enum lsd_body body;   /* MAIL BODY= */
    int smtputf8;         /* MAIL SMTPUTF8 (RFC 6531) */
    long long chunk;      /* BDAT: the chunk size (octets) */
    int last;             /* BDAT: LAST given */
    const char *why;      /* on error: a short static explanation */
};

/* lsd_cmd_parse parses one command line (len octets, line end already removed, no NUL needed) into *cmd,
 * whose pointers point into line. Returns LSD_CMD_OK or an error class (cmd->why says more). */
enum lsd_cmd_err lsd_cmd_parse(const char *line, size_t len, struct lsd_cmd *cmd);

/* ---- lsd_redis.c: one async Redis connection with reconnect ---- */

struct lsd_redis;

/* A reply callback: called exactly once per sent command, with the reply or NULL when the connection was lost
 * before the answer came. The reply is freed by hiredis after the callback returns. */
typedef void lsd_redis_fn(const struct redisReply *reply, void *arg);

/* lsd_redis_new starts connecting to url (reconnects by itself with backoff). Never fails: a bad URL is a
 * configuration error found before (lc_cfg checks the form), and an unreachable Redis is retried. */
struct lsd_redis *lsd_redis_new(struct lc_loop *loop, const char *url);
/* lsd_redis_free closes the connection; pending callbacks run with NULL. */
void lsd_redis_free(struct lsd_redis *r);
/* lsd_redis_up tells whether commands can be sent now (connected and answered PING). */
int lsd_redis_up(const struct lsd_redis *r);
/* lsd_redis_send queues one command (binary-safe argv). Returns 0 (fn will be called) or -1 (not up; fn is
 * not called). */
int lsd_redis_send(struct lsd_redis *r, int argc, const char **argv, const size_t *lens, lsd_redis_fn *fn,
                   void *arg);

/* ---- lsd_server.c: shared daemon state ---- */

struct lsd_session;

/* The daemon's shared context: created by lsd_server_new, read by sessions and routing. */
struct lsd_server {
    struct lc_loop *loop;
    struct lsd_redis *redis;
    const struct lc_secret *secret;
    char hostname[256];
    long long max_size;          /* smtp.max_message_size */
    int listen_fd;
    uint64_t accept_timer;       /* accepting paused (out of fds) until this timer fires */
    int nsessions;
    uint64_t next_sid;           /* session ids for log lines */
    struct lsd_session *sessions; /* doubly linked through the sessions */
    /* per-client limits (smtp.* keys) */
    int max_sessions, max_per_ip, max_rcpt, max_errors;
    long idle_ms;
    struct lsd_tls *tls;         /* STARTTLS credentials, or NULL (tls.cert empty) */
    char public_url[512];        /* http.public_url (links in notices); set by main */
    long long confirm_lifetime;  /* confirm.lifetime, seconds; set by main */
    struct lsd_dns *dns;         /* DMARC lookups (dns.servers) */
};


/* ---- lsd_tls.c: STARTTLS (GnuTLS) ---- */

struct lsd_tls;
struct lsd_tls_conn;

/* lsd_tls_new loads the certificate chain and key (PEM) and checks that they belong together. NULL with a
 * reason naming the config key in err on failure. */
struct lsd_tls *lsd_tls_new(const char *certfile, const char *keyfile, char *err, size_t errlen);
void lsd_tls_free(struct lsd_tls *t);
/* lsd_tls_conn_new starts a server-side TLS stream on a connected non-blocking socket. */
struct lsd_tls_conn *lsd_tls_conn_new(struct lsd_tls *t, int fd);
void lsd_tls_conn_free(struct lsd_tls_conn *c);
/* lsd_tls_handshake advances the handshake: 0 done, 1 in progress (*want = LC_READ or LC_WRITE),
 * -1 failed (reason in err). */
int lsd_tls_handshake(struct lsd_tls_conn *c, int *want, char *err, size_t errlen);
/* lsd_tls_read / lsd_tls_write behave like read(2)/write(2) on a non-blocking socket: > 0 octets, 0 EOF (read),
 * -1 with errno EAGAIN (try again when the socket is ready) or another errno (the stream is broken). */
long lsd_tls_read(struct lsd_tls_conn *c, void *buf, size_t n);
long lsd_tls_write(struct lsd_tls_conn *c, const void *buf, size_t n);
/* lsd_tls_pending returns the octets decrypted and buffered inside GnuTLS (no socket event will announce them). */
size_t lsd_tls_pending(struct lsd_tls_conn *c);
/* lsd_tls_bye sends a close_notify, best effort (never blocks). */
void lsd_tls_bye(struct lsd_tls_conn *c);
/* lsd_tls_describe writes "TLS1.3 cipher" for the log and the Received: header. */
void lsd_tls_describe(struct lsd_tls_conn *c, char *out, size_t outlen);

/* lsd_server_new listens on smtp.listen and connects to Redis. NULL with err on failure (listen). */
struct lsd_server *lsd_server_new(struct lc_loop *loop, const struct lc_cfg *cfg, const struct lc_secret *secret,
                                  char *err, size_t errlen);
/* lsd_server_free closes the listener and every session (421 best effort), then Redis. */
void lsd_server_free(struct lsd_server *srv);

/* ---- lsd_session.c ---- */

/* lsd_session_new takes over a connected socket (non-blocking); the session registers itself with srv and
 * sends its greeting. It may be gone again when this returns (the peer went away at once). */
void lsd_session_new(struct lsd_server *srv, int fd, const char *ip);
/* lsd_session_shutdown sends 421 (best effort, no wait) and frees the session, which unlinks itself from
 * srv->sessions (server shutdown). */
void lsd_session_shutdown(struct lsd_session *s);
/* lsd_session_count_ip returns the number of sessions from ip (for smtp.max_sessions_per_ip). */
int lsd_session_count_ip(const struct lsd_server *srv, const char *ip);

/* ---- lsd_route.c: routing, policy and storage through Redis ---- */

enum lsd_rcpt_kind { LSD_RCPT_NONE = 0, LSD_RCPT_POST, LSD_RCPT_BOUNCE };

/* The outcome of a routing or storage job: an SMTP reply, plus what was decided. */
struct lsd_result {
    int code;                      /* 250, 451, 550, ... */
    char text[LSD_REPLY_MAX];      /* the whole reply line without CRLF */
    enum lsd_rcpt_kind kind;       /* RCPT accepted as: post (list) or bounce (VERP) */
    char list[LC_ADDR_MAX + 1];    /* post: the list address */
    uint64_t post, sub;            /* bounce: decoded ids; storage of a post: the new post id */
    long long list_max;            /* RCPT of a post: the list's max_message_size (0: none of its own) */
};

struct lsd_job;
struct lc_buf;
typedef void lsd_job_fn(void *arg, const struct lsd_result *res);

/* One bounce recipient of a transaction. */
struct lsd_bounce_rcpt {
    char addr[LC_ADDR_MAX + 1];
    uint64_t post, sub;
};

enum { LSD_DONE = 0, LSD_PENDING = 1 };

/* lsd_route_rcpt decides what rcpt (normalised) is for a transaction from sender (normalised, "" for <>).
 * Returns LSD_DONE with *res filled (decided locally, or Redis is down: 451), or LSD_PENDING with *jobp set:
 * done(arg, res) is called later unless the job is cancelled first. */
int lsd_route_rcpt(struct lsd_server *srv, const char *rcpt, const char *sender, lsd_job_fn *done, void *arg,
                   struct lsd_job **jobp, struct lsd_result *res);

/* lsd_store_post stores a post for list durably (INCR, then one MULTI/EXEC) and answers 250 with its id.
 * msg must stay valid until done is called or the job is cancelled. Same return contract as above. */
int lsd_store_post(struct lsd_server *srv, const char *list, const char *sender, const char *msg, size_t len,
                   lsd_job_fn *done, void *arg, struct lsd_job **jobp, struct lsd_result *res);

/* lsd_store_bounces XADDs one lc:stream:bounces entry per recipient in one MULTI/EXEC. rcpts and msg must
 * stay valid until done or cancel. Same return contract. */
int lsd_store_bounces(struct lsd_server *srv, const char *sender, const struct lsd_bounce_rcpt *rcpts, int n,
                      const char *msg, size_t len, lsd_job_fn *done, void *arg, struct lsd_job **jobp,
                      struct lsd_result *res);

/* ---- lsd_route.c: recipient addresses of a list (pure) ---- */

enum lsd_addr_kind {
    LSD_A_POST = 0,     /* L@D */
    LSD_A_SUBSCRIBE,    /* L-subscribe@D */
    LSD_A_UNSUBSCRIBE,  /* L-unsubscribe@D */
    LSD_A_HELP,         /* L-help@D */
    LSD_A_OWNER,        /* L-owner@D */
    LSD_A_REQUEST,      /* L-request@D: a command in the subject or the first body lines */
    LSD_A_CONFIRM,      /* L-confirm-TOKEN@D */
    LSD_A_APPROVE,      /* L-approve-TOKEN@D */
    LSD_A_REJECT,       /* L-reject-TOKEN@D */
};

struct lsd_addr {
    enum lsd_addr_kind kind;
    char list[LC_ADDR_MAX + 1];   /* the list address L@D */
    char token[LC_TOKEN_MAX];     /* CONFIRM, APPROVE, REJECT */
};

/* lsd_addr_parse splits a normalised recipient into its list and what it is for. A local part with a known
 * suffix is a command address (the suffix wins over a list of that name); anything else is a post (list =
 * rcpt). Pure. */
void lsd_addr_parse(const char *rcpt, struct lsd_addr *a);
/* lsd_addr_in reports whether normalised address a is one of the addresses in the space or comma separated
 * list (each normalised before comparing). */
int lsd_addr_in(const char *a, const char *list);
/* lsd_size_setting reads a list's max_message_size field: bytes, or 0 (no limit of its own) when empty, 0,
 * not a decimal number or over 18 digits. */
long long lsd_size_setting(const char *v);
/* lsd_addr_make writes the address of kind for list (token for CONFIRM/APPROVE/REJECT) to out. */
void lsd_addr_make(const char *list, enum lsd_addr_kind kind, const char *token, char *out, size_t outlen);

struct lsd_input;

/* ---- lsd_route.c: the job engine the action modules use ---- */

/* A step of a job: called with the reply of the last command of the step, once every reply of the step is in
 * and none was an error. It either queues more commands (lsd_job_cmd) and names the next step
 * (lsd_job_then), or ends the job (lsd_job_end). A cancelled job never calls its steps. */
typedef void lsd_step_fn(struct lsd_job *j, const struct redisReply *r);

/* lsd_job_new makes an action job whose result goes to done(arg, res); ctx (may be NULL) is owned by the job
 * and freed with ctx_free when the job ends. */
struct lsd_job *lsd_job_new(struct lsd_server *srv, const struct lsd_input *in, lsd_job_fn *done, void *arg,
                            void *ctx, void (*ctx_free)(void *));
void *lsd_job_ctx(struct lsd_job *j);
struct lsd_server *lsd_job_srv(struct lsd_job *j);
/* lsd_job_cmd queues one command (binary-safe; lens NULL: strlen each). A send failure fails the job (451). */
void lsd_job_cmd(struct lsd_job *j, int argc, const char **argv, const size_t *lens);
void lsd_job_then(struct lsd_job *j, lsd_step_fn *next);
/* lsd_job_end sets the job's SMTP reply; the job finishes once no reply is outstanding. */
void lsd_job_end(struct lsd_job *j, int code, const char *fmt, ...) LC_PRINTF(3, 4);
/* lsd_job_start ends the caller's first step: LSD_DONE with *res (decided at once; the job is freed) or
 * LSD_PENDING with *jobp set. */
int lsd_job_start(struct lsd_job *j, struct lsd_job **jobp, struct lsd_result *res);
/* lsd_job_wait makes the current step wait for something other than Redis (a DNS answer): the step must then
 * send no command and not end; when it returns the job waits, and lsd_job_resume must be called exactly once,
 * later (not from inside the step). */
void lsd_job_wait(struct lsd_job *j);
/* lsd_job_resume runs step next of a waiting job (with a NULL reply), or frees the job if it was cancelled
 * meanwhile (next is not called then). */
void lsd_job_resume(struct lsd_job *j, lsd_step_fn *next);
/* lsd_exec_ok checks an EXEC reply (an array without error elements); on failure writes why to err. */
int lsd_exec_ok(const struct redisReply *r, char *err, size_t errlen);

/* ---- lsd_rewrite.c: message facts and rewriting (pure) ---- */

#define LSD_HDR_LINE_MAX 998      /* octets of a header line without CRLF (RFC 5322 2.1.1) */
#define LSD_HDR_MAX 65536         /* octets of a header */
#define LSD_LOOP_HOPS 30          /* more Received: fields than this: a loop, not redistributed */
#define LSD_SUBJECT_MAX 256

enum lsd_msg_err { LSD_MSG_OK = 0, LSD_MSG_LINE, LSD_MSG_HEADER };

struct lsd_msginfo {
    enum lsd_msg_err err;
    int hops;                     /* Received: fields */
    int loop;                     /* a List-Id or X-Loop naming the list */
    int has_subject;
    size_t hdrlen;                /* octets of the header (without the empty line) */
    size_t body;                  /* offset of the body (len when there is none) */
    char from[LC_ADDR_MAX + 1];   /* the first From: address, normalised; "" if none or unparsable */
    char subject[LSD_SUBJECT_MAX]; /* unfolded, truncated */
};

/* lsd_msg_scan reads the header of msg (len octets) for list L@D into *mi. */
void lsd_msg_scan(const char *msg, size_t len, const char *list, struct lsd_msginfo *mi);
/* lsd_list_id writes the RFC 2919 list id of list L@D: "L.D". */
void lsd_list_id(const char *list, char *out, size_t outlen);

/* What happens to the poster's From: (DMARC mitigation, decided by lsd_post.c from the list's
 * dmarc_mitigation setting and the From: domain's DMARC policy). */
enum lsd_from_mode {
    LSD_FROM_KEEP = 0, /* From: as it is */
    LSD_FROM_MUNGE,    /* From: "Name via L" <L@D>; Reply-To: the poster unless there is one; X-Original-From */
    LSD_FROM_WRAP,     /* a new message from the list, the post inside as message/rfc822 */
};

struct lsd_rewrite {
    const char *list;    /* L@D */
    const char *prefix;  /* subject prefix, "" or NULL for none */
    const char *footer;  /* footer text, "" or NULL for none */
    enum lsd_from_mode from_mode;
};
/* lsd_rewrite_post returns the stored form of a post (malloc'd, NUL-terminated, length in *outlen), or NULL
 * when it would be longer than max. */
char *lsd_rewrite_post(const char *msg, size_t len, const struct lsd_rewrite *rw, size_t max, size_t *outlen);

/* ---- DMARC (RFC 7489): record parsing (lsd_rewrite.c, pure) and lookups (lsd_dns.c) ---- */

/* A domain's DMARC policy as far as a list is concerned: NONE is p=none, no record, or no usable answer. */
enum lsd_dmarc { LSD_DMARC_NONE = 0, LSD_DMARC_QUARANTINE, LSD_DMARC_REJECT };

/* A parsed DMARC record: p and sp are enum lsd_dmarc values, or -1 when the tag is missing or invalid. */
struct lsd_dmarc_rec {
    int p, sp;
};
/* lsd_dmarc_parse parses one TXT record (len octets, no NUL needed): 0 when it is a DMARC record (first tag
 * v=DMARC1), else -1. Pure. */
int lsd_dmarc_parse(const char *txt, size_t len, struct lsd_dmarc_rec *rec);
/* lsd_org_domain writes the organizational domain of domain (lower-cased): its last two labels (an
 * approximation of RFC 7489 3.2 without the public suffix list); "" when domain has fewer than three labels. */
void lsd_org_domain(const char *domain, char *out, size_t outlen);

#define LSD_DMARC_WAIT_MS 2500   /* longest wait for one lookup (both names); then no policy */

struct lsd_dns;
/* The answer to a lookup: policy, and why (for the log: "p=reject at _dmarc.D", "no record", "timeout"...;
 * valid during the call). */
typedef void lsd_dmarc_fn(void *arg, enum lsd_dmarc policy, const char *why);
/* lsd_dns_new makes the resolver (servers: dns.servers, "" = the system's). NULL with err on failure. */
struct lsd_dns *lsd_dns_new(struct lc_loop *loop, const char *servers, char *err, size_t errlen);
/* lsd_dns_free stops every lookup; callbacks of pending ones run with LSD_DMARC_NONE. NULL is a no-op. */
void lsd_dns_free(struct lsd_dns *d);
/* lsd_dmarc_lookup finds the DMARC policy that applies to mail From: domain (RFC 7489 6.6.3, with the
 * organizational-domain fallback). LSD_DONE with *policy and why (whylen octets) when the cache knows or no
 * lookup is possible; else LSD_PENDING and fn is called exactly once later (within LSD_DMARC_WAIT_MS). */
int lsd_dmarc_lookup(struct lsd_dns *d, const char *domain, lsd_dmarc_fn *fn, void *arg, enum lsd_dmarc *policy,
                     char *why, size_t whylen);

/* ---- lsd_post.c, lsd_cmds.c: actions at the end of DATA (same return contract as lsd_store_post) ---- */

/* What an action gets: the recipient, the envelope sender and the message (borrowed: valid until done runs or
 * the job is cancelled) with its header facts. */
struct lsd_input {
    struct lsd_addr addr;
    char rcpt[LC_ADDR_MAX + 1];
    char sender[LC_ADDR_MAX + 1];
    const char *msg;
    size_t len;
    struct lsd_msginfo mi;
};

int lsd_post_start(struct lsd_server *srv, const struct lsd_input *in, lsd_job_fn *done, void *arg,
                   struct lsd_job **jobp, struct lsd_result *res);
int lsd_mod_start(struct lsd_server *srv, const struct lsd_input *in, lsd_job_fn *done, void *arg,
                  struct lsd_job **jobp, struct lsd_result *res);
int lsd_cmds_start(struct lsd_server *srv, const struct lsd_input *in, lsd_job_fn *done, void *arg,
                   struct lsd_job **jobp, struct lsd_result *res);

/* ---- lsd_notice.c ---- */

#define LSD_HOLD_TTL (14 * 86400) /* seconds a held post waits for a moderator */
#define LSD_RATE_TTL 3600         /* at most one auto-reply of a kind per address and list in this time */

/* lsd_notice_head writes the header of a notice from list to rcpt (From, To, Subject, Date, Message-ID,
 * Auto-Submitted, X-Loop, MIME) into b; reply_to may be NULL. auto_replied: Auto-Submitted: auto-replied,
 * else auto-generated. */
void lsd_notice_head(struct lc_buf *b, const char *list, const char *rcpt, const char *subject,
                     const char *reply_to, int auto_replied);
/* lsd_notice_queue adds to job j the commands that store notice id (reserved with INCR lc:seq:post) for
 * list to rcpt (subscriber id sub or 0) with message msg (len), envelope sender "" (<>): SET lc:msg:ID,
 * HSET lc:post:ID, XADD lc:stream:posts. Call inside MULTI. */
void lsd_notice_queue(struct lsd_job *j, uint64_t id, const char *list, const char *rcpt, uint64_t sub,
                      const char *msg, size_t len);

/* lsd_job_cancel detaches a pending job from its caller: done will not be called (its Redis replies are still
 * awaited and then the job is freed). NULL is a no-op. */
void lsd_job_cancel(struct lsd_job *job);

#endif
