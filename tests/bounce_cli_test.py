#!/usr/bin/env python3
"""bounce_cli_test: `listcast bounce parse|ls`, hostile input, and the bounce daemon's per-list actions.

Part A (`bounce parse`): the held-out bounces of tests/bounces in text and --json (exactly the keys recipient,
status, replycode, reason, hardbounce; hardbounce a JSON boolean), stdin ("-"), a message that names no
failure (one "undefined" record), usage errors (exit 2), an unreadable file (exit 1), --help (exit 0).

Part B (bad input): generated MIME bombs and junk fed to `listcast bounce parse -`: 5,000-deep multipart
nesting, 20,000 parts, a 4 MiB header, 100,000 header lines, broken base64 and quoted-printable report parts,
an unknown and a lying charset, a truncated report, random binary, NUL bytes, an ISO-2022-JP text cut in the
middle of an escape, an SES-looking JSON nested 100,000 deep, and an input over the 10 MiB limit. Each must
finish within BOMB_SECONDS with exit 0 and a clear result (the "undefined" record, or exit 1 "too large"),
with no sanitizer report.

Part C (actions, with redis-server and listcast-bounce): a list whose hash sets bounce_threshold 2,
bounce_soft 1 and bounce_stale_days 3: two soft bounces disable delivery (status disabled, out of lc:active,
probe pending, disabled_reason threshold); a subscriber whose score of 1.5 is 10 days old starts again (score
1 after one soft bounce, still active); a userunknown hard bounce disables at once; an ARF complaint
unsubscribes (status unsubscribed), suppresses, and counts in the list's and the post's `complaints`; the
report hashes count by reason, domain and post; then `listcast bounce ls` (text and --json) shows them, and a
missing list is refused (exit 1).
"""
import json
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lctest  # noqa: E402
from lctest import redis_cmd, wait_for  # noqa: E402

BIN = os.environ.get("LC_BIN_DIR", "/work/main/build-bounce/bin")
LIBEXEC = os.environ.get("LC_LIBEXEC_DIR", "/work/main/build-bounce/libexec/listcast")
LISTCAST = os.path.join(BIN, "listcast")
BOUNCE = os.path.join(LIBEXEC, "listcast-bounce")
HELDOUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bounces")
BOMB_SECONDS = 20  # generous: the sanitizer build is several times slower than a release build
LIST = "crew@lists.example.org"
DOMAIN = "lists.example.org"
STREAM = "lc:stream:bounces"
KEYS = ["recipient", "status", "replycode", "reason", "hardbounce"]


def run(args, stdin=None, timeout=60):
    return subprocess.run([LISTCAST] + args, input=stdin, capture_output=True, timeout=timeout)


# ---- part A ----

