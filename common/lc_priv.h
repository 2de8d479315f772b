/* lc_priv: running as the unprivileged user named by run.user.
 *
 * When a listcast program runs as root and run.user names a user, the daemons drop to that user (its uid, its
 * primary gid, no supplementary groups) once they hold what needs root: listd and the web UI after binding their
 * listening sockets (port 25 or 443), the expander, the sender and the bounce daemon at once. `listcast up` hands
 * the state directory to that user and starts the embedded redis-server as it; `listcast dkim keygen` run as
 * root gives the key it writes to the state directory's owner, so the sender can read it. Root stays only in the supervisor, which does
 * nothing but start and restart the daemons. run.user empty, or not root: nothing changes.
 */
#ifndef LC_PRIV_H
#define LC_PRIV_H

#include <stddef.h>
#include <sys/types.h>

struct lc_cfg;

/* lc_priv_target reports whether the caller should drop privileges: 1 with *uid and *gid set (we are root and
 * run.user names a user other than root), 0 when there is nothing to do, -1 with err when run.user names no
 * user or names root. */
int lc_priv_target(const struct lc_cfg *cfg, uid_t *uid, gid_t *gid, char *err, size_t errlen);

/* lc_priv_become switches the whole process to uid/gid (no supplementary groups) for good and checks that root
 * cannot be regained; 0 or -1 with err. */
int lc_priv_become(uid_t uid, gid_t gid, char *err, size_t errlen);

/* lc_priv_drop is lc_priv_target then, if there is something to do, lc_priv_become, logging the switch; 0 or -1
 * with err. */
int lc_priv_drop(const struct lc_cfg *cfg, char *err, size_t errlen);

/* lc_priv_give_like hands path (a file or directory, not following a symlink) to the owner of ref when we are
 * root and ref belongs to another user: a file root makes in the state dir, which `listcast up` gave to
 * run.user, goes to that user, whether or not this command was told run.user. 0 (also when there is nothing to
 * do) or -1 with err. */
int lc_priv_give_like(const char *ref, const char *path, char *err, size_t errlen);

#endif
