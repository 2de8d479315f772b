/* lc_secret: the HMAC key and HMAC-SHA256 through GnuTLS. See lc_secret.h. */
#include "lc_secret.h"
#include "lc_log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

struct lc_secret {
    unsigned char key[LC_SECRET_LEN];
    size_t len;
};

struct lc_secret *lc_secret_from(const unsigned char *key, size_t len)
{
    struct lc_secret *s = lc_calloc(1, sizeof *s);
    if (len > sizeof s->key)
        len = sizeof s->key;
    memcpy(s->key, key, len);
    s->len = len;
    return s;
}

void lc_secret_free(struct lc_secret *s)
{
    if (!s)
        return;
    memset(s->key, 0, sizeof s->key);
    free(s);
}

static int create_file(const char *path, char *err, size_t errlen)
{
    unsigned char raw[LC_SECRET_LEN];
    if (gnutls_rnd(GNUTLS_RND_KEY, raw, sizeof raw) < 0) {
        snprintf(err, errlen, "%s: cannot get random bytes", path);
        return -1;
    }
    char hex[2 * LC_SECRET_LEN + 2];
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    hex[2 * LC_SECRET_LEN] = '\n';
    hex[2 * LC_SECRET_LEN + 1] = 0;
    /* Write to a temporary name, fsync, then link into place: a reader never sees a half-written key, and
     * link() fails with EEXIST if another process won the race (then we use its key). */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t n = strlen(hex);
    if (write(fd, hex, n) != (ssize_t)n || fsync(fd) < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    close(fd);
    if (link(tmp, path) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    unlink(tmp);
    return 0;
}

struct lc_secret *lc_secret_load(const char *path, int create, char *err, size_t errlen)
{
    if (create && access(path, F_OK) < 0 && errno == ENOENT && create_file(path, err, errlen) < 0)
        return NULL;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "secret.file %s: %s", path, strerror(errno));
        return NULL;
    }
    char line[256] = "";
    char *got = fgets(line, sizeof line, f);
    fclose(f);
    size_t n = got ? strcspn(line, "\r\n") : 0;
    if (n != 2 * LC_SECRET_LEN) {
        snprintf(err, errlen, "secret.file %s: expected %d hex digits", path, 2 * LC_SECRET_LEN);
        return NULL;
    }
    unsigned char key[LC_SECRET_LEN];
    for (size_t i = 0; i < LC_SECRET_LEN; i++) {
        unsigned v;
        if (sscanf(line + 2 * i, "%2x", &v) != 1) {
            snprintf(err, errlen, "secret.file %s: not hex", path);
            return NULL;
        }
        key[i] = (unsigned char)v;
    }
    struct lc_secret *s = lc_secret_from(key, sizeof key);
    memset(key, 0, sizeof key);
    return s;
}

void lc_secret_mac(const struct lc_secret *s, const void *msg, size_t len, unsigned char out[32])
{
    if (gnutls_hmac_fast(GNUTLS_MAC_SHA256, s->key, s->len, msg, len, out) < 0)
        lc_panic("gnutls_hmac_fast failed");
}
