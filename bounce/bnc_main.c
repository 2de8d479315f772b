/* bnc_main: listcast-bounce's main(): arguments, configuration, log, secret, signals, then the stream loop.
 *
 * Usage: listcast-bounce [--config FILE] [--set key=value]... [-v]
 * Reads lc:stream:bounces (group "bounce", consumer node.name), classifies each entry (bounce message or the
 * sender's SMTP reply) and updates the subscriber (bnc_act.c); between reads, sends and follows the bounce probes
 * of subscribers disabled by bounces (bnc_probe.c). Exit codes: 0 on SIGTERM/SIGINT, 1 on a fatal
 * error (secret unreadable), 2 on a usage or configuration error. Redis errors are retried with backoff.
 */
#include "bnc.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "lc_cfg.h"
#include "lc_log.h"
#include "lc_priv.h"
#include "lc_loop.h"
#include "lc_secret.h"

#define PROG "listcast-bounce"

static volatile sig_atomic_t stop_flag;

int main(int argc, char **argv)
{
    char err[512];
    struct lc_cfg *cfg = lc_cfg_daemon(PROG, argc, argv, 1);
    char perr[512];
    if (lc_priv_drop(cfg, perr, sizeof perr) < 0) /* nothing here needs root */
        lc_fatal("%s", perr);

    struct lc_secret *secret = lc_secret_load(lc_cfg_str(cfg, "secret.file"), 1, err, sizeof err);
    if (!secret)
        lc_fatal("%s", err);
    lc_flag_signals(&stop_flag);
    bnc_init();

    struct bnc_daemon *d = bnc_daemon_new(cfg, secret);
    lc_info("started node=%s", lc_cfg_str(cfg, "node.name"));
    int rc = bnc_daemon_run(d, &stop_flag);
    bnc_daemon_free(d);
    lc_info("stopped");
    lc_secret_free(secret);
    lc_cfg_free(cfg);
    return rc == 0 ? 0 : 1;
}
