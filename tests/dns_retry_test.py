#!/usr/bin/env python3
"""dns_retry_test: recipients whose domain's DNS fails temporarily follow the retry schedule (issue 4, outcomes).

Starts redis-server (AOF), two dnsmasq instances, a small UDP DNS switch in this process (the expander's
dns.servers; it forwards every query to one dnsmasq or the other, so "DNS recovers" without restarting the
appliance), fakemx.py on 127.0.0.10-11 and `listcast up` with short retry timings (sender.retry_min=1,
sender.retry_max=2, sender.max_lifetime=LIFETIME; the lifetime's minimum was lowered to 1 s for this test).
  dnsmasq A: n0..n3.test resolvable; flaky.test and dead.test answer SERVFAIL.
  dnsmasq B: flaky.test resolvable too (mx1.test, 127.0.0.11); dead.test still SERVFAIL.
One post to a list with subscribers in all six domains, while the switch points at A:
  1. the n*.test subscribers get their copy; the post shows deferred = flaky + dead subscribers, is not done,
     and lc:retry holds them with an empty hosts field; while DNS still fails, a retry goes back to the expander
     (a reroute entry in lc:stream:posts) and comes out without a route again;
  2. the switch moves to B (DNS recovers for flaky.test): the flaky.test subscribers get exactly one copy on a
     retry; deferred drops to the dead.test subscribers, the post is still sending;
  3. dead.test never recovers: after sender.max_lifetime (from the post's creation) its subscribers bounce with a
     "451 4.4.7 ... expired" reply, the bounce daemon records reason `expired`, deferred is 0, the post is done
     with delivered + bounced = recipients, lc:retry is empty and nothing is left pending in either stream.
Every subscriber gets at most one copy. Bounded: every wait has a deadline; about 30 s in the sanitizer build.
Env: LC_BIN_DIR, LC_LIBEXEC_DIR (set by CTest), LC_KEEP_TMP=1 keeps the temp dir.
"""
import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsmasq  # noqa: E402
import lctest  # noqa: E402
from lctest import LISTCAST, wait_for  # noqa: E402

LIST = "dnsretry@lists.test"
LIFETIME = 16
NORMAL = [f"n{i}.test" for i in range(4)]
PER_DOMAIN = 5


class DnsSwitch(threading.Thread):
    """A UDP DNS forwarder on 127.0.0.1:port that sends each query to the current upstream port."""

    def __init__(self, upstream):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.upstream = upstream
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            try:
                q, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            up.settimeout(1.0)
            try:
                up.sendto(q, ("127.0.0.1", self.upstream))
                self.sock.sendto(up.recv(4096), peer)
            except OSError:
                pass  # no answer: the resolver times out and tries again
            finally:
                up.close()

    def stop(self):
        self.stopping.set()
        self.join(2)
        self.sock.close()


