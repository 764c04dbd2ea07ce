"""The load tests' workload: settings, route mix, requests, answer checks, fleet-file edits."""

import random
import re
from collections import Counter

import pytest

from load_tests.workload import (
    WEIGHT_STEPS,
    RoutePicker,
    Settings,
    SettingsError,
    SSEStream,
    StreamError,
    alternate_targets,
    answer_problem,
    header_problem,
    is_loopback,
    parse_settings,
    parse_targets_change_settings,
    plan_request,
    request_name,
    served_by,
    target_label,
    with_route_targets,
    zipf_weights,
)
from serving.api.fleet import parse_fleet
from tests.unit.fleets import FLEET, fleet


def test_settings_defaults():
    assert parse_settings({}) == Settings(routes=None, route_mix="uniform", zipf_s=1.1, chat_ratio=0.8,
                                          stream_ratio=0.5, prompt_words=(3, 12), max_tokens=16, seed=None)


@pytest.mark.parametrize("env,field,expected", [
    ({"SLMFLEET_ROUTES": "shout, json,,echo "}, "routes", ("shout", "json", "echo")),
    ({"SLMFLEET_ROUTES": "  "}, "routes", None),
    ({"SLMFLEET_ROUTE_MIX": "zipf"}, "route_mix", "zipf"),
    ({"SLMFLEET_ZIPF_S": "0"}, "zipf_s", 0.0),
    ({"SLMFLEET_CHAT_RATIO": "1"}, "chat_ratio", 1.0),
    ({"SLMFLEET_STREAM_RATIO": "0"}, "stream_ratio", 0.0),
    ({"SLMFLEET_PROMPT_WORDS": "5:5"}, "prompt_words", (5, 5)),
    ({"SLMFLEET_MAX_TOKENS": "64"}, "max_tokens", 64),
    ({"SLMFLEET_SEED": "7"}, "seed", 7),
])
def test_settings_from_environment(env, field, expected):
    assert getattr(parse_settings(env), field) == expected


# (case, environment, words the message must contain: the variable and what is wrong)
INVALID = [
    ("unknown mix", {"SLMFLEET_ROUTE_MIX": "pareto"}, "SLMFLEET_ROUTE_MIX='pareto' is not one of: uniform, zipf"),
    ("route twice", {"SLMFLEET_ROUTES": "shout,shout"}, "SLMFLEET_ROUTES='shout,shout' names a route twice"),
    ("zipf exponent not a number", {"SLMFLEET_ZIPF_S": "steep"}, "SLMFLEET_ZIPF_S='steep' is not a number"),
    ("negative zipf exponent", {"SLMFLEET_ZIPF_S": "-1"}, "SLMFLEET_ZIPF_S='-1' must be at least 0.0"),
    ("chat ratio above 1", {"SLMFLEET_CHAT_RATIO": "80"}, "SLMFLEET_CHAT_RATIO='80' must be between 0.0 and 1.0"),
    ("stream ratio below 0", {"SLMFLEET_STREAM_RATIO": "-0.1"}, "SLMFLEET_STREAM_RATIO='-0.1' must be between"),
    ("prompt words not a range", {"SLMFLEET_PROMPT_WORDS": "8"}, "SLMFLEET_PROMPT_WORDS='8' is not min:max"),
    ("prompt words reversed", {"SLMFLEET_PROMPT_WORDS": "9:3"}, "SLMFLEET_PROMPT_WORDS='9:3' needs 1 <= min <= max"),
    ("prompt words zero", {"SLMFLEET_PROMPT_WORDS": "0:3"}, "needs 1 <= min <= max"),
    ("max tokens not an integer", {"SLMFLEET_MAX_TOKENS": "1.5"}, "SLMFLEET_MAX_TOKENS='1.5' is not an integer"),
    ("max tokens zero", {"SLMFLEET_MAX_TOKENS": "0"}, "SLMFLEET_MAX_TOKENS='0' must be at least 1"),
    ("seed not an integer", {"SLMFLEET_SEED": "abc"}, "SLMFLEET_SEED='abc' is not an integer"),
]


