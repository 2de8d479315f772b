#!/usr/bin/env python3
"""expander_test: listcast-expander against a real redis-server and a real DNS server (dnsmasq).

DNS: d00.test..d19.test with MX records pointing to mx0.test..mx4.test (127.0.0.10..14; mx4 also has
127.0.0.24), every fourth domain with a backup MX at preference 20 (written before the primary, so the order
must come from the preferences); null.test publishes a null MX (RFC 7505); nx.test does not exist;
nohost.test's MX host has no address; implicit.test has no MX but an A record (RFC 5321 implicit MX);
fail.test answers SERVFAIL.

Checks: every active, unsuppressed recipient of a routable domain in exactly one batch, batches of at most
sender.batch_size, hosts in preference order with the right addresses, domains with the same MX hosts sharing
batches, batches ordered by MX host; bounces for null MX / NXDOMAIN / no-address domains; recipients of a domain
whose DNS fails temporarily queued in a batch with hosts "" (no route: the sender defers them, so `deferred` is
not counted here); a reroute entry (retried recipients without a route, as the sender's retry poller writes
it) resolved again: batches with `attempts` carried through, hosts "" again for SERVFAIL, bounces and counter
moves for NXDOMAIN; the post hash (recipients, state, bounced) and the acknowledged stream entry; the log
line; a second post answered from the DNS cache; a repeated entry not expanded twice; junk entries
acknowledged; a post to an empty list; own pending entries expanded after a restart; relay mode; exit 0 on
SIGTERM (also while DNS queries are unanswered, leaving the post pending); exit 2 on a bad configuration.
Not covered here (it needs 60 s of idle time): XAUTOCLAIM of another consumer's entry.
Every wait is bounded; everything started is stopped.
"""
import math
import os
import re
import signal
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsmasq  # noqa: E402
import lctest  # noqa: E402
from lctest import redis_cmd, wait_for  # noqa: E402

LIBEXEC = os.environ.get("LC_LIBEXEC_DIR", "/work/main/build-expander/libexec/listcast")
EXPANDER = os.path.join(LIBEXEC, "listcast-expander")
LIST = "announce@lists.example.org"
ACTIVE = "lc:active:" + LIST
BATCH = 50
PER_DOMAIN = 30
RELAY = "127.0.0.1:2526"


def mx_ip(i):
    return f"127.0.0.{10 + i}"


def dns_setup():
    mx = {}
    for i in range(20):
        d = f"d{i:02d}.test"
        mx[d] = [(10, f"mx{i % 5}.test", mx_ip(i % 5))]
        if i % 4 == 0:
            mx[d].insert(0, (20, f"mx{(i + 2) % 5}.test", mx_ip((i + 2) % 5)))
    mx["null.test"] = [(0, ".", None)]
    mx["nohost.test"] = [(10, "ghost.test", None)]
    hosts = {"implicit.test": "127.0.0.15", "mx4.test": ["127.0.0.14", "127.0.0.24"]}
    ips = {f"mx{i}.test": {mx_ip(i)} for i in range(5)}
    ips["mx4.test"].add("127.0.0.24")
    ips["implicit.test"] = {"127.0.0.15"}
    expect = {}  # domain -> [(host, {ips})] in preference order
    for d, recs in mx.items():
        if d.startswith("d"):
            expect[d] = [(name, ips[name]) for _, name, _ in sorted(recs)]
    expect["implicit.test"] = [("implicit.test", ips["implicit.test"])]
    return mx, hosts, expect


def parse_hosts(s):
    out = []
    for tok in s.split():
        name, _, ips = tok.partition("=")
        out.append((name, set(ips.split(","))))
    return out


def entries(url, stream):
    """XRANGE as [(id, {field: value})]."""
    res = []
    for eid, fields in redis_cmd(url, "XRANGE", stream, "-", "+") or []:
        res.append((eid, dict(zip(fields[0::2], fields[1::2]))))
    return res


def pending(url):
    return redis_cmd(url, "XPENDING", "lc:stream:posts", "expander")[0]


def new_post(url, pid):
    redis_cmd(url, "HSET", f"lc:post:{pid}", "id", pid, "list", LIST, "state", "queued", "created", "0")
    return redis_cmd(url, "XADD", "lc:stream:posts", "*", "post", pid)


def expanded(url, pid):
    return redis_cmd(url, "HGET", f"lc:post:{pid}", "state") in ("sending", "done") and pending(url) == 0


