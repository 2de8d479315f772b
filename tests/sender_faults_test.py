#!/usr/bin/env python3
"""sender_faults_test.py: listcast-sender against bad receiving servers, retries, expiry, STARTTLS, CHUNKING,
notices and the fallback relay (issue 4: outcomes and "Bad input from servers"). Python 3 stdlib only.

Starts a throw-away redis-server and fake MX hosts (tests/fakemx.py) on 127.0.0.30-39, runs listcast-sender with
short test timings (sender.retry_min=1, sender.retry_max=2, sender.reply_timeout=2, sender.mx_backoff=3) and checks:
  - multi-line replies; a malformed reply, a reply over 64 KB, 4xx at MAIL, RCPT and after DATA (each once), a
    server that mis-orders pipelined replies (354 in reply to RCPT): the recipient is deferred, put in lc:retry,
    moved back to work by the poller and delivered on a later attempt, exactly once;
  - 5xx at MAIL, RCPT and after DATA: bounced with an lc:stream:bounces entry;
  - a 4xx forever on a post older than sender.max_lifetime: a bounce with a "4.4.7 ... expired" reply;
  - a connection dropped mid-DATA and a tarpit banner (one octet a second): the next MX delivers;
  - STARTTLS: a TLS session (logged with version and cipher), a handshake that fails and a 454 to STARTTLS (next
    MX, in clear under `may`), lc:tlspolicy `encrypt` towards a host without STARTTLS (deferred, never sent);
  - CHUNKING: the message by BDAT, intact;
  - the List-Unsubscribe header of every list copy (RFC 8058 one-click token of the subscriber), none on notices;
    notices use the batch's `from` as MAIL FROM (and <> when it is empty);
  - counters: every post ends with delivered + bounced = recipients and deferred = recipients still waiting;
    XPENDING empty; a batch added after all of this is still delivered at once (no wedged connection slot);
  - a second sender with sender.fallback_relay: a 451 and an unreachable MX both end at the fallback relay.
Env: LC_LIBEXEC_DIR; LC_SENDER_VERBOSE=1; LC_KEEP_TMP=1. Every wait is bounded; everything is stopped at the end.
"""

import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lctest  # noqa: E402
from lctest import B32, verp_decode, verp_encode  # noqa: E402
from sender_test import read_jsonl, start_fakemx  # noqa: E402

LIBEXEC = os.environ.get("LC_LIBEXEC_DIR", "/work/main/build-sender/libexec/listcast")
SENDER = os.path.join(LIBEXEC, "listcast-sender")
LIST = "news@lists.example.net"
LIST_DOMAIN = "lists.example.net"
PUBLIC = "https://lists.example.net"
NODE = "fnode"
DELIVERIES = "lc:stream:deliveries"
BOUNCES = "lc:stream:bounces"

ck = lctest.Checks()
check = ck.check

MESSAGE = ("From: Owner <owner@example.net>\r\nTo: " + LIST + "\r\nSubject: faults\r\nMessage-ID: <f1@example.net>\r\n"
           "\r\nHello,\r\n.leading dot\r\n" + "".join("body line %d\r\n" % i for i in range(50))).encode()

SUBS = {}


def sub_id(addr):
    if addr not in SUBS:
        SUBS[addr] = 500 + len(SUBS)
    return SUBS[addr]


def token(key, sub):
    """lc_token_make(LC_TOK_ONECLICK, sub, 0): 'o' ID '-' EXPIRES '-' MAC16 (see common/lc_token.c)."""
    ids, exps = lctest.b32(sub), lctest.b32(0)
    msg = b"tok\0o\0" + ids.encode() + b"\0" + exps.encode()
    bits = int.from_bytes(hmac.new(key, msg, hashlib.sha256).digest()[:10], "big")
    mac = "".join(B32[(bits >> (75 - 5 * i)) & 31] for i in range(16))
    return "o%s-%s-%s" % (ids, exps, mac)


def hgetall(r, key):
    v = r.cmd("HGETALL", key) or []
    return dict(zip(v[0::2], v[1::2]))


