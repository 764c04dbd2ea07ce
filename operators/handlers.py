"""The ModelFleet operator: kopf handlers that only wire reading, planning and writing.

Run with ``kopf run --standalone -m operators.handlers --all-namespaces`` (the Helm chart does).
Deciding is ``operators.reconcile.plan`` (pure); this module reads the fleet and its RayService,
and writes what the plan says. A ModelFleet owns its RayService (ownerReference), so deleting
the fleet deletes the RayService through Kubernetes garbage collection.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
import time

import kopf
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from operators.crd import PLURAL
from operators.reconcile import plan, rollouts_in
from operators.render import FLEET_LABEL, MANAGED_BY, internal_key_secret, labels
from operators.settings import OperatorSettings, SettingsError, anonymous_kube_config
from serving.api.documents import API_VERSION, GROUP, KIND, VERSION, fleet_from_document
from serving.api.keys import key_sha256, new_key
from serving.api.problems import FleetSpecError
from serving.api.status import RolloutStatus
from serving.rollouts.driver import COMMAND_ANNOTATION, Rollouts, parse_command
from serving.rollouts.metric_sources import MetricSource, PrometheusSource

RayService = create_namespaced_resource("ray.io", "v1", "RayService", "rayservices")
ModelFleet = create_namespaced_resource(GROUP, VERSION, "ModelFleet", PLURAL)
log = logging.getLogger("slmfleet.operator")


@kopf.on.login()
def login(**kwargs) -> kopf.ConnectionInfo | None:
    settings = OperatorSettings.from_env()
    if settings.kube_api:
        return kopf.ConnectionInfo(server=settings.kube_api, default_namespace="default")
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def _kube_config(settings: OperatorSettings) -> KubeConfig | None:
    """An unauthenticated config for ``kube_api``; None lets lightkube find in-cluster/kubeconfig."""
    return anonymous_kube_config(settings.kube_api) if settings.kube_api else None


@kopf.on.startup()
async def startup(memo: kopf.Memo, **_) -> None:
    try:
        ours = OperatorSettings.from_env()
    except SettingsError as err:
        raise kopf.PermanentError(str(err)) from None  # the operator exits, naming the variable
    memo.settings = ours
    memo.api = AsyncClient(_kube_config(ours), field_manager="slm-fleet-operator")


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_) -> None:
    await memo.api.close()


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def _get(api: AsyncClient, resource, name: str, namespace: str) -> dict | None:
    """The object as a dict, or None if it does not exist."""
    try:
        return (await api.get(resource, name, namespace=namespace)).to_dict()
    except ApiError as err:
        if err.response.status_code == 404:
            return None
        raise


async def internal_key(fleet: dict, memo: kopf.Memo) -> str:
    """The fleet's internal key (its probes' identity on a fleet with tenants), from the Secret the operator keeps
    it in, made the first time (owned by the fleet, so deleted with it). The only Secret the operator reads."""
    name, namespace = fleet["metadata"]["name"], fleet["metadata"]["namespace"]
    cache = memo.setdefault("internal_keys", {})
    if (namespace, name) in cache:
        return cache[namespace, name]
    secret_name = internal_key_secret(name)
    stored = await _get(memo.api, Secret, secret_name, namespace)
    if stored is None:
        key = new_key()
        await memo.api.create(Secret.from_dict({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": secret_name, "namespace": namespace, "labels": labels(name), "ownerReferences": [{
                "apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": fleet["metadata"].get("uid"),
                "controller": True, "blockOwnerDeletion": True}]},
            "data": {"key": base64.b64encode(key.encode()).decode()}}), namespace=namespace)
    else:
        key = base64.b64decode((stored.get("data") or {}).get("key", "")).decode()
    cache[namespace, name] = key
    return key


async def reconcile_fleet(fleet: dict, *, memo: kopf.Memo, rollouts: dict[str, RolloutStatus] | None = None) -> None:
    """Bring the fleet's RayService and status in line with its spec; write only what differs."""
    name, namespace = fleet["metadata"]["name"], fleet["metadata"]["namespace"]
    current = await _get(memo.api, RayService, name, namespace)
    key = await internal_key(fleet, memo) if (fleet.get("spec") or {}).get("tenants") else None
    if key is not None:
        _rollouts(memo, name, namespace).api_key = key
    decided = plan(fleet, current, settings=memo.settings, now=_now(), rollouts=rollouts,
                   internal_key_sha256=key_sha256(key) if key else None)
    if decided.create is not None:
        await memo.api.create(RayService.from_dict(decided.create), namespace=namespace)
    elif decided.patch is not None:
        await memo.api.patch(RayService, name, decided.patch, namespace=namespace, patch_type=PatchType.MERGE)
    if decided.status is not None:
        await memo.api.patch(ModelFleet.Status, name, {"status": decided.status}, namespace=namespace,
                             patch_type=PatchType.MERGE)
    if decided.event is not None:
        # kopf.info/warn post a Kubernetes Event on the fleet; the module logger keeps the pod log,
        # (the per-object logger would post the same line as a second Event).
        type_, reason, message = decided.event
        (kopf.warn if type_ == "Warning" else kopf.info)(fleet, reason=reason, message=message)
        log.log(logging.WARNING if type_ == "Warning" else logging.INFO, "%s/%s %s: %s", namespace, name, reason,
                message)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def fleet_changed(body, memo: kopf.Memo, **_) -> None:
    await reconcile_fleet(dict(body), memo=memo)


