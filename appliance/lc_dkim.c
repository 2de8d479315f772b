/* lc_dkim: `listcast dkim keygen|ls`: DKIM keys of the sending domains (the domains of the lists).
 *
 * Contract: keys live in STATE.DIR/dkim/DOMAIN/SELECTOR.ALG.key (ALG rsa or ed25519), unencrypted PKCS#8 PEM,
 * mode 0600, in directories of mode 0700. keygen writes a new file under a temporary name, fsyncs it and links
 * it into place (link() never replaces an existing key), so the sender (which rescans a domain's directory when it changes, see sender/snd_dkim.c) never
 * reads half a key and signs the next post with it without a restart. An existing key is never overwritten:
 * rotate by making a key with a new selector, publishing it, then removing the old file.
 * keygen prints the DNS record to publish: "SEL._domainkey.DOMAIN. IN TXT "v=DKIM1; k=rsa; p=..."", the value
 * split into strings of at most 255 octets (RFC 1035 character-strings). ls lists the keys with their records,
 * or why a key is unusable (the sender defers that domain's mail then).
 * Limits: RSA keys are made with 2048 bits; selector and domain are DNS names (lc_dkim_name_ok).
 */
#include "lc_cli.h"
#include "lc_dkim.h"
#include "lc_json.h"
#include "lc_priv.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DKIM_PATH_MAX 2048

static const char page_dkim[] =
    "NAME\n"
    "  listcast dkim - DKIM signing keys of the sending domains\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast dkim keygen DOMAIN --selector S [--algorithm rsa|ed25519] [--json]\n"
    "  listcast dkim ls [DOMAIN] [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  The sender signs every copy of a list's posts with every key of the list's domain (RFC 6376,\n"
    "  relaxed/relaxed): an RSA key and an Ed25519 key give two DKIM-Signature fields. Keys are the files\n"
    "  STATE.DIR/dkim/DOMAIN/SELECTOR.rsa.key and SELECTOR.ed25519.key (PEM, mode 0600). A domain with no key\n"
    "  is sent unsigned; a domain with an unusable key (unreadable, not PEM, wrong type, RSA under 1024 or\n"
    "  over 4096 bits) has its copies deferred, never sent unsigned, until the key is fixed or removed.\n"
    "\n"
    "OPTIONS\n" LC_HELP_COMMON_OPTIONS "\n" LC_HELP_EXIT;

static const char page_keygen[] =
    "NAME\n"
    "  listcast dkim keygen - make a DKIM key for a sending domain and print its DNS record\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast dkim keygen DOMAIN --selector S [--algorithm rsa|ed25519] [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  Makes a key (rsa: 2048-bit rsa-sha256, the default; ed25519: ed25519-sha256, RFC 8463), writes it to\n"
    "  STATE.DIR/dkim/DOMAIN/S.ALG.key (mode 0600) and prints the TXT record to publish, for example\n"
    "    s1._domainkey.lists.example.org. IN TXT \"v=DKIM1; k=rsa; p=MIIBIjAN...\" \"...\"\n"
    "  The running appliance signs the next post with it (no restart). Publish the record first: mail signed\n"
    "  with a key that is not in the DNS yet fails DKIM checks. An existing key is refused (exit 1).\n"
    "  With --json: {\"domain\", \"selector\", \"algorithm\", \"bits\", \"file\", \"name\", \"txt\", \"record\"}.\n"
    "\n"
    "OPTIONS\n"
    "  --selector S       the selector (a DNS label or dotted labels), e.g. s2026\n"
    "  --algorithm A      rsa (default) or ed25519\n" LC_HELP_COMMON_OPTIONS "\n" LC_HELP_EXIT
    "\n"
    "EXAMPLES\n"
    "  listcast dkim keygen lists.example.org --selector s1\n"
    "  listcast dkim keygen lists.example.org --selector e1 --algorithm ed25519\n";

