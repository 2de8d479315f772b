#!/usr/bin/env python3
"""chunked_test: a post whose batches take the expander several Redis transactions, while the sender is
already delivering the first ones.

With sender.batch_size=1 the 3,000 recipients become 3,000 batches, more than one expander transaction holds
(1,000 commands). Regression test: the sender's counter updates once made the expander's next transaction
fail (it watched the post hash) and the done check took a post with no recipient count yet for finished, so
a third of the subscribers never got the post. Every subscriber must get exactly one copy, and the post must
end done with consistent counters. Reuses crash_test's environment (real redis, dnsmasq, fake MX hosts,
listcast up)."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crash_test  # noqa: E402
import lctest  # noqa: E402


def main():
    t = lctest.Checks()
    procs = lctest.Procs()
    try:
        env = crash_test.Env(t, procs, settings=["sender.batch_size=1"])
        post = env.post("chunked expansion")
        env.all_copies(post)
        j = env.done(post)
        time.sleep(0.5)  # duplicates, if any, would arrive now
        got = env.copies(post)
        t.check(sorted(got) == sorted(env.subs), "every subscriber got the post")
        t.check(all(n == 1 for n in got.values()), f"each exactly once ({sum(n - 1 for n in got.values())} extra)")
        batches = env.r("XLEN", "lc:stream:deliveries")
        t.check(batches >= crash_test.NSUBS, f"the post took {batches} batches, several expander transactions")
        crash_test.check_counters(t, j, "chunked post")
        t.check(env.r("EXISTS", f"lc:postexp:{post}") == 0, "the expander's fencing token is gone")
        procs.stop(env.up, signal.SIGTERM, 20)
        t.check(env.up.returncode == 0, f"listcast up stops cleanly (rc={env.up.returncode})")
        env.r.close()
        t.check(not lctest.sanitizer_reports(procs), "no sanitizer reports")
    except AssertionError as e:
        t.check(False, str(e))
        sys.stdout.write(f"--- listcast log (tail) ---\n{procs.log('listcast')[-5000:]}\n")
    finally:
        procs.close()
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
