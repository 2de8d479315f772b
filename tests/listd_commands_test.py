#!/usr/bin/env python3
"""listd_commands_test: email commands, posting policies, moderation and post rewriting, end to end on real parts.

Starts redis-server, dnsmasq (MX of sub.test -> 127.0.0.10), a fake MX host on 127.0.0.10 that keeps every
message (--maildir), and `listcast up`, then by SMTP to listd:
  subscribe by email -> the confirmation reaches the fake MX with a token (Reply-To L-confirm-TOKEN, web link)
  -> reply to L-confirm-TOKEN -> `listcast sub show` says active -> a post reaches the subscriber, rewritten
  (List-Id, List-Post, Precedence, subject prefix, footer; no List-Unsubscribe from listd) -> unsubscribe round
  trip -> unsubscribed, and the next post does not reach them; forged, expired and reused tokens change nothing;
  the rate limit of confirmations; help; L-request; moderated list: held, owner notice, approve by mail ->
  delivered once, reject -> never; members and announce policies; loop refusals (List-Id, X-Loop, Received).
"""
import email
import email.policy
import hashlib
import hmac
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

TALK = "talk@lists.test"
MOD = "mod@lists.test"
CLUB = "club@lists.test"
ANN = "ann@lists.test"
OWNER = "owner@sub.test"
ALICE = "alice@sub.test"
BOB = "bob@sub.test"
CAROL = "carol@sub.test"
PUBLIC = "https://lists.example.test"


def cli(cfg, *args):
    return subprocess.run([LISTCAST, *args, *cfg], capture_output=True, text=True, timeout=60)


def token_make(key, action, ident, expires):
    ids, exps = lctest.b32(ident), lctest.b32(expires)
    msg = b"tok\0" + action.encode() + b"\0" + ids.encode() + b"\0" + exps.encode()
    bits = int.from_bytes(hmac.new(key, msg, hashlib.sha256).digest()[:10], "big")
    mac = "".join(lctest.B32[(bits >> (75 - 5 * i)) & 31] for i in range(16))
    return f"{action}{ids}-{exps}-{mac}"


