/* lc_view: read lists and posts from Redis into plain structs, render them as JSON. See lc_view.h.
 *
 * Key names come only from schema/lc_schema.h. Multi-key reads are pipelined (redisAppendCommand, then one
 * redisGetReply per command) so a dashboard of 200 lists costs one round trip per batch, not per key.
 */
#include "lc_view.h"
#include "lc_json.h"
#include "lc_log.h"
#include "lc_schema.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VIEW_BATCH 128       /* lists per pipelined batch */
#define VIEW_MAX_DOMAINS 100000

static void set_err(redisContext *rc, const redisReply *r, char *err, size_t errlen)
{
    if (!r)
        snprintf(err, errlen, "redis: %s", rc->errstr[0] ? rc->errstr : "connection lost");
    else
        snprintf(err, errlen, "redis: %.*s", (int)r->len, r->str ? r->str : "unexpected reply");
}

/* get_reply reads one pipelined reply; NULL (err set) on I/O error or an error reply. */
static redisReply *get_reply(redisContext *rc, char *err, size_t errlen)
{
    void *p = NULL;
    if (redisGetReply(rc, &p) != REDIS_OK || !p) {
        set_err(rc, NULL, err, errlen);
        return NULL;
    }
    redisReply *r = p;
    if (r->type == REDIS_REPLY_ERROR) {
        set_err(rc, r, err, errlen);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* drain reads and drops n outstanding replies (after an error, to keep the connection in step). */
static void drain(redisContext *rc, int n)
{
    while (n-- > 0) {
        void *p = NULL;
        if (redisGetReply(rc, &p) != REDIS_OK)
            return;
        freeReplyObject(p);
    }
}

/* hfield finds field name in an HGETALL reply; returns the value element or NULL. */
static const redisReply *hfield(const redisReply *r, const char *name)
{
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return NULL;
    size_t n = strlen(name);
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *k = r->element[i];
        if (k->type == REDIS_REPLY_STRING && k->len == n && memcmp(k->str, name, n) == 0)
            return r->element[i + 1];
    }
    return NULL;
}

static char *hstr(const redisReply *r, const char *name)
{
    const redisReply *v = hfield(r, name);
    if (!v || v->type != REDIS_REPLY_STRING)
        return lc_strdup("");
    return lc_strndup(v->str, v->len);
}

static long long hint(const redisReply *r, const char *name)
{
    const redisReply *v = hfield(r, name);
    if (!v || v->type != REDIS_REPLY_STRING || v->len == 0 || v->len > 30)
        return 0;
    char tmp[32];
    memcpy(tmp, v->str, v->len);
    tmp[v->len] = 0;
    return strtoll(tmp, NULL, 10);
}

static long long rint_(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
}

void lc_view_list_clear(struct lc_list_view *v)
{
    if (!v)
        return;
    free(v->address);
    free(v->policy);
    free(v->owner);
    free(v->paused_reason);
    memset(v, 0, sizeof *v);
}

void lc_view_lists_free(struct lc_list_view *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        lc_view_list_clear(&v[i]);
    free(v);
}

#define LIST_CMDS 5

/* append_list_cmds queues the LIST_CMDS commands that describe one list; returns 0 or -1 (name too long). */
static int append_list_cmds(redisContext *rc, const char *list)
{
    char k1[LC_KEY_MAX], k2[LC_KEY_MAX], k3[LC_KEY_MAX], k4[LC_KEY_MAX];
    if (lc_key_list(k1, sizeof k1, list) < 0 || lc_key_members(k2, sizeof k2, list) < 0 ||
        lc_key_active(k3, sizeof k3, list) < 0 || lc_key_posts(k4, sizeof k4, list) < 0)
        return -1;
    redisAppendCommand(rc, "HGETALL %s", k1);
    redisAppendCommand(rc, "ZCARD %s", k2);
    redisAppendCommand(rc, "HLEN %s", k3);
    redisAppendCommand(rc, "ZCARD %s", k4);
    redisAppendCommand(rc, "EVAL %s 2 %s %s %d", LC_LUA_LIST_RATE, k4, k1, LC_RATE_WINDOW);
    return 0;
}

/* read_list_replies reads the 4 replies of append_list_cmds; returns 1, 0 (no such list) or -1. */
static int read_list_replies(redisContext *rc, const char *list, struct lc_list_view *out, char *err,
                             size_t errlen)
{
    redisReply *r[LIST_CMDS] = {0};
    int got = 0;
    for (; got < LIST_CMDS; got++) {
        r[got] = get_reply(rc, err, errlen);
        if (!r[got])
            break;
    }
    int rcode = -1;
    if (got == LIST_CMDS) {
        memset(out, 0, sizeof *out);
        if (r[0]->type != REDIS_REPLY_ARRAY || r[0]->elements == 0) {
            rcode = 0;
        } else {
            out->address = lc_strdup(list);
            out->policy = hstr(r[0], "policy");
            out->owner = hstr(r[0], "owner");
            out->id = hint(r[0], "id");
            out->created = hint(r[0], "created");
            out->members = rint_(r[1]);
            out->active = rint_(r[2]);
            out->posts = rint_(r[3]);
            out->complaints = hint(r[0], "complaints");
            out->paused = hint(r[0], "paused") == 1;
            out->paused_reason = hstr(r[0], "paused_reason");
            out->paused_at = hint(r[0], "paused_at");
            if (r[4]->type == REDIS_REPLY_ARRAY && r[4]->elements >= 2) {
                out->rate_delivered = rint_(r[4]->element[0]);
                out->rate_complaints = rint_(r[4]->element[1]);
            }
            rcode = 1;
        }
    } else if (rc->err == 0) {
        drain(rc, LIST_CMDS - 1 - got); /* an error reply: the rest are still on the wire */
    }
    for (int i = 0; i < LIST_CMDS; i++)
        freeReplyObject(r[i]);
    return rcode;
}

int lc_view_list(redisContext *rc, const char *list, struct lc_list_view *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (append_list_cmds(rc, list) < 0) {
        snprintf(err, errlen, "list address too long");
        return -1;
    }
    return read_list_replies(rc, list, out, err, errlen);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

long lc_view_lists(redisContext *rc, size_t max, struct lc_list_view **out, size_t *total, char *err,
                   size_t errlen)
{
    *out = NULL;
    *total = 0;
    redisReply *all = redisCommand(rc, "SMEMBERS %s", LC_K_LISTS);
    if (!all || all->type != REDIS_REPLY_ARRAY) {
        set_err(rc, all, err, errlen);
        freeReplyObject(all);
        return -1;
    }
    size_t n = 0;
    char **names = lc_calloc(all->elements + 1, sizeof *names);
    for (size_t i = 0; i < all->elements; i++)
        if (all->element[i]->type == REDIS_REPLY_STRING && all->element[i]->len <= 400) /* keys fit */
            names[n++] = all->element[i]->str;
    qsort(names, n, sizeof *names, cmp_str);
    *total = n;
    if (n > max)
        n = max;
    struct lc_list_view *v = lc_calloc(n + 1, sizeof *v);
    size_t have = 0;
    long rcode = 0;
    for (size_t start = 0; start < n && rcode == 0; start += VIEW_BATCH) {
        size_t end = start + VIEW_BATCH < n ? start + VIEW_BATCH : n;
        for (size_t i = start; i < end; i++)
            append_list_cmds(rc, names[i]); /* cannot fail: names are at most 400 bytes */
        for (size_t i = start; i < end; i++) {
            int got = read_list_replies(rc, names[i], &v[have], err, errlen);
            if (got < 0) {
                if (rc->err == 0)
                    drain(rc, (int)(end - i - 1) * LIST_CMDS);
                rcode = -1;
                break;
            }
            if (got == 1)
                have++;
        }
    }
    free(names);
    freeReplyObject(all);
    if (rcode < 0) {
        lc_view_lists_free(v, have);
        return -1;
    }
    *out = v;
    return (long)have;
}

void lc_view_list_json(struct lc_json *j, const struct lc_list_view *v)
{
    lc_json_obj(j);
    lc_json_kstr(j, "address", v->address);
    lc_json_kint(j, "id", v->id);
    lc_json_kstr(j, "policy", v->policy);
    lc_json_key(j, "owner");
    if (v->owner && *v->owner)
        lc_json_str(j, v->owner);
    else
        lc_json_null(j);
    lc_json_kint(j, "created", v->created);
    lc_json_kint(j, "subscribers", v->members);
    lc_json_kint(j, "active", v->active);
    lc_json_kint(j, "posts", v->posts);
    lc_json_kint(j, "complaints", v->complaints);
    lc_json_kint(j, "rate_delivered", v->rate_delivered);
    lc_json_kint(j, "rate_complaints", v->rate_complaints);
    lc_json_key(j, "complaint_rate");
    if (v->rate_delivered > 0)
        lc_json_num(j, (double)v->rate_complaints / (double)v->rate_delivered);
    else
        lc_json_null(j);
    lc_json_key(j, "paused");
    lc_json_bool(j, v->paused);
    lc_json_key(j, "paused_reason");
    if (v->paused && v->paused_reason && *v->paused_reason)
        lc_json_str(j, v->paused_reason);
    else
        lc_json_null(j);
    lc_json_end(j);
}

void lc_view_post_clear(struct lc_post_view *p)
{
    if (!p)
        return;
    free(p->list);
    free(p->from);
    free(p->state);
    for (size_t i = 0; i < p->ndom; i++)
        free(p->dom[i].domain);
    free(p->dom);
    for (size_t i = 0; i < p->ndefer; i++) {
        free(p->defer[i].address);
        free(p->defer[i].reply);
    }
    free(p->defer);
    memset(p, 0, sizeof *p);
}

static int cmp_dom(const void *a, const void *b)
{
    const struct lc_dom_view *x = a, *y = b;
    long long tx = x->delivered + x->deferred + x->bounced, ty = y->delivered + y->deferred + y->bounced;
    if (tx != ty)
        return tx > ty ? -1 : 1;
    return strcmp(x->domain, y->domain);
}

/* load_domains turns the fields "DOMAIN:counter" of an HGETALL reply into p->dom. */
static void load_domains(struct lc_post_view *p, const redisReply *r)
{
    p->has_domains = 1;
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return;
    size_t cap = 0;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *k = r->element[i], *v = r->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        const char *colon = memrchr(k->str, ':', k->len);
        if (!colon || colon == k->str)
            continue;
        size_t dlen = (size_t)(colon - k->str);
        const char *what = colon + 1;
        size_t wlen = k->len - dlen - 1;
        char num[32];
        if (v->len >= sizeof num)
            continue;
        memcpy(num, v->str, v->len);
        num[v->len] = 0;
        long long n = strtoll(num, NULL, 10);
        size_t d;
        for (d = 0; d < p->ndom; d++)
            if (strlen(p->dom[d].domain) == dlen && memcmp(p->dom[d].domain, k->str, dlen) == 0)
                break;
        if (d == p->ndom) {
            if (p->ndom >= VIEW_MAX_DOMAINS)
                continue;
            if (p->ndom == cap) {
                cap = cap ? cap * 2 : 16;
                p->dom = lc_realloc(p->dom, cap * sizeof *p->dom);
            }
            memset(&p->dom[d], 0, sizeof p->dom[d]);
            p->dom[d].domain = lc_strndup(k->str, dlen);
            p->ndom++;
        }
        if (wlen == 9 && !memcmp(what, "delivered", 9))
            p->dom[d].delivered = n;
        else if (wlen == 8 && !memcmp(what, "deferred", 8))
            p->dom[d].deferred = n;
        else if (wlen == 7 && !memcmp(what, "bounced", 7))
            p->dom[d].bounced = n;
    }
    if (p->ndom > 1)
        qsort(p->dom, p->ndom, sizeof *p->dom, cmp_dom);
}

int lc_view_post(redisContext *rc, uint64_t id, int with_domains, struct lc_post_view *out, char *err,
                 size_t errlen)
{
    char kpost[LC_KEY_MAX], kdom[LC_KEY_MAX];
    memset(out, 0, sizeof *out);
    lc_key_post(kpost, sizeof kpost, id);
    lc_key_postdom(kdom, sizeof kdom, id);
    redisAppendCommand(rc, "HGETALL %s", kpost);
    if (with_domains)
        redisAppendCommand(rc, "HGETALL %s", kdom);
    redisReply *r = get_reply(rc, err, errlen);
    redisReply *d = NULL;
    if (with_domains) {
        if (!r) {
            if (rc->err == 0)
                drain(rc, 1);
            return -1;
        }
        d = get_reply(rc, err, errlen);
        if (!d) {
            freeReplyObject(r);
            return -1;
        }
    } else if (!r) {
        return -1;
    }
    int rcode = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
        out->id = id;
        out->list = hstr(r, "list");
        out->from = hstr(r, "from");
        out->state = hstr(r, "state");
        out->size = hint(r, "size");
        out->created = hint(r, "created");
        out->recipients = hint(r, "recipients");
        out->delivered = hint(r, "delivered");
        out->deferred = hint(r, "deferred");
        out->bounced = hint(r, "bounced");
        out->complaints = hint(r, "complaints");
        long long pending = out->recipients - out->delivered - out->bounced;
        out->pending = pending > 0 ? pending : 0;
        if (with_domains)
            load_domains(out, d);
        rcode = 1;
    }
    freeReplyObject(r);
    freeReplyObject(d);
    return rcode;
}

