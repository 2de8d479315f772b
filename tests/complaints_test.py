#!/usr/bin/env python3
"""complaints_test: complaint rates, the automatic pause of a list's sending, suppression and unsubscribes
(issue 7 item 4), with a real redis-server, listcast-expander (relay mode: batches are the deliveries) and the CLI.

Checks: a globally suppressed address (lc:suppress) gets nothing; an unsubscribe (`listcast sub rm`) takes effect
for the next post at once; a complaint rate at complaints.warn_rate shows as a warning (`post show`, `list show
--json`) and does not pause; at complaints.pause_rate the expander pauses the list (paused=1, paused_reason, a log
line) and the next post is not expanded (stays queued and pending) while paused, also after several re-checks;
`listcast list resume LIST` clears the pause and the waiting post goes out within seconds, and the old complaints
no longer count; resuming a list that is not paused is refused. Every wait is bounded; everything is stopped.
"""
import json
import os
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lctest  # noqa: E402
from lctest import redis_cmd, wait_for  # noqa: E402

EXPANDER = os.path.join(lctest.LIBEXEC_DIR, "listcast-expander")
LIST = "news@lists.example.org"


def cli(url, state, *args, input_text=None):
    return subprocess.run([lctest.LISTCAST, "--set", f"redis.url={url}", "--set", f"state.dir={state}", *args],
                          capture_output=True, text=True, timeout=60, input=input_text)


def post(url, pid):
    now = int(time.time())
    redis_cmd(url, "HSET", f"lc:post:{pid}", "id", pid, "list", LIST, "state", "queued", "created", now,
              "from", "owner@example.org")
    redis_cmd(url, "ZADD", f"lc:posts:{LIST}", now, pid)
    redis_cmd(url, "XADD", "lc:stream:posts", "*", "post", pid)


def rcpts_of(url, pid):
    out = set()
    for _, fields in redis_cmd(url, "XRANGE", "lc:stream:deliveries", "-", "+") or []:
        f = dict(zip(fields[0::2], fields[1::2]))
        if f.get("post") == str(pid):
            out |= {line.split(" ", 1)[1] for line in f["rcpts"].split("\n") if line}
    return out


def state_of(url, pid):
    return redis_cmd(url, "HGET", f"lc:post:{pid}", "state")


def dashboard(procs, url, st):
    """GET / of a listcast-webui started here, with an API token (Authorization: Bearer)."""
    p = cli(url, st, "admin", "add", "alice", input_text="pw-123456789\n")
    tok = cli(url, st, "admin", "token", "alice").stdout.strip()
    port = lctest.free_port()
    procs.start("webui", [os.path.join(lctest.LIBEXEC_DIR, "listcast-webui"), "--set", f"redis.url={url}",
                          "--set", f"state.dir={st}", "--set", f"http.listen=127.0.0.1:{port}"])
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Authorization": "Bearer " + tok})
    body = wait_for("dashboard", lambda: urllib.request.urlopen(req, timeout=5).read().decode(), 20)
    return body if p.returncode == 0 else ""


def main():
    t = lctest.Checks()
    procs = lctest.Procs()
    try:
        run(t, procs)
    except AssertionError as e:
        t.check(False, str(e))
        sys.stdout.write("--- expander log (tail) ---\n" + procs.log("expander")[-3000:] + "\n")
    finally:
        procs.close()
    return t.done()


