#!/usr/bin/env python3
"""listd_size_test.py: per-list message size limits (issue 3 item 1) against a real listd and redis-server.

The list hash field max_message_size (bytes; 0 or empty = none of its own) is checked at RCPT when MAIL carried
SIZE= (552 5.3.4 ... the list's limit) and at the end of DATA and of BDAT (552 5.3.4, nothing stored); the
global smtp.max_message_size stays checked at MAIL (SIZE=) and while receiving, and wins when it is smaller.
Prints one line per check; exits 0 when all passed. Always cleans up; every wait is bounded.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lsdtest  # noqa: E402
from lsdtest import LIST, MAX_SIZE, Failure, expect, message  # noqa: E402

OVERALL_TIMEOUT = 120
LIMIT = 2000


def body_of(n):
    """A body of about n octets in 70-octet lines."""
    line = "x" * 68 + "\r\n"
    return line * (n // 70 + 1)


def post_data(e, size_param, body, what):
    """MAIL (with SIZE= when size_param), RCPT, DATA; returns the reply to the final dot."""
    c = e.session()
    expect(c.cmd("MAIL FROM:<poster@ex.test>%s" % (" SIZE=%d" % size_param if size_param else "")), 250, None,
           what + " MAIL")
    expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, what + " RCPT")
    expect(c.cmd("DATA"), 354, None, what + " DATA")
    c.send(message(what, body) + ".\r\n")
    got = c.reply()
    c.cmd("QUIT")
    c.close()
    return got


def run(e):
    e.r.cmd("HSET", "lc:list:" + LIST, "max_message_size", str(LIMIT), "dmarc_mitigation", "none")
    e.start_listd("listd-size")

    def rcpt_refused():
        c = e.session()
        expect(c.cmd("MAIL FROM:<poster@ex.test> SIZE=%d" % (LIMIT + 1)), 250, "2.1.0", "MAIL SIZE over the list's")
        t = expect(c.cmd("RCPT TO:<%s>" % LIST), 552, "5.3.4", "RCPT with SIZE over the list's limit")
        if "list's limit" not in t:
            raise Failure("reply does not name the list's limit: %r" % t)
        expect(c.cmd("RCPT TO:<news-help@lists.test>"), 250, None, "a command address has no size limit")
        c.cmd("QUIT")
        c.close()
    e.check("RCPT: SIZE= over the list's max_message_size -> 552 5.3.4", rcpt_refused)

    def rcpt_ok():
        c = e.session()
        expect(c.cmd("MAIL FROM:<poster@ex.test> SIZE=%d" % LIMIT), 250, "2.1.0", "MAIL")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, "2.1.5", "RCPT with SIZE at the list's limit")
        c.cmd("QUIT")
        c.close()
    e.check("RCPT: SIZE= within the list's limit -> 250", rcpt_ok)

    def data_refused():
        before = e.seq()
        got = post_data(e, None, body_of(LIMIT + 500), "data over the list's limit")
        t = expect(got, 552, "5.3.4", "end of DATA over the list's limit")
        if "list's limit" not in t:
            raise Failure("reply does not name the list's limit: %r" % t)
        if e.seq() != before:
            raise Failure("a post id was taken: something was stored")
    e.check("DATA: text over the list's limit (no SIZE=) -> 552 5.3.4 at the dot, nothing stored", data_refused)

    def data_lying_size():
        before = e.seq()
        got = post_data(e, 100, body_of(LIMIT + 500), "data lying SIZE")
        expect(got, 552, "5.3.4", "end of DATA: SIZE=100 but more text")
        if e.seq() != before:
            raise Failure("something was stored")
    e.check("DATA: SIZE= under the limit but longer text -> 552 5.3.4, nothing stored", data_lying_size)

    def data_ok():
        got = post_data(e, 1500, body_of(1200), "data within the limit")
        expect(got, 250, "2.0.0", "end of DATA within the list's limit")
    e.check("DATA within the list's limit -> stored", data_ok)

    def bdat_refused():
        before = e.seq()
        c = e.session()
        expect(c.cmd("MAIL FROM:<poster@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
        text = (message("bdat", body_of(1200))).encode()
        c.send(b"BDAT %d\r\n" % len(text) + text)
        expect(c.reply(), 250, None, "first chunk within the limit")
        more = body_of(1500).encode()
        c.send(b"BDAT %d LAST\r\n" % len(more) + more)
        t = expect(c.reply(), 552, "5.3.4", "BDAT LAST over the list's limit")
        if "list's limit" not in t:
            raise Failure("reply does not name the list's limit: %r" % t)
        expect(c.cmd("NOOP"), 250, None, "session goes on")
        c.cmd("QUIT")
        c.close()
        if e.seq() != before:
            raise Failure("something was stored")
    e.check("BDAT: chunks over the list's limit -> 552 5.3.4, nothing stored", bdat_refused)

    def bdat_ok():
        c = e.session()
        expect(c.cmd("MAIL FROM:<poster@ex.test>"), 250, None, "MAIL")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, None, "RCPT")
        text = (message("bdat ok", body_of(1000))).encode()
        c.send(b"BDAT %d LAST\r\n" % len(text) + text)
        expect(c.reply(), 250, "2.0.0", "BDAT LAST within the limit")
        c.cmd("QUIT")
        c.close()
    e.check("BDAT within the list's limit -> stored", bdat_ok)

    def global_at_mail():
        c = e.session()
        t = expect(c.cmd("MAIL FROM:<poster@ex.test> SIZE=%d" % (MAX_SIZE + 1)), 552, "5.3.4",
                   "MAIL SIZE over smtp.max_message_size")
        if "fixed limit" not in t:
            raise Failure("global limit reply changed: %r" % t)
        c.cmd("QUIT")
        c.close()
    e.check("MAIL: SIZE= over smtp.max_message_size -> 552 5.3.4 (global limit at MAIL)", global_at_mail)

    def list_bigger_than_global():
        e.r.cmd("HSET", "lc:list:" + LIST, "max_message_size", str(MAX_SIZE * 4))
        c = e.session()
        expect(c.cmd("MAIL FROM:<poster@ex.test> SIZE=%d" % (MAX_SIZE + 1)), 552, "5.3.4",
               "MAIL over the global limit although the list allows more")
        c.cmd("QUIT")
        c.close()
        before = e.seq()
        got = post_data(e, None, body_of(MAX_SIZE + 2000), "over global")
        t = expect(got, 552, "5.3.4", "DATA over smtp.max_message_size")
        if "too big" not in t:
            raise Failure("global limit while receiving: %r" % t)
        if e.seq() != before:
            raise Failure("something was stored")
    e.check("a list limit above smtp.max_message_size: the global limit still applies", list_bigger_than_global)

    def no_limit():
        e.r.cmd("HSET", "lc:list:" + LIST, "max_message_size", "0")
        got = post_data(e, LIMIT * 3, body_of(LIMIT * 3), "no list limit")
        expect(got, 250, "2.0.0", "max_message_size 0: the global limit alone")
        e.r.cmd("HSET", "lc:list:" + LIST, "max_message_size", "")
        got = post_data(e, LIMIT * 3, body_of(LIMIT * 3), "empty list limit")
        expect(got, 250, "2.0.0", "max_message_size empty: the global limit alone")
    e.check("max_message_size 0 or empty: no limit of the list's own", no_limit)

    e.check("listd alive and storing posts", e.alive)
    e.check("listd stops cleanly without sanitizer reports", e.stop_listd)
    return e.ck.done()


def main():
    return lsdtest.main(run, OVERALL_TIMEOUT)


if __name__ == "__main__":
    sys.exit(main())
