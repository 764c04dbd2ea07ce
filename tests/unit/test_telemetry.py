"""Request metrics and spans, in-process: a fake recorder and OpenTelemetry's in-memory exporter."""

from __future__ import annotations

import asyncio
import functools
import json
import types
from collections import defaultdict

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.responses import JSONResponse, StreamingResponse

from serving.api import headers as h
from serving.observability import tracing
from serving.observability.metrics import CATALOG
from serving.observability.telemetry import (
    RequestTelemetry,
    is_usage_only,
    sse_events,
    usage_of,
)
from serving.policy.routing import Target


class FakeRecorder:
    def __init__(self):
        self.values = defaultdict(float)
        self.observed = defaultdict(list)

    def inc(self, name, value=1, **labels):
        self.values[(name, tuple(sorted(labels.items())))] += value

    def observe(self, name, value, **labels):
        self.observed[(name, tuple(sorted(labels.items())))].append(value)

    def get(self, name, **labels):
        return self.values[(name, tuple(sorted(labels.items())))]

    def count(self, name, **labels):
        return len(self.observed[(name, tuple(sorted(labels.items())))])


SHOUT = {"route": "shout", "base_model": "tiny-llama", "adapter": "shout", "version": "v1", "traffic": "live"}


@pytest.fixture
def spans(monkeypatch):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_provider", provider)
    return exporter


def telemetry(recorder, **kw):
    t = RequestTelemetry(recorder, route="shout", call_method="chat", stream=kw.pop("stream", False), **kw)
    t.target(Target("tiny-llama", "shout", "v1"))
    return t


def test_catalog_names_and_labels_are_bounded():
    for m in CATALOG:
        assert m.name.startswith("slmfleet_"), m.name
        assert m.name.endswith("_total") == (m.kind == "counter"), m.name
        assert not {"user", "session", "request_id", "prompt", "model_id"} & set(m.labels), m.name
        assert m.kind != "histogram" or list(m.buckets) == sorted(m.buckets)
        assert m.recorded_by in ("router", "engine", "placement"), m.name


@pytest.mark.parametrize("chunk,events", [
    ('data: {"a": 1}\n\n', ['{"a": 1}']),
    (b'data: {"a": 1}\n\ndata: [DONE]\n\n', ['{"a": 1}', "[DONE]"]),
    (": keep-alive\n\n", []),
])
def test_sse_events(chunk, events):
    assert sse_events(chunk) == events


@pytest.mark.parametrize("event,usage_only", [
    ('{"choices": [], "usage": {"prompt_tokens": 3}}', True),
    ('{"choices": [{"text": "x"}], "usage": null}', False),
    ('{"choices": [{"text": "x"}], "usage": {"prompt_tokens": 3}}', False),
    ("[DONE]", False),
    ("{not json", False),
])
def test_is_usage_only(event, usage_only):
    assert is_usage_only(event) is usage_only


def test_usage_of():
    assert usage_of({"usage": {"prompt_tokens": 5, "completion_tokens": 7}}) == (5, 7)
    assert usage_of({"usage": None}) is None and usage_of([]) is None


def test_an_answered_request_records_tokens_latency_and_its_span(spans):
    rec = FakeRecorder()
    t = telemetry(rec)
    body = {"choices": [{"message": {"content": "HI"}}], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
    t.answered(JSONResponse(body), client_wants_usage=False)
    assert rec.get("slmfleet_requests_total", status="200", **SHOUT) == 1
    assert (rec.get("slmfleet_input_tokens_total", **SHOUT), rec.get("slmfleet_output_tokens_total", **SHOUT)) == (5, 2)
    assert rec.count("slmfleet_request_duration_seconds", **SHOUT) == 1
    assert rec.count("slmfleet_time_to_first_token_seconds", **SHOUT) == 1
    (span,) = spans.get_finished_spans()
    assert span.name == "slmfleet.router" and span.attributes["slmfleet.outcome"] == "ok"
    assert span.attributes["gen_ai.usage.output_tokens"] == 2 and span.attributes["slmfleet.adapter"] == "shout"


def test_an_error_is_counted_by_type_without_latency(spans):
    rec = FakeRecorder()
    t = telemetry(rec)
    t.answered(JSONResponse({"error": {"type": "adapter_unavailable", "message": "x"}}, status_code=503),
               client_wants_usage=False)
    assert rec.get("slmfleet_requests_total", status="503", **SHOUT) == 1
    assert rec.get("slmfleet_request_errors_total", error_type="adapter_unavailable", **SHOUT) == 1
    assert rec.count("slmfleet_request_duration_seconds", **SHOUT) == 0
    (span,) = spans.get_finished_spans()
    assert span.status.status_code.name == "ERROR" and span.attributes["slmfleet.outcome"] == "adapter_unavailable"


def test_an_unknown_route_is_not_a_label(spans):
    rec = FakeRecorder()
    t = RequestTelemetry(rec, route="made-up-by-a-client", call_method="chat", stream=False)
    t.unknown_route()
    t.answered(JSONResponse({"error": {"type": "invalid_request_error"}}, status_code=404), client_wants_usage=False)
    assert rec.get("slmfleet_requests_total", route="", base_model="", adapter="", version="", traffic="live",
                   status="404") == 1


async def _drain(response):
    return [c async for c in response.body_iterator]


def _stream(*chunks):
    async def gen():
        for c in chunks:
            yield c
    return StreamingResponse(gen(), media_type="text/event-stream")


USAGE = json.dumps({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 3}})
TOKEN = json.dumps({"choices": [{"delta": {"content": "A"}}], "usage": None})


