"""Who is calling, and may they: API keys to tenants, tenants to routes. Pure.

A :class:`KeyRing` holds only the keys' sha256 hashes (from the keys file) and the fleet's internal key's
hash (the identity of canary probes and shadow copies, which every route admits and no limit counts).
A presented key is hashed and compared with every hash in constant time (``hmac.compare_digest``, no early
exit), so neither the comparison nor which entry matched shows in the time taken.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from serving.api.keys import KeyEntry, KeysFileError, key_id, key_sha256
from serving.api.tenants import TenantSpec, WhenLimiterUnavailable

INTERNAL = "internal"
"""The tenant name of the fleet's own traffic (probes, shadows); not a name tenants may take."""


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: a tenant (its spec), the fleet itself, or anyone (an open fleet)."""

    tenant: TenantSpec | None
    key_id: str | None = None
    internal: bool = False

    @property
    def name(self) -> str | None:
        return INTERNAL if self.internal else self.tenant.name if self.tenant else None

    def may_call(self, route: str) -> bool:
        return self.tenant is None or self.tenant.allows(route)

    @property
    def may_pin(self) -> bool:
        return self.tenant is None or self.tenant.pin_versions


ANYONE = Caller(None)
FLEET = Caller(None, internal=True)


@dataclass(frozen=True)
class Refusal:
    """An HTTP answer to a request that may not go on: status, OpenAI error type and code, message."""

    status: int
    type: str
    code: str
    message: str
    retry_after: int | None = None


class KeyRing:
    def __init__(self, entries: list[KeyEntry] = (), internal_sha256: str | None = None):
        if internal_sha256 is not None and any(e.sha256 == internal_sha256 for e in entries):
            raise KeysFileError("the keys file lists the fleet's internal key (the identity of its probes and "
                                "shadow traffic), which no tenant may hold; remove that entry and make the "
                                "tenant its own key with slm-fleet keys create")
        self._entries = list(entries)
        self._internal = internal_sha256

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, key: str) -> KeyEntry | None:
        """The entry of ``key`` (the internal key's is tenant INTERNAL), or None; constant time in the entries."""
        digest = key_sha256(key).encode()
        found = None
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.sha256.encode()):
                found = entry
        if self._internal is not None and hmac.compare_digest(digest, self._internal.encode()):
            found = KeyEntry(INTERNAL, self._internal, key_id(self._internal))
        return found


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header; None without one."""
    if not authorization:
        return None
    scheme, _, key = authorization.strip().partition(" ")
    return key.strip() or None if scheme.lower() == "bearer" else None


def identify(ring: KeyRing, tenants: list[TenantSpec], authorization: str | None) -> Caller | Refusal:
    """The caller behind an Authorization header; anyone for an open fleet (no tenants), else 401 when the key
    is missing, unknown, or its tenant is not (or no longer) in the fleet."""
    key = bearer_key(authorization)
    if not tenants:
        if key is not None and ring.find(key) is not None and ring.find(key).tenant == INTERNAL:
            return FLEET
        return ANYONE
    if key is None:
        return Refusal(401, "invalid_request_error", "missing_api_key",
                       "this fleet needs an API key: send it as the header 'Authorization: Bearer <key>' "
                       "(its operator makes keys with slm-fleet keys create)")
    entry = ring.find(key)
    if entry is None:
        return Refusal(401, "invalid_request_error", "invalid_api_key",
                       "the API key is not known to this fleet (revoked, mistyped, or for another fleet); "
                       "ask its operator for a key")
    if entry.tenant == INTERNAL:
        return FLEET
    tenant = next((t for t in tenants if t.name == entry.tenant), None)
    if tenant is None:
        return Refusal(401, "invalid_request_error", "invalid_api_key",
                       f"API key {entry.id} belongs to tenant '{entry.tenant}', which this fleet does not declare")
    return Caller(tenant, entry.id)


def route_refusal(caller: Caller, route: str | None, known_routes: list[str], *, pins_version: bool) -> Refusal | None:
    """403 when the caller's tenant may not use ``route`` (a route that does not exist is the router's 404), or
    may not pin a version."""
    if caller.tenant is None or route not in known_routes:
        return None
    if not caller.tenant.allows(route):
        return Refusal(403, "permission_error", "route_not_allowed",
                       f"tenant '{caller.tenant.name}' may not use route '{route}'; its routes: "
                       f"{', '.join(caller.tenant.routes)}")
    if pins_version and not caller.may_pin:
        return Refusal(403, "permission_error", "version_pin_not_allowed",
                       f"tenant '{caller.tenant.name}' may not pin versions (the X-SLMFleet-Version header); "
                       "send the request without it, or ask the operator for pinVersions: true")
    return None


def unreachable_refusal(tenant: TenantSpec, settings: WhenLimiterUnavailable) -> Refusal | None:
    """What to answer for ``tenant`` while the fleet's limiter cannot be reached: None (fail open) unless one of its
    limits fails closed (budgets by default), then a 503 limiter_unavailable."""
    closed = (tenant.budget is not None and settings.budgets == "closed") or (
        (tenant.requests_per_minute or tenant.tokens_per_minute) and settings.rates == "closed")
    if not closed:
        return None
    return Refusal(503, "service_unavailable", "limiter_unavailable",
                   f"tenant '{tenant.name}''s limits cannot be checked right now (the fleet's limiter is "
                   "restarting); retry shortly", retry_after=2)


def limit_refusal(tenant: str, refused: str, retry_after: float) -> Refusal:
    """The 429 (or, for the budget, 429 insufficient_quota) of a lease the fleet's limits refused."""
    seconds = max(1, int(retry_after + 0.999)) if retry_after != float("inf") else 60
    if refused == "budget":
        return Refusal(429, "insufficient_quota", "insufficient_quota",
                       f"tenant '{tenant}' has used its token budget for this period; it is whole again in "
                       f"{seconds} s (or ask the operator for a larger budget)", seconds)
    if refused == "tokens" and retry_after == float("inf"):
        return Refusal(429, "tokens", "rate_limit_exceeded",
                       f"this request would reserve more tokens than tenant '{tenant}' may use in a minute; "
                       "lower max_tokens or shorten the prompt", 60)
    what = "requests" if refused == "requests" else "tokens"
    return Refusal(429, what, "rate_limit_exceeded",
                   f"tenant '{tenant}' is over its {what} per minute; retry after {seconds} s", seconds)
