/* web_main: entry point of listcast-webui, the admin web UI and JSON API (see web.h). Binds to http.listen
 * (loopback by default); serves HTTPS when http.tls_cert and http.tls_key name PEM files (both or neither).
 *
 * Usage: listcast-webui [--config FILE] [--set key=value]... [-v]
 * Exit status: 0 after SIGTERM/SIGINT, 1 on a fatal error (cannot listen, no secret), 2 on a usage or
 * configuration error.
 */
#include "web.h"
#include "lc_cfg.h"
#include "lc_log.h"
#include "lc_priv.h"
#include "lc_secret.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WEB_PEM_MAX (1024 * 1024)

/* read_pem reads a whole PEM file (at most WEB_PEM_MAX bytes) into a new string; NULL + err. */
static char *read_pem(const char *key, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open %s", key, path);
        return NULL;
    }
    char *buf = lc_calloc(1, WEB_PEM_MAX + 1);
    size_t n = fread(buf, 1, WEB_PEM_MAX + 1, f);
    fclose(f);
    if (n == 0 || n > WEB_PEM_MAX || !strstr(buf, "-----BEGIN ")) {
        snprintf(err, errlen, "%s: %s is not a PEM file (or larger than 1 MiB)", key, path);
        free(buf);
        return NULL;
    }
    return buf;
}

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

    const char *cert_file = lc_cfg_str(cfg, "http.tls_cert"), *key_file = lc_cfg_str(cfg, "http.tls_key");
    if (!*cert_file != !*key_file) {
        lc_secret_free(secret);
        lc_cfg_free(cfg);
        return usage_error("http.tls_cert and http.tls_key go together: set both or neither");
    }
    char *cert = NULL, *key = NULL;
    if (*cert_file) {
        cert = read_pem("http.tls_cert", cert_file, err, sizeof err);
        key = cert ? read_pem("http.tls_key", key_file, err, sizeof err) : NULL;
        if (!key)
            lc_fatal("%s", err);
    }
    struct web_app app = {web_db_new(lc_cfg_str(cfg, "redis.url")), cfg, secret, cert != NULL, web_doctor_new(cfg)};
    struct web_server *srv = web_server_start(&app, lc_cfg_str(cfg, "http.listen"), cert, key, err, sizeof err);
    if (!srv)
        lc_fatal("%s", err);
    if (lc_priv_drop(cfg, err, sizeof err) < 0) /* the socket is bound: root is no longer needed */
        lc_fatal("%s", err);
    lc_info("listening on %s://%s/ redis=%s", cert ? "https" : "http", lc_cfg_str(cfg, "http.listen"),
            lc_cfg_str(cfg, "redis.url"));
    if (web_db_ping(app.db) < 0)
        lc_warn("redis not answering yet; /healthz reports 503 until it does");

    int sig = 0;
    while (sigwait(&stop, &sig) != 0)
        ;
    lc_info("got %s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    web_doctor_stop(app.doctor); /* first: it resumes the connections waiting on a check */
    web_server_stop(srv);
    web_doctor_free(app.doctor);
    web_db_free(app.db);
    free(cert);
    free(key);
    lc_secret_free(secret);
    lc_cfg_free(cfg);
    return 0;
}
