"""The scale fleet is what issue 15 asks of it: three bases of different families, 48+ adapter versions with routes,
fewer adapter slots per replica than adapters in use, and a Zipf popularity that spreads hot adapters over bases."""

from __future__ import annotations

import collections
import random

from serving.api.fleet import parse_fleet
from serving.local.family_assets import BY_BASE
from serving.local.scale_fleet import adapter_routes, scale_fleet, zipf_sequence, zipf_weights
from serving.render.serve_config import base_deployment_name, serve_config


def test_the_scale_fleet_is_dozens_of_versions_over_three_families():
    data = scale_fleet("bucket")
    spec = parse_fleet(data)  # a valid fleet
    assert len({BY_BASE[b.name].architecture for b in spec.base_models}) == 3
    versions = [(a.name, v.version) for a in spec.adapters for v in a.versions]
    assert len(versions) >= 48
    assert len(adapter_routes(data)) == len(versions)
    for base in spec.base_models:
        in_use = sum(1 for a in spec.adapters if a.base_model == base.name)
        assert base.engine.resident_adapters < in_use
        assert base.engine.max_loras < base.engine.resident_adapters
    deployments = {d["name"] for d in serve_config(spec)["applications"][0]["deployments"]}
    assert {base_deployment_name(b.name) for b in spec.base_models} <= deployments


def test_replicas_are_fixed_per_base():
    spec = parse_fleet(scale_fleet("bucket", replicas=2))
    assert {(b.autoscaling.min_replicas, b.autoscaling.max_replicas) for b in spec.base_models} == {(2, 2)}


def test_zipf_popularity_is_seeded_and_gives_every_base_a_hot_adapter():
    routes = adapter_routes(scale_fleet("bucket"))
    weights = zipf_weights(routes, seed=3)
    assert weights == zipf_weights(routes, seed=3)
    assert sorted(weights.values(), reverse=True)[:3] == [1, 1 / 2, 1 / 3]
    top = sorted(weights, key=weights.get, reverse=True)[:12]
    assert len({name.rsplit("-lora-", 1)[0] for name in top}) == 3

    counts = collections.Counter(zipf_sequence(weights, 4000, random.Random(1)))
    hottest, coldest = max(weights, key=weights.get), min(weights, key=weights.get)
    assert counts[hottest] > 20 * max(counts[coldest], 1)
