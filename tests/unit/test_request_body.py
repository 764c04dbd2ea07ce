"""Request bodies no handler could serve: the pure judgement as a table, and the router's guard in front of an
app (Starlette's test client, no Ray)."""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving.dataplane.request_guard import Limits, RequestGuard
from serving.policy.request_body import MAX_DEPTH, body_problem

JSON = "application/json"
OK = b'{"model": "shout", "prompt": "red fox"}'


@pytest.mark.parametrize("content_type,raw,status,code,words", [
    (JSON, OK, None, None, None),
    ("application/json; charset=utf-8", OK, None, None, None),
    ("Application/JSON", OK, None, None, None),
    (JSON, b"x" * 2000, 413, "request_too_large", "2000 bytes, over this fleet's limit of 1024"),
    ("text/plain", OK, 415, "unsupported_media_type", "got Content-Type text/plain"),
    ("application/x-www-form-urlencoded", OK, 415, "unsupported_media_type", "x-www-form-urlencoded"),
    (None, OK, 415, "unsupported_media_type", "got no Content-Type"),
    (JSON, b'{"prompt": "caf\xe9"}', 400, "invalid_json", "not valid UTF-8 (byte 15)"),
    (JSON, b'{"prompt": ', 400, "invalid_json", "not JSON"),
    (JSON, b"", 400, "invalid_json", "not JSON"),
    (JSON, b"[1, 2]", 400, "invalid_json", "must be a JSON object, got an array"),
    (JSON, b"null", 400, "invalid_json", "got null"),
    (JSON, b'"hi"', 400, "invalid_json", "got a string"),
    (JSON, b"3", 400, "invalid_json", "got a number"),
    (JSON, b'{"a": ' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1), 400, "invalid_json", "nests deeper than 64"),
    (JSON, b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json", "nests deeper"),  # past the parser's recursion
    (JSON, b'{"prompt": "\\ud800 fox"}', 400, "invalid_json", "prompt: the text holds a lone UTF-16 surrogate"),
    (JSON, b'{"messages": [{"role": "user", "content": "a\\udfffb"}]}', 400, "invalid_json",
     "messages[0].content: the text holds"),
    (JSON, b'{"prompt": "\\ud83d\\ude00"}', None, None, None),  # a pair is a character (an emoji)
], ids=["ok", "charset", "case", "too-large", "text-plain", "form", "no-type", "latin-1", "truncated", "empty",
        "array", "null", "string", "number", "too-deep", "very-deep", "surrogate", "surrogate-in-message", "pair"])
def test_body_problem(content_type, raw, status, code, words):
    problem = body_problem(content_type, raw, max_bytes=1024 if status == 413 else 1 << 30)
    if status is None:
        assert problem is None
    else:
        assert (problem.status, problem.code) == (status, code) and words in problem.message, problem


def test_a_surrogate_names_its_parameter():
    assert body_problem(JSON, b'{"tools": [{"x": "\\udc00"}]}', max_bytes=1 << 20).param == "tools[0].x"


@pytest.fixture
def client():
    async def echo(request: Request):
        return JSONResponse({"got": json.loads(await request.body())})

    app = Starlette(routes=[Route("/v1/completions", echo, methods=["POST"]), Route("/mcp", echo, methods=["POST"])])
    return TestClient(RequestGuard(app, Limits(max_bytes=2048)))


def test_the_guard_passes_good_bodies_on_whole(client):
    body = {"model": "shout", "prompt": "red fox " * 100}
    assert client.post("/v1/completions", json=body).json() == {"got": body}


@pytest.mark.parametrize("kwargs,status,code", [
    ({"content": b"x" * 5000, "headers": {"content-type": JSON}}, 413, "request_too_large"),
    ({"content": OK, "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
    ({"content": b"[]", "headers": {"content-type": JSON}}, 400, "invalid_json"),
])
def test_the_guard_answers_in_openais_shape(client, kwargs, status, code):
    resp = client.post("/v1/completions", **kwargs)
    assert resp.status_code == status
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == code and error["message"]


def test_a_streamed_body_over_the_limit_is_refused_without_a_content_length(client):
    def chunks():
        for _ in range(10):
            yield b"x" * 1000

    resp = client.post("/v1/completions", content=chunks(), headers={"content-type": JSON})
    assert resp.status_code == 413


def test_other_paths_are_not_guarded(client):
    assert client.post("/mcp", content=b'{"jsonrpc": "2.0"}', headers={"content-type": "text/plain"}).status_code == 200


def test_the_limit_is_the_fleets_max_request_bytes():
    from serving.api.fleet import parse_fleet
    from serving.api.problems import FleetSpecError
    from serving.dataplane.request_guard import LIMITS
    from tests.unit.fleets import fleet

    assert parse_fleet(fleet()).max_request_bytes == LIMITS.max_bytes == 10 * 1024 * 1024
    assert parse_fleet(fleet(maxRequestBytes=65536)).max_request_bytes == 65536
    with pytest.raises(FleetSpecError, match="maxRequestBytes"):
        parse_fleet(fleet(maxRequestBytes=10))


@pytest.mark.parametrize("path,root_path,guarded", [
    ("/v1/completions", "", True),
    ("/tenanted/v1/completions", "/tenanted", True),  # an app Serve mounts under a route_prefix
    ("/tenanted/healthz", "/tenanted", False),
    ("/v1x/completions", "", False),
])
def test_the_guard_and_the_key_check_see_the_path_within_the_app(path, root_path, guarded):
    """Serve keeps the route_prefix in scope["path"]: checked on the full path, an app served under a prefix would
    take requests without a key (the faults benchmark's second router did)."""
    import asyncio
    from types import SimpleNamespace

    from serving.dataplane.auth import Authenticate, _Holder
    from serving.policy.access import Refusal

    reached = []

    async def app(scope, receive, send):
        reached.append(scope["path"])

    holder = _Holder()
    holder.gate = SimpleNamespace(identify=lambda authorization: Refusal(401, "invalid_request_error",
                                                                         "invalid_api_key", "no key"))
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"not json", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": path, "root_path": root_path,
             "headers": [(b"content-type", b"text/plain")]}
    for middleware, status in ((Authenticate(app, holder), 401), (RequestGuard(app), 415)):
        reached.clear(), sent.clear()
        asyncio.run(middleware(dict(scope), receive, send))
        if guarded:
            assert not reached and sent[0]["status"] == status, (middleware, sent)
        else:
            assert reached == [path] and not sent
