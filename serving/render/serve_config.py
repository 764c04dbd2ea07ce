"""Render a fleet spec into the Ray Serve config that runs it. Pure.

The same dict is what ``slm-fleet serve`` deploys locally and what the operator puts in a
KubeRay RayService's ``serveConfigV2``. It is split along what Ray Serve can change in place:

- ``args`` of the application hold only what shapes the engine replicas (base models, engine
  settings, resources). Ray Serve hashes import path and args into the code version, so a change
  there restarts replicas, as it must.
- routes, adapter versions and autoscaling go into per-deployment ``user_config`` and
  ``autoscaling_config`` overrides, which Ray Serve applies to running replicas (``reconfigure``)
  without restarting engines.
"""

from __future__ import annotations

from pathlib import PurePath

from serving.api.fields import duration_seconds
from serving.api.fleet import BaseModelSpec, FleetSpec
from serving.policy.routing import multiplexed_id

APP_NAME = "slm-fleet"
IMPORT_PATH = "serving.dataplane.app:build_app"
ROUTER_DEPLOYMENT = "FleetRouter"
PLACEMENT_ROUTER = "serving.dataplane.placement_router:PlacementRouter"


def base_deployment_name(base_model: str) -> str:
    return f"BaseModel:{base_model}"


def adapter_catalog(spec: FleetSpec, base_model: str) -> dict[str, dict]:
    """Multiplexed id -> where that adapter version's files are, for one base deployment."""
    return {
        multiplexed_id(base_model, a.name, v.version): {
            "adapter": a.name, "version": v.version, "source": v.source, "sha256": v.sha256,
        }
        for a in spec.adapters if a.base_model == base_model
        for v in a.versions
    }


def autoscaling_config(base: BaseModelSpec) -> dict:
    a = base.autoscaling
    return {
        "min_replicas": a.min_replicas,
        "initial_replicas": max(a.min_replicas, 1),
        "max_replicas": a.max_replicas,
        "target_ongoing_requests": a.target_ongoing_requests,
        "upscale_delay_s": duration_seconds(a.upscale_delay),
        "downscale_delay_s": duration_seconds(a.downscale_delay),
    }


def request_router_config(base: BaseModelSpec) -> dict:
    """The Ray Serve request router that places the base's requests on its replicas (serving.policy.placement)."""
    return {"request_router_class": PLACEMENT_ROUTER,
            "request_router_kwargs": {"base_model": base.name, "spill_margin": base.placement.spill_margin}}


def app_args(spec: FleetSpec) -> dict:
    """Application args: the base models without autoscaling and placement (applied in place)."""
    return {
        "baseModels": [
            b.model_dump(mode="json", by_alias=True, exclude={"autoscaling", "placement"}) for b in spec.base_models
        ]
    }


def serve_config(spec: FleetSpec, *, host: str = "0.0.0.0", port: int = 8000,
                 app_name: str = APP_NAME, route_prefix: str = "/",
                 canary_weights: dict[str, int] | None = None, shadowing: list[str] | tuple[str, ...] = (),
                 keys_file: str | None = None, internal_key_sha256: str | None = None) -> dict:
    """A Ray Serve multi-application config (``ServeDeploySchema``) for the fleet.

    ``canary_weights`` are the current shares of the routes' canary versions, as a rollout
    driver decided them (a route with a canary strategy that is not in it gives its canary 0%);
    ``shadowing`` names the routes whose canary is in its shadow phase (the router copies their requests);
    ``keys_file`` is the path of the tenants' keys file where the router runs, ``internal_key_sha256`` the hash of
    the key the fleet's own probes use.
    """
    fleet = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    router_config = {"fleet": fleet}
    weights = {r.name: int((canary_weights or {}).get(r.name, 0)) for r in spec.routes if r.strategy is not None}
    if weights:
        router_config["canaryWeights"] = weights
    if keys_file is not None:
        router_config["keysFile"] = keys_file
    if internal_key_sha256 is not None:
        router_config["internalKeySha256"] = internal_key_sha256
    shadows = [r.name for r in spec.routes if r.name in shadowing and r.strategy is not None]
    if shadows:
        router_config["shadowing"] = shadows
    deployments = [{"name": ROUTER_DEPLOYMENT, "user_config": router_config}]
    for base in spec.base_models:
        deployments.append({
            "name": base_deployment_name(base.name),
            "autoscaling_config": autoscaling_config(base),
            "max_ongoing_requests": base.autoscaling.ongoing_bound,
            "max_queued_requests": base.autoscaling.max_queued_requests,
            "request_router_config": request_router_config(base),
            "user_config": {"adapters": adapter_catalog(spec, base.name)},
        })
    return {
        "http_options": {"host": host, "port": port},
        "applications": [{
            "name": app_name,
            "route_prefix": route_prefix,
            "import_path": IMPORT_PATH,
            "args": app_args(spec),
            "deployments": deployments,
        }],
    }


def llm_config_dict(base: BaseModelSpec) -> dict:
    """Keyword arguments of Ray Serve LLM's ``LLMConfig`` for one base model."""
    e = base.engine
    engine_kwargs = {
        "enable_lora": True,
        "max_loras": e.max_loras,
        "max_cpu_loras": e.resident_adapters,
        "max_lora_rank": e.max_lora_rank,
        "dtype": e.dtype,
        "enforce_eager": e.enforce_eager,
    }
    if e.max_model_len is not None:
        engine_kwargs["max_model_len"] = e.max_model_len
    if e.kv_cache_bytes is not None:
        engine_kwargs["kv_cache_memory_bytes"] = e.kv_cache_bytes
    # Tool calling and templates are vLLM frontend settings; Ray Serve LLM sorts engine_kwargs into
    # engine and frontend arguments by name.
    if e.tool_call_parser is not None:
        engine_kwargs["tool_call_parser"] = e.tool_call_parser
        engine_kwargs["enable_auto_tool_choice"] = e.auto_tool_choice
        engine_kwargs["tool_strict_level"] = e.tool_strict_level
    if e.chat_template is not None:
        engine_kwargs["chat_template"] = e.chat_template
    elif e.chat_template_file is not None:
        engine_kwargs["chat_template"] = str(PurePath(base.source) / e.chat_template_file)
    if e.reasoning_parser is not None:
        engine_kwargs["reasoning_parser"] = e.reasoning_parser
    config = {
        "model_loading_config": {
            "model_id": base.name,
            "model_source": {"bucket_uri": base.source} if base.source.startswith("s3://") else base.source,
        },
        "engine_kwargs": engine_kwargs,
        # Adapters are fetched by serving.dataplane.adapter_loader from each version's own source, so no
        # shared dynamic_lora_loading_path is needed; the config still turns on multiplexing.
        # One try per request: a missing or corrupt version fails fast with its reason, and the
        # next request for it tries again.
        "lora_config": {"max_num_adapters_per_replica": e.resident_adapters, "max_download_tries": 1},
        "log_engine_metrics": False,
    }
    if base.resources.gpu == 0:
        config["placement_group_config"] = {"bundles": [{"CPU": base.resources.cpu}]}
    else:
        engine_kwargs["tensor_parallel_size"] = base.resources.gpu
        if base.resources.accelerator:
            # Ray Serve LLM adds an accelerator_type:<type> resource to the replica's bundles, so
            # only nodes with that GPU (and the worker group that declares it) can hold them.
            config["accelerator_type"] = base.resources.accelerator
        config["placement_group_config"] = {
            "bundles": [{"GPU": 1, "CPU": base.resources.cpu}] + [{"GPU": 1}] * (base.resources.gpu - 1)
        }
    return config
