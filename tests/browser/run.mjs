// run.mjs: browser test of the listcast admin web UI with playwright-core driving Debian's chromium (headless).
//
// Started by tests/browser_test.py, which runs the whole appliance (`listcast up`, a fake MX as relay) on loopback
// and passes: LC_WEB (base URL), LC_USER / LC_PASSWORD (an admin made with `listcast admin add`), LC_SMTP_PORT
// (listd), LC_MAILDIR (where the fake MX writes each delivered copy), LC_SHOTS (screenshot directory).
// Steps: log in, create a list, edit its settings, import a CSV, post to the list by SMTP and watch the post's
// progress reach 100%, unsubscribe by one-click from a delivered copy's List-Unsubscribe URL (GET shows a button,
// the button unsubscribes), and an RFC 8058 POST. A screenshot of each page is saved. Exit status 0 when every
// check passed.
import { chromium } from "playwright-core";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";

const WEB = process.env.LC_WEB;
const SHOTS = process.env.LC_SHOTS;
const LIST = "news@lists.test";
let passed = 0, failed = 0;

function check(cond, what) {
  if (cond) { passed++; console.log(`ok   ${what}`); } else { failed++; console.log(`FAIL ${what}`); }
  return cond;
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

// smtp sends one message to listd with a minimal SMTP dialogue; resolves to the reply to the message itself.
function smtp(port, from, to, body) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1");
    const steps = [`EHLO browser.test`, `MAIL FROM:<${from}>`, `RCPT TO:<${to}>`, "DATA",
      body.replace(/\n/g, "\r\n") + "\r\n.", "QUIT"];
    let buf = "";
    const replies = [];
    const timer = setTimeout(() => { s.destroy(); reject(new Error("smtp timeout")); }, 20000);
    s.on("data", (d) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf("\r\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (line[3] === "-") continue; // a multi-line reply goes on
        replies.push(line);
        if (!/^[23]/.test(line)) { clearTimeout(timer); s.destroy(); reject(new Error(`smtp: ${line}`)); return; }
        const next = steps.shift();
        if (next === undefined) { clearTimeout(timer); s.end(); resolve(replies[replies.length - 2]); return; }
        s.write(next + "\r\n");
      }
    });
    s.on("error", (e) => { clearTimeout(timer); reject(e); });
  });
}

