"""Decide what a reconcile does, from what is and what should be. Pure: the handlers do the I/O.

``plan`` takes the fleet as read from the API and the current RayService (or None) and returns
what to write: nothing, a RayService to create, a patch, and the status to record. Writing only
what differs keeps a second reconcile of an unchanged fleet from writing anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from operators.render import render_rayservice
from operators.settings import OperatorSettings
from serving.api.documents import fleet_from_document
from serving.api.fleet import FleetSpec
from serving.api.problems import FleetSpecError
from serving.api.status import Condition, FleetStatus, RayServiceStatus, RolloutStatus, RouteStatus, RouteTargetStatus
from serving.policy.routing import RoutingTable
from serving.rollouts.driver import canary_weights, current, shadowing, summary


@dataclass
class Plan:
    create: dict | None = None
    """A RayService to create."""
    patch: dict | None = None
    """A merge patch for the existing RayService."""
    status: dict | None = None
    """The whole new status, when it differs from the current one."""
    event: tuple[str, str, str] | None = None
    """(type, reason, message) of a Kubernetes Event to post."""
    problems: list[str] = field(default_factory=list)


def _condition(type_: str, status: str, reason: str, message: str, *, generation: int | None,
               previous: list[dict], now: str) -> Condition:
    """A condition that keeps its lastTransitionTime while its status does not change."""
    old = next((c for c in previous if c.get("type") == type_), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == status else now
    return Condition(type=type_, status=status, reason=reason, message=message,
                     last_transition_time=since, observed_generation=generation)


def rayservice_health(rayservice: dict) -> tuple[str, str, bool]:
    """(health, message, ready) from a RayService's status as KubeRay reports it."""
    status = rayservice.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is not None:
        health = "Ready" if ready.get("status") == "True" else ready.get("reason") or "NotReady"
        return health, ready.get("message", ""), ready.get("status") == "True"
    service_status = status.get("serviceStatus")
    if service_status:
        return service_status, "", service_status == "Running"
    return "Pending", "", False


def _route_status(spec: FleetSpec, weights: dict[str, int]) -> list[RouteStatus]:
    return [RouteStatus(name=name, targets=[RouteTargetStatus(**t.describe()) for t in targets])
            for name, targets in RoutingTable(spec, weights).routes.items()]


def rollouts_in(status: dict) -> dict[str, RolloutStatus]:
    """The rollouts recorded in a fleet's status, by route."""
    return {r["route"]: RolloutStatus.model_validate(r) for r in status.get("rollouts") or []}


def change_kind(current: dict | None, desired: dict) -> str:
    """What applying ``desired`` does to ``current``: Created, ServeConfigUpdated, ClusterUpdated or None."""
    if current is None:
        return "Created"
    cur, new = current.get("spec", {}), desired["spec"]
    if cur.get("rayClusterConfig") != new["rayClusterConfig"]:
        return "ClusterUpdated"
    if cur.get("serveConfigV2") != new["serveConfigV2"]:
        return "ServeConfigUpdated"
    return "None"


def _patch_for(current: dict, desired: dict) -> dict | None:
    patch = {}
    if current.get("spec", {}).get("serveConfigV2") != desired["spec"]["serveConfigV2"] or \
            current.get("spec", {}).get("rayClusterConfig") != desired["spec"]["rayClusterConfig"]:
        patch["spec"] = desired["spec"]
    meta = current.get("metadata", {})
    want = desired["metadata"]
    meta_patch = {}
    if any(meta.get("labels", {}).get(k) != v for k, v in want["labels"].items()):
        meta_patch["labels"] = want["labels"]
    if "ownerReferences" in want and meta.get("ownerReferences") != want["ownerReferences"]:
        meta_patch["ownerReferences"] = want["ownerReferences"]
    if meta_patch:
        patch["metadata"] = meta_patch
    return patch or None


