"""What a chat request must satisfy before the fleet sends it to an engine. Pure.

The engine (vLLM) would refuse some of these itself, but late and in its own words (a JSON
Schema it cannot compile fails inside the grammar backend); these checks answer first, with the
parameter's path and what to do, in the shape the router turns into an OpenAI 400.
"""

from __future__ import annotations

from dataclasses import dataclass

from serving.api.fields import schema_error
from serving.api.fleet import EngineSettings


@dataclass(frozen=True)
class RequestProblem:
    """A client error: the parameter (OpenAI ``param``, e.g. ``tools[0].function.parameters``) and why."""

    param: str
    message: str


def tools_problem(body: dict) -> RequestProblem | None:
    """Tools whose parameters are no JSON Schema, and a response_format schema that is none.

    (A tool_choice naming no offered tool, or given without tools, is refused by the request
    model itself: vLLM's VLLMValidationError, which the router answers as a 400 naming it.)"""
    for i, tool in enumerate(body.get("tools") or []):
        function = (tool or {}).get("function") or {}
        if "parameters" in function and function["parameters"] is not None:
            error = schema_error(function["parameters"])
            if error:
                return RequestProblem(f"tools[{i}].function.parameters",
                                      f"the parameters of tool '{function.get('name')}' {error}; fix the schema "
                                      "(https://json-schema.org) or leave parameters out")
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema is None:
            return RequestProblem("response_format.json_schema.schema",
                                  "response_format json_schema needs json_schema.schema (the JSON Schema to answer in)")
        error = schema_error(schema)
        if error:
            return RequestProblem("response_format.json_schema.schema", f"the response_format schema {error}")
    return None


def calls_tools(body: dict) -> bool:
    """Whether the request may get a tool call (tools offered and tool_choice not none)."""
    return bool(body.get("tools")) and body.get("tool_choice") != "none"


def engine_problem(body: dict, *, route: str, base_model: str, engine: EngineSettings) -> RequestProblem | None:
    """A request the base model's engine settings cannot answer: tools on a base without a tool-call parser,
    or tool_choice auto where auto tool choice is off."""
    if not calls_tools(body):
        return None
    if engine.tool_call_parser is None:
        return RequestProblem("tools", f"route '{route}' is served by base model '{base_model}', which has no "
                              f"tool-call parser: set baseModels[{base_model}].engine.toolCallParser (e.g. hermes) "
                              "in the fleet spec, or send the request without tools")
    choice = body.get("tool_choice", "auto")
    if choice in (None, "auto") and not engine.auto_tool_choice:
        return RequestProblem("tool_choice", f"route '{route}': base model '{base_model}' has "
                              "engine.enableAutoToolChoice false, so it answers tool_choice 'required' or a named "
                              "function only; send one of those or enable auto tool choice")
    return None


def grammar_problem(message: str, body: dict) -> RequestProblem | None:
    """An engine refusal of a guided-decoding grammar (vLLM: "Grammar error: ..."), as the client's error.

    A JSON Schema can be valid and still hold what the grammar backend cannot compile (a regex
    look-around, a $ref to nothing); the engine says so in its own words, with no parameter.
    """
    if "Grammar error" not in message:
        return None
    if body.get("response_format"):
        param, what = "response_format", "the response_format schema"
    elif body.get("structured_outputs"):
        param, what = "structured_outputs", "the structured_outputs constraint"
    else:
        param, what = "tools", "a tool's parameters schema (tool_choice required or named is decoded by it)"
    detail = message.split("Grammar error:", 1)[-1].strip()
    return RequestProblem(param, f"{what} cannot be compiled into a decoding grammar: {detail}; "
                                 "simplify that part of the schema")


def deadline(header: str | None, fleet_timeout_s: float) -> float | RequestProblem:
    """A request's deadline in seconds: the fleet's requestTimeout, or the shorter one the client's
    X-SLMFleet-Timeout header asks for (a number of seconds)."""
    if header is None or not header.strip():
        return float(fleet_timeout_s)
    try:
        seconds = float(header)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        return RequestProblem("X-SLMFleet-Timeout", f"the X-SLMFleet-Timeout header must be a number of seconds "
                              f"above 0 (e.g. 5 or 2.5), not {header[:40]!r}")
    return min(seconds, float(fleet_timeout_s))
