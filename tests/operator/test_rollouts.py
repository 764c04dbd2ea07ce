"""Canary rollouts driven by the real operator through the Kubernetes API emulator.

The numbers come from a real Prometheus server scraping a metrics endpoint that stands in for the
fleet's Ray pods: ``Traffic`` reads the canary weight the operator rendered into the RayService
(as the router would) and counts requests to stable and canary in that proportion, in Ray's
``ray_slmfleet_*`` exposition, so the operator sees what it would on a cluster. The real router
and engines under a rollout are in tests/stack/test_rollout.py.
"""

from __future__ import annotations

import asyncio
import random
import threading

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from serving.local.ports import free_port
from tests.operator.conftest import FLEETS, RAYSERVICES, events, quickstart
from tests.stack.prometheus_server import Prometheus
from tests.waiting import eventually_async

LABELS = ("route", "base_model", "adapter", "version")


class FleetMetrics:
    """A metrics endpoint with the fleet's router metrics, as Ray's exporter names them."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("ray_slmfleet_requests", "", LABELS + ("status",), registry=self.registry)
        self.errors = Counter("ray_slmfleet_request_errors", "", LABELS + ("error_type",), registry=self.registry)
        self.duration = Histogram("ray_slmfleet_request_duration_seconds", "", LABELS, registry=self.registry,
                                  buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    def answered(self, version: str) -> float:
        """How many requests of route ``shout`` this ``version`` answered so far, failed ones included."""
        return sum(self.registry.get_sample_value("ray_slmfleet_requests_total", {
            "route": "shout", "base_model": "tiny-llama", "adapter": "shout", "version": version, "status": status,
        }) or 0 for status in ("200", "503"))

    def answer(self, version: str, *, error: str | None = None) -> None:
        labels = {"route": "shout", "base_model": "tiny-llama", "adapter": "shout", "version": version}
        if error:
            self.requests.labels(**labels, status="503").inc()
            self.errors.labels(**labels, error_type=error).inc()
        else:
            self.requests.labels(**labels, status="200").inc()
            self.duration.labels(**labels).observe(random.uniform(0.05, 0.2))


@pytest.fixture(scope="module")
def fleet_metrics():
    metrics = FleetMetrics()
    yield metrics
    metrics.server.shutdown()


@pytest.fixture(scope="module")
def prometheus(fleet_metrics, tmp_path_factory):
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), f"127.0.0.1:{fleet_metrics.port}")
    yield server.start()
    server.stop()


class Traffic:
    """Requests on route ``shout`` split as the RayService's routing config says, 50 a second."""

    def __init__(self, k8s_url: str, metrics: FleetMetrics, name: str, *, bad: str | None = None):
        self.url, self.metrics, self.name, self.bad = k8s_url, metrics, name, bad
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def weight(self, client: httpx.Client) -> tuple[str | None, int]:
        resp = client.get(f"{RAYSERVICES}/{self.name}")
        if resp.status_code != 200:
            return None, 0
        config = router_config(resp.json())
        route = next(r for r in config["fleet"]["routes"] if r["name"] == "shout")
        return route["strategy"]["canary"]["version"], config.get("canaryWeights", {}).get("shout", 0)

    def run(self):
        rng = random.Random(1)
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while not self.stop.wait(0.02):
                try:
                    canary, weight = self.weight(client)
                except httpx.HTTPError:  # the emulator is busy (an operator restarting): try again
                    continue
                if canary and rng.randrange(100) < weight:
                    self.metrics.answer(canary, error=self.bad)
                else:
                    self.metrics.answer("v1")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=10)


def router_config(rayservice: dict) -> dict:
    """The fleet router's user_config in a RayService's serveConfigV2: routes and canary weights."""
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]["deployments"][0]["user_config"]


@pytest.fixture
def operator_env(prometheus) -> dict[str, str]:
    return {"SLMFLEET_PROMETHEUS_URL": prometheus.url}


def canary_fleet(name: str, version: str, *, steps=(20, 60, 100), min_requests=5) -> dict:
    doc = quickstart(name)
    shout = doc["spec"]["adapters"][0]
    shout["versions"].append({"version": version, "source": f"s3://slmfleet-demo/adapters/shout/{version}"})
    doc["spec"]["routes"][0]["strategy"] = {"canary": {
        "version": version, "steps": list(steps), "interval": "2s",
        "analysis": {"minRequests": min_requests, "maxErrorRate": 0.05, "maxP95Ratio": 3}}}
    return doc


async def rollout(api, name: str) -> dict | None:
    resp = await api.get(f"{FLEETS}/{name}")
    rollouts = resp.json().get("status", {}).get("rollouts") if resp.status_code == 200 else None
    return rollouts[0] if rollouts else None


async def canary_weight(api, name: str) -> int | None:
    resp = await api.get(f"{RAYSERVICES}/{name}")
    return router_config(resp.json())["canaryWeights"]["shout"] if resp.status_code == 200 else None


