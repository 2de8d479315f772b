#!/usr/bin/env python3
"""sender_test.py: integration test of listcast-sender (Python 3 stdlib only).

Starts a throw-away redis-server (unix socket in a temp dir, --port 0), fakemx.py on 127.0.0.10 and 127.0.0.11
(same free port, PIPELINING) and on 127.0.0.13 (--no-pipelining), writes a secret, creates posts directly in
Redis as schema/SCHEMA.md describes, XADDs delivery batches, runs listcast-sender and checks:
  - every recipient that should be delivered got exactly one message, with its own VERP MAIL FROM that
    decodes (the HMAC of common/lc_verp.c, re-done in lctest.py) to its post and subscriber id, and the body
    arrived intact (dot-stuffing, CRLF, 8-bit);
  - counters in lc:post:ID and lc:postdom:ID, state done when delivered+bounced reaches recipients;
  - a 550 at RCPT gives bounced=1 and an lc:stream:bounces entry with the reply; a 451 gives deferred=1 (the
    recipient waits in lc:retry: sender.retry_min is 300 s here);
  - every copy starts with the per-recipient List-Unsubscribe/-Post lines, then the message byte for byte;
  - an MX that refuses connections (nothing on 127.0.0.12) falls back to the next MX of the batch;
  - a connection dropped at RCPT falls back to the next MX; 4xx/5xx after DATA; malformed, over-long and
    over-sized replies defer; a 1,000-octet reply line is fine; a bad address line is bounced locally;
  - connections are reused (fewer connections than messages) and a non-PIPELINING server sees no pipelining;
  - pending entries of this consumer are re-read at start ("0"), entries of a dead consumer are claimed
    (XAUTOCLAIM), XPENDING is empty at the end;
  - SIGTERM exits 0 and leaves an unfinished batch pending; the next start delivers it once;
  - an idle connection is closed with QUIT after 10 s;
  - with a pool of 2 connections and 5 destinations, connections out of work give their slot up at once.
Env: LC_LIBEXEC_DIR (default /work/main/build-sender/libexec/listcast); LC_SENDER_VERBOSE=1 runs the sender with
-v; LC_KEEP_TMP=1 keeps the temp dir (logs). Prints a line per check and "N passed, N failed"; exits 0 on success.
Every wait is bounded; everything started is stopped at the end.
"""

import hashlib
import json
import os
import selectors
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lctest  # noqa: E402
from lctest import verp_decode, verp_encode  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
LIBEXEC = os.environ.get("LC_LIBEXEC_DIR", "/work/main/build-sender/libexec/listcast")
SENDER = os.path.join(LIBEXEC, "listcast-sender")
FAKEMX = os.path.join(HERE, "fakemx.py")

LIST = "announce@lists.example.org"
LIST_DOMAIN = "lists.example.org"
NODE = "node1"
DELIVERIES = "lc:stream:deliveries"
BOUNCES = "lc:stream:bounces"

ck = lctest.Checks()
check = ck.check


def hgetall(r, key):
    v = r.cmd("HGETALL", key) or []
    return dict(zip(v[0::2], v[1::2]))


# ---- processes ----

def wait_for(pred, timeout, what, interval=0.1):
    """True once pred() is; a failed check after timeout seconds."""
    try:
        return lctest.wait_for(what, pred, timeout, interval, retry=(OSError, lctest.RedisError))
    except AssertionError:
        return check(False, "within %g s: %s" % (timeout, what))


def start_fakemx(procs, name, listens, extra):
    log = os.path.join(procs.tmp, name + ".jsonl")
    args = [sys.executable, FAKEMX, "--log", log, "--maildir", os.path.join(procs.tmp, name + "-mail")] + extra
    for l in listens:
        args += ["--listen", l]
    p = procs.start(name, args, stdout=subprocess.PIPE)
    deadline = time.monotonic() + 10
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    line = b""
    while time.monotonic() < deadline and b"ready" not in line:
        if sel.select(timeout=0.2):
            chunk = os.read(p.stdout.fileno(), 100)
            if not chunk:
                break
            line += chunk
    sel.close()
    if b"ready" not in line:
        raise RuntimeError("fakemx %s did not start" % name)
    return p, log


def read_jsonl(path):
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line))
    return out


# ---- the scenario ----