def plan(fleet: dict, rayservice: dict | None, *, settings: OperatorSettings, now: str,
         rollouts: dict[str, RolloutStatus] | None = None, internal_key_sha256: str | None = None) -> Plan:
    """What to do for ``fleet`` (the ModelFleet object) given its current ``rayservice``.

    ``rollouts`` are the rollouts' new statuses from a rollout tick; without them, those recorded
    in the fleet's status hold (their canary weights go into the rendered routing config).
    ``internal_key_sha256`` is the hash of the operator's key for the fleet (its probes' identity).
    """
    meta, old_status = fleet.get("metadata", {}), fleet.get("status") or {}
    name, namespace, generation = meta["name"], meta.get("namespace", "default"), meta.get("generation")
    previous = old_status.get("conditions") or []
    result = Plan()
    try:
        spec = fleet_from_document({k: fleet[k] for k in ("apiVersion", "kind", "spec") if k in fleet},
                                   source=f"ModelFleet {namespace}/{name}")
    except FleetSpecError as err:
        # Nothing already running is touched; the status says why and what is still served.
        result.problems = [str(p) for p in err.problems]
        message = "spec is invalid; the running fleet is unchanged: " + "; ".join(result.problems)
        status = FleetStatus.model_validate(old_status) if old_status else FleetStatus()
        status.conditions = [c for c in status.conditions if c.type not in ("Reconciled",)] + [
            _condition("Reconciled", "False", "InvalidSpec", message, generation=generation, previous=previous,
                       now=now)]
        result.event = ("Warning", "InvalidSpec", message)
        return _with_status(result, status, old_status)

    rollouts = current(spec, rollouts if rollouts is not None else rollouts_in(old_status))
    weights = canary_weights(spec, rollouts)
    desired = render_rayservice(spec, name=name, namespace=namespace, settings=settings, owner_uid=meta.get("uid"),
                                canary_weights=weights, shadowing=shadowing(spec, rollouts),
                                internal_key_sha256=internal_key_sha256)
    change = change_kind(rayservice, desired)
    if rayservice is None:
        result.create = desired
    else:
        result.patch = _patch_for(rayservice, desired)
    if change != "None":
        result.event = ("Normal", change, {
            "Created": "created RayService; the Ray cluster is starting",
            "ServeConfigUpdated": "updated serveConfigV2 in place: same Ray cluster, routes/adapters applied live",
            "ClusterUpdated": "updated rayClusterConfig: KubeRay rolls out a new Ray cluster",
        }[change])

    health, health_message, ready = rayservice_health(rayservice or desired)
    rollout_phase, canary = summary(list(rollouts.values()))
    status = FleetStatus(
        observed_generation=generation,
        routes=_route_status(spec, weights),
        rollouts=list(rollouts.values()),
        rollout_phase=rollout_phase,
        canary=canary,
        route_count=len(spec.routes),
        adapter_count=sum(len(a.versions) for a in spec.adapters),
        last_change=change if change != "None" else old_status.get("lastChange", "None"),
        ray_service=RayServiceStatus(name=name, health=health, message=health_message),
        conditions=[
            _condition("Reconciled", "True", "Applied", f"RayService {name} matches the spec",
                       generation=generation, previous=previous, now=now),
            _condition("Ready", "True" if ready else "False", "RayServiceReady" if ready else "RayServiceNotReady",
                       f"RayService {name}: {health}" + (f" ({health_message})" if health_message else ""),
                       generation=generation, previous=previous, now=now),
            _condition("Degraded", "True" if health in ("Failed", "Unhealthy") else "False",
                       "RayServiceFailed" if health in ("Failed", "Unhealthy") else "AsExpected",
                       health_message, generation=generation, previous=previous, now=now),
        ],
    )
    return _with_status(result, status, old_status)


def _with_status(result: Plan, status: FleetStatus, old_status: dict) -> Plan:
    new = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    ours = {k: v for k, v in old_status.items() if k != "kopf"}  # kopf keeps its own progress there
    if new != ours:
        result.status = new
    return result
