"""Which replica of a base model takes a request: adapter-aware and load-aware. Pure.

Sending every request for an adapter to the replica that holds it loads the fewest adapters but makes hot
spots: a popular adapter's replica queues while others idle (the benchmark measured affine placement's p95
above random placement's). So residency is weighed against queue length:

- a replica holding the adapter takes it, the least busy of them, unless it is busier than the least-loaded
  replica by more than ``spill_margin`` requests; then the least-loaded replica takes it and loads the
  adapter, so a hot adapter becomes resident on more than one replica and its load spreads;
- a request for an adapter no replica holds goes to the least-loaded replica, and among equals to the one
  with the fewest adapters resident (it evicts least);
- a request for the base model alone goes to the least-loaded replica.

Replicas a retried request asks to avoid (its first try failed there) are left out, unless that leaves none.
Full replicas (at their ``capacity``) are left out unless all are full. Ties keep the order the replicas
are given in: the caller shuffles them, so equals share the load.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import Enum


class Placement(str, Enum):
    """Why a replica was chosen (the ``placement`` label of ``slmfleet_placements_total``)."""

    RESIDENT = "resident"
    """It holds the adapter."""
    SPILL = "spill"
    """The holders were too busy; the least-loaded replica loads the adapter."""
    COLD = "cold"
    """No replica holds the adapter; the least-loaded replica loads it."""
    BASE = "base"
    """A request for the base model alone."""


@dataclass(frozen=True)
class ReplicaLoad:
    """What placement knows of one replica."""

    replica: str
    resident: frozenset[str]
    """Adapter versions (multiplexed ids) loaded on it."""
    queue: int | None
    """Requests it has ongoing, as last seen; None when unknown (taken as idle: it will say when full)."""
    capacity: int
    """Requests it takes at once (maxOngoingRequests)."""

    @property
    def load(self) -> int:
        return self.queue or 0

    @property
    def full(self) -> bool:
        return self.queue is not None and self.queue >= self.capacity


@dataclass(frozen=True)
class Choice:
    replica: str
    placement: Placement


def place(replicas: Sequence[ReplicaLoad], model_id: str | None, *, spill_margin: int,
          avoid: Collection[str] = ()) -> Choice | None:
    """The replica for a request for ``model_id`` (an adapter version's multiplexed id; None or "" for the
    base model), or None when there is no replica."""
    candidates = [r for r in replicas if r.replica not in avoid] or list(replicas)
    candidates = [r for r in candidates if not r.full] or candidates
    if not candidates:
        return None
    if not model_id:
        return Choice(min(candidates, key=lambda r: r.load).replica, Placement.BASE)
    # The least-loaded replica, and among equals the one that evicts least if it loads the adapter.
    least = min(candidates, key=lambda r: (r.load, len(r.resident)))
    holders = [r for r in candidates if model_id in r.resident]
    if not holders:
        return Choice(least.replica, Placement.COLD)
    holder = min(holders, key=lambda r: r.load)
    if holder.load - least.load > spill_margin:
        return Choice(least.replica, Placement.SPILL)
    return Choice(holder.replica, Placement.RESIDENT)
