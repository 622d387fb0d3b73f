// Screenshots of the Dagster UI for the README, by headless Chromium (Debian's chromium package)
// through playwright-core (npm install playwright-core, outside the repository):
//   node docs/screenshots/shot.mjs http://127.0.0.1:3111 "/assets/dead_letter_queue@out.png" ...
// Each argument after the base URL is PATH@FILE. Taken 2026-11-30 from a real run: make demo
// (12 orders at 30 % faults), one order quarantined, one awaiting approval, one dead-lettered,
// the figures assets materialised for the day, dagster-webserver on that instance.
import { chromium } from 'playwright-core';
const [,, base, ...pages] = process.argv;
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
const page = await browser.newPage({ viewport: { width: 1500, height: 950 } });
for (const spec of pages) {
  const at = spec.lastIndexOf('@'); const path = spec.slice(0, at), out = spec.slice(at + 1);
  await page.goto(base + path, { waitUntil: 'networkidle', timeout: 60000 });
  await page.waitForTimeout(4000);
  for (const label of ['Dismiss', 'Not now', 'Skip', 'No thanks', 'Close']) {
    const button = page.getByRole('button', { name: label });
    if (await button.count()) { await button.first().click().catch(() => {}); await page.waitForTimeout(500); }
  }
  await page.keyboard.press('Escape');
  await page.waitForTimeout(1500);
  await page.screenshot({ path: out });
  console.log('wrote', out);
}
await browser.close();
