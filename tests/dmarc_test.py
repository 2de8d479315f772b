#!/usr/bin/env python3
"""dmarc_test.py: DMARC-safe redistribution (issue 7 item 2), end to end on real parts.

Starts redis-server, dnsmasq (MX of sub.test -> 127.0.0.10, and TXT _dmarc records: p=reject, p=quarantine,
p=none, no record, an organizational domain whose sp=reject covers a subdomain without its own record, a record
with an invalid p=, two DMARC records, a non-DMARC TXT), a fake MX on 127.0.0.10 that keeps every message, and
`listcast up` with dns.servers pointing at dnsmasq. Posts from each domain to three lists whose subscriber is
alice@sub.test: dmarc_mitigation unset (munge, the default), "wrap" (with a footer) and "none". Checks the copies
at the fake MX: From rewritten to "Name via LIST" <LIST> with Reply-To the poster (an existing Reply-To kept)
for reject and quarantine; wrapped as message/rfc822 in a message from the list (the original untouched inside);
From kept for p=none, no record, invalid records and mitigation none; and that listd logged each decision.
"""
import email
import email.policy
import json
import os
import smtplib
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsmasq  # noqa: E402
import lctest  # noqa: E402
from lctest import LISTCAST, wait_for  # noqa: E402

TALK, WRAP, KEEP = "talk@lists.test", "wrapped@lists.test", "keep@lists.test"
ALICE = "alice@sub.test"
TXT = {
    "_dmarc.reject.test": ["v=DMARC1; p=reject; rua=mailto:d@reject.test"],
    "_dmarc.quar.test": ["v=DMARC1; p=quarantine; pct=50"],
    "_dmarc.none.test": ["v=DMARC1; p=none"],
    "_dmarc.org.test": ["v=DMARC1; p=none; sp=reject"],
    "_dmarc.bogus.test": ["v=DMARC1; p=bogus"],
    "_dmarc.two.test": ["v=DMARC1; p=reject", "v=DMARC1; p=quarantine"],
    "_dmarc.spf.test": ["v=spf1 -all"],
    "_dmarc.split.test": [["v=DMARC1; ", "p=reject"]],
}


