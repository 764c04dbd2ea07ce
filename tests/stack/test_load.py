"""The Locust scenarios (load_tests/) against the real fleet, a few seconds each: no request fails."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from serving.local import runtime as local_runtime
from serving.local.serve import watch_fleet_file

ROOT = Path(__file__).parents[2]
# The test fleet's routes that answer; ghost, corrupt and misfit fail on purpose (conftest.py).
ROUTES = ("shout", "reverse", "json", "echo", "ab")
KINDS = ("chat", "chat-stream", "completion", "completion-stream")


def run_locust(locustfile: str, host: str, out: Path, *, env: dict[str, str], seconds: int,
               users: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "load_tests" / locustfile), "--headless", "--host", host,
         "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--only-summary", "--exit-code-on-error", "1",
         "--csv", str(out / "run")],
        cwd=ROOT, env={**os.environ, "SLMFLEET_MAX_TOKENS": "8", "SLMFLEET_SEED": "1", **env},
        capture_output=True, text=True, timeout=seconds + 120)


def stats(out: Path) -> dict[str, dict]:
    """Locust's per-name rows (requests, failures) from its CSV, without the Aggregated row."""
    with open(out / "run_stats.csv", newline="") as f:
        return {row["Name"]: {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"])}
                for row in csv.DictReader(f) if row["Name"] != "Aggregated"}


USERS = 2


def test_mixed_load_on_every_route(fleet, tmp_path):
    done = run_locust("locustfile.py", fleet.url, tmp_path, seconds=8, users=USERS, env={
        "SLMFLEET_ROUTES": ",".join(ROUTES), "SLMFLEET_CHAT_RATIO": "0.5", "SLMFLEET_STREAM_RATIO": "0.5"})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = stats(tmp_path)
    assert not {name: r for name, r in rows.items() if r["failures"]}, done.stderr[-3000:]
    by_kind = {kind: sum(r["requests"] for name, r in rows.items() if name.split(":")[0] == kind) for kind in KINDS}
    by_route = {route: sum(r["requests"] for name, r in rows.items() if name.endswith(f":{route}")) for route in ROUTES}
    assert all(by_kind.values()), by_kind
    assert all(by_route.values()), by_route
    ttft = sum(r["requests"] for name, r in rows.items() if "-ttft:" in name)
    streams = by_kind["chat-stream"] + by_kind["completion-stream"]
    # One time to first chunk per finished stream, plus at most one per user for a stream the end of
    # the run cut after its first chunk (it is not counted as a request).
    assert streams <= ttft <= streams + USERS, (ttft, streams)


@pytest.fixture
def watched_fleet_file(fleet, tmp_path):
    """The test fleet as a file whose edits apply to the running fleet, as `slm-fleet serve FILE` does."""
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "slmfleet.io/v1alpha1", "kind": "ModelFleet",
                                    "metadata": {"name": "load-test"}, "spec": fleet.spec_data}, sort_keys=False))
    stop, errors = threading.Event(), []

    def watch():
        try:
            watch_fleet_file(path, lambda spec: local_runtime.deploy(spec, port=fleet.port), interval_s=0.5, stop=stop)
        except Exception as err:  # noqa: BLE001 - reported by the test
            errors.append(err)

    watcher = threading.Thread(target=watch, name="fleet-file-watcher", daemon=True)
    watcher.start()
    try:
        yield path, errors
    finally:
        stop.set()
        watcher.join(timeout=300)
        fleet.deploy(fleet.spec_data)


def test_no_request_fails_while_a_routes_targets_change(fleet, watched_fleet_file, tmp_path):
    path, watch_errors = watched_fleet_file
    original = path.read_bytes()
    done = run_locust("targets_change.py", fleet.url, tmp_path, seconds=12, env={
        "SLMFLEET_FLEET_FILE": str(path), "SLMFLEET_ROUTE": "shout", "SLMFLEET_CHANGE_EVERY": "2"})
    assert not watch_errors
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = stats(tmp_path)
    assert sum(r["requests"] for r in rows.values()) > 0
    assert not {name: r for name, r in rows.items() if r["failures"]}
    served = {m[0]: int(m[1]) for m in re.findall(r"^served by (.+): (\d+) request", done.stdout, re.M)}
    assert served.keys() == {"shout@v1", "base tiny-llama"} and all(served.values()), done.stdout[-2000:]
    assert path.read_bytes() == original  # the scenario puts the fleet file back
