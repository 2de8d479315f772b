/* lc_up: `listcast up`: run the whole appliance in the foreground and supervise it.
 *
 * Contract: creates state.dir and the secret, takes an exclusive lock on STATE/listcast.lock (one supervisor
 * per state dir), starts an embedded redis-server when redis.url is empty (generated config: unix socket
 * STATE/redis.sock only, AOF with appendfsync always, no RDB snapshots) and waits for PING, then starts the
 * daemons found at <dir of this executable>/../libexec/listcast/, passing the configuration on as --set
 * arguments plus redis.url. Each child runs in its own process group (a terminal Ctrl-C reaches only the
 * supervisor, which then stops everything in order) and dies with the supervisor (PR_SET_PDEATHSIG).
 * A child that exits is restarted after a backoff of 1 s doubling to 30 s, reset after 60 s of uptime.
 * SIGINT/SIGTERM/SIGHUP: SIGTERM to every daemon, wait up to 10 s, SIGKILL the rest; then the same for
 * redis-server (which fsyncs its AOF on SIGTERM); exit 0. A second signal while stopping kills at once.
 * Signals are taken synchronously (blocked, sigtimedwait), so there are no handlers and no races.
 * Limits: one redis-server and UP_NDAEMONS daemons; the state dir path must fit a unix socket path.
 */
#include "lc_cli.h"
#include "lc_json.h"
#include "lc_redis.h"
#include "lc_priv.h"
#include "lc_secret.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define UP_NDAEMONS 5
#define UP_REDIS_WAIT_MS 10000      /* PING must answer within this */
#define UP_REDIS_LOADING_MS 120000  /* ... unless Redis says it is loading its AOF */
#define UP_STOP_WAIT_MS 10000
#define UP_BACKOFF_MAX 30
#define UP_BACKOFF_RESET_MS 60000

#define DEMO_LIST "demo@listcast.test"
#define DEMO_OWNER "owner@listcast.test"

static const char *const daemon_names[UP_NDAEMONS] = {
    "listcast-listd", "listcast-expander", "listcast-sender", "listcast-bounce", "listcast-webui",
};

struct child {
    const char *name;
    char path[PATH_MAX];
    char **argv;          /* NULL-terminated; owned (strings: see up_free) */
    pid_t pid;            /* 0: not running */
    int64_t started;      /* monotonic ms */
    int64_t restart_at;   /* monotonic ms; 0: no restart scheduled */
    int backoff;          /* seconds before the next restart */
};

struct up {
    struct lc_ctx *ctx;
    int demo;
    int embedded;
    char exe[PATH_MAX];      /* this executable, for the instructions we print */
    char state[PATH_MAX];
    char url[PATH_MAX + 32];
    char sock[PATH_MAX];
    char conf[PATH_MAX];
    char log[PATH_MAX];
    char *kv_state, *kv_url;  /* "state.dir=..." and "redis.url=..." for children */
    char **tmpl;              /* the --set arguments every daemon gets */
    struct child redis;
    struct child d[UP_NDAEMONS];
    sigset_t sigs, oldmask;
    pid_t self;
    int lockfd;
    int drop;                 /* run.user applies: redis-server runs as run_uid/run_gid, state.dir is theirs */
    uid_t run_uid;
    gid_t run_gid;
};

