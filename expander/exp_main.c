/* exp_main: listcast-expander's main(): arguments, configuration, log, signals, then the stream loop.
 *
 * Usage: listcast-expander [--config FILE] [--set key=value]... [-v]
 * Exit codes: 0 on SIGTERM/SIGINT, 1 on a fatal error (Redis gone for ~30 s, c-ares unusable), 2 on a usage
 * or configuration error. The expander needs no secret and no privileged resource.
 */
#include "exp.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lc_cfg.h"
#include "lc_log.h"
#include "lc_priv.h"
#include "lc_loop.h"

#define PROG "listcast-expander"

static volatile sig_atomic_t stop_flag;

int main(int argc, char **argv)
{
    char err[512];
    struct lc_cfg *cfg = lc_cfg_daemon(PROG, argc, argv, 1);
    char perr[512];
    if (lc_priv_drop(cfg, perr, sizeof perr) < 0) /* nothing here needs root */
        lc_fatal("%s", perr);
    const char *pr = lc_cfg_str(cfg, "complaints.pause_rate");
    char *end;
    double pause_rate = strtod(pr, &end);
    if (!*pr || *end || !(pause_rate >= 0 && pause_rate <= 1)) {
        snprintf(err, sizeof err, "complaints.pause_rate: '%.50s' is not a fraction between 0 and 1", pr);
        goto usage;
    }
    lc_flag_signals(&stop_flag);

    struct exp e = {
        .url = lc_cfg_str(cfg, "redis.url"),
        .node = lc_cfg_str(cfg, "node.name"),
        .relay = lc_cfg_str(cfg, "sender.relay"),
        .batch_size = (long)lc_cfg_int(cfg, "sender.batch_size"),
        .stop = &stop_flag,
        .pause_rate = pause_rate,
    };
    if (!*e.relay && !(e.dns = exp_dns_new(lc_cfg_str(cfg, "dns.servers"), err, sizeof err)))
        lc_fatal("%s", err);
    e.rcpts = exp_rcpts_new();
    lc_info("started node=%s batch_size=%ld %s%s", e.node, e.batch_size, *e.relay ? "relay=" : "dns=",
            *e.relay ? e.relay : (*lc_cfg_str(cfg, "dns.servers") ? lc_cfg_str(cfg, "dns.servers") : "system"));
    int rc = exp_run(&e);
    exp_rcpts_free(e.rcpts);
    exp_dns_free(e.dns);
    lc_info("%s", rc == 0 ? "stopped" : "exiting: Redis unavailable");
    lc_cfg_free(cfg);
    return rc == 0 ? 0 : 1;

usage:
    fprintf(stderr, "%s: %s\n", PROG, err);
    lc_cfg_free(cfg);
    return 2;
}
