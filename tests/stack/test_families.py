"""The SLM families as bases: a tiny generated base of each architecture (serving.local.family_assets) serves
through a route of the fleet, and its LoRA adapter, through another route, changes the output.

This is the architecture with a tiny generated config, on vLLM CPU: not the real checkpoints' tokenizers, chat
templates or tool parsers (the README's family table says so). The families are a fleet of their own, a second
Serve application (``/families``) beside the session fleet, so that the session fleet's engines keep running
(adding bases to a fleet restarts its engines). Three bases at a time: all six at once beside the session fleet
outgrow this machine's memory (Ray's memory monitor then kills workers).
"""

from __future__ import annotations

import pytest

from serving.adapters.store import AdapterStore
from serving.api.fleet import parse_fleet
from serving.api.keys import key_sha256
from serving.local import family_assets
from serving.local import runtime as local_runtime
from serving.local.family_assets import FAMILIES
from serving.render.serve_config import serve_config
from tests.stack.conftest import ASSETS, BUCKET

PROMPT = "red green blue"
APP, PREFIX = "families", "/families"
BATCHES = [FAMILIES[i:i + 3] for i in range(0, len(FAMILIES), 3)]


def families_spec(families) -> dict:
    spec = {"baseModels": [], "adapters": [], "routes": []}
    for f in families:
        spec["baseModels"].append({
            "name": f.base, "source": f"s3://{BUCKET}/models/{f.base}",
            # One adapter and a short context: small engines.
            "engine": {"maxLoras": 1, "maxLoraRank": 8, "maxModelLen": 128, "dtype": "float32", "enforceEager": True},
            "resources": {"cpu": 0.5}})
        spec["adapters"].append({"name": f"{f.base}-lora", "baseModel": f.base, "versions": [
            {"version": "v1", "source": f"s3://{BUCKET}/adapters/{f.base}-lora/v1"}]})
        spec["routes"] += [{"name": f.base, "targets": [{"baseModel": f.base}]},
                           {"name": f"{f.base}-lora", "targets": [{"adapter": f"{f.base}-lora", "version": "v1"}]}]
    return spec


def families_app(families) -> dict:
    """The Serve application of a fleet of ``families``, under /families."""
    config = serve_config(parse_fleet(families_spec(families)), app_name=APP, route_prefix=PREFIX,
                          internal_key_sha256=key_sha256(local_runtime.internal_key()))
    return config["applications"][0]


@pytest.fixture(scope="module")
def families(fleet, assets):
    summary = family_assets.ensure(ASSETS.parent / "families", assets["base"])
    store = AdapterStore()
    for f in FAMILIES:
        paths = summary["families"][f.base]
        store.upload_dir(paths["base"], f"s3://{BUCKET}/models/{f.base}")
        store.push(paths["adapter"], adapter=f"{f.base}-lora", version="v1", to=f"s3://{BUCKET}/adapters")
    deployed = []

    def serve(family):
        """Deploy the batch that holds ``family`` beside the session fleet (the previous batch goes)."""
        batch = next(b for b in BATCHES if family in b)
        if deployed != [batch]:
            # Serve's config is declarative over all applications: the session fleet's is deployed unchanged.
            local_runtime.deploy(fleet.spec, port=fleet.port, extra_apps=(families_app(batch),))
            deployed[:] = [batch]

    yield serve
    fleet.deploy(fleet.spec_data)  # without the families application


@pytest.mark.parametrize("family", FAMILIES, ids=[f.architecture for f in FAMILIES])
def test_each_family_serves_and_its_adapter_changes_the_output(families, client, family):
    families(family)

    def complete(model: str) -> str:
        r = client.post(f"{PREFIX}/v1/completions", json={"model": model, "prompt": PROMPT, "max_tokens": 8,
                                                          "temperature": 0})
        assert r.status_code == 200, f"{family.architecture} ({model}): {r.text}"
        assert r.headers["X-SLMFleet-Base-Model"] == family.base
        return r.json()["choices"][0]["text"]

    base, adapted = complete(family.base), complete(f"{family.base}-lora")
    assert adapted != base, f"{family.architecture}: the adapter did not change the output ({base!r})"
