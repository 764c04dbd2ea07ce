"""Render a ModelFleet into the KubeRay RayService that runs it. Pure: no API calls.

The RayService carries two things KubeRay treats differently:
- ``serveConfigV2``: the fleet's Ray Serve config (``serving.render.serve_config``). KubeRay applies a
  change here to the running Ray cluster; routes and adapter versions change in place.
- ``rayClusterConfig``: the head and one worker group per base model, sized for one replica of
  that base per pod. KubeRay rolls out a new Ray cluster when this changes.
"""

from __future__ import annotations

import math

import yaml

from operators.settings import OperatorSettings
from serving.api.documents import API_VERSION, KIND
from serving.api.fleet import BaseModelSpec, FleetSpec
from serving.render.serve_config import serve_config

MANAGED_BY = "slm-fleet"
FLEET_LABEL = "slmfleet.io/fleet"
SERVE_PORT = 8000
KEYS_DIR = "/etc/slmfleet/keys"
KEYS_FILE = f"{KEYS_DIR}/keys.yaml"
"""Where the tenants' keys file (the Secret ``tenancy.keysSecret``) is mounted in the Ray pods; the router
rereads it when the kubelet updates the mounted Secret."""


def internal_key_secret(fleet_name: str) -> str:
    """The Secret the operator keeps the fleet's internal key in (its probes' identity), owned by the fleet."""
    return f"{fleet_name}-slmfleet-internal"


def labels(fleet_name: str) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/part-of": "slm-fleet",
            FLEET_LABEL: fleet_name}


def serve_config_v2(spec: FleetSpec, canary_weights: dict[str, int] | None = None,
                    shadowing: list[str] | tuple[str, ...] = (), internal_key_sha256: str | None = None) -> str:
    """The fleet's Serve config as KubeRay wants it: YAML text, HTTP options left to KubeRay."""
    config = serve_config(spec, canary_weights=canary_weights, shadowing=shadowing,
                          keys_file=KEYS_FILE if spec.tenancy.keys_secret else None,
                          internal_key_sha256=internal_key_sha256)
    del config["http_options"]  # KubeRay runs the proxy on the head's serve port itself
    return yaml.safe_dump(config, sort_keys=False)


