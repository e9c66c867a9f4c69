// The Workshop page in headless Chromium against the real bridge binary: the state, its
// changes, messages into the inbox exactly once, barks, restarts, suspension, hygiene.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  Bridge, ROOT, bark, eventually, exampleState, inbox, makeWorld, messagesWithText, withLogs, writeAtomically,
} from '../lib/bridge.js';
import { launchChromium, watchForTrouble } from '../lib/chromium.js';

/** @type {import('playwright-core').Browser} */
let browser;
const worlds = [];
const bridges = [];

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await Promise.all(bridges.map((b) => b.stop('SIGKILL')));
  for (const w of worlds) w.remove();
});

/** A world with a running bridge. */
async function setUp(name, args = []) {
  const world = makeWorld(name);
  worlds.push(world);
  const bridge = await Bridge.start(world, { args });
  bridges.push(bridge);
  return { world, bridge };
}

/** Restarts a stopped bridge on the same port, as after a Mac reboot or an upgrade. */
async function restart(bridge) {
  const again = await Bridge.start(bridge.world, { port: bridge.port });
  bridges.push(again);
  return again;
}

/** An iPad-sized tab (12.9" in portrait), touch enabled. */
async function newTab(options = {}) {
  const context = await browser.newContext({
    viewport: { width: 1024, height: 1366 },
    deviceScaleFactor: 1,
    hasTouch: true,
    ...options,
  });
  const page = await context.newPage();
  const trouble = watchForTrouble(page);
  return { context, page, trouble };
}

/** Opens the page as the QR code would and waits until it is live. */
async function openWorkshop(page, bridge) {
  const response = await page.goto(bridge.pageUrl());
  await page.locator('#status[data-state="open"]').waitFor({ timeout: 15_000 });
  return response;
}

/** The rendered value of a state path (a JSON pointer). */
const valueAt = (page, pointer) => page.locator(`li[data-path="${pointer}"] > .value`);

/** Waits until the element's whole text is `text`. */
async function waitForText(page, selector, text, timeout = 15_000) {
  await page.waitForFunction(
    ([sel, expected]) => document.querySelector(sel)?.textContent === expected,
    [selector, text],
    { timeout },
  );
}

const moodSelector = 'li[data-path="/mood/primary"] > .value';

async function sendMessage(page, text, visitor) {
  if (visitor !== undefined) {
    await page.fill('#visitor', visitor);
    await page.locator('#visitor').dispatchEvent('change');
  }
  await page.fill('#message', text);
  await page.click('#send');
}

const T = { timeout: 90_000 };

test('the page shows the state, follows the file, escapes everything and hides the token', T, async () => {
  const { world, bridge } = await setUp('state');
  const { context, page, trouble } = await newTab();
  await withLogs(() => [bridge], async () => {
    const response = await openWorkshop(page, bridge);
    const headers = response?.headers() ?? {};
    assert.match(headers['content-security-policy'] ?? '', /script-src 'self'/);
    assert.match(headers['content-security-policy'] ?? '', /connect-src 'self' ws: wss:/);
    assert.equal(headers['referrer-policy'], 'no-referrer');
    assert.equal(headers['x-content-type-options'], 'nosniff');
    assert.match(headers['content-type'] ?? '', /^text\/html/);

    // The token is read, remembered and taken out of the address bar.
    assert.ok(!page.url().includes('token'), page.url());
    assert.equal(new URL(page.url()).pathname, '/');

    await waitForText(page, moodSelector, 'contemplative');
    assert.equal(await page.textContent('#agent-name'), 'Timmy');
    assert.equal(await valueAt(page, '/familiar/position').textContent(), '[2.1, 0, -1.3]');
    assert.equal(await page.textContent('#status-text'), 'Live');

    // The agent rewrites its state; a hostile value in it is shown as text.
    const hostile = '<img src=x onerror=alert(1)>';
    writeAtomically(world.stateFile, exampleState({
      'primary: "contemplative"': 'primary: "alert"',
      'detail: "new commit on main"': `detail: "${hostile}"`,
      'writer: "timmy-loop"': 'writer: "timmy-loop"\n"<b>key</b>": "<script>alert(2)</script>"',
    }));
    await waitForText(page, moodSelector, 'alert');
    assert.equal(await valueAt(page, '/activity/detail').textContent(), hostile);
    assert.equal(await page.locator('li[data-path="/<b>key<~1b>"] > .key').textContent(), '<b>key</b>');
    assert.equal(await page.locator('main img, main script, main b').count(), 0);
    // The changed value flashes.
    assert.match((await page.locator('li[data-path="/mood/primary"]').getAttribute('class')) ?? '', /changed/);

    // A reload without the token in the address still connects (it was remembered).
    await page.reload();
    await page.locator('#status[data-state="open"]').waitFor({ timeout: 15_000 });
    await waitForText(page, moodSelector, 'alert');
    assert.deepEqual(trouble, []);
  });
  await context.close();
});