static int cmp_defer(const void *a, const void *b)
{
    return strcmp(((const struct lc_defer_view *)a)->address, ((const struct lc_defer_view *)b)->address);
}

/* parse_defer splits a lc:postdefer:ID value "UNIX_TIME attempt N: REPLY" (anything else: all of it is the
 * reply). */
static void parse_defer(struct lc_defer_view *d, const char *v, size_t n)
{
    char *s = lc_strndup(v, n), *end = NULL;
    long long at = strtoll(s, &end, 10), attempt = 0;
    const char *rest = NULL;
    if (end && end != s && at > 0 && !strncmp(end, " attempt ", 9)) {
        char *e2 = NULL;
        attempt = strtoll(end + 9, &e2, 10);
        if (e2 && e2 != end + 9 && attempt > 0 && e2[0] == ':' && (e2[1] == ' ' || !e2[1]))
            rest = e2[1] ? e2 + 2 : e2 + 1;
    }
    if (rest) {
        d->at = at;
        d->attempt = attempt;
        d->reply = lc_strdup(rest);
        free(s);
    } else {
        d->reply = s;
    }
}

#define VIEW_DEFER_ROUNDS 100 /* HSCAN calls per load */

int lc_view_post_defers(redisContext *rc, struct lc_post_view *p, size_t max, char *err, size_t errlen)
{
    char key[LC_KEY_MAX], cursor[32] = "0", count[16];
    if (max > 10000)
        max = 10000;
    lc_key_postdefer(key, sizeof key, p->id);
    p->has_defers = 1;
    redisReply *r = redisCommand(rc, "HLEN %s", key);
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        set_err(rc, r, err, errlen);
        freeReplyObject(r);
        return -1;
    }
    p->ndefer_total = r->integer;
    freeReplyObject(r);
    if (!p->ndefer_total || !max)
        return 0;
    p->defer = lc_calloc(max, sizeof *p->defer);
    snprintf(count, sizeof count, "%zu", max < 1000 ? max : (size_t)1000);
    for (int round = 0; round < VIEW_DEFER_ROUNDS && p->ndefer < max; round++) {
        r = redisCommand(rc, "HSCAN %s %s COUNT %s", key, cursor, count);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[1]->type != REDIS_REPLY_ARRAY || r->element[0]->len >= sizeof cursor) {
            set_err(rc, r && r->type == REDIS_REPLY_ERROR ? r : NULL, err, errlen);
            freeReplyObject(r);
            return -1;
        }
        const redisReply *a = r->element[1];
        for (size_t i = 0; i + 1 < a->elements && p->ndefer < max; i += 2) {
            const redisReply *k = a->element[i], *v = a->element[i + 1];
            if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
                continue;
            size_t d;
            for (d = 0; d < p->ndefer; d++) /* HSCAN may return a field twice */
                if (strlen(p->defer[d].address) == k->len && !memcmp(p->defer[d].address, k->str, k->len))
                    break;
            if (d < p->ndefer)
                continue;
            p->defer[d].address = lc_strndup(k->str, k->len);
            parse_defer(&p->defer[d], v->str, v->len);
            p->ndefer++;
        }
        memcpy(cursor, r->element[0]->str, r->element[0]->len);
        cursor[r->element[0]->len] = 0;
        freeReplyObject(r);
        if (!strcmp(cursor, "0"))
            break;
    }
    if (p->ndefer > 1)
        qsort(p->defer, p->ndefer, sizeof *p->defer, cmp_defer);
    if ((long long)p->ndefer > p->ndefer_total)
        p->ndefer_total = (long long)p->ndefer; /* changed between HLEN and HSCAN */
    return 0;
}