def start_expander(procs, name, url, dns_port, *extra):
    argv = [EXPANDER, "--set", f"redis.url={url}", "--set", f"dns.servers=127.0.0.1:{dns_port}",
            "--set", f"sender.batch_size={BATCH}", "--set", f"state.dir={procs.tmp}", *extra, "-v"]
    return procs.start(name, argv)


def stop_ok(t, procs, p, what):
    rc = procs.stop(p, signal.SIGTERM, timeout=5)
    t.check(rc == 0, f"{what}: exits 0 on SIGTERM (rc={rc})")


def main():
    t = lctest.Checks()
    procs = lctest.Procs()
    dns_proc = None
    try:
        if not os.access(EXPANDER, os.X_OK):
            t.check(False, f"{EXPANDER} is built")
            return t.done()
        mx, hosts, expect = dns_setup()
        dns_proc, dns_port = dnsmasq.start(procs.tmp, mx, hosts=hosts, servfail=["fail.test"], log_queries=True)
        run(t, procs, dns_port, expect)
    except AssertionError as e:
        t.check(False, str(e))
        for name in ("expander1", "expander2", "expander3", "expander4"):
            sys.stdout.write(f"--- {name} log (tail) ---\n{procs.log(name)[-4000:]}\n")
    finally:
        dnsmasq.stop(dns_proc)
        procs.close()
    return t.done()


