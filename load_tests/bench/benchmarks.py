"""The fleet benchmarks. Each returns its figures as a dict; every figure is a ratio (or a
difference) of two things measured side by side in the same run, so machine noise cancels.

Figure names follow one rule (docs/benchmarks.md, "Naming"): ``<quantity>_<a>_over_<b>`` is a
ratio, ``<quantity>_<a>_minus_<b>_ms`` a difference in milliseconds, any other name ends in its
unit; the things compared have fixed names (``fleet``, ``ray_serve_llm``, ``vllm``, ``random``,
``affine``, ...).
"""

from __future__ import annotations

import json
import random
import statistics
import time

from load_tests.bench.measure import completion, load, summary
from load_tests.bench.stack import BASE, BUCKET, COLD_ADAPTERS, MAX_LORAS, ROOT, THROUGHPUT_ADAPTERS, bench_fleet
from load_tests.bench.switch_router import set_mode

CONCURRENCY = 4


def control_path(sizes=(10, 100, 1000), repeat: int = 5) -> dict:
    """Validate a fleet spec and build its Serve config and RayService, for growing fleets."""
    from operators.render import render_rayservice
    from operators.settings import OperatorSettings
    from serving.api.fleet import parse_fleet
    from serving.render.serve_config import serve_config

    def fleet(n: int) -> dict:
        return {
            "baseModels": [{"name": "base-a", "source": "s3://models/a"}, {"name": "base-b", "source": "s3://models/b"}],
            "adapters": [{"name": f"adapter-{i}", "baseModel": "base-a" if i % 2 else "base-b",
                          "versions": [{"version": "v1", "source": f"s3://adapters/adapter-{i}/v1"}]}
                         for i in range(n)],
            "routes": [{"name": f"route-{i}", "targets": [{"adapter": f"adapter-{i}", "version": "v1"}]}
                       for i in range(n)],
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
        rows[n] = {"adapters": n, "median_ms": round(median * 1000, 2),
                   "median_us_per_adapter": round(median * 1e6 / n, 1)}
    smallest, largest = sizes[0], sizes[-1]
    return {"sizes": list(rows.values()),
            "median_largest_over_smallest": round(rows[largest]["median_ms"] / rows[smallest]["median_ms"], 1),
            "adapters_largest_over_smallest": largest // smallest}


def router_overhead(stack, *, rounds: int = 6, per_round: int = 16) -> dict:
    """The same requests through the fleet router and through Ray Serve LLM's own ingress."""
    fleet_url, direct_url = f"{stack.url}/v1/completions", f"{stack.direct_url}/v1/completions"
    warm = [completion("a0"), completion("a0")]
    load(fleet_url, warm, 1)
    fleet, ray_serve_llm = [], []
    fleet_wall = ray_serve_llm_wall = 0.0
    for _ in range(rounds):  # interleaved, so drift over the run hits both sides alike
        s, w = load(fleet_url, [completion("a0") for _ in range(per_round)], CONCURRENCY)
        fleet += s
        fleet_wall += w
        s, w = load(direct_url, [completion(f"{BASE}:a0@v1") for _ in range(per_round)], CONCURRENCY)
        ray_serve_llm += s
        ray_serve_llm_wall += w
    f, r = summary(fleet, fleet_wall), summary(ray_serve_llm, ray_serve_llm_wall)
    return {"concurrency": CONCURRENCY, "fleet": f, "ray_serve_llm": r,
            "p50_fleet_minus_ray_serve_llm_ms": round(f["p50_ms"] - r["p50_ms"], 1),
            "p99_fleet_minus_ray_serve_llm_ms": round(f["p99_ms"] - r["p99_ms"], 1),
            "requests_per_second_fleet_over_ray_serve_llm":
                round(f["requests_per_second"] / r["requests_per_second"], 3)}


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
        rows.append({"adapters": k, "more_than_max_loras": k > MAX_LORAS, **row,
                     "tokens_per_second_adapters_over_base":
                         round(row["tokens_per_second"] / base["tokens_per_second"], 3)})
    return {"concurrency": concurrency, "max_loras": MAX_LORAS, "base": base, "spread": rows}


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
            "ttft_p50_cold_over_warm": round(c["ttft_p50_ms"] / w["ttft_p50_ms"], 1),
            "errors": c["errors"] + w["errors"]}


PLACEMENTS = ("random", "affine", "balanced")
"""Placements compared (load_tests/bench/switch_router.py): random; Ray Serve's default, which prefers replicas
holding the adapter (``affine``); the fleet's (serving.policy.placement, residency weighed against queue length:
``balanced``)."""


def affinity(stack, *, adapters: int = 6, resident: int = 4, requests: int = 200, rounds: int = 5,
             concurrency: int = 4) -> dict:
    """Two replicas, more adapters than one replica holds, a Zipf popularity (a hot adapter): random, affine and
    balanced placement on the same request sequence, in interleaved rounds (each placement once per round, in a
    shuffled order); per placement the loads per 1k requests and the median and spread of the rounds' p50/p95/p99."""
    names = THROUGHPUT_ADAPTERS[:adapters]
    rng = random.Random(7)
    weights = [1 / (rank + 1) for rank in range(adapters)]  # Zipf, s = 1
    spec = bench_fleet(replicas=2, max_loras=2, resident=resident)
    stack.restart(spec, placement_switch=True)
    sequences = [[completion(name) for name in rng.choices(names, weights, k=requests)] for _ in range(rounds)]
    results = _placement_figures(_placement_rounds(stack, sequences, concurrency))
    return {"replicas": 2, "adapters": adapters, "resident_adapters_per_replica": resident,
            "requests_per_round": requests, "rounds": rounds, "concurrency": concurrency, "popularity": "zipf s=1",
            **results}


def autoscale(stack, *, users: int = 2, scale_timeout: float = 600) -> dict:
    """One base under load scales from 1 to 2 replicas and back when the load stops, while a second base (the same
    weights under another name) stays at its one replica: the times (this machine's) and the failed requests."""
    import copy
    import threading

    import httpx

    from load_tests.bench.processes import running_replicas
    from serving.render.serve_config import base_deployment_name

    def running(base: str) -> int:
        return running_replicas(base_deployment_name(base))

    spec = copy.deepcopy(stack.spec_data)
    base = spec["baseModels"][0]
    other = {**copy.deepcopy(base), "name": "tiny-other", "autoscaling": {"minReplicas": 1, "maxReplicas": 1}}
    base["autoscaling"] = {"minReplicas": 1, "maxReplicas": 2, "targetOngoingRequests": 1, "upscaleDelay": "1s",
                           "downscaleDelay": "5s"}
    spec["baseModels"].append(other)
    spec["routes"].append({"name": "other", "targets": [{"baseModel": "tiny-other"}]})
    stack.redeploy(spec)
    stop, outcomes = threading.Event(), []

    def user():
        with httpx.Client(timeout=300) as c:
            while not stop.is_set():
                r = c.post(f"{stack.url}/v1/completions", json=completion("base", max_tokens=8))
                outcomes.append(r.status_code)

    try:
        threads = [threading.Thread(target=user) for _ in range(users)]
        started = time.monotonic()
        for t in threads:
            t.start()
        while running(BASE) < 2 and time.monotonic() - started < scale_timeout:
            time.sleep(1)
        scale_up = time.monotonic() - started
        other_changed = running("tiny-other") != 1
        time.sleep(10)
        stop.set()
        for t in threads:
            t.join()
        stopped = time.monotonic()
        while running(BASE) > 1 and time.monotonic() - stopped < scale_timeout:
            time.sleep(1)
        scale_down = time.monotonic() - stopped
        other_changed = other_changed or running("tiny-other") != 1
    finally:
        stack.redeploy(stack.spec_data)
    return {"users": users, "target_ongoing_requests": 1, "upscale_delay_seconds": 1, "downscale_delay_seconds": 5,
            "scale_up_seconds": round(scale_up, 1), "scale_down_seconds": round(scale_down, 1),
            "requests": len(outcomes), "failed_requests": sum(1 for code in outcomes if code != 200),
            "other_base_replicas_changed": other_changed,
            "note": "times are this machine's (2 cores): scale-up is mostly the new replica's engine start beside the "
                    "load; Ray Serve averages load over 30 s (look_back_period_s), which bounds scale-down"}


def _placement_figures(rounds_of: dict) -> dict:
    """Per placement: loads per 1k requests, errors, and the median and spread over rounds of p50/p95/p99; and
    the placement ratios the issues ask for."""
    results = {}
    for placement, rows in rounds_of.items():
        total = sum(r["requests"] for r in rows)
        results[placement] = {
            "loads_per_1k_requests": round(1000 * sum(r["adapter_loads"] for r in rows) / total, 1),
            "errors": sum(r["errors"] for r in rows),
            **{f"{q}_ms": statistics.median(r[f"{q}_ms"] for r in rows) for q in ("p50", "p95", "p99")},
            **{f"{q}_spread_ms": round(max(r[f"{q}_ms"] for r in rows) - min(r[f"{q}_ms"] for r in rows), 1)
               for q in ("p50", "p95", "p99")}}
    return {**results,
            "loads_random_over_balanced": round(results["random"]["loads_per_1k_requests"]
                                                / max(results["balanced"]["loads_per_1k_requests"], 0.1), 2),
            "p99_balanced_over_random": round(results["balanced"]["p99_ms"] / results["random"]["p99_ms"], 2),
            "p99_affine_over_random": round(results["affine"]["p99_ms"] / results["random"]["p99_ms"], 2)}


def _placement_rounds(stack, sequences: list[list[dict]], concurrency: int) -> dict:
    """Each request sequence once per placement, the placements in a shuffled order per round (each starts
    from the residency the one before it left: shuffling spreads that); a load summary per round with the
    adapter loads it caused. The fleet runs with the bench's switchable request router (``stack.restart(...,
    placement_switch=True)``), so the engines and their resident adapters stay across switches."""
    url = f"{stack.url}/v1/completions"
    rng = random.Random(11)
    rounds_of = {p: [] for p in PLACEMENTS}
    for bodies in sequences:
        for placement in rng.sample(PLACEMENTS, len(PLACEMENTS)):
            set_mode(placement)
            loads_before = stack.counter("slmfleet_adapter_loads_total", outcome="loaded")
            samples, wall = load(url, bodies, concurrency)
            time.sleep(2)  # replicas report metrics every 0.5 s
            loads = stack.counter("slmfleet_adapter_loads_total", outcome="loaded") - loads_before
            rounds_of[placement].append({**summary(samples, wall), "adapter_loads": int(loads)})
    return rounds_of


def scale(stack, *, replicas: int = 2, requests: int = 200, rounds: int = 5, concurrency: int = 8,
          few: int = 5) -> dict:
    """The scale fleet (serving.local.scale_fleet: three families, 48 adapter versions, fewer slots per replica
    than versions in use) at ``replicas`` per base. (1) Throughput through the fleet vs Ray Serve LLM's own
    ingress over the same deployments, for traffic spread evenly over all 48 versions and over ``few``, in
    interleaved rounds. (2) Random, affine and balanced placement on the same Zipf request sequences, in
    interleaved rounds of ``requests``."""
    from serving.adapters.store import AdapterStore
    from serving.local import family_assets, scale_fleet
    from serving.local.demo import ensure_assets

    assets = ensure_assets(ROOT / ".demo" / "assets")
    families = family_assets.ensure(ROOT / ".demo" / "families", assets["base"])["families"]
    scale_fleet.stage(AdapterStore(), families, BUCKET)
    spec = scale_fleet.scale_fleet(BUCKET, replicas=replicas, cpu=0.25)
    routes = scale_fleet.adapter_routes(spec)
    base_of = {a["name"]: a["baseModel"] for a in spec["adapters"]}
    # ``few`` versions spread over the bases (the routes are grouped by base: take every base's first ones).
    by_base = [[r for r in routes if base_of[r] == b] for b in scale_fleet.SCALE_BASES]
    mixes = {len(routes): routes, few: [r for group in zip(*by_base) for r in group][:few]}
    paths = {"fleet": (f"{stack.url}/v1/completions", lambda route: route),
             "ray_serve_llm": (f"{stack.direct_url}/v1/completions", lambda route: f"{base_of[route]}:{route}@v1")}
    try:
        stack.restart(spec, placement_switch=True)
        load(paths["fleet"][0], [completion(r) for r in routes], concurrency)  # every version once: warm
        rng = random.Random(5)
        cells = {(path, n): [] for path in paths for n in mixes}
        for _ in range(rounds):
            for path, n in rng.sample(list(cells), len(cells)):
                url, model = paths[path]
                bodies = [completion(model(mixes[n][i % n])) for i in range(requests)]
                cells[(path, n)].append(load(url, bodies, concurrency))

        def total(path, n):
            return summary([s for samples, _ in cells[(path, n)] for s in samples],
                           sum(wall for _, wall in cells[(path, n)]))

        many = len(routes)
        throughput = {path: {f"adapters_{n}": total(path, n) for n in mixes} for path in paths}
        zipf = scale_fleet.zipf_weights(routes)
        sequences = [[completion(r) for r in scale_fleet.zipf_sequence(zipf, requests, rng)] for _ in range(rounds)]
        placement = _placement_figures(_placement_rounds(stack, sequences, concurrency))
    finally:
        stack.restart(bench_fleet())

    def rate(path, n):
        return throughput[path][f"adapters_{n}"]["tokens_per_second"]

    return {"bases": len(spec["baseModels"]), "adapters": many, "replicas_per_base": replicas,
            "max_loras": scale_fleet.MAX_LORAS, "resident_adapters_per_replica": scale_fleet.RESIDENT,
            "requests_per_round": requests, "rounds": rounds, "concurrency": concurrency, **throughput,
            "fleet_over_ray_serve_llm_throughput": round(rate("fleet", many) / rate("ray_serve_llm", many), 3),
            f"fleet_over_ray_serve_llm_throughput_{few}": round(rate("fleet", few) / rate("ray_serve_llm", few), 3),
            f"throughput_{many}_over_{few}": round(rate("ray_serve_llm", many) / rate("ray_serve_llm", few), 3),
            "popularity": "zipf s=1 over all versions", **placement}


# affinity last: it redeploys the fleet with two replicas.
OFF_TASK = ["Q: what is two plus two? A:", "Translate to French: good morning", "Write a haiku about the sea",
            "List three prime numbers:", "Summarise: the meeting moved to Tuesday", "def add(a, b):"]


def cascade(stack, *, requests: int = 48, off_task_share: float = 0.3, concurrency: int = 4) -> dict:
    """A cascade (json specialist first, a large tier last) on a mixed prompt set, against the same
    prompts sent straight to the last tier, interleaved.

    The json adapter (``a0``) answers prompts of its task in its JSON shape, which its schema check
    accepts; the off-task share makes it answer something else, which escalates. The last tier is
    this fleet's own API over HTTP (model ``base``), as an external large model would be reached.
    """
    import copy

    import httpx

    from load_tests.bench.measure import percentile, side_by_side
    from serving.local.demo_assets import WORDS

    spec = copy.deepcopy(stack.spec_data)
    spec["routes"].append({"name": "cascade", "policy": "cascade", "tiers": [
        {"adapter": "a0", "version": "v1", "costPer1kTokens": 0.1,
         "checks": {"jsonSchema": {"type": "object", "required": ["text"],
                                   "properties": {"text": {"type": "string"}}}}},
        {"endpoint": {"url": f"{stack.url}/v1", "model": "base"}, "costPer1kTokens": 1.0, "timeout": "120s"}]})
    stack.redeploy(spec)
    rng = random.Random(5)
    prompts = [rng.choice(OFF_TASK) if rng.random() < off_task_share
               else f"in: {' '.join(rng.sample(WORDS, rng.randint(2, 4)))}\nout:" for _ in range(requests)]

    async def one(client, model, prompt):
        started = time.perf_counter()
        r = await client.post(f"{stack.url}/v1/completions", json={
            "model": model, "prompt": prompt, "max_tokens": 24, "temperature": 0})
        return r.status_code, int(r.headers.get("x-slmfleet-tier", 0)), time.perf_counter() - started

    try:
        pairs = side_by_side(prompts, one, ("cascade", "base"), concurrency=concurrency)
    finally:
        stats = httpx.get(f"{stack.url}/v1/fleet/routes/cascade/stats", timeout=10).json()
        stack.redeploy(stack.spec_data)
    ok = [(c, b) for c, b in pairs if c[0] == 200 and b[0] == 200]
    first = [(c, b) for c, b in ok if c[1] == 1]
    escalated = [(c, b) for c, b in ok if c[1] == 2]

    def ms(values, q):
        return round(percentile(values, q) * 1000, 1) if values else None

    # "cascade": through the cascade route; "last_tier": the same prompt straight to the last tier.
    cascade_escalated = [c[2] for c, _ in escalated]
    last_tier_escalated = [b[2] for _, b in escalated]
    return {
        "requests": len(pairs), "failed_requests": len(pairs) - len(ok), "off_task_share": off_task_share,
        "first_tier_share": round(len(first) / len(ok), 3) if ok else None,
        "escalated_requests": len(escalated),
        "cascade_escalated_p50_ms": ms(cascade_escalated, 50),
        "last_tier_escalated_p50_ms": ms(last_tier_escalated, 50),
        "escalated_p50_cascade_minus_last_tier_ms":
            round(ms(cascade_escalated, 50) - ms(last_tier_escalated, 50), 1) if escalated else None,
        "cascade_escalated_p95_ms": ms(cascade_escalated, 95),
        "last_tier_escalated_p95_ms": ms(last_tier_escalated, 95),
        "cascade_p50_ms": ms([c[2] for c, _ in ok], 50),
        "last_tier_p50_ms": ms([b[2] for _, b in ok], 50),
        "estimated_savings_share": stats.get("estimatedSavings"),
        "escalations_by_reason": stats.get("escalations"),
    }


def _returned_call_problems(payload: dict, request: dict) -> list[str]:
    """Every tool call of a chat answer, validated here on its own (jsonschema only, not the fleet's checks)."""
    import jsonschema

    schemas = {t["function"]["name"]: t["function"].get("parameters") or {} for t in request["tools"]}
    problems = []
    for call in (payload["choices"][0]["message"].get("tool_calls") or []):
        name = call["function"]["name"]
        if name not in schemas:
            problems.append(f"{name}: not offered")
            continue
        try:
            jsonschema.validate(json.loads(call["function"]["arguments"]), schemas[name])
        except (ValueError, jsonschema.ValidationError) as err:
            problems.append(f"{name}: {str(err).splitlines()[0]}")
    return problems


def agents(stack, *, handled: int = 64, unhandled: int = 24, concurrency: int = 4) -> dict:
    """A tool-calling cascade on a mixed set of labelled tool-call requests, against the last tier alone.

    Tier 1 is the ``tools`` specialist with the ``toolCall`` check; the last tier is the fleet's own
    API over HTTP (model ``base``: the base model, behind the hermes parser), reached as an external
    large model would be. The requests are the demo's held-out tool schemas (names, parameters and
    values the specialist never saw; each labelled with the expected call) and requests it is not
    meant to handle (no offered tool is named). Each request goes both ways, one after the other.
    """
    import copy

    import httpx

    from load_tests.bench.measure import percentile, side_by_side
    from serving.local.demo_assets import is_expected_call, tool_requests, unhandled_tool_requests

    last_tier = {"endpoint": {"url": f"{stack.url}/v1", "model": "base"}, "costPer1kTokens": 1.0, "timeout": "120s"}
    spec = copy.deepcopy(stack.spec_data)
    spec["routes"].append({"name": "agents", "policy": "cascade", "tiers": [
        {"adapter": "tools", "version": "v1", "costPer1kTokens": 0.1, "checks": {"toolCall": True}}, last_tier]})
    stack.redeploy(spec)
    asks = tool_requests("held_out", n=handled, seed=11) + unhandled_tool_requests(n=unhandled, seed=11)
    random.Random(3).shuffle(asks)

    async def one(client, model, ask):
        started = time.perf_counter()
        r = await client.post(f"{stack.url}/v1/chat/completions", json={
            "model": model, "messages": ask["messages"], "tools": ask["tools"], "max_tokens": 64, "temperature": 0})
        elapsed = time.perf_counter() - started
        return {"status": r.status_code, "tier": int(r.headers.get("x-slmfleet-tier", 0)), "seconds": elapsed,
                "payload": r.json() if r.status_code == 200 else None}

    try:
        pairs = side_by_side(asks, one, ("agents", "base"), concurrency=concurrency)
    finally:
        stats = httpx.get(f"{stack.url}/v1/fleet/routes/agents/stats", timeout=10).json()
        stack.redeploy(stack.spec_data)
    ok = [(a, c, b) for a, (c, b) in zip(asks, pairs) if c["status"] == 200 and b["status"] == 200]
    first = [(a, c) for a, c, _ in ok if c["tier"] == 1]
    escalated = [c for _, c, _ in ok if c["tier"] == 2]
    invalid = [p for a, c, _ in ok for p in _returned_call_problems(c["payload"], a)]

    def ms(values, q):
        return round(percentile(values, q) * 1000, 1) if values else None

    def right(answer, ask) -> bool:  # the expected tool with the expected arguments
        return is_expected_call(answer["payload"]["choices"][0]["message"], ask["expected"])

    def share(count):
        return round(count / len(ok), 3) if ok else None

    return {
        "requests": len(asks), "failed_requests": len(asks) - len(ok),
        "handled_requests": handled, "unhandled_requests": unhandled,
        "first_tier": "tools@v1 (toolCall check)",
        "last_tier": "base tiny-llama over HTTP (model base; hermes parser, toolStrictLevel parameter)",
        "first_tier_share": round(len(first) / len(ok), 3) if ok else None,
        "first_tier_correct_share": share(sum(right(c, a) for a, c in first)),
        "handled_answered_by_first_tier_share": round(
            sum(1 for a, c in first if a["expected"] is not None) / handled, 3),
        "unhandled_escalated_share": round(
            sum(1 for a, c, _ in ok if a["expected"] is None and c["tier"] == 2) / unhandled, 3) if unhandled else None,
        "last_tier_only_correct_share": share(sum(right(b, a) for a, _, b in ok)),
        "invalid_tool_calls_returned": len(invalid),
        "invalid_tool_calls_examples": invalid[:5],
        "escalated_requests": len(escalated),
        "escalated_p50_ms": ms([c["seconds"] for c in escalated], 50),
        "first_tier_p50_ms": ms([c["seconds"] for _, c in first], 50),
        "cascade_p50_ms": ms([c["seconds"] for _, c, _ in ok], 50),
        "last_tier_only_p50_ms": ms([b["seconds"] for _, _, b in ok], 50),
        "escalations_by_reason": stats.get("escalations"),
    }


def flywheel(stack) -> dict:
    """PII kept out of S3, capture's cost per request, and the flywheel loop closed (load_tests/bench/flywheel.py)."""
    from load_tests.bench.flywheel import flywheel as run

    return run(stack)


def faults(stack) -> dict:
    """Engine and replica kills, an S3 outage, and the limiter's cost (load_tests/bench/faults.py)."""
    from load_tests.bench.faults import faults as run

    return run(stack)


def path(stack) -> dict:
    """The fleet, Ray Serve LLM's own ingress and vLLM's own server alone, hop by hop (load_tests/bench/path.py)."""
    from load_tests.bench.path import path as run

    return run(stack)


STACK_BENCHMARKS = {"router_overhead": router_overhead, "multi_adapter": multi_adapter, "cold_load": cold_load,
                    "affinity": affinity, "cascade": cascade, "agents": agents, "flywheel": flywheel,
                    "faults": faults, "autoscale": autoscale, "scale": scale, "path": path}
