/* lc_admin: `listcast admin add|passwd|token|ls`: accounts of the admin web UI (schema/SCHEMA.md "Admin web UI").
 *
 * Contract: a password is read from the terminal without echo (asked twice) when standard input is a tty, else
 * as the first line of standard input; it is stored only as a salted slow hash, "pbkdf2-sha256$ITER$SALT$HASH"
 * (PBKDF2-HMAC-SHA256 from GnuTLS, ADMIN_ITER iterations, 16 random bytes of salt, 32 bytes of hash) in
 * lc:admin:USER; the webui checks it the same way. `admin token` makes a random API token, prints it once and
 * stores only its SHA-256 (lc:apitokens), so a copy of the store gives no working token.
 * Limits: user names of 1..64 characters [A-Za-z0-9._@-]; passwords of 8..1024 bytes.
 */
#include "lc_cli.h"
#include "lc_json.h"
#include "lc_redis.h"
#include "lc_schema.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define ADMIN_ITER 200000
#define ADMIN_PW_MIN 8
#define ADMIN_PW_MAX 1024
#define ADMIN_USER_MAX 64

static const char page_admin[] =
    "NAME\n"
    "  listcast admin - accounts and API tokens of the admin web UI\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast admin add USER [--json]\n"
    "  listcast admin passwd USER [--json]\n"
    "  listcast admin token USER [--json]\n"
    "  listcast admin ls [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  See `listcast admin add --help` and the pages of passwd, token and ls.\n"
    LC_HELP_REDIS
    "\n"
    "OPTIONS\n" LC_HELP_COMMON_OPTIONS "\n" LC_HELP_EXIT;

#define ADMIN_PW_HELP                                                                                         \
    "  The password is asked twice on the terminal, without echo, when standard input is a terminal;\n"      \
    "  otherwise the first line of standard input is the password (for scripts: `echo \"$PW\" | listcast\n"  \
    "  admin add alice`). It must be 8 to 1024 bytes. Only a salted PBKDF2-HMAC-SHA256 hash (200,000\n"       \
    "  iterations) is stored.\n"

static const char page_add[] =
    "NAME\n"
    "  listcast admin add - create an account for the admin web UI\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast admin add USER [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  Creates the account USER (1 to 64 of A-Z a-z 0-9 . _ @ -). An existing account is refused (exit 1):\n"
    "  use `listcast admin passwd` to change a password. With --json: {\"user\", \"created\"}.\n"
    ADMIN_PW_HELP LC_HELP_REDIS
    "\n"
    "OPTIONS\n" LC_HELP_COMMON_OPTIONS "\n" LC_HELP_EXIT
    "\n"
    "EXAMPLES\n"
    "  listcast admin add alice\n";

static const char page_passwd[] =
    "NAME\n"
    "  listcast admin passwd - set a new password for an admin account\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast admin passwd USER [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  Replaces the password of the existing account USER (a missing account is refused, exit 1).\n"
    ADMIN_PW_HELP LC_HELP_REDIS
    "\n"
    "OPTIONS\n" LC_HELP_COMMON_OPTIONS "\n" LC_HELP_EXIT;

static const char page_token[] =
    "NAME\n"
    "  listcast admin token - make an API token for the JSON API\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast admin token USER [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  Makes a new random token that acts as USER (an existing account) in the JSON API, sent as\n"
    "  `Authorization: Bearer TOKEN`, and prints it once: only its SHA-256 is stored. With --json:\n"
    "  {\"user\", \"token\"}.\n"
    LC_HELP_REDIS
    "\n"
    "OPTIONS\n" LC_HELP_COMMON_OPTIONS "\n" LC_HELP_EXIT
    "\n"
    "EXAMPLES\n"
    "  curl -H \"Authorization: Bearer $(listcast admin token alice)\" http://127.0.0.1:8025/api/lists\n";

static const char page_ls[] =
    "NAME\n"
    "  listcast admin ls - list the admin accounts\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast admin ls [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  Prints the account names, sorted, one a line. With --json: an array of names.\n"
    LC_HELP_REDIS
    "\n"
    "OPTIONS\n" LC_HELP_COMMON_OPTIONS "\n" LC_HELP_EXIT;

const struct lc_page lc_pages_admin[] = {
    {"admin", page_admin},
    {"admin add", page_add},
    {"admin passwd", page_passwd},
    {"admin token", page_token},
    {"admin ls", page_ls},
    {NULL, NULL},
};