static const char page_up[] =
    "NAME\n"
    "  listcast up - run the appliance in the foreground\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast up [--config FILE] [--set KEY=VALUE]... [--demo] [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  Runs the whole appliance until it is stopped with Ctrl-C (SIGINT), SIGTERM or SIGHUP:\n"
    "  - creates state.dir (mode 0700) and the secret file (secret.file, default STATE.DIR/secret);\n"
    "  - when redis.url is empty, starts an embedded redis-server (redis-server from PATH, else\n"
    "    /usr/bin/redis-server) with a generated STATE.DIR/redis.conf: data in STATE.DIR/redis, a unix\n"
    "    socket STATE.DIR/redis.sock (mode 700) and no TCP port, appendonly yes with appendfsync always\n"
    "    (a post is on disk before it is accepted), no RDB snapshots; its log is STATE.DIR/redis.log.\n"
    "    The other listcast commands find this Redis by the same state.dir;\n"
    "  - starts the daemons listcast-listd (SMTP on smtp.listen), listcast-expander, listcast-sender,\n"
    "    listcast-bounce and listcast-webui (admin web UI on http.listen) from\n"
    "    <directory of listcast>/../libexec/listcast/, passing the configuration on as --set arguments;\n"
    "  - started as root with run.user set (a user other than root): hands state.dir and all in it to that\n"
    "    user and starts redis-server as it; each daemon switches to it once its sockets are bound (listd\n"
    "    after binding smtp.listen, which may be port 25), so only this supervisor keeps root. A run.user\n"
    "    that names no user, or root, or that cannot reach state.dir (a parent directory closed to it),\n"
    "    refuses the start (exit 1);\n"
    "  - restarts a daemon that exits, after 1 s, doubling to at most 30 s while it keeps failing (the\n"
    "    delay is reset once it has run for 60 s), and logs each exit and restart on stderr;\n"
    "  - on Ctrl-C or SIGTERM, stops the daemons (SIGTERM, then SIGKILL after 10 s), then Redis, and\n"
    "    exits 0. A second Ctrl-C kills what is left at once.\n"
    "  Once everything is started it prints where it listens, e.g.\n"
    "    listcast: SMTP on 127.0.0.1:2525, admin web on http://127.0.0.1:8025/, state in /var/lib/listcast\n"
    "  Only one `listcast up` runs per state dir (STATE.DIR/listcast.lock).\n"
    "\n"
    "OPTIONS\n"
    "  --demo             after Redis is up, create (if missing) the list demo@listcast.test (policy open,\n"
    "                     owner owner@listcast.test) with the subscribers alice@demo.test, bob@demo.test\n"
    "                     and carol@demo.test, and print how to post to it\n"
    LC_HELP_COMMON_OPTIONS
    "                     (with --json, the \"where it listens\" line is one JSON object on stdout)\n"
    "\n"
    "EXIT STATUS\n"
    "  0  stopped by a signal after a clean shutdown\n"
    "  1  could not start: state dir not writable or in use by another `listcast up`, a daemon missing\n"
    "     from libexec/listcast, redis-server missing or not answering PING within 10 s\n"
    "  2  usage error (unknown option, unknown configuration key or bad value)\n"
    "\n"
    "EXAMPLES\n"
    "  listcast up --set state.dir=$HOME/listcast\n"
    "  listcast up --demo --set state.dir=$PWD/demo-state --set sender.relay=127.0.0.1:2526\n"
    "  listcast up --config /etc/listcast.conf --set redis.url=redis://127.0.0.1:6379\n";

const struct lc_page lc_pages_up[] = {
    {"up", page_up},
    {NULL, NULL},
};

/* pathf formats into a fixed buffer (paths, small strings); returns 0, or -1 if the result was cut. */
static int pathf(char *out, size_t outlen, const char *fmt, ...) LC_PRINTF(3, 4);
static int pathf(char *out, size_t outlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, outlen, fmt, ap);
    va_end(ap);
    return (n < 0 || (size_t)n >= outlen) ? -1 : 0;
}

