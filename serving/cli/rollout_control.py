"""Where ``slm-fleet rollout`` reads and steers rollouts: a local fleet, or a ModelFleet on Kubernetes.

Locally, ``slm-fleet serve`` has a control endpoint on loopback (``serving.local.rollouts``). On
Kubernetes the operator owns the rollouts: status is the ModelFleet's ``status.rollouts`` and a
command is the ``slmfleet.io/rollout`` annotation, which the operator applies and removes.
"""

from __future__ import annotations

import os

import httpx

from serving.api.problems import UserError
from serving.local.rollouts import DEFAULT_CONTROL_PORT
from serving.rollouts.driver import COMMAND_ANNOTATION as ANNOTATION


class LocalControl:
    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def _call(self, method: str, path: str):
        try:
            resp = httpx.request(method, f"{self.url}{path}", timeout=10)
        except httpx.HTTPError as err:
            raise UserError(f"no fleet answers at {self.url} ({err}); is `slm-fleet serve` running? "
                            "(its --control-port, or pass --control URL; for Kubernetes pass --fleet NAME)") from None
        body = resp.json()
        if resp.status_code != 200:
            raise UserError(body.get("error", resp.text))
        return body

    def status(self) -> list[dict]:
        return self._call("GET", "/rollouts")

    def send(self, command: str) -> str:
        return self._call("POST", "/rollouts/" + "/".join(command.split()))["message"]


class KubeControl:
    def __init__(self, name: str, namespace: str | None):
        from lightkube import Client
        from lightkube.generic_resource import create_namespaced_resource

        from operators.crd import PLURAL
        from operators.settings import anonymous_kube_config
        from serving.api.documents import GROUP, VERSION

        api = os.environ.get("SLMFLEET_KUBE_API")  # kubectl proxy, tests
        config = anonymous_kube_config(api) if api else None
        try:
            self.client = Client(config, namespace=namespace, field_manager="slm-fleet-cli")
        except Exception as err:  # noqa: BLE001 - no kubeconfig, unreadable config
            raise UserError(f"cannot reach Kubernetes: {err}") from None
        self.resource = create_namespaced_resource(GROUP, VERSION, "ModelFleet", PLURAL)
        self.name, self.namespace = name, namespace or self.client.namespace

    def _fleet(self) -> dict:
        from lightkube import ApiError

        try:
            return self.client.get(self.resource, self.name, namespace=self.namespace).to_dict()
        except ApiError as err:
            if err.response.status_code == 404:
                raise UserError(f"ModelFleet {self.namespace}/{self.name} not found") from None
            raise

    def status(self) -> list[dict]:
        return (self._fleet().get("status") or {}).get("rollouts") or []

    def document(self) -> dict:
        """The ModelFleet as a fleet document (apiVersion, kind, metadata name and spec)."""
        fleet = self._fleet()
        return {"apiVersion": fleet["apiVersion"], "kind": fleet["kind"],
                "metadata": {"name": self.name, "namespace": self.namespace}, "spec": fleet["spec"]}

    def update_spec(self, spec: dict, fields: tuple[str, ...]) -> None:
        """Replace these top-level fields of the ModelFleet's spec (a merge patch replaces lists whole)."""
        from lightkube.types import PatchType

        self.client.patch(self.resource, self.name, {"spec": {k: spec[k] for k in fields}},
                          namespace=self.namespace, patch_type=PatchType.MERGE)

    def send(self, command: str) -> str:
        from lightkube.types import PatchType

        from serving.api.documents import fleet_from_document
        from serving.rollouts.driver import parse_command

        fleet = self._fleet()
        spec = fleet_from_document({k: fleet[k] for k in ("apiVersion", "kind", "spec")},
                                   source=f"ModelFleet {self.namespace}/{self.name}")
        try:
            parse_command(command, spec)  # refuse here what the operator would refuse
        except ValueError as err:
            raise UserError(str(err)) from None
        self.client.patch(self.resource, self.name, {"metadata": {"annotations": {ANNOTATION: command}}},
                          namespace=self.namespace, patch_type=PatchType.MERGE)
        return (f"annotated ModelFleet {self.namespace}/{self.name} {ANNOTATION}={command!r}; the operator applies it "
                "on its next rollout tick")


def fleet_control(args):
    if args.fleet and args.control:
        raise UserError("pass either --fleet (Kubernetes) or --control (a local fleet), not both")
    if args.fleet:
        return KubeControl(args.fleet, args.namespace)
    return LocalControl(args.control or f"http://127.0.0.1:{DEFAULT_CONTROL_PORT}")
