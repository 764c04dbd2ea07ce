"""The base-model deployment: Ray Serve LLM's ``LLMServer`` with the fleet's adapter catalog.

Ray Serve LLM loads adapters from one shared ``dynamic_lora_loading_path``. A fleet instead pins
every adapter version to its own source (and optional sha256), so this deployment keeps that
catalog in its ``user_config`` (changed in place, no engine restart) and swaps in a loader that
fetches a version from its source, after checking its ``adapter_config.json`` against the base.
Everything else (multiplexed routing, LRU residency, the vLLM engine) is Ray Serve LLM's.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from opentelemetry import trace
from ray.llm._internal.common.utils.cloud_utils import LoraMirrorConfig
from ray.llm._internal.serve.utils.lora_serve_utils import LoraModelLoader
from ray import serve
from ray.serve.llm import LLMServer

from serving import tracing
from serving.adapter_meta import adapter_problems
from serving.adapter_store import AdapterStore, AdapterStoreError
from serving.metrics import Recorder
from serving.request_telemetry import DISPATCH_HEADER
from serving.spec import BaseModelSpec

ENGINE_METRICS = ("slmfleet_router_queue_seconds", "slmfleet_adapter_loads_total",
                  "slmfleet_adapter_load_duration_seconds", "slmfleet_adapter_evictions_total",
                  "slmfleet_adapters_resident")
# Ray Serve keeps a replica's multiplexed models (here: resident adapter versions, LRU) there.
_MULTIPLEX_WRAPPER = "__serve_multiplex_wrapper"

# Under "ray.serve" so that lines carry the replica context and reach the replica log files.
logger = logging.getLogger("ray.serve").getChild("slmfleet.engine")


class AdapterUnavailable(RuntimeError):
    """An adapter version could not be loaded on a replica; the message names it and why."""

    def __init__(self, adapter: str, version: str, cause: str):
        self.adapter, self.version, self.cause = adapter, version, cause
        super().__init__(f"adapter '{adapter}' version '{version}' cannot be loaded: {cause}")

    def __reduce__(self):  # crosses Ray process boundaries
        return (AdapterUnavailable, (self.adapter, self.version, self.cause))


class FleetAdapterLoader(LoraModelLoader):
    """Fetch an adapter version from the source the fleet spec gives it."""

    def __init__(self, *, server: "FleetLLMServer", **kwargs):
        super().__init__(**kwargs)
        self._server = server
        self._store = AdapterStore()

    async def load_model_from_config(self, lora_model_id: str, llm_config):
        """Called by Ray Serve's multiplexing for a version not resident on this replica (a cold load)."""
        self._server.note_residency()  # Ray Serve has already evicted to make room, if it had to
        adapter, version = _adapter_version(lora_model_id)
        labels = {"base_model": self._server.base.name, "adapter": adapter, "version": version}
        started = time.monotonic()
        try:
            entry = self._server.catalog.get(lora_model_id)
            if entry is None:
                raise AdapterUnavailable(adapter, version, "not in this fleet's adapter catalog")
            mirror = LoraMirrorConfig(lora_model_id=lora_model_id, bucket_uri=entry["source"], max_total_tokens=None)
            loaded = await self.load_model(lora_model_id, mirror)
        except Exception:
            self._server.metrics.inc("slmfleet_adapter_loads_total", outcome="failed", **labels)
            raise
        self._server.metrics.inc("slmfleet_adapter_loads_total", outcome="loaded", **labels)
        self._server.metrics.observe("slmfleet_adapter_load_duration_seconds", time.monotonic() - started, **labels)
        self._server.note_residency(loading=lora_model_id)
        return loaded

    def _download_lora(self, mirror: LoraMirrorConfig) -> str:
        entry = self._server.catalog[mirror.lora_model_id]
        adapter, version, source = entry["adapter"], entry["version"], entry["source"]
        started = time.monotonic()
        try:
            # Metadata first: a wrong base or too large a rank is refused before weights move.
            meta = self._store.read_config(source)
            problems = adapter_problems(meta, base=self._server.base)
            if problems:
                raise AdapterUnavailable(adapter, version, "; ".join(problems))
            local = self._model_dir_path(mirror.lora_model_id)
            _fetch_once(self._store, source, entry.get("sha256"), Path(local))
        except AdapterStoreError as err:
            failure = AdapterUnavailable(adapter, version, str(err))
            logger.error("adapter load failed: adapter=%s version=%s source=%s cause=%s",
                         adapter, version, source, err)
            raise failure from None
        except AdapterUnavailable as err:
            logger.error("adapter load failed: adapter=%s version=%s source=%s cause=%s",
                         adapter, version, source, err.cause)
            raise
        logger.info("adapter loaded: adapter=%s version=%s source=%s in %.2fs",
                    adapter, version, source, time.monotonic() - started)
        return local


SOURCE_MARKER = ".slmfleet-source"