/* seterr writes a one-line reason for the caller. */
static void seterr(char *err, size_t errlen, const char *fmt, ...) LC_PRINTF(3, 4);
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* sig_name names the stop signals for the log. */
static const char *sig_name(int sig)
{
    return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : sig == SIGHUP ? "SIGHUP" : "a signal";
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* mkdirs creates path and its missing parents (parents 0755, path itself 0700). Returns 0 or -1 (errno). */
static int mkdirs(const char *path)
{
    char tmp[PATH_MAX];
    if (pathf(tmp, sizeof tmp, "%s", path) < 0) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
        return -1;
    struct stat sb;
    if (stat(tmp, &sb) < 0)
        return -1;
    if (!S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

/* find_redis_server looks for redis-server in PATH, then /usr/bin. */
static int find_redis_server(char *out, size_t outlen)
{
    const char *path = getenv("PATH");
    if (path) {
        char *copy = lc_strdup(path), *save = NULL;
        for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
            if (!*dir)
                continue;
            if (pathf(out, outlen, "%s/redis-server", dir) == 0 && access(out, X_OK) == 0) {
                free(copy);
                return 0;
            }
        }
        free(copy);
    }
    pathf(out, outlen, "/usr/bin/redis-server");
    return access(out, X_OK);
}

/* config_safe: the path can be written as a double-quoted redis.conf string without escapes. */
static int config_safe(const char *s)
{
    for (; *s; s++)
        if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

static int write_redis_conf(struct up *u, char *err, size_t errlen)
{
    char dir[PATH_MAX];
    pathf(dir, sizeof dir, "%s/redis", u->state);
    if (mkdirs(dir) < 0) {
        seterr(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    char tmp[PATH_MAX + 8];
    pathf(tmp, sizeof tmp, "%s.tmp", u->conf);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        seterr(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    fprintf(f,
            "# Generated by `listcast up` at every start: changes here are overwritten.\n"
            "# To use a Redis of your own, set redis.url instead.\n"
            "daemonize no\n"
            "port 0\n"
            "unixsocket \"%s\"\n"
            "unixsocketperm 700\n"
            "dir \"%s\"\n"
            "appendonly yes\n"
            "appendfsync always\n"
            "save \"\"\n"
            "logfile \"%s\"\n"
            "loglevel notice\n"
            "always-show-logo no\n",
            u->sock, dir, u->log);
    if (fclose(f) != 0 || rename(tmp, u->conf) < 0) {
        seterr(err, errlen, "cannot write %s: %s", u->conf, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* spawn forks and execs c; the child gets its own process group, dies with us, and starts with default
 * signal dispositions, an empty signal mask and /dev/null as stdin. */
static int spawn(struct up *u, struct child *c)
{
    pid_t pid = fork();
    if (pid < 0) {
        lc_warn("daemon=%s fork failed: %s", c->name, strerror(errno));
        return -1;
    }
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != u->self)
            _exit(0); /* the supervisor is already gone */
        int fd = open("/dev/null", O_RDONLY);
        if (fd >= 0 && fd != 0) {
            dup2(fd, 0);
            close(fd);
        }
        signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        char perr[256];
        if (c == &u->redis && u->drop && lc_priv_become(u->run_uid, u->run_gid, perr, sizeof perr) < 0) {
            fprintf(stderr, "listcast: redis-server: %s\n", perr); /* (the daemons drop root themselves) */
            _exit(127);
        }
        execv(c->path, c->argv);
        fprintf(stderr, "listcast: cannot run %s: %s\n", c->path, strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid); /* also here: no window in which a signal to the group misses the child */
    c->pid = pid;
    c->started = now_ms();
    lc_info("daemon=%s pid=%d started", c->name, (int)pid);
    return 0;
}

static void describe(int status, char *out, size_t outlen)
{
    if (WIFEXITED(status))
        pathf(out, outlen, "exit status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        pathf(out, outlen, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        pathf(out, outlen, "status 0x%x", status);
}

static struct child *find_child(struct up *u, pid_t pid)
{
    if (u->redis.pid == pid)
        return &u->redis;
    for (int i = 0; i < UP_NDAEMONS; i++)
        if (u->d[i].pid == pid)
            return &u->d[i];
    return NULL;
}

/* reap collects exited children; unless stopping, schedules their restart. */
static void reap(struct up *u, int stopping)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct child *c = find_child(u, pid);
        if (!c)
            continue;
        char how[96];
        describe(status, how, sizeof how);
        int64_t now = now_ms(), up_ms = now - c->started;
        c->pid = 0;
        if (stopping) {
            lc_info("daemon=%s pid=%d stopped (%s)", c->name, (int)pid, how);
            continue;
        }
        if (up_ms >= UP_BACKOFF_RESET_MS)
            c->backoff = 1;
        c->restart_at = now + (int64_t)c->backoff * 1000;
        lc_warn("daemon=%s pid=%d exited (%s) after %.1f s; restarting in %d s", c->name, (int)pid, how,
                (double)up_ms / 1000.0, c->backoff);
        c->backoff = c->backoff * 2 > UP_BACKOFF_MAX ? UP_BACKOFF_MAX : c->backoff * 2;
    }
}

static int any_running(const struct child *cs, int n)
{
    for (int i = 0; i < n; i++)
        if (cs[i].pid > 0)
            return 1;
    return 0;
}

/* stop_group sends SIGTERM to the children's process groups, waits up to wait_ms, then SIGKILLs the rest. */
static void stop_group(struct up *u, struct child *cs, int n, int64_t wait_ms)
{
    for (int i = 0; i < n; i++) {
        cs[i].restart_at = 0;
        if (cs[i].pid > 0 && kill(-cs[i].pid, SIGTERM) < 0)
            kill(cs[i].pid, SIGTERM);
    }
    int64_t deadline = now_ms() + wait_ms;
    int hurry = 0;
    while (any_running(cs, n) && !hurry) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            break;
        if (left > 200)
            left = 200;
        struct timespec ts = {0, (long)left * 1000000L};
        siginfo_t si;
        int sig = sigtimedwait(&u->sigs, &si, &ts);
        if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
            lc_warn("second signal (%s): killing what is left", sig_name(sig));
            hurry = 1;
        }
        reap(u, 1);
    }
    for (int i = 0; i < n; i++) {
        if (cs[i].pid <= 0)
            continue;
        lc_warn("daemon=%s pid=%d did not stop in time: SIGKILL", cs[i].name, (int)cs[i].pid);
        if (kill(-cs[i].pid, SIGKILL) < 0)
            kill(cs[i].pid, SIGKILL);
        int status;
        if (waitpid(cs[i].pid, &status, 0) == cs[i].pid)
            lc_info("daemon=%s pid=%d killed", cs[i].name, (int)cs[i].pid);
        cs[i].pid = 0;
    }
}

/* wait_redis waits until Redis answers PING; returns a connection, or NULL (err) on timeout, on a signal
 * (*stopped set) or when the embedded redis-server exits. */
static redisContext *wait_redis(struct up *u, int *stopped, char *err, size_t errlen)
{
    int64_t start = now_ms(), deadline = start + UP_REDIS_WAIT_MS;
    char last[512] = "no answer";
    *stopped = 0;
    while (now_ms() < deadline) {
        if (u->embedded) {
            int status;
            if (waitpid(u->redis.pid, &status, WNOHANG) == u->redis.pid) {
                char how[96];
                describe(status, how, sizeof how);
                u->redis.pid = 0;
                seterr(err, errlen, "redis-server exited at start (%s); see %s", how, u->log);
                return NULL;
            }
        }
        redisContext *rc = lc_redis_connect(u->url, 1000, last, sizeof last);
        if (rc) {
            redisReply *r = redisCommand(rc, "PING");
            int ok = r && r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "PONG");
            if (r && r->type == REDIS_REPLY_ERROR) {
                pathf(last, sizeof last, "%s", r->str);
                if (!strncmp(r->str, "LOADING", 7) && deadline < start + UP_REDIS_LOADING_MS)
                    deadline = start + UP_REDIS_LOADING_MS; /* a big AOF: give it time */
            }
            freeReplyObject(r);
            if (ok)
                return rc;
            redisFree(rc);
        }
        struct timespec ts = {0, 50 * 1000000L};
        siginfo_t si;
        int sig = sigtimedwait(&u->sigs, &si, &ts);
        if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
            *stopped = 1;
            seterr(err, errlen, "stopped by %s while waiting for Redis", sig_name(sig));
            return NULL;
        }
    }
    seterr(err, errlen, "Redis at %s did not answer PING within %d s (%s)%s%s", u->url,
             (int)((deadline - start) / 1000), last, u->embedded ? "; see " : "", u->embedded ? u->log : "");
    return NULL;
}

/* child_argv builds NAME --set k=v ... --set state.dir=ABS --set redis.url=URL. The "k=v" strings belong to
 * the configuration, which makes them anew on each lc_cfg_argv call: so it is called once, into tmpl. */
static char **child_argv(struct up *u, const char *path)
{
    int max = lc_cfg_count() * 2 + 8;
    if (!u->tmpl) {
        u->tmpl = lc_calloc((size_t)max, sizeof *u->tmpl);
        int n = lc_cfg_argv(u->ctx->cfg, u->tmpl);
        u->tmpl[n++] = (char *)"--set";
        u->tmpl[n++] = u->kv_state;
        u->tmpl[n++] = (char *)"--set";
        u->tmpl[n++] = u->kv_url;
        u->tmpl[n] = NULL;
    }
    char **argv = lc_calloc((size_t)max + 1, sizeof *argv);
    argv[0] = (char *)path;
    for (int i = 0; u->tmpl[i]; i++)
        argv[i + 1] = u->tmpl[i];
    return argv;
}

/* find_daemons fills u->d[].path from <dir of /proc/self/exe>/../libexec/listcast; lists missing ones. */
static int find_daemons(struct up *u, char *err, size_t errlen)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        seterr(err, errlen, "cannot find my own executable (/proc/self/exe): %s", strerror(errno));
        return -1;
    }
    exe[n] = 0;
    pathf(u->exe, sizeof u->exe, "%s", exe);
    char libexec[PATH_MAX], resolved[PATH_MAX];
    pathf(libexec, sizeof libexec, "%s/../libexec/listcast", dirname(exe));
    if (realpath(libexec, resolved))
        pathf(libexec, sizeof libexec, "%s", resolved);
    char missing[512] = "";
    for (int i = 0; i < UP_NDAEMONS; i++) {
        struct child *c = &u->d[i];
        c->name = daemon_names[i];
        c->backoff = 1;
        pathf(c->path, sizeof c->path, "%s/%s", libexec, c->name);
        if (access(c->path, X_OK) < 0) {
            size_t len = strlen(missing);
            pathf(missing + len, sizeof missing - len, "%s%s", len ? ", " : "", c->name);
        }
    }
    if (*missing) {
        seterr(err, errlen, "missing in %s: %s (build them, or install listcast with `cmake --install`)",
                 libexec, missing);
        return -1;
    }
    return 0;
}

static int take_lock(struct up *u, char *err, size_t errlen)
{
    char path[PATH_MAX + 16];
    pathf(path, sizeof path, "%s/listcast.lock", u->state);
    u->lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (u->lockfd < 0) {
        seterr(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(u->lockfd, LOCK_EX | LOCK_NB) < 0) {
        seterr(err, errlen, "another `listcast up` is running with state dir %s", u->state);
        return -1;
    }
    char pid[32];
    pathf(pid, sizeof pid, "%d\n", (int)getpid());
    ssize_t len = (ssize_t)strlen(pid);
    if (ftruncate(u->lockfd, 0) < 0 || write(u->lockfd, pid, (size_t)len) != len)
        lc_warn("cannot write pid to %s", path);
    return 0;
}

/* give_tree hands the state dir and everything under it (not following symlinks) to run.user. */
static uid_t give_uid;
static gid_t give_gid;
static int give_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)type, (void)ftw;
    if ((st->st_uid != give_uid || st->st_gid != give_gid) && lchown(path, give_uid, give_gid) < 0)
        return errno ? errno : EPERM;
    return 0;
}

