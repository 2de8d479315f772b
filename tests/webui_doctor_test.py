#!/usr/bin/env python3
"""webui_doctor_test: the web UI's domain doctor (/doctor, /doctor/DOMAIN, /api/doctor, /api/doctor/DOMAIN).

Starts redis-server, dnsmasq (dnsmasq.py, with the records of doctor_test: good.test with a STARTTLS MX made
with fakemx.py and one without, SPF, DMARC, the DKIM record of a local key, PTR/A of a sending address; bad.test
with a null MX, no SPF and no DMARC; xss.test whose SPF and DMARC records hold HTML; slow.test whose MX accepts
TCP connections and never greets) and listcast-webui, with a list on good.test and a DKIM key for keyonly.test.

Checks: unauthenticated requests are refused (pages redirect to /login, the API answers 401) and make no DNS
query; the domain page lists the domains of the lists and of the DKIM keys, the nav and the list page link to
it; GET /api/doctor/DOMAIN returns exactly what `listcast doctor DOMAIN --json` prints; the page shows every
check's status, detail and the record to publish, HTML-escaped (records with <script> from DNS); a result is
reused within a minute (no new DNS query); a domain with HTML characters is refused (400) without being echoed;
while slow checks run (requests suspended), /healthz and the dashboard answer at once; a third simultaneous run
is refused with 429; SIGTERM during a check stops the daemon promptly; no sanitizer report.
"""
import html
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsmasq  # noqa: E402
import lctest  # noqa: E402
from lctest import LISTCAST, free_port, wait_for  # noqa: E402
from sender_test import start_fakemx  # noqa: E402
from webui_test import PASSWORD, WEBUI, Web  # noqa: E402

T = lctest.Checks()
check = T.check


def main():
    procs = lctest.Procs()
    holder = None
    try:
        holder = run(procs)
    except AssertionError as e:
        check(False, str(e))
        sys.stdout.write(f"--- webui log (tail) ---\n{procs.log('webui')[-5000:]}\n")
    finally:
        for p in procs.procs:
            procs.stop(p)
        if holder:
            holder.close()
        bad = lctest.sanitizer_reports(procs)
        check(not bad, f"no sanitizer reports ({bad})")
        procs.close()
    return T.done()


def timed(fn, *a, **kw):
    t0 = time.monotonic()
    res = fn(*a, **kw)
    return time.monotonic() - t0, res


def rows(body):
    """{check: (status, detail_html, fix_html)} of the result table."""
    out = {}
    for m in re.finditer(r'<tr class="doc-(\w+)"><td><span[^>]*>\w+</span></td><td><code>(.*?)</code></td>'
                         r'<td>(.*?)</td><td>(.*?)</td></tr>', body):
        out[html.unescape(m.group(2))] = (m.group(1), m.group(3), m.group(4))
    return out


