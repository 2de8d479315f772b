#!/usr/bin/env python3
"""crash_test: kill -9 of the sender and of the expander mid-post loses no subscriber (issue 4, crash safety).

Starts redis-server (AOF, appendfsync always), dnsmasq serving MX records for 30 test domains, fakemx.py on
127.0.0.10-14 (one JSON line per delivered message) and `listcast up` (which restarts a daemon that dies), on
loopback, free ports, one temporary dir. A list of 3,000 subscribers, sender.batch_size 25, sender.concurrency
10 (so the sender holds at most 20 batches: a meaningful in-flight bound). Then:
  1. sender: post; once some copies arrived (and well before the last), XPENDING of the sender group, kill -9
     the sender, XPENDING again (the dead consumer's pending list is frozen until its restart: exactly the
     batches it had claimed). The supervisor restarts it (same node.name: it re-reads its own pending entries).
     Checks: every subscriber got at least one copy; every duplicate belongs to a batch that was pending at the
     kill; duplicates <= sender.batch_size * pending batches; the post ends done with delivered = recipients
     and pending 0.
  2. expander, deterministic: SIGSTOP the expander (blocked in XREADGROUP), post: Redis hands the post entry
     to the stopped expander (it is in its pending list), kill -9 it. The restarted expander re-reads its own
     pending entry and expands it; every subscriber gets exactly one copy (nothing had been written).
  3. expander, racing: kill -9 the expander right after the post's 250 (whatever it had done by then). Every
     subscriber gets at least one copy, duplicates only for subscribers queued twice in the delivery stream,
     and the post ends done.
  4. expander, between two transactions: the expander writes a post's batches in transactions of at most
     LC_EXP_CHUNK_CMDS commands (40 here: 120 batches take 4) and exits when LC_EXP_CRASH_FILE exists right
     after a transaction that is not the last (fault injection: kill -9 cannot hit that point on purpose). The
     restarted expander resumes from lc:postprog:ID: every subscriber is in exactly one delivery batch and gets
     exactly one copy, and the progress hash is gone.
Bounded: every wait has a deadline; the test takes about 20-40 s in the sanitizer build.
Env: LC_BIN_DIR, LC_LIBEXEC_DIR (set by CTest), LC_KEEP_TMP=1 keeps the temp dir.
"""
import json
import os
import re
import signal
import smtplib
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsmasq  # noqa: E402
import lctest  # noqa: E402
from lctest import LISTCAST, wait_for  # noqa: E402

LIST = "crash@lists.test"
NDOM, NSUBS, BATCH = 30, 3000, 25
CHUNK = 40  # commands per expander transaction (LC_EXP_CHUNK_CMDS): a post takes several
DELIVERIES, GROUP = "lc:stream:deliveries", "sender"


def kill9(pid):
    os.kill(pid, signal.SIGKILL)


