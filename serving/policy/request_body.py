"""What a request body must be before any handler reads it: JSON, an object, sized and shaped so that
nothing below (FastAPI, the request models, the tokenizer) fails on it with a 500. Pure.

The router's request guard (``serving.dataplane.request_guard``) asks :func:`body_problem` for the
raw bytes of every POST to ``/v1/*``; a problem is answered in OpenAI's error shape and the request
goes no further.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

MAX_DEPTH = 64
"""Deepest nesting of objects and arrays a body may have (a chat with tools and schemas needs about 12)."""


@dataclass(frozen=True)
class BodyProblem:
    status: int
    message: str
    code: str
    param: str | None = None


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _depth_problem(value) -> bool:
    """Whether ``value`` nests deeper than MAX_DEPTH (iteratively: a deep body must not exhaust the stack)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > MAX_DEPTH:
                return True
            stack += [(child, depth + 1) for child in (node.values() if isinstance(node, dict) else node)]
    return False


def _surrogate_at(value, path: str = "") -> str | None:
    """The parameter path of the first string (key or value) holding a lone UTF-16 surrogate, or None.

    JSON's ``\\ud800`` escapes decode to such strings, which no tokenizer can encode."""
    stack = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return where or "body"
        elif isinstance(node, dict):
            for key, child in node.items():
                child_path = f"{where}.{key}" if where else str(key)
                try:
                    key.encode("utf-8")
                except UnicodeEncodeError:
                    return child_path.encode("utf-8", "backslashreplace").decode()
                stack.append((child, child_path))
        elif isinstance(node, list):
            stack += [(child, f"{where}[{i}]") for i, child in enumerate(node)]
    return None


def body_problem(content_type: str | None, raw: bytes, *, max_bytes: int) -> BodyProblem | None:
    """Why the body of a JSON API request cannot be served, or None."""
    if len(raw) > max_bytes:
        return BodyProblem(413, f"the request body is {len(raw)} bytes, over this fleet's limit of {max_bytes} "
                           "bytes (maxRequestBytes); send a shorter request", "request_too_large")
    media = _media_type(content_type)
    if media != "application/json":
        got = f"Content-Type {media}" if media else "no Content-Type"
        return BodyProblem(415, f"the request body must be JSON sent with Content-Type: application/json "
                           f"(got {got})", "unsupported_media_type")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return BodyProblem(400, f"the request body is not valid UTF-8 (byte {err.start}); send it UTF-8 encoded",
                           "invalid_json")
    try:
        value = json.loads(text)
    except RecursionError:
        return BodyProblem(400, f"the request body nests deeper than {MAX_DEPTH} levels", "invalid_json")
    except ValueError as err:
        return BodyProblem(400, f"the request body is not JSON: {err}", "invalid_json")
    if not isinstance(value, dict):
        kind = "null" if value is None else {list: "an array", str: "a string", bool: "a boolean"}.get(
            type(value), "a number")
        return BodyProblem(400, f"the request body must be a JSON object, got {kind}", "invalid_json")
    if _depth_problem(value):
        return BodyProblem(400, f"the request body nests deeper than {MAX_DEPTH} levels", "invalid_json")
    where = _surrogate_at(value)
    if where is not None:
        return BodyProblem(400, f"{where}: the text holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff "
                           "escape), which is not a character; send valid Unicode", "invalid_json", param=where)
    return None
