"""The ModelFleet status: what the operator reports, as pydantic models (the CRD's status schema).

Rollout statuses are here too: ``slm-fleet serve`` reports the same ones locally.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Status(BaseModel):
    # Enum fields hold their values (phase == "Promoted"), as the JSON and the CRD do.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, use_enum_values=True)


class Condition(_Status):
    type: Literal["Ready", "Reconciled", "Degraded"] = Field(description="Condition type.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word for the cause.")
    message: str = Field("", description="What happened, for people.")
    last_transition_time: str | None = Field(None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(None, description="The spec generation this condition is about.")


class RouteTargetStatus(_Status):
    base_model: str = Field(description="Base model (deployment) serving this target.")
    adapter: str | None = Field(None, description="Adapter, if the target is one.")
    version: str | None = Field(None, description="Adapter version.")
    weight: int = Field(description="Share of the route's traffic in percent.")


class RouteStatus(_Status):
    name: str = Field(description="Route (model name clients send).")
    targets: list[RouteTargetStatus] = Field(description="What the route resolves to.")


class RayServiceStatus(_Status):
    name: str = Field(description="The RayService this fleet runs as.")
    health: str = Field("Unknown", description="The RayService's own state, mirrored.")
    message: str = Field("", description="Detail from the RayService status, if any.")


class RolloutPhase(str, Enum):
    """Where a canary rollout stands; Promoted, RolledBack and Failed are terminal."""

    SHADOWING = "Shadowing"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


HISTORY = 20
"""Transitions kept in a rollout's status."""


class AnalysisStatus(_Status):
    requests: int = Field(0, description="Canary requests answered in the current step (in the shadow phase: "
                          "requests shadowed).")
    errors: int = Field(0, description="Of which failed.")
    p95_ms: float | None = Field(None, description="Canary p95 latency in the step (ms).")
    stable_p95_ms: float | None = Field(None, description="Stable version's p95 latency in the same window (ms).")
    probes_passed: int | None = Field(None, description="Quality probes the canary passed in this step.")
    probes_total: int | None = Field(None, description="Quality probes sent in this step.")
    agreed: int | None = Field(None, description="In the shadow phase: the candidate's answers that passed the "
                               "route's checks and agreed with the answer returned.")


class HistoryEntry(_Status):
    time: str = Field(description="When (RFC 3339).")
    phase: RolloutPhase = Field(description="Phase after the transition.")
    step: int = Field(description="Step (1-based) after the transition; 0: the shadow phase.")
    weight: int = Field(description="Canary weight after the transition.")
    reason: str = Field("", description="Why.")


class RolloutStatus(_Status):
    """Where the canary rollout on one route stands."""

    route: str = Field(description="The route the canary rolls out on.")
    canary: str = Field(description="The canary version (adapter@version).")
    stable: str = Field(description="The stable target (adapter@version, or the base model).")
    rollout_id: str = Field(description="Fingerprint of the canary, steps and analysis; a change starts a new rollout.")
    phase: RolloutPhase = Field(description="Rollout phase.")
    step: int = Field(description="Current step, 1-based; 0 in the shadow phase (or a pause of it).")
    steps: int = Field(description="Number of steps.")
    weight: int = Field(description="The canary's current share of the route in percent.")
    step_started: str = Field(description="When the current step (or pause) started (RFC 3339).")
    steps_passed: int = Field(0, description="Steps whose analysis passed.")
    reason: str = Field("", description="Why the rollout is where it is, with the numbers.")
    analysis: AnalysisStatus | None = Field(None, description="Last measurements of the current step.")
    history: list[HistoryEntry] = Field(default_factory=list, description=f"The last {HISTORY} transitions.")



class FleetStatus(_Status):
    """Status of a ModelFleet as the operator last saw it."""

    observed_generation: int | None = Field(None, description="The generation of the spec last reconciled.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready, Reconciled and Degraded.")
    routes: list[RouteStatus] = Field(default_factory=list, description="Per-route resolution.")
    route_count: int = Field(0, description="Number of routes (printer column).")
    adapter_count: int = Field(0, description="Number of adapter versions (printer column).")
    last_change: Literal["None", "Created", "ServeConfigUpdated", "ClusterUpdated"] = Field(
        "None",
        description="What the last reconcile did: Created the RayService; ServeConfigUpdated "
        "(routes/adapters changed in place, same Ray cluster); ClusterUpdated (base models, image "
        "or resources changed, KubeRay rolls the Ray cluster); None.",
    )
    ray_service: RayServiceStatus | None = Field(None, description="The RayService and its health.")
    rollouts: list[RolloutStatus] = Field(default_factory=list, description="Canary rollouts, one per route "
                                          "with a canary strategy: phase, step, weight, last analysis, history.")
    rollout_phase: str | None = Field(None, description="Phase of the rollouts (printer column).")
    canary: str | None = Field(None, description="Canary versions and their weights (printer column).")
