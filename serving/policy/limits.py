"""Tenants' rate limits and token budgets, as pure state machines with the time passed in.

Two halves, because the limits hold across every router replica without a round trip per request:

- :class:`FleetLimits` is the fleet-wide state (it lives in one Ray actor): a request bucket and a token
  bucket per tenant (refilled continuously, a minute's worth at most) and a token budget per calendar
  period (UTC). Routers take **leases** from it: a few requests and tokens at once, drawn from the buckets
  and the budget together, which the router then spends locally.
- :class:`Leases` is one router replica's side: it admits a request from its lease when the lease covers
  it (no call at all), says what to ask for when it does not, and gives back what is left when a lease
  expires (after ``LEASE_TTL_S``), so an idle replica does not sit on another's share.

A request reserves its prompt tokens (estimated) plus ``max_tokens`` when admitted and settles with the
usage the engine reports: the unused part goes back into the lease; an answer longer than reserved (a
request without ``max_tokens`` reserves ``DEFAULT_ANSWER_TOKENS``) becomes a debt the next lease pays. The
overshoot this allows is the in-flight requests' tokens beyond their reservation; the undershoot is the
unspent leases other replicas hold, at most one lease (1/20 of a minute's limit) per replica for at most
``LEASE_TTL_S`` seconds.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from serving.api.tenants import TenantSpec

LEASE_TTL_S = 2.0
"""A router gives back what is left of a lease after this long."""
LEASE_SHARE = 20
"""A lease is at most 1/LEASE_SHARE of a minute's limit (and 1/BUDGET_SHARE of a budget)."""
BUDGET_SHARE = 200
LEASE_REQUESTS = 4
"""A token lease covers at least this many requests like the one that asked for it (when that many are left)."""
DEFAULT_ANSWER_TOKENS = 256
"""Tokens reserved for the answer of a request without max_tokens (settled with the actual usage)."""
CHARS_PER_TOKEN = 3
"""Prompt tokens are estimated from characters before the engine counts them (a little above the usual
four characters per token, so the estimate errs high)."""


def estimate_tokens(prompt_chars: int, max_tokens: int | None) -> int:
    """Tokens a request reserves: its prompt, estimated from its length, plus its answer's bound."""
    return math.ceil(prompt_chars / CHARS_PER_TOKEN) + (max_tokens or DEFAULT_ANSWER_TOKENS)


def period_start(period: str, now: float) -> float:
    """When the calendar period (UTC) holding ``now`` began: today's, this week's (Monday) or this month's."""
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        day -= timedelta(days=day.weekday())
    elif period == "month":
        day = day.replace(day=1)
    return day.timestamp()


def period_end(period: str, now: float) -> float:
    start = datetime.fromtimestamp(period_start(period, now), UTC)
    if period == "day":
        return (start + timedelta(days=1)).timestamp()
    if period == "week":
        return (start + timedelta(days=7)).timestamp()
    return (start.replace(year=start.year + 1, month=1) if start.month == 12
            else start.replace(month=start.month + 1)).timestamp()


@dataclass
class TokenBucket:
    """``per_minute`` units a minute, refilled continuously, holding at most a minute's worth."""

    per_minute: float
    level: float = -1.0
    updated: float = 0.0

    def refill(self, now: float) -> float:
        if self.level < 0 and self.updated == 0.0:
            self.level, self.updated = self.per_minute, now  # a new bucket starts full
        self.level = min(self.per_minute, self.level + (now - self.updated) * self.per_minute / 60)
        self.updated = max(self.updated, now)
        return self.level

    def wait_for(self, n: float, now: float) -> float:
        """Seconds until ``n`` units are there (0 now); ``inf`` when more than a minute's worth is asked."""
        missing = n - self.refill(now)
        if missing <= 0:
            return 0.0
        return math.inf if n > self.per_minute else missing * 60 / self.per_minute


@dataclass
class Budget:
    tokens: int
    period: str
    used: int = 0
    start: float = 0.0

    def roll(self, now: float) -> None:
        start = period_start(self.period, now)
        if start != self.start:
            self.used, self.start = 0, start

    def left(self, now: float) -> int:
        self.roll(now)
        return self.tokens - self.used


@dataclass(frozen=True)
class Grant:
    """What a lease request got: requests and tokens, or nothing with why and when to retry."""

    requests: int = 0
    tokens: int = 0
    refused: str | None = None
    """None (granted), ``requests`` or ``tokens`` (a rate limit), or ``budget`` (the period's budget is spent)."""
    retry_after: float = 0.0

    @property
    def granted(self) -> bool:
        return self.refused is None


