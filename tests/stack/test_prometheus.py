"""The fleet's metrics through a real Prometheus server, renamed as the chart's PodMonitor does,
and every query of the shipped Grafana dashboard evaluated against them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.waiting import eventually

DASHBOARD = json.loads((Path(__file__).parents[2] / "helm/slm-fleet/dashboards/slm-fleet.json").read_text())


def dashboard_queries() -> list[tuple[str, str]]:
    def panels(container):
        out = []
        for p in container.get("panels", []):
            out += [p, *panels(p)]
        return out

    return [(p["title"], t["expr"]) for p in panels(DASHBOARD) for t in p.get("targets", [])]


def grafana(expr: str) -> str:
    """The expression as Grafana sends it with "All" selected."""
    return expr.replace("$__rate_interval", "1m").replace("$route", ".*").replace("$version", ".*")


def test_prometheus_sees_slmfleet_names_and_counts_requests(prometheus, client):
    before = prometheus.value('sum(slmfleet_requests_total{route="shout", status="200"})')
    for _ in range(3):
        r = client.post("/v1/completions", json={"model": "shout", "prompt": "red fox", "max_tokens": 4})
        assert r.status_code == 200
    eventually(lambda: prometheus.value('sum(slmfleet_requests_total{route="shout", status="200"})') >= before + 3,
               timeout=30, interval=0.5, message="Prometheus did not see the 3 requests")
    assert prometheus.query('{__name__=~"ray_slmfleet_.*"}') == []  # all renamed at scrape time


def test_every_dashboard_query_evaluates_and_the_traffic_panels_have_data(prometheus, client):
    for route in ("shout", "json", "echo"):
        for stream in (False, True):
            r = client.post("/v1/chat/completions", json={
                "model": route, "messages": [{"role": "user", "content": "red fox"}], "max_tokens": 4,
                "stream": stream})
            assert r.status_code == 200

    def panels_have_data() -> dict[str, list]:
        # Rates over 1m need two scrapes after the traffic: wait until the traffic panels show it.
        results = {}
        for title, expr in dashboard_queries():
            results.setdefault(title, []).append(prometheus.query(grafana(expr)))  # raises on invalid PromQL
        for title in ("Requests per route and version", "End-to-end latency per route and version",
                      "Time to first token per route and version", "Output tokens/s per route and version",
                      "Adapters resident per replica", "Router queue time p95 per base model"):
            assert any(results[title]), f"dashboard panel {title!r} has no data after traffic"
        routes = {s["metric"].get("route") for s in results["Requests per route and version"][0]}
        assert {"shout", "json", "echo"} <= routes, routes
        return results

    eventually(panels_have_data, timeout=30, interval=0.5)
