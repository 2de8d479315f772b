"""lsdtest.py: shared helpers of listd's ESMTP and abuse tests (listd_ext_test.py, listd_abuse_test.py).

Builds on lctest.py (processes, Redis, ports) and listd_test.py (the raw-socket SMTP client Smtp, expect,
message): a test certificate made with certtool (gnutls-bin) at test time, a listd started with extra --set
options, a STARTTLS upgrade with Python's ssl module, and "a normal post still works" (the daemon is up and
stores posts). Every wait is bounded.
"""

import os
import re
import signal
import socket
import ssl
import subprocess
import time

import lctest
from listd_test import Failure, Smtp, expect, message  # noqa: F401 - re-exported for the tests

LIBEXEC = os.environ.get("LC_LIBEXEC_DIR", "/work/main/build-listd/libexec/listcast")
LISTD = os.path.join(LIBEXEC, "listcast-listd")
LIST = "news@lists.test"
HOST = "mx.lists.test"
MAX_SIZE = 65536
IO_TIMEOUT = 10


def make_cert(tmp, name="tls", cn=HOST):
    """Generate a key and a self-signed certificate with certtool; returns (cert path, key path)."""
    key = os.path.join(tmp, name + ".key")
    cert = os.path.join(tmp, name + ".crt")
    tmpl = os.path.join(tmp, name + ".tmpl")
    with open(tmpl, "w") as f:
        f.write('cn = "%s"\ndns_name = "%s"\nexpiration_days = 2\ntls_www_server\nsigning_key\n'
                'encryption_key\n' % (cn, cn))
    run = dict(stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60, check=True)
    subprocess.run(["certtool", "--generate-privkey", "--key-type=ecdsa", "--outfile", key], **run)
    subprocess.run(["certtool", "--generate-self-signed", "--load-privkey", key, "--template", tmpl,
                    "--outfile", cert], **run)
    return cert, key


