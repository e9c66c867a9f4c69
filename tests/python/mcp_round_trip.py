"""The visitor-message round trip through the Python MCP SDK (PyPI `mcp`).

Run by tests/mcp.rs: `mcp_round_trip.py BINARY ARGS...` spawns `BINARY ARGS...` as an MCP
server over stdio, waits in read_messages while the Rust side sends a visitor's message
over WebSocket, then confirms what it read; then it changes the state with update_state and
reads the file it wrote with PyYAML (`yaml.safe_load`), which must mean what get_state says.
Each step is one JSON line on stdout.
"""

import json
import sys

import anyio
import yaml
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def say(step: str, **fields) -> None:
    print(json.dumps({"step": step, **fields}), flush=True)


def result_json(result) -> dict:
    assert not result.is_error, result
    return json.loads(result.content[0].text)


async def main() -> None:
    server = StdioServerParameters(command=sys.argv[1], args=sys.argv[2:])
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = {tool.name for tool in (await session.list_tools()).tools}
            assert {"read_messages", "say", "get_state", "update_state", "who_is_here"} <= tools, tools
            say("waiting")
            found = {"messages": []}
            # The visitor enters, then speaks: wait until the message itself is there.
            while not any(m["type"] == "message" for m in found["messages"]):
                found = result_json(await session.call_tool("read_messages", {"wait_secs": 60}))
            say("read", messages=found["messages"], note=found["note"])
            ids = [m["id"] for m in found["messages"]]
            after = result_json(await session.call_tool("read_messages", {"done": ids}))
            say("confirmed", confirmed=after["confirmed"], waiting=after["waiting"])

            # Strings PyYAML would read as something else unless quoted, and values it must
            # read back exactly.
            patch = {
                "words": ["y", "yes", "no", "on", "~", "null", "1e3", "1_000", "012", "0x1f",
                          "1:20", "2026-01-01", ".inf", "", " lead", "a: b", "#x", "line\nbreak"],
                "numbers": [1, -2, 1.5, 1e20, 12345678901234567890],
                "nested": {"list": [{"a": None}, [], {}], "true": True},
            }
            result_json(await session.call_tool("update_state", {"patch": patch}))
            state = result_json(await session.call_tool("get_state", {}))["state"]
            path = sys.argv[sys.argv.index("--state-file") + 1]
            with open(path, encoding="utf-8") as f:
                on_disk = yaml.safe_load(f)
            assert on_disk == state, (on_disk, state)
            assert on_disk["words"] == patch["words"], on_disk["words"]
            say("pyyaml", equal=True)


anyio.run(main)
