#!/usr/bin/env python3
"""list_set_test.py: `listcast list set` (issue 3 item 1's settings from the command line).

Against a real redis-server: every option writes its field of lc:list:LIST as the web UI would (owners and
moderators one space between normalised addresses, sizes as digits, "" clears), repeated --moderator add up,
--footer-file reads a file or stdin, --json prints every setting plus "changed"; bad values are usage errors
(exit 2) that change nothing; a missing list is refused (exit 1), and so is an unreachable Redis; --help prints
the manual page. Prints one line per check; exits 0 when all passed.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lctest  # noqa: E402
from lctest import LISTCAST  # noqa: E402

L = "news@lists.test"


def main():
    t = lctest.Checks()
    procs = lctest.Procs()
    try:
        run(t, procs)
    finally:
        procs.close()
    return t.done()


def run(t, procs):
    _, url = lctest.start_redis(procs, durable=False)
    cfg = ["--set", "redis.url=" + url]
    R = lambda *a: lctest.redis_cmd(url, *a)  # noqa: E731

    def cli(*args, stdin=None):
        return subprocess.run([LISTCAST, *args, *cfg], capture_output=True, text=True, timeout=30, input=stdin)

    def field(name):
        v = R("HGET", "lc:list:" + L, name)
        return v.decode() if isinstance(v, bytes) else v

    r = cli("list", "create", L, "--policy", "open", "--owner", "boss@ex.test")
    t.check(r.returncode == 0, "list create")

    r = cli("list", "set", L, "--policy", "moderated", "--owner", "New.Boss@Ex.Test", "--owners",
            "a@ex.test, B@EX.test  c@ex.test", "--moderator", "M1@ex.test", "--moderator", "m2@ex.test,m3@ex.test",
            "--subject-prefix", "[news]", "--footer", "-- \nfooter line", "--max-message-size", "2000",
            "--dmarc-mitigation", "wrap")
    t.check(r.returncode == 0 and r.stderr == "", f"list set with every option exits 0 ({r.returncode} {r.stderr})")
    t.check(field("policy") == "moderated", "policy written")
    t.check(field("owner") == "new.boss@ex.test", f"owner normalised ({field('owner')})")
    t.check(field("owners") == "a@ex.test b@ex.test c@ex.test", f"owners: one space, normalised ({field('owners')})")
    t.check(field("moderators") == "m1@ex.test m2@ex.test m3@ex.test",
            f"repeated --moderator add up, normalised ({field('moderators')})")
    t.check(field("subject_prefix") == "[news]" and field("footer") == "-- \nfooter line", "prefix and footer")
    t.check(field("max_message_size") == "2000" and field("dmarc_mitigation") == "wrap", "size and mitigation")
    t.check("max_message_size:" in r.stdout and "2000" in r.stdout and "moderators:" in r.stdout,
            "text output shows the settings")

    r = cli("list", "set", L, "--policy", "open", "--json")
    j = json.loads(r.stdout) if r.returncode == 0 else {}
    t.check(j.get("address") == L and j.get("policy") == "open" and j.get("changed") == ["policy"] and
            j.get("owners") == "a@ex.test b@ex.test c@ex.test" and j.get("max_message_size") == "2000" and
            j.get("dmarc_mitigation") == "wrap", f"--json: every setting and what changed ({r.stdout.strip()})")
    t.check(field("moderators") == "m1@ex.test m2@ex.test m3@ex.test", "fields not given stay as they were")

    r = cli("list", "set", L, "--bounce-threshold", "3", "--bounce-soft", "0.25", "--probe", "0",
            "--probe-delay", "3600", "--list-unsubscribe", "MAILTO", "--json")
    j = json.loads(r.stdout) if r.returncode == 0 else {}
    t.check(field("bounce_threshold") == "3" and field("bounce_soft") == "0.25" and field("probe") == "0" and
            field("probe_delay") == "3600" and field("list_unsubscribe") == "mailto",
            f"bounce, probe and List-Unsubscribe settings written ({r.returncode} {r.stderr.strip()})")
    t.check(j.get("bounce_threshold") == "3" and j.get("bounce_hard") == "1" and j.get("bounce_stale_days") == "7"
            and j.get("probe") == "0" and sorted(j.get("changed", [])) ==
            ["bounce_soft", "bounce_threshold", "list_unsubscribe", "probe", "probe_delay"],
            f"--json shows the values in effect, defaults included ({r.stdout.strip()[:300]})")
    r = cli("list", "set", L, "--bounce-threshold", "", "--probe", "")
    t.check(r.returncode == 0 and field("bounce_threshold") is None and field("probe") is None and
            field("bounce_soft") == "0.25" and "bounce_threshold:  5" in r.stdout,
            f"\"\" puts a table setting back to its default (field deleted) ({r.stdout.strip()[-300:]})")

    footer_file = os.path.join(procs.tmp, "footer.txt")
    with open(footer_file, "w") as f:
        f.write("-- \nfrom a file\n")
    r = cli("list", "set", L, "--footer-file", footer_file)
    t.check(r.returncode == 0 and field("footer") == "-- \nfrom a file\n", "--footer-file")
    r = cli("list", "set", L, "--footer-file", "-", stdin="from stdin\n")
    t.check(r.returncode == 0 and field("footer") == "from stdin\n", "--footer-file - reads stdin")

    r = cli("list", "set", L, "--moderator", "", "--subject-prefix", "", "--max-message-size", "")
    t.check(r.returncode == 0 and field("moderators") == "" and field("subject_prefix") == "" and
            field("max_message_size") == "", "empty values clear settings")

    before = R("HGETALL", "lc:list:" + L)
    bad = [
        (["--policy", "secret"], "unknown policy"),
        (["--owner", "not an address"], "invalid owner"),
        (["--owners", "a@ex.test bad@@x"], "invalid owners address"),
        (["--moderator", "ok@ex.test", "--moderator", "nope"], "invalid moderator"),
        (["--max-message-size", "12k"], "size not a number"),
        (["--max-message-size", "-5"], "negative size"),
        (["--subject-prefix", "a\nb"], "line break in the subject prefix"),
        (["--subject-prefix", "x" * 5000], "value over 4,095 octets"),
        (["--footer", "a", "--footer-file", footer_file], "--footer with --footer-file"),
        (["--footer-file", os.path.join(procs.tmp, "missing")], "unreadable footer file"),
        (["--dmarc-mitigation", "rewrite"], "unknown mitigation"),
        (["--bounce-threshold", "0"], "threshold below its range"),
        (["--bounce-hard", "1e3"], "exponent in a number"),
        (["--probe-delay", "1.5"], "fraction in a whole number"),
        (["--probe", "yes"], "probe not 1 or 0"),
        (["--list-unsubscribe", "none"], "unknown List-Unsubscribe mode"),
        ([], "nothing to set"),
        (["--policy", "open", "--frobnicate"], "unknown option"),
        (["--policy", "open", "--owner", "ok@ex.test", "--owners", "bad"], "one bad value among good ones"),
    ]
    for args, what in bad:
        r = cli("list", "set", L, *args)
        t.check(r.returncode == 2 and r.stderr.startswith("listcast: ") and r.stderr.count("\n") == 1,
                f"{what}: usage error, exit 2 ({r.returncode} {r.stderr.strip()[:100]})")
    t.check(R("HGETALL", "lc:list:" + L) == before, "refused commands changed nothing")

    r = cli("list", "set", "bad address", "--policy", "open")
    t.check(r.returncode == 2, "malformed list address: exit 2")
    r = cli("list", "set", "other@lists.test", "--policy", "open")
    t.check(r.returncode == 1 and "no such list" in r.stderr, f"missing list: exit 1 ({r.stderr.strip()})")
    t.check(R("EXISTS", "lc:list:other@lists.test") == 0, "no partial hash made for a missing list")
    r = subprocess.run([LISTCAST, "list", "set", L, "--policy", "open", "--set",
                        "redis.url=unix://" + os.path.join(procs.tmp, "nope.sock")],
                       capture_output=True, text=True, timeout=30)
    t.check(r.returncode == 1, "Redis unreachable: exit 1")

    r = cli("list", "set", "--help")
    t.check(r.returncode == 0 and "SYNOPSIS" in r.stdout and "--max-message-size" in r.stdout and
            "EXIT STATUS" in r.stdout and "dmarc_mitigation" in r.stdout, "--help prints the manual page")
    r = cli("help", "list", "set")
    t.check(r.returncode == 0 and "listcast list set" in r.stdout, "listcast help list set")


if __name__ == "__main__":
    sys.exit(main())
