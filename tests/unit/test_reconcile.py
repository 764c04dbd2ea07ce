"""What a reconcile decides, from the fleet as read and its current RayService. No API involved."""

from __future__ import annotations

import copy

import pytest

from operators.reconcile import change_kind, plan, rayservice_health
from operators.settings import OperatorSettings
from tests.unit.fleets import fleet

SETTINGS = OperatorSettings()
T0, T1 = "2026-11-23T00:00:00Z", "2026-11-23T00:05:00Z"


def modelfleet(spec=None, *, generation=1, status=None) -> dict:
    obj = {"apiVersion": "slmfleet.io/v1alpha1", "kind": "ModelFleet",
           "metadata": {"name": "f", "namespace": "ns", "uid": "uid-1", "generation": generation},
           "spec": spec if spec is not None else fleet()}
    if status is not None:
        obj["status"] = status
    return obj


def applied(p) -> dict:
    """The RayService as the API server would hold it after ``p`` was applied to nothing."""
    return copy.deepcopy(p.create)


def cond(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def settled(spec=None, generation=1):
    """A fleet reconciled once: its RayService and the fleet with the status written."""
    first = plan(modelfleet(spec, generation=generation), None, settings=SETTINGS, now=T0)
    return applied(first), modelfleet(spec, generation=generation, status=first.status)


def test_a_new_fleet_creates_its_rayservice_and_reports():
    p = plan(modelfleet(), None, settings=SETTINGS, now=T0)
    assert p.create["kind"] == "RayService" and p.patch is None
    assert p.create["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert p.event == ("Normal", "Created", "created RayService; the Ray cluster is starting")
    s = p.status
    assert (s["observedGeneration"], s["routeCount"], s["adapterCount"], s["lastChange"]) == (1, 3, 3, "Created")
    assert cond(s, "Reconciled")["status"] == "True" and cond(s, "Ready")["status"] == "False"
    assert s["rayService"] == {"name": "f", "health": "Pending", "message": ""}
    assert s["routes"][0] == {"name": "shout", "targets": [
        {"baseModel": "tiny-llama", "adapter": "shout", "version": "v1", "weight": 90},
        {"baseModel": "tiny-llama", "adapter": "shout", "version": "v2", "weight": 10}]}


def test_an_unchanged_fleet_writes_nothing():
    rs, reconciled = settled()
    again = plan(reconciled, rs, settings=SETTINGS, now=T1)
    assert (again.create, again.patch, again.status, again.event) == (None, None, None, None)


def test_kopfs_own_status_field_is_not_a_difference():
    rs, reconciled = settled()
    reconciled["status"]["kopf"] = {"progress": {}}
    assert plan(reconciled, rs, settings=SETTINGS, now=T1).status is None


@pytest.mark.parametrize("change,kind", [
    ({"routes.0.targets.0.weight": 50, "routes.0.targets.1.weight": 50}, "ServeConfigUpdated"),
    ({"adapters.1.versions": [{"version": "v1", "source": "s3://adapters/json/v1"},
                              {"version": "v2", "source": "s3://adapters/json/v2"}]}, "ServeConfigUpdated"),
    ({"routes.2.targets": [{"baseModel": "tiny-qwen"}]}, "ServeConfigUpdated"),
    ({"baseModels.0.autoscaling": {"minReplicas": 1, "maxReplicas": 3}}, "ClusterUpdated"),
    ({"baseModels.1.resources": {"cpu": 2, "gpu": 1}}, "ClusterUpdated"),
    ({"baseModels.0.engine": {"maxLoras": 4, "maxLoraRank": 8}}, "ServeConfigUpdated"),
], ids=["weights", "new-version", "retarget", "autoscaling", "resources", "engine"])
def test_a_change_patches_the_rayservice_and_says_what_it_did(change, kind):
    rs, reconciled = settled()
    changed = modelfleet(fleet(**change), generation=2, status=reconciled["status"])
    p = plan(changed, rs, settings=SETTINGS, now=T1)
    assert p.create is None and p.patch is not None
    assert p.status["lastChange"] == kind and p.status["observedGeneration"] == 2
    assert p.event[:2] == ("Normal", kind)
    if kind == "ServeConfigUpdated":  # the Ray cluster is left as it is
        assert ("rayClusterConfig" not in p.patch["spec"]
                or p.patch["spec"]["rayClusterConfig"] == rs["spec"]["rayClusterConfig"])
    assert change_kind(rs, {"spec": p.patch["spec"]}) == kind


def test_an_invalid_spec_touches_nothing_and_keeps_the_running_status():
    rs, reconciled = settled()
    broken = fleet(**{"routes.0.targets.0.weight": 60, "routes.1.targets.0.adapter": "nope"})
    p = plan(modelfleet(broken, generation=2, status=reconciled["status"]), rs, settings=SETTINGS, now=T1)
    assert p.create is None and p.patch is None
    assert p.status["observedGeneration"] == 1 and p.status["routeCount"] == 3  # still what runs
    c = cond(p.status, "Reconciled")
    assert (c["status"], c["reason"], c["observedGeneration"], c["lastTransitionTime"]) == (
        "False", "InvalidSpec", 2, T1)
    assert "spec.routes[0].targets: weights of route 'shout' sum to 70; they must sum to 100" in c["message"]
    assert "spec.routes[1].targets[0].adapter" in c["message"]
    assert p.event[0:2] == ("Warning", "InvalidSpec") and p.event[2] == c["message"]
    assert len(p.problems) == 2


def test_an_invalid_first_spec_creates_nothing():
    p = plan(modelfleet(fleet(routes=[])), None, settings=SETTINGS, now=T0)
    assert p.create is None and p.patch is None
    assert cond(p.status, "Reconciled")["reason"] == "InvalidSpec"
    assert "spec.routes" in cond(p.status, "Reconciled")["message"]


def test_fixing_the_spec_recovers():
    rs, reconciled = settled()
    bad = plan(modelfleet(fleet(routes=[]), generation=2, status=reconciled["status"]), rs, settings=SETTINGS, now=T1)
    fixed = plan(modelfleet(fleet(), generation=3, status=bad.status), rs, settings=SETTINGS, now=T1)
    assert fixed.patch is None and fixed.create is None  # what runs already matches
    assert cond(fixed.status, "Reconciled")["status"] == "True" and fixed.status["observedGeneration"] == 3


def test_condition_times_move_only_when_the_status_flips():
    rs, reconciled = settled()
    rs["status"] = {"conditions": [{"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints"}]}
    p = plan(reconciled, rs, settings=SETTINGS, now=T1)
    assert cond(p.status, "Ready")["lastTransitionTime"] == T1  # False -> True
    assert cond(p.status, "Reconciled")["lastTransitionTime"] == T0  # unchanged True


def test_a_patch_restores_what_someone_changed_by_hand():
    rs, reconciled = settled()
    rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = 9
    rs["metadata"]["labels"]["slmfleet.io/fleet"] = "other"
    p = plan(reconciled, rs, settings=SETTINGS, now=T1)
    assert p.patch["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] == 1
    assert p.patch["metadata"]["labels"]["slmfleet.io/fleet"] == "f"


@pytest.mark.parametrize("status,expected", [
    (None, ("Pending", "", False)),
    ({"conditions": [{"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints"}]}, ("Ready", "", True)),
    ({"conditions": [{"type": "Ready", "status": "False", "reason": "Initializing", "message": "head pod pending"}]},
     ("Initializing", "head pod pending", False)),
    ({"conditions": [{"type": "Ready", "status": "False"}]}, ("NotReady", "", False)),
    ({"serviceStatus": "Running"}, ("Running", "", True)),  # KubeRay before 1.3
    ({"serviceStatus": "Unhealthy"}, ("Unhealthy", "", False)),
], ids=["none", "ready", "initializing", "no-reason", "legacy-running", "legacy-unhealthy"])
def test_rayservice_health(status, expected):
    assert rayservice_health({} if status is None else {"status": status}) == expected


@pytest.mark.parametrize("kuberay,ready,degraded", [
    ({"conditions": [{"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints"}]}, "True", "False"),
    ({"serviceStatus": "Unhealthy"}, "False", "True"),
    ({"conditions": [{"type": "Ready", "status": "False", "reason": "Failed", "message": "serve app failed"}]},
     "False", "True"),
], ids=["ready", "unhealthy", "failed"])
def test_rayservice_health_is_mirrored_into_conditions(kuberay, ready, degraded):
    rs, reconciled = settled()
    rs["status"] = kuberay
    p = plan(reconciled, rs, settings=SETTINGS, now=T1)
    assert cond(p.status, "Ready")["status"] == ready
    assert cond(p.status, "Degraded")["status"] == degraded


def _canary_spec(version="v2"):
    return fleet(**{"routes.0.targets": [{"adapter": "shout", "version": "v1"}],
                    "routes.0.strategy": {"canary": {"version": version, "steps": [10, 50, 100]}}})


def _router_config(rayservice: dict) -> dict:
    import yaml

    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]["deployments"][0]["user_config"]


def test_rollout_weights_come_from_the_status_and_a_changed_canary_starts_at_zero():
    from serving.api.fleet import parse_fleet
    from serving.rollouts.driver import Rollouts
    from serving.rollouts.metric_sources import MetricSource

    class Quiet(MetricSource):
        def observe(self, target, since):
            raise AssertionError("a first tick reads nothing")

    spec = _canary_spec()
    tick = Rollouts(Quiet()).tick(parse_fleet(spec), {}, 1_000.0)
    p = plan(modelfleet(spec), None, settings=SETTINGS, now=T0, rollouts=tick.statuses)
    assert _router_config(p.create)["canaryWeights"] == {"shout": 10}
    assert (p.status["rolloutPhase"], p.status["canary"]) == ("Progressing", "shout@v2=10%")
    assert [t["weight"] for t in p.status["routes"][0]["targets"]] == [90, 10]

    # A spec-only reconcile (no tick) keeps the weights recorded in the status...
    rs = applied(p)
    same = plan(modelfleet(spec, status=p.status), rs, settings=SETTINGS, now=T1)
    assert same.patch is None and same.status is None
    # ...unless the rollout changed: its old status is dropped and its canary gets 0% until a tick.
    other = _canary_spec("v1")  # a canary equal to the stable target is refused, so build another one
    other["adapters"][0]["versions"].append({"version": "v3", "source": "s3://adapters/shout/v3"})
    other["routes"][0]["strategy"]["canary"]["version"] = "v3"
    changed = plan(modelfleet(other, generation=2, status=p.status), rs, settings=SETTINGS, now=T1)
    assert _router_config(changed.patch)["canaryWeights"] == {"shout": 0}
    assert changed.status["rollouts"] == [] and "canary" not in changed.status


def test_a_shadowing_rollout_renders_its_route_as_shadowing_until_the_shadow_ends():
    from serving.api.fleet import parse_fleet
    from serving.policy.rollout import Observation
    from serving.rollouts.driver import Rollouts
    from serving.rollouts.metric_sources import MetricSource

    class Agreeing(MetricSource):
        def observe(self, target, since):
            return Observation(requests=30, agreed=30)

    spec = _canary_spec()
    spec["routes"][0]["strategy"]["canary"]["shadow"] = {"duration": "30s", "minRequests": 10}
    rollouts = Rollouts(Agreeing())
    first = rollouts.tick(parse_fleet(spec), {}, 1_000.0)
    p = plan(modelfleet(spec), None, settings=SETTINGS, now=T0, rollouts=first.statuses)
    config = _router_config(p.create)
    assert (config["canaryWeights"], config["shadowing"]) == ({"shout": 0}, ["shout"])
    assert (p.status["rolloutPhase"], p.status["canary"]) == ("Shadowing", "shout@v2=0%")
    passed = rollouts.tick(parse_fleet(spec), first.statuses, 1_031.0)
    rs = applied(p)
    after = plan(modelfleet(spec, status=p.status), rs, settings=SETTINGS, now=T1, rollouts=passed.statuses)
    config = _router_config(after.patch)
    assert config["canaryWeights"] == {"shout": 10} and "shadowing" not in config
