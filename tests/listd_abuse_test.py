#!/usr/bin/env python3
"""listd_abuse_test.py: protocol abuse against listd, in the style of Redis's tests/unit/protocol.tcl.

Each case throws bad input at listd (junk pipelined after DATA, 10,000 RCPTs, 1 MB lines, commands before EHLO,
BDAT with wrong sizes, STARTTLS command injection, truncated sessions, TLS handshake garbage, the per-client
session limit) and checks that it gets a clear reply or a clean disconnect, that nothing is stored half (the
post sequence and the posts stream move only for whole accepted messages), and that the daemon is still up and
stores a normal post afterwards. Python 3 stdlib; certtool (gnutls-bin) makes the STARTTLS certificate. Prints
one line per check; exits 0 when all passed. Every wait is bounded.
"""

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lsdtest  # noqa: E402
from lsdtest import LIST, MAX_SIZE, Failure, expect, message  # noqa: E402

OVERALL_TIMEOUT = 240
PER_IP = 8


def main():
    return lsdtest.main(run, OVERALL_TIMEOUT)


def send_bg(c, data):
    """Send data from a thread (the server may stop reading and close: errors are expected and ignored)."""
    def go():
        try:
            c.s.sendall(data)
        except OSError:
            pass
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def replies_until_close(c, limit=20000):
    """Read replies until the server closes; returns the list of codes."""
    codes = []
    try:
        for _ in range(limit):
            code, _lines = c.reply()
            codes.append(code)
    except (Failure, ConnectionResetError):
        pass
    return codes