MESSAGE = (
    "From: Owner <owner@example.org>\r\n"
    "To: " + LIST + "\r\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= test post\r\n"
    "Message-ID: <post1@example.org>\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Hello list,\r\n"
    ".a line that starts with a dot\r\n"
    "..two dots\r\n"
    ".\r\n"
    "Grüße aus Köln\r\n"
    + "".join("line %d of the body, long enough to make the message a few kilobytes\r\n" % i for i in range(80))
    + "-- \r\nthe end\r\n"
).encode("utf-8")

SUBS = {}


def sub_id(addr):
    if addr not in SUBS:
        SUBS[addr] = 100 + len(SUBS)
    return SUBS[addr]


def rcpt_lines(addrs):
    return "\n".join("%d %s" % (sub_id(a), a) for a in addrs)


def make_post(r, post, nrcpts):
    r.cmd("SET", "lc:msg:%d" % post, MESSAGE)
    r.cmd("HSET", "lc:post:%d" % post, "id", post, "list", LIST, "from", "owner@example.org", "size", len(MESSAGE),
          "created", int(time.time()), "state", "sending", "recipients", nrcpts)
    r.cmd("ZADD", "lc:posts:" + LIST, int(time.time()), post)


def xadd(r, post, hosts, addrs, extra_lines=""):
    rc = rcpt_lines(addrs) + extra_lines
    return r.cmd("XADD", DELIVERIES, "*", "post", post, "hosts", hosts, "rcpts", rc)


