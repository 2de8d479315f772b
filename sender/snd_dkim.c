/* snd_dkim: DKIM signing in the sender: the key directory, the per-post signing state, the per-copy headers.
 *
 * Keys: STATE.DIR/dkim/DOMAIN/SELECTOR.rsa.key and SELECTOR.ed25519.key (PEM, written by `listcast dkim
 * keygen`, which links a finished file into place). A post is signed with every key of its list's domain:
 * an RSA and an Ed25519 key give two DKIM-Signature fields. The directory and its key files are stat()ed once
 * per post and read again only when one of them changed, so a key made (or replaced) while the sender runs signs
 * the next post without a restart. Files whose names start with '.' or do not end in ".key" are ignored.
 * Unusable keys: a key file that cannot be read, is not PEM, is of the wrong type for its name (SEL.rsa.key
 * holding an Ed25519 key) or is an RSA key outside 1024..4096 bits makes the whole domain unusable: the copies of
 * its posts are deferred ("451 4.7.0 DKIM key unusable") and retried on the normal schedule, never sent
 * unsigned, so an operator who publishes a key is never surprised by unsigned mail; the reason is logged when
 * the directory is read (at start and after each change) and with each deferral. The same holds for a post whose
 * header cannot be parsed for signing (over LC_DKIM_MAX_HEADER, malformed fields) when its domain has keys.
 * Signing: the body hash and the hash of the header fields common to all copies are computed once per post
 * (lc_dkim_msg_new). Notices carry no per-recipient header, and the posts of a list whose list_unsubscribe setting
 * is `mailto` carry the same List-Unsubscribe in every copy: their fields are signed once per post and reused.
 * Other list posts carry the per-recipient List-Unsubscribe and List-Unsubscribe-Post (RFC 8058 requires them to
 * be signed), so each copy gets its own signature over a copy of the common hash state: in the signing thread
 * pool (snd_sign.c, through snd_dkim_sign_copy, which is thread-safe), or here in the loop thread when
 * sender.sign_threads is 0.
 * Copy layout: DKIM-Signature fields, then List-Unsubscribe lines, then the stored message.
 * Limits: SND_DKIM_MAX_KEYS keys per domain; key files up to 64 KB.
 */
#include "snd.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "lc_buf.h"
#include "lc_cfg.h"
#include "lc_dkim.h"
#include "lc_log.h"

#define SND_DKIM_MAX_KEYS 8
#define SND_DKIM_SIG_MAX 16384

static const char *const percopy[] = {"List-Unsubscribe", "List-Unsubscribe-Post", NULL};

/* A domain's keys as read at one time; shared by the posts prepared with it (reference counted). */
struct snd_dkim_set {
    int refs;
    int n;
    struct lc_dkim_key *keys[SND_DKIM_MAX_KEYS];
    char *error; /* NULL, or why the domain's keys are unusable */
    char desc[256]; /* "s1 rsa-2048, s2 ed25519" */
    int nfiles;     /* the key files read, with what stat() said of them: a file replaced in place is seen too */
    struct {
        char name[256];
        ino_t ino;
        off_t size;
        struct timespec mtime;
    } files[SND_DKIM_MAX_KEYS];
};

struct snd_dkim_dom {
    char domain[256];
    int exists;
    struct timespec mtime, ctime;
    ino_t ino;
    struct snd_dkim_set *set;
    struct snd_dkim_dom *next;
};

struct snd_dkim {
    char dir[1024]; /* STATE.DIR/dkim */
    struct snd_dkim_dom *doms;
    struct lc_buf *scratch;
};

static void set_unref(struct snd_dkim_set *s)
{
    if (!s || --s->refs > 0)
        return;
    for (int i = 0; i < s->n; i++)
        lc_dkim_key_free(s->keys[i]);
    free(s->error);
    free(s);
}