def _fetch_once(store: AdapterStore, source: str, sha256: str | None, local: Path) -> None:
    """Put the files of ``source`` at ``local`` without ever touching a directory an engine reads.

    Replicas on one node share the download cache, and a vLLM engine reads an adapter's directory
    while it loads it. So a version is downloaded into a fresh staging directory and renamed into
    place whole; a directory already there for the same source and sha256 (versions are immutable)
    is reused, never deleted under another replica's engine.
    """
    want = json.dumps({"source": source, "sha256": sha256})

    def present() -> bool:
        marker = local / SOURCE_MARKER
        return marker.is_file() and marker.read_text() == want

    if present():
        return
    local.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{local.name}.", dir=local.parent))
    try:
        store.download(source, staging, sha256=sha256)
        (staging / SOURCE_MARKER).write_text(want)
        if present():  # another replica finished first
            return
        if local.exists():  # another source under this id: the fleet changed it; move the old one aside
            stale = local.with_name(f".{local.name}.stale-{uuid.uuid4().hex[:8]}")
            os.rename(local, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(staging, local)
        except OSError:
            if not present():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class FleetLLMServer(LLMServer):
    """One base model's replica: a vLLM engine plus the fleet's catalog of adapter versions."""

    async def __init__(self, llm_config, *, base: dict):
        self.base = BaseModelSpec.model_validate(base)
        self.catalog: dict[str, dict] = {}
        self._started_at = time.time()
        self.metrics = Recorder(ENGINE_METRICS)
        self._resident: set[str] = set()
        self._resolving: dict[str, asyncio.Lock] = {}
        await super().__init__(llm_config, model_downloader=functools.partial(FleetAdapterLoader, server=self))
        self.metrics.set("slmfleet_adapters_resident", 0, base_model=self.base.name)

    def _multiplexed(self):
        """Ray Serve's LRU of this replica's adapter versions; it keeps it on the decorated loader
        function (``self._load_model`` wraps it) or, for a method, on the instance."""
        loader = getattr(getattr(self, "_load_model", None), "__wrapped__", None)
        for holder in (loader, self):
            wrapper = getattr(holder, _MULTIPLEX_WRAPPER, None) if holder is not None else None
            if wrapper is not None:
                return wrapper
        return None

    def note_residency(self, loading: str | None = None) -> None:
        """Count evictions since the last look and export how many versions are resident.

        Called around every load and on every request: Ray drops a gauge that is not set again
        within its TTL, and a replica that only serves resident versions loads nothing.
        """
        wrapper = self._multiplexed()
        resident = set(wrapper.models) if wrapper is not None else set()
        for gone in self._resident - resident:
            adapter, version = _adapter_version(gone)
            self.metrics.inc("slmfleet_adapter_evictions_total", base_model=self.base.name,
                             adapter=adapter, version=version)
        if loading is not None:
            resident.add(loading)  # Ray Serve adds it when this load returns
        self._resident = resident
        self.metrics.set("slmfleet_adapters_resident", len(resident), base_model=self.base.name)

    async def _maybe_resolve_lora_from_multiplex(self) -> None:
        """One request at a time per adapter version while it is made ready on this replica.

        Ray Serve LLM checks whether the engine has a version and then registers it; two first
        requests arriving together both register it, and vLLM refuses the second ("already
        loaded"), failing that request. The lock makes the second wait and find it registered.
        """
        model_id = serve.get_multiplexed_model_id()
        if not model_id:
            return await super()._maybe_resolve_lora_from_multiplex()
        async with self._resolving.setdefault(model_id, asyncio.Lock()):
            await super()._maybe_resolve_lora_from_multiplex()

    async def chat(self, request, raw_request_info=None):
        return await self._observed(super().chat, "chat", request, raw_request_info)

    async def completions(self, request, raw_request_info=None):
        return await self._observed(super().completions, "completions", request, raw_request_info)

    async def _observed(self, method, call: str, request, raw_request_info):
        """Queue time from the router's dispatch header; spans for this replica and its engine call."""
        self.note_residency()
        headers = dict(getattr(raw_request_info, "headers", None) or {})
        dispatched = headers.get(DISPATCH_HEADER)
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
        return _traced_engine_call(stream, span, request.model)

    def reconfigure(self, user_config: dict) -> None:
        """Replace the adapter catalog; Ray Serve calls this on every user_config change."""
        self.catalog = dict(user_config.get("adapters", {}))
        logger.info("base %s: adapter catalog has %d version(s)", self.base.name, len(self.catalog))

    async def replica_info(self) -> dict:
        """Identity of this replica's engine, to show that live changes did not restart it."""
        return {"pid": os.getpid(), "startedAt": self._started_at, "catalog": sorted(self.catalog)}


def _adapter_version(model_id: str) -> tuple[str, str]:
    """("shout", "v1") from the multiplexed id "tiny-llama:shout@v1"."""
    adapter, _, version = model_id.partition(":")[2].partition("@")
    return adapter, version


async def _traced_engine_call(stream, parent: trace.Span, model_id: str):
    """The engine's output stream inside an ``slmfleet.engine`` span, child of the replica's span."""
    span = tracing.tracer().start_span("slmfleet.engine", context=trace.set_span_in_context(parent),
                                       attributes={"slmfleet.model_id": model_id})
    try:
        async for item in stream:
            yield item
    except BaseException as err:
        span.record_exception(err)
        span.set_status(trace.Status(trace.StatusCode.ERROR, type(err).__name__))
        raise
    finally:
        span.end()
        parent.end()
