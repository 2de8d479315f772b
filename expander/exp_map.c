/* exp_map: a string-keyed open-addressing hash map (linear probing, FNV-1a), used for the DNS caches.
 *
 * Contract: keys are borrowed (the caller keeps them alive while their entry is in the map); values are
 * non-NULL pointers. Deletion happens only in bulk through exp_map_filter, which rebuilds the table, so there
 * are no tombstones. The table grows at 50% load; allocation failure aborts (lc_malloc).
 */
#include "exp.h"

#include <stdlib.h>
#include <string.h>

#include "lc_log.h"

struct slot {
    const char *key;
    void *val;
    uint32_t hash;
};

struct exp_map {
    struct slot *slots;
    size_t cap; /* power of two */
    size_t count;
};

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

struct exp_map *exp_map_new(void)
{
    struct exp_map *m = lc_calloc(1, sizeof *m);
    m->cap = 64;
    m->slots = lc_calloc(m->cap, sizeof *m->slots);
    return m;
}

void exp_map_free(struct exp_map *m)
{
    if (!m)
        return;
    free(m->slots);
    free(m);
}

static struct slot *find(const struct exp_map *m, const char *key, uint32_t h)
{
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct slot *s = &m->slots[i];
        if (!s->key || (s->hash == h && strcmp(s->key, key) == 0))
            return s;
    }
}

static void grow(struct exp_map *m, size_t cap)
{
    struct slot *old = m->slots;
    size_t oldcap = m->cap;
    m->cap = cap;
    m->slots = lc_calloc(cap, sizeof *m->slots);
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].key)
            *find(m, old[i].key, old[i].hash) = old[i];
    free(old);
}

void *exp_map_get(const struct exp_map *m, const char *key)
{
    struct slot *s = find(m, key, hash_str(key));
    return s->key ? s->val : NULL;
}

void exp_map_put(struct exp_map *m, const char *key, void *val)
{
    if (!val)
        lc_panic("exp_map_put: NULL value for %s", key);
    if ((m->count + 1) * 2 > m->cap)
        grow(m, m->cap * 2);
    uint32_t h = hash_str(key);
    struct slot *s = find(m, key, h);
    if (!s->key)
        m->count++;
    s->key = key;
    s->val = val;
    s->hash = h;
}

size_t exp_map_count(const struct exp_map *m)
{
    return m->count;
}

void exp_map_filter(struct exp_map *m, int (*keep)(void *val, void *arg), void (*drop)(void *val, void *arg),
                    void *arg)
{
    struct slot *old = m->slots;
    size_t oldcap = m->cap, kept = 0;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].key && keep(old[i].val, arg))
            kept++;
    size_t cap = 64;
    while (kept * 2 > cap)
        cap *= 2;
    m->cap = cap;
    m->count = 0;
    m->slots = lc_calloc(cap, sizeof *m->slots);
    for (size_t i = 0; i < oldcap; i++) {
        if (!old[i].key)
            continue;
        if (keep(old[i].val, arg)) {
            *find(m, old[i].key, old[i].hash) = old[i];
            m->count++;
        } else if (drop) {
            drop(old[i].val, arg);
        }
    }
    free(old);
}