static const char page_ls[] =
    "NAME\n"
    "  listcast dkim ls - show the DKIM keys and the DNS records to publish\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast dkim ls [DOMAIN] [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  One line per key: domain, selector, algorithm, bits and the TXT record, or the reason the key is\n"
    "  unusable. With --json: [{\"domain\", \"selector\", \"algorithm\", \"bits\", \"file\", \"name\", \"txt\",\n"
    "  \"record\", \"error\"}] (error null for a usable key).\n"
    "\n"
    "OPTIONS\n" LC_HELP_COMMON_OPTIONS "\n" LC_HELP_EXIT;

const struct lc_page lc_pages_dkim[] = {
    {"dkim", page_dkim},
    {"dkim keygen", page_keygen},
    {"dkim ls", page_ls},
    {NULL, NULL},
};

/* record writes the zone-file line for a key's TXT value, in strings of at most 255 octets. */
static void record(const char *name, const char *txt, char *out, size_t outlen)
{
    size_t o = (size_t)snprintf(out, outlen, "%s. IN TXT", name);
    size_t n = strlen(txt);
    for (size_t i = 0; i < n && o + 4 < outlen; i += 255) {
        size_t k = n - i < 255 ? n - i : 255;
        o += (size_t)snprintf(out + o, outlen - o, " \"%.*s\"", (int)k, txt + i);
    }
}

static void lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s + 32);
}

static void emit(struct lc_ctx *ctx, struct lc_json *j, const char *domain, const char *sel, int alg, unsigned bits,
                 const char *file, const char *txt, const char *error)
{
    char name[600], rec[LC_DKIM_TXT_MAX + 700];
    snprintf(name, sizeof name, "%s._domainkey.%s", sel, domain);
    if (txt)
        record(name, txt, rec, sizeof rec);
    if (j) {
        lc_json_obj(j);
        lc_json_kstr(j, "domain", domain);
        lc_json_kstr(j, "selector", sel);
        lc_json_kstr(j, "algorithm", alg > 0 ? lc_dkim_alg_name(alg) : NULL);
        if (bits)
            lc_json_kint(j, "bits", bits);
        else
            lc_json_kstr(j, "bits", NULL);
        lc_json_kstr(j, "file", file);
        lc_json_kstr(j, "name", name);
        lc_json_kstr(j, "txt", txt);
        lc_json_kstr(j, "record", txt ? rec : NULL);
        lc_json_kstr(j, "error", error);
        lc_json_end(j);
    } else if (error) {
        printf("%s %s %s unusable: %s\n", domain, sel, alg > 0 ? lc_dkim_alg_name(alg) : "?", error);
    } else {
        printf("%s\n", rec);
    }
}