/* read_set reads a domain's key directory into a new set (refs 1). */
static struct snd_dkim_set *read_set(const char *path, const char *domain)
{
    struct snd_dkim_set *s = lc_calloc(1, sizeof *s);
    s->refs = 1;
    DIR *d = opendir(path);
    if (!d) {
        if (errno != ENOENT) {
            char e[1600];
            snprintf(e, sizeof e, "%s: %s", path, strerror(errno));
            s->error = lc_strdup(e);
        }
        return s;
    }
    /* sorted by name, so that the signature order is stable */
    char names[SND_DKIM_MAX_KEYS + 1][256];
    int nn = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.' || l < 5 || strcmp(de->d_name + l - 4, ".key") != 0)
            continue;
        if (nn == SND_DKIM_MAX_KEYS) {
            char e[1600];
            snprintf(e, sizeof e, "%s: more than %d keys", path, SND_DKIM_MAX_KEYS);
            s->error = lc_strdup(e);
            break;
        }
        snprintf(names[nn++], sizeof names[0], "%s", de->d_name);
    }
    closedir(d);
    qsort(names, (size_t)nn, sizeof names[0], (int (*)(const void *, const void *))strcmp);
    for (int i = 0; i < nn && !s->error; i++) {
        char sel[256], file[1700], err[2048];
        snprintf(sel, sizeof sel, "%.255s", names[i]);
        sel[strlen(sel) - 4] = 0; /* SELECTOR.ALG */
        char *dot = strrchr(sel, '.');
        int alg = dot ? lc_dkim_alg_parse(dot + 1) : -1;
        snprintf(file, sizeof file, "%.1400s/%.255s", path, names[i]); /* fits: path is at most 1,400 */
        if (alg < 0) {
            snprintf(err, sizeof err, "%s: name is not SELECTOR.rsa.key or SELECTOR.ed25519.key", file);
            s->error = lc_strdup(err);
            break;
        }
        *dot = 0;
        struct stat fst;
        if (stat(file, &fst) == 0) {
            snprintf(s->files[s->nfiles].name, sizeof s->files[0].name, "%.255s", names[i]);
            s->files[s->nfiles].ino = fst.st_ino;
            s->files[s->nfiles].size = fst.st_size;
            s->files[s->nfiles].mtime = fst.st_mtim;
            s->nfiles++;
        }
        struct lc_dkim_key *k = lc_dkim_key_load(file, alg, domain, sel, err, sizeof err);
        if (!k) {
            s->error = lc_strdup(err);
            break;
        }
        s->keys[s->n++] = k;
        size_t dl = strlen(s->desc);
        if (alg == LC_DKIM_RSA)
            snprintf(s->desc + dl, sizeof s->desc - dl, "%s%s rsa-%u", dl ? ", " : "", sel, lc_dkim_key_bits(k));
        else
            snprintf(s->desc + dl, sizeof s->desc - dl, "%s%s ed25519", dl ? ", " : "", sel);
    }
    if (s->error) {
        for (int i = 0; i < s->n; i++)
            lc_dkim_key_free(s->keys[i]);
        s->n = 0;
    }
    return s;
}

/* files_same: 1 if every key file read into s is still what it was (same inode, size and modification time). */
static int files_same(const struct snd_dkim_set *s, const char *path)
{
    for (int i = 0; i < s->nfiles; i++) {
        char file[1700];
        struct stat st;
        snprintf(file, sizeof file, "%s/%s", path, s->files[i].name);
        if (stat(file, &st) < 0 || st.st_ino != s->files[i].ino || st.st_size != s->files[i].size ||
            st.st_mtim.tv_sec != s->files[i].mtime.tv_sec || st.st_mtim.tv_nsec != s->files[i].mtime.tv_nsec)
            return 0;
    }
    return 1;
}

/* keys_of returns the current key set of a domain (not referenced), reading the directory again if it or one of
 * its key files changed. */
