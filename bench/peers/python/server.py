"""The original design's bridge, written as a fair best effort for the benchmark.

asyncio + websockets + watchdog: the state file is watched with file-system events (or polled
every 2 s with --poll 2, as the original design did), parsed once per change (with libyaml's
C loader when PyYAML has it, as a careful author would) and serialized once per broadcast;
visitor messages are written to the inbox with fsync before the ack.

Usage: server.py --port P --state-file F --inbox-dir D [--poll SECONDS]
Prints "listening on ws://HOST:PORT" on stderr once it accepts connections.
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time

import websockets
import yaml
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

# libyaml's loader is about seven times faster than the pure-Python one on a 200 KB state.
YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def compact(obj):
    return json.dumps(obj, separators=(",", ":"))


class Bridge:
    def __init__(self, state_file, inbox_dir):
        self.state_file = state_file
        self.inbox_dir = inbox_dir
        self.clients = set()
        self.state = None
        self.state_msg = None
        self.seq = 0
        self.counter = 0

    def reload(self):
        try:
            with open(self.state_file, encoding="utf-8") as f:
                data = yaml.load(f, Loader=YamlLoader)
        except (OSError, yaml.YAMLError):
            return
        if data is None or data == self.state:
            return
        self.state = data
        self.seq += 1
        self.state_msg = compact({"type": "state", "seq": self.seq, "data": data})
        websockets.broadcast(self.clients, self.state_msg)

    def next_name(self, kind):
        # Called on the event loop, so concurrent writes never share a number.
        self.counter += 1
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        return f"{stamp}-{self.counter:06d}-{kind}.json"

    def write_inbox(self, name, kind, msg):
        record = {"id": name[:-5], "type": kind, "visitor": msg.get("visitor", "visitor"),
                  "text": msg.get("text"), "received_at": time.time()}
        fd, tmp = tempfile.mkstemp(dir=self.inbox_dir, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(self.inbox_dir, name))
        dfd = os.open(self.inbox_dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    async def handle(self, ws):
        self.clients.add(ws)
        try:
            if self.state_msg is not None:
                await ws.send(self.state_msg)
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                    kind = msg["type"]
                except (ValueError, KeyError, TypeError):
                    await ws.send('{"type":"error","code":"bad_message"}')
                    continue
                if kind == "ping":
                    await ws.send('{"type":"pong"}')
                    continue
                if kind in ("message", "enter", "leave"):
                    name = self.next_name(kind)
                    try:
                        # Blocking fsync off the event loop, as a careful author would.
                        await asyncio.to_thread(self.write_inbox, name, kind, msg)
                    except OSError:
                        await ws.send(compact({"type": "error", "code": "inbox_unavailable",
                                               "id": msg.get("id")}))
                        continue
                if "id" in msg:
                    await ws.send(compact({"type": "ack", "id": msg["id"]}))
                websockets.broadcast([c for c in self.clients if c is not ws], raw)
        finally:
            self.clients.discard(ws)


class Wake(FileSystemEventHandler):
    # Changes only: watchdog also reports opening and closing a file without writing it,
    # which our own reads do, and reacting to those would re-read the file forever.
    CHANGES = {"created", "modified", "moved", "deleted", "closed"}

    # The writer is done: it closed the file, or renamed a whole file into place.
    DONE = {"moved", "closed"}

    def __init__(self, loop, event, name):
        self.loop, self.event, self.name = loop, event, name
        self.writer_done = False

    def on_any_event(self, event):
        if event.event_type not in self.CHANGES:
            return
        paths = [getattr(event, "src_path", ""), getattr(event, "dest_path", "")]
        if any(os.path.basename(p) == self.name for p in paths):
            self.loop.call_soon_threadsafe(self.wake, event.event_type in self.DONE)

    def wake(self, done):
        self.writer_done |= done
        self.event.set()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--state-file", required=True)
    p.add_argument("--inbox-dir", required=True)
    p.add_argument("--poll", type=float, default=None, help="poll every N seconds instead of watching")
    a = p.parse_args()
    os.makedirs(a.inbox_dir, exist_ok=True)
    bridge = Bridge(a.state_file, a.inbox_dir)
    bridge.reload()
    async with websockets.serve(bridge.handle, a.bind, a.port, max_size=1 << 20,
                                ping_interval=15, ping_timeout=30, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on ws://{a.bind}:{port}", file=sys.stderr, flush=True)
        if a.poll:
            while True:
                await asyncio.sleep(a.poll)
                bridge.reload()
        wake = asyncio.Event()
        observer = Observer()
        handler = Wake(asyncio.get_running_loop(), wake, os.path.basename(a.state_file))
        observer.schedule(handler, os.path.dirname(os.path.abspath(a.state_file)))
        observer.start()
        while True:
            await wake.wait()
            wake.clear()
            # As the bridge does: read at once when the writer is done, else let a burst of
            # events settle first.
            if not handler.writer_done:
                await asyncio.sleep(0.01)
            handler.writer_done = False
            bridge.reload()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
