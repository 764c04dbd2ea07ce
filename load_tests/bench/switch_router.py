"""One request router for the placement comparisons, switched between ``random``, ``affine`` and ``balanced``
by a file (``MODE_FILE``) instead of by a new deployment config.

Changing a deployment's ``request_router_config`` makes Ray Serve 2.60 replace the deployment's replicas: each
switch restarted every engine (about four minutes for the scale fleet's six) and emptied their adapter slots.
This router runs in the processes that hold the handles (the fleet router, Ray Serve LLM's ingress) and reads
the mode when it changes, so the engines and their resident adapters stay while placements alternate.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from ray.serve._private.request_router import PowerOfTwoChoicesRequestRouter

from serving.dataplane.placement_router import PlacementRouter

MODE_FILE = Path("/tmp/slmfleet-bench-placement")
MODES = ("random", "affine", "balanced")
"""``random``: any replica; ``affine``: Ray Serve's default (power of two choices among the replicas that hold the
adapter); ``balanced``: the fleet's placement (residency weighed against queue length)."""


def set_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"placement mode {mode!r}: choose one of {', '.join(MODES)}")
    MODE_FILE.write_text(mode)


class SwitchRouter(PlacementRouter, PowerOfTwoChoicesRequestRouter):
    _mode, _stamp = "balanced", None

    def _current_mode(self) -> str:
        try:
            stamp = os.stat(MODE_FILE).st_mtime_ns
        except FileNotFoundError:
            return "balanced"
        if stamp != self._stamp:
            self._mode, self._stamp = MODE_FILE.read_text().strip(), stamp
        return self._mode

    async def choose_replicas(self, candidate_replicas, pending_request=None):
        mode = self._current_mode()
        if mode == "random":
            return [[random.choice(candidate_replicas)]] if candidate_replicas else []
        if mode == "affine":
            return await PowerOfTwoChoicesRequestRouter.choose_replicas(self, candidate_replicas, pending_request)
        return await PlacementRouter.choose_replicas(self, candidate_replicas, pending_request)
