"""Faults survived on the real stack: deadlines, disconnects, overload, an S3 outage, a killed engine, a killed
replica under load.

The module's fleet is the test fleet plus ``plain`` (the base ``tiny-plain`` alone, whose engine and replicas the
tests kill) and ``cold`` (an adapter version pushed but never asked for until S3 is gone). Everything is changed
in place and put back at the end.
"""

from __future__ import annotations

import concurrent.futures
import copy
import os
import signal
import threading
import time

import httpx
import openai
import pytest

from load_tests.bench.faults import engine_processes, replica_pids
from serving.adapters.store import AdapterStore
from serving.render.serve_config import base_deployment_name
from tests.stack.conftest import BUCKET
from tests.stack.test_load import run_locust, stats
from tests.waiting import eventually

PLAIN = base_deployment_name("tiny-plain")

LONG = {"max_tokens": 200, "min_tokens": 200, "temperature": 0}
"""A generation of 200 tokens whatever the model says (vLLM's min_tokens): seconds on the CPU."""
LONGEST = {**LONG, "max_tokens": 240, "min_tokens": 240}
"""As long as the fleet's context (maxModelLen 256) allows: 200 tokens once streamed within 1 s on an idle engine."""


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
    return fleet.counter("slmfleet_engine_cancelled_total")


def test_a_deadline_is_a_504_and_stops_the_generation(faults, client):
    before = cancelled_total(faults)
    body = {"model": "shout", "prompt": "in: red fox\nout:", **LONG}
    started = time.monotonic()
    resp = client.post("/v1/completions", json=body, headers={"X-SLMFleet-Timeout": "0.5"})
    assert resp.status_code == 504 and time.monotonic() - started < 5, resp.text
    assert resp.json()["error"]["code"] == "deadline_exceeded"
    with client.stream("POST", "/v1/completions", json={**body, **LONGEST, "stream": True},
                       headers={"X-SLMFleet-Timeout": "0.75"}) as stream:
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


def test_a_killed_engine_is_a_503_until_its_replica_is_replaced(faults, client):
    ask = lambda: client.post("/v1/completions", json={  # noqa: E731
        "model": "plain", "prompt": "in: red fox\nout:", "max_tokens": 4})
    assert ask().status_code == 200
    [pid] = replica_pids(PLAIN)
    sdk = openai.OpenAI(base_url=f"{faults.url}/v1", api_key="unused", max_retries=0, timeout=120)
    stream = iter(sdk.completions.create(model="plain", prompt="in: red fox\nout:", stream=True, max_tokens=200,
                                         temperature=0, extra_body={"min_tokens": 200}))
    next(stream)  # generating, then its engine dies
    engines = engine_processes(pid)
    assert engines, f"no vLLM engine process under replica {pid}"
    for engine in engines:
        engine.kill()
    with pytest.raises(openai.APIError):  # the cut stream ends with an error event, which the SDK raises
        for _ in stream:
            pass

    def not_ready() -> bool:
        r = client.get("/readyz")
        return r.status_code == 503 and "unhealthy" in r.json()["baseModels"]["tiny-plain"]

    eventually(not_ready, timeout=60, message="/readyz did not name tiny-plain while its engine was dead")
    seen = []

    def replaced() -> bool:
        r = ask()
        seen.append(r.status_code)
        if r.status_code == 503:
            assert r.headers.get("retry-after") and r.json()["error"]["type"] in ("engine_unavailable", "overloaded")
        return r.status_code == 200 and bool(set(replica_pids(PLAIN)) - {pid})

    eventually(replaced, timeout=400, interval=1, message="the dead engine's replica was not replaced")
    assert set(seen) <= {200, 503}, seen
    assert 503 in seen  # answered, not hung, while it was down
    eventually(lambda: client.get("/readyz").status_code == 200, timeout=60)


def test_a_killed_replica_under_load_loses_no_request(faults, tmp_path):
    faults.deploy(faults_spec(faults, minReplicas=2, maxReplicas=2))
    try:
        eventually(lambda: len(replica_pids(PLAIN)) == 2, timeout=400, interval=2,
                   message="tiny-plain did not get its second replica")
        with httpx.Client(base_url=faults.url, timeout=120) as c:
            eventually(lambda: all(c.post("/v1/completions", json={"model": "plain", "prompt": "red", "max_tokens": 2})
                                   .status_code == 200 for _ in range(4)), timeout=120)
        retries = faults.counter("slmfleet_dispatch_retries_total")
        placed_away = faults.counter("slmfleet_placements_total", retried="true")
        done = {}
        load = threading.Thread(target=lambda: done.update(run=run_locust(
            "locustfile.py", faults.url, tmp_path, seconds=30, users=4,
            env={"SLMFLEET_ROUTES": "plain", "SLMFLEET_CHAT_RATIO": "0", "SLMFLEET_STREAM_RATIO": "0"})))
        load.start()
        time.sleep(10)
        os.kill(replica_pids(PLAIN)[0], signal.SIGKILL)
        load.join()
        rows = stats(tmp_path)
        assert done["run"].returncode == 0 and not any(r["failures"] for r in rows.values()), (
            rows, done["run"].stderr[-3000:])
        assert sum(r["requests"] for r in rows.values()) > 20, rows
        # The requests in flight on the killed replica were sent again, once each, and counted.
        eventually(lambda: faults.counter("slmfleet_dispatch_retries_total") > retries, timeout=20,
                   message="no request was retried: was any in flight on the killed replica?")
        # Each retry was placed away from the replica of its first try.
        eventually(lambda: faults.counter("slmfleet_placements_total", retried="true") > placed_away, timeout=20,
                   message="the retries did not reach the placement router with their first try's replica")
    finally:
        faults.deploy(faults_spec(faults))
