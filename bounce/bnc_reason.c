/* bnc_reason: classify one failure (status, reply code, diagnostic text) into a bounce reason.
 *
 * Contract: bnc_classify() is the single place that decides reason and hard/soft for every path (DSN fields,
 * free-text bounces, the sender's bare SMTP replies), so the daemon and the corpus test agree.
 * Order of evidence: (1) a reason whose phrases are in the text, or that a specific status code names
 * (5.1.1, 5.2.2, 5.7.26 ...), in an order that puts the mailbox and the message before the connection;
 * a temporary class in a final report is "expired"; (2) broader phrases (policy, system, network, security);
 * (3) the status code alone, generic codes included (5.7.1, 5.2.1 ...); then "undefined". The SMTP command
 * the rejection answered refines the result (unknown "user" at MAIL FROM is the sender's problem, after DATA
 * a content filter's). The phrase tables are matched on a normalised copy of the text (ASCII lower case,
 * white space folded, multi-line reply codes removed); a '*' in a phrase matches a gap of at most BNC_GAP
 * characters.
 * hard is 1 only for userunknown, hostunknown, hasmoved and notaccept with a permanent (5) class, and never
 * under a security/policy code (X.7.X, except the owner-changed and null-MX codes, and an unknown-user answer
 * to RCPT TO that names no other cause): policy, spam, authentication (SPF/DKIM/DMARC) and reputation
 * rejections say nothing about whether the mailbox exists.
 * Limits: at most BNC_TEXT_MAX bytes of diagnostic text are examined (one malloc'd copy a call).
 */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnc.h"

#define BNC_TEXT_MAX 8192
#define BNC_GAP 120

/* Phrase tables. Each phrase is lower case; '*' is a bounded gap. A table is named by the reason it gives;
 * a few reasons have a second, narrower table ("early") that is consulted before broader reasons. */
static const char *const p_mailboxfull[] = {
    "mailbox full", "mailbox is full", "mailbox is currently full", "mailbox has exceeded", "mailbox exceeds",
    "mailbox exceeded", "mailbox size limit exceeded", "mailbox would exceed", "mailfolder is full",
    "mail box full", "over quota", "overquota", "over the quota", "over its quota", "over their quota",
    "quota exceeded", "exceeded storage allocation", "exceeded the quota", "exceeds quota", "exceed the quota",
    "quota full", "quota violation", "user is over", "disk quota", "not enough storage space",
    "insufficient storage", "mailbox not enough space", "account is full", "inbox is full", "inbox full",
    "storage quota", "is over quota", "would be over the allowed quota", "too much mail data", "quota limit",
    "mailbox quota", "user's disk quota", "has exceeded its quota", "box is full", "mailbox*is full",
    "recipient's mailbox is full", "maildir over", "mailbox size exceeded", "no space left in mailbox",
    NULL};
static const char *const p_mesgtoobig[] = {
    "message too large", "message too big", "message is too large", "message is too big",
    "message size exceeds", "message exceeds the maximum size", "message exceeds maximum fixed size",
    "message exceeded max message size", "size limit exceeded", "exceeds size limit", "exceeded size limit",
    "exceeds the size limit", "message length exceeds", "message size limit", "mail size exceeds",
    "the message exceeds the maximum", "maximum message size", "message larger than", "message file too big",
    "size exceeds the maximum", "exceeds maximum message size", "message is larger than", "email is too large",
    "message has exceeded the size", "line limit exceeded", "message size exceeded", "data size exceeded",
    NULL};
static const char *const p_exceedlimit[] = {
    "limit set by recipient", "recipient limit exceeded", "message length exceeds administrative",
    NULL};
static const char *const p_suspend[] = {
    "account disabled", "account has been disabled", "account is disabled", "account is suspended",
    "account has been suspended", "account suspended", "account is inactive", "account is locked",
    "account has been locked", "mailbox disabled", "mailbox is disabled", "mailbox has been disabled",
    "mailbox is inactive", "mailbox has been suspended", "mailbox is frozen", "recipient suspended",
    "user suspended", "user account disabled", "has been disabled", "temporarily disabled",
    "not currently active", "is a deactivated mailbox", "account that you tried to reach is disabled",
    "account that you tried to reach is inactive", "account expired", "deactivated", "boite du destinataire archivee",
    "this account has been locked", "mailbox unavailable (suspended)", "account has been frozen",
    "user is inactive", "mailbox is not active",
    NULL};
static const char *const p_hasmoved[] = {
    " has been replaced by ", "address has moved", "mailbox has moved", "user has moved",
    "no longer at this address", "has moved to", "moved permanently", "changed their email address",
    NULL};
static const char *const p_norelaying[] = {
    "relay access denied", "relaying denied", "relaying not permitted", "relaying not allowed",
    "relay not permitted", "relay not allowed", "not permitted to relay", "unable to relay", "we do not relay",
    "relay denied", "relaying mail to", "relay prohibited", "no relaying", "not allowed to relay",
    "relay rejected", "not a gateway", "relaying to <", "relay attempt",
    "mail server requires authentication when attempting to send to a non-local e-mail address",
    "that domain isn't in my list of allowed rcpthosts",
    NULL};
static const char *const p_authfailure[] = {
    "spf check failed", "spf validation failed", "spf: fail", "spf fail", "spf-fail", "failed spf",
    "spf record", "sender policy framework", "dkim signature", "dkim validation", "dkim check", "dkim-fail",
    "dkim fail", "dmarc", "authentication checks failed", "does not pass spf", "not designate",
    "unauthenticated email", "unauthenticated mail", "sender is unauthenticated", "5.7.26 ", "5.7.23 ",
    "5.7.20 ", "5.7.21 ", "5.7.22 ", "is not allowed to send mail from", "could not be authenticated",
    "failed the authentication checks", "spf ", "(spf)", "dkim ",
    NULL};