static int give_tree(struct up *u, char *err, size_t errlen)
{
    /* a parent directory closed to run.user (a 0700 home, say) would keep every daemon out of the state dir
     * even once it is theirs: try it as them, in a child, before anything changes hands */
    char parent[PATH_MAX];
    pathf(parent, sizeof parent, "%s", u->state);
    const char *up_dir = dirname(parent);
    pid_t pid = fork();
    if (pid == 0) {
        char e[256];
        _exit(lc_priv_become(u->run_uid, u->run_gid, e, sizeof e) == 0 && access(up_dir, X_OK) == 0 ? 0 : 1);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        seterr(err, errlen, "run.user %s cannot reach state.dir %s (is a parent directory closed to it?)",
               lc_cfg_str(u->ctx->cfg, "run.user"), u->state);
        return -1;
    }
    give_uid = u->run_uid, give_gid = u->run_gid;
    int rc = nftw(u->state, give_one, 32, FTW_PHYS | FTW_MOUNT);
    if (rc != 0) {
        seterr(err, errlen, "cannot give state.dir %s to run.user %s: %s", u->state,
               lc_cfg_str(u->ctx->cfg, "run.user"), strerror(rc > 0 ? rc : errno));
        return -1;
    }
    return 0;
}

/* prepare resolves the state dir, the lock, the secret and the daemons; 0 or -1 with err. */
static int prepare(struct up *u, char *err, size_t errlen)
{
    const char *sd = lc_cfg_str(u->ctx->cfg, "state.dir");
    if (mkdirs(sd) < 0) {
        seterr(err, errlen, "cannot create state.dir %s: %s", sd, strerror(errno));
        return -1;
    }
    if (!realpath(sd, u->state)) {
        seterr(err, errlen, "state.dir %s: %s", sd, strerror(errno));
        return -1;
    }
    if (take_lock(u, err, errlen) < 0)
        return -1;
    struct lc_secret *s = lc_secret_load(lc_cfg_str(u->ctx->cfg, "secret.file"), 1, err, errlen);
    if (!s)
        return -1;
    lc_secret_free(s);
    if (find_daemons(u, err, errlen) < 0)
        return -1;
    u->embedded = !*lc_cfg_str(u->ctx->cfg, "redis.url");
    if (u->embedded) {
        struct sockaddr_un sun;
        pathf(u->conf, sizeof u->conf, "%s/redis.conf", u->state);
        pathf(u->log, sizeof u->log, "%s/redis.log", u->state);
        if (pathf(u->sock, sizeof u->sock, "%s/redis.sock", u->state) < 0 ||
            strlen(u->sock) >= sizeof sun.sun_path) {
            seterr(err, errlen, "state.dir %s is too long for a unix socket path (%zu bytes at most)", u->state,
                     sizeof sun.sun_path - 12);
            return -1;
        }
        if (!config_safe(u->state)) {
            seterr(err, errlen, "state.dir %s: quotes, backslashes and control characters are not supported",
                     u->state);
            return -1;
        }
        pathf(u->url, sizeof u->url, "unix://%s", u->sock);
        u->redis.name = "redis-server";
        u->redis.backoff = 1;
        if (find_redis_server(u->redis.path, sizeof u->redis.path) < 0) {
            seterr(err, errlen, "redis-server not found in PATH nor at /usr/bin/redis-server "
                                  "(install it: apt-get install redis-server, or set redis.url)");
            return -1;
        }
        u->redis.argv = lc_calloc(3, sizeof *u->redis.argv);
        u->redis.argv[0] = u->redis.path;
        u->redis.argv[1] = u->conf;
        if (write_redis_conf(u, err, errlen) < 0)
            return -1;
    } else {
        pathf(u->url, sizeof u->url, "%s", lc_cfg_str(u->ctx->cfg, "redis.url"));
    }
    int t = lc_priv_target(u->ctx->cfg, &u->run_uid, &u->run_gid, err, errlen);
    if (t < 0)
        return -1;
    u->drop = t;
    if (u->drop && give_tree(u, err, errlen) < 0)
        return -1;
    if (u->drop)
        lc_info("the daemons and redis-server run as %s (uid %lu), state.dir %s is theirs",
                lc_cfg_str(u->ctx->cfg, "run.user"), (unsigned long)u->run_uid, u->state);
    else if (geteuid() == 0)
        lc_warn("running as root with run.user empty: every daemon keeps root (set run.user to an unprivileged "
                "user, see README \"Running under systemd\")");
    size_t n = strlen(u->state) + 16;
    u->kv_state = lc_malloc(n);
    pathf(u->kv_state, n, "state.dir=%s", u->state);
    n = strlen(u->url) + 16;
    u->kv_url = lc_malloc(n);
    pathf(u->kv_url, n, "redis.url=%s", u->url);
    for (int i = 0; i < UP_NDAEMONS; i++)
        u->d[i].argv = child_argv(u, u->d[i].path);
    return 0;
}

