"""The fleet's routes as MCP tools, over stateless streamable HTTP (the official ``mcp`` SDK, 2.x).

One tool per route: an agent that speaks MCP asks a route (a fine-tuned small model, a cascade, a
classify route) the way it would call any tool. A call takes ``prompt`` (a string) or ``messages``
(a chat conversation), optionally ``max_tokens`` and ``temperature``, and answers the text and who
served it, both as structured content and as text. The router owns the actual chat call: it hands
``FleetMCP`` a coroutine ``answer(route, arguments)`` and calls ``set_routes`` on every reconfigure.

Serving: ``FleetMCP.asgi_app`` is a plain ASGI callable that answers every request it is given, whatever
its path (the router forwards ``/mcp`` to it with the original scope). It is stateless (no session
ids, any router replica can answer any request) and answers JSON, not SSE. The SDK's session
manager needs a task group running for its whole life; a mounted app gets no lifespan events, so
the app starts it itself on its first request, in that request's event loop (the replica's), as a
background task; ``start()`` does the same ahead of time and ``stop()`` ends it. Both are
idempotent.

Transport security: the SDK's DNS-rebinding protection (Host/Origin allow-lists) is off. It guards
servers on a developer's localhost against web pages; the fleet is reached through Kubernetes
Services and ingresses under names this module cannot know, like the router's OpenAI endpoints
(which check no Host either). Pass ``transport_security`` to enforce allow-lists where wanted.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import mcp.types as types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Receive, Scope, Send

logger = logging.getLogger("ray.serve").getChild("slmfleet.mcp")

Answer = Callable[[str, dict, Any], Awaitable[dict]]
"""The router's chat call: ``answer(route, arguments, http_request)`` -> ``{"text", "route", "served_by", ...}``.

``http_request`` is the HTTP request the MCP message came in (whose scope holds the caller), or None.

``arguments`` are the tool call's, checked: ``prompt`` or ``messages``, maybe ``max_tokens``,
``temperature``. Raising ``ValueError`` / ``LookupError`` (a user error: its message is the answer)
or returning ``{"error": {"message": ...}}`` (an OpenAI error body) makes the call an MCP error result.
"""

_TOOL_NAME = re.compile(r"[^A-Za-z0-9._-]")  # SEP-986: tool names are [A-Za-z0-9._-]{1,128}

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "prompt": {"type": "string", "description": "The question or task, as one user message."},
        "messages": {
            "type": "array", "minItems": 1, "description": "A whole conversation instead of prompt.",
            "items": {"type": "object", "required": ["role", "content"], "properties": {
                "role": {"type": "string", "enum": ["system", "user", "assistant"]},
                "content": {"type": "string"}}},
        },
        "max_tokens": {"type": "integer", "minimum": 1, "description": "Longest answer, in tokens."},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2, "description": "Sampling temperature."},
    },
    # "prompt or messages" is checked by check_arguments, not said as a top-level oneOf: agents hand MCP
    # tools on to LLM APIs as function tools, and OpenAI's refuses oneOf/anyOf at a schema's top level.
    "additionalProperties": False,
}

OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "description": "The answer."},
        "route": {"type": "string", "description": "The route that was asked."},
        "served_by": {"type": "object", "description": "Who answered: base model, adapter and version, tier."},
    },
    "required": ["text", "route"],
}


class ToolInputError(ValueError):
    """A tool call's arguments that cannot be sent to a route; the message says what is wrong."""


def tool_name(route: str) -> str:
    """The MCP tool name for a route: its name where valid (fleet route names are), else a safe spelling."""
    return _TOOL_NAME.sub("_", route)[:128] or "route"


def check_arguments(arguments: dict | None) -> dict:
    """The arguments of a route tool call, checked and trimmed to what ``answer`` is given."""
    arguments = arguments or {}
    unknown = sorted(set(arguments) - set(INPUT_SCHEMA["properties"]))
    if unknown:
        raise ToolInputError(f"unknown argument(s) {', '.join(unknown)}: a route takes prompt or messages, "
                             "max_tokens, temperature")
    prompt, messages = arguments.get("prompt"), arguments.get("messages")
    if (prompt is None) == (messages is None):
        raise ToolInputError("give either 'prompt' (a string) or 'messages' (a list of {role, content}), not "
                             + ("both" if prompt is not None else "neither"))
    checked: dict[str, Any] = {}
    if prompt is not None:
        if not isinstance(prompt, str) or not prompt:
            raise ToolInputError("'prompt' must be a non-empty string")
        checked["prompt"] = prompt
    else:
        if not isinstance(messages, list) or not messages:
            raise ToolInputError("'messages' must be a non-empty list of {role, content}")
        for i, message in enumerate(messages):
            if (not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant")
                    or not isinstance(message.get("content"), str)):
                raise ToolInputError(f"messages[{i}] must be {{role: system|user|assistant, content: string}}")
        checked["messages"] = [{"role": m["role"], "content": m["content"]} for m in messages]
    max_tokens = arguments.get("max_tokens")
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ToolInputError("'max_tokens' must be a positive integer")
        checked["max_tokens"] = max_tokens
    temperature = arguments.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, int | float) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
            raise ToolInputError("'temperature' must be a number from 0 to 2")
        checked["temperature"] = temperature
    return checked


