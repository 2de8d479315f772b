/* lc_doctor: `listcast doctor DOMAIN [--selector S]... [--ip ADDR]...`: bulk-sender compliance checks of a
 * sending domain (issue 7 item 3): MX, SPF, DKIM (every local key and --selector), DMARC, forward-confirmed
 * reverse DNS of the sending addresses and STARTTLS of the MX hosts, each ok / warn / fail with what is missing
 * and the exact record to publish. The checks are the lc_doctor library (lc_doctor_check.c, shared with the web
 * UI's /doctor page); this file is the command line and the text output.
 *
 * Contract: the sending addresses are the host's outbound addresses, given with --ip (none given: the SPF and
 * reverse DNS checks say they cannot check). The run has no overall time bound (each DNS query and SMTP step is
 * bounded, see lc_doctor_check.c). Output: one block per check, or with --json an array of {check, status,
 * detail, fix} (fix null when there is nothing to publish). Exit 0 when no check failed, 1 when one did, 2 on
 * usage errors.
 * Limits: at most LC_DOCTOR_SEL_MAX --selector and LC_DOCTOR_IPS_MAX --ip.
 */
#include "lc_cli.h"
#include "lc_dkim.h"
#include "lc_doctor.h"
#include "lc_json.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#define MAX_SEL LC_DOCTOR_SEL_MAX
#define MAX_IPS LC_DOCTOR_IPS_MAX

static const char page_doctor[] =
    "NAME\n"
    "  listcast doctor - check a sending domain's DNS and MX hosts against the bulk-sender rules\n"
    "\n"
    "SYNOPSIS\n"
    "  listcast doctor DOMAIN [--selector S]... [--ip ADDR]... [--json]\n"
    "\n"
    "DESCRIPTION\n"
    "  Checks, with the DNS servers of dns.servers (or the system resolver):\n"
    "    mx          MX records (a null MX or none at all fails: bounces and list mail cannot arrive)\n"
    "    spf         one TXT \"v=spf1 ...\" at DOMAIN, well-formed, ending in -all or ~all, at most 10 lookups\n"
    "    spf:ADDR    the record authorizes each sending address (ip4, a and mx terms are checked)\n"
    "    dkim:S      the TXT at S._domainkey.DOMAIN for every key in STATE.DIR/dkim/DOMAIN and every\n"
    "                --selector: published, well-formed, and its p= is the local key's public key\n"
    "    dmarc       the TXT at _dmarc.DOMAIN: present, v=DMARC1, its p= policy, a rua= report address\n"
    "    fcrdns:ADDR forward-confirmed reverse DNS: the PTR of each sending address, and the A records of\n"
    "                that name, which must hold the address\n"
    "    starttls:H  each MX host (port sender.mx_port) offers STARTTLS and the TLS handshake completes\n"
    "  Each check is ok, warn or fail, with what is missing and the exact record to publish. The sending\n"
    "  addresses are this host's outbound addresses; without --ip the address checks say they cannot check.\n"
    "  With --json: an array of {\"check\", \"status\", \"detail\", \"fix\"} (fix null when nothing to publish).\n"
    "\n"
    "OPTIONS\n"
    "  --selector S       also check the DKIM selector S (repeatable)\n"
    "  --ip ADDR          a sending IPv4 address of this host (repeatable)\n" LC_HELP_COMMON_OPTIONS
    "\n"
    "EXIT STATUS\n"
    "  0 no check failed, 1 at least one check failed (or Redis/DNS setup failed), 2 usage error.\n"
    "\n"
    "EXAMPLES\n"
    "  listcast doctor lists.example.org --ip 203.0.113.5\n"
    "  listcast doctor lists.example.org --selector s1 --json\n";

const struct lc_page lc_pages_doctor[] = {{"doctor", page_doctor}, {NULL, NULL}};
/* ---- the command ---- */

static void print(struct lc_ctx *ctx, const struct lc_doctor_report *r)
{
    if (ctx->json) {
        struct lc_json *j = lc_json_out();
        lc_doctor_json(j, r);
        lc_json_done(j, LC_EXIT_OK);
        return;
    }
    int nst[3] = {0, 0, 0};
    for (int i = 0; i < r->n; i++) {
        const struct lc_doctor_check *c = &r->c[i];
        nst[c->status]++;
        printf("%-4s  %-22s %s\n", lc_doctor_status_name(c->status), c->name, c->detail);
        if (c->fix[0])
            printf("      %-22s publish: %s\n", "", c->fix);
    }
    printf("\n%s: %d ok, %d warn, %d fail\n", r->domain, nst[0], nst[1], nst[2]);
}

int lc_cmd_doctor(struct lc_ctx *ctx, int argc, char **argv)
{
    enum { O_SEL = 1, O_IP };
    static const struct lc_opt opts[] = {{"selector", 's', 1, O_SEL}, {"ip", 0, 1, O_IP}, {NULL, 0, 0, 0}};
    const char *sels[MAX_SEL], *ips[MAX_IPS], *domain = NULL;
    int nsel = 0, nips = 0, status;
    struct lc_optstate st;
    lc_opt_init(&st, argc, argv);
    int o;
    while ((o = lc_opt_next(ctx, &st, opts, &status)) != -1) {
        if (o == -2)
            return status;
        if (o == O_SEL) {
            if (nsel >= MAX_SEL)
                return lc_usage(ctx, "doctor: at most %d --selector", MAX_SEL);
            if (strlen(st.arg) > 63 || !lc_dkim_name_ok(st.arg))
                return lc_usage(ctx, "doctor: '%.100s' is not a selector", st.arg);
            sels[nsel++] = st.arg;
        } else if (o == O_IP) {
            struct in_addr a4;
            struct in6_addr a6;
            if (nips >= MAX_IPS)
                return lc_usage(ctx, "doctor: at most %d --ip", MAX_IPS);
            if (inet_pton(AF_INET, st.arg, &a4) != 1 && inet_pton(AF_INET6, st.arg, &a6) != 1)
                return lc_usage(ctx, "doctor: '%.100s' is not an IP address", st.arg);
            ips[nips++] = st.arg;
        } else if (!domain) {
            domain = st.arg;
        } else {
            return lc_usage(ctx, "doctor: unexpected argument '%.200s'", st.arg);
        }
    }
    if (!domain)
        return lc_usage(ctx, "doctor: missing DOMAIN (see listcast doctor --help)");
    if (!lc_doctor_domain_ok(domain))
        return lc_usage(ctx, "doctor: '%.100s' is not a domain name", domain);

    int rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS)
        return lc_refused(ctx, "c-ares: %s", ares_strerror(rc));
    struct lc_doctor_opts dopt = {
        .domain = domain,
        .helo = lc_cfg_str(ctx->cfg, "smtp.hostname"),
        .mx_port = (long)lc_cfg_int(ctx->cfg, "sender.mx_port"),
        .dns_servers = lc_cfg_str(ctx->cfg, "dns.servers"),
        .state_dir = lc_cfg_str(ctx->cfg, "state.dir"),
        .sels = sels,
        .nsel = nsel,
        .ips = ips,
        .nips = nips,
    };
    char err[2048];
    struct lc_doctor_report *r = lc_doctor_run(&dopt, err, sizeof err);
    ares_library_cleanup();
    if (!r)
        return lc_refused(ctx, "%s", err);
    print(ctx, r);
    int failed = lc_doctor_failed(r);
    lc_doctor_report_free(r);
    return failed ? LC_EXIT_REFUSED : LC_EXIT_OK;
}
