#!/usr/bin/env python3
"""install_test: `cmake --install BUILD --prefix P` gives P/bin/listcast and P/libexec/listcast/<daemons>, and the
installed listcast finds its daemons relative to itself: `P/bin/listcast up` (embedded Redis, state in a temp
dir) serves SMTP and the web UI, and stops cleanly on SIGTERM. The prefix path is not known at build time, so
nothing can be hard-coded."""
import os
import signal
import smtplib
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lctest  # noqa: E402
from lctest import wait_for  # noqa: E402

DAEMONS = ["listcast-listd", "listcast-expander", "listcast-sender", "listcast-bounce", "listcast-webui"]


def main():
    t = lctest.Checks()
    procs = lctest.Procs()
    try:
        build = os.environ["LC_BUILD_DIR"]
        prefix = os.path.join(procs.tmp, "some where", "prefix")  # a space, too
        r = subprocess.run(["cmake", "--install", build, "--prefix", prefix], capture_output=True, text=True,
                           timeout=120)
        t.check(r.returncode == 0, f"cmake --install (rc={r.returncode}) {r.stderr.strip()[-300:]}")
        exe = os.path.join(prefix, "bin", "listcast")
        t.check(os.access(exe, os.X_OK), "P/bin/listcast installed")
        for d in DAEMONS:
            t.check(os.access(os.path.join(prefix, "libexec", "listcast", d), os.X_OK), f"P/libexec/listcast/{d}")

        smtp_port, http_port = lctest.free_port(), lctest.free_port()
        state = os.path.join(procs.tmp, "state")
        up = procs.start("listcast", [exe, "up", "--set", f"state.dir={state}",
                                      "--set", f"smtp.listen=127.0.0.1:{smtp_port}",
                                      "--set", f"http.listen=127.0.0.1:{http_port}"])

        def banner():
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=5) as s:
                return s.noop()[0] == 250
        try:
            wait_for("SMTP banner from the installed appliance", banner, 30)
            t.check(True, "installed listcast up serves SMTP")
            wait_for("web UI", lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{http_port}/healthz", timeout=5).status == 200, 15)
            t.check(True, "installed listcast up serves the web UI")
        except AssertionError as e:
            t.check(False, str(e))
            print(procs.log("listcast")[-4000:])
        r = subprocess.run([exe, "list", "create", "x@lists.test", "--set", f"state.dir={state}"],
                           capture_output=True, text=True, timeout=30)
        t.check(r.returncode == 0, f"installed CLI reaches the embedded Redis (rc={r.returncode})")
        rc = procs.stop(up, signal.SIGTERM, 20)
        t.check(rc == 0, f"stops cleanly on SIGTERM (rc={rc})")
        t.check(not lctest.sanitizer_reports(procs), "no sanitizer reports")
    finally:
        procs.close()
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
