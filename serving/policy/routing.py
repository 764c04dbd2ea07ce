"""Route resolution: which target serves a request. Pure; the router only sends.

A route's weights are read as 100 buckets laid out in target order. A request with a sticky key
(the OpenAI ``user`` field or an ``X-Session-Id`` header) always falls into the same bucket of a
route, so one conversation stays on one version; raising a canary's weight only moves the
buckets next to it, so sticky users never flip back and forth while a split changes.

A route with a canary strategy has one stable target; the canary version is laid out after it
with the weight the rollout engine gives it (0 until a rollout driver says otherwise), so a
sticky user moves from stable to canary at most once while the canary grows. A request can pin
one of a route's versions (``X-SLMFleet-Version``): the rollout's probes reach the canary so.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from serving.api.fields import version_label
from serving.api.fleet import FleetSpec
from serving.api.routes import RouteSpec, TargetRef, TierChecks


def multiplexed_id(base_model: str, adapter: str, version: str) -> str:
    """The id a base deployment knows an adapter version by (Ray Serve LLM's ``base:lora`` form)."""
    return f"{base_model}:{version_label(adapter, version)}"


@dataclass(frozen=True)
class Target:
    """A resolved route target: the base deployment and, for adapters, the adapter version."""

    base_model: str
    adapter: str | None = None
    version: str | None = None
    weight: int = 100

    @property
    def model_id(self) -> str:
        """What the base deployment is asked for: the multiplexed id, or the base itself."""
        if self.adapter is None:
            return self.base_model
        return multiplexed_id(self.base_model, self.adapter, self.version)

    def describe(self) -> dict:
        return {"baseModel": self.base_model, "adapter": self.adapter, "version": self.version, "weight": self.weight}


def carrying_routes(spec: FleetSpec, route: str) -> tuple[str, ...]:
    """The routes whose requests are answered through ``route``: cascades with a tier naming it, classify routes
    with a class or default naming it, and so on up (their request metrics carry their own name, with the
    target ``route`` picked). ``route`` itself is not included."""
    found: list[str] = []
    frontier = [route]
    while frontier:
        name = frontier.pop()
        for r in spec.routes:
            refs = [*r.tiers, *r.classes, *([r.default] if r.default is not None else [])]
            if r.name not in found and r.name != route and any(getattr(t, "route", None) == name for t in refs):
                found.append(r.name)
                frontier.append(r.name)
    return tuple(found)


@dataclass(frozen=True)
class ShadowPlan:
    """Where a route's shadow copies go (its canary in a shadow phase) and how their answers are judged."""

    route: str
    target: Target
    """The canary version."""
    share: int
    """Percent of the route's live requests copied."""
    checks: TierChecks | None
    """The checks of the cascade tier naming the route; None: agreement alone judges."""


def route_checks(spec: FleetSpec, route: str) -> TierChecks | None:
    """The checks a cascade applies to ``route``'s answers where one of its tiers names it (the first such tier)."""
    for r in spec.routes:
        for tier in r.tiers:
            if tier.route == route:
                return tier.checks
    return None


class UnknownRoute(LookupError):
    def __init__(self, route: str | None, known: list[str]):
        self.route, self.known = route, known
        asked = f"model '{route}' is not a route of this fleet" if route else "the request names no model"
        super().__init__(f"{asked}; available models: {', '.join(known)}")


def sticky_bucket(route: str, key: str) -> int:
    """A stable bucket in [0, 100) for ``key`` on ``route``."""
    digest = hashlib.sha256(f"{route}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def pick(targets: tuple[Target, ...], bucket: int) -> Target:
    """The target whose share of the 100 buckets holds ``bucket``."""
    upper = 0
    for target in targets:
        upper += target.weight
        if bucket < upper:
            return target
    return targets[-1]  # unreachable for validated weights (they sum to 100)


class UnknownVersion(LookupError):
    def __init__(self, route: str, version: str, known: list[str]):
        super().__init__(f"route '{route}' has no version '{version}' to pin; its versions: "
                         f"{', '.join(known) or 'none (it serves a base model)'}")


class RoutingTable:
    """Routes of one fleet spec, resolved to targets; ``canary_weights`` maps a route to its canary's share,
    ``shadowing`` names the routes whose canary is in its shadow phase."""

    def __init__(self, spec: FleetSpec, canary_weights: dict[str, int] | None = None,
                 shadowing: list[str] | tuple[str, ...] = ()):
        adapters = {a.name: a for a in spec.adapters}
        self.adapters = adapters
        self.engines = {b.name: b.engine for b in spec.base_models}
        """Base model -> its engine settings (whether it can answer tool calls)."""
        self.descriptions = {r.name: r.description for r in spec.routes}
        self.request_timeout_s = spec.request_timeout_seconds
        self.routes: dict[str, tuple[Target, ...]] = {}
        self.cascades: dict[str, RouteSpec] = {r.name: r for r in spec.routes if r.policy == "cascade"}
        """Cascade routes (``serving.policy.cascade``): answered by tiers, not by weighted targets."""
        self.classifies: dict[str, RouteSpec] = {r.name: r for r in spec.routes if r.policy == "classify"}
        """Classify routes (``serving.policy.classify``): a class's target answers."""
        self.shadows: dict[str, ShadowPlan] = {}
        """Routes whose canary shadows live requests now."""
        self.tier_costs = {name: [spec.cost_per_1k_tokens(t) for t in r.tiers] for name, r in self.cascades.items()}
        """Cascade route -> each tier's cost of 1,000 tokens (its own, else inherited from its adapter or base)."""
        base_costs = {b.name: b.cost_per_1k_tokens for b in spec.base_models}
        self._costs = {a.name: base_costs[a.base_model] if a.cost_per_1k_tokens is None else a.cost_per_1k_tokens
                       for a in spec.adapters}
        self._base_costs = base_costs
        for route in spec.routes:
            if route.policy != "split":
                continue
            targets = [
                Target(base_model=t.base_model, weight=t.weight) if t.adapter is None else
                Target(adapters[t.adapter].base_model, t.adapter, t.version, t.weight)
                for t in route.targets
            ]
            if route.strategy is not None:
                canary = min(max((canary_weights or {}).get(route.name, 0), 0), 100)
                name = route.canary_adapter()
                targets = [Target(targets[0].base_model, targets[0].adapter, targets[0].version, 100 - canary),
                           Target(adapters[name].base_model, name, route.strategy.canary.version, canary)]
                shadow = route.strategy.canary.shadow
                if route.name in shadowing and shadow is not None:
                    self.shadows[route.name] = ShadowPlan(route.name, targets[1], shadow.share,
                                                          route_checks(spec, route.name))
            self.routes[route.name] = tuple(targets)

    @property
    def names(self) -> list[str]:
        """Every route, split or cascade."""
        return sorted([*self.routes, *self.cascades, *self.classifies])

    def cost_per_1k_tokens(self, target: Target) -> float:
        """What 1,000 tokens answered by ``target`` cost (its adapter's costPer1kTokens, else its base's)."""
        if target.adapter is not None:
            return self._costs.get(target.adapter, 0.0)
        return self._base_costs.get(target.base_model, 0.0)

    def target_of(self, ref: TargetRef) -> Target | None:
        """The fleet target an adapter or base-model reference (tier, class, default) names; None for routes
        and endpoints."""
        if ref.adapter is not None:
            return Target(self.adapters[ref.adapter].base_model, ref.adapter, ref.version)
        if ref.base_model is not None:
            return Target(ref.base_model)
        return None

    def resolve(self, route: str | None, *, sticky_key: str | None = None,
                rng: random.Random | None = None, version: str | None = None) -> Target:
        """The target for one request; UnknownRoute if ``route`` is not in the table.

        ``version`` pins one of the route's adapter versions, whatever its weight (UnknownVersion
        if the route has no such version).
        """
        targets = self.routes.get(route) if route else None
        if not targets:
            raise UnknownRoute(route, self.names)
        if version:
            pinned = [t for t in targets if t.version == version]
            if not pinned:
                raise UnknownVersion(route, version, [t.version for t in targets if t.version])
            return pinned[0]
        live = tuple(t for t in targets if t.weight > 0)
        if sticky_key:
            bucket = sticky_bucket(route, sticky_key)
        else:
            bucket = (rng or random).randrange(100)
        return pick(live, bucket) if len(live) > 1 else live[0]
