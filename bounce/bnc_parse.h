/* bnc_parse: turn a bounce message (or a bare SMTP reply) into a list of per-recipient outcomes.
 *
 * Input is untrusted: a raw RFC 5322 message as received at a VERP address. MIME is decoded with GMime 3;
 * an RFC 3464 message/delivery-status part (normally inside an RFC 6522 multipart/report) is parsed field by
 * field; an RFC 5965 message/feedback-report gives a "feedback" entry; without either, the first text part is
 * scanned for the free-text formats of common MTAs (qmail, Exim, Postfix, Sendmail, and the generic
 * "<address>: reason" shape), but only when the message looks like a bounce (sender, subject or intro text),
 * so a human reply does not become a failure. Auto-replies (RFC 3834) are recognised and yield no entry.
 *
 * Each entry has the recipient (lower-cased), the enhanced status (RFC 3463, "" if unknown), the SMTP reply
 * code (0 if unknown), a reason from the vocabulary of shared/corpus/bounces/README.md (static string) and a
 * hard flag: 1 only for a permanent failure of the address itself (userunknown, hostunknown, hasmoved, and
 * notaccept, each with a 5.x.x status). Policy, spam, authentication (SPF/DKIM/DMARC) and reputation
 * rejections are never hard: they say nothing about whether the mailbox exists (an X.7.X answer to RCPT TO
 * that says the user is unknown, and names no other cause, is about the address: userunknown, hard).
 *
 * Limits: input over BNC_MAX_INPUT bytes is refused; at most BNC_MAX_PARTS MIME parts are visited, nesting is
 * followed to BNC_MAX_DEPTH, at most BNC_MAX_RCPTS entries are returned, text fields are truncated to their
 * buffers. Junk input gives an empty report, never a crash. No global state besides GMime's own (set up once
 * by bnc_init), the phrase tables' pair index (built once) and a bounded, mutex-guarded table of charset
 * converters kept open (bnc_fast.c); per-thread scratch buffers, so separate threads may parse separate
 * messages.
 */
#ifndef BNC_PARSE_H
#define BNC_PARSE_H

#include <stddef.h>

#define BNC_MAX_INPUT (10u * 1024u * 1024u)
#define BNC_MAX_PARTS 1000
#define BNC_MAX_DEPTH 16
#define BNC_MAX_RCPTS 1000

#define BNC_ADDR_LEN 321 /* LC_ADDR_MAX + NUL */
#define BNC_STATUS_LEN 16
#define BNC_DIAG_LEN 512

/* What one entry says happened to its recipient. Only BNC_FAILED is a bounce. */
enum bnc_action {
    BNC_FAILED = 0,   /* Action: failed, or a free-text permanent/temporary failure */
    BNC_DELAYED,      /* Action: delayed: still being retried, changes nothing */
    BNC_DELIVERED,    /* Action: delivered / relayed / expanded */
    BNC_FEEDBACK,     /* ARF complaint (message/feedback-report) */
};

/* What kind of message the parser recognised. */
enum bnc_kind {
    BNC_K_NONE = 0,   /* nothing recognised (not a bounce, or junk) */
    BNC_K_DSN,        /* RFC 3464 delivery-status part */
    BNC_K_TEXT,       /* free-text bounce */
    BNC_K_ARF,        /* RFC 5965 feedback report */
    BNC_K_AUTOREPLY,  /* RFC 3834 auto-reply / vacation: no entries */
};

struct bnc_rcpt {
    char recipient[BNC_ADDR_LEN];  /* lower-cased address, "" if the report named none */
    char status[BNC_STATUS_LEN];   /* "5.1.1", "" if none */
    int replycode;                 /* 550, 0 if none */
    const char *reason;            /* vocabulary word, static */
    int hard;                      /* 1: the address itself is dead */
    enum bnc_action action;
    char diag[BNC_DIAG_LEN];       /* diagnostic text (one line, truncated), for logs */
    char command[8];               /* SMTP command the rejection answered ("RCPT", "DATA", ...), "" if unknown */
};

struct bnc_report;

/* bnc_init initialises GMime once per process (idempotent, thread-safe); bnc_parse calls it too. */
void bnc_init(void);

/* bnc_parse parses msg (len bytes, need not be NUL-terminated) into a new report the caller frees with
 * bnc_report_free. Returns 0 (the report may hold no entry), or -1 with a reason in err (input too large). */
int bnc_parse(const void *msg, size_t len, struct bnc_report **out, char *err, size_t errlen);

/* bnc_report_free frees a report; NULL is a no-op. */
void bnc_report_free(struct bnc_report *r);
/* bnc_report_kind says what was recognised. */
enum bnc_kind bnc_report_kind(const struct bnc_report *r);
/* bnc_report_count returns the number of entries; bnc_report_get the i-th (owned by the report). */
size_t bnc_report_count(const struct bnc_report *r);
const struct bnc_rcpt *bnc_report_get(const struct bnc_report *r, size_t i);

/* bnc_classify_reply classifies a bare SMTP reply text ("550 5.1.1 <a@b>: no such user", multi-line replies
 * joined with spaces or CRLF) into out (recipient left empty, action BNC_FAILED). Returns 0, or -1 when the
 * text is not a 4xx/5xx reply (out is still filled as far as possible, reason "undefined"). */
int bnc_classify_reply(const char *reply, struct bnc_rcpt *out);

/* bnc_classify fills r->reason and r->hard from r->status, r->replycode and a diagnostic text (may be NULL),
 * refining r->status and r->replycode from the text when they are empty or generic. */
void bnc_classify(struct bnc_rcpt *r, const char *text, size_t textlen);

/* bnc_find_command returns the SMTP command a rejection text says it answered ("CONN", "HELO", "MAIL",
 * "RCPT", "DATA") or "" (static string); text need not be normalised. */
const char *bnc_find_command(const char *text, size_t len);

/* Names for logs. */
const char *bnc_action_name(enum bnc_action a);
const char *bnc_kind_name(enum bnc_kind k);

#endif
