/* exp_rcpt: the recipient set of one post.
 *
 * Addresses are copied into one arena made of 1 MiB blocks that never move (so the pointers in the recipient
 * array stay valid); the array holds (address, subscriber id, domain offset): 24 bytes a recipient plus the
 * address itself. exp_rcpts_finish sorts by (domain, address), which both groups recipients by domain (the
 * domain table is the list of runs) and puts duplicates next to each other (HSCAN may return an entry more
 * than once while the hash is rehashed), so no per-address hash table is needed. The sort is a bucket sort: each
 * new domain gets a number as it is added (one small hash table of domains), the finish scatters the
 * recipients into their domains' runs (domains in name order) and sorts each run by address, which is much
 * cheaper than one comparison sort of the whole set (an extra recipient array during the finish).
 *
 * Limits: EXP_RCPTS_MAX recipients; addresses up to LC_ADDR_MAX octets (checked by the caller's lc_addr_norm).
 */
#include "exp.h"

#include <stdlib.h>
#include <string.h>

#include "lc_addr.h"
#include "lc_log.h"

#define BLOCK_SIZE (1u << 20)

struct block {
    struct block *next;
    size_t used;
    char data[];
};

struct exp_rcpts {
    struct block *blocks; /* newest first */
    struct exp_rcpt *v;
    size_t n, cap;
    struct exp_domain *doms;
    size_t ndoms, domcap;
    struct exp_map *dids;   /* domain name (in the arena) -> number + 1 */
    const char **dnames;    /* number -> domain name */
    size_t ndids, dnamecap;
};

struct exp_rcpts *exp_rcpts_new(void)
{
    return lc_calloc(1, sizeof(struct exp_rcpts));
}

static void free_blocks(struct block *b)
{
    while (b) {
        struct block *next = b->next;
        free(b);
        b = next;
    }
}

void exp_rcpts_free(struct exp_rcpts *s)
{
    if (!s)
        return;
    free_blocks(s->blocks);
    free(s->v);
    free(s->doms);
    exp_map_free(s->dids);
    free(s->dnames);
    free(s);
}

void exp_rcpts_reset(struct exp_rcpts *s)
{
    if (s->blocks) {
        free_blocks(s->blocks->next);
        s->blocks->next = NULL;
        s->blocks->used = 0;
    }
    s->n = s->ndoms = s->ndids = 0;
    exp_map_free(s->dids);
    s->dids = NULL;
    /* Give back big arrays after a huge post; keep small ones for the next. */
    if (s->cap > 65536) {
        free(s->v);
        s->v = NULL;
        s->cap = 0;
    }
    if (s->domcap > 65536) {
        free(s->doms);
        s->doms = NULL;
        s->domcap = 0;
    }
}

static char *arena_copy(struct exp_rcpts *s, const char *p, size_t len)
{
    struct block *b = s->blocks;
    if (!b || BLOCK_SIZE - b->used < len + 1) {
        b = lc_malloc(sizeof *b + BLOCK_SIZE);
        b->used = 0;
        b->next = s->blocks;
        s->blocks = b;
    }
    char *out = b->data + b->used;
    memcpy(out, p, len);
    out[len] = 0;
    b->used += len + 1;
    return out;
}

int exp_rcpts_add(struct exp_rcpts *s, const char *addr, size_t len, uint64_t subid)
{
    const char *at = memchr(addr, '@', len);
    if (!at || len > LC_ADDR_MAX)
        lc_panic("exp_rcpts_add: address not normalised");
    if (s->n >= EXP_RCPTS_MAX)
        return -1;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->v = lc_realloc(s->v, s->cap * sizeof *s->v);
    }
    struct exp_rcpt *r = &s->v[s->n++];
    r->addr = arena_copy(s, addr, len);
    r->subid = subid;
    r->dom = (uint16_t)(at - addr + 1);
    if (!s->dids)
        s->dids = exp_map_new();
    const char *dom = r->addr + r->dom;
    uintptr_t id = (uintptr_t)exp_map_get(s->dids, dom);
    if (!id) {
        if (s->ndids == s->dnamecap) {
            s->dnamecap = s->dnamecap ? s->dnamecap * 2 : 256;
            s->dnames = lc_realloc(s->dnames, s->dnamecap * sizeof *s->dnames);
        }
        s->dnames[s->ndids++] = dom;
        id = s->ndids;
        exp_map_put(s->dids, dom, (void *)id);
    }
    r->did = (uint32_t)(id - 1);
    return 0;
}