def run(t, procs):
    _, url = lctest.start_redis(procs, durable=False)
    st = procs.tmp
    p = cli(url, st, "list", "create", LIST, "--policy", "announce")
    t.check(p.returncode == 0, f"list create: {p.stderr.strip()}")
    subs = ["a@x.test", "b@x.test", "c@y.test", "s@y.test"]
    p = cli(url, st, "sub", "add", LIST, *subs)
    t.check(p.returncode == 0, f"sub add: {p.stderr.strip()}")
    redis_cmd(url, "SADD", "lc:suppress", "s@y.test")
    exp = procs.start("expander", [EXPANDER, "--set", f"redis.url={url}", "--set", "sender.relay=127.0.0.1:2526",
                                   "--set", f"state.dir={st}", "--set", "node.name=e1", "-v"])

    post(url, 1)
    wait_for("post 1 expanded", lambda: state_of(url, 1) == "sending", 20)
    got = rcpts_of(url, 1)
    t.check(got == {"a@x.test", "b@x.test", "c@y.test"}, f"suppressed address gets nothing: {sorted(got)}")

    p = cli(url, st, "sub", "rm", LIST, "b@x.test")
    t.check(p.returncode == 0, f"sub rm: {p.stderr.strip()}")
    post(url, 2)
    wait_for("post 2 expanded", lambda: state_of(url, 2) == "sending", 20)
    got = rcpts_of(url, 2)
    t.check(got == {"a@x.test", "c@y.test"}, f"unsubscribe takes effect for the next post: {sorted(got)}")

    # 2 complaints of 1000 delivered: 0.2% >= warn 0.1%, < pause 0.3%
    redis_cmd(url, "HSET", "lc:post:1", "delivered", 1000, "complaints", 2)
    redis_cmd(url, "HSET", f"lc:list:{LIST}", "complaints", 2)
    p = cli(url, st, "post", "show", "1")
    t.check(p.returncode == 0 and "0.200% (2 of 1000 delivered)" in p.stdout and "warn_rate" in p.stdout,
            f"post show: rate with a warning: {p.stdout}")
    j = json.loads(cli(url, st, "post", "show", "1", "--json").stdout)
    t.check(j["complaints"] == 2 and abs(j["complaint_rate"] - 0.002) < 1e-9, f"post show --json: {j}")
    j = json.loads(cli(url, st, "list", "show", LIST, "--json").stdout)
    t.check(j["rate_complaints"] == 2 and j["rate_delivered"] == 1000 and abs(j["complaint_rate"] - 0.002) < 1e-9
            and j["paused"] is False and j["complaints"] == 2, f"list show --json: rate, not paused: {j}")
    post(url, 3)
    wait_for("post 3 expanded (under the pause rate)", lambda: state_of(url, 3) == "sending", 20)

    # 4 complaints of 1000: 0.4% >= 0.3%: the next post pauses the list
    redis_cmd(url, "HSET", "lc:post:1", "complaints", 4)
    post(url, 4)
    wait_for("list paused", lambda: redis_cmd(url, "HGET", f"lc:list:{LIST}", "paused") == "1", 20)
    reason = redis_cmd(url, "HGET", f"lc:list:{LIST}", "paused_reason") or ""
    t.check("0.400%" in reason and "complaints.pause_rate" in reason, f"paused_reason: {reason}")
    time.sleep(7)  # more than one re-check (EXP_PAUSE_RECHECK_MS = 5 s)
    t.check(state_of(url, 4) == "queued" and not rcpts_of(url, 4), "post of a paused list is not expanded")
    pend = redis_cmd(url, "XPENDING", "lc:stream:posts", "expander")[0]
    t.check(pend == 1, f"it waits pending in the stream ({pend})")
    t.check("list=" + LIST + " paused" in procs.log("expander") and "post=4" in procs.log("expander"),
            "the pause is logged")
    dash = dashboard(procs, url, st)
    t.check("Complaints</th>" in dash and "0.400%" in dash and 'class="paused"' in dash,
            "web UI dashboard shows the rate and the pause")
    j = json.loads(cli(url, st, "list", "show", LIST, "--json").stdout)
    t.check(j["paused"] is True and "0.400%" in (j["paused_reason"] or ""), f"list show --json: paused: {j}")

    p = cli(url, st, "list", "resume", LIST, "--json")
    t.check(p.returncode == 0 and json.loads(p.stdout)["rate_after"] == 3, f"list resume: {p.stdout} {p.stderr}")
    wait_for("post 4 expanded after resume", lambda: state_of(url, 4) == "sending", 15)
    t.check(rcpts_of(url, 4) == {"a@x.test", "c@y.test"}, "the waiting post goes out to the active subscribers")
    t.check(redis_cmd(url, "HGET", f"lc:list:{LIST}", "paused") is None, "paused cleared")
    post(url, 5)
    wait_for("post 5 expanded (old complaints no longer count)", lambda: state_of(url, 5) == "sending", 20)
    p = cli(url, st, "list", "resume", LIST)
    t.check(p.returncode == 1 and "not paused" in p.stderr, f"resume of a list not paused: {p.returncode} {p.stderr}")
    rc = procs.stop(exp)
    t.check(rc == 0, f"expander exits 0 ({rc})")
    t.check(not lctest.sanitizer_reports(procs), f"no sanitizer reports: {lctest.sanitizer_reports(procs)}")


if __name__ == "__main__":
    sys.exit(main())
