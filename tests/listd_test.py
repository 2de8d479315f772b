#!/usr/bin/env python3
"""listd_test.py: integration test of listcast-listd, the SMTP front door (Python 3 stdlib only).

Starts its own redis-server (temp dir, unix socket, --port 0, appendonly yes, appendfsync always), writes a
secret file, creates lists directly in Redis as schema/SCHEMA.md describes, starts
$LC_LIBEXEC_DIR/listcast-listd (default /work/main/build-listd/libexec/listcast) on a free loopback port and
talks SMTP to it over raw sockets (so pipelining and raw bytes can be sent). VERP addresses are computed (in
lctest.py) exactly as common/lc_verp.h describes, independently of lc_verp.c.

Prints one line per check (and the listd log when a check failed or LC_TEST_VERBOSE is set; LC_TEST_KEEP
keeps the temporary directory); exits 0 when every check passed, 1 otherwise. Always kills what it started. Every
wait is bounded (socket timeouts, deadlines, and an overall alarm).
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lctest  # noqa: E402
from lctest import verp_encode as verp  # noqa: E402

LIBEXEC = os.environ.get("LC_LIBEXEC_DIR", "/work/main/build-listd/libexec/listcast")
LISTD = os.path.join(LIBEXEC, "listcast-listd")
MAX_SIZE = 65536
OVERALL_TIMEOUT = 150
IO_TIMEOUT = 10

LIST = "news@lists.test"
CLUB = "club@lists.test"      # policy members
ANN = "ann@lists.test"        # policy announce
OWNER = "owner@ex.test"
MEMBER = "member@ex.test"


class Failure(Exception):
    pass


def hgetall(r, key):
    v = r.cmd("HGETALL", key)
    return {v[i].decode(): v[i + 1] for i in range(0, len(v), 2)}


# ---------------------------------------------------------------- SMTP over a raw socket

class Smtp:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.buf = b""

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def send(self, data):
        self.s.sendall(data if isinstance(data, bytes) else data.encode())

    def reply(self):
        """One (possibly multi-line) reply: (code, [text lines])."""
        lines = []
        while True:
            while b"\n" not in self.buf:
                d = self.s.recv(65536)
                if not d:
                    raise Failure("connection closed while waiting for a reply (got %r)" % lines)
                self.buf += d
            line, self.buf = self.buf.split(b"\n", 1)
            line = line.rstrip(b"\r").decode("utf-8", "replace")
            if not re.match(r"^\d{3}[ -]", line + " "):
                raise Failure("bad reply line %r" % line)
            lines.append(line)
            if len(line) < 4 or line[3] == " ":
                return int(line[:3]), lines

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def closed(self, wait=5.0):
        """True if the server closes the connection (EOF) within wait seconds, ignoring data."""
        self.s.settimeout(wait)
        try:
            while True:
                d = self.s.recv(65536)
                if not d:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        finally:
            self.s.settimeout(IO_TIMEOUT)


def expect(got, code, esc=None, what=""):
    c, lines = got
    text = lines[-1] if lines else ""
    if c != code or (esc and (" %s " % esc) not in (lines[0] + " ")):
        raise Failure("%s: expected %d %s, got %r" % (what, code, esc or "", lines))
    return text


def to_data(c):
    """MAIL FROM:<a@ex.test>, RCPT TO:<news@lists.test> and DATA, each accepted."""
    expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
    expect(c.cmd("RCPT TO:<news@lists.test>"), 250, None, "RCPT")
    expect(c.cmd("DATA"), 354, None, "DATA")


# ---------------------------------------------------------------- the test harness

class Harness:
    def __init__(self):
        self.procs = lctest.Procs()
        self.tmp = self.procs.tmp
        self.ck = lctest.Checks()
        self.redis_proc = None
        self.url = None
        self.listd = None
        self.port = None
        self.secret = os.urandom(32)

    # processes
    def start_redis(self):
        """Starts redis-server (durable: the AOF in the same dir is read again after a restart); returns a
        connection that gives bulk strings as bytes."""
        self.redis_proc, self.url = lctest.start_redis(self.procs, durable=True)
        return lctest.Redis(self.url, timeout=IO_TIMEOUT, raw=True)

    def kill_redis(self):
        if self.redis_proc:
            self.procs.stop(self.redis_proc, signal.SIGKILL, timeout=10)
        self.redis_proc = None

    def start_listd(self):
        lctest.write_secret(os.path.join(self.tmp, "secret"), self.secret)
        self.port = lctest.free_port()
        args = [LISTD, "--set", "redis.url=" + self.url,
                "--set", "smtp.listen=127.0.0.1:%d" % self.port,
                "--set", "state.dir=" + self.tmp,
                "--set", "secret.file=" + os.path.join(self.tmp, "secret"),
                "--set", "smtp.hostname=mx.lists.test",
                "--set", "smtp.max_message_size=%d" % MAX_SIZE,
                # session_limit opens 101 sessions from 127.0.0.1: lift the per-client limit (default 20) above it
                "--set", "smtp.max_sessions_per_ip=200", "-v"]
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        self.listd = self.procs.start("listd", args, env=env)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.listd.poll() is not None:
                raise Failure("listd exited at start with %d" % self.listd.returncode)
            try:
                c = Smtp(self.port)
                expect(c.reply(), 220, None, "greeting")
                c.cmd("QUIT")
                c.close()
                return
            except (OSError, Failure):
                time.sleep(0.05)
        raise Failure("listd did not start listening")

    def cleanup(self):
        if self.listd:
            self.procs.stop(self.listd, signal.SIGKILL, timeout=10)
        self.kill_redis()
        self.procs.close(keep=bool(os.environ.get("LC_TEST_KEEP")))

    def log(self):
        return self.procs.log("listd")

    def check(self, name, fn):
        try:
            fn()
            self.ck.check(True, name)
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            self.ck.check(False, "%s: %s: %s" % (name, type(e).__name__, e))

    # helpers
    def session(self, ehlo=True):
        c = Smtp(self.port)
        expect(c.reply(), 220, None, "greeting")
        if ehlo:
            expect(c.cmd("EHLO client.ex.test"), 250, None, "EHLO")
        return c

    def seq(self):
        v = self.r.cmd("GET", "lc:seq:post")
        return int(v) if v else 0

    def xlen(self, key):
        return self.r.cmd("XLEN", key)


def message(subject, body="Hello list.\r\n"):
    return ("From: Poster <poster@ex.test>\r\nTo: news@lists.test\r\nSubject: %s\r\n"
            "Message-ID: <%s@ex.test>\r\n\r\n%s" % (subject, subject.replace(" ", "."), body))


def main():
    if not os.access(LISTD, os.X_OK):
        print("FAIL listd binary not found at %s" % LISTD)
        return 1

    def on_alarm(signum, frame):
        raise Failure("overall timeout of %d s" % OVERALL_TIMEOUT)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(OVERALL_TIMEOUT)
    h = Harness()
    try:
        return run(h)
    except (Failure, AssertionError) as e:
        print("FAIL harness: %s" % e)
        tail = h.log()[-3000:]
        if tail:
            print("--- listd log (tail) ---\n" + tail)
        return 1
    finally:
        signal.alarm(0)
        h.cleanup()


def run(h):
    h.r = h.start_redis()
    r = h.r
    now = str(int(time.time()))
    r.cmd("HSET", "lc:list:" + LIST, "address", LIST, "id", "1", "policy", "open", "owner", OWNER, "created", now)
    r.cmd("HSET", "lc:list:" + CLUB, "address", CLUB, "id", "2", "policy", "members", "owner", OWNER, "created", now)
    r.cmd("HSET", "lc:list:" + ANN, "address", ANN, "id", "3", "policy", "announce", "owner", OWNER, "created", now)
    r.cmd("SADD", "lc:lists", LIST, CLUB, ANN)
    r.cmd("SADD", "lc:domains", "lists.test")
    r.cmd("HSET", "lc:active:" + LIST, MEMBER, "1")
    r.cmd("HSET", "lc:active:" + CLUB, MEMBER, "1")
    h.start_listd()
    state = {}

    def ehlo():
        c = h.session(ehlo=False)
        code, lines = c.cmd("EHLO client.ex.test")
        if code != 250:
            raise Failure("EHLO: %r" % lines)
        caps = [ln[4:].upper() for ln in lines[1:]]
        for need in ("PIPELINING", "8BITMIME", "SIZE %d" % MAX_SIZE, "ENHANCEDSTATUSCODES"):
            if need not in caps:
                raise Failure("EHLO lacks %s: %r" % (need, lines))
        if not lines[0].startswith("250-mx.lists.test"):
            raise Failure("EHLO first line %r" % lines[0])
        expect(c.cmd("HELO client.ex.test"), 250, None, "HELO")
        expect(c.cmd("QUIT"), 221, "2.0.0", "QUIT")
        c.close()

    def post_accepted():
        before = h.xlen("lc:stream:posts")
        c = h.session()
        expect(c.cmd("MAIL FROM:<Poster@EX.test> SIZE=500 BODY=8BITMIME"), 250, "2.1.0", "MAIL")
        expect(c.cmd("RCPT TO:<News@Lists.Test>"), 250, "2.1.5", "RCPT")
        expect(c.cmd("DATA"), 354, None, "DATA")
        c.send(message("first post", "Hello list.\r\n..leading dot\r\n.\r\n"))
        text = expect(c.reply(), 250, "2.0.0", "end of DATA")
        m = re.search(r"queued as post (\d+)", text)
        if not m:
            raise Failure("no post id in %r" % text)
        pid = m.group(1)
        state["post"] = pid
        expect(c.cmd("QUIT"), 221, None, "QUIT")
        c.close()
        post = hgetall(r, "lc:post:" + pid)
        want = {"id": pid, "list": LIST, "from": "poster@ex.test", "state": "queued", "recipients": "0",
                "delivered": "0", "deferred": "0", "bounced": "0"}
        for k, v in want.items():
            if post.get(k, b"").decode() != v:
                raise Failure("lc:post:%s %s = %r, want %r (%r)" % (pid, k, post.get(k), v, post))
        msg = r.cmd("GET", "lc:msg:" + pid)
        if msg is None:
            raise Failure("lc:msg:%s missing" % pid)
        if int(post["size"]) != len(msg):
            raise Failure("size %s != stored length %d" % (post["size"], len(msg)))
        if not msg.startswith(b"Received: from client.ex.test ([127.0.0.1])"):
            raise Failure("no Received: header first: %r" % msg[:120])
        if b"\r\n.leading dot\r\n" not in msg or b"Subject: first post\r\n" not in msg:
            raise Failure("message not stored as sent (dot-unstuffed): %r" % msg)
        if r.cmd("ZSCORE", "lc:posts:" + LIST, pid) is None:
            raise Failure("post not in lc:posts:" + LIST)
        if h.xlen("lc:stream:posts") != before + 1:
            raise Failure("lc:stream:posts did not grow by one")
        last = r.cmd("XREVRANGE", "lc:stream:posts", "+", "-", "COUNT", "1")
        if last[0][1] != [b"post", pid.encode()]:
            raise Failure("stream entry %r" % last)
        if ("post=%s accepted list=%s from=<poster@ex.test> size=%d" % (pid, LIST, len(msg))) not in h.log():
            raise Failure("accept line missing from the log")

    def pipelining():
        c = h.session()
        seq0 = h.seq()
        c.send("MAIL FROM:<a@ex.test>\r\nRCPT TO:<news@lists.test>\r\nRCPT TO:<nobody@lists.test>\r\n"
               "RCPT TO:<x@other.test>\r\nNOOP\r\nDATA\r\n")
        expect(c.reply(), 250, "2.1.0", "pipelined MAIL")
        expect(c.reply(), 250, "2.1.5", "pipelined RCPT list")
        expect(c.reply(), 550, "5.1.1", "pipelined RCPT unknown list")
        expect(c.reply(), 550, "5.7.1", "pipelined RCPT relay")
        expect(c.reply(), 250, "2.0.0", "pipelined NOOP")
        expect(c.reply(), 354, None, "pipelined DATA")
        c.send(message("pipelined") + ".\r\nRSET\r\nMAIL FROM:<b@ex.test>\r\nRCPT TO:<news@lists.test>\r\nQUIT\r\n")
        text = expect(c.reply(), 250, "2.0.0", "pipelined end of DATA")
        if not re.search(r"queued as post %d$" % (seq0 + 1), text):
            raise Failure("unexpected post id in %r (seq was %d)" % (text, seq0))
        expect(c.reply(), 250, "2.0.0", "pipelined RSET")
        expect(c.reply(), 250, "2.1.0", "pipelined MAIL 2")
        expect(c.reply(), 250, "2.1.5", "pipelined RCPT 2")
        expect(c.reply(), 221, "2.0.0", "pipelined QUIT")
        if not c.closed():
            raise Failure("not closed after QUIT")
        c.close()

    def rejects_store_nothing():
        seq0, x0 = h.seq(), h.xlen("lc:stream:posts")
        c = h.session()
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        t = expect(c.cmd("RCPT TO:<nobody@lists.test>"), 550, "5.1.1", "unknown list")
        if "<nobody@lists.test>: no such list" not in t:
            raise Failure("text %r" % t)
        t = expect(c.cmd("RCPT TO:<someone@elsewhere.example>"), 550, "5.7.1", "relay")
        if "relay access denied" not in t:
            raise Failure("text %r" % t)
        expect(c.cmd("DATA"), 503, "5.5.1", "DATA without accepted RCPT")
        expect(c.cmd("QUIT"), 221, None, "QUIT")
        c.close()
        if h.seq() != seq0 or h.xlen("lc:stream:posts") != x0:
            raise Failure("something was stored")

    def syntax():
        c = h.session(ehlo=False)
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 503, "5.5.1", "MAIL before EHLO")
        expect(c.cmd("EHLO"), 501, "5.5.4", "EHLO without name")
        expect(c.cmd("EHLO client.ex.test"), 250, None, "EHLO")
        expect(c.cmd("FROB nicate"), 500, "5.5.1", "unknown command")
        expect(c.cmd("EXPN news"), 502, "5.5.1", "EXPN")
        expect(c.cmd("MAIL FROM:a@ex.test"), 501, "5.5.4", "MAIL without brackets")
        expect(c.cmd("MAIL TO:<a@ex.test>"), 501, "5.5.4", "MAIL TO")
        expect(c.cmd("MAIL FROM:<a@ex.test> SIZE=abc"), 501, "5.5.4", "bad SIZE")
        expect(c.cmd("MAIL FROM:<a@ex.test> FROB=1"), 555, "5.5.4", "unknown parameter")
        expect(c.cmd("MAIL FROM:<a@@ex.test>"), 501, "5.1.7", "bad sender")
        expect(c.cmd("MAIL FROM:<a@ex.test> SIZE=%d" % (MAX_SIZE + 1)), 552, "5.3.4", "SIZE too big")
        expect(c.cmd("RCPT TO:<news@lists.test>"), 503, "5.5.1", "RCPT before MAIL")
        expect(c.cmd("mail from:<a@ex.test>"), 250, "2.1.0", "lower-case MAIL")
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 503, "5.5.1", "nested MAIL")
        expect(c.cmd("DATA"), 503, "5.5.1", "DATA before RCPT")
        expect(c.cmd("RCPT TO:<>"), 501, "5.5.4", "empty RCPT")
        expect(c.cmd("RCPT TO:<no-domain>"), 501, "5.1.3", "RCPT without domain")
        expect(c.cmd("RCPT TO:<news@lists.test> NOTIFY=NEVER"), 555, "5.5.4", "RCPT parameter")
        expect(c.cmd("DATA now"), 501, "5.5.4", "DATA with argument")
        expect(c.cmd("NOOP"), 250, "2.0.0", "session still usable")
        c.close()

    def long_command():
        c = h.session()
        expect(c.cmd("NOOP " + "x" * 600), 500, "5.5.2", "overlong command line")
        expect(c.cmd("NOOP " + "y" * 505), 250, None, "511-octet line")  # 5 + 505 + CRLF = 512
        expect(c.cmd("NOOP " + "y" * 506), 500, "5.5.2", "513-octet line")
        c.send("NOOP " + "z" * 3000)
        time.sleep(0.2)
        c.send("z" * 3000 + "\r\nNOOP\r\n")
        expect(c.reply(), 500, "5.5.2", "overlong line in pieces")
        expect(c.reply(), 250, "2.0.0", "NOOP after overlong line")
        c.close()

    def long_data_line():
        seq0 = h.seq()
        c = h.session()
        to_data(c)
        c.send(message("long line", "short\r\n" + "L" * 1200 + "\r\nmore\r\n") + ".\r\n")
        expect(c.reply(), 500, "5.5.2", "overlong text line")
        expect(c.cmd("NOOP"), 250, None, "NOOP after")
        # the same with the long line in pieces and no CRLF for a while
        to_data(c)
        c.send(message("long line 2", "A" * 5000))
        time.sleep(0.2)
        c.send("B" * 5000 + "\r\n.\r\n")
        expect(c.reply(), 500, "5.5.2", "overlong text line in pieces")
        # a message over smtp.max_message_size
        to_data(c)
        c.send(message("big", ("x" * 98 + "\r\n") * (MAX_SIZE // 100 + 10)) + ".\r\n")
        expect(c.reply(), 552, "5.3.4", "message too big")
        # NUL in the text
        to_data(c)
        c.send(message("nul", "a\0b\r\n") + ".\r\n")
        expect(c.reply(), 550, "5.6.0", "NUL in text")
        expect(c.cmd("QUIT"), 221, None, "QUIT")
        c.close()
        if h.seq() != seq0:
            raise Failure("a refused message was stored")

    def bare_lf():
        seq0 = h.seq()
        c = h.session()
        to_data(c)
        c.send("Subject: smuggle\r\n\r\nline\n.\nMAIL FROM:<evil@ex.test>\r\n")
        expect(c.reply(), 550, "5.5.2", "bare LF")
        if not c.closed():
            raise Failure("connection not closed after bare LF")
        c.close()
        if h.seq() != seq0:
            raise Failure("stored despite bare LF")

    def misc_commands():
        c = h.session()
        expect(c.cmd("NOOP"), 250, "2.0.0", "NOOP")
        expect(c.cmd("NOOP hello"), 250, "2.0.0", "NOOP with argument")
        expect(c.cmd("VRFY someone"), 252, "2.0.0", "VRFY")
        expect(c.cmd("VRFY"), 501, "5.5.4", "VRFY without argument")
        expect(c.cmd("HELP"), 214, "2.0.0", "HELP")
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("RSET"), 250, "2.0.0", "RSET")
        expect(c.cmd("RCPT TO:<news@lists.test>"), 503, "5.5.1", "RCPT after RSET")
        expect(c.cmd("QUIT"), 221, "2.0.0", "QUIT")
        if not c.closed():
            raise Failure("not closed after QUIT")
        c.close()

    def members_policy():
        c = h.session()
        # A non-member envelope sender passes RCPT (the From: address may be a member) and is refused at the
        # end of DATA when neither is a subscriber.
        seq0 = h.seq()
        expect(c.cmd("MAIL FROM:<stranger@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<club@lists.test>"), 250, "2.1.5", "non-member RCPT")
        expect(c.cmd("DATA"), 354, None, "DATA")
        c.send(message("stranger post") + ".\r\n")
        t = expect(c.reply(), 550, "5.7.1", "non-member post")
        if "only members may post" not in t:
            raise Failure("text %r" % t)
        if h.seq() != seq0:
            raise Failure("a refused post was stored")
        expect(c.cmd("MAIL FROM:<>"), 250, None, "MAIL <>")
        expect(c.cmd("RCPT TO:<club@lists.test>"), 550, "5.7.1", "null sender to members list")
        expect(c.cmd("RSET"), 250, None, "RSET")
        expect(c.cmd("MAIL FROM:<Member@Ex.Test>"), 250, None, "MAIL member")
        expect(c.cmd("RCPT TO:<club@lists.test>"), 250, "2.1.5", "member")
        t = expect(c.cmd("RCPT TO:<news@lists.test>"), 452, "4.5.3", "second list in one transaction")
        expect(c.cmd("DATA"), 354, None, "DATA")
        c.send(message("club post") + ".\r\n")
        t = expect(c.reply(), 250, "2.0.0", "member post")
        pid = re.search(r"post (\d+)", t).group(1)
        if r.cmd("HGET", "lc:post:" + pid, "list") != CLUB.encode():
            raise Failure("post %s not for %s" % (pid, CLUB))
        # announce: the owners and moderators only
        expect(c.cmd("MAIL FROM:<member@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<ann@lists.test>"), 550, "5.7.1", "announce list, not the owner")
        expect(c.cmd("RSET"), 250, None, "RSET")
        expect(c.cmd("MAIL FROM:<owner@ex.test>"), 250, None, "MAIL owner")
        expect(c.cmd("RCPT TO:<ann@lists.test>"), 250, "2.1.5", "announce list, owner")
        c.close()

    def verp_bounce():
        x0, seq0 = h.xlen("lc:stream:bounces"), h.seq()
        addr = verp(h.secret, 12345, 678, "lists.test")
        c = h.session()
        expect(c.cmd("MAIL FROM:<>"), 250, None, "MAIL <>")
        expect(c.cmd("RCPT TO:<%s>" % addr.upper()), 250, "2.1.5", "VERP recipient (upper case) %s" % addr)
        t = expect(c.cmd("RCPT TO:<news@lists.test>"), 452, "4.5.3", "post recipient with a bounce")
        expect(c.cmd("DATA"), 354, None, "DATA")
        body = ("From: MAILER-DAEMON@mx.ex.test\r\nSubject: Undelivered Mail\r\n\r\n"
                "550 5.1.1 user unknown\r\n")
        c.send(body + ".\r\n")
        expect(c.reply(), 250, "2.0.0", "bounce accepted")
        c.close()
        if h.xlen("lc:stream:bounces") != x0 + 1:
            raise Failure("lc:stream:bounces did not grow by one")
        e = r.cmd("XREVRANGE", "lc:stream:bounces", "+", "-", "COUNT", "1")[0][1]
        f = {e[i].decode(): e[i + 1] for i in range(0, len(e), 2)}
        if f.get("rcpt") != addr.encode() or f.get("post") != b"12345" or f.get("sub") != b"678" or \
                f.get("from") != b"":
            raise Failure("bounce entry %r" % {k: v for k, v in f.items() if k != "msg"})
        if not f.get("msg", b"").endswith(body.encode()) or not f["msg"].startswith(b"Received: "):
            raise Failure("bounce msg %r" % f.get("msg"))
        if h.seq() != seq0:
            raise Failure("a bounce made a post")
        if "bounce accepted post=12345 sub=678 from=<>" not in h.log():
            raise Failure("bounce line missing from the log")

    def forged_verp():
        x0 = h.xlen("lc:stream:bounces")
        forged = lctest.verp_forge(verp(h.secret, 7, 8, "lists.test"))
        other_key = verp(os.urandom(32), 7, 8, "lists.test")
        c = h.session()
        expect(c.cmd("MAIL FROM:<>"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<%s>" % forged), 550, "5.7.1", "forged VERP")
        expect(c.cmd("RCPT TO:<%s>" % other_key), 550, "5.7.1", "VERP signed with another key")
        expect(c.cmd("RCPT TO:<%s>" % verp(h.secret, 7, 8, "other.test")), 550, "5.7.1", "VERP at a foreign domain")
        c.close()
        if h.xlen("lc:stream:bounces") != x0:
            raise Failure("a forged bounce was stored")

    def error_limit():
        c = h.session()
        for i in range(19):
            expect(c.cmd("FROB"), 500, "5.5.1", "error %d" % (i + 1))
        code, lines = c.cmd("FROB")
        if code != 500:
            raise Failure("20th error %r" % lines)
        expect(c.reply(), 421, "4.7.0", "too many errors")
        if not c.closed():
            raise Failure("not closed after 421")
        c.close()

    def session_limit():
        conns = []
        try:
            for i in range(100):
                c = Smtp(h.port)
                expect(c.reply(), 220, None, "session %d" % (i + 1))
                conns.append(c)
            extra = Smtp(h.port)
            conns.append(extra)
            expect(extra.reply(), 421, "4.3.2", "session 101")
        finally:
            for c in conns:
                c.close()
        # the slots come back
        deadline = time.time() + 10
        while True:
            c = Smtp(h.port)
            code, lines = c.reply()
            c.close()
            if code == 220:
                break
            if time.time() > deadline:
                raise Failure("sessions not released: %r" % lines)
            time.sleep(0.1)

    def redis_error():
        # Redis answers an error (a key of the wrong type): 451 4.3.0, nothing else breaks
        r.cmd("RENAME", "lc:domains", "lc:domains.saved")
        r.cmd("SET", "lc:domains", "not a set")
        try:
            c = h.session()
            expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
            expect(c.cmd("RCPT TO:<news@lists.test>"), 451, "4.3.0", "RCPT when Redis answers an error")
            c.close()
        finally:
            r.cmd("DEL", "lc:domains")
            r.cmd("RENAME", "lc:domains.saved", "lc:domains")
        c = h.session()
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<news@lists.test>"), 250, None, "RCPT after the error")
        c.close()

    def redis_down():
        # commands in flight when Redis dies: a stopped Redis holds them, then it is killed
        seq0 = h.seq()
        a = h.session()
        to_data(a)
        a.send(message("in flight"))
        b = h.session()
        expect(b.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        c = h.session()
        to_data(c)
        c.send(message("during outage"))
        h.r.close()
        os.kill(h.redis_proc.pid, signal.SIGSTOP)
        a.send(".\r\nNOOP\r\n")
        b.send("RCPT TO:<news@lists.test>\r\nNOOP\r\n")
        time.sleep(0.3)
        h.kill_redis()
        expect(a.reply(), 451, "4.3.0", "end of DATA in flight when Redis died")
        expect(a.reply(), 250, None, "NOOP after it")
        expect(b.reply(), 451, "4.3.0", "RCPT in flight when Redis died")
        expect(b.reply(), 250, None, "NOOP after it")
        a.close()
        b.close()
        # a session with an accepted recipient, in DATA, when Redis is already gone
        time.sleep(0.2)
        a = c
        a.send(".\r\n")
        expect(a.reply(), 451, "4.3.0", "end of DATA with Redis down")
        expect(a.cmd("NOOP"), 250, None, "session survives")
        expect(a.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        expect(a.cmd("RCPT TO:<news@lists.test>"), 451, "4.3.0", "RCPT with Redis down")
        a.close()
        b = h.session()
        expect(b.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        b.send("RCPT TO:<news@lists.test>\r\nRCPT TO:<nobody@lists.test>\r\nNOOP\r\n")
        expect(b.reply(), 451, "4.3.0", "pipelined RCPT with Redis down")
        expect(b.reply(), 451, "4.3.0", "pipelined RCPT 2 with Redis down")
        expect(b.reply(), 250, None, "NOOP with Redis down")
        expect(b.cmd("QUIT"), 221, None, "QUIT")
        b.close()
        if h.listd.poll() is not None:
            raise Failure("listd exited (%d) when Redis went away" % h.listd.returncode)
        state["seq_before_outage"] = seq0

    def redis_back():
        h.r = h.start_redis()
        deadline = time.time() + 20
        while True:
            c = h.session()
            expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
            code, lines = c.cmd("RCPT TO:<news@lists.test>")
            if code == 250:
                break
            c.close()
            if code != 451 or time.time() > deadline:
                raise Failure("listd did not recover: %r" % lines)
            time.sleep(0.2)
        expect(c.cmd("DATA"), 354, None, "DATA")
        c.send(message("after outage") + ".\r\n")
        t = expect(c.reply(), 250, "2.0.0", "post after Redis came back")
        pid = re.search(r"post (\d+)", t).group(1)
        c.close()
        if h.r.cmd("EXISTS", "lc:msg:" + pid) != 1:
            raise Failure("post %s not stored" % pid)
        if int(pid) != state["seq_before_outage"] + 1:
            raise Failure("post id %s: something refused with 451 during the outage was stored" % pid)
        if h.r.cmd("HGET", "lc:post:" + state["post"], "list") != LIST.encode():
            raise Failure("data from before the outage lost (AOF)")

    def sigterm():
        h.listd.send_signal(signal.SIGTERM)
        try:
            rc = h.listd.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise Failure("listd did not stop on SIGTERM")
        if rc != 0:
            raise Failure("exit status %d after SIGTERM" % rc)
        log = h.log()
        if "ERROR: AddressSanitizer" in log or "runtime error:" in log or "LeakSanitizer" in log:
            raise Failure("sanitizer report in the log:\n" + log[-3000:])

    h.check("EHLO capabilities", ehlo)
    h.check("post accepted and stored", post_accepted)
    h.check("pipelined commands get ordered replies", pipelining)
    h.check("unknown list 550 5.1.1, other domain 550 5.7.1, nothing stored", rejects_store_nothing)
    h.check("syntax errors and bad sequence", syntax)
    h.check("overlong command lines 500 5.5.2", long_command)
    h.check("overlong text line, oversize message, NUL: refused, nothing stored", long_data_line)
    h.check("bare LF in DATA: 550 5.5.2 and disconnect", bare_lf)
    h.check("RSET NOOP VRFY HELP QUIT", misc_commands)
    h.check("members and announce policies", members_policy)
    h.check("VERP bounce accepted into lc:stream:bounces", verp_bounce)
    h.check("forged VERP 550 5.7.1", forged_verp)
    h.check("20 errors: 421 and disconnect", error_limit)
    h.check("101st session: 421 4.3.2", session_limit)
    h.check("Redis answers an error: 451 4.3.0", redis_error)
    h.check("Redis down (in flight and after): 451 4.3.0, listd keeps running", redis_down)
    h.check("Redis back: listd serves again", redis_back)
    h.check("SIGTERM: exit 0, no sanitizer reports", sigterm)
    rc = h.ck.done()
    if rc or os.environ.get("LC_TEST_VERBOSE"):
        tail = h.log()[-4000:]
        print("--- listd log (tail) ---\n" + tail)
    return rc


if __name__ == "__main__":
    sys.exit(main())
