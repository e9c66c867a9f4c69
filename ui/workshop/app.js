// @ts-check
/**
 * The built-in Workshop page: the agent's live state, its barks, and a way to talk to it.
 *
 * Everything shown comes from the state file or from other people, so it is all treated as
 * untrusted text: it reaches the page through `textContent` and attribute setters only,
 * never through HTML parsing.
 */
import { connectBridge, tokenFromPage } from './client.js';

/** @param {string} id */
const byId = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/**
 * Creates an element with a class and text.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {string} [className]
 * @param {string} [text]
 * @returns {HTMLElementTagNameMap[K]}
 */
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** @param {unknown} v */
const isObject = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);
/** @param {unknown} v @returns {any} */
const obj = (v) => (isObject(v) ? v : {});
/** @param {unknown} v */
const str = (v) => (typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : '');

const MOOD_EMOJI = /** @type {Record<string, string>} */ ({
  calm: '😌', alert: '👀', excited: '✨', contemplative: '🤔', uncertain: '😕', amused: '😄',
  happy: '😊', sad: '😔', tired: '😴', curious: '🧐', focused: '🎯', proud: '😌', worried: '😟',
  angry: '😠', surprised: '😮', playful: '😜', sleepy: '😴', thinking: '💭',
});
/** @param {string} mood */
const moodEmoji = (mood) => MOOD_EMOJI[mood.toLowerCase()] ?? '💬';

/** "watching-gitea" → "Watching gitea" */
function humanize(/** @type {string} */ s) {
  const t = s.replace(/[-_]+/g, ' ').trim();
  return t ? t[0].toUpperCase() + t.slice(1) : t;
}

const clock = (/** @type {Date} */ d = new Date()) =>
  d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

// ---------------------------------------------------------------------------------------
// The state tree: reconciled in place, so open branches stay open and changes can flash.

const tree = byId('tree');
/** @type {HTMLUListElement | null} */
let treeRoot = null;
let renderedOnce = false;

/** @param {unknown} v @returns {'object' | 'array' | 'inline' | 'scalar'} */
function kindOf(v) {
  if (Array.isArray(v)) {
    const scalars = v.every((x) => x === null || typeof x !== 'object');
    if (scalars && v.length > 0 && v.length <= 8 && formatInline(v).length <= 48) return 'inline';
    return 'array';
  }
  return isObject(v) ? 'object' : 'scalar';
}

/** @param {unknown[]} v */
const formatInline = (v) => `[${v.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))).join(', ')}]`;

/** @param {unknown} v @returns {[string, string]} text and type */
function formatScalar(v) {
  if (v === null || v === undefined) return ['null', 'null'];
  if (typeof v === 'string') return v === '' ? ['(empty)', 'empty'] : [v, 'string'];
  if (typeof v === 'number') return [String(v), 'number'];
  if (typeof v === 'boolean') return [String(v), 'boolean'];
  return [JSON.stringify(v), 'string'];
}

/** @param {string} base @param {string} key */
const childPath = (base, key) => `${base}/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`;

/** @param {unknown} v */
function countLabel(v) {
  if (Array.isArray(v)) return v.length === 1 ? '1 item' : `${v.length} items`;
  const n = Object.keys(obj(v)).length;
  return n === 1 ? '1 key' : `${n} keys`;
}

/**
 * @param {string} key
 * @param {unknown} value
 * @param {string} path
 * @param {number} depth
 * @returns {HTMLLIElement}
 */
function createNode(key, value, path, depth) {
  const kind = kindOf(value);
  const li = el('li', `node ${kind === 'object' || kind === 'array' ? 'branch' : 'leaf'}`);
  li.dataset.key = key;
  li.dataset.kind = kind;
  li.dataset.path = path;
  if (kind === 'object' || kind === 'array') {
    const details = el('details');
    const size = Array.isArray(value) ? value.length : Object.keys(obj(value)).length;
    details.open = depth === 0 || size <= 6;
    const summary = el('summary');
    summary.append(el('span', 'key', key), el('span', 'count', countLabel(value)));
    const ul = el('ul', 'children');
    details.append(summary, ul);
    li.append(details);
    reconcile(ul, value, path, depth + 1, false);
  } else {
    li.append(el('span', 'key', key), el('span', 'value'));
    setLeaf(li, value);
  }
  return li;
}

