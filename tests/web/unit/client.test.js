// connectBridge against a scripted fake socket: reconnects, liveness, the queue on the wire,
// state and patches, tab life-cycle. Timings are shrunk to milliseconds; every wait is for
// an event, bounded by a deadline.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { connectBridge, BridgeError } from '../../../ui/workshop/client.js';

const bus = new EventEmitter();

/** A WebSocket whose other end the test plays. */
class FakeSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;

  constructor(url) {
    this.url = new URL(url);
    this.readyState = FakeSocket.CONNECTING;
    /** @type {any[]} */
    this.sent = [];
    this.closedByClient = null;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    bus.emit('socket', this);
  }
  send(data) {
    if (this.readyState !== FakeSocket.OPEN) throw new Error('not open');
    const msg = JSON.parse(data);
    this.sent.push(msg);
    bus.emit('sent', this, msg);
  }
  close(code = 1005) {
    if (this.readyState >= FakeSocket.CLOSING) return;
    this.closedByClient = code;
    this.readyState = FakeSocket.CLOSED;
    queueMicrotask(() => this.onclose?.({ code, reason: '' }));
  }
  // The bridge's side:
  accept() {
    this.readyState = FakeSocket.OPEN;
    this.onopen?.({});
  }
  push(msg) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  drop(code = 1006) {
    this.readyState = FakeSocket.CLOSED;
    this.onclose?.({ code, reason: '' });
  }
}

/** Resolves with the first emitted `event` whose arguments satisfy `predicate`. */
function next(event, predicate = () => true, timeoutMs = 3000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      bus.off(event, on);
      reject(new Error(`timed out waiting for ${event}`));
    }, timeoutMs);
    function on(...args) {
      if (!predicate(...args)) return;
      clearTimeout(timer);
      bus.off(event, on);
      resolve(args.length > 1 ? args : args[0]);
    }
    bus.on(event, on);
  });
}

/** A page-like window: events, visibility and the online flag. */
function fakeWindow() {
  const win = /** @type {any} */ (new EventTarget());
  win.document = new EventTarget();
  win.document.visibilityState = 'visible';
  win.navigator = { onLine: true };
  return win;
}

/** connectBridge with tiny timings; statuses and events are also emitted on the bus. */
function start(options = {}) {
  const states = [];
  const events = [];
  const bridge = connectBridge({
    url: 'ws://bridge.test/ws',
    token: 'tok',
    clientId: 'tab-test-1',
    WebSocket: /** @type {any} */ (FakeSocket),
    window: fakeWindow(),
    backoffBaseMs: 10,
    backoffMaxMs: 80,
    backoffJitter: 0,
    healthyAfterMs: 60_000,
    connectTimeoutMs: 60_000,
    pingIntervalMs: 60_000,
    pongTimeoutMs: 60_000,
    probeTimeoutMs: 40,
    retryAfterErrorMs: 20,
    onStatus: (s) => bus.emit('status', s),
    onState: (state, info) => {
      states.push([state, info]);
      bus.emit('state', state, info);
    },
    onEvent: (m) => {
      events.push(m);
      bus.emit('event', m);
    },
    ...options,
  });
  return { bridge, states, events };
}

async function openSocket(startPromise) {
  const socket = await startPromise;
  socket.accept();
  return socket;
}

test('connects with the token, the tab identity and diff mode', async (t) => {
  const first = next('socket');
  const { bridge } = start({ diff: true });
  t.after(() => bridge.close());
  const socket = await first;
  assert.equal(socket.url.pathname, '/ws');
  assert.equal(socket.url.searchParams.get('token'), 'tok');
  assert.equal(socket.url.searchParams.get('client'), 'tab-test-1');
  assert.equal(socket.url.searchParams.get('diff'), '1');
  assert.equal(bridge.status.state, 'connecting');
  socket.accept();
  assert.equal(bridge.status.state, 'open');
});

test('messages queued while disconnected go out after hello, are re-sent until acked, once each', async (t) => {
  const first = next('socket');
  const { bridge } = start({ hello: () => ({ type: 'enter', visitor: 'Ada' }) });
  t.after(() => bridge.close());
  const one = bridge.send({ type: 'message', text: 'one', visitor: 'Ada' });
  const two = bridge.send({ type: 'message', text: 'two', visitor: 'Ada' });
  assert.equal(bridge.status.queued, 2);

  const s1 = await openSocket(first);
  assert.deepEqual(s1.sent.map((m) => m.type + ':' + (m.text ?? m.visitor)), ['enter:Ada', 'message:one', 'message:two']);
  const [id1, id2] = [s1.sent[1].id, s1.sent[2].id];
  s1.push({ type: 'ack', id: id1 });
  assert.deepEqual(await one, { id: id1 });

  // The ack for "two" is lost with the connection: it goes out again, with the same id.
  const second = next('socket');
  s1.drop();
  const s2 = await openSocket(second);
  assert.deepEqual(s2.sent.map((m) => m.text ?? m.type), ['enter', 'two']);
  assert.equal(s2.sent[1].id, id2);
  s2.push({ type: 'ack', id: id2 });
  assert.deepEqual(await two, { id: id2 });
  assert.equal(bridge.status.queued, 0);
});