@pytest.mark.parametrize("case,env,message", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_settings_name_the_variable(case, env, message):
    with pytest.raises(SettingsError, match="invalid load test settings") as err:
        parse_settings(env)
    assert message in str(err.value)


def test_every_invalid_variable_is_reported_at_once():
    with pytest.raises(SettingsError) as err:
        parse_settings({"SLMFLEET_ROUTE_MIX": "x", "SLMFLEET_MAX_TOKENS": "0", "SLMFLEET_CHAT_RATIO": "2"})
    assert all(v in str(err.value) for v in ("SLMFLEET_ROUTE_MIX", "SLMFLEET_MAX_TOKENS", "SLMFLEET_CHAT_RATIO"))


def test_targets_change_settings():
    s = parse_targets_change_settings({"SLMFLEET_FLEET_FILE": "f.yaml", "SLMFLEET_ROUTE": "json",
                                       "SLMFLEET_CHANGE_EVERY": "3", "SLMFLEET_ROUTES": "shout,echo",
                                       "SLMFLEET_ROUTE_MIX": "zipf", "SLMFLEET_CHAT_RATIO": "0.5"})
    assert (s.fleet_file, s.route, s.change_every) == ("f.yaml", "json", 3.0)
    # all the load goes to the route that changes; the request mix still comes from the environment
    assert (s.workload.routes, s.workload.route_mix, s.workload.chat_ratio) == (("json",), "uniform", 0.5)
    assert parse_targets_change_settings({"SLMFLEET_FLEET_FILE": "f.yaml"}).route == "shout"


@pytest.mark.parametrize("env,message", [
    ({}, "SLMFLEET_FLEET_FILE is not set"),
    ({"SLMFLEET_FLEET_FILE": "f", "SLMFLEET_ROUTE": " "}, "SLMFLEET_ROUTE is empty"),
    ({"SLMFLEET_FLEET_FILE": "f", "SLMFLEET_CHANGE_EVERY": "0.1"}, "SLMFLEET_CHANGE_EVERY='0.1' must be at least 0.5"),
    ({"SLMFLEET_FLEET_FILE": "f", "SLMFLEET_STREAM_RATIO": "x"}, "SLMFLEET_STREAM_RATIO='x' is not a number"),
])
def test_invalid_targets_change_settings(env, message):
    with pytest.raises(SettingsError) as err:
        parse_targets_change_settings(env)
    assert message in str(err.value)


@pytest.mark.parametrize("n,s", [(1, 1.1), (4, 1.1), (10, 2.0), (3, 0.0)])
def test_zipf_weights(n, s):
    w = zipf_weights(n, s)
    assert len(w) == n and sum(w) == pytest.approx(1)
    assert all(w[k] / w[0] == pytest.approx(1 / (k + 1) ** s) for k in range(n))


def test_route_picker_is_reproducible_with_a_seed():
    picks = [[RoutePicker(["a", "b", "c"], mix="zipf", rng=random.Random(5)).pick() for _ in range(50)]
             for _ in range(2)]
    assert picks[0] == picks[1]


@pytest.mark.parametrize("mix,expected", [
    ("uniform", [1 / 3, 1 / 3, 1 / 3]),
    ("zipf", zipf_weights(3, 1.1)),
])
def test_route_picker_follows_the_mix(mix, expected):
    picker = RoutePicker(["a", "b", "c"], mix=mix, zipf_s=1.1, rng=random.Random(1))
    counts = Counter(picker.pick() for _ in range(20_000))
    assert [counts[r] / 20_000 for r in "abc"] == pytest.approx(expected, abs=0.015)


def test_route_picker_needs_routes():
    with pytest.raises(ValueError, match="no routes"):
        RoutePicker([], mix="uniform", rng=random.Random())


@pytest.mark.parametrize("chat_ratio,stream_ratio,kinds,streams", [
    (1.0, 0.0, {"chat"}, {False}),
    (0.0, 1.0, {"completion"}, {True}),
    (0.5, 0.5, {"chat", "completion"}, {True, False}),
])
def test_plan_request_mix(chat_ratio, stream_ratio, kinds, streams):
    settings = Settings(routes=None, route_mix="uniform", zipf_s=1.1, chat_ratio=chat_ratio,
                        stream_ratio=stream_ratio, prompt_words=(2, 4), max_tokens=8, seed=None)
    rng = random.Random(3)
    planned = [plan_request(settings, "shout", rng) for _ in range(200)]
    assert {p.kind for p in planned} == kinds and {p.stream for p in planned} == streams
    for p in planned:
        assert p.body["model"] == "shout" and p.body["max_tokens"] == 8 and p.body["stream"] == p.stream
        if p.kind == "chat":
            assert p.path == "/v1/chat/completions"
            words = p.body["messages"][0]["content"].split()
        else:
            assert p.path == "/v1/completions"
            words = p.body["prompt"].removeprefix("in: ").removesuffix("\nout:").split()
        assert 2 <= len(words) <= 4


@pytest.mark.parametrize("kind,stream,ttft,expected", [
    ("chat", False, False, "chat:shout"),
    ("chat", True, False, "chat-stream:shout"),
    ("chat", True, True, "chat-stream-ttft:shout"),
    ("completion", False, False, "completion:shout"),
    ("completion", True, True, "completion-stream-ttft:shout"),
])
def test_request_names_are_kind_and_route(kind, stream, ttft, expected):
    assert request_name(kind, stream, "shout", ttft=ttft) == expected


@pytest.mark.parametrize("body,problem", [
    ({"choices": [{"message": {"content": "RED"}}]}, None),
    ({"choices": []}, "answer has no choices"),
    ({"id": "x"}, "answer has no choices"),
    ({"error": {"message": "boom"}}, "answer is an error: {'message': 'boom'}"),
    ([1], "answer is not a JSON object"),
])
def test_answer_problem(body, problem):
    assert answer_problem(body) == problem


@pytest.mark.parametrize("headers,problem", [
    ({"X-SLMFleet-Route": "shout"}, None),
    ({"X-SLMFleet-Route": "echo"}, "X-SLMFleet-Route is 'echo', expected 'shout'"),
    ({}, "X-SLMFleet-Route is None, expected 'shout'"),
])
def test_header_problem(headers, problem):
    assert header_problem(headers, "shout") == problem


@pytest.mark.parametrize("headers,label", [
    ({"X-SLMFleet-Adapter": "shout", "X-SLMFleet-Version": "v2", "X-SLMFleet-Base-Model": "tiny-llama"}, "shout@v2"),
    ({"X-SLMFleet-Base-Model": "tiny-llama"}, "base tiny-llama"),
])
def test_served_by(headers, label):
    assert served_by(headers) == label


CHUNK = 'data: {"choices": [{"delta": {"content": "RED"}}]}'
USAGE = 'data: {"choices": [], "usage": {"completion_tokens": 3}}'

# (case, lines, chunks, error)
STREAMS = [
    ("complete", [CHUNK, "", CHUNK, "", "data: [DONE]", ""], 2, None),
    ("bytes and CRLF", [CHUNK.encode() + b"\r", b"data: [DONE]"], 1, None),
    ("usage chunk and a comment", [": keep-alive", CHUNK, USAGE, "data:[DONE]"], 2, None),
    ("no [DONE]", [CHUNK, ""], None, "stream ended without data: [DONE] (after 1 chunk(s))"),
    ("empty", [], None, "stream ended without data: [DONE] (after 0 chunk(s))"),
    ("only [DONE]", ["data: [DONE]"], None, "no chunks before [DONE]"),
    ("data after [DONE]", [CHUNK, "data: [DONE]", CHUNK], None, "data after [DONE]"),
    ("not JSON", ["data: {oops"], None, "chunk is not JSON"),
    ("error event", ['data: {"error": {"message": "adapter gone"}}'], None, "stream carried an error"),
    ("chunk without choices", ['data: {"id": 1}'], None, "chunk has no choices list"),
    ("not a data line", ["event: ping"], None, "not an SSE data line"),
]


@pytest.mark.parametrize("case,lines,chunks,error", STREAMS, ids=[s[0] for s in STREAMS])
def test_sse_stream(case, lines, chunks, error):
    stream = SSEStream()
    if error is None:
        for line in lines:
            stream.feed(line)
        stream.finish()
        assert stream.chunks == chunks
    else:
        with pytest.raises(StreamError, match=re.escape(error)):
            for line in lines:
                stream.feed(line)
            stream.finish()


def test_sse_stream_returns_the_chunk_a_line_carries():
    stream = SSEStream()
    assert stream.feed("") is None and stream.feed(": comment") is None
    assert stream.feed(CHUNK)["choices"][0]["delta"]["content"] == "RED" and stream.chunks == 1
    assert stream.feed("data: [DONE]") is None and stream.done


@pytest.mark.parametrize("route,expected", [
    # another version of the same adapter where there is one
    ("shout", ({"adapter": "shout", "version": "v1"}, {"adapter": "shout", "version": "v2"})),
    # else the adapter's base model
    ("json", ({"adapter": "json", "version": "v1"}, {"baseModel": "tiny-qwen"})),
    # a base-model route: the latest version of the first adapter on that base
    ("echo", ({"baseModel": "tiny-llama"}, {"adapter": "shout", "version": "v2"})),
])
def test_alternate_targets(route, expected):
    assert alternate_targets(fleet(), route) == expected
    manifest = {"apiVersion": "slmfleet.io/v1alpha1", "kind": "ModelFleet", "spec": fleet()}
    assert alternate_targets(manifest, route) == expected


@pytest.mark.parametrize("doc,route,message", [
    (fleet(), "sql", "SLMFLEET_ROUTE='sql' is not a route of the fleet file; its routes: shout, json, echo"),
    (fleet(**{"routes.2.targets.0.baseModel": "tiny-qwen", "adapters.1.baseModel": "tiny-llama"}), "echo",
     "serves base model 'tiny-qwen', which has no adapter"),
])
def test_alternate_targets_errors(doc, route, message):
    with pytest.raises(SettingsError) as err:
        alternate_targets(doc, route)
    assert message in str(err.value)


@pytest.mark.parametrize("weights", WEIGHT_STEPS)
@pytest.mark.parametrize("route", ["shout", "json", "echo"])
def test_every_targets_change_is_a_valid_fleet(route, weights):
    targets = alternate_targets(fleet(), route)
    changed = with_route_targets(fleet(), route, targets, weights)
    spec = parse_fleet(changed)
    got = next(r for r in spec.routes if r.name == route)
    assert [t.weight for t in got.targets] == list(weights)
    assert [r for r in changed["routes"] if r["name"] != route] == [r for r in FLEET["routes"] if r["name"] != route]


def test_with_route_targets_leaves_the_document_alone():
    doc = {"apiVersion": "slmfleet.io/v1alpha1", "kind": "ModelFleet", "metadata": {"name": "q"}, "spec": fleet()}
    changed = with_route_targets(doc, "json", alternate_targets(doc, "json"), (0, 100))
    assert doc["spec"] == FLEET and changed["metadata"] == {"name": "q"}
    assert changed["spec"]["routes"][1]["targets"] == [{"adapter": "json", "version": "v1", "weight": 0},
                                                      {"baseModel": "tiny-qwen", "weight": 100}]


@pytest.mark.parametrize("target,label", [
    ({"adapter": "shout", "version": "v1"}, "shout@v1"),
    ({"baseModel": "tiny-llama"}, "base tiny-llama"),
])
def test_target_label_matches_served_by(target, label):
    assert target_label(target) == label


@pytest.mark.parametrize("url,loopback", [
    ("http://127.0.0.1:8000", True),
    ("http://localhost:8000", True),
    ("http://LOCALHOST", True),
    ("http://[::1]:8000", True),
    ("http://127.3.2.1:8000", True),
    ("http://10.0.0.5:8000", False),
    ("http://192.168.1.2", False),
    ("https://api.example.com", False),
    ("http://127.0.0.1.example.com", False),
    ("http://0.0.0.0:8000", False),
    ("127.0.0.1:8000", False),  # no scheme: not a URL this can judge
])
def test_is_loopback(url, loopback):
    assert is_loopback(url) is loopback