/** Writes a leaf's value; returns whether it changed. */
function setLeaf(/** @type {HTMLElement} */ li, /** @type {unknown} */ value) {
  const span = /** @type {HTMLElement} */ (li.querySelector(':scope > .value'));
  const [text, type] = li.dataset.kind === 'inline' ? [formatInline(/** @type {unknown[]} */ (value)), 'inline'] : formatScalar(value);
  if (span.textContent === text && span.dataset.type === type) return false;
  span.textContent = text;
  span.dataset.type = type;
  span.className = `value type-${type}`;
  return true;
}

/**
 * Makes the children of `ul` show `value`, reusing nodes by key.
 * @param {HTMLUListElement} ul
 * @param {unknown} value
 * @param {string} path
 * @param {number} depth
 * @param {boolean} flash highlight what changed
 */
function reconcile(ul, value, path, depth, flash) {
  /** @type {Map<string, HTMLLIElement>} */
  const existing = new Map();
  for (const child of /** @type {HTMLLIElement[]} */ ([...ul.children])) existing.set(child.dataset.key ?? '', child);
  const entries = Array.isArray(value)
    ? value.map((v, i) => /** @type {[string, unknown]} */ ([String(i), v]))
    : Object.entries(obj(value));
  /** @type {ChildNode | null} */
  let prev = null;
  for (const [key, childValue] of entries) {
    const p = childPath(path, key);
    let node = existing.get(key);
    existing.delete(key);
    if (node && node.dataset.kind === kindOf(childValue)) {
      update(node, childValue, depth, flash);
    } else {
      const fresh = createNode(key, childValue, p, depth);
      if (node) node.replaceWith(fresh);
      node = fresh;
      if (flash) highlight(fresh);
    }
    const expected = prev ? prev.nextSibling : ul.firstChild;
    if (node !== expected) ul.insertBefore(node, expected);
    prev = node;
  }
  for (const gone of existing.values()) gone.remove();
}

/** @param {HTMLLIElement} li @param {unknown} value @param {number} depth @param {boolean} flash */
function update(li, value, depth, flash) {
  const kind = li.dataset.kind;
  if (kind === 'object' || kind === 'array') {
    const count = li.querySelector(':scope > details > summary > .count');
    if (count) count.textContent = countLabel(value);
    const ul = /** @type {HTMLUListElement} */ (li.querySelector(':scope > details > ul'));
    reconcile(ul, value, li.dataset.path ?? '', depth + 1, flash);
  } else if (setLeaf(li, value) && flash) {
    highlight(li);
  }
}

/** Flashes a changed node, and the summaries of closed branches hiding it. */
function highlight(/** @type {HTMLElement} */ node) {
  flashClass(node, 'changed');
  let parent = node.parentElement?.closest('details');
  while (parent) {
    if (!parent.open) {
      const summary = parent.querySelector(':scope > summary');
      if (summary) flashClass(/** @type {HTMLElement} */ (summary), 'changed');
    }
    parent = parent.parentElement?.closest('details');
  }
}

/** (Re)starts a one-shot CSS animation class. */
function flashClass(/** @type {HTMLElement} */ node, /** @type {string} */ cls) {
  node.classList.remove(cls);
  void node.offsetWidth; // restart the animation
  node.classList.add(cls);
  node.addEventListener('animationend', () => node.classList.remove(cls), { once: true });
}

/** @param {unknown} state */
function renderTree(state) {
  byId('tree-empty')?.remove();
  if (!treeRoot) {
    treeRoot = el('ul', 'children root');
    tree.append(treeRoot);
  }
  // The document itself may be any YAML value; a scalar root shows as one line.
  const rootValue = isObject(state) || Array.isArray(state) ? state : { value: state };
  reconcile(treeRoot, rootValue, '', 0, renderedOnce);
  renderedOnce = true;
}

function setAllOpen(/** @type {boolean} */ open) {
  for (const d of tree.querySelectorAll('details')) {
    const depth = (d.closest('li')?.dataset.path ?? '').split('/').length - 1;
    d.open = open || depth <= 1;
  }
}
byId('expand').addEventListener('click', () => setAllOpen(true));
byId('collapse').addEventListener('click', () => setAllOpen(false));

// ---------------------------------------------------------------------------------------
// The header and the "right now" cards (for the Workshop's state schema, when present).

let agentName = '';