class Env:
    """The appliance under test and its observers (after crash_test.Env)."""

    def __init__(self, t, procs):
        self.t, self.procs = t, procs
        tmp = procs.tmp
        _, self.redis_url = lctest.start_redis(procs)
        self.r = lctest.Redis(self.redis_url)
        mx_a = {d: [(10, "mx0.test", "127.0.0.10")] for d in NORMAL}
        mx_b = dict(mx_a, **{"flaky.test": [(10, "mx1.test", "127.0.0.11")]})
        da, db = os.path.join(tmp, "dns-a"), os.path.join(tmp, "dns-b")
        os.makedirs(da)
        os.makedirs(db)
        self.dns_a, port_a = dnsmasq.start(da, mx_a, servfail=["flaky.test", "dead.test"])
        self.dns_b, self.port_b = dnsmasq.start(db, mx_b, servfail=["dead.test"])
        self.switch = DnsSwitch(port_a)
        self.switch.start()
        mx_port = lctest.free_port("127.0.0.10", also=["127.0.0.11"])
        self.mxlog = os.path.join(tmp, "mx.jsonl")
        argv = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakemx.py"),
                "--log", self.mxlog, "--listen", f"127.0.0.10:{mx_port}", "--listen", f"127.0.0.11:{mx_port}"]
        fake = procs.start("fakemx", argv, stdout=subprocess.PIPE)
        wait_for("fakemx ready", lambda: fake.stdout.readline().strip() == b"ready", 15)
        self.smtp_port = lctest.free_port()
        self.state = os.path.join(tmp, "state")
        self.cfg = ["--set", f"redis.url={self.redis_url}", "--set", f"state.dir={self.state}",
                    "--set", f"dns.servers=127.0.0.1:{self.switch.port}", "--set", f"sender.mx_port={mx_port}",
                    "--set", f"smtp.listen=127.0.0.1:{self.smtp_port}",
                    "--set", f"http.listen=127.0.0.1:{lctest.free_port()}", "--set", "smtp.hostname=listcast.test",
                    "--set", "sender.tls=none", "--set", "sender.retry_min=1", "--set", "sender.retry_max=2",
                    "--set", f"sender.max_lifetime={LIFETIME}"]
        self.up = procs.start("listcast", [LISTCAST, "up", *self.cfg])

        def banner():
            with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=5) as s:
                return s.noop()[0] == 250
        wait_for("listd banner", banner, 30)
        self.cli("list", "create", LIST, "--policy", "open", "--owner", "owner@example.test")
        self.subs = {d: [f"u{j}@{d}" for j in range(PER_DOMAIN)] for d in NORMAL + ["flaky.test", "dead.test"]}
        every = [a for v in self.subs.values() for a in v]
        self.cli("sub", "add", LIST, "-", stdin="\n".join(every) + "\n")
        self.key = lctest.read_secret(os.path.join(self.state, "secret"))

    def close(self):
        self.switch.stop()
        dnsmasq.stop(self.dns_a)
        dnsmasq.stop(self.dns_b)

    def cli(self, *args, stdin=None):
        r = subprocess.run([LISTCAST, *args, *self.cfg], input=stdin, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError(f"listcast {' '.join(args)}: rc={r.returncode} {r.stderr.strip()}")
        return r.stdout

    def post(self, subject):
        msg = (f"From: Poster <poster@example.test>\r\nTo: {LIST}\r\nSubject: {subject}\r\n"
               f"Message-ID: <{subject.replace(' ', '-')}@example.test>\r\n\r\nBody.\r\n")
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as s:
            s.ehlo("poster.test")
            s.mail("poster@example.test")
            s.rcpt(LIST)
            code, resp = s.data(msg.encode())
        if code != 250:
            raise AssertionError(f"post refused: {code} {resp!r}")
        return int(resp.decode().split()[-1])

    def show(self, post_id):
        return json.loads(self.cli("post", "show", str(post_id), "--json"))

    def copies(self, post_id):
        """{subscriber address: copies received} for one post, from the fake MX log."""
        got = {}
        if not os.path.exists(self.mxlog):
            return got
        with open(self.mxlog) as f:
            for line in f:
                if not line.endswith("\n"):
                    break
                row = json.loads(line)
                dec = lctest.verp_decode(self.key, row["mail_from"])
                if dec and dec[0] == post_id:
                    for rc in row["rcpts"]:
                        got[rc.lower()] = got.get(rc.lower(), 0) + 1
        return got

    def retry_members(self):
        return [m.split("\n") for m in self.r("ZRANGE", "lc:retry", "0", "-1") or []]


def run(t, env):
    normal = [a for d in NORMAL for a in env.subs[d]]
    flaky, dead = env.subs["flaky.test"], env.subs["dead.test"]
    t0 = time.time()
    p = env.post("dns retry")

    # ---- 1. DNS failing: the other domains delivered, the failing ones deferred in lc:retry ----
    wait_for("copies to the resolvable domains", lambda: len(env.copies(p)) >= len(normal), 30, step=0.1)
    j = wait_for("deferred counted", lambda: (lambda j: j if j["deferred"] == len(flaky) + len(dead) else None)(
        env.show(p)), 30, step=0.1)
    got = env.copies(p)
    t.check(sorted(got) == sorted(normal), f"DNS failing: exactly the resolvable domains got copies ({len(got)})")
    t.check(j["state"] == "sending" and j["pending"] == len(flaky) + len(dead) and j["delivered"] == len(normal)
            and j["recipients"] == len(normal) + len(flaky) + len(dead),
            f"DNS failing: deferred={j['deferred']} pending={j['pending']} state={j['state']} (not done)")
    doms = {x["domain"]: x for x in j.get("domains", [])} if isinstance(j.get("domains"), list) else {}
    if doms:
        t.check(doms.get("flaky.test", {}).get("deferred") == len(flaky),
                f"DNS failing: per-domain deferred for flaky.test ({doms.get('flaky.test')})")
    members = wait_for("deferred recipients in lc:retry", lambda: (lambda m: m if len(m) == len(flaky) + len(dead)
                                                                   else None)(env.retry_members()), 10, step=0.1)
    t.check(all(len(m) == 7 and m[5] == "" for m in members),
            "DNS failing: lc:retry members without hosts (no route)")
    log = wait_for("a retry resolved again and still failing",
                   lambda: (lambda s: s if "flaky.test temporary DNS failure again" in s else None)(
                       env.procs.log("listcast")), 20, step=0.2)
    t.check("4.4.3 temporary DNS failure" in log, "DNS failing: the sender defers with a 4.4.3 reply")
    t.check("for a fresh DNS lookup" in log, "DNS failing: due retries go back to the expander")
    j = env.show(p)
    t.check(j["deferred"] == len(flaky) + len(dead) and j["state"] == "sending",
            f"DNS failing: a retry deferred again changes no counter (deferred={j['deferred']})")

    # ---- 2. DNS recovers for flaky.test ----
    env.switch.upstream = env.port_b
    wait_for("flaky.test delivered on a retry", lambda: all(a in env.copies(p) for a in flaky), 30, step=0.1)
    j = wait_for("deferred down to dead.test", lambda: (lambda j: j if j["deferred"] == len(dead) else None)(
        env.show(p)), 15, step=0.1)
    t.check(j["delivered"] == len(normal) + len(flaky) and j["state"] == "sending" and j["pending"] == len(dead),
            f"DNS recovered: flaky.test delivered, deferred={j['deferred']} pending={j['pending']} "
            f"state={j['state']}")
    t.check("flaky.test resolved on a retry" in env.procs.log("listcast"), "DNS recovered: logged by the expander")

    # ---- 3. dead.test never recovers: expired after sender.max_lifetime ----
    j = wait_for("post done", lambda: (lambda j: j if j["state"] == "done" else None)(env.show(p)),
                 LIFETIME + 30, step=0.2)
    t_done = time.time()
    t.check(j["deferred"] == 0 and j["bounced"] == len(dead) and j["pending"] == 0
            and j["delivered"] + j["bounced"] == j["recipients"],
            f"post done: delivered={j['delivered']} bounced={j['bounced']} deferred={j['deferred']} "
            f"pending={j['pending']}")
    t.check(t_done - t0 >= LIFETIME - 1, f"dead.test bounced only after sender.max_lifetime ({t_done - t0:.1f} s)")
    log = env.procs.log("listcast")
    expired = [a for a in dead if f"post={p} rcpt=<{a}> expired after" in log]
    t.check(sorted(expired) == sorted(dead) and "451 4.4.7 delivery time expired" in log,
            f"dead.test: every subscriber expired with a 4.4.7 reply ({len(expired)} of {len(dead)})")

    def reasons():
        return all(json.loads(env.cli("sub", "show", LIST, a, "--json")).get("last_bounce_reason") == "expired"
                   for a in dead)
    t.check(wait_for("bounce reasons recorded", reasons, 15, step=0.2),
            "dead.test: the bounce daemon recorded last_bounce_reason expired for each subscriber")
    t.check(not env.retry_members(), "lc:retry is empty")
    time.sleep(1.5)  # a late duplicate would arrive now
    got = env.copies(p)
    t.check(sorted(got) == sorted(normal + flaky) and all(n == 1 for n in got.values()),
            "every reachable subscriber got exactly one copy, dead.test none")
    pend_d = env.r("XPENDING", "lc:stream:deliveries", "sender")[0]
    pend_p = env.r("XPENDING", "lc:stream:posts", "expander")[0]
    t.check(pend_d == 0 and pend_p == 0, f"nothing pending (deliveries {pend_d}, posts {pend_p})")
    j = env.show(p)
    t.check(j["state"] == "done" and j["deferred"] == 0, "post stays done")


def main():
    t = lctest.Checks()
    procs = lctest.Procs()
    env = None
    t0 = time.monotonic()
    try:
        env = Env(t, procs)
        run(t, env)
        procs.stop(env.up, signal.SIGTERM, 20)
        t.check(env.up.returncode == 0, f"listcast up stops cleanly (rc={env.up.returncode})")
        env.r.close()
        bad = lctest.sanitizer_reports(procs)
        t.check(not bad, f"no sanitizer reports in the logs {bad}")
    except AssertionError as e:
        t.check(False, str(e))
        for name in ("listcast", "fakemx"):
            sys.stdout.write(f"--- {name} log (tail) ---\n{procs.log(name)[-6000:]}\n")
    finally:
        if env:
            env.close()
        procs.close()
    print(f"# {time.monotonic() - t0:.1f}s")
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