class Env:
    """The appliance under test and its observers."""

    def __init__(self, t, procs, settings=()):
        """settings: extra key=value pairs for every daemon (after, so overriding, the defaults below)."""
        self.t, self.procs = t, procs
        tmp = procs.tmp
        _, self.redis_url = lctest.start_redis(procs)
        self.r = lctest.Redis(self.redis_url)
        domains = [f"c{i:02d}.test" for i in range(NDOM)]
        mx = {d: [(10, f"mx{i % 5}.test", f"127.0.0.{10 + i % 5}")] for i, d in enumerate(domains)}
        dns_proc, dns_port = dnsmasq.start(tmp, mx)
        procs.procs.append(dns_proc)
        mx_port = lctest.free_port("127.0.0.10", also=[f"127.0.0.{11 + i}" for i in range(4)])
        self.mxlog = os.path.join(tmp, "mx.jsonl")
        argv = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakemx.py"),
                "--log", self.mxlog]
        for i in range(5):
            argv += ["--listen", f"127.0.0.{10 + i}:{mx_port}"]
        fake = procs.start("fakemx", argv, stdout=subprocess.PIPE)
        wait_for("fakemx ready", lambda: fake.stdout.readline().strip() == b"ready", 15)
        self.smtp_port = lctest.free_port()
        self.state = os.path.join(tmp, "state")
        self.cfg = ["--set", f"redis.url={self.redis_url}", "--set", f"state.dir={self.state}",
                    "--set", f"dns.servers=127.0.0.1:{dns_port}", "--set", f"sender.mx_port={mx_port}",
                    "--set", f"smtp.listen=127.0.0.1:{self.smtp_port}",
                    "--set", f"http.listen=127.0.0.1:{lctest.free_port()}", "--set", "smtp.hostname=listcast.test",
                    "--set", f"sender.batch_size={BATCH}", "--set", "sender.concurrency=10",
                    "--set", "sender.per_mx=5", "--set", "sender.tls=none"]
        for kv in settings:
            self.cfg += ["--set", kv]
        self.crash_file = os.path.join(tmp, "expander-crash")
        env = dict(os.environ, LC_EXP_CHUNK_CMDS=str(CHUNK), LC_EXP_CRASH_FILE=self.crash_file)
        self.up = procs.start("listcast", [LISTCAST, "up", *self.cfg], env=env)

        def banner():
            with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=5) as s:
                return s.noop()[0] == 250
        wait_for("listd banner", banner, 30)
        self.cli("list", "create", LIST, "--policy", "open", "--owner", "owner@example.test")
        self.subs = [f"user{j:03d}@{domains[j % NDOM]}" for j in range(NSUBS)]
        self.cli("sub", "add", LIST, "-", stdin="\n".join(self.subs) + "\n")
        self.key = lctest.read_secret(os.path.join(self.state, "secret"))
        self.mxoff = 0

    def cli(self, *args, stdin=None):
        r = subprocess.run([LISTCAST, *args, *self.cfg], input=stdin, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError(f"listcast {' '.join(args)}: rc={r.returncode} {r.stderr.strip()}")
        return r.stdout

    def pid(self, name, old=None, timeout=15):
        """pid of a daemon (a new one when old is given: waits for the supervisor's restart)."""
        return wait_for(f"{name} running", lambda: (lambda p: p if p and p != old else None)(
            lctest.children(self.up.pid).get(name)), timeout)

    def post(self, subject):
        msg = (f"From: Poster <poster@example.test>\r\nTo: {LIST}\r\nSubject: {subject}\r\n"
               f"Message-ID: <{subject.replace(' ', '-')}@example.test>\r\n\r\n" + "Body line.\r\n" * 40)
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as s:
            s.ehlo("poster.test")
            s.mail("poster@example.test")
            s.rcpt(LIST)
            code, resp = s.data(msg.encode())
        if code != 250:
            raise AssertionError(f"post refused: {code} {resp!r}")
        return int(resp.decode().split()[-1])

    def copies(self, post_id):
        """{subscriber address: copies received} for one post, from the fake MX log."""
        got = {}
        if not os.path.exists(self.mxlog):
            return got
        with open(self.mxlog) as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # a line being written
                row = json.loads(line)
                dec = lctest.verp_decode(self.key, row["mail_from"])
                if dec and dec[0] == post_id:
                    for rc in row["rcpts"]:
                        got[rc.lower()] = got.get(rc.lower(), 0) + 1
        return got

    def pending(self):
        """{entry id: consumer} of the sender group's pending list."""
        rows = self.r("XPENDING", DELIVERIES, GROUP, "-", "+", "10000") or []
        return {row[0]: row[1] for row in rows}

    def entry_rcpts(self, entry_id):
        rows = self.r("XRANGE", DELIVERIES, entry_id, entry_id) or []
        if not rows:
            return []
        f = rows[0][1]
        fields = dict(zip(f[0::2], f[1::2]))
        return [line.split(" ", 1)[1].lower() for line in fields.get("rcpts", "").split("\n") if " " in line]

    def stream_rcpts(self, post_id):
        """{address: number of delivery-stream entries of the post that hold it}."""
        n = {}
        for _, f in self.r("XRANGE", DELIVERIES, "-", "+") or []:
            fields = dict(zip(f[0::2], f[1::2]))
            if fields.get("post") != str(post_id):
                continue
            for line in fields.get("rcpts", "").split("\n"):
                if " " in line:
                    a = line.split(" ", 1)[1].lower()
                    n[a] = n.get(a, 0) + 1
        return n

    def done(self, post_id, timeout=60):
        def f():
            j = json.loads(self.cli("post", "show", str(post_id), "--json"))
            return j if j.get("state") == "done" and j.get("pending") == 0 else None
        return wait_for(f"post {post_id} done", f, timeout, step=0.2)

    def all_copies(self, post_id, timeout=60):
        return wait_for(f"every subscriber of post {post_id} served",
                        lambda: (lambda g: g if len(g) >= NSUBS else None)(self.copies(post_id)), timeout, step=0.1)


def check_counters(t, j, what):
    t.check(j["recipients"] == NSUBS and j["delivered"] == NSUBS and j["bounced"] == 0 and j["pending"] == 0,
            f"{what}: counters consistent: recipients={j['recipients']} delivered={j['delivered']} "
            f"deferred={j['deferred']} bounced={j['bounced']} pending={j['pending']} state={j['state']}")


def sender_crash(t, env):
    spid = env.pid("listcast-sender")
    p1 = env.post("sender crash")
    got = wait_for("some copies of post 1", lambda: (lambda g: g if len(g) >= NSUBS // 5 else None)(
        env.copies(p1)), 60, step=0.01)
    before = env.pending()
    kill9(spid)
    after = env.pending()
    delivered_at_kill = len(env.copies(p1))
    t.check(len(got) < NSUBS and delivered_at_kill < NSUBS,
            f"sender killed mid-post ({delivered_at_kill} of {NSUBS} subscribers served at the kill)")
    mine = set(before) | set(after)  # one consumer in the group: all of it was the killed sender's
    t.check(len(after) > 0, f"the killed sender had claimed batches: XPENDING {len(before)} before the kill, "
                            f"{len(after)} after")
    inflight_rcpts = set()
    for e in mine:
        inflight_rcpts.update(env.entry_rcpts(e))
    env.pid("listcast-sender", old=spid)
    got = env.all_copies(p1)
    m = re.search(r"re-read (\d+) pending entries of consumer", env.procs.log("listcast"))
    t.check(m is not None, f"post 1: the restarted sender re-read its own pending batches ({m and m.group(0)})")
    j = env.done(p1)
    time.sleep(0.5)  # a late duplicate would arrive now
    got = env.copies(p1)
    t.check(sorted(got) == sorted(env.subs), "post 1: every subscriber got at least one copy after the sender "
                                             "was killed and restarted")
    dups = {a: n - 1 for a, n in got.items() if n > 1}
    ndup = sum(dups.values())
    bound = BATCH * len(mine)
    t.check(all(a in inflight_rcpts for a in dups) and all(n <= 1 for n in dups.values()),
            f"post 1: duplicates only for recipients of batches pending at the kill ({ndup} duplicates)")
    t.check(ndup <= bound, f"post 1: duplicates {ndup} <= batch_size {BATCH} x {len(mine)} pending batches "
                           f"= {bound}")
    check_counters(t, j, "post 1")
    t.check(not env.pending(), "post 1: nothing left pending in the sender group")


def expander_stopped(t, env):
    epid = env.pid("listcast-expander")
    os.kill(epid, signal.SIGSTOP)
    try:
        p2 = env.post("expander crash stopped")

        def entry_pending():
            rows = env.r("XPENDING", "lc:stream:posts", "expander", "-", "+", "100") or []
            return rows if rows else None
        rows = wait_for("post entry pending at the stopped expander", entry_pending, 10)
        t.check(len(rows) == 1, f"post 2: the stopped expander holds the post entry ({len(rows)} pending)")
        t.check(env.r("HGET", f"lc:post:{p2}", "state") == "queued", "post 2: not expanded before the kill")
    finally:
        kill9(epid)
    env.pid("listcast-expander", old=epid)
    env.all_copies(p2)
    j = env.done(p2)
    time.sleep(0.5)
    got = env.copies(p2)
    t.check(sorted(got) == sorted(env.subs) and all(n == 1 for n in got.values()),
            "post 2: after the expander was killed holding the post, every subscriber got exactly one copy")
    check_counters(t, j, "post 2")


def expander_race(t, env):
    epid = env.pid("listcast-expander")
    p3 = env.post("expander crash racing")
    kill9(epid)
    state = env.r("HGET", f"lc:post:{p3}", "state")
    held = len(env.r("XPENDING", "lc:stream:posts", "expander", "-", "+", "100") or [])
    print(f"# post 3: expander killed right after the 250; post state then: {state}; "
          f"{'it had read the post entry (killed mid-expansion)' if held else 'it had not read the post entry'}")
    env.pid("listcast-expander", old=epid)
    env.all_copies(p3)
    j = env.done(p3)
    time.sleep(0.5)
    got = env.copies(p3)
    queued = env.stream_rcpts(p3)
    t.check(sorted(got) == sorted(env.subs), "post 3: every subscriber got at least one copy after the expander "
                                             "was killed right after the 250")
    t.check(all(n <= queued.get(a, 0) for a, n in got.items()),
            "post 3: no subscriber got more copies than delivery batches that hold it "
            f"({sum(n - 1 for n in got.values())} duplicates, {sum(n - 1 for n in queued.values())} queued twice)")
    check_counters(t, j, "post 3")


def expander_between_chunks(t, env):
    epid = env.pid("listcast-expander")
    with open(env.crash_file, "w"):
        pass
    p4 = env.post("expander crash between transactions")
    env.pid("listcast-expander", old=epid, timeout=30)
    t.check(not os.path.exists(env.crash_file), "post 4: the expander exited after a transaction (fault injected)")
    m = wait_for("the restarted expander resumes post 4", lambda: re.search(
        rf"post={p4} resumed: (\d+) recipients over (\d+) domains", env.procs.log("listcast")), 30, step=0.05)
    t.check(m is not None and 0 < int(m.group(1)) < NSUBS,
            f"post 4: the restarted expander resumed the post, skipping what was queued ({m and m.group(0)})")
    env.all_copies(p4)
    j = env.done(p4)
    time.sleep(0.5)
    got = env.copies(p4)
    queued = env.stream_rcpts(p4)
    t.check(sorted(queued) == sorted(env.subs) and all(n == 1 for n in queued.values()),
            f"post 4: every subscriber is in exactly one delivery batch ({sum(queued.values())} queued for "
            f"{len(queued)} subscribers)")
    t.check(sorted(got) == sorted(env.subs) and all(n == 1 for n in got.values()),
            "post 4: every subscriber got exactly one copy after the crash between two transactions")
    t.check(env.r("EXISTS", f"lc:postprog:{p4}") == 0 and env.r("EXISTS", f"lc:postexp:{p4}") == 0,
            "post 4: the progress hash and the fencing token are deleted by the last transaction")
    check_counters(t, j, "post 4")


def main():
    t = lctest.Checks()
    procs = lctest.Procs()
    t0 = time.monotonic()
    try:
        env = Env(t, procs)
        sender_crash(t, env)
        expander_stopped(t, env)
        expander_race(t, env)
        expander_between_chunks(t, env)
        restarts = procs.log("listcast").count("exited (")
        t.check(restarts == 4, f"the supervisor saw 4 daemon exits ({restarts})")
        procs.stop(env.up, signal.SIGTERM, 20)
        t.check(env.up.returncode == 0, f"listcast up stops cleanly (rc={env.up.returncode})")
        env.r.close()
        bad = lctest.sanitizer_reports(procs)
        t.check(not bad, f"no sanitizer reports in the logs {bad}")
    except AssertionError as e:
        t.check(False, str(e))
        for name in ("listcast", "fakemx"):
            sys.stdout.write(f"--- {name} log (tail) ---\n{procs.log(name)[-5000:]}\n")
    finally:
        procs.close()
    print(f"# {time.monotonic() - t0:.1f}s")
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
