/* lc_cfg: the configuration table, file parser and --set overrides. See lc_cfg.h.
 *
 * One table lists every key with its type, default and range; this is the single place a key is defined.
 * Values are kept as strings (validated on the way in) and integers are parsed once on set.
 */
#include "lc_cfg.h"
#include "lc_log.h"
#include "lc_net.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum cfg_type {
    T_STR,      /* any text */
    T_INT,      /* integer in [min, max] */
    T_BOOL,     /* 0/1, yes/no, true/false, on/off */
    T_HOSTPORT, /* numeric host:port */
    T_HOSTPORTS,/* comma-separated host:port list, may be empty */
    T_RELAY,    /* host:port or empty */
    T_URL,      /* redis URL or empty */
    T_HTTPURL,  /* http(s) URL */
    T_NAME,     /* host name / node name: [A-Za-z0-9._-]+, empty = derived */
    T_ENUM,     /* one of the '|'-separated words in choices */
};

struct cfg_key {
    const char *name;
    enum cfg_type type;
    const char *def;
    long long min, max;
    const char *doc;
    const char *choices; /* T_ENUM only: "a|b|c" */
};

static const struct cfg_key keys[] = {
    {"redis.url", T_URL, "", 0, 0, "Redis to use: redis://HOST:PORT[/DB] or unix:///PATH; empty: embedded", NULL},
    {"state.dir", T_STR, "/var/lib/listcast", 0, 0, "directory for the embedded Redis, the secret and logs", NULL},
    {"secret.file", T_STR, "", 0, 0, "HMAC key file; empty: STATE.DIR/secret (created on first start)", NULL},
    {"run.user", T_STR, "", 0, 0,
     "started as root: the user the daemons and the embedded redis-server run as once their sockets are bound "
     "(state.dir is given to it); empty: they keep the user they were started as", NULL},
    {"node.name", T_NAME, "", 0, 0, "this node's consumer name in Redis streams; empty: the host name", NULL},
    {"smtp.listen", T_HOSTPORT, "127.0.0.1:2525", 0, 0, "listd's SMTP listening address", NULL},
    {"smtp.hostname", T_NAME, "", 0, 0, "name in SMTP banners, EHLO and Received; empty: the host name", NULL},
    {"smtp.max_message_size", T_INT, "10485760", 1024, 1073741824, "largest message listd accepts (bytes)", NULL},
    {"http.listen", T_HOSTPORT, "127.0.0.1:8025", 0, 0, "admin web UI and JSON API listening address", NULL},
    {"http.public_url", T_HTTPURL, "http://127.0.0.1:8025", 0, 0, "base URL of links in mail", NULL},
    {"dns.servers", T_HOSTPORTS, "", 0, 0, "DNS servers as host:port list; empty: the system resolver", NULL},
    {"sender.mx_port", T_INT, "25", 1, 65535, "TCP port of receiving MX hosts", NULL},
    {"sender.concurrency", T_INT, "100", 1, 10000, "global limit of outgoing SMTP connections", NULL},
    {"sender.per_mx", T_INT, "20", 1, 1000, "limit of connections to one MX host", NULL},
    {"sender.batch_size", T_INT, "100", 1, 10000, "recipients per delivery batch", NULL},
    {"sender.relay", T_RELAY, "", 0, 0, "smarthost HOST:PORT taking all deliveries; empty: MX lookup", NULL},
    {"log.verbose", T_BOOL, "no", 0, 1, "log debug lines", NULL},
    /* listd: TLS and per-client limits */
    {"tls.cert", T_STR, "", 0, 0, "PEM certificate chain for listd's STARTTLS; empty: no STARTTLS", NULL},
    {"tls.key", T_STR, "", 0, 0, "PEM private key for tls.cert", NULL},
    {"smtp.max_sessions", T_INT, "100", 1, 100000, "concurrent SMTP sessions listd serves", NULL},
    {"smtp.max_sessions_per_ip", T_INT, "20", 1, 100000, "concurrent SMTP sessions from one client address", NULL},
    {"smtp.max_recipients", T_INT, "100", 1, 100000, "recipients per transaction", NULL},
    {"smtp.max_errors", T_INT, "20", 1, 1000, "errors before listd disconnects a client", NULL},
    {"smtp.idle_timeout", T_INT, "300", 1, 3600, "seconds a client may stay silent", NULL},
    /* listd: confirmation cookies */
    {"confirm.lifetime", T_INT, "259200", 60, 31536000, "seconds a subscribe/unsubscribe confirmation stays valid", NULL},
    /* sender: retries, MX backoff, fallback, TLS */
    {"sender.retry_min", T_INT, "300", 1, 86400, "first retry of a deferred recipient after this many seconds", NULL},
    {"sender.retry_max", T_INT, "14400", 1, 604800, "longest wait between retries (exponential backoff, jitter)", NULL},
    {"sender.max_lifetime", T_INT, "345600", 1, 2592000,
     "seconds a deferred recipient is retried before it bounces as expired", NULL},
    {"sender.mx_backoff", T_INT, "300", 1, 86400, "seconds an MX host stays marked down after a failure", NULL},
    {"sender.fallback_relay", T_RELAY, "", 0, 0, "HOST:PORT taking recipients whose first attempt was deferred", NULL},
    {"sender.tls", T_ENUM, "may", 0, 0, "STARTTLS to MX hosts: none, may (opportunistic) or encrypt", "none|may|encrypt"},
    {"sender.reply_timeout", T_INT, "60", 1, 3600,
     "seconds the sender waits for a whole SMTP reply (or write progress) before dropping the connection", NULL},
    /* webui: HTTPS */
    {"http.tls_cert", T_STR, "", 0, 0, "PEM certificate chain for the admin web UI; empty: plain HTTP", NULL},
    {"http.tls_key", T_STR, "", 0, 0, "PEM private key for http.tls_cert", NULL},
    {"sender.sign_threads", T_INT, "-1", -1, 64,
     "DKIM signing threads for per-recipient signatures: -1 one per online CPU, 0 none (sign in the event loop)",
     NULL},
    {"sender.claim_idle", T_INT, "60", 2, 3600,
     "seconds a claimed batch may go untouched before another sender takes it over (crashed peer)", NULL},
    /* complaints (issue 7): a decimal fraction 0..1, checked by its users (lc_view_rate_parse) */
    {"complaints.warn_rate", T_STR, "0.001", 0, 0, "complaint rate (complaints / delivered) shown as a warning", NULL},
    {"complaints.pause_rate", T_STR, "0.003", 0, 0,
     "complaint rate at which a list's sending is paused automatically (0: never)", NULL},
};
#define NKEYS (sizeof keys / sizeof keys[0])

