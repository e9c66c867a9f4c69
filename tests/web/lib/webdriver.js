// A minimal W3C WebDriver client over fetch, enough to drive WebKitGTK's MiniBrowser through
// Debian's WebKitWebDriver: no npm dependency.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';

export const WEBKIT_DRIVER = process.env.WEBKIT_DRIVER_PATH ?? '/usr/bin/WebKitWebDriver';

/** The W3C element reference key. */
const ELEMENT = 'element-6066-11e4-a52e-4f735466cecf';

/** A port nobody listens on right now (the driver cannot be told to pick one itself). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/** A running WebKitWebDriver. */
export class Driver {
  /** Starts the driver on a free port and waits until it answers `/status`. */
  static async start({ timeoutMs = 20_000 } = {}) {
    if (!existsSync(WEBKIT_DRIVER)) {
      throw new Error(`${WEBKIT_DRIVER} is missing: install Debian's webkit2gtk-driver (scripts/test-web does)`);
    }
    let lastError;
    // Another process may take the port between our probe and the driver's bind: try again.
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort();
      const child = spawn(WEBKIT_DRIVER, [`--port=${port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
      const driver = new Driver(child, port);
      try {
        await driver.ready(timeoutMs);
        return driver;
      } catch (e) {
        lastError = e;
        await driver.stop();
      }
    }
    throw lastError;
  }

  constructor(child, port) {
    this.child = child;
    this.base = `http://127.0.0.1:${port}`;
    this.log = '';
    this.exited = new Promise((resolve) => child.once('exit', resolve));
    const take = (chunk) => {
      this.log = (this.log + chunk.toString()).slice(-20_000);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
  }

  /** Polls `/status` (the driver prints nothing when ready), bounded by `timeoutMs`. */
  async ready(timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.child.exitCode !== null) throw new Error(`WebKitWebDriver exited:\n${this.log}`);
      try {
        const res = await fetch(`${this.base}/status`, { signal: AbortSignal.timeout(2_000) });
        if (res.ok && (await res.json()).value?.ready) return;
      } catch {
        // Not listening yet.
      }
      if (Date.now() > deadline) throw new Error(`WebKitWebDriver did not become ready:\n${this.log}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** One W3C command; throws with the driver's error message. */
  async command(method, path, body, timeoutMs = 60_000) {
    const res = await fetch(`${this.base}${path}`, {
      method,
      headers: { 'content-type': 'application/json; charset=utf-8' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const json = await res.json().catch(() => ({}));
    if (!res.ok) {
      const v = json.value ?? {};
      throw new Error(`WebDriver ${method} ${path}: ${v.error ?? res.status}: ${v.message ?? ''}`);
    }
    return json.value;
  }

  /** Opens MiniBrowser (WebKitGTK's test browser) in automation mode. */
  async newSession() {
    const value = await this.command('POST', '/session', {
      capabilities: {
        alwaysMatch: {
          'webkitgtk:browserOptions': { args: ['--automation'] },
          timeouts: { script: 120_000, pageLoad: 30_000, implicit: 0 },
        },
      },
    });
    return new Session(this, value.sessionId, value.capabilities);
  }

  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
      await this.exited;
      clearTimeout(timer);
    }
  }
}

/** One browser session. */
export class Session {
  constructor(driver, id, capabilities) {
    this.driver = driver;
    this.id = id;
    this.capabilities = capabilities;
  }

  cmd(method, path, body, timeoutMs) {
    return this.driver.command(method, `/session/${this.id}${path}`, body, timeoutMs);
  }

  navigate(url) {
    return this.cmd('POST', '/url', { url });
  }

  url() {
    return this.cmd('GET', '/url');
  }

  async find(css) {
    const value = await this.cmd('POST', '/element', { using: 'css selector', value: css });
    return value[ELEMENT];
  }

  async click(css) {
    return this.cmd('POST', `/element/${await this.find(css)}/click`, {});
  }

  async type(css, text) {
    const id = await this.find(css);
    await this.cmd('POST', `/element/${id}/clear`, {});
    return this.cmd('POST', `/element/${id}/value`, { text });
  }

  /** The element's textContent (WebDriver's own "text" is empty while it fades in). */
  text(css) {
    return this.execute('const el = document.querySelector(arguments[0]); return el ? el.textContent : null;', css);
  }

  execute(script, ...args) {
    return this.cmd('POST', '/execute/sync', { script, args });
  }

  /**
   * Waits in the page until `predicate` (a function source evaluated with `args`) returns a
   * truthy value, checking on every DOM change; resolves with that value. Bounded by
   * `timeoutMs`.
   */
  async waitFor(predicate, args = [], timeoutMs = 20_000, what = predicate) {
    const script = `
      const [args, timeoutMs, done] = arguments;
      // Inlined rather than built with new Function, which the page's CSP forbids.
      const check = (${predicate});
      const attempt = () => { try { return check(...args); } catch { return undefined; } };
      const first = attempt();
      if (first) { done({ ok: true, value: first }); return; }
      const observer = new MutationObserver(() => {
        const value = attempt();
        if (value) { finish({ ok: true, value }); }
      });
      const timer = setTimeout(() => finish({ ok: false }), timeoutMs);
      function finish(result) { observer.disconnect(); clearTimeout(timer); done(result); }
      observer.observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
    `;
    const result = await this.cmd('POST', '/execute/async', {
      script,
      args: [args, timeoutMs],
    }, timeoutMs + 30_000);
    if (!result?.ok) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    return result.value;
  }

  async screenshot() {
    return Buffer.from(await this.cmd('GET', '/screenshot'), 'base64');
  }

  setWindowRect(width, height) {
    return this.cmd('POST', '/window/rect', { width, height });
  }

  close() {
    return this.cmd('DELETE', '', undefined, 20_000).catch(() => {});
  }
}
