"""Metrics and traces of real requests: the counters they move and the span tree they leave."""

from __future__ import annotations

import copy
import json
import secrets

import httpx
from prometheus_client.parser import text_string_to_metric_families

from serving.observability.metrics import BY_NAME
from tests.waiting import eventually


def scrape(fleet) -> list:
    text = httpx.get(fleet.metrics_url, timeout=10).text
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples, name: str, **labels) -> float:
    """Sum of the samples of ``name`` (Ray's export name) whose labels include ``labels``."""
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def ray(name: str, suffix: str = "") -> str:
    """The name Ray's exporter gives a catalog metric (the chart's PodMonitor strips ``ray_``)."""
    assert name in BY_NAME, name
    return "ray_" + name + suffix


def moved(fleet, before, checks, timeout=20):
    """Poll the metrics until every (name, labels, delta) check holds; replicas report every 0.5 s."""
    def check():
        now = scrape(fleet)
        missing = [(n, labels, want, value(now, n, **labels) - value(before, n, **labels))
                   for n, labels, want in checks if value(now, n, **labels) - value(before, n, **labels) != want]
        assert not missing, f"(name, labels, want, got): {missing}"
        return now

    return eventually(check, timeout=timeout, interval=0.5, message="metrics did not move as expected")


def chat(client, route, headers=None):
    return client.post("/v1/chat/completions", json={
        "model": route, "messages": [{"role": "user", "content": "red fox sun"}], "max_tokens": 8}, headers=headers)


def test_a_request_moves_its_route_and_version_counters(fleet, client):
    shout = {"route": "shout", "base_model": "tiny-llama", "adapter": "shout", "version": "v1", "traffic": "live"}
    before = scrape(fleet)
    r = chat(client, "shout")
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    moved(fleet, before, [
        (ray("slmfleet_requests_total"), {**shout, "status": "200"}, 1),
        (ray("slmfleet_input_tokens_total"), shout, usage["prompt_tokens"]),
        (ray("slmfleet_output_tokens_total"), shout, usage["completion_tokens"]),
        (ray("slmfleet_request_duration_seconds", "_count"), shout, 1),
        (ray("slmfleet_time_to_first_token_seconds", "_count"), shout, 1),
        (ray("slmfleet_router_queue_seconds", "_count"), {"base_model": "tiny-llama"}, 1),
        (ray("slmfleet_request_errors_total"), shout, 0),
    ])


def test_a_stream_counts_tokens_without_showing_the_usage_chunk(fleet, client):
    reverse = {"route": "reverse", "base_model": "tiny-llama", "adapter": "reverse", "version": "v1"}
    before = scrape(fleet)
    with client.stream("POST", "/v1/completions", json={
            "model": "reverse", "prompt": "red fox sun", "max_tokens": 6, "stream": True}) as r:
        assert r.status_code == 200
        events = [line[5:].strip() for line in r.iter_lines() if line.startswith("data:")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c.get("choices") for c in chunks) and not any(c.get("usage") for c in chunks)  # not asked for
    after = moved(fleet, before, [
        (ray("slmfleet_requests_total"), {**reverse, "status": "200"}, 1),
        (ray("slmfleet_time_to_first_token_seconds", "_count"), reverse, 1),
        (ray("slmfleet_request_duration_seconds", "_count"), reverse, 1),
    ])
    output_tokens = ray("slmfleet_output_tokens_total")
    generated = value(after, output_tokens, **reverse) - value(before, output_tokens, **reverse)
    assert 1 <= generated <= 6


def test_a_stream_that_asks_for_usage_gets_it(client):
    with client.stream("POST", "/v1/chat/completions", json={
            "model": "shout", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True,
            "stream_options": {"include_usage": True}}) as r:
        events = [line[5:].strip() for line in r.iter_lines() if line.startswith("data:")]
    assert json.loads(events[-2])["usage"]["completion_tokens"] >= 1


