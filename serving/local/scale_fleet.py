"""The scale fleet: dozens of adapter versions over three bases of different families, with fewer adapter slots
per replica than adapters in use, and the Zipf popularity its traffic follows. The scale stack test serves it
(tests/stack/test_families.py) and the ``scale`` benchmark measures it (load_tests/bench/benchmarks.py).

Each base is a tiny family base (serving.local.family_assets); its adapters are that family's LoRA adapter pushed
under many names, which is what placement and loading see: every name is its own adapter version to fetch, load
and keep resident, whatever its weights.
"""

from __future__ import annotations

import random

SCALE_BASES = ("tiny-llama3", "tiny-qwen3", "tiny-phi3")
"""Three families of different architectures (Llama, Qwen3, Phi-3's fused attention)."""
ADAPTERS_PER_BASE = 16
MAX_LORAS = 2
"""Adapters one engine batch holds (vLLM max_loras)."""
RESIDENT = 8
"""Adapter versions one replica keeps loaded (vLLM max_cpu_loras): half of a base's adapters."""


def adapter_names(base: str, adapters: int = ADAPTERS_PER_BASE) -> list[str]:
    return [f"{base}-lora-{i:02d}" for i in range(adapters)]


def scale_fleet(bucket: str, *, bases=SCALE_BASES, adapters: int = ADAPTERS_PER_BASE, replicas: int = 1,
                max_loras: int = MAX_LORAS, resident: int = RESIDENT, cpu: float = 0.5) -> dict:
    """The fleet spec: per base a route to the base itself (named as the base) and ``adapters`` adapters with
    one version ``v1`` and a route each (named as the adapter), at ``replicas`` fixed replicas per base."""
    spec = {"baseModels": [], "adapters": [], "routes": []}
    for base in bases:
        spec["baseModels"].append({
            "name": base, "source": f"s3://{bucket}/models/{base}",
            # A short context and a small KV cache: engines small enough for several on two cores.
            "engine": {"maxLoras": min(max_loras, resident), "maxCpuLoras": resident, "maxLoraRank": 8,
                       "maxModelLen": 128, "kvCacheMemory": "64Mi", "dtype": "float32",
                       "enforceEager": True},
            "resources": {"cpu": cpu},
            "autoscaling": {"minReplicas": replicas, "maxReplicas": replicas}})
        spec["routes"].append({"name": base, "targets": [{"baseModel": base}]})
        for name in adapter_names(base, adapters):
            spec["adapters"].append({"name": name, "baseModel": base, "versions": [
                {"version": "v1", "source": f"s3://{bucket}/adapters/{name}/v1"}]})
            spec["routes"].append({"name": name, "targets": [{"adapter": name, "version": "v1"}]})
    return spec


def adapter_routes(spec: dict) -> list[str]:
    """The routes of a scale fleet that go to an adapter, in the spec's order."""
    return [r["name"] for r in spec["routes"] if "adapter" in r["targets"][0]]


def stage(store, families: dict, bucket: str, *, bases=SCALE_BASES, adapters: int = ADAPTERS_PER_BASE) -> None:
    """Upload the bases and push each base's family adapter under every adapter name. ``families`` is
    ``family_assets.ensure(...)["families"]``; ``store`` an ``AdapterStore``."""
    for base in bases:
        paths = families[base]
        store.upload_dir(paths["base"], f"s3://{bucket}/models/{base}")
        for name in adapter_names(base, adapters):
            store.push(paths["adapter"], adapter=name, version="v1", to=f"s3://{bucket}/adapters")


def zipf_weights(names: list[str], *, s: float = 1.0, seed: int = 0) -> dict[str, float]:
    """A Zipf popularity over ``names``: the rank-r name (1-based) is asked for in proportion to 1 / r**s. The
    ranks are a seeded shuffle, so that every base has hot and cold adapters."""
    ranked = random.Random(seed).sample(names, len(names))
    return {name: 1 / (rank + 1) ** s for rank, name in enumerate(ranked)}


def zipf_sequence(weights: dict[str, float], n: int, rng: random.Random) -> list[str]:
    """``n`` names drawn with replacement by ``weights``."""
    names = list(weights)
    return rng.choices(names, [weights[name] for name in names], k=n)