def run(e):
    cert, key = lsdtest.make_cert(e.tmp)
    e.start_listd("listd", ["tls.cert=" + cert, "tls.key=" + key, "smtp.max_sessions_per_ip=%d" % PER_IP])

    def guarded(name, fn, stores=0):
        """Run one abuse case: exactly `stores` posts stored by it, then the daemon still serves a post."""
        def case():
            seq0 = e.seq()
            x0 = e.r.cmd("XLEN", "lc:stream:posts")
            fn()
            time.sleep(0.1)
            if e.seq() != seq0 + stores or e.r.cmd("XLEN", "lc:stream:posts") != x0 + stores:
                raise Failure("posts stored: %d, want %d" % (e.seq() - seq0, stores))
            e.alive()
        e.check(name, case)

    def junk_after_data():
        c = e.session()
        junk = b"".join(b"\x00\xff\xfe junk %d \x1b[31m\r\n" % i for i in range(200))
        c.send(b"MAIL FROM:<a@ex.test>\r\nRCPT TO:<" + LIST.encode() + b">\r\nDATA\r\n" +
               message("junk").encode() + b".\r\n" + junk)
        codes = replies_until_close(c)
        if codes[:4] != [250, 250, 354, 250] or codes[-1] != 421 or any(x not in (500, 501) for x in codes[4:-1]):
            raise Failure("replies %r" % codes)
        c.close()

    def junk_as_text_after_refused_data():
        c = e.session()
        # DATA is refused (its RCPT was): the text that follows is taken as commands, never as a message
        c.send(b"MAIL FROM:<a@ex.test>\r\nRCPT TO:<nobody@lists.test>\r\nDATA\r\n" +
               message("smuggled", "x\r\n" * 40).encode() + b".\r\n")
        codes = replies_until_close(c)
        if codes[:3] != [250, 550, 503] or codes[-1] != 421 or set(codes[3:-1]) - {500, 501}:
            raise Failure("replies %r" % codes)
        c.close()

    def many_rcpts():
        c = e.session()
        c.send("MAIL FROM:<a@ex.test>\r\n")
        expect(c.reply(), 250, None, "MAIL")
        t = send_bg(c, ("RCPT TO:<%s>\r\n" % LIST).encode() * 10000)
        codes = replies_until_close(c)
        t.join(20)
        if codes[:100] != [250] * 100 or codes[-1] != 421 or set(codes[100:-1]) != {452}:
            raise Failure("replies: %d x 250 first, then %r" % (codes.count(250), sorted(set(codes[100:]))))
        c.close()

    def mega_lines():
        c = e.session()
        line = b"NOOP " + b"a" * (1 << 20) + b"\r\n"
        t = send_bg(c, line + b"NOOP\r\n")
        expect(c.reply(), 500, "5.5.2", "1 MB command line")
        expect(c.reply(), 250, None, "NOOP after it")
        t.join(20)
        # a 1 MB line in DATA: swallowed, refused at the dot
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
        expect(c.cmd("DATA"), 354, None, "DATA")
        t = send_bg(c, b"Subject: big line\r\n\r\n" + b"b" * (1 << 20) + b"\r\n.\r\n")
        expect(c.reply(), 500, "5.5.2", "1 MB text line")
        t.join(20)
        # a 1 MB line without any LF, then the client goes away
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
        expect(c.cmd("DATA"), 354, None, "DATA")
        c.s.sendall(b"c" * (1 << 20))
        c.close()

    def before_ehlo():
        c = e.session(ehlo=False)
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 503, "5.5.1", "MAIL before EHLO")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 503, "5.5.1", "RCPT before EHLO")
        expect(c.cmd("DATA"), 503, "5.5.1", "DATA before EHLO")
        expect(c.cmd("STARTTLS"), 503, "5.5.1", "STARTTLS before EHLO")
        c.send(b"BDAT 11 LAST\r\nQUIT\r\nABC\r\n")
        expect(c.reply(), 503, "5.5.1", "BDAT before EHLO (chunk swallowed)")
        expect(c.cmd("NOOP"), 250, None, "NOOP")
        c.close()

    def bdat_wrong_sizes():
        # declared larger than what is sent, then the connection closes: nothing stored
        c = e.session()
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
        c.send(b"BDAT 5000 LAST\r\n" + message("short").encode())
        time.sleep(0.2)
        c.close()
        # a size that does not parse: 501 and the session is closed (the chunk cannot be framed)
        for bad in (b"BDAT abc\r\nMAIL FROM:<evil@ex.test>\r\n", b"BDAT 99999999999999999999 LAST\r\n",
                    b"BDAT -5\r\n", b"BDAT 0x10 LAST\r\n"):
            c = e.session()
            expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
            expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
            c.send(bad)
            expect(c.reply(), 501, "5.5.4", repr(bad))
            if not c.closed():
                raise Failure("not closed after %r" % bad)
            c.close()
        # a huge declared size (over the limit): 552 after the octets; here the client gives up half way
        c = e.session()
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
        c.send(b"BDAT 999999999999 LAST\r\n" + b"z" * (MAX_SIZE * 2))
        time.sleep(0.2)
        c.close()
        # a smaller chunk than declared followed by commands: the commands are chunk data
        c = e.session()
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
        c.send(b"BDAT 40 LAST\r\nSubject: x\r\n\r\nshort\r\nQUIT\r\n")
        c.s.settimeout(0.5)
        try:
            got = c.s.recv(100)
        except (socket.timeout, TimeoutError):
            got = b""
        c.s.settimeout(lsdtest.IO_TIMEOUT)
        if got:
            raise Failure("reply before the chunk was complete: %r" % got)
        c.close()

    def starttls_injection():
        for junk in (b"RSET\r\n", b"MAIL FROM:<evil@ex.test>\r\n",
                     b"MAIL FROM:<evil@ex.test>\r\nRCPT TO:<" + LIST.encode() + b">\r\nDATA\r\n" +
                     message("injected").encode() + b".\r\nQUIT\r\n"):
            c = e.session()
            c.send(b"STARTTLS\r\n" + junk)
            expect(c.reply(), 220, "2.0.0", "STARTTLS")
            lsdtest.tls_wrap(c, cert)
            expect(c.cmd("RCPT TO:<%s>" % LIST), 503, "5.5.1", "no EHLO, no MAIL survived TLS")
            lsdtest.ehlo_caps(c)
            expect(c.cmd("DATA"), 503, "5.5.1", "no MAIL survived TLS")
            c.close()
        # injection split over two writes, the second before the 220 can have been read
        c = e.session()
        c.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.send(b"STARTTLS\r\n")
        c.send(b"MAIL FROM:<evil@ex.test>\r\n")
        expect(c.reply(), 220, "2.0.0", "STARTTLS")
        try:  # either the plaintext was discarded (handshake works) or it broke the handshake (closed)
            lsdtest.tls_wrap(c, cert)
            lsdtest.ehlo_caps(c)
            expect(c.cmd("DATA"), 503, "5.5.1", "no MAIL survived TLS")
        except (OSError, Failure):
            pass
        c.close()

    def tls_garbage():
        c = e.session()
        expect(c.cmd("STARTTLS"), 220, "2.0.0", "STARTTLS")
        c.send(b"GET / HTTP/1.0\r\n\r\n" + os.urandom(3000))
        if not c.closed():
            raise Failure("not closed after garbage instead of a handshake")
        c.close()
        # a TLS ClientHello cut short, then silence: the handshake timer (30 s) would end it; close it
        c = e.session()
        expect(c.cmd("STARTTLS"), 220, "2.0.0", "STARTTLS")
        c.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(40))
        time.sleep(0.2)
        c.close()
        # TLS spoken to the plaintext port without STARTTLS: errors, then 421
        c = lsdtest.Smtp(e.port)
        expect(c.reply(), 220, None, "greeting")
        send_bg(c, (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(500) + b"\r\n") * 30)
        codes = replies_until_close(c)
        if not codes or codes[-1] != 421 or any(x not in (500, 501, 421) for x in codes):
            raise Failure("replies %r" % codes)
        c.close()
        # the client goes away in the middle of the handshake
        c = e.session()
        expect(c.cmd("STARTTLS"), 220, "2.0.0", "STARTTLS")
        c.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()

    def truncated():
        # mid-DATA
        c = e.session()
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
        expect(c.cmd("DATA"), 354, None, "DATA")
        c.send(message("cut") + "..")
        c.close()
        # mid-DATA, the dot sent without its CRLF
        c = e.session()
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
        expect(c.cmd("DATA"), 354, None, "DATA")
        c.send(message("cut2") + ".\r")
        c.s.shutdown(socket.SHUT_WR)
        if not c.closed():
            raise Failure("not closed after EOF mid-DATA")
        c.close()
        # mid-BDAT, with a reset
        c = e.session()
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
        c.send(b"BDAT 10\r\n0123456789")
        expect(c.reply(), 250, None, "first chunk")
        c.send(b"BDAT 100 LAST\r\n" + b"x" * 50)
        c.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()
        # mid-BDAT in TLS
        c = e.session()
        lsdtest.starttls(c, cert)
        lsdtest.ehlo_caps(c)
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
        c.send(b"BDAT 100 LAST\r\n" + b"y" * 50)
        time.sleep(0.1)
        c.close()
        # a half-close right after the final dot: the message is whole, so it is stored and answered
        c = e.session()
        expect(c.cmd("MAIL FROM:<a@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
        expect(c.cmd("DATA"), 354, None, "DATA")
        c.send(message("whole") + ".\r\n")
        c.s.shutdown(socket.SHUT_WR)
        expect(c.reply(), 250, "2.0.0", "answer after half-close")
        c.close()

    def per_ip_limit():
        conns = []
        try:
            for i in range(PER_IP):
                conns.append(e.session(ehlo=False))
            for i in range(3):
                c = lsdtest.Smtp(e.port)
                conns.append(c)
                expect(c.reply(), 421, "4.7.0", "session %d from one address" % (PER_IP + i + 1))
                if not c.closed():
                    raise Failure("not closed after 421")
            c = e.session(src="127.0.0.2")  # another client address is still served
            conns.append(c)
        finally:
            for c in conns:
                c.close()
        deadline = time.time() + 10
        while True:  # the slots come back
            c = lsdtest.Smtp(e.port)
            code, lines = c.reply()
            c.close()
            if code == 220:
                break
            if time.time() > deadline:
                raise Failure("sessions not released: %r" % lines)
            time.sleep(0.1)

    guarded("junk pipelined after DATA: one post, then 500s and 421", junk_after_data, stores=1)
    guarded("text pipelined after a refused DATA runs as commands, stores nothing", junk_as_text_after_refused_data)
    guarded("10,000 pipelined RCPTs: 100 accepted, 452s, 421, nothing stored", many_rcpts)
    guarded("1 MB lines (command, text, no LF then close): 500 5.5.2, nothing stored", mega_lines)
    guarded("commands before EHLO: 503, BDAT chunk swallowed", before_ehlo)
    guarded("BDAT wrong sizes: short then close, unparsable, huge, short: nothing stored", bdat_wrong_sizes)
    guarded("STARTTLS command injection: nothing pipelined runs inside TLS", starttls_injection)
    guarded("TLS handshake garbage, cut ClientHello, TLS on the plain port, RST: clean", tls_garbage)
    guarded("truncated sessions (mid-DATA, mid-BDAT, in TLS): nothing stored; half-close after dot: stored",
            truncated, stores=1)
    guarded("per-client limit: 421 4.7.0 then the slots come back", per_ip_limit)
    e.check("SIGTERM: exit 0, no sanitizer report", e.stop_listd)
    rc = e.ck.done()
    if rc or os.environ.get("LC_TEST_VERBOSE"):
        print("--- listd log (tail) ---\n" + e.log()[-4000:])
    return rc


if __name__ == "__main__":
    sys.exit(main())