static int cmd_keygen(struct lc_ctx *ctx, int argc, char **argv)
{
    enum { O_SEL = 1, O_ALG };
    static const struct lc_opt opts[] = {{"selector", 's', 1, O_SEL}, {"algorithm", 'a', 1, O_ALG}, {NULL, 0, 0, 0}};
    const char *val[2] = {NULL, "rsa"}, *pos[1] = {NULL};
    int status = lc_args(ctx, argc, argv, opts, val, pos, 1);
    if (status >= 0)
        return status;
    if (!pos[0])
        return lc_usage(ctx, "dkim keygen: missing DOMAIN (see listcast dkim keygen --help)");
    if (!val[0])
        return lc_usage(ctx, "dkim keygen: missing --selector S");
    int alg = lc_dkim_alg_parse(val[1]);
    if (alg < 0)
        return lc_usage(ctx, "dkim keygen: --algorithm must be rsa or ed25519, not '%.50s'", val[1]);
    char domain[256], sel[256];
    if (strlen(pos[0]) >= sizeof domain || !lc_dkim_name_ok(pos[0]) || !strchr(pos[0], '.'))
        return lc_usage(ctx, "dkim keygen: '%.100s' is not a domain name", pos[0]);
    if (strlen(val[0]) >= sizeof sel || !lc_dkim_name_ok(val[0]))
        return lc_usage(ctx, "dkim keygen: '%.100s' is not a selector (DNS labels of letters, digits, - and _)",
                        val[0]);
    snprintf(domain, sizeof domain, "%s", pos[0]);
    snprintf(sel, sizeof sel, "%s", val[0]);
    lower(domain);

    char dir[DKIM_PATH_MAX], file[DKIM_PATH_MAX + 300], tmp[DKIM_PATH_MAX + 300], err[1024];
    const char *state = lc_cfg_str(ctx->cfg, "state.dir");
    snprintf(dir, sizeof dir, "%s/dkim", state);
    if (mkdir(state, 0700) < 0 && errno != EEXIST)
        return lc_refused(ctx, "dkim keygen: %s: %s", state, strerror(errno));
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return lc_refused(ctx, "dkim keygen: %s: %s", dir, strerror(errno));
    if (lc_priv_give_like(state, dir, err, sizeof err) < 0) /* root making it for run.user's sender */
        return lc_refused(ctx, "dkim keygen: %s", err);
    snprintf(dir, sizeof dir, "%s/dkim/%s", state, domain);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return lc_refused(ctx, "dkim keygen: %s: %s", dir, strerror(errno));
    if (lc_priv_give_like(state, dir, err, sizeof err) < 0)
        return lc_refused(ctx, "dkim keygen: %s", err);
    snprintf(file, sizeof file, "%s/%s.%s.key", dir, sel, lc_dkim_alg_name(alg));
    snprintf(tmp, sizeof tmp, "%s/.%s.%s.key.%ld.tmp", dir, sel, lc_dkim_alg_name(alg), (long)getpid());
    struct stat st;
    if (lstat(file, &st) == 0)
        return lc_refused(ctx, "dkim keygen: %s exists (choose another selector, or remove the file first)", file);

    struct lc_dkim_key *k = lc_dkim_key_generate(alg, domain, sel, err, sizeof err);
    if (!k)
        return lc_refused(ctx, "dkim keygen: %s", err);
    char *pem = NULL, txt[LC_DKIM_TXT_MAX];
    size_t len = 0;
    if (lc_dkim_key_pem(k, &pem, &len) < 0 || lc_dkim_key_txt(k, txt, sizeof txt) < 0) {
        free(pem);
        lc_dkim_key_free(k);
        return lc_refused(ctx, "dkim keygen: cannot export the key (GnuTLS)");
    }
    unsigned bits = lc_dkim_key_bits(k);
    lc_dkim_key_free(k);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    int ok = fd >= 0;
    size_t off = 0;
    while (ok && off < len) {
        ssize_t w = write(fd, pem + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        ok = w > 0;
        off += ok ? (size_t)w : 0;
    }
    int saved = errno;
    explicit_bzero(pem, len);
    free(pem);
    ok = ok && fsync(fd) == 0;
    if (fd >= 0 && close(fd) < 0)
        ok = 0;
    if (ok && lc_priv_give_like(state, tmp, err, sizeof err) < 0) { /* before it appears under its name */
        unlink(tmp);
        return lc_refused(ctx, "dkim keygen: %s", err);
    }
    /* link() refuses an existing target, so a key made at the same moment by someone else is never replaced */
    if (ok && link(tmp, file) < 0) {
        saved = errno;
        unlink(tmp);
        return lc_refused(ctx, "dkim keygen: %s: %s", file, strerror(saved));
    }
    if (!ok) {
        if (fd >= 0)
            unlink(tmp);
        return lc_refused(ctx, "dkim keygen: %s: %s", tmp, strerror(saved ? saved : EIO));
    }
    unlink(tmp);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    if (ctx->json) {
        struct lc_json *j = lc_json_out();
        emit(ctx, j, domain, sel, alg, bits, file, txt, NULL);
        return lc_json_done(j, LC_EXIT_OK);
    }
    emit(ctx, NULL, domain, sel, alg, bits, file, txt, NULL);
    fprintf(stderr, "listcast: private key written to %s (mode 0600); publish the record above\n", file);
    return LC_EXIT_OK;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* ls_domain emits every key of one domain directory, in name order. */
static void ls_domain(struct lc_ctx *ctx, struct lc_json *j, const char *state, const char *domain)
{
    char dir[DKIM_PATH_MAX];
    snprintf(dir, sizeof dir, "%s/dkim/%s", state, domain);
    DIR *d = opendir(dir);
    if (!d)
        return;
    char names[64][256];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < 64) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] != '.' && l > 4 && l < 256 && !strcmp(de->d_name + l - 4, ".key"))
            snprintf(names[n++], sizeof names[0], "%s", de->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], cmp_name);
    for (int i = 0; i < n; i++) {
        char sel[256], file[DKIM_PATH_MAX + 300], err[2048], txt[LC_DKIM_TXT_MAX];
        snprintf(sel, sizeof sel, "%.255s", names[i]);
        sel[strlen(sel) - 4] = 0;
        char *dot = strrchr(sel, '.');
        int alg = dot ? lc_dkim_alg_parse(dot + 1) : -1;
        if (dot)
            *dot = 0;
        snprintf(file, sizeof file, "%s/%.255s", dir, names[i]);
        if (alg < 0) {
            emit(ctx, j, domain, sel, -1, 0, file, NULL, "name is not SELECTOR.rsa.key or SELECTOR.ed25519.key");
            continue;
        }
        struct lc_dkim_key *k = lc_dkim_key_load(file, alg, domain, sel, err, sizeof err);
        if (!k || lc_dkim_key_txt(k, txt, sizeof txt) < 0) {
            emit(ctx, j, domain, sel, alg, 0, file, NULL, k ? "cannot export the public key" : err);
        } else {
            emit(ctx, j, domain, sel, alg, lc_dkim_key_bits(k), file, txt, NULL);
        }
        lc_dkim_key_free(k);
    }
}

