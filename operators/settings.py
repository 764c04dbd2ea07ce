"""Operator configuration, from the environment (the Helm chart sets it from values.yaml)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields

# Kubernetes resource quantities as pods accept them: 500m, 2, 1.5, 16Gi, 512M.
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


class SettingsError(ValueError):
    """An SLMFLEET_* variable has a value the operator cannot use."""


@dataclass(frozen=True)
class OperatorSettings:
    ray_image: str = "ghcr.io/slm-fleet/serving:0.1.0"
    """SLMFLEET_RAY_IMAGE: image of the Ray head and workers (Ray + vLLM + this package)."""
    ray_version: str = "2.60.0"
    """SLMFLEET_RAY_VERSION: Ray version in that image, for KubeRay."""
    head_cpu: str = "1"
    """SLMFLEET_HEAD_CPU: CPU of the Ray head pod (Serve controller, proxy, fleet router)."""
    head_memory: str = "4Gi"
    """SLMFLEET_HEAD_MEMORY: memory of the Ray head pod."""
    worker_memory: str = "16Gi"
    """SLMFLEET_WORKER_MEMORY: memory of each worker pod (one base-model replica per pod)."""
    image_pull_policy: str = "IfNotPresent"
    """SLMFLEET_IMAGE_PULL_POLICY: pull policy of the Ray pods."""
    s3_endpoint_url: str | None = None
    """SLMFLEET_S3_ENDPOINT_URL: S3-compatible endpoint for weights and adapters (MinIO, Ceph, ...),
    set as AWS_ENDPOINT_URL in the Ray pods; unset: AWS S3."""
    s3_credentials_secret: str | None = None
    """SLMFLEET_S3_CREDENTIALS_SECRET: Secret (in the fleet's namespace) whose keys, such as
    AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, become the Ray pods' environment; unset: none."""
    ray_service_account: str | None = None
    """SLMFLEET_RAY_SERVICE_ACCOUNT: ServiceAccount of the Ray pods (e.g. one bound to a cloud IAM
    role for S3); unset: the namespace's default."""
    otlp_endpoint: str | None = None
    """SLMFLEET_OTLP_ENDPOINT: OpenTelemetry collector (OTLP/HTTP) for request traces, set as
    OTEL_EXPORTER_OTLP_ENDPOINT in the Ray pods; unset: tracing off."""
    prometheus_url: str | None = None
    """SLMFLEET_PROMETHEUS_URL: Prometheus the canary rollouts read their numbers from (it must
    scrape the Ray pods, as the chart's PodMonitor does); unset: rollouts wait at their first step."""
    fleet_url: str = "http://{name}-serve-svc.{namespace}.svc:8000"
    """SLMFLEET_FLEET_URL: where a fleet answers, for the rollouts' quality probes; {name} and
    {namespace} are the fleet's. The default is the Serve service KubeRay creates."""
    rollout_tick_seconds: float = 10.0
    """SLMFLEET_ROLLOUT_TICK_SECONDS: how often the operator reads metrics and advances rollouts."""
    kube_api: str | None = None
    """SLMFLEET_KUBE_API: talk to this API server URL without auth (kubectl proxy, tests);
    unset: in-cluster service account, else ~/.kube/config."""

    def __post_init__(self):
        problems = []
        for name in ("head_cpu", "head_memory", "worker_memory"):
            if not _QUANTITY.match(getattr(self, name)):
                problems.append(f"{env_name(name)}={getattr(self, name)!r} is not a Kubernetes quantity "
                                "(e.g. 2, 500m, 16Gi)")
        if self.image_pull_policy not in _PULL_POLICIES:
            problems.append(f"{env_name('image_pull_policy')}={self.image_pull_policy!r} must be one of "
                            f"{', '.join(_PULL_POLICIES)}")
        if not re.match(r"^[0-9]+\.[0-9]+\.[0-9]+", self.ray_version):
            problems.append(f"{env_name('ray_version')}={self.ray_version!r} is not a Ray version such as 2.60.0")
        if not self.ray_image.strip():
            problems.append(f"{env_name('ray_image')} is empty; set it to the serving image")
        for name in ("s3_credentials_secret", "ray_service_account"):
            value = getattr(self, name)
            if value and not re.match(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", value):
                problems.append(f"{env_name(name)}={value!r} is not a Kubernetes object name")
        raw = self.rollout_tick_seconds
        try:
            object.__setattr__(self, "rollout_tick_seconds", float(raw))
            if not self.rollout_tick_seconds > 0:
                raise ValueError
        except ValueError:
            problems.append(f"{env_name('rollout_tick_seconds')}={raw!r} must be a positive number of seconds")
        try:
            self.fleet_url_for("fleet", "default")
        except (KeyError, IndexError, ValueError):
            problems.append(f"{env_name('fleet_url')}={self.fleet_url!r} may only use {{name}} and {{namespace}}")
        for name in ("s3_endpoint_url", "otlp_endpoint", "prometheus_url", "fleet_url"):
            value = getattr(self, name)
            if value and not re.match(r"^https?://", value):
                problems.append(f"{env_name(name)}={value!r} must be an http(s):// URL")
        if problems:
            raise SettingsError("invalid operator settings: " + "; ".join(problems))

    def fleet_url_for(self, name: str, namespace: str) -> str:
        return self.fleet_url.format(name=name, namespace=namespace).rstrip("/")

    @classmethod
    def from_env(cls, env=None) -> OperatorSettings:
        env = os.environ if env is None else env
        # An empty variable means unset: the chart sets every variable, empty where a value is off.
        values = {f.name: env[env_name(f.name)] for f in fields(cls) if env.get(env_name(f.name))}
        return cls(**values)


def env_name(field: str) -> str:
    return f"SLMFLEET_{field.upper()}"


def anonymous_kube_config(server: str):
    """A lightkube config that talks to ``server`` without credentials (kubectl proxy, tests)."""
    from lightkube import KubeConfig

    return KubeConfig.from_dict({
        "clusters": [{"name": "api", "cluster": {"server": server}}],
        "users": [{"name": "anonymous", "user": {}}],
        "contexts": [{"name": "api", "context": {"cluster": "api", "user": "anonymous", "namespace": "default"}}],
        "current-context": "api",
    })
