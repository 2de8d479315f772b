#!/usr/bin/env python3
"""doctor_test: `listcast doctor DOMAIN` against a real DNS server (dnsmasq) and fake MX hosts (fakemx.py).

DNS (dnsmasq.py): good.test with two MX hosts (mx1 offers STARTTLS with a certificate made here with openssl,
mx2 does not), one SPF record with ip4:127.0.0.70, DMARC p=quarantine with rua, the DKIM TXT of a local Ed25519
key (selector e1, made with `listcast dkim keygen`) and for the local RSA key s1 the record of another key;
PTR 127.0.0.70 -> out.good.test (A 127.0.0.70: forward-confirmed), PTR 127.0.0.71 -> liar.good.test (A elsewhere).
ok.test: everything in order (exit 0). bad.test: a null MX, no SPF, no DMARC. junk.test: malformed records (a bad
ip4, a non-printable DMARC, a DKIM p= that is not base64, a TXT of binary garbage); dup.test: two SPF records.

Checks: status and fix of every check in --json ({check, status, detail, fix}); the DKIM fix is exactly the record
`listcast dkim ls` prints; the DMARC fix is the documented default record; exit 1 when a check fails, 0 when none
does, 2 on usage errors; malformed answers give fail with a reason, never a crash; text output has publish lines.
Every wait is bounded; everything started is stopped.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsmasq  # noqa: E402
import lctest  # noqa: E402
from sender_test import start_fakemx  # noqa: E402

LISTCAST = lctest.LISTCAST


def run_cli(state, dns_port, mx_port, *args):
    argv = [LISTCAST, "--set", f"state.dir={state}", "--set", f"dns.servers=127.0.0.1:{dns_port}",
            "--set", f"sender.mx_port={mx_port}", "--set", "smtp.hostname=lists.good.test", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def doctor(state, dns_port, mx_port, *args):
    p = run_cli(state, dns_port, mx_port, "doctor", *args, "--json")
    try:
        res = json.loads(p.stdout)
    except ValueError:
        raise AssertionError(f"doctor {args}: not JSON (rc={p.returncode}): {p.stdout!r} {p.stderr!r}")
    return p.returncode, {c["check"]: c for c in res}, p


def main():
    t = lctest.Checks()
    procs = lctest.Procs()
    try:
        run(t, procs)
    except AssertionError as e:
        t.check(False, str(e))
    finally:
        procs.close()
    return t.done()


def run(t, procs):
    tmp = procs.tmp
    state, other = os.path.join(tmp, "state"), os.path.join(tmp, "other")
    # DKIM keys: e1 (published), s1 (a different key published), made with the CLI
    keys = {}
    for st, sel, alg in ((state, "e1", "ed25519"), (state, "s1", "rsa"), (other, "s1", "rsa")):
        p = run_cli(st, 1, 25, "dkim", "keygen", "good.test", "--selector", sel, "--algorithm", alg, "--json")
        t.check(p.returncode == 0, f"dkim keygen {sel} in {os.path.basename(st)}: {p.stderr.strip()}")
        keys[(st, sel)] = json.loads(p.stdout)
    ls = run_cli(state, 1, 25, "dkim", "ls", "good.test", "--json")
    ls_rec = {k["selector"]: k["record"] for k in json.loads(ls.stdout)}

    # certificates for mx1's STARTTLS
    cert, key = os.path.join(tmp, "mx.crt"), os.path.join(tmp, "mx.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=mx1.good.test"], check=True, capture_output=True, timeout=60)
    mx_port = lctest.free_port("127.0.0.61", also=("127.0.0.62",))
    start_fakemx(procs, "mx1", [f"127.0.0.61:{mx_port}"], ["--tls-cert", cert, "--tls-key", key])
    start_fakemx(procs, "mx2", [f"127.0.0.62:{mx_port}"], [])

    dkim_txt = lambda st, sel: keys[(st, sel)]["txt"]  # noqa: E731
    mx = {
        "good.test": [(10, "mx1.good.test", "127.0.0.61"), (20, "mx2.good.test", "127.0.0.62")],
        "ok.test": [(10, "mx1.good.test", "127.0.0.61")],
        "bad.test": [(0, ".", None)],
        "junk.test": [(10, "mx1.good.test", "127.0.0.61")],
        "dup.test": [(10, "mx1.good.test", "127.0.0.61")],
    }
    txt = {
        "good.test": ["v=spf1 ip4:127.0.0.70 -all", "google-site-verification=abc"],
        "_dmarc.good.test": ["v=DMARC1; p=quarantine; rua=mailto:dmarc@good.test"],
        "e1._domainkey.good.test": [dkim_txt(state, "e1")],
        "s1._domainkey.good.test": [dkim_txt(other, "s1")],
        "ok.test": ["v=spf1 mx ~all"],
        "_dmarc.ok.test": ["v=DMARC1; p=none; rua=mailto:r@ok.test"],
        "junk.test": ["v=spf1 ip4:999.1.1.1 -all", "\x80\x81\x7f garbage \x9b"],
        "_dmarc.junk.test": ["v=DMARC1; p=\x80reject"],
        "g1._domainkey.junk.test": ["v=DKIM1; k=rsa; p=!!!not-base64!!!"],
        "dup.test": ["v=spf1 -all", "v=spf1 mx -all"],
        "_dmarc.dup.test": ["v=DMARC1; rua=mailto:x@dup.test"],
    }
    hosts = {"out.good.test": "127.0.0.70", "liar.good.test": "127.0.0.99"}
    ptr = {"127.0.0.70": "out.good.test", "127.0.0.71": "liar.good.test"}
    dns_proc, dns_port = dnsmasq.start(tmp, mx, hosts=hosts, txt=txt, ptr=ptr)
    try:
        checks(t, state, dns_port, mx_port, ls_rec)
    finally:
        dnsmasq.stop(dns_proc)


def checks(t, state, dns_port, mx_port, ls_rec):
    rc, c, p = doctor(state, dns_port, mx_port, "good.test", "--ip", "127.0.0.70")
    st = {k: v["status"] for k, v in c.items()}
    t.check(rc == 1, f"good.test: exit 1 (the s1 key does not match) (rc={rc}, {p.stderr.strip()})")
    t.check(st.get("mx") == "ok" and "10 mx1.good.test" in c["mx"]["detail"], f"mx ok: {c.get('mx')}")
    t.check(st.get("spf") == "ok", f"spf ok: {c.get('spf')}")
    t.check(st.get("spf:127.0.0.70") == "ok", f"sending address authorized by ip4: {c.get('spf:127.0.0.70')}")
    t.check(st.get("dkim:e1") == "ok", f"dkim e1 matches the local key: {c.get('dkim:e1')}")
    t.check(st.get("dkim:s1") == "fail" and c["dkim:s1"]["fix"] == ls_rec["s1"],
            f"dkim s1: published key differs, fix = the record `dkim ls` prints: {c.get('dkim:s1')}")
    t.check(st.get("dmarc") == "ok" and "p=quarantine" in c["dmarc"]["detail"], f"dmarc ok: {c.get('dmarc')}")
    t.check(st.get("fcrdns:127.0.0.70") == "ok" and "out.good.test" in c["fcrdns:127.0.0.70"]["detail"],
            f"fcrdns ok: {c.get('fcrdns:127.0.0.70')}")
    t.check(st.get("starttls:mx1.good.test") == "ok" and "TLS" in c["starttls:mx1.good.test"]["detail"],
            f"mx1 STARTTLS handshake: {c.get('starttls:mx1.good.test')}")
    t.check(st.get("starttls:mx2.good.test") == "warn" and "does not offer STARTTLS" in
            c["starttls:mx2.good.test"]["detail"], f"mx2 without STARTTLS: {c.get('starttls:mx2.good.test')}")
    t.check(all(set(v) == {"check", "status", "detail", "fix"} for v in c.values()), "JSON objects have 4 keys")

    rc, c, _ = doctor(state, dns_port, mx_port, "good.test", "--ip", "127.0.0.71", "--selector", "zz")
    t.check(rc == 1 and c.get("spf:127.0.0.71", {}).get("status") == "fail" and
            "ip4:127.0.0.71" in (c["spf:127.0.0.71"]["fix"] or ""), f"unauthorized address: {c.get('spf:127.0.0.71')}")
    t.check(c.get("fcrdns:127.0.0.71", {}).get("status") == "fail" and
            c["fcrdns:127.0.0.71"]["fix"] == "liar.good.test. IN A 127.0.0.71", f"fcrdns not confirmed: "
            f"{c.get('fcrdns:127.0.0.71')}")
    t.check(c.get("dkim:zz", {}).get("status") == "fail", f"--selector without a record fails: {c.get('dkim:zz')}")

    rc, c, p = doctor(state, dns_port, mx_port, "ok.test")
    st = {k: v["status"] for k, v in c.items()}
    t.check(rc == 0 and "fail" not in st.values(), f"ok.test: exit 0, no fail ({rc}: {st})")
    t.check(st.get("spf:ip") == "warn" and "cannot check" in c["spf:ip"]["detail"], "no --ip: says it cannot check")
    t.check(st.get("fcrdns") == "warn" and st.get("dkim") == "warn", f"no --ip / no key: warn ({st})")

    rc, c, _ = doctor(state, dns_port, mx_port, "bad.test")
    t.check(rc == 1 and c["mx"]["status"] == "fail" and "null MX" in c["mx"]["detail"], f"null MX: {c.get('mx')}")
    t.check(c["spf"]["status"] == "fail" and c["spf"]["fix"] == 'bad.test. IN TXT "v=spf1 mx -all"',
            f"no SPF: {c.get('spf')}")
    t.check(c["dmarc"]["status"] == "fail" and c["dmarc"]["fix"] ==
            '_dmarc.bad.test. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@bad.test"', f"no DMARC: {c.get('dmarc')}")
    t.check(not any(k.startswith("starttls") for k in c), "no STARTTLS check without MX hosts")

    rc, c, p = doctor(state, dns_port, mx_port, "junk.test", "--selector", "g1")
    t.check(rc == 1, f"junk.test: exit 1, no crash (rc={rc}, {p.stderr[-300:]})")
    t.check(c.get("spf", {}).get("status") == "fail" and "bad ip4" in c["spf"]["detail"], f"bad ip4: {c.get('spf')}")
    t.check(c.get("dmarc", {}).get("status") == "fail" and "non-printable" in c["dmarc"]["detail"],
            f"garbage DMARC: {c.get('dmarc')}")
    t.check(c.get("dkim:g1", {}).get("status") == "fail" and "base64" in c["dkim:g1"]["detail"],
            f"garbage DKIM: {c.get('dkim:g1')}")
    rc, c, _ = doctor(state, dns_port, mx_port, "dup.test")
    t.check(c.get("spf", {}).get("status") == "fail" and "2 SPF records" in c["spf"]["detail"], f"two SPF: {c.get('spf')}")
    t.check(c.get("dmarc", {}).get("status") == "fail" and "no p=" in c["dmarc"]["detail"], f"DMARC without p=: "
            f"{c.get('dmarc')}")

    p = run_cli(state, dns_port, mx_port, "doctor", "bad.test")
    t.check(p.returncode == 1 and "publish: _dmarc.bad.test. IN TXT" in p.stdout and "fail" in p.stdout,
            f"text output with publish lines: {p.stdout[:400]}")
    for args in ([], ["good.test", "--ip", "nope"], ["not_a domain"], ["a.test", "b.test"]):
        p = run_cli(state, dns_port, mx_port, "doctor", *args)
        t.check(p.returncode == 2 and p.stderr.startswith("listcast: "), f"usage error {args}: {p.returncode}")
    t.check("Sanitizer" not in p.stderr, "no sanitizer report")


if __name__ == "__main__":
    sys.exit(main())