@kopf.on.event("ray.io", "v1", "rayservices", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
async def rayservice_changed(event, body, memo: kopf.Memo, **_) -> None:
    """Mirror the RayService's health into its fleet's status as KubeRay reports it."""
    if event.get("type") == "DELETED":
        return
    name, namespace = body["metadata"].get("labels", {}).get(FLEET_LABEL), body["metadata"]["namespace"]
    if not name:
        return
    fleet = await _get(memo.api, ModelFleet, name, namespace)
    if fleet is not None:  # else the fleet is gone, and garbage collection removes its RayService
        await reconcile_fleet(fleet, memo=memo)


class _NoPrometheus(MetricSource):
    def observe(self, target, since):
        raise RuntimeError("the operator has no Prometheus to read canary metrics from: set rollouts.prometheusUrl "
                           "in the Helm values (SLMFLEET_PROMETHEUS_URL)")


def _rollouts(memo: kopf.Memo, name: str, namespace: str) -> Rollouts:
    """The fleet's rollout driver; it keeps only a cache of probe results, the status is the state."""
    drivers = memo.setdefault("rollouts", {})
    if (namespace, name) not in drivers:
        settings: OperatorSettings = memo.settings
        source = PrometheusSource(settings.prometheus_url) if settings.prometheus_url else _NoPrometheus()
        drivers[namespace, name] = Rollouts(source, fleet_url=settings.fleet_url_for(name, namespace))
    return drivers[namespace, name]


def _has_rollouts(spec, **_) -> bool:
    return any((r or {}).get("strategy") for r in (spec or {}).get("routes") or [])


@kopf.daemon(GROUP, VERSION, PLURAL, when=_has_rollouts)
async def drive_rollouts(body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_) -> None:
    """Tick the fleet's rollouts every ``rollout_tick_seconds`` (read at startup) while it has any.

    A daemon rather than a timer, whose interval would be fixed when this module is imported; kopf
    stops it when the fleet no longer has a canary strategy, and ``body`` follows the fleet.
    """
    while not stopped:
        try:
            await advance_rollouts(dict(body), memo)
        except Exception:  # noqa: BLE001 - logged; the next tick tries again
            log.exception("rollout tick of %s/%s failed", body["metadata"].get("namespace"), body["metadata"]["name"])
        await stopped.wait(memo.settings.rollout_tick_seconds)


async def advance_rollouts(fleet: dict, memo: kopf.Memo) -> None:
    """One rollout tick: read the canaries' numbers, decide, write weights and status, report Events.

    The state is the fleet's status, so a restarted operator goes on where it stopped.
    """
    name, namespace = fleet["metadata"]["name"], fleet["metadata"]["namespace"]
    if not (fleet.get("status") or {}).get("rayService"):
        return  # the create handler has not made the RayService yet
    try:
        spec = fleet_from_document({k: fleet[k] for k in ("apiVersion", "kind", "spec") if k in fleet},
                                   source=f"ModelFleet {namespace}/{name}")
    except FleetSpecError:
        return  # the spec handler reports it; running rollouts hold their weights
    annotation = (fleet["metadata"].get("annotations") or {}).get(COMMAND_ANNOTATION)
    commands = {}
    if annotation is not None:
        try:
            route, command = parse_command(annotation, spec)
            commands = {route: command}
            kopf.info(fleet, reason="RolloutCommand", message=f"{COMMAND_ANNOTATION}={annotation!r} applied")
        except ValueError as err:
            kopf.warn(fleet, reason="InvalidRolloutCommand", message=f"{err}; annotation removed, nothing changed")
    driver = _rollouts(memo, name, namespace)
    if spec.tenants:  # the probes need the fleet's own key
        driver.api_key = await internal_key(fleet, memo)
    tick = await asyncio.to_thread(driver.tick, spec, rollouts_in(fleet.get("status") or {}), time.time(), commands)
    await reconcile_fleet(fleet, memo=memo, rollouts=tick.statuses)
    for type_, reason, message in tick.events:
        (kopf.warn if type_ == "Warning" else kopf.info)(fleet, reason=reason, message=message)
        log.log(logging.WARNING if type_ == "Warning" else logging.INFO, "%s/%s %s: %s", namespace, name, reason,
                message)
    if annotation is not None:  # consumed: a command applies once
        await memo.api.patch(ModelFleet, name, {"metadata": {"annotations": {COMMAND_ANNOTATION: None}}},
                             namespace=namespace, patch_type=PatchType.MERGE)