test('a message typed in the page lands in the inbox exactly once', T, async () => {
  const { world, bridge } = await setUp('message');
  const { context, page, trouble } = await newTab();
  await withLogs(() => [bridge], async () => {
    await openWorkshop(page, bridge);
    const text = 'How is the Tower coming?';
    await sendMessage(page, text, 'Alexander');
    await page.locator('li.bubble.mine[data-status="delivered"]').waitFor({ timeout: 15_000 });
    // The ack comes only once the file is durable, so it is there now.
    const written = messagesWithText(world, text);
    assert.equal(written.length, 1);
    assert.equal(written[0].visitor, 'Alexander');
    assert.match(written[0].client_id, /^m-/);
    // Entering the page was announced too.
    assert.ok((await eventually(() => inboxHas(world, 'enter'), { what: 'an enter event' })));
    assert.equal(await page.locator('#message').inputValue(), '');
    assert.deepEqual(trouble, []);
  });
  await context.close();
});

/** Whether the inbox holds an event of this type. */
const inboxHas = (world, type) => inbox(world).some((e) => e.type === type);

test('a bark dropped in the outbox appears as a speech bubble with its mood', T, async () => {
  const { world, bridge } = await setUp('bark');
  const { context, page, trouble } = await newTab();
  await withLogs(() => [bridge], async () => {
    await openWorkshop(page, bridge);
    bark(world, { type: 'bark', text: 'Slowly. But the stones know where they go.', mood: 'contemplative' });
    const bubble = page.locator('li.bubble.agent[data-type="bark"]').filter({ hasText: 'Slowly. But the stones' });
    await bubble.waitFor({ timeout: 15_000 });
    assert.equal(await bubble.locator('.speaker').textContent(), 'Timmy');
    assert.match((await bubble.locator('.mood').textContent()) ?? '', /contemplative/);

    // `emotion` and `agent_id` are understood too, and a hostile bark is only text.
    bark(world, { type: 'bark', text: '<img src=x onerror=alert(3)>', emotion: 'amused', agent_id: 'pip' });
    const second = page.locator('li.bubble.agent').filter({ hasText: '<img src=x' });
    await second.waitFor({ timeout: 15_000 });
    assert.equal(await second.locator('.speaker').textContent(), 'pip');
    assert.match((await second.locator('.mood').textContent()) ?? '', /amused/);
    assert.equal(await page.locator('#feed img').count(), 0);
    assert.deepEqual(trouble, []);
  });
  await context.close();
});

test('after a bridge restart the page reconnects by itself and shows the newest state', T, async () => {
  let { world, bridge } = await setUp('restart');
  const { context, page, trouble } = await newTab();
  await withLogs(() => [bridge], async () => {
    await openWorkshop(page, bridge);
    await waitForText(page, moodSelector, 'contemplative');

    const down = page.locator('#status[data-state="reconnecting"]').waitFor({ timeout: 15_000 });
    await bridge.stop();
    await down;
    await page.locator('li.notice').filter({ hasText: 'restarting' }).waitFor({ timeout: 5_000 });
    assert.match((await page.textContent('#status-text')) ?? '', /Reconnecting/);

    // The agent moved on while the bridge was down.
    writeAtomically(world.stateFile, exampleState({ 'primary: "contemplative"': 'primary: "excited"' }));
    bridge = await restart(bridge);
    await page.locator('#status[data-state="open"]').waitFor({ timeout: 45_000 });
    await waitForText(page, moodSelector, 'excited');
    assert.deepEqual(trouble, []);
  });
  await context.close();
});

test('messages sent while the bridge is down arrive exactly once when it returns', T, async () => {
  let { world, bridge } = await setUp('queued');
  const { context, page, trouble } = await newTab();
  await withLogs(() => [bridge], async () => {
    await openWorkshop(page, bridge);
    const down = page.locator('#status[data-state="reconnecting"]').waitFor({ timeout: 15_000 });
    await bridge.stop();
    await down;

    await sendMessage(page, 'first, while you were away', 'Ada');
    await sendMessage(page, 'second, still away');
    await page.locator('#queued').filter({ hasText: '2 waiting to send' }).waitFor({ timeout: 5_000 });
    assert.equal(await page.locator('li.bubble.mine[data-status="pending"]').count(), 2);

    bridge = await restart(bridge);
    await page.locator('li.bubble.mine[data-status="delivered"]').nth(1).waitFor({ timeout: 45_000 });
    assert.equal(messagesWithText(world, 'first, while you were away').length, 1);
    assert.equal(messagesWithText(world, 'second, still away').length, 1);
    assert.ok(await page.locator('#queued').isHidden());
    assert.deepEqual(trouble, []);
  });
  await context.close();
});

