"""The visitor-message round trip through the Python MCP SDK (PyPI `mcp`).

Run by tests/mcp.rs: `mcp_round_trip.py BINARY ARGS...` spawns `BINARY ARGS...` as an MCP
server over stdio, waits in read_messages while the Rust side sends a visitor's message
over WebSocket, then confirms what it read. Each step is one JSON line on stdout.
"""

import json
import sys

import anyio
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


anyio.run(main)
