/* snd_tls: STARTTLS client sessions towards MX hosts (GnuTLS) and the per-domain TLS policy table.
 *
 * Contract: one set of anonymous-client certificate credentials for the process; a session per connection, on
 * the connection's non-blocking socket, handshaking and moving records without blocking (GNUTLS_E_AGAIN comes
 * back as "would block" with the direction to wait for). No certificate is verified: the policies are `may`
 * (opportunistic, RFC 7435: encrypt when offered) and `encrypt` (never send in clear); neither authenticates the
 * server. The SNI is the MX host name when it is a name.
 * Policy: sender.tls is the default; the HASH lc:tlspolicy (domain -> none|may|encrypt, loaded by snd_queue.c)
 * overrides it per recipient domain. The table is a small open-addressing hash rebuilt on every load.
 * Limits: SND_TLS_POLICIES domains (more are ignored with a warning); domains up to 255 octets.
 */
#include "snd.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gnutls/gnutls.h>
#include <hiredis/hiredis.h>

#include "lc_log.h"
#include "lc_loop.h"
#include "lc_schema.h"

#define SND_TLS_POLICIES 65536

struct pol {
    char *dom;
    int pol;
};

struct snd_tls_ctx {
    gnutls_certificate_credentials_t cred;
    struct pol *tab; /* open addressing, cap a power of two */
    size_t cap, n;
};

struct snd_tls {
    gnutls_session_t s;
};

int snd_tls_policy_parse(const char *s, size_t n)
{
    if (n == 4 && !strncasecmp(s, "none", 4))
        return SND_TLS_NONE;
    if (n == 3 && !strncasecmp(s, "may", 3))
        return SND_TLS_MAY;
    if (n == 7 && !strncasecmp(s, "encrypt", 7))
        return SND_TLS_ENCRYPT;
    return -1;
}

const char *snd_tls_policy_name(int pol)
{
    return pol == SND_TLS_NONE ? "none" : pol == SND_TLS_ENCRYPT ? "encrypt" : "may";
}

struct snd_tls_ctx *snd_tls_ctx_new(char *err, size_t errlen)
{
    struct snd_tls_ctx *x = lc_calloc(1, sizeof *x);
    int rc = gnutls_certificate_allocate_credentials(&x->cred);
    if (rc < 0) {
        snprintf(err, errlen, "gnutls: %s", gnutls_strerror(rc));
        free(x);
        return NULL;
    }
    return x;
}

static void tab_clear(struct snd_tls_ctx *x)
{
    for (size_t i = 0; i < x->cap; i++)
        free(x->tab[i].dom);
    free(x->tab);
    x->tab = NULL;
    x->cap = x->n = 0;
}

void snd_tls_ctx_free(struct snd_tls_ctx *x)
{
    if (!x)
        return;
    tab_clear(x);
    gnutls_certificate_free_credentials(x->cred);
    free(x);
}

static size_t hash_dom(const char *s, size_t n)
{
    size_t h = 14695981039346656037u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)tolower((unsigned char)s[i])) * 1099511628211u;
    return h;
}

void snd_tls_policy_set(struct snd_tls_ctx *x, const redisReply *hash)
{
    tab_clear(x);
    size_t n = hash->elements / 2;
    if (n == 0)
        return;
    if (n > SND_TLS_POLICIES) {
        lc_warn("%s: %zu domains, only %d are used", LC_K_TLSPOLICY, n, SND_TLS_POLICIES);
        n = SND_TLS_POLICIES;
    }
    x->cap = 16;
    while (x->cap < 2 * n)
        x->cap *= 2;
    x->tab = lc_calloc(x->cap, sizeof *x->tab);
    for (size_t i = 0; i + 1 < hash->elements && x->n < n; i += 2) {
        const redisReply *k = hash->element[i], *v = hash->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || k->len == 0 || k->len > 255)
            continue;
        int pol = snd_tls_policy_parse(v->str, v->len);
        if (pol < 0) {
            lc_warn("%s: domain %.*s: unknown policy \"%.*s\" ignored", LC_K_TLSPOLICY, (int)k->len, k->str,
                    (int)(v->len > 40 ? 40 : v->len), v->str);
            continue;
        }
        size_t h = hash_dom(k->str, k->len) & (x->cap - 1);
        while (x->tab[h].dom && strcasecmp(x->tab[h].dom, k->str))
            h = (h + 1) & (x->cap - 1);
        if (!x->tab[h].dom) {
            x->tab[h].dom = lc_strdup(k->str);
            x->n++;
        }
        x->tab[h].pol = pol;
    }
    lc_debug("tls policy: %zu domains", x->n);
}

