"""Generated files that are committed must match a fresh generation (`make manifests`)."""

from __future__ import annotations

import pytest
import yaml

from tests.manifests.conftest import CHART, NAMESPACE, ROOT, assert_valid_for_kubernetes, crd_text

REGENERATE = "stale: run `make manifests` and commit the result"
INSTALL = ROOT / "manifests" / "install.yaml"


@pytest.mark.parametrize("path", ["manifests/crds/modelfleets.yaml", "helm/slm-fleet/crds/modelfleets.yaml"])
def test_crd_files_match_the_spec(path):
    assert (ROOT / path).read_text() == crd_text(), f"{path} is {REGENERATE}"


def test_install_yaml_is_the_chart_rendered_with_defaults(helm):
    fresh = helm.template(include_crds=True)
    committed = INSTALL.read_text()
    assert committed.endswith(fresh), f"manifests/install.yaml is {REGENERATE}"
    header = [d for d in yaml.safe_load_all(committed[: len(committed) - len(fresh)]) if d]
    assert header == [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}]


def test_install_yaml_objects_are_valid_and_in_order():
    objects = [d for d in yaml.safe_load_all(INSTALL.read_text()) if d]
    kinds = [o["kind"] for o in objects]
    # kubectl apply -f goes in file order: namespace and CRD before what uses them.
    assert kinds[:2] == ["Namespace", "CustomResourceDefinition"]
    assert kinds.index("Deployment") > kinds.index("ServiceAccount")
    for obj in objects:
        assert_valid_for_kubernetes(obj, f"{obj['kind']}/{obj['metadata']['name']}")
        if obj["kind"] not in ("Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == NAMESPACE


def test_chart_ships_the_crd_and_names_it():
    crd = yaml.safe_load((CHART / "crds" / "modelfleets.yaml").read_text())
    assert crd["metadata"]["name"] == "modelfleets.slmfleet.io"
    assert crd["spec"]["names"]["shortNames"] == ["mf"]
