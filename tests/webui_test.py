#!/usr/bin/env python3
"""webui_test: integration test of listcast-webui's security, public endpoints, pages and JSON API.

Starts redis-server and listcast-webui (plain HTTP, then HTTPS with a certificate made at test time) on loopback,
makes an admin with `listcast admin add` (password on stdin) and an API token with `listcast admin token`, then
checks: security headers, login (form token, wrong password, throttling per user and per client address),
session cookies (HttpOnly, SameSite=Strict, Secure over HTTPS), CSRF refusal of forms and JSON writes without
the session's token, expired sessions, bearer tokens, bounded bodies (413), malformed forms and JSON (400),
lists and settings, subscribers (add, disable, remove, prefix search, paging), CSV import (broken quoting,
duplicates, invalid addresses: refused rows reported, valid rows imported) and export, RFC 8058 one-click
unsubscribe and confirmation links (forged, expired and reused tokens change nothing), HTML escaping.
"""
import hashlib
import hmac
import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lctest  # noqa: E402
from lctest import LIBEXEC_DIR, LISTCAST, b32, free_port, wait_for  # noqa: E402

WEBUI = os.path.join(LIBEXEC_DIR, "listcast-webui")
PASSWORD = "correct horse battery"
T = lctest.Checks()
check = T.check


class Web:
    """A tiny HTTP client that keeps the session cookie and never follows redirects."""

    def __init__(self, port, tls=False):
        self.port, self.tls, self.cookie = port, tls, None

    def req(self, method, path, body=None, headers=None, cookie=True):
        if self.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=20, context=ctx)
        else:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        h = dict(headers or {})
        if cookie and self.cookie:
            h["Cookie"] = self.cookie
        if isinstance(body, str):
            body = body.encode()
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read().decode("utf-8", "replace")
            hdr = {k.lower(): v for k, v in r.getheaders()}
            cookies = r.headers.get_all("Set-Cookie") or []
            for ck in cookies:
                m = re.match(r"lcsid=([^;]*)", ck)
                if m:
                    self.cookie = f"lcsid={m.group(1)}" if m.group(1) else None
            hdr["set-cookie"] = "\n".join(cookies)
            return r.status, hdr, data
        finally:
            c.close()

    def form(self, path, fields, **kw):
        return self.req("POST", path, urllib.parse.urlencode(fields),
                        {"Content-Type": "application/x-www-form-urlencoded"}, **kw)

    def csrf(self, path="/"):
        _, _, body = self.req("GET", path)
        m = re.search(r'name="csrf" value="([^"]+)"', body)
        return m.group(1) if m else None

    def login(self, user, pw, expect=303):
        tok = self.csrf("/login")
        st, hdr, body = self.form("/login", {"csrf": tok, "user": user, "password": pw})
        if expect is not None and st != expect:
            print(f"# login {user}: {st} {body[:300]}")
        return st, hdr, body


def cli(cfg, *args, stdin=None):
    return subprocess.run([LISTCAST, *args, *cfg], input=stdin, capture_output=True, text=True, timeout=60)


def token(key, action, ident, expires):
    """A token as common/lc_token.c makes it."""
    i, e = b32(ident), b32(expires)
    msg = b"tok\0" + action.encode() + b"\0" + i.encode() + b"\0" + e.encode()
    big = int.from_bytes(hmac.new(key, msg, hashlib.sha256).digest()[:10], "big")
    mac = "".join(lctest.B32[(big >> (75 - 5 * k)) & 31] for k in range(16))
    return f"{action}{i}-{e}-{mac}"


def forge(tok):
    return tok[:-1] + ("0" if tok[-1] != "0" else "1")


def multipart(fields, file_name, file_data):
    boundary = "----lctestboundary7MA4YWxk"
    out = []
    for k, v in fields.items():
        out.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
    out.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n"
               f"Content-Type: text/csv\r\n\r\n{file_data}\r\n--{boundary}--\r\n")
    return "".join(out), f"multipart/form-data; boundary={boundary}"


def main():
    procs = lctest.Procs()
    try:
        run(procs)
    except AssertionError as e:
        check(False, str(e))
        sys.stdout.write(f"--- webui log (tail) ---\n{procs.log('webui')[-5000:]}\n")
    finally:
        for p in procs.procs:
            procs.stop(p)
        bad = lctest.sanitizer_reports(procs)
        check(not bad, f"no sanitizer reports ({bad})")
        procs.close()
    return T.done()


def start_webui(procs, name, cfg, port, extra=()):
    p = procs.start(name, [WEBUI, *cfg, "--set", f"http.listen=127.0.0.1:{port}", *extra])
    return p


