"""The base-model deployment: Ray Serve LLM's ``LLMServer`` with the fleet's adapter catalog.

The catalog (adapter version -> its own source and sha256) lives in the deployment's
``user_config``, changed in place with no engine restart; ``adapter_loader`` fetches a version from
it. Everything else (multiplexed routing, LRU residency, the vLLM engine) is Ray Serve LLM's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time

from opentelemetry import trace

from serving.api import headers as h
from serving.api.fleet import BaseModelSpec
from serving.dataplane.adapter_loader import FleetAdapterLoader, adapter_version
from serving.dataplane.ray_serve_llm import EngineServerBase
from serving.observability import tracing
from serving.observability.metrics import Recorder

# Under "ray.serve" so that lines carry the replica context and reach the replica log files.
logger = logging.getLogger("ray.serve").getChild("slmfleet.engine")
_DISPATCHED_AT = h.DISPATCHED_AT.lower()  # Ray Serve LLM forwards the headers with lower-case names
_DEADLINE = h.DEADLINE.lower()


class FleetLLMServer(EngineServerBase):
    """One base model's replica: a vLLM engine plus the fleet's catalog of adapter versions."""

    async def __init__(self, llm_config, *, base: dict):
        self.base = BaseModelSpec.model_validate(base)
        self.catalog: dict[str, dict] = {}
        self._started_at = time.time()
        self.metrics = Recorder("engine")
        self._resident: set[str] = set()
        if llm_config.engine_kwargs.get("kv_cache_memory_bytes") is not None:
            # vLLM's CPU platform lets a set VLLM_CPU_KVCACHE_SPACE (GiB, machine-wide) override
            # kv_cache_memory_bytes, and an empty one crashes its workers: the spec's size must win,
            # so this replica (and the engine processes it spawns) runs without it.
            os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
        await super().__init__(llm_config, model_downloader=functools.partial(FleetAdapterLoader, server=self))
        self.metrics.set("slmfleet_adapters_resident", 0, base_model=self.base.name)

    def note_residency(self, loading: str | None = None) -> None:
        """Count evictions since the last look and export how many versions are resident.

        Called around every load and on every request: Ray drops a gauge that is not set again
        within its TTL, and a replica that only serves resident versions loads nothing.
        """
        resident = self.resident_model_ids()
        for gone in self._resident - resident:
            adapter, version = adapter_version(gone)
            self.metrics.inc("slmfleet_adapter_evictions_total", base_model=self.base.name,
                             adapter=adapter, version=version)
            self.metrics.set("slmfleet_adapter_resident", 0, base_model=self.base.name, adapter=adapter,
                             version=version)
        if loading is not None:
            resident.add(loading)  # Ray Serve adds it when this load returns
        self._resident = resident
        self.metrics.set("slmfleet_adapters_resident", len(resident), base_model=self.base.name)
        for model_id in resident:
            adapter, version = adapter_version(model_id)
            self.metrics.set("slmfleet_adapter_resident", 1, base_model=self.base.name, adapter=adapter,
                             version=version)

    async def chat(self, request, raw_request_info=None):
        return await self._observed(super().chat, "chat", request, raw_request_info)

    async def completions(self, request, raw_request_info=None):
        return await self._observed(super().completions, "completions", request, raw_request_info)

    async def _observed(self, method, call: str, request, raw_request_info):
        """Queue time from the router's dispatch header; spans for this replica and its engine call."""
        self.note_residency()
        headers = dict(getattr(raw_request_info, "headers", None) or {})
        dispatched = headers.get(_DISPATCHED_AT)
        if dispatched:
            waited = max(0.0, time.time() - float(dispatched))
            self.metrics.observe("slmfleet_router_queue_seconds", waited, base_model=self.base.name)
        span = tracing.tracer().start_span(
            "slmfleet.base_model", context=tracing.extract(headers), kind=trace.SpanKind.SERVER,
            attributes={"slmfleet.base_model": self.base.name, "slmfleet.model_id": request.model,
                        "slmfleet.call": call})
        try:
            # Resolves the adapter (a cold load happens here) and starts the engine's stream.
            stream = await method(request, raw_request_info)
        except BaseException as err:
            span.record_exception(err)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(err).__name__))
            span.end()
            raise
        deadline = headers.get(_DEADLINE)
        return _traced_engine_call(stream, span, request.model, lambda: self.metrics.inc(
            "slmfleet_engine_cancelled_total", base_model=self.base.name),
            deadline=float(deadline) if deadline else None)

    def reconfigure(self, user_config: dict) -> None:
        """Replace the adapter catalog; Ray Serve calls this on every user_config change."""
        self.catalog = dict(user_config.get("adapters", {}))
        logger.info("base %s: adapter catalog has %d version(s)", self.base.name, len(self.catalog))

    async def replica_info(self) -> dict:
        """Identity of this replica's engine, to show that live changes did not restart it."""
        return {"pid": os.getpid(), "startedAt": self._started_at, "catalog": sorted(self.catalog)}


async def _traced_engine_call(stream, parent: trace.Span, model_id: str, cancelled=lambda: None, *,
                              deadline: float | None = None):
    """The engine's output stream inside an ``slmfleet.engine`` span, child of the replica's span.

    A stream stopped before its end is counted by ``cancelled``: closed by its caller (the client went away: Ray
    Serve cancels the call), or past the request's ``deadline`` (wall-clock seconds, from the router), where it
    raises TimeoutError. Either way vLLM's generator is cancelled, which aborts the generation."""
    span = tracing.tracer().start_span("slmfleet.engine", context=trace.set_span_in_context(parent),
                                       attributes={"slmfleet.model_id": model_id})
    iterator = stream.__aiter__()
    try:
        while True:
            try:
                if deadline is None:
                    item = await iterator.__anext__()
                else:
                    item = await asyncio.wait_for(iterator.__anext__(), max(0.0, deadline - time.time()))
            except StopAsyncIteration:
                return
            yield item
    except (GeneratorExit, asyncio.CancelledError, TimeoutError):
        cancelled()
        span.set_attribute("slmfleet.cancelled", True)
        raise
    except BaseException as err:
        span.record_exception(err)
        span.set_status(trace.Status(trace.StatusCode.ERROR, type(err).__name__))
        raise
    finally:
        span.end()
        parent.end()
        if hasattr(iterator, "aclose"):
            await iterator.aclose()  # vLLM's generator aborts the request when it is closed before its end