test('a message whose ack was lost is re-sent on the next connection and written once', T, async () => {
  const { world, bridge } = await setUp('lost-ack');
  const { context, page, trouble } = await newTab();
  let connections = 0;
  const sentIds = [[], [], [], []];
  /** @type {(id: string) => void} */
  let ackDropped = () => {};
  const dropped = new Promise((resolve) => {
    ackDropped = resolve;
  });
  /** @type {import('playwright-core').WebSocketRoute | null} */
  let firstRoute = null;
  await page.routeWebSocket(/\/ws\?/, (ws) => {
    const n = connections++;
    if (n === 0) firstRoute = ws;
    const server = ws.connectToServer();
    ws.onMessage((m) => {
      const msg = JSON.parse(String(m));
      if (msg.type === 'message') sentIds[Math.min(n, 3)].push(msg.id);
      server.send(m);
    });
    server.onMessage((m) => {
      const msg = JSON.parse(String(m));
      // On the first connection the bridge's ack for the message is lost on the way.
      if (n === 0 && msg.type === 'ack' && sentIds[0].includes(msg.id)) {
        ackDropped(msg.id);
        return;
      }
      ws.send(m);
    });
  });
  await withLogs(() => [bridge], async () => {
    await openWorkshop(page, bridge);
    const text = 'this one must not be doubled';
    await sendMessage(page, text, 'Grace');
    const id = await dropped;
    assert.equal(messagesWithText(world, text).length, 1, 'written before the ack was sent');
    assert.equal(await page.locator('li.bubble.mine').getAttribute('data-status'), 'pending');

    // The network drops; the page reconnects and sends the message again, same id.
    await firstRoute?.close({ code: 4000, reason: 'simulated network loss' });
    await page.locator('li.bubble.mine[data-status="delivered"]').waitFor({ timeout: 30_000 });
    assert.ok(sentIds[1].includes(id), `re-sent with the same id on the second connection: ${JSON.stringify(sentIds)}`);
    assert.equal(messagesWithText(world, text).length, 1, 'the bridge acknowledged the repeat without a second file');
    assert.deepEqual(trouble, []);
  });
  await context.close();
});

test('a simulated suspension (hidden, socket silently dead, shown again) reconnects at once', T, async () => {
  const { world, bridge } = await setUp('suspend');
  const { context, page, trouble } = await newTab();
  /** @type {{ dead: boolean, server: any }[]} */
  const links = [];
  /** @type {() => void} */
  let onSecond = () => {};
  const second = new Promise((resolve) => {
    onSecond = resolve;
  });
  await page.routeWebSocket(/\/ws\?/, (ws) => {
    const server = ws.connectToServer();
    const link = { dead: false, server };
    links.push(link);
    if (links.length === 2) onSecond();
    ws.onMessage((m) => {
      if (!link.dead) server.send(m);
    });
    server.onMessage((m) => {
      if (!link.dead) ws.send(m);
    });
    // A dead link tells the page nothing, like a socket iOS killed in a background tab.
    server.onClose(() => {});
  });
  await withLogs(() => [bridge], async () => {
    await openWorkshop(page, bridge);
    await waitForText(page, moodSelector, 'contemplative');
    await page.evaluate(() => {
      const state = () => /** @type {any} */ (window).__visibility ?? 'visible';
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: state });
      Object.defineProperty(document, 'hidden', { configurable: true, get: () => state() === 'hidden' });
    });
    const setVisibility = (v) => page.evaluate((value) => {
      /** @type {any} */ (window).__visibility = value;
      document.dispatchEvent(new Event('visibilitychange'));
    }, v);

    // The tab goes to the background and is frozen; its socket dies without a word.
    await setVisibility('hidden');
    const cdp = await context.newCDPSession(page);
    await cdp.send('Page.setWebLifecycleState', { state: 'frozen' });
    links[0].dead = true;
    await links[0].server.close();
    // Meanwhile the agent changes its state.
    writeAtomically(world.stateFile, exampleState({ 'primary: "contemplative"': 'primary: "amused"' }));
    await bridge.waitForLog(/client disconnected/);

    // Back to the foreground: the page notices at once, well before any heartbeat would.
    await cdp.send('Page.setWebLifecycleState', { state: 'active' });
    const shownAt = Date.now();
    await setVisibility('visible');
    await second;
    await waitForText(page, moodSelector, 'amused', 10_000);
    const took = Date.now() - shownAt;
    assert.ok(took < 6_000, `reconnected ${took} ms after the page was shown`);
    assert.equal(await page.textContent('#status-text'), 'Live');
    assert.deepEqual(trouble, []);
  });
  await context.close();
});