test('backoff grows while attempts fail and resets once a connection was healthy', async (t) => {
  let socket = next('socket');
  const { bridge } = start({ healthyAfterMs: 30 });
  t.after(() => bridge.close());
  const delays = [];
  for (let i = 0; i < 4; i++) {
    const s = await socket;
    const retry = next('status', (st) => st.state === 'reconnecting');
    socket = next('socket');
    s.drop(); // refused before opening
    delays.push((await retry).retryInMs);
  }
  assert.deepEqual(delays, [10, 20, 40, 80]);
  const healthy = next('status', (st) => st.state === 'open' && st.attempt === 0);
  const s5 = await socket;
  s5.accept();
  await healthy;
  const retry = next('status', (st) => st.state === 'reconnecting');
  s5.drop();
  assert.equal((await retry).retryInMs, 10);
});

test('a connect attempt stuck in CONNECTING is abandoned and retried', async (t) => {
  const first = next('socket');
  const { bridge } = start({ connectTimeoutMs: 40 });
  t.after(() => bridge.close());
  const zombie = await first;
  const replacement = await next('socket');
  assert.notEqual(replacement, zombie);
  assert.equal(zombie.readyState, FakeSocket.CLOSED, 'the zombie was closed');
  zombie.accept(); // a late open of the abandoned socket is ignored
  assert.equal(bridge.status.state, 'connecting');
  replacement.accept();
  assert.equal(bridge.status.state, 'open');
});

test('pings every interval; a missing pong means the socket is dead and is replaced', async (t) => {
  const first = next('socket');
  const { bridge } = start({ pingIntervalMs: 20, pongTimeoutMs: 400 });
  t.after(() => bridge.close());
  const s1 = await openSocket(first);
  // Answer three pings: the connection stays.
  for (let i = 0; i < 3; i++) {
    const [, ping] = await next('sent', (s, m) => s === s1 && m.type === 'ping');
    s1.push({ type: 'pong', id: ping.id });
  }
  // Then go silent, as a socket iOS killed in the background would.
  const replacement = await next('socket');
  assert.notEqual(replacement, s1);
  assert.equal(s1.closedByClient, 1000);
});

test('state, patches, and a resync when a seq is missing or a patch does not apply', async (t) => {
  const first = next('socket');
  const { bridge, states } = start({ diff: true });
  t.after(() => bridge.close());
  const s = await openSocket(first);
  s.push({ type: 'state', seq: 4, data: { mood: { primary: 'calm' }, n: [1] } });
  s.push({ type: 'state_patch', seq: 5, patch: [{ op: 'replace', path: '/mood/primary', value: 'alert' }] });
  assert.deepEqual(bridge.state, { mood: { primary: 'alert' }, n: [1] });
  assert.equal(bridge.seq, 5);
  assert.deepEqual(states.map(([, info]) => [info.seq, info.full]), [[4, true], [5, false]]);

  // seq 6 went missing.
  s.push({ type: 'state_patch', seq: 7, patch: [{ op: 'add', path: '/n/-', value: 2 }] });
  assert.deepEqual(s.sent.at(-1), { type: 'resync' });
  s.push({ type: 'state_patch', seq: 8, patch: [] }); // ignored until the full state comes
  assert.equal(bridge.seq, 5);
  s.push({ type: 'state', seq: 8, data: { n: [1, 2] } });
  assert.equal(bridge.seq, 8);

  // A patch that does not fit the document.
  s.push({ type: 'state_patch', seq: 9, patch: [{ op: 'remove', path: '/missing' }] });
  assert.deepEqual(s.sent.at(-1), { type: 'resync' });
  assert.deepEqual(bridge.state, { n: [1, 2] });
  assert.equal(states.length, 3);
});

