"""Tenants in the fleet spec: who may call which routes, how often, and how many tokens per period.

A fleet with no ``tenants`` is open, as before tenants existed: any caller may use every route and pin
any version. Once one tenant is declared, every API path (``/v1/*``, ``/mcp``) needs an API key
(``Authorization: Bearer ...``) that belongs to a tenant. Keys are never in the spec: they are in a keys
file (``slm-fleet serve --keys FILE``) or, on Kubernetes, in the Secret ``tenancy.keysSecret`` names;
the file holds only their sha256 hashes (``serving.api.keys``).

Limits are enforced by the whole fleet, not per router replica (``serving.policy.limits`` decides;
the router keeps their state in a Ray actor). Token limits and budgets reserve the prompt's tokens plus
``max_tokens`` when a request is admitted and settle with the usage the engine reports.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from serving.api.fields import NAME_PATTERN, SecretKeyRef, SpecModel, parse_s3_uri

ALL_ROUTES = "*"
PERIODS = ("day", "week", "month")


class TokenBudget(SpecModel):
    """Tokens (prompt + answer) a tenant may use per calendar period (UTC)."""

    tokens: int = Field(ge=1, description="Tokens per period, prompt and answer together.")
    period: Literal[PERIODS] = Field(  # type: ignore[valid-type]
        "month", description="Calendar period in UTC: day (from 00:00), week (from Monday 00:00) or month "
        "(from the 1st, 00:00). The budget is whole again when the next period starts.")


class TenantSpec(SpecModel):
    """A tenant: a team or application with its own keys, routes and limits."""

    name: str = Field(pattern=NAME_PATTERN, description="Tenant name; keys in the keys file name it, and it "
                      "labels the tenant's usage metrics.")
    routes: list[str] = Field(min_length=1, description="Public routes the tenant may call, or ['*'] for "
                              "every route. The internal hops of a cascade or classify route are not "
                              "checked: they inherit the permission of the route the client named.")
    pin_versions: bool = Field(False, description="Whether the tenant may pin a route's version with the "
                               "X-SLMFleet-Version header (e.g. to try a canary before it is released).")
    requests_per_minute: int | None = Field(None, ge=1, description="Requests per minute across the fleet's "
                                            "router replicas; unset: no request-rate limit.")
    tokens_per_minute: int | None = Field(None, ge=1, description="Tokens (prompt + max_tokens reserved, "
                                          "settled with the actual usage) per minute; unset: no token-rate "
                                          "limit.")
    budget: TokenBudget | None = Field(None, description="Token budget per calendar period; unset: no budget.")

    @field_validator("routes")
    @classmethod
    def _all_alone(cls, v: list[str]) -> list[str]:
        if ALL_ROUTES in v and len(v) > 1:
            raise ValueError("'*' already means every route; list route names or '*' alone")
        return v

    def allows(self, route: str) -> bool:
        return self.routes == [ALL_ROUTES] or route in self.routes

    @property
    def limited(self) -> bool:
        return any(x is not None for x in (self.requests_per_minute, self.tokens_per_minute, self.budget))


class WhenLimiterUnavailable(SpecModel):
    """What the router does when the fleet's limiter state cannot be reached (a Ray actor being replaced)."""

    rates: Literal["open", "closed"] = Field("open", description="Rate limits: open admits requests unlimited "
                                             "meanwhile; closed answers 503 limiter_unavailable.")
    budgets: Literal["open", "closed"] = Field("closed", description="Token budgets: closed (the default) "
                                               "answers 503 limiter_unavailable rather than spend tokens "
                                               "that may be over budget; open admits them.")


class TenancySettings(SpecModel):
    """Where the keys are and how the limits' state is kept."""

    keys_secret: SecretKeyRef | None = Field(None, description="Kubernetes: the Secret (and key) holding the "
                                             "keys file; the operator mounts it into the Ray pods, and the "
                                             "router rereads it when it changes. Locally: slm-fleet serve --keys.")
    state: str | None = Field(None, description="s3://bucket/prefix where budget counters are snapshotted "
                              "(every few seconds) and restored from when a new Ray cluster starts; unset: "
                              "budgets start again from zero with a new cluster.")
    when_limiter_unavailable: WhenLimiterUnavailable = Field(
        default_factory=WhenLimiterUnavailable, description="Fail open or closed while the limiter is unreachable.")

    @field_validator("state")
    @classmethod
    def _s3(cls, v: str | None) -> str | None:
        if v is not None:
            parse_s3_uri(v)
        return v
