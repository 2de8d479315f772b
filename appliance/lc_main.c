/* lc_main: entry point of the `listcast` tool: global options, command dispatch, manual pages, the option
 * parser, subcommand dispatch and the helpers every command shares (messages, Redis connection, list
 * arguments, JSON output).
 *
 * Contract: `--config FILE` and `--set K=V` are taken out of the whole command line first (lc_cfg_args), so they
 * work before or after the command words; then leading --json / -h / --version, then the command. A -h or
 * --help anywhere (before "--") prints the manual page of the command named so far and exits 0.
 * Exit status: 0 success, 1 refused or failed, 2 usage error (see lc_cli.h); errors are one stderr line.
 */
#include "lc_cli.h"
#include "lc_addr.h"
#include "lc_json.h"
#include "lc_redis.h"
#include "lc_schema.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LC_VERSION "0.1.0"

static const char page_listcast[] =
    "NAME\n"
    "  listcast - run and administer a listcast mailing-list appliance\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast [--config FILE] [--set KEY=VALUE]... [--json] COMMAND [ARGS]...\n"
    "  listcast help [COMMAND [SUBCOMMAND]]\n"
    "  listcast COMMAND [SUBCOMMAND] -h\n"
    "\n"
    "DESCRIPTION\n"
    "  listcast runs the whole appliance in the foreground (`listcast up`) and administers it: mailing\n"
    "  lists, their subscribers and the progress of their posts. All state lives in Redis.\n"
    "\n"
    "COMMANDS\n"
    "  up                           run the appliance (embedded Redis and every daemon) in the foreground\n"
    "  list create LIST [--policy P] [--owner ADDR]\n"
    "                               create a list\n"
    "  list ls                      show every list\n"
    "  list show LIST               show one list and its counts\n"
    "  list set LIST [--policy P] [--owner A] [--owners \"A B\"] [--moderator A]... [--subject-prefix T]\n"
    "      [--footer T | --footer-file F] [--max-message-size N] [--dmarc-mitigation munge|wrap|none]\n"
    "                               change a list's settings\n"
    "  sub add LIST ADDR...|-       subscribe addresses (\"-\": read them from stdin)\n"
    "  sub rm LIST ADDR...|-        unsubscribe addresses\n"
    "  sub ls LIST [--status S]     show the subscribers of a list\n"
    "  sub show LIST ADDR           show one subscriber (status, bounce score)\n"
    "  post ls LIST [--limit N]     show the latest posts of a list with their delivery counters\n"
    "  post show ID                 show one post, its progress and per-domain counters\n"
    "  list resume LIST             resume a list paused for its complaint rate\n"
    "  bounce parse FILE|-          classify a bounce message: recipient, status, reply code, reason, hard\n"
    "  bounce ls LIST               a list's bounces by reason, by domain and by post\n"
    "  admin add|passwd USER        create an admin web UI account / change its password (not echoed)\n"
    "  admin token USER             make an API token (Authorization: Bearer) for the JSON API\n"
    "  dkim keygen DOMAIN --selector S [--algorithm rsa|ed25519]\n"
    "                               make a DKIM key and print its DNS TXT record\n"
    "  dkim ls [DOMAIN]             show the DKIM keys and their DNS records\n"
    "  doctor DOMAIN [--selector S]... [--ip ADDR]...\n"
    "                               check MX, SPF, DKIM, DMARC, reverse DNS and STARTTLS of a domain\n"
    "  config                       print the effective configuration\n"
    "  help [COMMAND]               print a manual page\n"
    "\n"
    "OPTIONS\n" LC_HELP_COMMON_OPTIONS
    "  --version          print the version and exit\n"
    "  --config and --set are accepted anywhere on the command line, before or after the command.\n"
    "\n"
    "CONFIGURATION\n"
    "  Keys (see README \"Configuration\"): redis.url, state.dir, secret.file, node.name, smtp.listen,\n"
    "  smtp.hostname, smtp.max_message_size, http.listen, http.public_url, dns.servers, sender.mx_port,\n"
    "  sender.concurrency, sender.per_mx, sender.batch_size, sender.relay, log.verbose. An unknown key or a\n"
    "  bad value is a usage error that names the key. `listcast config` prints every key's value.\n"
    LC_HELP_REDIS
    "\n" LC_HELP_EXIT
    "\n"
    "EXAMPLES\n"
    "  listcast up --demo --set state.dir=$PWD/state\n"
    "  listcast --set state.dir=$PWD/state list create news@lists.example.org --policy announce \\\n"
    "      --owner editor@example.org\n"
    "  listcast --set state.dir=$PWD/state sub add news@lists.example.org - < addresses.txt\n"
    "  listcast --set redis.url=redis://127.0.0.1:6379 post show 42 --json\n";

