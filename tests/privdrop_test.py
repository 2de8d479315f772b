#!/usr/bin/env python3
"""privdrop_test: `listcast up` started as root with run.user runs every daemon and redis-server unprivileged.

As root (the test says it is skipped otherwise): dnsmasq with MX records for two domains, tests/fakemx.py on
127.0.0.10, and `listcast up` with an embedded redis-server (redis.url empty), run.user=nobody, listd on a port
below 1024 (only root may bind it) and the state dir in a temporary directory that nobody can reach. Checks:
  - listd, the expander, the sender, the bounce daemon, the web UI and redis-server all run with real,
    effective, saved and file-system uid and gid of nobody, and no supplementary groups; the supervisor logs
    the switch, each daemon logs "running as nobody";
  - listd still listens on the privileged port (bound before the drop) and a post to a 3-subscriber list is
    delivered to every subscriber;
  - state.dir, the secret and the Redis data belong to nobody;
  - `listcast dkim keygen` run by root while the appliance runs, without run.user, writes a key that belongs to
    nobody (the owner of state.dir), and the next post's copies carry a DKIM-Signature (the sender read it);
  - run.user naming no user, or root, or a state.dir below a directory closed to that user, makes `listcast up`
    refuse to start (exit 1, one line); root without run.user is warned about;
  - a clean stop and no sanitizer report.
Every wait is bounded; everything started is stopped and the temporary directory removed.
"""
import json
import os
import pwd
import re
import signal
import smtplib
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsmasq  # noqa: E402
import lctest  # noqa: E402
from lctest import LISTCAST, wait_for  # noqa: E402

LIST = "drop@lists.test"
SUBS = ["ann@p1.test", "ben@p2.test", "cid@p1.test"]
DAEMONS = ["listcast-listd", "listcast-expander", "listcast-sender", "listcast-bounce", "listcast-webui"]


def low_port():
    """A free TCP port on 127.0.0.1 below 1024."""
    for port in range(940, 1000):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise AssertionError("no free port in 940-999")


def ids(pid):
    """(uids, gids, groups) of a process from /proc/PID/status."""
    st = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            st[k] = v.split()
    return [int(x) for x in st["Uid"]], [int(x) for x in st["Gid"]], st.get("Groups", [])


def main():
    t = lctest.Checks()
    if os.geteuid() != 0:
        print("# skipped: dropping privileges needs root (CI runs as root)")
        return t.done()
    procs = lctest.Procs()
    try:
        run(t, procs)
    except AssertionError as e:
        t.check(False, str(e))
        for name in ("listcast", "fakemx"):
            sys.stdout.write(f"--- {name} log (tail) ---\n{procs.log(name)[-4000:]}\n")
    finally:
        procs.close()
    return t.done()


