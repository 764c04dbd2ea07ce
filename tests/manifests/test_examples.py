"""Example fleets load with the CLI's parser and fit the CRD schema that the API server applies;
broken manifests fail that schema at the field they break."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from serving.api.documents import load_fleet_file
from tests.manifests.conftest import ROOT, crd_text
from tests.unit.fleets import DELETE, set_path

EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
LARGE = ROOT / "manifests" / "examples" / "large.yaml"


def closed(node):
    """A copy of a schema where objects with declared properties refuse unknown fields.

    The API server prunes unknown fields silently; here they should fail instead.
    """
    if isinstance(node, list):
        return [closed(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: closed(v) for k, v in node.items()}
    if "properties" in out:
        out.setdefault("additionalProperties", False)
    return out


@cache
def validator() -> OAS30Validator:
    crd = yaml.safe_load(crd_text())
    (version,) = crd["spec"]["versions"]
    return OAS30Validator(closed(copy.deepcopy(version["schema"]["openAPIV3Schema"])))


def field_path(error) -> str:
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else ("." if path else "") + str(part)
    return path


def schema_errors(manifest: dict) -> list[tuple[str, str]]:
    return sorted((field_path(e), e.message) for e in validator().iter_errors(manifest))


def test_there_are_examples():
    assert {p.name for p in EXAMPLES} >= {"quickstart.yaml", "large.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_a_valid_fleet(path: Path):
    load_fleet_file(path)  # raises FleetSpecError naming every problem
    manifest = yaml.safe_load(path.read_text())
    assert manifest["apiVersion"] == "slmfleet.io/v1alpha1" and manifest["kind"] == "ModelFleet"
    assert schema_errors(manifest) == []


def test_large_example_is_large():
    spec = load_fleet_file(LARGE)
    assert len(spec.base_models) == 2 and all(b.resources.gpu >= 1 for b in spec.base_models)
    assert len(spec.adapters) >= 12
    assert sum(len(a.versions) > 1 for a in spec.adapters) >= 4
    assert len(spec.routes) >= 12
    weights = {r.name: sorted(t.weight for t in r.targets) for r in spec.routes}
    assert [10, 90] in weights.values() and [50, 50] in weights.values()
    assert any(t.base_model for r in spec.routes for t in r.targets)


def test_schema_accepts_explicit_nulls_where_nullable():
    manifest = yaml.safe_load(LARGE.read_text())
    manifest["spec"]["routes"][0]["targets"] = [{"baseModel": "llama-3-2-1b", "adapter": None, "version": None}]
    manifest["spec"]["baseModels"][0]["engine"]["maxModelLen"] = None
    assert schema_errors(manifest) == []




@pytest.mark.parametrize("path,value,field,words", [
    (("spec", "baseModels", 0, "engine", "maxLora"), 8, "spec.baseModels[0].engine", "'maxLora' was unexpected"),
    (("spec", "rotes"), [], "spec", "'rotes' was unexpected"),
    (("spec", "baseModels", 1, "autoscaling", "maxReplicas"), "four", "spec.baseModels[1].autoscaling.maxReplicas",
     "is not of type 'integer'"),
    (("spec", "routes", 0, "targets", 0, "weight"), 150, "spec.routes[0].targets[0].weight",
     "150 is greater than the maximum of 100"),
    (("spec", "routes", 0, "targets", 1, "weight"), -10, "spec.routes[0].targets[1].weight", "less than the minimum"),
    (("spec", "adapters", 0, "versions", 0, "source"), DELETE, "spec.adapters[0].versions[0]",
     "'source' is a required property"),
    (("spec", "routes"), DELETE, "spec", "'routes' is a required property"),
    (("spec", "adapters", 2, "name"), "Summarizer_V2", "spec.adapters[2].name", "does not match"),
    (("spec", "baseModels", 0, "engine", "dtype"), "fp8", "spec.baseModels[0].engine.dtype", "is not one of"),
    (("spec", "adapters", 0, "versions", 0, "sha256"), "ABC123", "spec.adapters[0].versions[0].sha256",
     "does not match"),
    (("spec", "baseModels", 0, "resources", "gpu"), 1.5, "spec.baseModels[0].resources.gpu",
     "is not of type 'integer'"),
    (("spec", "routes"), [], "spec.routes", "should be non-empty"),
], ids=["unknown-field", "unknown-spec-field", "wrong-type", "weight-over-100", "negative-weight", "missing-source",
        "missing-routes", "name-pattern", "dtype-enum", "sha256-pattern", "fractional-gpu", "no-routes"])
def test_broken_manifest_fails_the_crd_schema_at_its_field(path, value, field, words):
    manifest = yaml.safe_load(LARGE.read_text())
    set_path(manifest, path, value)
    errors = schema_errors(manifest)
    assert any(f == field and words in m for f, m in errors), f"expected {field}: ...{words}...; got {errors}"
