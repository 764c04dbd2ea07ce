"""Both metric sources of the rollout engine read the same real requests: Ray's endpoint directly,
and a Prometheus server scraping it."""

from __future__ import annotations

import time

import httpx

from serving.rollouts.metric_sources import PrometheusSource, ScrapeSource, Target, snapshot_of
from tests.waiting import eventually

JSON_V1 = Target("json", "json", "v1")


def send(client, n: int) -> None:
    for _ in range(n):
        r = client.post("/v1/completions", json={"model": "json", "prompt": "red fox", "max_tokens": 4})
        assert r.status_code == 200


def observe_step(source, since: float, requests: int, timeout: float, interval: float):
    """The step's observation once it holds ``requests`` requests and a p95. Ray exports the
    counters and the latency histogram apart, so wait for both (the engine does too)."""
    def check():
        obs = source.observe(JSON_V1, since)
        assert obs.requests >= requests and obs.p95_ms is not None, obs
        return obs

    return eventually(check, timeout=timeout, interval=interval, message=f"no step of {requests} requests and a p95")


def test_scrape_source_counts_the_requests_of_a_step(fleet, client):
    source = ScrapeSource(fleet.metrics_url)
    since = time.time()
    source.mark(since)
    send(client, 5)
    obs = observe_step(source, since, 5, timeout=20, interval=0.5)
    assert (obs.requests, obs.errors) == (5, 0)
    assert obs.p95_ms is not None and 0 < obs.p95_ms < 60_000
    assert source.observe(Target("json", "json", "v9"), since).requests == 0


def test_prometheus_source_sees_them_too(fleet, prometheus, client):
    # As in production, Prometheus has been scraping the fleet before the step starts. Ray exports
    # counters with a lag of seconds, so first let the series settle: Prometheus must hold the
    # fleet's true total (read from Ray's endpoint) before the step's window starts.
    def total() -> float:
        return snapshot_of(httpx.get(fleet.metrics_url, timeout=10).text).requests.get(JSON_V1, 0)

    before = total()
    send(client, 1)

    def caught_up() -> bool:
        now = total()
        seen = sum(float(r["value"][1]) for r in prometheus.query(
            f"slmfleet_requests_total{{{JSON_V1.selector()}}}"))
        assert now > before and seen == now, f"{seen} vs {now}"
        return True

    eventually(caught_up, timeout=30, interval=0.5, message="Prometheus never caught up with the fleet's total")
    time.sleep(2)  # the window's start is rounded down to whole seconds
    source = PrometheusSource(prometheus.url)
    since = time.time()
    send(client, 6)
    obs = observe_step(source, since, 6, timeout=30, interval=1)
    assert (obs.requests, obs.errors) == (6, 0)
    assert obs.p95_ms is not None and obs.p95_ms > 0