def part_a(ck):
    rows = [l.split("\t") for l in open(os.path.join(HELDOUT, "expected.tsv"), encoding="utf-8").read().splitlines()[1:]]
    for fname in sorted({r[0] for r in rows}):
        exp = [r for r in rows if r[0] == fname and r[1] != "-"]
        path = os.path.join(HELDOUT, fname)
        pt = run(["bounce", "parse", path])
        pj = run(["bounce", "parse", path, "--json"])
        lines = [l.split("\t") for l in pt.stdout.decode().splitlines()]
        try:
            arr = json.loads(pj.stdout)
        except ValueError:
            arr = None
        ok = pt.returncode == 0 and pj.returncode == 0 and isinstance(arr, list) and len(arr) == len(lines)
        ok = ok and all(isinstance(o, dict) and sorted(o) == sorted(KEYS) for o in arr)
        ok = ok and all(isinstance(o["replycode"], int) and isinstance(o["hardbounce"], bool) for o in arr)
        if exp:
            for r in exp:
                m = [o for o in arr or [] if o["recipient"] == r[2]]
                t = [l for l in lines if l[0] == r[2]]
                ok = ok and bool(m) and m[0]["reason"] == r[5] and m[0]["hardbounce"] == (r[6] == "1")
                ok = ok and bool(t) and len(t[0]) == 5 and t[0][3] == r[5] and t[0][4] == r[6]
                if r[3]:
                    ok = ok and m[0]["status"] == r[3] and t[0][1] == r[3]
        else:  # a delay notice or an auto-reply: no failure, one "undefined" record
            ok = ok and arr == [{"recipient": "", "status": "", "replycode": 0, "reason": "undefined",
                                 "hardbounce": False}]
        ck.check(ok, f"bounce parse {fname}: text and --json agree with expected.tsv ({len(exp)} rows)")
    with open(os.path.join(HELDOUT, "gmail-nxmailbox.eml"), "rb") as f:
        p = run(["bounce", "parse", "-", "--json"], stdin=f.read())
    ck.check(p.returncode == 0 and json.loads(p.stdout)[0]["recipient"] == "no.such.person.here@gmail.example",
             "bounce parse - reads standard input")
    p = run(["bounce", "parse", "-"], stdin=b"Hello, just a human note.\n")
    ck.check(p.returncode == 0 and p.stdout == b"\t-\t0\tundefined\t0\n", "no failure named: one undefined line")
    p = run(["bounce", "parse", os.path.join(HELDOUT, "delayed.eml"), "--all"])
    ck.check(p.returncode == 0 and b"mira@slow.example\t4.4.1" in p.stdout, "--all shows the delayed entry")
    p = run(["bounce", "parse"])
    ck.check(p.returncode == 2 and p.stderr.startswith(b"listcast: "), "missing FILE: usage error (exit 2)")
    p = run(["bounce", "parse", "a", "b"])
    ck.check(p.returncode == 2, "two files: usage error (exit 2)")
    p = run(["bounce", "parse", "/nonexistent/x.eml"])
    ck.check(p.returncode == 1 and b"listcast: " in p.stderr, "unreadable file: refused (exit 1)")
    p = run(["bounce", "nope"])
    ck.check(p.returncode == 2 and b"parse or ls" in p.stderr, "unknown subcommand names the choices")
    for page in (["bounce", "parse", "--help"], ["bounce", "ls", "--help"], ["help", "bounce"]):
        p = run(page)
        ck.check(p.returncode == 0 and b"NAME" in p.stdout and b"EXAMPLES" in p.stdout or
                 (page == ["help", "bounce"] and p.returncode == 0 and b"SYNOPSIS" in p.stdout),
                 f"listcast {' '.join(page)}: manual page")


# ---- part B ----

def bombs():
    rnd = random.Random(5)
    h = b"From: MAILER-DAEMON@x.example\r\nSubject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
    yield "deep nesting (5,000 multiparts)", h + b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1) for i in range(5000))
    yield "20,000 parts", h + b"Content-Type: multipart/report; boundary=p\r\n\r\n" + (
        b"--p\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; a@b.example\r\n"
        b"Action: failed\r\nStatus: 5.1.1\r\n\r\n" * 20000) + b"--p--\r\n"
    yield "4 MiB header", h + b"X-Big: " + b"a" * (4 << 20) + b"\r\n\r\nbody\r\n"
    yield "100,000 header lines", h + b"X-H: v\r\n" * 100000 + b"\r\nbody\r\n"
    yield "broken base64 report", h + (b"Content-Type: multipart/report; boundary=q\r\n\r\n--q\r\n"
                                      b"Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64"
                                      b"\r\n\r\n" + b"!!!@@@===" * 5000 + b"\r\n--q--\r\n")
    yield "broken quoted-printable", h + (b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable"
                                         b"\r\n\r\n" + b"=ZZ=\r\n=4" * 20000)
    yield "unknown charset", h + b"Content-Type: text/plain; charset=x-no-such-charset-\xff\r\n\r\n\xfe\xff" * 10
    yield "lying charset", h + b"Content-Type: text/plain; charset=utf-16\r\n\r\n" + bytes(
        rnd.randrange(256) for _ in range(100000))
    yield "truncated report", h + (b"Content-Type: multipart/report; boundary=t\r\n\r\n--t\r\n"
                                  b"Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; ")
    yield "random binary", bytes(rnd.randrange(256) for _ in range(1 << 20))
    yield "NUL bytes", b"\0" * (1 << 20)
    yield "cut ISO-2022-JP", h + b"Content-Type: text/plain\r\n\r\n" + b"\x1b$B%G%#\x1b$" * 30000
    yield "deep SES JSON", h + b"\r\n{\"notificationType\":\"Bounce\",\"bounce\":" + b"[" * 100000 + b"\r\n"
    yield "over 10 MiB", b"X" * (10 * 1024 * 1024 + 10)


