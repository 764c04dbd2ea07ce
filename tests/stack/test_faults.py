"""Faults survived on the real stack: deadlines, disconnects, overload, an S3 outage.

The module's fleet is the test fleet plus ``plain`` (the base ``tiny-plain`` alone, whose engine and replicas the
tests kill) and ``cold`` (an adapter version pushed but never asked for until S3 is gone). Everything is changed
in place and put back at the end.
"""

from __future__ import annotations

import concurrent.futures
import copy
import re
import time

import httpx
import pytest

from serving.adapters.store import AdapterStore
from tests.stack.conftest import BUCKET
from tests.waiting import eventually

LONG = {"max_tokens": 200, "min_tokens": 200, "temperature": 0}
"""A generation of 200 tokens whatever the model says (vLLM's min_tokens): seconds on the CPU."""


def faults_spec(fleet, **plain_autoscaling) -> dict:
    spec = copy.deepcopy(fleet.spec_data)
    spec["adapters"].append({"name": "cold", "baseModel": "tiny-llama",
                             "versions": [{"version": "v1", "source": f"s3://{BUCKET}/adapters/cold/v1"}]})
    spec["routes"] += [{"name": "plain", "targets": [{"baseModel": "tiny-plain"}]},
                       {"name": "cold", "targets": [{"adapter": "cold", "version": "v1"}]}]
    plain = next(b for b in spec["baseModels"] if b["name"] == "tiny-plain")
    plain["autoscaling"] = {**plain.get("autoscaling", {}), **plain_autoscaling}
    return spec


@pytest.fixture(scope="module")
def faults(fleet, assets):
    AdapterStore().push(assets["adapters"]["reverse"], adapter="cold", version="v1", to=f"s3://{BUCKET}/adapters")
    fleet.deploy(faults_spec(fleet))
    yield fleet
    fleet.deploy(fleet.spec_data)


def cancelled_total(fleet) -> float:
    text = httpx.get(fleet.metrics_url, timeout=10).text
    return sum(float(m) for m in re.findall(r'^ray_slmfleet_engine_cancelled_total\{[^}]*\} ([0-9.e+]+)$', text, re.M))


def test_a_deadline_is_a_504_and_stops_the_generation(faults, client):
    before = cancelled_total(faults)
    body = {"model": "shout", "prompt": "in: red fox\nout:", **LONG}
    started = time.monotonic()
    resp = client.post("/v1/completions", json=body, headers={"X-SLMFleet-Timeout": "0.5"})
    assert resp.status_code == 504 and time.monotonic() - started < 5, resp.text
    assert resp.json()["error"]["code"] == "deadline_exceeded"
    with client.stream("POST", "/v1/completions", json={**body, "stream": True},
                       headers={"X-SLMFleet-Timeout": "1"}) as stream:
        assert stream.status_code == 200
        events = [line for line in stream.iter_lines() if line.startswith("data:")]
    assert '"deadline_exceeded"' in events[-1] and "[DONE]" not in events[-1]
    bad = client.post("/v1/completions", json=body, headers={"X-SLMFleet-Timeout": "soon"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "X-SLMFleet-Timeout"
    eventually(lambda: cancelled_total(faults) >= before + 2, timeout=20,
               message="the replicas did not stop the generations past their deadline")


def test_a_client_that_disconnects_aborts_its_generation(faults):
    before = cancelled_total(faults)
    with httpx.Client(base_url=faults.url, timeout=60) as c, c.stream(
            "POST", "/v1/completions", json={"model": "shout", "prompt": "in: red fox\nout:", "stream": True,
                                             **LONG}) as stream:
        next(stream.iter_lines())  # the first chunk, then the client goes away
    eventually(lambda: cancelled_total(faults) >= before + 1, timeout=20,
               message="the replica went on generating for a client that had gone")


def test_every_replica_busy_and_the_queue_full_is_a_503_overloaded(faults, client):
    faults.deploy(faults_spec(faults, targetOngoingRequests=1, maxOngoingRequests=1, maxQueuedRequests=1))
    try:
        body = {"model": "plain", "prompt": "in: red fox\nout:", **LONG, "max_tokens": 60, "min_tokens": 60}
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: client.post("/v1/completions", json=body), range(6)))
        statuses = sorted(a.status_code for a in answers)
        assert set(statuses) == {200, 503}, statuses
        refused = next(a for a in answers if a.status_code == 503)
        assert refused.json()["error"]["type"] == "overloaded" and refused.headers["retry-after"] == "1"
    finally:
        faults.deploy(faults_spec(faults))


def test_an_s3_outage_keeps_resident_versions_serving_and_fails_cold_loads_fast(faults, client, s3_proxy):
    ask = lambda route: client.post("/v1/completions", json={  # noqa: E731
        "model": route, "prompt": "in: red fox\nout:", "max_tokens": 4})
    assert ask("shout").status_code == 200  # resident before the outage
    for mode in ("drop", "blackhole"):
        s3_proxy.set_mode(mode)
        try:
            assert [ask("shout").status_code for _ in range(3)] == [200] * 3, mode
            started = time.monotonic()
            cold = ask("cold")
            took = time.monotonic() - started
            assert cold.status_code == 503 and cold.json()["error"]["type"] == "adapter_unavailable", cold.text
            assert "cold" in cold.json()["error"]["message"] and took < 60, (mode, took, cold.text)
        finally:
            s3_proxy.set_mode("forward")
    eventually(lambda: ask("cold").status_code == 200, timeout=60, message="no cold load after S3 came back")
