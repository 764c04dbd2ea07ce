"""The flywheel benchmark: PII kept out of S3, what capture costs a request, and the loop closed.

- PII: values generated here (not the recognizers' own examples) are planted in prompts, in tool
  arguments, and split across two fields; every object the router wrote is then searched for them.
  ``pii_leaks`` counts planted values found (0 is the goal), ``pii_recall`` per entity the share
  not found.
- Capture's cost: two routes over the same adapter, one captured and one not, asked in turns under
  load; the p50 and p99 differences.
- The loop (``serving.local.flywheel_loop``) on the bench's Ray: the figures it returns, plus the
  clusters' purity against the task each captured request was of (tool call or words).
"""

from __future__ import annotations

import copy
import gzip
import random
import string
import time

from load_tests.bench.measure import percentile, side_by_side
from load_tests.bench.stack import THROUGHPUT_ADAPTERS

PII_CAPTURES = "s3://slmfleet-bench/pii-captures"


def _luhn(prefix: str, length: int, rng: random.Random) -> str:
    digits = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return digits + str((10 - total % 10) % 10)


def _iban(country: str, bban: str) -> str:
    moved = bban + country + "00"
    number = int("".join(str(int(c, 36)) for c in moved))
    return f"{country}{98 - number % 97:02d}{bban}"


def planted(n: int = 6, seed: int = 7) -> dict[str, list[str]]:
    """Values of each entity, generated (valid checksums where the entity has one)."""
    rng = random.Random(seed)
    first = ["noor", "tomasz", "ifeoma", "kaito", "ingrid", "mateus", "zainab", "arvid"]
    domains = ["fjordpost.no", "harbour-lane.co.uk", "kestrel.io", "mailbox.pt", "quarry.dev", "lumen.ca"]
    return {
        "EMAIL_ADDRESS": [f"{rng.choice(first)}.{rng.randint(10, 99)}@{rng.choice(domains)}" for _ in range(n)],
        "PHONE_NUMBER": [f"({rng.randint(201, 989)}) {rng.randint(201, 989)}-{rng.randint(1000, 9999)}"
                         for _ in range(n)],
        "CREDIT_CARD": [_luhn(rng.choice(["4", "51", "52", "53", "54", "55"]), 16, rng) for _ in range(n)],
        # German IBANs (an 18-digit BBAN), their check digits computed
        "IBAN_CODE": [_iban("DE", "".join(rng.choice(string.digits) for _ in range(18))) for _ in range(n)],
        "IP_ADDRESS": [".".join(str(rng.randint(11, 223)) for _ in range(4)) for _ in range(n)],
        "US_SSN": [f"{rng.randint(101, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}" for _ in range(n)],
    }


def pii_requests(values: dict[str, list[str]]) -> list[tuple[str, str, dict]]:
    """(entity, value, request): each value in a prompt, in tool arguments, or split across two fields."""
    tool = {"type": "function", "function": {"name": "file_note", "parameters": {"type": "object", "properties": {
        "to": {"type": "string"}, "head": {"type": "string"}, "tail": {"type": "string"}}}}}
    out = []
    for entity, items in values.items():
        for i, value in enumerate(items):
            if i % 3 == 0:
                messages = [{"role": "user", "content": f"please note {value} for later"}]
            elif i % 3 == 1:
                messages = [{"role": "user", "content": "file it"},
                            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                             "function": {"name": "file_note", "arguments": f'{{"to": "{value}"}}'}}]},
                            {"role": "tool", "tool_call_id": "c1", "content": "filed"},
                            {"role": "user", "content": "thanks"}]
            else:
                half = len(value) // 2
                messages = [{"role": "user", "content": "file it"},
                            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                             "function": {"name": "file_note", "arguments":
                                          f'{{"head": "{value[:half]}", "tail": "{value[half:]}"}}'}}]},
                            {"role": "tool", "tool_call_id": "c1", "content": "filed"},
                            {"role": "user", "content": "thanks"}]
            out.append((entity, value, {"messages": messages, "tools": [tool], "max_tokens": 4}))
    return out


