/* lc_schema: Redis key builders. See lc_schema.h and SCHEMA.md. */
#include "lc_schema.h"

#include <inttypes.h>
#include <stdio.h>

static int fit(int n, size_t outlen)
{
    return (n < 0 || (size_t)n >= outlen) ? -1 : n;
}

int lc_key_list(char *out, size_t outlen, const char *list)
{
    return fit(snprintf(out, outlen, "lc:list:%s", list), outlen);
}

int lc_key_members(char *out, size_t outlen, const char *list)
{
    return fit(snprintf(out, outlen, "lc:members:%s", list), outlen);
}

int lc_key_active(char *out, size_t outlen, const char *list)
{
    return fit(snprintf(out, outlen, "lc:active:%s", list), outlen);
}

int lc_key_sub(char *out, size_t outlen, const char *list, const char *addr)
{
    return fit(snprintf(out, outlen, "lc:sub:%s:%s", list, addr), outlen);
}

int lc_key_post(char *out, size_t outlen, uint64_t post)
{
    return fit(snprintf(out, outlen, "lc:post:%" PRIu64, post), outlen);
}

int lc_key_msg(char *out, size_t outlen, uint64_t post)
{
    return fit(snprintf(out, outlen, "lc:msg:%" PRIu64, post), outlen);
}

int lc_key_posts(char *out, size_t outlen, const char *list)
{
    return fit(snprintf(out, outlen, "lc:posts:%s", list), outlen);
}

int lc_key_postdom(char *out, size_t outlen, uint64_t post)
{
    return fit(snprintf(out, outlen, "lc:postdom:%" PRIu64, post), outlen);
}

int lc_key_postbnc(char *out, size_t outlen, uint64_t post)
{
    return fit(snprintf(out, outlen, "lc:postbnc:%" PRIu64, post), outlen);
}

int lc_key_bncstat(char *out, size_t outlen, const char *kind, const char *list)
{
    return fit(snprintf(out, outlen, "lc:bncstat:%s:%s", kind, list), outlen);
}

int lc_key_held(char *out, size_t outlen, uint64_t post)
{
    return fit(snprintf(out, outlen, "lc:held:%" PRIu64, post), outlen);
}

int lc_key_ratelimit(char *out, size_t outlen, const char *what, const char *list, const char *addr)
{
    return fit(snprintf(out, outlen, "lc:rl:%s:%s:%s", what, list, addr), outlen);
}

int lc_key_admin(char *out, size_t outlen, const char *user)
{
    return fit(snprintf(out, outlen, "lc:admin:%s", user), outlen);
}

int lc_key_session(char *out, size_t outlen, const char *sid)
{
    return fit(snprintf(out, outlen, "lc:session:%s", sid), outlen);
}

int lc_key_loginfail(char *out, size_t outlen, const char *kind, const char *who)
{
    return fit(snprintf(out, outlen, "lc:loginfail:%s:%s", kind, who), outlen);
}

int lc_key_usedtok(char *out, size_t outlen, const char *token)
{
    return fit(snprintf(out, outlen, "lc:usedtok:%s", token), outlen);
}

int lc_key_import(char *out, size_t outlen, uint64_t id)
{
    return fit(snprintf(out, outlen, "lc:import:%" PRIu64, id), outlen);
}

int lc_key_importerr(char *out, size_t outlen, uint64_t id)
{
    return fit(snprintf(out, outlen, "lc:importerr:%" PRIu64, id), outlen);
}

int lc_key_postexp(char *out, size_t outlen, uint64_t post)
{
    return fit(snprintf(out, outlen, "lc:postexp:%" PRIu64, post), outlen);
}

int lc_key_postprog(char *out, size_t outlen, uint64_t post)
{
    return fit(snprintf(out, outlen, "lc:postprog:%" PRIu64, post), outlen);
}

int lc_key_postdefer(char *out, size_t outlen, uint64_t post)
{
    return fit(snprintf(out, outlen, "lc:postdefer:%" PRIu64, post), outlen);
}