struct lc_cfg {
    char *val[NKEYS];
    long long num[NKEYS];
    char *kv[NKEYS]; /* "key=value" strings handed out by lc_cfg_argv */
};

static int lookup(const char *name, size_t len)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strlen(keys[i].name) == len && memcmp(keys[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

static void seterr(char *err, size_t errlen, const char *fmt, ...) LC_PRINTF(3, 4);
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int valid_hostport(const char *v)
{
    struct sockaddr_storage ss;
    socklen_t len;
    return lc_net_parse(v, &ss, &len) == 0;
}

/* check validates v for key k and computes its number; returns 0 or -1 with a reason (without the key). */
static int check(const struct cfg_key *k, const char *v, long long *num, const char **why)
{
    *num = 0;
    switch (k->type) {
    case T_STR:
        return 0;
    case T_INT: {
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (!*v || *end || errno) {
            *why = "not an integer";
            return -1;
        }
        if (n < k->min || n > k->max) {
            *why = "out of range";
            return -1;
        }
        *num = n;
        return 0;
    }
    case T_BOOL:
        if (!strcmp(v, "1") || !strcasecmp(v, "yes") || !strcasecmp(v, "true") || !strcasecmp(v, "on"))
            *num = 1;
        else if (!strcmp(v, "0") || !strcasecmp(v, "no") || !strcasecmp(v, "false") || !strcasecmp(v, "off"))
            *num = 0;
        else {
            *why = "not a boolean (use yes or no)";
            return -1;
        }
        return 0;
    case T_HOSTPORT:
        if (!valid_hostport(v)) {
            *why = "not a numeric HOST:PORT";
            return -1;
        }
        return 0;
    case T_RELAY:
        if (*v && !valid_hostport(v)) {
            *why = "not a numeric HOST:PORT";
            return -1;
        }
        return 0;
    case T_HOSTPORTS: {
        const char *p = v;
        while (*p) {
            const char *comma = strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            char one[128];
            if (n == 0 || n >= sizeof one) {
                *why = "not a comma-separated HOST:PORT list";
                return -1;
            }
            memcpy(one, p, n);
            one[n] = 0;
            if (!valid_hostport(one)) {
                *why = "not a comma-separated HOST:PORT list";
                return -1;
            }
            if (comma && !comma[1]) {
                *why = "not a comma-separated HOST:PORT list";
                return -1;
            }
            p += n + (comma ? 1 : 0);
        }
        return 0;
    }
    case T_URL:
        if (*v && strncmp(v, "redis://", 8) != 0 && strncmp(v, "unix:", 5) != 0) {
            *why = "not a redis:// or unix: URL";
            return -1;
        }
        return 0;
    case T_HTTPURL:
        if (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0) {
            *why = "not an http:// or https:// URL";
            return -1;
        }
        return 0;
    case T_ENUM: {
        size_t vn = strlen(v);
        for (const char *p = k->choices; p && *p;) {
            const char *bar = strchr(p, '|');
            size_t n = bar ? (size_t)(bar - p) : strlen(p);
            if (n == vn && !strncmp(p, v, n))
                return 0;
            p += n + (bar ? 1 : 0);
        }
        *why = "not one of the allowed values";
        return -1;
    }
    case T_NAME:
        for (const char *p = v; *p; p++)
            if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_') {
                *why = "may hold only letters, digits, '.', '-' and '_'";
                return -1;
            }
        if (strlen(v) > 255) {
            *why = "too long";
            return -1;
        }
        return 0;
    }
    return 0;
}

static int setkey(struct lc_cfg *c, int i, const char *v, char *err, size_t errlen)
{
    const char *why = "bad value";
    long long num;
    if (strlen(v) > 4000) {
        seterr(err, errlen, "%s: value too long", keys[i].name);
        return -1;
    }
    if (check(&keys[i], v, &num, &why) < 0) {
        seterr(err, errlen, "%s: bad value \"%.100s\": %s", keys[i].name, v, why);
        return -1;
    }
    free(c->val[i]);
    c->val[i] = lc_strdup(keys[i].type == T_BOOL ? (num ? "yes" : "no") : v); /* one spelling of booleans */
    c->num[i] = num;
    return 0;
}

struct lc_cfg *lc_cfg_new(void)
{
    struct lc_cfg *c = lc_calloc(1, sizeof *c);
    for (size_t i = 0; i < NKEYS; i++) {
        const char *why;
        c->val[i] = lc_strdup(keys[i].def);
        if (check(&keys[i], keys[i].def, &c->num[i], &why) < 0)
            lc_panic("default of %s is invalid: %s", keys[i].name, why);
    }
    return c;
}

void lc_cfg_free(struct lc_cfg *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < NKEYS; i++) {
        free(c->val[i]);
        free(c->kv[i]);
    }
    free(c);
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = 0;
    return s;
}