def wait_for(pred, timeout, what):
    try:
        return lctest.wait_for(what, pred, timeout, 0.1, retry=(OSError, lctest.RedisError))
    except AssertionError:
        return check(False, "within %g s: %s" % (timeout, what))


def make_post(r, post, n, created=None, notice=False):
    r.cmd("SET", "lc:msg:%d" % post, MESSAGE)
    fields = ["id", post, "list", LIST, "from", "owner@example.net", "size", len(MESSAGE), "created",
              int(created if created is not None else time.time()), "state", "sending", "recipients", n]
    if notice:
        fields += ["kind", "notice", "to", "x", "sub", 0, "envelope_from", ""]
    r.cmd("HSET", "lc:post:%d" % post, *fields)


def xadd(r, post, hosts, addrs, **extra):
    rc = "\n".join("%d %s" % (sub_id(a), a) for a in addrs)
    args = ["XADD", DELIVERIES, "*", "post", post, "hosts", hosts, "rcpts", rc]
    for k, v in extra.items():
        args += [k, v]
    return r.cmd(*args)


def make_cert(tmp):
    if not shutil.which("openssl"):
        return None
    cert, keyf = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=mx.tls.test",
                        "-days", "2", "-keyout", keyf, "-out", cert], capture_output=True, timeout=60)
    return (cert, keyf) if p.returncode == 0 else None


