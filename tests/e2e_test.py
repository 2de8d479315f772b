#!/usr/bin/env python3
"""e2e_test: the walking skeleton, end to end, on real parts.

Starts redis-server, dnsmasq serving MX records for 20 test domains, and fake MX hosts on 127.0.0.10-14 (all on
loopback, free ports, one temporary dir), runs `listcast up` against them, then:
  creates a list, subscribes 200 addresses over 20 domains, posts one message to listd by SMTP, and checks that
  every subscriber got exactly one copy with its own VERP envelope sender that decodes back to that subscriber;
  sends an RFC 3464 DSN to one VERP address through listd and checks that `listcast sub show` reports it.
"""
import json
import os
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
NDOM, PER_DOM = 20, 10


def cli(cfg, *args, stdin=None):
    r = subprocess.run([LISTCAST, *args, *cfg], input=stdin, capture_output=True, text=True, timeout=60)
    return r


def dsn(verp, rcpt):
    return f"""From: MAILER-DAEMON@mx0.test
To: {verp}
Subject: Undelivered Mail Returned to Sender
Date: Mon, 23 Nov 2026 12:00:00 +0000
Message-ID: <dsn-1@mx0.test>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"

--BOUNDARY
Content-Type: text/plain

This is the mail system at host mx0.test. Your message could not be delivered.

--BOUNDARY
Content-Type: message/delivery-status

Reporting-MTA: dns; mx0.test
Arrival-Date: Mon, 23 Nov 2026 11:59:59 +0000

Final-Recipient: rfc822; {rcpt}
Original-Recipient: rfc822;{rcpt}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table

--BOUNDARY
Content-Type: text/rfc822-headers

From: news@lists.test
To: {rcpt}
Subject: hello subscribers

--BOUNDARY--
""".replace("\n", "\r\n")


def main():
    t = lctest.Checks()
    procs = lctest.Procs()
    try:
        run(t, procs)
    except AssertionError as e:
        t.check(False, str(e))
        for name in ("listcast", "fakemx", "dnsmasq"):
            sys.stdout.write(f"--- {name} log (tail) ---\n{procs.log(name)[-6000:]}\n")
    finally:
        procs.close()
    return t.done()