static const char *const p_userunknown[] = {
    "user unknown", "unknown user", "unknown recipient", "recipient unknown", "no such user", "no such recipient",
    "no such mailbox", "no such address", "no such person", "no mailbox", "mailbox not found",
    "mailbox unavailable", "mailbox is unavailable", "mailbox does not exist", "mailbox doesn't exist",
    "mailbox invalid", "invalid mailbox", "invalid recipient", "invalid address",
    "recipient address rejected: access denied", "recipient address rejected: invalid user",
    "recipient address rejected: unknown", "recipient address rejected: user unknown",
    "recipient address rejected: undeliverable address", "recipient address rejected.", "recipient not found",
    "recipient does not exist", "recipient not exist", "recipient is not local", "recipient not ok",
    "recipient is not accepted", "user not found", "user not known", "user does not exist",
    "user doesn't exist", "user not exist", "user * does not exist", "user * was not found",
    "address does not exist", "address doesn't exist", "address unknown", "address not found",
    "address not present", "address is not valid", "email address could not be found", "wasn't found at",
    "email account that you tried to reach does not exist", "no account by that name", "not a valid mailbox",
    "not a valid user", "not a known user", "unknown mailbox", "unknown local", "unknown address",
    "unknown e-mail address", "unknown email address", "bad destination mailbox", "bad recipient", "badrcptto",
    "doesn't have a * account", "not our customer", "resolver.adr.recipnotfound", "recipientnotfound",
    "recipient not found by", "no one at this address", "no such local user", "this address no longer accepts mail",
    "destination addresses were unknown", "user_unknown", "userunknown", "unrouteable address",
    "addressee unknown", "invalid-recipient", "is not a known", "requested action not taken: mailbox unavailable",
    "sorry, no mailbox here by that name", "vdeliver: invalid or unknown virtual user", "mailbox * does not exist",
    "not our user", "rcpt * does not exist", "undeliverable address", "utilisateur inconnu",
    "destinataire inconnu", "unbekannt", "existiert nicht", "user has no mailbox", "no valid recipients",
    "unknown or illegal alias", "invalid final delivery userid", "recipient name is not recognized",
    "the recipient does not exist", "email address does not exist",
    "account does not exist", "account not found", "no such account", "non-existent", "nonexistent",
    "not a valid recipient", "user is unknown", "recipient rejected",
    /* Lotus Notes / Domino, InterScan MSS; the Japanese forms of Notes and Domino */
    "not listed in public name & address book", "not listed in domino directory",
    "please check if address is correct", "(and other recipients in the same domain)",
    "\xe3\x83\x87\xe3\x82\xa3\xe3\x83\xac\xe3\x82\xaf\xe3\x83\x88\xe3\x83\xaa\xe3\x81\xae\xe3\x83\xaa"
    "\xe3\x82\xb9\xe3\x83\x88\xe3\x81\xab\xe3\x81\x82\xe3\x82\x8a\xe3\x81\xbe\xe3\x81\x9b\xe3\x82\x93",
    "\xe3\x83\x87\xe3\x82\xa3\xe3\x83\xac\xe3\x82\xaf\xe3\x83\x88\xe3\x83\xaa\xe3\x81\xab\xe3\x81\xaf"
    "\xe8\xa6\x8b\xe3\x81\xa4\xe3\x81\x8b\xe3\x82\x8a\xe3\x81\xbe\xe3\x81\x9b\xe3\x82\x93",
    NULL};
static const char *const p_filtered[] = {
    "due to extended inactivity new mail is not currently being accepted", "refused by the recipient",
    "rejected by the recipient", "recipient has not authorized", "rejected by recipient",
    "blocked by the recipient", "message filtered", "filtered by", "rejected by filter", "header filter",
    "has restricted sms e-mail", "not accept mail from", "the recipient's mail filter",
    NULL};
static const char *const p_requireptr[] = {
    "reverse dns", "reverse lookup", "reverse-dns", "ptr record", "no ptr", "ptr lookup", "missing ptr", "rdns",
    "cannot find your hostname", "cannot resolve your", "no reverse", "cannot find your reverse", "your ip has no",
    "does not have a ptr", "not resolve to", "5.7.25 ", "ip name lookup failed", "cannot find your domain name",
    "you have no ptr", "host name lookup failure", "client host rejected: you have no", "mismatches client ip",
    "no dns name for your", "ip address has no", "does not have reverse", "unresolvable address",
    NULL};
static const char *const p_notcompliantrfc[] = {
    "not rfc 5322", "not rfc5322", "rfc 5322 compliant", "rfc5322 compliant", "rfc 2822", "rfc2822",
    "rfc 822 compliant", "rfc822 compliant", "multiple addresses in from", "bare lf",
    "bare linefeed", "is not rfc", "headers are not rfc",
    NULL};
static const char *const p_badreputation[] = {
    "ip reputation", "domain reputation", "sender reputation", "low reputation", "poor reputation",
    "bad reputation", "reputation of", "senderscore", "unexpected volume or user complaints",
    "has been temporarily rate limited due to ip reputation",
    NULL};
static const char *const p_contenterror[] = {
    "message header size exceeds", "header size exceeds", "header too long", "headers too long",
    "illegal attachment", "invalid message content", "improper use of 8-bit",
    "8-bit data", "8bit data", "bad content", "content rejected", "message format error", "header error",
    "header is invalid", "invalid header", "malformed header", "duplicate header",
    NULL};
static const char *const p_rejected[] = {
    "sender rejected", "sender address rejected", "sender verify failed", "sender verification failed",
    "sender is not allowed", "sender not allowed", "sender denied", "sender domain", "sender unknown",
    "unknown sender", "domain of sender address", "envelope sender", "address verification failed",
    "from address", "your email address has been", "sender blocked", "rejected sender", "bad sender",
    "invalid sender", "sender is blacklisted", "sender not", "return-path", "permission to post",
    "not allowed to post", "sender address is", "mail from address", "domain of sender",
    "sending to/from an address that has been blacklisted",
    NULL};
static const char *const p_hostunknown[] = {
    "host unknown", "unknown host", "host not found", "host or domain name not found",
    "name or service not known", "no such domain", "domain not found", "domain does not exist",
    "domain unknown", "unknown domain", "domain name not found", "unrouteable mail domain", "nxdomain",
    "not a registered domain", "no valid mx", "all relevant mx records point to non-existent hosts",
    "domain is not", "invalid domain", "bad domain", "the domain * does not exist", "is not a valid domain",
    "domain must exist", "no such host", "unknown mail domain", "domain * not found",
    "account or domain may not exist",
    NULL};
