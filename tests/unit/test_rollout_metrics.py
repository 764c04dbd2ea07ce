"""Reading a rollout's numbers: histogram quantiles and snapshot differences, no server."""

from __future__ import annotations

import math

import pytest

from serving.rollouts.metric_sources import ScrapeSource, Target, quantile, snapshot_of

INF = math.inf


@pytest.mark.parametrize("buckets,q,expected", [
    ({0.1: 0, 0.5: 10, 1.0: 10, INF: 10}, 0.95, 0.1 + 0.4 * 0.95),   # interpolated inside (0.1, 0.5]
    ({0.1: 5, 0.5: 10, INF: 10}, 0.5, 0.1),                          # exactly at a bucket's top
    ({0.1: 0, 0.5: 0, INF: 4}, 0.95, 0.5),                           # beyond the last finite bound
    ({0.1: 0, INF: 0}, 0.95, None),                                   # no observations
    ({}, 0.5, None),
])
def test_quantile_matches_prometheus(buckets, q, expected):
    got = quantile(q, buckets)
    assert (got is None and expected is None) or got == pytest.approx(expected)


def exposition(requests: int, errors: int, fast: int, slow: int, replica: str = "r1", prefix: str = "ray_") -> str:
    labels = f'route="shout",base_model="tiny-llama",adapter="shout",version="v2",replica="{replica}"'
    lines = [
        f"# TYPE {prefix}slmfleet_requests_total counter",
        f'{prefix}slmfleet_requests_total{{{labels},status="200"}} {requests - errors}',
        f'{prefix}slmfleet_requests_total{{{labels},status="503"}} {errors}',
        f"# TYPE {prefix}slmfleet_request_errors_total counter",
        f'{prefix}slmfleet_request_errors_total{{{labels},error_type="adapter_unavailable"}} {errors}',
        f"# TYPE {prefix}slmfleet_request_duration_seconds histogram",
        f'{prefix}slmfleet_request_duration_seconds_bucket{{{labels},le="0.1"}} {fast}',
        f'{prefix}slmfleet_request_duration_seconds_bucket{{{labels},le="1.0"}} {fast + slow}',
        f'{prefix}slmfleet_request_duration_seconds_bucket{{{labels},le="+Inf"}} {fast + slow}',
        f'{prefix}slmfleet_request_duration_seconds_count{{{labels}}} {fast + slow}',
        f'{prefix}slmfleet_request_duration_seconds_sum{{{labels}}} 1.0',
    ]
    return "\n".join(lines) + "\n"


V2 = Target("shout", "shout", "v2")


@pytest.mark.parametrize("prefix", ["ray_", ""])
def test_snapshot_sums_replicas_and_accepts_both_names(prefix):
    snap = snapshot_of(exposition(10, 2, 8, 0, "r1", prefix) + exposition(5, 0, 5, 0, "r2", prefix).split("\n", 1)[1])
    assert snap.requests[V2] == 15 and snap.errors[V2] == 2
    assert snap.buckets[V2][0.1] == 13


def test_scrape_source_counts_only_what_happened_since_the_step_started():
    pages = iter([exposition(100, 1, 99, 0), exposition(130, 4, 99, 27)])
    source = ScrapeSource("http://fleet/metrics", fetch=lambda url: next(pages))
    source.mark(1000.0)
    obs = source.observe(V2, 1000.0)
    assert (obs.requests, obs.errors) == (30, 3)
    assert obs.p95_ms == pytest.approx(100 + 900 * (0.95 * 27 / 27))  # all 27 new ones in (0.1, 1.0]


def test_a_target_without_traffic_has_no_p95():
    pages = iter([exposition(10, 0, 10, 0)] * 2)
    obs = ScrapeSource("http://fleet/metrics", fetch=lambda url: next(pages)).observe(V2, 5.0)
    assert (obs.requests, obs.errors, obs.p95_ms) == (0, 0, None)


def test_scrape_source_keeps_a_bounded_number_of_baselines():
    # A long-lived `slm-fleet serve` goes through many step starts; only the latest are kept.
    source = ScrapeSource("http://fleet/metrics", fetch=lambda url: exposition(10, 0, 10, 0))
    for since in range(3 * ScrapeSource.BASELINES_KEPT):
        source.mark(float(since))
    assert len(source._baselines) == ScrapeSource.BASELINES_KEPT
    assert min(source._baselines) == 2 * ScrapeSource.BASELINES_KEPT  # the oldest went first


