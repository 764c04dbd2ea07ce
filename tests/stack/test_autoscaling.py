"""Live autoscaling on the real stack: one base scales up under Locust load on its route and back down when the
load stops, while the other base stays at its minimum and keeps its replica; a base with minReplicas 0 scales to
zero, is ready while it has no replica, and scales from zero on its first request, which waits rather than fails.
``/readyz`` is watched throughout.

The smallest fleet that shows it: the session fleet's second base ``tiny-plain`` with short delays (Ray Serve
autoscaling from the spec's bounds), its route ``plain``.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import threading
import time

import httpx

from load_tests.bench.processes import replica_pids
from load_tests.bench.processes import running_replicas as running
from serving.render.serve_config import base_deployment_name
from tests.stack.conftest import ROOT
from tests.stack.test_load import stats
from tests.waiting import eventually

PLAIN, LLAMA = base_deployment_name("tiny-plain"), base_deployment_name("tiny-llama")
SCALE_UP_TIMEOUT = 300
"""A new replica starts a vLLM engine beside the load on 2 cores: about a minute here."""


def autoscale_spec(fleet, **plain_autoscaling) -> dict:
    spec = copy.deepcopy(fleet.spec_data)
    spec["routes"].append({"name": "plain", "targets": [{"baseModel": "tiny-plain"}]})
    plain = next(b for b in spec["baseModels"] if b["name"] == "tiny-plain")
    plain["autoscaling"] = {**plain.get("autoscaling", {}), **plain_autoscaling}
    return spec


class ReadyzWatch(threading.Thread):
    """Polls /readyz twice a second and keeps every status code and body it answered."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.answers, self._done = url, [], threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self._done.wait(0.5):
                r = c.get("/readyz")
                self.answers.append((r.status_code, r.json()))

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self.join()


def locust(host: str, out, users: int) -> subprocess.Popen:
    """Locust on the ``plain`` route until it is sent SIGTERM (it then writes its stats and exits)."""
    return subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "load_tests" / "locustfile.py"), "--headless", "--host",
         host, "-u", str(users), "-r", str(users), "-t", "600s", "--only-summary", "--csv", str(out / "run")],
        cwd=ROOT, env={**os.environ, "SLMFLEET_MAX_TOKENS": "8", "SLMFLEET_SEED": "1", "SLMFLEET_ROUTES": "plain",
                       "SLMFLEET_CHAT_RATIO": "0", "SLMFLEET_STREAM_RATIO": "0"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_base_scales_up_under_load_and_down_after_it_and_from_zero(fleet, client, tmp_path):
    fleet.deploy(autoscale_spec(fleet, minReplicas=1, maxReplicas=2, targetOngoingRequests=0.5, upscaleDelay="1s",
                                downscaleDelay="5s"))
    try:
        eventually(lambda: client.post("/v1/completions", json={"model": "plain", "prompt": "red", "max_tokens": 2})
                   .status_code == 200, timeout=120)
        assert running(PLAIN) == 1 and running(LLAMA) == 1
        llama_pids = replica_pids(LLAMA)
        with ReadyzWatch(fleet.url) as ready:
            started = time.monotonic()
            # One user keeps about one request going: twice the target, so two replicas. More load on 2 cores starves
            # the new replica's engine start (two users: 310 s).
            load = locust(fleet.url, tmp_path, users=1)
            try:
                eventually(lambda: running(PLAIN) == 2, timeout=SCALE_UP_TIMEOUT, interval=1,
                           message="tiny-plain did not scale up under load")
                scale_up = time.monotonic() - started
                assert running(LLAMA) == 1
                time.sleep(10)  # load on both replicas
            finally:
                load.send_signal(signal.SIGTERM)
                _, err = load.communicate(timeout=60)
            stopped = time.monotonic()
            eventually(lambda: running(PLAIN) == 1, timeout=180, interval=1,
                       message="tiny-plain did not scale back down when the load stopped")
            scale_down = time.monotonic() - stopped
        rows = stats(tmp_path)
        print(f"scaled up in {scale_up:.0f} s, down in {scale_down:.0f} s; {rows}")
        assert sum(r["requests"] for r in rows.values()) > 20, (rows, err[-3000:])
        assert not any(r["failures"] for r in rows.values()), (rows, err[-3000:])
        assert running(LLAMA) == 1 and replica_pids(LLAMA) == llama_pids, "the other base's replicas changed"
        codes = {code for code, _ in ready.answers}
        assert codes == {200}, [a for a in ready.answers if a[0] != 200][:3]
        placed = fleet.counter("slmfleet_placements_total", base_model="tiny-plain", placement="base")
        assert placed > 20, "the placement router did not place the base's requests"

        # minReplicas 0: no request, no replica; ready all the same; the first request waits for a replica.
        fleet.deploy(autoscale_spec(fleet, minReplicas=0, maxReplicas=1, downscaleDelay="2s"))
        eventually(lambda: running(PLAIN) == 0, timeout=180, interval=1, message="tiny-plain did not scale to zero")
        time.sleep(3)  # readiness probes in the meantime must not bring it back
        r = client.get("/readyz")
        assert r.status_code == 200 and r.json()["baseModels"]["tiny-plain"] == "scaled to zero", r.text
        assert running(PLAIN) == 0
        asked = time.monotonic()
        r = client.post("/v1/completions", json={"model": "plain", "prompt": "red", "max_tokens": 2}, timeout=180)
        assert r.status_code == 200, r.text
        print(f"answered from zero replicas in {time.monotonic() - asked:.0f} s")
        assert running(PLAIN) == 1
    finally:
        fleet.deploy(fleet.spec_data)
