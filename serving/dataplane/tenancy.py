"""Tenants in the router: keys to callers, callers to routes, and limits that hold across router replicas.

- :class:`TenantGate` is a router replica's part. It holds the key ring (hashes only, from the keys file it
  rereads when the file changes) and its leases of the fleet's limits (``serving.policy.limits``): it
  admits most requests without leaving the process, and settles each with the tokens it really used.
- :class:`FleetLimiter` is the fleet's part: one named Ray actor per fleet application holding every
  tenant's buckets, budgets and usage (``FleetLimits``). It snapshots the budgets to S3 (``tenancy.state``)
  every few seconds and restores them when it starts, so a new Ray cluster (KubeRay replaces it when base
  models change) does not hand out a spent budget again.

While the actor cannot be reached (it is being restarted), rate limits fail open and budgets closed, or
as ``tenancy.whenLimiterUnavailable`` says.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from dataclasses import dataclass

import ray

from serving.api.fleet import FleetSpec
from serving.api.keys import KeysFileError, parse_keys
from serving.api.tenants import TenantSpec
from serving.observability.metrics import Recorder
from serving.policy.access import ANYONE, Caller, KeyRing, Refusal, identify, limit_refusal, unreachable_refusal
from serving.policy.limits import FleetLimits, Grant, Leases

logger = logging.getLogger("ray.serve").getChild("slmfleet.tenancy")

LIMITER_TIMEOUT_S = 1.0
"""How long a router waits for the limiter actor before treating it as unreachable."""
SNAPSHOT_EVERY_S = 5.0
USAGE_FLUSH_S = 1.0
KEYS_POLL_S = 1.0
CALLER = "slmfleet_caller"
"""Where the authenticated caller is kept in the ASGI scope's state (set by ``auth.Authenticate``)."""


def caller_of_scope(scope) -> Caller:
    return (scope.get("state") or {}).get(CALLER, ANYONE)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class FleetLimiter:
    """The fleet's limits state (``FleetLimits``), shared by every router replica."""

    def __init__(self, state_uri: str | None = None):
        self.limits = FleetLimits()
        self.state_uri = state_uri
        self._saved: dict | None = None
        self._restored = False

    def configure(self, tenants: list[dict], state_uri: str | None) -> None:
        self.limits.configure([TenantSpec.model_validate(t) for t in tenants])
        self.state_uri = state_uri
        if not self._restored:
            self._restored = True
            snapshot = self._read_snapshot()
            if snapshot:
                self.limits.restore(snapshot, time.time())
                logger.info("limiter: budgets restored from %s", self.state_uri)

    def lease(self, tenant: str, give_back: tuple[int, int], need: tuple[int, int]) -> Grant:
        now = time.time()
        if give_back != (0, 0):
            self.limits.give_back(tenant, *give_back, now)
        return self.limits.lease(tenant, *need, now)

    def give_back(self, leases: list[tuple[str, int, int]]) -> None:
        now = time.time()
        for tenant, requests, tokens in leases:
            self.limits.give_back(tenant, requests, tokens, now)

    def record(self, rows: list[tuple]) -> None:
        for row in rows:
            self.limits.record(*row)

    def report(self, tenant: str) -> dict:
        return self.limits.report(tenant, time.time())

    def snapshot(self) -> dict:
        """Write the budgets to S3 if they changed (called every few seconds by the routers)."""
        snapshot = self.limits.snapshot()
        if self.state_uri and snapshot != self._saved:
            bucket, key = self._object()
            try:
                self._s3().put_object(Bucket=bucket, Key=key, Body=json.dumps(snapshot).encode())
                self._saved = snapshot
            except Exception as err:  # noqa: BLE001 - retried at the next snapshot
                logger.warning("limiter: budgets not saved to %s: %s", self.state_uri, err)
        return snapshot

    def _object(self) -> tuple[str, str]:
        from serving.api.fields import parse_s3_uri

        bucket, prefix = parse_s3_uri(self.state_uri)
        return bucket, f"{prefix}/budgets.json".lstrip("/")

    def _s3(self):
        from serving.adapters.store import s3_client

        return s3_client()

    def _read_snapshot(self) -> dict | None:
        if not self.state_uri:
            return None
        bucket, key = self._object()
        try:
            return json.loads(self._s3().get_object(Bucket=bucket, Key=key)["Body"].read())
        except Exception as err:  # noqa: BLE001 - no snapshot yet (a new fleet) or unreadable: start from zero
            logger.info("limiter: no budgets restored from %s (%s)", self.state_uri, type(err).__name__)
            return None


def limiter_name(app_name: str) -> str:
    return f"slmfleet-limiter-{app_name}"