static int user_ok(const char *u)
{
    size_t n = strlen(u);
    return n > 0 && n <= ADMIN_USER_MAX &&
           strspn(u, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-") == n;
}

static void hex(const unsigned char *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", p[i]);
}

/* read_line reads one line (without its end) from f into out; -1 at EOF or when it is too long. */
static int read_line(FILE *f, char *out, size_t outlen)
{
    if (!fgets(out, (int)outlen, f))
        return -1;
    size_t n = strlen(out);
    if (n && out[n - 1] == '\n')
        out[--n] = 0;
    else if (!feof(f))
        return -1; /* longer than the buffer */
    if (n && out[n - 1] == '\r')
        out[--n] = 0;
    return 0;
}

static int ask(const char *prompt, char *out, size_t outlen)
{
    struct termios old, quiet;
    fputs(prompt, stderr);
    fflush(stderr);
    int tty = tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    int r = read_line(stdin, out, outlen);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fputs("\n", stderr);
    }
    return r;
}

/* read_password gets the password (see ADMIN_PW_HELP); returns LC_EXIT_OK or an exit status after a message. */
static int read_password(struct lc_ctx *ctx, char *pw, size_t pwlen)
{
    char again[ADMIN_PW_MAX + 2];
    if (isatty(STDIN_FILENO)) {
        if (ask("Password: ", pw, pwlen) < 0 || ask("Again: ", again, sizeof again) < 0)
            return lc_refused(ctx, "%s: no password given", ctx->cmd);
        if (strcmp(pw, again) != 0) {
            memset(again, 0, sizeof again);
            return lc_refused(ctx, "%s: the two passwords differ", ctx->cmd);
        }
        memset(again, 0, sizeof again);
    } else if (read_line(stdin, pw, pwlen) < 0) {
        return lc_usage(ctx, "%s: no password on standard input (or longer than %d bytes)", ctx->cmd,
                        ADMIN_PW_MAX);
    }
    size_t n = strlen(pw);
    if (n < ADMIN_PW_MIN || n > ADMIN_PW_MAX)
        return lc_usage(ctx, "%s: the password must be %d to %d bytes long", ctx->cmd, ADMIN_PW_MIN, ADMIN_PW_MAX);
    return LC_EXIT_OK;
}

/* pw_hash writes "pbkdf2-sha256$ITER$SALT$HASH" for pw to out; 0 or -1. */
static int pw_hash(const char *pw, char *out, size_t outlen)
{
    unsigned char salt[16], key[32];
    if (gnutls_rnd(GNUTLS_RND_RANDOM, salt, sizeof salt) < 0)
        return -1;
    gnutls_datum_t k = {(unsigned char *)pw, (unsigned)strlen(pw)}, s = {salt, sizeof salt};
    if (gnutls_pbkdf2(GNUTLS_MAC_SHA256, &k, &s, ADMIN_ITER, key, sizeof key) < 0)
        return -1;
    char sh[33], kh[65];
    hex(salt, sizeof salt, sh);
    hex(key, sizeof key, kh);
    return snprintf(out, outlen, "pbkdf2-sha256$%d$%s$%s", ADMIN_ITER, sh, kh) < (int)outlen ? 0 : -1;
}

/* admin_exists: 1 yes, 0 no, -1 Redis error (printed). */
static int admin_exists(struct lc_ctx *ctx, redisContext *rc, const char *user)
{
    char err[512];
    redisReply *r = lc_redis_cmd(rc, err, sizeof err, "SISMEMBER %s %s", LC_K_ADMINS, user);
    int res = r && r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -1;
    freeReplyObject(r);
    if (res < 0)
        lc_refused(ctx, "redis: %s", err);
    return res;
}

static int set_password(struct lc_ctx *ctx, int argc, char **argv, int create)
{
    const char *user = NULL;
    int status = lc_args(ctx, argc, argv, NULL, NULL, &user, 1);
    if (status >= 0)
        return status;
    if (!user)
        return lc_usage(ctx, "%s: missing USER (see listcast %s --help)", ctx->cmd, ctx->cmd);
    if (!user_ok(user))
        return lc_usage(ctx, "%s: invalid user name '%.100s' (1 to 64 of A-Z a-z 0-9 . _ @ -)", ctx->cmd, user);
    redisContext *rc = lc_redis(ctx);
    if (!rc)
        return LC_EXIT_REFUSED;
    int ex = admin_exists(ctx, rc, user);
    if (ex < 0)
        return LC_EXIT_REFUSED;
    if (create && ex)
        return lc_refused(ctx, "%s: admin %s exists (use listcast admin passwd to change the password)", ctx->cmd,
                          user);
    if (!create && !ex)
        return lc_refused(ctx, "%s: no admin %s", ctx->cmd, user);
    char pw[ADMIN_PW_MAX + 2], hash[256], key[LC_KEY_MAX], err[512];
    if ((status = read_password(ctx, pw, sizeof pw)) != LC_EXIT_OK) {
        memset(pw, 0, sizeof pw);
        return status;
    }
    int h = pw_hash(pw, hash, sizeof hash);
    memset(pw, 0, sizeof pw);
    if (h < 0)
        return lc_refused(ctx, "%s: cannot hash the password (GnuTLS)", ctx->cmd);
    lc_key_admin(key, sizeof key, user);
    long long now = (long long)time(NULL);
    redisReply *r = create ? lc_redis_cmd(rc, err, sizeof err, "HSET %s user %s pwhash %s created %lld", key, user,
                                          hash, now)
                           : lc_redis_cmd(rc, err, sizeof err, "HSET %s pwhash %s", key, hash);
    freeReplyObject(r);
    if (!r)
        return lc_refused(ctx, "redis: %s", err);
    r = lc_redis_cmd(rc, err, sizeof err, "SADD %s %s", LC_K_ADMINS, user);
    freeReplyObject(r);
    if (!r)
        return lc_refused(ctx, "redis: %s", err);
    if (ctx->json) {
        struct lc_json *j = lc_json_out();
        lc_json_obj(j);
        lc_json_kstr(j, "user", user);
        lc_json_kbool(j, create ? "created" : "changed", 1);
        lc_json_end(j);
        return lc_json_done(j, LC_EXIT_OK);
    }
    printf(create ? "created admin %s\n" : "changed the password of admin %s\n", user);
    return LC_EXIT_OK;
}

