"""On a real API server: admission by the CRD schema, server-side apply, RBAC as the chart grants
it, and garbage collection of the RayService with its fleet."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from tests.e2e.conftest import kubectl
from tests.waiting import eventually

QUICKSTART = yaml.safe_load((Path(__file__).parents[2] / "manifests/examples/quickstart.yaml").read_text())


def condition(obj, type_):
    return next((c for c in (obj or {}).get("status", {}).get("conditions", []) if c["type"] == type_), None)


def reconciled(cluster, name, generation):
    fleet = cluster.get("modelfleet", name)
    c = condition(fleet, "Reconciled")
    ok = c and c["status"] == "True" and fleet["status"].get("observedGeneration") == generation
    return fleet if ok else None


def test_the_api_server_rejects_a_manifest_the_crd_schema_forbids(cluster):
    broken = copy.deepcopy(QUICKSTART)
    broken["metadata"]["name"] = "broken"
    broken["spec"]["routes"][0]["targets"][0]["weight"] = 150
    done = cluster.apply(broken)
    assert done.returncode != 0
    assert "spec.routes[0].targets[0].weight" in done.stderr and "100" in done.stderr
    typo = copy.deepcopy(QUICKSTART)
    typo["metadata"]["name"] = "typo"
    typo["spec"]["rotes"] = []
    done = cluster.apply(typo)  # server-side apply validates fields strictly
    assert done.returncode != 0 and "rotes" in done.stderr
    assert cluster.get("modelfleet", "broken") is None and cluster.get("modelfleet", "typo") is None


def test_apply_reconcile_update_and_garbage_collection(cluster, operator):
    assert cluster.apply(QUICKSTART).returncode == 0
    fleet = eventually(lambda: reconciled(cluster, "quickstart", 1), timeout=60, interval=1)
    rs = cluster.get("rayservice", "quickstart")
    assert rs["metadata"]["ownerReferences"][0]["uid"] == fleet["metadata"]["uid"]
    table = kubectl("get", "mf", "-n", cluster.namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "ROUTES", "ADAPTERS", "AGE"]
    name, ready, routes, adapters, _age = table[1].split()
    assert (name, routes, adapters) == ("quickstart", "4", "3") and ready in ("True", "False")  # True with KubeRay

    # An adapter-only change, applied server-side by another field manager: serveConfigV2 in place.
    changed = copy.deepcopy(QUICKSTART)
    changed["spec"]["adapters"][0]["versions"].append({"version": "v2", "source": "s3://slmfleet-demo/adapters/shout/v2"})
    changed["spec"]["routes"][0]["targets"] = [{"adapter": "shout", "version": "v1", "weight": 90},
                                               {"adapter": "shout", "version": "v2", "weight": 10}]
    assert cluster.apply(changed).returncode == 0
    fleet = eventually(lambda: reconciled(cluster, "quickstart", 2), timeout=60, interval=1)
    assert fleet["status"]["lastChange"] == "ServeConfigUpdated"
    after = cluster.get("rayservice", "quickstart")
    assert after["spec"]["rayClusterConfig"] == rs["spec"]["rayClusterConfig"]

    # Deleting the fleet deletes its RayService: the API server's garbage collector follows the ownerReference.
    kubectl("delete", "modelfleet", "quickstart", "-n", cluster.namespace, "--wait=true")
    eventually(lambda: cluster.get("rayservice", "quickstart") is None, timeout=120, interval=1)


def test_the_chart_grants_the_operator_no_more_than_it_uses(cluster):
    who = f"system:serviceaccount:{cluster.namespace}:{cluster.account}"

    def can(verb, resource, namespace=cluster.namespace, *extra):
        args = ["auth", "can-i", verb, resource, "--as", who, "-n", namespace, *extra]
        return kubectl(*args, check=False).stdout.strip() == "yes"

    assert can("create", "rayservices.ray.io")
    assert can("patch", "modelfleets.slmfleet.io", cluster.namespace, "--subresource=status")
    assert not can("delete", "rayservices.ray.io")
    assert not can("get", "secrets")
    assert not can("create", "rayservices.ray.io", "default")  # only the watched namespace
