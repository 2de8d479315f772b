#!/usr/bin/env python3
"""dnsmasq.py: a throw-away DNS server for listcast tests (Python 3 stdlib only).

Starts /usr/sbin/dnsmasq on 127.0.0.1:<free port> with a generated configuration that serves MX and A
records for test domains, and nothing else: no upstream resolvers, no /etc/hosts, no DHCP. Every name under
a "local" zone (by default the last label of each configured name, e.g. "test") that is not configured
answers NXDOMAIN; a configured name asked for a type it does not have answers NODATA. Records carry a TTL of
600 s (--local-ttl), so resolvers can cache them.

API
    start(tmpdir, mx, hosts=None, servfail=(), log_queries=False, txt=None, ptr=None) -> (proc, port)
        mx:       {domain: [(pref, mxname, ip_or_None), ...]}; mxname "." with pref 0 is an RFC 7505 null MX.
        hosts:    {name: ip or [ip, ...]} extra A records (e.g. a domain with no MX: RFC 5321 implicit MX,
                  or a second address for an MX host).
        servfail: domains whose queries answer SERVFAIL (forwarded to a tiny in-process responder).
        log_queries: log each query to <tmpdir>/dnsmasq.log (count them with query_count()).
        txt:      {name: [record, ...]} TXT records; a record is a str (one character-string, split by dnsmasq
                  into 255-octet strings as needed) or a list of str (the strings of one record). Octets
                  outside printable ASCII go into the configuration raw (not NUL, CR or LF; dnsmasq keeps
                  octets 0x7f-0xff and tab as they are, other control octets may change).
        ptr:      {ipv4: name} PTR records (served at the in-addr.arpa name of the address).
    stop(proc)                   kills dnsmasq (and the SERVFAIL responder); safe to call twice.
    query(port, name, qtype)     -> (rcode, [answers]); MX answers are (pref, name), A answers dotted quads.
    query_count(tmpdir)          -> number of queries dnsmasq logged so far (needs log_queries=True).

CLI (manual testing)
    python3 dnsmasq.py serve DIR DOMAIN=PREF:MXNAME:IP[/PREF:MXNAME:IP...] ...   (prints the port, runs
        until interrupted)
        [--txt-record NAME=TEXT]... [--ptr-record IP=NAME]...
    python3 dnsmasq.py query PORT NAME MX|A|TXT|PTR

Limits: IPv4 only; waits at most 5 s for dnsmasq to answer; every socket wait has a timeout.
"""

import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

DNSMASQ = "/usr/sbin/dnsmasq"
T_A, T_MX, T_PTR, T_TXT = 1, 15, 12, 16


def _free_port():
    """A port free for both UDP and TCP on 127.0.0.1 at the time of asking."""
    for _ in range(50):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free port")


