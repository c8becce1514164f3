// Drives headless Chromium for tests/it/cors.rs: for each scenario, opens a page served from
// one loopback origin and has it `fetch` the API behind Envoy (another origin), then prints
// what the page could see as one JSON document on stdout.
//
// Usage: node cors.mjs '<json>' where json is
//   {"scenarios": [{"name", "page", "url", "init", "read": [header...], "cookie"?}]}
// and each result is {"ok": true, "status", "body", "headers"} or {"ok": false, "error"},
// plus "console": the messages Chromium logged (CORS failures are explained there).
import { chromium } from 'playwright-core';

const input = JSON.parse(process.argv[2] ?? '{}');
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-quic',
  ],
  timeout: 30000,
});
const results = {};
try {
  for (const s of input.scenarios ?? []) {
    // A fresh context per scenario: no cookies or preflight cache carried over.
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(15000);
    const logged = [];
    page.on('console', (m) => logged.push(m.text()));
    await page.goto(s.page);
    const result = await page.evaluate(async ({ url, init, read, cookie }) => {
      if (cookie) document.cookie = cookie;
      try {
        const r = await fetch(url, init);
        const body = await r.text();
        const headers = {};
        for (const h of read ?? []) headers[h] = r.headers.get(h);
        return { ok: true, status: r.status, body, headers };
      } catch (e) {
        return { ok: false, error: String(e) };
      }
    }, { url: s.url, init: s.init ?? {}, read: s.read, cookie: s.cookie });
    // Let Chromium deliver the console message explaining a failed fetch (it may arrive after
    // the rejection, more so on a loaded machine).
    const explained = () => logged.some((m) => m.includes('CORS policy'));
    for (let waited = 0; !result.ok && !explained() && waited < 3000; waited += 50) {
      await page.waitForTimeout(50);
    }
    results[s.name] = { ...result, origin: new URL(s.page).origin, console: logged };
    await context.close();
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(results) + '\n');