/* split_hostport splits "1.2.3.4:25" or "[::1]:25" into host and port for the demo instructions. */
static void split_hostport(const char *hp, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon = strrchr(hp, ':');
    size_t hn = colon ? (size_t)(colon - hp) : strlen(hp);
    if (hn >= 2 && hp[0] == '[' && hp[hn - 1] == ']') {
        hp++;
        hn -= 2;
    }
    pathf(host, hostlen, "%.*s", (int)hn, hp);
    if (!strcmp(host, "0.0.0.0"))
        pathf(host, hostlen, "127.0.0.1");
    else if (!strcmp(host, "::"))
        pathf(host, hostlen, "::1");
    pathf(port, portlen, "%s", colon ? colon + 1 : "25");
}

static int demo_setup(struct up *u, redisContext *rc, char *err, size_t errlen)
{
    static const char *const subs[] = {"alice@demo.test", "bob@demo.test", "carol@demo.test"};
    int created = lc_list_ensure(rc, DEMO_LIST, "open", DEMO_OWNER, err, errlen);
    if (created < 0)
        return -1;
    if (lc_sub_add_many(rc, DEMO_LIST, subs, 3, err, errlen) < 0)
        return -1;
    lc_info("demo list %s %s with subscribers alice@demo.test, bob@demo.test, carol@demo.test", DEMO_LIST,
            created ? "created" : "exists");
    (void)u;
    return 0;
}

