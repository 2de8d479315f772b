/* exp_rcpt: the recipient set of one post.
 *
 * Addresses are copied into one arena made of 1 MiB blocks that never move (so the pointers in the recipient
 * array stay valid); the array holds (address, subscriber id, domain offset): 24 bytes a recipient plus the
 * address itself. exp_rcpts_finish sorts by (domain, address), which both groups recipients by domain (the
 * domain table is the list of runs) and puts duplicates next to each other (HSCAN may return an entry more
 * than once while the hash is rehashed), so no per-address hash table is needed.
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
    free(s);
}

void exp_rcpts_reset(struct exp_rcpts *s)
{
    if (s->blocks) {
        free_blocks(s->blocks->next);
        s->blocks->next = NULL;
        s->blocks->used = 0;
    }
    s->n = s->ndoms = 0;
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
    return 0;
}

static int cmp_rcpt(const void *a, const void *b)
{
    const struct exp_rcpt *x = a, *y = b;
    int c = strcmp(x->addr + x->dom, y->addr + y->dom);
    return c ? c : strcmp(x->addr, y->addr);
}

size_t exp_rcpts_finish(struct exp_rcpts *s)
{
    if (s->n > 1)
        qsort(s->v, s->n, sizeof *s->v, cmp_rcpt);
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
