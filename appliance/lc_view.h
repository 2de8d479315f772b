/* lc_view: read-only views of lists and posts as stored in Redis (schema/SCHEMA.md), shared by the CLI
 * (`listcast list/post ...`) and the web UI (dashboard, /api/lists, /api/posts/ID), so both show the same
 * numbers and the same JSON.
 *
 * Contract: loaders run synchronous commands on the caller's redisContext and copy what they read into plain
 * structs the caller clears with the matching _clear/_free function (clearing a zeroed struct is a no-op).
 * Loaders return 1 (found), 0 (no such list/post) or -1 (Redis error, reason in err). Counters missing from a
 * hash read as 0; `pending` is computed (recipients - delivered - bounced, never below 0).
 * Limits: lists and posts are read in bounded numbers (the caller's max); domains of one post at most 100,000;
 * deferred recipients of one post at most the caller's max (10,000).
 */
#ifndef LC_VIEW_H
#define LC_VIEW_H

#include <stddef.h>
#include <stdint.h>
#include <hiredis/hiredis.h>

struct lc_json;

struct lc_list_view {
    char *address;
    char *policy;
    char *owner;
    long long id, created;
    long long members; /* ZCARD lc:members:LIST (any status) */
    long long active;  /* HLEN lc:active:LIST (receive posts) */
    long long posts;   /* ZCARD lc:posts:LIST */
    /* complaints (issue 7): the rate window of LC_LUA_LIST_RATE and the pause set by the expander */
    long long complaints;      /* the list's all-time `complaints` counter */
    long long rate_delivered;  /* delivered copies of the latest LC_RATE_WINDOW posts (after `rate_after`) */
    long long rate_complaints; /* complaints about those posts */
    int paused;                /* `paused` = 1: the expander leaves the list's posts queued */
    char *paused_reason;       /* why ("" when not paused) */
    long long paused_at;
};

struct lc_dom_view {
    char *domain;
    long long delivered, deferred, bounced;
};

/* one deferred recipient of a post (lc:postdefer:ID): its last deferral */
struct lc_defer_view {
    char *address;
    char *reply;       /* the last reply (or local reason) */
    long long at;      /* unix s of that deferral (0: unknown) */
    long long attempt; /* attempts made, that one included (0: unknown) */
};

struct lc_post_view {
    uint64_t id;
    char *list, *from, *state;
    long long size, created, recipients, delivered, deferred, bounced, pending;
    long long complaints; /* ARF complaints about this post */
    int has_domains;   /* domains were loaded (even if there are none) */
    size_t ndom;
    struct lc_dom_view *dom; /* sorted: most recipients first, then by name */
    int has_defers;    /* deferrals were loaded (lc_view_post_defers) */
    long long ndefer_total; /* HLEN lc:postdefer:ID: recipients deferred now */
    size_t ndefer;
    struct lc_defer_view *defer; /* at most the loader's max, sorted by address */
};

/* lc_view_list loads one list (address normalised by the caller). */
int lc_view_list(redisContext *rc, const char *list, struct lc_list_view *out, char *err, size_t errlen);
void lc_view_list_clear(struct lc_list_view *v);
/* lc_view_lists loads up to max lists, sorted by address, into a new array (*out, caller frees with
 * lc_view_lists_free); *total gets the number of lists that exist. Returns the number loaded or -1. */
long lc_view_lists(redisContext *rc, size_t max, struct lc_list_view **out, size_t *total, char *err,
                   size_t errlen);
void lc_view_lists_free(struct lc_list_view *v, size_t n);
void lc_view_list_json(struct lc_json *j, const struct lc_list_view *v);

/* lc_view_post loads post id; with_domains also loads its per-domain counters. */
int lc_view_post(redisContext *rc, uint64_t id, int with_domains, struct lc_post_view *out, char *err,
                 size_t errlen);
void lc_view_post_clear(struct lc_post_view *p);
/* lc_view_post_defers loads up to max (at most 10,000) deferred recipients of a loaded post with their last
 * replies (HSCAN of lc:postdefer:ID, bounded in rounds) and their total (HLEN). Returns 0 or -1 (err set). */
int lc_view_post_defers(redisContext *rc, struct lc_post_view *p, size_t max, char *err, size_t errlen);
/* lc_view_post_json writes the post as one JSON object (with "domains" when they were loaded, and
 * "deferrals" [{address, reply, at, attempt}] with "deferrals_total" when they were). */
void lc_view_post_json(struct lc_json *j, const struct lc_post_view *p);

/* lc_view_post_ids gets up to max post ids of a list, newest first, into a new array (caller frees);
 * *total gets the list's post count. Returns the number of ids or -1. */
long lc_view_post_ids(redisContext *rc, const char *list, long max, uint64_t **ids, long long *total, char *err,
                      size_t errlen);
/* lc_view_recent_posts merges the newest posts of the given lists (at most max ids, newest first). */
long lc_view_recent_posts(redisContext *rc, const struct lc_list_view *lists, size_t nlists, long max,
                          uint64_t **ids, char *err, size_t errlen);

/* ---- complaint rates (issue 7) ---- */

/* lc_view_rate_parse parses a rate setting (complaints.warn_rate, complaints.pause_rate): a decimal fraction in
 * [0, 1] ("0.003"); 0 or -1 (not a number, out of range). */
int lc_view_rate_parse(const char *s, double *out);
/* lc_view_rate_level: "none" (nothing delivered), "ok", "warn" (rate >= warn) or "pause" (rate >= pause, pause
 * > 0) for complaints out of delivered. */
const char *lc_view_rate_level(long long complaints, long long delivered, double warn, double pause);
/* lc_view_rate_fmt writes "0.250% (5 of 2000 delivered)" or "- (nothing delivered)". */
void lc_view_rate_fmt(char *out, size_t outlen, long long complaints, long long delivered);
/* lc_view_list_text_rate prints the list's complaint lines of `listcast list show` (complaints, rate, paused). */
void lc_view_list_text_rate(const struct lc_list_view *v, double warn, double pause);

/* lc_view_bar renders a text progress bar "[#####.....]  50%" of width cells into out. */
void lc_view_bar(char *out, size_t outlen, int width, long long done, long long total);

#endif