static void demo_print(struct up *u)
{
    char host[128], port[16];
    split_hostport(lc_cfg_str(u->ctx->cfg, "smtp.listen"), host, sizeof host, port, sizeof port);
    printf("listcast: demo list %s (policy open) has the subscribers alice@demo.test, bob@demo.test and "
           "carol@demo.test.\n",
           DEMO_LIST);
    printf("listcast: post to it from another terminal with:\n"
           "  python3 -c 'import smtplib; smtplib.SMTP(\"%s\", %s).sendmail(\"%s\", [\"%s\"], "
           "\"From: %s\\r\\nTo: %s\\r\\nSubject: hello\\r\\n\\r\\nHello, list!\\r\\n\")'\n",
           host, port, DEMO_OWNER, DEMO_LIST, DEMO_OWNER, DEMO_LIST);
    printf("listcast: then follow it with: %s --set state.dir=%s post ls %s\n", u->exe, u->state, DEMO_LIST);
}

static void print_ready(struct up *u)
{
    const char *smtp = lc_cfg_str(u->ctx->cfg, "smtp.listen"), *http = lc_cfg_str(u->ctx->cfg, "http.listen");
    if (u->ctx->json) {
        struct lc_json *j = lc_json_new_file(stdout, 0);
        lc_json_obj(j);
        lc_json_kstr(j, "smtp", smtp);
        lc_json_key(j, "http");
        char url[300];
        pathf(url, sizeof url, "http://%s/", http);
        lc_json_str(j, url);
        lc_json_kstr(j, "state_dir", u->state);
        lc_json_kstr(j, "redis_url", u->url);
        lc_json_kstr(j, "demo_list", u->demo ? DEMO_LIST : NULL);
        lc_json_end(j);
        lc_json_free(j);
        fputc('\n', stdout);
    } else {
        printf("listcast: SMTP on %s, admin web on http://%s/, state in %s\n", smtp, http, u->state);
        if (u->demo)
            demo_print(u);
    }
    fflush(stdout);
}