async function waitFor(what, fn, seconds) {
  const end = Date.now() + seconds * 1000;
  let last;
  while (Date.now() < end) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.LC_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.setDefaultTimeout(15000);
  try {
    // ---- log in ----
    await page.goto(WEB + "/");
    check(page.url().endsWith("/login"), `/ redirects to the login page (${page.url()})`);
    await shot(page, "login");
    await page.fill("#user", process.env.LC_USER);
    await page.fill("#password", "wrong password");
    await page.click("#login");
    check((await page.textContent("#login-error")).includes("Wrong user name or password"), "wrong password refused");
    await page.fill("#password", process.env.LC_PASSWORD);
    await page.click("#login");
    await page.waitForURL(WEB + "/");
    check((await page.textContent("h2.title")) === "Dashboard", "logged in: dashboard");
    const cookies = await page.context().cookies();
    const sc = cookies.find((c) => c.name === "lcsid");
    check(sc && sc.httpOnly && sc.sameSite === "Strict", "session cookie is HttpOnly and SameSite=Strict");

    // ---- create a list, edit its settings ----
    await page.fill("#new-list", LIST);
    await page.selectOption("#new-policy", "open");
    await page.click("#create-list button[type=submit]");
    await page.waitForURL(/\/lists\/news@lists\.test$/);
    check((await page.textContent("h2.title")) === LIST, "list created, settings page shown");
    await page.fill("input[name=subject_prefix]", "[news]");
    await page.fill("textarea[name=footer]", "To leave: the link in List-Unsubscribe. <b>not bold</b>");
    await page.click("#save");
    await page.waitForSelector("#saved");
    check(await page.inputValue("input[name=subject_prefix]") === "[news]", "settings saved");
    await shot(page, "list-settings");

    // ---- import a CSV ----
    const rows = ["address,name"];
    for (let i = 0; i < 30; i++) rows.push(`reader${String(i).padStart(2, "0")}@d${i % 3}.test,Reader ${i}`);
    rows.push("reader05@d2.test,duplicate", "not-an-address,x", "\"broken@d1.test,x");
    await page.goto(WEB + "/lists/" + LIST + "/import");
    await shot(page, "import-form");
    await page.setInputFiles("#csv", { name: "readers.csv", mimeType: "text/csv", buffer: Buffer.from(rows.join("\r\n")) });
    await page.click("#upload");
    await page.waitForSelector("#import-summary");
    const summary = await page.textContent("#import-summary");
    check(summary.includes("30 added") && summary.includes("3 refused"), `import report: ${summary}`);
    check((await page.locator("#refused tbody tr").count()) === 3, "refused rows listed");
    await shot(page, "import-report");
    await page.goto(WEB + "/lists/" + LIST + "/subscribers?limit=10");
    check((await page.locator("#subs tbody tr").count()) === 10, "subscriber page of 10");
    await page.click("#next");
    check((await page.locator("#subs tbody tr").first().textContent()).includes("reader10@d1.test"), "next page");
    await page.goto(WEB + "/lists/" + LIST + "/subscribers?prefix=reader2");
    check((await page.locator("#subs tbody tr").count()) === 10, "prefix search");
    await shot(page, "subscribers");

    // ---- post and watch the progress reach 100% ----
    const reply = await smtp(Number(process.env.LC_SMTP_PORT), "editor@example.test", LIST,
      `From: editor@example.test\nTo: ${LIST}\nSubject: browser test\n\nHello readers.\n`);
    check(/^250/.test(reply), `post accepted by listd: ${reply}`);
    await page.goto(WEB + "/");
    await waitFor("the post on the dashboard", async () => {
      await page.reload();
      return (await page.locator("#posts tbody tr").count()) > 0;
    }, 30);
    await waitFor("100% on the dashboard", async () => {
      await page.reload();
      return (await page.locator("#posts tbody tr .pct").first().textContent()) === "100%";
    }, 60);
    check(true, "post progress reached 100% on the dashboard");
    await shot(page, "dashboard");
    await page.click("#posts tbody tr a");
    await waitFor("post state done", async () => {
      await page.reload();
      return (await page.textContent("#post-state")).includes("done");
    }, 30);
    check((await page.locator("#domains tbody tr").count()) === 3, "post detail: per-domain table of 3 domains");
    await shot(page, "post");

    // ---- one-click unsubscribe from a delivered copy ----
    const maildir = process.env.LC_MAILDIR;
    const urls = await waitFor("delivered copies", () => {
      const out = [];
      for (const f of fs.readdirSync(maildir)) {
        const text = fs.readFileSync(path.join(maildir, f), "utf8").replace(/\r\n[ \t]+/g, " ");
        const m = text.match(/^List-Unsubscribe:.*<(http[^>]*\/u\/[^>]+)>/im);
        const to = text.match(/^To: .*$/im);
        if (m) out.push(m[1]);
        void to;
      }
      return out.length >= 30 ? out : null;
    }, 30);
    check(urls.length === 30, `every copy has a one-click URL (${urls.length})`);
    await page.context().clearCookies(); // the link is public: no session needed
    await page.goto(urls[0]);
    check((await page.textContent("#msg")).includes("Press the button"), "GET shows a button and changes nothing");
    await shot(page, "unsubscribe");
    await page.click("#confirm");
    await page.waitForSelector("#msg");
    const msg = await page.textContent("#msg");
    check(/now unsubscribed from news@lists\.test/.test(msg), `one-click button: ${msg}`);
    await shot(page, "unsubscribed");
    const res = await page.request.post(urls[1], { form: { "List-Unsubscribe": "One-Click" } });
    check(res.status() === 200, `RFC 8058 POST answers 200 (${res.status()})`);
    const forged = await page.request.post(urls[2].slice(0, -1) + (urls[2].endsWith("0") ? "1" : "0"),
      { form: { "List-Unsubscribe": "One-Click" } });
    check(forged.status() === 400, `forged one-click answers 400 (${forged.status()})`);

    // log in again and see the two unsubscribed
    await page.goto(WEB + "/login");
    await page.fill("#user", process.env.LC_USER);
    await page.fill("#password", process.env.LC_PASSWORD);
    await page.click("#login");
    await page.waitForURL(WEB + "/");
    await page.goto(WEB + "/lists/" + LIST + "/subscribers?limit=100");
    const statuses = await page.locator("#subs tbody tr td:nth-child(2)").allTextContents();
    check(statuses.filter((s) => s === "unsubscribed").length === 2, `two unsubscribed (${statuses.join(",")})`);

    // ---- moderation: the list becomes moderated, a stranger's post is held, approved in the queue ----
    await page.goto(WEB + "/lists/" + LIST);
    await page.selectOption("select[name=policy]", "moderated");
    await page.fill("input[name=owner]", "owner@example.test");
    await page.click("#save");
    await page.waitForSelector("#saved");
    const held = await smtp(Number(process.env.LC_SMTP_PORT), "stranger@example.test", LIST,
      `From: stranger@example.test\nTo: ${LIST}\nSubject: please moderate me\n\nHeld text.\n`);
    const hm = held.match(/held for moderation as post (\d+)/);
    check(hm !== null, `post held by listd: ${held}`);
    await page.goto(WEB + "/moderation");
    check((await page.locator("section.held").count()) === 1, "one held post in the moderation queue");
    check((await page.textContent("section.held")).includes("please moderate me"), "the held post can be read");
    await shot(page, "moderation");
    await page.click("section.held button.approve");
    await page.waitForSelector("#msg");
    check((await page.textContent("#msg")).includes("approved"), "approved in the queue");
    check((await page.locator("section.held").count()) === 0, "the queue is empty again");
    await page.goto(WEB + "/");
    await waitFor("the approved post delivered", async () => {
      await page.reload();
      const row = page.locator("#posts tbody tr").first();
      return (await row.locator("a").first().textContent()) === hm[1] &&
        (await row.locator(".pct").textContent()) === "100%";
    }, 60);
    check(true, `approved post ${hm[1]} reached 100%`);
  } catch (e) {
    check(false, `exception: ${e.stack || e}`);
    try { await shot(page, "failure"); } catch { /* ignore */ }
  } finally {
    await browser.close();
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main();
