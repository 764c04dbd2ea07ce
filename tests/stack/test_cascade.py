"""Cascade routes on the real stack: the small tier answers when its checks pass, else the next one.

The "large model" tier is an external OpenAI-compatible endpoint: this same fleet's API at its own
URL, model ``echo`` (the base model), reached over HTTP like any external endpoint.
"""

from __future__ import annotations

import copy
import json
import socket
import threading

import pytest

from serving.local.ports import free_port

PROMPT = "in: red fox\nout:"


def completion(client, route, *, headers=None, **extra):
    body = {"model": route, "prompt": PROMPT, "max_tokens": 8, "temperature": 0, **extra}
    return client.post("/v1/completions", json=body, headers=headers or {})


class Silent:
    """A TCP endpoint that accepts connections and never answers: a tier that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return


@pytest.fixture(scope="module")
def cascade_fleet(fleet, client):
    # The shout adapter's confidence on PROMPT, to put one threshold above it and one below.
    r = completion(client, "shout", logprobs=1)
    lp = [x for x in r.json()["choices"][0]["logprobs"]["token_logprobs"] if x is not None]
    mean = sum(lp) / len(lp)
    assert mean < 0, lp
    silent = Silent()
    large = {"endpoint": {"url": f"{fleet.url}/v1", "model": "echo"}, "timeout": "60s", "costPer1kTokens": 2.0}
    spec = copy.deepcopy(fleet.spec_data)
    spec["routes"] += [
        {"name": "c-json", "policy": "cascade", "tiers": [
            {"adapter": "json", "version": "v1", "costPer1kTokens": 0.1, "checks": {"jsonSchema": {
                "type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}}}, large]},
        {"name": "c-strict", "policy": "cascade", "tiers": [
            {"adapter": "json", "version": "v1", "costPer1kTokens": 0.1,
             "checks": {"jsonSchema": {"type": "object", "required": ["words"]}}}, large]},
        {"name": "c-sure", "policy": "cascade", "tiers": [
            {"adapter": "shout", "version": "v1", "checks": {"minMeanLogprob": round(2 * mean - 1, 3)}}, large]},
        {"name": "c-unsure", "policy": "cascade", "tiers": [
            {"adapter": "shout", "version": "v1", "checks": {"minMeanLogprob": round(mean / 2, 3)}}, large]},
        {"name": "c-broken", "policy": "cascade", "tiers": [{"adapter": "ghost", "version": "v1"}, large]},
        {"name": "c-slow", "policy": "cascade", "tiers": [
            {"endpoint": {"url": f"http://127.0.0.1:{silent.port}/v1", "model": "x"}, "timeout": "2s"},
            {"route": "shout"}]},
        {"name": "c-gone", "policy": "cascade", "tiers": [
            {"adapter": "ghost", "version": "v1"},
            # A free port: nobody listens there.
            {"endpoint": {"url": f"http://127.0.0.1:{free_port()}/v1", "model": "x"}, "timeout": "5s"}]},
    ]
    fleet.deploy(spec)
    yield {"mean": mean}
    fleet.deploy(fleet.spec_data)


def test_the_small_tier_answers_when_its_checks_pass(cascade_fleet, client):
    r = completion(client, "c-json", headers={"X-SLMFleet-Explain": "true"})
    assert r.status_code == 200, r.text
    assert (r.headers["x-slmfleet-tier"], r.headers["x-slmfleet-tier-name"]) == ("1", "json@v1")
    assert "x-slmfleet-escalations" not in r.headers
    assert json.loads(r.json()["choices"][0]["text"])["text"].strip() == "red fox"
    assert r.json()["slmfleet"] == {"tier": 1, "answeredBy": "json@v1", "rejected": []}
    assert r.json()["choices"][0]["logprobs"] is None  # not asked for, not returned


def test_a_schema_failure_escalates_to_the_large_model(cascade_fleet, client):
    r = completion(client, "c-strict", headers={"X-SLMFleet-Explain": "1"})
    print("escalated:", {k: v for k, v in r.headers.items() if k.startswith("x-slmfleet")}, r.json()["slmfleet"])
    assert r.status_code == 200, r.text
    assert r.headers["x-slmfleet-tier"] == "2" and r.headers["x-slmfleet-tier-name"].startswith("echo at http://")
    assert "tier 1 (json@v1):" in r.headers["x-slmfleet-escalations"]
    assert "'words' is a required property" in r.headers["x-slmfleet-escalations"]
    # The last tier's own answer (the base model's, through the echo route), not a word of tier 1's.
    assert r.json()["choices"][0]["text"] == completion(client, "echo").json()["choices"][0]["text"]
    assert r.json()["slmfleet"]["rejected"][0]["tier"] == 1


def test_confidence_thresholds_on_each_side_of_the_models_logprobs(cascade_fleet, client):
    sure = completion(client, "c-sure")
    assert sure.headers["x-slmfleet-tier"] == "1", sure.headers.get("x-slmfleet-escalations")
    unsure = completion(client, "c-unsure")
    assert unsure.headers["x-slmfleet-tier"] == "2"
    assert f"mean logprob {cascade_fleet['mean']:.2f} < " in unsure.headers["x-slmfleet-escalations"]


def test_a_truncated_answer_escalates(cascade_fleet, client):
    r = completion(client, "c-json", max_tokens=2)
    assert r.status_code == 200
    assert r.headers["x-slmfleet-tier"] == "2"
    assert "cut at max_tokens" in r.headers["x-slmfleet-escalations"]


def test_a_failing_tier_escalates_and_a_hanging_one_times_out(cascade_fleet, client):
    r = completion(client, "c-broken")
    assert r.status_code == 200 and r.headers["x-slmfleet-tier"] == "2"
    assert "tier 1 (ghost@v1): HTTP 503" in r.headers["x-slmfleet-escalations"]
    r = completion(client, "c-slow")
    assert r.status_code == 200 and r.headers["x-slmfleet-tier-name"] == "route shout"
    assert "no answer within 2s" in r.headers["x-slmfleet-escalations"]
    assert r.json()["choices"][0]["text"].strip().isupper()


def test_an_unreachable_last_tier_is_a_502_naming_it(cascade_fleet, client):
    r = completion(client, "c-gone")
    assert r.status_code == 502, r.text
    message = r.json()["error"]["message"]
    assert "route 'c-gone': tier 2" in message and "unreachable" in message


def test_streaming_answers_after_the_checks(cascade_fleet, client):
    ask = {"messages": [{"role": "user", "content": "red fox"}], "max_tokens": 8, "temperature": 0}
    with client.stream("POST", "/v1/chat/completions", json={"model": "c-strict", **ask, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["x-slmfleet-tier"] == "2"
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    last_tier = client.post("/v1/chat/completions", json={"model": "echo", **ask}).json()
    assert text == last_tier["choices"][0]["message"]["content"]  # the last tier's answer, whole
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(c.get("usage") is None for c in chunks)  # not asked for


def test_models_lists_cascade_routes_with_their_tiers(cascade_fleet, client):
    card = client.get("/v1/models/c-json").json()
    assert card["metadata"]["policy"] == "cascade" and card["metadata"]["tiers"][0] == "json@v1"


def test_stats_count_escalations_and_estimate_savings(cascade_fleet, client):
    # After the tests above: c-json answered once at tier 1 and escalated once (truncated);
    # c-strict escalated every request on its schema.
    cheap = client.get("/v1/fleet/routes/c-json/stats").json()
    assert (cheap["requests"], cheap["answeredByTier"], cheap["escalations"]) == (2, {"1": 1, "2": 1}, {"truncated": 1})
    assert cheap["escalationRate"] == 0.5 and 0 < cheap["estimatedSavings"] < 1
    assert cheap["estimatedCost"] < cheap["costIfAllToLastTier"]
    strict = client.get("/v1/fleet/routes/c-strict/stats").json()
    assert strict["escalationRate"] == 1.0 and strict["escalations"] == {"format": strict["requests"]}
    assert strict["estimatedSavings"] < 0  # every request paid for the small tier too
    missing = client.get("/v1/fleet/routes/shout/stats")
    assert missing.status_code == 404 and "cascade routes: c-json" in missing.json()["error"]["message"]
