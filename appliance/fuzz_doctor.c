/* fuzz_doctor: libFuzzer target for the DNS TXT record parsers of `listcast doctor` (lc_doctor_rec.c): SPF, DMARC
 * and DKIM records and the display escaping, on arbitrary octets (a hostile or broken DNS answer).
 * Contract: no crash, no read past the input, no sanitizer report. Build with -DLISTCAST_FUZZ=ON (clang).
 */
#include "lc_doctor.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct dr_spf spf;
    static struct dr_dmarc dmarc;
    static struct dr_dkim dkim;
    const char *s = (const char *)data;
    char shown[256];
    if (dr_spf_parse(s, size, &spf) == 0)
        (void)dr_spf_covers(&spf, 0x7f000001u);
    (void)dr_dmarc_parse(s, size, &dmarc);
    (void)dr_dkim_parse(s, size, &dkim);
    (void)dr_starts_tag(s, size, "v=DMARC1", 1);
    dr_escape(s, size, shown, sizeof shown);
    return 0;
}