static int cmp_addr(const void *a, const void *b)
{
    return strcmp(((const struct exp_rcpt *)a)->addr, ((const struct exp_rcpt *)b)->addr);
}

static const char *const *sort_names; /* for cmp_did: qsort has no argument (only one expander thread) */

static int cmp_did(const void *a, const void *b)
{
    return strcmp(sort_names[*(const uint32_t *)a], sort_names[*(const uint32_t *)b]);
}

/* bucket_sort orders the recipients by (domain, address): see the top comment. */
static void bucket_sort(struct exp_rcpts *s)
{
    size_t nd = s->ndids;
    uint32_t *order = lc_malloc((nd ? nd : 1) * sizeof *order);
    size_t *start = lc_calloc(nd + 1, sizeof *start); /* by domain number: where its run starts */
    for (size_t i = 0; i < nd; i++)
        order[i] = (uint32_t)i;
    sort_names = s->dnames;
    qsort(order, nd, sizeof *order, cmp_did);
    sort_names = NULL;
    for (size_t i = 0; i < s->n; i++)
        start[s->v[i].did]++;
    size_t at = 0;
    for (size_t k = 0; k < nd; k++) { /* counts -> run starts, runs in domain name order */
        size_t c = start[order[k]];
        start[order[k]] = at;
        at += c;
    }
    struct exp_rcpt *w = lc_malloc(s->cap * sizeof *w);
    for (size_t i = 0; i < s->n; i++)
        w[start[s->v[i].did]++] = s->v[i];
    at = 0;
    for (size_t k = 0; k < nd; k++) { /* start[d] is now the end of d's run */
        size_t end = start[order[k]];
        if (end - at > 1)
            qsort(w + at, end - at, sizeof *w, cmp_addr);
        at = end;
    }
    free(s->v);
    s->v = w;
    free(order);
    free(start);
}

size_t exp_rcpts_finish(struct exp_rcpts *s)
{
    if (s->n > 1)
        bucket_sort(s);
    size_t out = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (out > 0 && strcmp(s->v[out - 1].addr, s->v[i].addr) == 0)
            continue; /* same address twice: keep the first */
        s->v[out++] = s->v[i];
    }
    size_t dups = s->n - out;
    s->n = out;
    s->ndoms = 0;
    for (size_t i = 0; i < s->n; i++) {
        const char *dom = s->v[i].addr + s->v[i].dom;
        if (s->ndoms > 0 && strcmp(s->doms[s->ndoms - 1].name, dom) == 0) {
            s->doms[s->ndoms - 1].count++;
            continue;
        }
        if (s->ndoms == s->domcap) {
            s->domcap = s->domcap ? s->domcap * 2 : 256;
            s->doms = lc_realloc(s->doms, s->domcap * sizeof *s->doms);
        }
        s->doms[s->ndoms++] = (struct exp_domain){dom, (uint32_t)i, 1};
    }
    return dups;
}

size_t exp_rcpts_count(const struct exp_rcpts *s)
{
    return s->n;
}

const struct exp_rcpt *exp_rcpts_get(const struct exp_rcpts *s, size_t i)
{
    return &s->v[i];
}

size_t exp_rcpts_ndomains(const struct exp_rcpts *s)
{
    return s->ndoms;
}

const struct exp_domain *exp_rcpts_domain(const struct exp_rcpts *s, size_t i)
{
    return &s->doms[i];
}
