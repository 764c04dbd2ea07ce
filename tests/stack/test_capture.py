"""Traffic capture on the real stack: records reach S3 redacted, none lost below the queue bound.

The writer's own behaviour (queue bound, a failed redaction, flush on close) is tested against the
local S3 alone; the router's against the running fleet, with capture turned on by redeploying it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import gzip
import json
import uuid

import boto3
import pytest

from serving.adapters.store import s3_client
from serving.api.capture import CaptureSpec
from serving.flywheel.records import CaptureStore, ReadStats
from serving.observability.capture import CaptureWriter
from serving.policy.capture import AnsweredBy, caller_id, caller_of, forget_ids, record
from tests.stack.conftest import BUCKET, CAPTURE_SECRET
from tests.stack.test_telemetry import ray, scrape, value
from tests.waiting import eventually

# Planted values, none of them a recognizer's own example.
EMAIL, PHONE, CARD = "rosalind.achterberg@fenwick-mail.org", "(415) 555-0173", "4000 0566 5566 5556"
IBAN, IP, SSN = "NL91 ABNA 0417 1643 00", "198.51.100.42", "212-67-4011"
PLANTED = (EMAIL, PHONE, CARD, IBAN, IP, SSN, "555-0173", "0417 1643")


def raw_objects(prefix: str) -> list[bytes]:
    s3 = boto3.client("s3")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
            for o in page.get("Contents", [])]
    return [gzip.decompress(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()) for k in keys]


def _record(route="r", text="hello", caller=None):
    return record(route=route, policy="split", call="chat", request={"messages": [{"role": "user", "content": text}]},
                  answer={"text": "ok", "toolCalls": [], "finishReason": "stop"}, answered_by=AnsweredBy("b"),
                  status=200, input_tokens=1, output_tokens=1, latency_s=0.01, caller=caller)


def test_writer_drops_beyond_its_queue_and_never_writes_an_unredacted_record(s3):
    prefix = f"writer-{uuid.uuid4().hex[:8]}"
    counts = []

    def redact(rec):
        if "fail" in rec["request"]["messages"][0]["content"]:
            raise RuntimeError("analyzer broke")
        return {**rec, "redacted": True}

    spec = CaptureSpec(destination=f"s3://{BUCKET}/{prefix}", queue_size=5, batch_size=100, flush_interval="10s")
    writer = CaptureWriter(spec, lambda *c: counts.append(c), s3_factory=s3_client, redactor_factory=lambda _: redact)

    async def go():
        accepted = [writer.submit(_record(text="fail raw secret" if i == 2 else f"n{i}")) for i in range(8)]
        assert accepted == [True] * 5 + [False] * 3  # no await in between: the worker has not run yet
        await writer.close()
        assert not writer.submit(_record())  # after close: dropped, counted

    asyncio.run(go())
    assert sorted(counts) == sorted([("queue_full", "r", 1)] * 4 + [("redaction_failed", "r", 1), ("written", "r", 4)])
    [body] = raw_objects(prefix)
    lines = [json.loads(x) for x in body.splitlines()]
    assert [x["request"]["messages"][0]["content"] for x in lines] == ["n0", "n1", "n3", "n4"]
    assert b"raw secret" not in body


def test_records_read_back_skipping_foreign_objects_and_forget_one_caller(s3):
    prefix = f"read-{uuid.uuid4().hex[:8]}"
    src = f"s3://{BUCKET}/{prefix}"
    secret = b"k"
    writer = CaptureWriter(CaptureSpec(destination=src), lambda *c: None, s3_factory=s3_client,
                           redactor_factory=lambda _: dict)

    async def go():
        for i in range(6):
            writer.submit(_record(route="a" if i % 2 else "b/c", text=f"t{i}",
                                  caller=caller_id(secret, caller_of("ann" if i < 2 else "bob", None))))
        await writer.close()

    asyncio.run(go())
    client = boto3.client("s3")
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/route=a/date=2026-01-01/x.jsonl.gz",
                      Body=gzip.compress(b'{"schemaVersion": 9}\nnot json\n'))
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/README.txt", Body=b"hi")
    store, stats = CaptureStore(), ReadStats()
    records = list(store.read(src, stats=stats))
    assert len(records) == 6 and stats.records == 6
    assert dict(stats.skipped) == {"objects that are not .jsonl.gz": 1, "lines that are not JSON": 1,
                                   "foreign records (schemaVersion 9)": 1}
    assert {r["request"]["messages"][0]["content"] for r in store.read(src, route="b/c")} == {"t0", "t2", "t4"}
    assert store.forget(src, forget_ids(secret, "ann")) == (2, 2)
    assert sorted(r["request"]["messages"][0]["content"] for r in store.read(src)) == ["t2", "t3", "t4", "t5"]
    assert store.prune(src, 30 * 86400) == 1  # the 2026-01-01 object; today's are kept
    assert len(list(store.read(src))) == 4


@pytest.fixture
def capturing(fleet):
    """Redeploy the test fleet with capture on (every route, sample rate 1) under a fresh prefix."""
    deployed = []

    def deploy(**capture):
        prefix = f"captures-{uuid.uuid4().hex[:8]}"
        spec = copy.deepcopy(fleet.spec_data)
        spec["capture"] = {"destination": f"s3://{BUCKET}/{prefix}", "sampleRate": 1, "flushInterval": "1s",
                           **capture}
        spec["routes"].append({"name": "cap-cascade", "policy": "cascade", "tiers": [
            {"adapter": "shout", "version": "v1", "checks": {"regex": r"^\s*[a-z ]+\s*$"}},
            {"baseModel": "tiny-llama"}]})
        fleet.deploy(spec)
        deployed.append(prefix)
        return f"s3://{BUCKET}/{prefix}"

    yield deploy
    if deployed:
        fleet.deploy(fleet.spec_data)


def _tool_turn():
    send = {"type": "function", "function": {"name": "send_mail", "description": "send an e-mail", "parameters": {
        "type": "object", "properties": {"to": {"type": "string"}, "area": {"type": "string"},
                                         "number": {"type": "string"}}, "required": ["to"]}}}
    return {"model": "tools", "max_tokens": 24, "tools": [send], "user": "agent-7", "messages": [
        {"role": "user", "content": f"mail {EMAIL} and text {PHONE}"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "send_mail", "arguments": json.dumps({"to": EMAIL, "area": "(415)", "number": "555-0173"})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": f"sent; card {CARD} billed, iban {IBAN}"},
        {"role": "user", "content": f"log it from {IP}, ssn {SSN}"}]}


def test_the_router_captures_redacted_records_of_every_policy(capturing, client):
    src = capturing()
    sent = [
        ("/v1/chat/completions", _tool_turn(), {}),
        ("/v1/completions", {"model": "shout", "prompt": f"in: red fox {EMAIL}\nout:", "max_tokens": 8}, {}),
        ("/v1/chat/completions", {"model": "json", "stream": True, "max_tokens": 8,
                                  "messages": [{"role": "user", "content": "blue moon"}]}, {}),
        ("/v1/completions", {"model": "cap-cascade", "prompt": "in: red fox\nout:", "max_tokens": 6},
         {"Authorization": "Bearer sk-live-123"}),
    ]
    for path, body, headers in sent:
        resp = client.post(path, json=body, headers=headers)
        assert resp.status_code == 200, resp.text
    records = eventually(lambda: (r := list(CaptureStore().read(src))) and len(r) >= len(sent) and r,
                         timeout=90, message="captured records in S3")
    assert len(records) == len(sent)
    by_route = {r["route"]: r for r in records}
    tools, shout, stream, cascade = (by_route[n] for n in ("tools", "shout", "json", "cap-cascade"))

    assert tools["policy"] == "split" and tools["answeredBy"]["adapter"] == "tools" and tools["redacted"]
    assert tools["callerId"] == caller_id(CAPTURE_SECRET.encode(), "user:agent-7")
    args = json.loads(tools["request"]["messages"][1]["tool_calls"][0]["function"]["arguments"])
    assert args == {"to": "<EMAIL_ADDRESS>", "area": "<PHONE_NUMBER>", "number": "<PHONE_NUMBER>"}
    assert tools["request"]["tools"][0]["function"]["name"] == "send_mail"
    assert shout["request"]["prompt"] == "in: red fox <EMAIL_ADDRESS>\nout:" and shout["answer"]["text"]
    assert stream["answer"]["text"] and stream["tokens"]["output"] > 0 and stream["call"] == "chat"
    assert cascade["policy"] == "cascade" and cascade["escalated"] and cascade["answeredBy"]["tier"] == 2
    assert cascade["escalations"][0]["tier"] == 1 and cascade["answeredBy"]["baseModel"] == "tiny-llama"
    assert cascade["answeredBy"]["lastTier"] is True
    assert cascade["callerId"] == caller_id(CAPTURE_SECRET.encode(), "key:sk-live-123")

    raw = b"".join(raw_objects(src.split("/", 3)[3]))
    leaked = [v for v in PLANTED if v.encode() in raw]
    assert not leaked, f"planted values found in S3: {leaked}"
    assert b"sk-live-123" not in raw and b"agent-7" not in raw and b"authorization" not in raw.lower()


def test_capture_never_slows_a_request_it_drops_and_counts_beyond_its_queue(capturing, fleet, client):
    src = capturing(queueSize=2, batchSize=2)
    before = scrape(fleet)
    n = 40
    body = {"model": "echo", "prompt": "in: red fox\nout:", "max_tokens": 4}

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: client.post("/v1/completions", json=body).status_code, range(n)))
    assert statuses == [200] * n  # a full queue fails no request

    def settled():
        now = scrape(fleet)
        written = value(now, ray("slmfleet_capture_records_total"), route="echo") - value(
            before, ray("slmfleet_capture_records_total"), route="echo")
        dropped = value(now, ray("slmfleet_capture_dropped_total"), route="echo", reason="queue_full") - value(
            before, ray("slmfleet_capture_dropped_total"), route="echo", reason="queue_full")
        assert written + dropped == n, (written, dropped)
        return written, dropped

    written, dropped = eventually(settled, timeout=30, message="every record written or counted as dropped")
    assert dropped > 0
    assert len(list(CaptureStore().read(src, route="echo"))) == written