def _with_capture(spec_data: dict) -> dict:
    data = copy.deepcopy(spec_data)
    target = [{"adapter": THROUGHPUT_ADAPTERS[0], "version": "v1"}]
    data["routes"] += [{"name": "cap-on", "targets": target}, {"name": "cap-off", "targets": target,
                                                               "capture": {"enabled": False}}]
    data["capture"] = {"destination": PII_CAPTURES, "sampleRate": 1, "flushInterval": "1s", "routes": ["cap-on"]}
    return data


def _raw_text(store, prefix: str) -> str:
    from serving.api.fields import parse_s3_uri

    bucket, key = parse_s3_uri(prefix)
    texts = []
    for page in store.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        for obj in page.get("Contents", []):
            body = store.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            texts.append(gzip.decompress(body).decode("utf-8", "replace"))
    return "\n".join(texts)


def pii_and_capture_cost(stack, *, requests: int = 200, concurrency: int = 4) -> dict:
    import httpx

    from serving.adapters.store import AdapterStore

    stack.redeploy(_with_capture(stack.spec_data))
    try:
        values = planted()
        asks = pii_requests(values)
        with httpx.Client(timeout=120) as http:
            statuses = [http.post(f"{stack.url}/v1/chat/completions", json={"model": "cap-on", **body}).status_code
                        for _, _, body in asks]
        time.sleep(4)  # flushed every second
        raw = _raw_text(AdapterStore(), PII_CAPTURES)
        found = {entity: [v for v in items if v in raw or v.replace(" ", "") in raw.replace(" ", "")]
                 for entity, items in values.items()}
        # A value split across fields leaks if either half survives where it was planted.
        split_leaks = sum(1 for entity, value, body in asks if "head" in str(body)
                          and (value[:len(value) // 2] in raw or value[len(value) // 2:] in raw))

        async def ask(client, model, i):
            started = time.perf_counter()
            r = await client.post(f"{stack.url}/v1/chat/completions", json={
                "model": model, "max_tokens": 8, "temperature": 0,
                "messages": [{"role": "user", "content": f"red fox sun {i}"}]})
            return r.status_code, time.perf_counter() - started

        pairs = side_by_side(list(range(requests)), ask, ("cap-on", "cap-off"), concurrency=concurrency)
        on = [s * 1000 for (code, s), _ in pairs if code == 200]
        off = [s * 1000 for _, (code, s) in pairs if code == 200]
    finally:
        stack.redeploy(stack.spec_data)
    planted_n = sum(len(v) for v in values.values())
    return {
        "pii_planted": planted_n, "pii_requests_ok": sum(s == 200 for s in statuses),
        "pii_leaks": sum(len(v) for v in found.values()) + split_leaks,
        "pii_recall": {e: round(1 - len(found[e]) / len(values[e]), 4) for e in values},
        "pii_leaked_examples": [v for vs in found.values() for v in vs][:5],
        "capture_requests": len(pairs),
        "capture_on_minus_off_p50_ms": round(percentile(on, 50) - percentile(off, 50), 2),
        "capture_on_minus_off_p99_ms": round(percentile(on, 99) - percentile(off, 99), 2),
    }


def loop(stack) -> dict:
    import os

    from serving.flywheel import artifacts
    from serving.flywheel.clusters import NOISE, purity
    from serving.flywheel.records import CaptureStore
    from serving.local.flywheel_loop import CAPTURES, WORK, run_loop, served_on_running_ray

    try:
        figures = run_loop(workdir=".bench/flywheel-loop", serving=served_on_running_ray(stack.port, stack.metrics_url),
                           s3_url=os.environ["AWS_ENDPOINT_URL"])
    finally:
        stack.redeploy(stack.spec_data)
    records = list(CaptureStore().read(CAPTURES, route="assistant"))
    report = artifacts.get_json(f"{WORK}/clusters/clusters.json", what="clusters")
    label = {rid: c["cluster"] for c in report["clusters"] for rid in c["recordIds"]}
    truth = ["tools" if (r["request"].get("tools")) else "words" for r in records]
    return {"records_captured": len(records), "clusters_found": len(report["clusters"]),
            "cluster_purity": round(purity([label.get(r["id"], NOISE) for r in records], truth), 4),
            "noise_share": report["noise"]["share"], **figures}


def flywheel(stack) -> dict:
    return {**pii_and_capture_cost(stack), **loop(stack)}
