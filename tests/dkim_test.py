#!/usr/bin/env python3
"""dkim_test: DKIM signing end to end, checked by an independent verifier (dkimpy, Debian python3-dkim).

Starts redis-server, dnsmasq (MX records of two test domains) and a fake MX host writing every copy to a
maildir, runs `listcast up` against them, then:
  - a post made while lists.test has no key is delivered unsigned;
  - `listcast dkim keygen` makes an RSA and an Ed25519 key while the appliance runs; the next post's copies each
    carry two DKIM-Signature fields (rsa-sha256, ed25519-sha256) that dkimpy verifies against the published
    TXT records (given through dnsfunc, built from keygen's printed record); h= covers the per-recipient
    List-Unsubscribe and List-Unsubscribe-Post (RFC 8058), each copy's List-Unsubscribe differs, and changing it
    breaks both signatures;
  - a notice (the reply to a help request) is signed with both keys and verifies;
  - an unusable key (garbage in SEL.rsa.key) defers the next post's copies (never sent unsigned); once the bad
    file is removed, the retries deliver them, signed and valid;
  - a list whose list_unsubscribe setting is `mailto` (`listcast list set --list-unsubscribe mailto`) gets one
    common List-Unsubscribe <mailto:LIST-unsubscribe@DOMAIN> and no List-Unsubscribe-Post: its post is signed once
    (every copy carries the same signatures, and the sender logs "once per post") and dkimpy verifies each copy;
  - a signing tool run (snd_dkim_test sign) on awkward headers (folded, duplicated, a List-Unsubscribe already in
    the message) verifies too;
  - the per-recipient signatures are made by the signing threads (the appliance runs with sender.sign_threads=2,
    and the sender says so), and again, after a restart with sender.sign_threads=0, in the sender's loop thread:
    both verify.
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

try:
    import dkim  # noqa: E402
except ImportError:  # python3 is not Debian's own: use Debian's python3-dkim (installed by install-deps.sh)
    sys.path.append("/usr/lib/python3/dist-packages")
    import dkim  # noqa: E402

LIST = "news@lists.test"
DOMAINS = ["d00.test", "d01.test"]
SUBS = [f"user{j}@{d}" for d in DOMAINS for j in range(3)]
STRANGER = "stranger@d00.test"
BUILD = os.path.dirname(os.environ.get("LC_BIN_DIR", "/work/main/build/bin"))
SIGN_TOOL = os.path.join(BUILD, "sender", "snd_dkim_test")


def cli(cfg, *args, stdin=None):
    return subprocess.run([LISTCAST, *args, *cfg], input=stdin, capture_output=True, text=True, timeout=60)


def txt_of_record(rec):
    """The TXT value of a zone-file line NAME. IN TXT "..." "..." (strings joined)."""
    return "".join(re.findall(r'"([^"]*)"', rec))


def sig_fields(msg):
    """The DKIM-Signature fields of a message, unfolded, as dicts of tags (top first)."""
    head = msg.split(b"\r\n\r\n", 1)[0].decode()
    fields = re.split(r"\r\n(?![ \t])", head)
    out = []
    for f in fields:
        if f.lower().startswith("dkim-signature:"):
            v = re.sub(r"\s+", "", f.split(":", 1)[1])
            out.append(dict(kv.split("=", 1) for kv in v.split(";") if "=" in kv))
    return out


def header(msg, name):
    head = msg.split(b"\r\n\r\n", 1)[0].decode()
    for f in re.split(r"\r\n(?![ \t])", head):
        if f.lower().startswith(name.lower() + ":"):
            return f.split(":", 1)[1].strip()
    return None


def main():
    t = lctest.Checks()
    procs = lctest.Procs()
    try:
        run(t, procs)
    except AssertionError as e:
        t.check(False, str(e))
        for name in ("listcast", "fakemx", "dnsmasq"):
            sys.stdout.write(f"--- {name} log (tail) ---\n{procs.log(name)[-6000:]}\n")
    finally:
        procs.close()
    return t.done()


def run(t, procs):
    tmp = procs.tmp
    _, redis_url = lctest.start_redis(procs)
    mx = {d: [(10, f"mx{i}.test", f"127.0.0.{10 + i}")] for i, d in enumerate(DOMAINS)}
    dns_proc, dns_port = dnsmasq.start(tmp, mx)
    procs.procs.append(dns_proc)

    mx_port = lctest.free_port("127.0.0.10", also=("127.0.0.11",))
    mxlog, maildir = os.path.join(tmp, "mx.jsonl"), os.path.join(tmp, "mail")
    os.makedirs(maildir)
    argv = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakemx.py"), "--log", mxlog,
            "--maildir", maildir, "--listen", f"127.0.0.10:{mx_port}", "--listen", f"127.0.0.11:{mx_port}"]
    fake = procs.start("fakemx", argv, stdout=subprocess.PIPE)
    wait_for("fakemx ready", lambda: fake.stdout.readline().strip() == b"ready", 15)

    smtp_port, http_port = lctest.free_port(), lctest.free_port()
    state = os.path.join(tmp, "state")
    cfg = ["--set", f"redis.url={redis_url}", "--set", f"state.dir={state}",
           "--set", f"dns.servers=127.0.0.1:{dns_port}", "--set", f"sender.mx_port={mx_port}",
           "--set", f"smtp.listen=127.0.0.1:{smtp_port}", "--set", f"http.listen=127.0.0.1:{http_port}",
           "--set", "smtp.hostname=listcast.test", "--set", "sender.retry_min=1", "--set", "sender.retry_max=2"]
    up = procs.start("listcast", [LISTCAST, "up", *cfg, "--set", "sender.sign_threads=2"])

    def banner():
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=5) as s:
            return s.noop()[0] == 250
    wait_for("listd banner", banner, 30)
    r = cli(cfg, "list", "create", LIST, "--policy", "open", "--owner", "owner@d01.test")
    t.check(r.returncode == 0, f"list create ({r.stderr.strip()})")
    r = cli(cfg, "sub", "add", LIST, *SUBS)
    t.check(r.returncode == 0, f"sub add ({r.stderr.strip()})")

    def rows():
        if not os.path.exists(mxlog):
            return []
        with open(mxlog) as f:
            return [json.loads(line) for line in f if line.strip()]

    def copies_of(subject, n, timeout=60):
        """Wait for n copies whose Subject contains subject; returns [(rcpt, message bytes)]."""
        def got():
            out = []
            for row in rows():
                if subject in (row["headers"].get("Subject") or ""):
                    with open(os.path.join(maildir, f"{row['msg']}.eml"), "rb") as f:
                        out.append((row["rcpts"][0].lower(), f.read()))
            return out if len(out) >= n else None
        return wait_for(f"{n} copies of '{subject}'", got, timeout)

    def post(subject, extra="", to=LIST):
        msg = (f"From: Poster <poster@example.test>\r\nTo: {to}\r\nSubject: {subject}\r\n"
               f"Message-ID: <{subject.replace(' ', '-')}@example.test>\r\n{extra}\r\n"
               + "A body line,   with  spaces\t and a tab.  \r\n" * 20 + "\r\n\r\n")
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as s:
            s.ehlo("poster.test")
            s.sendmail("poster@example.test", [to], msg.encode())

    # 1. no key yet: unsigned
    post("unsigned one")
    got = copies_of("unsigned one", len(SUBS))
    t.check(all(not sig_fields(m) for _, m in got), "without a key, copies carry no DKIM-Signature")

    # 2. keys made while the appliance runs
    r1 = cli(cfg, "dkim", "keygen", "lists.test", "--selector", "s1", "--json")
    r2 = cli(cfg, "dkim", "keygen", "lists.test", "--selector", "e1", "--algorithm", "ed25519")
    t.check(r1.returncode == 0 and r2.returncode == 0, f"dkim keygen rsa and ed25519 ({r1.stderr} {r2.stderr})")
    j1 = json.loads(r1.stdout)
    t.check(j1["algorithm"] == "rsa" and j1["bits"] == 2048 and j1["name"] == "s1._domainkey.lists.test",
            "keygen --json: rsa, 2048 bits, record name")
    mode = os.stat(j1["file"]).st_mode & 0o777
    t.check(mode == 0o600 and j1["file"] == os.path.join(state, "dkim", "lists.test", "s1.rsa.key"),
            f"key file under STATE.DIR/dkim/DOMAIN, mode {oct(mode)}")
    rec2 = r2.stdout.strip()
    t.check(rec2.startswith('e1._domainkey.lists.test. IN TXT "v=DKIM1; k=ed25519; p='), f"TXT record: {rec2}")
    dns = {b"s1._domainkey.lists.test.": txt_of_record(j1["record"]).encode(),
           b"e1._domainkey.lists.test.": txt_of_record(rec2).encode()}
    t.check(txt_of_record(j1["record"]) == j1["txt"], "the record's strings join to the TXT value")
    lookups = []

    def dnsfunc(name, timeout=5):
        name = name if name.endswith(b".") else name + b"."
        lookups.append(name)
        return dns.get(name)

    def verify_all(m):
        """(number of signatures, number dkimpy verifies, algorithms)."""
        sigs = sig_fields(m)
        ok = sum(1 for i in range(len(sigs)) if dkim.DKIM(m).verify(idx=i, dnsfunc=dnsfunc))
        return len(sigs), ok, sorted(s.get("a") for s in sigs)

    post("signed two")
    got = copies_of("signed two", len(SUBS))
    res = [verify_all(m) for _, m in got]
    t.check(all(r == (2, 2, ["ed25519-sha256", "rsa-sha256"]) for r in res),
            f"every copy has an rsa-sha256 and an ed25519-sha256 signature, both verified by dkimpy {res}")
    t.check(b"s1._domainkey.lists.test." in lookups and b"e1._domainkey.lists.test." in lookups,
            "dkimpy looked up both selectors")
    hs = [s["h"].lower().split(":") for _, m in got for s in sig_fields(m)]
    t.check(all("list-unsubscribe" in h and "list-unsubscribe-post" in h and "from" in h for h in hs),
            "h= covers From, List-Unsubscribe and List-Unsubscribe-Post")
    t.check(all(s["d"] == "lists.test" and s["c"] == "relaxed/relaxed" for _, m in got for s in sig_fields(m)),
            "d= the list domain, c=relaxed/relaxed")
    lus = {header(m, "List-Unsubscribe") for _, m in got}
    t.check(len(lus) == len(SUBS), "each copy has its own List-Unsubscribe")
    bhs = {s["bh"] for _, m in got for s in sig_fields(m)}
    t.check(len(bhs) == 1, "one body hash for every copy and key")
    rcpt, m0 = got[0]
    tampered = re.sub(rb"/u/[A-Za-z0-9_-]+", b"/u/forged", m0, count=1)
    t.check(tampered != m0 and verify_all(tampered)[1] == 0, "a changed List-Unsubscribe breaks both signatures")
    extra_hdr = b"List-Unsubscribe: <mailto:evil@example.test>\r\n" + m0
    t.check(verify_all(extra_hdr)[1] == 0, "an added List-Unsubscribe field breaks both signatures (over-signing)")

    # 3. a notice: the reply to a help request, signed once per post
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as s:
        s.ehlo("d00.test")
        s.sendmail(STRANGER, ["news-help@lists.test"],
                   f"From: {STRANGER}\r\nTo: news-help@lists.test\r\nSubject: help\r\n\r\nhelp\r\n".encode())

    def notice():
        for row in rows():
            if row["rcpts"][0].lower() == STRANGER:
                with open(os.path.join(maildir, f"{row['msg']}.eml"), "rb") as f:
                    return f.read()
        return None
    nm = wait_for("the help reply", notice, 60)
    t.check(verify_all(nm) == (2, 2, ["ed25519-sha256", "rsa-sha256"]),
            f"the notice is signed with both keys and verifies {verify_all(nm)}")

    # 4. an unusable key: copies deferred, never sent unsigned; fixed: delivered signed
    bad = os.path.join(state, "dkim", "lists.test", "zz.rsa.key")
    with open(bad, "w") as f:
        f.write("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    before = len(rows())
    post("deferred three")

    def deferred():
        r = cli(cfg, "post", "ls", LIST, "--json")
        posts = json.loads(r.stdout) if r.returncode == 0 else []
        posts = posts.get("posts", posts) if isinstance(posts, dict) else posts
        p3 = max(posts, key=lambda p: p["id"]) if posts else None
        return p3 if p3 and p3.get("deferred", 0) == len(SUBS) else None
    p3 = wait_for("post three deferred", deferred, 30)
    t.check(len(rows()) == before, "no copy of the post was sent while a key is unusable")
    log = procs.log("listcast")
    t.check("zz.rsa.key" in log and "unusable" in log, "the unusable key is logged with its file name")
    os.unlink(bad)
    got = copies_of("deferred three", len(SUBS), 60)
    res = [verify_all(m) for _, m in got]
    t.check(all(r == (2, 2, ["ed25519-sha256", "rsa-sha256"]) for r in res),
            f"after the bad key is removed, the retried copies are delivered signed and verify {res}")
    t.check(p3["id"] > 0, "post three was counted")

    # 4b. a key file replaced in place (same inode, same size): the next post is signed with the new key
    r = cli(cfg, "dkim", "keygen", "other.test", "--selector", "e1", "--algorithm", "ed25519", "--json")
    jn = json.loads(r.stdout)
    with open(jn["file"], "rb") as f:
        newkey = f.read()
    target = os.path.join(state, "dkim", "lists.test", "e1.ed25519.key")
    ino = os.stat(target).st_ino
    with open(target, "r+b") as f:
        f.write(newkey)
        f.truncate()
    t.check(os.stat(target).st_ino == ino, "key replaced in place")
    dns[b"e1._domainkey.lists.test."] = jn["txt"].encode()
    post("replaced four")
    got = copies_of("replaced four", len(SUBS))
    res = [verify_all(m) for _, m in got]
    t.check(all(r == (2, 2, ["ed25519-sha256", "rsa-sha256"]) for r in res),
            f"a key replaced in place signs the next post (verified against its new record) {res}")

    log = procs.log("listcast")
    t.check("sign_threads=2" in log and "per recipient, in the signing threads" in log,
            "per-recipient signatures were made by the 2 signing threads")

    # 4c. list_unsubscribe = mailto: one List-Unsubscribe for every copy, the post signed once
    once = "once@lists.test"
    r = cli(cfg, "list", "create", once, "--policy", "open", "--owner", "owner@d01.test")
    t.check(r.returncode == 0, f"list create {once} ({r.stderr.strip()})")
    r = cli(cfg, "list", "set", once, "--list-unsubscribe", "mailto", "--json")
    t.check(r.returncode == 0 and json.loads(r.stdout).get("list_unsubscribe") == "mailto",
            f"list set --list-unsubscribe mailto ({r.stdout.strip()} {r.stderr.strip()})")
    r = cli(cfg, "list", "set", once, "--list-unsubscribe", "sometimes")
    t.check(r.returncode == 2, f"an unknown List-Unsubscribe mode is a usage error (rc={r.returncode})")
    r = cli(cfg, "sub", "add", once, *SUBS)
    t.check(r.returncode == 0, f"sub add {once} ({r.stderr.strip()})")
    post("signed once five", to=once)
    got = copies_of("signed once five", len(SUBS))
    res = [verify_all(m) for _, m in got]
    t.check(all(r == (2, 2, ["ed25519-sha256", "rsa-sha256"]) for r in res),
            f"mailto list: every copy's two signatures verify {res}")
    lus = {header(m, "List-Unsubscribe") for _, m in got}
    t.check(lus == {"<mailto:once-unsubscribe@lists.test>"}, f"mailto list: one common List-Unsubscribe {lus}")
    t.check(all(header(m, "List-Unsubscribe-Post") is None for _, m in got), "mailto list: no List-Unsubscribe-Post")
    sigsets = {tuple(s["b"] for s in sig_fields(m)) for _, m in got}
    t.check(len(sigsets) == 1, f"mailto list: every copy carries the same signatures (signed once): {len(sigsets)}")
    t.check(all("list-unsubscribe" in s["h"].lower().split(":") for _, m in got for s in sig_fields(m)),
            "mailto list: h= covers the common List-Unsubscribe")
    log = procs.log("listcast")
    t.check(re.search(r"post=\d+ loaded .*list_unsubscribe=mailto", log) and
            re.search(r"dkim domain=lists.test signatures=2 \([^)]*\) once per post", log),
            "the sender loaded the mailto setting and signed the post once")

    # 5. awkward headers through the signing tool (same library), verified by dkimpy
    if os.path.exists(SIGN_TOOL):
        key = os.path.join(state, "dkim", "lists.test", "e1.ed25519.key")
        rkey = j1["file"]
        extra = os.path.join(tmp, "extra")
        with open(extra, "wb") as f:
            f.write(b"List-Unsubscribe: <mailto:u@lists.test>,\r\n <http://x.test/u/T>\r\n"
                    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        msg = (b"Received: from a by b; Mon, 23 Nov 2026 12:00:00 +0000\r\nFROM:  A  <a@x.test>\r\n"
               b"To: l@lists.test,\r\n\tsecond@y.test\r\nSubject: one\r\n\t two  \r\nTo: third@y.test\r\n"
               b"List-Unsubscribe: <mailto:old@x.test>\r\nDKIM-Signature: v=1; a=rsa-sha256; d=x.test; b=old\r\n"
               b"\r\n  leading\r\ntrailing \t \r\n\r\n\r\n")
        for k, alg in ((rkey, "rsa"), (key, "ed25519")):
            sel = "s1" if alg == "rsa" else "e1"
            r = subprocess.run([SIGN_TOOL, "sign", k, alg, "lists.test", sel, extra], input=msg,
                               capture_output=True, timeout=30)
            try:
                ok = r.returncode == 0 and dkim.DKIM(r.stdout).verify(idx=0, dnsfunc=dnsfunc)
            except dkim.DKIMException as e:
                ok = False
                print(f"# dkimpy: {e}")
            t.check(ok, f"{alg}: folded, duplicated and pre-existing fields sign and verify ({r.stderr[-300:]})")
    else:
        t.check(False, f"signing tool {SIGN_TOOL} is built")

    procs.stop(up, signal.SIGTERM, 20)
    t.check(up.returncode == 0, f"listcast up stops cleanly (rc={up.returncode})")

    # 6. sender.sign_threads=0: per-recipient signatures in the loop thread, same result
    up = procs.start("listcast0", [LISTCAST, "up", *cfg, "--set", "sender.sign_threads=0"])
    wait_for("listd banner (sign_threads=0)", banner, 30)
    post("loop signed six")
    got = copies_of("loop signed six", len(SUBS))
    res = [verify_all(m) for _, m in got]
    t.check(all(r == (2, 2, ["ed25519-sha256", "rsa-sha256"]) for r in res),
            f"sign_threads=0: every copy has two signatures that verify {res}")
    t.check(len({header(m, "List-Unsubscribe") for _, m in got}) == len(SUBS), "sign_threads=0: personal headers")
    log0 = procs.log("listcast0")
    t.check("sign_threads=0" in log0 and "per recipient, in the loop thread" in log0,
            "with sender.sign_threads=0 the sender signs in its loop thread")
    procs.stop(up, signal.SIGTERM, 20)
    t.check(up.returncode == 0, f"listcast up (sign_threads=0) stops cleanly (rc={up.returncode})")
    bad = lctest.sanitizer_reports(procs)
    t.check(not bad, f"no sanitizer reports {bad}")


if __name__ == "__main__":
    sys.exit(main())
