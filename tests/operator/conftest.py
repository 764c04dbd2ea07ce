"""The real operator (kopf) against an in-process Kubernetes API emulator (kmock).

kmock stores objects and streams watch events, but sets no uid, generation or resourceVersion
and ignores generateName; kopf and the operator rely on those, so ``KubeAPI`` adds them the way
the API server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import itertools
import uuid
from pathlib import Path

import aiohttp.web
import httpx
import kmock
import kopf
import pytest
import yaml

import operators.handlers  # noqa: F401 - registers the handlers with kopf
from tests.waiting import eventually_async

ROOT = Path(__file__).parents[2]
FLEETS = "/apis/slmfleet.io/v1alpha1/namespaces/default/modelfleets"
RAYSERVICES = "/apis/ray.io/v1/namespaces/default/rayservices"
_versions = itertools.count(1)


class KubeAPI(kmock.KubernetesEmulator):
    """kmock's emulator with uid, creationTimestamp, generation and resourceVersion kept.

    ``log`` keeps every request, so tests can count what the operator read and wrote.
    """

    log: list[kmock.Request]

    async def _handle(self, request):
        self.__dict__.setdefault("log", []).append(request)
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if request.action == kmock.action.CREATE:
                if "name" not in meta and "generateName" in meta:  # kopf names its events so
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", datetime.datetime.now(datetime.UTC).isoformat())
                meta["generation"] = 1
                meta["resourceVersion"] = str(next(_versions))
            elif request.action == kmock.action.UPDATE and request.name is not None:
                meta["resourceVersion"] = str(next(_versions))
                key = (request.resource, request.namespace, request.name)
                stored = self.objects[key] if key in self.objects else None
                if stored is not None and "spec" in data and request.subresource is None:
                    meta["generation"] = stored.get("metadata", {}).get("generation", 1) + 1
        return await super()._handle(request)

    async def _render_error(self, exc: Exception):
        # The API server answers errors as a Status with Content-Type exactly "application/json";
        # lightkube raises its ApiError only then (aiohttp's json_response adds "; charset=utf-8").
        response = await super()._render_error(exc)
        return aiohttp.web.Response(body=response.body, status=response.status,
                                    headers={"Content-Type": "application/json"})


@pytest.fixture
async def k8s():
    async with KubeAPI() as api, kmock.Server(api):
        api.resources["slmfleet.io/v1alpha1/modelfleets"] = kmock.ResourceInfo(
            kind="ModelFleet", namespaced=True, subresources={"status"},
            verbs={"get", "list", "watch", "create", "patch", "update", "delete"})
        api.resources["ray.io/v1/rayservices"] = kmock.ResourceInfo(
            kind="RayService", namespaced=True, subresources={"status"},
            verbs={"get", "list", "watch", "create", "patch", "update", "delete"})
        api.resources["v1/events"] = kmock.ResourceInfo(kind="Event", namespaced=True,
                                                         verbs={"create", "patch", "get", "list"})
        api.resources["v1/secrets"] = kmock.ResourceInfo(kind="Secret", namespaced=True, verbs={"create", "get"})
        # kopf waits for these two to be discoverable before it starts any watch, even
        # cluster-wide (where it lists neither).
        api.resources["v1/namespaces"] = kmock.ResourceInfo(kind="Namespace", namespaced=False, verbs={"list", "watch"})
        api.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock.ResourceInfo(
            kind="CustomResourceDefinition", namespaced=False, verbs={"list", "watch"})
        yield api


class Operator:
    """Start/stop the real kopf operator in this event loop, as many times as a test needs."""

    def __init__(self):
        self.task: asyncio.Task | None = None
        self.stop_flag: asyncio.Event | None = None

    def start(self):
        self.stop_flag = asyncio.Event()
        self.task = asyncio.create_task(
            kopf.operator(standalone=True, clusterwide=True, stop_flag=self.stop_flag))

    async def stop(self):
        """Stop as on SIGTERM: kopf finishes its tasks and exits."""
        if self.task is not None:
            self.stop_flag.set()
            # kopf ends its root task by cancelling it: that is its normal exit.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self.task, timeout=30)
            self.task = None


@pytest.fixture
def operator_env() -> dict[str, str]:
    """More SLMFLEET_* settings for the operator; a test module overrides this fixture to add some."""
    return {}


@pytest.fixture
async def operator(k8s, monkeypatch, operator_env):
    monkeypatch.setenv("SLMFLEET_KUBE_API", str(k8s.url).rstrip("/"))
    monkeypatch.setenv("SLMFLEET_RAY_IMAGE", "registry.test/slm-fleet/serving:test")
    monkeypatch.setenv("SLMFLEET_ROLLOUT_TICK_SECONDS", "0.5")  # read at the operator's startup: rollouts tick fast
    for name, value in operator_env.items():
        monkeypatch.setenv(name, value)
    op = Operator()
    op.start()
    yield op
    await op.stop()


@pytest.fixture
async def api(k8s):
    async with httpx.AsyncClient(base_url=str(k8s.url), timeout=10) as client:
        yield client


def quickstart(name: str = "quickstart") -> dict:
    doc = yaml.safe_load((ROOT / "manifests/examples/quickstart.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": "default"}
    return copy.deepcopy(doc)


async def events(api, reason: str, *, containing: str = "") -> list[dict]:
    """The namespace's Events with this reason (and ``containing`` in their message), once there is one.

    kopf posts them from a queue, after the status patch, so this waits for them."""
    async def posted():
        items = (await api.get("/api/v1/namespaces/default/events")).json()["items"]
        return [e for e in items if e.get("reason") == reason and containing in e.get("message", "")]

    what = f"no Event with reason {reason!r}" + (f" and {containing!r} in its message" if containing else "")
    return await eventually_async(posted, message=what)