void lc_view_post_json(struct lc_json *j, const struct lc_post_view *p)
{
    lc_json_obj(j);
    lc_json_kint(j, "id", (long long)p->id);
    lc_json_kstr(j, "list", p->list);
    lc_json_kstr(j, "state", p->state);
    lc_json_kstr(j, "from", p->from);
    lc_json_kint(j, "size", p->size);
    lc_json_kint(j, "created", p->created);
    lc_json_kint(j, "recipients", p->recipients);
    lc_json_kint(j, "delivered", p->delivered);
    lc_json_kint(j, "deferred", p->deferred);
    lc_json_kint(j, "bounced", p->bounced);
    lc_json_kint(j, "pending", p->pending);
    lc_json_kint(j, "complaints", p->complaints);
    lc_json_key(j, "complaint_rate");
    if (p->delivered > 0)
        lc_json_num(j, (double)p->complaints / (double)p->delivered);
    else
        lc_json_null(j);
    if (p->has_domains) {
        lc_json_key(j, "domains");
        lc_json_arr(j);
        for (size_t i = 0; i < p->ndom; i++) {
            lc_json_obj(j);
            lc_json_kstr(j, "domain", p->dom[i].domain);
            lc_json_kint(j, "delivered", p->dom[i].delivered);
            lc_json_kint(j, "deferred", p->dom[i].deferred);
            lc_json_kint(j, "bounced", p->dom[i].bounced);
            lc_json_end(j);
        }
        lc_json_end(j);
    }
    if (p->has_defers) {
        lc_json_kint(j, "deferrals_total", p->ndefer_total);
        lc_json_key(j, "deferrals");
        lc_json_arr(j);
        for (size_t i = 0; i < p->ndefer; i++) {
            lc_json_obj(j);
            lc_json_kstr(j, "address", p->defer[i].address);
            lc_json_kstr(j, "reply", p->defer[i].reply);
            lc_json_kint(j, "at", p->defer[i].at);
            lc_json_kint(j, "attempt", p->defer[i].attempt);
            lc_json_end(j);
        }
        lc_json_end(j);
    }
    lc_json_end(j);
}