static struct snd_dkim_set *keys_of(struct snd_dkim *dk, const char *domain)
{
    struct snd_dkim_dom *d;
    for (d = dk->doms; d; d = d->next)
        if (!strcmp(d->domain, domain))
            break;
    if (!d) {
        d = lc_calloc(1, sizeof *d);
        snprintf(d->domain, sizeof d->domain, "%s", domain);
        d->next = dk->doms;
        dk->doms = d;
    }
    char path[1400];
    snprintf(path, sizeof path, "%s/%s", dk->dir, domain);
    struct stat st;
    int exists = stat(path, &st) == 0;
    if (d->set && exists == d->exists &&
        (!exists || (st.st_ino == d->ino && st.st_mtim.tv_sec == d->mtime.tv_sec &&
                     st.st_mtim.tv_nsec == d->mtime.tv_nsec && st.st_ctim.tv_sec == d->ctime.tv_sec &&
                     st.st_ctim.tv_nsec == d->ctime.tv_nsec && files_same(d->set, path))))
        return d->set;
    int had = d->set && d->set->n > 0;
    set_unref(d->set);
    d->exists = exists;
    if (exists) {
        d->ino = st.st_ino;
        d->mtime = st.st_mtim;
        d->ctime = st.st_ctim;
    }
    d->set = read_set(path, domain);
    if (d->set->error)
        lc_warn("dkim domain=%s unusable: %s: copies of its posts are deferred until this is fixed", domain,
                d->set->error);
    else if (d->set->n)
        lc_info("dkim domain=%s keys=%d (%s)%s", domain, d->set->n, d->set->desc, had ? " reloaded" : "");
    else if (had)
        lc_info("dkim domain=%s keys=0: its posts are sent unsigned", domain);
    return d->set;
}

struct snd_dkim *snd_dkim_new(const char *state_dir)
{
    struct snd_dkim *dk = lc_calloc(1, sizeof *dk);
    snprintf(dk->dir, sizeof dk->dir, "%s/dkim", state_dir);
    dk->scratch = lc_buf_new(SND_DKIM_SIG_MAX);
    /* read every domain's keys now, so that a broken key is reported at start */
    DIR *d = opendir(dk->dir);
    if (d) {
        struct dirent *de;
        int n = 0;
        while ((de = readdir(d)) != NULL && n < 1000) {
            if (de->d_name[0] == '.' || !lc_dkim_name_ok(de->d_name))
                continue;
            keys_of(dk, de->d_name);
            n++;
        }
        closedir(d);
    }
    return dk;
}

void snd_dkim_free(struct snd_dkim *dk)
{
    if (!dk)
        return;
    while (dk->doms) {
        struct snd_dkim_dom *d = dk->doms;
        dk->doms = d->next;
        set_unref(d->set);
        free(d);
    }
    lc_buf_free(dk->scratch);
    free(dk);
}

void snd_dkim_post(struct snd *snd, struct snd_post *p)
{
    char err[1024];
    snd_dkim_post_free(p);
    if (!snd->dkim)
        return;
    struct snd_dkim_set *s = keys_of(snd->dkim, p->domain);
    if (s->error) {
        snprintf(err, sizeof err, "451 4.7.0 DKIM key unusable: %s", s->error);
        p->dkim_err = lc_strdup(err);
        return;
    }
    if (s->n == 0)
        return;
    s->refs++;
    p->dkim_set = s;
    p->dkim_msg = lc_dkim_msg_new(p->raw, p->msglen, p->notice ? NULL : percopy, err, sizeof err);
    if (!p->dkim_msg) {
        char e[1200];
        snprintf(e, sizeof e, "451 4.7.0 DKIM signing impossible: %s", err);
        p->dkim_err = lc_strdup(e);
        lc_warn("post=%llu dkim: %s: its copies are deferred", (unsigned long long)p->id, err);
        return;
    }
    if (!snd_dkim_per_copy(p)) { /* nothing per recipient: sign once */
        struct lc_buf *b = snd->dkim->scratch;
        char unsub[SND_HDR_LINES_MAX];
        int ul = snd_dkim_unsub(snd, p, 0, unsub, sizeof unsub); /* the common lines (mailto), or none */
        lc_buf_reset(b);
        if (lc_dkim_sign(p->dkim_msg, s->keys, (size_t)s->n, unsub, (size_t)ul, time(NULL), b, err, sizeof err) <
            0) {
            char e[1200];
            snprintf(e, sizeof e, "451 4.7.0 DKIM signing failed: %s", err);
            p->dkim_err = lc_strdup(e);
            lc_warn("post=%llu dkim: %s: its copies are deferred", (unsigned long long)p->id, err);
            return;
        }
        p->dkim_sig = lc_strndup(lc_buf_data(b), lc_buf_len(b));
        p->dkim_siglen = lc_buf_len(b);
    }
    lc_info("post=%llu dkim domain=%s signatures=%d (%s) %s", (unsigned long long)p->id, p->domain, s->n, s->desc,
            !snd_dkim_per_copy(p) ? "once per post" : snd->sign ? "per recipient, in the signing threads"
                                                                : "per recipient, in the loop thread");
}

