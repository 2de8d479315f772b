/* lc_list: `listcast list create|ls|show|set`: mailing lists in Redis (schema/SCHEMA.md "Lists").
 *
 * Contract: a list is created in one Lua script (atomic: refuse an existing list, INCR lc:seq:list, HSET
 * lc:list:LIST, SADD lc:lists and lc:domains), so two concurrent creates of one list give one list and one
 * refusal. List addresses and owners are normalised with lc_addr_norm. Reading is lc_view (shared with webui).
 * `list set` writes the settings given in one Lua script that refuses a missing list (so it never makes a
 * partial list hash), after checking each value as the web UI does (webui/web_pages.c web_do_list_save: owners
 * and moderators one space between normalised addresses; max_message_size digits; values under 4,096 octets;
 * no CR) and a little more: the owner is normalised (as `list create` does), no LF outside the footer (a
 * subject prefix with a line break would split the header), sizes at most 18 digits (what listd can read).
 * Limits: `list ls` shows at most 100,000 lists.
 */
#include "lc_cli.h"
#include "lc_addr.h"
#include "lc_json.h"
#include "lc_redis.h"
#include "lc_listset.h"
#include "lc_schema.h"
#include "lc_view.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LIST_LS_MAX 100000

static const char *const policies[] = {"open", "members", "moderated", "announce", NULL};

/* KEYS: list hash, list counter, set of lists, set of domains. ARGV: address, policy, owner, created, domain.
 * Returns the new list id, or 0 if the list exists. */
