"""Cascade routes, the pure part: spec rules, what a tier is asked, when its answer is accepted."""

from __future__ import annotations

import json

import pytest

from operators.render import render_rayservice
from operators.settings import OperatorSettings
from serving.api.fleet import parse_fleet
from serving.api.problems import FleetSpecError
from serving.api.routes import TierChecks
from serving.policy.cascade import Answer, client_view, rejection, sse_chunks, tier_request
from serving.policy.routing import RoutingTable
from tests.unit.fleets import fleet

LARGE = {"endpoint": {"url": "https://llm.example.com/v1", "model": "big", "apiKeySecret": {"name": "llm",
                                                                                            "key": "api-key"}}}


def with_routes(*routes):
    return fleet(**{"routes": fleet()["routes"] + list(routes)})


def cascade(name="smart", tiers=None):
    return {"name": name, "policy": "cascade",
            "tiers": tiers or [{"adapter": "json", "version": "v1", "checks": {"minMeanLogprob": -1}}, LARGE]}


@pytest.mark.parametrize("route,words", [
    (cascade(tiers=[LARGE]), "needs at least two tiers"),
    ({**cascade(), "targets": [{"adapter": "json", "version": "v1"}]}, "remove targets"),
    (cascade(tiers=[{"adapter": "json", "version": "v9"}, LARGE]),
     "tiers[0].version: adapter 'json' has no version 'v9'"),
    (cascade(tiers=[{"adapter": "json"}, LARGE]), "needs a version"),
    (cascade(tiers=[{"route": "nowhere"}, LARGE]), "tiers[0].route: unknown route 'nowhere'"),
    (cascade(tiers=[{"baseModel": "tiny-llama", "route": "json"}, LARGE]), "exactly one of adapter"),
    (cascade(tiers=[{"baseModel": "tiny-llama"}, {**LARGE, "checks": {"regex": "x"}}]),
     "last tier's answer is returned"),
    (cascade(tiers=[{"baseModel": "tiny-llama", "checks": {"minMeanLogprob": 0.5}}, LARGE]), "minMeanLogprob"),
    (cascade(tiers=[{"baseModel": "tiny-llama", "checks": {"jsonSchema": {"type": 3}}}, LARGE]),
     "not a valid JSON Schema"),
    (cascade(tiers=[{"baseModel": "tiny-llama", "timeout": "soon"}, LARGE]), "timeout"),
    (cascade(tiers=[{"baseModel": "tiny-llama"}, {"endpoint": {"url": "llm:80", "model": "m"}}]), "url"),
    (cascade(tiers=[{"baseModel": "tiny-llama"}, {"endpoint": {
        "url": "http://x/v1", "model": "m", "apiKeyEnv": "K", "apiKeySecret": {"name": "s", "key": "k"}}}]),
     "not both"),
    ({"name": "bare", "targets": [], "tiers": [LARGE]}, "tiers apply to policy: cascade"),
    ({**cascade(), "default": {"baseModel": "tiny-llama"}}, "a cascade tier may name a classify route"),
])
def test_bad_cascades_are_refused_naming_the_field(route, words):
    with pytest.raises(FleetSpecError) as err:
        parse_fleet(with_routes(route))
    assert words in str(err.value)


def test_cycles_between_cascade_routes_are_refused():
    a = cascade("a", [{"route": "b"}, LARGE])
    b = cascade("b", [{"route": "a"}, LARGE])
    with pytest.raises(FleetSpecError, match=r"route cycle: a -> b -> a"):
        parse_fleet(with_routes(a, b))
    ok = cascade("c", [{"route": "json"}, LARGE])  # a split route as a tier is fine
    assert RoutingTable(parse_fleet(with_routes(ok))).cascades["c"].tiers[0].route == "json"


def test_the_api_key_secret_reaches_the_ray_pods():
    spec = parse_fleet(with_routes(cascade()))
    rs = render_rayservice(spec, name="f", namespace="ns", settings=OperatorSettings())
    env = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "SLMFLEET_SECRET_LLM_API_KEY",
                    "valueFrom": {"secretKeyRef": {"name": "llm", "key": "api-key"}}}]
    assert spec.routes[-1].tiers[1].endpoint.key_variable == "SLMFLEET_SECRET_LLM_API_KEY"


def completion(text, finish="stop", logprobs=(-0.1, -0.2)):
    return {"choices": [{"index": 0, "text": text, "finish_reason": finish,
                         "logprobs": {"token_logprobs": list(logprobs)} if logprobs is not None else None}]}


def chat(text, finish="stop", logprobs=(-0.1, -0.2)):
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                         "logprobs": {"content": [{"logprob": v} for v in logprobs]} if logprobs else None}]}