def test_errors_are_counted_by_type_with_bounded_labels(fleet, client):
    ghost = {"route": "ghost", "base_model": "tiny-llama", "adapter": "ghost", "version": "v1"}
    before = scrape(fleet)
    assert chat(client, "no-such-route-" + secrets.token_hex(4)).status_code == 404
    assert chat(client, "ghost").status_code == 503
    after = moved(fleet, before, [
        (ray("slmfleet_requests_total"), {"route": "", "status": "404"}, 1),
        (ray("slmfleet_request_errors_total"), {"route": "", "error_type": "invalid_request_error"}, 1),
        (ray("slmfleet_requests_total"), {**ghost, "status": "503"}, 1),
        (ray("slmfleet_request_errors_total"), {**ghost, "error_type": "adapter_unavailable"}, 1),
        (ray("slmfleet_adapter_loads_total"), {"adapter": "ghost", "version": "v1", "outcome": "failed"}, 1),
    ])
    routes = {s.labels.get("route") for s in after if s.name == ray("slmfleet_requests_total")}
    assert not any(r.startswith("no-such-route") for r in routes)  # client-made names are not labels


def test_a_cold_load_is_counted_and_timed_and_residency_exported(fleet, client):
    spec = copy.deepcopy(fleet.spec_data)
    shout = next(a for a in spec["adapters"] if a["name"] == "shout")
    shout["versions"].append({"version": "cold", "source": shout["versions"][0]["source"]})
    spec["routes"].append({"name": "cold", "targets": [{"adapter": "shout", "version": "cold"}]})
    fleet.deploy(spec)  # in place: a new catalog entry and route, no engine restart
    try:
        before = scrape(fleet)
        assert chat(client, "cold").status_code == 200
        assert chat(client, "cold").status_code == 200  # warm: no second load
        labels = {"base_model": "tiny-llama", "adapter": "shout", "version": "cold"}
        after = moved(fleet, before, [
            (ray("slmfleet_adapter_loads_total"), {**labels, "outcome": "loaded"}, 1),
            (ray("slmfleet_adapter_load_duration_seconds", "_count"), labels, 1),
        ])
        resident = [s for s in after
                    if s.name == ray("slmfleet_adapters_resident") and s.labels["base_model"] == "tiny-llama"]
        assert resident and all(s.labels.get("replica") for s in resident)
        assert max(s.value for s in resident) >= 1
    finally:
        fleet.deploy(fleet.spec_data)


def test_a_request_leaves_one_trace_router_to_engine(fleet, client, otlp):
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    r = chat(client, "json", headers={"traceparent": f"00-{trace_id}-{client_span}-01"})
    assert r.status_code == 200

    def three_spans():
        spans = otlp.trace(trace_id)
        assert len(spans) >= 3, f"spans so far: {[s.name for s in spans]}"
        return spans

    spans = {s.name: s for s in eventually(three_spans, timeout=20, interval=0.2, message="the trace is incomplete")}
    assert set(spans) == {"slmfleet.router", "slmfleet.base_model", "slmfleet.engine"}, spans
    router, base, engine = spans["slmfleet.router"], spans["slmfleet.base_model"], spans["slmfleet.engine"]
    assert router.parent_id == client_span and base.parent_id == router.span_id and engine.parent_id == base.span_id
    usage = r.json()["usage"]
    expected = {
        "slmfleet.route": "json", "slmfleet.adapter": "json", "slmfleet.version": "v1",
        "slmfleet.base_model": "tiny-llama", "slmfleet.outcome": "ok", "http.response.status_code": 200,
        "gen_ai.usage.input_tokens": usage["prompt_tokens"], "gen_ai.usage.output_tokens": usage["completion_tokens"],
    }
    assert {k: router.attributes.get(k) for k in expected} == expected
    assert base.attributes["slmfleet.model_id"] == "tiny-llama:json@v1"
    assert router.service == "slm-fleet-test" and not any(s.error for s in spans.values())
