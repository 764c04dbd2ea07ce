"""The Ray Serve application of a fleet: one autoscaled deployment per base model, a router in front.

``build_app`` is the ``import_path`` target of the config that ``serving.render.serve_config`` renders
(deployed locally by ``slm-fleet serve`` and on Kubernetes through a KubeRay RayService).
"""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from ray import serve
from ray.serve.deployment import Application
from ray.serve.llm import LLMConfig, build_llm_deployment
from ray.serve.llm.ingress import make_fastapi_ingress
from vllm.exceptions import VLLMValidationError

from serving.api.fleet import BaseModelSpec
from serving.dataplane.auth import Authenticate
from serving.dataplane.base_model import FleetLLMServer
from serving.dataplane.errors import client_error, validation_error
from serving.dataplane.ray_serve_llm import ingress_app
from serving.dataplane.request_guard import RequestGuard
from serving.dataplane.router import ENDPOINTS, FleetRouter
from serving.render.serve_config import ROUTER_DEPLOYMENT, base_deployment_name, llm_config_dict


def build_app(args: dict) -> Application:
    """Build the fleet application from ``args = {"baseModels": [...]}`` (see serve_config.app_args)."""
    bases = [BaseModelSpec.model_validate(b) for b in args["baseModels"]]
    handles = {
        base.name: build_llm_deployment(
            LLMConfig(**llm_config_dict(base)),
            deployment_cls=FleetLLMServer,
            bind_kwargs={"base": base.model_dump(mode="json", by_alias=True)},
            override_serve_options={"name": base_deployment_name(base.name)},
        )
        for base in bases
    }
    return router_app(handles)


def router_app(handles: dict | None, router_cls: type = FleetRouter, name: str = ROUTER_DEPLOYMENT) -> Application:
    """The fleet router in front of ``handles`` (base model -> its bound deployment); ``router_cls`` may find its
    handles itself (``handles`` None), e.g. a second router over another application's base deployments."""
    app = ingress_app()
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(VLLMValidationError, client_error)
    app.add_middleware(RequestGuard)
    app.add_middleware(Authenticate)  # added last, so it runs first: no body is read for a request without a key
    router = serve.deployment(
        make_fastapi_ingress(router_cls, endpoint_map=ENDPOINTS, app=app),
        name=name,
        # The router only resolves and forwards: many requests share one replica, and it needs
        # no CPU reservation (on KubeRay it runs on the head, which takes no engine replicas).
        max_ongoing_requests=1000,
        ray_actor_options={"num_cpus": 0},
    )
    return router.bind() if handles is None else router.bind(llm_deployments=handles)