/** @param {any} state */
function renderIdentity(state) {
  const identity = obj(obj(state).identity);
  agentName = str(identity.name);
  byId('agent-name').textContent = agentName || 'Workshop';
  byId('agent-title').textContent = str(identity.title) || 'Live from the bridge';
  byId('avatar').textContent = (agentName || 'W').slice(0, 1).toUpperCase();
  document.title = agentName ? `${agentName} · Workshop` : 'Workshop';
  const input = /** @type {HTMLTextAreaElement} */ (byId('message'));
  input.placeholder = agentName ? `Say something to ${agentName}…` : 'Say something…';
}

/**
 * @typedef {{ id: string, label: string, value: string, detail?: string, icon?: string,
 *             meters?: [string, number][] }} Card
 */

/** @param {any} state @returns {Card[]} */
function cardsFor(state) {
  const s = obj(state);
  /** @type {Card[]} */
  const cards = [];
  const mood = obj(s.mood);
  if (str(mood.primary)) {
    /** @type {[string, number][]} */
    const meters = [];
    for (const name of ['confidence', 'energy']) {
      if (typeof mood[name] === 'number' && mood[name] >= 0 && mood[name] <= 1) meters.push([name, mood[name]]);
    }
    cards.push({ id: 'mood', label: 'Mood', value: humanize(str(mood.primary)), icon: moodEmoji(str(mood.primary)), meters });
  }
  const activity = obj(s.activity);
  if (str(activity.current)) {
    cards.push({ id: 'activity', label: 'Doing', value: humanize(str(activity.current)), detail: str(activity.detail), icon: '🛠️' });
  }
  const attention = obj(s.attention);
  if (str(attention.focus)) {
    cards.push({ id: 'attention', label: 'Attention', value: humanize(str(attention.focus)), detail: str(attention.last_event), icon: '🎯' });
  }
  const familiar = obj(s.familiar);
  if (str(familiar.name)) {
    cards.push({ id: 'familiar', label: 'Familiar', value: str(familiar.name), detail: humanize(str(familiar.state)), icon: '🐾' });
  }
  const env = obj(s.environment);
  if (str(env.local_time) || str(env.time_of_day)) {
    cards.push({ id: 'time', label: 'Local time', value: str(env.local_time) || humanize(str(env.time_of_day)), detail: [humanize(str(env.time_of_day)), str(env.day_of_week)].filter(Boolean).join(' · '), icon: '🕯️' });
  }
  const interaction = obj(s.interaction);
  if (interaction.visitor_present === true) {
    cards.push({ id: 'visitor', label: 'Visitor', value: str(interaction.visitor_name) || 'Someone', icon: '👋' });
  }
  return cards;
}

/** @type {Map<string, string>} */
const lastCards = new Map();

/** @param {unknown} state */
function renderCards(state) {
  const cards = cardsFor(state);
  const container = byId('now-cards');
  byId('now').hidden = cards.length === 0;
  container.replaceChildren(
    ...cards.map((card) => {
      const node = el('div', 'card');
      node.dataset.card = card.id;
      const head = el('div', 'card-head');
      head.append(el('span', 'card-icon', card.icon ?? ''), el('span', 'card-label', card.label));
      node.append(head, el('div', 'card-value', card.value));
      if (card.detail) node.append(el('div', 'card-detail', card.detail));
      for (const [name, value] of card.meters ?? []) {
        const meter = el('div', 'meter');
        const bar = el('span', 'meter-bar');
        const fill = el('span', 'meter-fill');
        // CSSOM, not a style attribute: allowed by the Content-Security-Policy.
        fill.style.setProperty('--level', String(Math.round(value * 100)));
        bar.append(fill);
        meter.append(el('span', 'meter-label', name), bar, el('span', 'meter-value', `${Math.round(value * 100)}%`));
        node.append(meter);
      }
      const signature = JSON.stringify(card);
      if (lastCards.has(card.id) && lastCards.get(card.id) !== signature) flashClass(node, 'changed');
      lastCards.set(card.id, signature);
      return node;
    }),
  );
}

// ---------------------------------------------------------------------------------------
// The conversation feed.

const feed = byId('feed');
const MAX_FEED = 150;

/** Appends to the feed, keeping the view pinned to the newest when it was. */
function addToFeed(/** @type {HTMLElement} */ item) {
  byId('feed-empty')?.remove();
  const pinned = feed.scrollHeight - feed.scrollTop - feed.clientHeight < 80;
  feed.append(item);
  while (feed.children.length > MAX_FEED) feed.firstElementChild?.remove();
  if (pinned) feed.scrollTop = feed.scrollHeight;
}

/**
 * @param {'agent' | 'visitor' | 'mine'} who
 * @param {string} speaker
 * @param {string} text
 * @param {string} [mood]
 */