static const char *const p_spamdetected[] = {
    "spam", "junk mail", "bulk mail", "bulk e-mail", "message looks like", "unsolicited", "content scanner",
    "listed as a spammer", "suspicious", "classified as", "high probability", "5.7.28 ", "mail flood", " ube",
    "blacklisted url", "uribl", "surbl", "dbl.spamhaus", "message rejected due to content",
    "message content rejected", "ofr_506", /* Orange: rejected as spam */
    NULL};
static const char *const p_virusdetected[] = {
    "virus", "malware", "infected", "trojan", "malicious",
    NULL};
static const char *const p_speeding[] = {
    "rate limit", "rate-limit", "ratelimit", "rate exceeded", "sending rate", "too fast", "throttl",
    "slow down", "receiving mail at a rate", "receiving messages too quickly", "daily sending quota",
    NULL};
static const char *const p_toomanyconn[] = {
    "too many connections", "too many concurrent", "too many sessions", "connection limit",
    "too many simultaneous", "concurrent connections", "too many smtp sessions", "too many recipients",
    "too many messages", "maximum number of connections", "frequency limited", "exceeded the maximum number",
    "connection rate", "too many errors",
    NULL};
static const char *const p_blocked[] = {
    "blocked", "blacklist", "blocklist", "black list", "block list", "dnsbl", "spamhaus", "spamcop", "barracuda",
    "sorbs", "listed at", "listed on", "listed in", "access denied", "client host rejected",
    "not allowed to connect", "your ip", "your host", "banned", "dynamic ip", "residential", "bloquee",
    "not accepted from", "refused to talk to me", "connection refused", "connection rejected", "rbl",
    "you are not allowed", "ip address", "weren't sent",
    NULL};
static const char *const p_blocked_early[] = {
    "blocked using", "client host blocked", "client host rejected", "zen.spamhaus", "sbl.spamhaus",
    "xbl.spamhaus", "pbl.spamhaus", "sbl-xbl.spamhaus", "bl.spamcop", "dnsbl", "rbl", "listed at", "listed in",
    "listed on", "ip blacklisted", "blacklisted ip", "ip is blacklisted", "ip address is blacklisted",
    "banned sending ip", "ip address has been blocked", "your ip address", "bloquee", "invalid ip for sending",
    "ofr_999", /* Orange: service refused (IP) */ "weren't sent", /* Outlook.com: messages from IP weren't sent */
    /* a 554 greeting (RFC 5321 3.1): the server refuses this client's connection */
    "not accepting connections", "no smtp service here",
    NULL};
static const char *const p_policy_early[] = {
    "denied by policy", "content presents a potential", "violates our policy", "policy violation",
    "administrative prohibition", "against our policy", "email policy", "security policy",
    NULL};
static const char *const p_policyviolation[] = {
    "policy", "prohibited", "not permitted by", "violat", "forbidden",
    NULL};
static const char *const p_securityerror[] = {
    "authentication required", "authentication failed", "auth required", "tls required", "starttls",
    "encryption required", "certificate", "must issue a starttls", "authrequired", "security",
    "authentication", "not secure", "tls ", "ssl ",
    NULL};
static const char *const p_systemfull[] = {
    "mail system full", "system full", "disk full", "insufficient system storage", "out of disk",
    "not enough free space", "no space left", "system storage", "not enough disk space",
    NULL};
static const char *const p_systemerror[] = {
    "system error", "internal error", "server error", "local error", "server configuration", "misconfigured",
    "loops back to myself", "temporary local problem", "unable to process", "system problem", "i/o error",
    "local configuration error", "internal server error", "service currently unavailable",
    "service unavailable", "temporarily unavailable", "resources temporarily unavailable",
    NULL};
static const char *const p_network_early[] = {
    "name service error", "dns query failed", "hop count exceeded", "too many hops", "mail loop",
    "routing loop", "loop detected", "mailer loop", "malformed or unexpected name server reply",
    "host not found, try again", "maximum hop count", "loops back", "dns lookup failure",
    "temporary dns", "dns temporary", "able to establish an smtp connection",
    NULL};
static const char *const p_networkerror[] = {
    "network error", "network is unreachable", "no route to host", "connection timed out", "connection reset",
    "connection closed", "lost connection", "unable to connect", "could not connect", "couldn't connect",
    "can't connect", "cannot connect", "timed out", "timeout", "host unreachable", "host not reachable",
    "unreachable", "dns error", "connection dropped", "broken pipe", "no answer from",
    NULL};
static const char *const p_notaccept[] = {
    "does not accept mail", "not accepting mail", "accepts no mail", "does not accept email", "null mx",
    "no mail is accepted", "mail is not accepted", "does not receive mail", "doesn't receive email",
    "doesn't receive mail", "not accepting messages", "no mx record found", "refuses all mail",
    NULL};
static const char *const p_expired[] = {
    "retry timeout exceeded", "delivery time expired", "message expired", "queue time expired", "time expired",
    "expired", "too long in queue", "in the queue too long", "could not be delivered for", "has been delayed",
    "giving up", "gave up", "was not delivered within", "undeliverable for", "unable to deliver for",
    "in the queue for", "retry period",
    NULL};
static const char *const p_mailererror[] = {
    "x-unix", "mailer error", "pipe to", "exit code", "exit status", "command died", "command failed",
    "unable to deliver to pipe", "procmail", "program exited", "returned non-zero", "local delivery failed",
    "deliver program", "child process", "unknown mailer", "command output:", "permission denied",
    NULL};
/* RFC 3464 diagnostic type of a local delivery program (kept by bnc_parse.c): consulted after the first-round
 * phrases, before a temporary class is read as "expired" */
static const char *const p_mailer_early[] = {
    "x-unix;",
    NULL};
static const char *const p_syntaxerror[] = {
    "syntax error", "command unrecognized", "command not recognized", "unrecognized command",
    "bad sequence of commands", "improper sequence of commands", "invalid command", "parameter not implemented",
    "out of sequence", "malformed address",
    NULL};

struct rule {
    const char *name;   /* table name, used by the order lists */
    const char *reason; /* reason it gives */
    const char *const *pats;
};