static const char create_lua[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
    "local id = redis.call('INCR', KEYS[2])\n"
    "redis.call('HSET', KEYS[1], 'address', ARGV[1], 'id', id, 'policy', ARGV[2], 'owner', ARGV[3],\n"
    "           'created', ARGV[4])\n"
    "redis.call('SADD', KEYS[3], ARGV[1])\n"
    "redis.call('SADD', KEYS[4], ARGV[5])\n"
    "return id\n";

static const char page_list[] =
    "NAME\n"
    "  listcast list - create, show, change and resume mailing lists\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast list create LIST@DOMAIN [--policy open|members|moderated|announce] [--owner ADDR] [--json]\n"
    "  listcast list ls [--json]\n"
    "  listcast list show LIST@DOMAIN [--json]\n"
    "  listcast list set LIST@DOMAIN [--policy P] [--owner A] [--owners \"A B\"] [--moderator A]...\n"
    "      [--subject-prefix TEXT] [--footer TEXT | --footer-file F] [--max-message-size N]\n"
    "      [--dmarc-mitigation munge|wrap|none] [--json]\n"
    "  listcast list resume LIST@DOMAIN [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  See `listcast list create --help`, `listcast list ls --help`, `listcast list show --help`,\n"
    "  `listcast list set --help` and `listcast list resume --help`.\n"
    LC_HELP_REDIS
    "\n"
    "OPTIONS\n" LC_HELP_COMMON_OPTIONS "\n" LC_HELP_EXIT;

static const char page_create[] =
    "NAME\n"
    "  listcast list create - create a mailing list\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast list create LIST@DOMAIN [--policy POLICY] [--owner ADDR] [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  Creates the list LIST@DOMAIN (lower-cased) and adds DOMAIN to the domains the SMTP daemon accepts\n"
    "  mail for. The list gets the next list id. Creating a list that exists is refused (exit 1) and\n"
    "  changes nothing.\n"
    "  Who may post (POLICY):\n"
    "    open       anyone\n"
    "    members    subscribers only (the default)\n"
    "    moderated  anyone, but every post waits for the owner's approval\n"
    "    announce   the owner only\n"
    LC_HELP_REDIS
    "\n"
    "OPTIONS\n"
    "  -p, --policy POLICY  who may post: open, members, moderated or announce (default: members)\n"
    "  -o, --owner ADDR     the list owner's address (moderation, announce posts, help replies)\n"
    LC_HELP_COMMON_OPTIONS
    "\n" LC_HELP_EXIT
    "  A malformed list or owner address or an unknown policy is a usage error (exit 2).\n"
    "\n"
    "EXAMPLES\n"
    "  listcast list create news@lists.example.org --policy announce --owner editor@example.org\n"
    "  listcast list create talk@lists.example.org --json\n";

static const char page_ls[] =
    "NAME\n"
    "  listcast list ls - show every list\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast list ls [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  Prints one line per list, sorted by address: the address, its posting policy, the number of\n"
    "  subscribers (any status), of active subscribers (those who receive the next post) and of posts.\n"
    "  With --json: an array of objects {address, id, policy, owner, created, subscribers, active, posts}.\n"
    LC_HELP_REDIS
    "\n"
    "OPTIONS\n" LC_HELP_COMMON_OPTIONS "\n" LC_HELP_EXIT
    "\n"
    "EXAMPLES\n"
    "  listcast list ls\n"
    "  listcast list ls --json | python3 -m json.tool\n";

static const char page_show[] =
    "NAME\n"
    "  listcast list show - show one list\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast list show LIST@DOMAIN [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  Prints the list's address, id, posting policy, owner, creation time, the number of subscribers\n"
    "  (any status) and of active ones, and the number of posts. With --json: one object {address, id,\n"
    "  policy, owner, created, subscribers, active, posts}. A list that does not exist is refused (exit 1).\n"
    LC_HELP_REDIS
    "\n"
    "OPTIONS\n" LC_HELP_COMMON_OPTIONS "\n" LC_HELP_EXIT
    "\n"
    "EXAMPLES\n"
    "  listcast list show demo@listcast.test\n";

static const char page_set[] =
    "NAME\n"
    "  listcast list set - change a list's settings\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast list set LIST@DOMAIN [--policy POLICY] [--owner ADDR] [--owners \"ADDR ADDR...\"]\n"
    "      [--moderator ADDR]... [--subject-prefix TEXT] [--footer TEXT | --footer-file FILE]\n"
    "      [--max-message-size N] [--dmarc-mitigation munge|wrap|none] [--list-unsubscribe personal|mailto]\n"
    "      [--bounce-hard N] [--bounce-soft N] [--bounce-threshold N] [--bounce-stale-days N] [--probe 1|0]\n"
    "      [--probe-delay SECONDS] [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  Changes the settings given, and only those, in one atomic write, then prints every setting of the\n"
    "  list. The values are checked as the web UI's list settings page checks them; one bad value refuses\n"
    "  the whole command and nothing changes. An empty value (\"\") clears a setting, or puts one of the\n"
    "  numeric and one-word settings (dmarc_mitigation and after) back to its default.\n"
    "  Settings (fields of the list's Redis hash, schema/SCHEMA.md):\n"
    "    policy            who may post: open, members, moderated or announce\n"
    "    owner             the owner's address (notices, L-owner, moderation)\n"
    "    owners            further owners, addresses separated by spaces or commas; stored normalised\n"
    "                      (lower-cased), one space between\n"
    "    moderators        moderators (post to moderated and announce lists directly, approve held posts):\n"
    "                      every --moderator given, each may hold several addresses; stored as owners\n"
    "    subject_prefix    put before the subject of each post unless it is there already (e.g. \"[news]\")\n"
    "    footer            text appended to each post (plain and MIME-aware)\n"
    "    max_message_size  the largest post in octets; 0 or empty: smtp.max_message_size alone. A smaller value\n"
    "                      is enforced by listd at RCPT (SIZE=) and at the end of DATA/BDAT (552 5.3.4);\n"
    "                      smtp.max_message_size stays the upper limit\n"
    "    dmarc_mitigation  what listd does to a post whose From: domain publishes DMARC p=quarantine or\n"
    "                      p=reject: munge (default: From: \"Name via LIST\" <LIST@DOMAIN>, Reply-To: the\n"
    "                      poster unless the post has a Reply-To), wrap (the post travels as an attachment,\n"
    "                      message/rfc822, of a message from the list) or none (From: kept)\n"
    "    list_unsubscribe  the List-Unsubscribe header of the copies: personal (default: a one-click link and\n"
    "                      mailto address per subscriber, RFC 8058, with List-Unsubscribe-Post; with DKIM each\n"
    "                      copy is signed on its own) or mailto (<mailto:LIST-unsubscribe@DOMAIN> in every\n"
    "                      copy, no one-click: with DKIM the post is signed once and the signature shared)\n"
    "    bounce_hard       bounce score a hard bounce adds (default 1; 0 to 1000)\n"
    "    bounce_soft       bounce score a soft bounce adds (default 0.5; 0 to 1000)\n"
    "    bounce_threshold  the score at which delivery to a subscriber is disabled (default 5)\n"
    "    bounce_stale_days a score whose last bounce is older than this many days starts again from 0\n"
    "                      (default 7; 0: never)\n"
    "    probe             1 (default): a subscriber disabled by bounces gets a probe (delivered: re-enabled;\n"
    "                      bounced: unsubscribed); 0: no probes, disabled subscribers stay disabled\n"
    "    probe_delay       seconds from disabling a subscriber to sending its probe (default 900; at most\n"
    "                      2592000, 30 days)\n"
    LC_HELP_REDIS
    "\n"
    "OPTIONS\n"
    "  -p, --policy POLICY        open, members, moderated or announce\n"
    "  -o, --owner ADDR           the owner (\"\" for none)\n"
    "  --owners \"ADDR ...\"        further owners (replaces them; \"\" for none)\n"
    "  --moderator ADDR           a moderator; repeat for more (replaces the moderators; \"\" for none)\n"
    "  --subject-prefix TEXT      the subject prefix (\"\" for none)\n"
    "  --footer TEXT              the footer (\"\" for none)\n"
    "  --footer-file FILE         the footer, read from FILE (\"-\": stdin)\n"
    "  --max-message-size N       octets, a decimal number (0 or \"\": the appliance's limit)\n"
    "  --dmarc-mitigation MODE    munge, wrap or none\n"
    "  --list-unsubscribe MODE    personal or mailto\n"
    "  --bounce-hard N, --bounce-soft N, --bounce-threshold N, --bounce-stale-days N\n"
    "                             decimal numbers (\"\": the default)\n"
    "  --probe 1|0                probes on or off\n"
    "  --probe-delay SECONDS      a whole number of seconds\n"
    LC_HELP_COMMON_OPTIONS
    "\n" LC_HELP_EXIT
    "  A malformed list or setting address, an unknown policy, mitigation or List-Unsubscribe mode, a size or\n"
    "  bounce setting that is not a number in its range, a value over 4,095 octets, a line break in anything but the footer, --footer with\n"
    "  --footer-file, an unreadable footer file or no setting at all are usage errors (exit 2); a list that does\n"
    "  not exist is refused (exit 1).\n"
    "\n"
    "EXAMPLES\n"
    "  listcast list set news@lists.example.org --policy moderated --moderator ed@example.org \\\n"
    "      --moderator copy@example.org\n"
    "  listcast list set news@lists.example.org --subject-prefix '[news]' --footer-file footer.txt\n"
    "  listcast list set news@lists.example.org --max-message-size 1048576 --dmarc-mitigation wrap --json\n"
    "  listcast list set news@lists.example.org --list-unsubscribe mailto\n"
    "  listcast list set news@lists.example.org --bounce-threshold 3 --probe-delay 3600\n";

const struct lc_page lc_pages_list[] = {
    {"list", page_list},
    {"list create", page_create},
    {"list ls", page_ls},
    {"list show", page_show},
    {"list set", page_set},
    {NULL, NULL},
};

int lc_list_ensure(redisContext *rc, const char *list, const char *policy, const char *owner, char *err,
                   size_t errlen)
{
    char klist[LC_KEY_MAX], created[32];
    const char *domain = lc_addr_domain(list);
    if (lc_key_list(klist, sizeof klist, list) < 0) {
        snprintf(err, errlen, "list address too long");
        return -1;
    }
    snprintf(created, sizeof created, "%lld", (long long)time(NULL));
    const char *argv[] = {"EVAL", create_lua, "4", klist, LC_K_SEQ_LIST, LC_K_LISTS, LC_K_DOMAINS,
                          list, policy, owner, created, domain};
    redisReply *r = lc_redis_cmdv(rc, (int)(sizeof argv / sizeof argv[0]), argv, NULL, err, errlen);
    if (!r)
        return -1;
    int created_new = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
    freeReplyObject(r);
    return created_new;
}

static void print_list_text(struct lc_ctx *ctx, const struct lc_list_view *v)
{
    char when[64];
    lc_fmt_time(v->created, when, sizeof when);
    printf("list:         %s\n", v->address);
    printf("id:           %lld\n", v->id);
    printf("policy:       %s\n", v->policy);
    printf("owner:        %s\n", *v->owner ? v->owner : "(none)");
    printf("created:      %s\n", when);
    printf("subscribers:  %lld (%lld active)\n", v->members, v->active);
    printf("posts:        %lld\n", v->posts);
    double warn, pause;
    if (lc_complaint_rates(ctx, &warn, &pause) == 0)
        lc_view_list_text_rate(v, warn, pause);
}

/* show_one loads and prints one list; used by show and after create. */
static int show_one(struct lc_ctx *ctx, const char *list)
{
    char err[512];
    struct lc_list_view v;
    int got = lc_view_list(ctx->rc, list, &v, err, sizeof err);
    if (got < 0)
        return lc_refused(ctx, "%s", err);
    if (got == 0)
        return lc_refused(ctx, "no such list: %s", list);
    int status = LC_EXIT_OK;
    if (ctx->json) {
        struct lc_json *j = lc_json_out();
        lc_view_list_json(j, &v);
        status = lc_json_done(j, LC_EXIT_OK);
    } else {
        print_list_text(ctx, &v);
    }
    lc_view_list_clear(&v);
    return status;
}

static int cmd_create(struct lc_ctx *ctx, int argc, char **argv)
{
    static const struct lc_opt opts[] = {{"policy", 'p', 1, 1}, {"owner", 'o', 1, 2}, {NULL, 0, 0, 0}};
    const char *val[2] = {"members", NULL}, *list_arg = NULL; /* --policy, --owner */
    int status = lc_args(ctx, argc, argv, opts, val, &list_arg, 1);
    if (status >= 0)
        return status;
    const char *policy = val[0], *owner_arg = val[1];
    if (!list_arg)
        return lc_usage(ctx, "list create: missing LIST@DOMAIN (see listcast list create --help)");
    if (!lc_word_in(policy, policies))
        return lc_usage(ctx, "list create: unknown policy '%.100s' (open, members, moderated or announce)",
                        policy);
    char list[LC_ADDR_MAX + 1], owner[LC_ADDR_MAX + 1] = "";
    if (lc_norm_list(ctx, list_arg, list) < 0)
        return LC_EXIT_USAGE;
    const char *why = "invalid";
    if (owner_arg && lc_addr_norm(owner_arg, strlen(owner_arg), owner, &why) < 0)
        return lc_usage(ctx, "list create: invalid owner address '%.200s': %s", owner_arg, why);
    redisContext *rc = lc_redis(ctx);
    if (!rc)
        return LC_EXIT_REFUSED;
    char err[512];
    int r = lc_list_ensure(rc, list, policy, owner, err, sizeof err);
    if (r < 0)
        return lc_refused(ctx, "%s", err);
    if (r == 0)
        return lc_refused(ctx, "list %s exists", list);
    if (ctx->json)
        return show_one(ctx, list);
    printf("created list %s (policy %s%s%s)\n", list, policy, *owner ? ", owner " : "", owner);
    return LC_EXIT_OK;
}

/* ---- list set ------------------------------------------------------------------------------------------------ */

#define SETTING_MAX 4096 /* octets of one setting value, the web UI's limit (WEB_SETTING_MAX) */
#define NFREE 7          /* the entries of free_fields */
#define NSETTINGS (NFREE + LC_LISTSET_MAX)

/* The address-valued and free-text settings `list set` writes, in the order they are shown; then come the
 * numeric and one-word settings of schema/lc_listset.c, in the table's order. */
static const char *const free_fields[] = {"policy", "owner", "owners", "moderators", "subject_prefix", "footer",
                                          "max_message_size", NULL};

/* KEYS: the list hash. ARGV: field value pairs; a field written "-FIELD" is deleted (a table setting put back
 * to its default). Changes them only if the list exists: 1, else 0. */
static const char set_lua[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
    "for i = 1, #ARGV, 2 do\n"
    "  local f = ARGV[i]\n"
    "  if string.sub(f, 1, 1) == '-' then redis.call('HDEL', KEYS[1], string.sub(f, 2))\n"
    "  else redis.call('HSET', KEYS[1], f, ARGV[i + 1]) end\n"
    "end\n"
    "return 1\n";

/* set_field returns the i-th field `list set` shows, or NULL past the last. */
static const char *set_field(int i)
{
    if (i < NFREE)
        return free_fields[i];
    return lc_listsets[i - NFREE].name;
}

/* addr_list normalises addresses separated by spaces or commas into one space between normalised addresses
 * (the web UI's form, webui/web_pages.c); -1 with the bad address in bad if one is invalid or too long. */
static int addr_list(const char *s, char *out, size_t outlen, char *bad, size_t badlen)
{
    size_t k = 0;
    out[0] = 0;
    for (const char *p = s; *p;) {
        p += strspn(p, ", \t\n");
        size_t n = strcspn(p, ", \t\n");
        if (!n)
            break;
        char a[LC_ADDR_MAX + 1];
        const char *why;
        if (lc_addr_norm(p, n, a, &why) < 0) {
            snprintf(bad, badlen, "'%.*s': %s", (int)(n > 200 ? 200 : n), p, why);
            return -1;
        }
        if (k + strlen(a) + 2 >= outlen) {
            snprintf(bad, badlen, "the addresses are longer than %zu octets", outlen - 1);
            return -1;
        }
        k += (size_t)snprintf(out + k, outlen - k, "%s%s", k ? " " : "", a);
        p += n;
    }
    return 0;
}

/* read_footer reads FILE ("-": stdin) into out; -1 with why. */
static int read_footer(const char *path, char *out, size_t outlen, char *why, size_t whylen)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        snprintf(why, whylen, "cannot read footer file '%.200s': %s", path, strerror(errno));
        return -1;
    }
    size_t n = fread(out, 1, outlen, f);
    int err = ferror(f);
    if (f != stdin)
        fclose(f);
    if (err) {
        snprintf(why, whylen, "cannot read footer file '%.200s'", path);
        return -1;
    }
    if (n >= outlen) {
        snprintf(why, whylen, "footer file '%.200s' is longer than %zu octets", path, outlen - 1);
        return -1;
    }
    if (memchr(out, 0, n)) {
        snprintf(why, whylen, "footer file '%.200s' holds a NUL octet", path);
        return -1;
    }
    out[n] = 0;
    return 0;
}

