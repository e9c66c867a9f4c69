// @ts-check
/**
 * Workshop Bridge client: one resilient WebSocket link between a browser tab (usually an
 * iPad's Safari) and the bridge.
 *
 * ```js
 * import { connectBridge } from '/client.js';
 * const bridge = connectBridge({
 *   onState: (state, info) => render(state),
 *   onEvent: (msg) => { if (msg.type === 'bark') showBubble(msg.text, msg.mood); },
 *   onStatus: (status) => showStatus(status),
 * });
 * await bridge.send({ type: 'message', text: 'Hey Timmy', visitor: 'Alexander' });
 * ```
 *
 * What it does for you, because browsers on tablets are hostile to long-lived sockets:
 * - reconnects with exponential backoff (1, 2, 4, 8, 16, 30 s, capped, with jitter), reset
 *   once a connection has stayed healthy for a while;
 * - gets the full state after every (re)connect; in diff mode applies RFC 6902 patches and
 *   asks for a `resync` when a `seq` is missing;
 * - sends an application-level `ping` every 15 s: no answer in time means the socket is dead
 *   even if the browser has not noticed, so it is dropped and replaced;
 * - abandons a connect attempt that stays CONNECTING for 5 s (iOS leaves zombie sockets);
 * - checks the link at once when the tab comes back (`visibilitychange`, `pageshow`, `resume`,
 *   `online`) instead of waiting out the backoff, and stops retrying while `offline`;
 * - never loses a message: `send()` gives it an `id`, queues it (bounded) while disconnected
 *   and re-sends it until the bridge acknowledges it. The bridge remembers ids per `client`
 *   identity (kept in `sessionStorage`), so a message re-sent after a reconnect is written
 *   to the inbox exactly once.
 *
 * No dependencies and no build step: this file is served by the bridge at `/client.js`.
 * It touches no browser global when imported, so its pure parts (`backoffDelay`,
 * `applyPatch`, `SendQueue`) also run under Node.
 *
 * @module workshop-bridge/client
 */

/**
 * Tuning knobs; every one can be overridden in {@link connectBridge}'s options.
 * @readonly
 */
export const DEFAULTS = Object.freeze({
  /** First reconnect delay. */
  backoffBaseMs: 1000,
  /** Longest reconnect delay. */
  backoffMaxMs: 30000,
  /** Each delay is spread by up to ±this fraction so a room of iPads does not reconnect in step. */
  backoffJitter: 0.2,
  /** A connection open this long resets the backoff to its first step. */
  healthyAfterMs: 10000,
  /** A socket still CONNECTING after this long is abandoned and retried. */
  connectTimeoutMs: 5000,
  /** An application-level `ping` is sent this often. */
  pingIntervalMs: 15000,
  /** Nothing heard this long after a `ping` means the socket is dead. */
  pongTimeoutMs: 10000,
  /** When the tab comes back, a quick `ping` must be answered within this. */
  probeTimeoutMs: 2000,
  /** Most messages waiting for an acknowledgement; `send()` refuses more. */
  maxQueue: 100,
  /** Queued messages sent per second at most (the bridge closes clients that flood it). */
  maxSendPerSecond: 10,
  /** After a transient refusal (inbox full or unavailable, rate limit) wait this long. */
  retryAfterErrorMs: 2000,
});

/** Error codes after which a queued message is tried again later rather than given up. */
const TRANSIENT_ERRORS = new Set(['inbox_unavailable', 'inbox_full', 'rate_limited']);

const TOKEN_KEY = 'workshop-bridge:token';
const CLIENT_KEY = 'workshop-bridge:client';

