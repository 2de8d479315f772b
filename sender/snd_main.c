/* snd_main: main() of listcast-sender: arguments, configuration, log, secret, loop, signals, run, clean exit.
 *
 * Usage: listcast-sender [--config FILE] [--set key=value]... [-v]. A usage or configuration error prints
 * "listcast-sender: <reason>" and exits 2; a missing secret exits 1. SIGTERM or SIGINT stops taking batches and
 * closes every connection (QUIT where idle); batches not yet acknowledged stay pending in the stream and are
 * re-read by the next start (or claimed by a peer). Exit status 0 then. sender.sign_threads: -1 (default) starts one
 * signing thread per online CPU (snd_sign.c), 0 none (per-recipient DKIM signatures are made in the loop thread).
 */
#include "snd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lc_cfg.h"
#include "lc_log.h"
#include "lc_priv.h"
#include "lc_loop.h"
#include "lc_secret.h"

int main(int argc, char **argv)
{
    char err[512];
    struct lc_cfg *cfg = lc_cfg_daemon(SND_PROG, argc, argv, 1);
    char perr[512];
    if (lc_priv_drop(cfg, perr, sizeof perr) < 0) /* nothing here needs root */
        lc_fatal("%s", perr);

    struct lc_secret *secret = lc_secret_load(lc_cfg_str(cfg, "secret.file"), 1, err, sizeof err);
    if (!secret) {
        fprintf(stderr, "%s: %s\n", SND_PROG, err);
        return 1;
    }

    struct snd snd;
    memset(&snd, 0, sizeof snd);
    snd.cfg = cfg;
    snd.secret = secret;
    snd.node = lc_cfg_str(cfg, "node.name");
    snd.helo = lc_cfg_str(cfg, "smtp.hostname");
    snd.relay = lc_cfg_str(cfg, "sender.relay");
    snd.mx_port = (int)lc_cfg_int(cfg, "sender.mx_port");
    snd.concurrency = (int)lc_cfg_int(cfg, "sender.concurrency");
    snd.per_mx = (int)lc_cfg_int(cfg, "sender.per_mx");
    snd.max_batches = snd.concurrency * 2;
    snd.fallback = lc_cfg_str(cfg, "sender.fallback_relay");
    snd.tls = snd_tls_policy_parse(lc_cfg_str(cfg, "sender.tls"), strlen(lc_cfg_str(cfg, "sender.tls")));
    snd.reply_ms = (int)lc_cfg_int(cfg, "sender.reply_timeout") * 1000;
    snd.claim_ms = (int)lc_cfg_int(cfg, "sender.claim_idle") * 1000;
    snd.mx_backoff_ms = (int)lc_cfg_int(cfg, "sender.mx_backoff") * 1000;
    snd.retry_min = (int)lc_cfg_int(cfg, "sender.retry_min");
    snd.retry_max = (int)lc_cfg_int(cfg, "sender.retry_max");
    if (snd.retry_max < snd.retry_min)
        snd.retry_max = snd.retry_min;
    snd.max_lifetime = (int)lc_cfg_int(cfg, "sender.max_lifetime");
    snd.batch_size = (int)lc_cfg_int(cfg, "sender.batch_size");
    char url[1024];
    snprintf(url, sizeof url, "%s", lc_cfg_str(cfg, "http.public_url"));
    for (size_t ul = strlen(url); ul && url[ul - 1] == '/'; ul--)
        url[ul - 1] = 0;
    snd.public_url = url;
    snd.tlsctx = snd_tls_ctx_new(err, sizeof err);
    if (!snd.tlsctx) {
        fprintf(stderr, "%s: %s\n", SND_PROG, err);
        return 1;
    }
    snd.dkim = snd_dkim_new(lc_cfg_str(cfg, "state.dir"));
    long nsign = lc_cfg_int(cfg, "sender.sign_threads");
    if (nsign < 0) { /* the default: one per online CPU */
        nsign = sysconf(_SC_NPROCESSORS_ONLN);
        nsign = nsign < 1 ? 1 : nsign > SND_SIGN_MAX_THREADS ? SND_SIGN_MAX_THREADS : nsign;
    }
    srandom((unsigned)time(NULL) ^ (unsigned)getpid());
    snd.loop = lc_loop_new();
    lc_loop_signals(snd.loop);
    if (nsign > 0 && !(snd.sign = snd_sign_new(&snd, (int)nsign, err, sizeof err))) {
        fprintf(stderr, "%s: %s\n", SND_PROG, err);
        return 1;
    }

    snd_queue_new(&snd, lc_cfg_str(cfg, "redis.url"));
    lc_info("started node=%s concurrency=%d per_mx=%d mx_port=%d relay=%s fallback=%s tls=%s batches_in_memory=%d "
            "retry=%d..%ds lifetime=%ds sign_threads=%d",
            snd.node, snd.concurrency, snd.per_mx, snd.mx_port, *snd.relay ? snd.relay : "none",
            *snd.fallback ? snd.fallback : "none", snd_tls_policy_name(snd.tls), snd.max_batches, snd.retry_min,
            snd.retry_max, snd.max_lifetime, snd_sign_threads(snd.sign));
    lc_loop_run(snd.loop);

    lc_info("stopping: %d batches in memory stay pending, %d connections closed", snd.nbatches, snd.nconns);
    snd.stopping = 1;
    snd_dest_free_all(&snd);
    snd_queue_free(snd.q);
    while (snd.batches)
        snd_batch_free(snd.batches);
    snd_sign_free(snd.sign); /* joins the signing threads; their jobs hold post references */
    snd.sign = NULL;
    snd_post_free_all(&snd);
    snd_tls_ctx_free(snd.tlsctx);
    snd_dkim_free(snd.dkim);
    lc_loop_free(snd.loop);
    lc_secret_free(secret);
    lc_cfg_free(cfg);
    return 0;
}
