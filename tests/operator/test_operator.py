"""The operator's lifecycle through the Kubernetes API emulator."""

import logging

import kmock
import yaml
from ray.serve.schema import ServeDeploySchema

from tests.operator.conftest import FLEETS, RAYSERVICES, ROOT, events, quickstart
from tests.waiting import eventually_async


async def get(api, path):
    resp = await api.get(path)
    return resp.json() if resp.status_code == 200 else None


async def _is_none(value):
    return await value is None


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
    fleet = await eventually_async(lambda: reconciled(api))
    rs = await get(api, f"{RAYSERVICES}/quickstart")
    assert rs["metadata"]["ownerReferences"] == [{
        "apiVersion": "slmfleet.io/v1alpha1", "kind": "ModelFleet", "name": "quickstart",
        "uid": fleet["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
    ServeDeploySchema.model_validate(yaml.safe_load(rs["spec"]["serveConfigV2"]))
    assert rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["groupName"] == "tiny-llama"
    assert rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.test/slm-fleet/serving:test"
    status = fleet["status"]
    assert status["observedGeneration"] == 1 and status["routeCount"] == 5 and status["adapterCount"] == 4
    assert status["lastChange"] == "Created"
    assert status["routes"][0] == {"name": "shout", "targets": [
        {"baseModel": "tiny-llama", "adapter": "shout", "version": "v1", "weight": 100}]}
    assert condition(fleet, "Ready")["status"] == "False"  # KubeRay has not reported yet
    assert status["rayService"] == {"name": "quickstart", "health": "Pending", "message": ""}
    assert await events(api, "Created")


def writes(k8s, *, rayservice=False, status=False):
    """How many writes the operator made to the RayService, or to the fleet's status."""
    count = 0
    for request in k8s.log:
        if request.resource is None or request.action not in (kmock.action.CREATE, kmock.action.UPDATE):
            continue
        if rayservice and request.resource.plural == "rayservices" and request.subresource is None:
            count += 1
        if status and request.resource.plural == "modelfleets" and request.subresource == "status":
            count += 1
    return count


def looks(k8s, name="quickstart"):
    """How many times the operator read the RayService ``name``."""
    return len([r for r in k8s.log if r.resource is not None and r.resource.plural == "rayservices"
                and r.action == kmock.action.FETCH and r.name == name])


async def create_and_settle(api, fleet=None):
    resp = await api.post(FLEETS, json=fleet or quickstart())
    assert resp.status_code in (200, 201), resp.text
    return await eventually_async(lambda: reconciled(api, generation=1))


async def patch_spec(api, spec, name="quickstart"):
    resp = await api.patch(f"{FLEETS}/{name}", json={"spec": spec},
                           headers={"content-type": "application/merge-patch+json"})
    assert resp.status_code == 200, resp.text


async def test_adapter_only_change_updates_serve_config_in_place(operator, api, k8s):
    fleet = await create_and_settle(api)
    before = await get(api, f"{RAYSERVICES}/quickstart")
    spec = fleet["spec"]
    spec["adapters"][0]["versions"].append({"version": "v2", "source": "s3://slmfleet-demo/adapters/shout/v2"})
    spec["routes"][0]["targets"] = [{"adapter": "shout", "version": "v1", "weight": 90},
                                    {"adapter": "shout", "version": "v2", "weight": 10}]
    await patch_spec(api, spec)
    fleet = await eventually_async(lambda: reconciled(api, generation=2))
    after = await get(api, f"{RAYSERVICES}/quickstart")
    assert after["spec"]["rayClusterConfig"] == before["spec"]["rayClusterConfig"]  # same Ray cluster
    serve = yaml.safe_load(after["spec"]["serveConfigV2"])["applications"][0]
    assert serve["args"] == yaml.safe_load(before["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert "tiny-llama:shout@v2" in serve["deployments"][1]["user_config"]["adapters"]
    assert fleet["status"]["lastChange"] == "ServeConfigUpdated"
    assert fleet["status"]["adapterCount"] == 5
    assert fleet["status"]["routes"][0]["targets"][1] == {
        "baseModel": "tiny-llama", "adapter": "shout", "version": "v2", "weight": 10}


async def test_base_model_change_rolls_the_cluster(operator, api, k8s):
    fleet = await create_and_settle(api)
    spec = fleet["spec"]
    spec["baseModels"][0]["resources"] = {"cpu": 4, "gpu": 1}
    spec["baseModels"][0]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 3}
    await patch_spec(api, spec)
    fleet = await eventually_async(lambda: reconciled(api, generation=2))
    assert fleet["status"]["lastChange"] == "ClusterUpdated"
    group = (await get(api, f"{RAYSERVICES}/quickstart"))["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert group["maxReplicas"] == 3
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


async def test_invalid_spec_changes_nothing_running_and_says_why(operator, api, k8s):
    fleet = await create_and_settle(api)
    before = await get(api, f"{RAYSERVICES}/quickstart")
    rs_writes = writes(k8s, rayservice=True)
    spec = fleet["spec"]
    spec["routes"][0]["targets"][0]["weight"] = 60
    await patch_spec(api, spec)

    async def rejected():
        f = await get(api, f"{FLEETS}/quickstart")
        c = condition(f, "Reconciled")
        return f if c and c["status"] == "False" else None

    fleet = await eventually_async(rejected)
    c = condition(fleet, "Reconciled")
    assert c["reason"] == "InvalidSpec" and c["observedGeneration"] == 2
    assert "spec.routes[0].targets: weights of route 'shout' sum to 60; they must sum to 100" in c["message"]
    assert fleet["status"]["observedGeneration"] == 1  # still describes what runs
    assert await get(api, f"{RAYSERVICES}/quickstart") == before
    assert writes(k8s, rayservice=True) == rs_writes
    invalid = await events(api, "InvalidSpec")
    assert invalid[0]["type"] == "Warning"


async def test_restart_resumes_and_an_unchanged_fleet_gets_no_writes(operator, api, k8s, caplog):
    caplog.set_level(logging.INFO, logger="kopf.objects")
    await create_and_settle(api)
    await eventually_async(lambda: writes(k8s, status=True) >= 1)
    await operator.stop()
    rs_writes, status_writes = writes(k8s, rayservice=True), writes(k8s, status=True)

    looked = looks(k8s)
    operator.start()  # resume: the same spec is reconciled again
    # Both handlers have decided: kopf logs "Resuming is processed" once the resume handler is done,
    # and the RayService's handler (called for the watch's initial listing) read it too.
    await eventually_async(lambda: any("Resuming is processed" in r.getMessage() for r in caplog.records),
                           message="the resume handler did not finish")
    await eventually_async(lambda: looks(k8s) >= looked + 2)
    assert writes(k8s, rayservice=True) == rs_writes
    assert writes(k8s, status=True) == status_writes
    assert looks(k8s) >= 2  # it did look


async def test_changes_made_while_the_operator_is_down_are_applied_on_resume(operator, api, k8s):
    fleet = await create_and_settle(api)
    await operator.stop()
    spec = fleet["spec"]
    spec["routes"].append({"name": "loud", "targets": [{"adapter": "shout", "version": "v1"}]})
    await patch_spec(api, spec)
    operator.start()
    fleet = await eventually_async(lambda: reconciled(api, generation=2))
    assert fleet["status"]["routeCount"] == 6
    serve = yaml.safe_load((await get(api, f"{RAYSERVICES}/quickstart"))["spec"]["serveConfigV2"])
    routes = serve["applications"][0]["deployments"][0]["user_config"]["fleet"]["routes"]
    assert [r["name"] for r in routes][-1] == "loud"


async def test_rayservice_health_is_mirrored_into_the_fleet(operator, api, k8s):
    await create_and_settle(api)
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints",
                                        "message": "", "lastTransitionTime": "2026-11-23T00:00:00Z"}]}}
    resp = await api.patch(f"{RAYSERVICES}/quickstart/status", json=ready,
                           headers={"content-type": "application/merge-patch+json"})
    assert resp.status_code == 200, resp.text

    async def is_ready():
        f = await get(api, f"{FLEETS}/quickstart")
        c = condition(f, "Ready")
        return f if c and c["status"] == "True" else None

    fleet = await eventually_async(is_ready)
    assert fleet["status"]["rayService"]["health"] == "Ready"
    assert condition(fleet, "Degraded")["status"] == "False"


async def test_deleting_the_fleet_leaves_cleanup_to_garbage_collection(operator, api, k8s):
    fleet = await create_and_settle(api)
    rs_writes = writes(k8s, rayservice=True)
    resp = await api.delete(f"{FLEETS}/quickstart")
    assert resp.status_code == 200
    # Gone without the operator's help: no finalizer holds it.
    await eventually_async(lambda: _is_none(get(api, f"{FLEETS}/quickstart")), message="the fleet is still there")
    # The RayService is owned by the fleet; a real API server's garbage collector deletes it
    # (see the e2e suite). The operator neither recreates nor touches it.
    rs = await get(api, f"{RAYSERVICES}/quickstart")
    assert rs["metadata"]["ownerReferences"][0]["uid"] == fleet["metadata"]["uid"]
    assert writes(k8s, rayservice=True) == rs_writes


async def test_a_fleet_with_tenants_gets_its_keys_mounted_and_an_internal_key_secret(operator, api, k8s):
    import base64

    from serving.api.keys import key_sha256

    doc = yaml.safe_load((ROOT / "manifests/examples/tenants.yaml").read_text())
    doc["metadata"] = {"name": "teams", "namespace": "default"}
    doc["spec"]["tenancy"] = {"keysSecret": {"name": "team-keys", "key": "keys.yaml"}}
    resp = await api.post(FLEETS, json=doc)
    assert resp.status_code in (200, 201), resp.text
    fleet = await eventually_async(lambda: reconciled(api, "teams"))
    secret = await get(api, "/api/v1/namespaces/default/secrets/teams-slmfleet-internal")
    assert secret["metadata"]["ownerReferences"][0]["uid"] == fleet["metadata"]["uid"]
    key = base64.b64decode(secret["data"]["key"]).decode()
    rs = await get(api, f"{RAYSERVICES}/teams")
    router = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]["deployments"][0]["user_config"]
    assert router["keysFile"] == "/etc/slmfleet/keys/keys.yaml"
    assert router["internalKeySha256"] == key_sha256(key) and key not in rs["spec"]["serveConfigV2"]
    head = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    assert head["volumes"] == [{"name": "slmfleet-keys", "secret": {"secretName": "team-keys", "items": [
        {"key": "keys.yaml", "path": "keys.yaml"}]}}]
    assert head["containers"][0]["volumeMounts"][0]["mountPath"] == "/etc/slmfleet/keys"
    # The open quickstart fleet has neither.
    await create_and_settle(api)
    open_rs = await get(api, f"{RAYSERVICES}/quickstart")
    assert "keysFile" not in open_rs["spec"]["serveConfigV2"] and "internalKeySha256" not in \
        open_rs["spec"]["serveConfigV2"]