/**
 * @typedef {'connecting' | 'open' | 'reconnecting' | 'offline' | 'closed'} ConnectionState
 *
 * @typedef {object} BridgeStatus
 * @property {ConnectionState} state
 *   `connecting`: an attempt is under way; `open`: connected; `reconnecting`: waiting
 *   `retryInMs` before the next attempt; `offline`: the browser has no network, waiting for
 *   it; `closed`: `close()` was called.
 * @property {number} attempt Failed attempts in a row (0 once a connection has been healthy).
 * @property {number | null} retryInMs While `reconnecting`: the delay chosen.
 * @property {number | null} retryAt While `reconnecting`: when the next attempt starts (epoch ms).
 * @property {number} queued Messages sent with `send()` that the bridge has not acknowledged yet.
 * @property {boolean} everOpened Whether any connection has opened since `connectBridge`.
 * @property {string | null} reason Why the last connection ended, for people.
 *
 * @typedef {object} StateInfo
 * @property {number} seq The state's sequence number (grows by one per change of the file).
 * @property {boolean} full Whether it came whole (`state`) or as a patch (`state_patch`).
 * @property {unknown[]} [patch] The RFC 6902 operations, when it came as a patch.
 *
 * @typedef {{ type: string, [key: string]: unknown }} BridgeMessage
 *
 * @typedef {object} BridgeOptions
 * @property {string} [url] WebSocket URL; default: `/ws` on the page's own host (ws: or wss:).
 * @property {string | null} [token] Default: `?token=` of the page URL (then removed from the
 *   address bar) or the one remembered from an earlier visit. `null` sends none.
 * @property {boolean} [diff] Ask for `state_patch` messages (smaller on weak Wi-Fi).
 * @property {string} [clientId] Stable identity for exactly-once delivery; default: a random
 *   id kept in `sessionStorage` for this tab.
 * @property {(state: unknown, info: StateInfo) => void} [onState] The newest whole state.
 * @property {(message: BridgeMessage) => void} [onEvent] Every other message: barks, visitor
 *   messages, enter/leave, errors not tied to a `send()`, `system_status`, …
 * @property {(status: BridgeStatus) => void} [onStatus] Connection changes.
 * @property {() => (BridgeMessage | BridgeMessage[] | null | undefined)} [hello] Messages sent
 *   first on every new connection (e.g. `enter`), before queued messages.
 * @property {typeof WebSocket} [WebSocket] For tests: the WebSocket implementation.
 * @property {any} [window] For tests: the window whose events and location are used.
 * @property {number} [backoffBaseMs]
 * @property {number} [backoffMaxMs]
 * @property {number} [backoffJitter]
 * @property {number} [healthyAfterMs]
 * @property {number} [connectTimeoutMs]
 * @property {number} [pingIntervalMs]
 * @property {number} [pongTimeoutMs]
 * @property {number} [probeTimeoutMs]
 * @property {number} [maxQueue]
 * @property {number} [maxSendPerSecond]
 * @property {number} [retryAfterErrorMs]
 *
 * @typedef {object} BridgeConnection
 * @property {(message: BridgeMessage) => Promise<{ id: string }>} send
 *   Sends reliably: resolves once the bridge acknowledges it (for visitor messages: once it
 *   is on disk), survives reconnects, rejects with a {@link BridgeError} if the bridge refuses
 *   it for good or with a {@link QueueFullError} if too many are waiting.
 * @property {(message: BridgeMessage) => boolean} trySend
 *   Sends now if connected, without id, queue or retry; returns whether it went out.
 * @property {() => void} reconnect Drops the current socket (if any) and connects at once.
 * @property {() => void} resync Asks the bridge for the whole state again.
 * @property {() => void} close Closes for good; pending `send()` promises reject.
 * @property {BridgeStatus} status The current status.
 * @property {unknown} state The newest state (undefined before the first).
 * @property {number | null} seq Its sequence number.
 * @property {string} clientId The identity sent as `?client=`.
 */

// ---------------------------------------------------------------------------------------
// Backoff

/**
 * The delay before reconnect attempt number `attempt` (0 for the first retry): 1, 2, 4, 8,
 * 16, 30, 30 … seconds with the defaults, each spread by up to ±`jitter` and never above
 * `maxMs`.
 *
 * @param {number} attempt
 * @param {{ baseMs?: number, maxMs?: number, jitter?: number, random?: () => number }} [options]
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, options = {}) {
  const {
    baseMs = DEFAULTS.backoffBaseMs,
    maxMs = DEFAULTS.backoffMaxMs,
    jitter = DEFAULTS.backoffJitter,
    random = Math.random,
  } = options;
  const n = Math.max(0, Math.floor(attempt));
  // 2 ** n overflows to Infinity long after the cap; Math.min keeps it finite.
  const nominal = Math.min(maxMs, baseMs * 2 ** Math.min(n, 52));
  const spread = 1 + jitter * (2 * random() - 1);
  return Math.round(Math.max(0, Math.min(maxMs, nominal * spread)));
}

// ---------------------------------------------------------------------------------------
// RFC 6902 JSON Patch

/** A patch that cannot be applied to the document (the client then asks for a resync). */
export class PatchError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'PatchError';
  }
}

const hasOwn = (/** @type {object} */ o, /** @type {string} */ k) =>
  Object.prototype.hasOwnProperty.call(o, k);

/** @param {unknown} v @returns {v is Record<string, unknown>} */
const isObject = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Splits a JSON Pointer (RFC 6901) into its unescaped tokens.
 * @param {unknown} pointer
 * @returns {string[]}
 */
