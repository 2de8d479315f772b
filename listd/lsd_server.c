/* lsd_server: listd's listening socket, its session registry, its concurrency limits and its TLS credentials.
 *
 * Accepts on smtp.listen (non-blocking, close-on-exec, TCP_NODELAY: sessions batch their own replies).
 * At most smtp.max_sessions sessions: one more connection gets "421 4.3.2 ... too many connections" written
 * straight away (best effort) and is closed; at most smtp.max_sessions_per_ip from one client address (421 4.7.0
 * too many connections from your address). Out of file descriptors (EMFILE/ENFILE): accepting pauses for one
 * second instead of spinning on a level-triggered listener. STARTTLS credentials (tls.cert, tls.key) are loaded
 * here, at start: an error in them is an error of lsd_server_new. The DMARC resolver (lsd_dns.c, dns.servers) too.
 */
#include "lsd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lc_cfg.h"
#include "lc_log.h"
#include "lc_loop.h"
#include "lc_net.h"

#define ACCEPT_BATCH 64
#define ACCEPT_PAUSE_MS 1000

static void on_accept(struct lc_loop *loop, int fd, int events, void *arg);

static void resume_accept(struct lc_loop *loop, void *arg)
{
    struct lsd_server *srv = arg;
    srv->accept_timer = 0;
    if (lc_loop_watch(loop, srv->listen_fd, LC_READ, on_accept, srv) < 0)
        lc_fatal("epoll on the listening socket: %s", strerror(errno));
}

static void peer_ip(const struct sockaddr_storage *ss, char *out, size_t outlen)
{
    snprintf(out, outlen, "unknown");
    if (ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out, (socklen_t)outlen);
    else if (ss->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, out, (socklen_t)outlen);
}

static void on_accept(struct lc_loop *loop, int lfd, int events, void *arg)
{
    struct lsd_server *srv = arg;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                lc_warn("accept: %s: pausing for %d ms", strerror(errno), ACCEPT_PAUSE_MS);
                lc_loop_watch(loop, lfd, 0, NULL, NULL);
                srv->accept_timer = lc_loop_timer(loop, ACCEPT_PAUSE_MS, resume_accept, srv);
            } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                lc_warn("accept: %s", strerror(errno));
            }
            return;
        }
        char ip[INET6_ADDRSTRLEN + 1];
        peer_ip(&ss, ip, sizeof ip);
        if (srv->nsessions >= srv->max_sessions) {
            char line[400];
            int n = snprintf(line, sizeof line, "421 4.3.2 %s Error: too many connections, try again later\r\n",
                             srv->hostname);
            ssize_t w = write(fd, line, (size_t)n);
            (void)w;
            close(fd);
            lc_info("client=%s refused: %d sessions already", ip, srv->nsessions);
            continue;
        }
        int from_ip = lsd_session_count_ip(srv, ip);
        if (from_ip >= srv->max_per_ip) {
            char line[400];
            int n = snprintf(line, sizeof line,
                             "421 4.7.0 %s Error: too many connections from your address, try again later\r\n",
                             srv->hostname);
            ssize_t w = write(fd, line, (size_t)n);
            (void)w;
            close(fd);
            lc_info("client=%s refused: %d sessions from this address already", ip, from_ip);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        lsd_session_new(srv, fd, ip);
    }
}

struct lsd_server *lsd_server_new(struct lc_loop *loop, const struct lc_cfg *cfg, const struct lc_secret *secret,
                                  char *err, size_t errlen)
{
    struct lsd_tls *tls = NULL;
    const char *cert = lc_cfg_str(cfg, "tls.cert"), *key = lc_cfg_str(cfg, "tls.key");
    if ((*cert || *key) && !(tls = lsd_tls_new(cert, key, err, errlen)))
        return NULL;
    struct lsd_dns *dns = lsd_dns_new(loop, lc_cfg_str(cfg, "dns.servers"), err, errlen);
    if (!dns) {
        lsd_tls_free(tls);
        return NULL;
    }
    const char *listen_on = lc_cfg_str(cfg, "smtp.listen");
    int fd = lc_net_listen(listen_on, 512);
    if (fd < 0) {
        snprintf(err, errlen, "smtp.listen %s: %s", listen_on, strerror(errno));
        lsd_tls_free(tls);
        lsd_dns_free(dns);
        return NULL;
    }
    struct lsd_server *srv = lc_calloc(1, sizeof *srv);
    srv->tls = tls;
    srv->dns = dns;
    srv->max_sessions = (int)lc_cfg_int(cfg, "smtp.max_sessions");
    srv->max_per_ip = (int)lc_cfg_int(cfg, "smtp.max_sessions_per_ip");
    srv->max_rcpt = (int)lc_cfg_int(cfg, "smtp.max_recipients");
    srv->max_errors = (int)lc_cfg_int(cfg, "smtp.max_errors");
    srv->idle_ms = (long)lc_cfg_int(cfg, "smtp.idle_timeout") * 1000;
    srv->loop = loop;
    srv->secret = secret;
    srv->listen_fd = fd;
    srv->max_size = lc_cfg_int(cfg, "smtp.max_message_size");
    snprintf(srv->hostname, sizeof srv->hostname, "%s", lc_cfg_str(cfg, "smtp.hostname"));
    srv->redis = lsd_redis_new(loop, lc_cfg_str(cfg, "redis.url"));
    if (lc_loop_watch(loop, fd, LC_READ, on_accept, srv) < 0)
        lc_fatal("epoll on the listening socket: %s", strerror(errno));
    lc_info("listening on %s as %s, max message size %lld, sessions %d (%d per client), recipients %d, errors %d, "
            "idle %ld s, STARTTLS %s", listen_on, srv->hostname, srv->max_size, srv->max_sessions, srv->max_per_ip,
            srv->max_rcpt, srv->max_errors, srv->idle_ms / 1000, tls ? "on" : "off");
    return srv;
}

void lsd_server_free(struct lsd_server *srv)
{
    if (!srv)
        return;
    if (srv->accept_timer)
        lc_loop_cancel(srv->loop, srv->accept_timer);
    lc_loop_watch(srv->loop, srv->listen_fd, 0, NULL, NULL);
    close(srv->listen_fd);
    while (srv->sessions)
        lsd_session_shutdown(srv->sessions);
    lsd_dns_free(srv->dns); /* jobs waiting on DNS were cancelled with their sessions: they are freed here */
    lsd_redis_free(srv->redis);
    lsd_tls_free(srv->tls);
    free(srv);
}