test('barks and other messages reach onEvent; acks and pongs do not', async (t) => {
  const first = next('socket');
  const { bridge, events } = start();
  t.after(() => bridge.close());
  const s = await openSocket(first);
  s.push({ type: 'bark', text: 'Slowly.', mood: 'contemplative' });
  s.push({ type: 'pong' });
  s.push({ type: 'ack', id: 'unknown' });
  s.push({ type: 'error', code: 'bad_json', message: 'not JSON' });
  s.onmessage({ data: 'not json at all' });
  s.onmessage({ data: '[1,2]' });
  assert.deepEqual(events.map((e) => e.type), ['bark', 'error']);
});

test('a refused message is given up with its reason; a transient refusal is retried', async (t) => {
  const first = next('socket');
  const { bridge } = start();
  t.after(() => bridge.close());
  const s = await openSocket(first);
  const tooLong = bridge.send({ type: 'message', text: 'x'.repeat(10) });
  const busy = bridge.send({ type: 'message', text: 'later' });
  const [idLong, idBusy] = s.sent.map((m) => m.id);
  s.push({ type: 'error', code: 'text_too_long', message: 'too long', id: idLong });
  await assert.rejects(tooLong, (e) => e instanceof BridgeError && e.code === 'text_too_long');
  const resent = next('sent', (sock, m) => sock === s && m.id === idBusy);
  s.push({ type: 'error', code: 'inbox_full', message: 'full', id: idBusy });
  await resent;
  s.push({ type: 'ack', id: idBusy });
  await busy;
  assert.equal(bridge.status.queued, 0);
});

test('the queue is bounded', async (t) => {
  const { bridge } = start({ maxQueue: 2 });
  t.after(() => bridge.close());
  bridge.send({ type: 'message', text: '1' }).catch(() => {});
  bridge.send({ type: 'message', text: '2' }).catch(() => {});
  await assert.rejects(bridge.send({ type: 'message', text: '3' }), /already waiting/);
  assert.equal(bridge.status.queued, 2);
});

test('a flush is paced so a long queue cannot trip the rate limit', async (t) => {
  const first = next('socket');
  const { bridge } = start({ maxSendPerSecond: 5 });
  t.after(() => bridge.close());
  for (let i = 0; i < 7; i++) bridge.send({ type: 'message', text: String(i) }).catch(() => {});
  const s = await first;
  const started = Date.now();
  s.accept();
  assert.equal(s.sent.length, 5);
  await next('sent', (sock, m) => sock === s && m.text === '6');
  assert.ok(Date.now() - started >= 900, 'the rest waited for the next second');
});

test('coming back to the tab probes the socket and replaces a dead one at once', async (t) => {
  const win = fakeWindow();
  const first = next('socket');
  const { bridge } = start({ window: win });
  t.after(() => bridge.close());
  const s1 = await openSocket(first);
  win.document.visibilityState = 'hidden';
  win.document.dispatchEvent(new Event('visibilitychange'));
  assert.equal(s1.sent.length, 0, 'nothing happens on hide');
  win.document.visibilityState = 'visible';
  const probe = next('sent', (s, m) => s === s1 && m.type === 'ping');
  const replacement = next('socket');
  win.document.dispatchEvent(new Event('visibilitychange'));
  await probe;
  // The socket is silently dead: no pong. The replacement comes after the short probe
  // timeout, long before the heartbeat (a minute here) would have noticed.
  assert.notEqual(await replacement, s1);
});

test('a live socket answering the probe is kept', async (t) => {
  const win = fakeWindow();
  const first = next('socket');
  const { bridge } = start({ window: win, probeTimeoutMs: 200, pingIntervalMs: 600 });
  t.after(() => bridge.close());
  const s1 = await openSocket(first);
  const probe = next('sent', (s, m) => s === s1 && m.type === 'ping');
  const replaced = next('socket', () => true, 1000).then(() => true, () => false);
  win.dispatchEvent(new Event('pageshow'));
  s1.push({ type: 'pong', id: (await probe).at(1).id });
  // The next heartbeat, well after the probe's deadline, still goes out on the same socket.
  await next('sent', (s, m) => s === s1 && m.type === 'ping');
  assert.equal(bridge.status.state, 'open');
  bridge.close();
  assert.equal(await replaced, false);
});

test('waiting out a backoff, a return to the tab connects at once', async (t) => {
  const win = fakeWindow();
  const first = next('socket');
  const { bridge } = start({ window: win, backoffBaseMs: 60_000, backoffMaxMs: 60_000 });
  t.after(() => bridge.close());
  const s1 = await openSocket(first);
  const waiting = next('status', (s) => s.state === 'reconnecting');
  s1.drop();
  assert.ok((await waiting).retryInMs >= 60_000);
  const again = next('socket');
  win.dispatchEvent(new Event('pageshow'));
  await again;
});

