#!/usr/bin/env python3
"""probe_test: the bounce probe, out and back (issue 5), on the whole appliance (`listcast up`).

Starts redis-server, dnsmasq with MX records for a.test..f.test (all at one fake MX on 127.0.0.10), tests/fakemx.py
and `listcast up`; makes the list news@lists.test (bounce_threshold 2, bounce_soft 1, probe_delay 5 s) with
alice@a.test, bob@b.test, carol@c.test, dave@d.test and fred@f.test, and quiet@lists.test (probe 0: probes off)
with erin@e.test, and gina@d.test. One post to each list gives every subscriber a VERP address. Then the fake MX is restarted with
rules that answer 550 5.1.1 to RCPT TO:<bob@b.test> and 554 5.7.1 (blocklist) to RCPT TO:<fred@f.test>, and two
"mailbox full" DSNs are sent through listd to each of alice's, bob's, carol's and fred's VERP addresses, and one
"user unknown" DSN to erin's. Checks:
  - at the threshold delivery is disabled (status disabled, out of lc:active, probe pending, indexed), and a
    probe goes out: a notice (kind notice, probe 1) whose MAIL FROM at the fake MX is a VERP address that decodes
    (with the appliance secret) to the probe's post id and the subscriber, From news-owner@, Auto-Submitted,
    Message-ID, a Subject saying delivery is suspended;
  (a) alice's probe is accepted: status active again, back in lc:active (address -> id), score 0, no probe or
      disabled_* field left; a 5.7.1 spam DSN to the probe's address afterwards (policy: no evidence about the
      mailbox) leaves her active;
  (b) bob's probe is refused at RCPT with 550 5.1.1: unsubscribed (unsubscribed_reason probe), out of lc:active;
  (c) carol's probe is accepted (re-enabled), then a forged DSN (the probe's VERP address with a bad MAC) is
      refused by listd and changes nothing, then a 5.1.1 DSN to the probe's MAIL FROM unsubscribes her;
  - fred's probe refused for a policy reason (5.7.1): probe=refused, left disabled; `sub show` says so;
  - gina's probe is deferred (451 at RCPT), so it stays in flight; its post hash is then deleted: probe=lost,
    left disabled, out of lc:probe:sent (the outcome of a probe whose post is gone);
  - erin (list with probe 0) stays disabled, gets no probe, has no probe field; dave is untouched;
  - the probe indexes lc:probe:pending and lc:probe:sent end empty; log lines; no sanitizer report; clean stop.
Every wait is bounded; everything started is stopped and the temporary directory removed.
"""
import json
import os
import re
import signal
import smtplib
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsmasq  # noqa: E402
import lctest  # noqa: E402
from lctest import LISTCAST, wait_for  # noqa: E402

LIST = "news@lists.test"
QUIET = "quiet@lists.test"
ALICE, BOB, CAROL, DAVE, ERIN = "alice@a.test", "bob@b.test", "carol@c.test", "dave@d.test", "erin@e.test"
FRED, GINA = "fred@f.test", "gina@d.test"
FAKEMX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakemx.py")


def cli(cfg, *args, stdin=None):
    return subprocess.run([LISTCAST, *args, *cfg], input=stdin, capture_output=True, text=True, timeout=60)


def dsn(verp, rcpt, status="5.1.1", diag=None):
    diag = diag or f"smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table"
    return f"""From: MAILER-DAEMON@mx.test
To: {verp}
Subject: Undelivered Mail Returned to Sender
Date: Mon, 23 Nov 2026 12:00:00 +0000
Message-ID: <dsn-{time.monotonic_ns()}@mx.test>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"

--BOUNDARY
Content-Type: text/plain

This is the mail system at host mx.test. Your message could not be delivered.

--BOUNDARY
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.test

Final-Recipient: rfc822; {rcpt}
Original-Recipient: rfc822;{rcpt}
Action: failed
Status: {status}
Diagnostic-Code: {diag}

--BOUNDARY
Content-Type: text/rfc822-headers

From: news-owner@lists.test
To: {rcpt}
Subject: hello

--BOUNDARY--
""".replace("\n", "\r\n")


def full(verp, rcpt):
    return dsn(verp, rcpt, "5.2.2", "smtp; 552 5.2.2 <%s>: Mailbox full" % rcpt)


