"""The fleet benchmarks. Each returns its figures as a dict; every figure is a ratio (or a
difference) of two things measured side by side in the same run, so machine noise cancels."""

from __future__ import annotations

import random
import statistics
import time

from load_tests.bench.measure import completion, load, summary
from load_tests.bench.stack import BASE, COLD_ADAPTERS, MAX_LORAS, THROUGHPUT_ADAPTERS, bench_fleet

CONCURRENCY = 4


def control_path(sizes=(10, 100, 1000), repeat: int = 5) -> dict:
    """Validate a fleet spec and build its Serve config and RayService, for growing fleets."""
    from operators.render import render_rayservice
    from operators.settings import OperatorSettings
    from serving.serve_config import serve_config
    from serving.spec import parse_fleet

    def fleet(n: int) -> dict:
        return {
            "baseModels": [{"name": "base-a", "source": "s3://models/a"}, {"name": "base-b", "source": "s3://models/b"}],
            "adapters": [{"name": f"adapter-{i}", "baseModel": "base-a" if i % 2 else "base-b",
                          "versions": [{"version": "v1", "source": f"s3://adapters/adapter-{i}/v1"}]} for i in range(n)],
            "routes": [{"name": f"route-{i}", "targets": [{"adapter": f"adapter-{i}", "version": "v1"}]} for i in range(n)],
        }

    rows = {}
    for n in sizes:
        data = fleet(n)
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            spec = parse_fleet(data)
            serve_config(spec)
            render_rayservice(spec, name="bench", namespace="bench", settings=OperatorSettings())
            times.append(time.perf_counter() - started)
        median = statistics.median(times)
        rows[n] = {"adapters": n, "ms": round(median * 1000, 2), "us_per_adapter": round(median * 1e6 / n, 1)}
    first, last = sizes[0], sizes[-1]
    return {"sizes": list(rows.values()),
            "growth": round(rows[last]["ms"] / rows[first]["ms"], 1), "size_ratio": last // first}


def router_overhead(stack, *, rounds: int = 6, per_round: int = 16) -> dict:
    """The same requests through the fleet router and through Ray Serve LLM's own ingress."""
    fleet_url, direct_url = f"{stack.url}/v1/completions", f"{stack.direct_url}/v1/completions"
    warm = [completion("a0"), completion("a0")]
    load(fleet_url, warm, 1)
    fleet, direct = [], []
    fleet_wall = direct_wall = 0.0
    for _ in range(rounds):  # interleaved, so drift over the run hits both sides alike
        s, w = load(fleet_url, [completion("a0") for _ in range(per_round)], CONCURRENCY)
        fleet += s
        fleet_wall += w
        s, w = load(direct_url, [completion(f"{BASE}:a0@v1") for _ in range(per_round)], CONCURRENCY)
        direct += s
        direct_wall += w
    f, d = summary(fleet, fleet_wall), summary(direct, direct_wall)
    return {"concurrency": CONCURRENCY, "fleet": f, "direct": d,
            "added_p50_ms": round(f["p50_ms"] - d["p50_ms"], 1), "added_p99_ms": round(f["p99_ms"] - d["p99_ms"], 1),
            "throughput_ratio": round(f["requests_per_s"] / d["requests_per_s"], 3)}


def multi_adapter(stack, *, requests: int = 32, concurrency: int = 8) -> dict:
    """Tokens/s with traffic spread over K adapters vs base-model-only traffic, same engine."""
    url = f"{stack.url}/v1/completions"
    load(url, [completion(a) for a in THROUGHPUT_ADAPTERS] + [completion("base")], 2)  # all resident, warm
    base_s, base_w = load(url, [completion("base") for _ in range(requests)], concurrency)
    base = summary(base_s, base_w)
    rows = []
    for k in (1, 3, 8):
        adapters = THROUGHPUT_ADAPTERS[:k]
        s, w = load(url, [completion(adapters[i % k]) for i in range(requests)], concurrency)
        row = summary(s, w)
        rows.append({"k": k, "more_than_max_loras": k > MAX_LORAS, **row,
                     "tokens_per_s_vs_base": round(row["tokens_per_s"] / base["tokens_per_s"], 3)})
    return {"concurrency": concurrency, "max_loras": MAX_LORAS, "base": base, "adapters": rows}


def cold_load(stack) -> dict:
    """First token for a version not yet on the replica (fetch + load) vs right after (warm)."""
    url = f"{stack.url}/v1/completions"
    cold, warm = [], []
    for adapter in COLD_ADAPTERS:
        cold += load(url, [completion(adapter, stream=True)], 1)[0]
        warm += load(url, [completion(adapter, stream=True)], 1)[0]
    c, w = summary(cold, 1), summary(warm, 1)
    return {"samples": len(COLD_ADAPTERS), "cold_ttft_p50_ms": c["ttft_p50_ms"], "cold_ttft_p99_ms": c["ttft_p99_ms"],
            "warm_ttft_p50_ms": w["ttft_p50_ms"], "warm_ttft_p99_ms": w["ttft_p99_ms"],
            "cold_over_warm_p50": round(c["ttft_p50_ms"] / w["ttft_p50_ms"], 1),
            "errors": c["errors"] + w["errors"]}


def affinity(stack, *, adapters: int = 6, resident: int = 4, requests: int = 96, concurrency: int = 4) -> dict:
    """Two replicas, more adapters than one replica holds: Ray Serve's adapter-affine placement
    (what the fleet uses) vs random placement, on the same request sequence."""
    url = f"{stack.url}/v1/completions"
    names = THROUGHPUT_ADAPTERS[:adapters]
    rng = random.Random(7)
    sequence = [rng.choice(names) for _ in range(requests)]
    sequence = [names[i % adapters] for i in range(adapters)] + sequence  # every adapter at least once
    spec = bench_fleet(replicas=2, max_loras=2, resident=resident)
    results = {}
    for placement, router in (("random", "load_tests.bench.random_router:RandomPlacementRouter"), ("affine", None)):
        stack.restart(spec, request_router=router)
        time.sleep(2)
        loads_before = stack.counter("slmfleet_adapter_loads_total", outcome="loaded")
        samples, wall = load(url, [completion(name) for name in sequence], concurrency)
        time.sleep(2)  # replicas report metrics every 0.5 s
        loads = stack.counter("slmfleet_adapter_loads_total", outcome="loaded") - loads_before
        row = summary(samples, wall)
        results[placement] = {"adapter_loads": int(loads), "requests_per_load": round(len(samples) / max(loads, 1), 2),
                              "p95_ms": row["p95_ms"], "p50_ms": row["p50_ms"], "errors": row["errors"]}
    return {"replicas": 2, "adapters": adapters, "resident_per_replica": resident, "requests": len(sequence),
            "concurrency": concurrency, **results,
            "loads_ratio_random_over_affine": round(results["random"]["adapter_loads"] / max(results["affine"]["adapter_loads"], 1), 2),
            "p95_ratio_random_over_affine": round(results["random"]["p95_ms"] / results["affine"]["p95_ms"], 2)}


# affinity last: it redeploys the fleet with two replicas.
STACK_BENCHMARKS = {"router_overhead": router_overhead, "multi_adapter": multi_adapter, "cold_load": cold_load,
                    "affinity": affinity}