def run(t, procs, dns_port, expect):
    _, url = lctest.start_redis(procs, durable=False)

    # Subscribers: PER_DOMAIN in each dNN.test, a few in each special domain, two junk entries.
    subs = {}
    sid = 1000
    for i in range(20):
        for u in range(PER_DOMAIN):
            subs[f"u{u}@d{i:02d}.test"] = sid
            sid += 1
    special = {"null.test": 3, "nx.test": 2, "nohost.test": 1, "fail.test": 2, "implicit.test": 2}
    for d, n in special.items():
        for u in range(n):
            subs[f"s{u}@{d}"] = sid
            sid += 1
    args = []
    for a, s in subs.items():
        args += [a, s]
    redis_cmd(url, "HSET", ACTIVE, *args, "not-an-address", "5", "x@d01.test", "abc")
    suppressed = {"u3@d05.test", "u4@d07.test"}
    redis_cmd(url, "SADD", "lc:suppress", *suppressed, "someone@else.test")

    routable = {a: s for a, s in subs.items() if a not in suppressed and a.split("@")[1] in expect}
    bounced = {a: s for a, s in subs.items() if a.split("@")[1] in ("null.test", "nx.test", "nohost.test")}
    deferred = {a: s for a, s in subs.items() if a.split("@")[1] == "fail.test"}
    total = len(routable) + len(bounced) + len(deferred)

    # ---- post 1 ----
    new_post(url, 1)
    exp1 = start_expander(procs, "expander1", url, dns_port, "--set", "node.name=t1")
    wait_for("post 1 expanded", lambda: expanded(url, 1), 30)
    batches = [(eid, f) for eid, f in entries(url, "lc:stream:deliveries") if f.get("post") == "1"]
    noroute = [f for _, f in batches if f["hosts"] == ""]
    nr_rcpts = [ln.split(" ", 1)[1] for f in noroute for ln in f["rcpts"].split("\n") if ln]
    t.check(sorted(nr_rcpts) == sorted(deferred) and len(noroute) == math.ceil(len(deferred) / BATCH),
            f"temporary DNS failure: recipients queued in a batch with hosts \"\" ({nr_rcpts})")
    seen = {}
    dup = bad_line = 0
    for _, f in batches:
        if f["hosts"] == "":
            continue
        for line in f["rcpts"].split("\n"):
            if not line:
                continue
            m = re.fullmatch(r"(\d+) (\S+@\S+)", line)
            if not m:
                bad_line += 1
                continue
            s, a = int(m.group(1)), m.group(2)
            dup += a in seen
            seen[a] = (s, parse_hosts(f["hosts"]))
    t.check(bad_line == 0, "every rcpts line is 'SUBID ADDR'")
    t.check(dup == 0, "no recipient in two batches")
    t.check(set(seen) == set(routable), f"batches hold exactly the routable recipients ({len(seen)} of "
            f"{len(routable)})")
    t.check(all(seen[a][0] == s for a, s in routable.items() if a in seen), "subscriber ids match")
    t.check(not (suppressed & set(seen)), "suppressed addresses are not queued")
    t.check("x@d01.test" not in seen, "entry with a bad subscriber id is skipped")
    t.check(all(len([x for x in f["rcpts"].split("\n") if x]) <= BATCH for _, f in batches),
            f"batches hold at most {BATCH} recipients")
    wrong = [a for a, (_, h) in seen.items() if h != expect[a.split("@")[1]]]
    t.check(not wrong, f"hosts in preference order with the right addresses (wrong: {wrong[:3]})")
    groups = {}
    for a in routable:
        key = repr(expect[a.split("@")[1]])
        groups[key] = groups.get(key, 0) + 1
    want_batches = sum(math.ceil(n / BATCH) for n in groups.values()) + math.ceil(len(deferred) / BATCH)
    t.check(len(batches) == want_batches, f"domains with the same MX hosts share batches ({len(batches)} "
            f"batches, minimum {want_batches})")
    hosts_order = [f["hosts"] for _, f in batches]
    t.check(hosts_order == sorted(hosts_order), "batches ordered by MX host")
    imp = [h for a, (_, h) in seen.items() if a.endswith("@implicit.test")]
    t.check(imp and all(h == [("implicit.test", {"127.0.0.15"})] for h in imp),
            "domain without MX uses its own A record (implicit MX)")

    bnc = [f for _, f in entries(url, "lc:stream:bounces") if f.get("post") == "1"]
    got = {f["rcpt"]: f for f in bnc}
    t.check(set(got) == set(bounced) and len(bnc) == len(bounced),
            f"null MX / NXDOMAIN / no-address recipients bounced ({len(bnc)} of {len(bounced)})")
    t.check(all(got[a]["sub"] == str(s) and got[a]["from"] == "" for a, s in bounced.items() if a in got),
            "bounce entries carry sub id and empty from")
    replies = {a.split("@")[1]: f["reply"] for a, f in got.items()}
    t.check(replies.get("null.test", "").startswith("550 5.1.10") and "7505" in replies.get("null.test", ""),
            f"null MX reply: {replies.get('null.test')!r}")
    t.check(replies.get("nx.test", "") == "550 5.1.2 domain does not exist",
            f"NXDOMAIN reply: {replies.get('nx.test')!r}")
    t.check(replies.get("nohost.test", "").startswith("550 5.4.4"),
            f"no-address reply: {replies.get('nohost.test')!r}")

    post = dict(zip(*[iter(redis_cmd(url, "HGETALL", "lc:post:1"))] * 2))
    t.check(post.get("recipients") == str(total), f"recipients={post.get('recipients')} (want {total})")
    t.check(post.get("state") == "sending", f"state={post.get('state')}")
    t.check(post.get("bounced") == str(len(bounced)), f"bounced={post.get('bounced')} (want {len(bounced)})")
    t.check(post.get("deferred", "0") == "0", f"deferred={post.get('deferred')} (counted by the sender, which "
            "defers the no-route batch)")
    pdom = dict(zip(*[iter(redis_cmd(url, "HGETALL", "lc:postdom:1"))] * 2))
    t.check(pdom.get("null.test:bounced") == "3" and "fail.test:deferred" not in pdom,
            f"per-domain counters {pdom}")
    t.check(pending(url) == 0, "posts entry acknowledged")
    log = procs.log("expander1")
    m = re.search(r"post=1 expanded recipients=(\d+) domains=(\d+) batches=(\d+) mx_hosts=(\d+) dns_ms=(\d+)", log)
    t.check(m and m.groups()[:4] == (str(total), "25", str(len(batches)), "6"),
            f"log line {m.group(0) if m else None!r}")

    # ---- post 2: same domains, answered from the cache ----
    def queries():
        with open(os.path.join(procs.tmp, "dnsmasq.log"), errors="replace") as f:
            return [ln for ln in f if ": query[" in ln and "fail.test" not in ln]
    q0 = len(queries())
    new_post(url, 2)
    wait_for("post 2 expanded", lambda: expanded(url, 2), 30)
    q1 = len(queries())
    t.check(q1 == q0, f"second post needs no DNS (queries {q0} -> {q1})")
    b2 = [f for _, f in entries(url, "lc:stream:deliveries") if f.get("post") == "2"]
    t.check([(f["hosts"], f["rcpts"]) for f in b2] == [(f["hosts"], f["rcpts"]) for _, f in batches],
            "second post gives the same batches")

    # ---- an entry for an expanded post, and junk entries ----
    n_before = redis_cmd(url, "XLEN", "lc:stream:deliveries")
    redis_cmd(url, "XADD", "lc:stream:posts", "*", "post", "1")
    redis_cmd(url, "XADD", "lc:stream:posts", "*", "post", "abc")
    redis_cmd(url, "XADD", "lc:stream:posts", "*", "other", "field")
    redis_cmd(url, "XADD", "lc:stream:posts", "*", "post", "999")
    wait_for("all acknowledged", lambda: pending(url) == 0 and _lag_done(url), 15)
    t.check(redis_cmd(url, "XLEN", "lc:stream:deliveries") == n_before, "expanded post is not expanded again")
    t.check("post=1 already expanded" in procs.log("expander1"), "re-expansion logged as already expanded")
    t.check(exp1.poll() is None, "junk entries do not stop the expander")

    # ---- a reroute entry: retried recipients without a route (from the sender's retry poller) ----
    reroute(t, url, subs)

    # ---- a list without subscribers ----
    redis_cmd(url, "HSET", "lc:post:5", "id", 5, "list", "empty@lists.example.org", "state", "queued")
    redis_cmd(url, "XADD", "lc:stream:posts", "*", "post", 5)
    wait_for("post 5 expanded", lambda: expanded(url, 5), 15)
    p5 = redis_cmd(url, "HMGET", "lc:post:5", "state", "recipients")
    t.check(p5 == ["done", "0"], f"post to an empty list: state done, 0 recipients ({p5})")
    stop_ok(t, procs, exp1, "expander")

    # ---- own pending entries are expanded after a restart ----
    new_post(url, 3)
    redis_cmd(url, "XREADGROUP", "GROUP", "expander", "t1", "COUNT", "1", "STREAMS", "lc:stream:posts", ">")
    t.check(pending(url) == 1, "post 3 pending for consumer t1 (as after a crash)")
    exp2 = start_expander(procs, "expander2", url, dns_port, "--set", "node.name=t1")
    wait_for("post 3 expanded", lambda: expanded(url, 3), 30)
    b3 = [f for _, f in entries(url, "lc:stream:deliveries") if f.get("post") == "3"]
    t.check(len(b3) == len(batches), f"own pending post expanded after restart ({len(b3)} batches)")
    stop_ok(t, procs, exp2, "restarted expander")

    # ---- relay mode ----
    new_post(url, 4)
    q0 = len(queries())
    exp3 = start_expander(procs, "expander3", url, dns_port, "--set", "node.name=t2",
                          "--set", f"sender.relay={RELAY}")
    wait_for("post 4 expanded", lambda: expanded(url, 4), 30)
    b4 = [f for _, f in entries(url, "lc:stream:deliveries") if f.get("post") == "4"]
    r4 = [ln.split(" ", 1)[1] for f in b4 for ln in f["rcpts"].split("\n") if ln]
    t.check(all(f["hosts"] == f"relay={RELAY}" for f in b4), "relay mode: every batch goes to the relay")
    t.check(sorted(r4) == sorted(set(subs) - suppressed) and len(b4) == math.ceil(len(r4) / BATCH),
            f"relay mode: every unsuppressed recipient, {len(b4)} full batches")
    t.check(len(queries()) == q0, "relay mode: no DNS")
    t.check(not [f for _, f in entries(url, "lc:stream:bounces") if f.get("post") == "4"], "relay mode: no bounces")
    stop_ok(t, procs, exp3, "relay expander")

    # ---- SIGTERM while DNS queries are unanswered: exit 0, post left pending ----
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a DNS server that never answers
    hole.bind(("127.0.0.1", 0))
    try:
        redis_cmd(url, "HSET", ACTIVE, "z@slow.test", 99999)
        new_post(url, 6)
        exp4 = procs.start("expander4", [EXPANDER, "--set", f"redis.url={url}", "--set", "node.name=t4",
                                         "--set", f"dns.servers=127.0.0.1:{hole.getsockname()[1]}",
                                         "--set", f"state.dir={procs.tmp}", "-v"])
        wait_for("DNS queries sent", lambda: "dns query MX slow.test" in procs.log("expander4"), 15)
        stop_ok(t, procs, exp4, "expander waiting for DNS")
        t.check(redis_cmd(url, "HGET", "lc:post:6", "state") == "queued" and pending(url) == 1,
                "interrupted post stays queued and pending")
    finally:
        hole.close()

    # ---- bad configuration ----
    r = subprocess.run([EXPANDER, "--set", "sender.batch_size=0"], capture_output=True, timeout=10)
    t.check(r.returncode == 2 and r.stderr.startswith(b"listcast-expander: "),
            f"bad configuration exits 2 ({r.returncode}, {r.stderr[:80]!r})")

    resume(t, procs, url, dns_port, routable, bounced, deferred)

    reports = lctest.sanitizer_reports(procs)
    t.check(not reports, f"no sanitizer reports ({reports})")


