"""Run a fleet on a local Ray instance, through the same Serve config KubeRay would apply."""

from __future__ import annotations

import logging
import os
import time

from serving.api.fleet import FleetSpec
from serving.api.keys import INTERNAL_KEY_ENV, key_sha256, new_key
from serving.render.serve_config import serve_config

logger = logging.getLogger("slmfleet.local")


class DeployError(RuntimeError):
    pass


def start_ray(*, num_cpus: int | None = None, metrics_port: int | None = None,
              metrics_report_interval_ms: int | None = None) -> None:
    """Start a local Ray instance; its metrics agent serves Prometheus metrics on ``metrics_port``."""
    import ray

    if not ray.is_initialized():
        system_config = {}
        if metrics_report_interval_ms is not None:  # tests: replicas report every second, not every 10
            system_config["metrics_report_interval_ms"] = metrics_report_interval_ms
        # No dashboard: it is not needed to serve and costs memory on small machines. The metrics
        # agent runs without it.
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 _metrics_export_port=metrics_port, _system_config=system_config or None)


def deploy(spec: FleetSpec, *, host: str = "127.0.0.1", port: int = 8000, timeout_s: float = 600,
           extra_apps: tuple[dict, ...] = (), overrides: dict[str, dict] | None = None,
           canary_weights: dict[str, int] | None = None, shadowing: list[str] | tuple[str, ...] = (),
           keys_file: str | None = None) -> dict:
    """Deploy (or update in place) the fleet and wait until it runs; returns the Serve config used.

    ``canary_weights`` are the routes' canary shares and ``shadowing`` the routes whose canary shadows live
    requests (``serving.rollouts.driver``); ``keys_file`` is the tenants' keys file (the router rereads it when it
    changes), and the fleet's internal key is this process's (``internal_key``). ``extra_apps`` are
    more Serve applications deployed with it, and ``overrides`` maps a fleet deployment's name to Serve
    options merged into its config (both for the benchmarks).

    Deploys through Serve's config path, as KubeRay does. ``serve.run`` would not do: it gives
    every deployment a fresh random version, so each update would restart the engines.
    """
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    config = serve_config(spec, host=host, port=port, canary_weights=canary_weights, shadowing=shadowing,
                          keys_file=os.path.abspath(keys_file) if keys_file else None,
                          internal_key_sha256=key_sha256(internal_key()))
    for deployment in config["applications"][0]["deployments"]:
        deployment.update((overrides or {}).get(deployment["name"], {}))
    config["applications"] += list(extra_apps)
    client = serve_start(http_options=config["http_options"])
    client.deploy_apps(ServeDeploySchema.model_validate(config))
    for app in config["applications"]:
        wait_running(app["name"], timeout_s=timeout_s)
    wait_deleted({app["name"] for app in config["applications"]}, timeout_s=timeout_s)
    return config


def internal_key() -> str:
    """This process's internal key (probes, the demo's requests): from the environment, else made now and put
    there, so every deploy and probe of the process uses the same one."""
    if not os.environ.get(INTERNAL_KEY_ENV):
        os.environ[INTERNAL_KEY_ENV] = new_key()
    return os.environ[INTERNAL_KEY_ENV]


def wait_running(app_name: str, *, timeout_s: float) -> None:
    """Wait for the app to run; DeployError carries Serve's own reason when it fails."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    # Give the controller a moment to pick up the new config before reading its status.
    time.sleep(1)
    while time.monotonic() < deadline:
        app = serve.status().applications.get(app_name)
        if app is not None:
            if app.status == "RUNNING" and all(d.status == "HEALTHY" for d in app.deployments.values()):
                return
            if app.status == "DEPLOY_FAILED":
                raise DeployError(f"fleet failed to deploy: {app.message}")
            unhealthy = [f"{n}: {d.message}" for n, d in app.deployments.items() if d.status == "DEPLOY_FAILED"]
            if unhealthy:
                raise DeployError("fleet failed to deploy: " + "; ".join(unhealthy))
        time.sleep(1)
    raise DeployError(f"fleet not running after {timeout_s:.0f}s")


def wait_deleted(keep: set[str], *, timeout_s: float) -> None:
    """Wait until Serve holds no application but ``keep``. Serve deletes the applications a config drops in the
    background: until their replicas have stopped, their engines still take the machine's memory and CPU."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while dropped := sorted(set(serve.status().applications) - keep):
        if time.monotonic() > deadline:
            raise DeployError(f"applications {dropped} not deleted after {timeout_s:.0f}s")
        time.sleep(1)


def shutdown() -> None:
    import ray
    from ray import serve

    if ray.is_initialized():
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