@pytest.mark.parametrize("wants_usage", [False, True])
def test_a_stream_finishes_at_its_end_and_hides_usage_unless_asked(spans, wants_usage):
    rec = FakeRecorder()
    t = telemetry(rec, stream=True)
    response = t.answered(_stream(f"data: {TOKEN}\n\n", f"data: {TOKEN}\n\ndata: {USAGE}\n\n", "data: [DONE]\n\n"),
                          client_wants_usage=wants_usage)
    assert rec.get("slmfleet_requests_total", status="200", **SHOUT) == 0  # not before the stream ends
    chunks = asyncio.run(_drain(response))
    events = [e for c in chunks for e in sse_events(c)]
    assert (USAGE in events) is wants_usage and events[-1] == "[DONE]" and events.count(TOKEN) == 2
    assert rec.get("slmfleet_requests_total", status="200", **SHOUT) == 1
    assert rec.get("slmfleet_output_tokens_total", **SHOUT) == 3
    assert spans.get_finished_spans()[0].attributes["slmfleet.stream"] is True


def test_a_stream_that_breaks_is_an_error(spans):
    rec = FakeRecorder()

    async def broken():
        yield f"data: {TOKEN}\n\n"
        raise ConnectionError("engine died")

    t = telemetry(rec, stream=True)
    response = t.answered(StreamingResponse(broken()), client_wants_usage=False)
    with pytest.raises(ConnectionError):
        asyncio.run(_drain(response))
    assert rec.get("slmfleet_request_errors_total", error_type="stream_interrupted", **SHOUT) == 1


def test_the_span_tree_crosses_the_replica_hop(spans):
    """router → base_model → engine, joined by the traceparent the router puts in the forwarded headers."""
    from opentelemetry import trace

    from serving.dataplane.base_model import _traced_engine_call

    t = telemetry(FakeRecorder())
    headers = t.dispatch_headers()
    assert h.DISPATCHED_AT in headers and headers["traceparent"].startswith("00-")
    base = tracing.tracer().start_span("slmfleet.base_model", context=tracing.extract(headers))

    async def engine_output():
        yield "chunk"

    async def run():
        return [c async for c in _traced_engine_call(engine_output(), base, "tiny-llama:shout@v1")]

    assert asyncio.run(run()) == ["chunk"]
    t.answered(JSONResponse({"choices": [], "usage": None}), client_wants_usage=False)
    by_name = {s.name: s for s in spans.get_finished_spans()}
    router, base_span, engine = by_name["slmfleet.router"], by_name["slmfleet.base_model"], by_name["slmfleet.engine"]
    assert len({router.context.trace_id, base_span.context.trace_id, engine.context.trace_id}) == 1
    assert base_span.parent.span_id == router.context.span_id
    assert engine.parent.span_id == base_span.context.span_id
    assert router.kind == trace.SpanKind.SERVER


@pytest.mark.parametrize("env,on", [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
])
def test_tracing_is_off_unless_an_otlp_endpoint_is_set(env, on):
    assert tracing.enabled(env) is on


class _Wrapper:
    def __init__(self, ids):
        from collections import OrderedDict

        self.models = OrderedDict((i, object()) for i in ids)


def test_residency_and_evictions_follow_ray_serve_multiplexing():
    from serving.api.fleet import BaseModelSpec
    from serving.dataplane.base_model import FleetLLMServer

    class Recorder(FakeRecorder):
        def set(self, name, value, **labels):
            self.values[(name, tuple(sorted(labels.items())))] = value

    # The methods alone, on a stand-in replica: no engine needed. Ray Serve keeps its LRU on the
    # loader function that serve.multiplexed decorated (reached through __wrapped__).
    def loader(model_id):
        pass

    server = types.SimpleNamespace(base=BaseModelSpec(name="tiny-llama", source="s3://models/tiny"), metrics=Recorder(),
                                   _resident=set(), _load_model=functools.wraps(loader)(lambda m: m))
    server.resident_model_ids = functools.partial(FleetLLMServer.resident_model_ids, server)
    note = functools.partial(FleetLLMServer.note_residency, server)
    wrapper_attr = "__serve_multiplex_wrapper"
    setattr(loader, wrapper_attr, _Wrapper([]))
    note(loading="tiny-llama:a@v1")
    setattr(loader, wrapper_attr, _Wrapper(["tiny-llama:a@v1"]))
    note(loading="tiny-llama:b@v1")
    assert server.metrics.get("slmfleet_adapters_resident", base_model="tiny-llama") == 2
    setattr(loader, wrapper_attr, _Wrapper(["tiny-llama:b@v1"]))  # Ray Serve evicted a@v1 (LRU)
    note(loading="tiny-llama:c@v2")
    evicted = {"base_model": "tiny-llama", "adapter": "a", "version": "v1"}
    assert server.metrics.get("slmfleet_adapter_evictions_total", **evicted) == 1
    assert server.metrics.get("slmfleet_adapters_resident", base_model="tiny-llama") == 2