function bubble(who, speaker, text, mood) {
  const li = el('li', `bubble ${who}`);
  const head = el('div', 'bubble-head');
  head.append(el('span', 'speaker', speaker));
  if (mood) {
    const chip = el('span', 'mood', `${moodEmoji(mood)} ${mood}`);
    chip.dataset.mood = mood;
    head.append(chip);
  }
  const time = el('time', 'time', clock());
  time.dateTime = new Date().toISOString();
  head.append(time);
  li.append(head, el('p', 'text', text));
  return li;
}

/** A one-line notice in the feed (someone came in, the bridge restarts, …). */
function notice(/** @type {string} */ text, /** @type {string} */ kind = 'info') {
  const li = el('li', `notice ${kind}`);
  li.append(el('span', '', text), el('time', 'time', clock()));
  return li;
}

/** @param {any} msg */
function onEvent(msg) {
  switch (msg.type) {
    case 'bark': {
      const mood = str(msg.mood) || str(msg.emotion);
      const speaker = str(msg.agent_id) || str(msg.agentId) || agentName || 'Agent';
      const li = bubble('agent', speaker, str(msg.text), mood);
      li.dataset.type = 'bark';
      addToFeed(li);
      return;
    }
    case 'message':
    case 'chat_message':
    case 'visitor_message': {
      const li = bubble('visitor', str(msg.visitor) || str(msg.agent_id) || 'Visitor', str(msg.text));
      li.dataset.type = 'message';
      addToFeed(li);
      return;
    }
    case 'enter':
      addToFeed(notice(`${str(msg.visitor) || 'Someone'} came in`));
      return;
    case 'leave':
      addToFeed(notice(`${str(msg.visitor) || 'Someone'} left`));
      return;
    case 'agent_joined':
      addToFeed(notice(`${str(msg.agent_id) || str(msg.agentId) || 'An agent'} connected`));
      return;
    case 'agent_left':
      addToFeed(notice(`${str(msg.agent_id) || str(msg.agentId) || 'An agent'} disconnected`));
      return;
    case 'system_status':
      if (str(obj(msg.data).status) === 'shutting_down') addToFeed(notice('The bridge is restarting…', 'warn'));
      return;
    case 'error':
      addToFeed(notice(str(msg.message) || 'The bridge refused a message', 'error'));
      return;
    default:
      // Scene and agent messages of the Matrix protocol are for 3D Workshops, not this page.
  }
}

// ---------------------------------------------------------------------------------------
// Connection status.

const statusBox = byId('status');
const statusText = byId('status-text');
const retryButton = /** @type {HTMLButtonElement} */ (byId('retry'));
/** @type {import('./client.js').BridgeStatus | null} */
let lastStatus = null;
/** @type {ReturnType<typeof setInterval> | null} */
let countdown = null;
/** @type {Set<HTMLElement>} */
const pending = new Set();

function showStatus(/** @type {import('./client.js').BridgeStatus} */ status) {
  lastStatus = status;
  statusBox.dataset.state = status.state;
  retryButton.hidden = status.state !== 'reconnecting' && status.state !== 'offline';
  if (countdown) clearInterval(countdown);
  countdown = null;
  const render = () => {
    statusText.textContent = statusLine(status);
  };
  render();
  if (status.state === 'reconnecting') countdown = setInterval(render, 250);
  const queued = byId('queued');
  queued.hidden = status.queued === 0;
  queued.textContent = `${status.queued} waiting to send`;
  for (const li of pending) setDelivery(li, status.state === 'open' ? 'Sending…' : 'Waiting for the connection…');
  if (status.state === 'open') hideBanner();
  else maybeExplainFailure(status);
}

function statusLine(/** @type {import('./client.js').BridgeStatus} */ s) {
  switch (s.state) {
    case 'open':
      return 'Live';
    case 'connecting':
      return s.everOpened ? 'Reconnecting…' : 'Connecting…';
    case 'reconnecting': {
      const secs = Math.max(0, Math.ceil(((s.retryAt ?? Date.now()) - Date.now()) / 1000));
      return secs > 0 ? `Reconnecting in ${secs} s` : 'Reconnecting…';
    }
    case 'offline':
      return 'Offline — waiting for the network';
    default:
      return 'Disconnected';
  }
}

const banner = byId('banner');
let explained = false;
function hideBanner() {
  banner.hidden = true;
  explained = false;
}