def main():
    if not os.access(SENDER, os.X_OK):
        check(False, "no sender at %s (set LC_LIBEXEC_DIR)" % SENDER)
        return ck.done()
    procs = lctest.Procs()
    tmp = procs.tmp
    sender = None
    try:
        # Redis
        _, url = lctest.start_redis(procs, durable=False)
        r = lctest.Redis(url)

        # MX hosts: .10 and .11 pipelining, .12 nothing, .13 no pipelining
        pool_ips = ["127.0.0.%d" % i for i in range(15, 20)]
        port = lctest.free_port("127.0.0.10",
                                also=["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"] + pool_ips)
        key = os.urandom(32)
        rules = [
            {"stage": "connect", "listen": "127.0.0.14", "reply": "554 5.3.2 not accepting mail"},
            {"stage": "mail", "from_re": "^" + verp_encode(key, 7, sub_id("mailrej@g.test"), LIST_DOMAIN) + "$",
             "reply": "552 5.3.4 message size exceeds fixed limit"},
            {"stage": "mail", "from_re": "^" + verp_encode(key, 7, sub_id("m421@g.test"), LIST_DOMAIN) + "$",
             "listen": "127.0.0.10", "reply": "421 4.3.2 shutting down"},
            {"rcpt": "bad@b.test", "reply": "550 5.1.1 no such user"},
            {"rcpt": "later@b.test", "reply": "451 4.7.1 try later"},
            {"rcpt": "dropme@d.test", "action": "drop", "listen": "127.0.0.10"},
            {"stage": "data", "rcpt": "datafail@d.test", "reply": "452 4.3.1 insufficient system storage"},
            {"stage": "data", "rcpt": "data550@d.test", "reply": "554 5.6.0 content rejected"},
            {"rcpt": "longreply@d.test", "reply": "250-" + "x" * 1000 + "\n250 2.1.5 ok after a long line"},
            {"rcpt": "garbage@d.test", "raw": "hello there, this is no SMTP reply\r\n"},
            {"rcpt": "huge@d.test", "reply": "250 " + "y" * 5000},
            {"rcpt": "hugemulti@d.test", "reply": "\n".join(["250-" + "z" * 100] * 700 + ["250 ok"])},
            {"rcpt": "e3@e.test", "reply": "550 5.1.1 unknown user e3"},
            {"rcpt": "slow@f.test", "delay": 4, "times": 1},
        ]
        with open(os.path.join(tmp, "rules.json"), "w") as f:
            json.dump(rules, f)
        mx, mxlog = start_fakemx(procs, "mx", ["%s:%d" % (ip, port) for ip in
                                               ["127.0.0.10", "127.0.0.11", "127.0.0.14"] + pool_ips],
                                 ["--script", os.path.join(tmp, "rules.json")])
        mx2, mx2log = start_fakemx(procs, "mx2", ["127.0.0.13:%d" % port],
                                   ["--script", os.path.join(tmp, "rules.json"), "--no-pipelining"])

        # secret
        secret = os.path.join(tmp, "secret")
        lctest.write_secret(secret, key)

        # list and posts
        r.cmd("HSET", "lc:list:" + LIST, "address", LIST, "id", 1, "policy", "announce", "owner",
              "owner@example.org", "created", int(time.time()))
        r.cmd("SADD", "lc:lists", LIST)
        r.cmd("SADD", "lc:domains", LIST_DOMAIN)
        H10, H11, H12, H13, H14 = "127.0.0.10", "127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"

        a1 = ["u%d@a.test" % i for i in range(1, 13)]
        a2 = ["u%d@a.test" % i for i in range(13, 17)]
        b3 = ["ok1@b.test", "bad@b.test", "later@b.test", "ok2@b.test"]
        c4 = ["c1@c.test", "c2@c.test", "c3@c.test"]
        v5 = ["v1@a.test", "v2@a.test"]
        d6 = ["dropme@d.test", "datafail@d.test", "data550@d.test", "longreply@d.test", "garbage@d.test",
              "huge@d.test", "hugemulti@d.test"]
        w7, w8 = ["w1@a.test", "w2@a.test"], ["w3@b.test", "w4@b.test"]
        e9 = ["e1@e.test", "e2@e.test", "e3@e.test"]
        g10, h11 = ["g1@g.test", "mailrej@g.test", "m421@g.test"], ["h1@h.test"]
        make_post(r, 1, len(a1 + a2 + b3 + c4))
        make_post(r, 2, len(v5))
        make_post(r, 3, len(d6) + 1)
        make_post(r, 4, len(w7 + w8))
        make_post(r, 5, len(e9))
        make_post(r, 7, len(g10 + h11))

        # post 4: one batch already pending for this consumer (a previous run), one for a dead consumer
        r.cmd("XGROUP", "CREATE", DELIVERIES, "sender", "0", "MKSTREAM")
        id7 = xadd(r, 4, "mx.a.test=" + H10, w7)
        r.cmd("XREADGROUP", "GROUP", "sender", NODE, "COUNT", 1, "STREAMS", DELIVERIES, ">")
        id8 = xadd(r, 4, "mx.b.test=" + H11, w8)
        r.cmd("XREADGROUP", "GROUP", "sender", "deadpeer", "COUNT", 1, "STREAMS", DELIVERIES, ">")
        r.cmd("XCLAIM", DELIVERIES, "sender", "deadpeer", 0, id8, "IDLE", 120000)
        pend = r.cmd("XPENDING", DELIVERIES, "sender")
        check(pend[0] == 2, "setup: 2 entries pending (%s for %s, %s for deadpeer)" % (id7, NODE, id8))

        xadd(r, 1, "mx.a.test=%s mx2.a.test=%s" % (H10, H11), a1)
        xadd(r, 1, "mx.a.test=" + H10, a2)
        xadd(r, 1, "mx.b.test=" + H11, b3)
        xadd(r, 1, "mx.c.test=%s mx2.c.test=%s" % (H12, H11), c4)
        xadd(r, 2, "mx.a.test=" + H10, v5)
        xadd(r, 3, "mx.d.test=%s mx2.d.test=%s" % (H10, H11), d6, "\n999 not-an-address")
        xadd(r, 5, "mx.e.test=" + H13, e9)
        xadd(r, 7, "mx.g.test=%s mx2.g.test=%s" % (H10, H11), g10)
        xadd(r, 7, "mx.h.test=%s mx2.h.test=%s" % (H14, H11), h11)

        # the sender
        args = [SENDER, "--set", "redis.url=" + url, "--set", "sender.mx_port=%d" % port,
                "--set", "secret.file=" + secret, "--set", "state.dir=" + tmp, "--set", "node.name=" + NODE,
                "--set", "smtp.hostname=sender.test", "--set", "sender.concurrency=20", "--set", "sender.per_mx=5"]
        if os.environ.get("LC_SENDER_VERBOSE"):
            args.append("-v")
        sender = procs.start("sender", args)

        posts = {1: 23, 2: 2, 3: 8, 4: 4, 5: 3, 7: 4}

        def all_counted():
            for p, n in posts.items():
                h = hgetall(r, "lc:post:%d" % p)
                if sum(int(h.get(k, 0)) for k in ("delivered", "deferred", "bounced")) < n:
                    return False
            return r.cmd("XPENDING", DELIVERIES, "sender")[0] == 0
        wait_for(all_counted, 60, "every recipient of posts 1-5 has an outcome and every batch is acknowledged")
        check(sender.poll() is None, "the sender is still running")

        # ---- messages ----
        msgs = read_jsonl(mxlog) + read_jsonl(mx2log)
        by_rcpt = {}
        for m in msgs:
            for rc in m["rcpts"]:
                by_rcpt.setdefault(rc, []).append(m)
        delivered = a1 + a2 + ["ok1@b.test", "ok2@b.test"] + c4 + v5 + ["dropme@d.test", "longreply@d.test"] + \
            w7 + w8 + ["e1@e.test", "e2@e.test", "g1@g.test", "m421@g.test"] + h11
        not_delivered = ["bad@b.test", "later@b.test", "datafail@d.test", "data550@d.test", "garbage@d.test",
                         "huge@d.test", "hugemulti@d.test", "e3@e.test", "mailrej@g.test"]
        check(all(len(by_rcpt.get(a, [])) == 1 for a in delivered),
              "each of %d deliverable recipients got exactly one message" % len(delivered))
        check(all(len(m["rcpts"]) == 1 for m in msgs), "one recipient per transaction")
        check(not any(a in by_rcpt for a in not_delivered), "refused recipients got no message")
        froms = [m["mail_from"] for m in msgs]
        check(len(set(froms)) == len(froms), "every MAIL FROM is unique (%d messages)" % len(froms))
        bad_verp = []
        for m in msgs:
            rc = m["rcpts"][0]
            post = next(p for p, lst in ((1, a1 + a2 + b3 + c4), (2, v5), (3, d6), (4, w7 + w8), (5, e9),
                                               (7, g10 + h11)) if rc in lst)
            if verp_decode(key, m["mail_from"]) != (post, SUBS[rc]) or not m["mail_from"].endswith("@" + LIST_DOMAIN):
                bad_verp.append((rc, m["mail_from"]))
        check(not bad_verp, "every MAIL FROM is bounce-P-S-M@%s and its HMAC decodes to the post and subscriber%s"
              % (LIST_DOMAIN, "" if not bad_verp else " (bad: %s)" % bad_verp[:3]))
        sha = hashlib.sha1(MESSAGE).hexdigest()

        def without_unsub(m):
            """The stored copy without the per-recipient List-Unsubscribe/-Post lines the sender prepends."""
            d = "mx2-mail" if m["listen"].startswith(H13 + ":") else "mx-mail"
            with open(os.path.join(tmp, d, "%d.eml" % m["msg"]), "rb") as f:
                data = f.read()
            lines = data.split(b"\r\n")
            while lines and (lines[0].startswith(b"List-Unsubscribe") or lines[0].startswith(b" <")):
                lines.pop(0)
            return b"\r\n".join(lines)
        check(all(hashlib.sha1(without_unsub(m)).hexdigest() == sha for m in msgs),
              "every body arrived byte for byte (dot-stuffing, CRLF, 8-bit) after the List-Unsubscribe lines")
        check(all(m["headers"].get("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click" and
                  "/u/o" in m["headers"].get("List-Unsubscribe", "") for m in msgs),
              "every copy has its List-Unsubscribe and List-Unsubscribe-Post header")
        check(all(m["headers"].get("Message-ID") == "<post1@example.org>" for m in msgs), "headers intact")

        # ---- routing ----
        check(all(by_rcpt[a][0]["listen"] == "%s:%d" % (H11, port) for a in c4),
              "refused connections on %s: mx.c.test fell back to %s" % (H12, H11))
        check(by_rcpt["dropme@d.test"][0]["listen"] == "%s:%d" % (H11, port),
              "a connection dropped at RCPT on %s: recipient delivered by the next MX" % H10)
        check(all(by_rcpt[a][0]["listen"] == "%s:%d" % (H10, port) for a in a1 + a2 + v5 + w7),
              "recipients whose first MX works went to it")
        on10 = [m for m in msgs if m["listen"].startswith(H10 + ":")]
        conns10 = {m["conn"] for m in on10}
        check(len(conns10) < len(on10), "connections reused on %s: %d connections carried %d messages"
              % (H10, len(conns10), len(on10)))
        batch_of = {}
        for i, lst in enumerate((a1, a2, b3, c4, v5, d6, w7, w8, e9, g10, h11)):
            for a in lst:
                batch_of[a] = i
        per_conn = {}
        for m in on10:
            per_conn.setdefault(m["conn"], set()).add(batch_of[m["rcpts"][0]])
        check(any(len(b) > 1 for b in per_conn.values()), "one connection carried recipients of several batches")
        check(by_rcpt["m421@g.test"][0]["listen"] == "%s:%d" % (H11, port),
              "421 at MAIL FROM on %s: recipient delivered by the next MX" % H10)
        check(by_rcpt["h1@h.test"][0]["listen"] == "%s:%d" % (H11, port),
              "554 banner on %s: recipient delivered by the next MX" % H14)
        check(any(m["pipelined"] > 0 for m in msgs if not m["listen"].startswith(H13 + ":")),
              "the sender pipelines towards PIPELINING servers")
        m2 = read_jsonl(mx2log)
        check(len(m2) == 2 and all(m["pipelining_violations"] == 0 for m in m2),
              "no pipelining towards a server without PIPELINING (%d messages)" % len(m2))

        # ---- counters ----
        p1 = hgetall(r, "lc:post:1")
        check((p1.get("delivered"), p1.get("bounced"), p1.get("deferred")) == ("21", "1", "1"),
              "lc:post:1 delivered=21 bounced=1 deferred=1 (got %s/%s/%s)"
              % (p1.get("delivered"), p1.get("bounced"), p1.get("deferred")))
        check(p1.get("state") == "sending", "post 1 is not done (a deferred recipient is still pending)")
        d1 = hgetall(r, "lc:postdom:1")
        want_d1 = {"a.test:delivered": "16", "b.test:delivered": "2", "b.test:bounced": "1",
                   "b.test:deferred": "1", "c.test:delivered": "3"}
        check(d1 == want_d1, "lc:postdom:1 per-domain counters %s" % d1)
        p2 = hgetall(r, "lc:post:2")
        check(p2.get("delivered") == "2" and p2.get("state") == "done", "post 2: delivered=2 state=done")
        p3 = hgetall(r, "lc:post:3")
        check((p3.get("delivered"), p3.get("deferred"), p3.get("bounced")) == ("2", "4", "2"),
              "post 3 (faults): delivered=2 deferred=4 bounced=2 (got %s/%s/%s)"
              % (p3.get("delivered"), p3.get("deferred"), p3.get("bounced")))
        p4 = hgetall(r, "lc:post:4")
        check(p4.get("delivered") == "4" and p4.get("state") == "done",
              "post 4: own pending entry re-read and dead consumer's entry claimed: delivered=4 done")
        p5 = hgetall(r, "lc:post:5")
        check((p5.get("delivered"), p5.get("bounced"), p5.get("state")) == ("2", "1", "done"),
              "post 5 (no PIPELINING, a 550 then RSET): delivered=2 bounced=1 done")
        p7 = hgetall(r, "lc:post:7")
        check((p7.get("delivered"), p7.get("bounced"), p7.get("state")) == ("3", "1", "done"),
              "post 7 (552 and 421 at MAIL, 554 banner): delivered=3 bounced=1 done")
        check(r.cmd("XPENDING", DELIVERIES, "sender")[0] == 0, "XPENDING is empty: every batch acknowledged")

        # ---- bounces stream ----
        bl = r.cmd("XRANGE", BOUNCES, "-", "+")
        entries = [dict(zip(e[1][0::2], e[1][1::2])) for e in bl]
        check(len(entries) == 5, "5 entries in %s (bad@b.test, data550@d.test, bad address, e3@e.test, "
              "mailrej@g.test)" % BOUNCES)
        bad = [e for e in entries if e.get("sub") == str(SUBS["bad@b.test"])]
        check(len(bad) == 1 and bad[0].get("post") == "1" and bad[0].get("from") == ""
              and bad[0].get("reply") == "550 5.1.1 no such user"
              and verp_decode(key, bad[0].get("rcpt", "")) == (1, SUBS["bad@b.test"]),
              "bounce entry for bad@b.test: rcpt=VERP from=\"\" post=1 sub=%d reply=\"550 5.1.1 no such user\""
              % SUBS["bad@b.test"])
        d550 = [e for e in entries if e.get("sub") == str(SUBS["data550@d.test"])]
        check(len(d550) == 1 and d550[0].get("reply", "").startswith("554 5.6.0"), "bounce entry after DATA (554)")
        mrej = [e for e in entries if e.get("sub") == str(SUBS["mailrej@g.test"])]
        check(len(mrej) == 1 and mrej[0].get("reply", "").startswith("552 5.3.4"), "bounce entry at MAIL FROM (552)")
        loc = [e for e in entries if e.get("sub") == "999"]
        check(len(loc) == 1 and loc[0].get("reply", "").startswith("550 5.1.3"),
              "a bad address line is bounced locally with 550 5.1.3")

        # ---- the log ----
        text = procs.log("sender")
        check("post=1 rcpt=<u1@a.test> delivered host=mx.a.test[%s:%d] reply=\"250 2.0.0 Ok" % (H10, port) in text,
              "log line: post=1 rcpt=<u1@a.test> delivered host=mx.a.test[...] reply=\"250 ...\"")
        check("post=1 rcpt=<bad@b.test> bounced" in text and "post=1 rcpt=<later@b.test> deferred" in text,
              "log lines for bounced and deferred recipients")
        check("reply line too long" in text and "reply too long" in text and "malformed reply line" in text,
              "log names the reply faults (line too long, reply too long, malformed)")

        # ---- SIGTERM with a batch in flight, then restart ----
        r.cmd("HSET", "lc:post:6", "id", 6, "list", LIST, "recipients", 1, "state", "sending")
        r.cmd("SET", "lc:msg:6", MESSAGE)
        xadd(r, 6, "mx.f.test=" + H10, ["slow@f.test"])
        wait_for(lambda: r.cmd("XPENDING", DELIVERIES, "sender")[0] == 1, 10, "the slow batch is read")
        time.sleep(1.0)  # the server holds the RCPT reply for 4 s
        rc = procs.stop(sender, timeout=10)
        check(rc == 0, "SIGTERM: the sender exits 0 (status %s)" % rc)
        check(r.cmd("XPENDING", DELIVERIES, "sender")[0] == 1, "the unfinished batch stays pending")
        args2 = args + ["--set", "sender.concurrency=2", "--set", "sender.per_mx=1"] + ([] if "-v" in args else ["-v"])
        sender = procs.start("sender2", args2)
        wait_for(lambda: hgetall(r, "lc:post:6").get("delivered") == "1" and
                 r.cmd("XPENDING", DELIVERIES, "sender")[0] == 0, 30,
                 "after a restart the pending batch is re-read and delivered")
        msgs = read_jsonl(mxlog)
        check(sum(1 for m in msgs if m["rcpts"] == ["slow@f.test"]) == 1, "slow@f.test got exactly one message")
        check(hgetall(r, "lc:post:6").get("state") == "done", "post 6 done")

        def quit_sent():
            t = procs.log("sender2")
            return "> QUIT" in t and "closed after 1 transactions: QUIT" in t
        if wait_for(quit_sent, 20, "an idle connection is closed with QUIT after 10 s"):
            check(True, "an idle connection is closed with QUIT after 10 s")

        # a pool of 2 connections, 5 destinations: a connection that runs out of work gives its slot up at once
        pool_rcpts = {}
        for i, ip in enumerate(pool_ips):
            pool_rcpts[ip] = ["p%d-%d@pool%d.test" % (i, j, i) for j in range(3)]
        make_post(r, 8, 15)
        t0 = time.monotonic()
        for ip in pool_ips:
            xadd(r, 8, "mx.pool.test=" + ip, pool_rcpts[ip])
        if wait_for(lambda: hgetall(r, "lc:post:8").get("state") == "done", 8,
                    "sender.concurrency=2 with 5 destinations: 15 recipients delivered without idle stalls"):
            check(True, "sender.concurrency=2 with 5 destinations: 15 recipients delivered in %.1f s"
                  % (time.monotonic() - t0))
        msgs = read_jsonl(mxlog)
        check(all(sum(1 for m in msgs if m["rcpts"] == [a]) == 1 and
                  next(m for m in msgs if m["rcpts"] == [a])["listen"] == "%s:%d" % (ip, port)
                  for ip, lst in pool_rcpts.items() for a in lst), "each pool recipient: one message, at its MX")
        rc = procs.stop(sender, timeout=10)
        check(rc == 0, "second SIGTERM: exit 0 (status %s)" % rc)
    except Exception as e:  # report, clean up, fail
        traceback.print_exc()
        check(False, "test raised %r" % e)
    finally:
        for p in reversed(procs.procs):
            procs.stop(p, timeout=5)
        if ck.failed:
            for name in ("sender", "sender2", "mx", "mx2"):
                if os.path.exists(os.path.join(tmp, name + ".log")):
                    print("---- %s.log (last 60 lines) ----" % name)
                    sys.stdout.write("".join(procs.log(name).splitlines(True)[-60:]))
        procs.close()
    return ck.done()


if __name__ == "__main__":
    sys.exit(main())