class Mail:
    def __init__(self, log, maildir):
        self.log, self.maildir = log, maildir

    def rows(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [json.loads(line) for line in f if line.strip()]

    def find(self, subject):
        for r in self.rows():
            with open(os.path.join(self.maildir, "%d.eml" % r["msg"]), "rb") as f:
                raw = f.read()
            m = email.message_from_bytes(raw, policy=email.policy.compat32)
            if subject in (m["Subject"] or ""):
                return m, raw
        return None


def post(port, sender, frm, rcpt, subject, extra=""):
    msg = (f"From: {frm}\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n"
           f"Message-ID: <{time.time()}.{os.getpid()}@x.test>\r\n{extra}\r\nBody of {subject}.\r\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.x.test")
        s.docmd(f"MAIL FROM:<{sender}>")
        code, _ = s.docmd(f"RCPT TO:<{rcpt}>")
        if code != 250:
            return code
        code2, _ = s.data(msg.encode())
        return code2


def main():
    t = lctest.Checks()
    procs = lctest.Procs()
    try:
        run(t, procs)
    except AssertionError as e:
        t.check(False, str(e))
        sys.stdout.write(f"--- listcast log (tail) ---\n{procs.log('listcast')[-8000:]}\n")
    finally:
        procs.close()
    return t.done()


def run(t, procs):
    tmp = procs.tmp
    _, redis_url = lctest.start_redis(procs)
    dns_proc, dns_port = dnsmasq.start(tmp, {"sub.test": [(10, "mx.sub.test", "127.0.0.10")]}, txt=TXT)
    procs.procs.append(dns_proc)
    rc, ans = dnsmasq.query(dns_port, "_dmarc.split.test", "TXT")
    t.check(rc == 0 and ans and b"p=reject" in (ans[0] if isinstance(ans[0], bytes) else ans[0].encode()),
            f"dnsmasq serves the _dmarc TXT records ({rc} {ans})")
    mx_port = lctest.free_port("127.0.0.10")
    mxlog, maildir = os.path.join(tmp, "mx.jsonl"), os.path.join(tmp, "maildir")
    fake = procs.start("fakemx", [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakemx.py"),
                                  "--log", mxlog, "--maildir", maildir, "--listen", f"127.0.0.10:{mx_port}"],
                       stdout=subprocess.PIPE)
    wait_for("fakemx ready", lambda: fake.stdout.readline().strip() == b"ready", 15)
    mail = Mail(mxlog, maildir)
    port, http_port = lctest.free_port(), lctest.free_port()
    state = os.path.join(tmp, "state")
    cfg = ["--set", f"redis.url={redis_url}", "--set", f"state.dir={state}",
           "--set", f"dns.servers=127.0.0.1:{dns_port}", "--set", f"sender.mx_port={mx_port}",
           "--set", f"smtp.listen=127.0.0.1:{port}", "--set", f"http.listen=127.0.0.1:{http_port}",
           "--set", "smtp.hostname=listcast.test"]
    procs.start("listcast", [LISTCAST, "up", *cfg])

    def banner():
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as s:
            return s.noop()[0] == 250
    wait_for("listd banner", banner, 30)

    def cli(*args):
        return subprocess.run([LISTCAST, *args, *cfg], capture_output=True, text=True, timeout=60)
    for lst in (TALK, WRAP, KEEP):
        r = cli("list", "create", lst, "--policy", "open")
        t.check(r.returncode == 0, f"list create {lst}")
        r = cli("sub", "add", lst, ALICE)
        t.check(r.returncode == 0, f"sub add {lst}")
    r = cli("list", "set", WRAP, "--dmarc-mitigation", "wrap", "--footer", "-- \nwrapped footer",
            "--subject-prefix", "[w]")
    t.check(r.returncode == 0, f"list set {WRAP} --dmarc-mitigation wrap ({r.stderr.strip()})")
    r = cli("list", "set", KEEP, "--dmarc-mitigation", "none")
    t.check(r.returncode == 0, "list set --dmarc-mitigation none")

    cases = [  # (list, sender, From:, subject, extra headers, expected: munge | wrap | keep)
        (TALK, "poster@reject.test", '"Rita Reject" <poster@reject.test>', "t-reject", "", "munge"),
        (TALK, "q@quar.test", "q@quar.test", "t-quar", "", "munge"),
        (TALK, "n@none.test", "Nina <n@none.test>", "t-none", "", "keep"),
        (TALK, "x@norec.test", "Xavier <x@norec.test>", "t-norec", "", "keep"),
        (TALK, "s@deep.sub.org.test", "Sub <s@deep.sub.org.test>", "t-orgsp", "", "munge"),
        (TALK, "b@bogus.test", "b@bogus.test", "t-bogus", "", "keep"),
        (TALK, "two@two.test", "two@two.test", "t-two", "", "keep"),
        (TALK, "f@spf.test", "f@spf.test", "t-spf", "", "keep"),
        (TALK, "p@split.test", "=?utf-8?q?J=C3=B6rg?= <p@split.test>", "t-split", "", "munge"),
        (TALK, "rt@reject.test", "Rob <rt@reject.test>", "t-replyto", "Reply-To: <elsewhere@sub.test>\r\n",
         "munge"),
        (WRAP, "poster@reject.test", '"Rita Reject" <poster@reject.test>', "w-reject", "", "wrap"),
        (WRAP, "n@none.test", "Nina <n@none.test>", "w-none", "", "keep"),
        (KEEP, "poster@reject.test", '"Rita Reject" <poster@reject.test>', "k-reject", "", "keep"),
    ]
    for lst, sender, frm, subj, extra, _ in cases:
        code = post(port, sender, frm, lst, subj, extra)
        t.check(code == 250, f"{subj}: post accepted ({code})")
    got = {}
    for lst, sender, frm, subj, extra, want in cases:
        try:
            got[subj] = wait_for(f"{subj} at the MX", lambda s=subj: mail.find(s), 60)
        except Exception as e:  # noqa: BLE001
            t.check(False, f"{subj}: delivered ({e})")
    for lst, sender, frm, subj, extra, want in cases:
        if subj not in got:
            continue
        m, raw = got[subj]
        local = lst.split("@")[0]
        f = m["From"] or ""
        if want == "keep":
            t.check(f == frm and m["X-Original-From"] is None and
                    (m["Reply-To"] or "") == (extra.split(": ", 1)[1].strip() if extra else ""),
                    f"{subj}: From kept ({f})")
        elif want == "munge":
            t.check(f.endswith(f" via {local}\" <{lst}>") or f.endswith(f" via \"{local}\" <{lst}>"),
                    f"{subj}: From rewritten to the list ({f})")
            addr = sender
            t.check(addr in (m["X-Original-From"] or ""), f"{subj}: X-Original-From is the poster's From")
            if extra:
                t.check(m["Reply-To"] == "<elsewhere@sub.test>" and len(m.get_all("Reply-To")) == 1,
                        f"{subj}: the post's own Reply-To kept ({m['Reply-To']})")
            else:
                t.check(addr in (m["Reply-To"] or ""), f"{subj}: Reply-To is the poster ({m['Reply-To']})")
            t.check(len(m.get_all("From")) == 1 and m["List-Id"], f"{subj}: one From, list headers")
        else:  # wrap
            t.check(f.endswith(f" via {local}\" <{lst}>"), f"{subj}: outer From is the list ({f})")
            t.check(sender in (m["Reply-To"] or ""), f"{subj}: outer Reply-To is the poster")
            t.check(m["Subject"].startswith("[w] ") and m["List-Id"] == "<wrapped.lists.test>",
                    f"{subj}: outer Subject prefixed, List-Id")
            parts = m.get_payload() if m.is_multipart() else []
            inner = parts[0].get_payload()[0] if parts and parts[0].get_content_type() == "message/rfc822" else None
            t.check(m.get_content_type() == "multipart/mixed" and inner is not None,
                    f"{subj}: multipart/mixed holding message/rfc822 ({m.get_content_type()})")
            if inner is not None:
                t.check(inner["From"] == frm and inner["Subject"] == subj and inner["List-Id"] is None,
                        f"{subj}: the original inside, untouched ({inner['From']}, {inner['Subject']})")
            t.check(len(parts) == 2 and "wrapped footer" in parts[1].get_payload(decode=True).decode(),
                    f"{subj}: footer as a second part")
    log = procs.log("listcast")
    t.check("dmarc=munged (p=reject at _dmarc.reject.test)" in log, "listd logs the munge decision")
    t.check("dmarc=munged (sp=reject at _dmarc.org.test)" in log, "listd logs the organizational-domain sp=")
    t.check("dmarc=wrapped" in log, "listd logs the wrap decision")
    t.check(not lctest.sanitizer_reports(procs), "no sanitizer reports")


if __name__ == "__main__":
    sys.exit(main())