export function parsePointer(pointer) {
  if (typeof pointer !== 'string') throw new PatchError('a path must be a string');
  if (pointer === '') return [];
  if (pointer[0] !== '/') throw new PatchError(`path "${pointer}" must start with "/"`);
  return pointer
    .slice(1)
    .split('/')
    .map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
}

/**
 * @param {unknown[]} array
 * @param {string} token
 * @param {boolean} allowEnd whether `-` and `length` (append) are allowed
 */
function arrayIndex(array, token, allowEnd) {
  if (token === '-' && allowEnd) return array.length;
  if (!/^(0|[1-9][0-9]*)$/.test(token)) throw new PatchError(`"${token}" is not an array index`);
  const i = Number(token);
  if (i > array.length || (i === array.length && !allowEnd)) {
    throw new PatchError(`index ${i} is out of bounds`);
  }
  return i;
}

/** @param {unknown} doc @param {string[]} tokens */
function getAt(doc, tokens) {
  let node = doc;
  for (const token of tokens) {
    if (Array.isArray(node)) node = node[arrayIndex(node, token, false)];
    else if (isObject(node) && hasOwn(node, token)) node = node[token];
    else throw new PatchError(`path "/${tokens.join('/')}" does not exist`);
  }
  return node;
}

/**
 * Returns a copy of `node` in which the container at `tokens[0..-1]` was replaced by
 * `edit(copyOfContainer, lastToken)`. Only the containers along the path are copied: the
 * input is never changed and untouched branches are shared.
 *
 * @param {unknown} node
 * @param {string[]} tokens non-empty
 * @param {(container: Record<string, unknown> | unknown[], token: string) => void} edit
 * @returns {unknown}
 */
function editAt(node, tokens, edit, depth = 0) {
  const token = tokens[depth];
  let copy;
  if (Array.isArray(node)) copy = node.slice();
  else if (isObject(node)) copy = copyObject(node);
  else throw new PatchError(`path "/${tokens.slice(0, depth).join('/')}" is not a container`);
  if (depth === tokens.length - 1) {
    edit(copy, token);
    return copy;
  }
  const child = getAt(node, [token]);
  setOwn(copy, Array.isArray(copy) ? String(arrayIndex(copy, token, false)) : token,
    editAt(child, tokens, edit, depth + 1));
  return copy;
}

/** A shallow copy that keeps keys like `__proto__` as plain data. */
function copyObject(/** @type {Record<string, unknown>} */ o) {
  /** @type {Record<string, unknown>} */
  const copy = {};
  for (const key of Object.keys(o)) setOwn(copy, key, o[key]);
  return copy;
}

/** Sets a key as an own data property (never invoking the `__proto__` setter). */
function setOwn(/** @type {any} */ target, /** @type {string} */ key, /** @type {unknown} */ value) {
  Object.defineProperty(target, key, { value, writable: true, enumerable: true, configurable: true });
}

/** @param {unknown} doc @param {string[]} tokens @param {unknown} value */
function addAt(doc, tokens, value) {
  if (tokens.length === 0) return value;
  return editAt(doc, tokens, (container, token) => {
    if (Array.isArray(container)) container.splice(arrayIndex(container, token, true), 0, value);
    else setOwn(container, token, value);
  });
}

/** @param {unknown} doc @param {string[]} tokens */
function removeAt(doc, tokens) {
  if (tokens.length === 0) throw new PatchError('cannot remove the whole document');
  return editAt(doc, tokens, (container, token) => {
    if (Array.isArray(container)) container.splice(arrayIndex(container, token, false), 1);
    else if (hasOwn(container, token)) delete container[token];
    else throw new PatchError(`path "/${tokens.join('/')}" does not exist`);
  });
}

/** @param {unknown} doc @param {string[]} tokens @param {unknown} value */
function replaceAt(doc, tokens, value) {
  if (tokens.length === 0) return value;
  return editAt(doc, tokens, (container, token) => {
    if (Array.isArray(container)) container[arrayIndex(container, token, false)] = value;
    else if (hasOwn(container, token)) setOwn(container, token, value);
    else throw new PatchError(`path "/${tokens.join('/')}" does not exist`);
  });
}

/**
 * Structural equality of two JSON values (what the `test` operation compares).
 * @param {unknown} a
 * @param {unknown} b
 * @returns {boolean}
 */
export function jsonEqual(a, b) {
  if (a === b) return true;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((v, i) => jsonEqual(v, b[i]));
  }
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => hasOwn(b, k) && jsonEqual(a[k], b[k]));
  }
  return false;
}

/** @param {unknown} v @returns {unknown} */
const cloneJson = (v) => (v === undefined ? v : JSON.parse(JSON.stringify(v)));