test('without the token the page says what is wrong', T, async () => {
  const { bridge } = await setUp('no-token');
  const { context, page } = await newTab();
  await withLogs(() => [bridge], async () => {
    await page.goto(`http://${bridge.host}:${bridge.port}/`);
    const banner = page.locator('#banner:not([hidden])');
    await banner.waitFor({ timeout: 30_000 });
    assert.match((await banner.textContent()) ?? '', /token/);
    assert.notEqual(await page.getAttribute('#status', 'data-state'), 'open');
  });
  await context.close();
});

test('--workshop-dir serves the user’s own Workshop, with /client.js from the bridge', T, async () => {
  const site = mkdtempSync(path.join(tmpdir(), 'workshop-site-'));
  worlds.push({ remove: () => rmSync(site, { recursive: true, force: true }) });
  writeFileSync(path.join(site, 'index.html'),
    '<!doctype html><meta charset="utf-8"><title>My scene</title>'
    + '<script type="module" src="/main.js"></script><p id="mood">loading</p>');
  writeFileSync(path.join(site, 'main.js'),
    "import { connectBridge } from '/client.js';\n"
    + "connectBridge({ onState: (s) => { document.getElementById('mood').textContent = s.mood.primary; } });\n");
  const { bridge } = await setUp('workshop-dir', ['--workshop-dir', site]);
  const { context, page, trouble } = await newTab();
  await withLogs(() => [bridge], async () => {
    const response = await page.goto(bridge.pageUrl());
    assert.equal(response?.headers()['referrer-policy'], 'no-referrer');
    await waitForText(page, '#mood', 'contemplative');
    assert.equal(await page.title(), 'My scene');
    assert.ok(!page.url().includes('token'));
    const base = `http://${bridge.host}:${bridge.port}`;
    assert.equal((await page.request.get(`${base}/style.css`)).status(), 404);
    assert.equal((await page.request.get(`${base}/client.js`)).status(), 200);
    assert.deepEqual(trouble, []);
  });
  await context.close();
});

test('an iPad-sized screenshot of the page, light and dark', T, async () => {
  const { world, bridge } = await setUp('screenshot');
  // The committed pictures are rewritten only when asked (UPDATE_SCREENSHOTS=1); otherwise
  // they are taken all the same, into a temp directory, so the path stays tested.
  const out = process.env.UPDATE_SCREENSHOTS ? path.join(ROOT, 'docs') : mkdtempSync(path.join(tmpdir(), 'workshop-shots-'));
  if (!process.env.UPDATE_SCREENSHOTS) worlds.push({ remove: () => rmSync(out, { recursive: true, force: true }) });
  mkdirSync(out, { recursive: true });
  await withLogs(() => [bridge], async () => {
    for (const [scheme, file] of [['light', 'workshop-page.png'], ['dark', 'workshop-page-dark.png']]) {
      const { context, page, trouble } = await newTab({ colorScheme: scheme });
      await context.addInitScript(() => localStorage.setItem('workshop:visitor', 'Alexander'));
      const { context: otherContext, page: other } = await newTab();
      await otherContext.addInitScript(() => localStorage.setItem('workshop:visitor', 'Maya'));
      await openWorkshop(page, bridge);
      await openWorkshop(other, bridge);
      bark(world, { type: 'bark', text: 'Slowly. But the stones know where they go.', mood: 'contemplative' });
      await page.locator('li.bubble.agent').first().waitFor({ timeout: 15_000 });
      await sendMessage(other, 'Is Pip awake? I brought him a biscuit.');
      await page.locator('li.bubble.visitor').first().waitFor({ timeout: 15_000 });
      await sendMessage(page, 'How’s the Tower coming?');
      await page.locator('li.bubble.mine[data-status="delivered"]').waitFor({ timeout: 15_000 });
      bark(world, { type: 'bark', text: 'Pip is asleep by the forge. Leave the biscuit on the anvil.', mood: 'amused' });
      await page.locator('li.bubble.agent').nth(1).waitFor({ timeout: 15_000 });
      writeAtomically(world.stateFile, exampleState({
        'current: "watching-gitea"': 'current: "talking"',
        'detail: "new commit on main"': 'detail: "answering Alexander"',
        'visitor_present: false': 'visitor_present: true',
        'visitor_name: null': 'visitor_name: "Alexander"',
      }));
      await waitForText(page, 'li[data-path="/activity/current"] > .value', 'talking');
      await page.evaluate(() => document.fonts.ready);
      await page.screenshot({ path: path.join(out, file), animations: 'disabled' });
      assert.ok(statSync(path.join(out, file)).size > 20_000, 'a real picture, not a blank page');
      assert.deepEqual(trouble, []);
      await otherContext.close();
      await context.close();
      writeAtomically(world.stateFile, exampleState());
    }
  });
});
