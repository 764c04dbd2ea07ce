"""Answer checks that cascades and rollout probes share: regex, JSON Schema, exact match, tool calls and
the request's own response_format. Pure."""

from __future__ import annotations

import json
import re

# What a tool-call parser leaves in the text when it could not parse a call (hermes, mistral, llama 3):
# an answer carrying one is a broken call, not an answer in words.
UNPARSED_CALL_MARKERS = ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>")


# What vLLM's hermes parser reads as calls (its tool_call_regex): each <tool_call> body up to its end tag,
# or to the output's end.
HERMES_CALL = re.compile(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", re.DOTALL)


def hermes_message(output: str) -> dict:
    """The chat message the fleet returns for a raw model ``output`` under the hermes tool parser: every
    ``<tool_call>`` body is a call (one that is no ``{"name", "arguments"}`` JSON keeps its text as the arguments
    of a nameless call, which the toolCall check fails) and text around calls is dropped; an output without
    calls is the message's content."""
    found = HERMES_CALL.findall(output)
    if not found:
        return {"role": "assistant", "content": output}
    calls = []
    for closed, unclosed in found:
        body = closed or unclosed
        try:
            call = json.loads(body)
            calls.append((call["name"], json.dumps(call["arguments"])))  # as the parser does, strings too
        except (ValueError, KeyError, TypeError):
            calls.append(("", body))
    return {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": name, "arguments": arguments}} for name, arguments in calls]}


def format_problem(text: str, *, regex: str | None = None, json_schema: dict | None = None,
                   exact: str | None = None) -> str | None:
    """Why ``text`` fails a format check (regex, JSON Schema or exact match), or None."""
    if exact is not None and text.strip() != exact:
        return f"expected exactly {exact!r}, got {text.strip()!r}"
    if regex is not None and not re.search(regex, text):
        return f"{short(text)!r} does not match /{regex}/"
    if json_schema is not None:
        try:
            value = json.loads(text)
        except ValueError as err:
            return f"{short(text)!r} is not JSON: {err}"
        return schema_problem(value, json_schema, what=repr(short(text)))
    return None


def schema_problem(value, schema: dict, *, what: str, verb: str = "does") -> str | None:
    """Why ``value`` does not validate against JSON Schema ``schema`` (``what`` names it), or None."""
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.validators.validator_for(schema)(schema).iter_errors(value))
    if error is None:
        return None
    where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"{what} {verb} not match the schema{' at ' + where.lstrip('.') if where else ''}: {error.message}"


def offered_tools(request: dict) -> dict[str, dict]:
    """Function name -> its parameters' JSON Schema, for the tools a chat request offers."""
    tools = {}
    for tool in request.get("tools") or []:
        function = (tool or {}).get("function") or {}
        if (tool or {}).get("type", "function") == "function" and function.get("name"):
            tools[function["name"]] = function.get("parameters") or {"type": "object"}
    return tools


def required_tool(request: dict) -> str | bool:
    """The function ``tool_choice`` names, True when it requires some call, False when a call is optional."""
    choice = request.get("tool_choice")
    if isinstance(choice, dict):
        return ((choice.get("function") or {}).get("name")) or True
    return choice == "required"


def tool_call_problem(message: dict, request: dict) -> str | None:
    """Why the tool calls of an answer ``message`` (an OpenAI chat message) fail the request, or None.

    A request without tools (or with tool_choice none) passes whatever the answer. Otherwise every
    call must name an offered tool and carry arguments that parse as JSON and validate against that
    tool's parameters. A text answer fails, with one exception: under tool_choice auto, right after
    a tool result (the model reporting what the tool said). A tier judged by this check is there to
    call tools; a request it answers in words otherwise goes to the next tier, which also catches a
    call the parser could not read (it comes back as text).
    """
    tools = offered_tools(request)
    if not tools or request.get("tool_choice") == "none":
        return None
    calls = message.get("tool_calls") or []
    text = message.get("content") or ""
    required = required_tool(request)
    if not calls:
        if required:
            wanted = f"a call of '{required}'" if isinstance(required, str) else "a tool call"
            return f"tool_choice requires {wanted}; the answer is text: {short(text)!r}"
        marker = next((m for m in UNPARSED_CALL_MARKERS if m in text), None)
        if marker:
            return f"the answer holds a tool call ({marker}) that did not parse: {short(text)!r}"
        messages = request.get("messages") or [{}]
        if (messages[-1] or {}).get("role") == "tool":
            return None
        return f"the request offers tools and the answer is text, not a call: {short(text)!r}"
    for i, call in enumerate(calls):
        function = (call or {}).get("function") or {}
        name = function.get("name")
        if name not in tools:
            return f"tool call {i} names '{name}', which the request did not offer (offered: {', '.join(tools)})"
        if isinstance(required, str) and name != required:
            return f"tool call {i} names '{name}'; tool_choice asked for '{required}'"
        raw = function.get("arguments")
        try:
            arguments = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError as err:
            return f"tool call {i} ({name}): arguments {short(str(raw))!r} are not JSON: {err}"
        problem = schema_problem(arguments, tools[name], what=f"tool call {i} ({name}): the arguments", verb="do")
        if problem:
            return problem
    return None


def response_format_problem(text: str, request: dict) -> str | None:
    """Why ``text`` fails the request's own ``response_format`` (json_schema or json_object), or None."""
    response_format = request.get("response_format") or {}
    kind = response_format.get("type")
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return format_problem(text, json_schema=schema)
    if kind == "json_object":
        try:
            value = json.loads(text)
        except ValueError as err:
            return f"{short(text)!r} is not JSON: {err}"
        return None if isinstance(value, dict) else f"{short(text)!r} is JSON but not an object"
    return None


def short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