async def test_a_good_canary_is_promoted_across_an_operator_restart(operator, api, k8s, fleet_metrics):
    assert (await api.post(FLEETS, json=canary_fleet("good", "v2"))).status_code in (200, 201)
    with Traffic(str(k8s.url), fleet_metrics, "good"):
        first = await eventually_async(lambda: rollout(api, "good"), timeout=20)
        assert (first["phase"], first["step"], first["weight"], first["canary"]) == ("Progressing", 1, 20, "shout@v2")
        assert await eventually_async(lambda: _is(canary_weight(api, "good"), 20))

        # Restart in the middle: the rollout goes on from its status, not from the first step.
        at_two = await eventually_async(lambda: _where(rollout(api, "good"), lambda r: r["step"] == 2), timeout=30)
        await operator.stop()
        # While it is down, traffic goes on at step 2's weight: the restarted operator counts it.
        down = fleet_metrics.answered("v2")
        await eventually_async(lambda: fleet_metrics.answered("v2") >= down + 20, message="no traffic while down")
        operator.start()
        done = await eventually_async(lambda: _where(rollout(api, "good"), lambda r: r["phase"] == "Promoted"),
                                      timeout=45)

    assert [(h["phase"], h["step"], h["weight"]) for h in done["history"]] == [
        ("Progressing", 1, 20), ("Progressing", 2, 60), ("Progressing", 3, 100), ("Promoted", 3, 100)]
    assert done["history"][1] == at_two["history"][1]  # not restarted: the same transition, kept
    assert done["stepsPassed"] == 3 and "all steps passed" in done["reason"]
    assert done["analysis"]["requests"] >= 5 and done["analysis"]["errors"] == 0
    assert await canary_weight(api, "good") == 100
    fleet = (await api.get(f"{FLEETS}/good")).json()
    assert (fleet["status"]["rolloutPhase"], fleet["status"]["canary"]) == ("Promoted", "shout@v2=100%")
    assert await events(api, "RolloutPromoted")


async def test_an_erroring_canary_is_rolled_back(operator, api, k8s, fleet_metrics):
    assert (await api.post(FLEETS, json=canary_fleet("bad", "v3"))).status_code in (200, 201)
    with Traffic(str(k8s.url), fleet_metrics, "bad", bad="internal_error"):
        done = await eventually_async(lambda: _where(rollout(api, "bad"), lambda r: r["phase"] == "RolledBack"),
                                      timeout=30)
    assert done["step"] == 1 and done["weight"] == 0 and "error rate 100.0% > 5.0%" in done["reason"]
    assert await canary_weight(api, "bad") == 0
    rolled_back = await events(api, "RolloutRolledBack")
    assert rolled_back[0]["type"] == "Warning"


async def test_a_canary_that_cannot_load_fails_at_its_first_step(operator, api, k8s, fleet_metrics):
    assert (await api.post(FLEETS, json=canary_fleet("ghost", "v4"))).status_code in (200, 201)
    with Traffic(str(k8s.url), fleet_metrics, "ghost", bad="adapter_unavailable"):
        done = await eventually_async(lambda: _where(rollout(api, "ghost"), lambda r: r["phase"] == "Failed"),
                                      timeout=30)
    assert done["step"] == 1 and done["weight"] == 0 and "cannot load" in done["reason"]
    assert [h["weight"] for h in done["history"]] == [20, 0]  # never past the first step's share


async def test_commands_from_the_annotation_and_the_cli(operator, api, k8s, capsys):
    # No traffic at all: the first step waits for requests; commands still apply.
    assert (await api.post(FLEETS, json=canary_fleet("held", "v2"))).status_code in (200, 201)
    await eventually_async(lambda: rollout(api, "held"), timeout=20)

    async def annotate(value):
        resp = await api.patch(f"{FLEETS}/held", json={"metadata": {"annotations": {"slmfleet.io/rollout": value}}},
                               headers={"content-type": "application/merge-patch+json"})
        assert resp.status_code == 200, resp.text

    async def annotation_gone():
        fleet = (await api.get(f"{FLEETS}/held")).json()
        return "slmfleet.io/rollout" not in (fleet["metadata"].get("annotations") or {})

    await annotate("pause shout")
    paused = await eventually_async(lambda: _where(rollout(api, "held"), lambda r: r["phase"] == "Paused"))
    assert paused["weight"] == 20
    await eventually_async(annotation_gone)

    await annotate("launch shout")
    await events(api, "InvalidRolloutCommand")
    await eventually_async(annotation_gone)
    assert (await rollout(api, "held"))["phase"] == "Paused"  # nothing changed

    # `slm-fleet rollout` on Kubernetes: status from the fleet, a command as the annotation.
    from serving.cli.main import main

    assert await asyncio.to_thread(main, ["rollout", "status", "--fleet", "held"]) == 0
    assert "shout  shout@v2  shout@v1  Paused" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["rollout", "abort", "--fleet", "held"]) == 0
    assert "slmfleet.io/rollout='abort'" in capsys.readouterr().out
    aborted = await eventually_async(lambda: _where(rollout(api, "held"), lambda r: r["phase"] == "RolledBack"))
    assert aborted["reason"] == "aborted" and await canary_weight(api, "held") == 0
    assert await asyncio.to_thread(main, ["rollout", "pause", "--fleet", "nope"]) == 1
    assert "ModelFleet default/nope not found" in capsys.readouterr().err


@pytest.mark.parametrize("operator_env", [{}])  # no SLMFLEET_PROMETHEUS_URL
async def test_without_prometheus_a_rollout_waits_and_says_why(operator, api):
    assert (await api.post(FLEETS, json=canary_fleet("blind", "v2"))).status_code in (200, 201)
    r = await eventually_async(lambda: _where(rollout(api, "blind"), lambda r: "Prometheus" in r["reason"]))
    assert (r["phase"], r["weight"]) == ("Progressing", 20)
    assert "set rollouts.prometheusUrl" in r["reason"]


async def _where(value, predicate):
    value = await value
    if value and not predicate(value):
        _where.last = value  # shown when the wait fails
    return value if value and predicate(value) else None


async def _is(value, expected):
    return (await value) == expected

