// A Node `ws` hub speaking the bridge protocol, written as a fair best effort for the
// benchmark: fs.watch on the state file's directory, one parse and one serialization per
// change, one serialization per broadcast, fsync before the inbox ack, a 15 s heartbeat.
//
// YAML is parsed with js-yaml (about four times faster than the `yaml` package on a 200 KB
// state), as an author who cares about latency would choose.
//
// Usage: node server.js --port P --state-file F --inbox-dir D
// Prints "listening on ws://HOST:PORT" on stderr once it accepts connections.
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { load as parseYaml } from "js-yaml";
import { WebSocketServer } from "ws";

const { values: args } = parseArgs({
  options: {
    port: { type: "string", default: "8765" },
    bind: { type: "string", default: "127.0.0.1" },
    "state-file": { type: "string" },
    "inbox-dir": { type: "string" },
  },
});
const stateFile = path.resolve(args["state-file"]);
const inboxDir = path.resolve(args["inbox-dir"]);
fs.mkdirSync(inboxDir, { recursive: true });

const HEARTBEAT_MS = 15_000;

let stateText = null; // the last parsed state, as canonical JSON, to detect real changes
let stateMsg = null;
let seq = 0;
let counter = 0;

const wss = new WebSocketServer({
  host: args.bind,
  port: Number(args.port),
  maxPayload: 1 << 20,
  perMessageDeflate: false,
});

function reload() {
  let data;
  try {
    data = parseYaml(fs.readFileSync(stateFile, "utf8"));
  } catch {
    return; // missing or half-written: keep the last good state
  }
  if (data == null) return;
  const text = JSON.stringify(data);
  if (text === stateText) return;
  stateText = text;
  seq += 1;
  // Encoded once; every client is sent the same buffer.
  stateMsg = Buffer.from(`{"type":"state","seq":${seq},"data":${text}}`);
  for (const client of wss.clients) if (client.readyState === 1) client.send(stateMsg, { binary: false });
}

async function writeInbox(kind, msg) {
  counter += 1;
  const n = counter;
  const stamp = new Date().toISOString().replace(/[-:]/g, "");
  const name = `${stamp}-${String(n).padStart(6, "0")}-${kind}.json`;
  const record = { id: name.slice(0, -5), type: kind, visitor: msg.visitor ?? "visitor", text: msg.text, received_at: new Date().toISOString() };
  const tmp = path.join(inboxDir, `.tmp-${process.pid}-${n}`);
  const fh = await fs.promises.open(tmp, "w");
  try {
    await fh.writeFile(JSON.stringify(record));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.promises.rename(tmp, path.join(inboxDir, name));
  const dir = await fs.promises.open(inboxDir, "r");
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

wss.on("connection", (ws) => {
  ws.isAlive = true;
  ws.on("pong", () => { ws.isAlive = true; });
  // Protocol errors (oversized frames, bad UTF-8) close the socket; without a listener
  // they would crash the whole server.
  ws.on("error", () => {});
  if (stateMsg) ws.send(stateMsg, { binary: false });
  ws.on("message", async (raw, isBinary) => {
    ws.isAlive = true;
    if (isBinary) return;
    let msg;
    try {
      msg = JSON.parse(raw.toString());
    } catch {
      ws.send('{"type":"error","code":"bad_json"}');
      return;
    }
    if (msg === null || typeof msg !== "object" || typeof msg.type !== "string") {
      ws.send('{"type":"error","code":"bad_message"}');
      return;
    }
    if (msg.type === "ping") {
      ws.send('{"type":"pong"}');
      return;
    }
    if (msg.type === "message" || msg.type === "enter" || msg.type === "leave") {
      try {
        await writeInbox(msg.type, msg);
      } catch {
        ws.send(JSON.stringify({ type: "error", code: "inbox_unavailable", id: msg.id }));
        return;
      }
    }
    if (msg.id !== undefined) ws.send(JSON.stringify({ type: "ack", id: msg.id }));
    for (const client of wss.clients) {
      if (client !== ws && client.readyState === 1) client.send(raw, { binary: false });
    }
  });
});

// The ws README's heartbeat: one timer for every client; a client that did not answer the
// previous ping is gone.
const heartbeat = setInterval(() => {
  for (const ws of wss.clients) {
    if (!ws.isAlive) {
      ws.terminate();
      continue;
    }
    ws.isAlive = false;
    ws.ping();
  }
}, HEARTBEAT_MS);
wss.on("close", () => clearInterval(heartbeat));

let timer = null;
fs.watch(path.dirname(stateFile), (event, name) => {
  if (name !== path.basename(stateFile)) return;
  clearTimeout(timer);
  // As the bridge does: a rename put a whole file in place, so read it now; other changes
  // may be a write in progress, so let the burst settle first. (fs.watch reports no closes.)
  timer = setTimeout(reload, event === "rename" ? 0 : 10);
});

wss.on("listening", () => {
  reload();
  const { address, port } = wss.address();
  process.stderr.write(`listening on ws://${address}:${port}\n`);
});
