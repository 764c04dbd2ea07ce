"""The SLM families as bases: a tiny generated base of each architecture (serving.local.family_assets) serves
through a route of the fleet, and its LoRA adapter, through another route, changes the output.

This is the architecture with a tiny generated config, on vLLM CPU: not the real checkpoints' tokenizers, chat
templates or tool parsers (the README's family table says so). The families are a fleet of their own, a second
Serve application (``/families``) beside the session fleet, so that the session fleet's engines keep running
(adding bases to a fleet restarts its engines). Three bases at a time: all six at once beside the session fleet
outgrow this machine's memory (Ray's memory monitor then kills workers). The first three are the scale fleet
(serving.local.scale_fleet): 48 adapter versions over them, which a test sends Zipf traffic to.
"""

from __future__ import annotations

import collections
import random
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.adapters.store import AdapterStore
from serving.api.fleet import parse_fleet
from serving.api.keys import key_sha256
from serving.local import family_assets
from serving.local import runtime as local_runtime
from serving.local.family_assets import FAMILIES
from serving.local.scale_fleet import (
    RESIDENT,
    SCALE_BASES,
    adapter_names,
    adapter_routes,
    scale_fleet,
    stage,
    zipf_sequence,
    zipf_weights,
)
from serving.render.serve_config import serve_config
from tests.stack.conftest import ASSETS, BUCKET

PROMPT = "red green blue"
APP, PREFIX = "families", "/families"
# The first batch is the scale fleet (16 adapters over each base); the second one adapter each.
SCALE = scale_fleet(BUCKET)
REST = tuple(f.base for f in FAMILIES if f.base not in SCALE_BASES)
BATCHES = {SCALE_BASES: SCALE, REST: scale_fleet(BUCKET, bases=REST, adapters=1, max_loras=1, resident=1)}


def families_app(spec: dict) -> dict:
    """The Serve application of a fleet of families, under /families."""
    config = serve_config(parse_fleet(spec), app_name=APP, route_prefix=PREFIX,
                          internal_key_sha256=key_sha256(local_runtime.internal_key()))
    return config["applications"][0]


@pytest.fixture(scope="module")
def families(fleet, assets):
    summary = family_assets.ensure(ASSETS.parent / "families", assets["base"])
    store = AdapterStore()
    stage(store, summary["families"], BUCKET)
    stage(store, summary["families"], BUCKET, bases=REST, adapters=1)
    deployed = []

    def serve(base: str) -> None:
        """Deploy the batch that holds ``base`` beside the session fleet (the previous batch goes)."""
        batch = next(b for b in BATCHES if base in b)
        if deployed != [batch]:
            # Serve's config is declarative over all applications: the session fleet's is deployed unchanged.
            local_runtime.deploy(fleet.spec, port=fleet.port, extra_apps=(families_app(BATCHES[batch]),))
            deployed[:] = [batch]

    yield serve
    fleet.deploy(fleet.spec_data)  # without the families application (deploy waits until it is deleted)


def test_the_scale_fleet_serves_zipf_traffic_over_its_48_versions(families, fleet, client):
    """Every version of the scale fleet answers through its route, then Zipf traffic over all of them: more
    versions than a replica keeps, so versions are evicted and loaded again, and none fails."""
    families(SCALE_BASES[0])
    routes = adapter_routes(SCALE)
    sequence = routes + zipf_sequence(zipf_weights(routes, seed=1), 96, random.Random(1))
    loads_before = fleet.counter("slmfleet_adapter_loads_total", outcome="loaded")

    def ask(route: str) -> tuple[str, int, str]:
        r = client.post(f"{PREFIX}/v1/completions", json={"model": route, "prompt": PROMPT, "max_tokens": 4,
                                                          "temperature": 0})
        return route, r.status_code, r.headers.get("X-SLMFleet-Base-Model", r.text)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, sequence))
    assert [a for a in answers if a[1] != 200] == []
    assert all(route.startswith(f"{base}-lora-") for route, _, base in answers)
    time.sleep(2)  # replicas report metrics every 0.5 s
    loads = fleet.counter("slmfleet_adapter_loads_total", outcome="loaded") - loads_before
    # Each version loaded once at least; more loads than versions because a replica keeps only RESIDENT.
    assert len(routes) < loads < len(sequence)
    text = httpx.get(fleet.metrics_url, timeout=30).text
    resident = collections.Counter(
        s.labels["base_model"] for f in text_string_to_metric_families(text) for s in f.samples
        if s.name == "ray_slmfleet_adapter_resident" and s.value == 1 and s.labels["base_model"] in SCALE_BASES)
    assert set(resident) == set(SCALE_BASES)
    assert max(resident.values()) <= RESIDENT


@pytest.mark.parametrize("family", FAMILIES, ids=[f.architecture for f in FAMILIES])
def test_each_family_serves_and_its_adapter_changes_the_output(families, client, family):
    families(family.base)

    def complete(model: str) -> str:
        r = client.post(f"{PREFIX}/v1/completions", json={"model": model, "prompt": PROMPT, "max_tokens": 8,
                                                          "temperature": 0})
        assert r.status_code == 200, f"{family.architecture} ({model}): {r.text}"
        assert r.headers["X-SLMFleet-Base-Model"] == family.base
        return r.json()["choices"][0]["text"]

    base, adapted = complete(family.base), complete(adapter_names(family.base)[0])
    assert adapted != base, f"{family.architecture}: the adapter did not change the output ({base!r})"
