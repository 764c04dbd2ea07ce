"""Loading an adapter version on a base-model replica, from the source the fleet spec gives it.

Ray Serve LLM loads adapters from one shared ``dynamic_lora_loading_path``. A fleet instead pins
every adapter version to its own source (and optional sha256), so the loader reads the replica's
catalog (``FleetLLMServer.catalog``), checks the version's ``adapter_config.json`` against the base
before any weights move, and downloads it so that no engine ever reads a half-written directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Protocol

from serving.adapters.meta import adapter_problems
from serving.adapters.store import AdapterStore, AdapterStoreError
from serving.api.fleet import BaseModelSpec
from serving.dataplane.errors import AdapterUnavailable
from serving.dataplane.ray_serve_llm import AdapterLoaderBase
from serving.observability.metrics import Recorder

# Under "ray.serve" so that lines carry the replica context and reach the replica log files.
logger = logging.getLogger("ray.serve").getChild("slmfleet.engine")


class Replica(Protocol):
    """What the loader needs of the replica it loads for (``base_model.FleetLLMServer``)."""

    base: BaseModelSpec
    catalog: dict[str, dict]
    metrics: Recorder

    def note_residency(self, loading: str | None = None) -> None: ...


class FleetAdapterLoader(AdapterLoaderBase):
    """Fetch an adapter version from the source the fleet spec gives it."""

    def __init__(self, *, server: Replica, **kwargs):
        super().__init__(**kwargs)
        self._server = server
        self._store = AdapterStore()

    async def load_model_from_config(self, lora_model_id: str, llm_config):
        """Called by Ray Serve's multiplexing for a version not resident on this replica (a cold load)."""
        self._server.note_residency()  # Ray Serve has already evicted to make room, if it had to
        adapter, version = adapter_version(lora_model_id)
        labels = {"base_model": self._server.base.name, "adapter": adapter, "version": version}
        started = time.monotonic()
        try:
            entry = self._server.catalog.get(lora_model_id)
            if entry is None:
                raise AdapterUnavailable(adapter, version, "not in this fleet's adapter catalog")
            loaded = await self.load(lora_model_id, entry["source"])
        except Exception:
            self._server.metrics.inc("slmfleet_adapter_loads_total", outcome="failed", **labels)
            raise
        self._server.metrics.inc("slmfleet_adapter_loads_total", outcome="loaded", **labels)
        self._server.metrics.observe("slmfleet_adapter_load_duration_seconds", time.monotonic() - started, **labels)
        self._server.note_residency(loading=lora_model_id)
        return loaded

    def fetch(self, model_id: str) -> str:
        entry = self._server.catalog[model_id]
        adapter, version, source = entry["adapter"], entry["version"], entry["source"]
        started = time.monotonic()
        try:
            # Metadata first: a wrong base or too large a rank is refused before weights move.
            meta = self._store.read_config(source)
            problems = adapter_problems(meta, base=self._server.base)
            if problems:
                raise AdapterUnavailable(adapter, version, "; ".join(problems))
            local = self.local_dir(model_id)
            fetch_once(self._store, source, entry.get("sha256"), Path(local))
        except AdapterStoreError as err:
            failure = AdapterUnavailable(adapter, version, str(err))
            logger.error("adapter load failed: adapter=%s version=%s source=%s cause=%s",
                         adapter, version, source, err)
            raise failure from None
        except AdapterUnavailable as err:
            logger.error("adapter load failed: adapter=%s version=%s source=%s cause=%s",
                         adapter, version, source, err.cause)
            raise
        except Exception as err:  # noqa: BLE001 - whatever broke a cold load, it is this version's 503, named
            logger.exception("adapter load failed: adapter=%s version=%s source=%s", adapter, version, source)
            raise AdapterUnavailable(adapter, version, f"{type(err).__name__}: {err}") from None
        logger.info("adapter loaded: adapter=%s version=%s source=%s in %.2fs",
                    adapter, version, source, time.monotonic() - started)
        return local


SOURCE_MARKER = ".slmfleet-source"


def fetch_once(store: AdapterStore, source: str, sha256: str | None, local: Path) -> None:
    """Put the files of ``source`` at ``local`` without ever touching a directory an engine reads.

    Replicas on one node share the download cache, and a vLLM engine reads an adapter's directory
    while it loads it. So a version is downloaded into a fresh staging directory and renamed into
    place whole; a directory already there for the same source and sha256 (versions are immutable)
    is reused, never deleted under another replica's engine. A version the fleet pins by no sha256
    is known by its files' fingerprint in the store instead: files pushed again under the same source
    (the demo's and the tests' regenerated adapters) are downloaded again, not served stale.
    """
    want = json.dumps({"source": source, "sha256": sha256,
                       "fingerprint": None if sha256 else store.fingerprint(source)})

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


def adapter_version(model_id: str) -> tuple[str, str]:
    """("shout", "v1") from the multiplexed id "tiny-llama:shout@v1"."""
    adapter, _, version = model_id.partition(":")[2].partition("@")
    return adapter, version
