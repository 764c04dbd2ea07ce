"""The ModelFleet status: what the operator reports, as pydantic models (the CRD's status schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from serving.rollout_driver import RolloutStatus


class _Status(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


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
