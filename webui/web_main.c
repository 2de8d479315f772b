/* web_main: entry point of listcast-webui, the admin web UI and JSON API (read-only for now; login, CSRF
 * protection and editing come in a later issue, see web.h). Binds to http.listen (loopback by default).
 *
 * Usage: listcast-webui [--config FILE] [--set key=value]... [-v]
 * Exit status: 0 after SIGTERM/SIGINT, 1 on a fatal error (cannot listen, no secret), 2 on a usage or
 * configuration error.
 */
#include "web.h"
#include "lc_cfg.h"
#include "lc_log.h"
#include "lc_secret.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static int usage_error(const char *msg)
{
    fprintf(stderr, "listcast-webui: %s\n", msg);
    return 2;
}

int main(int argc, char **argv)
{
    char err[1024];
    lc_log_init("listcast-webui");
    struct lc_cfg *cfg = lc_cfg_new();
    if (lc_cfg_args(cfg, &argc, argv, err, sizeof err) < 0 || lc_cfg_finish(cfg, err, sizeof err) < 0) {
        lc_cfg_free(cfg);
        return usage_error(err);
    }
    int verbose = (int)lc_cfg_int(cfg, "log.verbose");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-v")) {
            verbose = 1;
        } else {
            snprintf(err, sizeof err, "unknown argument '%.100s' (usage: listcast-webui [--config FILE] "
                                      "[--set key=value]... [-v])", argv[i]);
            lc_cfg_free(cfg);
            return usage_error(err);
        }
    }
    lc_log_verbose(verbose);
    if (!*lc_cfg_str(cfg, "redis.url")) {
        lc_cfg_free(cfg);
        return usage_error("redis.url is not set (listcast up sets it)");
    }
    struct lc_secret *secret = lc_secret_load(lc_cfg_str(cfg, "secret.file"), 1, err, sizeof err);
    if (!secret)
        lc_fatal("%s", err);

    /* Block the stop signals before libmicrohttpd starts its thread, so only sigwait below sees them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct web_app app = {web_db_new(lc_cfg_str(cfg, "redis.url")), cfg};
    struct web_server *srv = web_server_start(&app, lc_cfg_str(cfg, "http.listen"), err, sizeof err);
    if (!srv)
        lc_fatal("%s", err);
    lc_info("listening on http://%s/ redis=%s", lc_cfg_str(cfg, "http.listen"), lc_cfg_str(cfg, "redis.url"));
    if (web_db_ping(app.db) < 0)
        lc_warn("redis not answering yet; /healthz reports 503 until it does");

    int sig = 0;
    while (sigwait(&stop, &sig) != 0)
        ;
    lc_info("got %s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    web_server_stop(srv);
    web_db_free(app.db);
    lc_secret_free(secret);
    lc_cfg_free(cfg);
    return 0;
}
