/* bnc_main: listcast-bounce's main(): arguments, configuration, log, secret, signals, then the stream loop.
 *
 * Usage: listcast-bounce [--config FILE] [--set key=value]... [-v]
 * Reads lc:stream:bounces (group "bounce", consumer node.name), classifies each entry (bounce message or the
 * sender's SMTP reply) and updates the subscriber (bnc_act.c). Exit codes: 0 on SIGTERM/SIGINT, 1 on a fatal
 * error (secret unreadable), 2 on a usage or configuration error. Redis errors are retried with backoff.
 */
#include "bnc.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "lc_cfg.h"
#include "lc_log.h"
#include "lc_secret.h"

#define PROG "listcast-bounce"

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

int main(int argc, char **argv)
{
    char err[512];
    int verbose = 0;
    lc_log_init(PROG);
    struct lc_cfg *cfg = lc_cfg_new();
    if (lc_cfg_args(cfg, &argc, argv, err, sizeof err) < 0)
        goto usage;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-v") != 0) {
            snprintf(err, sizeof err,
                     "unknown argument \"%.100s\" (usage: %s [--config FILE] [--set key=value]... [-v])", argv[i],
                     PROG);
            goto usage;
        }
        verbose = 1;
    }
    if (lc_cfg_finish(cfg, err, sizeof err) < 0)
        goto usage;
    if (!*lc_cfg_str(cfg, "redis.url")) {
        snprintf(err, sizeof err, "redis.url: must be set");
        goto usage;
    }
    lc_log_verbose(verbose || lc_cfg_int(cfg, "log.verbose"));

    struct lc_secret *secret = lc_secret_load(lc_cfg_str(cfg, "secret.file"), 1, err, sizeof err);
    if (!secret)
        lc_fatal("%s", err);
    signals();
    bnc_init();

    struct bnc_daemon *d = bnc_daemon_new(cfg, secret);
    lc_info("started node=%s", lc_cfg_str(cfg, "node.name"));
    int rc = bnc_daemon_run(d, &stop_flag);
    bnc_daemon_free(d);
    lc_info("stopped");
    lc_secret_free(secret);
    lc_cfg_free(cfg);
    return rc == 0 ? 0 : 1;

usage:
    fprintf(stderr, "%s: %s\n", PROG, err);
    lc_cfg_free(cfg);
    return 2;
}