/* supervise runs until a stop signal, restarting children whose time has come. */
static void supervise(struct up *u)
{
    for (;;) {
        int64_t now = now_ms(), next = now + 1000;
        struct child *all[UP_NDAEMONS + 1];
        int n = 0;
        if (u->embedded)
            all[n++] = &u->redis;
        for (int i = 0; i < UP_NDAEMONS; i++)
            all[n++] = &u->d[i];
        for (int i = 0; i < n; i++)
            if (all[i]->restart_at && all[i]->restart_at < next)
                next = all[i]->restart_at;
        int64_t wait = next > now ? next - now : 0;
        struct timespec ts = {(time_t)(wait / 1000), (long)(wait % 1000) * 1000000L};
        siginfo_t si;
        int sig = sigtimedwait(&u->sigs, &si, &ts);
        if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
            lc_info("got %s: stopping", sig_name(sig));
            return;
        }
        reap(u, 0);
        now = now_ms();
        for (int i = 0; i < n; i++) {
            if (all[i]->restart_at && all[i]->restart_at <= now && all[i]->pid == 0) {
                all[i]->restart_at = 0;
                if (spawn(u, all[i]) < 0)
                    all[i]->restart_at = now + (int64_t)all[i]->backoff * 1000;
            }
        }
    }
}

