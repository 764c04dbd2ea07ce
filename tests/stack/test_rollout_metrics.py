"""Both metric sources of the rollout engine read the same real requests: Ray's endpoint directly,
and a Prometheus server scraping it."""

from __future__ import annotations

import time

from serving.rollout_metrics import PrometheusSource, ScrapeSource, Target

JSON_V1 = Target("json", "json", "v1")


def send(client, n: int) -> None:
    for _ in range(n):
        r = client.post("/v1/completions", json={"model": "json", "prompt": "red fox", "max_tokens": 4})
        assert r.status_code == 200


def test_scrape_source_counts_the_requests_of_a_step(fleet, client):
    source = ScrapeSource(fleet.metrics_url)
    since = time.time()
    source.mark(since)
    send(client, 5)
    deadline = time.monotonic() + 20
    while (obs := source.observe(JSON_V1, since)).requests < 5 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert (obs.requests, obs.errors) == (5, 0)
    assert obs.p95_ms is not None and 0 < obs.p95_ms < 60_000
    assert source.observe(Target("json", "json", "v9"), since).requests == 0


def test_prometheus_source_sees_them_too(prometheus, client):
    # As in production, Prometheus has been scraping the fleet before the step starts (here it may
    # have just started: wait for its first scrape of the series).
    send(client, 1)
    deadline = time.monotonic() + 20
    while not prometheus.query(f"slmfleet_requests_total{{{JSON_V1.selector()}}}") and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)
    source = PrometheusSource(prometheus.url)
    since = time.time()
    send(client, 6)
    deadline = time.monotonic() + 30
    while (obs := source.observe(JSON_V1, since)).requests < 6 and time.monotonic() < deadline:
        time.sleep(1)
    assert (obs.requests, obs.errors) == (6, 0)
    assert obs.p95_ms is not None and obs.p95_ms > 0
