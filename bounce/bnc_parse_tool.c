/* bnc_parse_tool: test driver for the bounce parser (built in the build tree, not installed).
 *
 * Usage: bnc_parse_tool [-a] FILE...      parse each file as a bounce message
 *        bnc_parse_tool -r 'REPLY TEXT'   classify a bare SMTP reply
 * Prints one line per failed recipient: "recipient\tstatus\treplycode\treason\thardbounce"; with -a every
 * entry (delayed, delivered, feedback too) with the action as a sixth column; with several files each line
 * starts with "FILE\t"; -d adds the diagnostic text as a seventh column (implies -a). Files over
 * BNC_MAX_INPUT bytes are reported on stderr. Exit 0, or 1 on an I/O error; with -r, 1 when the text is not
 * a 4xx/5xx reply.
 * Hidden, for tests: bnc_parse_tool -C FILE... parses each file twice, with the GMime walk only and with the
 * fast scanner first (bnc_fast.c), prints "FILE\tfast" or "FILE\tgmime" (who answered the second time) and
 * "\tDIFF" when the two reports differ in any field or in kind; exit 1 when any differs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnc.h"
#include "bnc_parse.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n == cap) {
            if (cap > BNC_MAX_INPUT * 2u)
                break;
            cap *= 2;
            buf = realloc(buf, cap);
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        if (k == 0)
            break;
        n += k;
    }
    fclose(f);
    *len = n;
    return buf;
}

static int show_diag;

static void print_rcpt(const char *prefix, const struct bnc_rcpt *e, int all)
{
    if (!all && e->action != BNC_FAILED)
        return;
    printf("%s%s%s\t%s\t%d\t%s\t%d", prefix ? prefix : "", prefix ? "\t" : "", e->recipient, e->status,
           e->replycode, e->reason, e->hard);
    if (all)
        printf("\t%s", bnc_action_name(e->action));
    if (show_diag)
        printf("\t%s", e->diag);
    printf("\n");
}

/* Do two reports say exactly the same thing? */
static int same_report(const struct bnc_report *a, const struct bnc_report *b)
{
    if (bnc_report_kind(a) != bnc_report_kind(b) || bnc_report_count(a) != bnc_report_count(b))
        return 0;
    for (size_t i = 0; i < bnc_report_count(a); i++) {
        const struct bnc_rcpt *x = bnc_report_get(a, i), *y = bnc_report_get(b, i);
        if (strcmp(x->recipient, y->recipient) || strcmp(x->status, y->status) || x->replycode != y->replycode ||
            strcmp(x->reason, y->reason) || x->hard != y->hard || x->action != y->action ||
            strcmp(x->diag, y->diag) || strcmp(x->command, y->command))
            return 0;
    }
    return 1;
}

/* -C: both paths over every file. */
static int compare(int argc, char **argv)
{
    int rc = 0;
    for (int i = 0; i < argc; i++) {
        size_t len;
        char *buf = slurp(argv[i], &len);
        if (!buf) {
            fprintf(stderr, "bnc_parse_tool: %s: %s\n", argv[i], strerror(errno));
            rc = 1;
            continue;
        }
        struct bnc_report *g = NULL, *a = NULL;
        char err[256];
        bnc_parse_set_path(BNC_PATH_GMIME);
        int rg = bnc_parse(buf, len, &g, err, sizeof err);
        bnc_parse_set_path(BNC_PATH_AUTO);
        unsigned long before = bnc_parse_fast_hits();
        int ra = bnc_parse(buf, len, &a, err, sizeof err);
        int fast = bnc_parse_fast_hits() != before;
        int same = rg == ra && same_report(g, a);
        printf("%s\t%s%s\n", argv[i], fast ? "fast" : "gmime", same ? "" : "\tDIFF");
        if (!same)
            rc = 1;
        bnc_report_free(g);
        bnc_report_free(a);
        free(buf);
    }
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "-C") == 0)
        return compare(argc - 2, argv + 2);
    int all = 0, i = 1, rc = 0;
    if (argc > 2 && strcmp(argv[1], "-r") == 0) {
        struct bnc_rcpt e;
        int r = bnc_classify_reply(argv[2], &e);
        print_rcpt(NULL, &e, 1);
        return r == 0 ? 0 : 1;
    }
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        if (strcmp(argv[i], "-a") == 0)
            all = 1;
        else if (strcmp(argv[i], "-d") == 0)
            show_diag = all = 1;
        else
            break;
    }
    if (i >= argc) {
        fprintf(stderr, "usage: bnc_parse_tool [-a] FILE... | -r REPLY\n");
        return 2;
    }
    int multi = argc - i > 1;
    for (; i < argc; i++) {
        size_t len;
        char *buf = slurp(argv[i], &len);
        if (!buf) {
            fprintf(stderr, "bnc_parse_tool: %s: %s\n", argv[i], strerror(errno));
            rc = 1;
            continue;
        }
        struct bnc_report *r;
        char err[256];
        if (bnc_parse(buf, len, &r, err, sizeof err) < 0) {
            fprintf(stderr, "bnc_parse_tool: %s: %s\n", argv[i], err);
        } else {
            const char *base = strrchr(argv[i], '/');
            base = base ? base + 1 : argv[i];
            for (size_t k = 0; k < bnc_report_count(r); k++)
                print_rcpt(multi ? base : NULL, bnc_report_get(r, k), all);
        }
        bnc_report_free(r);
        free(buf);
    }
    return rc;
}
