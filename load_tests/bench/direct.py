"""The baseline for the router's overhead: Ray Serve LLM's own OpenAI ingress, nothing of the fleet's.

It talks to the fleet application's base-model deployments by name (``args.bases``, the bench fleet's base by
default); clients name the multiplexed id themselves (``tiny-llama:a0@v1``) instead of a route.
"""

from __future__ import annotations

from ray import serve
from ray.serve.llm.ingress import OpenAiIngress, make_fastapi_ingress

from load_tests.bench.stack import BASE
from serving.dataplane.ray_serve_llm import ModelCard
from serving.render.serve_config import APP_NAME, base_deployment_name


class DirectIngress(OpenAiIngress):
    def __init__(self, bases: list[str]):
        handles = {b: serve.get_deployment_handle(base_deployment_name(b), app_name=APP_NAME) for b in bases}
        cards = {b: ModelCard(id=b, object="model", owned_by="bench", permission=[], metadata={}) for b in bases}
        super().__init__(handles, cards)


def build(args: dict) -> serve.Application:
    """The Serve application builder (``import_path: load_tests.bench.direct:build``)."""
    return serve.deployment(make_fastapi_ingress(DirectIngress), name="DirectIngress", max_ongoing_requests=1000,
                            ray_actor_options={"num_cpus": 0}).bind(list(args.get("bases") or [BASE]))