class Env:
    """One redis-server (durable) with the test lists, and listd instances started on demand."""

    def __init__(self):
        self.procs = lctest.Procs()
        self.tmp = self.procs.tmp
        self.ck = lctest.Checks()
        self.secret = os.urandom(32)
        self.secret_file = os.path.join(self.tmp, "secret")
        lctest.write_secret(self.secret_file, self.secret)
        self.redis_proc, self.url = lctest.start_redis(self.procs, durable=True)
        self.r = lctest.Redis(self.url, timeout=IO_TIMEOUT, raw=True)
        now = str(int(time.time()))
        self.r.cmd("HSET", "lc:list:" + LIST, "address", LIST, "id", "1", "policy", "open", "owner",
                   "owner@ex.test", "created", now)
        self.r.cmd("SADD", "lc:lists", LIST)
        self.r.cmd("SADD", "lc:domains", "lists.test")
        self.listd = None
        self.port = None
        self.name = None

    def argv(self, port, sets):
        a = [LISTD, "--set", "redis.url=" + self.url, "--set", "smtp.listen=127.0.0.1:%d" % port,
             "--set", "state.dir=" + self.tmp, "--set", "secret.file=" + self.secret_file,
             "--set", "smtp.hostname=" + HOST, "--set", "smtp.max_message_size=%d" % MAX_SIZE]
        for kv in sets:
            a += ["--set", kv]
        return a + ["-v"]

    def start_listd(self, name, sets=()):
        """Start listd (stopping the previous one) and wait for its greeting."""
        self.stop_listd()
        self.port = lctest.free_port()
        self.name = name
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        self.listd = self.procs.start(name, self.argv(self.port, sets), env=env)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.listd.poll() is not None:
                raise Failure("listd exited at start with %d: %s" % (self.listd.returncode, self.log()[-500:]))
            try:
                c = Smtp(self.port)
                expect(c.reply(), 220, None, "greeting")
                c.close()
                return
            except (OSError, Failure):
                time.sleep(0.05)
        raise Failure("listd did not start listening")

    def start_fails(self, name, sets):
        """Run listd with a configuration that must fail at start: (exit status, stderr)."""
        p = subprocess.run(self.argv(lctest.free_port(), sets), stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=20)
        return p.returncode, p.stderr.decode("utf-8", "replace")

    def stop_listd(self):
        """SIGTERM: listd must exit 0 with no sanitizer report."""
        if not self.listd:
            return
        p, self.listd = self.listd, None
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
            raise Failure("listd did not stop on SIGTERM")
        log = self.procs.log(p.lc_name)
        if rc != 0:
            raise Failure("listd exit status %d after SIGTERM" % rc)
        if "Sanitizer" in log or "runtime error:" in log:
            raise Failure("sanitizer report in the log:\n" + log[-3000:])

    def log(self):
        return self.procs.log(self.name) if self.name else ""

    def close(self):
        try:
            self.stop_listd()
        finally:
            self.r.close()
            self.procs.close(keep=bool(os.environ.get("LC_TEST_KEEP")))

    def check(self, name, fn):
        try:
            fn()
            self.ck.check(True, name)
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            self.ck.check(False, "%s: %s: %s" % (name, type(e).__name__, e))

    # SMTP helpers
    def session(self, ehlo=True, src=None):
        c = Smtp(self.port) if src is None else Smtp.__new__(Smtp)
        if src is not None:
            c.s = socket.socket()
            c.s.settimeout(IO_TIMEOUT)
            c.s.bind((src, 0))
            c.s.connect(("127.0.0.1", self.port))
            c.buf = b""
        expect(c.reply(), 220, None, "greeting")
        if ehlo:
            expect(c.cmd("EHLO client.ex.test"), 250, None, "EHLO")
        return c

    def seq(self):
        v = self.r.cmd("GET", "lc:seq:post")
        return int(v) if v else 0

    def alive(self):
        """listd is running and a normal post is accepted and stored; returns the post id."""
        if self.listd.poll() is not None:
            raise Failure("listd exited with %d" % self.listd.returncode)
        c = self.session()
        expect(c.cmd("MAIL FROM:<poster@ex.test>"), 250, "2.1.0", "MAIL")
        expect(c.cmd("RCPT TO:<%s>" % LIST), 250, "2.1.5", "RCPT")
        expect(c.cmd("DATA"), 354, None, "DATA")
        c.send(message("alive") + ".\r\n")
        t = expect(c.reply(), 250, "2.0.0", "end of DATA")
        expect(c.cmd("QUIT"), 221, None, "QUIT")
        c.close()
        pid = re.search(r"queued as post (\d+)", t).group(1)
        if self.r.cmd("EXISTS", "lc:msg:" + pid) != 1:
            raise Failure("post %s not stored" % pid)
        return int(pid)


def starttls(c, cert=None):
    """STARTTLS on an Smtp in command state: 220, then the handshake. Returns the Smtp, now over TLS; checks
    that listd presented cert (a PEM file) if given."""
    expect(c.cmd("STARTTLS"), 220, "2.0.0", "STARTTLS")
    if c.buf:
        raise Failure("data after the 220 of STARTTLS: %r" % c.buf)
    return tls_wrap(c, cert)


def tls_wrap(c, cert=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c.s = ctx.wrap_socket(c.s, server_hostname=HOST)
    if cert:
        with open(cert) as f:
            want = ssl.PEM_cert_to_DER_cert(f.read())
        if c.s.getpeercert(binary_form=True) != want:
            raise Failure("listd presented another certificate")
    return c


def ehlo_caps(c, name="client.ex.test"):
    code, lines = c.cmd("EHLO " + name)
    if code != 250:
        raise Failure("EHLO: %r" % lines)
    return [ln[4:].upper() for ln in lines[1:]]


def main(run, timeout):
    """Runs run(Env()) under an overall alarm of timeout seconds; prints listd's log tail on a harness failure
    and always closes the environment. Returns the exit status for sys.exit."""
    if not os.access(LISTD, os.X_OK):
        print("FAIL listd binary not found at %s" % LISTD)
        return 1

    def on_alarm(signum, frame):
        raise Failure("overall timeout of %d s" % timeout)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(timeout)
    e = None
    try:
        e = Env()
        return run(e)
    except (Failure, AssertionError, OSError) as ex:
        print("FAIL harness: %s" % ex)
        if e:
            print("--- listd log (tail) ---\n" + e.log()[-3000:])
        return 1
    finally:
        signal.alarm(0)
        if e:
            e.close()