static const struct rule rules[] = {
    {"mailboxfull", "mailboxfull", p_mailboxfull},
    {"exceedlimit", "exceedlimit", p_exceedlimit},
    {"mesgtoobig", "mesgtoobig", p_mesgtoobig},
    {"suspend", "suspend", p_suspend},
    {"hasmoved", "hasmoved", p_hasmoved},
    {"norelaying", "norelaying", p_norelaying},
    {"authfailure", "authfailure", p_authfailure},
    {"requireptr", "requireptr", p_requireptr},
    {"notaccept", "notaccept", p_notaccept},
    {"userunknown", "userunknown", p_userunknown},
    {"hostunknown", "hostunknown", p_hostunknown},
    {"filtered", "filtered", p_filtered},
    {"notcompliantrfc", "notcompliantrfc", p_notcompliantrfc},
    {"badreputation", "badreputation", p_badreputation},
    {"virusdetected", "virusdetected", p_virusdetected},
    {"spamdetected", "spamdetected", p_spamdetected},
    {"rejected", "rejected", p_rejected},
    {"toomanyconn", "toomanyconn", p_toomanyconn},
    {"speeding", "speeding", p_speeding},
    {"blocked", "blocked", p_blocked},
    {"contenterror", "contenterror", p_contenterror},
    {"blocked-early", "blocked", p_blocked_early},
    {"policy-early", "policyviolation", p_policy_early},
    {"policyviolation", "policyviolation", p_policyviolation},
    {"systemfull", "systemfull", p_systemfull},
    {"systemerror", "systemerror", p_systemerror},
    {"mailererror", "mailererror", p_mailererror},
    {"expired", "expired", p_expired},
    {"network-early", "networkerror", p_network_early},
    {"networkerror", "networkerror", p_networkerror},
    {"securityerror", "securityerror", p_securityerror},
    {"syntaxerror", "syntaxerror", p_syntaxerror},
    {"mailer-early", "mailererror", p_mailer_early},
};

/* First round: a reason wins when its phrases are in the text or a specific status code names it; the
 * order puts what describes the mailbox or the message before what describes the connection. */
static const char *const order1[] = {
    "mailboxfull", "exceedlimit", "mesgtoobig", "suspend", "hasmoved", "norelaying", "authfailure",
    "notaccept", "network-early", "userunknown", "filtered", "requireptr", "notcompliantrfc", "badreputation",
    "virusdetected", "blocked-early", "spamdetected", "contenterror", "rejected", "hostunknown", "policy-early",
    "speeding", "toomanyconn", "blocked", "mailer-early", NULL};
/* Second round, text only, when the first found nothing. */
static const char *const order2[] = {
    "policyviolation", "systemfull", "systemerror", "mailererror", "expired", "networkerror",
    "securityerror", "syntaxerror", NULL};

/* Status codes specific enough to decide in the first round (others are used only as a last resort:
 * 5.7.1, 5.2.1, 5.1.0 and friends are sent for almost anything). */
static const char *const strong_codes[] = {
    "5.1.1", "5.1.2", "5.1.6", "5.2.2", "5.3.4", "5.7.13", "5.7.16", "5.7.17", "5.7.18",
    "5.7.20", "5.7.21", "5.7.22", "5.7.23", "5.7.24", "5.7.25", "5.7.26", "5.7.27", "5.7.28", "5.7.29",
    "4.2.2", "4.7.24", "4.7.25", "4.7.26", NULL};

static const struct rule *rule_of(const char *name)
{
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) /* the same literal, mostly */
        if (rules[i].name == name)
            return &rules[i];
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (strcmp(rules[i].name, name) == 0)
            return &rules[i];
    return NULL;
}

/* The character pairs (bigrams, hashed to BG_BITS bits) present in a normalised text: a phrase one of whose
 * pairs is absent cannot occur in it, which saves most of the substring searches of the rule tables (an
 * exact filter: it only skips searches that would fail). */
#define BG_BITS 4096u
struct bigrams {
    uint64_t bits[BG_BITS / 64];
};

static unsigned bg_hash(unsigned char a, unsigned char b)
{
    return ((unsigned)a * 131u + (unsigned)b) & (BG_BITS - 1);
}

static void bg_build(struct bigrams *bg, const char *s)
{
    memset(bg, 0, sizeof *bg);
    for (size_t i = 0; s && s[i] && s[i + 1]; i++) {
        unsigned h = bg_hash((unsigned char)s[i], (unsigned char)s[i + 1]);
        bg->bits[h / 64] |= (uint64_t)1 << (h % 64);
    }
}

/* Could every '*'-separated segment of pat occur in the text bg was built from? Looks at every third pair,
 * which keeps the check cheap and still rejects almost every phrase that is absent. */
static int bg_may(const struct bigrams *bg, const char *pat)
{
    for (size_t i = 0; pat[i] && pat[i + 1]; i += (pat[i + 2] && pat[i + 3]) ? 3 : 1) {
        if (pat[i] == '*' || pat[i + 1] == '*')
            continue;
        unsigned h = bg_hash((unsigned char)pat[i], (unsigned char)pat[i + 1]);
        if (!(bg->bits[h / 64] & ((uint64_t)1 << (h % 64))))
            return 0;
    }
    return 1;
}

/* The pairs of every phrase of the rule tables, hashed once (bg_may did it for every phrase of every call):
 * up to BG_PAT_PAIRS distinct pairs a phrase, all of which must be in the text, the rarest of them (by the
 * letter frequencies of English text) first, and kept apart in pat_key so the loop over a rule's phrases tests
 * one bit for most of them. A phrase past BG_PATS_MAX falls back to bg_may. */
#define BG_PAT_PAIRS 16
#define BG_PATS_MAX 2048
#define N_RULES (sizeof rules / sizeof rules[0])
struct pat_pairs {
    unsigned char n;
    uint16_t h[BG_PAT_PAIRS];
};
static struct pat_pairs pat_pairs[BG_PATS_MAX];
static uint16_t pat_key[BG_PATS_MAX];
static size_t rule_first[N_RULES]; /* index of a rule's first phrase in pat_pairs */
static pthread_once_t pairs_once = PTHREAD_ONCE_INIT;

/* How common a character is in mail text, roughly (a pair's weight is the product). */
static unsigned char_weight(unsigned char c)
{
    static const char common[] = " etaoinsrhldcumfpgwyb"; /* most common first */
    const char *q = c ? strchr(common, c) : NULL;
    return q ? 40u - (unsigned)(q - common) : c >= '0' && c <= '9' ? 8u : 4u;
}