@pytest.mark.parametrize("checks,body,expected", [
    ({}, completion("x"), None),
    ({}, completion("x", finish="length"), "truncated"),
    ({"acceptTruncated": True}, completion("x", finish="length"), None),
    ({"minMeanLogprob": -0.5}, completion("x"), None),
    ({"minMeanLogprob": -0.1}, completion("x"), "low_confidence"),
    ({"minMeanLogprob": -0.5}, chat("x", logprobs=(-2.0, -0.1)), "low_confidence"),
    ({"minTokenLogprob": -1}, chat("x", logprobs=(-0.1, -1.5)), "low_confidence"),
    ({"minMeanLogprob": -1}, completion("x", logprobs=None), "low_confidence"),
    ({"regex": "^[A-Z ]+$"}, chat("RED FOX"), None),
    ({"regex": "^[A-Z ]+$"}, chat("red fox"), "format"),
    ({"jsonSchema": {"type": "object", "required": ["text"]}}, completion('{"text": "a"}'), None),
    ({"jsonSchema": {"type": "object", "required": ["text"]}}, completion('{"t": 1}'), "format"),
    ({"jsonSchema": {"type": "object"}}, completion("not json"), "format"),
])
def test_when_an_answer_is_accepted(checks, body, expected):
    result = rejection(TierChecks.model_validate(checks), Answer.of(body))
    assert (result[0] if result else None) == expected, result


def test_a_low_confidence_reason_has_the_numbers():
    kind, why = rejection(TierChecks(min_mean_logprob=-0.1), Answer.of(completion("x", logprobs=(-0.2, -0.4))))
    assert why == "mean logprob -0.30 < -0.1"


def test_what_a_tier_is_asked_and_what_the_client_gets():
    body = {"model": "smart", "prompt": "p", "stream": True, "stream_options": {"include_usage": True}}
    checks = TierChecks(min_mean_logprob=-1)
    assert tier_request(body, "completions", checks, "tiny-llama:json@v1") == {
        "model": "tiny-llama:json@v1", "prompt": "p", "logprobs": 1}
    assert tier_request({"model": "s", "messages": []}, "chat", checks, "big")["logprobs"] is True
    assert "logprobs" not in tier_request({"model": "s", "prompt": "p"}, "completions", TierChecks(), "m")
    payload = completion("x")
    assert client_view(payload, {"prompt": "p"}, "completions")["choices"][0]["logprobs"] is None
    assert client_view(payload, {"prompt": "p", "logprobs": 0}, "completions") == payload


@pytest.mark.parametrize("call,payload", [("chat", chat("RED FOX")), ("completions", completion("RED FOX"))])
def test_an_accepted_answer_streams_as_openai_chunks(call, payload):
    events = sse_chunks({**payload, "usage": {"prompt_tokens": 3, "completion_tokens": 2}}, call, include_usage=True)
    assert events[-1] == "data: [DONE]\n\n"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    first = chunks[0]["choices"][0]
    assert (first["delta"]["content"] if call == "chat" else first["text"]) == "RED FOX"
    assert chunks[1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2} and chunks[-1]["choices"] == []


def test_savings_arithmetic():
    from serving.policy.cascade import RouteStats, TierUse, request_costs

    costs = [0.1, 2.0]
    accepted_first = [TierUse(1, 100, "accepted")]
    escalated = [TierUse(1, 100, "format"), TierUse(2, 120, "accepted")]
    assert request_costs(costs, accepted_first) == pytest.approx((0.01, 0.2))
    assert request_costs(costs, escalated) == pytest.approx((0.01 + 0.24, 0.24))
    stats = RouteStats(tiers=2)
    stats.add(accepted_first, costs)
    stats.add(accepted_first, costs)
    stats.add(escalated, costs)
    stats.add([TierUse(1, 0, "timeout"), TierUse(2, 0, "error")], costs)
    report = stats.report("smart")
    assert report["answeredByTier"] == {"1": 2, "2": 1} and report["failed"] == 1
    assert report["escalationRate"] == 0.5 and report["escalations"] == {"error": 1, "format": 1, "timeout": 1}
    # cost 0.01 + 0.01 + 0.25 = 0.27 against 0.2 + 0.2 + 0.24 = 0.64 straight to the last tier
    assert report["estimatedCost"] == pytest.approx(0.27) and report["costIfAllToLastTier"] == pytest.approx(0.64)
    assert report["estimatedSavings"] == pytest.approx(1 - 0.27 / 0.64, abs=1e-4)
    assert RouteStats(tiers=2).report("idle")["escalationRate"] is None


def test_answer_headers_say_who_answered_and_why_not_the_others():
    from serving.policy.cascade import answer_headers

    rejected = [{"tier": 1, "by": "json@v1", "reason": "mean logprob -2.10 < -1\nüber"}]
    assert answer_headers("smart", 2, "big at https://llm/v1", rejected) == {
        "X-SLMFleet-Route": "smart", "X-SLMFleet-Tier": "2", "X-SLMFleet-Tier-Name": "big at https://llm/v1",
        "X-SLMFleet-Escalations": "tier 1 (json@v1): mean logprob -2.10 < -1 \\xfcber"}
    assert "X-SLMFleet-Escalations" not in answer_headers("smart", 1, "json@v1", [])
