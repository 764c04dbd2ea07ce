"""Which requests are captured and what their records hold (pure)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from serving.api.fleet import parse_fleet
from serving.api.problems import FleetSpecError
from serving.policy.capture import (
    RECORD_KEYS,
    AnsweredBy,
    StreamedAnswer,
    answer_part,
    caller_id,
    caller_of,
    forget_ids,
    object_key,
    partition_of,
    record,
    record_problem,
    request_part,
    route_sample_rate,
    sampled,
)
from tests.unit.fleets import fleet

CAPTURE = {"destination": "s3://captures/fleet-a", "sampleRate": 0.5}


def _spec(capture=CAPTURE, **changes):
    data = fleet(**changes)
    if capture is not None:
        data["capture"] = capture
    return parse_fleet(data)


# (case, fleet capture section, the route's own capture, rate for route 'json')
RATES = [
    ("no capture section", None, None, None),
    ("every route at the fleet's rate", CAPTURE, None, 0.5),
    ("the route's own rate", CAPTURE, {"sampleRate": 0.2}, 0.2),
    ("the route turned off", CAPTURE, {"enabled": False}, None),
    ("not listed", {**CAPTURE, "routes": ["shout"]}, None, None),
    ("not listed but turned on", {**CAPTURE, "routes": ["shout"]}, {"enabled": True}, 0.5),
    ("rate 0 is off", {**CAPTURE, "sampleRate": 0}, None, None),
    ("default rate", {"destination": "s3://captures"}, None, 0.1),
]


@pytest.mark.parametrize("case,capture,own,rate", RATES, ids=[r[0] for r in RATES])
def test_route_sample_rate(case, capture, own, rate):
    changes = {"routes.1.capture": own} if own is not None else {}
    spec = _spec(capture, **changes) if capture is not None or own is None else None
    route = next(r for r in spec.routes if r.name == "json")
    assert route_sample_rate(spec.capture, route) == rate


BROKEN = [
    ("route capture without a section", None, {"routes.1.capture": {"sampleRate": 1}}, "routes[1].capture",
     "no capture section"),
    ("unknown route listed", {**CAPTURE, "routes": ["jsn"]}, {}, "capture.routes[0]", "unknown route 'jsn'"),
    ("destination not s3", {"destination": "/tmp/x"}, {}, "capture.destination", "not an S3 URI"),
    ("flush slower than 10s", {**CAPTURE, "flushInterval": "30s"}, {}, "capture.flushInterval", "pattern"),
    ("unknown entity", {**CAPTURE, "redaction": {"entities": ["EMAIL"]}}, {}, "capture.redaction.entities",
     "unknown entities ['EMAIL']"),
    ("pattern that does not compile", {**CAPTURE, "redaction": {"patterns": [{"name": "EMP_ID", "regex": "E("}]}},
     {}, "capture.redaction.patterns[0].regex", "does not compile"),
    ("rate above 1", {**CAPTURE, "sampleRate": 2}, {}, "capture.sampleRate", "less than or equal to 1"),
]


@pytest.mark.parametrize("case,capture,changes,path,words", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_capture_names_the_field(case, capture, changes, path, words):
    with pytest.raises(FleetSpecError) as info:
        _spec(capture, **changes)
    problems = {str(p.path): p.message for p in info.value.problems}
    assert path in problems, problems
    assert words in problems[path], problems[path]


def test_sampling_keeps_a_conversation_together_at_the_rate():
    keys = [f"session-{i}" for i in range(4000)]
    first = [sampled(0.25, k) for k in keys]
    assert first == [sampled(0.25, k) for k in keys]  # every turn of a conversation decides the same
    assert 0.22 < sum(first) / len(keys) < 0.28
    assert all(sampled(1.0, k) for k in keys[:50]) and not any(sampled(0.0, k) for k in keys[:50])
    assert sampled(0.5, None, draw=lambda: 0.4) and not sampled(0.5, None, draw=lambda: 0.6)


def test_caller_id_is_keyed_not_a_plain_hash():
    caller = caller_of("alice", None)
    assert caller == "user:alice" and caller_of(None, "Bearer sk-123") == "key:sk-123"
    assert caller_of(None, "Basic abc") is None and caller_of(None, None) is None
    cid = caller_id(b"secret", caller)
    assert len(cid) == 64 and cid == caller_id(b"secret", caller)
    assert cid not in {hashlib.sha256(v.encode()).hexdigest() for v in ("alice", "user:alice")}
    assert cid != caller_id(b"other", caller)
    assert caller_id(None, caller) is None and caller_id(b"secret", None) is None
    assert forget_ids(b"secret", "alice") == {cid, caller_id(b"secret", "key:alice")}


def test_a_record_keeps_no_key_header_or_raw_user():
    body = {"model": "json", "messages": [{"role": "user", "content": "hi"}], "user": "alice", "max_tokens": 8,
            "api_key": "sk-x", "extra_headers": {"Authorization": "Bearer sk-x"}, "tools": None}
    assert request_part(body) == {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    rec = record(route="json", policy="split", call="chat", request=request_part(body),
                 answer=answer_part({"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}, "chat"),
                 answered_by=AnsweredBy("tiny", "json", "v1"), status=200, input_tokens=3, output_tokens=1,
                 latency_s=0.0123, caller="c" * 64, now=datetime(2026, 12, 2, 10, 0, tzinfo=UTC), record_id="r1")
    assert rec["schemaVersion"] == 1 and set(rec) == RECORD_KEYS and record_problem(rec) is None
    assert rec["time"] == "2026-12-02T10:00:00.000Z" and rec["latencyMs"] == 12.3 and rec["tenant"] is None
    assert rec["answer"] == {"text": "ok", "toolCalls": [], "finishReason": "stop"}
    assert rec["answeredBy"] == {"tier": None, "tierName": None, "lastTier": None, "baseModel": "tiny",
                                 "adapter": "json", "version": "v1", "endpoint": None}
    assert "sk-x" not in repr(rec) and "alice" not in repr(rec)


@pytest.mark.parametrize("obj,words", [
    ([1], "not a JSON object"), ({"schemaVersion": 2}, "schemaVersion 2"), ({"schemaVersion": 1}, "missing"),
])
def test_foreign_records_are_named(obj, words):
    assert words in record_problem(obj)


def test_a_streamed_answer_is_put_back_together():
    chat = StreamedAnswer("chat")
    for chunk in ({"choices": [{"index": 0, "delta": {"content": "he"}}]},
                  {"choices": [{"index": 0, "delta": {"content": "llo"}}]},
                  {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {
                      "name": "get", "arguments": "{\"a\""}}]}}]},
                  {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
                                "finish_reason": "tool_calls"}]},
                  {"choices": [], "usage": {"prompt_tokens": 3}}):
        chat.feed(chunk)
    assert chat.part() == {"text": "hello", "toolCalls": [{"name": "get", "arguments": "{\"a\": 1}"}],
                           "finishReason": "tool_calls"}
    text = StreamedAnswer("completions")
    text.feed({"choices": [{"index": 0, "text": "AB"}]})
    text.feed({"choices": [{"index": 0, "text": "C", "finish_reason": "length"}]})
    assert text.part() == {"text": "ABC", "toolCalls": [], "finishReason": "length"}


def test_objects_are_partitioned_by_route_and_date():
    key = object_key("captures/a", "team/json", datetime(2026, 12, 2, 23, 59, tzinfo=UTC), "235900-x")
    assert key == "captures/a/route=team%2Fjson/date=2026-12-02/235900-x.jsonl.gz"
    assert partition_of(key) == ("team/json", "2026-12-02")
    assert object_key("", "json", datetime(2026, 1, 1, tzinfo=UTC), "n").startswith("route=json/")


def test_the_caller_id_secret_reaches_the_ray_pods():
    from operators.render import render_rayservice
    from operators.settings import OperatorSettings

    spec = _spec({**CAPTURE, "callerIdSecret": {"name": "capture", "key": "hmac"}})
    rs = render_rayservice(spec, name="f", namespace="ns", settings=OperatorSettings())
    env = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "SLMFLEET_SECRET_CAPTURE_HMAC", "valueFrom": {"secretKeyRef": {"name": "capture", "key": "hmac"}}} \
        in env
    assert spec.capture.key_variable == "SLMFLEET_SECRET_CAPTURE_HMAC"
    assert _spec(CAPTURE).capture.key_variable == "SLMFLEET_CAPTURE_SECRET"
