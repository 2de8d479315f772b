#!/usr/bin/env python3
"""bounce_e2e: end-to-end bounces/s through listd into Redis (durable), for bench/bounce.sh.

Usage: bounce_e2e.py BUILD_DIR [N] [CONNECTIONS] [--drain]
Starts redis-server (appendonly yes, appendfsync always: listd answers 250 only after the AOF fsync),
creates a list with N subscribers (default 5000) through the `listcast` CLI, starts listcast-listd and
listcast-bounce from BUILD_DIR, then sends one RFC 3464 "user unknown" DSN to each subscriber's VERP address
over SMTP (CONNECTIONS parallel connections, default 16, MAIL+RCPT+DATA pipelined), and measures until every
subscriber hash is updated (the list's `bounces` counter reaches N and every subscriber is disabled).
Prints the accept rate (SMTP 250s/s) and the end-to-end rate (bounces applied/s). With --drain,
listcast-bounce is started only once listd has accepted all N, and the rate is the bounce daemon's alone (N over
the time from its start to the last subscriber updated): what it can take when listd is not the limit. Everything runs on
loopback in a temporary directory that is removed at the end.
"""
import os
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import lctest  # noqa: E402

LIST = "bench@bench.test"
DOMAIN = "bench.test"


def dsn(verp, rcpt, i):
    return (f"From: MAILER-DAEMON@mx{i % 7}.example.net (Mail Delivery System)\r\n"
            f"To: {verp}\r\nSubject: Undelivered Mail Returned to Sender\r\nMessage-ID: <b{i}@mx.example.net>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; report-type=delivery-status; boundary=\"BB\"\r\n\r\n"
            "--BB\r\nContent-Type: text/plain\r\n\r\nThis is the mail system at host mx.example.net.\r\n\r\n"
            f"<{rcpt}>: host mx.example.net[192.0.2.1] said: 550 5.1.1 <{rcpt}>: Recipient address rejected:\r\n"
            "    User unknown in local recipient table (in reply to RCPT TO command)\r\n\r\n"
            "--BB\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
            f"Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            f"Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown\r\n\r\n"
            "--BB--\r\n.\r\n")


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.f = self.s.makefile("rb")
        self.reply()
        self.s.sendall(b"EHLO bench.example\r\n")
        self.reply()

    def reply(self):
        while True:
            line = self.f.readline()
            if not line:
                raise RuntimeError("connection closed")
            if line[3:4] != b"-":
                return int(line[:3])

    def send(self, verp, body):
        self.s.sendall(f"MAIL FROM:<>\r\nRCPT TO:<{verp}>\r\nDATA\r\n".encode())
        codes = [self.reply(), self.reply(), self.reply()]
        if codes != [250, 250, 354]:
            raise RuntimeError(f"refused: {codes}")
        self.s.sendall(body.encode())
        code = self.reply()
        if code != 250:
            raise RuntimeError(f"data refused: {code}")


def main():
    drain = "--drain" in sys.argv
    args = [a for a in sys.argv if a != "--drain"]
    build = args[1]
    n = int(args[2]) if len(args) > 2 else 5000
    conns = int(args[3]) if len(args) > 3 else 16
    listcast = os.path.join(build, "bin", "listcast")
    libexec = os.path.join(build, "libexec", "listcast")
    procs = lctest.Procs()
    try:
        _, url = lctest.start_redis(procs, durable=True)
        sock = url[len("unix://"):]
        key = os.urandom(32)
        secret = os.path.join(procs.tmp, "secret")
        lctest.write_secret(secret, key)
        common = ["--set", "redis.url=" + url, "--set", "state.dir=" + procs.tmp, "--set", "secret.file=" + secret]
        subprocess.run([listcast, "list", "create", LIST] + common, check=True, capture_output=True)
        addrs = [f"user{i}@d{i % 50}.example" for i in range(n)]
        subprocess.run([listcast, "sub", "add", LIST, "-"] + common, input="\n".join(addrs).encode(), check=True,
                       capture_output=True)
        ids = lctest.redis_cmd(sock, "HGETALL", "lc:subids")
        sid = {v.split(" ", 1)[1]: int(k) for k, v in zip(ids[::2], ids[1::2])}
        port = lctest.free_port()
        procs.start("listd", [os.path.join(libexec, "listcast-listd")] + common +
                    ["--set", f"smtp.listen=127.0.0.1:{port}", "--set", "smtp.max_sessions_per_ip=200",
                     "--set", "smtp.max_sessions=400"])
        bounce_argv = [os.path.join(libexec, "listcast-bounce")] + common
        if not drain:
            procs.start("bounce", bounce_argv)
        lctest.wait_for("listd", lambda: socket.create_connection(("127.0.0.1", port), 1).close() is None, 20)
        msgs = []
        for i, a in enumerate(addrs):
            verp = lctest.verp_encode(key, 1, sid[a], DOMAIN)
            msgs.append((verp, dsn(verp, a, i)))
        errors = []

        def worker(part):
            try:
                c = Conn(port)
                for verp, body in part:
                    c.send(verp, body)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=worker, args=(msgs[k::conns],)) for k in range(conns)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t_acc = time.monotonic() - t0
        if errors:
            print(f"send errors: {errors[:3]}")
            return 1

        def done():
            v = lctest.redis_cmd(sock, "HGET", "lc:list:" + LIST, "bounces")
            return int(v or 0) >= n

        if drain:
            t0 = time.monotonic()
            procs.start("bounce", bounce_argv)
        lctest.wait_for("every bounce applied", done, timeout=600, step=0.01)
        t_all = time.monotonic() - t0
        act = lctest.redis_cmd(sock, "HLEN", "lc:active:" + LIST)
        if drain:
            print(f"bounces {n}: listcast-bounce alone, started with all {n} entries in the stream, applied them "
                  f"in {t_all:.2f} s ({n / t_all:.0f}/s, durable); subscribers still active: {act}")
            return 0
        print(f"bounces {n} connections {conns}: accepted by listd in {t_acc:.2f} s ({n / t_acc:.0f}/s durable), "
              f"applied to every subscriber in {t_all:.2f} s ({n / t_all:.0f}/s end to end); "
              f"subscribers still active: {act}")
        return 0
    finally:
        procs.close()


if __name__ == "__main__":
    sys.exit(main())