def resume(t, procs, url, dns_port, routable, bounced, deferred):
    """Post 7, written in transactions of at most 10 commands (LC_EXP_CHUNK_CMDS) with batches of 7: the
    expander exits after every transaction that is not the last (LC_EXP_CRASH_FILE, made again before each
    start), and each new one resumes from lc:postprog:7, through the batches and the bounces. Every recipient
    is queued exactly once, every bounce written once, the counters are those of one expansion."""
    crash = os.path.join(procs.tmp, "expander-crash")
    env = dict(os.environ, LC_EXP_CHUNK_CMDS="10", LC_EXP_CRASH_FILE=crash)
    bounced = dict(bounced, **{"z@slow.test": 99999})  # added by the SIGTERM case above (NXDOMAIN)

    def post7_done():  # (post 6 stays pending at the stopped t4: expanded() would wait for it)
        return redis_cmd(url, "HGET", "lc:post:7", "state") in ("sending", "done")
    new_post(url, 7)
    crashes, last = 0, None
    try:
        for i in range(200):  # bounded: about 100 transactions
            with open(crash, "w"):
                pass
            argv = [EXPANDER, "--set", f"redis.url={url}", "--set", f"dns.servers=127.0.0.1:{dns_port}",
                    "--set", "sender.batch_size=7", "--set", f"state.dir={procs.tmp}", "--set", "node.name=t7",
                    "-v"]
            last = procs.start(f"expander7-{i}", argv, env=env)
            wait_for("the expander exits or expands post 7",
                     lambda: last.poll() is not None or post7_done(), 30, step=0.02)
            if last.poll() is None:
                break
            if last.returncode != 70:
                t.check(False, f"resume run {i}: exits 70 by fault injection ({last.returncode})")
            crashes += 1
    finally:
        if os.path.exists(crash):
            os.unlink(crash)
    t.check(crashes >= 5 and post7_done(),
            f"post 7: expanded after {crashes} exits between transactions, each run resuming the last")
    resumed = sum(1 for i in range(crashes + 1) if re.search(r"post=7 resumed: ", procs.log(f"expander7-{i}")))
    t.check(resumed == crashes, f"post 7: every restarted expander resumed from the progress hash ({resumed})")
    queued = {}
    for _, f in entries(url, "lc:stream:deliveries"):
        if f.get("post") != "7":
            continue
        for ln in f["rcpts"].split("\n"):
            if ln:
                a = ln.split(" ", 1)[1]
                queued[a] = queued.get(a, 0) + 1
    want = set(routable) | set(deferred)
    t.check(set(queued) == want and all(n == 1 for n in queued.values()),
            f"post 7: every recipient queued exactly once ({sum(queued.values())} queued, {len(queued)} distinct, "
            f"{len(want)} wanted)")
    bnc = [f["rcpt"] for _, f in entries(url, "lc:stream:bounces") if f.get("post") == "7"]
    t.check(sorted(bnc) == sorted(bounced), f"post 7: every bounce written once ({len(bnc)} of {len(bounced)})")
    post = dict(zip(*[iter(redis_cmd(url, "HGETALL", "lc:post:7"))] * 2))
    total = len(routable) + len(bounced) + len(deferred)
    t.check(post.get("recipients") == str(total) and post.get("bounced") == str(len(bounced)) and
            post.get("state") == "sending", f"post 7: the post's counters ({post})")
    pdom = dict(zip(*[iter(redis_cmd(url, "HGETALL", "lc:postdom:7"))] * 2))
    t.check(pdom.get("null.test:bounced") == "3" and pdom.get("nx.test:bounced") == "2" and
            pdom.get("nohost.test:bounced") == "1" and pdom.get("slow.test:bounced") == "1", f"post 7: per-domain bounce counters counted once ({pdom})")
    t.check(redis_cmd(url, "EXISTS", "lc:postprog:7") == 0, "post 7: the progress hash is deleted at the end")
    stop_ok(t, procs, last, "resuming expander")