def run(t, procs):
    tmp = procs.tmp
    _, redis_url = lctest.start_redis(procs)

    # DNS: d00.test..d19.test, MX -> mx{i%5}.test at 127.0.0.(10+i%5); every fifth domain has a backup MX.
    domains = [f"d{i:02d}.test" for i in range(NDOM)]
    mx = {}
    for i, d in enumerate(domains):
        mx[d] = [(10, f"mx{i % 5}.test", f"127.0.0.{10 + i % 5}")]
        if i % 5 == 0:
            mx[d].append((20, f"mx{(i + 1) % 5}.test", f"127.0.0.{10 + (i + 1) % 5}"))
    dns_proc, dns_port = dnsmasq.start(tmp, mx)
    procs.procs.append(dns_proc)

    # Fake MX hosts: one process listening on 127.0.0.10-14, same port.
    mx_port = lctest.free_port("127.0.0.10")
    mxlog = os.path.join(tmp, "mx.jsonl")
    argv = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakemx.py"), "--log", mxlog]
    for i in range(5):
        argv += ["--listen", f"127.0.0.{10 + i}:{mx_port}"]
    fake = procs.start("fakemx", argv, stdout=subprocess.PIPE)
    wait_for("fakemx ready", lambda: fake.stdout.readline().strip() == b"ready", 15)

    smtp_port, http_port = lctest.free_port(), lctest.free_port()
    state = os.path.join(tmp, "state")
    cfg = ["--set", f"redis.url={redis_url}", "--set", f"state.dir={state}",
           "--set", f"dns.servers=127.0.0.1:{dns_port}", "--set", f"sender.mx_port={mx_port}",
           "--set", f"smtp.listen=127.0.0.1:{smtp_port}", "--set", f"http.listen=127.0.0.1:{http_port}",
           "--set", "smtp.hostname=listcast.test", "--set", "sender.batch_size=25"]
    up = procs.start("listcast", [LISTCAST, "up", *cfg])

    def banner():
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=5) as s:
            return s.noop()[0] == 250
    wait_for("listd banner", banner, 30)
    t.check(up.poll() is None, "listcast up is running")

    r = cli(cfg, "list", "create", LIST, "--policy", "open", "--owner", "owner@example.test")
    t.check(r.returncode == 0, f"list create (rc={r.returncode} {r.stderr.strip()})")

    subs = [f"user{j:02d}@{d}" for d in domains for j in range(PER_DOM)]
    r = cli(cfg, "sub", "add", LIST, "-", stdin="\n".join(subs) + "\n")
    t.check(r.returncode == 0, f"sub add 200 addresses from stdin (rc={r.returncode} {r.stderr.strip()})")
    r = cli(cfg, "list", "show", LIST, "--json")
    t.check(r.returncode == 0, "list show --json")

    ids = {}
    for a in subs:
        r = cli(cfg, "sub", "show", LIST, a, "--json")
        ids[a] = json.loads(r.stdout)["id"] if r.returncode == 0 else None
    t.check(all(isinstance(v, int) for v in ids.values()) and len(set(ids.values())) == len(subs),
            "every subscriber has its own id")

    msg = ("From: Poster <poster@example.test>\r\nTo: news@lists.test\r\nSubject: hello subscribers\r\n"
           "Message-ID: <post-1@example.test>\r\n\r\n" + "Body line of the first post.\r\n" * 100)
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as s:
        s.ehlo("poster.test")
        code, resp = s.docmd("MAIL FROM:<poster@example.test>")
        t.check(code == 250, f"MAIL FROM -> {code}")
        code, resp = s.docmd(f"RCPT TO:<{LIST}>")
        t.check(code == 250, f"RCPT TO list -> {code}")
        code, resp = s.data(msg.encode())
        t.check(code == 250, f"post accepted: {code} {resp.decode()}")
    post_id = int(resp.decode().split()[-1])
    # 250 means durable: the post is in Redis now, before any delivery.
    t.check(lctest.redis_cmd(redis_url, "HGET", f"lc:post:{post_id}", "list") == LIST, "post stored before 250")

    def deliveries():
        if not os.path.exists(mxlog):
            return None
        with open(mxlog) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return rows if sum(len(r["rcpts"]) for r in rows) >= len(subs) else None
    t0 = time.monotonic()
    rows = wait_for("200 deliveries at the fake MX hosts", deliveries, 90)
    print(f"# 200 deliveries in {time.monotonic() - t0:.2f}s")
    time.sleep(0.5)  # anything extra (duplicates) would arrive now
    rows = deliveries()

    got = {}
    for r in rows:
        for rc in r["rcpts"]:
            got.setdefault(rc.lower(), []).append(r)
    t.check(sorted(got) == sorted(subs), "every subscriber received the post")
    t.check(all(len(v) == 1 for v in got.values()), "each exactly once")
    t.check(all(len(r["rcpts"]) == 1 for r in rows), "one recipient per transaction (VERP)")
    key = lctest.read_secret(os.path.join(state, "secret"))
    senders = [r["mail_from"] for r in rows]
    t.check(len(set(senders)) == len(subs), "each copy has its own envelope sender")
    ok = all(lctest.verp_decode(key, r["mail_from"]) == (post_id, ids[r["rcpts"][0].lower()]) for r in rows)
    t.check(ok, "each VERP envelope sender decodes to its post and subscriber")
    t.check(all(r["mail_from"].endswith("@lists.test") for r in rows), "VERP addresses are at the list domain")
    right_mx = all(r["listen"].split(":")[0] == f"127.0.0.{10 + int(r['rcpts'][0].split('@d')[1][:2]) % 5}"
                   for r in rows)
    t.check(right_mx, "each copy went to its domain's primary MX")

    def post_done():
        r = cli(cfg, "post", "show", str(post_id), "--json")
        j = json.loads(r.stdout) if r.returncode == 0 else {}
        return j if j.get("delivered") == len(subs) and j.get("pending") == 0 else None
    j = wait_for("post counters", post_done, 30)
    t.check(j["recipients"] == 200 and j["bounced"] == 0 and j["list"] == LIST,
            f"post show: recipients={j['recipients']} delivered={j['delivered']} pending={j['pending']}")

    # A bounce through listd to one subscriber's VERP address.
    victim = subs[37]
    verp = next(r["mail_from"] for r in rows if r["rcpts"][0].lower() == victim)
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as s:
        s.ehlo("mx0.test")
        code, _ = s.docmd("MAIL FROM:<>")
        t.check(code == 250, "bounce MAIL FROM:<>")
        code, _ = s.docmd(f"RCPT TO:<{verp}>")
        t.check(code == 250, f"RCPT TO VERP address -> {code}")
        code, resp = s.data(dsn(verp, victim).encode())
        t.check(code == 250, f"bounce accepted: {code}")

    def bounced():
        r = cli(cfg, "sub", "show", LIST, victim, "--json")
        j = json.loads(r.stdout) if r.returncode == 0 else {}
        return j if j.get("bounce_score", 0) > 0 else None
    j = wait_for("bounce recorded", bounced, 30)
    t.check(j["last_bounce_reason"] == "userunknown", f"sub show: last_bounce_reason={j['last_bounce_reason']}")
    t.check(j["bounce_score"] >= 1, f"sub show: bounce_score={j['bounce_score']}")
    other = json.loads(cli(cfg, "sub", "show", LIST, subs[36], "--json").stdout)
    t.check(other["bounce_score"] == 0 and other["status"] == "active", "other subscribers untouched")

    # A forged VERP address is refused in the SMTP dialogue and changes nothing.
    forged = lctest.verp_forge(verp)
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as s:
        s.ehlo("mx0.test")
        s.docmd("MAIL FROM:<>")
        code, _ = s.docmd(f"RCPT TO:<{forged}>")
        t.check(code == 550, f"forged VERP address refused ({code})")

    procs.stop(up, signal.SIGTERM, 20)
    t.check(up.returncode == 0, f"listcast up stops cleanly on SIGTERM (rc={up.returncode})")
    bad = lctest.sanitizer_reports(procs)
    t.check(not bad, f"no sanitizer reports in the daemons' logs {bad}")


if __name__ == "__main__":
    sys.exit(main())