def part_b(ck):
    for name, data in bombs():
        t0 = time.monotonic()
        try:
            p = run(["bounce", "parse", "-", "--json"], stdin=data, timeout=BOMB_SECONDS)
        except subprocess.TimeoutExpired:
            ck.check(False, f"bomb {name}: finished within {BOMB_SECONDS} s")
            continue
        dt = time.monotonic() - t0
        bad = b"Sanitizer" in p.stderr or b"runtime error:" in p.stderr
        if name == "over 10 MiB":
            ok = p.returncode == 1 and b"too large" in p.stderr
        else:
            try:
                arr = json.loads(p.stdout)
            except ValueError:
                arr = None
            ok = p.returncode == 0 and isinstance(arr, list) and len(arr) >= 1 and all(
                sorted(o) == sorted(KEYS) for o in arr)
            if name != "20,000 parts":
                ok = ok and arr == [{"recipient": "", "status": "", "replycode": 0, "reason": "undefined",
                                     "hardbounce": False}]
        ck.check(ok and not bad, f"bomb {name}: clear result in {dt:.2f} s (exit {p.returncode})")


# ---- part C ----

def sub_key(addr):
    return f"lc:sub:{LIST}:{addr}"


def part_c(ck):
    procs = lctest.Procs()
    try:
        redis, url = lctest.start_redis(procs, durable=False)
        sock = url[len("unix://"):]
        key = os.urandom(32)
        secret = os.path.join(procs.tmp, "secret")
        lctest.write_secret(secret, key)
        redis_cmd(sock, "SADD", "lc:lists", LIST)
        redis_cmd(sock, "HSET", "lc:list:" + LIST, "address", LIST, "id", 1, "policy", "open", "created",
                  int(time.time()), "bounce_threshold", "2", "bounce_soft", "1", "bounce_stale_days", "3")
        subs = {31: "ann@a.example", 32: "ben@b.example", 33: "cid@a.example", 34: "dee@c.example"}
        for sid, addr in subs.items():
            redis_cmd(sock, "HSET", sub_key(addr), "id", sid, "address", addr, "list", LIST, "status", "active")
            redis_cmd(sock, "HSET", "lc:active:" + LIST, addr, sid)
            redis_cmd(sock, "HSET", "lc:subids", sid, f"{LIST} {addr}")
        old = int(time.time()) - 10 * 86400
        redis_cmd(sock, "HSET", sub_key(subs[32]), "bounce_score", "1.5", "last_bounce_at", old)
        redis_cmd(sock, "HSET", "lc:post:7", "id", 7, "list", LIST, "state", "done", "recipients", 4, "delivered", 4,
                  "deferred", 0, "bounced", 0)

        def add(sid, **kw):
            fields = {"rcpt": lctest.verp_encode(key, 7, sid, DOMAIN), "from": "", "post": 7, "sub": sid}
            fields.update(kw)
            args = []
            for k, v in fields.items():
                args += [k, v]
            redis_cmd(sock, "XADD", STREAM, "*", *args)

        soft = "452 4.2.2 Mailbox full"
        add(31, reply=soft)
        add(31, reply=soft)
        add(32, reply=soft)
        add(33, reply="550 5.1.1 <cid@a.example>: Recipient address rejected: User unknown")
        with open(os.path.join(HELDOUT, "arf-two-rcpts.eml"), encoding="utf-8") as f:
            arf = f.read().replace("ines@isp.example", subs[34])
        add(34, msg=arf)
        daemon = procs.start("bounce", [BOUNCE, "--set", "redis.url=" + url, "--set", "state.dir=" + procs.tmp,
                                        "--set", "secret.file=" + secret, "--set", "node.name=t1"])

        def drained():
            if daemon.poll() is not None:
                raise AssertionError(f"listcast-bounce exited with {daemon.returncode}")
            return redis_cmd(sock, "XLEN", STREAM) == 0

        try:
            wait_for("every entry handled", drained, timeout=30)
        except AssertionError as e:
            ck.check(False, str(e))

        def h(addr, field):
            return redis_cmd(sock, "HGET", sub_key(addr), field)

        def active(addr):
            return redis_cmd(sock, "HEXISTS", "lc:active:" + LIST, addr) == 1

        ck.check(h(subs[31], "bounce_score") == "2" and h(subs[31], "status") == "disabled" and not active(subs[31])
                 and h(subs[31], "probe") == "pending" and h(subs[31], "disabled_reason") == "threshold",
                 "list policy (soft 1, threshold 2): two soft bounces disable, probe pending")
        ck.check(h(subs[32], "bounce_score") == "1" and h(subs[32], "status") == "active" and active(subs[32]),
                 "a score whose last bounce is 10 days old (stale after 3) starts again: 1, still active")
        ck.check(h(subs[33], "status") == "disabled" and h(subs[33], "disabled_reason") == "userunknown" and
                 not active(subs[33]), "userunknown hard bounce disables at once")
        ck.check(h(subs[34], "status") == "unsubscribed" and not active(subs[34]) and
                 redis_cmd(sock, "SISMEMBER", "lc:suppress", subs[34]) == 1,
                 "ARF complaint: unsubscribed, out of lc:active, suppressed")
        ck.check(redis_cmd(sock, "HGET", "lc:list:" + LIST, "complaints") == "1" and
                 redis_cmd(sock, "HGET", "lc:post:7", "complaints") == "1",
                 "complaint counted on the list and the post")
        reasons = redis_cmd(sock, "HGETALL", "lc:bncstat:reason:" + LIST)
        reasons = dict(zip(reasons[::2], reasons[1::2]))
        ck.check(reasons == {"mailboxfull": "3", "userunknown": "1", "feedback": "1"},
                 f"failures by reason recorded ({reasons})")
        doms = redis_cmd(sock, "HGETALL", "lc:bncstat:domain:" + LIST)
        doms = dict(zip(doms[::2], doms[1::2]))
        ck.check(doms == {"a.example": "3", "b.example": "1", "c.example": "1"}, f"by domain recorded ({doms})")
        ck.check(redis_cmd(sock, "HGET", "lc:bncstat:post:" + LIST, "7") == "5", "by post recorded")
        ck.check(redis_cmd(sock, "HGET", "lc:list:" + LIST, "bounces") == "4", "list bounces counter")

        env = ["--set", "redis.url=" + url]
        p = run(["bounce", "ls", LIST, "--json"] + env)
        try:
            o = json.loads(p.stdout)
        except ValueError:
            o = {}
        ck.check(p.returncode == 0 and o.get("list") == LIST and o.get("bounces") == 4 and o.get("complaints") == 1
                 and o.get("by_reason", [None])[0] == {"reason": "mailboxfull", "count": 3}
                 and {"domain": "a.example", "count": 3} in o.get("by_domain", [])
                 and o.get("by_post") == [{"post": 7, "count": 5}], f"bounce ls --json ({o})")
        p = run(["bounce", "ls", LIST] + env)
        out = p.stdout.decode()
        ck.check(p.returncode == 0 and "BY REASON" in out and "BY DOMAIN" in out and "BY POST" in out and
                 "mailboxfull" in out and "a.example" in out, "bounce ls text tables")
        p = run(["bounce", "ls", "nolist@lists.example.org"] + env)
        ck.check(p.returncode == 1 and b"no such list" in p.stderr, "bounce ls of a missing list: exit 1")
        procs.stop(daemon)
        ck.check(daemon.returncode == 0, "daemon exits 0 on SIGTERM")
        ck.check(not lctest.sanitizer_reports(procs), "no sanitizer reports")
    finally:
        procs.close()


def main():
    ck = lctest.Checks()
    if not os.access(LISTCAST, os.X_OK):
        ck.check(False, f"{LISTCAST} exists")
        return ck.done()
    part_a(ck)
    part_b(ck)
    if os.access(BOUNCE, os.X_OK):
        part_c(ck)
    else:
        ck.check(False, f"{BOUNCE} exists")
    return ck.done()


if __name__ == "__main__":
    sys.exit(main())
