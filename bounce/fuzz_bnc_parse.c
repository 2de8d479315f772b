/* fuzz_bnc_parse: libFuzzer target for the bounce parser (bnc_parse, bnc_classify_reply).
 *
 * Every input is parsed as a whole bounce message and, NUL-terminated, classified as an SMTP reply; the
 * report's entries are checked against the documented limits (recipient count, NUL-terminated fields, a
 * reason from the vocabulary, hard only for a failure). The message is parsed twice: with the fast scanner
 * first (bnc_fast.c, falling back to GMime) and with the GMime walk only; when the scanner answered, the two
 * reports must be identical in every field. Any crash, leak, sanitizer report or failed check (abort) is a bug.
 * Seed corpus: shared/corpus/bounces/eml.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bnc.h"
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

static void check_report(const struct bnc_report *r)
{
    size_t n = bnc_report_count(r);
    if (n > BNC_MAX_RCPTS)
        abort();
    for (size_t i = 0; i < n; i++)
        check_rcpt(bnc_report_get(r, i));
    if (bnc_report_get(r, n) != NULL)
        abort();
}

static void same_report(const struct bnc_report *a, const struct bnc_report *b)
{
    if (bnc_report_kind(a) != bnc_report_kind(b) || bnc_report_count(a) != bnc_report_count(b))
        abort();
    for (size_t i = 0; i < bnc_report_count(a); i++) {
        const struct bnc_rcpt *x = bnc_report_get(a, i), *y = bnc_report_get(b, i);
        if (strcmp(x->recipient, y->recipient) || strcmp(x->status, y->status) || x->replycode != y->replycode ||
            strcmp(x->reason, y->reason) || x->hard != y->hard || x->action != y->action ||
            strcmp(x->diag, y->diag) || strcmp(x->command, y->command))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct bnc_report *r = NULL, *g = NULL;
    char err[128];
    bnc_parse_set_path(BNC_PATH_AUTO);
    unsigned long before = bnc_parse_fast_hits();
    int rc = bnc_parse(data, size, &r, err, sizeof err);
    int fast = bnc_parse_fast_hits() != before;
    if (rc == 0)
        check_report(r);
    if (fast) {
        bnc_parse_set_path(BNC_PATH_GMIME);
        if (bnc_parse(data, size, &g, err, sizeof err) != 0)
            abort();
        check_report(g);
        same_report(r, g);
        bnc_report_free(g);
        bnc_parse_set_path(BNC_PATH_AUTO);
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
