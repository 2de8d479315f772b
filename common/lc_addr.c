/* lc_addr: strict, bounded mailbox parsing and normalisation. See lc_addr.h. */
#include "lc_addr.h"

#include <string.h>

static int atext(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80)
        return 1;
    return strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL && c != 0;
}

static unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static int ipv4_literal(const char *d, size_t n)
{
    /* "[a.b.c.d]" with each part 0-255 */
    if (n < 9 || d[0] != '[' || d[n - 1] != ']')
        return 0;
    int parts = 0, val = -1;
    for (size_t i = 1; i < n - 1; i++) {
        char c = d[i];
        if (c >= '0' && c <= '9') {
            val = (val < 0 ? 0 : val * 10) + (c - '0');
            if (val > 255)
                return 0;
        } else if (c == '.' && val >= 0) {
            parts++;
            val = -1;
        } else {
            return 0;
        }
    }
    return parts == 3 && val >= 0;
}

int lc_addr_norm(const char *addr, size_t len, char *out, const char **why)
{
    const char *at = NULL;
    for (size_t i = 0; i < len; i++)
        if (addr[i] == '@')
            at = addr + i; /* last '@': a quoted local part is refused anyway */
    if (len == 0) {
        *why = "empty address";
        return -1;
    }
    if (!at) {
        *why = "no domain";
        return -1;
    }
    size_t ln = (size_t)(at - addr), dn = len - ln - 1;
    if (ln == 0) {
        *why = "empty local part";
        return -1;
    }
    if (ln > 64) {
        *why = "local part longer than 64 octets";
        return -1;
    }
    if (dn == 0) {
        *why = "empty domain";
        return -1;
    }
    if (dn > 255) {
        *why = "domain longer than 255 octets";
        return -1;
    }
    /* local part: dot-atom */
    for (size_t i = 0; i < ln; i++) {
        unsigned char c = (unsigned char)addr[i];
        if (c == '.') {
            if (i == 0 || i == ln - 1 || addr[i - 1] == '.') {
                *why = "misplaced dot in local part";
                return -1;
            }
        } else if (!atext(c)) {
            *why = "bad character in local part";
            return -1;
        }
    }
    const char *d = at + 1;
    if (!ipv4_literal(d, dn)) {
        int dots = 0;
        size_t label = 0;
        for (size_t i = 0; i < dn; i++) {
            unsigned char c = (unsigned char)d[i];
            if (c == '.') {
                if (label == 0 || d[i - 1] == '-') {
                    *why = "bad domain label";
                    return -1;
                }
                dots++;
                label = 0;
            } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80 ||
                       (c == '-' && label > 0)) {
                if (++label > 63) {
                    *why = "domain label longer than 63 octets";
                    return -1;
                }
            } else {
                *why = "bad character in domain";
                return -1;
            }
        }
        if (label == 0 || d[dn - 1] == '-') {
            *why = "bad domain label";
            return -1;
        }
        if (dots == 0) {
            *why = "domain has no dot";
            return -1;
        }
    }
    for (size_t i = 0; i < len; i++)
        out[i] = (char)lower((unsigned char)addr[i]);
    out[len] = 0;
    return 0;
}

const char *lc_addr_domain(const char *addr)
{
    const char *at = strrchr(addr, '@');
    return at ? at + 1 : addr + strlen(addr);
}