test('offline stops retrying; online connects at once', async (t) => {
  const win = fakeWindow();
  const first = next('socket');
  const { bridge } = start({ window: win, backoffBaseMs: 60_000, backoffMaxMs: 60_000 });
  t.after(() => bridge.close());
  const s1 = await openSocket(first);
  win.navigator.onLine = false;
  win.dispatchEvent(new Event('offline'));
  assert.equal(bridge.status.state, 'open', 'an open socket is kept while it works');
  const offline = next('status', (s) => s.state === 'offline');
  s1.drop();
  await offline;
  win.navigator.onLine = true;
  const again = next('socket');
  win.dispatchEvent(new Event('online'));
  await openSocket(again);
  assert.equal(bridge.status.state, 'open');
});

test('close() ends everything: pending sends reject, no more attempts', async () => {
  const first = next('socket');
  const { bridge } = start();
  const pending = bridge.send({ type: 'message', text: 'never' });
  const s = await openSocket(first);
  bridge.close();
  await assert.rejects(pending, (e) => e instanceof BridgeError && e.code === 'closed');
  assert.equal(bridge.status.state, 'closed');
  assert.equal(s.readyState, FakeSocket.CLOSED);
  await assert.rejects(bridge.send({ type: 'message', text: 'after' }), /closed/);
  assert.equal(bridge.trySend({ type: 'ping' }), false);
});

test('a policy close (flooding) backs off further instead of reconnecting in a loop', async (t) => {
  const first = next('socket');
  const { bridge } = start();
  t.after(() => bridge.close());
  const s = await openSocket(first);
  const retry = next('status', (st) => st.state === 'reconnecting');
  s.drop(1008);
  assert.equal((await retry).retryInMs, 80);
});

/** A page address, history and storage, enough for the token and identity helpers. */
function pageWindow(href) {
  const win = fakeWindow();
  const store = () => {
    const map = new Map();
    return { getItem: (k) => map.get(k) ?? null, setItem: (k, v) => map.set(k, String(v)) };
  };
  win.location = new URL(href);
  win.history = {
    state: null,
    replaceState(state, _title, url) {
      win.location = new URL(url, win.location.href);
    },
  };
  win.localStorage = store();
  win.sessionStorage = store();
  return win;
}

test('the token comes from the page address, is remembered, and leaves the address bar', async (t) => {
  const { tokenFromPage } = await import('../../../ui/workshop/client.js');
  const win = pageWindow('http://192.168.1.20:8765/?token=s3cret&x=1#here');
  assert.equal(tokenFromPage({ window: win }), 's3cret');
  assert.equal(win.location.href, 'http://192.168.1.20:8765/?x=1#here');
  assert.equal(tokenFromPage({ window: win }), 's3cret', 'remembered for reloads');
  win.location = new URL('http://192.168.1.20:8765/?token=newer');
  assert.equal(tokenFromPage({ window: win, remove: false }), 'newer');
  assert.equal(win.location.search, '?token=newer');
  t.diagnostic('the newest token wins and replaces the remembered one');
  win.location = new URL('http://192.168.1.20:8765/');
  assert.equal(tokenFromPage({ window: win }), 'newer');
});

test('by default the client connects to /ws of the page’s own host, with its token and a stable tab id', async (t) => {
  const win = pageWindow('https://workshop.local:8765/?token=abc');
  const first = next('socket');
  const bridge = connectBridge({ window: win, WebSocket: /** @type {any} */ (FakeSocket) });
  t.after(() => bridge.close());
  const socket = await first;
  assert.equal(socket.url.origin.replace('wss', 'https'), 'https://workshop.local:8765');
  assert.equal(socket.url.protocol, 'wss:');
  assert.equal(socket.url.pathname, '/ws');
  assert.equal(socket.url.searchParams.get('token'), 'abc');
  assert.equal(win.location.search, '', 'the token left the address bar');
  const id = socket.url.searchParams.get('client');
  assert.match(id ?? '', /^tab-[0-9a-f]{32}$/);
  assert.equal(win.sessionStorage.getItem('workshop-bridge:client'), id, 'kept for this tab');
  bridge.close();

  const again = next('socket');
  const second = connectBridge({ window: win, url: '/ws', WebSocket: /** @type {any} */ (FakeSocket) });
  t.after(() => second.close());
  const s2 = await again;
  assert.equal(s2.url.searchParams.get('client'), id, 'the same tab keeps its identity');
  assert.equal(s2.url.searchParams.get('token'), 'abc', 'the remembered token');
  assert.equal(s2.url.protocol, 'wss:');
});