/* parse_ids turns a ZREVRANGE reply (optionally WITHSCORES) into ids (and scores). */
static size_t parse_ids(const redisReply *r, int withscores, uint64_t *ids, double *scores)
{
    size_t n = 0, step = withscores ? 2 : 1;
    for (size_t i = 0; i + step - 1 < r->elements; i += step) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_STRING)
            continue;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(e->str, &end, 10);
        if (errno || *end || end == e->str)
            continue;
        ids[n] = v;
        if (withscores)
            scores[n] = r->element[i + 1]->str ? strtod(r->element[i + 1]->str, NULL) : 0;
        n++;
    }
    return n;
}

long lc_view_post_ids(redisContext *rc, const char *list, long max, uint64_t **ids, long long *total, char *err,
                      size_t errlen)
{
    char k[LC_KEY_MAX];
    *ids = NULL;
    *total = 0;
    if (lc_key_posts(k, sizeof k, list) < 0) {
        snprintf(err, errlen, "list address too long");
        return -1;
    }
    if (max <= 0)
        max = 1;
    redisAppendCommand(rc, "ZCARD %s", k);
    redisAppendCommand(rc, "ZREVRANGE %s 0 %ld", k, max - 1);
    redisReply *c = get_reply(rc, err, errlen);
    if (!c) {
        if (rc->err == 0)
            drain(rc, 1);
        return -1;
    }
    redisReply *r = get_reply(rc, err, errlen);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(c);
        freeReplyObject(r);
        return -1;
    }
    *total = rint_(c);
    *ids = lc_calloc(r->elements + 1, sizeof **ids);
    long n = (long)parse_ids(r, 0, *ids, NULL);
    freeReplyObject(c);
    freeReplyObject(r);
    return n;
}