@dataclass
class Admission:
    """A request admitted for a tenant: what it reserved, settled when it is answered."""

    caller: Caller
    route: str
    reserved: int = 0


class TenantGate:
    """One router replica's tenancy (see the module docstring)."""

    def __init__(self, metrics: Recorder, *, app_name: str = "slm-fleet"):
        self.metrics = metrics
        self.app_name = app_name
        self.spec: FleetSpec | None = None
        self.tenants: list[TenantSpec] = []
        self.ring = KeyRing()
        self.leases = Leases()
        self._actor = None
        self._usage: list[tuple] = []
        self._keys_file: str | None = None
        self._keys_mtime: float | None = None
        self._internal: str | None = None
        self._watch: threading.Thread | None = None
        self._lock = threading.Lock()
        self._flusher: asyncio.Task | None = None

    # --- configuration ---

    def configure(self, spec: FleetSpec, *, keys_file: str | None, internal_sha256: str | None) -> None:
        self.spec, self.tenants = spec, list(spec.tenants)
        self.leases.limits = {t.name: t for t in spec.tenants}
        self._internal = internal_sha256
        if keys_file != self._keys_file:
            self._keys_file, self._keys_mtime = keys_file, None
        self.reload_keys()
        if spec.open:
            logger.info("tenancy: no tenants declared: an open fleet, every route to anyone without a key")
        else:
            logger.info("tenancy: %d tenant(s) (%s), %d key(s) from %s", len(spec.tenants),
                        ", ".join(t.name for t in spec.tenants), len(self.ring), self._keys_file or "no keys file")
            self._actor = self._limiter()
            self._configure_limiter()
        if self._keys_file and self._watch is None:
            self._watch = threading.Thread(target=self._watch_keys, name="slmfleet-keys", daemon=True)
            self._watch.start()

    def _configure_limiter(self):
        return self._actor.configure.remote([t.model_dump(mode="json", by_alias=True) for t in self.tenants],
                                            self.spec.tenancy.state)

    def _limiter(self):
        return FleetLimiter.options(name=limiter_name(self.app_name), namespace="slmfleet", get_if_exists=True,
                                    lifetime="detached").remote()

    def reload_keys(self) -> None:
        """Reread the keys file if it changed; a file that does not parse is reported and the old keys kept."""
        if self._keys_file is None:
            self.ring = KeyRing([], self._internal)
            return
        try:
            mtime = os.stat(self._keys_file).st_mtime_ns
        except OSError as err:
            if self._keys_mtime is not None or len(self.ring) == 0:
                logger.error("tenancy: keys file %s cannot be read (%s); keeping %d key(s)", self._keys_file,
                             err.strerror, len(self.ring))
            self._keys_mtime = None
            return
        if mtime == self._keys_mtime:
            return
        try:
            with open(self._keys_file, encoding="utf-8") as f:
                ring = KeyRing(parse_keys(f.read(), source=f"keys file {self._keys_file}"), self._internal)
        except (KeysFileError, OSError, UnicodeDecodeError) as err:
            logger.error("tenancy: not using the changed keys file, keeping %d key(s): %s", len(self.ring), err)
            self._keys_mtime = mtime
            return
        self.ring, self._keys_mtime = ring, mtime
        logger.info("tenancy: %d key(s) from %s", len(ring), self._keys_file)

    def _watch_keys(self) -> None:
        while True:
            time.sleep(KEYS_POLL_S)
            try:
                self.reload_keys()
            except Exception:  # noqa: BLE001 - the watcher never stops
                logger.exception("tenancy: keys file watch")

    # --- per request ---

    def identify(self, authorization: str | None) -> Caller | Refusal:
        answer = identify(self.ring, self.tenants, authorization)
        if isinstance(answer, Refusal):
            self.metrics.inc("slmfleet_auth_failures_total", reason=answer.code)
        return answer

    def refused(self, caller: Caller, reason: str) -> None:
        self.metrics.inc("slmfleet_tenant_refusals_total", tenant=caller.name or "", reason=reason)

    async def admit(self, caller: Caller, route: str, tokens: int) -> Admission | Refusal:
        """Admit a request of ``tokens`` (estimated) for ``caller``, from its lease or a new one."""
        admission = Admission(caller, route)
        if caller.tenant is None:  # an open fleet, or the fleet's own traffic: nothing counted
            return admission
        name = caller.tenant.name
        self._start_flusher()
        need = self.leases.admit(name, tokens, time.time())
        admission.reserved = tokens if self.leases.counts(name)[1] else 0
        if need is None:
            return admission
        give_back = self.leases.before_new_lease(name)
        try:
            grant = await self._lease(name, give_back, need)
            if grant.refused == "tenant":  # a restarted limiter that has not been told the tenants yet
                await asyncio.wait_for(asyncio.wrap_future(self._configure_limiter().future()), LIMITER_TIMEOUT_S)
                grant = await self._lease(name, (0, 0), need)
        except Exception as err:  # noqa: BLE001 - unreachable limiter: open or closed, as the spec says
            return self._unreachable(caller, admission, err)
        if not grant.granted:
            self.refused(caller, grant.refused)
            refusal = limit_refusal(name, grant.refused, grant.retry_after)
            return refusal
        self.leases.take(name, grant, need, time.time())
        return admission

    async def _lease(self, name: str, give_back: tuple[int, int], need: tuple[int, int]) -> Grant:
        return await asyncio.wait_for(asyncio.wrap_future(self._actor.lease.remote(name, give_back, need).future()),
                                      LIMITER_TIMEOUT_S)

    def _unreachable(self, caller: Caller, admission: Admission, err: BaseException) -> Admission | Refusal:
        refusal = unreachable_refusal(caller.tenant, self.spec.tenancy.when_limiter_unavailable)
        logger.warning("tenancy: limiter unreachable (%s: %s); failing %s for tenant %s", type(err).__name__, err,
                       "closed" if refusal else "open", caller.tenant.name)
        if refusal is not None:
            self.refused(caller, "limiter_unavailable")
            return refusal
        admission.reserved = 0
        return admission

    def settle(self, admission: Admission, *, status: int, answered_by: str, prompt_tokens: int,
               completion_tokens: int, cost: float) -> None:
        """Count what an admitted request used, and give what it reserved and did not use back to the lease."""
        tenant = admission.caller.tenant
        if tenant is None:
            return
        used = prompt_tokens + completion_tokens
        if admission.reserved:
            self.leases.settle(tenant.name, admission.reserved, used)
        labels = {"tenant": tenant.name, "route": admission.route, "answered_by": answered_by}
        self.metrics.inc("slmfleet_tenant_requests_total", status=str(status), **labels)
        if used:
            self.metrics.inc("slmfleet_tenant_tokens_total", prompt_tokens, kind="prompt", **labels)
            self.metrics.inc("slmfleet_tenant_tokens_total", completion_tokens, kind="completion", **labels)
        if cost:
            self.metrics.inc("slmfleet_tenant_cost_total", cost, **labels)
        with self._lock:
            self._usage.append((tenant.name, admission.route, answered_by, 1, prompt_tokens, completion_tokens, cost))
        self._start_flusher()

    async def usage(self, caller: Caller) -> dict | Refusal:
        """The caller's tenant's usage, fleet-wide (this replica's latest counts flushed first)."""
        if caller.tenant is None:
            return Refusal(404, "invalid_request_error", "no_tenant",
                           "usage is reported per tenant, and this request has none (an open fleet, or the "
                           "fleet's own key)")
        try:
            await self.flush()
            return await asyncio.wait_for(asyncio.wrap_future(
                self._actor.report.remote(caller.tenant.name).future()), LIMITER_TIMEOUT_S * 5)
        except Exception as err:  # noqa: BLE001
            return Refusal(503, "service_unavailable", "limiter_unavailable",
                           f"usage cannot be read right now ({type(err).__name__}); retry shortly", retry_after=2)

    # --- background ---

    def _start_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            try:
                self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
            except RuntimeError:
                pass

    async def _flush_loop(self) -> None:
        last_snapshot = 0.0
        while True:
            await asyncio.sleep(USAGE_FLUSH_S)
            try:
                await self.flush()
                if self._actor is not None and self.spec is not None and self.spec.tenancy.state \
                        and time.time() - last_snapshot > SNAPSHOT_EVERY_S:
                    last_snapshot = time.time()
                    self._actor.snapshot.remote()
            except Exception as err:  # noqa: BLE001 - retried next time
                logger.warning("tenancy: usage not flushed: %s", err)

    async def flush(self) -> None:
        """Send the usage counted here and the rest of expired leases to the fleet's limiter."""
        with self._lock:
            rows, self._usage = self._usage, []
        leases = self.leases.expired(time.time())
        if not (rows or leases) or self._actor is None:
            return
        actor = self._actor
        try:
            if leases:
                await asyncio.wrap_future(actor.give_back.remote(leases).future())
            if rows:
                await asyncio.wrap_future(actor.record.remote(rows).future())
        except Exception:
            with self._lock:
                self._usage = rows + self._usage  # counted once it is reachable again
            raise

