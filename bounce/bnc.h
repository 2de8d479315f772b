/* bnc.h: private header of the bounce daemon and its parser library (lc_bounce).
 *
 * The parser's public interface is bnc_parse.h; this header adds the helpers shared between the parser's
 * files (bnc_parse.c, bnc_reason.c, bnc_text.c) and the daemon's (bnc_main.c, bnc_act.c, bnc_probe.c).
 */
#ifndef BNC_H
#define BNC_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "bnc_parse.h"

/* ---- bnc_parse.c ---- */

/* bnc_report_add appends a zeroed entry (reason "undefined") to r; NULL when r holds BNC_MAX_RCPTS. */
struct bnc_rcpt *bnc_report_add(struct bnc_report *r);

/* Bytes of one decoded part the parser looks at; bytes of report text scanned for recipients. */
#define BNC_PART_MAX (1024u * 1024u)
#define BNC_TEXT_SCAN (256u * 1024u)
#define BNC_DSN_PARTS 8 /* delivery-status parts read from one message (multi-report files) */

/* Which path bnc_parse takes (per thread; tests and the fuzz target compare them): AUTO tries the scanner of
 * bnc_fast.c first and falls back to the GMime walk, GMIME never uses the scanner, FAST never uses GMime (a
 * message the scanner declines gives no entry). */
enum bnc_path { BNC_PATH_AUTO = 0, BNC_PATH_GMIME, BNC_PATH_FAST };
void bnc_parse_set_path(enum bnc_path p);
/* bnc_parse_fast_hits returns how many messages the scanner answered on this thread so far. */
unsigned long bnc_parse_fast_hits(void);

/* What the rules after the MIME walk need of a message's headers: values as GMime gives them (unfolded,
 * RFC 2047 decoded, trimmed; the first of repeated headers), NULL when absent. */
struct bnc_view {
    const char *from, *to, *rp, *xfr, *apple, *autosub, *prec, *subject;
    int has_ar_hdr;         /* X-Autoreply, X-Autorespond or X-Vacation present */
    int has_orig;           /* an attached message (message/rfc822) */
    const char *orig_to;    /* its To */
    int has_arf;            /* a message/feedback-report part */
};

/* bnc_analyse applies the rules after the MIME walk to one message s[0..len) (bnc_parse.c): the report text is
 * text, else html made text, else the raw body; the delivery-status bodies (in document order) give entries,
 * else SES, Apple unsubscribe, a DSN block in the text, the ARF report (arf, hdrs: its text/rfc822-headers
 * part), free text or an auto-reply. Shared by the GMime walk and the fast scanner, so both decide alike.
 * Takes ownership of text, html and bodies[]. Returns 1 when the delivery-status bodies gave entries; with
 * dsn_only, stops (r unchanged) when they gave none. */
int bnc_analyse(struct bnc_report *r, const char *s, size_t len, char *text, size_t tlen, char *html, size_t hlen,
                char **bodies, const size_t *blens, int nb, const struct bnc_view *v, const char *arf, size_t alen,
                const char *hdrs, size_t hdrlen, int dsn_only);

/* ---- bnc_fast.c ---- */

/* bnc_fast_parse reads one well-formed multipart report without GMime (see bnc_fast.c for what it accepts).
 * Returns 1 when it answered (entries added to r), 0 when it declined (r unchanged: use the GMime path). */
int bnc_fast_parse(struct bnc_report *r, const char *s, size_t len);

/* ---- bnc_ses.c ---- */

/* bnc_ses_parse adds the entries of an Amazon SES JSON notification found in text (bare, or inside an SNS
 * envelope's "Message" string). Returns 0 when it added any, else -1. */
int bnc_ses_parse(struct bnc_report *r, const char *text, size_t len);

/* ---- bnc_reason.c ---- */

/* bnc_copy copies the string src into dst (dstlen bytes), truncating; dst is always NUL-terminated. */
void bnc_copy(char *dst, size_t dstlen, const char *src);

