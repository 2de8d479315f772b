/* lc_addr: RFC 5321 mailbox syntax, bounded and strict, for subscriber and list addresses.
 *
 * Accepted: dot-atom local part (RFC 5322 atext and dots, no leading/trailing/double dot) up to 64 octets,
 * '@', a domain of LDH labels (or UTF-8 octets >= 0x80, for SMTPUTF8) up to 255 octets with at least one dot,
 * or a bracketed IPv4 literal. Quoted local parts are refused (a list appliance has no use for them and they
 * cannot be stored one-per-line). Normalised form: the domain lower-cased; the local part lower-cased too,
 * because subscriptions are matched case-insensitively (documented in schema/SCHEMA.md).
 */
#ifndef LC_ADDR_H
#define LC_ADDR_H

#include <stddef.h>

#define LC_ADDR_MAX 320 /* 64 + 1 + 255 */

/* lc_addr_norm checks addr (len bytes, no NUL needed) and writes its normalised form (NUL-terminated) to out
 * (at least LC_ADDR_MAX+1 bytes). Returns 0, or -1 with a short reason in *why (static string). */
int lc_addr_norm(const char *addr, size_t len, char *out, const char **why);

/* lc_addr_domain returns a pointer to the domain part of a normalised address (after '@'). */
const char *lc_addr_domain(const char *addr);

#endif
