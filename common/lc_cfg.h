/* lc_cfg: the one configuration of a listcast appliance, shared by the CLI and every daemon.
 *
 * File format: one "key = value" a line; '#' starts a comment line; blank lines are ignored; values are taken
 * as written after trimming spaces (no quoting). Every key is in one table (lc_cfg.c), with its default, type and
 * range, and is documented in README.md. --set key=value overrides the file. Unknown keys and bad values are
 * refused with the key named. Lines over 4,096 bytes and files over 1 MiB are refused.
 *
 * Keys (see README "Configuration"): redis.url, state.dir, secret.file, smtp.listen, smtp.hostname,
 * smtp.max_message_size, http.listen, http.public_url, dns.servers, sender.mx_port, sender.concurrency,
 * sender.per_mx, sender.batch_size, sender.relay, log.verbose.
 */
#ifndef LC_CFG_H
#define LC_CFG_H

#include <stddef.h>

struct lc_cfg;

/* lc_cfg_new makes a configuration holding every key's default. */
struct lc_cfg *lc_cfg_new(void);
void lc_cfg_free(struct lc_cfg *c);

/* lc_cfg_load reads FILE; lc_cfg_set applies one "key=value". Both return 0, or -1 with a one-line reason
 * (naming the key, and the file and line where there is one) in err. */
int lc_cfg_load(struct lc_cfg *c, const char *file, char *err, size_t errlen);
int lc_cfg_set(struct lc_cfg *c, const char *assignment, char *err, size_t errlen);

/* lc_cfg_args pulls "--config FILE", "--config=FILE", "--set K=V" and "--set=K=V" out of argv, loads the file
 * first and then applies the --set overrides in order, and compacts argv to what is left (argv[0] kept);
 * *argc is updated. Returns 0, or -1 with a reason in err (a usage error: exit 2). */
int lc_cfg_args(struct lc_cfg *c, int *argc, char **argv, char *err, size_t errlen);

/* lc_cfg_finish fills derived defaults (secret.file from state.dir) and checks cross-key rules.
 * Returns 0 or -1 with a reason in err. Call once after loading, before reading values. */
int lc_cfg_finish(struct lc_cfg *c, char *err, size_t errlen);

/* lc_cfg_daemon is the start of every daemon's main(): it reads --config/--set, accepts -v (debug lines),
 * refuses any other argument, runs lc_cfg_finish, requires redis.url when need_redis is set, and sets the log
 * name and verbosity. On any of these errors it prints "PROG: reason" and the usage line to stderr and exits 2.
 * Returns the finished configuration (the caller frees it). */
struct lc_cfg *lc_cfg_daemon(const char *prog, int argc, char **argv, int need_redis);

/* Getters; the key must be in the table (a typo is a bug: lc_panic). Strings live as long as the config. */
const char *lc_cfg_str(const struct lc_cfg *c, const char *key);
long long lc_cfg_int(const struct lc_cfg *c, const char *key);

/* lc_cfg_argv appends "--set" "key=value" pairs for every key that differs from its default to argv (a
 * NULL-terminated array the caller sized with lc_cfg_count()*2+1 free slots); returns the number of strings
 * added. The strings are owned by the config and stay valid until the key's value changes or the config is
 * freed (calling again is safe). Used by the supervisor to pass its configuration on. */
int lc_cfg_argv(const struct lc_cfg *c, char **argv);
int lc_cfg_count(void);

/* lc_cfg_dump writes every key = value to a stdio stream (for `listcast config`). */
#include <stdio.h>
void lc_cfg_dump(const struct lc_cfg *c, FILE *f);

#endif
