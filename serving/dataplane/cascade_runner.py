"""SLM-first cascades, the sending part: ask each tier in turn until one's answer passes its checks.

What is asked and whether an answer passes is ``serving.policy.cascade`` (pure). This runs inside the
fleet router: fleet tiers (an adapter version, a base model, another route) go through the same
path as any request, external tiers (the large generalist) over HTTP. Every tier has a timeout, so
an unreachable or slow tier escalates (or, as the last tier, fails with 502/504 naming it) and
never hangs the request.

Each answer says who answered and why earlier tiers were not used: ``X-SLMFleet-Tier`` (1-based),
``X-SLMFleet-Tier-Name`` and ``X-SLMFleet-Escalations``; with ``X-SLMFleet-Explain: true`` the JSON
body also carries ``"slmfleet": {"tier", "answeredBy", "rejected": [...]}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Protocol

import httpx
from fastapi import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from serving.api import headers as h
from serving.api.routes import CascadeTier, RouteSpec, TargetRef
from serving.dataplane.dispatch import DispatchFailed, Sender, dispatch
from serving.dataplane.errors import error_response
from serving.dataplane.shadow_runner import ShadowRunner
from serving.observability.capture import RequestCapture
from serving.observability.metrics import Recorder
from serving.observability.telemetry import RequestTelemetry
from serving.policy.cascade import (
    Answer,
    RouteStats,
    TierUse,
    answer_headers,
    client_view,
    explanation,
    rejection,
    request_costs,
    sse_chunks,
    tier_request,
    tokens_of,
)
from serving.policy.request_checks import engine_problem
from serving.policy.routing import RoutingTable

logger = logging.getLogger("ray.serve").getChild("slmfleet.cascade")


class Fleet(Sender, Protocol):
    """What a cascade needs of the router it runs in: its routing table, its classifiers, dispatch."""

    @property
    def table(self) -> RoutingTable: ...

    def classified(self, route: str, body: dict) -> TargetRef:
        """The class (or default) a classify route picks for ``body``, counted."""


@dataclass
class TierOutcome:
    status: int
    payload: dict | None
    reason: tuple[str, str] | None = None
    """(kind, why) when the tier's answer was not used; kind is the metric's outcome label."""
    target: object | None = None
    """The fleet target that answered, once a tier naming a route is followed to it (the request's metrics
    carry its adapter and version, so a canary on that route counts the cascade's traffic)."""
    reached: tuple[str, ...] = ()
    """The split routes the tier was followed through (a canary shadowing one gets a copy of the request)."""


@dataclass
class CascadeResult:
    status: int
    payload: dict | None
    tier: int
    tier_name: str
    rejected: list[dict] = field(default_factory=list)
    target: object | None = None
    reached: tuple[str, ...] = ()
    """The split routes the tiers tried were followed through."""


class CascadeRunner:
    def __init__(self, fleet: Fleet, metrics: Recorder, shadows: ShadowRunner | None = None):
        self.fleet, self.metrics, self.shadows = fleet, metrics, shadows
        self._http: httpx.AsyncClient | None = None
        self.stats: dict[str, RouteStats] = {}
        """Per cascade route, since this router replica started (GET /v1/fleet/routes/{name}/stats)."""

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient()
        return self._http

    async def serve(self, route: RouteSpec, body, request: Request, call_method: str,
                    capture: RequestCapture | None = None, settle=None) -> Response:
        """Answer ``body`` from the cascade's tiers; ``settle`` (the tenant's accounting) is called when it is done."""
        stream = bool(getattr(body, "stream", False))
        telemetry = RequestTelemetry(self.metrics, route=route.name, call_method=call_method, stream=stream,
                                     headers=dict(request.headers))
        telemetry.capture = capture
        telemetry.on_finish = settle
        client_wants_usage = bool(getattr(body, "stream_options", None) and body.stream_options.include_usage)
        client_body = body.model_dump(exclude_unset=True, by_alias=True)  # the wire names (json_schema.schema)
        result = await self.run(route, client_body, body, request, call_method, telemetry)
        telemetry.answered_by = f"tier {result.tier}: {result.tier_name}"
        if result.target is not None:
            telemetry.target(result.target)
        headers = answer_headers(route.name, result.tier, result.tier_name, result.rejected)
        if capture is not None:
            endpoint = route.tiers[result.tier - 1].endpoint is not None
            capture.tier(result.tier, result.tier_name, result.rejected, result.tier_name if endpoint else None,
                         last=result.tier == len(route.tiers))
            if result.status == 200:
                capture.payload(result.payload)
        if result.status != 200:
            message = result.payload.get("error", {}).get("message", "") if result.payload else ""
            response = error_response(result.status, f"route '{route.name}': {message}", type="cascade_failed")
        elif stream:
            chunks = sse_chunks(client_view(result.payload, client_body, call_method), call_method,
                                include_usage=True)
            response = StreamingResponse(_iterate(chunks), media_type="text/event-stream")
        else:
            payload = client_view(result.payload, client_body, call_method)
            if request.headers.get(h.EXPLAIN, "").lower() in ("1", "true", "yes"):
                payload = {**payload, "slmfleet": explanation(result.tier, result.tier_name, result.rejected)}
            response = JSONResponse(payload)
        response.headers.update(headers)
        answered = telemetry.answered(response, client_wants_usage=client_wants_usage)
        if self.shadows is not None and result.status == 200:
            self.shadows.after(result.reached, body, call_method, result.payload)
        return answered

    async def run(self, route: RouteSpec, client_body: dict, body, request: Request, call_method: str,
                  telemetry: RequestTelemetry) -> CascadeResult:
        rejected: list[dict] = []
        uses: list[TierUse] = []
        reached: list[str] = []
        for n, tier in enumerate(route.tiers, 1):
            last = n == len(route.tiers)
            started = time.perf_counter()
            target = self.fleet.table.target_of(tier)
            try:
                outcome = await asyncio.wait_for(
                    self._ask(tier, client_body, body, request, call_method, telemetry),
                    timeout=tier.timeout_seconds)
            except TimeoutError:
                outcome = TierOutcome(504, _error(f"tier {n} ({tier.describe()}) gave no answer within {tier.timeout}"),
                                      ("timeout", f"no answer within {tier.timeout}"))
            reached += outcome.reached
            if outcome.status == 200 and outcome.reason is None and not last:
                outcome.reason = rejection(tier.checks, Answer.of(outcome.payload), client_body)
            elapsed = time.perf_counter() - started
            labels = {"route": route.name, "tier": str(n)}
            self.metrics.observe("slmfleet_cascade_tier_duration_seconds", elapsed, **labels)
            accepted = outcome.status == 200 and (outcome.reason is None or last)
            use = TierUse(n, tokens_of(outcome.payload) if outcome.status == 200 else 0,
                          "accepted" if accepted else outcome.reason[0])
            uses.append(use)
            self.metrics.inc("slmfleet_cascade_tier_answers_total", outcome=use.outcome, **labels)
            self.metrics.inc("slmfleet_cascade_tier_tokens_total", use.tokens, **labels)
            if accepted:
                self._account(route, uses, telemetry)
                return CascadeResult(200, outcome.payload, n, tier.describe(), rejected, outcome.target or target,
                                     tuple(reached))
            rejected.append({"tier": n, "by": tier.describe(), "reason": outcome.reason[1]})
            if last:
                logger.warning("route %s: every tier failed: %s", route.name, rejected)
                self._account(route, uses, telemetry)
                return CascadeResult(outcome.status, _error(f"tier {n} ({tier.describe()}) failed: "
                                                            f"{outcome.reason[1]}"), n, tier.describe(), rejected,
                                     reached=tuple(reached))
        raise AssertionError("a cascade has at least two tiers")  # validated in the spec

    def _account(self, route: RouteSpec, uses: list[TierUse], telemetry: RequestTelemetry) -> None:
        costs = self.fleet.table.tier_costs[route.name]
        self.stats.setdefault(route.name, RouteStats(len(route.tiers))).add(uses, costs)
        cost, baseline = request_costs(costs, uses)
        telemetry.cost = cost
        telemetry.escalated_tokens = sum(u.tokens for u in uses[:-1])
        self.metrics.inc("slmfleet_cascade_cost_total", cost, route=route.name, basis="cascade")
        self.metrics.inc("slmfleet_cascade_cost_total", baseline, route=route.name, basis="last_tier")

    def report(self, route: RouteSpec) -> dict:
        return self.stats.get(route.name, RouteStats(len(route.tiers))).report(route.name)

    async def _ask(self, tier: CascadeTier, client_body: dict, body, request: Request, call_method: str,
                   telemetry: RequestTelemetry) -> TierOutcome:
        if tier.endpoint is not None:
            return await self._ask_endpoint(tier, client_body, call_method)
        table, name = self.fleet.table, tier.route
        target = table.target_of(tier)
        reached: tuple[str, ...] = ()
        while target is None:  # a route: follow classify routes to a target, or run a cascade route
            if name in table.cascades:
                result = await self.run(table.cascades[name], client_body, body, request, call_method, telemetry)
                return TierOutcome(result.status, result.payload,
                                   None if result.status == 200 else ("error", result.payload["error"]["message"]),
                                   target=result.target, reached=result.reached)
            if name in table.classifies:
                ref = self.fleet.classified(name, client_body)
                name, target = ref.route, table.target_of(ref)
                continue
            target = table.resolve(name, sticky_key=client_body.get("user"))
            reached = (name,)
        outcome = await self._ask_fleet(target, tier, client_body, body, request, call_method, telemetry)
        outcome.reached = reached
        return outcome

    async def _ask_fleet(self, target, tier: CascadeTier, client_body: dict, body, request: Request,
                         call_method: str, telemetry: RequestTelemetry) -> TierOutcome:
        if call_method == "chat":  # a tier whose base cannot call tools fails (and escalates) like one that errs
            problem = engine_problem(client_body, route=tier.describe(), base_model=target.base_model,
                                     engine=self.fleet.table.engines[target.base_model])
            if problem is not None:
                return _failed(400, problem.message)
        tier_body = type(body).model_validate(tier_request(client_body, call_method, tier.checks, target.model_id))
        try:
            response = await dispatch(self.fleet, target, tier_body, call_method, request, telemetry)
        except DispatchFailed as err:  # a failed tier escalates
            return _failed(err.status, err.message)
        return TierOutcome(200, json.loads(response.body), target=target)

    async def _ask_endpoint(self, tier: CascadeTier, client_body: dict, call_method: str) -> TierOutcome:
        endpoint = tier.endpoint
        headers = {}
        if endpoint.key_variable:
            key = os.environ.get(endpoint.key_variable)
            if not key:
                return _failed(502, f"API key variable {endpoint.key_variable} is not set in the router's environment")
            headers["authorization"] = f"Bearer {key}"
        path = "chat/completions" if call_method == "chat" else "completions"
        try:
            resp = await self.http.post(f"{endpoint.url.rstrip('/')}/{path}", headers=headers,
                                        json=tier_request(client_body, call_method, tier.checks, endpoint.model),
                                        timeout=tier.timeout_seconds)
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError as err:
            return _failed(502, f"{endpoint.url} unreachable: {type(err).__name__}: {err}")
        try:
            payload = resp.json()
        except ValueError:
            return _failed(502, f"{endpoint.url} answered HTTP {resp.status_code} with no JSON")
        if resp.status_code != 200:
            message = (payload.get("error") or {}).get("message") if isinstance(payload, dict) else None
            return _failed(resp.status_code, f"{endpoint.url}: HTTP {resp.status_code}: {message or resp.text[:200]}")
        return TierOutcome(200, payload)


def _error(message: str) -> dict:
    return {"error": {"message": message}}


def _failed(status: int, message: str) -> TierOutcome:
    return TierOutcome(status, _error(message), ("error", f"HTTP {status}: {message}"))


async def _iterate(chunks: list[str]):
    for chunk in chunks:
        yield chunk
