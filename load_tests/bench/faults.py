"""The faults benchmark: what fails, and for how long, when parts of the fleet die under load; and what the
tenants' limiter costs a request.

In one run, on the bench fleet (docs/benchmarks.md, "faults"):
1. limiter: two router applications over the same base deployment, two router replicas each, the fleet's own
   (open) and a second one with a tenant whose limits never bind; requests alternate between them in rounds.
2. engine kill: the base's vLLM engine process is killed (one replica) under load; every answer until it is
   replaced must be a 200 or a 503, and the time to recover is measured.
3. S3 outage: S3 behind a TCP proxy drops, then blackholes, every connection; resident versions are asked for
   all along, and one cold version once.
4. replica kill: two replicas; one replica's process is killed under load (non-streamed requests); no request
   may fail, and those in flight on it are counted (the router's retries).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import httpx
import psutil

from load_tests.bench.measure import percentile
from load_tests.bench.processes import replica_pids  # noqa: F401 - the tests import it from here too
from load_tests.bench.stack import BASE, DIRECT_APP, ROOT, bench_fleet, with_tenant
from serving.api.fleet import parse_fleet
from serving.api.keys import key_sha256
from serving.local import runtime as local_runtime
from serving.render.serve_config import base_deployment_name

SECOND_APP = "tenanted"


def engine_processes(pid: int) -> list[psutil.Process]:
    """The vLLM engine processes under a replica's process."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "EngineCore" in child.name() or "VLLM" in child.name() or "EngineCore" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def body(route: str, max_tokens: int = 4) -> dict:
    return {"model": route, "prompt": "red fox sun", "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}


async def _send_all(url: str, bodies: list[dict], concurrency: int, headers: dict | None = None,
                    pace_s: float = 0.0, stop: threading.Event | None = None) -> list[tuple[int, float]]:
    """(HTTP status or 0 for a broken connection, seconds) of each request, ``concurrency`` in flight, until the
    bodies are sent or ``stop`` is set."""
    stop = stop or threading.Event()
    queue = list(reversed(bodies))
    results: list[tuple[int, float]] = []
    async with httpx.AsyncClient(timeout=300, headers=headers or {}) as client:
        async def worker():
            while queue and not stop.is_set():
                b = queue.pop()
                started = time.perf_counter()
                try:
                    status = (await client.post(url, json=b)).status_code
                except httpx.HTTPError:
                    status = 0
                results.append((status, time.perf_counter() - started))
                if pace_s:
                    await asyncio.sleep(pace_s)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def send_all(url, bodies, concurrency, headers=None, pace_s=0.0, stop=None):
    return asyncio.run(_send_all(url, bodies, concurrency, headers, pace_s, stop))


def limiter(stack, *, rounds: int = 8, per_round: int = 40, concurrency: int = 4) -> dict:
    tenanted, keys, key = with_tenant(stack.spec_data)
    second = {"name": SECOND_APP, "route_prefix": f"/{SECOND_APP}", "import_path": "load_tests.bench.second_router:app",
              "runtime_env": {"env_vars": {"PYTHONPATH": str(ROOT)}},
              "deployments": [{"name": "SecondRouter", "num_replicas": 2, "user_config": {
                  "fleet": parse_fleet(tenanted).model_dump(mode="json", by_alias=True, exclude_none=True),
                  "keysFile": str(keys), "internalKeySha256": key_sha256(local_runtime.internal_key())}}]}
    local_runtime.deploy(parse_fleet(stack.spec_data), port=stack.port, extra_apps=(DIRECT_APP, second),
                         overrides={"FleetRouter": {"num_replicas": 2}})
    open_url, limited_url = f"{stack.url}/v1/completions", f"{stack.url}/{SECOND_APP}/v1/completions"
    auth = {"Authorization": f"Bearer {key}"}
    send_all(open_url, [body("a0")] * 8, concurrency)
    send_all(limited_url, [body("a0")] * 8, concurrency, auth)
    on, off, refused = [], [], 0
    for _ in range(rounds):  # interleaved: drift over the run hits both alike
        results = send_all(limited_url, [body("a0")] * per_round, concurrency, auth)
        on += [s for status, s in results if status == 200]
        refused += sum(status != 200 for status, _ in results)
        off += [s for status, s in send_all(open_url, [body("a0")] * per_round, concurrency) if status == 200]
    answer = httpx.get(f"{stack.url}/{SECOND_APP}/v1/fleet/usage", headers=auth, timeout=30)
    usage = answer.json() if answer.status_code == 200 else {}
    if answer.status_code != 200:
        print(f"usage of the tenant: HTTP {answer.status_code} {answer.text[:300]}", flush=True)
    ms = lambda xs, q: percentile([x * 1000 for x in xs], q)  # noqa: E731
    stack.redeploy(stack.spec_data)  # the fleet alone again: one router replica
    return {"limiter_requests_on": len(on), "limiter_requests_off": len(off), "limiter_refused": refused,
            "limiter_on_p50_ms": round(ms(on, 50), 1), "limiter_off_p50_ms": round(ms(off, 50), 1),
            "limiter_on_minus_off_p50_ms": round(ms(on, 50) - ms(off, 50), 2),
            "limiter_on_minus_off_p99_ms": round(ms(on, 99) - ms(off, 99), 2),
            "limiter_usage_requests": usage.get("totals", {}).get("requests")}


class Background:
    """Requests sent from a thread while the main thread breaks things."""

    def __init__(self, url: str, bodies: list[dict], concurrency: int, pace_s: float = 0.0):
        self.results: list[tuple[int, float]] = []
        self.stop = threading.Event()
        self._thread = threading.Thread(target=lambda: self.results.extend(
            send_all(url, bodies, concurrency, pace_s=pace_s, stop=self.stop)), daemon=True)
        self._thread.start()

    def join(self, *, stop: bool = False) -> list[tuple[int, float]]:
        if stop:
            self.stop.set()
        self._thread.join()
        return self.results


def engine_kill(stack, *, concurrency: int = 2) -> dict:
    url = f"{stack.url}/v1/completions"
    send_all(url, [body("a0")] * 4, 2)
    [pid] = replica_pids(base_deployment_name(BASE))
    load = Background(url, [body("a0", 16)] * 4000, concurrency, pace_s=0.1)
    time.sleep(3)
    killed = time.monotonic()
    for engine in engine_processes(pid):
        engine.send_signal(signal.SIGKILL)
    recovered = None
    while time.monotonic() - killed < 600:
        try:
            ok = httpx.post(url, json=body("a0"), timeout=120).status_code == 200
            ready = httpx.get(f"{stack.url}/readyz", timeout=60).status_code == 200
        except httpx.HTTPError:  # counted by the load's own requests; here only "not yet"
            ok = ready = False
        if ok and ready and set(replica_pids(base_deployment_name(BASE))) - {pid}:
            recovered = time.monotonic() - killed
            break
        time.sleep(0.5)
    time.sleep(2)
    results = load.join(stop=True)
    statuses = [s for s, _ in results]
    return {"engine_kill_requests": len(statuses), "engine_kill_503": statuses.count(503),
            "engine_kill_5xx_other_than_503": sum(s >= 500 and s != 503 for s in statuses),
            "engine_kill_broken_connections": statuses.count(0),
            "engine_recovery_seconds": round(recovered, 1) if recovered is not None else None}


def s3_outage(stack) -> dict:
    proxy = stack.s3_proxy
    url = f"{stack.url}/v1/completions"
    resident = ["a0", "a1"]
    send_all(url, [body(r) for r in resident], 1)
    figures = {}
    failed = asked = 0
    for mode in ("drop", "blackhole"):
        proxy.set_mode(mode)
        try:
            results = send_all(url, [body(r) for r in resident * 10], 2)
            asked += len(results)
            failed += sum(status != 200 for status, _ in results)
            started = time.monotonic()
            cold = httpx.post(url, json=body(f"cold{1 if mode == 'drop' else 2}"), timeout=300)
            figures[f"s3_{mode}_cold_load_status"] = cold.status_code
            figures[f"s3_{mode}_cold_load_seconds"] = round(time.monotonic() - started, 1)
        finally:
            proxy.set_mode("forward")
    started = time.monotonic()
    while httpx.post(url, json=body("cold1"), timeout=300).status_code != 200 and time.monotonic() - started < 120:
        time.sleep(1)
    figures.update(s3_outage_resident_requests=asked, s3_outage_resident_failed=failed,
                   s3_back_cold_load_seconds=round(time.monotonic() - started, 1))
    return figures


def replica_kill(stack, *, requests: int = 240, concurrency: int = 6) -> dict:
    two = bench_fleet(replicas=2)
    stack.redeploy(two)
    deployment = base_deployment_name(BASE)
    deadline = time.monotonic() + 600
    while len(replica_pids(deployment)) < 2 and time.monotonic() < deadline:
        time.sleep(2)
    url = f"{stack.url}/v1/completions"
    send_all(url, [body(f"a{i % 4}") for i in range(8)], 4)  # warm both replicas
    retries = stack.counter("slmfleet_dispatch_retries_total")
    load = Background(url, [body(f"a{i % 4}", 48) for i in range(requests)], concurrency)
    time.sleep(6)
    victim = replica_pids(deployment)[0]
    os.kill(victim, signal.SIGKILL)
    results = load.join()
    time.sleep(3)  # the replicas' metrics reach the exporter every 0.5 s
    inflight = stack.counter("slmfleet_dispatch_retries_total") - retries
    stack.redeploy(bench_fleet())
    return {"replica_kill_requests": len(results), "replica_kill_failed_requests": sum(s != 200 for s, _ in results),
            "replica_kill_inflight": int(inflight)}


def faults(stack) -> dict:
    figures = {}
    figures.update(limiter(stack))
    figures.update(engine_kill(stack))
    figures.update(s3_outage(stack))
    figures.update(replica_kill(stack))
    return figures
