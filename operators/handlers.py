"""The ModelFleet operator: kopf handlers that only wire reading, planning and writing.

Run with ``kopf run --standalone -m operators.handlers --all-namespaces`` (the Helm chart does).
Deciding is ``operators.reconcile.plan`` (pure); this module reads the fleet and its RayService,
and writes what the plan says. A ModelFleet owns its RayService (ownerReference), so deleting
the fleet deletes the RayService through Kubernetes garbage collection.
"""

from __future__ import annotations

import datetime
import logging

import kopf
from lightkube import AsyncClient, KubeConfig
from httpx2 import HTTPStatusError  # lightkube's HTTP client; its ApiError subclasses this
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

from operators.crd import PLURAL
from operators.reconcile import plan
from operators.render import FLEET_LABEL, MANAGED_BY
from operators.settings import OperatorSettings, SettingsError
from serving.manifests import GROUP, VERSION

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
    if not settings.kube_api:
        return None
    return KubeConfig.from_dict({
        "clusters": [{"name": "api", "cluster": {"server": settings.kube_api}}],
        "users": [{"name": "anonymous", "user": {}}],
        "contexts": [{"name": "api", "context": {"cluster": "api", "user": "anonymous", "namespace": "default"}}],
        "current-context": "api",
    })


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
    return datetime.datetime.now(tz=datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def _get(api: AsyncClient, resource, name: str, namespace: str) -> dict | None:
    """The object as a dict, or None if it does not exist."""
    try:
        return (await api.get(resource, name, namespace=namespace)).to_dict()
    except HTTPStatusError as err:
        if err.response.status_code == 404:
            return None
        raise


async def reconcile_fleet(fleet: dict, *, memo: kopf.Memo) -> None:
    """Bring the fleet's RayService and status in line with its spec; write only what differs."""
    name, namespace = fleet["metadata"]["name"], fleet["metadata"]["namespace"]
    current = await _get(memo.api, RayService, name, namespace)
    decided = plan(fleet, current, settings=memo.settings, now=_now())
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
        log.log(logging.WARNING if type_ == "Warning" else logging.INFO, "%s/%s %s: %s", namespace, name, reason, message)


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