/* assign parses "key = value" (or key=value) in line; where names the source for errors. */
static int assign(struct lc_cfg *c, char *line, const char *where, char *err, size_t errlen)
{
    char *eq = strchr(line, '=');
    if (!eq) {
        seterr(err, errlen, "%s\"%.100s\": expected key = value", where, line);
        return -1;
    }
    *eq = 0;
    char *k = trim(line), *v = trim(eq + 1);
    int i = lookup(k, strlen(k));
    if (i < 0) {
        seterr(err, errlen, "%sunknown configuration key \"%.100s\"", where, k);
        return -1;
    }
    char sub[1024];
    if (setkey(c, i, v, sub, sizeof sub) < 0) {
        seterr(err, errlen, "%s%s", where, sub);
        return -1;
    }
    return 0;
}

int lc_cfg_set(struct lc_cfg *c, const char *assignment, char *err, size_t errlen)
{
    char *copy = lc_strdup(assignment);
    int r = assign(c, copy, "--set ", err, errlen);
    free(copy);
    return r;
}

int lc_cfg_load(struct lc_cfg *c, const char *file, char *err, size_t errlen)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        seterr(err, errlen, "%s: %s", file, strerror(errno));
        return -1;
    }
    char line[4098];
    int lineno = 0, rc = 0;
    long total = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        total += (long)n;
        if (total > 1024 * 1024) {
            seterr(err, errlen, "%s: file larger than 1 MiB", file);
            rc = -1;
            break;
        }
        if (n == sizeof line - 1 && line[n - 1] != '\n') {
            seterr(err, errlen, "%s:%d: line longer than 4096 bytes", file, lineno);
            rc = -1;
            break;
        }
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        char where[600];
        snprintf(where, sizeof where, "%.500s:%d: ", file, lineno);
        if (assign(c, s, where, err, errlen) < 0) {
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        seterr(err, errlen, "%s: read error", file);
        rc = -1;
    }
    fclose(f);
    return rc;
}

int lc_cfg_args(struct lc_cfg *c, int *argc, char **argv, char *err, size_t errlen)
{
    const char *file = NULL;
    int n = *argc, out = 1;
    /* First pass: find --config and compact argv; remember --set positions in order. */
    char **sets = lc_calloc((size_t)n + 1, sizeof *sets);
    int nsets = 0;
    for (int i = 1; i < n; i++) {
        char *a = argv[i];
        if (!strcmp(a, "--")) { /* everything after is positional */
            while (i < n)
                argv[out++] = argv[i++];
            break;
        }
        if (!strcmp(a, "--config") || !strcmp(a, "--set")) {
            if (i + 1 >= n) {
                seterr(err, errlen, "%s needs an argument", a);
                free(sets);
                return -1;
            }
            if (a[2] == 'c')
                file = argv[++i];
            else
                sets[nsets++] = argv[++i];
        } else if (!strncmp(a, "--config=", 9)) {
            file = a + 9;
        } else if (!strncmp(a, "--set=", 6)) {
            sets[nsets++] = a + 6;
        } else {
            argv[out++] = a;
        }
    }
    argv[out] = NULL;
    *argc = out;
    int rc = 0;
    if (file && lc_cfg_load(c, file, err, errlen) < 0)
        rc = -1;
    for (int i = 0; rc == 0 && i < nsets; i++)
        if (lc_cfg_set(c, sets[i], err, errlen) < 0)
            rc = -1;
    free(sets);
    return rc;
}

