"""Asking a running fleet's MCP endpoint (the official ``mcp`` SDK's client): ``slm-fleet mcp``."""

from __future__ import annotations


async def list_tools(url: str) -> list[tuple[str, str]]:
    """(name, description) of every tool the MCP server at ``url`` offers."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as (read, write, *_), ClientSession(read, write) as session:
        await session.initialize()
        return [(t.name, t.description or "") for t in (await session.list_tools()).tools]
