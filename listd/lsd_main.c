/* lsd_main: main() of listcast-listd, the SMTP front door.
 *
 * Usage: listcast-listd [--config FILE] [--set key=value]... [-v]
 * Reads redis.url, secret.file, dns.servers (DMARC lookups), smtp.listen, smtp.hostname, smtp.max_message_size, smtp.max_sessions,
 * smtp.max_sessions_per_ip, smtp.max_recipients, smtp.max_errors, smtp.idle_timeout, tls.cert, tls.key,
 * log.verbose.
 * Exit: 0 after SIGTERM/SIGINT, 2 on a usage or configuration error, 1 on a fatal error (cannot listen,
 * no secret, tls.cert/tls.key missing, unreadable, not PEM or not a pair: the message names the key). A Redis that is down is not fatal: listd answers 451 and reconnects.
 * Privileges: listd does not switch users itself yet (no user key in the configuration); run it as the
 * appliance's user, on a port above 1023 or with CAP_NET_BIND_SERVICE.
 */
#include "lsd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lc_cfg.h"
#include "lc_log.h"
#include "lc_priv.h"
#include "lc_loop.h"
#include "lc_secret.h"

int main(int argc, char **argv)
{
    char err[1024];
    struct lc_cfg *cfg = lc_cfg_daemon(LSD_PROG, argc, argv, 1);

    struct lc_secret *secret = lc_secret_load(lc_cfg_str(cfg, "secret.file"), 1, err, sizeof err);
    if (!secret)
        lc_fatal("%s", err);

    struct lc_loop *loop = lc_loop_new();
    lc_loop_signals(loop);
    struct lsd_server *srv = lsd_server_new(loop, cfg, secret, err, sizeof err);
    if (!srv)
        lc_fatal("%s", err);
    if (lc_priv_drop(cfg, err, sizeof err) < 0) /* the SMTP socket is bound: root is no longer needed */
        lc_fatal("%s", err);
    snprintf(srv->public_url, sizeof srv->public_url, "%s", lc_cfg_str(cfg, "http.public_url"));
    srv->confirm_lifetime = lc_cfg_int(cfg, "confirm.lifetime");

    lc_loop_run(loop);

    lc_info("stopping");
    lsd_server_free(srv);
    lc_loop_free(loop);
    lc_secret_free(secret);
    lc_cfg_free(cfg);
    return 0;
}