/* bnc_norm copies text to out lower-cased (ASCII) with white space runs folded to one space; returns length. */
size_t bnc_norm(const char *text, size_t len, char *out, size_t outlen);
/* bnc_match says whether a normalised text contains pat ('*' = bounded gap). */
int bnc_match(const char *norm, const char *pat);
/* bnc_reason_text returns the reason named by a normalised text, or NULL. */
const char *bnc_reason_text(const char *norm);
/* bnc_reason_status returns the reason implied by an enhanced status code, or NULL. */
const char *bnc_reason_status(const char *status);
/* bnc_status_ok says whether s[0..n) is an enhanced status code "C.S.D" (C in 2, 4, 5). */
int bnc_status_ok(const char *s, size_t n);
/* bnc_find_status copies the first enhanced status code in text to out; 0 or -1. */
int bnc_find_status(const char *text, char *out, size_t outlen);
/* bnc_find_replycode returns the first stand-alone 4xx/5xx reply code in text, or 0. */
int bnc_find_replycode(const char *text);

/* ---- bnc_text.c ---- */

/* One recipient found in a free-text bounce: the address and the span of text that describes it. */
struct bnc_hit {
    char addr[BNC_ADDR_LEN];
    size_t off, len; /* diagnostic span within the scanned text */
};

/* bnc_addr_extract finds the first address in s[0..n) (angle brackets, "mailto:", quotes and comments
 * stripped), lower-cases it into out (BNC_ADDR_LEN bytes) and returns the offset just past it, or -1.
 * need_dot requires a dot in the domain (free text), which DSN fields do not. */
long bnc_addr_extract(const char *s, size_t n, char *out, int need_dot);

/* bnc_text_end returns the length of the part of a bounce text before the returned message starts. */
size_t bnc_text_end(const char *text, size_t len);

/* bnc_text_scan finds failed recipients in text[0..len) (already cut with bnc_text_end): first addresses
 * that start a line (the qmail/Exim/Postfix/Sendmail shape; mailer-daemon is skipped), else addresses
 * anywhere that are not in exclude (NULL-terminated list of lower-case addresses) nor mailer-daemon,
 * postmaster or no-reply. Returns the number of hits written (at most max). */
int bnc_text_scan(const char *text, size_t len, const char *const *exclude, struct bnc_hit *hits, int max);

/* bnc_text_is_bounce says whether a message looks like a non-delivery report from its From, Subject and
 * text (so that a human reply or an auto-reply is not read as a failure). Any argument may be NULL. */
int bnc_text_is_bounce(const char *from, const char *subject, const char *text, size_t len);
/* bnc_text_is_autoreply says whether the headers mark an auto-reply (RFC 3834 or common vendor headers). */
int bnc_text_is_autoreply(const char *auto_submitted, const char *subject, int has_autoreply_header);

/* ---- bnc_act.c (daemon) ---- */

struct lc_cfg;
struct lc_secret;
struct bnc_daemon;

/* bnc_daemon_new makes the daemon state (connects nothing yet; cfg and secret stay the caller's and must
 * outlive it); bnc_daemon_free(NULL) is a no-op. bnc_daemon_run consumes the bounce stream until *stop is
 * set, reconnecting to Redis with backoff, and returns 0. */
struct bnc_daemon *bnc_daemon_new(const struct lc_cfg *cfg, const struct lc_secret *secret);
void bnc_daemon_free(struct bnc_daemon *d);
int bnc_daemon_run(struct bnc_daemon *d, volatile sig_atomic_t *stop);

/* ---- bnc_probe.c (daemon): bounce probes, out and back ---- */

struct redisContext;
struct bnc_probe;

/* bnc_probe_new makes the prober (cfg and secret stay the caller's and must outlive it); bnc_probe_free(NULL)
 * is a no-op. bnc_probe_load loads its Lua scripts into rc's server (after every connect): 0, or -1 with err.
 * bnc_probe_kick asks for a round at the next bnc_probe_tick (a batch just disabled someone).
 * bnc_probe_tick runs one round when one is due (every BNC_PROBE_EVERY_MS, or kicked): queues the probes
 * that are due and checks the probes in flight, each a bounded number. Returns 0, or -1 when rc must be
 * dropped and connected again (connection lost, script cache flushed). */
struct bnc_probe *bnc_probe_new(const struct lc_cfg *cfg, const struct lc_secret *secret);
void bnc_probe_free(struct bnc_probe *p);
int bnc_probe_load(struct bnc_probe *p, struct redisContext *rc, char *err, size_t errlen);
void bnc_probe_kick(struct bnc_probe *p);
int bnc_probe_tick(struct bnc_probe *p, struct redisContext *rc, volatile sig_atomic_t *stop);

#endif