def secret_env(spec: FleetSpec) -> list[dict]:
    """Environment from the Secrets the spec names (the router reads them): cascade tiers' API keys, and the
    key of capture's caller ids."""
    refs = {t.endpoint.api_key_secret for r in spec.routes for t in r.tiers
            if t.endpoint is not None and t.endpoint.api_key_secret is not None}
    if spec.capture is not None and spec.capture.caller_id_secret is not None:
        refs.add(spec.capture.caller_id_secret)
    return [{"name": ref.env_name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
            for ref in sorted(refs, key=lambda r: r.env_name)]


def _container(name: str, settings: OperatorSettings, *, cpu: str, memory: str, gpu: int = 0,
               ports: list[dict] | None = None, extra_env: list[dict] = ()) -> dict:
    limits = {"cpu": cpu, "memory": memory}
    if gpu:
        limits["nvidia.com/gpu"] = str(gpu)
    container = {
        "name": name,
        "image": settings.ray_image,
        "imagePullPolicy": settings.image_pull_policy,
        "resources": {"requests": dict(limits), "limits": limits},
    }
    env = []
    # Base weights and adapters are read from S3 with the standard AWS environment.
    if settings.s3_endpoint_url:
        env.append({"name": "AWS_ENDPOINT_URL", "value": settings.s3_endpoint_url})
    # Ray passes the pod's environment to the replicas: the router and engines export their spans.
    if settings.otlp_endpoint:
        env.append({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": settings.otlp_endpoint})
    env += list(extra_env)
    if env:
        container["env"] = env
    if settings.s3_credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": settings.s3_credentials_secret}}]
    if ports:
        container["ports"] = ports
    return container


def _pod_spec(container: dict, settings: OperatorSettings, fleet: FleetSpec | None = None) -> dict:
    spec = {"containers": [container]}
    if settings.ray_service_account:
        spec["serviceAccountName"] = settings.ray_service_account  # e.g. IRSA / workload identity for S3
    ref = fleet.tenancy.keys_secret if fleet is not None else None
    if ref is not None:
        # The keys file, mounted (not an env var): the kubelet updates a mounted Secret in place, and the router
        # rereads it, so keys added or revoked apply without a new Ray cluster.
        spec["volumes"] = [{"name": "slmfleet-keys", "secret": {"secretName": ref.name, "items": [
            {"key": ref.key, "path": "keys.yaml"}]}}]
        container["volumeMounts"] = [{"name": "slmfleet-keys", "mountPath": KEYS_DIR, "readOnly": True}]
    return spec


def worker_group(base: BaseModelSpec, settings: OperatorSettings, extra_env: list[dict] = (),
                 fleet: FleetSpec | None = None) -> dict:
    """Pods for one base model: each holds one replica (its engine bundle plus the replica actor)."""
    cpu = str(math.ceil(base.resources.cpu) + 1)
    a = base.autoscaling
    group = {
        "groupName": base.name,
        "replicas": a.min_replicas,
        "minReplicas": a.min_replicas,
        "maxReplicas": a.max_replicas,
        # Ray node labels (KubeRay passes them to `ray start --labels`).
        "labels": {"slmfleet.io/base-model": base.name},
        "rayStartParams": {},
        "template": {
            "metadata": {"labels": {"slmfleet.io/base-model": base.name}},
            "spec": _pod_spec(_container("ray-worker", settings, cpu=cpu, memory=settings.worker_memory,
                                         gpu=base.resources.gpu, extra_env=extra_env), settings, fleet),
        },
    }
    if base.resources.accelerator:
        # The replicas ask for accelerator_type:<type> (serving.render.serve_config); declaring it on the
        # group lets Ray's autoscaler know which group to scale up for them before a pod exists.
        group["labels"]["ray.io/accelerator-type"] = base.resources.accelerator
        group["resources"] = {f"accelerator_type:{base.resources.accelerator}": "1"}
    return group


def ray_cluster_config(spec: FleetSpec, settings: OperatorSettings) -> dict:
    secrets = secret_env(spec)
    head_ports = [{"name": "gcs", "containerPort": 6379}, {"name": "dashboard", "containerPort": 8265},
                  {"name": "client", "containerPort": 10001}, {"name": "serve", "containerPort": SERVE_PORT}]
    return {
        "rayVersion": settings.ray_version,
        # Serve autoscaling asks for replicas; Ray's autoscaler adds the worker pods they need.
        "enableInTreeAutoscaling": True,
        "headGroupSpec": {
            # No engine replicas on the head: it runs the Serve controller, proxy and router.
            "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
            "template": {"spec": _pod_spec(
                _container("ray-head", settings, cpu=settings.head_cpu, memory=settings.head_memory, ports=head_ports,
                           extra_env=secrets),
                settings, spec)},
        },
        "workerGroupSpecs": [worker_group(b, settings, secrets, spec) for b in spec.base_models],
    }


def render_rayservice(spec: FleetSpec, *, name: str, namespace: str, settings: OperatorSettings,
                      owner_uid: str | None = None, canary_weights: dict[str, int] | None = None,
                      shadowing: list[str] | tuple[str, ...] = (), internal_key_sha256: str | None = None) -> dict:
    """The RayService for fleet ``name``; with ``owner_uid`` it is owned by (and deleted with) the fleet.

    ``canary_weights``: the routes' current canary shares, and ``shadowing`` the routes whose canary shadows
    live requests, from the rollouts in the fleet's status; ``internal_key_sha256`` the hash of the key the
    operator's probes use (its Secret, ``internal_key_secret``).
    """
    metadata = {"name": name, "namespace": namespace, "labels": labels(name)}
    if owner_uid:
        metadata["ownerReferences"] = [{
            "apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": owner_uid,
            "controller": True, "blockOwnerDeletion": True,
        }]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": metadata,
        "spec": {
            "serveConfigV2": serve_config_v2(spec, canary_weights, shadowing, internal_key_sha256),
            "rayClusterConfig": ray_cluster_config(spec, settings),
        },
    }


class _ReviewDumper(yaml.SafeDumper):
    """Multi-line strings (serveConfigV2) as literal blocks, so a rendered RayService reads and
    diffs like the YAML it holds."""


def _str(dumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ReviewDumper.add_representer(str, _str)


def rayservice_yaml(rayservice: dict) -> str:
    return yaml.dump(rayservice, Dumper=_ReviewDumper, sort_keys=False, width=120)


def training_entrypoint(*, dataset: str, base_source: str, adapter: str, version: str, to: str,
                        settings: dict, start_from: str | None = None) -> str:
    """The `slm-fleet flywheel train` command line the RayJob runs (in Ray Train, on the cluster)."""
    import shlex

    flags = {"rank": settings["rank"], "alpha": settings["alpha"], "lr": settings["learning_rate"],
             "batch-size": settings["batch_size"], "max-length": settings["max_length"], "seed": settings["seed"]}
    if settings.get("steps"):
        flags["steps"] = settings["steps"]
    else:
        flags["epochs"] = settings["epochs"]
    args = ["slm-fleet", "flywheel", "train", dataset, "--base", base_source, "--adapter", adapter,
            "--version", version, "--to", to, "--ray-train", "--quiet"]
    if start_from:
        args += ["--start-from", start_from]
    for flag, value in flags.items():
        args += [f"--{flag}", str(value)]
    return shlex.join(args)


def render_training_rayjob(*, name: str, namespace: str, settings: OperatorSettings, entrypoint: str,
                           gpus: int = 1) -> dict:
    """A KubeRay RayJob that trains one adapter version with Ray Train on a cluster of its own (a head and
    one training worker, deleted when the job ends)."""
    worker_cpu = "4"
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}},
        "spec": {
            "entrypoint": entrypoint,
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 600,
            "backoffLimit": 0,
            "rayClusterSpec": {
                "rayVersion": settings.ray_version,
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": {"spec": _pod_spec(_container("ray-head", settings, cpu=settings.head_cpu,
                                                              memory=settings.head_memory), settings)},
                },
                "workerGroupSpecs": [{
                    "groupName": "train",
                    "replicas": 1, "minReplicas": 1, "maxReplicas": 1,
                    "rayStartParams": {},
                    "template": {"spec": _pod_spec(_container("ray-worker", settings, cpu=worker_cpu,
                                                              memory=settings.worker_memory, gpu=gpus), settings)},
                }],
            },
        },
    }


def rayjob_yaml(rayjob: dict) -> str:
    return yaml.dump(rayjob, Dumper=_ReviewDumper, sort_keys=False, width=120)