int lc_cfg_finish(struct lc_cfg *c, char *err, size_t errlen)
{
    int sf = lookup("secret.file", 11), sd = lookup("state.dir", 9);
    if (!*c->val[sd]) {
        seterr(err, errlen, "state.dir: must not be empty");
        return -1;
    }
    if (!*c->val[sf]) {
        size_t n = strlen(c->val[sd]) + 8;
        char *p = lc_malloc(n);
        snprintf(p, n, "%s/secret", c->val[sd]);
        free(c->val[sf]);
        c->val[sf] = p;
    }
    const char *named[] = {"node.name", "smtp.hostname"};
    for (size_t j = 0; j < 2; j++) {
        int i = lookup(named[j], strlen(named[j]));
        if (!*c->val[i]) {
            char host[256] = "localhost";
            if (gethostname(host, sizeof host - 1) < 0 || !*host)
                strcpy(host, "localhost");
            host[sizeof host - 1] = 0;
            free(c->val[i]);
            c->val[i] = lc_strdup(host);
        }
    }
    if (lc_cfg_int(c, "sender.per_mx") > lc_cfg_int(c, "sender.concurrency")) {
        seterr(err, errlen, "sender.per_mx: must not exceed sender.concurrency");
        return -1;
    }
    return 0;
}

static int must(const char *key)
{
    int i = lookup(key, strlen(key));
    if (i < 0)
        lc_panic("unknown configuration key %s asked for", key);
    return i;
}

const char *lc_cfg_str(const struct lc_cfg *c, const char *key)
{
    return c->val[must(key)];
}

long long lc_cfg_int(const struct lc_cfg *c, const char *key)
{
    int i = must(key);
    if (keys[i].type != T_INT && keys[i].type != T_BOOL)
        lc_panic("configuration key %s is not a number", key);
    return c->num[i];
}

int lc_cfg_count(void)
{
    return (int)NKEYS;
}

int lc_cfg_argv(const struct lc_cfg *cc, char **argv)
{
    struct lc_cfg *c = (struct lc_cfg *)cc; /* caches the strings it hands out; values are unchanged */
    static char set[] = "--set";
    int n = 0;
    for (size_t i = 0; i < NKEYS; i++) {
        if (!strcmp(c->val[i], keys[i].def))
            continue;
        size_t len = strlen(keys[i].name) + 1 + strlen(c->val[i]) + 1;
        char *kv = lc_malloc(len);
        snprintf(kv, len, "%s=%s", keys[i].name, c->val[i]);
        if (c->kv[i] && !strcmp(c->kv[i], kv)) {
            free(kv); /* unchanged: keep the string handed out before, which callers may still hold */
        } else {
            free(c->kv[i]);
            c->kv[i] = kv;
        }
        argv[n++] = set;
        argv[n++] = c->kv[i];
    }
    argv[n] = NULL;
    return n;
}

void lc_cfg_dump(const struct lc_cfg *c, FILE *f)
{
    for (size_t i = 0; i < NKEYS; i++)
        fprintf(f, "%s = %s\n", keys[i].name, c->val[i]);
}

static void daemon_usage(const char *prog, struct lc_cfg *c, const char *why)
{
    fprintf(stderr, "%s: %s\nusage: %s [--config FILE] [--set key=value]... [-v]\n", prog, why, prog);
    lc_cfg_free(c);
    exit(2);
}

struct lc_cfg *lc_cfg_daemon(const char *prog, int argc, char **argv, int need_redis)
{
    char err[1024];
    int verbose = 0;
    lc_log_init(prog);
    struct lc_cfg *c = lc_cfg_new();
    if (lc_cfg_args(c, &argc, argv, err, sizeof err) < 0)
        daemon_usage(prog, c, err);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-v") != 0) {
            snprintf(err, sizeof err, "unknown argument \"%.100s\"", argv[i]);
            daemon_usage(prog, c, err);
        }
        verbose = 1;
    }
    if (lc_cfg_finish(c, err, sizeof err) < 0)
        daemon_usage(prog, c, err);
    if (need_redis && !*lc_cfg_str(c, "redis.url"))
        daemon_usage(prog, c, "redis.url: must be set (listcast up sets it)");
    lc_log_verbose(verbose || lc_cfg_int(c, "log.verbose"));
    return c;
}
