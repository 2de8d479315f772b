/* lsd_tls: listd's STARTTLS (RFC 3207) with GnuTLS: the server credentials and one TLS stream a session.
 *
 * Contract: lsd_tls_new loads tls.cert (a PEM chain, leaf first) and tls.key (PEM) once at start; a missing or
 * unreadable file, a file that is not PEM of the right kind, or a key that does not belong to the certificate
 * is an error naming the config key (listd then exits: a misconfigured TLS is not silently turned off).
 * A stream wraps a non-blocking socket: the handshake and record I/O never block; the caller waits for the
 * direction GnuTLS asks for (LC_READ or LC_WRITE) on its event loop and bounds the handshake with its own timer.
 * Reads and writes look like read(2)/write(2) (errno EAGAIN when the socket is not ready) so that the session
 * keeps one buffering code for plain and TLS connections.
 * Priorities: the system's default (gnutls_set_default_priority: TLS 1.2 and 1.3 on Debian bookworm). No
 * client certificates are asked for. Limits: one record (16 KiB) per write call.
 */
#include "lsd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "lc_log.h"
#include "lc_loop.h"

#define RECORD_MAX 16384

struct lsd_tls {
    gnutls_certificate_credentials_t cred;
};

struct lsd_tls_conn {
    gnutls_session_t s;
    size_t resend;    /* a send returned EAGAIN: the same size must be sent again first */
};

/* load reads a whole PEM file, naming the key in err on failure. */
static int load(const char *key, const char *file, gnutls_datum_t *d, char *err, size_t errlen)
{
    if (!file || !*file) {
        snprintf(err, errlen, "%s is not set (tls.cert and tls.key go together)", key);
        return -1;
    }
    if (access(file, R_OK) < 0) {
        snprintf(err, errlen, "%s %s: %s", key, file, strerror(errno));
        return -1;
    }
    int r = gnutls_load_file(file, d);
    if (r < 0) {
        snprintf(err, errlen, "%s %s: %s", key, file, gnutls_strerror(r));
        return -1;
    }
    return 0;
}

struct lsd_tls *lsd_tls_new(const char *certfile, const char *keyfile, char *err, size_t errlen)
{
    gnutls_datum_t cert = {NULL, 0}, key = {NULL, 0};
    gnutls_x509_crt_t *crts = NULL;
    unsigned int ncrt = 0;
    gnutls_x509_privkey_t pk = NULL;
    struct lsd_tls *t = NULL;
    int r;

    if (load("tls.cert", certfile, &cert, err, errlen) < 0 || load("tls.key", keyfile, &key, err, errlen) < 0)
        goto out;
    r = gnutls_x509_crt_list_import2(&crts, &ncrt, &cert, GNUTLS_X509_FMT_PEM, 0);
    if (r < 0 || ncrt == 0) {
        snprintf(err, errlen, "tls.cert %s: no PEM certificate (%s)", certfile, r < 0 ? gnutls_strerror(r) : "empty");
        goto out;
    }
    gnutls_x509_privkey_init(&pk);
    r = gnutls_x509_privkey_import2(pk, &key, GNUTLS_X509_FMT_PEM, NULL, 0);
    if (r < 0) {
        snprintf(err, errlen, "tls.key %s: no PEM private key (%s)", keyfile, gnutls_strerror(r));
        goto out;
    }
    t = lc_calloc(1, sizeof *t);
    gnutls_certificate_allocate_credentials(&t->cred);
    r = gnutls_certificate_set_x509_key(t->cred, crts, ncrt, pk);
    if (r < 0) {
        snprintf(err, errlen, "tls.key %s does not match tls.cert %s (%s)", keyfile, certfile,
                 r == GNUTLS_E_CERTIFICATE_KEY_MISMATCH ? "key mismatch" : gnutls_strerror(r));
        gnutls_certificate_free_credentials(t->cred);
        free(t);
        t = NULL;
        goto out;
    }
    lc_info("STARTTLS enabled: certificate %s (%u in chain), key %s", certfile, ncrt, keyfile);
out:
    for (unsigned int i = 0; i < ncrt; i++)
        gnutls_x509_crt_deinit(crts[i]);
    gnutls_free(crts);
    if (pk)
        gnutls_x509_privkey_deinit(pk);
    gnutls_free(cert.data);
    if (key.data) {
        gnutls_memset(key.data, 0, key.size);
        gnutls_free(key.data);
    }
    return t;
}