/**
 * Applies an RFC 6902 patch and returns the new document. The input document is not
 * changed; branches the patch does not touch are shared with it. Throws {@link PatchError}
 * (and applies nothing) if any operation fails.
 *
 * @param {unknown} doc
 * @param {unknown} patch an array of operations
 * @returns {unknown}
 */
export function applyPatch(doc, patch) {
  if (!Array.isArray(patch)) throw new PatchError('a patch must be an array of operations');
  let result = doc;
  for (const op of patch) {
    if (!isObject(op)) throw new PatchError('an operation must be an object');
    const path = parsePointer(op.path);
    const needsValue = op.op === 'add' || op.op === 'replace' || op.op === 'test';
    if (needsValue && !hasOwn(op, 'value')) throw new PatchError(`"${op.op}" needs a value`);
    switch (op.op) {
      case 'add':
        result = addAt(result, path, op.value);
        break;
      case 'remove':
        result = removeAt(result, path);
        break;
      case 'replace':
        result = replaceAt(result, path, op.value);
        break;
      case 'move': {
        const from = parsePointer(op.from);
        if (from.length < path.length && from.every((t, i) => t === path[i])) {
          throw new PatchError('cannot move a value into itself');
        }
        const value = getAt(result, from);
        result = addAt(removeAt(result, from), path, value);
        break;
      }
      case 'copy':
        result = addAt(result, path, cloneJson(getAt(result, parsePointer(op.from))));
        break;
      case 'test':
        if (!jsonEqual(getAt(result, path), op.value)) {
          throw new PatchError(`test failed at "${op.path}"`);
        }
        break;
      default:
        throw new PatchError(`unknown operation ${JSON.stringify(op.op)}`);
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------------
// The send queue

/** `send()` was refused because too many messages already wait for the bridge. */
export class QueueFullError extends Error {
  /** @param {number} max */
  constructor(max) {
    super(`${max} messages are already waiting to be sent`);
    this.name = 'QueueFullError';
  }
}

/** The bridge refused a message for good (`{"type":"error","code":…}`), or the client closed. */
export class BridgeError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.name = 'BridgeError';
    /** A stable machine-readable code, e.g. `text_too_long`, or `closed`. */
    this.code = code;
  }
}

/**
 * @typedef {object} QueueEntry
 * @property {string} id
 * @property {BridgeMessage} message the message as sent, with its `id`
 * @property {boolean} sent whether it went out on the current connection
 * @property {number} notBefore do not send before this time (epoch ms), after a transient error
 * @property {(ack: { id: string }) => void} resolve
 * @property {(error: Error) => void} reject
 */

/**
 * Messages waiting for the bridge's acknowledgement, in the order they were sent. Bounded:
 * beyond `max`, `add` refuses rather than silently dropping anything.
 */
export class SendQueue {
  /** @param {{ max?: number, newId?: () => string }} [options] */
  constructor(options = {}) {
    this.max = options.max ?? DEFAULTS.maxQueue;
    this.newId = options.newId ?? (() => `m-${Date.now().toString(36)}-${randomHex(8)}`);
    /** @type {Map<string, QueueEntry>} */
    this.entries = new Map();
  }

  /** How many messages wait for an acknowledgement. */
  get size() {
    return this.entries.size;
  }

  /**
   * Queues a message, giving it an `id` unless it has one.
   * @param {BridgeMessage} message
   * @returns {{ id: string, done: Promise<{ id: string }> }}
   */
  add(message) {
    if (this.entries.size >= this.max) {
      return { id: '', done: Promise.reject(new QueueFullError(this.max)) };
    }
    const id = message.id === undefined || message.id === null ? this.newId() : String(message.id);
    if (this.entries.has(id)) {
      return { id, done: Promise.reject(new BridgeError('duplicate_id', `id ${id} is already waiting`)) };
    }
    /** @type {(ack: { id: string }) => void} */
    let resolve = () => {};
    /** @type {(error: Error) => void} */
    let reject = () => {};
    const done = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.entries.set(id, { id, message: { ...message, id }, sent: false, notBefore: 0, resolve, reject });
    return { id, done };
  }

  /** @param {string} id */
  has(id) {
    return this.entries.has(id);
  }

  /**
   * Entries still to send on the current connection, oldest first.
   * @param {number} [now]
   * @returns {QueueEntry[]}
   */
  due(now = Date.now()) {
    return [...this.entries.values()].filter((e) => !e.sent && e.notBefore <= now);
  }

  /** The earliest time a held-back entry may be sent, or null. */
  nextDueAt() {
    let next = null;
    for (const e of this.entries.values()) {
      if (!e.sent && (next === null || e.notBefore < next)) next = e.notBefore;
    }
    return next;
  }

  /** @param {string} id */
  markSent(id) {
    const e = this.entries.get(id);
    if (e) e.sent = true;
  }

  /** A new connection: everything not acknowledged goes out again. */
  markAllUnsent() {
    for (const e of this.entries.values()) e.sent = false;
  }

  /**
   * The bridge acknowledged `id`: resolves its promise and forgets it.
   * @param {string} id
   * @returns {boolean} whether it was waiting
   */
  ack(id) {
    const e = this.entries.get(id);
    if (!e) return false;
    this.entries.delete(id);
    e.resolve({ id });
    return true;
  }

  /**
   * Sends `id` again later, not before `notBefore`.
   * @param {string} id
   * @param {number} notBefore
   */
  retryLater(id, notBefore) {
    const e = this.entries.get(id);
    if (!e) return false;
    e.sent = false;
    e.notBefore = notBefore;
    return true;
  }

  /**
   * Gives up on `id`: rejects its promise and forgets it.
   * @param {string} id
   * @param {Error} error
   */
  fail(id, error) {
    const e = this.entries.get(id);
    if (!e) return false;
    this.entries.delete(id);
    e.reject(error);
    return true;
  }

  /** Gives up on everything (the client was closed). @param {Error} error */
  failAll(error) {
    for (const id of [...this.entries.keys()]) this.fail(id, error);
  }
}

// ---------------------------------------------------------------------------------------
// Page helpers

/** Random hex digits; works outside secure contexts (plain http on the LAN), unlike randomUUID. */
function randomHex(/** @type {number} */ bytes) {
  const buf = new Uint8Array(bytes);
  if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(buf);
  else for (let i = 0; i < bytes; i++) buf[i] = Math.floor(Math.random() * 256);
  return Array.from(buf, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Storage that may be missing or throw (private browsing, disabled cookies). */
function storage(/** @type {any} */ win, /** @type {'localStorage' | 'sessionStorage'} */ kind) {
  try {
    const s = win?.[kind];
    return s && typeof s.getItem === 'function' ? s : null;
  } catch {
    return null;
  }
}

function storageGet(/** @type {any} */ s, /** @type {string} */ key) {
  try {
    return s ? s.getItem(key) : null;
  } catch {
    return null;
  }
}

function storageSet(/** @type {any} */ s, /** @type {string} */ key, /** @type {string} */ value) {
  try {
    s?.setItem(key, value);
  } catch {
    // Storage full or forbidden: the value lives for this page only.
  }
}

/**
 * The bridge token for this page: `?token=` in its address (as the QR code puts it), which is
 * then remembered and, unless `remove` is false, taken out of the address bar so it does not
 * end up in screenshots, history or shared links; else the one remembered from an earlier
 * visit (so reloads and home-screen bookmarks keep working); else null.
 *
 * @param {{ window?: any, remove?: boolean }} [options]
 * @returns {string | null}
 */
export function tokenFromPage(options = {}) {
  const win = options.window ?? (typeof window === 'undefined' ? undefined : window);
  if (!win?.location) return null;
  const local = storage(win, 'localStorage');
  const url = new URL(win.location.href);
  const token = url.searchParams.get('token');
  if (token) {
    storageSet(local, TOKEN_KEY, token);
    if (options.remove !== false && win.history?.replaceState) {
      url.searchParams.delete('token');
      win.history.replaceState(win.history.state, '', url.pathname + url.search + url.hash);
    }
    return token;
  }
  return storageGet(local, TOKEN_KEY);
}

/**
 * The hub address of the bridge that served this page.
 * @param {{ protocol: string, host: string }} location
 */
export function defaultBridgeUrl(location) {
  return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws`;
}

/** This tab's identity, kept across reloads and reconnects (not across tabs). */
function tabClientId(/** @type {any} */ win) {
  const session = storage(win, 'sessionStorage');
  let id = storageGet(session, CLIENT_KEY);
  if (!id || !/^[A-Za-z0-9_-]{8,128}$/.test(id)) {
    id = `tab-${randomHex(16)}`;
    storageSet(session, CLIENT_KEY, id);
  }
  return id;
}

// ---------------------------------------------------------------------------------------
// The connection

/**
 * Connects to the bridge and keeps the connection alive until `close()`.
 *
 * @param {BridgeOptions} [options]
 * @returns {BridgeConnection}
 */
export function connectBridge(options = {}) {
  const o = { ...DEFAULTS, ...options };
  const win = options.window ?? (typeof window === 'undefined' ? undefined : window);
  const doc = win?.document;
  const WS = options.WebSocket ?? globalThis.WebSocket;
  if (!WS) throw new Error('connectBridge needs a WebSocket implementation');
  const baseUrl = options.url ?? (win?.location ? defaultBridgeUrl(win.location) : null);
  if (!baseUrl) throw new Error('connectBridge needs a url outside a browser page');
  const token = options.token !== undefined ? options.token : tokenFromPage({ window: win });
  const clientId = options.clientId ?? tabClientId(win);
  const queue = new SendQueue({ max: o.maxQueue });

  /** @type {WebSocket | null} */
  let ws = null;
  let closed = false;
  let attempt = 0;
  let everOpened = false;
  let offline = win?.navigator?.onLine === false;
  /** @type {string | null} */
  let reason = null;
  let retryAt = /** @type {number | null} */ (null);
  let retryInMs = /** @type {number | null} */ (null);
  /** @type {ConnectionState} */
  let state = 'connecting';
  /** @type {unknown} */
  let current;
  /** @type {number | null} */
  let seq = null;
  let awaitingResync = false;
  let lastHeard = 0;
  /** Messages received so far: a ping is answered if this moved. */
  let heardCount = 0;
  /** @type {number[]} send times of queued messages in the last second */
  let recentSends = [];

  const timers = {
    retry: /** @type {any} */ (null),
    connect: /** @type {any} */ (null),
    ping: /** @type {any} */ (null),
    pong: /** @type {any} */ (null),
    healthy: /** @type {any} */ (null),
    flush: /** @type {any} */ (null),
  };
  const clear = (/** @type {keyof typeof timers} */ name) => {
    if (timers[name] !== null) {
      clearTimeout(timers[name]);
      clearInterval(timers[name]);
      timers[name] = null;
    }
  };
  const clearAll = () => {
    for (const name of /** @type {(keyof typeof timers)[]} */ (Object.keys(timers))) clear(name);
  };

  /** Calls user code without letting it break the connection logic. */
  const safely = (/** @type {Function | undefined} */ fn, /** @type {unknown[]} */ ...args) => {
    if (!fn) return;
    try {
      fn(...args);
    } catch (e) {
      console.error('workshop-bridge client: a callback threw', e);
    }
  };

  /** @returns {BridgeStatus} */
  const snapshot = () => ({
    state,
    attempt,
    retryInMs: state === 'reconnecting' ? retryInMs : null,
    retryAt: state === 'reconnecting' ? retryAt : null,
    queued: queue.size,
    everOpened,
    reason,
  });
  const report = () => safely(o.onStatus, snapshot());
  const setState = (/** @type {ConnectionState} */ next) => {
    state = next;
    report();
  };

  const isOpen = () => ws !== null && ws.readyState === WS.OPEN;

  function url() {
    const u = new URL(baseUrl, win?.location?.href);
    // A relative url resolves against the page's http(s) address.
    if (u.protocol === 'http:') u.protocol = 'ws:';
    else if (u.protocol === 'https:') u.protocol = 'wss:';
    if (token) u.searchParams.set('token', token);
    u.searchParams.set('client', clientId);
    if (o.diff) u.searchParams.set('diff', '1');
    return u.toString();
  }

  /** Sends a frame on the open socket; false if there is none or it refused. */
  function rawSend(/** @type {unknown} */ message) {
    if (!isOpen() || !ws) return false;
    try {
      ws.send(JSON.stringify(message));
      return true;
    } catch {
      return false;
    }
  }

  /** Forgets a socket without waiting for it: its events are ignored from now on. */
  function drop(/** @type {WebSocket | null} */ socket, /** @type {number} */ code = 1000) {
    if (!socket) return;
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    try {
      if (socket.readyState === WS.CONNECTING || socket.readyState === WS.OPEN) {
        socket.close(code, 'replaced by a new connection');
      }
    } catch {
      // A socket that cannot even close is already gone.
    }
    if (ws === socket) ws = null;
  }

  function connect() {
    clear('retry');
    clear('connect');
    if (closed) return;
    if (offline) {
      setState('offline');
      return;
    }
    drop(ws);
    /** @type {WebSocket} */
    let socket;
    try {
      socket = new WS(url());
    } catch (e) {
      reason = `cannot connect: ${e instanceof Error ? e.message : String(e)}`;
      scheduleRetry();
      return;
    }
    ws = socket;
    setState('connecting');
    timers.connect = setTimeout(() => {
      if (ws !== socket || socket.readyState !== WS.CONNECTING) return;
      drop(socket);
      reason = 'the connection attempt timed out';
      scheduleRetry();
    }, o.connectTimeoutMs);
    socket.onopen = () => {
      if (ws === socket) opened();
    };
    socket.onmessage = (event) => {
      if (ws === socket) received(event.data);
    };
    socket.onclose = (event) => {
      if (ws === socket) ended(describeClose(event.code, event.reason), event.code);
    };
    // An error is always followed by a close event, which does the work.
    socket.onerror = () => {};
  }

  function opened() {
    clear('connect');
    everOpened = true;
    reason = null;
    lastHeard = Date.now();
    // The bridge sends the whole state first on every connection.
    seq = null;
    awaitingResync = false;
    recentSends = [];
    setState('open');
    timers.healthy = setTimeout(() => {
      timers.healthy = null;
      attempt = 0;
      report();
    }, o.healthyAfterMs);
    timers.ping = setInterval(ping, o.pingIntervalMs);
    const hello = o.hello ? safeCall(o.hello) : null;
    for (const message of Array.isArray(hello) ? hello : hello ? [hello] : []) rawSend(message);
    queue.markAllUnsent();
    flush();
  }

  function safeCall(/** @type {() => any} */ fn) {
    try {
      return fn();
    } catch (e) {
      console.error('workshop-bridge client: hello threw', e);
      return null;
    }
  }

  /** The socket ended (or was found dead): retry according to the situation. */
  function ended(/** @type {string} */ why, /** @type {number} */ code = 1006) {
    drop(ws);
    stopLiveness();
    clear('flush');
    queue.markAllUnsent();
    reason = why;
    if (closed) return;
    if (offline) {
      setState('offline');
      return;
    }
    // A policy close (e.g. flooding) must not turn into a tight reconnect loop.
    if (code === 1008) attempt = Math.max(attempt, 3);
    scheduleRetry();
  }

  function stopLiveness() {
    clear('ping');
    clear('pong');
    clear('healthy');
  }

  function scheduleRetry() {
    clear('retry');
    if (closed) return;
    const delay = backoffDelay(attempt, {
      baseMs: o.backoffBaseMs,
      maxMs: o.backoffMaxMs,
      jitter: o.backoffJitter,
    });
    attempt += 1;
    retryInMs = delay;
    retryAt = Date.now() + delay;
    timers.retry = setTimeout(connect, delay);
    setState('reconnecting');
  }

  /** The socket is dead although the browser may not know: replace it now. */
  function dead(/** @type {string} */ why) {
    if (closed) return;
    drop(ws);
    stopLiveness();
    clear('flush');
    queue.markAllUnsent();
    reason = why;
    connect();
  }

  /** Sends a ping; nothing heard within `timeout` means the socket is dead. */
  function ping(timeout = o.pongTimeoutMs, why = 'no answer to ping') {
    if (!isOpen()) return;
    if (timers.pong !== null) return; // one already waits
    const heardBefore = heardCount;
    rawSend({ type: 'ping', id: `p-${Date.now().toString(36)}` });
    timers.pong = setTimeout(() => {
      timers.pong = null;
      if (heardCount === heardBefore) dead(why);
    }, timeout);
  }

  /**
   * The tab came back (or the network did): check the link at once rather than waiting for
   * the next heartbeat or the backoff timer.
   */
  function checkNow() {
    if (closed || offline) return;
    if (ws === null) {
      // Waiting out a backoff: try now.
      connect();
      return;
    }
    if (ws.readyState === WS.CONNECTING) return; // its own timeout covers it
    if (ws.readyState !== WS.OPEN) {
      dead('the connection was lost while the page was in the background');
      return;
    }
    // Open as far as the browser knows. Silent for longer than a heartbeat: certainly dead
    // (iOS kills sockets of background tabs without telling the page); else ask quickly.
    if (Date.now() - lastHeard > o.pingIntervalMs + o.pongTimeoutMs) {
      dead('the connection went quiet while the page was in the background');
      return;
    }
    clear('pong');
    ping(o.probeTimeoutMs, 'no answer after the page came back');
  }

  function received(/** @type {unknown} */ data) {
    lastHeard = Date.now();
    heardCount += 1;
    clear('pong');
    if (typeof data !== 'string') return;
    /** @type {any} */
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (!isObject(msg) || typeof msg.type !== 'string') return;
    switch (msg.type) {
      case 'state':
        current = msg.data;
        seq = typeof msg.seq === 'number' ? msg.seq : null;
        awaitingResync = false;
        safely(o.onState, current, { seq: seq ?? 0, full: true });
        return;
      case 'state_patch':
        onPatch(msg);
        return;
      case 'ack':
        if (queue.ack(String(msg.id))) report();
        return;
      case 'pong':
        return;
      case 'error':
        if (msg.id !== undefined && queue.has(String(msg.id))) {
          refused(String(msg.id), String(msg.code ?? 'error'), String(msg.message ?? 'refused'));
          return;
        }
        safely(o.onEvent, msg);
        return;
      default:
        safely(o.onEvent, msg);
    }
  }

  function onPatch(/** @type {any} */ msg) {
    if (awaitingResync) return;
    if (typeof msg.seq !== 'number') return;
    if (seq !== null && msg.seq <= seq) return; // already have it
    if (seq === null || msg.seq !== seq + 1) {
      resync();
      return;
    }
    try {
      current = applyPatch(current, msg.patch);
    } catch {
      resync();
      return;
    }
    seq = msg.seq;
    safely(o.onState, current, { seq, full: false, patch: msg.patch });
  }

  function resync() {
    awaitingResync = rawSend({ type: 'resync' });
  }

  function refused(/** @type {string} */ id, /** @type {string} */ code, /** @type {string} */ message) {
    if (TRANSIENT_ERRORS.has(code)) {
      queue.retryLater(id, Date.now() + o.retryAfterErrorMs);
      scheduleFlush(o.retryAfterErrorMs);
    } else {
      queue.fail(id, new BridgeError(code, message));
      report();
    }
  }

  /** Sends what is due, at most `maxSendPerSecond`, and plans the rest. */
  function flush() {
    clear('flush');
    if (!isOpen()) return;
    const now = Date.now();
    recentSends = recentSends.filter((t) => now - t < 1000);
    for (const entry of queue.due(now)) {
      if (recentSends.length >= o.maxSendPerSecond) break;
      if (!rawSend(entry.message)) return;
      queue.markSent(entry.id);
      recentSends.push(now);
    }
    const next = queue.nextDueAt();
    if (next !== null) {
      const windowFree = recentSends.length >= o.maxSendPerSecond ? recentSends[0] + 1000 : now;
      scheduleFlush(Math.max(next, windowFree) - now);
    }
  }

  function scheduleFlush(/** @type {number} */ delay) {
    if (timers.flush !== null) return;
    timers.flush = setTimeout(() => {
      timers.flush = null;
      flush();
    }, Math.max(0, delay));
  }

  // Browser life-cycle: tab suspension, back-forward cache, network changes.
  const onVisibility = () => {
    if (doc?.visibilityState === 'visible') checkNow();
  };
  const onPageShow = () => checkNow();
  const onOnline = () => {
    offline = false;
    if (state === 'offline' || ws === null) connect();
    else checkNow();
  };
  const onOffline = () => {
    offline = true;
    if (!isOpen()) {
      clear('retry');
      drop(ws);
      setState('offline');
    }
  };
  /** @type {[any, string, () => void][]} */
  const listeners = [
    [doc, 'visibilitychange', onVisibility],
    [doc, 'resume', onPageShow],
    [win, 'pageshow', onPageShow],
    [win, 'online', onOnline],
    [win, 'offline', onOffline],
  ];
  for (const [target, type, fn] of listeners) target?.addEventListener?.(type, fn);

  connect();

  return {
    send(message) {
      if (closed) return Promise.reject(new BridgeError('closed', 'the bridge connection was closed'));
      const { done } = queue.add(message);
      report();
      flush();
      return done;
    },
    trySend(message) {
      return rawSend(message);
    },
    reconnect() {
      if (closed) return;
      offline = win?.navigator?.onLine === false;
      dead('reconnect requested');
    },
    resync,
    close() {
      if (closed) return;
      closed = true;
      for (const [target, type, fn] of listeners) target?.removeEventListener?.(type, fn);
      clearAll();
      const socket = ws;
      drop(socket);
      queue.failAll(new BridgeError('closed', 'the bridge connection was closed'));
      reason = 'closed by the page';
      setState('closed');
    },
    get status() {
      return snapshot();
    },
    get state() {
      return current;
    },
    get seq() {
      return seq;
    },
    get clientId() {
      return clientId;
    },
  };
}

/** A close code as a sentence for people. */
function describeClose(/** @type {number} */ code, /** @type {string} */ why) {
  const known = /** @type {Record<number, string>} */ ({
    1000: 'closed',
    1001: 'the bridge went away',
    1006: 'the connection was lost',
    1008: 'the bridge closed the connection (too many messages)',
    1009: 'a message was too big',
    1011: 'the bridge hit an error',
    1013: 'the connection was too slow to keep up',
  });
  const text = known[code] ?? `closed (${code})`;
  return why ? `${text}: ${why}` : text;
}
