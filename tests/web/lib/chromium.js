// Debian's Chromium driven by playwright-core (browsers cannot be downloaded here).
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Launches headless Chromium with a fresh profile and no background traffic. */
export async function launchChromium() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: install Debian's chromium (scripts/test-web does) or set CHROMIUM_PATH`);
  }
  // playwright-core gives every launch a fresh temporary user-data-dir.
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 60_000,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * Collects what must never happen on the page: script errors, dialogs (an injected
 * `onerror=alert(1)` would open one) and console errors (CSP violations are reported there).
 * @param {import('playwright-core').Page} page
 */
export function watchForTrouble(page) {
  const trouble = [];
  page.on('pageerror', (e) => trouble.push(`page error: ${e.message}`));
  page.on('dialog', (d) => {
    trouble.push(`dialog: ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const text = m.text();
    // A refused or dropped socket is logged by the browser itself; that is expected while the
    // bridge is down, and not a fault of the page.
    if (/WebSocket connection to .* failed|ERR_CONNECTION_REFUSED|status of 404/.test(text)) return;
    trouble.push(`console error: ${text}`);
  });
  return trouble;
}
