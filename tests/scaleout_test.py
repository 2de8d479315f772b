#!/usr/bin/env python3
"""scaleout_test: two senders on one Redis share a post; kill -9 one, the other claims its batches (issue 4).

Starts the appliance as crash_test.py does (redis-server, dnsmasq, fakemx.py on 127.0.0.10-14, `listcast up`
whose sender is node.name=node-a) plus a second listcast-sender started directly with node.name=node-b on the
same Redis, secret and settings. sender.concurrency 4 (each sender holds at most 8 batches of 25), 3,000
subscribers. Then:
  - post; both senders deliver a share of the post's batches through the consumer group (their own log lines);
  - kill -9 node-b mid-post (it is not restarted); its pending batches (XPENDING, consumer node-b) stay in the
    stream until node-a claims them: XAUTOCLAIM of entries idle over sender.claim_idle (6 s here; 60 s by
    default), run every claim_idle/2, while live senders touch their own batches at that period;
  - node-a logs the claim and finishes: every subscriber got at least one copy, duplicates only for recipients
    of batches node-b held at the kill, the post ends done with delivered = recipients and pending 0, and
    nothing is left pending in the group.
Bounded: every wait has a deadline (the claim wait 60 s). Env: LC_BIN_DIR, LC_LIBEXEC_DIR (set by CTest),
LC_KEEP_TMP=1 keeps the temp dir.
"""
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crash_test  # noqa: E402  (its Env: the appliance on real parts, and the observers)
import lctest  # noqa: E402
from lctest import wait_for  # noqa: E402

NSUBS, BATCH = crash_test.NSUBS, crash_test.BATCH
DELIVERIES, GROUP = crash_test.DELIVERIES, crash_test.GROUP
CLAIM_IDLE = 6  # s: sender.claim_idle for both senders
CLAIM_WAIT = 60  # s: 6 s idle + a 3 s claim period + delivery, with room for a slow sanitizer build


def delivered_lines(text):
    return len(re.findall(r"^listcast-sender\[\d+\]: info: post=\d+ rcpt=<[^>]*> delivered ", text, re.M))


def run(t, procs):
    env = crash_test.Env(t, procs, ["node.name=node-a", "sender.concurrency=4", "sender.per_mx=4",
                                    f"sender.claim_idle={CLAIM_IDLE}"])
    sender = os.path.join(lctest.LIBEXEC_DIR, "listcast-sender")
    b = procs.start("sender-b", [sender, *env.cfg, "--set", "node.name=node-b"])
    wait_for("node-b reading", lambda: "now reading new entries" in procs.log("sender-b"), 15)

    p1 = env.post("scale out")

    def both_busy():
        na, nb = delivered_lines(procs.log("listcast")), delivered_lines(procs.log("sender-b"))
        return (na, nb) if na >= 50 and nb >= 50 else None
    na, nb = wait_for("both senders delivering", both_busy, 60, step=0.01)
    pend_before = env.pending()
    b.send_signal(signal.SIGKILL)
    b.wait(10)
    t_kill = time.monotonic()
    pend = env.pending()
    served = len(env.copies(p1))
    t.check(na > 0 and nb > 0, f"both senders delivered a share of the post before the kill "
                               f"(node-a {na}, node-b {nb})")
    held = {e for e, c in pend.items() if c == "node-b"} | {e for e, c in pend_before.items() if c == "node-b"}
    t.check(served < NSUBS and len([e for e, c in pend.items() if c == "node-b"]) > 0,
            f"node-b killed mid-post holding {len(held)} batches ({served} of {NSUBS} subscribers served)")
    held_rcpts = set()
    for e in held:
        held_rcpts.update(env.entry_rcpts(e))

    got = wait_for("every subscriber served after the claim",
                   lambda: (lambda g: g if len(g) >= NSUBS else None)(env.copies(p1)), CLAIM_WAIT, step=0.2)
    print(f"# every subscriber served {time.monotonic() - t_kill:.1f}s after the kill")
    log = procs.log("listcast")
    m = re.search(r"claimed (\d+) entries idle over \d+ s from other consumers", log)
    t.check(m is not None, f"node-a claimed node-b's pending batches (XAUTOCLAIM): {m.group(0) if m else 'none'}")
    j = env.done(p1)
    time.sleep(0.5)
    got = env.copies(p1)
    t.check(sorted(got) == sorted(env.subs), "every subscriber got at least one copy")
    dups = {a: n - 1 for a, n in got.items() if n > 1}
    t.check(all(a in held_rcpts and n == 1 for a, n in dups.items()),
            f"duplicates only for recipients of batches node-b held ({sum(dups.values())} duplicates, "
            f"bound {BATCH} x {len(held)})")
    crash_test.check_counters(t, j, "post")
    t.check(not env.pending(), "nothing left pending in the sender group")
    na2 = delivered_lines(log)
    t.check(na2 > na, f"node-a finished the post ({na2} deliveries logged)")
    procs.stop(env.up, signal.SIGTERM, 20)
    t.check(env.up.returncode == 0, f"listcast up stops cleanly (rc={env.up.returncode})")
    env.r.close()
    bad = lctest.sanitizer_reports(procs)
    t.check(not bad, f"no sanitizer reports in the logs {bad}")


def main():
    t = lctest.Checks()
    procs = lctest.Procs()
    t0 = time.monotonic()
    try:
        run(t, procs)
    except (AssertionError, subprocess.SubprocessError) as e:
        t.check(False, str(e))
        for name in ("listcast", "sender-b"):
            sys.stdout.write(f"--- {name} log (tail) ---\n{procs.log(name)[-4000:]}\n")
    finally:
        procs.close()
    print(f"# {time.monotonic() - t0:.1f}s")
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
