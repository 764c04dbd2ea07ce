"""The fleet on the real stack: routes, adapters, streaming, stickiness, the OpenAI client."""

import concurrent.futures
import copy
import json
from collections import Counter

import httpx
import pytest

PROMPT = "in: red fox sun\nout:"


def complete(client, model, prompt=PROMPT, **extra):
    resp = client.post("/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": 16,
                                                "temperature": 0, **extra})
    assert resp.status_code == 200, resp.text
    return resp


def test_every_route_answers_and_says_who_served_it(client, fleet):
    for route in ("echo", "shout", "reverse", "json"):
        resp = complete(client, route)
        assert resp.headers["x-slmfleet-route"] == route
        assert resp.headers["x-slmfleet-base-model"] == "tiny-llama"
        if route == "echo":
            assert "x-slmfleet-adapter" not in resp.headers
        else:
            assert resp.headers["x-slmfleet-adapter"] == route
            assert resp.headers["x-slmfleet-version"] == "v1"


def test_base_and_each_adapter_answer_differently(client):
    answers = {r: complete(client, r).json()["choices"][0]["text"].strip()
               for r in ("echo", "shout", "reverse", "json")}
    assert len(set(answers.values())) == 4, answers
    # The trained behaviours, loosely: the tiny model gets most of it right.
    assert answers["shout"].isupper(), answers
    assert answers["json"].startswith("{"), answers


def test_models_lists_routes_with_their_targets(client):
    data = client.get("/v1/models").json()["data"]
    by_id = {m["id"]: m for m in data}
    assert {"echo", "shout", "reverse", "json", "ab"} <= set(by_id)
    assert by_id["ab"]["metadata"]["targets"][1] == {
        "baseModel": "tiny-llama", "adapter": "reverse", "version": "v1", "weight": 50}
    assert client.get("/v1/models/shout").json()["id"] == "shout"
    assert client.get("/v1/models/nope").status_code == 404


def test_chat_completion(client):
    resp = client.post("/v1/chat/completions", json={
        "model": "shout", "messages": [{"role": "user", "content": "blue moon"}], "max_tokens": 16, "temperature": 0})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"].strip().isupper()


@pytest.mark.parametrize("path,payload", [
    ("/v1/completions", {"prompt": PROMPT}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "red fox"}]}),
])
def test_streaming_sends_sse_chunks_then_done(client, path, payload):
    body = {"model": "reverse", "max_tokens": 16, "temperature": 0, "stream": True, **payload}
    with client.stream("POST", path, json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-slmfleet-adapter"] == "reverse"
        events = [line[len("data: "):] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) >= 2
    key = "text" if path == "/v1/completions" else "delta"
    text = "".join((c["choices"][0].get(key) or {}).get("content", "") if key == "delta"
                   else c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text.strip()


def test_sticky_sessions_stay_on_one_version(client):
    def adapter(headers=None, **kw):
        resp = client.post("/v1/completions", headers=headers,
                           json={"model": "ab", "prompt": PROMPT, "max_tokens": 4, **kw})
        assert resp.status_code == 200, resp.text
        return resp.headers["x-slmfleet-adapter"]

    for user in ("alice", "bob", "carol", "dave"):
        assert len({adapter(user=user) for _ in range(6)}) == 1
    for session in ("s-1", "s-2", "s-3"):
        assert len({adapter(headers={"X-Session-Id": session}) for _ in range(6)}) == 1
    # Distinct users spread over both targets of the 50/50 split.
    assert set(Counter(adapter(user=f"user-{i}") for i in range(24))) == {"shout", "reverse"}


def test_openai_client(fleet):
    from openai import OpenAI

    client = OpenAI(base_url=f"{fleet.url}/v1", api_key="unused")
    chat = client.chat.completions.create(
        model="reverse", messages=[{"role": "user", "content": "red fox"}], max_tokens=16, temperature=0)
    assert chat.choices[0].message.content.strip()
    text = client.completions.create(model="json", prompt=PROMPT, max_tokens=16, temperature=0).choices[0].text
    assert text.strip().startswith("{")
    stream = client.chat.completions.create(
        model="shout", messages=[{"role": "user", "content": "red fox"}], max_tokens=16, temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).strip()
    assert {m.id for m in client.models.list()} >= {"echo", "shout"}


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "baseModels": {"tiny-llama": "ok", "tiny-plain": "ok"}}


def test_concurrent_first_requests_to_a_new_version_all_succeed(fleet):
    """Six requests at once for a version no replica has yet: one loads it, the others wait for it."""
    spec = copy.deepcopy(fleet.spec_data)
    shout = next(a for a in spec["adapters"] if a["name"] == "shout")
    shout["versions"].append({"version": "burst", "source": shout["versions"][0]["source"]})
    spec["routes"].append({"name": "burst", "targets": [{"adapter": "shout", "version": "burst"}]})
    fleet.deploy(spec)
    try:
        def ask(_):
            return httpx.post(f"{fleet.url}/v1/completions", timeout=120,
                              json={"model": "burst", "prompt": "red fox", "max_tokens": 4}).status_code

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            assert list(pool.map(ask, range(6))) == [200] * 6
    finally:
        fleet.deploy(fleet.spec_data)
