/* exp.h: private interfaces of listcast-expander, the daemon that turns a post into delivery batches.
 *
 * Modules (one file each):
 *   exp_main.c  main(): arguments, configuration, log, run.
 *   exp_loop.c  the stream loop: consumer group "expander" on lc:stream:posts, own pending entries first,
 *               XAUTOCLAIM of abandoned entries, reconnect with backoff, clean exit on SIGTERM/SIGINT.
 *   exp_post.c  one post: read its list, HSCAN the active subscribers, drop suppressed addresses, resolve,
 *               write the batches (MULTI/EXEC) and acknowledge the stream entry.
 *   exp_reroute.c  retried recipients that had no route (temporary DNS failure): resolve again, write their
 *               batches or bounces and acknowledge, in one MULTI/EXEC.
 *   exp_rcpt.c  the recipient set of one post: an arena of address strings, sorted by domain, deduplicated.
 *   exp_dns.c   MX + A resolution with c-ares, every domain in flight at once (bounded), with a TTL cache.
 *   exp_map.c   a small string-keyed open-addressing hash map (the DNS caches).
 */
#ifndef EXP_H
#define EXP_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

struct lc_cfg;

/* ---- exp_map: string -> pointer. Keys are not copied: a key must live as long as its entry. ---- */
struct exp_map;
struct exp_map *exp_map_new(void);
void exp_map_free(struct exp_map *m);
/* exp_map_get returns the value stored under key, or NULL. */
void *exp_map_get(const struct exp_map *m, const char *key);
/* exp_map_put stores val under key (replacing any value); val must not be NULL. */
void exp_map_put(struct exp_map *m, const char *key, void *val);
size_t exp_map_count(const struct exp_map *m);
/* exp_map_filter keeps the entries for which keep(val, arg) is non-zero; for the others it calls drop(val,
 * arg) (which may free the key) after they are out of the map. */
void exp_map_filter(struct exp_map *m, int (*keep)(void *val, void *arg), void (*drop)(void *val, void *arg),
                    void *arg);

/* ---- exp_rcpt: the recipients of one post ---- */
struct exp_rcpt {
    const char *addr; /* normalised address, in the set's arena */
    uint64_t subid;
    uint16_t dom;     /* offset of the domain (after '@') in addr */
    uint32_t did;     /* the domain's number in order of first appearance (exp_rcpt.c) */
};
struct exp_domain {
    const char *name; /* points into the first recipient's address */
    uint32_t first;   /* index of the first recipient (recipients are sorted by domain) */
    uint32_t count;
};
struct exp_rcpts;
struct exp_rcpts *exp_rcpts_new(void);
void exp_rcpts_free(struct exp_rcpts *s);
/* exp_rcpts_reset empties the set (keeps one arena block for the next post). */
void exp_rcpts_reset(struct exp_rcpts *s);
/* exp_rcpts_add copies a normalised address (no NUL needed) and its subscriber id in; returns 0, or -1 when
 * the set is full (EXP_RCPTS_MAX). */
int exp_rcpts_add(struct exp_rcpts *s, const char *addr, size_t len, uint64_t subid);
/* exp_rcpts_finish sorts by (domain, address), drops duplicates (HSCAN may return an entry twice) and builds
 * the domain table; returns the number of duplicates dropped. Call once after the last add. */
size_t exp_rcpts_finish(struct exp_rcpts *s);
size_t exp_rcpts_count(const struct exp_rcpts *s);
const struct exp_rcpt *exp_rcpts_get(const struct exp_rcpts *s, size_t i);
size_t exp_rcpts_ndomains(const struct exp_rcpts *s);
const struct exp_domain *exp_rcpts_domain(const struct exp_rcpts *s, size_t i);

#define EXP_RCPTS_MAX 50000000u /* recipients of one post (uint32 indices; ~2 GB of addresses) */

