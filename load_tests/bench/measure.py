"""Send requests at a fixed concurrency and summarise them: latency, time to first token, tokens/s."""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass

import httpx


@dataclass
class Sample:
    ok: bool
    latency: float
    ttft: float
    output_tokens: int


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def completion(model: str, *, max_tokens: int = 16, stream: bool = False) -> dict:
    # ignore_eos: every request generates exactly max_tokens, so the work per request is fixed.
    body = {"model": model, "prompt": "red fox sun", "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


async def send(client: httpx.AsyncClient, url: str, body: dict) -> Sample:
    started = time.perf_counter()
    ttft, tokens = math.nan, 0
    try:
        if body.get("stream"):
            async with client.stream("POST", url, json=body) as r:
                if r.status_code != 200:
                    return Sample(False, time.perf_counter() - started, math.nan, 0)
                async for line in r.aiter_lines():
                    if not line.startswith("data:") or line.endswith("[DONE]"):
                        continue
                    payload = json.loads(line[5:])
                    if payload.get("choices") and math.isnan(ttft):
                        ttft = time.perf_counter() - started
                    if payload.get("usage"):
                        tokens = payload["usage"]["completion_tokens"]
        else:
            r = await client.post(url, json=body)
            if r.status_code != 200:
                return Sample(False, time.perf_counter() - started, math.nan, 0)
            tokens = r.json()["usage"]["completion_tokens"]
            ttft = time.perf_counter() - started
    except httpx.HTTPError:
        return Sample(False, time.perf_counter() - started, math.nan, 0)
    return Sample(True, time.perf_counter() - started, ttft, tokens)


async def _load(url: str, bodies: list[dict], concurrency: int,
                headers: dict | None) -> tuple[list[Sample], float]:
    queue = list(reversed(bodies))
    samples: list[Sample] = []
    async with httpx.AsyncClient(timeout=300, headers=headers) as client:
        async def worker():
            while queue:
                samples.append(await send(client, url, queue.pop()))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return samples, time.perf_counter() - started


def load(url: str, bodies: list[dict], concurrency: int,
         headers: dict | None = None) -> tuple[list[Sample], float]:
    """Send ``bodies`` to ``url`` with ``concurrency`` in flight (and ``headers``, e.g. a tenant's key); the
    samples and the wall time."""
    return asyncio.run(_load(url, bodies, concurrency, headers))


def summary(samples: list[Sample], wall: float) -> dict:
    """Counts, latency percentiles (ms), time to first token (ms) and rates (per second) of ``samples``
    over ``wall`` seconds; names as in docs/benchmarks.md ("Naming")."""
    ok = [s for s in samples if s.ok]
    ms = [s.latency * 1000 for s in ok]
    ttft = [s.ttft * 1000 for s in ok if not math.isnan(s.ttft)]
    return {
        "requests": len(samples), "errors": len(samples) - len(ok),
        "p50_ms": round(percentile(ms, 50), 1), "p95_ms": round(percentile(ms, 95), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "ttft_p50_ms": round(percentile(ttft, 50), 1), "ttft_p99_ms": round(percentile(ttft, 99), 1),
        "requests_per_second": round(len(ok) / wall, 3),
        "tokens_per_second": round(sum(s.output_tokens for s in ok) / wall, 2),
    }


def tpot_p50_ms(samples: list[Sample]) -> float:
    """Median time per output token after the first (ms), of streamed samples with more than one token."""
    per_token = [(s.latency - s.ttft) * 1000 / (s.output_tokens - 1) for s in samples
                 if s.ok and s.output_tokens > 1]
    return round(percentile(per_token, 50), 3)


def stack_shares(folded: str, own: str, top: int = 15) -> dict:
    """Shares of profile samples from collapsed stacks (py-spy ``--format raw``: ``frame;frame;... count`` a
    line): by the innermost frame, and by the innermost frame whose text contains ``own`` (the project's code);
    ``top`` of each, and the share of samples with any frame of ``own``."""
    import collections

    leaves, ours = collections.Counter(), collections.Counter()
    for line in folded.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        leaves[frames[-1]] += int(count)
        mine = [f for f in frames if own in f]
        if mine:
            ours[mine[-1]] += int(count)
    total = sum(leaves.values())

    def shares(counter):
        return {frame: round(n / total, 3) for frame, n in counter.most_common(top)}

    return {"samples": total, "by_leaf_share": shares(leaves) if total else {},
            "in_own_code_share": round(sum(ours.values()) / total, 3) if total else 0.0,
            "by_own_frame_share": shares(ours) if total else {}}


def side_by_side(items: list, ask, models: tuple[str, str], *, concurrency: int) -> list[tuple]:
    """``(ask(client, models[0], item), ask(client, models[1], item))`` for every item: the two one after
    the other, so both see the same machine at the same moment; both paths are warmed first.

    ``ask`` is a coroutine ``(httpx.AsyncClient, model, item) -> result``.
    """
    async def run():
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=300) as client:
            async def pair(item):
                async with gate:
                    return await ask(client, models[0], item), await ask(client, models[1], item)
            await pair(items[0])
            return await asyncio.gather(*(pair(i) for i in items))

    return asyncio.run(run())