/* show_settings prints every setting of the list (after a change). */
static int show_settings(struct lc_ctx *ctx, const char *list, const char *const *changed, int nchanged)
{
    char k[LC_KEY_MAX], err[512];
    lc_key_list(k, sizeof k, list);
    const char *argv[2 + NSETTINGS] = {"HMGET", k};
    int argc = 2;
    for (int i = 0; set_field(i); i++)
        argv[argc++] = set_field(i);
    redisReply *r = lc_redis_cmdv(ctx->rc, argc, argv, NULL, err, sizeof err);
    if (!r)
        return lc_refused(ctx, "%s", err);
    if (r->type != REDIS_REPLY_ARRAY || r->elements != (size_t)(argc - 2)) {
        freeReplyObject(r);
        return lc_refused(ctx, "redis: HMGET: unexpected reply");
    }
    const char *v[NSETTINGS];
    for (size_t i = 0; i < r->elements; i++) {
        v[i] = r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : "";
        if (i >= NFREE && !*v[i]) /* a table setting: the value in effect */
            v[i] = lc_listsets[i - NFREE].def;
    }
    int status = LC_EXIT_OK;
    if (ctx->json) {
        struct lc_json *j = lc_json_out();
        lc_json_obj(j);
        lc_json_kstr(j, "address", list);
        for (int i = 0; set_field(i); i++)
            lc_json_kstr(j, set_field(i), v[i]);
        lc_json_key(j, "changed");
        lc_json_arr(j);
        for (int i = 0; i < nchanged; i++)
            lc_json_str(j, changed[i]);
        lc_json_end(j);
        lc_json_end(j);
        status = lc_json_done(j, LC_EXIT_OK);
    } else {
        printf("list:              %s\n", list);
        for (int i = 0; set_field(i); i++) {
            const char *val = v[i], *f = set_field(i);
            char buf[64];
            if (!strcmp(f, "max_message_size") && (!*val || !strcmp(val, "0")))
                val = "(the appliance's smtp.max_message_size)";
            else if (!strcmp(f, "footer") && strchr(val, '\n')) {
                int lines = 0;
                for (const char *p = val; *p; p++)
                    lines += *p == '\n';
                snprintf(buf, sizeof buf, "(%d lines, %zu octets)", lines + (val[strlen(val) - 1] != '\n'),
                         strlen(val));
                val = buf;
            } else if (!*val)
                val = "(none)";
            int pad = 18 - (int)strlen(f);
            printf("%s:%*s%s\n", f, pad > 0 ? pad : 1, "", val);
        }
    }
    freeReplyObject(r);
    return status;
}

