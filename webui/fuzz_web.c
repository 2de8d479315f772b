/* fuzz_web: libFuzzer target for the web UI's parsers of untrusted input (web_util.c): the JSON request reader,
 * urlencoded forms and CSV rows. Input: the first byte picks the parser, the rest is the text.
 * Contract: no crash, no leak, no read past the input, whatever the bytes (ASan + UBSan in the fuzz build).
 */
#include "web.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int which = data[0] % 3;
    char *text = malloc(size);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;
    char err[256], out[512];
    const char *why;
    if (which == 0) {
        struct web_jv *v = web_json_parse(text, size - 1, err, sizeof err);
        if (v) {
            size_t n = 0;
            (void)web_json_str(v, "address");
            (void)web_json_strs(v, "addresses", &n);
            (void)web_json_has(v, "action");
        }
        web_json_free(v);
    } else if (which == 1) {
        if (web_form_check(text) == 0) {
            (void)web_form_get(text, "csrf", out, sizeof out);
            (void)web_form_get(text, "address", out, 8);
        }
    } else {
        (void)web_csv_field(text, out, sizeof out, &why);
    }
    free(text);
    return 0;
}