def send_bounce(port, verp, msg):
    """Sends one bounce (MAIL FROM:<>) to verp through listd; returns the RCPT reply code (and 250 for DATA)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("mx.test")
        s.docmd("MAIL FROM:<>")
        code, _ = s.docmd(f"RCPT TO:<{verp}>")
        if code != 250:
            return code
        code, _ = s.data(msg.encode())
        return code


def post(port, lst, subject):
    msg = (f"From: Owner <owner@example.test>\r\nTo: {lst}\r\nSubject: {subject}\r\n"
           f"Message-ID: <{subject.replace(' ', '-')}@example.test>\r\n\r\nHello subscribers.\r\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("example.test")
        s.docmd("MAIL FROM:<owner@example.test>")
        s.docmd(f"RCPT TO:<{lst}>")
        code, resp = s.data(msg.encode())
    return code, int(resp.decode().split()[-1]) if code == 250 else 0


def rows(mxlog):
    if not os.path.exists(mxlog):
        return []
    with open(mxlog) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    t = lctest.Checks()
    procs = lctest.Procs()
    try:
        run(t, procs)
    except AssertionError as e:
        t.check(False, str(e))
        for name in ("listcast", "fakemx", "fakemx2"):
            sys.stdout.write(f"--- {name} log (tail) ---\n{procs.log(name)[-8000:]}\n")
    finally:
        procs.close()
    return t.done()


def start_fakemx(procs, name, port, mxlog, rules=None):
    argv = [sys.executable, FAKEMX, "--log", mxlog, "--listen", f"127.0.0.10:{port}"]
    if rules:
        path = os.path.join(procs.tmp, name + ".json")
        with open(path, "w") as f:
            json.dump(rules, f)
        argv += ["--script", path]
    p = procs.start(name, argv, stdout=subprocess.PIPE)
    wait_for(f"{name} ready", lambda: p.stdout.readline().strip() == b"ready", 15)
    return p


def run(t, procs):
    tmp = procs.tmp
    _, url = lctest.start_redis(procs)
    r = lctest.Redis(url)

    domains = ["a.test", "b.test", "c.test", "d.test", "e.test", "f.test"]
    dns_proc, dns_port = dnsmasq.start(tmp, {d: [(10, "mx.test", "127.0.0.10")] for d in domains})
    procs.procs.append(dns_proc)
    mx_port = lctest.free_port("127.0.0.10")
    mxlog = os.path.join(tmp, "mx.jsonl")
    fake = start_fakemx(procs, "fakemx", mx_port, mxlog)

    smtp_port, http_port = lctest.free_port(), lctest.free_port()
    state = os.path.join(tmp, "state")
    cfg = ["--set", f"redis.url={url}", "--set", f"state.dir={state}",
           "--set", f"dns.servers=127.0.0.1:{dns_port}", "--set", f"sender.mx_port={mx_port}",
           "--set", f"smtp.listen=127.0.0.1:{smtp_port}", "--set", f"http.listen=127.0.0.1:{http_port}",
           "--set", "smtp.hostname=listcast.test"]
    up = procs.start("listcast", [LISTCAST, "up", *cfg])

    def banner():
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=5) as s:
            return s.noop()[0] == 250
    wait_for("listd banner", banner, 30)

    for lst in (LIST, QUIET):
        c = cli(cfg, "list", "create", lst, "--policy", "open", "--owner", "owner@example.test")
        t.check(c.returncode == 0, f"list create {lst} ({c.stderr.strip()})")
    r("HSET", "lc:list:" + LIST, "bounce_threshold", "2", "bounce_soft", "1", "probe_delay", "5")
    r("HSET", "lc:list:" + QUIET, "probe", "0", "probe_delay", "0")
    c = cli(cfg, "sub", "add", LIST, "-", stdin="\n".join([ALICE, BOB, CAROL, DAVE, FRED, GINA]) + "\n")
    t.check(c.returncode == 0, f"sub add ({c.stderr.strip()})")
    c = cli(cfg, "sub", "add", QUIET, ERIN)
    t.check(c.returncode == 0, f"sub add {QUIET} ({c.stderr.strip()})")

    def skey(addr, lst=LIST):
        return f"lc:sub:{lst}:{addr}"

    def h(addr, field, lst=LIST):
        return r("HGET", skey(addr, lst), field)

    def active(addr, lst=LIST):
        return r("HGET", "lc:active:" + lst, addr)

    ids = {a: int(h(a, "id")) for a in (ALICE, BOB, CAROL, DAVE, FRED, GINA)}
    ids[ERIN] = int(h(ERIN, "id", QUIET))

    # one post to each list: every subscriber's VERP address
    code, p1 = post(smtp_port, LIST, "first post")
    t.check(code == 250, f"post to {LIST} accepted ({code})")
    code, p2 = post(smtp_port, QUIET, "quiet post")
    t.check(code == 250, f"post to {QUIET} accepted ({code})")
    got = wait_for("7 deliveries", lambda: (lambda x: x if sum(len(y["rcpts"]) for y in x) >= 7 else None)(
        rows(mxlog)), 60)
    verp = {row["rcpts"][0].lower(): row["mail_from"] for row in got}
    key = lctest.read_secret(os.path.join(state, "secret"))
    t.check(all(lctest.verp_decode(key, verp[a]) == (p1, ids[a]) for a in (ALICE, BOB, CAROL, DAVE))
            and lctest.verp_decode(key, verp[ERIN]) == (p2, ids[ERIN]), "each copy has a VERP sender of its post")

    # the fake MX again, now refusing bob at RCPT
    procs.stop(fake)
    fake = start_fakemx(procs, "fakemx2", mx_port, mxlog, rules=[
        {"stage": "rcpt", "rcpt": BOB, "reply": f"550 5.1.1 <{BOB}>: Recipient address rejected: User unknown"},
        {"stage": "rcpt", "rcpt": FRED, "reply": "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked "
                                                 "using zen.spamhaus.org"},
        {"stage": "rcpt", "rcpt": GINA, "reply": "451 4.3.0 Temporary local problem, try again later"}])
    nrows = len(rows(mxlog))

    # two soft DSNs each reach the threshold (2): disabled, probe pending (due 5 s later)
    for a in (ALICE, BOB, CAROL, FRED, GINA):
        for _ in range(2):
            code = send_bounce(smtp_port, verp[a], full(verp[a], a))
            t.check(code == 250, f"mailbox-full DSN to {a}'s VERP address accepted ({code})")
    t_dsn = time.monotonic()
    code = send_bounce(smtp_port, verp[ERIN], dsn(verp[ERIN], ERIN))
    t.check(code == 250, f"user-unknown DSN to {ERIN}'s VERP address accepted ({code})")

    def disabled(a):
        return (h(a, "status") == "disabled" and active(a) is None and h(a, "probe") == "pending"
                and h(a, "disabled_reason") == "threshold" and h(a, "bounce_score") == "2")
    for a in (ALICE, BOB, CAROL, FRED, GINA):
        try:
            wait_for(f"{a} disabled at the threshold with a probe pending", lambda: disabled(a), 20)
            t.check(True, f"{a}: score 2 = threshold: disabled, out of lc:active, probe pending")
        except AssertionError as e:
            t.check(False, str(e))
    t.check(r("ZSCORE", "lc:probe:pending", skey(ALICE)) is not None or h(ALICE, "probe") == "sent",
            "the disabled subscriber is indexed in lc:probe:pending")

    # the probes go out
    def probe_rows():
        out = {}
        for row in rows(mxlog)[nrows:]:
            dec = lctest.verp_decode(key, row["mail_from"])
            if dec and dec[0] != p1:
                out[row["rcpts"][0].lower()] = (row, dec)
        return out if ALICE in out and CAROL in out else None
    pr = wait_for("probes to alice and carol at the fake MX", probe_rows, 60)
    for a in (ALICE, CAROL):
        row, (pid, sid) = pr[a]
        ph = dict(zip(*[iter(r("HGETALL", f"lc:post:{pid}"))] * 2))
        hd = row["headers"]
        t.check(sid == ids[a] and ph.get("kind") == "notice" and ph.get("probe") == "1" and ph.get("to") == a
                and ph.get("sub") == str(ids[a]) and ph.get("list") == LIST and ph.get("envelope_from") ==
                row["mail_from"].lower(), f"{a}: probe = notice post {pid} (probe 1) whose VERP MAIL FROM decodes "
                                          f"to it and the subscriber")
        t.check("suspended" in hd.get("Subject", "") and hd.get("Auto-Submitted") == "auto-generated"
                and "news-owner@lists.test" in hd.get("From", "") and a in hd.get("To", "")
                and hd.get("Message-ID", "").startswith("<probe."), f"{a}: probe headers {hd.get('Subject')!r}")
    probes = {}
    for a in (ALICE, CAROL):
        probes[a] = pr[a][0]["mail_from"]

    # (a) alice: delivered -> re-enabled
    def reenabled(a):
        return (h(a, "status") == "active" and active(a) == str(ids[a]) and h(a, "bounce_score") == "0"
                and all(h(a, f) is None for f in ("probe", "probe_post", "probe_at", "disabled_at",
                                                  "disabled_reason")))
    for a in (ALICE, CAROL):
        try:
            wait_for(f"{a} re-enabled", lambda: reenabled(a), 30)
            print(f"# {a}: re-enabled {time.monotonic() - t_dsn:.2f}s after the DSNs (probe_delay 5 s)")
            t.check(True, f"{a}: probe delivered: active, back in lc:active, score 0, probe fields gone")
        except AssertionError as e:
            t.check(False, str(e))

    # (b) bob: 550 5.1.1 at RCPT -> unsubscribed
    def gone(a):
        return (h(a, "status") == "unsubscribed" and h(a, "unsubscribed_reason") == "probe" and active(a) is None
                and h(a, "probe") is None)
    try:
        wait_for("bob unsubscribed", lambda: gone(BOB), 60)
        t.check(True, "bob: probe refused at RCPT with 550 5.1.1: unsubscribed (reason probe), out of lc:active")
    except AssertionError as e:
        t.check(False, str(e))
    bob_probe = [pid for pid in range(1, int(r("GET", "lc:seq:post")) + 1)
                 if r("HGET", f"lc:post:{pid}", "probe") == "1" and r("HGET", f"lc:post:{pid}", "to") == BOB]
    t.check(len(bob_probe) == 1 and r("HGET", f"lc:post:{bob_probe[0]}", "bounced") == "1",
            f"bob: exactly one probe, counted bounced ({bob_probe})")
    t.check(all(BOB not in row["rcpts"] for row in rows(mxlog)[nrows:]), "bob's probe was not accepted")

    # fred's probe refused at RCPT for a policy reason (blocklist, 5.7.1): no evidence, left disabled
    try:
        wait_for("fred's probe refused", lambda: h(FRED, "probe") == "refused", 60)
        t.check(h(FRED, "status") == "disabled" and active(FRED) is None and
                r("ZSCORE", "lc:probe:sent", skey(FRED)) is None,
                "fred: probe refused with 554 5.7.1 (blocklist): probe=refused, still disabled, out of lc:probe:sent")
        sj = cli(cfg, "sub", "show", LIST, FRED, "--json")
        j = json.loads(sj.stdout) if sj.returncode == 0 else {}
        t.check(j.get("status") == "disabled" and j.get("probe") == "refused" and j.get("disabled_reason")
                and isinstance(j.get("probe_post"), int) and isinstance(j.get("probe_at"), int)
                and j.get("unsubscribed_reason") is None,
                f"fred: sub show --json shows why he is disabled and his probe ({sj.stdout.strip()[-260:]})")
        st = cli(cfg, "sub", "show", LIST, FRED)
        t.check(st.returncode == 0 and "bounce probe:        refused (post " in st.stdout and
                "disabled because:" in st.stdout, f"fred: sub show prints the probe ({st.stdout.strip()[-200:]})")
    except AssertionError as e:
        t.check(False, str(e))

    # gina's probe deferred (451): in flight; its post hash deleted: probe=lost, left disabled
    try:
        gpost = wait_for("gina's probe deferred", lambda: (lambda pid: pid if pid and r(
            "HGET", f"lc:post:{pid}", "deferred") == "1" else None)(h(GINA, "probe_post")), 60)
        t.check(h(GINA, "probe") == "sent" and r("ZSCORE", "lc:probe:sent", skey(GINA)) is not None,
                f"gina: probe {gpost} deferred by the MX: still sent, in lc:probe:sent")
        r("DEL", f"lc:post:{gpost}")
        wait_for("gina's probe lost", lambda: h(GINA, "probe") == "lost", 30)
        t.check(h(GINA, "status") == "disabled" and active(GINA) is None and
                r("ZSCORE", "lc:probe:sent", skey(GINA)) is None and h(GINA, "unsubscribed_reason") is None,
                "gina: the probe's post is gone: probe=lost, still disabled, out of lc:probe:sent")
        gj = json.loads(cli(cfg, "sub", "show", LIST, GINA, "--json").stdout or "{}")
        t.check(gj.get("probe") == "lost" and gj.get("status") == "disabled", f"gina: sub show --json ({gj})")
    except AssertionError as e:
        t.check(False, str(e))

    # a policy (5.7.1 spam) DSN to alice's probe: not evidence of a dead mailbox, she stays active
    code = send_bounce(smtp_port, probes[ALICE], dsn(probes[ALICE], ALICE, "5.7.1",
                                                     "smtp; 550 5.7.1 Message rejected as spam by Content Filtering"))
    t.check(code == 250, f"spam DSN to alice's probe address accepted ({code})")
    # (c) a forged DSN to carol's probe address (bad MAC) is refused and changes nothing
    forged = lctest.verp_forge(probes[CAROL])
    code = send_bounce(smtp_port, forged, dsn(forged, CAROL))
    t.check(code == 550, f"forged probe VERP refused at RCPT ({code})")
    time.sleep(1)
    t.check(reenabled(CAROL) and h(CAROL, "bounces") == "2", "the forged DSN changed nothing")
    # (c) the real DSN to carol's probe address unsubscribes, though she was re-enabled
    code = send_bounce(smtp_port, probes[CAROL], dsn(probes[CAROL], CAROL))
    t.check(code == 250, f"5.1.1 DSN to carol's probe address accepted ({code})")
    try:
        wait_for("carol unsubscribed", lambda: gone(CAROL), 30)
        t.check(True, "carol: DSN to the probe after re-enabling: unsubscribed (reason probe), out of lc:active")
    except AssertionError as e:
        t.check(False, str(e))
    wait_for("alice's spam DSN handled", lambda: h(ALICE, "last_bounce_reason") == "spamdetected", 30)
    t.check(h(ALICE, "status") == "active" and active(ALICE) == str(ids[ALICE]) and h(ALICE, "bounce_score") == "1"
            and h(ALICE, "unsubscribed_reason") is None,
            "alice: a 5.7.1 spam DSN to her probe counts (score 1) but leaves her active")

    # probes off for quiet@: erin stays disabled, no probe
    t.check(h(ERIN, "status", QUIET) == "disabled" and active(ERIN, QUIET) is None and
            h(ERIN, "probe", QUIET) is None and r("ZSCORE", "lc:probe:pending", skey(ERIN, QUIET)) is None,
            "erin (list probe 0): disabled, no probe pending")
    t.check(all(ERIN not in row["rcpts"] for row in rows(mxlog)[nrows:]), "erin got no probe")
    t.check(f"rcpt=<{GINA}> post is gone: probe=lost, left disabled" in procs.log("listcast"),
            "log: gina's probe lost")
    t.check(h(DAVE, "status") == "active" and active(DAVE) == str(ids[DAVE]) and h(DAVE, "bounce_score") == "0",
            "dave untouched")
    t.check(r("ZCARD", "lc:probe:pending") == 0 and r("ZCARD", "lc:probe:sent") == 0, "probe indexes empty")
    n = {a: sum(1 for row in rows(mxlog)[nrows:] if a in row["rcpts"]) for a in (ALICE, CAROL)}
    t.check(n == {ALICE: 1, CAROL: 1}, f"one probe each ({n})")

    log = procs.log("listcast")
    t.check(re.search(r"probe post=\d+ sub=%d list=%s rcpt=<%s> from=<bounce-[0-9a-v-]+@lists\.test> queued"
                      % (ids[ALICE], re.escape(LIST), re.escape(ALICE)), log) is not None, "log: probe queued")
    t.check(f"rcpt=<{ALICE}> delivered: delivery re-enabled" in log, "log: re-enabled")
    t.check(re.search(r"probe post=\d+ sub=%d .*failed status=5\.1\.1 reason=userunknown: unsubscribed"
                      % ids[BOB], log) is not None, "log: bob's probe failed, unsubscribed")

    r.close()
    procs.stop(up, signal.SIGTERM, 20)
    t.check(up.returncode == 0, f"listcast up stops cleanly on SIGTERM (rc={up.returncode})")
    bad = lctest.sanitizer_reports(procs)
    t.check(not bad, f"no sanitizer reports in the daemons' logs {bad}")


if __name__ == "__main__":
    sys.exit(main())