def run(procs):
    tmp = procs.tmp
    state = os.path.join(tmp, "state")
    os.makedirs(state)
    _, url = lctest.start_redis(procs, durable=False)

    # the slow MX: a listening socket nobody accepts on (the kernel completes the handshake; no greeting ever)
    mx_port = free_port("127.0.0.61", also=("127.0.0.62", "127.0.0.63"))
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.63", mx_port))
    holder.listen(64)

    cert, key = os.path.join(tmp, "mx.crt"), os.path.join(tmp, "mx.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=mx1.good.test"], check=True, capture_output=True, timeout=60)
    start_fakemx(procs, "mx1", [f"127.0.0.61:{mx_port}"], ["--tls-cert", cert, "--tls-key", key])
    start_fakemx(procs, "mx2", [f"127.0.0.62:{mx_port}"], [])

    base = ["--set", f"redis.url={url}", "--set", f"state.dir={state}", "--set", f"sender.mx_port={mx_port}",
            "--set", "smtp.hostname=lists.good.test"]

    def cli(*args, dns_port=1, stdin=None):
        return subprocess.run([LISTCAST, *base, "--set", f"dns.servers=127.0.0.1:{dns_port}", *args], input=stdin,
                              capture_output=True, text=True, timeout=120)

    p = cli("dkim", "keygen", "good.test", "--selector", "e1", "--algorithm", "ed25519", "--json")
    check(p.returncode == 0, f"dkim keygen good.test: {p.stderr}")
    e1_txt = json.loads(p.stdout)["txt"]
    p = cli("dkim", "keygen", "keyonly.test", "--selector", "k1", "--algorithm", "ed25519")
    check(p.returncode == 0, f"dkim keygen keyonly.test: {p.stderr}")
    p = cli("list", "create", "news@good.test")
    check(p.returncode == 0, f"list create: {p.stderr}")
    p = cli("admin", "add", "alice", stdin=PASSWORD + "\n")
    check(p.returncode == 0, f"admin add: {p.stderr}")
    p = cli("admin", "token", "alice", "--json")
    bearer = {"Authorization": "Bearer " + json.loads(p.stdout)["token"]}

    mx = {
        "good.test": [(10, "mx1.good.test", "127.0.0.61"), (20, "mx2.good.test", "127.0.0.62")],
        "bad.test": [(0, ".", None)],
        "slow.test": [(10, "mx3.slow.test", "127.0.0.63")],
    }
    txt = {
        "good.test": ["v=spf1 ip4:127.0.0.70 -all"],
        "_dmarc.good.test": ["v=DMARC1; p=quarantine; rua=mailto:dmarc@good.test"],
        "e1._domainkey.good.test": [e1_txt],
        "xss.test": ["v=spf1 <script>alert(1)</script> -all"],
        "_dmarc.xss.test": ["v=DMARC1; p=none; rua=mailto:<b>x</b>@xss.test"],
    }
    hosts = {"out.good.test": "127.0.0.70"}
    ptr = {"127.0.0.70": "out.good.test"}
    dns_proc, dns_port = dnsmasq.start(tmp, mx, hosts=hosts, txt=txt, ptr=ptr, log_queries=True)
    try:
        port = free_port()
        cfg = [*base, "--set", f"dns.servers=127.0.0.1:{dns_port}", "--set", f"http.listen=127.0.0.1:{port}"]
        web = procs.start("webui", [WEBUI, *cfg])
        w = Web(port)
        wait_for("webui /healthz", lambda: w.req("GET", "/healthz")[0] == 200, 20)
        checks(procs, w, web, bearer, lambda *a: cli(*a, dns_port=dns_port), tmp)
    finally:
        dnsmasq.stop(dns_proc)
    return holder


def queries(tmp):
    time.sleep(0.3)  # dnsmasq writes its log lines a moment after answering
    return dnsmasq.query_count(tmp)