static int cmd_ls(struct lc_ctx *ctx, int argc, char **argv)
{
    const char *pos[1] = {NULL};
    int status = lc_args(ctx, argc, argv, NULL, NULL, pos, 1);
    if (status >= 0)
        return status;
    if (pos[0] && (!lc_dkim_name_ok(pos[0]) || strlen(pos[0]) > 253))
        return lc_usage(ctx, "dkim ls: '%.100s' is not a domain name", pos[0]);
    const char *state = lc_cfg_str(ctx->cfg, "state.dir");
    struct lc_json *j = ctx->json ? lc_json_out() : NULL;
    if (j)
        lc_json_arr(j);
    if (pos[0]) {
        char domain[256];
        snprintf(domain, sizeof domain, "%s", pos[0]);
        lower(domain);
        ls_domain(ctx, j, state, domain);
    } else {
        char dir[DKIM_PATH_MAX];
        snprintf(dir, sizeof dir, "%s/dkim", state);
        DIR *d = opendir(dir);
        char names[256][256];
        int n = 0;
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL && n < 256)
            if (de->d_name[0] != '.' && strlen(de->d_name) < 256 && lc_dkim_name_ok(de->d_name))
                snprintf(names[n++], sizeof names[0], "%s", de->d_name);
        if (d)
            closedir(d);
        qsort(names, (size_t)n, sizeof names[0], cmp_name);
        for (int i = 0; i < n; i++)
            ls_domain(ctx, j, state, names[i]);
    }
    if (j) {
        lc_json_end(j);
        return lc_json_done(j, LC_EXIT_OK);
    }
    return LC_EXIT_OK;
}

int lc_cmd_dkim(struct lc_ctx *ctx, int argc, char **argv)
{
    static const struct lc_subcmd subs[] = {{"dkim keygen", cmd_keygen}, {"dkim ls", cmd_ls}, {NULL, NULL}};
    return lc_dispatch(ctx, argc, argv, subs, "keygen or ls");
}
