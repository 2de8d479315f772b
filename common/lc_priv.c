/* lc_priv: dropping root for run.user (see lc_priv.h). */
#include "lc_priv.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lc_cfg.h"
#include "lc_log.h"

#if defined(__SANITIZE_ADDRESS__)
#define LC_PRIV_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LC_PRIV_SANITIZED 1
#endif
#endif

int lc_priv_target(const struct lc_cfg *cfg, uid_t *uid, gid_t *gid, char *err, size_t errlen)
{
    const char *name = lc_cfg_str(cfg, "run.user");
    if (!*name || geteuid() != 0)
        return 0;
    errno = 0;
    struct passwd *pw = getpwnam(name);
    if (!pw) {
        snprintf(err, errlen, "run.user %.64s: %s", name, errno ? strerror(errno) : "no such user");
        return -1;
    }
    if (pw->pw_uid == 0) {
        snprintf(err, errlen, "run.user %.64s is root (uid 0): name an unprivileged user", name);
        return -1;
    }
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    return 1;
}

int lc_priv_become(uid_t uid, gid_t gid, char *err, size_t errlen)
{
    if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
        snprintf(err, errlen, "cannot become uid %lu gid %lu: %s", (unsigned long)uid, (unsigned long)gid,
                 strerror(errno));
        return -1;
    }
    if (setuid(0) == 0 || geteuid() != uid || getegid() != gid) {
        snprintf(err, errlen, "still privileged after switching to uid %lu", (unsigned long)uid);
        return -1;
    }
#ifdef LC_PRIV_SANITIZED
    /* LeakSanitizer inspects the process from a helper with ptrace, which a process that changed its uid
     * refuses unless it is dumpable again: only in sanitizer builds (tests). */
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
#endif
    return 0;
}

int lc_priv_drop(const struct lc_cfg *cfg, char *err, size_t errlen)
{
    uid_t uid;
    gid_t gid;
    int t = lc_priv_target(cfg, &uid, &gid, err, errlen);
    if (t <= 0)
        return t;
    if (lc_priv_become(uid, gid, err, errlen) < 0)
        return -1;
    lc_info("running as %s (uid %lu gid %lu)", lc_cfg_str(cfg, "run.user"), (unsigned long)uid,
            (unsigned long)gid);
    return 0;
}

int lc_priv_give_like(const char *ref, const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (geteuid() != 0 || stat(ref, &st) < 0 || st.st_uid == 0)
        return 0;
    if (lchown(path, st.st_uid, st.st_gid) < 0) {
        snprintf(err, errlen, "cannot give %.300s to the owner of %.300s (uid %lu): %s", path, ref,
                 (unsigned long)st.st_uid, strerror(errno));
        return -1;
    }
    return 0;
}