def test_prometheus_queries_of_one_observation_share_an_instant_and_errors_never_exceed_requests(monkeypatch):
    from serving.rollouts import metric_sources

    asked = []

    def get(url, params, timeout):
        asked.append(params)
        value = {"requests": 8, "errors": 11}["errors" if "errors" in params["query"] else "requests"]
        if "histogram_quantile" in params["query"]:
            value = 0.2
        body = {"status": "success", "data": {"result": [{"value": [0, str(value)]}]}}
        return type("Response", (), {"json": lambda self: body})()

    monkeypatch.setattr(metric_sources.httpx, "get", get)
    obs = metric_sources.PrometheusSource("http://prometheus", clock=lambda: 1_030.5).observe(V2, 1_000.0)
    assert {p["time"] for p in asked} == {"1030.500"} and len(asked) == 4
    assert (obs.requests, obs.errors, obs.p95_ms) == (8, 8, 200.0)
    assert all('traffic!="shadow"' in p["query"] for p in asked)  # live numbers leave shadow copies out
    asked.clear()
    shadow = metric_sources.PrometheusSource("http://prometheus", clock=lambda: 1_030.5).observe(
        Target("shout", "shout", "v2", traffic="shadow"), 1_000.0)
    assert len(asked) == 5 and all('traffic="shadow"' in p["query"] for p in asked)
    assert 'slmfleet_shadow_answers_total{' in asked[-1]["query"] and 'outcome="agree"' in asked[-1]["query"]
    assert shadow.agreed == 8  # never more than the requests


def test_a_canary_counts_the_traffic_of_the_routes_that_reach_it():
    # Requests to a cascade answered through the canary's route carry the cascade's route label.
    through = exposition(40, 0, 40, 0).replace('route="shout"', 'route="assistant"')
    pages = iter([exposition(10, 0, 10, 0) + through, exposition(30, 0, 30, 0) + through.replace(" 40", " 70")])
    source = ScrapeSource("http://fleet/metrics", fetch=lambda url: next(pages))
    source.mark(1.0)
    assert source.observe(Target("shout", "shout", "v2", via=("assistant",)), 1.0).requests == 20 + 30
    assert Target("s.small", "a", "v2", via=("big",)).selector() == \
        'route=~"s\\\\.small|big", adapter="a", version="v2", traffic!="shadow"'


@pytest.mark.parametrize("route,expected", [
    ("small", ("cascade", "outer")),  # outer's tier names cascade, whose tier names small
    ("cascade", ("outer",)),
    ("outer", ()),
    ("special", ("sorter",)),  # a classify route's class
])
def test_carrying_routes(route, expected):
    from serving.api.fleet import FleetSpec
    from serving.policy.routing import carrying_routes
    from tests.unit.fleets import fleet

    data = fleet()
    target = {**data["routes"][0]["targets"][0], "weight": 100}
    data["routes"] = [
        {"name": "small", "targets": [target]}, {"name": "special", "targets": [target]},
        {"name": "cascade", "policy": "cascade", "tiers": [{"route": "small"}, {"baseModel": target.get(
            "baseModel") or data["baseModels"][0]["name"]}]},
        {"name": "outer", "policy": "cascade", "tiers": [{"route": "cascade"}, {"baseModel": data["baseModels"][0][
            "name"]}]},
        {"name": "sorter", "policy": "classify", "classes": [{"name": "s", "route": "special", "keywords": ["x"]}],
         "default": {"route": "small"}},
    ]
    found = carrying_routes(FleetSpec.model_validate(data), route)
    assert set(found) == set(expected) | ({"sorter"} if route == "small" else set())


def with_shadow(page: str, requests: int, agreed: int) -> str:
    """``page`` plus the canary's shadow copies: their requests (traffic="shadow") and their agreeing answers."""
    labels = 'route="shout",base_model="tiny-llama",adapter="shout",version="v2",traffic="shadow"'
    return page + "\n".join([
        f'ray_slmfleet_requests_total{{{labels},status="200"}} {requests}',
        "# TYPE ray_slmfleet_shadow_answers_total counter",
        f'ray_slmfleet_shadow_answers_total{{{labels},outcome="agree"}} {agreed}',
        f'ray_slmfleet_shadow_answers_total{{{labels},outcome="disagree"}} {requests - agreed}',
    ]) + "\n"


def test_shadow_copies_are_counted_apart_from_live_traffic():
    # The live series carry traffic="live" (or, from an older router, no traffic label at all).
    live = exposition(10, 0, 10, 0).replace('version="v2"', 'version="v2",traffic="live"')
    pages = iter([with_shadow(live, 5, 4)] + [with_shadow(exposition(30, 0, 30, 0), 25, 20)] * 2)
    source = ScrapeSource("http://fleet/metrics", fetch=lambda url: next(pages))
    source.mark(1.0)
    shadow = Target("shout", "shout", "v2", traffic="shadow")
    assert source.observe(V2, 1.0).requests == 20  # 30 - 10: no copy among them
    copies = source.observe(shadow, 1.0)
    assert (copies.requests, copies.agreed) == (20, 16)
