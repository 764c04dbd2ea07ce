"""Random placement, the baseline for adapter affinity: a Ray Serve request router that ignores
which adapters a replica has loaded (Ray Serve's default prefers replicas that have it)."""

from __future__ import annotations

import random

from ray.serve.request_router import FIFOMixin, RequestRouter


class RandomPlacementRouter(FIFOMixin, RequestRouter):
    async def choose_replicas(self, candidate_replicas, pending_request=None):
        return [[random.choice(candidate_replicas)]] if candidate_replicas else []

