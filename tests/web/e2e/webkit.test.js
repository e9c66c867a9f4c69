// The core flow in WebKit, the engine of iPad Safari: WebKitGTK's MiniBrowser driven through
// Debian's WebKitWebDriver with plain W3C WebDriver calls. Needs a display: run it under
// `xvfb-run` (scripts/test-web does).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Bridge, bark, exampleState, makeWorld, messagesWithText, withLogs, writeAtomically } from '../lib/bridge.js';
import { Driver } from '../lib/webdriver.js';

const textIs = (sel, text) => document.querySelector(sel)?.textContent === text;
const present = (sel) => !!document.querySelector(sel);
const count = (sel, n) => document.querySelectorAll(sel).length === n;
const bubbleWith = (text) =>
  [...document.querySelectorAll('li.bubble.agent')].some((li) => li.querySelector('.text')?.textContent === text);

const moodSelector = 'li[data-path="/mood/primary"] > .value';

test('the core flow in WebKit', { timeout: 240_000 }, async (t) => {
  const world = makeWorld('webkit');
  let bridge = await Bridge.start(world);
  const driver = await Driver.start();
  const browser = await driver.newSession();
  t.after(async () => {
    await browser.close();
    await driver.stop();
    await bridge.stop('SIGKILL');
    world.remove();
  });
  const step = (name, fn) => t.test(name, () => withLogs(() => [bridge], fn));

  await step('the page shows the state and takes the token out of the address bar', async () => {
    await browser.navigate(bridge.pageUrl());
    await browser.waitFor(present, ['#status[data-state="open"]']);
    await browser.waitFor(textIs, [moodSelector, 'contemplative']);
    assert.equal(await browser.text('#agent-name'), 'Timmy');
    assert.ok(!(await browser.url()).includes('token'), await browser.url());
  });

  await step('a change of the state file appears, hostile text stays text', async () => {
    const hostile = '<img src=x onerror=alert(1)>';
    writeAtomically(world.stateFile, exampleState({
      'primary: "contemplative"': 'primary: "alert"',
      'detail: "new commit on main"': `detail: "${hostile}"`,
    }));
    await browser.waitFor(textIs, [moodSelector, 'alert']);
    assert.equal(await browser.execute('return document.querySelector(arguments[0]).textContent', 'li[data-path="/activity/detail"] > .value'), hostile);
    assert.equal(await browser.execute('return document.querySelectorAll("main img").length'), 0);
  });

  await step('a message typed in the page lands in the inbox once', async () => {
    await browser.type('#visitor', 'Alexander');
    await browser.type('#message', 'Hello from Safari’s engine');
    await browser.click('#send');
    await browser.waitFor(present, ['li.bubble.mine[data-status="delivered"]']);
    const written = messagesWithText(world, 'Hello from Safari’s engine');
    assert.equal(written.length, 1);
    assert.equal(written[0].visitor, 'Alexander');
  });

  await step('a bark dropped in the outbox appears as a bubble', async () => {
    bark(world, { type: 'bark', text: 'Slowly. But the stones know where they go.', mood: 'contemplative' });
    await browser.waitFor(bubbleWith, ['Slowly. But the stones know where they go.']);
    assert.match(await browser.text('li.bubble.agent .mood'), /contemplative/);
  });

  await step('the bridge restarts: the page reconnects by itself, shows the newest state, and delivers what was queued once', async () => {
    const port = bridge.port;
    await bridge.stop();
    await browser.waitFor(present, ['#status[data-state="reconnecting"]']);
    await browser.type('#message', 'sent while the bridge was down');
    await browser.click('#send');
    await browser.waitFor(present, ['li.bubble.mine[data-status="pending"]']);
    writeAtomically(world.stateFile, exampleState({ 'primary: "contemplative"': 'primary: "excited"' }));
    bridge = await Bridge.start(world, { port });
    await browser.waitFor(present, ['#status[data-state="open"]'], 45_000);
    await browser.waitFor(textIs, [moodSelector, 'excited']);
    await browser.waitFor(count, ['li.bubble.mine[data-status="delivered"]', 2]);
    assert.equal(messagesWithText(world, 'sent while the bridge was down').length, 1);
    assert.equal(messagesWithText(world, 'Hello from Safari’s engine').length, 1);
  });
});