def main():
    if not os.access(SENDER, os.X_OK):
        check(False, "no sender at %s (set LC_LIBEXEC_DIR)" % SENDER)
        return ck.done()
    procs = lctest.Procs()
    tmp = procs.tmp
    try:
        _, url = lctest.start_redis(procs, durable=False)
        r = lctest.Redis(url)
        ips = ["127.0.0.%d" % i for i in range(30, 40)]
        port = lctest.free_port(ips[0], also=ips[1:])
        H = {i: "127.0.0.%d" % i for i in range(30, 40)}
        HP = {i: "%s:%d" % (H[i], port) for i in H}
        key = os.urandom(32)
        secret = os.path.join(tmp, "secret")
        lctest.write_secret(secret, key)

        def verp(post, addr):
            return "^" + verp_encode(key, post, sub_id(addr), LIST_DOMAIN) + "$"

        # ---- fake MX hosts ----
        # .30 main (PIPELINING, scripted faults), .31 second MX, .32 CHUNKING, .33 STARTTLS, .34 STARTTLS with a
        # broken handshake, .35 STARTTLS answered 454, .36 tarpit banner, .37 fallback relay, .38 nothing
        huge = "\n".join(["452-" + "z" * 100] * 700 + ["452 too much"])
        rules = [
            {"stage": "connect", "listen": H[36], "trickle": 1, "reply": "220 tarpit.test ESMTP"},
            {"rcpt": "multi@a.test", "reply": "250-first line\n250-second line\n250 2.1.5 ok"},
            {"rcpt": "garbage@a.test", "raw": "this is no SMTP reply\r\n", "times": 1},
            {"stage": "mail", "from_re": verp(1, "huge@a.test"), "reply": huge, "times": 1},
            {"stage": "mail", "from_re": verp(1, "mail4@a.test"), "reply": "451 4.3.0 mail later", "times": 1},
            {"rcpt": "rcpt4@a.test", "reply": "450 4.2.1 mailbox busy", "times": 1},
            {"stage": "data", "rcpt": "data4@a.test", "reply": "451 4.3.0 queue later", "times": 1},
            {"stage": "mail", "from_re": verp(1, "mail5@a.test"), "reply": "553 5.1.8 sender rejected"},
            {"rcpt": "rcpt5@a.test", "reply": "550 5.1.1 no such user"},
            {"stage": "data", "rcpt": "data5@a.test", "reply": "554 5.7.1 content rejected"},
            {"rcpt": "reorder@a.test", "action": "reorder", "times": 1},
            {"stage": "body", "rcpt": "middata@b.test", "action": "drop", "listen": H[30], "times": 1},
            {"rcpt": "forever@e.test", "reply": "451 4.7.1 greylisted"},
            {"rcpt": "twice@h.test", "reply": "451 4.7.1 try again later", "times": 2},
            {"rcpt": "fb451@f.test", "reply": "451 4.7.1 greylisted", "listen": H[30]},
            {"stage": "starttls", "listen": H[34], "action": "badtls"},
            {"stage": "starttls", "listen": H[35], "reply": "454 4.7.0 TLS not available"},
        ]
        rules_path = os.path.join(tmp, "rules.json")
        with open(rules_path, "w") as f:
            json.dump(rules, f)
        _, log_main = start_fakemx(procs, "mx", [HP[30], HP[31], HP[36]], ["--script", rules_path])
        _, log_chunk = start_fakemx(procs, "chunk", [HP[32]], ["--script", rules_path, "--chunking"])
        cert = make_cert(tmp)
        log_tls = None
        if cert:
            _, log_tls = start_fakemx(procs, "tls", [HP[33], HP[34], HP[35]],
                                      ["--script", rules_path, "--tls-cert", cert[0], "--tls-key", cert[1],
                                       "--hostname", "mx.tls.test"])
        _, log_fb = start_fakemx(procs, "fb", [HP[37]], ["--script", rules_path])

        r.cmd("HSET", "lc:tlspolicy", "enc.test", "encrypt", "enc2.test", "encrypt")

        # ---- posts and batches ----
        A = ["multi@a.test", "garbage@a.test", "huge@a.test", "mail4@a.test", "rcpt4@a.test", "data4@a.test",
             "mail5@a.test", "rcpt5@a.test", "data5@a.test", "reorder@a.test", "plain1@a.test", "plain2@a.test"]
        B = ["middata@b.test", "b2@b.test"]
        T = ["tarpit@t.test"]
        C = ["chunk1@c.test", "chunk2@c.test"]
        S = ["tls1@s.test", "tls2@s.test"]
        SB = ["tlsbad@s2.test"]
        S454 = ["tls454@s3.test"]
        ENC = ["x@enc.test"]
        ENC2 = ["y@enc2.test"]
        post1 = A + B + T + C + ENC + ((S + SB + S454 + ENC2) if cert else [])
        make_post(r, 1, len(post1))
        make_post(r, 2, 1, created=time.time() - 400000)  # older than sender.max_lifetime (4 days)
        make_post(r, 3, 1, notice=True)
        make_post(r, 4, 1, notice=True)
        r.cmd("XGROUP", "CREATE", DELIVERIES, "sender", "0", "MKSTREAM")
        xadd(r, 1, "mx.a.test=" + H[30], A)
        xadd(r, 1, "mx.b.test=%s mx2.b.test=%s" % (H[30], H[31]), B)
        xadd(r, 1, "mx.t.test=%s mx2.t.test=%s" % (H[36], H[31]), T)
        xadd(r, 1, "mx.c.test=" + H[32], C)
        xadd(r, 1, "mx.enc.test=" + H[30], ENC)
        if cert:
            xadd(r, 1, "mx.tls.test=" + H[33], S)
            xadd(r, 1, "mx.s2.test=%s mx2.s2.test=%s" % (H[34], H[31]), SB)
            xadd(r, 1, "mx.s3.test=%s mx2.s3.test=%s" % (H[35], H[31]), S454)
            xadd(r, 1, "mx.tls.test=" + H[33], ENC2)
        xadd(r, 2, "mx.e.test=" + H[30], ["forever@e.test"])
        xadd(r, 3, "mx.n.test=" + H[30], ["owner@n.test"], **{"from": "news-bounces@" + LIST_DOMAIN})
        xadd(r, 4, "mx.n.test=" + H[30], ["auto@n.test"], **{"from": ""})

        base = [SENDER, "--set", "redis.url=" + url, "--set", "sender.mx_port=%d" % port, "--set",
                "secret.file=" + secret, "--set", "state.dir=" + tmp, "--set", "node.name=" + NODE, "--set",
                "smtp.hostname=sender.test", "--set", "http.public_url=" + PUBLIC + "/", "--set",
                "sender.retry_min=1", "--set", "sender.retry_max=2", "--set", "sender.reply_timeout=2",
                "--set", "sender.mx_backoff=3", "--set", "sender.per_mx=3"]
        if os.environ.get("LC_SENDER_VERBOSE"):
            base.append("-v")
        sender = procs.start("sender", base)

        final1 = len(post1) - len(ENC)  # x@enc.test stays deferred: never sent in clear

        def settled():
            p1, p2, p3, p4 = (hgetall(r, "lc:post:%d" % i) for i in (1, 2, 3, 4))
            return (int(p1.get("delivered", 0)) + int(p1.get("bounced", 0)) == final1 and
                    int(p2.get("bounced", 0)) == 1 and p3.get("delivered") == "1" and p4.get("delivered") == "1")
        wait_for(settled, 60, "every recipient of posts 1-4 has its final outcome (retries included)")
        check(sender.poll() is None, "the sender is still running")

        msgs = read_jsonl(log_main) + read_jsonl(log_chunk) + read_jsonl(log_fb) + \
            (read_jsonl(log_tls) if log_tls else [])
        by = {}
        for m in msgs:
            for a in m["rcpts"]:
                by.setdefault(a, []).append(m)
        delivered = [a for a in post1 if a not in ("mail5@a.test", "rcpt5@a.test", "data5@a.test") + tuple(ENC)]
        check(all(len(by.get(a, [])) == 1 for a in delivered),
              "each of %d deliverable recipients got exactly one copy (%s)" % (
                  len(delivered), [a for a in delivered if len(by.get(a, [])) != 1]))
        check(not any(a in by for a in ("mail5@a.test", "rcpt5@a.test", "data5@a.test", "x@enc.test",
                                        "forever@e.test")), "refused, expired and encrypt-only recipients got none")
        text = procs.log("sender")
        retried = ["garbage@a.test", "huge@a.test", "mail4@a.test", "rcpt4@a.test", "data4@a.test", "reorder@a.test"]
        check(all("rcpt=<%s> deferred" % a in text for a in retried),
              "malformed reply, reply over 64 KB, 4xx at MAIL/RCPT/DATA, mis-ordered replies: deferred first")
        check(all(len(by.get(a, [])) == 1 for a in retried), "... and delivered by a retry, once each")
        check("protocol error: 354 in reply to RCPT TO" in text, "a 354 in reply to RCPT is a protocol error")
        check("reply too long" in text and "malformed reply line" in text, "the log names the reply faults")
        check("due recipients moved back to " + DELIVERIES in text, "the retry poller moved recipients back")
        check(by.get("multi@a.test") and by["multi@a.test"][0]["listen"] == HP[30], "multi-line reply: delivered")
        check(by.get("middata@b.test") and by["middata@b.test"][0]["listen"] == HP[31],
              "connection dropped mid-DATA: the next MX delivered")
        check(by.get("tarpit@t.test") and by["tarpit@t.test"][0]["listen"] == HP[31],
              "tarpit banner (1 octet/s): timed out after sender.reply_timeout, the next MX delivered")
        check("timeout after 2 s in state banner" in text, "the tarpit is cut off by the reply deadline")
        check("host=%s down for 3 s" % HP[36] in text, "the tarpit host is marked down for sender.mx_backoff")

        # bounces
        bl = [dict(zip(e[1][0::2], e[1][1::2])) for e in r.cmd("XRANGE", BOUNCES, "-", "+")]
        bsub = {e.get("sub"): e for e in bl}
        check(all(str(sub_id(a)) in bsub for a in ("mail5@a.test", "rcpt5@a.test", "data5@a.test")),
              "5xx at MAIL, RCPT and after DATA: bounce entries")
        exp = bsub.get(str(sub_id("forever@e.test")), {})
        check(exp.get("reply", "").startswith("451 4.4.7 ") and "expired" in exp.get("reply", "")
              and verp_decode(key, exp.get("rcpt", "")) == (2, sub_id("forever@e.test")),
              "a 4xx on a post older than sender.max_lifetime: bounce entry \"451 4.4.7 ... expired\" (%s)"
              % exp.get("reply"))

        # counters
        p1 = hgetall(r, "lc:post:1")
        check((p1.get("bounced"), p1.get("deferred")) == ("3", "1"),
              "post 1: bounced=3, deferred=1 (x@enc.test waiting; retried recipients left deferred) (got %s/%s)"
              % (p1.get("bounced"), p1.get("deferred")))
        check(int(p1["delivered"]) == final1 - 3 and p1.get("state") == "sending",
              "post 1: delivered=%d, still sending (one recipient waits)" % (final1 - 3))
        dom = hgetall(r, "lc:postdom:1")
        check(dom.get("a.test:deferred") == "0" and dom.get("enc.test:deferred") == "1",
              "per-domain deferred counters return to 0 once retries resolve (%s)" % {
                  k: v for k, v in dom.items() if k.endswith(":deferred")})
        p2 = hgetall(r, "lc:post:2")
        check((p2.get("bounced"), p2.get("deferred", "0"), p2.get("state")) == ("1", "0", "done"),
              "post 2 (expired): bounced=1 deferred=0 done (got %s)" % p2)
        retry = r.cmd("ZRANGE", "lc:retry", 0, -1)
        check(len(retry) == 1 and retry[0].split("\n")[4] == "x@enc.test",
              "lc:retry holds exactly the encrypt-policy recipient (%s)" % [m.split("\n")[4] for m in retry])
        check("TLS policy encrypt" in text, "encrypt policy and no STARTTLS: deferred, not sent in clear")
        # lc:postdefer:ID: the last reply of each recipient still deferred; retries that resolved are deleted
        pd = hgetall(r, "lc:postdefer:1")
        check(list(pd) == ["x@enc.test"] and re.match(r"^\d{10} attempt \d+: \S", pd["x@enc.test"])
              and len(pd["x@enc.test"]) <= 300,
              "lc:postdefer:1 holds only the recipient still deferred, as TIME attempt N: REPLY (%s)" % pd)
        ttl = r.cmd("TTL", "lc:postdefer:1")
        check(0 < ttl <= 4 * 86400 + 86400, "lc:postdefer:1 expires after sender.max_lifetime + 1 day (TTL %s)" % ttl)
        check(r.cmd("EXISTS", "lc:postdefer:2") == 0, "an expired first attempt leaves no deferral behind")

        # headers, notices, chunking, TLS
        lu_ok = all(m["headers"].get("List-Unsubscribe") ==
                    "<mailto:news-unsubscribe@%s?subject=unsubscribe%%20%s>, <%s/u/%s>" % (
                        LIST_DOMAIN, token(key, sub_id(m["rcpts"][0])), PUBLIC, token(key, sub_id(m["rcpts"][0])))
                    and m["headers"].get("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
                    for m in msgs if m["rcpts"][0] in post1)
        check(lu_ok, "every list copy: List-Unsubscribe with the subscriber's one-click token, and -Post")
        n3, n4 = by.get("owner@n.test", [{}])[0], by.get("auto@n.test", [{}])[0]
        check(n3.get("mail_from") == "news-bounces@" + LIST_DOMAIN and n4.get("mail_from") == "",
              "notices: MAIL FROM is the batch's from (%r, %r)" % (n3.get("mail_from"), n4.get("mail_from")))
        check("List-Unsubscribe" not in n3.get("headers", {}) and "List-Unsubscribe" not in n4.get("headers", {}),
              "notices carry no List-Unsubscribe")
        mc = [by[a][0] for a in C if a in by]
        check(len(mc) == 2 and all(m["bdat"] for m in mc), "CHUNKING server: messages came by BDAT")
        with open(os.path.join(tmp, "chunk-mail", "%d.eml" % mc[0]["msg"]), "rb") as f:
            body = f.read()
        check(body.endswith(MESSAGE) and body.startswith(b"List-Unsubscribe: "),
              "BDAT: header lines + the message, byte for byte")
        check(all(m["pipelined"] > 0 for m in mc), "BDAT transactions are pipelined")
        if cert:
            ms = [by[a][0] for a in S + ENC2 if a in by]
            check(len(ms) == 3 and all(m["tls"] and m["tls"].startswith("TLS") for m in ms),
                  "STARTTLS: messages over TLS (%s)" % [m["tls"] for m in ms])
            check("tls=TLS1." in text and "cipher=" in text, "the TLS version and cipher are logged")
            check(by.get("tlsbad@s2.test") and by["tlsbad@s2.test"][0]["listen"] == HP[31],
                  "failed TLS handshake: next MX")
            check(by.get("tls454@s3.test") and by["tls454@s3.test"][0]["listen"] == HP[31],
                  "454 to STARTTLS: next MX")
        else:
            print("skip STARTTLS checks: no openssl to make a test certificate")

        # later batches still flow
        make_post(r, 5, 3)
        t0 = time.monotonic()
        xadd(r, 5, "mx.a.test=" + H[30], ["late1@a.test", "late2@a.test"])
        xadd(r, 5, "mx.c.test=" + H[32], ["late3@c.test"])
        wait_for(lambda: hgetall(r, "lc:post:5").get("state") == "done", 10, "a later post is delivered")
        check(hgetall(r, "lc:post:5").get("delivered") == "3",
              "a batch after all faults is delivered in %.1f s (no wedged slot)" % (time.monotonic() - t0))
        # a 451 twice, then delivered: its last reply is in lc:postdefer:7 while it waits, then deleted
        make_post(r, 7, 1)
        xadd(r, 7, "mx.h.test=" + H[30], ["twice@h.test"])
        wait_for(lambda: "attempt 2: 451 4.7.1 try again later" in (r.cmd("HGET", "lc:postdefer:7", "twice@h.test")
                                                                    or ""), 15,
                 "a 451 recipient's last reply is in lc:postdefer:7 (attempt 2)")
        wait_for(lambda: hgetall(r, "lc:post:7").get("state") == "done", 15, "the retry delivers it")
        check(r.cmd("HEXISTS", "lc:postdefer:7", "twice@h.test") == 0 and
              hgetall(r, "lc:post:7").get("delivered") == "1", "delivered by a retry: its lc:postdefer field is gone")
        check(r.cmd("XPENDING", DELIVERIES, "sender")[0] == 0, "XPENDING empty")
        check(procs.stop(sender, timeout=10) == 0, "SIGTERM: exit 0")

        # ---- fallback relay ----
        make_post(r, 6, 2)
        xadd(r, 6, "mx.f.test=" + H[30], ["fb451@f.test"])
        xadd(r, 6, "mx.g.test=" + H[38], ["fbdown@g.test"])
        sender2 = procs.start("sender2", base + ["--set", "sender.fallback_relay=" + HP[37]])
        wait_for(lambda: hgetall(r, "lc:post:6").get("state") == "done", 20,
                 "with sender.fallback_relay the deferred recipients are delivered")
        fbm = read_jsonl(log_fb)
        check(sorted(a for m in fbm for a in m["rcpts"]) == ["fb451@f.test", "fbdown@g.test"],
              "a 451 and an unreachable MX: both delivered by the fallback relay")
        check(hgetall(r, "lc:post:6").get("deferred", "0") == "0", "fallback deliveries never count as deferred")
        check(procs.stop(sender2, timeout=10) == 0, "second sender: exit 0")
        check(not lctest.sanitizer_reports(procs), "no sanitizer reports")
    except Exception as e:
        traceback.print_exc()
        check(False, "test raised %r" % e)
    finally:
        for p in reversed(procs.procs):
            procs.stop(p, timeout=5)
        if ck.failed:
            for name in ("sender", "sender2"):
                if os.path.exists(os.path.join(tmp, name + ".log")):
                    print("---- %s.log (last 80 lines) ----" % name)
                    sys.stdout.write("".join(procs.log(name).splitlines(True)[-80:]))
        procs.close()
    return ck.done()


if __name__ == "__main__":
    sys.exit(main())
