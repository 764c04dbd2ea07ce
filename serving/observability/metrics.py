"""The fleet's Prometheus metrics: one catalog, recorded by the router and the base-model replicas.

They are Ray Serve metrics (``ray.serve.metrics``): every replica records into Ray's metrics agent
on its node, which exports them on the node's metrics port together with Ray's own, adding the
``deployment``, ``replica`` and ``application`` labels. Ray's exporter puts ``ray_`` in front of
every name (``ray_slmfleet_requests_total``); the chart's PodMonitor strips it, so Prometheus and
the dashboard see the ``slmfleet_*`` names below (``PROMETHEUS_RENAME`` is that rule).

Labels are bounded by the fleet spec: route, base model, adapter and version come from the spec,
``status`` is an HTTP status code and ``error_type`` one of a few OpenAI error types. Nothing
per-request (no user, session or prompt) is ever a label. A base-model target has adapter="" and
version="". ``traffic`` is "live" for what clients asked, "shadow" for the copies a canary's shadow
phase sends it (never returned, never billed): live numbers select ``traffic!="shadow"``.
"""

from __future__ import annotations

from dataclasses import dataclass

TARGET = ("route", "base_model", "adapter", "version", "traffic")
LIVE, SHADOW = "live", "shadow"
"""Values of the ``traffic`` label."""
ADAPTER = ("base_model", "adapter", "version")

