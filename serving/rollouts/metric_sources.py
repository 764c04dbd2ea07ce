"""Where a rollout's numbers come from: one small interface, two sources.

``MetricSource.observe(target, since)`` tells how a route's target (an adapter version, or the
stable one) did since a step started: requests, errors and p95 latency, as a
:class:`serving.policy.rollout.Observation`. A target's ``traffic`` says which requests count: the
live ones (what steps judge; shadow copies never count there), or the shadow copies (what a shadow
phase judges, with how many of their answers agreed).

- :class:`PrometheusSource` asks a Prometheus server (how it runs on Kubernetes, where Prometheus
  scrapes the Ray pods) with the PromQL of ``PROMETHEUS_QUERIES``.
- :class:`ScrapeSource` reads the fleet's metrics endpoint itself (Ray's, ``ray_slmfleet_*``) and
  differences two snapshots; the default when no Prometheus is configured.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import httpx

from serving.observability.metrics import LIVE, SHADOW
from serving.policy.rollout import Observation

DURATION = "slmfleet_request_duration_seconds"
UNAVAILABLE = "adapter_unavailable"
"""The router's error type for a version a replica cannot load (missing, corrupt, wrong base)."""


def load_error(unavailable: int) -> str | None:
    if not unavailable:
        return None
    return (f"{unavailable} request(s) failed with {UNAVAILABLE}: a replica cannot load this version "
            "(the router's log and the answers say why)")


@dataclass(frozen=True)
class Target:
    route: str
    adapter: str
    version: str
    via: tuple[str, ...] = ()
    """Routes whose requests reach ``route`` (a cascade's tier, a class): their metrics carry their own route
    label, with this target's adapter and version."""
    traffic: str = LIVE
    """LIVE: the requests clients sent (series without the label too); SHADOW: a shadow phase's copies."""

    def matches(self, labels: dict) -> bool:
        shadow = labels.get("traffic") == SHADOW
        return (labels.get("route") in (self.route, *self.via)
                and (labels.get("adapter"), labels.get("version")) == (self.adapter, self.version)
                and shadow == (self.traffic == SHADOW))

    def selector(self) -> str:
        # A label matcher's regex is anchored; a dot in a route name is the only regex character it may hold
        # that is not literal there.
        routes = "|".join(r.replace(".", "\\\\.") for r in (self.route, *self.via))
        traffic = f'traffic="{SHADOW}"' if self.traffic == SHADOW else f'traffic!="{SHADOW}"'
        return f'route=~"{routes}", adapter="{self.adapter}", version="{self.version}", {traffic}'


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile over cumulative bucket counts {upper bound: count}."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # as Prometheus: the highest finite bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return bounds[-1]


class MetricSource:
    def observe(self, target: Target, since: float) -> Observation:
        raise NotImplementedError


@dataclass
class PrometheusSource(MetricSource):
    """Counts over the window since the step started, from a Prometheus server's HTTP API."""

    url: str
    clock: Callable[[], float] = time.time
    timeout_s: float = 10

    def _value(self, name: str, target: Target, window_s: int, at: float, extra: str = "") -> float | None:
        promql = PROMETHEUS_QUERIES[name].format(selector=target.selector() + extra, window=f"{max(window_s, 1)}s")
        resp = httpx.get(f"{self.url}/api/v1/query", params={"query": promql, "time": f"{at:.3f}"},
                         timeout=self.timeout_s)
        body = resp.json()
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus refused {promql!r}: {body.get('error')}")
        values = [float(r["value"][1]) for r in body["data"]["result"]]
        values = [v for v in values if not math.isnan(v)]
        return sum(values) if values else None

    def observe(self, target: Target, since: float) -> Observation:
        # Every query of one observation is evaluated at the same instant, so that a scrape landing
        # between two queries cannot count more errors than requests (CI saw a 137.5% error rate).
        at = self.clock()
        window = int(math.ceil(at - since))
        requests = self._value("requests", target, window, at) or 0
        errors = self._value("errors", target, window, at) or 0
        p95 = self._value("p95_seconds", target, window, at)
        unavailable = self._value("errors", target, window, at, f', error_type="{UNAVAILABLE}"') or 0
        agreed = (self._value("shadow_answers", target, window, at, ', outcome="agree"') or 0
                  if target.traffic == SHADOW else 0)
        # Failed requests are a subset of the requests: what a scrape ingested mid-query still cannot
        # make them more.
        requests, errors = int(round(requests)), int(round(errors))
        return Observation(requests=requests, errors=min(errors, requests),
                           p95_ms=None if p95 is None else p95 * 1000, load_error=load_error(int(round(unavailable))),
                           agreed=min(int(round(agreed)), requests))


