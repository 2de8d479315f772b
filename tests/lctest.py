"""lctest: shared helpers for listcast's Python integration tests.

Starts real parts on loopback (redis-server, processes of the build), finds free ports, waits with bounds,
and decodes VERP addresses exactly as common/lc_verp.c encodes them. Standard library only.
"""
import hashlib
import hmac
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BIN_DIR = os.environ.get("LC_BIN_DIR", "/work/main/build/bin")
LIBEXEC_DIR = os.environ.get("LC_LIBEXEC_DIR", "/work/main/build/libexec/listcast")
SRC_DIR = os.environ.get("LC_SRC_DIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LISTCAST = os.path.join(BIN_DIR, "listcast")

B32 = "0123456789abcdefghijklmnopqrstuv"


def free_port(host="127.0.0.1"):
    """A TCP port that was free on host a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(what, fn, timeout=30.0, step=0.05):
    """Call fn until it returns a true value; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Procs:
    """Owns the processes a test starts and stops them all, in reverse order, whatever happens."""

    def __init__(self):
        self.procs = []
        self.tmp = tempfile.mkdtemp(prefix="lctest-")

    def start(self, name, argv, **kw):
        log = open(os.path.join(self.tmp, name + ".log"), "ab")
        p = subprocess.Popen(argv, stdout=kw.pop("stdout", log), stderr=log, stdin=subprocess.DEVNULL, **kw)
        p.lc_name = name
        self.procs.append(p)
        return p

    def log(self, name):
        try:
            with open(os.path.join(self.tmp, name + ".log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, p, sig=signal.SIGTERM, timeout=15):
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        return p.returncode

    def close(self, keep=False):
        for p in reversed(self.procs):
            self.stop(p)
        if keep or os.environ.get("LC_KEEP_TMP"):
            print(f"# kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def sanitizer_reports(procs):
    """Names of the logs in procs.tmp that hold an AddressSanitizer/UBSan/LeakSanitizer report."""
    bad = []
    for name in sorted(os.listdir(procs.tmp)):
        if name.endswith(".log"):
            text = procs.log(name[:-4])
            if "Sanitizer" in text or "runtime error:" in text:
                bad.append(name)
    return bad


def start_redis(procs, durable=True):
    """Start redis-server on a unix socket in procs.tmp; returns (process, url)."""
    d = os.path.join(procs.tmp, "redis")
    os.makedirs(d, exist_ok=True)
    sock = os.path.join(d, "redis.sock")
    argv = ["redis-server", "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700", "--dir", d,
            "--save", "", "--daemonize", "no"]
    argv += ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    p = procs.start("redis", argv)
    wait_for("redis", lambda: redis_cmd(sock, "PING") == "PONG", 10)
    return p, "unix://" + sock


def _resp_encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def _resp_read(f):
    line = f.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    t, rest = line[:1], line[1:-2]
    if t == b"+":
        return rest.decode()
    if t == b"-":
        raise RuntimeError(rest.decode())
    if t == b":":
        return int(rest)
    if t == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode("utf-8", "surrogateescape")
    if t == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise RuntimeError(f"bad RESP line {line!r}")


def redis_cmd(sock_or_url, *args):
    """Run one Redis command over the unix socket (path or unix:// URL); returns the decoded reply."""
    path = sock_or_url[len("unix://"):] if sock_or_url.startswith("unix://") else sock_or_url
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(_resp_encode(args))
        return _resp_read(s.makefile("rb"))


def b32(v):
    s = ""
    while True:
        s = B32[v & 31] + s
        v >>= 5
        if not v:
            return s


def verp_decode(key, addr):
    """Decode a VERP address with the raw secret key; returns (post, sub) or None if unsigned/forged."""
    local, _, domain = addr.lower().rpartition("@")
    if not local.startswith("bounce-"):
        return None
    parts = local[len("bounce-"):].split("-")
    if len(parts) != 3 or len(parts[2]) != 12:
        return None
    p, s, m = parts
    msg = b"verp\0" + p.encode() + b"\0" + s.encode() + b"\0" + domain.encode()
    bits = int.from_bytes(hmac.new(key, msg, hashlib.sha256).digest()[:8], "big")
    want = "".join(B32[(bits >> (59 - 5 * i)) & 31] for i in range(12))
    if not hmac.compare_digest(want, m):
        return None
    return int(p, 32), int(s, 32)


def verp_encode(key, post, sub, domain):
    p, s = b32(post), b32(sub)
    msg = b"verp\0" + p.encode() + b"\0" + s.encode() + b"\0" + domain.encode()
    bits = int.from_bytes(hmac.new(key, msg, hashlib.sha256).digest()[:8], "big")
    m = "".join(B32[(bits >> (59 - 5 * i)) & 31] for i in range(12))
    return f"bounce-{p}-{s}-{m}@{domain}"


def read_secret(path):
    with open(path) as f:
        return bytes.fromhex(f.read().strip())


class Checks:
    """Counts checks and prints the closing 'N passed, N failed' line."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, cond, what):
        if cond:
            self.passed += 1
            print(f"ok   {what}")
        else:
            self.failed += 1
            print(f"FAIL {what}")
        sys.stdout.flush()
        return cond

    def done(self):
        print(f"{self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0