static int cmd_add(struct lc_ctx *ctx, int argc, char **argv)
{
    return set_password(ctx, argc, argv, 1);
}

static int cmd_passwd(struct lc_ctx *ctx, int argc, char **argv)
{
    return set_password(ctx, argc, argv, 0);
}

static int cmd_token(struct lc_ctx *ctx, int argc, char **argv)
{
    const char *user = NULL;
    int status = lc_args(ctx, argc, argv, NULL, NULL, &user, 1);
    if (status >= 0)
        return status;
    if (!user)
        return lc_usage(ctx, "admin token: missing USER (see listcast admin token --help)");
    if (!user_ok(user))
        return lc_usage(ctx, "admin token: invalid user name '%.100s'", user);
    redisContext *rc = lc_redis(ctx);
    if (!rc)
        return LC_EXIT_REFUSED;
    int ex = admin_exists(ctx, rc, user);
    if (ex <= 0)
        return ex < 0 ? LC_EXIT_REFUSED : lc_refused(ctx, "admin token: no admin %s", user);
    unsigned char raw[32], d[32];
    if (gnutls_rnd(GNUTLS_RND_KEY, raw, sizeof raw) < 0)
        return lc_refused(ctx, "admin token: no random bytes (GnuTLS)");
    char token[4 + 65], dh[65], err[512];
    memcpy(token, "lct_", 4);
    hex(raw, sizeof raw, token + 4);
    gnutls_hash_fast(GNUTLS_DIG_SHA256, token, strlen(token), d);
    hex(d, sizeof d, dh);
    redisReply *r = lc_redis_cmd(rc, err, sizeof err, "HSET %s %s %s", LC_K_APITOKENS, dh, user);
    freeReplyObject(r);
    if (!r)
        return lc_refused(ctx, "redis: %s", err);
    if (ctx->json) {
        struct lc_json *j = lc_json_out();
        lc_json_obj(j);
        lc_json_kstr(j, "user", user);
        lc_json_kstr(j, "token", token);
        lc_json_end(j);
        return lc_json_done(j, LC_EXIT_OK);
    }
    printf("%s\n", token);
    return LC_EXIT_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmd_ls(struct lc_ctx *ctx, int argc, char **argv)
{
    int status = lc_args(ctx, argc, argv, NULL, NULL, NULL, 0);
    if (status >= 0)
        return status;
    redisContext *rc = lc_redis(ctx);
    if (!rc)
        return LC_EXIT_REFUSED;
    char err[512];
    redisReply *r = lc_redis_cmd(rc, err, sizeof err, "SMEMBERS %s", LC_K_ADMINS);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return lc_refused(ctx, "redis: %s", r ? "unexpected reply" : err);
    }
    char **names = calloc(r->elements + 1, sizeof *names);
    size_t n = 0;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING)
            names[n++] = r->element[i]->str;
    qsort(names, n, sizeof *names, cmp_str);
    if (ctx->json) {
        struct lc_json *j = lc_json_out();
        lc_json_arr(j);
        for (size_t i = 0; i < n; i++)
            lc_json_str(j, names[i]);
        lc_json_end(j);
        status = lc_json_done(j, LC_EXIT_OK);
    } else {
        for (size_t i = 0; i < n; i++)
            printf("%s\n", names[i]);
        status = LC_EXIT_OK;
    }
    free(names);
    freeReplyObject(r);
    return status;
}

int lc_cmd_admin(struct lc_ctx *ctx, int argc, char **argv)
{
    static const struct lc_subcmd subs[] = {{"admin add", cmd_add}, {"admin passwd", cmd_passwd},
                                            {"admin token", cmd_token}, {"admin ls", cmd_ls}, {NULL, NULL}};
    return lc_dispatch(ctx, argc, argv, subs, "add, passwd, token or ls");
}