void lsd_tls_free(struct lsd_tls *t)
{
    if (!t)
        return;
    gnutls_certificate_free_credentials(t->cred);
    free(t);
}

struct lsd_tls_conn *lsd_tls_conn_new(struct lsd_tls *t, int fd)
{
    struct lsd_tls_conn *c = lc_calloc(1, sizeof *c);
    if (gnutls_init(&c->s, GNUTLS_SERVER | GNUTLS_NONBLOCK) < 0)
        lc_panic("gnutls_init failed");
    gnutls_credentials_set(c->s, GNUTLS_CRD_CERTIFICATE, t->cred);
    gnutls_set_default_priority(c->s);
    gnutls_certificate_server_set_request(c->s, GNUTLS_CERT_IGNORE);
    gnutls_transport_set_int(c->s, fd);
    return c;
}

void lsd_tls_conn_free(struct lsd_tls_conn *c)
{
    if (!c)
        return;
    gnutls_deinit(c->s);
    free(c);
}

int lsd_tls_handshake(struct lsd_tls_conn *c, int *want, char *err, size_t errlen)
{
    for (int i = 0; i < 100; i++) {
        int r = gnutls_handshake(c->s);
        if (r == GNUTLS_E_SUCCESS)
            return 0;
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
            *want = gnutls_record_get_direction(c->s) ? LC_WRITE : LC_READ;
            return 1;
        }
        if (gnutls_error_is_fatal(r)) {
            snprintf(err, errlen, "%s", gnutls_strerror(r));
            return -1;
        }
        /* a warning alert: go on */
    }
    snprintf(err, errlen, "too many warning alerts");
    return -1;
}

long lsd_tls_read(struct lsd_tls_conn *c, void *buf, size_t n)
{
    for (int i = 0; i < 100; i++) {
        ssize_t r = gnutls_record_recv(c->s, buf, n);
        if (r >= 0)
            return (long)r;
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
            errno = EAGAIN;
            return -1;
        }
        if (r == GNUTLS_E_PREMATURE_TERMINATION)
            return 0; /* closed without close_notify: the peer is gone all the same */
        if (r == GNUTLS_E_REHANDSHAKE) {
            gnutls_alert_send(c->s, GNUTLS_AL_WARNING, GNUTLS_A_NO_RENEGOTIATION);
            continue;
        }
        if (gnutls_error_is_fatal((int)r)) {
            lc_debug("tls read: %s", gnutls_strerror((int)r));
            errno = EPROTO;
            return -1;
        }
    }
    errno = EPROTO;
    return -1;
}

long lsd_tls_write(struct lsd_tls_conn *c, const void *buf, size_t n)
{
    size_t len = c->resend ? c->resend : (n > RECORD_MAX ? RECORD_MAX : n);
    if (len > n)
        lc_panic("tls write: %zu octets to send again, %zu given", len, n);
    ssize_t r = gnutls_record_send(c->s, buf, len);
    if (r >= 0) {
        c->resend = 0;
        return (long)r;
    }
    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
        c->resend = len;
        errno = EAGAIN;
        return -1;
    }
    lc_debug("tls write: %s", gnutls_strerror((int)r));
    errno = EPIPE;
    return -1;
}

size_t lsd_tls_pending(struct lsd_tls_conn *c)
{
    return gnutls_record_check_pending(c->s);
}

void lsd_tls_bye(struct lsd_tls_conn *c)
{
    gnutls_bye(c->s, GNUTLS_SHUT_WR); /* best effort, non-blocking: a close_notify if it fits */
}

void lsd_tls_describe(struct lsd_tls_conn *c, char *out, size_t outlen)
{
    const char *v = gnutls_protocol_get_name(gnutls_protocol_get_version(c->s));
    const char *ci = gnutls_cipher_get_name(gnutls_cipher_get(c->s));
    snprintf(out, outlen, "%s %s", v ? v : "TLS", ci ? ci : "unknown");
}
