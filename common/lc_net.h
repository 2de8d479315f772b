/* lc_net: small socket helpers: parse "host:port", listen, non-blocking connect.
 * IPv4 dotted quads and bracketed IPv6 ("[::1]:25") are accepted; host names are not resolved here.
 */
#ifndef LC_NET_H
#define LC_NET_H

#include <stddef.h>
#include <sys/socket.h>

/* lc_net_parse splits "host:port" into a sockaddr (numeric host only). Returns 0 or -1. */
int lc_net_parse(const char *hostport, struct sockaddr_storage *ss, socklen_t *len);
/* lc_net_addr makes a sockaddr from a numeric IP string and a port. Returns 0 or -1. */
int lc_net_addr(const char *ip, int port, struct sockaddr_storage *ss, socklen_t *len);
/* lc_net_listen binds and listens (SO_REUSEADDR, non-blocking, close-on-exec). Returns fd or -1 (errno). */
int lc_net_listen(const char *hostport, int backlog);
/* lc_net_connect starts a non-blocking connect; returns fd (connect may be in progress) or -1 (errno). */
int lc_net_connect(const struct sockaddr_storage *ss, socklen_t len);
/* lc_net_nonblock sets O_NONBLOCK and FD_CLOEXEC. Returns 0 or -1. */
int lc_net_nonblock(int fd);
/* lc_net_ntop renders a sockaddr as "ip:port" into out. */
void lc_net_ntop(const struct sockaddr_storage *ss, char *out, size_t outlen);

#endif
