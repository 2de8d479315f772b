#!/usr/bin/env python3
"""browser_test: runs tests/browser/run.mjs (playwright-core driving Debian's chromium, headless) against a whole
appliance on loopback.

Starts redis-server, a fake MX (tests/fakemx.py, writing each copy to a maildir) that takes every delivery as
the relay, and `listcast up` with http.public_url pointing at its own web UI (so the List-Unsubscribe URLs in the
copies are live), makes an admin with `listcast admin add`, installs playwright-core into tests/browser
(`npm ci`, only when node_modules is missing) and runs the browser steps. Screenshots are kept in
BUILD/browser-artifacts/ (BUILD = the parent of LC_BIN_DIR), or LC_ARTIFACT_DIR.
Exit status 77 (CTest SKIP_RETURN_CODE) when node or chromium is not installed.
"""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lctest  # noqa: E402
from lctest import BIN_DIR, LISTCAST, free_port, wait_for  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BROWSER_DIR = os.path.join(HERE, "browser")
CHROMIUM = os.environ.get("LC_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "browser test password"


def ensure_playwright():
    """npm ci in tests/browser when playwright-core is missing (idempotent)."""
    if os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        return
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BROWSER_DIR, capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        raise AssertionError(f"npm ci in tests/browser failed: {r.stderr[-2000:]}")


def healthz(port):
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def main():
    if not shutil.which("node") or not os.access(CHROMIUM, os.X_OK):
        print(f"SKIP: node or {CHROMIUM} missing (appliance/install-deps.sh installs them)")
        return 77
    t = lctest.Checks()
    procs = lctest.Procs()
    try:
        ensure_playwright()
        run(t, procs)
    except AssertionError as e:
        t.check(False, str(e))
        for name in ("listcast", "fakemx"):
            sys.stdout.write(f"--- {name} log (tail) ---\n{procs.log(name)[-5000:]}\n")
    finally:
        for p in procs.procs:
            procs.stop(p)
        bad = lctest.sanitizer_reports(procs)
        t.check(not bad, f"no sanitizer reports ({bad})")
        procs.close()
    return t.done()


def run(t, procs):
    tmp = procs.tmp
    _, redis_url = lctest.start_redis(procs)
    maildir = os.path.join(tmp, "maildir")
    os.makedirs(maildir)
    mx_port = free_port()
    fake = procs.start("fakemx", [sys.executable, os.path.join(HERE, "fakemx.py"), "--listen",
                                  f"127.0.0.1:{mx_port}", "--log", os.path.join(tmp, "mx.jsonl"),
                                  "--maildir", maildir], stdout=subprocess.PIPE)
    wait_for("fakemx ready", lambda: fake.stdout.readline().strip() == b"ready", 15)
    smtp_port, web_port = free_port(), free_port()
    state = os.path.join(tmp, "state")
    cfg = ["--set", f"redis.url={redis_url}", "--set", f"state.dir={state}",
           "--set", f"smtp.listen=127.0.0.1:{smtp_port}", "--set", f"http.listen=127.0.0.1:{web_port}",
           "--set", f"http.public_url=http://127.0.0.1:{web_port}", "--set", f"sender.relay=127.0.0.1:{mx_port}",
           "--set", "smtp.hostname=listcast.test", "--set", "sender.tls=none"]
    up = procs.start("listcast", [LISTCAST, "up", *cfg])
    wait_for("web /healthz", lambda: healthz(web_port), 30)
    t.check(up.poll() is None, "listcast up is running")
    r = subprocess.run([LISTCAST, "admin", "add", "operator", *cfg], input=PASSWORD + "\n", capture_output=True,
                       text=True, timeout=60)
    t.check(r.returncode == 0, f"admin add: {r.returncode} {r.stderr}")
    shots = os.environ.get("LC_ARTIFACT_DIR") or os.path.join(os.path.dirname(BIN_DIR), "browser-artifacts")
    os.makedirs(shots, exist_ok=True)
    env = dict(os.environ, LC_WEB=f"http://127.0.0.1:{web_port}", LC_USER="operator", LC_PASSWORD=PASSWORD,
               LC_SMTP_PORT=str(smtp_port), LC_MAILDIR=maildir, LC_SHOTS=shots, LC_CHROMIUM=CHROMIUM)
    node = subprocess.run(["node", os.path.join(BROWSER_DIR, "run.mjs")], env=env, capture_output=True, text=True,
                          timeout=240)
    sys.stdout.write(node.stdout)
    if node.stderr:
        sys.stdout.write("--- node stderr ---\n" + node.stderr[-3000:] + "\n")
    t.check(node.returncode == 0, f"browser steps (node run.mjs exit {node.returncode}); screenshots in {shots}")
    t.check(up.poll() is None, "listcast up still running")


if __name__ == "__main__":
    sys.exit(main())