def checks(procs, w, web, bearer, cli, tmp):
    # ---- refused without a login, and no lookup made ----
    q0 = queries(tmp)
    for path in ("/doctor", "/doctor/good.test", "/doctor?domain=good.test"):
        st, hdr, _ = w.req("GET", path)
        check(st == 303 and hdr.get("location") == "/login", f"{path} without login redirects: {st}")
    for path in ("/api/doctor", "/api/doctor/good.test"):
        st, _, body = w.req("GET", path)
        check(st == 401 and "error" in json.loads(body), f"{path} without a token: {st} {body}")
    st, _, _ = w.req("GET", "/api/doctor/good.test", headers={"Authorization": "Bearer lct_" + "0" * 64})
    check(st == 401, f"API with a wrong token: {st}")
    check(queries(tmp) == q0, f"no DNS query for refused requests ({q0} -> {queries(tmp)})")

    st, _, _ = w.login("alice", PASSWORD)
    check(st == 303 and w.cookie, f"login: {st}")

    # ---- the domain page, links ----
    st, _, body = w.req("GET", "/doctor")
    check(st == 200 and 'href="/doctor/good.test"' in body and 'href="/doctor/keyonly.test"' in body,
          f"/doctor lists the list domain and the DKIM key domain: {st} {body[:1500]}")
    m = re.search(r"<td>good\.test</td><td>([^<]*)</td>", body)
    check(m and m.group(1) == "lists, DKIM keys", f"good.test has lists and DKIM keys: {m and m.group(1)}")
    m = re.search(r"<td>keyonly\.test</td><td>([^<]*)</td>", body)
    check(m and m.group(1) == "DKIM keys", f"keyonly.test has DKIM keys: {m and m.group(1)}")
    check('id="doctor-form"' in body and 'method="get"' in body, "a form to check any domain")
    st, _, body = w.req("GET", "/")
    check(st == 200 and '<a href="/doctor">' in body, "the nav links to /doctor")
    st, _, body = w.req("GET", "/lists/news@good.test")
    check(st == 200 and 'id="doctor-link" href="/doctor/good.test"' in body, f"the list page links to its domain: {st}")
    st, _, body = w.req("GET", "/api/doctor", headers=bearer)
    doms = {d["domain"]: d for d in json.loads(body)} if st == 200 else {}
    check(doms.get("good.test") == {"domain": "good.test", "lists": True, "dkim": True} and
          doms.get("keyonly.test", {}).get("lists") is False, f"/api/doctor: {st} {body}")

    # ---- the API equals the CLI ----
    p = cli("doctor", "good.test", "--ip", "127.0.0.70", "--json")
    want = json.loads(p.stdout)
    st, hdr, body = w.req("GET", "/api/doctor/good.test?ip=127.0.0.70", headers=bearer)
    got = json.loads(body) if st == 200 else None
    check(st == 200 and hdr.get("content-type") == "application/json", f"API answers JSON: {st} {body[:300]}")
    check(got == want, f"/api/doctor/good.test == `listcast doctor --json`:\n{got}\n{want}")
    byname = {c["check"]: c for c in got or []}
    check(byname.get("starttls:mx1.good.test", {}).get("status") == "ok" and
          byname.get("starttls:mx2.good.test", {}).get("status") == "warn" and
          byname.get("dkim:e1", {}).get("status") == "ok" and
          byname.get("fcrdns:127.0.0.70", {}).get("status") == "ok", f"statuses: {byname}")

    # ---- the page, the cache ----
    q1 = queries(tmp)
    st, _, body = w.req("GET", "/doctor/good.test?ip=127.0.0.70")
    r = rows(body)
    check(st == 200 and set(r) == set(byname), f"page shows every check: {st} {sorted(r)}")
    check(all(r[k][0] == byname[k]["status"] for k in r), "page statuses == JSON statuses")
    check(all(r[k][1] == html.escape(byname[k]["detail"]) for k in r), "page details == JSON details, escaped")
    check(queries(tmp) == q1, f"a result is reused within a minute: no DNS query ({q1} -> {queries(tmp)})")
    check(procs.log("webui").count("doctor domain=good.test started") == 1, "one run for the API and the page")
    st, _, body = w.req("GET", "/doctor")
    check(re.search(r"<td>good\.test</td><td>[^<]*</td><td>-</td>", body) is not None,
          "the list shows the result without addresses only (the check with ip= is another one)")

    st, _, body = w.req("GET", "/doctor?domain=bad.test")
    r = rows(body)
    fix = '_dmarc.bad.test. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@bad.test"'
    check(st == 200 and r.get("mx", ("",))[0] == "fail" and "null MX" in r["mx"][1], f"bad.test mx: {r.get('mx')}")
    check(r.get("dmarc", ("",))[0] == "fail" and r["dmarc"][2] == f'<pre class="fix">{html.escape(fix)}</pre>',
          f"bad.test dmarc: the record to publish, escaped: {r.get('dmarc')}")
    check(r.get("spf", ("",))[0] == "fail" and html.escape('bad.test. IN TXT "v=spf1 mx -all"') in r["spf"][2],
          f"bad.test spf fix: {r.get('spf')}")
    check('id="doctor-summary"' in body and "fail</strong>" in body, "summary line")
    st, _, body = w.req("GET", "/doctor")
    check(re.search(r"<td>bad\.test</td>", body) is None, "bad.test is not a sending domain of this appliance")

    # ---- HTML from the DNS and from the request ----
    st, _, body = w.req("GET", "/doctor/xss.test")
    r = rows(body)
    check(st == 200 and "<script>alert" not in body and "<b>x</b>" not in body and
          "&lt;script&gt;alert(1)&lt;/script&gt;" in body, f"records with HTML are escaped: {st} {r.get('spf')}")
    for path in ("/doctor?domain=" + urllib.parse.quote("<script>alert(1)</script>.test"),
                 "/doctor/" + urllib.parse.quote("<script>x</script>.test"),
                 "/doctor/good.test%22onmouseover%3D1",
                 "/doctor/good.test?ip=" + urllib.parse.quote("<script>"),
                 "/doctor/good.test?selector=" + urllib.parse.quote("a\"><b>"),
                 "/doctor/nodot"):
        st, _, body = w.req("GET", path)
        check(st == 400 and "<script" not in body and "<b>" not in body and "onmouseover" not in body,
              f"{path}: refused, not echoed: {st}")
    st, _, body = w.req("GET", "/api/doctor/" + urllib.parse.quote("<script>.test"), headers=bearer)
    check(st == 400 and "error" in json.loads(body), f"API refuses a bad domain: {st} {body}")
    st, _, _ = w.form("/doctor", {"csrf": w.csrf("/doctor"), "domain": "good.test"})
    check(st == 405, f"POST /doctor: {st}")

    # ---- slow checks do not stall the UI; at most two runs at once ----
    results = {}

    def slow(name, path, hdrs):
        t0 = time.monotonic()
        try:
            st_, _, body_ = Web(w.port).req("GET", path, headers=hdrs, cookie=False)
        except Exception as e:  # noqa: BLE001 - reported below
            st_, body_ = -1, repr(e)
        results[name] = (st_, body_, time.monotonic() - t0)

    slow_hdrs = dict(bearer)
    threads = [threading.Thread(target=slow, args=(f"a{i}", "/api/doctor/slow.test", slow_hdrs)) for i in range(4)]
    threads.append(threading.Thread(target=slow, args=("b", "/api/doctor/slow.test?ip=127.0.0.70", slow_hdrs)))
    for th in threads:
        th.start()
    wait_for("two slow runs", lambda: procs.log("webui").count("doctor domain=slow.test started") == 2, 10)
    dt, (st, _, _) = timed(w.req, "GET", "/healthz")
    check(st == 200 and dt < 2, f"/healthz answers while 5 requests wait on checks: {st} in {dt:.2f}s")
    dt, (st, _, body) = timed(w.req, "GET", "/")
    check(st == 200 and dt < 3 and 'id="lists"' in body, f"the dashboard answers meanwhile: {st} in {dt:.2f}s")
    dt, (st, hdr, body) = timed(w.req, "GET", "/api/doctor/slow.test?selector=x", headers=bearer)
    check(st == 429 and hdr.get("retry-after") == "60" and dt < 2, f"a third run at once: 429: {st} {body}")
    for th in threads:
        th.join(60)
    for name, (st, body, dt) in sorted(results.items()):
        got = json.loads(body) if st == 200 else []
        tls = {c["check"]: c for c in got}.get("starttls:mx3.slow.test", {})
        check(st == 200 and tls.get("status") == "fail" and "no 220 greeting" in tls.get("detail", "") and dt < 40,
              f"slow check {name}: {st} in {dt:.1f}s: {tls or body[:300]}")
    check(procs.log("webui").count("doctor domain=slow.test started") == 2, "four requests shared one run")

    # ---- SIGTERM while a check runs ----
    th = threading.Thread(target=slow, args=("c", "/api/doctor/slow.test?selector=y", slow_hdrs))
    th.start()
    wait_for("a third slow run", lambda: procs.log("webui").count("doctor domain=slow.test started") == 3, 10)
    t0 = time.monotonic()
    web.send_signal(signal.SIGTERM)
    try:
        rc = web.wait(10)
    except subprocess.TimeoutExpired:
        rc = None
    dt = time.monotonic() - t0
    th.join(15)
    check(rc == 0 and dt < 5, f"SIGTERM during a check: exit {rc} in {dt:.1f}s")
    st, body, _ = results.get("c", (None, "", 0))
    check(st in (200, -1), f"the waiting request got its (cut) answer or a closed connection: {st} {body[:200]}")
    if st == 200:
        check(any(c["check"].startswith("starttls") and c["status"] == "fail" for c in json.loads(body)),
              "the cut run reports the unfinished check as failed")


if __name__ == "__main__":
    sys.exit(main())
