// The real bridge binary in a throw-away world: its own HOME, config, state file, inbox and
// outbox in a temp directory, a free port, and its log kept for failure reports.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const BINARY = process.env.WORKSHOP_BRIDGE_BIN ?? path.join(ROOT, 'target/debug/workshop-bridge');
export const FIXTURE_STATE = path.join(ROOT, 'examples/workshop-state.yaml');

/** A temp directory laid out like `~/.timmy`, plus a HOME and a config file path. */
export function makeWorld(name = 'world') {
  const dir = mkdtempSync(path.join(tmpdir(), `workshop-web-${name}-`));
  const world = {
    dir,
    home: path.join(dir, 'home'),
    stateFile: path.join(dir, 'timmy', 'workshop-state.yaml'),
    inbox: path.join(dir, 'timmy', 'inbox'),
    outbox: path.join(dir, 'timmy', 'outbox'),
    config: path.join(dir, 'config.toml'),
    token: randomBytes(32).toString('hex'),
    remove() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
  mkdirSync(world.home, { recursive: true });
  mkdirSync(path.dirname(world.stateFile), { recursive: true });
  copyFileSync(FIXTURE_STATE, world.stateFile);
  return world;
}

/** The example state with some values replaced (plain text edits of the YAML fixture). */
export function exampleState(replacements = {}) {
  let text = readFileSync(FIXTURE_STATE, 'utf8');
  for (const [from, to] of Object.entries(replacements)) {
    if (!text.includes(from)) throw new Error(`the fixture has no ${from}`);
    text = text.replace(from, to);
  }
  return text;
}

/** Writes a file the way agents should: a dot-named temp file, then a rename. */
export function writeAtomically(file, text) {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

/** Drops a message into the outbox for the bridge to broadcast. */
export function bark(world, message, name = `bark-${Date.now()}-${Math.random().toString(36).slice(2)}`) {
  mkdirSync(world.outbox, { recursive: true });
  writeAtomically(path.join(world.outbox, `${name}.json`), JSON.stringify(message));
}

/** Every event in the inbox, oldest first. */
export function inbox(world) {
  let names;
  try {
    names = readdirSync(world.inbox);
  } catch {
    return [];
  }
  return names
    .filter((n) => n.endsWith('.json') && !n.startsWith('.'))
    .sort()
    .map((n) => JSON.parse(readFileSync(path.join(world.inbox, n), 'utf8')));
}

/** The visitor messages in the inbox with this text. */
export const messagesWithText = (world, text) => inbox(world).filter((e) => e.type === 'message' && e.text === text);

/**
 * Polls `check` until it returns something truthy. Only for what cannot be awaited (a file
 * appearing); bounded by `timeoutMs`.
 */
export async function eventually(check, { timeoutMs = 10_000, what = 'a condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A running `workshop-bridge serve`. */
export class Bridge {
  /**
   * Starts the binary and resolves once it logs `listening on ws://ADDR:PORT`.
   * @param {ReturnType<typeof makeWorld>} world
   * @param {{ port?: number, args?: string[], timeoutMs?: number }} [options]
   */
  static start(world, { port = 0, args = [], timeoutMs = 30_000 } = {}) {
    const argv = [
      'serve',
      '--port', String(port),
      '--bind', '127.0.0.1',
      '--state-file', world.stateFile,
      '--inbox-dir', world.inbox,
      '--outbox-dir', world.outbox,
      '--config', world.config,
      '--token', world.token,
      // The browser is on this machine: make it present the token like an iPad would.
      '--no-trust-loopback',
      ...args,
    ];
    const env = { ...process.env, HOME: world.home, RUST_LOG: 'info,workshop_bridge=debug', NO_COLOR: '1' };
    for (const key of Object.keys(env)) if (key.startsWith('WORKSHOP_BRIDGE_')) delete env[key];
    const child = spawn(BINARY, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const bridge = new Bridge(child, world);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`the bridge did not start within ${timeoutMs} ms:\n${bridge.log}`));
      }, timeoutMs);
      const onLine = (line) => {
        const m = /listening on ws:\/\/([0-9.]+):(\d+)/.exec(line);
        if (!m) return;
        clearTimeout(timer);
        bridge.host = m[1];
        bridge.port = Number(m[2]);
        bridge.lines.off('line', onLine);
        resolve(bridge);
      };
      bridge.lines.on('line', onLine);
      child.once('error', (e) => {
        clearTimeout(timer);
        reject(new Error(`cannot run ${BINARY} (build it with \`cargo build\`): ${e.message}`));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`the bridge exited (${code ?? signal}) before listening:\n${bridge.log}`));
      });
    });
  }

  constructor(child, world) {
    this.child = child;
    this.world = world;
    this.log = '';
    this.host = '';
    this.port = 0;
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    this.lines = new EventEmitter();
    let partial = '';
    const take = (chunk) => {
      // The text log format may colour its output; the tests read plain words.
      const text = chunk.toString().replace(/\x1b\[[0-9;]*m/g, '');
      this.log += text;
      if (this.log.length > 200_000) this.log = this.log.slice(-100_000);
      partial += text;
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) this.lines.emit('line', line);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
  }

  /** The page's address, with the token as the QR code gives it. */
  pageUrl(pathname = '/') {
    return `http://${this.host}:${this.port}${pathname}?token=${encodeURIComponent(this.world.token)}`;
  }

  /** Resolves with the first log line matching `re`. */
  waitForLog(re, timeoutMs = 10_000) {
    if (re.test(this.log)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.lines.off('line', on);
        reject(new Error(`no log line matching ${re} within ${timeoutMs} ms:\n${this.log.slice(-3000)}`));
      }, timeoutMs);
      const on = (line) => {
        if (!re.test(line)) return;
        clearTimeout(timer);
        this.lines.off('line', on);
        resolve(line);
      };
      this.lines.on('line', on);
    });
  }

  /** Stops it like Ctrl-C would and waits for the exit (SIGKILL after `timeoutMs`). */
  async stop(signal = 'SIGTERM', timeoutMs = 10_000) {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.exited;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const result = await this.exited;
    clearTimeout(timer);
    return result;
  }
}

/** Runs `fn`; if it throws, the bridges' logs are added to the error for diagnosis. */
export async function withLogs(bridges, fn) {
  try {
    return await fn();
  } catch (e) {
    const logs = bridges()
      .filter(Boolean)
      .map((b) => `--- bridge on port ${b.port} ---\n${b.log.slice(-4000)}`)
      .join('\n');
    if (e instanceof Error) e.message += `\n${logs}`;
    throw e;
  }
}
