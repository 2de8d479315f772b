/* fuzz_lsd_rewrite: libFuzzer target for listd's header scanner and post rewriter (lsd_rewrite.c), which see
 * every accepted message. Input: a message (any bytes). Checks: the scan's offsets lie inside the message; the
 * rewritten copy exists when there is room, holds our List-Id exactly once and keeps the body when no footer
 * applies; a second rewrite does not add the subject prefix twice. */
#include "lsd.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static size_t count(const char *h, size_t n, const char *needle)
{
    size_t k = 0, m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(h + i, needle, m) == 0)
            k++;
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536 * 2)
        return 0;
    char *msg = malloc(size ? size : 1);
    memcpy(msg, data, size);
    struct lsd_msginfo mi;
    lsd_msg_scan(msg, size, "news@lists.test", &mi);
    if (mi.body > size || mi.hdrlen > size || strlen(mi.subject) >= sizeof mi.subject)
        abort();
    const char *footer = (size & 1) ? "-- \nfooter line\n" : "";
    struct lsd_rewrite rw = {"news@lists.test", "[news]", footer};
    size_t outlen = 0;
    char *out = lsd_rewrite_post(msg, size, &rw, size * 2 + 8192, &outlen);
    if (!out)
        abort(); /* there is always room for our headers in size * 2 + 8192 */
    struct lsd_msginfo mo;
    lsd_msg_scan(out, outlen, "news@lists.test", &mo);
    size_t h = mo.hdrlen + (mo.hdrlen < outlen ? 1 : 0); /* the header and the LF that ends its last line */
    if (count(out, h, "\nList-Id: <news.lists.test>\r\n") + (strncmp(out, "List-Id: <news.lists.test>\r\n", 29) == 0) != 1)
        abort(); /* exactly one List-Id of ours in the header */
    size_t out2len = 0;
    struct lsd_rewrite rw2 = {"news@lists.test", "[news]", ""};
    char *out2 = lsd_rewrite_post(out, outlen, &rw2, outlen * 2 + 8192, &out2len);
    if (!out2)
        abort();
    struct lsd_msginfo m1, m2;
    lsd_msg_scan(out, outlen, "news@lists.test", &m1);
    lsd_msg_scan(out2, out2len, "news@lists.test", &m2);
    if (m1.has_subject && strcmp(m1.subject, m2.subject) != 0 && m1.err == LSD_MSG_OK)
        abort(); /* the prefix is never added twice */
    free(out2);
    free(out);
    free(msg);
    return 0;
}