static void pairs_init(void)
{
    size_t k = 0;
    for (size_t r = 0; r < N_RULES; r++) {
        rule_first[r] = k;
        for (const char *const *p = rules[r].pats; *p && k < BG_PATS_MAX; p++, k++) {
            struct pat_pairs *pp = &pat_pairs[k];
            const char *pat = *p;
            unsigned best = ~0u;
            pp->n = 0;
            for (size_t i = 0; pat[i] && pat[i + 1] && pp->n < BG_PAT_PAIRS; i++) {
                if (pat[i] == '*' || pat[i + 1] == '*')
                    continue;
                uint16_t h = (uint16_t)bg_hash((unsigned char)pat[i], (unsigned char)pat[i + 1]);
                int dup = 0;
                for (unsigned j = 0; j < pp->n && !dup; j++)
                    dup = pp->h[j] == h;
                if (dup)
                    continue;
                pp->h[pp->n++] = h;
                unsigned w = char_weight((unsigned char)pat[i]) * char_weight((unsigned char)pat[i + 1]);
                if (w < best) {
                    best = w;
                    pat_key[k] = h;
                }
            }
            if (!pp->n) /* a phrase of one character: every text may hold it */
                pat_key[k] = 0xffff;
        }
    }
}

static int bg_has(const struct bigrams *bg, unsigned h)
{
    return (int)((bg->bits[h / 64] >> (h % 64)) & 1);
}

static int text_is(const char *norm, const struct bigrams *bg, const char *name)
{
    const struct rule *r = rule_of(name);
    if (!r || !norm || !norm[0])
        return 0;
    pthread_once(&pairs_once, pairs_init);
    size_t k = rule_first[r - rules];
    for (const char *const *p = r->pats; *p; p++, k++) {
        if (k < BG_PATS_MAX) {
            if (pat_key[k] != 0xffff && !bg_has(bg, pat_key[k]))
                continue;
            const struct pat_pairs *pp = &pat_pairs[k];
            unsigned j = 0;
            while (j < pp->n && bg_has(bg, pp->h[j]))
                j++;
            if (j < pp->n)
                continue;
        } else if (!bg_may(bg, *p)) {
            continue;
        }
        if (bnc_match(norm, *p))
            return 1;
    }
    return 0;
}

static int in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (strcmp(*list, s) == 0)
            return 1;
    return 0;
}

/* Enhanced status code -> reason, when the text named nothing. Exact codes first, then "C.S" prefixes. */
struct code_reason {
    const char *code;
    const char *reason;
};
static const struct code_reason codes[] = {
    {"5.1.0", "userunknown"},  {"5.1.1", "userunknown"},     {"5.1.2", "hostunknown"},
    {"5.1.3", "userunknown"},  {"5.1.4", "filtered"},        {"5.1.6", "hasmoved"},
    {"5.1.7", "rejected"},     {"5.1.8", "rejected"},        {"5.1.9", "systemerror"},
    {"5.1.10", "notaccept"},   {"5.2.0", "filtered"},        {"5.2.1", "suspend"},
    {"5.2.2", "mailboxfull"},  {"5.2.3", "exceedlimit"},     {"5.2.4", "filtered"},
    {"5.3.0", "systemerror"},  {"5.3.1", "systemfull"},      {"5.3.2", "notaccept"},
    {"5.3.3", "systemerror"},  {"5.3.4", "mesgtoobig"},      {"5.3.5", "systemerror"},
    {"5.4.0", "networkerror"}, {"5.4.1", "networkerror"},    {"5.4.3", "systemerror"},
    {"5.4.4", "hostunknown"},  {"5.4.6", "networkerror"},    {"5.4.7", "expired"},
    {"5.5.2", "syntaxerror"},  {"5.5.3", "toomanyconn"},     {"5.5.4", "systemerror"},
    {"5.5.5", "systemerror"},  {"5.5.6", "syntaxerror"},     {"5.7.1", "blocked"},
    {"5.7.13", "suspend"},     {"5.7.16", "mesgtoobig"},     {"5.7.17", "hasmoved"},
    {"5.7.18", "hasmoved"},    {"5.7.20", "authfailure"},    {"5.7.21", "authfailure"},
    {"5.7.22", "authfailure"}, {"5.7.23", "authfailure"},    {"5.7.24", "authfailure"},
    {"5.7.25", "requireptr"},  {"5.7.26", "authfailure"},    {"5.7.27", "notaccept"},
    {"5.7.28", "spamdetected"}, {"5.7.29", "authfailure"},   {"5.7.30", "securityerror"},
    {"4.1.6", "hasmoved"},     {"4.1.7", "rejected"},        {"4.1.8", "rejected"},
    {"4.2.1", "blocked"},      {"4.2.2", "mailboxfull"},     {"4.2.3", "exceedlimit"},
    {"4.2.4", "filtered"},     {"4.3.1", "systemfull"},      {"4.3.2", "notaccept"},
    {"4.3.3", "systemerror"},  {"4.3.5", "systemerror"},     {"4.4.1", "expired"},
    {"4.4.2", "networkerror"}, {"4.4.3", "systemerror"},     {"4.4.4", "networkerror"},
    {"4.4.5", "systemfull"},   {"4.4.6", "networkerror"},    {"4.4.7", "expired"},
    {"4.5.3", "systemerror"},  {"4.7.1", "blocked"},         {"4.7.24", "authfailure"},
    {"4.7.25", "requireptr"},  {"4.7.26", "authfailure"},    {NULL, NULL},
};

void bnc_copy(char *dst, size_t dstlen, const char *src)
{
    if (!dstlen)
        return;
    size_t n = strnlen(src, dstlen - 1);
    memmove(dst, src, n);
    dst[n] = 0;
}

