/* lc_list: `listcast list create|ls|show`: mailing lists in Redis (schema/SCHEMA.md "Lists").
 *
 * Contract: a list is created in one Lua script (atomic: refuse an existing list, INCR lc:seq:list, HSET
 * lc:list:LIST, SADD lc:lists and lc:domains), so two concurrent creates of one list give one list and one
 * refusal. List addresses and owners are normalised with lc_addr_norm. Reading is lc_view (shared with webui).
 * Limits: `list ls` shows at most 100,000 lists.
 */
#include "lc_cli.h"
#include "lc_addr.h"
#include "lc_json.h"
#include "lc_redis.h"
#include "lc_schema.h"
#include "lc_view.h"

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
    "  listcast list - create and show mailing lists\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast list create LIST@DOMAIN [--policy open|members|moderated|announce] [--owner ADDR] [--json]\n"
    "  listcast list ls [--json]\n"
    "  listcast list show LIST@DOMAIN [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  See `listcast list create --help`, `listcast list ls --help` and `listcast list show --help`.\n"
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

const struct lc_page lc_pages_list[] = {
    {"list", page_list},
    {"list create", page_create},
    {"list ls", page_ls},
    {"list show", page_show},
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

static void print_list_text(const struct lc_list_view *v)
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
        print_list_text(&v);
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
        {NULL, NULL},
    };
    if (argc >= 2 && !strcmp(argv[1], "--json")) /* `listcast list --json ls` is not a thing: say what is */
        return lc_usage(ctx, "list: put --json after the subcommand (listcast list ls --json)");
    return lc_dispatch(ctx, argc, argv, subs, "create, ls or show");
}