def _encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def _read_name(msg, off, depth=0):
    """Returns (name, offset after the name in place); follows compression pointers (bounded)."""
    labels = []
    end = None
    for _ in range(128):
        n = msg[off]
        if n == 0:
            off += 1
            break
        if n & 0xC0 == 0xC0:
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            continue
        labels.append(msg[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n
    else:
        raise ValueError("name too long")
    return ".".join(labels), (end if end is not None else off)


def query(port, name, qtype, timeout=2.0):
    """Asks 127.0.0.1:port one question; returns (rcode, answers). qtype: "MX", "A", 15 or 1."""
    if isinstance(qtype, str):
        qtype = {"A": T_A, "MX": T_MX, "TXT": T_TXT, "PTR": T_PTR}[qtype.upper()]
    tid = random.randrange(65536)
    pkt = struct.pack(">HHHHHH", tid, 0x0100, 1, 0, 0, 0) + _encode_name(name) + struct.pack(">HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(pkt, ("127.0.0.1", port))
        deadline = time.monotonic() + timeout
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            r = s.recv(4096)
            if len(r) >= 12 and struct.unpack(">H", r[:2])[0] == tid:
                break
    finally:
        s.close()
    _, flags, qd, an, _, _ = struct.unpack(">HHHHHH", r[:12])
    off = 12
    for _ in range(qd):
        _, off = _read_name(r, off)
        off += 4
    answers = []
    for _ in range(an):
        _, off = _read_name(r, off)
        rtype, _, _, rdlen = struct.unpack(">HHIH", r[off:off + 10])
        off += 10
        rdata_off = off
        off += rdlen
        if rtype == T_MX:
            pref = struct.unpack(">H", r[rdata_off:rdata_off + 2])[0]
            answers.append((pref, _read_name(r, rdata_off + 2)[0] or "."))
        elif rtype == T_A and rdlen == 4:
            answers.append(socket.inet_ntoa(r[rdata_off:rdata_off + 4]))
        elif rtype == T_PTR:
            answers.append(_read_name(r, rdata_off)[0])
        elif rtype == T_TXT:  # the record's character-strings joined, as bytes
            i, out = rdata_off, b""
            while i < off:
                out += r[i + 1:i + 1 + r[i]]
                i += 1 + r[i]
            answers.append(out)
    return flags & 0xF, answers


class _Servfail(threading.Thread):
    """Answers every UDP query with SERVFAIL (an upstream for dnsmasq's server=/domain/ lines)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            try:
                q, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            if len(q) < 12:
                continue
            tid, flags = struct.unpack(">HH", q[:4])
            # QR=1, opcode and RD copied, RA=1, RCODE=2 (SERVFAIL); question echoed, no records.
            rflags = 0x8000 | (flags & 0x7900) | 0x0080 | 2
            try:
                self.sock.sendto(struct.pack(">HH", tid, rflags) + q[4:6] + b"\0" * 6 + q[12:], peer)
            except OSError:
                pass

    def stop(self):
        self.stopping.set()
        self.join(2)
        self.sock.close()


def _txt_quote(text):
    """One dnsmasq quoted string: quote and backslash escaped, other octets raw (the file is written as latin-1;
    NUL, CR and LF cannot be served)."""
    b = text.encode("latin-1") if isinstance(text, str) else bytes(text)
    if any(c in (0, 10, 13) for c in b):
        raise ValueError("TXT text with NUL, CR or LF")
    return '"' + "".join("\\" + chr(c) if c in (0x22, 0x5C) else chr(c) for c in b) + '"'


def ptr_name(ip):
    """The in-addr.arpa name of an IPv4 address."""
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa"


def _conf(mx, hosts, servfail, servfail_port, local_zones, txt=None, ptr=None):
    lines = []
    for name, recs in (txt or {}).items():
        for rec in recs:
            parts = rec if isinstance(rec, (list, tuple)) else [rec]
            lines.append("txt-record=%s,%s" % (name, ",".join(_txt_quote(p) for p in parts)))
    for ip, name in (ptr or {}).items():
        lines.append("ptr-record=%s,%s" % (ptr_name(ip), name))
    addrs = {}
    for dom, recs in mx.items():
        for pref, name, ip in recs:
            lines.append("mx-host=%s,%s,%d" % (dom, name, pref))
            if ip and name != ".":
                addrs.setdefault(name, [])
                if ip not in addrs[name]:
                    addrs[name].append(ip)
    for name, ip in (hosts or {}).items():
        addrs.setdefault(name, [])
        for one in (ip if isinstance(ip, (list, tuple)) else [ip]):
            if one not in addrs[name]:
                addrs[name].append(one)
    for name, ips in addrs.items():
        for one in ips:
            lines.append("host-record=%s,%s" % (name, one))
    for dom in servfail:
        lines.append("server=/%s/127.0.0.1#%d" % (dom, servfail_port))
    for zone in sorted(local_zones):
        lines.append("local=/%s/" % zone)
    return "\n".join(lines) + "\n"


def start(tmpdir, mx, hosts=None, servfail=(), log_queries=False, txt=None, ptr=None):
    """Starts dnsmasq serving mx (and hosts, txt, ptr); returns (proc, port) once it answers. Raises on failure."""
    zones = set()
    for name in list(mx) + list(hosts or {}) + list(servfail) + list(txt or {}) + [ptr_name(i) for i in ptr or {}]:
        zones.add(name.rstrip(".").rsplit(".", 1)[-1])
    sf = _Servfail() if servfail else None
    if sf:
        sf.start()
    conf = os.path.join(tmpdir, "dnsmasq.conf")
    with open(conf, "w", encoding="latin-1") as f:
        f.write(_conf(mx, hosts, servfail, sf.port if sf else 0, zones, txt, ptr))
    logpath = os.path.join(tmpdir, "dnsmasq.log")
    probe = next(iter(mx), None) or next(iter(hosts or {}), None) or next(iter(txt or {}), None)
    last_err = "not started"
    for _attempt in range(5):
        port = _free_port()
        args = [DNSMASQ, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll",
                "--conf-file=" + conf, "--listen-address=127.0.0.1", "--bind-interfaces",
                "--port=%d" % port, "--user=" + _user(), "--pid-file=", "--local-ttl=600",
                "--cache-size=0", "--log-facility=" + logpath]
        if log_queries:
            args.append("--log-queries")
        err = open(os.path.join(tmpdir, "dnsmasq.stderr"), "wb")
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        err.close()
        proc.lc_servfail = sf
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                if probe is None:
                    time.sleep(0.2)
                    return proc, port
                query(port, probe, T_MX, timeout=0.2)
                return proc, port
            except (OSError, socket.timeout):
                time.sleep(0.05)
        last_err = _tail(os.path.join(tmpdir, "dnsmasq.stderr")) or _tail(logpath) or "no answer"
        proc.lc_servfail = None
        _kill(proc)
    if sf:
        sf.stop()
    raise RuntimeError("dnsmasq did not start: " + last_err)


def _user():
    return "root" if os.geteuid() == 0 else (os.environ.get("USER") or "nobody")


def _tail(path):
    try:
        with open(path, "rb") as f:
            return f.read()[-400:].decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _kill(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(3)


def stop(proc):
    """Stops dnsmasq and its SERVFAIL responder; safe to call twice or with None."""
    if proc is None:
        return
    _kill(proc)
    sf = getattr(proc, "lc_servfail", None)
    if sf:
        sf.stop()
        proc.lc_servfail = None


def query_count(tmpdir):
    """Number of queries dnsmasq logged (start with log_queries=True)."""
    try:
        with open(os.path.join(tmpdir, "dnsmasq.log"), "r", errors="replace") as f:
            return sum(1 for line in f if ": query[" in line)
    except OSError:
        return 0


def _main(argv):
    if len(argv) >= 4 and argv[1] == "query":
        rcode, ans = query(int(argv[2]), argv[3], argv[4] if len(argv) > 4 else "MX")
        print("rcode=%d" % rcode, *ans)
        return 0
    if len(argv) >= 3 and argv[1] == "serve":
        mx, txt, ptr, specs, rest = {}, {}, {}, [], argv[3:]
        while rest:
            a = rest.pop(0)
            if a in ("--txt-record", "--ptr-record") and rest:
                k, _, v = rest.pop(0).partition("=")
                if a == "--txt-record":
                    txt.setdefault(k, []).append(v)
                else:
                    ptr[k] = v
            else:
                specs.append(a)
        for spec in specs:
            dom, _, recs = spec.partition("=")
            mx[dom] = []
            for r in recs.split("/"):
                pref, name, ip = (r.split(":") + ["", ""])[:3]
                mx[dom].append((int(pref), name, ip or None))
        proc, port = start(argv[2], mx, log_queries=True, txt=txt, ptr=ptr)
        print(port, flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            proc.wait()
        except KeyboardInterrupt:
            pass
        finally:
            stop(proc)
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