static const char page_config[] =
    "NAME\n"
    "  listcast config - print the effective configuration\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast config [--config FILE] [--set KEY=VALUE]... [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  Prints every configuration key with its effective value (defaults, then FILE, then --set, then the\n"
    "  derived defaults: secret.file from state.dir, node.name and smtp.hostname from the host name), one\n"
    "  \"key = value\" a line, in the format --config reads. A last comment line names the Redis the\n"
    "  tool would use. With --json: one object, key -> value (strings), plus \"redis\": the effective URL.\n"
    LC_HELP_REDIS
    "\n"
    "OPTIONS\n" LC_HELP_COMMON_OPTIONS "\n" LC_HELP_EXIT
    "\n"
    "EXAMPLES\n"
    "  listcast config --set state.dir=/srv/listcast > /etc/listcast.conf\n"
    "  listcast --config /etc/listcast.conf config --json\n";

static const char page_help[] =
    "NAME\n"
    "  listcast help - print a manual page\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast help [COMMAND [SUBCOMMAND]]\n"
    "\n"
    "DESCRIPTION\n"
    "  Prints the manual page of a command, the same as `listcast COMMAND [SUBCOMMAND] --help`.\n"
    "\n"
    "OPTIONS\n"
    "  none\n"
    "\n" LC_HELP_EXIT
    "\n"
    "EXAMPLES\n"
    "  listcast help sub add\n";

static const struct lc_page pages_main[] = {
    {"listcast", page_listcast},
    {"config", page_config},
    {"help", page_help},
    {NULL, NULL},
};

/* ---- messages ---------------------------------------------------------------------------------------------- */

