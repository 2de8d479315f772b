/* fuzz_bnc_parse: libFuzzer target for the bounce parser (bnc_parse, bnc_classify_reply).
 *
 * Every input is parsed as a whole bounce message and, NUL-terminated, classified as an SMTP reply; the
 * report's entries are checked against the documented limits (recipient count, NUL-terminated fields, a
 * reason from the vocabulary, hard only for a failure). Any crash, leak, sanitizer report or failed check
 * (abort) is a bug. Seed corpus: shared/corpus/bounces/eml.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bnc_parse.h"

static void check_rcpt(const struct bnc_rcpt *e)
{
    if (!e || !e->reason || !e->reason[0])
        abort();
    if (memchr(e->recipient, 0, sizeof e->recipient) == NULL || memchr(e->status, 0, sizeof e->status) == NULL ||
        memchr(e->diag, 0, sizeof e->diag) == NULL)
        abort();
    if (e->hard && e->action != BNC_FAILED)
        abort();
    if (e->replycode < 0 || e->replycode > 999)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct bnc_report *r = NULL;
    char err[128];
    if (bnc_parse(data, size, &r, err, sizeof err) == 0) {
        size_t n = bnc_report_count(r);
        if (n > BNC_MAX_RCPTS)
            abort();
        for (size_t i = 0; i < n; i++)
            check_rcpt(bnc_report_get(r, i));
        if (bnc_report_get(r, n) != NULL)
            abort();
    }
    bnc_report_free(r);

    if (size < 65536) {
        char *s = malloc(size + 1);
        if (!s)
            abort();
        memcpy(s, data, size);
        s[size] = 0;
        struct bnc_rcpt e;
        bnc_classify_reply(s, &e);
        check_rcpt(&e);
        free(s);
    }
    return 0;
}