class FleetMCP:
    """An MCP server whose tools are the fleet's routes; see the module docstring for serving it."""

    def __init__(self, answer: Answer, *, name: str = "slm-fleet",
                 transport_security: TransportSecuritySettings | None = None,
                 visible: Callable[[Any, str], bool] | None = None):
        self._answer = answer
        self._visible = visible or (lambda http_request, route: True)
        """Whether the caller of an HTTP request may see and call a route's tool (a tenant's routes)."""
        self._tools: dict[str, types.Tool] = {}
        self._routes: dict[str, str] = {}  # tool name -> route
        self._server = Server(name, instructions="Each tool asks one route of this SLM fleet (a fine-tuned "
                                                 "small model); give it a prompt or a conversation.",
                              on_list_tools=self._list_tools, on_call_tool=self._call_tool,
                              get_tool_input_schema=lambda tool: INPUT_SCHEMA if tool in self._tools else None)
        self._manager = StreamableHTTPSessionManager(
            self._server, stateless=True, json_response=True,
            security_settings=transport_security or TransportSecuritySettings(enable_dns_rebinding_protection=False))
        self._task: asyncio.Task | None = None
        self._ready: asyncio.Future | None = None
        self._stopping: asyncio.Event | None = None

    # --- tools ---

    def set_routes(self, routes: list[tuple[str, str | None]]) -> None:
        """Make the tools these routes (name, description or None), replacing the previous ones."""
        tools: dict[str, types.Tool] = {}
        names: dict[str, str] = {}
        for route, description in routes:
            name = tool_name(route)
            for n in range(2, len(routes) + 2):  # two routes spelled alike: both stay callable
                if name not in names:
                    break
                name = f"{tool_name(route)[:120]}-{n}"
            names[name] = route
            tools[name] = types.Tool(
                name=name, title=f"route {route}", input_schema=INPUT_SCHEMA, output_schema=OUTPUT_SCHEMA,
                description=description or f"Ask the SLM fleet's route '{route}': it answers a prompt or a "
                                           "conversation with its fine-tuned small model.")
        self._tools, self._routes = tools, names  # swapped together: a call sees old or new, never half

    @property
    def routes(self) -> dict[str, str]:
        """Tool name -> route, as ``set_routes`` last made them."""
        return dict(self._routes)

    async def _list_tools(self, ctx, params) -> types.ListToolsResult:
        request = getattr(ctx, "request", None)
        return types.ListToolsResult(tools=[tool for name, tool in self._tools.items()
                                            if self._visible(request, self._routes[name])])

    async def _call_tool(self, ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        request = getattr(ctx, "request", None)
        route = self._routes.get(params.name)
        if route is None or not self._visible(request, route):
            tools = [name for name, r in self._routes.items() if self._visible(request, r)]
            return _error(f"no tool '{params.name}': this fleet's tools are {', '.join(tools) or 'none'}")
        try:
            result = await self._answer(route, check_arguments(params.arguments), request)
        except (ValueError, LookupError) as err:  # the user's mistake (bad input, unknown version ...): said as is
            return _error(str(err) or type(err).__name__)
        except Exception as err:  # noqa: BLE001 - answered as an MCP error, never a broken connection
            logger.exception("MCP tool %s (route %s) failed", params.name, route)
            return _error(f"route '{route}' failed: {type(err).__name__}: {err}")
        if not isinstance(result, dict):
            return _error(f"route '{route}' gave no answer")
        if result.get("error"):
            error = result["error"]
            return _error(error.get("message", str(error)) if isinstance(error, dict) else str(error))
        structured = {**result, "text": result.get("text") or "", "route": result.get("route") or route,
                      "served_by": result.get("served_by") or {}}
        structured = json.loads(json.dumps(structured, default=str))  # JSON all the way down, whatever answer gave
        return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(structured))],
                                    structured_content=structured)

    # --- serving ---

    async def asgi_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app answering MCP requests, on any path; starts the session manager if not yet running.

        It also takes lifespan events (served on its own, e.g. by uvicorn): startup starts, shutdown stops.
        """
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":  # i.e. lifespan.startup
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            await self.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
        await self.start()
        await self._manager.handle_request(scope, receive, send)

    async def start(self) -> None:
        """Run the SDK's session manager in a background task of the running loop; returns once it runs."""
        if self._ready is None:
            loop = asyncio.get_running_loop()
            self._ready, self._stopping = loop.create_future(), asyncio.Event()
            # A fresh context: not the first request's (its Ray Serve request id, its trace span) for good.
            self._task = loop.create_task(self._run(), name="slmfleet-mcp-session-manager",
                                          context=contextvars.Context())
        await asyncio.shield(self._ready)

    async def stop(self) -> None:
        """End the session manager (it cannot be started again: the SDK's manager runs once)."""
        if self._task is not None and self._stopping is not None:
            self._stopping.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        try:
            async with self._manager.run():
                self._ready.set_result(None)
                await self._stopping.wait()
        except BaseException as err:
            if not self._ready.done():
                self._ready.set_exception(err if isinstance(err, Exception) else RuntimeError(str(err)))
            raise


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)
