"""A client of the official Python MCP SDK through the gateway: it probes the server with
`server/discover` (mode "auto"; a 2026-07-28 server answers and the client stays stateless),
lists the tools and calls one. It can answer elicitations (accepting with a name), and says
which it was asked. Prints what it saw as one JSON line.

usage: modern_client.py URL API_KEY TOOL ARGUMENTS_JSON
"""

import asyncio
import json
import sys

import httpx2
import mcp_types as types
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client


async def main(url: str, key: str, tool: str, arguments: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    elicited = []

    async def elicit(context, params):
        elicited.append(params.message)
        return types.ElicitResult(action="accept", content={"name": "Ada Lovelace", "check": True})

    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        transport = streamable_http_client(url, http_client=http, terminate_on_close=False)
        async with Client(transport, mode="auto", elicitation_callback=elicit) as client:
            listed = await client.list_tools()
            result = await client.call_tool(tool, json.loads(arguments))
            seen = {
                "protocol": client.protocol_version,
                "server": client.server_info.name if client.server_info else None,
                "tools": sorted(t.name for t in listed.tools),
                "text": result.content[0].text if result.content else None,
                "is_error": bool(result.is_error),
                "elicited": elicited,
            }
    print(json.dumps(seen))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