enum { S_POLICY = 1, S_OWNER, S_OWNERS, S_MODERATOR, S_PREFIX, S_FOOTER, S_FOOTER_FILE, S_MAXSIZE, S_TABLE };

static int cmd_set(struct lc_ctx *ctx, int argc, char **argv)
{
    static const struct lc_opt fixed[] = {
        {"policy", 'p', 1, S_POLICY},          {"owner", 'o', 1, S_OWNER},
        {"owners", 0, 1, S_OWNERS},            {"moderator", 0, 1, S_MODERATOR},
        {"subject-prefix", 0, 1, S_PREFIX},    {"footer", 0, 1, S_FOOTER},
        {"footer-file", 0, 1, S_FOOTER_FILE},  {"max-message-size", 0, 1, S_MAXSIZE},
    };
    /* then one option per table setting (schema/lc_listset.c), e.g. --bounce-threshold: id S_TABLE + index */
    struct lc_opt opts[sizeof fixed / sizeof fixed[0] + LC_LISTSET_MAX + 1];
    int nopt = 0;
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        opts[nopt++] = fixed[i];
    for (int i = 0; lc_listsets[i].name && i < LC_LISTSET_MAX; i++)
        opts[nopt++] = (struct lc_opt){lc_listsets[i].opt + 2, 0, 1, S_TABLE + i};
    opts[nopt] = (struct lc_opt){NULL, 0, 0, 0};
    const char *val[S_TABLE + LC_LISTSET_MAX] = {NULL}, *list_arg = NULL;
    static char mods[SETTING_MAX * 2];
    int nmods = 0;
    size_t mlen = 0;
    struct lc_optstate st;
    int o, status;
    lc_opt_init(&st, argc, argv);
    while ((o = lc_opt_next(ctx, &st, opts, &status)) != -1) {
        if (o == -2)
            return status;
        if (o == 0) {
            if (list_arg)
                return lc_usage(ctx, "%s: unexpected argument '%.200s'", ctx->cmd, st.arg);
            list_arg = st.arg;
        } else if (o == S_MODERATOR) { /* repeated: they add up */
            size_t n = strlen(st.arg);
            if (mlen + n + 2 > sizeof mods)
                return lc_usage(ctx, "%s: the moderators are longer than %d octets", ctx->cmd, SETTING_MAX - 1);
            mlen += (size_t)snprintf(mods + mlen, sizeof mods - mlen, "%s%s", mlen ? " " : "", st.arg);
            nmods++;
        } else {
            val[o] = st.arg;
        }
    }
    if (!list_arg)
        return lc_usage(ctx, "list set: missing LIST@DOMAIN (see listcast list set --help)");
    char list[LC_ADDR_MAX + 1];
    if (lc_norm_list(ctx, list_arg, list) < 0)
        return LC_EXIT_USAGE;
    if (val[S_FOOTER] && val[S_FOOTER_FILE])
        return lc_usage(ctx, "list set: give --footer or --footer-file, not both");

    /* check every value; any bad one refuses the whole command */
    static char owner[LC_ADDR_MAX + 1], owners[SETTING_MAX], moderators[SETTING_MAX], footer[SETTING_MAX];
    char why[512];
    const char *hset[2 * NSETTINGS];
    const char *changed[NSETTINGS];
    int nh = 0, nc = 0;
    if (val[S_POLICY]) {
        if (!lc_word_in(val[S_POLICY], policies))
            return lc_usage(ctx, "list set: unknown policy '%.100s' (open, members, moderated or announce)",
                            val[S_POLICY]);
        hset[nh++] = "policy", hset[nh++] = val[S_POLICY], changed[nc++] = "policy";
    }
    if (val[S_OWNER]) {
        const char *w = "invalid";
        owner[0] = 0;
        if (*val[S_OWNER] && lc_addr_norm(val[S_OWNER], strlen(val[S_OWNER]), owner, &w) < 0)
            return lc_usage(ctx, "list set: invalid owner address '%.200s': %s", val[S_OWNER], w);
        hset[nh++] = "owner", hset[nh++] = owner, changed[nc++] = "owner";
    }
    if (val[S_OWNERS]) {
        if (strlen(val[S_OWNERS]) >= SETTING_MAX)
            return lc_usage(ctx, "list set: --owners is longer than %d octets", SETTING_MAX - 1);
        if (addr_list(val[S_OWNERS], owners, sizeof owners, why, sizeof why) < 0)
            return lc_usage(ctx, "list set: invalid address in --owners: %s", why);
        hset[nh++] = "owners", hset[nh++] = owners, changed[nc++] = "owners";
    }
    if (nmods) {
        if (mlen >= SETTING_MAX)
            return lc_usage(ctx, "list set: the moderators are longer than %d octets", SETTING_MAX - 1);
        if (addr_list(mods, moderators, sizeof moderators, why, sizeof why) < 0)
            return lc_usage(ctx, "list set: invalid --moderator address: %s", why);
        hset[nh++] = "moderators", hset[nh++] = moderators, changed[nc++] = "moderators";
    }
    if (val[S_PREFIX]) {
        if (strlen(val[S_PREFIX]) >= SETTING_MAX)
            return lc_usage(ctx, "list set: --subject-prefix is longer than %d octets", SETTING_MAX - 1);
        if (strpbrk(val[S_PREFIX], "\r\n"))
            return lc_usage(ctx, "list set: --subject-prefix holds a line break");
        hset[nh++] = "subject_prefix", hset[nh++] = val[S_PREFIX], changed[nc++] = "subject_prefix";
    }
    if (val[S_FOOTER]) {
        if (strlen(val[S_FOOTER]) >= SETTING_MAX)
            return lc_usage(ctx, "list set: --footer is longer than %d octets", SETTING_MAX - 1);
        hset[nh++] = "footer", hset[nh++] = val[S_FOOTER], changed[nc++] = "footer";
    } else if (val[S_FOOTER_FILE]) {
        if (read_footer(val[S_FOOTER_FILE], footer, sizeof footer, why, sizeof why) < 0)
            return lc_usage(ctx, "list set: %s", why);
        hset[nh++] = "footer", hset[nh++] = footer, changed[nc++] = "footer";
    }
    if (val[S_MAXSIZE]) {
        const char *v = val[S_MAXSIZE];
        if (strspn(v, "0123456789") != strlen(v) || strlen(v) > 18)
            return lc_usage(ctx, "list set: --max-message-size '%.100s' is not a number of octets (0 to "
                                 "999999999999999999, or \"\")", v);
        hset[nh++] = "max_message_size", hset[nh++] = v, changed[nc++] = "max_message_size";
    }
    static char tval[LC_LISTSET_MAX][LC_LISTSET_VAL], tdel[LC_LISTSET_MAX][LC_LISTSET_VAL + 1];
    for (int i = 0; lc_listsets[i].name && i < LC_LISTSET_MAX; i++) {
        const struct lc_listset *ls = &lc_listsets[i];
        if (!val[S_TABLE + i])
            continue;
        /* checked by the table the web UI uses too; "" puts the setting back to its default */
        if (lc_listset_check(ls, val[S_TABLE + i], tval[i], sizeof tval[i], why, sizeof why) < 0)
            return lc_usage(ctx, "list set: %s (%s)", why, ls->opt);
        if (tval[i][0]) {
            hset[nh++] = ls->name, hset[nh++] = tval[i];
        } else {
            snprintf(tdel[i], sizeof tdel[i], "-%s", ls->name);
            hset[nh++] = tdel[i], hset[nh++] = "";
        }
        changed[nc++] = ls->name;
    }
    if (nh == 0)
        return lc_usage(ctx, "list set: nothing to set (see listcast list set --help)");

    redisContext *rc = lc_redis(ctx);
    if (!rc)
        return LC_EXIT_REFUSED;
    char klist[LC_KEY_MAX], err[512];
    if (lc_key_list(klist, sizeof klist, list) < 0)
        return lc_usage(ctx, "list set: list address too long");
    const char *ev[4 + 2 * NSETTINGS] = {"EVAL", set_lua, "1", klist};
    for (int i = 0; i < nh; i++)
        ev[4 + i] = hset[i];
    redisReply *r = lc_redis_cmdv(rc, 4 + nh, ev, NULL, err, sizeof err);
    if (!r)
        return lc_refused(ctx, "%s", err);
    int ok = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    int exists = r->type == REDIS_REPLY_INTEGER;
    freeReplyObject(r);
    if (!exists)
        return lc_refused(ctx, "redis: unexpected reply to the settings script");
    if (!ok)
        return lc_refused(ctx, "no such list: %s", list);
    return show_settings(ctx, list, changed, nc);
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
    struct lc_list_view *v;
    size_t total;
    long n = lc_view_lists(rc, LIST_LS_MAX, &v, &total, err, sizeof err);
    if (n < 0)
        return lc_refused(ctx, "%s", err);
    status = LC_EXIT_OK;
    if (ctx->json) {
        struct lc_json *j = lc_json_out();
        lc_json_arr(j);
        for (long i = 0; i < n; i++)
            lc_view_list_json(j, &v[i]);
        lc_json_end(j);
        status = lc_json_done(j, LC_EXIT_OK);
    } else if (n == 0) {
        printf("no lists (create one with: listcast list create LIST@DOMAIN)\n");
    } else {
        int w = 4;
        for (long i = 0; i < n; i++)
            if ((int)strlen(v[i].address) > w)
                w = (int)strlen(v[i].address);
        printf("%-*s  %-9s  %11s  %9s  %7s\n", w, "LIST", "POLICY", "SUBSCRIBERS", "ACTIVE", "POSTS");
        for (long i = 0; i < n; i++)
            printf("%-*s  %-9s  %11lld  %9lld  %7lld\n", w, v[i].address, v[i].policy, v[i].members,
                   v[i].active, v[i].posts);
        if ((size_t)n < total)
            printf("(%zu more lists not shown)\n", total - (size_t)n);
    }
    lc_view_lists_free(v, (size_t)n);
    return status;
}