@dataclass
class _TenantState:
    spec: TenantSpec
    requests: TokenBucket | None
    tokens: TokenBucket | None
    budget: Budget | None


class FleetLimits:
    """Every tenant's buckets and budget (see the module docstring); one instance per fleet."""

    def __init__(self, tenants: list[TenantSpec] = ()):
        self._tenants: dict[str, _TenantState] = {}
        self.usage: dict[str, dict[tuple[str, str], list[float]]] = defaultdict(dict)
        """tenant -> (route, who answered) -> [requests, prompt tokens, completion tokens, cost]."""
        self.configure(tenants)

    def configure(self, tenants: list[TenantSpec]) -> None:
        """Take new tenant specs; a tenant whose limits did not change keeps its buckets and budget use."""
        states = {}
        for t in tenants:
            old = self._tenants.get(t.name)
            if old is not None and old.spec == t:
                states[t.name] = old
                continue
            budget = Budget(t.budget.tokens, t.budget.period) if t.budget else None
            if old is not None and old.budget is not None and budget is not None and old.budget.period == budget.period:
                budget.used, budget.start = old.budget.used, old.budget.start  # a new limit, the same spending
            states[t.name] = _TenantState(
                t, TokenBucket(t.requests_per_minute) if t.requests_per_minute else None,
                TokenBucket(t.tokens_per_minute) if t.tokens_per_minute else None, budget)
        self._tenants = states

    def lease_size(self, tenant: str) -> tuple[int, int]:
        """(requests, tokens) a router asks for at once: 1/20 of a minute's limit, 1/200 of a budget (the smaller)."""
        state = self._tenants[tenant]
        requests = max(1, int(state.requests.per_minute // LEASE_SHARE)) if state.requests else 0
        sizes = [state.tokens.per_minute / LEASE_SHARE] if state.tokens else []
        if state.budget:
            sizes.append(state.budget.tokens / BUDGET_SHARE)
        return requests, max(1, int(min(sizes))) if sizes else 0

    def lease(self, tenant: str, need_requests: int, need_tokens: int, now: float) -> Grant:
        """At least what is needed and at most a lease's size, all from the buckets and the budget, or a refusal."""
        state = self._tenants.get(tenant)
        if state is None:
            return Grant(refused="tenant", retry_after=0)
        want_requests, want_tokens = self.lease_size(tenant)
        if state.budget is not None and state.budget.left(now) < need_tokens:
            return Grant(refused="budget", retry_after=max(1.0, period_end(state.budget.period, now) - now))
        for kind, bucket, need in (("requests", state.requests, need_requests), ("tokens", state.tokens, need_tokens)):
            if bucket is not None and need > 0:
                wait = bucket.wait_for(need, now)
                if wait > 0:
                    return Grant(refused=kind, retry_after=wait)
        requests = tokens = 0
        if state.requests is not None and need_requests > 0:
            requests = int(min(max(want_requests, need_requests), max(need_requests, state.requests.level)))
            state.requests.level -= requests
        if need_tokens > 0 and (state.tokens is not None or state.budget is not None):
            tokens = max(want_tokens, need_tokens * LEASE_REQUESTS)
            if state.tokens is not None:
                tokens = int(min(tokens, max(need_tokens, state.tokens.level)))
            if state.budget is not None:
                tokens = min(tokens, max(need_tokens, state.budget.left(now)))
                state.budget.used += tokens
            if state.tokens is not None:
                state.tokens.level -= tokens
        return Grant(requests, tokens)

    def give_back(self, tenant: str, requests: int, tokens: int, now: float) -> None:
        """Unspent parts of a lease; negative ``tokens`` is a debt (answers longer than reserved), charged."""
        state = self._tenants.get(tenant)
        if state is None:
            return
        if state.requests is not None and requests:
            state.requests.refill(now)
            state.requests.level = min(state.requests.per_minute, state.requests.level + requests)
        if tokens and state.tokens is not None:
            state.tokens.refill(now)
            state.tokens.level = min(state.tokens.per_minute, state.tokens.level + tokens)
        if tokens and state.budget is not None:
            state.budget.roll(now)
            state.budget.used = max(0, state.budget.used - tokens)

    def record(self, tenant: str, route: str, answered_by: str, requests: int, prompt_tokens: int,
               completion_tokens: int, cost: float) -> None:
        row = self.usage[tenant].setdefault((route, answered_by), [0, 0, 0, 0.0])
        for i, value in enumerate((requests, prompt_tokens, completion_tokens, cost)):
            row[i] += value

    def report(self, tenant: str, now: float) -> dict:
        """A tenant's usage (per route and who answered) and what is left of its budget."""
        rows = [{"route": route, "answeredBy": by, "requests": int(r), "promptTokens": int(p),
                 "completionTokens": int(c), "estimatedCost": round(cost, 6)}
                for (route, by), (r, p, c, cost) in sorted(self.usage.get(tenant, {}).items())]
        report = {"tenant": tenant, "usage": rows,
                  "totals": {"requests": sum(r["requests"] for r in rows),
                             "tokens": sum(r["promptTokens"] + r["completionTokens"] for r in rows),
                             "estimatedCost": round(sum(r["estimatedCost"] for r in rows), 6)}}
        state = self._tenants.get(tenant)
        if state is not None and state.budget is not None:
            left = state.budget.left(now)
            report["budget"] = {"tokens": state.budget.tokens, "period": state.budget.period,
                                "used": state.budget.used, "left": max(0, left),
                                "periodStart": datetime.fromtimestamp(state.budget.start, UTC).isoformat(),
                                "resetsAt": datetime.fromtimestamp(period_end(state.budget.period, now),
                                                                   UTC).isoformat()}
        return report

    def snapshot(self) -> dict:
        """What survives a new Ray cluster: each tenant's budget use in its current period."""
        return {"budgets": {name: {"period": s.budget.period, "start": s.budget.start, "used": s.budget.used}
                            for name, s in self._tenants.items() if s.budget is not None}}

    def restore(self, snapshot: dict, now: float) -> None:
        """Take budget use from a snapshot; a period that has ended since starts from zero."""
        for name, saved in (snapshot.get("budgets") or {}).items():
            state = self._tenants.get(name)
            if state is None or state.budget is None or saved.get("period") != state.budget.period:
                continue
            state.budget.roll(now)
            if saved.get("start") == state.budget.start:
                state.budget.used = max(state.budget.used, int(saved.get("used") or 0))


@dataclass
class _Lease:
    requests: int = 0
    tokens: int = 0
    expires: float = 0.0


@dataclass
class Leases:
    """One router replica's leases, per tenant (see the module docstring)."""

    limits: dict[str, TenantSpec] = field(default_factory=dict)
    _held: dict[str, _Lease] = field(default_factory=dict)

    def counts(self, tenant: str) -> tuple[bool, bool]:
        """Whether ``tenant``'s requests, and its tokens, are limited at all."""
        spec = self.limits.get(tenant)
        if spec is None:
            return False, False
        return spec.requests_per_minute is not None, spec.tokens_per_minute is not None or spec.budget is not None

    def admit(self, tenant: str, tokens: int, now: float) -> tuple[int, int] | None:
        """Admit from the lease held (None: admitted), or what to ask the fleet for: (requests, tokens), after
        giving back the held lease's rest (``before_new_lease``; a debt included)."""
        count_requests, count_tokens = self.counts(tenant)
        need_requests, need_tokens = int(count_requests), tokens if count_tokens else 0
        if not (need_requests or need_tokens):
            return None
        lease = self._held.get(tenant)
        covered = lease is not None and lease.requests >= need_requests and lease.tokens >= need_tokens
        if covered and lease.expires > now:
            lease.requests -= need_requests
            lease.tokens -= need_tokens
            return None
        return need_requests, need_tokens

    def take(self, tenant: str, grant: Grant, needed: tuple[int, int], now: float) -> None:
        """A granted lease replaces the held one (whose rest ``expired`` gave back); ``needed`` is spent from it."""
        self._held[tenant] = _Lease(grant.requests - needed[0], grant.tokens - needed[1], now + LEASE_TTL_S)

    def expired(self, now: float, *, everything: bool = False) -> list[tuple[str, int, int]]:
        """(tenant, requests, tokens) to give back: the rest of leases past their time (or all of them)."""
        out = []
        for tenant, lease in list(self._held.items()):
            if everything or lease.expires <= now:
                if lease.requests or lease.tokens:
                    out.append((tenant, lease.requests, lease.tokens))
                del self._held[tenant]
        return out

    def before_new_lease(self, tenant: str) -> tuple[int, int]:
        """The held lease's rest, given back when a new one is asked for (debt included, as negative tokens)."""
        lease = self._held.pop(tenant, None)
        return (lease.requests, lease.tokens) if lease is not None else (0, 0)

    def settle(self, tenant: str, reserved: int, used: int) -> None:
        """A request's actual tokens: what it reserved and did not use goes back into the lease, more is a debt."""
        if not self.counts(tenant)[1] or reserved == used:
            return
        lease = self._held.setdefault(tenant, _Lease())
        lease.tokens += reserved - used