struct scored {
    uint64_t id;
    double score;
};

static int cmp_scored(const void *a, const void *b)
{
    const struct scored *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->id > y->id ? -1 : x->id < y->id;
}

long lc_view_recent_posts(redisContext *rc, const struct lc_list_view *lists, size_t nlists, long max,
                          uint64_t **ids, char *err, size_t errlen)
{
    *ids = NULL;
    if (max <= 0)
        max = 1;
    size_t cap = nlists * (size_t)max + 1, n = 0;
    struct scored *all = lc_calloc(cap, sizeof *all);
    uint64_t *tmp_ids = lc_calloc((size_t)max, sizeof *tmp_ids);
    double *tmp_sc = lc_calloc((size_t)max, sizeof *tmp_sc);
    long rcode = 0;
    for (size_t i = 0; i < nlists && rcode == 0; i++) {
        char k[LC_KEY_MAX];
        if (lc_key_posts(k, sizeof k, lists[i].address) < 0)
            continue;
        redisReply *r = redisCommand(rc, "ZREVRANGE %s 0 %ld WITHSCORES", k, max - 1);
        if (!r || r->type != REDIS_REPLY_ARRAY) {
            set_err(rc, r, err, errlen);
            rcode = -1;
        } else {
            size_t got = parse_ids(r, 1, tmp_ids, tmp_sc);
            for (size_t g = 0; g < got && n < cap; g++) {
                all[n].id = tmp_ids[g];
                all[n].score = tmp_sc[g];
                n++;
            }
        }
        freeReplyObject(r);
    }
    free(tmp_ids);
    free(tmp_sc);
    if (rcode < 0) {
        free(all);
        return -1;
    }
    qsort(all, n, sizeof *all, cmp_scored);
    if (n > (size_t)max)
        n = (size_t)max;
    *ids = lc_calloc(n + 1, sizeof **ids);
    for (size_t i = 0; i < n; i++)
        (*ids)[i] = all[i].id;
    free(all);
    return (long)n;
}