def run(procs):
    tmp = procs.tmp
    _, url = lctest.start_redis(procs, durable=False)
    r = lctest.Redis(url)
    state = os.path.join(tmp, "state")
    os.makedirs(state)
    cfg = ["--set", f"redis.url={url}", "--set", f"state.dir={state}"]
    port = free_port()
    web = start_webui(procs, "webui", cfg, port)
    w = Web(port)
    wait_for("webui /healthz", lambda: w.req("GET", "/healthz")[0] == 200, 20)
    key = lctest.read_secret(os.path.join(state, "secret"))

    # ---- listcast admin ----
    p = cli(cfg, "admin", "add", "alice", stdin=PASSWORD + "\n")
    check(p.returncode == 0 and "alice" in p.stdout, f"admin add: {p.returncode} {p.stdout} {p.stderr}")
    p = cli(cfg, "admin", "add", "alice", stdin=PASSWORD + "\n")
    check(p.returncode == 1 and "exists" in p.stderr, f"admin add twice: {p.returncode} {p.stderr}")
    p = cli(cfg, "admin", "add", "bad user!", stdin=PASSWORD + "\n")
    check(p.returncode == 2, f"admin add bad name: {p.returncode} {p.stderr}")
    p = cli(cfg, "admin", "add", "bob", stdin="short\n")
    check(p.returncode == 2 and "8 to 1024" in p.stderr, f"admin add short password: {p.returncode} {p.stderr}")
    p = cli(cfg, "admin", "add", "bob", "--json", stdin=PASSWORD + "\n")
    check(p.returncode == 0 and json.loads(p.stdout) == {"user": "bob", "created": True}, f"--json: {p.stdout}")
    stored = r("HGET", "lc:admin:alice", "pwhash")
    check(stored.startswith("pbkdf2-sha256$200000$") and PASSWORD not in stored, f"slow salted hash: {stored}")
    check(stored != r("HGET", "lc:admin:bob", "pwhash").replace("bob", "alice"), "salts differ")
    p = cli(cfg, "admin", "token", "alice", "--json")
    api_token = json.loads(p.stdout)["token"] if p.returncode == 0 else ""
    check(p.returncode == 0 and api_token.startswith("lct_"), f"admin token: {p.stdout} {p.stderr}")
    check(r("HGET", "lc:apitokens", hashlib.sha256(api_token.encode()).hexdigest()) == "alice",
          "only the token's SHA-256 is stored")
    p = cli(cfg, "admin", "token", "nobody")
    check(p.returncode == 1, f"token for unknown admin: {p.returncode}")
    p = cli(cfg, "admin", "ls", "--json")
    check(p.returncode == 0 and json.loads(p.stdout) == ["alice", "bob"], f"admin ls: {p.stdout}")
    bearer = {"Authorization": "Bearer " + api_token}

    # ---- headers, anonymous access ----
    st, hdr, _ = w.req("GET", "/")
    check(st == 303 and hdr.get("location") == "/login", f"/ without login redirects: {st} {hdr.get('location')}")
    check(hdr.get("content-security-policy", "").startswith("default-src 'self'")
          and "frame-ancestors 'none'" in hdr["content-security-policy"], f"CSP: {hdr}")
    check(hdr.get("x-frame-options") == "DENY" and hdr.get("x-content-type-options") == "nosniff", "headers")
    st, hdr, body = w.req("GET", "/api/lists")
    check(st == 401 and "error" in json.loads(body) and "Bearer" in hdr.get("www-authenticate", ""),
          f"API without token: {st}")
    st, _, _ = w.req("GET", "/api/lists", headers={"Authorization": "Bearer lct_" + "0" * 64})
    check(st == 401, f"API with a wrong token: {st}")
    st, _, body = w.req("GET", "/api/lists", headers=bearer)
    check(st == 200 and json.loads(body) == [], f"API with the token: {st} {body}")
    st, _, _ = w.req("PUT", "/api/lists", headers=bearer)
    check(st == 405, f"PUT: {st}")

    # ---- login ----
    st, _, body = w.login("alice", "wrong password", expect=401)
    check(st == 401 and "Wrong user name or password" in body and w.cookie is None, f"wrong password: {st}")
    st, _, body = w.form("/login", {"user": "alice", "password": PASSWORD})
    check(st == 400 and w.cookie is None, f"login without form token: {st}")
    st, _, body = w.form("/login", {"user": "alice", "password": PASSWORD, "csrf": "1.00"})
    check(st == 403 and w.cookie is None, f"login with a forged form token: {st}")
    st, hdr, _ = w.login("alice", PASSWORD)
    ck = hdr.get("set-cookie", "")
    check(st == 303 and w.cookie and "HttpOnly" in ck and "SameSite=Strict" in ck and "Secure" not in ck,
          f"login: {st} {ck}")
    sid = w.cookie.split("=", 1)[1]
    check(r("TTL", f"lc:session:{sid}") > 40000, "session stored with expiry")
    st, _, body = w.req("GET", "/")
    check(st == 200 and "Dashboard" in body and "alice" in body, f"dashboard after login: {st}")
    csrf = w.csrf("/")
    check(csrf and len(csrf) == 64 and csrf == r("HGET", f"lc:session:{sid}", "csrf"), "CSRF token on the page")

    # throttling: per user ...
    t2 = Web(port)
    for _ in range(10):
        t2.login("bob", "nope nope", expect=None)
    st, hdr, body = t2.login("bob", PASSWORD, expect=None)
    check(st == 429 and "Too many failed logins" in body and "retry-after" in hdr, f"per-user throttle: {st}")
    check(t2.cookie is None, "no session while throttled")
    # ... and per client address (other user names, same address)
    for i in range(10):
        t2.login(f"ghost{i}", "nope nope", expect=None)
    st, _, _ = t2.login("alice", PASSWORD, expect=None)
    check(st == 429, f"per-address throttle: {st}")
    r("DEL", "lc:loginfail:ip:127.0.0.1", "lc:loginfail:user:bob")

    # ---- CSRF and bad input ----
    st, _, body = w.form("/lists", {"address": "csrf@lists.test", "policy": "open"})
    check(st == 403 and "CSRF" in body, f"form without CSRF token: {st}")
    st, _, _ = w.form("/lists", {"address": "csrf@lists.test", "policy": "open", "csrf": "0" * 64})
    check(st == 403, f"form with a wrong CSRF token: {st}")
    st, _, _ = w.req("POST", "/api/lists", json.dumps({"address": "csrf@lists.test"}))
    check(st == 403, f"JSON write by session without X-CSRF-Token: {st}")
    check(r("EXISTS", "lc:list:csrf@lists.test") == 0, "nothing created by forged requests")
    st, _, body = w.req("POST", "/lists", "address=%zz&csrf=" + csrf,
                        {"Content-Type": "application/x-www-form-urlencoded"})
    check(st == 400, f"malformed form: {st} {body[:200]}")
    for bad in ('{"address": "x@lists.test"', '[1,2]', '{"address": "x@lists.test",}', '{"a": {"b": 1}}',
                '{"address": "\\ud800"}', "", "\x00"):
        st, _, body = w.req("POST", "/api/lists", bad, headers=bearer)
        check(st == 400 and "JSON" in json.loads(body)["error"], f"malformed JSON {bad!r}: {st} {body}")
    st, _, body = w.req("POST", "/api/lists", "x" * (2 * 1024 * 1024), headers=bearer)
    check(st == 413, f"oversized body: {st}")
    st, _, body = w.req("POST", "/api/lists", json.dumps({"address": "not an address"}), headers=bearer)
    check(st == 400 and "bad list address" in json.loads(body)["error"], f"bad list address: {st} {body}")
    st, _, body = w.req("POST", "/api/lists", json.dumps({"address": "x@lists.test", "policy": "anarchy"}),
                        headers=bearer)
    check(st == 400 and r("EXISTS", "lc:list:x@lists.test") == 0, f"bad policy: {st} {body}")

    # ---- lists ----
    st, hdr, _ = w.form("/lists", {"address": "News@Lists.Test", "policy": "open", "owner": "o@example.test",
                                   "csrf": csrf})
    check(st == 303 and hdr.get("location") == "/lists/news@lists.test", f"create list by form: {st} {hdr}")
    check(r("HGET", "lc:list:news@lists.test", "policy") == "open" and
          r("SISMEMBER", "lc:domains", "lists.test") == 1, "list stored like `listcast list create`")
    st, _, body = w.req("POST", "/api/lists", json.dumps({"address": "news@lists.test"}), headers=bearer)
    check(st == 409, f"create twice: {st}")
    st, _, body = w.req("POST", "/api/lists", json.dumps({"address": "api@lists.test", "policy": "announce"}),
                        headers={**bearer, "X-Ignored": "1"})
    check(st == 201 and json.loads(body)["policy"] == "announce", f"create by API: {st} {body}")
    st, _, body = w.req("POST", "/api/lists", json.dumps({"address": "sess@lists.test"}),
                        headers={"X-CSRF-Token": csrf})
    check(st == 201, f"create by session with X-CSRF-Token: {st} {body}")
    st, hdr, _ = w.form("/lists/news@lists.test", {"policy": "moderated", "subject_prefix": "[news]",
                                                   "footer": "bye <b>", "moderators": "m@example.test",
                                                   "csrf": csrf})
    check(st == 303 and r("HGET", "lc:list:news@lists.test", "subject_prefix") == "[news]", f"settings: {st}")
    st, _, body = w.req("GET", "/lists/news@lists.test")
    check(st == 200 and "bye &lt;b&gt;</textarea>" in body and "bye <b>" not in body, "settings page escapes values")
    st, _, body = w.req("POST", "/api/lists/news@lists.test", json.dumps({"max_message_size": "lots"}),
                        headers=bearer)
    check(st == 400 and r("HGET", "lc:list:news@lists.test", "max_message_size") is None, f"bad setting: {st}")
    st, _, body = w.req("GET", "/api/lists/news@lists.test", headers=bearer)
    j = json.loads(body)
    check(st == 200 and j["policy"] == "moderated" and j["moderators"] == "m@example.test", f"GET list: {body}")
    # the numeric and one-word settings (schema/lc_listset.c): defaults shown, set, refused, reset
    check(j.get("bounce_threshold") == "5" and j.get("probe") == "1" and j.get("probe_delay") == "900" and
          j.get("dmarc_mitigation") == "munge" and j.get("list_unsubscribe") == "personal", f"defaults: {body}")
    st, _, body = w.req("POST", "/api/lists/news@lists.test", json.dumps(
        {"bounce_threshold": 3, "bounce_soft": "0.25", "probe": "0", "dmarc_mitigation": "Wrap"}), headers=bearer)
    j = json.loads(body) if st == 200 else {}
    check(st == 200 and j.get("bounce_threshold") == "3" and j.get("bounce_soft") == "0.25" and
          r("HGET", "lc:list:news@lists.test", "probe") == "0" and
          r("HGET", "lc:list:news@lists.test", "dmarc_mitigation") == "wrap", f"tuning by API: {st} {body}")
    for bad in ({"bounce_threshold": "0"}, {"bounce_soft": "-1"}, {"probe_delay": "1.5"}, {"probe": "yes"},
                {"list_unsubscribe": "https"}, {"bounce_hard": "1e3"}, {"bounce_stale_days": "9" * 40}):
        st, _, body = w.req("POST", "/api/lists/news@lists.test", json.dumps({**bad, "subject_prefix": "[x]"}),
                            headers=bearer)
        name = next(iter(bad))
        check(st == 400 and name in body and r("HGET", "lc:list:news@lists.test", "subject_prefix") == "[news]",
              f"bad {bad}: {st} {body}")
    st, _, body = w.req("POST", "/api/lists/news@lists.test", json.dumps({"bounce_threshold": ""}), headers=bearer)
    check(st == 200 and json.loads(body).get("bounce_threshold") == "5" and
          r("HEXISTS", "lc:list:news@lists.test", "bounce_threshold") == 0, f"reset to default: {st} {body}")
    st, _, body = w.req("GET", "/lists/news@lists.test")
    check(st == 200 and 'name="bounce_threshold"' in body and 'placeholder="5"' in body and
          '<select name="probe"><option>1</option><option selected>0</option>' in body, "tuning form fields")
    st, hdr, _ = w.form("/lists/news@lists.test", {"probe_delay": "60", "probe": "1", "csrf": csrf})
    check(st == 303 and r("HGET", "lc:list:news@lists.test", "probe_delay") == "60" and
          r("HGET", "lc:list:news@lists.test", "probe") == "1", f"tuning by form: {st}")
    st, _, _ = w.req("GET", "/api/lists/none@lists.test", headers=bearer)
    check(st == 404, f"unknown list: {st}")

    # ---- subscribers ----
    sub_path = "/lists/news@lists.test/subscribers"
    st, hdr, _ = w.form(sub_path, {"action": "add", "address": "Alice@Example.TEST", "csrf": csrf})
    check(st == 303 and r("HGET", "lc:sub:news@lists.test:alice@example.test", "status") == "active" and
          r("HEXISTS", "lc:active:news@lists.test", "alice@example.test") == 1, f"add by form: {st}")
    sid_alice = r("HGET", "lc:sub:news@lists.test:alice@example.test", "id")
    check(r("HGET", "lc:subids", sid_alice) == "news@lists.test alice@example.test", "lc:subids entry")
    st, _, body = w.form(sub_path, {"action": "add", "address": "not-an-address", "csrf": csrf})
    check(st == 400 and "Refused" in body, f"invalid address by form: {st}")
    st, _, _ = w.form(sub_path, {"action": "explode", "address": "a@b.test", "csrf": csrf})
    check(st == 400, f"unknown action: {st}")
    st, _, body = w.req("POST", "/api/" + sub_path[1:], json.dumps(
        {"action": "add", "addresses": ["ok@example.test", "bad address"]}), headers=bearer)
    check(st == 400 and "bad address" in body and r("EXISTS", "lc:sub:news@lists.test:ok@example.test") == 0,
          f"API add with an invalid address changes nothing: {st} {body}")
    addrs = [f"user{i:03d}@d{i % 7}.test" for i in range(120)]
    st, _, body = w.req("POST", "/api/" + sub_path[1:], json.dumps({"action": "add", "addresses": addrs}),
                        headers=bearer)
    check(st == 200 and json.loads(body) == {"changed": 120, "unchanged": 0}, f"API add: {st} {body}")
    st, _, _ = w.form(sub_path, {"action": "disable", "address": "user001@d1.test", "csrf": csrf})
    check(r("HGET", "lc:sub:news@lists.test:user001@d1.test", "status") == "disabled" and
          r("HEXISTS", "lc:active:news@lists.test", "user001@d1.test") == 0, "disable")
    st, _, _ = w.form(sub_path, {"action": "remove", "address": "user002@d2.test", "csrf": csrf})
    check(r("HGET", "lc:sub:news@lists.test:user002@d2.test", "status") == "unsubscribed" and
          r("HEXISTS", "lc:active:news@lists.test", "user002@d2.test") == 0, "remove")
    p = cli(cfg, "sub", "show", "news@lists.test", "user002@d2.test", "--json")
    check(p.returncode == 0 and json.loads(p.stdout)["status"] == "unsubscribed", "CLI sees the web's change")
    r("HSET", "lc:sub:news@lists.test:user001@d1.test", "probe", "sent")  # as the bounce daemon marks a probe
    st, _, body = w.req("GET", "/api" + sub_path + "?prefix=user00&limit=3", headers=bearer)
    pr = {x["address"]: x["probe"] for x in json.loads(body)["subscribers"]} if st == 200 else {}
    check(pr.get("user001@d1.test") == "sent" and pr.get("user000@d0.test", "x") is None,
          f"API subscribers: the bounce probe's state, null without one ({pr})")
    st, _, body = w.req("GET", sub_path + "?prefix=user001")
    check(st == 200 and "disabled <span class=\"probe\">(probe sent)</span>" in body,
          "subscribers page: the probe's state beside the status")
    r("HDEL", "lc:sub:news@lists.test:user001@d1.test", "probe")
    st, _, body = w.req("GET", "/api" + sub_path + "?prefix=user01&limit=5", headers=bearer)
    j = json.loads(body)
    got = [x["address"] for x in j["subscribers"]]
    check(st == 200 and got == [f"user{i:03d}@d{i % 7}.test" for i in range(10, 15)] and j["next"] == got[-1],
          f"prefix search + limit: {got}")
    st, _, body = w.req("GET", "/api" + sub_path + "?prefix=user01&limit=5&after=" + got[-1], headers=bearer)
    got2 = [x["address"] for x in json.loads(body)["subscribers"]]
    check(got2 == [f"user{i:03d}@d{i % 7}.test" for i in range(15, 20)], f"next page: {got2}")
    st, _, body = w.req("GET", sub_path + "?prefix=user00")
    check(st == 200 and "user009@d2.test" in body and "user010" not in body and 'id="next"' not in body,
          "subscriber page with prefix")

    # ---- CSV import ----
    csv_text = ("address,name\r\n"
                "new1@example.test,One\r\n"
                "\"new2@example.test\",\"Two, quoted\"\r\n"
                "new1@example.test,duplicate\r\n"
                "broken\"quote@example.test,x\r\n"
                "\"unterminated@example.test,x\r\n"
                "not-an-address,x\r\n"
                "user005@d5.test,existing\r\n"
                "\r\n"
                "new3@example.test")
    body, ctype = multipart({"csrf": csrf}, "subs.csv", csv_text)
    st, _, page = w.req("POST", "/lists/news@lists.test/import", body, {"Content-Type": ctype})
    check(st == 200 and "3 added" in page and "1 already subscribed" in page and "4 refused" in page,
          f"form import: {st} {re.findall(r'import-summary[^<]*', page)}")
    check("duplicate address in the file" in page and "broken quoting" in page and "invalid address" in page,
          "refused rows reported with reasons")
    for a in ("new1@example.test", "new2@example.test", "new3@example.test"):
        check(r("HEXISTS", "lc:active:news@lists.test", a) == 1, f"{a} imported")
    check(r("LLEN", "lc:importerr:1") == 4 and r("HGET", "lc:import:1", "state") == "done", "import report stored")
    st, _, page = w.req("GET", "/imports/1")
    check(st == 200 and "4 refused" in page, f"import page: {st}")
    body, ctype = multipart({"csrf": "0" * 64}, "subs.csv", "evil@example.test\n")
    st, _, _ = w.req("POST", "/lists/news@lists.test/import", body, {"Content-Type": ctype})
    check(st == 403 and r("EXISTS", "lc:sub:news@lists.test:evil@example.test") == 0, f"import, wrong CSRF: {st}")
    body, ctype = multipart({}, "subs.csv", "evil@example.test\n")
    st, _, _ = w.req("POST", "/lists/news@lists.test/import", body, {"Content-Type": ctype})
    check(st == 403 and r("EXISTS", "lc:sub:news@lists.test:evil@example.test") == 0, f"import, no CSRF: {st}")
    st, _, body = w.req("POST", "/api/lists/news@lists.test/import", "a1@x.test\na2@x.test\nbad\n",
                        {**bearer, "Content-Type": "text/csv"})
    j = json.loads(body)
    check(st == 200 and j["added"] == 2 and j["refused"] == 1 and j["refused_rows"][0]["line"] == 3,
          f"API import: {st} {body}")
    st, _, _ = w.req("POST", "/api/lists/news@lists.test/import", "a3@x.test\n",
                     {**bearer, "Content-Type": "application/json"})
    check(st == 415, f"import with a wrong type: {st}")
    st, hdr, body = w.req("GET", "/lists/news@lists.test/export")
    lines = body.strip().split("\r\n")
    check(st == 200 and hdr.get("content-type", "").startswith("text/csv") and lines[0].startswith("address,") and
          len(lines) == 1 + r("ZCARD", "lc:members:news@lists.test"), f"export: {st} {len(lines)}")

    # ---- one-click unsubscribe ----
    sid_u = int(r("HGET", "lc:sub:news@lists.test:user003@d3.test", "id"))
    tok = token(key, "o", sid_u, 0)
    st, _, body = w.req("GET", "/u/" + tok, cookie=False)
    check(st == 200 and 'name="List-Unsubscribe" value="One-Click"' in body and
          r("HGET", "lc:sub:news@lists.test:user003@d3.test", "status") == "active", "GET one-click changes nothing")
    st, _, body = w.req("POST", "/u/" + forge(tok), "List-Unsubscribe=One-Click",
                        {"Content-Type": "application/x-www-form-urlencoded"}, cookie=False)
    check(st == 400 and "forged" in body and
          r("HGET", "lc:sub:news@lists.test:user003@d3.test", "status") == "active", f"forged one-click: {st}")
    st, _, body = w.req("POST", "/u/" + tok, "", cookie=False)
    check(st == 400 and r("HGET", "lc:sub:news@lists.test:user003@d3.test", "status") == "active",
          f"one-click POST without the body: {st}")
    st, _, body = w.req("POST", "/u/" + tok, "List-Unsubscribe=One-Click",
                        {"Content-Type": "application/x-www-form-urlencoded"}, cookie=False)
    check(st == 200 and r("HGET", "lc:sub:news@lists.test:user003@d3.test", "status") == "unsubscribed" and
          r("HEXISTS", "lc:active:news@lists.test", "user003@d3.test") == 0, f"one-click POST: {st}")
    st, _, body = w.req("POST", "/u/" + tok, "List-Unsubscribe=One-Click", cookie=False)
    check(st == 200 and "already" in body, "one-click twice")
    st, _, _ = w.req("GET", "/u/" + token(key, "s", sid_u, 0), cookie=False)
    check(st == 400, "a subscribe token is not a one-click token")
    st, _, _ = w.req("GET", "/u/<script>", cookie=False)
    check(st in (400, 404), f"malformed token: {st}")

    # ---- confirmation links ----
    r("HSET", "lc:sub:news@lists.test:pending@example.test", "id", 9001, "address", "pending@example.test",
      "list", "news@lists.test", "status", "unconfirmed", "bounce_score", "0", "bounces", "0", "created", 1)
    r("HSET", "lc:subids", 9001, "news@lists.test pending@example.test")
    r("ZADD", "lc:members:news@lists.test", 0, "pending@example.test")
    now = int(time.time())
    ctok = token(key, "s", 9001, now + 3600)
    st, _, body = w.req("GET", "/confirm/" + ctok, cookie=False)
    check(st == 200 and "Confirm subscription" in body and
          r("HGET", "lc:sub:news@lists.test:pending@example.test", "status") == "unconfirmed", "GET confirm page")
    st, _, body = w.req("POST", "/confirm/" + token(key, "s", 9001, now - 10), cookie=False)
    check(st == 410 and "expired" in body and
          r("HGET", "lc:sub:news@lists.test:pending@example.test", "status") == "unconfirmed", f"expired: {st}")
    st, _, body = w.req("POST", "/confirm/" + forge(ctok), cookie=False)
    check(st == 400 and r("HGET", "lc:sub:news@lists.test:pending@example.test", "status") == "unconfirmed",
          f"forged confirm: {st}")
    st, _, body = w.req("POST", "/confirm/" + ctok, cookie=False)
    check(st == 200 and r("HGET", "lc:sub:news@lists.test:pending@example.test", "status") == "active" and
          r("HGET", "lc:active:news@lists.test", "pending@example.test") == "9001", f"confirm: {st} {body[-300:]}")
    st, _, body = w.req("POST", "/confirm/" + ctok, cookie=False)
    check(st == 409 and "used" in body, f"reused token: {st}")
    utok = token(key, "u", 9001, now + 3600)
    st, _, body = w.req("POST", "/confirm/" + utok, cookie=False)
    check(st == 200 and r("HGET", "lc:sub:news@lists.test:pending@example.test", "status") == "unsubscribed",
          f"confirm unsubscribe: {st}")

    # ---- moderation queue (held posts as listd writes them) ----
    for pid, subj in ((501, "<i>held one</i>"), (502, "held two")):
        r("HSET", f"lc:held:{pid}", "list", "news@lists.test", "from", "stranger@example.test", "size", 60,
          "created", now, "msg", f"From: stranger@example.test\r\nSubject: {subj}\r\n\r\nbody\r\n")
        r("EXPIRE", f"lc:held:{pid}", 3600)
        r("ZADD", "lc:heldidx", pid, pid)
    r("ZADD", "lc:heldidx", 400, 400, 500, 500, 503, "junk")  # holds gone (expired): no hash behind them
    st, _, body = w.req("GET", "/moderation")
    check(st == 200 and body.count('class="held"') == 2 and "&lt;i&gt;held one&lt;/i&gt;" in body,
          f"moderation queue page: {st}")
    st, _, body = w.req("GET", "/api/moderation", headers=bearer)
    check(st == 200 and [x["id"] for x in json.loads(body)["held"]] == [501, 502], f"API queue: {body[:300]}")
    check(r("ZRANGE", "lc:heldidx", 0, -1) == ["501", "502"],
          f"reading the queue drops the index entries of holds that are gone: {r('ZRANGE', 'lc:heldidx', 0, -1)}")
    st, _, _ = w.form("/moderation/501", {"action": "approve"})
    check(st == 403 and r("EXISTS", "lc:held:501") == 1, f"approve without CSRF token: {st}")
    st, _, _ = w.form("/moderation/501", {"action": "publish", "csrf": csrf})
    check(st == 400 and r("EXISTS", "lc:held:501") == 1, f"unknown moderation action: {st}")
    slen = r("XLEN", "lc:stream:posts")
    st, hdr, _ = w.form("/moderation/501", {"action": "approve", "csrf": csrf})
    check(st == 303 and r("EXISTS", "lc:held:501") == 0 and r("HGET", "lc:post:501", "state") == "queued" and
          r("GET", "lc:msg:501").startswith("From: stranger") and r("XLEN", "lc:stream:posts") == slen + 1 and
          r("ZSCORE", "lc:posts:news@lists.test", 501) is not None, f"approve: {st}")
    st, _, body = w.form("/moderation/501", {"action": "approve", "csrf": csrf})
    check(st == 404 and "no longer held" in body and r("XLEN", "lc:stream:posts") == slen + 1,
          f"approve twice: {st}")
    st, _, body = w.req("POST", "/api/moderation/502", json.dumps({"action": "reject"}), headers=bearer)
    check(st == 200 and json.loads(body)["result"] == "rejected" and r("EXISTS", "lc:held:502") == 0 and
          r("EXISTS", "lc:post:502") == 0, f"API reject: {st} {body}")
    check(r("EXISTS", "lc:heldidx") == 0, "approving and rejecting take the posts out of the queue's index")
    # a queue longer than one page of the index (256) and than what is shown (200), with stale entries between
    for pid in range(1000, 1400):
        if pid % 3 == 0:
            r("ZADD", "lc:heldidx", pid, pid)  # expired hold
            continue
        r("HSET", f"lc:held:{pid}", "list", "news@lists.test", "from", "s@example.test", "size", 9, "created", now,
          "msg", "Subject: many\r\n\r\nx\r\n")
        r("ZADD", "lc:heldidx", pid, pid)
    st, _, body = w.req("GET", "/api/moderation", headers=bearer)
    j = json.loads(body) if st == 200 else {}
    want = [p for p in range(1000, 1400) if p % 3][:200]
    check([x["id"] for x in j.get("held", [])] == want and j.get("partial") is True,
          f"a long queue: the first 200 live holds by id, partial ({len(j.get('held', []))} shown)")
    for pid in range(1000, 1400):
        r("DEL", f"lc:held:{pid}")
    st, _, body = w.req("GET", "/api/moderation", headers=bearer)
    check(st == 200 and json.loads(body)["held"] == [] and r("EXISTS", "lc:heldidx") == 0,
          "every hold gone: an empty queue and an empty index")
    st, _, _ = w.req("POST", "/api/moderation/999", json.dumps({"action": "reject"}), headers=bearer)
    check(st == 404, f"reject unknown: {st}")

    # ---- bounce report (the bounce daemon's counters) ----
    r("HSET", "lc:bncstat:reason:news@lists.test", "mailbox_unknown", 7, "<b>quota</b>", 3)
    r("HSET", "lc:bncstat:domain:news@lists.test", "d1.test", 10)
    r("HSET", "lc:bncstat:post:news@lists.test", "7", 10)
    st, _, body = w.req("GET", "/lists/news@lists.test/bounces")
    check(st == 200 and "mailbox_unknown" in body and "70.0%" in body and "&lt;b&gt;quota&lt;/b&gt;" in body and
          'href="/posts/7"' in body, f"bounce report page: {st}")
    st, _, body = w.req("GET", "/api/lists/news@lists.test/bounces", headers=bearer)
    j = json.loads(body)
    check(st == 200 and j["by_reason"] == {"mailbox_unknown": 7, "<b>quota</b>": 3} and j["by_post"] == {"7": 10},
          f"bounce report API: {body}")

    # ---- dashboard, posts, escaping ----
    r("HSET", "lc:list:xss@lists.test", "address", "xss@lists.test", "policy", "open",
      "owner", "<script>alert(1)</script>@x.test", "id", 99, "created", 1)
    r("SADD", "lc:lists", "xss@lists.test")
    r("HSET", "lc:post:7", "id", 7, "list", "xss@lists.test", "from", '"evil<b>"@x.test', "state", "sending",
      "created", now - 10, "recipients", 100, "delivered", 40, "bounced", 10, "deferred", 5, "size", 1000)
    r("ZADD", "lc:posts:xss@lists.test", now - 10, 7)
    r("HSET", "lc:postdom:7", "d1.test:delivered", 40, "d1.test:bounced", 10)
    st, _, body = w.req("GET", "/")
    check(st == 200 and "<script>alert" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body,
          "dashboard escapes values")
    check('<progress value="50" max="100">' in body and "<svg" in body and "chart-bounced" in body,
          "progress bars and charts")
    st, _, body = w.req("GET", "/posts/7")
    check(st == 200 and "d1.test" in body and "&quot;evil&lt;b&gt;&quot;@x.test" in body, f"post page: {st}")
    st, _, body = w.req("GET", "/api/posts/7", headers=bearer)
    check(st == 200 and json.loads(body)["pending"] == 50, f"API post: {body}")
    st, _, _ = w.req("GET", "/posts/999")
    check(st == 404, "unknown post page")
    # deferred recipients (lc:postdefer:ID, written by the sender): first 200 shown, "and N more", escaped
    st, _, body = w.req("GET", "/posts/7")
    check(st == 200 and "Deferred recipients" in body and "No recipient is waiting" in body, "post page: no deferrals")
    r("HSET", "lc:postdefer:7", "<img src=x>@d1.test", f"{now - 5} attempt 3: 451 4.7.1 <b>greylisted</b> & later")
    st, _, body = w.req("GET", "/posts/7")
    check(st == 200 and 'id="deferrals"' in body and "<img src" not in body and "<b>greylisted" not in body and
          "&lt;img src=x&gt;@d1.test" in body and "451 4.7.1 &lt;b&gt;greylisted&lt;/b&gt; &amp; later" in body,
          "post page: deferred recipients with their last replies, escaped")
    st, _, body = w.req("GET", "/api/posts/7", headers=bearer)
    j = json.loads(body) if st == 200 else {}
    check(j.get("deferrals_total") == 1 and j.get("deferrals") == [
          {"address": "<img src=x>@d1.test", "reply": "451 4.7.1 <b>greylisted</b> & later", "at": now - 5,
           "attempt": 3}], f"API post: deferrals with reply, time and attempt: {j.get('deferrals')}")
    for i in range(202):
        r("HSET", "lc:postdefer:7", f"u{i:03d}@d1.test", f"{now - 60} attempt 1: 421 4.3.2 busy {i}")
    st, _, body = w.req("GET", "/posts/7")
    check(st == 200 and body.count("<tr><td>u") + body.count("<tr><td>&lt;img") == 200 and "and 3 more" in body,
          "post page: at most 200 deferred recipients and \"and 3 more\"")
    st, _, body = w.req("GET", "/api/posts/7", headers=bearer)
    j = json.loads(body) if st == 200 else {}
    check(j.get("deferrals_total") == 203 and len({d["address"] for d in j.get("deferrals", [])}) == 200,
          f"API post: 200 distinct deferrals of 203 ({len(j.get('deferrals', []))})")
    r("DEL", "lc:postdefer:7")

    # ---- sessions: expiry and logout ----
    r("DEL", f"lc:session:{sid}")
    st, hdr, _ = w.req("GET", "/")
    check(st == 303 and hdr.get("location") == "/login", f"expired session redirects to login: {st}")
    st, _, body = w.form("/lists", {"address": "late@lists.test", "csrf": csrf})
    check(st == 403 and r("EXISTS", "lc:list:late@lists.test") == 0, f"POST with an expired session: {st}")
    w.cookie = None
    w.login("alice", PASSWORD)
    csrf2 = w.csrf("/")
    check(csrf2 != csrf, "a new session gets a new CSRF token")
    st, hdr, _ = w.form("/logout", {"csrf": csrf2})
    check(st == 303 and "Max-Age=0" in hdr.get("set-cookie", ""), f"logout: {st}")
    check(r("KEYS", "lc:session:*") == [], "logout deletes the session")

    # ---- stop cleanly ----
    web.send_signal(signal.SIGTERM)
    check(web.wait(timeout=15) == 0, "webui exits 0 on SIGTERM")

    # ---- HTTPS ----
    certdir = os.path.join(tmp, "tls")
    os.makedirs(certdir)
    keyf, certf = os.path.join(certdir, "key.pem"), os.path.join(certdir, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keyf, "-out", certf,
                    "-days", "2", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True, timeout=60)
    bad = subprocess.run([WEBUI, *cfg, "--set", "http.tls_cert=" + certf], capture_output=True, text=True,
                         timeout=20)
    check(bad.returncode == 2 and "http.tls_key" in bad.stderr, f"cert without key: {bad.returncode}")
    tport = free_port()
    start_webui(procs, "webui-tls", cfg, tport, ["--set", f"http.tls_cert={certf}", "--set", f"http.tls_key={keyf}"])
    ws = Web(tport, tls=True)
    wait_for("webui https", lambda: ws.req("GET", "/healthz")[0] == 200, 20)
    st, hdr, _ = ws.login("alice", PASSWORD)
    check(st == 303 and "Secure" in hdr.get("set-cookie", ""), f"HTTPS login sets a Secure cookie: {hdr}")
    st, _, body = ws.req("GET", "/")
    check(st == 200 and "Dashboard" in body, "dashboard over HTTPS")
    r.close()


if __name__ == "__main__":
    sys.exit(main())
