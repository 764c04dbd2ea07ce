"""Bad input gets a clear OpenAI-style error, and never stops other routes from serving."""

import pytest

from tests.waiting import eventually

PROMPT = "in: red fox\nout:"


def error_of(resp, status):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body["error"]) >= {"message", "type", "code"}
    return body["error"]


def test_unknown_model_is_404_naming_the_available_routes(client):
    err = error_of(client.post("/v1/completions", json={"model": "gpt-9", "prompt": "x"}), 404)
    assert "'gpt-9' is not a route" in err["message"] and "shout" in err["message"]
    assert err["code"] == "model_not_found" and err["param"] == "model"


def test_missing_model_is_404(client):
    err = error_of(client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}), 404)
    assert "names no model" in err["message"]


def test_malformed_json_is_400(client):
    resp = client.post("/v1/completions", content=b'{"model": "shout", "prompt": ',
                       headers={"content-type": "application/json"})
    error_of(resp, 400)


OK = b'{"model": "shout", "prompt": "in: red fox\\nout:", "max_tokens": 4}'
JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("path,body,headers,status,code", [
    ("/v1/completions", OK, {"content-type": "text/plain"}, 415, "unsupported_media_type"),  # was a 500
    ("/v1/completions", OK, {"content-type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
    ("/v1/chat/completions", OK, {}, 415, "unsupported_media_type"),
    ("/v1/completions", b'{"model": "shout", "prompt": "caf\xe9"}', JSON, 400, "invalid_json"),
    # A lone surrogate reached the tokenizer (TypeError: TextEncodeInput...): a 500 before.
    ("/v1/chat/completions", b'{"model": "shout", "messages": [{"role": "user", "content": "\\ud800"}]}', JSON, 400,
     "invalid_json"),
    ("/v1/completions", b'{"model": "shout", "prompt": "\\udfff"}', JSON, 400, "invalid_json"),
    ("/v1/chat/completions", b'{"model": "shout", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", JSON, 400, "invalid_json"),
    ("/v1/completions", b"[]", JSON, 400, "invalid_json"),
    ("/v1/completions", b"null", JSON, 400, "invalid_json"),
    ("/v1/responses", b'"hello"', JSON, 400, "invalid_json"),
    ("/v1/completions", b'{"model": "shout", "prompt": "' + b"x" * (11 << 20) + b'"}', JSON, 413,
     "request_too_large"),
], ids=["text-plain", "form", "no-content-type", "not-utf8", "surrogate-chat", "surrogate-prompt", "too-deep",
        "array", "null", "string-responses", "over-10MiB"])
def test_malformed_bodies_get_openai_errors_and_the_fleet_serves_on(client, path, body, headers, status, code):
    resp = client.post(path, content=body, headers=headers)
    err = error_of(resp, status)
    assert err["code"] == code and err["type"] == "invalid_request_error", err
    ok = client.post("/v1/completions", content=OK, headers=JSON)
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("payload", [
    {"model": "shout", "prompt": PROMPT, "max_tokens": "many"},
    {"model": "shout", "prompt": PROMPT, "temperature": "hot"},
    {"model": "shout", "messages": "not a list"},
])
def test_invalid_parameters_are_400(client, payload):
    path = "/v1/chat/completions" if "messages" in payload else "/v1/completions"
    error_of(client.post(path, json=payload), 400)


def test_prompt_longer_than_the_context_is_400(client):
    err = error_of(client.post("/v1/completions", json={
        "model": "shout", "prompt": "red fox " * 400, "max_tokens": 8}), 400)
    assert err["message"]


@pytest.mark.parametrize("route,words", [
    ("ghost", "no adapter_config.json at s3://slmfleet-demo/adapters/ghost/v1"),
    ("corrupt", "expected 0000"),
    ("misfit", "trained on base 'Qwen/Qwen3-1.7B' but is attached to base model 'tiny-llama'"),
])
def test_unloadable_adapter_fails_its_route_only(client, route, words):
    for _ in range(2):  # a failure is not cached as a success, and does not break the replica
        err = error_of(client.post("/v1/completions", json={"model": route, "prompt": PROMPT, "max_tokens": 4}), 503)
        assert err["type"] == "adapter_unavailable"
        assert f"adapter '{route}' version 'v1' cannot be loaded" in err["message"]
        assert words in err["message"]
        ok = client.post("/v1/completions", json={"model": "shout", "prompt": PROMPT, "max_tokens": 4})
        assert ok.status_code == 200


def test_adapter_failures_are_logged_with_adapter_version_and_cause(client):
    from pathlib import Path

    import ray

    error_of(client.post("/v1/completions", json={"model": "ghost", "prompt": PROMPT, "max_tokens": 4}), 503)
    # vLLM reconfigures logging in the engine replica, so its lines land in the worker's stderr
    # log rather than Serve's per-replica file; both are under the session's logs.
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    wanted = "adapter load failed: adapter=ghost version=v1 source=s3://slmfleet-demo/adapters/ghost/v1 cause="

    def logged() -> str:
        text = "".join(p.read_text(errors="replace") for p in logs.rglob("*") if p.suffix in (".log", ".err"))
        return text if wanted in text else ""

    # replica logs are flushed asynchronously
    text = eventually(logged, timeout=30, interval=1, message=f"no log line with {wanted!r}")
    line = text.split(wanted, 1)[0].rsplit("\n", 1)[-1] + wanted + text.split(wanted, 1)[1].split("\n", 1)[0]
    assert "slm-fleet_BaseModel:tiny-llama" in line and "no adapter_config.json" in line


WRONG_TYPES = ({"not": ["a", "valid", "value"]}, [[{"x": None}]], "not-a-number-or-object", -12345.5)


def _fields(model) -> list[str]:
    return sorted(f.alias or name for name, f in model.model_fields.items())


def _wrong_typed(path: str, base: dict, fields: list[str]):
    return [(path, {**base, field: value}) for field in fields for value in WRONG_TYPES]


def test_a_wrong_type_in_any_top_level_field_is_never_a_5xx(client):
    """Every top-level field of the chat, completion and Responses requests, given values of the wrong type
    (some may happen to be valid for a field): a 4xx in OpenAI's shape, or an answer, never a 5xx."""
    from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

    chat = {"model": "shout", "messages": [{"role": "user", "content": "red fox"}], "max_tokens": 2}
    completion = {"model": "shout", "prompt": PROMPT, "max_tokens": 2}
    responses = {"model": "shout", "input": "red fox", "max_output_tokens": 2}
    cases = (_wrong_typed("/v1/chat/completions", chat, _fields(ChatCompletionRequest))
             + _wrong_typed("/v1/completions", completion, _fields(CompletionRequest))
             + _wrong_typed("/v1/responses", responses, ["model", "input", "instructions", "tools", "tool_choice",
                                                          "text", "max_output_tokens", "temperature", "top_p",
                                                          "stream", "user", "metadata", "parallel_tool_calls",
                                                          "store", "reasoning", "include", "truncation"]))
    failures = []
    for path, body in cases:
        resp = client.post(path, json=body)
        if resp.status_code >= 500:
            failures.append((path, {k: v for k, v in body.items() if k not in chat and k not in responses}
                             or body, resp.status_code, resp.text[:200]))
        elif resp.status_code >= 400:
            error = resp.json().get("error") or {}
            if not {"message", "type", "code"} <= set(error):
                failures.append((path, body, resp.status_code, "not OpenAI's error shape: " + resp.text[:200]))
    assert not failures, f"{len(failures)} of {len(cases)}: {failures[:10]}"