/**
 * A browser cannot see why a WebSocket was refused. When the first attempts fail, ask the
 * status API with the same token: a 401 or 403 there has a clear cause worth showing.
 */
async function maybeExplainFailure(/** @type {import('./client.js').BridgeStatus} */ s) {
  if (explained || s.everOpened || s.attempt < 2 || s.state !== 'reconnecting') return;
  explained = true;
  try {
    const headers = token ? { Authorization: `Bearer ${token}` } : undefined;
    const res = await fetch('/api/gateway/status', { headers, cache: 'no-store' });
    if (res.status === 401) {
      banner.textContent = token
        ? 'The bridge refused this page’s token. Scan the bridge’s QR code again to get the current link.'
        : 'This page needs the bridge’s token. Open it from the bridge’s QR code (or add ?token=… to the address).';
      banner.hidden = false;
    } else if (res.status === 403) {
      banner.textContent = 'The bridge does not accept connections from this address. Open the page from the bridge’s own URL.';
      banner.hidden = false;
    }
  } catch {
    // The bridge is unreachable: the status line already says we are retrying.
  }
}

// ---------------------------------------------------------------------------------------
// The composer and presence.

const form = /** @type {HTMLFormElement} */ (byId('composer'));
const nameInput = /** @type {HTMLInputElement} */ (byId('visitor'));
const textInput = /** @type {HTMLTextAreaElement} */ (byId('message'));
const sendButton = /** @type {HTMLButtonElement} */ (byId('send'));
const NAME_KEY = 'workshop:visitor';

try {
  nameInput.value = localStorage.getItem(NAME_KEY) ?? '';
} catch {
  // No storage: the name lasts for this page.
}
const visitorName = () => nameInput.value.trim().slice(0, 64) || 'Visitor';
/** The name this page announced with `enter` on the current connection. */
let announced = '';

nameInput.addEventListener('change', () => {
  try {
    localStorage.setItem(NAME_KEY, nameInput.value.trim());
  } catch {
    // Not remembered; fine.
  }
  const name = visitorName();
  if (announced && name !== announced && bridge.status.state === 'open') {
    bridge.trySend({ type: 'leave', visitor: announced });
    bridge.trySend({ type: 'enter', visitor: name });
    announced = name;
  }
});

function autosize() {
  textInput.style.height = 'auto';
  textInput.style.height = `${Math.min(textInput.scrollHeight, 160)}px`;
  sendButton.disabled = textInput.value.trim() === '';
}
textInput.addEventListener('input', autosize);
textInput.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});

/** @param {HTMLElement} li @param {string} text @param {string} [state] */
function setDelivery(li, text, state) {
  const line = /** @type {HTMLElement} */ (li.querySelector('.delivery'));
  line.textContent = text;
  if (state) li.dataset.status = state;
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = textInput.value.trim();
  if (!text) return;
  const visitor = visitorName();
  const li = bubble('mine', visitor, text);
  li.dataset.type = 'mine';
  li.append(el('div', 'delivery'));
  pending.add(li);
  setDelivery(li, lastStatus?.state === 'open' ? 'Sending…' : 'Waiting for the connection…', 'pending');
  addToFeed(li);
  feed.scrollTop = feed.scrollHeight;
  textInput.value = '';
  autosize();
  bridge.send({ type: 'message', text, visitor }).then(
    () => {
      pending.delete(li);
      setDelivery(li, 'Delivered ✓', 'delivered');
    },
    (/** @type {Error} */ error) => {
      pending.delete(li);
      setDelivery(li, `Not sent: ${error.message}`, 'failed');
    },
  );
});

retryButton.addEventListener('click', () => bridge.reconnect());

// ---------------------------------------------------------------------------------------
// Connect.

const token = tokenFromPage();
const bridge = connectBridge({
  token,
  onState(state, info) {
    renderIdentity(state);
    renderCards(state);
    renderTree(state);
    byId('seq').textContent = `#${info.seq} · ${clock()}`;
  },
  onEvent,
  onStatus: showStatus,
  hello() {
    announced = visitorName();
    return { type: 'enter', visitor: announced };
  },
});

window.addEventListener('pagehide', () => {
  if (announced) bridge.trySend({ type: 'leave', visitor: announced });
  announced = '';
});
window.addEventListener('pageshow', (event) => {
  // Back from the back-forward cache on a socket that survived: say hello again.
  if (event.persisted && !announced && bridge.status.state === 'open') {
    announced = visitorName();
    bridge.trySend({ type: 'enter', visitor: announced });
  }
});
