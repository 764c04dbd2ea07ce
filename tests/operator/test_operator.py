"""The operator's lifecycle through the Kubernetes API emulator."""

import yaml
from ray.serve.schema import ServeDeploySchema

from tests.operator.conftest import FLEETS, RAYSERVICES, eventually, quickstart


async def get(api, path):
    resp = await api.get(path)
    return resp.json() if resp.status_code == 200 else None


def condition(fleet, type_):
    return next((c for c in (fleet or {}).get("status", {}).get("conditions", []) if c["type"] == type_), None)


async def reconciled(api, name="quickstart", generation=None):
    fleet = await get(api, f"{FLEETS}/{name}")
    c = condition(fleet, "Reconciled")
    if c and c["status"] == "True" and (generation is None or fleet["status"].get("observedGeneration") == generation):
        return fleet
    return None


async def test_create_renders_an_owned_rayservice_and_reports_status(operator, api, k8s):
    resp = await api.post(FLEETS, json=quickstart())
    assert resp.status_code in (200, 201), resp.text
    fleet = await eventually(lambda: reconciled(api))
    rs = await get(api, f"{RAYSERVICES}/quickstart")
    assert rs["metadata"]["ownerReferences"] == [{
        "apiVersion": "slmfleet.io/v1alpha1", "kind": "ModelFleet", "name": "quickstart",
        "uid": fleet["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
    ServeDeploySchema.model_validate(yaml.safe_load(rs["spec"]["serveConfigV2"]))
    assert rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["groupName"] == "tiny-llama"
    assert rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.test/slm-fleet/serving:test"
    status = fleet["status"]
    assert status["observedGeneration"] == 1 and status["routeCount"] == 4 and status["adapterCount"] == 3
    assert status["lastChange"] == "Created"
    assert status["routes"][0] == {"name": "shout", "targets": [
        {"baseModel": "tiny-llama", "adapter": "shout", "version": "v1", "weight": 100}]}
    assert condition(fleet, "Ready")["status"] == "False"  # KubeRay has not reported yet
    assert status["rayService"] == {"name": "quickstart", "health": "Pending", "message": ""}
    events = await eventually(lambda: get(api, "/api/v1/namespaces/default/events"))
    assert any(e.get("reason") == "Created" for e in events["items"])
