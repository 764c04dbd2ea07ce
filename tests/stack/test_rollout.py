"""Canary rollouts on the real stack under Locust load, judged on a real Prometheus's numbers.

The driver is the one `slm-fleet serve` runs (serving.local.rollouts), here against the session's
fleet: it redeploys the routing config as weights change. Three canaries of route ``shout``:
- v2, the same files as v1: promoted through every step;
- v3, the ``reverse`` adapter's files: it loads and answers, but in lower case, so its probes fail;
- v4, declared but never pushed: every request to it fails (adapter_unavailable).
Meanwhile Locust keeps load on the route (load_tests/rollout.py, each request reported under the
version that served it): the stable version fails no request, and a bad canary answers no more
than its first step's share.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from serving.adapters.store import AdapterStore
from serving.api.fleet import parse_fleet
from serving.local.serve import fleet_rollouts
from serving.rollouts.metric_sources import PrometheusSource
from tests.stack.conftest import BUCKET
from tests.waiting import eventually

ROOT = Path(__file__).parents[2]
FIRST_STEP = 10


@pytest.fixture(scope="module")
def canaries(fleet):
    store = AdapterStore()
    store.push(fleet.assets["adapters"]["shout"], adapter="shout", version="v2", to=f"s3://{BUCKET}/adapters")
    store.push(fleet.assets["adapters"]["reverse"], adapter="shout", version="v3", to=f"s3://{BUCKET}/adapters")
    yield
    fleet.deploy(fleet.spec_data)


def with_canary(fleet, version: str):
    spec = copy.deepcopy(fleet.spec_data)
    shout = next(a for a in spec["adapters"] if a["name"] == "shout")
    shout["versions"] += [{"version": v, "source": f"s3://{BUCKET}/adapters/shout/{v}"} for v in ("v2", "v3", "v4")]
    route = next(r for r in spec["routes"] if r["name"] == "shout")
    route["strategy"] = {"canary": {
        "version": version, "steps": [FIRST_STEP, 50, 100], "interval": "4s",
        "analysis": {"minRequests": 4, "maxErrorRate": 0.01, "maxP95Ratio": 10,
                     "probes": {"minPassRate": 1, "prompts": [
            # The shout adapter answers in upper case: no lower-case letter may appear.
            {"prompt": "in: red fox\nout:", "maxTokens": 6, "regex": "^[^a-z]+$"},
            {"prompt": "in: blue moon star\nout:", "maxTokens": 6, "regex": "^[^a-z]+$"},
            # A probe may be a chat, as an agent's request is (tools and responseFormat judged likewise).
            {"messages": [{"role": "user", "content": "green river"}], "maxTokens": 6, "regex": "^[^a-z]+$"},
        ]}}}}
    return parse_fleet(spec)


class Locust:
    """Locust on route shout until stopped (SIGTERM: it writes its statistics and exits)."""

    def __init__(self, host: str, out: Path):
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", str(ROOT / "load_tests/rollout.py"), "--headless", "--host", host,
             "-u", "3", "-r", "3", "-t", "300s", "--only-summary", "--csv", str(out / "run")],
            cwd=ROOT, env={**os.environ, "SLMFLEET_ROUTES": "shout", "SLMFLEET_MAX_TOKENS": "8", "SLMFLEET_SEED": "1"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> dict[str, dict]:
        self.proc.send_signal(signal.SIGTERM)
        output, _ = self.proc.communicate(timeout=60)
        by_version: dict[str, dict] = {}
        with open(self.out / "run_stats.csv", newline="") as f:
            for row in csv.DictReader(f):
                if row["Name"] == "Aggregated" or "-ttft:" in row["Name"]:
                    continue
                served = row["Name"].split("@", 1)[1]  # "completion:shout@shout@v1" -> "shout@v1"
                counts = by_version.setdefault(served, {"requests": 0, "failures": 0})
                counts["requests"] += int(row["Request Count"])
                counts["failures"] += int(row["Failure Count"])
        assert by_version, output[-3000:]
        return by_version


def roll_out(fleet, prometheus, version: str, tmp_path: Path):
    """Run the rollout of ``version`` under load to its end; (final status, Locust counts by version)."""
    spec = with_canary(fleet, version)
    events: list[str] = []
    driver = fleet_rollouts(spec, PrometheusSource(prometheus.url), port=fleet.port, tick_s=1, report=events.append)
    driver.apply(spec)
    stop = threading.Event()
    ticker = threading.Thread(target=driver.run, args=(stop,), daemon=True)
    locust = Locust(fleet.url, tmp_path)

    def ended() -> bool:
        status = driver.statuses.get("shout")
        return status is not None and status.phase in ("Promoted", "RolledBack", "Failed")

    ticker.start()
    try:
        eventually(ended, timeout=180, interval=0.5, message=f"the rollout of shout@{version} did not end")
        time.sleep(3)  # load goes on after the rollout ended: all of it on the version that won
    finally:
        stop.set()
        ticker.join(timeout=120)
        served = locust.stop()
        print(f"rollout of shout@{version}:", *events, f"served: {served}", sep="\n  ")
    return driver.statuses["shout"], served


def within_first_step(answered: int, total: int) -> bool:
    """At most the first step's share of the load, allowing three standard deviations of chance."""
    p = FIRST_STEP / 100
    return answered <= p * total + 3 * math.sqrt(total * p * (1 - p)) + 1


def test_a_good_canary_is_promoted_through_every_step(fleet, prometheus, canaries, tmp_path):
    status, served = roll_out(fleet, prometheus, "v2", tmp_path)
    assert status.phase == "Promoted", status
    assert [(h.phase, h.weight) for h in status.history] == [
        ("Progressing", 10), ("Progressing", 50), ("Progressing", 100), ("Promoted", 100)]
    assert status.analysis.probes_passed == status.analysis.probes_total == 3
    assert all(v["failures"] == 0 for v in served.values()), served
    assert served["shout@v2"]["requests"] > 0 and served["shout@v1"]["requests"] > 0


def test_a_canary_whose_probes_fail_is_rolled_back(fleet, prometheus, canaries, tmp_path):
    status, served = roll_out(fleet, prometheus, "v3", tmp_path)
    assert (status.phase, status.step, status.weight) == ("RolledBack", 1, 0), status
    assert "probes passed 0% < 100%" in status.reason and "does not match" in status.reason
    assert all(v["failures"] == 0 for v in served.values()), served  # wrong answers, still HTTP 200
    total = sum(v["requests"] for v in served.values())
    assert within_first_step(served.get("shout@v3", {}).get("requests", 0), total), served


def test_a_canary_that_errors_fails_and_stable_serves_every_request(fleet, prometheus, canaries, tmp_path):
    status, served = roll_out(fleet, prometheus, "v4", tmp_path)
    assert (status.phase, status.weight) == ("Failed", 0), status
    assert "cannot load" in status.reason
    assert served["shout@v1"]["failures"] == 0 and served["shout@v1"]["requests"] > 0, served
    total = sum(v["requests"] for v in served.values())
    assert within_first_step(served.get("shout@v4", {}).get("requests", 0), total), served
