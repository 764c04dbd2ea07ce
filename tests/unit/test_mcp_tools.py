"""The fleet's routes as MCP tools: a real uvicorn server on loopback, the mcp SDK's own client."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

import pytest
import uvicorn
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from serving.dataplane.mcp_tools import FleetMCP, check_arguments, tool_name
from serving.local.ports import free_port
from tests.waiting import eventually_async


async def fake_answer(route: str, arguments: dict, http_request=None) -> dict:
    """The router's chat call, faked: echoes what it was given, fails on request."""
    text = arguments.get("prompt") or " | ".join(f"{m['role']}: {m['content']}" for m in arguments["messages"])
    if text == "unknown version":
        raise LookupError("route 'support' has no version 'v9'")
    if text == "boom":
        raise RuntimeError("engine down")
    if text == "error body":
        return {"error": {"message": "route 'support': adapter 'a' version 'v2' cannot be loaded", "code": 503}}
    return {"text": f"{route} says {text}", "route": route, "arguments": arguments,
            "served_by": {"base_model": "qwen", "adapter": "support-lora", "version": "v1"}}


@pytest.fixture
async def server():
    fleet = FleetMCP(fake_answer)
    fleet.set_routes([("support", "Answers support tickets."), ("sql-gen", None)])
    port = free_port()
    # lifespan off: the router's case, where the app starts itself on its first request
    uv = uvicorn.Server(uvicorn.Config(fleet.asgi_app, host="127.0.0.1", port=port, log_level="warning",
                                       interface="asgi3", lifespan="off"))
    task = asyncio.create_task(uv.serve())
    await eventually_async(lambda: uv.started, timeout=30, message="uvicorn did not start")
    yield fleet, f"http://127.0.0.1:{port}/mcp"
    uv.should_exit = True
    await task
    await fleet.stop()


@asynccontextmanager
async def session(url: str, *, modern: bool = False):
    """A client session: the handshake (initialize) of protocols up to 2025-11-25, or 2026-07-28's discover."""
    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as s:
        await (s.discover() if modern else s.initialize())
        yield s


async def test_lists_routes_as_tools(server):
    fleet, url = server
    async with session(url) as s:
        tools = {t.name: t for t in (await s.list_tools()).tools}
    assert set(tools) == {"support", "sql-gen"}
    assert tools["support"].description == "Answers support tickets."
    assert "'sql-gen'" in tools["sql-gen"].description
    schema = tools["support"].input_schema
    assert schema["type"] == "object" and {"prompt", "messages", "max_tokens", "temperature"} <= set(
        schema["properties"])
    assert tools["support"].output_schema["required"] == ["text", "route"]


async def test_calls_a_route_with_prompt_and_with_messages(server):
    fleet, url = server
    async with session(url) as s:
        await s.list_tools()  # the client checks structured content against the listed output schema
        result = await s.call_tool("support", {"prompt": "reset my password", "max_tokens": 32})
        assert not result.is_error
        assert result.structured_content["text"] == "support says reset my password"
        assert result.structured_content["route"] == "support"
        assert result.structured_content["served_by"]["adapter"] == "support-lora"
        assert result.structured_content["arguments"] == {"prompt": "reset my password", "max_tokens": 32}
        assert json.loads(result.content[0].text) == result.structured_content

        result = await s.call_tool("sql-gen", {"messages": [{"role": "system", "content": "sql"},
                                                            {"role": "user", "content": "count users"}],
                                               "temperature": 0})
        assert not result.is_error
        assert result.structured_content["text"] == "sql-gen says system: sql | user: count users"


async def test_modern_protocol(server):
    fleet, url = server
    async with session(url, modern=True) as s:
        assert s.protocol_version == "2026-07-28"
        assert {t.name for t in (await s.list_tools()).tools} == {"support", "sql-gen"}
        result = await s.call_tool("support", {"prompt": "hi"})
        assert result.structured_content["text"] == "support says hi"
        assert (await s.call_tool("support", {})).is_error


async def test_set_routes_replaces_the_tools(server):
    fleet, url = server
    fleet.set_routes([("support", None), ("summarize.v2", "Summaries.")])
    async with session(url) as s:
        names = [t.name for t in (await s.list_tools()).tools]
        assert names == ["support", "summarize.v2"]
        result = await s.call_tool("sql-gen", {"prompt": "x"})
        assert result.is_error and "no tool 'sql-gen'" in result.content[0].text
        result = await s.call_tool("summarize.v2", {"prompt": "x"})
        assert result.structured_content["route"] == "summarize.v2"


BAD_CALLS = {
    "neither": ({}, "neither"),
    "both": ({"prompt": "x", "messages": [{"role": "user", "content": "x"}]}, "both"),
    "prompt not a string": ({"prompt": 3}, "'prompt' must be a non-empty string"),
    "bad message": ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0]"),
    "bad max_tokens": ({"prompt": "x", "max_tokens": 0}, "'max_tokens'"),
    "bad temperature": ({"prompt": "x", "temperature": "hot"}, "'temperature'"),
    "unknown argument": ({"prompt": "x", "model": "gpt"}, "unknown argument(s) model"),
    "answer raises a user error": ({"prompt": "unknown version"}, "has no version 'v9'"),
    "answer returns an error": ({"prompt": "error body"}, "cannot be loaded"),
    "answer crashes": ({"prompt": "boom"}, "route 'support' failed: RuntimeError: engine down"),
}


async def test_errors_are_mcp_error_results(server):
    fleet, url = server
    async with session(url) as s:
        for arguments, says in BAD_CALLS.values():
            result = await s.call_tool("support", arguments)
            assert result.is_error, arguments
            assert says in result.content[0].text, (arguments, result.content[0].text)
        assert not (await s.call_tool("support", {"prompt": "still fine"})).is_error  # the server lives on


async def test_any_host_header_is_answered(server):
    """Reached through Kubernetes Services: the SDK's localhost-only Host check must be off."""
    import httpx

    fleet, url = server
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    async with httpx.AsyncClient() as http:
        response = await http.post(url, json=request, headers={
            "Host": "slm-fleet-router.fleet.svc.cluster.local:8000", "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-06-18"})
    assert response.status_code == 200, response.text
    assert {t["name"] for t in response.json()["result"]["tools"]} == {"support", "sql-gen"}


def test_tool_names_and_arguments():
    assert tool_name("support") == "support" and tool_name("a/b c") == "a_b_c" and len(tool_name("x" * 200)) == 128
    fleet = FleetMCP(fake_answer)
    fleet.set_routes([("a/b", None), ("a_b", None)])
    assert fleet.routes == {"a_b": "a/b", "a_b-2": "a_b"}
    assert check_arguments({"prompt": "x", "temperature": 1}) == {"prompt": "x", "temperature": 1}