class Mail:
    """The fake MX's log and maildir."""

    def __init__(self, log, maildir):
        self.log, self.maildir = log, maildir

    def rows(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [json.loads(line) for line in f if line.strip()]

    def msg(self, row):
        with open(os.path.join(self.maildir, "%d.eml" % row["msg"]), "rb") as f:
            return email.message_from_bytes(f.read(), policy=email.policy.compat32)

    def to(self, rcpt, since=0, pred=None):
        out = []
        for r in self.rows()[since:]:
            if rcpt.lower() in [x.lower() for x in r["rcpts"]]:
                m = self.msg(r)
                if pred is None or pred(m):
                    out.append(m)
        return out


def smtp_send(port, sender, rcpt, body, subject="x", extra=""):
    """One transaction; returns (rcpt code, data code, data text)."""
    msg = (f"From: <{sender or 'mailer-daemon@sub.test'}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n"
           f"Message-ID: <{time.time()}.{os.getpid()}@sub.test>\r\n{extra}\r\n{body}")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.sub.test")
        s.docmd(f"MAIL FROM:<{sender}>")
        code, text = s.docmd(f"RCPT TO:<{rcpt}>")
        if code != 250:
            return code, None, text.decode()
        code2, text2 = s.data(msg.encode())
        return code, code2, text2.decode()


def main():
    t = lctest.Checks()
    procs = lctest.Procs()
    try:
        run(t, procs)
    except AssertionError as e:
        t.check(False, str(e))
        for name in ("listcast",):
            sys.stdout.write(f"--- {name} log (tail) ---\n{procs.log(name)[-8000:]}\n")
    finally:
        procs.close()
    return t.done()


def run(t, procs):
    tmp = procs.tmp
    _, redis_url = lctest.start_redis(procs)
    dns_proc, dns_port = dnsmasq.start(tmp, {"sub.test": [(10, "mx.sub.test", "127.0.0.10")]})
    procs.procs.append(dns_proc)
    mx_port = lctest.free_port("127.0.0.10")
    mxlog, maildir = os.path.join(tmp, "mx.jsonl"), os.path.join(tmp, "maildir")
    fake = procs.start("fakemx", [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakemx.py"),
                                  "--log", mxlog, "--maildir", maildir, "--listen", f"127.0.0.10:{mx_port}"],
                       stdout=subprocess.PIPE)
    wait_for("fakemx ready", lambda: fake.stdout.readline().strip() == b"ready", 15)
    mail = Mail(mxlog, maildir)

    port, http_port = lctest.free_port(), lctest.free_port()
    state = os.path.join(tmp, "state")
    cfg = ["--set", f"redis.url={redis_url}", "--set", f"state.dir={state}",
           "--set", f"dns.servers=127.0.0.1:{dns_port}", "--set", f"sender.mx_port={mx_port}",
           "--set", f"smtp.listen=127.0.0.1:{port}", "--set", f"http.listen=127.0.0.1:{http_port}",
           "--set", "smtp.hostname=listcast.test", "--set", f"http.public_url={PUBLIC}"]
    up = procs.start("listcast", [LISTCAST, "up", *cfg])

    def banner():
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as s:
            return s.noop()[0] == 250
    wait_for("listd banner", banner, 30)
    R = lambda *a: lctest.redis_cmd(redis_url, *a)  # noqa: E731
    for lst, pol in ((TALK, "open"), (MOD, "moderated"), (CLUB, "members"), (ANN, "announce")):
        r = cli(cfg, "list", "create", lst, "--policy", pol, "--owner", OWNER)
        t.check(r.returncode == 0, f"list create {lst} {pol} ({r.stderr.strip()})")
    R("HSET", "lc:list:" + TALK, "subject_prefix", "[talk]", "footer", "-- \nTalk list footer: be nice")
    key = lctest.read_secret(os.path.join(state, "secret"))

    def sub_status(lst, addr):
        r = cli(cfg, "sub", "show", lst, addr, "--json")
        return json.loads(r.stdout)["status"] if r.returncode == 0 else None

    # ---- subscribe by email
    n0 = len(mail.rows())
    rc, dc, text = smtp_send(port, ALICE, "talk-subscribe@lists.test", "please\r\n")
    t.check(rc == 250 and dc == 250, f"subscribe request accepted ({rc} {dc} {text})")
    t.check(sub_status(TALK, ALICE) == "unconfirmed", "subscriber is unconfirmed after the request")
    t.check(R("HEXISTS", "lc:active:" + TALK, ALICE) == 0, "unconfirmed subscriber not in lc:active")
    conf = wait_for("confirmation at the MX", lambda: mail.to(ALICE, n0), 30)[0]
    reply_to = conf["Reply-To"].strip("<>")
    m = re.match(r"talk-confirm-([0-9a-v-]+)@lists\.test$", reply_to)
    t.check(m is not None, f"confirmation Reply-To is L-confirm-TOKEN ({reply_to})")
    tok = m.group(1)
    body = conf.get_payload(decode=True).decode()
    t.check(f"{PUBLIC}/confirm/{tok}" in body, "confirmation holds the web link")
    t.check(conf["Auto-Submitted"] == "auto-replied" and conf["Message-ID"] and conf["Date"] and
            conf["From"] and conf["To"] == f"<{ALICE}>", "confirmation has Auto-Submitted, From, To, Date, Message-ID")
    rc, dc, text = smtp_send(port, ALICE, "talk-subscribe@lists.test", "again\r\n")
    t.check(dc == 550 and "less than an hour" in text, f"second request within the hour refused ({dc} {text})")
    time.sleep(1)
    t.check(len(mail.to(ALICE, n0)) == 1, "only one confirmation sent")

    # forged, expired, wrong-action tokens
    forged = tok[:-1] + ("0" if tok[-1] != "0" else "1")
    rc, dc, text = smtp_send(port, ALICE, f"talk-confirm-{forged}@lists.test", "yes\r\n")
    t.check(rc == 550 and "forged" in text, f"forged token refused at RCPT ({rc} {text})")
    subid = int(tok[1:].split("-")[0], 32)
    expired = token_make(key, "s", subid, int(time.time()) - 10)
    rc, dc, text = smtp_send(port, ALICE, f"talk-confirm-{expired}@lists.test", "yes\r\n")
    t.check(rc == 550 and "expired" in text, f"expired token refused at RCPT ({rc} {text})")
    t.check(sub_status(TALK, ALICE) == "unconfirmed", "forged and expired tokens changed nothing")
    rc, dc, text = smtp_send(port, "", f"talk-confirm-{tok}@lists.test", "auto\r\n")
    t.check(rc == 550, f"null sender cannot confirm ({rc})")

    # confirm by reply
    rc, dc, text = smtp_send(port, ALICE, reply_to, "> quoted\r\n", subject="Re: confirm")
    t.check(dc == 250, f"reply to L-confirm-TOKEN accepted ({dc} {text})")
    t.check(sub_status(TALK, ALICE) == "active", "sub show: active after confirming")
    rc, dc, text = smtp_send(port, ALICE, reply_to, "again\r\n")
    t.check(dc == 550 and "already used" in text, f"reused token refused ({dc} {text})")

    # ---- a post reaches her, rewritten
    n1 = len(mail.rows())
    rc, dc, text = smtp_send(port, BOB, TALK, "Hello talk.\r\n", subject="first topic")
    t.check(dc == 250, f"post to open list accepted ({dc} {text})")
    got = wait_for("post at alice", lambda: mail.to(ALICE, n1), 30)[0]
    t.check(got["List-Id"] == "<talk.lists.test>", f"List-Id ({got['List-Id']})")
    t.check(got["List-Post"] == "<mailto:talk@lists.test>" and got["List-Help"] and got["List-Subscribe"],
            "List-Post, List-Help, List-Subscribe")
    t.check(got["Precedence"] == "list", "Precedence: list")
    t.check(got["Subject"] == "[talk] first topic", f"subject prefix ({got['Subject']})")
    pbody = got.get_payload(decode=True).decode()
    t.check(pbody.startswith("Hello talk.") and "Talk list footer: be nice" in pbody, "footer appended")
    n1b = len(mail.rows())
    rc, dc, text = smtp_send(port, BOB, TALK, "reply\r\n", subject="Re: [talk] first topic")
    got = wait_for("reply at alice", lambda: mail.to(ALICE, n1b), 30)[0]
    t.check(got["Subject"] == "Re: [talk] first topic", f"prefix not doubled on replies ({got['Subject']})")

    # ---- loops
    for extra, what in (("List-Id: Talk <talk.lists.test>\r\n", "List-Id"), ("X-Loop: talk@lists.test\r\n", "X-Loop"),
                        ("Received: from x by y; Mon, 1 Jan 2026 00:00:00 +0000\r\n" * 31, "31 Received")):
        seq = int(R("GET", "lc:seq:post") or 0)
        rc, dc, text = smtp_send(port, BOB, TALK, "loop\r\n", extra=extra)
        t.check(dc == 554 and "5.4.6" in text and int(R("GET", "lc:seq:post") or 0) == seq,
                f"post with {what} refused 554 5.4.6, nothing stored ({dc} {text})")

    # ---- help and request
    n2 = len(mail.rows())
    rc, dc, text = smtp_send(port, CAROL, "talk-help@lists.test", "\r\n")
    t.check(dc == 250, f"help accepted ({dc})")
    h = wait_for("help at carol", lambda: mail.to(CAROL, n2), 30)[0]
    t.check("talk-subscribe@lists.test" in h.get_payload(decode=True).decode(), "help lists the commands")
    rc, dc, text = smtp_send(port, CAROL, "talk-request@lists.test", "\r\n", subject="frobnicate")
    t.check(dc == 550, f"L-request without a command refused ({dc} {text})")
    rc, dc, text = smtp_send(port, CAROL, "talk-request@lists.test", "subscribe\r\n", subject="")
    t.check(dc == 250 and sub_status(TALK, CAROL) == "unconfirmed", f"L-request 'subscribe' in the body ({dc})")
    rc, dc, text = smtp_send(port, CAROL, "talk-nonsense@lists.test", "x\r\n")
    t.check(rc == 550 and "5.1.1" in text, f"unknown address at a list domain 550 5.1.1 ({rc})")
    rc, dc, text = smtp_send(port, CAROL, "talk@elsewhere.test", "x\r\n")
    t.check(rc == 550 and "5.7.1" in text, f"other domain 550 5.7.1 ({rc})")

    # ---- owner
    n3 = len(mail.rows())
    rc, dc, text = smtp_send(port, CAROL, "talk-owner@lists.test", "Dear owner\r\n", subject="question")
    t.check(dc == 250, f"L-owner accepted ({dc} {text})")
    o = wait_for("owner forward", lambda: mail.to(OWNER, n3), 30)[0]
    t.check(o["Subject"] == "question" and "Dear owner" in o.get_payload(), "owner got the message")

    # ---- unsubscribe round trip
    n4 = len(mail.rows())
    rc, dc, text = smtp_send(port, ALICE, "talk-unsubscribe@lists.test", "bye\r\n")
    t.check(dc == 250, f"unsubscribe request accepted ({dc})")
    u = wait_for("unsubscribe confirmation", lambda: mail.to(ALICE, n4), 30)[0]
    ureply = u["Reply-To"].strip("<>")
    t.check(sub_status(TALK, ALICE) == "active", "still active before confirming")
    rc, dc, text = smtp_send(port, ALICE, ureply, "yes\r\n")
    t.check(dc == 250 and sub_status(TALK, ALICE) == "unsubscribed", f"unsubscribed after confirming ({dc} {text})")
    t.check(R("HEXISTS", "lc:active:" + TALK, ALICE) == 0, "out of lc:active")
    n5 = len(mail.rows())
    rc, dc, text = smtp_send(port, BOB, TALK, "after\r\n", subject="after unsubscribe")
    pid = int(text.split()[-1])

    def done():
        r = cli(cfg, "post", "show", str(pid), "--json")
        j = json.loads(r.stdout) if r.returncode == 0 else {}
        return j if j.get("state") == "done" else None
    wait_for("post after unsubscribe done", done, 30)
    time.sleep(0.5)
    t.check(not mail.to(ALICE, n5), "the next post does not reach her")

    # ---- moderated list
    R("HSET", "lc:active:" + MOD, ALICE, "1")
    n6 = len(mail.rows())
    rc, dc, text = smtp_send(port, BOB, MOD, "please moderate\r\n", subject="held one")
    t.check(dc == 250 and "held" in text, f"post to moderated list held ({dc} {text})")
    held = int(re.search(r"post (\d+)", text).group(1))
    t.check(R("EXISTS", f"lc:held:{held}") == 1 and R("TTL", f"lc:held:{held}") > 86400 * 13, "held in Redis with a TTL")
    t.check(R("ZSCORE", "lc:heldidx", held) is not None, "indexed for the moderation queue (lc:heldidx)")
    note = wait_for("owner notice", lambda: mail.to(OWNER, n6), 30)[0]
    nb = note.get_payload(decode=True).decode()
    ap = re.search(r"mod-approve-[0-9a-v-]+@lists\.test", nb).group(0)
    rj = re.search(r"mod-reject-[0-9a-v-]+@lists\.test", nb).group(0)
    t.check(note["Reply-To"].strip("<>") == ap, "owner notice Reply-To is the approve address")
    time.sleep(1)
    t.check(not mail.to(ALICE, n6), "held post not delivered")
    rc, dc, text = smtp_send(port, OWNER, ap.replace("mod-approve-", "mod-approve-x"), "ok\r\n")
    t.check(rc == 550, f"garbled approve address refused ({rc})")
    rc, dc, text = smtp_send(port, OWNER, ap, "ok\r\n")
    t.check(dc == 250, f"approve accepted ({dc} {text})")
    t.check(R("ZSCORE", "lc:heldidx", held) is None, "approving takes the post out of the queue's index")
    rc, dc, text = smtp_send(port, OWNER, ap, "ok again\r\n")
    t.check(dc == 550, f"second approve refused ({dc} {text})")
    rc, dc, text = smtp_send(port, OWNER, rj, "no\r\n")
    t.check(dc == 550, f"reject after approve refused ({dc})")
    wait_for("approved post delivered", lambda: mail.to(ALICE, n6), 30)
    time.sleep(1)
    t.check(len(mail.to(ALICE, n6)) == 1, "approved post delivered exactly once")
    n7 = len(mail.rows())
    rc, dc, text = smtp_send(port, BOB, MOD, "reject me\r\n", subject="held two")
    note = wait_for("owner notice 2", lambda: mail.to(OWNER, n7), 30)[0]
    rj2 = re.search(r"mod-reject-[0-9a-v-]+@lists\.test", note.get_payload(decode=True).decode()).group(0)
    rc, dc, text = smtp_send(port, OWNER, rj2, "no\r\n")
    t.check(dc == 250, f"reject accepted ({dc} {text})")
    time.sleep(2)
    t.check(not mail.to(ALICE, n7), "rejected post never delivered")
    rc, dc, text = smtp_send(port, OWNER, MOD, "from the owner\r\n", subject="owner post")
    t.check(dc == 250 and "queued as post" in text, f"owner posts to moderated list directly ({text})")

    # ---- members and announce
    R("HSET", "lc:active:" + CLUB, ALICE, "1")
    rc, dc, text = smtp_send(port, BOB, CLUB, "x\r\n")
    t.check(rc == 250 and dc == 550 and "only members" in text, f"members list: non-member refused at DATA ({dc})")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("c")
        s.docmd(f"MAIL FROM:<{BOB}>")
        s.docmd(f"RCPT TO:<{CLUB}>")
        code, resp = s.data(f"From: Alice <{ALICE}>\r\nSubject: via From\r\n\r\nx\r\n".encode())
    t.check(code == 250, f"members list: From: member accepted ({code} {resp.decode()})")
    rc, dc, text = smtp_send(port, BOB, ANN, "x\r\n")
    t.check(rc == 550 and "5.7.1" in text, f"announce list: non-owner refused ({rc})")
    rc, dc, text = smtp_send(port, OWNER, ANN, "news\r\n")
    t.check(dc == 250, f"announce list: owner accepted ({dc})")

    procs.stop(up, signal.SIGTERM, 20)
    t.check(up.returncode == 0, f"listcast up stops cleanly (rc={up.returncode})")
    bad = lctest.sanitizer_reports(procs)
    t.check(not bad, f"no sanitizer reports {bad}")


if __name__ == "__main__":
    sys.exit(main())