def reroute(t, url, subs):
    """A reroute entry of post 1: fail.test (SERVFAIL again), d03.test (resolvable), nx.test (NXDOMAIN)."""
    rc = ["s0@fail.test", "u0@d03.test", "s1@fail.test", "s0@nx.test"]
    att = {"s0@fail.test": "2 1700000001", "u0@d03.test": "3 1700000002", "s1@fail.test": "1 1700000003",
           "s0@nx.test": "4 1700000004"}
    redis_cmd(url, "HSET", "lc:post:1", "deferred", "4")  # as if the sender had deferred these four
    redis_cmd(url, "HSET", "lc:postdom:1", "nx.test:deferred", "1")
    redis_cmd(url, "HSET", "lc:postdefer:1", "s0@nx.test", "1700000004 attempt 4: 451 4.4.3 temporary DNS failure",
              "s0@fail.test", "1700000001 attempt 2: 451 4.4.3 temporary DNS failure")  # the sender's last replies
    before = {eid for eid, _ in entries(url, "lc:stream:deliveries")}
    bnc_before = {eid for eid, _ in entries(url, "lc:stream:bounces")}
    redis_cmd(url, "XADD", "lc:stream:posts", "*", "post", "1", "rcpts",
              "\n".join(f"{subs[a]} {a}" for a in rc), "attempts", "\n".join(att[a] for a in rc))
    wait_for("reroute entry acknowledged", lambda: pending(url) == 0 and _lag_done(url), 15)
    new = [f for eid, f in entries(url, "lc:stream:deliveries") if eid not in before]
    got = {}
    for f in new:
        for ln, al in zip(f["rcpts"].split("\n"), f.get("attempts", "").split("\n")):
            got[ln.split(" ", 1)[1]] = (f["hosts"], al, ln.split(" ", 1)[0])
    t.check(set(got) == {"s0@fail.test", "s1@fail.test", "u0@d03.test"} and len(new) == 2,
            f"reroute: two batches, routable and no-route ({[(f['hosts'], f['rcpts']) for f in new]})")
    t.check(all(got[a][1] == att[a] and got[a][2] == str(subs[a]) for a in got),
            f"reroute: attempts and subscriber ids carried through ({got})")
    t.check(got.get("u0@d03.test", ("",))[0].startswith("mx3.test=127.0.0.13"),
            f"reroute: the resolvable domain gets its MX hosts ({got.get('u0@d03.test')})")
    t.check(got.get("s0@fail.test", ("x",))[0] == "" and got.get("s1@fail.test", ("x",))[0] == "",
            "reroute: SERVFAIL again: hosts \"\" again")
    t.check(all("post" in f and f["post"] == "1" for f in new), "reroute: batches of post 1")
    bnc = [f for eid, f in entries(url, "lc:stream:bounces") if eid not in bnc_before]
    t.check(len(bnc) == 1 and bnc[0].get("rcpt") == "s0@nx.test" and bnc[0].get("sub") == str(subs["s0@nx.test"])
            and bnc[0].get("reply") == "550 5.1.2 domain does not exist",
            f"reroute: NXDOMAIN bounces ({bnc})")
    post = dict(zip(*[iter(redis_cmd(url, "HGETALL", "lc:post:1"))] * 2))
    pdom = dict(zip(*[iter(redis_cmd(url, "HGETALL", "lc:postdom:1"))] * 2))
    t.check(post.get("deferred") == "3" and post.get("bounced") == str(3 + 2 + 1 + 1),
            f"reroute: the bounce moves one recipient from deferred to bounced ({post})")
    t.check(pdom.get("nx.test:deferred") == "0" and pdom.get("nx.test:bounced") == "3",
            f"reroute: per-domain counters ({pdom})")
    waiting = redis_cmd(url, "HKEYS", "lc:postdefer:1")
    t.check(waiting == ["s0@fail.test"], f"reroute: the bounced recipient leaves the deferral list ({waiting})")
    t.check(post.get("state") == "sending" and post.get("recipients"), "reroute: recipients and state untouched")


def _id_tuple(eid):
    a, _, b = eid.partition("-")
    return (int(a), int(b or 0))


def _last_delivered(url):
    for g in redis_cmd(url, "XINFO", "GROUPS", "lc:stream:posts"):
        d = dict(zip(g[0::2], g[1::2]))
        if d.get("name") == "expander":
            return _id_tuple(d["last-delivered-id"])
    return (0, 0)


def _lag_done(url):
    last = redis_cmd(url, "XREVRANGE", "lc:stream:posts", "+", "-", "COUNT", "1")
    return _last_delivered(url) >= _id_tuple(last[0][0])


if __name__ == "__main__":
    sys.exit(main())