static int cmd_show(struct lc_ctx *ctx, int argc, char **argv)
{
    const char *list_arg = NULL;
    int status = lc_args(ctx, argc, argv, NULL, NULL, &list_arg, 1);
    if (status >= 0)
        return status;
    if (!list_arg)
        return lc_usage(ctx, "list show: missing LIST@DOMAIN (see listcast list show --help)");
    char list[LC_ADDR_MAX + 1];
    if (lc_norm_list(ctx, list_arg, list) < 0)
        return LC_EXIT_USAGE;
    if (!lc_redis(ctx))
        return LC_EXIT_REFUSED;
    return show_one(ctx, list);
}

int lc_cmd_list(struct lc_ctx *ctx, int argc, char **argv)
{
    static const struct lc_subcmd subs[] = {
        {"list create", cmd_create},
        {"list ls", cmd_ls},
        {"list show", cmd_show},
        {"list set", cmd_set},
        {"list resume", lc_list_resume},
        {NULL, NULL},
    };
    if (argc >= 2 && !strcmp(argv[1], "--json")) /* `listcast list --json ls` is not a thing: say what is */
        return lc_usage(ctx, "list: put --json after the subcommand (listcast list ls --json)");
    return lc_dispatch(ctx, argc, argv, subs, "create, ls, show, set or resume");
}
