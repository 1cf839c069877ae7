"""A real MCP server for the agent runtime tests: the official `mcp` Python
SDK (MCPServer, 2.x) serving a few tools over Streamable HTTP.

    python server.py PORT CALLS_FILE

Each tool call is appended to CALLS_FILE as one JSON line (tool name,
arguments, the request's `_meta`, its Authorization header and MCP session
id), so a test can check what reached the server, how many times, and over
how many sessions.
"""

import json
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

PORT = int(sys.argv[1])
CALLS_FILE = sys.argv[2]

server = MCPServer("agentmesh-test")


def record(ctx: Context, name: str, arguments: dict) -> None:
    request = ctx.request_context.request
    headers = getattr(request, "headers", None) or {}
    meta = ctx.request_context.meta
    if meta is not None and hasattr(meta, "model_dump"):
        meta = meta.model_dump(by_alias=True, exclude_none=True)
    line = {
        "name": name,
        "arguments": arguments,
        "meta": meta,
        "authorization": headers.get("authorization"),
        "session": headers.get("mcp-session-id"),
    }
    with open(CALLS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(line, default=str) + "\n")


@server.tool(description="Adds a and b.")
def add(a: float, b: float, ctx: Context) -> str:
    record(ctx, "add", {"a": a, "b": b})
    return f"sum={a + b:g}"


@server.tool(description="Greets someone by name.")
def greet(name: str, ctx: Context) -> str:
    record(ctx, "greet", {"name": name})
    return f"hello, {name}"


@server.tool(description="Always fails, as a tool error the client sees.")
def explode(ctx: Context) -> str:
    record(ctx, "explode", {})
    raise ToolError("the reactor is offline")


if __name__ == "__main__":
    server.run(transport="streamable-http", host="127.0.0.1", port=PORT)