# Counts are "now minus at the window's start": a canary version's series is new, and increase()
# cannot count the requests before its first scrape (Ray counters cannot be created at 0).
PROMETHEUS_QUERIES = {
    "requests": "clamp_min(sum(slmfleet_requests_total{{{selector}}})"
                " - (sum(slmfleet_requests_total{{{selector}}} offset {window}) or vector(0)), 0)",
    "errors": "clamp_min(sum(slmfleet_request_errors_total{{{selector}}})"
              " - (sum(slmfleet_request_errors_total{{{selector}}} offset {window}) or vector(0)), 0)",
    "shadow_answers": "clamp_min(sum(slmfleet_shadow_answers_total{{{selector}}})"
                      " - (sum(slmfleet_shadow_answers_total{{{selector}}} offset {window}) or vector(0)), 0)",
    "p95_seconds": "histogram_quantile(0.95, sum by (le) "
                   f"(increase({DURATION}_bucket{{{{{{selector}}}}}}[{{window}}])))",
}


@dataclass
class Snapshot:
    """Counter totals of a fleet's metrics at one moment, summed over replicas."""

    requests: dict[Target, float] = field(default_factory=dict)
    errors: dict[Target, float] = field(default_factory=dict)
    unavailable: dict[Target, float] = field(default_factory=dict)
    agreed: dict[Target, float] = field(default_factory=dict)
    buckets: dict[Target, dict[float, float]] = field(default_factory=dict)


def snapshot_of(text: str) -> Snapshot:
    """Parse Prometheus text (Ray's ``ray_slmfleet_*`` or renamed ``slmfleet_*``)."""
    from prometheus_client.parser import text_string_to_metric_families

    snap = Snapshot()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name = s.name.removeprefix("ray_")
            if not name.startswith("slmfleet_") or "route" not in s.labels:
                continue
            t = Target(s.labels["route"], s.labels.get("adapter", ""), s.labels.get("version", ""),
                       traffic=SHADOW if s.labels.get("traffic") == SHADOW else LIVE)
            if name == "slmfleet_requests_total":
                snap.requests[t] = snap.requests.get(t, 0) + s.value
            elif name == "slmfleet_request_errors_total":
                snap.errors[t] = snap.errors.get(t, 0) + s.value
                if s.labels.get("error_type") == UNAVAILABLE:
                    snap.unavailable[t] = snap.unavailable.get(t, 0) + s.value
            elif name == "slmfleet_shadow_answers_total" and s.labels.get("outcome") == "agree":
                snap.agreed[t] = snap.agreed.get(t, 0) + s.value
            elif name == f"{DURATION}_bucket":
                le = float(s.labels["le"])
                b = snap.buckets.setdefault(t, {})
                b[le] = b.get(le, 0) + s.value
    return snap


def _labels(series: Target) -> dict:
    return {"route": series.route, "adapter": series.adapter, "version": series.version, "traffic": series.traffic}


def _total(counts: dict[Target, float], target: Target) -> float:
    return sum(v for series, v in counts.items() if target.matches(_labels(series)))


def _buckets(snap: Snapshot, target: Target) -> dict[float, float]:
    out: dict[float, float] = {}
    for series, buckets in snap.buckets.items():
        if target.matches(_labels(series)):
            for le, count in buckets.items():
                out[le] = out.get(le, 0) + count
    return out


@dataclass
class ScrapeSource(MetricSource):
    """Reads the fleet's metrics endpoint and differences it against the snapshot at step start.

    Snapshots are kept per step start time, so several targets (canary and stable) can be observed
    over the same window; only the ``BASELINES_KEPT`` most recent are kept (a step start is per
    rollout, and a long-lived ``slm-fleet serve`` goes through many).
    """

    BASELINES_KEPT: ClassVar[int] = 32
    url: str
    fetch: Callable[[str], str] = field(default=lambda url: httpx.get(url, timeout=10).text)
    _baselines: dict[float, Snapshot] = field(default_factory=dict)

    def mark(self, since: float) -> None:
        """Take the baseline for a step starting at ``since`` (call when the step starts)."""
        self._baselines[since] = snapshot_of(self.fetch(self.url))
        while len(self._baselines) > self.BASELINES_KEPT:
            del self._baselines[min(self._baselines)]

    def observe(self, target: Target, since: float) -> Observation:
        if since not in self._baselines:  # e.g. after a restart: count from now on
            self.mark(since)
        base, now = self._baselines[since], snapshot_of(self.fetch(self.url))
        requests = _total(now.requests, target) - _total(base.requests, target)
        errors = _total(now.errors, target) - _total(base.errors, target)
        before, after = _buckets(base, target), _buckets(now, target)
        delta = {le: count - before.get(le, 0) for le, count in after.items()}
        p95 = quantile(0.95, delta)
        unavailable = _total(now.unavailable, target) - _total(base.unavailable, target)
        agreed = _total(now.agreed, target) - _total(base.agreed, target)
        return Observation(requests=int(max(requests, 0)), errors=int(max(errors, 0)),
                           p95_ms=None if p95 is None else p95 * 1000, load_error=load_error(int(max(unavailable, 0))),
                           agreed=int(max(agreed, 0)))
