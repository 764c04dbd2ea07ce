"""The request router of every base deployment: Ray Serve's custom request-router API over the fleet's
placement policy (``serving.policy.placement``, pure), which weighs adapter residency against queue length.

Ray Serve builds one instance per deployment handle, in the process that holds the handle (the fleet
router's replicas). It gives the candidates, each replica's multiplexed ids (resident adapter versions, as the
replicas report them) and a cache of their queue lengths; this class fills the cache where it is stale, asks
the policy, and counts the decision. Ray Serve then sends to the chosen replica if it accepts (below its
maxOngoingRequests), else to the least busy of the rest, backing off while all are full.

A retried request (dispatch's second try, marked with the ``X-SLMFleet-Retry`` header) avoids the replicas
its first try went to: this router remembers, for recent requests, where each was placed.
"""

from __future__ import annotations

import random
from collections import OrderedDict

from ray.serve.request_router import FIFOMixin, MultiplexMixin, PendingRequest, RequestRouter, RunningReplica

from serving.api import headers as h
from serving.api.fleet import PlacementSettings
from serving.observability.metrics import Recorder
from serving.policy.placement import ReplicaLoad, place

_RETRY = h.RETRY.lower()  # Ray Serve LLM forwards the headers with lower-case names
_REMEMBERED = 4096
"""Recent requests whose replicas are remembered for a retry: a retry follows its first try within seconds."""

DEFAULT_SPILL_MARGIN = PlacementSettings.model_fields["spill_margin"].default
_spill_margins: dict[str, int] = {}
"""Base model -> spill margin, as the fleet router's current spec says (``set_spill_margins``): Ray Serve hands
a request router its kwargs only when it builds it, and the router's spec changes in place."""


def set_spill_margins(margins: dict[str, int]) -> None:
    """Called by the fleet router on every spec change, in the process where its request routers run."""
    _spill_margins.clear()
    _spill_margins.update(margins)


class PlacementRouter(FIFOMixin, MultiplexMixin, RequestRouter):
    def initialize_state(self, base_model: str = "", spill_margin: int = DEFAULT_SPILL_MARGIN) -> None:
        self.base_model = base_model
        self.spill_margin = spill_margin
        self._placed: OrderedDict[str, set[str]] = OrderedDict()
        self._metrics: Recorder | None = None

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        if pending_request is not None:
            # Ray Serve retries a choice whose replicas all refused; without backoff it would spin.
            pending_request.routing_context.should_backoff = True
        stale = [r for r in candidate_replicas if self._replica_queue_len_cache.get(r.replica_id) is None]
        if stale and len(candidate_replicas) > 1:
            await self._probe_queue_lens(stale, 0)
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        loads = [ReplicaLoad(key, frozenset(r.multiplexed_model_ids), self._replica_queue_len_cache.get(r.replica_id),
                             r.max_ongoing_requests)
                 for key, r in random.sample(list(by_id.items()), len(by_id))]
        model_id = pending_request.metadata.multiplexed_model_id if pending_request is not None else ""
        avoid = self._first_tries(pending_request)
        choice = place(loads, model_id, spill_margin=_spill_margins.get(self.base_model, self.spill_margin),
                       avoid=avoid)
        if choice is None:
            return []
        if pending_request is not None:
            self._count(choice.placement.value, retried=bool(avoid))
        chosen = by_id[choice.replica]
        # The rest as a fallback rank: Ray Serve takes the least busy of them if the chosen one is full.
        return [[chosen], [r for r in candidate_replicas if r is not chosen and r.replica_id.unique_id not in avoid]]

    def on_request_routed(self, pending_request: PendingRequest, replica_id, result) -> None:
        key = pending_request.metadata.internal_request_id
        if not key:
            return
        self._placed.setdefault(key, set()).add(replica_id.unique_id)
        self._placed.move_to_end(key)
        while len(self._placed) > _REMEMBERED:
            self._placed.popitem(last=False)

    def _first_tries(self, pending_request: PendingRequest | None) -> set[str]:
        """The replicas a retried request's first try went to (empty for a first try)."""
        if pending_request is None or len(pending_request.args) < 2:
            return set()
        headers = getattr(pending_request.args[1], "headers", None) or {}
        if headers.get(_RETRY) != "1":
            return set()
        return set(self._placed.get(pending_request.metadata.internal_request_id, ()))

    def _count(self, placement: str, *, retried: bool) -> None:
        if self._metrics is None:  # built lazily: Ray's metrics need the process's Ray context
            self._metrics = Recorder("placement")
        self._metrics.inc("slmfleet_placements_total", base_model=self.base_model, placement=placement,
                          retried=str(retried).lower())