static void vmsg(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
static void vmsg(const char *fmt, va_list ap)
{
    char line[1024];
    vsnprintf(line, sizeof line, fmt, ap);
    for (char *p = line; *p; p++) /* one line, always */
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    fflush(stdout);
    fprintf(stderr, "listcast: %s\n", line);
}

int lc_usage(struct lc_ctx *ctx, const char *fmt, ...)
{
    (void)ctx;
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
    return LC_EXIT_USAGE;
}

int lc_refused(struct lc_ctx *ctx, const char *fmt, ...)
{
    (void)ctx;
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
    return LC_EXIT_REFUSED;
}

/* ---- manual pages ------------------------------------------------------------------------------------------ */

static const struct lc_page *page_tables[] = {pages_main, lc_pages_up, lc_pages_list, lc_pages_sub,
                                              lc_pages_post, lc_pages_bounce, lc_pages_admin, lc_pages_dkim,
                                              lc_pages_doctor};

static const char *find_page(const char *name)
{
    for (size_t t = 0; t < sizeof page_tables / sizeof page_tables[0]; t++)
        for (const struct lc_page *p = page_tables[t]; p->name; p++)
            if (!strcmp(p->name, name))
                return p->text;
    return NULL;
}

int lc_help(const char *page)
{
    const char *text = find_page(page);
    fputs(text ? text : page_listcast, stdout);
    return fflush(stdout) == 0 ? LC_EXIT_OK : LC_EXIT_REFUSED;
}

/* help_for prints the most specific page for the command words w1 (and w2), either may be NULL. */
static int help_for(const char *w1, const char *w2)
{
    char name[128];
    if (w1 && w2) {
        snprintf(name, sizeof name, "%s %s", w1, w2);
        if (find_page(name))
            return lc_help(name);
    }
    if (w1 && find_page(w1))
        return lc_help(w1);
    return lc_help("listcast");
}

/* ---- option parsing ---------------------------------------------------------------------------------------- */

enum { O_JSON = 1000, O_HELP }; /* ids of the options every command accepts */

static const struct lc_opt common_opts[] = {
    {"json", 0, 0, O_JSON},
    {"help", 'h', 0, O_HELP},
    {NULL, 0, 0, 0},
};

void lc_opt_init(struct lc_optstate *st, int argc, char **argv)
{
    memset(st, 0, sizeof *st);
    st->argc = argc;
    st->argv = argv;
    st->i = 1;
}

static const struct lc_opt *find_long(const struct lc_opt *opts, const char *name, size_t n)
{
    const struct lc_opt *tables[2] = {opts, common_opts};
    for (int t = 0; t < 2; t++)
        for (const struct lc_opt *o = tables[t]; o && o->lng; o++)
            if (strlen(o->lng) == n && !memcmp(o->lng, name, n))
                return o;
    return NULL;
}

static const struct lc_opt *find_short(const struct lc_opt *opts, char c)
{
    const struct lc_opt *tables[2] = {opts, common_opts};
    for (int t = 0; t < 2; t++)
        for (const struct lc_opt *o = tables[t]; o && o->lng; o++)
            if (o->shrt && o->shrt == c)
                return o;
    return NULL;
}

/* next_opt returns an option id, 0 for a positional argument (st->arg), -1 at the end, or -2 for a usage
 * error (printed). */
static int next_opt(struct lc_ctx *ctx, struct lc_optstate *st, const struct lc_opt *opts)
{
    for (;;) {
        if (st->i >= st->argc)
            return -1;
        char *a = st->argv[st->i++];
        st->arg = NULL;
        st->opt = NULL;
        if (st->only_pos || a[0] != '-' || a[1] == 0) {
            st->arg = a;
            return 0;
        }
        if (!strcmp(a, "--")) {
            st->only_pos = 1;
            continue;
        }
        const struct lc_opt *o;
        const char *inline_arg = NULL;
        if (a[1] == '-') {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t n = eq ? (size_t)(eq - name) : strlen(name);
            o = find_long(opts, name, n);
            if (!o) {
                lc_usage(ctx, "%s: unknown option '--%.*s' (see listcast %s --help)", ctx->cmd, (int)n, name,
                         ctx->cmd);
                return -2;
            }
            if (eq && !o->has_arg) {
                lc_usage(ctx, "%s: option --%s takes no argument", ctx->cmd, o->lng);
                return -2;
            }
            if (eq)
                inline_arg = eq + 1;
        } else {
            o = find_short(opts, a[1]);
            if (!o) {
                lc_usage(ctx, "%s: unknown option '-%c' (see listcast %s --help)", ctx->cmd, a[1], ctx->cmd);
                return -2;
            }
            if (a[2]) {
                if (!o->has_arg) {
                    lc_usage(ctx, "%s: unknown option '%s' (see listcast %s --help)", ctx->cmd, a, ctx->cmd);
                    return -2;
                }
                inline_arg = a + 2;
            }
        }
        if (o->has_arg) {
            if (!inline_arg) {
                if (st->i >= st->argc) {
                    lc_usage(ctx, "%s: option --%s needs an argument", ctx->cmd, o->lng);
                    return -2;
                }
                inline_arg = st->argv[st->i++];
            }
            st->arg = inline_arg;
        }
        st->opt = o;
        return o->id;
    }
}

int lc_opt_next(struct lc_ctx *ctx, struct lc_optstate *st, const struct lc_opt *opts, int *status)
{
    int o;
    while ((o = next_opt(ctx, st, opts)) == O_JSON)
        ctx->json = 1;
    if (o == O_HELP) {
        *status = lc_help(ctx->cmd);
        return -2;
    }
    if (o == -2)
        *status = LC_EXIT_USAGE;
    return o;
}

int lc_args(struct lc_ctx *ctx, int argc, char **argv, const struct lc_opt *opts, const char **val,
            const char **pos, int npos)
{
    struct lc_optstate st;
    int o, status, n = 0;
    lc_opt_init(&st, argc, argv);
    while ((o = lc_opt_next(ctx, &st, opts, &status)) != -1) {
        if (o == -2)
            return status;
        if (o > 0) {
            if (val)
                val[st.opt - opts] = st.arg ? st.arg : "";
        } else if (n < npos) {
            pos[n++] = st.arg;
        } else {
            return lc_usage(ctx, "%s: unexpected argument '%.200s'", ctx->cmd, st.arg);
        }
    }
    return -1;
}

int lc_dispatch(struct lc_ctx *ctx, int argc, char **argv, const struct lc_subcmd *subs, const char *choices)
{
    if (argc < 2)
        return lc_usage(ctx, "%s: missing subcommand: %s (see listcast %s --help)", ctx->cmd, choices, ctx->cmd);
    for (const struct lc_subcmd *c = subs; c->name; c++) {
        const char *word = strchr(c->name, ' ');
        if (word && !strcmp(word + 1, argv[1])) {
            ctx->cmd = c->name;
            return c->fn(ctx, argc - 1, argv + 1);
        }
    }
    return lc_usage(ctx, "%s: unknown subcommand '%.100s' (%s)", ctx->cmd, argv[1], choices);
}

/* ---- shared helpers ---------------------------------------------------------------------------------------- */

int lc_redis_url_of(const struct lc_cfg *cfg, char *out, size_t outlen)
{
    const char *url = lc_cfg_str(cfg, "redis.url");
    if (*url) {
        if (strlen(url) >= outlen)
            return -1;
        strcpy(out, url);
        return 0;
    }
    const char *dir = lc_cfg_str(cfg, "state.dir");
    char cwd[PATH_MAX] = "";
    if (dir[0] != '/' && !getcwd(cwd, sizeof cwd))
        return -1;
    int n = snprintf(out, outlen, "unix://%s%s%s/redis.sock", cwd, *cwd ? "/" : "", dir);
    return (n < 0 || (size_t)n >= outlen) ? -1 : 0;
}

redisContext *lc_redis(struct lc_ctx *ctx)
{
    if (ctx->rc)
        return ctx->rc;
    char url[PATH_MAX + 32], err[512];
    if (lc_redis_url_of(ctx->cfg, url, sizeof url) < 0) {
        lc_refused(ctx, "state.dir: path too long");
        return NULL;
    }
    ctx->rc = lc_redis_connect(url, 10000, err, sizeof err);
    if (!ctx->rc) {
        if (!*lc_cfg_str(ctx->cfg, "redis.url"))
            lc_refused(ctx, "cannot connect to the embedded Redis (%s); is `listcast up` running with "
                            "state.dir=%s? (or set redis.url)", err, lc_cfg_str(ctx->cfg, "state.dir"));
        else
            lc_refused(ctx, "cannot connect to Redis: %s", err);
        return NULL;
    }
    return ctx->rc;
}

int lc_redis_script(redisContext *rc, const char *body, char *sha, char *err, size_t errlen)
{
    redisReply *r = lc_redis_cmd(rc, err, errlen, "SCRIPT LOAD %s", body);
    if (!r)
        return -1;
    if (r->type != REDIS_REPLY_STRING || r->len != 40) {
        snprintf(err, errlen, "redis: SCRIPT LOAD: unexpected reply");
        freeReplyObject(r);
        return -1;
    }
    memcpy(sha, r->str, 40);
    sha[40] = 0;
    freeReplyObject(r);
    return 0;
}

int lc_norm_list(struct lc_ctx *ctx, const char *arg, char *out)
{
    const char *why = "invalid";
    if (lc_addr_norm(arg, strlen(arg), out, &why) < 0) {
        lc_usage(ctx, "invalid list address '%.200s': %s", arg, why);
        return -1;
    }
    return 0;
}

int lc_list_need(struct lc_ctx *ctx, const char *list)
{
    redisContext *rc = lc_redis(ctx);
    if (!rc)
        return -1;
    char k[LC_KEY_MAX], err[512];
    lc_key_list(k, sizeof k, list);
    redisReply *r = lc_redis_cmd(rc, err, sizeof err, "EXISTS %s", k);
    if (!r) {
        lc_refused(ctx, "%s", err);
        return -1;
    }
    int e = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
    freeReplyObject(r);
    if (!e) {
        lc_refused(ctx, "no such list: %s", list);
        return -1;
    }
    return 0;
}

int lc_list_open(struct lc_ctx *ctx, const char *arg, char *out)
{
    if (lc_norm_list(ctx, arg, out) < 0)
        return LC_EXIT_USAGE;
    return lc_list_need(ctx, out) < 0 ? LC_EXIT_REFUSED : LC_EXIT_OK;
}

int lc_word_in(const char *w, const char *const *words)
{
    for (int i = 0; words[i]; i++)
        if (!strcmp(words[i], w))
            return 1;
    return 0;
}

void lc_fmt_time(long long t, char *out, size_t outlen)
{
    if (t <= 0) {
        snprintf(out, outlen, "-");
        return;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || strftime(out, outlen, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(out, outlen, "%lld", t);
}

struct lc_json *lc_json_out(void)
{
    return lc_json_new_file(stdout, 1);
}

int lc_json_done(struct lc_json *j, int status)
{
    if (lc_json_free(j) < 0) {
        fprintf(stderr, "listcast: cannot write JSON output\n");
        return status ? status : LC_EXIT_REFUSED;
    }
    return status;
}

/* ---- `listcast config` ------------------------------------------------------------------------------------- */

static int cmd_config(struct lc_ctx *ctx, int argc, char **argv)
{
    int status = lc_args(ctx, argc, argv, NULL, NULL, NULL, 0);
    if (status >= 0)
        return status;
    char url[PATH_MAX + 32];
    if (lc_redis_url_of(ctx->cfg, url, sizeof url) < 0)
        snprintf(url, sizeof url, "(state.dir too long)");
    if (!ctx->json) {
        lc_cfg_dump(ctx->cfg, stdout);
        printf("# Redis used by the CLI: %s%s\n", url,
               *lc_cfg_str(ctx->cfg, "redis.url") ? "" : " (the embedded Redis of `listcast up`)");
        return fflush(stdout) == 0 ? LC_EXIT_OK : LC_EXIT_REFUSED;
    }
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    if (!mem)
        return lc_refused(ctx, "out of memory");
    lc_cfg_dump(ctx->cfg, mem);
    fclose(mem);
    struct lc_json *j = lc_json_out();
    lc_json_obj(j);
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        char *sep = strstr(line, " = ");
        if (!sep)
            continue;
        *sep = 0;
        lc_json_kstr(j, line, sep + 3);
    }
    lc_json_kstr(j, "redis", url);
    lc_json_end(j);
    free(text);
    return lc_json_done(j, LC_EXIT_OK);
}

/* ---- main -------------------------------------------------------------------------------------------------- */

/* wants_help reports whether -h/--help appears before "--". */
static int wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            return 0;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
            return 1;
    }
    return 0;
}