/* bnc_norm writes a normalised copy of text (lower case, white space folded) to out; returns its length. */
size_t bnc_norm(const char *text, size_t len, char *out, size_t outlen)
{
    size_t o = 0;
    int sp = 1;
    if (outlen == 0)
        return 0;
    for (size_t i = 0; i < len && o + 1 < outlen; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == 0)
            break;
        if (c <= ' ' && (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v')) {
            if (!sp)
                out[o++] = ' ';
            sp = 1;
            continue;
        }
        sp = 0;
        /* typographic apostrophe (U+2019) -> ' so "wasn't" matches either way */
        if (c == 0xe2 && i + 2 < len && (unsigned char)text[i + 1] == 0x80 && (unsigned char)text[i + 2] == 0x99) {
            out[o++] = '\'';
            i += 2;
            continue;
        }
        out[o++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c); /* ASCII only, as tolower in the C locale */
    }
    while (o > 0 && out[o - 1] == ' ')
        o--;
    out[o] = 0;
    return o;
}

/* Match pattern (with '*' gaps) in s; when anchored, the first segment must start within BNC_GAP chars.
 * Unanchored segments are found with strstr (fast); phrases are short, so a segment fits in seg[]. */
static int match_from(const char *s, const char *pat, int anchored)
{
    const char *star = strchr(pat, '*');
    size_t seglen = star ? (size_t)(star - pat) : strlen(pat);
    char seg[128];
    if (seglen == 0 || seglen >= sizeof seg)
        return 0;
    memcpy(seg, pat, seglen);
    seg[seglen] = 0;
    for (const char *q = strstr(s, seg); q; q = strstr(q + 1, seg)) {
        if (anchored && (size_t)(q - s) > BNC_GAP)
            return 0;
        if (!star || match_from(q + seglen, star + 1, 1))
            return 1;
    }
    return 0;
}

int bnc_match(const char *norm, const char *pat)
{
    if (!pat[0])
        return 0;
    return match_from(norm, pat, 0);
}

const char *bnc_reason_text(const char *norm)
{
    if (!norm || !norm[0])
        return NULL;
    struct bigrams bg;
    bg_build(&bg, norm);
    for (const char *const *o = order1; *o; o++)
        if (text_is(norm, &bg, *o))
            return rule_of(*o)->reason;
    for (const char *const *o = order2; *o; o++)
        if (text_is(norm, &bg, *o))
            return rule_of(*o)->reason;
    return NULL;
}

const char *bnc_reason_status(const char *status)
{
    if (!status || !status[0])
        return NULL;
    for (const struct code_reason *c = codes; c->code; c++)
        if (strcmp(c->code, status) == 0)
            return c->reason;
    if (status[0] == '2')
        return "delivered";
    if (strncmp(status + 1, ".6.", 3) == 0)
        return "contenterror";
    if (strncmp(status + 1, ".7.", 3) == 0)
        return "securityerror";
    return NULL;
}