int snd_tls_policy_of(const struct snd_tls_ctx *x, const char *domain, int def)
{
    if (!x || x->n == 0)
        return def;
    size_t h = hash_dom(domain, strlen(domain)) & (x->cap - 1);
    while (x->tab[h].dom) {
        if (!strcasecmp(x->tab[h].dom, domain))
            return x->tab[h].pol;
        h = (h + 1) & (x->cap - 1);
    }
    return def;
}

struct snd_tls *snd_tls_new(struct snd_tls_ctx *x, int fd, const char *servername)
{
    struct snd_tls *t = lc_calloc(1, sizeof *t);
    if (gnutls_init(&t->s, GNUTLS_CLIENT | GNUTLS_NONBLOCK) < 0) {
        free(t);
        return NULL;
    }
    if (gnutls_set_default_priority(t->s) < 0 || gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, x->cred) < 0) {
        gnutls_deinit(t->s);
        free(t);
        return NULL;
    }
    int isname = servername && *servername && strchr(servername, '.');
    for (const char *c = servername; isname && *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '.' && *c != '-')
            isname = 0;
    if (isname && !isdigit((unsigned char)servername[strlen(servername) - 1]))
        gnutls_server_name_set(t->s, GNUTLS_NAME_DNS, servername, strlen(servername));
    gnutls_transport_set_int(t->s, fd);
    gnutls_handshake_set_timeout(t->s, 0);
    return t;
}

void snd_tls_free(struct snd_tls *t)
{
    if (!t)
        return;
    gnutls_deinit(t->s);
    free(t);
}

int snd_tls_handshake(struct snd_tls *t, int *want, char *err, size_t errlen)
{
    int rc;
    do
        rc = gnutls_handshake(t->s);
    while (rc == GNUTLS_E_INTERRUPTED);
    if (rc == GNUTLS_E_SUCCESS)
        return 1;
    if (rc == GNUTLS_E_AGAIN) {
        *want = gnutls_record_get_direction(t->s) ? LC_WRITE : LC_READ;
        return 0;
    }
    snprintf(err, errlen, "TLS handshake failed: %s", gnutls_strerror(rc));
    return -1;
}

long snd_tls_recv(struct snd_tls *t, char *buf, size_t n, char *err, size_t errlen)
{
    ssize_t rc;
    do
        rc = gnutls_record_recv(t->s, buf, n);
    while (rc == GNUTLS_E_INTERRUPTED);
    if (rc >= 0)
        return (long)rc;
    if (rc == GNUTLS_E_AGAIN)
        return -2;
    if (rc == GNUTLS_E_PREMATURE_TERMINATION)
        return 0;
    snprintf(err, errlen, "TLS read: %s", gnutls_strerror((int)rc));
    return -1;
}

long snd_tls_send(struct snd_tls *t, const char *buf, size_t n, char *err, size_t errlen)
{
    ssize_t rc;
    do
        rc = gnutls_record_send(t->s, buf, n);
    while (rc == GNUTLS_E_INTERRUPTED);
    if (rc >= 0)
        return (long)rc;
    if (rc == GNUTLS_E_AGAIN)
        return -2;
    snprintf(err, errlen, "TLS write: %s", gnutls_strerror((int)rc));
    return -1;
}

size_t snd_tls_pending(struct snd_tls *t)
{
    return gnutls_record_check_pending(t->s);
}

void snd_tls_describe(struct snd_tls *t, char *out, size_t outlen)
{
    const char *v = gnutls_protocol_get_name(gnutls_protocol_get_version(t->s));
    const char *c = gnutls_cipher_get_name(gnutls_cipher_get(t->s));
    snprintf(out, outlen, "%s cipher=%s", v ? v : "?", c ? c : "?");
}
