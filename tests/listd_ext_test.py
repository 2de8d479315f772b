#!/usr/bin/env python3
"""listd_ext_test.py: listd's ESMTP extensions and per-client limits (Python 3 stdlib; certtool from gnutls-bin).

STARTTLS (RFC 3207: certificate made with certtool at test time, Python's ssl as the client; session reset
after TLS; bad tls.cert/tls.key refused at start naming the key), CHUNKING/BDAT (RFC 3030: chunks stored like
DATA, sequencing, sizes, DATA after BDAT), SMTPUTF8 (RFC 6531: non-ASCII addresses only with the MAIL
parameter), and the smtp.max_recipients, smtp.max_errors, smtp.idle_timeout, smtp.max_sessions and
smtp.max_sessions_per_ip limits. Prints one line per check; exits 0 when all passed. Always cleans up; every
wait is bounded (socket timeouts and an overall alarm).
"""

import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lsdtest  # noqa: E402
from lsdtest import LIST, MAX_SIZE, Failure, expect, message  # noqa: E402

OVERALL_TIMEOUT = 240


def main():
    return lsdtest.main(run, OVERALL_TIMEOUT)


def strip_received(m):
    """The stored message without its first header field (our Received:, folded)."""
    lines = m.split(b"\r\n")
    i = 1
    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


def stored(e, pid):
    return e.r.cmd("GET", "lc:msg:%d" % pid)


