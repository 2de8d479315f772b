#!/usr/bin/env python3
"""fakemx.py: a scriptable SMTP server (fake MX host) for listcast tests and demos. Python 3 stdlib only.

    fakemx.py --listen 127.0.0.10:2600 [--listen IP:PORT ...] --log FILE.jsonl [--maildir DIR]
              [--script RULES.json] [--no-pipelining] [--hostname NAME] [--chunking]
              [--tls-cert CERT.pem --tls-key KEY.pem]

A real SMTP server on asyncio: banner, EHLO (advertises PIPELINING unless --no-pipelining, 8BITMIME, SIZE,
ENHANCEDSTATUSCODES), HELO, MAIL, RCPT, DATA (dot-unstuffing), RSET, NOOP, VRFY, QUIT. It accepts any MAIL and
RCPT unless a rule says otherwise. Each accepted message appends one JSON line to --log, flushed at once:
    {"listen": "ip:port", "conn": N, "msg": N, "mail_from": "...", "rcpts": [...], "size": n,
     "data_sha1": "...", "headers": {first 40 header names -> values}, "pipelined": n,
     "pipelining_violations": n}
"conn" numbers connections (over all listeners, from 1), so a test can count connections per message.
Records also carry "tls" (the TLS version after STARTTLS, or null) and "bdat" (true if the message came by BDAT).
--chunking advertises CHUNKING and takes BDAT (RFC 3030; the chunk is read in full even when the transaction has
failed). --tls-cert/--tls-key advertise STARTTLS (RFC 3207) and switch to TLS on it.
--maildir writes each accepted message to DIR/<msg>.eml. Prints "ready" on stdout once every listener is up.
SIGTERM or SIGINT: closes the listeners and connections and exits 0.

Rules (--script RULES.json: a JSON list of objects; the first matching rule that is not used up applies):
    "stage":   "connect" | "mail" | "rcpt" (default) | "data" (after the message, before the final reply) |
               "body" (after 354 and the first line of the message: "drop" cuts the connection mid-DATA) |
               "ehlo" | "starttls" (replaces the 220 to STARTTLS; "action": "badtls" answers 220 then garbage)
    "rcpt":    exact recipient (case-insensitive)         } rcpt and data stages; data matches if any
    "rcpt_re": regular expression (re.search, ignorecase) } recipient of the transaction matches
    "from_re": regular expression on MAIL FROM (mail stage)
    "listen":  "ip:port" or "ip": only on that listener
    "reply":   reply text, "\\n" between lines of a multi-line reply ("550 5.1.1 no such user")
    "raw":     exact octets to send instead of a reply (CRLF not added): malformed-reply tests
    "action":  "drop": close the connection without a reply; "reorder" (rcpt stage): hold this RCPT's reply and
               send it after the reply to the next command (a server that mis-orders pipelined replies)
    "delay":   seconds to wait before acting (slow servers)
    "times":   apply at most this many times (all connections together)
    "trickle": seconds between single octets of the reply (a tarpit)
A rule with only "delay" delays the normal reply.
"pipelined" counts the connection's commands so far that arrived with more input already behind them (the
client pipelined); with --no-pipelining these are also "pipelining_violations": a client must not pipeline then.
Limits: command lines up to 64 KB, messages up to 50 MB (SIZE is advertised, larger DATA gets 552).
"""

import argparse
import asyncio
import hashlib
import json
import os
import re
import signal
import sys

MAX_MESSAGE = 50 * 1024 * 1024
LINE_LIMIT = 1024 * 1024


class Rule:
    def __init__(self, d):
        self.stage = d.get("stage", "rcpt")
        if self.stage not in ("connect", "mail", "rcpt", "data", "body", "ehlo", "starttls"):
            raise ValueError("bad stage %r" % self.stage)
        self.rcpt = d.get("rcpt")
        self.rcpt_re = re.compile(d["rcpt_re"], re.I) if "rcpt_re" in d else None
        self.from_re = re.compile(d["from_re"], re.I) if "from_re" in d else None
        self.listen = d.get("listen")
        self.reply = d.get("reply")
        self.raw = d.get("raw")
        self.action = d.get("action")
        self.delay = float(d.get("delay", 0))
        self.times = d.get("times")
        self.trickle = float(d.get("trickle", 0))
        if self.action not in (None, "drop", "reorder", "badtls"):
            raise ValueError("bad action %r" % self.action)

    def matches(self, stage, listen, rcpts=(), mail_from=None):
        if stage != self.stage or (self.times is not None and self.times <= 0):
            return False
        if self.listen and self.listen != listen and self.listen != listen.rsplit(":", 1)[0]:
            return False
        if self.rcpt is not None or self.rcpt_re is not None:
            ok = False
            for r in rcpts:
                if self.rcpt is not None and r.lower() == self.rcpt.lower():
                    ok = True
                if self.rcpt_re is not None and self.rcpt_re.search(r):
                    ok = True
            if not ok:
                return False
        if self.from_re is not None and not self.from_re.search(mail_from or ""):
            return False
        return True


