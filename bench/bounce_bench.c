/* bounce_bench: parse+classify throughput of the bounce parser (lc_bounce) on one core.
 *
 * Usage: bounce_bench [-s SECONDS] FILE...
 * Loads every FILE into memory, then parses them round-robin (bnc_parse: MIME walk, DSN/ARF/JSON/free-text
 * recognisers and classification of every recipient) on this one thread for SECONDS (default 5) and prints
 * the count, the wall-clock rate and the rate per CPU second of this process (the figure for "one core" on a
 * shared machine), the failed-recipient entries found (so the work cannot be optimised away) and the share of
 * parses the fast scanner (bnc_fast.c) answered without GMime (a file of several messages counts when it
 * answered one). Built and run by bench/bounce.sh against a release build; not installed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bnc.h"
#include "bnc_parse.h"

static double clock_s(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        if (!k)
            break;
        n += k;
    }
    fclose(f);
    *len = n;
    return buf;
}

int main(int argc, char **argv)
{
    double secs = 5;
    int i = 1;
    if (argc > 2 && !strcmp(argv[1], "-s")) {
        secs = atof(argv[2]);
        i = 3;
    }
    int n = argc - i;
    if (n <= 0) {
        fprintf(stderr, "usage: bounce_bench [-s SECONDS] FILE...\n");
        return 2;
    }
    char **msg = calloc((size_t)n, sizeof *msg);
    size_t *len = calloc((size_t)n, sizeof *len);
    for (int k = 0; k < n; k++)
        if (!(msg[k] = slurp(argv[i + k], &len[k]))) {
            fprintf(stderr, "bounce_bench: cannot read %s\n", argv[i + k]);
            return 1;
        }
    bnc_init();
    long done = 0, failures = 0, fast = 0;
    double t0 = now(), t = t0, c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    while (t - t0 < secs) {
        for (int k = 0; k < n; k++) {
            struct bnc_report *r;
            char err[128];
            unsigned long before = bnc_parse_fast_hits();
            if (bnc_parse(msg[k], len[k], &r, err, sizeof err) == 0)
                for (size_t e = 0; e < bnc_report_count(r); e++)
                    failures += bnc_report_get(r, e)->action == BNC_FAILED;
            bnc_report_free(r);
            fast += bnc_parse_fast_hits() != before;
            done++;
        }
        t = now();
    }
    double cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    printf("messages %ld seconds %.2f rate %.0f/s wall, cpu %.2f s: %.0f/s per CPU second; failures %ld; "
           "fast path %.1f%%\n",
           done, t - t0, (double)done / (t - t0), cpu, (double)done / cpu, failures,
           done ? 100.0 * (double)fast / (double)done : 0.0);
    return 0;
}