def run(t, procs):
    tmp = procs.tmp
    os.chmod(tmp, 0o755)  # nobody must reach state.dir below it
    nobody = pwd.getpwnam("nobody")
    mx = {"p1.test": [(10, "mx.test", "127.0.0.10")], "p2.test": [(10, "mx.test", "127.0.0.10")]}
    dns_proc, dns_port = dnsmasq.start(tmp, mx)
    procs.procs.append(dns_proc)
    mx_port = lctest.free_port("127.0.0.10")
    mxlog = os.path.join(tmp, "mx.jsonl")
    fake = procs.start("fakemx", [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                              "fakemx.py"), "--log", mxlog,
                                  "--listen", f"127.0.0.10:{mx_port}"], stdout=subprocess.PIPE)
    wait_for("fakemx ready", lambda: fake.stdout.readline().strip() == b"ready", 15)

    state = os.path.join(tmp, "state")
    smtp_port = low_port()
    cfg = ["--set", f"state.dir={state}", "--set", f"dns.servers=127.0.0.1:{dns_port}",
           "--set", f"sender.mx_port={mx_port}", "--set", f"smtp.listen=127.0.0.1:{smtp_port}",
           "--set", f"http.listen=127.0.0.1:{lctest.free_port()}", "--set", "smtp.hostname=listcast.test",
           "--set", "sender.tls=none"]

    # refused configurations first (nothing is started); then root without run.user is warned about
    closed = os.path.join(tmp, "closed")
    os.makedirs(closed, mode=0o700)
    r = subprocess.run([LISTCAST, "up", *cfg, "--set", "run.user=nobody", "--set",
                        f"state.dir={closed}/state"], capture_output=True, text=True, timeout=30)
    t.check(r.returncode == 1 and "cannot reach state.dir" in r.stderr and
            os.stat(os.path.join(closed, "state")).st_uid == 0,
            f"state.dir below a directory closed to run.user: refused at start, nothing given to it "
            f"({r.stderr.strip()[:160]})")
    r = subprocess.run(["timeout", "-s", "INT", "3", LISTCAST, "up", *cfg, "--set", f"state.dir={tmp}/state0",
                        "--set", f"smtp.listen=127.0.0.1:{lctest.free_port()}"], capture_output=True, text=True,
                       timeout=30)
    t.check("running as root with run.user empty" in r.stderr,
            f"root without run.user: a warning at start ({r.stderr.strip()[:160]})")
    for user, why in (("no-such-user-here", "no such user"), ("root", "is root")):
        r = subprocess.run([LISTCAST, "up", *cfg, "--set", f"run.user={user}"], capture_output=True, text=True,
                           timeout=30)
        t.check(r.returncode == 1 and why in r.stderr and r.stderr.count("\n") == 1,
                f"run.user={user}: refused at start, exit 1 ({r.returncode} {r.stderr.strip()[:120]})")

    up = procs.start("listcast", [LISTCAST, "up", *cfg, "--set", "run.user=nobody"])

    def banner():
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=5) as s:
            return s.noop()[0] == 250
    wait_for("listd banner on the privileged port", banner, 30)
    kids = wait_for("the daemons and redis-server running", lambda: (lambda k: k if all(
        d in k for d in DAEMONS + ["redis-server"]) else None)(lctest.children(up.pid)), 30)

    def dropped():
        bad = {}
        for name, pid in kids.items():
            u, g, groups = ids(pid)
            if u != [nobody.pw_uid] * 4 or g != [nobody.pw_gid] * 4 or groups:
                bad[name] = (u, g, groups)
        return bad
    bad = wait_for("every daemon switched", lambda: (lambda b: None if b else True)(dropped()), 20) and dropped()
    t.check(not bad, f"listd, expander, sender, bounce, webui and redis-server run as nobody ({sorted(kids)})")
    u, _, _ = ids(up.pid)
    t.check(u[0] == 0, "the supervisor keeps root (it starts listd, which binds port < 1024)")
    log = procs.log("listcast")
    t.check("run as nobody (uid %d)" % nobody.pw_uid in log and "run.user empty" not in log,
            "the supervisor logs the switch")
    for d in DAEMONS:
        t.check(re.search(rf"{d}\[\d+\]: info: running as nobody \(uid {nobody.pw_uid} ", log) is not None,
                f"{d} logs that it runs as nobody")
    owned = [p for p in (state, os.path.join(state, "secret"), os.path.join(state, "redis"))
             if os.stat(p).st_uid != nobody.pw_uid]
    t.check(not owned, f"state.dir, the secret and the Redis data belong to nobody ({owned})")

    def cli(*args):
        return subprocess.run([LISTCAST, *args, *cfg, "--set", "run.user=nobody"], capture_output=True, text=True,
                              timeout=60)
    r = cli("list", "create", LIST, "--policy", "open", "--owner", "owner@p1.test")
    t.check(r.returncode == 0, f"list create ({r.stderr.strip()})")
    r = cli("sub", "add", LIST, *SUBS)
    t.check(r.returncode == 0, f"sub add ({r.stderr.strip()})")

    def rows():
        if not os.path.exists(mxlog):
            return []
        with open(mxlog) as f:
            return [json.loads(line) for line in f if line.endswith("\n")]

    def post(subject):
        msg = (f"From: Poster <poster@p2.test>\r\nTo: {LIST}\r\nSubject: {subject}\r\n"
               f"Message-ID: <{subject.replace(' ', '-')}@p2.test>\r\n\r\nHello.\r\n")
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as s:
            s.sendmail("poster@p2.test", [LIST], msg.encode())

    def copies(subject):
        got = [row for row in rows() if subject in (row["headers"].get("Subject") or "")]
        return got if len(got) >= len(SUBS) else None

    post("first post")
    got = wait_for("3 copies of the first post", lambda: copies("first post"), 60)
    t.check(sorted(row["rcpts"][0].lower() for row in got) == sorted(SUBS),
            "the unprivileged appliance delivers a post to every subscriber")

    # as an operator would type it: without run.user (the key goes to the owner of state.dir, run.user)
    r = subprocess.run([LISTCAST, "dkim", "keygen", "lists.test", "--selector", "s1", "--json", "--set",
                        f"state.dir={state}"], capture_output=True, text=True, timeout=60)
    t.check(r.returncode == 0, f"dkim keygen by root, run.user not given, while the appliance runs "
                               f"({r.stderr.strip()})")
    key = json.loads(r.stdout)["file"] if r.returncode == 0 else ""
    t.check(key and os.stat(key).st_uid == nobody.pw_uid and os.stat(os.path.dirname(key)).st_uid ==
            nobody.pw_uid and (os.stat(key).st_mode & 0o777) == 0o600,
            "the key and its directory belong to nobody, the key mode 0600")
    post("signed post")
    got = wait_for("3 copies of the signed post", lambda: copies("signed post"), 60)
    t.check(all(row["headers"].get("DKIM-Signature") for row in got),
            "the next post is DKIM-signed: the unprivileged sender reads the key root made")

    rc = procs.stop(up, signal.SIGTERM, 30)
    t.check(rc == 0, f"listcast up stops cleanly (rc={rc})")
    bad = lctest.sanitizer_reports(procs)
    t.check(not bad, f"no sanitizer reports in the logs {bad}")


if __name__ == "__main__":
    sys.exit(main())