/* bnc_status_ok says whether s is an enhanced status code "C.SSS.DDD" with C in 2,4,5. */
int bnc_status_ok(const char *s, size_t n)
{
    size_t i = 0, d;
    if (n < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
        return 0;
    i = 2;
    for (d = 0; i < n && isdigit((unsigned char)s[i]) && d < 3; i++, d++)
        ;
    if (d == 0 || i >= n || s[i] != '.')
        return 0;
    i++;
    for (d = 0; i < n && isdigit((unsigned char)s[i]) && d < 3; i++, d++)
        ;
    return d > 0 && i == n;
}

/* Find the first enhanced status code in text (a token "C.S.D" not part of a longer number/version). */
int bnc_find_status(const char *text, char *out, size_t outlen)
{
    for (const char *p = text; *p; p++) {
        if ((*p != '4' && *p != '5' && *p != '2') || p[1] != '.')
            continue;
        if (p > text && (isalnum((unsigned char)p[-1]) || p[-1] == '.' || p[-1] == '-'))
            continue;
        size_t n = 0;
        while (p[n] && (isdigit((unsigned char)p[n]) || p[n] == '.') && n < 12)
            n++;
        /* strip a trailing dot ("5.1.1.") */
        size_t m = n;
        while (m > 0 && p[m - 1] == '.')
            m--;
        if (isalnum((unsigned char)p[n]))
            continue;
        if (bnc_status_ok(p, m) && m < outlen) {
            memcpy(out, p, m);
            out[m] = 0;
            return 0;
        }
    }
    return -1;
}

/* Find an SMTP reply code: a 4xx/5xx number standing alone (start, after space/"said:"/"-"), followed by
 * space, '-' or end. Returns the code or 0. */
int bnc_find_replycode(const char *text)
{
    for (const char *p = text; *p; p++) {
        if ((*p != '4' && *p != '5') || !isdigit((unsigned char)p[1]) || !isdigit((unsigned char)p[2]))
            continue;
        if (p > text && !(p[-1] == ' ' || p[-1] == ':' || p[-1] == '(' || p[-1] == '<' || p[-1] == '#' ||
                          p[-1] == '"' || p[-1] == '['))
            continue;
        if (p[3] && p[3] != ' ' && p[3] != '-' && p[3] != ',' && p[3] != ')' && !(p[3] == ':' && p[4] == ' '))
            continue;
        if (p[3] == '-' && !isalpha((unsigned char)p[4]) && !isdigit((unsigned char)p[4]))
            continue;
        if (p[1] > '5')
            continue;
        return (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    }
    return 0;
}

/* "553 mx.example.net does not exist": a host name (dots, no '@') followed by "does not exist". */
static int host_does_not_exist(const char *norm)
{
    if (!norm)
        return 0;
    for (const char *p = strstr(norm, " does not exist"); p; p = strstr(p + 1, " does not exist")) {
        const char *b = p;
        while (b > norm && b[-1] != ' ')
            b--;
        if (p - b < 4)
            continue;
        int dots = 0, ok = 1;
        for (const char *c = b; c < p; c++) {
            if (*c == '.')
                dots++;
            else if (!isalnum((unsigned char)*c) && *c != '-')
                ok = 0;
        }
        if (ok && dots > 0 && isalpha((unsigned char)p[-1]))
            return 1;
    }
    return 0;
}

static int is_hard_reason(const char *reason)
{
    return strcmp(reason, "userunknown") == 0 || strcmp(reason, "hostunknown") == 0 ||
           strcmp(reason, "hasmoved") == 0 || strcmp(reason, "notaccept") == 0;
}

/* Remove the reply codes of multi-line replies ("550-5.7.1 ", and "550 5.7.1 " after one) in place, so
 * phrases broken over reply lines match again. */
static void strip_continuations(char *s)
{
    char *o = s;
    int cont = 0;
    for (char *p = s; *p;) {
        int at_tok = (p == s || p[-1] == ' ');
        if (at_tok && (p[0] == '4' || p[0] == '5') && isdigit((unsigned char)p[1]) &&
            isdigit((unsigned char)p[2]) && (p[3] == '-' || (p[3] == ' ' && cont))) {
            char *q = p + 4;
            /* an enhanced code right after it goes too */
            if ((q[0] == '4' || q[0] == '5' || q[0] == '2') && q[1] == '.') {
                char *e = q;
                while (*e && (isdigit((unsigned char)*e) || *e == '.'))
                    e++;
                if (*e == ' ' || *e == 0)
                    q = *e ? e + 1 : e;
            }
            if (p[3] == '-')
                cont = 1;
            p = q;
            continue;
        }
        *o++ = *p++;
    }
    *o = 0;
}

/* The SMTP command a rejection answered, as reported by Postfix ("in reply to RCPT TO command"), Exim
 * ("after RCPT TO:"), Sendmail (">>> DATA") and others. */
enum bnc_cmd { CMD_NONE, CMD_CONN, CMD_HELO, CMD_MAIL, CMD_RCPT, CMD_DATA };

/* Does norm hold the phrase s? With bg (the pairs of norm), a phrase one of whose pairs is absent is not
 * searched for. */
static int has(const char *norm, const struct bigrams *bg, const char *s)
{
    if (bg)
        for (size_t i = 0; s[i] && s[i + 1]; i++) {
            unsigned h = bg_hash((unsigned char)s[i], (unsigned char)s[i + 1]);
            if (!((bg->bits[h / 64] >> (h % 64)) & 1))
                return 0;
        }
    return strstr(norm, s) != NULL;
}

static enum bnc_cmd find_command(const char *norm, const struct bigrams *bg)
{
    if (!norm)
        return CMD_NONE;
    if (has(norm, bg, "in reply to rcpt to") || has(norm, bg, "after rcpt to") || has(norm, bg, ">>> rcpt to") ||
        has(norm, bg, "[rcpt_to]") || has(norm, bg, "smtp command rcpt") || has(norm, bg, "does not like recipient"))
        return CMD_RCPT;
    if (has(norm, bg, "in reply to mail from") || has(norm, bg, "after mail from") || has(norm, bg, ">>> mail from") ||
        has(norm, bg, "[mail_from]") || has(norm, bg, "smtp command mail"))
        return CMD_MAIL;
    if (has(norm, bg, "in reply to end of data") || has(norm, bg, "after end of data") ||
        has(norm, bg, "in reply to data") || has(norm, bg, ">>> data") || has(norm, bg, "after data") ||
        has(norm, bg, "smtp command data") || has(norm, bg, "[data]"))
        return CMD_DATA;
    if (has(norm, bg, "in reply to helo") || has(norm, bg, "in reply to ehlo") || has(norm, bg, "after helo") ||
        has(norm, bg, "after ehlo"))
        return CMD_HELO;
    if (has(norm, bg, "refused to talk to me") || has(norm, bg, "after initial connection") ||
        has(norm, bg, "greeting"))
        return CMD_CONN;
    return CMD_NONE;
}

static const char *const cmd_names[] = {"", "CONN", "HELO", "MAIL", "RCPT", "DATA"};

static enum bnc_cmd cmd_of_name(const char *s)
{
    for (int i = 1; i < 6; i++)
        if (strcmp(s, cmd_names[i]) == 0)
            return (enum bnc_cmd)i;
    return CMD_NONE;
}

const char *bnc_find_command(const char *text, size_t len)
{
    if (!text || !len)
        return "";
    size_t cap = len < BNC_TEXT_MAX ? len : BNC_TEXT_MAX;
    char *norm = malloc(cap + 1);
    if (!norm)
        abort();
    bnc_norm(text, cap, norm, cap + 1);
    enum bnc_cmd c = find_command(norm, NULL);
    free(norm);
    return cmd_names[c];
}

/* Does the text name a cause that is not the address itself (a sender, block, spam or policy rejection)? With
 * broad, the generic block words count too ("access denied", "your host", "blocked"). */
static int other_cause(const char *norm, const struct bigrams *bg, int broad)
{
    return text_is(norm, bg, "rejected") || (broad && text_is(norm, bg, "blocked")) ||
           text_is(norm, bg, "blocked-early") || text_is(norm, bg, "spamdetected") ||
           text_is(norm, bg, "policy-early");
}

void bnc_classify(struct bnc_rcpt *r, const char *text, size_t textlen)
{
    char *norm = NULL;
    size_t nlen = 0;
    const char *sreason, *reason = NULL;
    char tstatus[BNC_STATUS_LEN] = "";

    if (text && textlen) {
        size_t cap = textlen < BNC_TEXT_MAX ? textlen : BNC_TEXT_MAX;
        norm = malloc(cap + 1);
        if (!norm)
            abort();
        nlen = bnc_norm(text, cap, norm, cap + 1);
    }
    if (norm && nlen) {
        if (r->replycode == 0)
            r->replycode = bnc_find_replycode(norm);
        if (bnc_find_status(norm, tstatus, sizeof tstatus) == 0) {
            /* the text's code refines a missing or generic (X.0.0) status of the same class */
            if (!r->status[0] ||
                (strcmp(r->status + 1, ".0.0") == 0 && tstatus[0] == r->status[0] && strcmp(tstatus + 1, ".0.0")))
                memcpy(r->status, tstatus, sizeof r->status);
        }
        strip_continuations(norm);
    }
    struct bigrams bg;
    bg_build(&bg, norm);
    if (!r->status[0] && r->replycode >= 400 && r->replycode < 600)
        snprintf(r->status, sizeof r->status, "%d.0.0", (r->replycode / 100) % 10);

    sreason = bnc_reason_status(r->status);
    enum bnc_cmd cmd = find_command(norm, &bg);
    if (cmd == CMD_NONE && r->command[0])
        cmd = cmd_of_name(r->command);
    else if (cmd != CMD_NONE && !r->command[0])
        bnc_copy(r->command, sizeof r->command, cmd_names[cmd]);
    if (r->action == BNC_DELIVERED || (r->status[0] == '2' && r->action != BNC_FEEDBACK)) {
        reason = "delivered";
    } else if (r->action == BNC_FEEDBACK) {
        reason = "feedback";
    } else {
        int strong = sreason && in_list(strong_codes, r->status);
        for (const char *const *o = order1; *o && !reason; o++) {
            const struct rule *ru = rule_of(*o);
            int by_status = strong && strcmp(sreason, ru->reason) == 0;
            int by_text = text_is(norm, &bg, *o);
            if (!by_status && !by_text)
                continue;
            /* a "user unknown" code whose text names another cause is that other cause */
            if (!by_text && strcmp(*o, "userunknown") == 0 && other_cause(norm, &bg, 1))
                continue;
            reason = ru->reason;
        }
        /* a temporary class in a final report: the message expired in the queue */
        if (!reason && (r->action == BNC_DELAYED || r->status[0] == '4'))
            reason = (sreason && strcmp(sreason, "networkerror") && strcmp(sreason, "blocked")) ? sreason : "expired";
        for (const char *const *o = order2; *o && !reason; o++)
            if (text_is(norm, &bg, *o))
                reason = rule_of(*o)->reason;
        if (!reason && sreason)
            reason = sreason;
        if ((!reason || !strcmp(reason, "undefined")) && host_does_not_exist(norm))
            reason = "hostunknown";
        if (!reason)
            reason = "undefined";
        /* a temporary failure cannot prove that a domain does not exist: a DNS lookup failed */
        if (!strcmp(reason, "hostunknown") && r->status[0] == '4')
            reason = "networkerror";

        /* what the rejection answered refines it: a sender problem at MAIL FROM, a content filter that
         * says "unknown user" after DATA, a client refused before any transaction */
        if (cmd == CMD_MAIL && (!strcmp(reason, "userunknown") || !strcmp(reason, "hostunknown") ||
                                !strcmp(reason, "undefined") || !strcmp(reason, "systemerror") ||
                                (!strcmp(reason, "blocked") && !text_is(norm, &bg, "blocked-early"))))
            reason = "rejected";
        /* "unknown user" is proof of a dead address only when the status code says so (X.1.1), or when the
         * reply answered RCPT TO. After DATA (the recipient was accepted), or under a status that says the
         * mailbox exists (X.2.0 / X.2.1), it is a recipient-side filter speaking (vocabulary: filtered). */
        else if (!strcmp(reason, "userunknown") && strcmp(r->status + 1, ".1.1") != 0 &&
                 (cmd == CMD_DATA || ((!strcmp(r->status + 1, ".2.0") || !strcmp(r->status + 1, ".2.1")) &&
                                      cmd != CMD_RCPT)))
            reason = "filtered";
        /* a security/policy code (X.7.X) is no proof that the mailbox is gone: an "unknown user" under it is
         * a filter speaking, unless it answered RCPT TO (the recipient itself refused: "553 5.7.1 Invalid
         * recipient", Postfix's "Recipient address rejected: Access denied") and names no other cause */
        else if (!strncmp(r->status + 1, ".7.", 3) && !strcmp(reason, "userunknown") &&
                 (cmd != CMD_RCPT || other_cause(norm, &bg, 0)))
            reason = "filtered";
        else if ((cmd == CMD_CONN || cmd == CMD_HELO) &&
                 (!strcmp(reason, "spamdetected") || !strcmp(reason, "rejected") || !strcmp(reason, "undefined") ||
                  !strcmp(reason, "securityerror") || !strcmp(reason, "policyviolation")))
            reason = "blocked";
    }
    r->reason = reason;

    /* a permanent class: 5.x.x, or a 5xx reply, or a failure that names no class at all */
    int permanent;
    if (r->status[0])
        permanent = r->status[0] == '5';
    else if (r->replycode)
        permanent = r->replycode / 100 == 5;
    else
        permanent = 1;
    /* policy (X.7.X) is not about the address itself; except the codes that are: 5.7.17/5.7.18 (mailbox or
     * domain owner changed) and null MX (Sendmail reports the recipient's as 5.7.27), and a userunknown that
     * survived the X.7.X rule above (the recipient refused at RCPT TO) */
    if (r->status[0] && !strncmp(r->status + 1, ".7.", 3) && strcmp(r->reason, "notaccept") != 0 &&
        strcmp(r->reason, "hasmoved") != 0 && strcmp(r->reason, "userunknown") != 0)
        permanent = 0;
    r->hard = (r->action == BNC_FAILED && permanent && is_hard_reason(r->reason)) ? 1 : 0;
    free(norm);
}

int bnc_classify_reply(const char *reply, struct bnc_rcpt *out)
{
    memset(out, 0, sizeof *out);
    out->action = BNC_FAILED;
    out->reason = "undefined";
    if (!reply)
        return -1;
    size_t len = strnlen(reply, BNC_TEXT_MAX);
    const char *p = reply;
    while (*p == ' ' || *p == '\t')
        p++;
    int code = 0;
    if (isdigit((unsigned char)p[0]) && isdigit((unsigned char)p[1]) && isdigit((unsigned char)p[2]) &&
        (p[3] == 0 || p[3] == ' ' || p[3] == '-' || p[3] == '\r' || p[3] == '\n'))
        code = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    out->replycode = code;
    bnc_norm(reply, len, out->diag, sizeof out->diag);
    bnc_classify(out, reply, len);
    if (code < 400 || code > 599) {
        out->hard = 0;
        return -1;
    }
    return 0;
}

const char *bnc_action_name(enum bnc_action a)
{
    switch (a) {
    case BNC_FAILED:
        return "failed";
    case BNC_DELAYED:
        return "delayed";
    case BNC_DELIVERED:
        return "delivered";
    case BNC_FEEDBACK:
        return "feedback";
    }
    return "?";
}

const char *bnc_kind_name(enum bnc_kind k)
{
    switch (k) {
    case BNC_K_NONE:
        return "none";
    case BNC_K_DSN:
        return "dsn";
    case BNC_K_TEXT:
        return "text";
    case BNC_K_ARF:
        return "arf";
    case BNC_K_AUTOREPLY:
        return "autoreply";
    }
    return "?";
}
