"""Shadow traffic, the sending part: copy a share of a route's live requests to its canary in a shadow phase
and judge the canary's answer (``serving.policy.shadow``, pure).

A copy is sent once the client's answer is known, as a task of its own: the client neither waits for it nor
sees it. At most ``MAX_IN_FLIGHT`` copies run at once per router replica; a request over that is not copied
and is counted (slmfleet_shadow_dropped_total), so a slow candidate never piles work up behind live traffic.
Copies carry traffic="shadow" in every metric, carry none of the client's headers, and are never captured
or billed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Iterable

from fastapi import Request

from serving.api.routes import TierChecks
from serving.dataplane.dispatch import DispatchFailed, dispatch
from serving.observability.metrics import SHADOW, Recorder
from serving.observability.telemetry import RequestTelemetry
from serving.policy import shadow as judge
from serving.policy.cascade import tier_request
from serving.policy.routing import ShadowPlan

logger = logging.getLogger("ray.serve").getChild("slmfleet.shadow")
MAX_IN_FLIGHT = 16
"""Shadow copies one router replica runs at once."""


class ShadowRunner:
    def __init__(self, fleet, metrics: Recorder, rng: Callable[[], float] = random.random):
        """``fleet``: the router (its routing table's ``shadows``, and what dispatch sends through)."""
        self.fleet, self.metrics, self.rng = fleet, metrics, rng
        self._tasks: set[asyncio.Task] = set()

    def after(self, routes: Iterable[str], body, call_method: str, returned: dict | None) -> None:
        """Copy ``body`` (the request model the client sent, whose answer was ``returned``) to the canary of each of
        ``routes`` (the routes the request reached) that shadows now, each by its share."""
        if returned is None:
            return
        for route in dict.fromkeys(routes):
            plan = self.fleet.table.shadows.get(route)
            if plan is None or self.rng() * 100 >= plan.share:
                continue
            if len(self._tasks) >= MAX_IN_FLIGHT:
                self.metrics.inc("slmfleet_shadow_dropped_total", route=route)
                continue
            task = asyncio.get_running_loop().create_task(self._shadow(plan, body, call_method, returned))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _shadow(self, plan: ShadowPlan, body, call_method: str, returned: dict) -> None:
        telemetry = RequestTelemetry(self.metrics, route=plan.route, call_method=call_method, stream=False,
                                     traffic=SHADOW)
        telemetry.target(plan.target)
        outcome, finished = judge.ERROR, False
        try:
            client_body = body.model_dump(exclude_unset=True, by_alias=True)
            copy = type(body).model_validate(tier_request(client_body, call_method, plan.checks or TierChecks(),
                                                          plan.target.model_id))
            try:
                response = await dispatch(self.fleet, plan.target, copy, call_method, _bare_request(), telemetry)
            except DispatchFailed as err:
                finished = True
                telemetry.finish(err.status, err.type)
                return
            finished = True
            telemetry.answered(response, client_wants_usage=False)
            outcome = judge.outcome(plan.checks, client_body, json.loads(response.body), returned)
        except Exception:  # noqa: BLE001 - a shadow copy never takes anything down; it counts as an error
            logger.exception("route %s: shadow copy to %s failed", plan.route, plan.target.model_id)
            if not finished:
                telemetry.finish(500, "internal_error")
        finally:
            self.metrics.inc("slmfleet_shadow_answers_total", outcome=outcome, **telemetry.labels)


def _bare_request() -> Request:
    """A request with none of the client's headers (no key, no pinned version) for the copy."""
    return Request({"type": "http", "method": "POST", "path": "/shadow", "headers": [], "query_string": b""})