static const char *const commands[] = {"up", "list", "sub", "post", "bounce", "admin", "dkim", "doctor", "config", "help",
                                      NULL};

int main(int argc, char **argv)
{
    struct lc_ctx ctx = {.cmd = "listcast"};
    char err[1024];
    int status;

    lc_log_init("listcast");
    ctx.cfg = lc_cfg_new();
    if (lc_cfg_args(ctx.cfg, &argc, argv, err, sizeof err) < 0) {
        status = lc_usage(&ctx, "%s", err);
        goto out;
    }
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && strcmp(argv[i], "-") != 0; i++) { /* leading global options */
        if (!strcmp(argv[i], "--json")) {
            ctx.json = 1;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            status = lc_help("listcast");
            goto out;
        } else if (!strcmp(argv[i], "--version")) {
            printf("listcast %s\n", LC_VERSION);
            status = LC_EXIT_OK;
            goto out;
        } else {
            status = lc_usage(&ctx, "unknown option '%.100s' (see listcast --help)", argv[i]);
            goto out;
        }
    }
    if (i >= argc) {
        status = lc_usage(&ctx, "no command given (see listcast --help)");
        goto out;
    }
    char **cargv = argv + i;
    int cargc = argc - i;
    const char *w1 = cargv[0], *w2 = cargc > 1 && cargv[1][0] != '-' ? cargv[1] : NULL;
    if (!lc_word_in(w1, commands)) {
        status = lc_usage(&ctx, "unknown command '%.100s' (see listcast --help)", w1);
        goto out;
    }
    if (!strcmp(w1, "help")) {
        const char *h2 = cargc > 2 ? cargv[2] : NULL;
        status = help_for(w2, w2 ? h2 : NULL);
        goto out;
    }
    if (wants_help(cargc, cargv)) {
        status = help_for(w1, w2);
        goto out;
    }
    if (lc_cfg_finish(ctx.cfg, err, sizeof err) < 0) {
        status = lc_usage(&ctx, "%s", err);
        goto out;
    }
    ctx.cmd = w1;
    if (!strcmp(w1, "up"))
        status = lc_cmd_up(&ctx, cargc, cargv);
    else if (!strcmp(w1, "list"))
        status = lc_cmd_list(&ctx, cargc, cargv);
    else if (!strcmp(w1, "sub"))
        status = lc_cmd_sub(&ctx, cargc, cargv);
    else if (!strcmp(w1, "post"))
        status = lc_cmd_post(&ctx, cargc, cargv);
    else if (!strcmp(w1, "bounce"))
        status = lc_cmd_bounce(&ctx, cargc, cargv);
    else if (!strcmp(w1, "admin"))
        status = lc_cmd_admin(&ctx, cargc, cargv);
    else if (!strcmp(w1, "dkim"))
        status = lc_cmd_dkim(&ctx, cargc, cargv);
    else if (!strcmp(w1, "doctor"))
        status = lc_cmd_doctor(&ctx, cargc, cargv);
    else
        status = cmd_config(&ctx, cargc, cargv);
out:
    if (ctx.rc)
        redisFree(ctx.rc);
    lc_cfg_free(ctx.cfg);
    if (fflush(stdout) != 0 && status == LC_EXIT_OK)
        status = LC_EXIT_REFUSED;
    return status;
}
