/* fuzz_lsd_rewrite: libFuzzer target for listd's header scanner and post rewriter (lsd_rewrite.c), which see
 * every accepted message. Input: a message (any bytes). Checks: the scan's offsets lie inside the message; the
 * rewritten copy exists when there is room, holds our List-Id exactly once and keeps the body when no footer
 * applies; a second rewrite does not add the subject prefix twice. DMARC paths: the From: mode (keep, munge,
 * wrap) is picked from the input's size; when the post's From: has a valid address and the mode is munge or
 * wrap, the copy's From: must be the list's address. The input is also parsed as a DMARC TXT record and as a
 * domain name (lsd_dmarc_parse, lsd_org_domain): values in range, outputs terminated. */
#include "lsd.h"

#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
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
    enum lsd_from_mode mode = (enum lsd_from_mode)((size >> 1) % 3);
    struct lsd_rewrite rw = {"news@lists.test", "[news]", footer, mode};
    size_t outlen = 0;
    char *out = lsd_rewrite_post(msg, size, &rw, size * 2 + 8192, &outlen);
    if (!out)
        abort(); /* there is always room for our headers in size * 2 + 8192 */
    struct lsd_msginfo mo;
    lsd_msg_scan(out, outlen, "news@lists.test", &mo);
    size_t h = mo.hdrlen + (mo.hdrlen < outlen ? 1 : 0); /* the header and the LF that ends its last line */
    if (count(out, h, "\nList-Id: <news.lists.test>\r\n") + (strncmp(out, "List-Id: <news.lists.test>\r\n", 29) == 0) != 1)
        abort(); /* exactly one List-Id of ours in the header */
    if (mode != LSD_FROM_KEEP && *mi.from && mi.err == LSD_MSG_OK && strcmp(mo.from, "news@lists.test") != 0)
        abort(); /* DMARC mitigation: the copy is from the list */
    struct lsd_dmarc_rec rec;
    if (lsd_dmarc_parse(msg, size, &rec) == 0 && (rec.p < -1 || rec.p > LSD_DMARC_REJECT || rec.sp < -1 ||
                                                  rec.sp > LSD_DMARC_REJECT))
        abort();
    char dom[300], org[64];
    snprintf(dom, sizeof dom, "%.*s", (int)(size < 299 ? size : 299), msg);
    lsd_org_domain(dom, org, sizeof org);
    if (strlen(org) >= sizeof org)
        abort();
    size_t out2len = 0;
    struct lsd_rewrite rw2 = {"news@lists.test", "[news]", "", LSD_FROM_KEEP};
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