# Seconds. LLM latencies span milliseconds (a cached tiny model) to minutes (long generations).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
QUEUE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass(frozen=True)
class Metric:
    name: str
    """Name as Prometheus sees it after the rename (counters end in _total)."""
    kind: str
    description: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    recorded_by: str = "router"
    """Which process records it: the router, or a base-model replica (engine)."""

    @property
    def ray_name(self) -> str:
        """The name given to Ray: Ray adds ``_total`` to counters itself."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


CATALOG = (
    # Recorded by the router, per request.
    Metric("slmfleet_requests_total", "counter", "Requests answered, by target and HTTP status.", TARGET + ("status",)),
    Metric("slmfleet_request_errors_total", "counter", "Requests that failed, by target and OpenAI error type.",
           TARGET + ("error_type",)),
    Metric("slmfleet_time_to_first_token_seconds", "histogram",
           "Time from the router receiving a request to the first token (first chunk when streaming).",
           TARGET, LATENCY_BUCKETS),
    Metric("slmfleet_request_duration_seconds", "histogram",
           "End-to-end time of a successful request in the router, to its last byte.",
           TARGET, LATENCY_BUCKETS),
    Metric("slmfleet_input_tokens_total", "counter", "Prompt tokens of successful requests.", TARGET),
    Metric("slmfleet_output_tokens_total", "counter", "Generated tokens of successful requests.", TARGET),
    Metric("slmfleet_classifications_total", "counter",
           "Requests of classify routes by the task picked and how (keyword, regex, embedding, default).",
           ("route", "task", "how")),
    # Recorded by the router for cascade routes, per tier tried.
    Metric("slmfleet_cascade_tier_answers_total", "counter",
           "Answers of cascade tiers: accepted, or why the request escalated (truncated, low_confidence, tool_call, "
           "response_format, format, error, timeout).", ("route", "tier", "outcome")),
    Metric("slmfleet_cascade_tier_duration_seconds", "histogram", "Time a cascade tier took, accepted or not.",
           ("route", "tier"), LATENCY_BUCKETS),
    Metric("slmfleet_cascade_tier_tokens_total", "counter", "Tokens (prompt + answer) cascade tiers processed.",
           ("route", "tier")),
    Metric("slmfleet_cascade_cost_total", "counter",
           "Estimated cost of cascade requests (tiers' costPer1kTokens): basis=cascade as served, "
           "basis=last_tier had every request gone straight to the last tier.", ("route", "basis")),
    # Recorded by the router for a canary's shadow phase.
    Metric("slmfleet_shadow_answers_total", "counter",
           "Shadowed requests by how the canary's unseen answer did: agree (passed the route's checks and agreed "
           "with the answer returned), disagree, failed_checks or error.", TARGET + ("outcome",)),
    Metric("slmfleet_shadow_dropped_total", "counter",
           "Live requests that were to be shadowed but were not: too many shadow copies in flight already.",
           ("route",)),
    Metric("slmfleet_dispatch_retries_total", "counter",
           "Requests sent to a base once more because the engine or replica they went to was gone before it "
           "answered (at most once per request).", ("base_model",)),
    # Recorded by the router for tenants (a fleet with tenants); tenant is a name from the spec.
    Metric("slmfleet_tenant_requests_total", "counter",
           "Tenants' answered requests by route and who answered (adapter@version, base NAME, or a cascade tier).",
           ("tenant", "route", "answered_by", "status")),
    Metric("slmfleet_tenant_tokens_total", "counter", "Tenants' tokens by route, who answered and kind (prompt, "
           "completion; a cascade's escalated tiers count as prompt and completion too).",
           ("tenant", "route", "answered_by", "kind")),
    Metric("slmfleet_tenant_cost_total", "counter", "Tenants' estimated cost (costPer1kTokens of what answered; "
           "a cascade's every tier tried).", ("tenant", "route", "answered_by")),
    Metric("slmfleet_tenant_refusals_total", "counter",
           "Requests refused for a tenant: route_not_allowed, version_pin_not_allowed, requests or tokens (rate "
           "limits), budget, limiter_unavailable.", ("tenant", "reason")),
    Metric("slmfleet_auth_failures_total", "counter", "Requests refused 401: missing_api_key or invalid_api_key.",
           ("reason",)),
    # Recorded by the router's capture writer.
    Metric("slmfleet_capture_records_total", "counter", "Captured records written (redacted) to the capture store.",
           ("route",)),
    Metric("slmfleet_capture_dropped_total", "counter",
           "Captured records not written: queue_full (the writer's queue was full; the request was not slowed), "
           "redaction_failed (never written raw) or write_failed (the store refused the batch).", ("route", "reason")),
    # Recorded by the base-model replicas.
    Metric("slmfleet_router_queue_seconds", "histogram",
           "Time from the router dispatching a request to a base-model replica starting it "
           "(waiting for a replica with room, and the hop).", ("base_model",), QUEUE_BUCKETS, recorded_by="engine"),
    Metric("slmfleet_adapter_loads_total", "counter", "Adapter version loads on a replica, by outcome.",
           ADAPTER + ("outcome",), recorded_by="engine"),
    Metric("slmfleet_adapter_load_duration_seconds", "histogram",
           "Cold load of an adapter version on a replica: fetch, checks and registration.",
           ADAPTER, LOAD_BUCKETS, recorded_by="engine"),
    Metric("slmfleet_adapter_evictions_total", "counter",
           "Adapter versions evicted from a replica to make room (least recently used).",
           ADAPTER, recorded_by="engine"),
    Metric("slmfleet_engine_cancelled_total", "counter",
           "Requests a replica stopped before they finished because their caller went away (a client that "
           "disconnected, a deadline that passed); their generation is aborted in the engine.", ("base_model",),
           recorded_by="engine"),
    Metric("slmfleet_adapters_resident", "gauge", "Adapter versions loaded on the replica.", ("base_model",),
           recorded_by="engine"),
    Metric("slmfleet_adapter_resident", "gauge",
           "1 for each adapter version loaded on the replica (the replica label says which): the residency "
           "placement weighs.", ADAPTER, recorded_by="engine"),
    # Recorded in the router's process by the request router of each base deployment, per request placed.
    Metric("slmfleet_placements_total", "counter",
           "Requests placed on a base's replicas by why that replica: resident (it holds the adapter), spill (its "
           "holders were busier than the margin allows: another replica loads it), cold (no replica held it), base "
           "(no adapter); retried (placed away from the replica that failed its first try).",
           ("base_model", "placement", "retried"), recorded_by="placement"),
)
BY_NAME = {m.name: m for m in CATALOG}

# Prometheus relabelling from Ray's export names, as a Prometheus Operator metricRelabelings entry.
PROMETHEUS_RENAME = {"sourceLabels": ["__name__"], "regex": "ray_(slmfleet_.*)", "targetLabel": "__name__",
                     "replacement": "$1", "action": "replace"}


def prometheus_scrape_rename() -> dict:
    """The same rule as a plain Prometheus ``metric_relabel_configs`` entry (snake_case keys)."""
    return {"source_labels": PROMETHEUS_RENAME["sourceLabels"], "regex": PROMETHEUS_RENAME["regex"],
            "target_label": PROMETHEUS_RENAME["targetLabel"], "replacement": PROMETHEUS_RENAME["replacement"],
            "action": PROMETHEUS_RENAME["action"]}


class Recorder:
    """The catalog's metrics that ``recorded_by`` records, as Ray Serve metric objects; one per replica."""

    def __init__(self, recorded_by: str):
        from ray.serve import metrics as serve_metrics

        self._metrics = {}
        for m in CATALOG:
            if m.recorded_by != recorded_by:
                continue
            if m.kind == "counter":
                obj = serve_metrics.Counter(m.ray_name, description=m.description, tag_keys=m.labels)
            elif m.kind == "histogram":
                obj = serve_metrics.Histogram(m.ray_name, description=m.description, boundaries=list(m.buckets),
                                              tag_keys=m.labels)
            else:
                obj = serve_metrics.Gauge(m.ray_name, description=m.description, tag_keys=m.labels)
            self._metrics[m.name] = obj

    def inc(self, name: str, value: float = 1, **labels: str) -> None:
        if value:
            self._metrics[name].inc(value, tags=labels)

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._metrics[name].observe(value, tags=labels)

    def set(self, name: str, value: float, **labels: str) -> None:
        self._metrics[name].set(value, tags=labels)
