"""Every use of Ray Serve LLM's private API, in one module, behind names of the fleet's.

Ray Serve LLM's public API (``LLMServer``, ``OpenAiIngress``, ``make_fastapi_ingress``) does not
yet expose what the fleet needs: sending a request to a base deployment and getting its response
(``_process_llm_request``), the deployments behind an ingress, a loader hook for adapters that come
from per-version sources, and the LRU of adapters resident on a replica. When Ray changes one of
these, this module is the one to change; the rest of the fleet uses the names below.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from fastapi import FastAPI, Request
from ray import serve
from ray.llm._internal.common.utils.cloud_utils import LoraMirrorConfig
from ray.llm._internal.serve.core.configs.openai_api_models import ModelCard, OpenAIHTTPException
from ray.llm._internal.serve.core.ingress.ingress import init as _init_ingress_app
from ray.llm._internal.serve.utils.lora_serve_utils import LoraModelLoader
from ray.serve.handle import DeploymentHandle
from ray.serve.llm import LLMServer
from ray.serve.llm.ingress import OpenAiIngress
from starlette.responses import Response

__all__ = ["AdapterLoaderBase", "EngineServerBase", "IngressBase", "ModelCard", "OpenAIHTTPException", "ingress_app"]

# Ray Serve keeps a replica's multiplexed models (here: resident adapter versions, LRU) there.
_MULTIPLEX_WRAPPER = "__serve_multiplex_wrapper"


def ingress_app() -> FastAPI:
    """The FastAPI app Ray Serve LLM builds for an ingress (its middleware: request ids, metrics, errors),
    for the fleet to add its own handlers to before ``make_fastapi_ingress`` takes it."""
    return _init_ingress_app()


class IngressBase(OpenAiIngress):
    """Ray Serve LLM's OpenAI ingress, with its private sending path under public names."""

    @property
    def base_deployments(self) -> Mapping[str, DeploymentHandle]:
        """Base model name -> handle of its deployment."""
        return self._default_serve_handles

    async def send(self, body, call_method: str, raw_request: Request) -> Response:
        """Send ``body`` (its ``model`` a base or a multiplexed id) to its base deployment.

        Returns a JSON or streaming response; an error the engine answers raises OpenAIHTTPException.
        """
        return await self._process_llm_request(body, call_method, raw_request=raw_request)


class AdapterLoaderBase(LoraModelLoader):
    """Ray Serve LLM's LoRA loader with its download step replaced by :meth:`fetch`."""

    def fetch(self, model_id: str) -> str:
        """Put the files of adapter ``model_id`` in :meth:`local_dir` and return that directory."""
        raise NotImplementedError

    def local_dir(self, model_id: str) -> str:
        """Where Ray Serve LLM expects the files of ``model_id`` on this node."""
        return self._model_dir_path(model_id)

    async def load(self, model_id: str, source: str):
        """Fetch (through :meth:`fetch`) and register adapter ``model_id`` with the engine."""
        mirror = LoraMirrorConfig(lora_model_id=model_id, bucket_uri=source, max_total_tokens=None)
        return await self.load_model(model_id, mirror)

    def _download_lora(self, lora_mirror_config: LoraMirrorConfig) -> str:
        return self.fetch(lora_mirror_config.lora_model_id)


class EngineServerBase(LLMServer):
    """Ray Serve LLM's ``LLMServer``, with what the fleet reads of its multiplexing."""

    def resident_model_ids(self) -> set[str]:
        """The adapter versions (multiplexed ids) Ray Serve holds loaded on this replica.

        Ray Serve keeps its LRU on the decorated loader function (``self._load_model`` wraps it)
        or, for a method, on the instance.
        """
        loader = getattr(getattr(self, "_load_model", None), "__wrapped__", None)
        for holder in (loader, self):
            wrapper = getattr(holder, _MULTIPLEX_WRAPPER, None) if holder is not None else None
            if wrapper is not None:
                return set(wrapper.models)
        return set()

    async def _maybe_resolve_lora_from_multiplex(self) -> None:
        """One request at a time per adapter version while it is made ready on this replica.

        Ray Serve LLM checks whether the engine has a version and then registers it; two first
        requests arriving together both register it, and vLLM refuses the second ("already
        loaded"), failing that request. The lock makes the second wait and find it registered.
        """
        model_id = serve.get_multiplexed_model_id()
        if not model_id:
            return await super()._maybe_resolve_lora_from_multiplex()
        locks = self.__dict__.setdefault("_slmfleet_resolving", {})
        async with locks.setdefault(model_id, asyncio.Lock()):
            await super()._maybe_resolve_lora_from_multiplex()
