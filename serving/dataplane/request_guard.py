"""The router's request guard: an ASGI middleware that reads the body of every POST to ``/v1/*`` and answers
what no handler could serve (too large, not JSON, not UTF-8, no object, too deep, lone surrogates) with an
OpenAI-style error (``serving.policy.request_body`` decides) before FastAPI or a request model sees it.

A body over the limit is refused as soon as it is known to be: from its Content-Length, or once the bytes
read pass the limit, without reading the rest. The limit is the fleet's ``maxRequestBytes``: the router's
``reconfigure`` sets it on :data:`LIMITS`, which this middleware, in the same replica process, reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from serving.api.fleet import FleetSpec
from serving.policy.request_body import BodyProblem, body_problem


@dataclass
class Limits:
    max_bytes: int = FleetSpec.model_fields["max_request_bytes"].default


LIMITS = Limits()


def app_path(scope) -> str:
    """The request's path within the app: Serve mounts an app under its route_prefix (``root_path``), which
    Starlette keeps in ``scope["path"]``; a check of ``/v1/...`` on the full path would miss every request of an
    app not served at ``/``."""
    path, root = scope["path"], scope.get("root_path") or ""
    return path[len(root):] or "/" if root and path.startswith(root) else path


class RequestGuard:
    def __init__(self, app, limits: Limits = LIMITS):
        self.app, self.limits = app, limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not app_path(scope).startswith("/v1/"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        limit = self.limits.max_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return await _answer(send, body_problem(None, b"\0" * (limit + 1), max_bytes=limit))
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away: nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await _answer(send, body_problem(None, b"\0" * size, max_bytes=limit))
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        problem = body_problem(headers.get("content-type"), body, max_bytes=limit)
        if problem is not None:
            return await _answer(send, problem)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)


async def _answer(send, problem: BodyProblem) -> None:
    payload = json.dumps({"error": {"message": problem.message, "type": "invalid_request_error",
                                    "param": problem.param, "code": problem.code}}).encode()
    await send({"type": "http.response.start", "status": problem.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