def format_reply(text):
    lines = text.split("\n")
    out = []
    for i, l in enumerate(lines):
        if i < len(lines) - 1:
            l = l[:3] + "-" + l[4:]
        out.append(l)
    return ("\r\n".join(out) + "\r\n").encode("utf-8", "replace")


def parse_headers(data, limit=40):
    """The first `limit` header fields of a message: name -> unfolded value (first occurrence of a name)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    fields = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t") and fields:
            fields[-1][1] += " " + line.strip()
        elif ":" in line:
            name, value = line.split(":", 1)
            fields.append([name.strip(), value.strip()])
    headers = {}
    for name, value in fields[:limit]:
        headers.setdefault(name, value)
    return headers


def parse_path(arg, keyword):
    m = re.match(keyword + r"\s*:\s*<([^>]*)>", arg, re.I)
    return m.group(1) if m else None


class FakeMX:
    def __init__(self, args):
        self.args = args
        self.rules = []
        if args.script:
            with open(args.script) as f:
                self.rules = [Rule(d) for d in json.load(f)]
        self.log = open(args.log, "a", buffering=1) if args.log else None
        self.nconn = 0
        self.nmsg = 0
        self.servers = []
        self.tasks = set()
        self.held = None
        self.sslctx = None
        if args.tls_cert:
            import ssl
            self.sslctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.sslctx.load_cert_chain(args.tls_cert, args.tls_key)

    def rule(self, stage, listen, rcpts=(), mail_from=None):
        for r in self.rules:
            if r.matches(stage, listen, rcpts, mail_from):
                if r.times is not None:
                    r.times -= 1
                return r
        return None

    async def apply(self, rule, writer, default):
        """Applies a rule (or the default reply); returns (code, keep_going)."""
        if rule is not None and rule.delay:
            await asyncio.sleep(rule.delay)
        if rule is not None and rule.action == "drop":
            writer.close()
            return 0, False
        if rule is not None and rule.raw is not None:
            writer.write(rule.raw.encode("utf-8", "replace"))
            await writer.drain()
            return 0, True
        text = rule.reply if rule is not None and rule.reply else default
        out = format_reply(text)
        if rule is not None and rule.trickle:
            for i in range(len(out)):
                writer.write(out[i:i + 1])
                await writer.drain()
                await asyncio.sleep(rule.trickle)
        elif rule is not None and rule.action == "reorder":
            self.held = out
            return int(text[:3]), True
        else:
            writer.write(out)
            if self.held is not None:
                writer.write(self.held)
                self.held = None
        await writer.drain()
        try:
            return int(text[:3]), True
        except ValueError:
            return 0, True

    async def session(self, reader, writer, listen):
        self.nconn += 1
        conn = self.nconn
        st = {"mail": None, "rcpts": [], "violations": 0, "pipelined": 0, "tls": None, "bdat": False}
        chunks = []
        pipelining = not self.args.no_pipelining
        host = self.args.hostname

        async def send(text):
            writer.write(format_reply(text))
            if self.held is not None:
                writer.write(self.held)
                self.held = None
            await writer.drain()

        try:
            r = self.rule("connect", listen)
            code, go = await self.apply(r, writer, "220 %s ESMTP fakemx" % host)
            if not go or code != 220:
                if go:
                    writer.close()
                return
            while True:
                line = await reader.readline()
                if not line:
                    return
                if reader._buffer:  # more commands arrived before our reply: the client pipelines
                    st["pipelined"] += 1
                    if not pipelining:
                        st["violations"] += 1
                cmd = line.decode("utf-8", "replace").rstrip("\r\n")
                verb, _, arg = cmd.partition(" ")
                verb = verb.upper()
                if verb == "EHLO":
                    r = self.rule("ehlo", listen)
                    if r is not None:
                        code, go = await self.apply(r, writer, "250 %s" % host)
                        if not go:
                            return
                        continue
                    caps = ["250-%s hello %s" % (host, arg)]
                    if pipelining:
                        caps.append("250-PIPELINING")
                    if self.args.chunking:
                        caps.append("250-CHUNKING")
                    if self.sslctx is not None and st["tls"] is None:
                        caps.append("250-STARTTLS")
                    caps += ["250-8BITMIME", "250-SIZE %d" % MAX_MESSAGE, "250 ENHANCEDSTATUSCODES"]
                    writer.write(("\r\n".join(caps) + "\r\n").encode())
                    await writer.drain()
                    st["mail"], st["rcpts"] = None, []
                elif verb == "STARTTLS" and self.sslctx is not None and st["tls"] is None:
                    r = self.rule("starttls", listen)
                    if r is not None and r.action == "badtls":
                        writer.write(b"220 2.0.0 go ahead\r\n" + b"\x15\x03\x03\x00\x02\x02\x28 this is no TLS")
                        await writer.drain()
                        await asyncio.sleep(0.2)
                        return
                    if r is not None:
                        code, go = await self.apply(r, writer, "220 2.0.0 go ahead")
                        if not go:
                            return
                        if code != 220:
                            continue
                    else:
                        await send("220 2.0.0 go ahead")
                    await writer.start_tls(self.sslctx)
                    st["tls"] = writer.get_extra_info("ssl_object").version()
                    st["mail"], st["rcpts"] = None, []
                elif verb == "BDAT" and self.args.chunking:
                    parts = arg.split()
                    try:
                        n = int(parts[0])
                        last = len(parts) > 1 and parts[1].upper() == "LAST"
                    except (ValueError, IndexError):
                        await send("501 5.5.4 syntax: BDAT size [LAST]")
                        return
                    chunk = await reader.readexactly(n)
                    if st["mail"] is None:
                        await send("503 5.5.1 need MAIL command")
                        chunks = []
                    elif not st["rcpts"]:
                        await send("554 5.5.1 no valid recipients")
                        chunks = []
                    else:
                        chunks.append(chunk)
                        if not last:
                            await send("250 2.0.0 %d octets received" % n)
                            continue
                        body = b"".join(chunks)
                        chunks = []
                        st["bdat"] = True
                        r = self.rule("data", listen, st["rcpts"])
                        if r is not None:
                            code, go = await self.apply(r, writer, "250 2.0.0 Ok")
                            if not go:
                                return
                            if 200 <= code < 300:
                                self.accept(listen, conn, st, body)
                        else:
                            n = self.accept(listen, conn, st, body)
                            await send("250 2.0.0 Ok: queued as %d" % n)
                        st["mail"], st["rcpts"], st["bdat"] = None, [], False
                elif verb == "HELO":
                    await send("250 %s" % host)
                    st["mail"], st["rcpts"] = None, []
                elif verb == "MAIL":
                    path = parse_path(arg, "FROM")
                    if st["mail"] is not None:
                        await send("503 5.5.1 nested MAIL command")
                    elif path is None:
                        await send("501 5.5.4 syntax: MAIL FROM:<address>")
                    else:
                        r = self.rule("mail", listen, (), path)
                        code, go = await self.apply(r, writer, "250 2.1.0 Ok")
                        if not go:
                            return
                        if 200 <= code < 300:
                            st["mail"], st["rcpts"] = path, []
                elif verb == "RCPT":
                    path = parse_path(arg, "TO")
                    if st["mail"] is None:
                        await send("503 5.5.1 need MAIL command")
                    elif path is None:
                        await send("501 5.5.4 syntax: RCPT TO:<address>")
                    else:
                        r = self.rule("rcpt", listen, (path,))
                        code, go = await self.apply(r, writer, "250 2.1.5 Ok")
                        if not go:
                            return
                        if 200 <= code < 300:
                            st["rcpts"].append(path)
                elif verb == "DATA":
                    if st["mail"] is None:
                        await send("503 5.5.1 need MAIL command")
                    elif not st["rcpts"]:
                        await send("554 5.5.1 no valid recipients")
                    else:
                        await send("354 End data with <CR><LF>.<CR><LF>")
                        data, too_big = [], False
                        size = 0
                        first = True
                        while True:
                            l = await reader.readline()
                            if not l:
                                return
                            if first:
                                first = False
                                r = self.rule("body", listen, st["rcpts"])
                                if r is not None and r.action == "drop":
                                    if r.delay:
                                        await asyncio.sleep(r.delay)
                                    writer.close()
                                    return
                            if l in (b".\r\n", b".\n"):
                                break
                            if l.startswith(b"."):
                                l = l[1:]
                            size += len(l)
                            if size > MAX_MESSAGE:
                                too_big = True
                            else:
                                data.append(l)
                        if too_big:
                            await send("552 5.3.4 message too big")
                        else:
                            body = b"".join(data)
                            r = self.rule("data", listen, st["rcpts"])
                            if r is not None:
                                code, go = await self.apply(r, writer, "250 2.0.0 Ok")
                                if not go:
                                    return
                                if 200 <= code < 300:
                                    self.accept(listen, conn, st, body)
                            else:
                                n = self.accept(listen, conn, st, body)
                                await send("250 2.0.0 Ok: queued as %d" % n)
                        st["mail"], st["rcpts"] = None, []
                elif verb == "RSET":
                    st["mail"], st["rcpts"] = None, []
                    await send("250 2.0.0 Ok")
                elif verb == "NOOP":
                    await send("250 2.0.0 Ok")
                elif verb == "VRFY":
                    await send("252 2.1.5 cannot VRFY")
                elif verb == "QUIT":
                    await send("221 2.0.0 Bye")
                    return
                else:
                    await send("500 5.5.2 command not recognized")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return
        finally:
            self.held = None
            try:
                writer.close()
            except Exception:
                pass

    def accept(self, listen, conn, st, body):
        self.nmsg += 1
        n = self.nmsg
        rec = {
            "listen": listen,
            "conn": conn,
            "msg": n,
            "mail_from": st["mail"],
            "rcpts": list(st["rcpts"]),
            "size": len(body),
            "data_sha1": hashlib.sha1(body).hexdigest(),
            "headers": parse_headers(body),
            "pipelined": st["pipelined"],
            "pipelining_violations": st["violations"],
            "tls": st["tls"],
            "bdat": st["bdat"],
        }
        if self.args.maildir:
            with open(os.path.join(self.args.maildir, "%d.eml" % n), "wb") as f:
                f.write(body)
        if self.log:
            self.log.write(json.dumps(rec) + "\n")
            self.log.flush()
        return n

    async def run(self):
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        for hp in self.args.listen:
            host, _, port = hp.rpartition(":")
            host = host.strip("[]")

            async def handler(r, w, hp=hp):
                t = asyncio.current_task()
                self.tasks.add(t)
                t.add_done_callback(self.tasks.discard)
                await self.session(r, w, hp)

            srv = await asyncio.start_server(handler, host, int(port), limit=LINE_LIMIT, reuse_address=True)
            self.servers.append(srv)
        print("ready", flush=True)
        await stop.wait()
        for srv in self.servers:
            srv.close()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for srv in self.servers:
            await srv.wait_closed()
        if self.log:
            self.log.close()


def main():
    ap = argparse.ArgumentParser(description="scriptable fake MX (SMTP server) for listcast tests")
    ap.add_argument("--listen", action="append", required=True, help="IP:PORT (repeatable)")
    ap.add_argument("--log", help="append one JSON line per accepted message")
    ap.add_argument("--maildir", help="write each accepted message to DIR/<n>.eml")
    ap.add_argument("--script", help="JSON rules file")
    ap.add_argument("--no-pipelining", action="store_true", help="do not advertise PIPELINING")
    ap.add_argument("--hostname", default="fakemx.test")
    ap.add_argument("--chunking", action="store_true", help="advertise CHUNKING and take BDAT")
    ap.add_argument("--tls-cert", help="PEM certificate: advertise STARTTLS")
    ap.add_argument("--tls-key", help="PEM key for --tls-cert")
    args = ap.parse_args()
    if args.maildir:
        os.makedirs(args.maildir, exist_ok=True)
    try:
        asyncio.run(FakeMX(args).run())
    except OSError as e:
        print("fakemx: %s" % e, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