def run(e):
    cert, key = lsdtest.make_cert(e.tmp)
    cert2, key2 = lsdtest.make_cert(e.tmp, "other")
    r = e.r

    # ------------------------------------------------ start-up errors of tls.cert / tls.key
    def tls_config_errors():
        cases = [
            (["tls.cert=" + os.path.join(e.tmp, "missing.crt"), "tls.key=" + key], "tls.cert"),
            (["tls.cert=" + cert, "tls.key=" + os.path.join(e.tmp, "missing.key")], "tls.key"),
            (["tls.cert=" + cert], "tls.key is not set"),
            (["tls.key=" + key], "tls.cert is not set"),
            (["tls.cert=" + cert, "tls.key=" + key2], "does not match"),
            (["tls.cert=" + key, "tls.key=" + key], "tls.cert"),       # a key where the certificate goes
            (["tls.cert=" + cert, "tls.key=" + cert], "tls.key"),      # a certificate where the key goes
        ]
        for sets, want in cases:
            rc, err = e.start_fails("bad-tls", sets)
            if rc == 0 or want not in err:
                raise Failure("%r: exit %d, stderr %r (want %r)" % (sets, rc, err[-300:], want))

    e.check("bad tls.cert/tls.key: fatal at start, naming the key", tls_config_errors)

    e.start_listd("listd", ["tls.cert=" + cert, "tls.key=" + key])

    def capabilities():
        c = e.session(ehlo=False)
        caps = lsdtest.ehlo_caps(c)
        for need in ("PIPELINING", "8BITMIME", "SIZE %d" % MAX_SIZE, "ENHANCEDSTATUSCODES", "STARTTLS",
                     "CHUNKING", "SMTPUTF8"):
            if need not in caps:
                raise Failure("EHLO lacks %s: %r" % (need, caps))
        t = expect(c.cmd("HELP"), 214, "2.0.0", "HELP")
        if "BDAT" not in t or "STARTTLS" not in t:
            raise Failure("HELP %r" % t)
        c.close()

    def tls_post():
        c = e.session(ehlo=False)
        expect(c.cmd("STARTTLS"), 503, "5.5.1", "STARTTLS before EHLO")
        expect(c.cmd("EHLO client.ex.test"), 250, None, "EHLO")
        expect(c.cmd("STARTTLS now"), 501, "5.5.4", "STARTTLS with an argument")
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("STARTTLS"), 503, "5.5.1", "STARTTLS in a transaction")
        expect(c.cmd("RSET"), 250, None, "RSET")
        lsdtest.starttls(c, cert)
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 503, "5.5.1", "MAIL before EHLO again (state reset by TLS)")
        caps = lsdtest.ehlo_caps(c)
        if "STARTTLS" in caps or "CHUNKING" not in caps:
            raise Failure("EHLO in TLS: %r" % caps)
        expect(c.cmd("STARTTLS"), 554, "5.5.1", "STARTTLS in TLS")
        expect(c.cmd("MAIL FROM:<poster@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
        expect(c.cmd("DATA"), 354, None, "DATA")
        big = "".join("line %05d %s\r\n" % (i, "t" * 60) for i in range(600))  # ~43 KB: several records
        c.send(message("over tls", big) + ".\r\n")
        t = expect(c.reply(), 250, "2.0.0", "end of DATA over TLS")
        pid = int(re.search(r"post (\d+)", t).group(1))
        expect(c.cmd("QUIT"), 221, None, "QUIT")
        if not c.closed():
            raise Failure("not closed after QUIT")
        c.close()
        m = stored(e, pid)
        if not m or b"with ESMTPS\r\n\t(TLS" not in m or not m.endswith(big.encode()):
            raise Failure("stored message %r" % (m[:300] if m else m))
        if "TLS established: TLS" not in e.log():
            raise Failure("no TLS line in the log")

    def starttls_injection():
        seq0 = e.seq()
        for junk in ("RSET\r\n", "MAIL FROM:<evil@ex.test>\r\n",
                     "EHLO evil\r\nMAIL FROM:<evil@ex.test>\r\nRCPT TO:<%s>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\n"
                     % LIST):
            c = e.session()
            c.send("STARTTLS\r\n" + junk)
            expect(c.reply(), 220, "2.0.0", "STARTTLS")
            lsdtest.tls_wrap(c, cert)
            # the injected commands must not have run: no reply is waiting, and the state is fresh
            c.s.settimeout(0.5)
            try:
                extra = c.s.recv(1000)
            except (socket.timeout, TimeoutError):
                extra = b""
            c.s.settimeout(lsdtest.IO_TIMEOUT)
            if extra:
                raise Failure("replies to injected commands %r (%r)" % (extra, junk))
            expect(c.cmd("RCPT TO:<%s>" % LIST), 503, "5.5.1", "RCPT after TLS: no MAIL survived")
            lsdtest.ehlo_caps(c)
            expect(c.cmd("RCPT TO:<%s>" % LIST), 503, "5.5.1", "RCPT after EHLO: no MAIL")
            c.close()
        if e.seq() != seq0:
            raise Failure("an injected message was stored")
        if "improper command pipelining after STARTTLS" not in e.log():
            raise Failure("no log line for the discarded input")

    def bdat_post():
        c = e.session()
        expect(c.cmd("MAIL FROM:<poster@ex.test> BODY=8BITMIME"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
        text = message("bdat post", ".leading dot stays\r\nline two\r\n" + "b" * 900 + "\r\nend\r\n").encode()
        a, b = text[:37], text[37:]  # cut in the middle of a line
        c.send(b"BDAT %d\r\n" % len(a) + a)
        expect(c.reply(), 250, "2.0.0", "first chunk")
        c.send(b"BDAT %d\r\n" % len(b) + b)
        expect(c.reply(), 250, "2.0.0", "second chunk")
        t = expect(c.cmd("BDAT 0 LAST"), 250, "2.0.0", "BDAT 0 LAST")
        pid = int(re.search(r"queued as post (\d+)", t).group(1))
        m = stored(e, pid)
        # the same text through DATA: stored the same way (our Received: line aside, it carries the time)
        expect(c.cmd("MAIL FROM:<poster@ex.test> BODY=8BITMIME"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
        expect(c.cmd("DATA"), 354, None, "DATA")
        c.send(text.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        t = expect(c.reply(), 250, "2.0.0", "DATA")
        m2 = stored(e, int(re.search(r"queued as post (\d+)", t).group(1)))
        if not m or not m.startswith(b"Received: ") or strip_received(m) != strip_received(m2) or \
                b"\r\n.leading dot stays\r\n" not in m:
            raise Failure("BDAT message stored as %r, DATA as %r" % (m, m2))
        # one chunk with LAST, pipelined with the next commands; text without a final CRLF
        expect(c.cmd("MAIL FROM:<poster@ex.test>"), 250, None, "MAIL 2")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT 2")
        t2 = b"Subject: no final crlf\r\n\r\nlast line"
        c.send(b"BDAT %d LAST\r\n" % len(t2) + t2 + b"NOOP\r\nQUIT\r\n")
        t = expect(c.reply(), 250, "2.0.0", "BDAT LAST")
        expect(c.reply(), 250, "2.0.0", "NOOP after the chunk")
        expect(c.reply(), 221, "2.0.0", "QUIT after the chunk")
        c.close()
        m = stored(e, int(re.search(r"post (\d+)", t).group(1)))
        if not m.endswith(b"\r\n\r\nlast line\r\n"):
            raise Failure("text without final CRLF stored as %r" % m[-60:])

    def bdat_sequence():
        seq0 = e.seq()
        c = e.session()
        c.send(b"BDAT 12\r\nRSET\r\nQUIT\r\n")
        expect(c.reply(), 503, "5.5.1", "BDAT without MAIL")
        expect(c.cmd("NOOP"), 250, None, "chunk consumed, not run as commands")
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<nobody@lists.test>"), 550, "5.1.1", "RCPT refused")
        c.send(b"BDAT 6 LAST\r\nQUIT\r\n")
        expect(c.reply(), 503, "5.5.1", "BDAT without a valid RCPT")
        expect(c.cmd("NOOP"), 250, None, "chunk consumed")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
        c.send(b"BDAT 4\r\nab\r\n")
        expect(c.reply(), 250, "2.0.0", "chunk")
        expect(c.cmd("DATA"), 503, "5.5.1", "DATA after BDAT")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 503, "5.5.1", "RCPT after BDAT")
        expect(c.cmd("RSET"), 250, None, "RSET")
        c.send(b"BDAT 1x\r\n")
        expect(c.reply(), 501, "5.5.4", "BDAT 1x")
        if not c.closed():
            raise Failure("not closed after a bad BDAT size")
        c.close()
        for bad in ("BDAT", "BDAT -1", "BDAT 5 MORE", "BDAT 1234567890123456789"):
            c = e.session()
            expect(c.cmd(bad), 501, "5.5.4", bad)
            if not c.closed():
                raise Failure("not closed after %r" % bad)
            c.close()
        if e.seq() != seq0:
            raise Failure("something was stored")

    def bdat_sizes():
        seq0 = e.seq()
        c = e.session()
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
        n = MAX_SIZE + 10
        c.send(b"BDAT %d LAST\r\n" % n + b"x" * n + b"NOOP\r\n")
        expect(c.reply(), 552, "5.3.4", "chunk over the size limit")
        expect(c.reply(), 250, None, "NOOP after the swallowed chunk")
        # in pieces: under the limit, then over it; the error stays until LAST
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
        half = b"y" * 70 + b"\r\n"
        chunk = half * (MAX_SIZE // 2 // len(half))
        c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
        expect(c.reply(), 250, None, "first half")
        c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
        expect(c.reply(), 250, None, "second half")
        c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
        expect(c.reply(), 552, "5.3.4", "over the limit")
        c.send(b"BDAT 4 LAST\r\nzz\r\n")
        expect(c.reply(), 552, "5.3.4", "LAST after the error")
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "new transaction after LAST")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
        t = b"Subject: bare lf\r\n\r\nline\n.\nMAIL FROM:<x@ex.test>\r\n"
        c.send(b"BDAT %d LAST\r\n" % len(t) + t)
        expect(c.reply(), 550, "5.5.2", "bare LF in BDAT text")
        expect(c.cmd("NOOP"), 250, None, "session goes on (the framing is safe)")
        c.close()
        if e.seq() != seq0:
            raise Failure("something was stored")

    def smtputf8():
        c = e.session()
        u = "δοκιμή@ex.test"
        expect(c.cmd("MAIL FROM:<%s>" % u), 553, "5.6.7", "UTF-8 sender without SMTPUTF8")
        expect(c.cmd("MAIL FROM:<a@ex.test> SMTPUTF8=yes"), 501, "5.5.4", "SMTPUTF8 with a value")
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "ASCII MAIL")
        expect(c.cmd("RCPT TO:<ünï@lists.test>"), 553, "5.6.7", "UTF-8 recipient without SMTPUTF8")
        expect(c.cmd("RSET"), 250, None, "RSET")
        c.send(b"MAIL FROM:<a\xff\xfe@ex.test> SMTPUTF8\r\n")
        expect(c.reply(), 501, "5.1.7", "invalid UTF-8 with SMTPUTF8")
        expect(c.cmd("MAIL FROM:<%s> SMTPUTF8" % u), 250, "2.1.0", "UTF-8 sender with SMTPUTF8")
        expect(c.cmd("RCPT TO:<ünï@lists.test>"), 550, "5.1.1", "UTF-8 recipient: routed (no such list)")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
        expect(c.cmd("DATA"), 354, None, "DATA")
        c.send(message("utf8 ✓") + ".\r\n")
        t = expect(c.reply(), 250, "2.0.0", "stored")
        c.close()
        pid = re.search(r"post (\d+)", t).group(1)
        if r.cmd("HGET", "lc:post:" + pid, "from") != u.encode():
            raise Failure("sender stored as %r" % r.cmd("HGET", "lc:post:" + pid, "from"))
        if b"with UTF8SMTP\r\n" not in r.cmd("GET", "lc:msg:" + pid):
            raise Failure("Received: does not say UTF8SMTP")

    e.check("EHLO offers STARTTLS CHUNKING SMTPUTF8", capabilities)
    e.check("STARTTLS: post over TLS, state reset, no STARTTLS in TLS, sequencing", tls_post)
    e.check("STARTTLS command injection: pipelined input discarded", starttls_injection)
    e.check("BDAT: chunks stored like DATA, pipelining, final CRLF", bdat_post)
    e.check("BDAT sequencing: 503 with chunk consumed, DATA after BDAT, bad sizes close", bdat_sequence)
    e.check("BDAT sizes: 552 swallowed, sticky until LAST; bare LF refused", bdat_sizes)
    e.check("SMTPUTF8: non-ASCII addresses only with the parameter", smtputf8)
    e.check("listd alive after the ESMTP checks", e.alive)

    # ------------------------------------------------ per-client limits
    e.start_listd("listd-limits", ["smtp.max_recipients=5", "smtp.max_errors=5", "smtp.idle_timeout=2",
                                   "smtp.max_sessions=6", "smtp.max_sessions_per_ip=4"])

    def max_recipients():
        c = e.session()
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        for i in range(5):
            expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT %d" % (i + 1))
        expect(c.cmd("RCPT TO:<%s>" % LIST), 452, "4.5.3", "RCPT 6")
        c.close()

    def max_errors():
        c = e.session()
        for i in range(4):
            expect(c.cmd("FROB"), 500, None, "error %d" % (i + 1))
        expect(c.cmd("FROB"), 500, None, "error 5")
        expect(c.reply(), 421, "4.7.0", "too many errors")
        if not c.closed():
            raise Failure("not closed")
        c.close()

    def idle_timeout():
        c = e.session()
        t0 = time.time()
        expect(c.reply(), 421, "4.4.2", "idle timeout")
        if not 1.5 < time.time() - t0 < 6:
            raise Failure("timeout after %.1f s, want 2" % (time.time() - t0))
        c.close()

    def session_limits():
        conns = []
        try:
            for i in range(4):
                conns.append(e.session(ehlo=False))
            c = lsdtest.Smtp(e.port)
            conns.append(c)
            expect(c.reply(), 421, "4.7.0", "5th session from 127.0.0.1")
            for i in range(2):
                conns.append(e.session(ehlo=False, src="127.0.0.2"))
            c = lsdtest.Smtp.__new__(lsdtest.Smtp)
            c.s = socket.socket()
            c.s.settimeout(lsdtest.IO_TIMEOUT)
            c.s.bind(("127.0.0.3", 0))
            c.s.connect(("127.0.0.1", e.port))
            c.buf = b""
            conns.append(c)
            expect(c.reply(), 421, "4.3.2", "7th session (smtp.max_sessions=6)")
        finally:
            for c in conns:
                c.close()
        deadline = time.time() + 10
        while True:
            try:
                e.alive()
                return
            except Failure:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)

    e.check("smtp.max_recipients=5: 6th RCPT 452 4.5.3", max_recipients)
    e.check("smtp.max_errors=5: 421 4.7.0 and disconnect", max_errors)
    e.check("smtp.idle_timeout=2: 421 4.4.2", idle_timeout)
    e.check("smtp.max_sessions_per_ip=4 (421 4.7.0), smtp.max_sessions=6 (421 4.3.2)", session_limits)
    e.check("SIGTERM: exit 0, no sanitizer report", e.stop_listd)
    rc = e.ck.done()
    if rc or os.environ.get("LC_TEST_VERBOSE"):
        print("--- listd log (tail) ---\n" + e.log()[-4000:])
    return rc


if __name__ == "__main__":
    sys.exit(main())
