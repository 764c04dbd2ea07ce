"""The base-model deployment: Ray Serve LLM's ``LLMServer`` with the fleet's adapter catalog.

Ray Serve LLM loads adapters from one shared ``dynamic_lora_loading_path``. A fleet instead pins
every adapter version to its own source (and optional sha256), so this deployment keeps that
catalog in its ``user_config`` (changed in place, no engine restart) and swaps in a loader that
fetches a version from its source, after checking its ``adapter_config.json`` against the base.
Everything else (multiplexed routing, LRU residency, the vLLM engine) is Ray Serve LLM's.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import time

from ray.llm._internal.common.utils.cloud_utils import LoraMirrorConfig
from ray.llm._internal.serve.utils.lora_serve_utils import LoraModelLoader
from ray.serve.llm import LLMServer

from serving.adapter_meta import adapter_problems
from serving.adapter_store import AdapterStore, AdapterStoreError
from serving.spec import BaseModelSpec

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
        entry = self._server.catalog.get(lora_model_id)
        if entry is None:
            adapter, _, version = lora_model_id.partition(":")[2].partition("@")
            raise AdapterUnavailable(adapter, version, "not in this fleet's adapter catalog")
        mirror = LoraMirrorConfig(lora_model_id=lora_model_id, bucket_uri=entry["source"], max_total_tokens=None)
        return await self.load_model(lora_model_id, mirror)

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
            shutil.rmtree(local, ignore_errors=True)
            self._store.download(source, local, sha256=entry.get("sha256"))
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


class FleetLLMServer(LLMServer):
    """One base model's replica: a vLLM engine plus the fleet's catalog of adapter versions."""

    async def __init__(self, llm_config, *, base: dict):
        self.base = BaseModelSpec.model_validate(base)
        self.catalog: dict[str, dict] = {}
        self._started_at = time.time()
        await super().__init__(llm_config, model_downloader=functools.partial(FleetAdapterLoader, server=self))

    def reconfigure(self, user_config: dict) -> None:
        """Replace the adapter catalog; Ray Serve calls this on every user_config change."""
        self.catalog = dict(user_config.get("adapters", {}))
        logger.info("base %s: adapter catalog has %d version(s)", self.base.name, len(self.catalog))

    async def replica_info(self) -> dict:
        """Identity of this replica's engine, to show that live changes did not restart it."""
        return {"pid": os.getpid(), "startedAt": self._started_at, "catalog": sorted(self.catalog)}
