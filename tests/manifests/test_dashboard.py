"""The Grafana dashboard the chart ships: its queries chart only the catalog's metrics with the
labels they have, every metric is charted, and the chart renders it as the sidecar's ConfigMap."""

from __future__ import annotations

import json
import re

import pytest

from serving.observability.metrics import BY_NAME, CATALOG, Metric
from tests.manifests.conftest import CHART, NAMESPACE, by_kind, one

DASHBOARD_FILE = CHART / "dashboards" / "slm-fleet.json"
DASHBOARD = json.loads(DASHBOARD_FILE.read_text())
MONITORING = CHART / "ci" / "monitoring-values.yaml"

# Labels Ray's exporter adds to every Serve metric; `le` is a histogram bucket's.
RAY_LABELS = {"deployment", "replica", "application"}
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

REFERENCE = re.compile(r"\bslmfleet_[a-z_]+")
SELECTOR = re.compile(r"\{([^}]*)\}")
MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
RATED = re.compile(r"\b(?:rate|increase)\(\s*$")


def panels(container: dict) -> list[dict]:
    """Every panel, including those inside collapsed rows."""
    out = []
    for panel in container.get("panels", []):
        out += [panel, *panels(panel)]
    return out


TARGETS = [(p, t) for p in panels(DASHBOARD) for t in p.get("targets", [])]
VARIABLES = {v["name"]: v for v in DASHBOARD["templating"]["list"]}


def series_of(name: str) -> tuple[Metric, str]:
    """The catalog metric behind a series name and the histogram suffix it has ("" for none)."""
    if name in BY_NAME:
        return BY_NAME[name], ""
    for suffix in HISTOGRAM_SERIES:
        metric = BY_NAME.get(name.removesuffix(suffix))
        if name.endswith(suffix) and metric and metric.kind == "histogram":
            return metric, suffix
    pytest.fail(f"{name} is not in serving.observability.metrics.CATALOG "
                f"(nor a histogram's {'/'.join(HISTOGRAM_SERIES)})")


def labels_of(metric: Metric, suffix: str) -> set[str]:
    return set(metric.labels) | RAY_LABELS | ({"le"} if suffix == "_bucket" else set())


def references(expr: str) -> list[tuple[Metric, str, set[str]]]:
    """(metric, histogram suffix, labels its selector matches on) per series an expression reads.
    Also checks how each is read: a counter or histogram series only through rate/increase (their
    raw values only ever grow), a gauge never, and a histogram never by its bare name."""
    found = []
    for ref in REFERENCE.finditer(expr):
        metric, suffix = series_of(ref[0])
        rest = expr[ref.end():]
        selector = SELECTOR.match(rest)
        matched = set(MATCHER.findall(selector[1])) if selector else set()
        rest = rest[selector.end():] if selector else rest
        rated = bool(RATED.search(expr[:ref.start()])) and rest.startswith("[")
        if metric.kind == "gauge":
            assert not rated, f"{ref[0]} is a gauge: chart its value, not its rate"
        else:
            assert metric.kind == "counter" or suffix, f"{ref[0]} is a histogram: read its _bucket, _sum or _count"
            assert rated, f"{ref[0]} is a {metric.kind}: wrap it in rate() or increase()"
        found.append((metric, suffix, matched))
    return found


def test_dashboard_is_the_fleets():
    assert DASHBOARD["uid"] == "slm-fleet"
    assert DASHBOARD["schemaVersion"] >= 39
    assert VARIABLES["datasource"]["type"] == "datasource" and VARIABLES["datasource"]["query"] == "prometheus"
    for panel in panels(DASHBOARD):
        if panel["type"] != "row":
            assert panel["datasource"] == DATASOURCE, panel["title"]
            assert panel["targets"], f"{panel['title']} has no query"
    for panel, target in TARGETS:
        assert target["datasource"] == DATASOURCE, panel["title"]


def test_panel_ids_are_unique():
    ids = [p["id"] for p in panels(DASHBOARD)]
    assert len(ids) == len(set(ids)), sorted(ids)


@pytest.mark.parametrize("panel,target", TARGETS, ids=[f"{p['title']}-{t['refId']}" for p, t in TARGETS])
def test_query_reads_catalog_metrics_by_their_labels(panel, target):
    expr = target["expr"]
    refs = references(expr)
    assert refs, f"{panel['title']}: no slmfleet_* metric in {expr!r}"
    for metric, suffix, matched in refs:
        assert matched <= labels_of(metric, suffix), f"{metric.name} has no label {matched - labels_of(metric, suffix)}"
    grouped = {label.strip() for labels in GROUPING.findall(expr) for label in labels.split(",") if label.strip()}
    for metric, suffix, _ in refs:
        assert grouped <= labels_of(metric, suffix), f"{metric.name} has no label {grouped - labels_of(metric, suffix)}"
    # Aggregation keeps only the grouped labels: a legend naming another one would be blank.
    assert set(LEGEND_LABEL.findall(target.get("legendFormat", ""))) <= grouped, target["legendFormat"]


def test_every_catalog_metric_is_charted():
    charted = {m.name for _, t in TARGETS for m, _, _ in references(t["expr"])}
    assert charted == {m.name for m in CATALOG}, f"not charted: {sorted({m.name for m in CATALOG} - charted)}"


@pytest.mark.parametrize("name", ["route", "version"])
def test_route_and_version_variables_choose_from_what_is_served(name):
    variable = VARIABLES[name]
    assert variable["datasource"] == DATASOURCE
    assert variable["multi"] and variable["includeAll"]
    # All must also match version="", a base-model target's; Grafana's default (the listed
    # values joined) would drop those.
    assert variable["allValue"] == ".*"
    query = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", variable["query"]["query"])
    assert query and query[2] == name, variable["query"]
    ((metric, suffix, matched),) = references(f"rate({query[1]}[1m])")
    assert {name, *matched} <= labels_of(metric, suffix)


def test_dashboard_config_map_only_when_enabled(helm):
    assert not by_kind(helm.objects(), "ConfigMap")
    config_map = one(helm.objects(MONITORING), "ConfigMap")
    assert config_map["metadata"]["namespace"] == NAMESPACE
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["data"] == {"slm-fleet.json": DASHBOARD_FILE.read_text()}


def test_dashboard_does_not_need_the_pod_monitor(helm):
    objects = helm.objects(sets=("monitoring.dashboard.enabled=true",))
    assert not by_kind(objects, "PodMonitor")
    assert one(objects, "ConfigMap")["data"] == {"slm-fleet.json": DASHBOARD_FILE.read_text()}


def test_live_numbers_leave_shadow_copies_out():
    """A canary's shadow copies (traffic="shadow") never count as its live traffic: every query of a per-request
    metric outside the shadow panels selects traffic!="shadow"."""
    for panel, target in TARGETS:
        for metric, _suffix, _matched in references(target["expr"]):
            if "traffic" in metric.labels and not metric.name.startswith("slmfleet_shadow_"):
                assert 'traffic!="shadow"' in target["expr"], f"{panel['title']}: {target['expr']}"