static void up_free(struct up *u)
{
    for (int i = 0; i < UP_NDAEMONS; i++)
        free(u->d[i].argv);
    free(u->redis.argv);
    free(u->tmpl);
    free(u->kv_state);
    free(u->kv_url);
    if (u->lockfd >= 0)
        close(u->lockfd);
}

int lc_cmd_up(struct lc_ctx *ctx, int argc, char **argv)
{
    static const struct lc_opt opts[] = {{"demo", 0, 0, 1}, {NULL, 0, 0, 0}};
    const char *demo = NULL;
    int status = lc_args(ctx, argc, argv, opts, &demo, NULL, 0);
    if (status >= 0)
        return status;
    struct up u;
    memset(&u, 0, sizeof u);
    u.ctx = ctx;
    u.lockfd = -1;
    u.demo = demo != NULL;
    lc_log_verbose((int)lc_cfg_int(ctx->cfg, "log.verbose"));
    char err[1024];
    int stopped = 0;
    status = LC_EXIT_OK;
    if (prepare(&u, err, sizeof err) < 0) {
        up_free(&u);
        return lc_refused(ctx, "%s", err);
    }
    u.self = getpid();
    sigemptyset(&u.sigs);
    sigaddset(&u.sigs, SIGCHLD);
    sigaddset(&u.sigs, SIGINT);
    sigaddset(&u.sigs, SIGTERM);
    sigaddset(&u.sigs, SIGHUP);
    sigprocmask(SIG_BLOCK, &u.sigs, &u.oldmask);
    /* Stop signals are taken by sigtimedwait, which never sees an ignored signal: a shell starts background
     * jobs with SIGINT ignored, and the documented way to stop us is SIGINT or SIGTERM. (SIGHUP keeps its
     * disposition, so nohup still works.) */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGCHLD, SIG_DFL); /* SIG_IGN would reap our children behind waitpid's back */
    signal(SIGPIPE, SIG_IGN);

    if (u.embedded) {
        lc_info("starting redis-server (%s, config %s)", u.redis.path, u.conf);
        if (spawn(&u, &u.redis) < 0) {
            status = lc_refused(ctx, "cannot start redis-server");
            goto out;
        }
    }
    redisContext *rc = wait_redis(&u, &stopped, err, sizeof err);
    if (!rc) {
        status = stopped ? LC_EXIT_OK : lc_refused(ctx, "%s", err);
        goto stop;
    }
    lc_info("redis ready at %s", u.url);
    if (u.demo && demo_setup(&u, rc, err, sizeof err) < 0) {
        redisFree(rc);
        status = lc_refused(ctx, "demo: %s", err);
        goto stop;
    }
    redisFree(rc);
    for (int i = 0; i < UP_NDAEMONS; i++)
        if (spawn(&u, &u.d[i]) < 0)
            u.d[i].restart_at = now_ms() + 1000;
    print_ready(&u);
    supervise(&u);
stop:
    stop_group(&u, u.d, UP_NDAEMONS, UP_STOP_WAIT_MS);
    if (u.embedded && u.redis.pid > 0) {
        lc_info("stopping redis-server");
        stop_group(&u, &u.redis, 1, UP_STOP_WAIT_MS);
    }
    lc_info("stopped");
out:
    /* The signal mask stays as it is: a signal that arrived while stopping must not kill us now. */
    up_free(&u);
    return status;
}