/* ---- exp_dns: routes for domains ---- */
enum exp_route_status {
    EXP_ROUTE_OK,       /* hosts holds "NAME=IP[,IP] ..." in preference order */
    EXP_ROUTE_NULLMX,   /* RFC 7505 null MX: the domain accepts no mail */
    EXP_ROUTE_NXDOMAIN, /* the domain does not exist */
    EXP_ROUTE_NOHOST,   /* no MX host (or the implicit MX) has an IPv4 address */
    EXP_ROUTE_TEMP      /* temporary DNS failure after every attempt */
};
struct exp_route {
    enum exp_route_status status;
    const char *hosts; /* for EXP_ROUTE_OK; owned by the resolver's cache, valid until the next resolve */
};
struct exp_dns_stats {
    unsigned long queries;   /* DNS queries sent (retries included) */
    unsigned long cached;    /* domains answered from the cache */
};
/* exp_dns_tick_fn is called about every 100 ms while queries are in flight (the caller's heartbeat). */
typedef void exp_dns_tick_fn(void *arg);

struct exp_dns;
/* exp_dns_new makes a resolver: servers is "" (the system's resolv.conf) or "ip:port[,ip:port...]". */
struct exp_dns *exp_dns_new(const char *servers, char *err, size_t errlen);
void exp_dns_free(struct exp_dns *d);
/* exp_dns_resolve fills routes[i] for domains[i] (n of them, distinct, lower-case), from the cache or from
 * DNS with at most EXP_DNS_INFLIGHT queries outstanding. Returns 0, or 1 when *stop became set (routes are
 * then incomplete). */
int exp_dns_resolve(struct exp_dns *d, const char *const *domains, size_t n, struct exp_route *routes,
                    struct exp_dns_stats *stats, exp_dns_tick_fn *tick, void *tick_arg,
                    volatile sig_atomic_t *stop);

#define EXP_DNS_INFLIGHT 128   /* outstanding queries at most: a server's default 212 KB socket buffer holds ~180 */
#define EXP_DNS_ATTEMPTS 3     /* attempts per lookup on temporary failure */
#define EXP_DNS_TTL_MAX 3600   /* cache cap (s) */
#define EXP_DNS_NEG_TTL 300    /* NXDOMAIN / no address cache time (s) */
#define EXP_DNS_MAX_MX 10      /* MX hosts kept per domain */
#define EXP_DNS_MAX_IPS 8      /* addresses kept per MX host */
#define EXP_DNS_CACHE_MAX 200000 /* cached names (domains + hosts) before the cache is emptied */

/* ---- the daemon ---- */
struct exp {
    const char *url;      /* redis.url */
    const char *node;     /* node.name: our consumer name */
    const char *relay;    /* sender.relay or "" */
    long batch_size;      /* sender.batch_size */
    redisContext *rd;     /* blocking XREADGROUP */
    redisContext *wr;     /* everything else */
    struct exp_dns *dns;
    struct exp_rcpts *rcpts;
    volatile sig_atomic_t *stop;
    double pause_rate;        /* complaints.pause_rate (0: never pause) */
    unsigned paused_waiting;  /* posts left pending because their list is paused (exp_post sets, exp_loop
                                 re-reads our pending entries every EXP_PAUSE_RECHECK_MS while > 0) */
};

#define EXP_PAUSE_RECHECK_MS 5000

/* exp_post_run expands the post of stream entry entry_id and acknowledges the entry.
 * Returns 0 when done (acknowledged, or left pending after a logged data error or because its list is paused),
 * -1 on a Redis connection error (reconnect; the entry stays pending), 1 when interrupted by *stop (the entry
 * stays pending). */
int exp_post_run(struct exp *e, const char *entry_id, const char *post_field, size_t post_len);

/* exp_reroute_run handles a reroute entry of lc:stream:posts (one with a `rcpts` field: retried recipients that
 * had no route, from the sender's retry poller): resolves their domains again and writes their batches or
 * bounces with the XACK in one MULTI/EXEC (exp_reroute.c). Returns 0 (done, or left pending after a logged
 * data error), -1 on a Redis connection error, 1 when interrupted by *stop. */
int exp_reroute_run(struct exp *e, const char *entry_id, const struct redisReply *fields);
/* exp_bounce_reply is the reply a permanent routing failure bounces with. */
const char *exp_bounce_reply(enum exp_route_status st);
#define EXP_REROUTE_MAX 100000 /* recipient lines of one reroute entry */

/* exp_run runs the stream loop until *stop is set (returns 0) or Redis has failed for ~30 s (returns -1). */
int exp_run(struct exp *e);

/* exp_now_ms is a monotonic clock in milliseconds. */
int64_t exp_now_ms(void);

#endif
