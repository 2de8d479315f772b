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


def _bindable(host, port):
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def free_port(host="127.0.0.1", also=()):
    """A TCP port that was free on host (and on every address in also) a moment ago."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if all(_bindable(a, port) for a in also):
            return port
    raise RuntimeError(f"no port free on {host} and {list(also)}")


def wait_for(what, fn, timeout=30.0, step=0.05, retry=Exception):
    """Call fn until it returns a true value; fail after timeout seconds. Exceptions of the classes in retry
    (all by default) are retried until the deadline, others propagate at once (retry=() for none)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except retry as e:  # noqa: BLE001 - retried until the deadline
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


def children(ppid):
    """{program basename: pid} of the live direct children of ppid (redis-server's rewritten title counts by its
    first word)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) != ppid or fields[0] == "Z":
                continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0].decode().split(" ")[0]
            out[os.path.basename(argv0)] = int(d)
        except (OSError, ValueError, IndexError):
            continue
    return out


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


class RedisError(RuntimeError):
    """An error reply from Redis (-ERR ...)."""


def _resp_encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def _resp_read(f, raw=False):
    line = f.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    t, rest = line[:1], line[1:-2]
    if t == b"+":
        return rest.decode()
    if t == b"-":
        raise RedisError(rest.decode())
    if t == b":":
        return int(rest)
    if t == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data if raw else data.decode("utf-8", "surrogateescape")
    if t == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f, raw) for _ in range(n)]
    raise RuntimeError(f"bad RESP line {line!r}")


class Redis:
    """One connection over the unix socket (path or unix:// URL), kept open: r.cmd(*args) or r(*args) runs a
    command and returns the decoded reply; raw=True gives bulk strings as bytes."""

    def __init__(self, sock_or_url, timeout=10, raw=False):
        path = sock_or_url[len("unix://"):] if sock_or_url.startswith("unix://") else sock_or_url
        self.raw = raw
        self.sock = socket.socket(socket.AF_UNIX)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.f = self.sock.makefile("rb")

    def cmd(self, *args):
        self.sock.sendall(_resp_encode(args))
        return _resp_read(self.f, self.raw)

    __call__ = cmd

    def close(self):
        self.f.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def redis_cmd(sock_or_url, *args):
    """Run one Redis command over the unix socket (path or unix:// URL); returns the decoded reply."""
    with Redis(sock_or_url) as r:
        return r.cmd(*args)


def b32(v):
    s = ""
    while True:
        s = B32[v & 31] + s
        v >>= 5
        if not v:
            return s


def _verp_mac(key, p, s, domain):
    """The 12 digits: first 60 bits of HMAC-SHA256(key, "verp" NUL P NUL S NUL DOMAIN)."""
    msg = b"verp\0" + p.encode() + b"\0" + s.encode() + b"\0" + domain.encode()
    bits = int.from_bytes(hmac.new(key, msg, hashlib.sha256).digest()[:8], "big")
    return "".join(B32[(bits >> (59 - 5 * i)) & 31] for i in range(12))


def verp_decode(key, addr):
    """Decode a VERP address with the raw secret key; returns (post, sub) or None if unsigned/forged/malformed
    (like lc_verp_decode: case-insensitive, P and S without leading zeros)."""
    local, _, domain = addr.lower().rpartition("@")
    if not local.startswith("bounce-"):
        return None
    parts = local[len("bounce-"):].split("-")
    if len(parts) != 3 or len(parts[2]) != 12:
        return None
    p, s, m = parts
    try:
        post, sub = int(p, 32), int(s, 32)
    except ValueError:
        return None
    if b32(post) != p or b32(sub) != s:
        return None
    if not hmac.compare_digest(_verp_mac(key, p, s, domain), m):
        return None
    return post, sub


def verp_encode(key, post, sub, domain):
    p, s = b32(post), b32(sub)
    return f"bounce-{p}-{s}-{_verp_mac(key, p, s, domain)}@{domain}"


def verp_forge(addr):
    """The VERP address with the last digit of its MAC changed."""
    local, _, domain = addr.rpartition("@")
    return local[:-1] + ("0" if local[-1] != "0" else "1") + "@" + domain


def read_secret(path):
    with open(path) as f:
        return bytes.fromhex(f.read().strip())


def write_secret(path, key):
    """Write the raw key as a secret file (hex, mode 600), as listcast's daemons read it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")


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