int snd_dkim_per_copy(const struct snd_post *p)
{
    return p->dkim_msg && !p->dkim_sig && !p->dkim_err && !p->notice && p->unsub != SND_UNSUB_MAILTO;
}

int snd_dkim_unsub(struct snd *snd, const struct snd_post *p, uint64_t sub, char *out, size_t outlen)
{
    int ul = snd_post_unsub(p, snd->secret, snd->public_url, sub, out, outlen);
    if (ul < 0) { /* as before DKIM: the copy goes without it (and is signed without it) */
        lc_warn("post=%llu sub=%llu: List-Unsubscribe header too long: left out", (unsigned long long)p->id,
                (unsigned long long)sub);
        ul = 0;
    }
    return ul;
}

int snd_dkim_sign_copy(const struct snd_post *p, const char *unsub, size_t ul, char **out, int *outlen, char *err,
                       size_t errlen)
{
    struct lc_buf *b = lc_buf_new(SND_DKIM_SIG_MAX + SND_HDR_LINES_MAX);
    int rc = lc_dkim_sign(p->dkim_msg, p->dkim_set->keys, (size_t)p->dkim_set->n, unsub, ul, time(NULL), b, err,
                          errlen);
    if (rc == 0 && lc_buf_append(b, unsub, ul) < 0) {
        snprintf(err, errlen, "DKIM-Signature fields too long");
        rc = -1;
    }
    if (rc == 0) {
        size_t n = lc_buf_len(b);
        *out = lc_buf_steal(b, NULL);
        *outlen = (int)n;
    }
    lc_buf_free(b);
    return rc;
}

void snd_dkim_post_free(struct snd_post *p)
{
    set_unref(p->dkim_set);
    p->dkim_set = NULL;
    lc_dkim_msg_free(p->dkim_msg);
    p->dkim_msg = NULL;
    free(p->dkim_sig);
    p->dkim_sig = NULL;
    p->dkim_siglen = 0;
    free(p->dkim_err);
    p->dkim_err = NULL;
}

int snd_dkim_copy(struct snd *snd, const struct snd_post *p, int with_unsub, uint64_t sub, char *out, size_t outlen,
                  char *err, size_t errlen)
{
    if (p->dkim_err) {
        snprintf(err, errlen, "%s", p->dkim_err);
        return -1;
    }
    char unsub[SND_HDR_LINES_MAX];
    int ul = with_unsub ? snd_dkim_unsub(snd, p, sub, unsub, sizeof unsub) : 0;
    if (!p->dkim_set) { /* no keys: the unsubscribe lines only (SND_HDR_LINES_MAX < outlen) */
        memcpy(out, unsub, (size_t)ul);
        return ul;
    }
    const char *sig;
    size_t sl;
    struct lc_buf *b = snd->dkim->scratch;
    if (p->dkim_sig) {
        sig = p->dkim_sig;
        sl = p->dkim_siglen;
    } else {
        lc_buf_reset(b);
        if (lc_dkim_sign(p->dkim_msg, p->dkim_set->keys, (size_t)p->dkim_set->n, unsub, (size_t)ul, time(NULL), b,
                         err, errlen) < 0)
            return -1;
        sig = lc_buf_data(b);
        sl = lc_buf_len(b);
    }
    if (sl + (size_t)ul >= outlen) {
        snprintf(err, errlen, "DKIM-Signature fields too long (%zu octets)", sl);
        return -1;
    }
    memcpy(out, sig, sl);
    memcpy(out + sl, unsub, (size_t)ul);
    return (int)(sl + (size_t)ul);
}