void lc_view_bar(char *out, size_t outlen, int width, long long done, long long total)
{
    if (width < 1)
        width = 1;
    if (width > 100)
        width = 100;
    long long pct = total > 0 ? done * 100 / total : 0;
    if (pct > 100)
        pct = 100;
    if (pct < 0)
        pct = 0;
    int filled = (int)(pct * width / 100);
    char cells[101];
    for (int i = 0; i < width; i++)
        cells[i] = i < filled ? '#' : '.';
    cells[width] = 0;
    snprintf(out, outlen, "[%s] %3lld%%", cells, pct);
}

/* ---- complaint rates ---- */

int lc_view_rate_parse(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !(v >= 0 && v <= 1))
        return -1;
    *out = v;
    return 0;
}

const char *lc_view_rate_level(long long complaints, long long delivered, double warn, double pause)
{
    if (delivered <= 0)
        return "none";
    double r = (double)complaints / (double)delivered;
    if (pause > 0 && r >= pause)
        return "pause";
    if (warn > 0 && r >= warn)
        return "warn";
    return "ok";
}

void lc_view_rate_fmt(char *out, size_t outlen, long long complaints, long long delivered)
{
    if (delivered <= 0)
        snprintf(out, outlen, "- (%lld complaints, nothing delivered)", complaints);
    else
        snprintf(out, outlen, "%.3f%% (%lld of %lld delivered)", 100.0 * (double)complaints / (double)delivered,
                 complaints, delivered);
}

void lc_view_list_text_rate(const struct lc_list_view *v, double warn, double pause)
{
    char rate[128];
    lc_view_rate_fmt(rate, sizeof rate, v->rate_complaints, v->rate_delivered);
    const char *lvl = lc_view_rate_level(v->rate_complaints, v->rate_delivered, warn, pause);
    printf("complaints:   %lld (all time)\n", v->complaints);
    printf("complaint rate: %s%s\n", rate,
           !strcmp(lvl, "pause")  ? "  WARNING: at or above complaints.pause_rate"
           : !strcmp(lvl, "warn") ? "  WARNING: at or above complaints.warn_rate"
                                  : "");
    if (v->paused)
        printf("paused:       yes: %s (resume with: listcast list resume %s)\n",
               v->paused_reason && *v->paused_reason ? v->paused_reason : "by an operator", v->address);
    else
        printf("paused:       no\n");
}
