"""Operator configuration, from the environment (the Helm chart sets it from values.yaml)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields


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
    kube_api: str | None = None
    """SLMFLEET_KUBE_API: talk to this API server URL without auth (kubectl proxy, tests);
    unset: in-cluster service account, else ~/.kube/config."""

    @classmethod
    def from_env(cls, env=None) -> "OperatorSettings":
        env = os.environ if env is None else env
        values = {f.name: env[f"SLMFLEET_{f.name.upper()}"] for f in fields(cls) if f"SLMFLEET_{f.name.upper()}" in env}
        return cls(**values)
