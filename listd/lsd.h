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
 * Limits (RFC 5321 4.5.3.1 and the brief): command lines 512 octets with CRLF, text lines 1000, 100 recipients,
 * 20 errors, 300 s idle, 100 sessions, messages up to smtp.max_message_size.
 */
#ifndef LSD_H
#define LSD_H

#include <stddef.h>
#include <stdint.h>

#include "lc_addr.h"

struct lc_loop;
struct lc_cfg;
struct lc_secret;
struct redisReply;

#define LSD_PROG "listcast-listd"

#define LSD_CMD_LINE_MAX 512     /* octets, CRLF included (RFC 5321 4.5.3.1.4) */
#define LSD_TEXT_LINE_MAX 1000   /* octets, CRLF included (RFC 5321 4.5.3.1.6) */
#define LSD_RCPT_MAX 100         /* recipients per transaction (RFC 5321 4.5.3.1.8) */
#define LSD_ERRORS_MAX 20        /* errors per session before 421 and disconnect */
#define LSD_IDLE_MS 300000       /* idle timeout: RFC 5321 4.5.3.2.7 asks 5 minutes */
#define LSD_REDIS_WAIT_MS 30000  /* longest wait for a Redis answer before 451 */
#define LSD_SESSIONS_MAX 100     /* concurrent sessions; more get 421 4.3.2 */
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
};

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

/* ---- lsd_route.c: routing, policy and storage through Redis ---- */

enum lsd_rcpt_kind { LSD_RCPT_NONE = 0, LSD_RCPT_POST, LSD_RCPT_BOUNCE };

/* The outcome of a routing or storage job: an SMTP reply, plus what was decided. */
struct lsd_result {
    int code;                      /* 250, 451, 550, ... */
    char text[LSD_REPLY_MAX];      /* the whole reply line without CRLF */
    enum lsd_rcpt_kind kind;       /* RCPT accepted as: post (list) or bounce (VERP) */
    char list[LC_ADDR_MAX + 1];    /* post: the list address */
    uint64_t post, sub;            /* bounce: decoded ids; storage of a post: the new post id */
};

struct lsd_job;
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

/* lsd_job_cancel detaches a pending job from its caller: done will not be called (its Redis replies are still
 * awaited and then the job is freed). NULL is a no-op. */
void lsd_job_cancel(struct lsd_job *job);

#endif
