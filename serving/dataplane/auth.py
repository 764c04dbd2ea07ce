"""The router's authentication: an ASGI middleware that answers 401 on every API path (``/v1/*``, ``/mcp``)
without a key of the fleet's, before any body is read, and puts the caller in the request's scope.

``/healthz`` and ``/readyz`` stay open for probes. An open fleet (no tenants) lets every request through
as anyone. The gate (keys, tenants) is the router's: its ``reconfigure`` sets :data:`GATE` in this
process, which this middleware, in the same replica process, reads.
"""

from __future__ import annotations

from serving.dataplane.errors import refusal_response
from serving.dataplane.request_guard import app_path
from serving.dataplane.tenancy import CALLER, TenantGate
from serving.policy.access import Refusal


class _Holder:
    gate: TenantGate | None = None


GATE = _Holder()


def is_api_path(path: str) -> bool:
    return path.startswith("/v1/") or path == "/mcp" or path.startswith("/mcp/")


class Authenticate:
    def __init__(self, app, holder: _Holder = GATE):
        self.app, self.holder = app, holder

    async def __call__(self, scope, receive, send):
        gate = self.holder.gate
        if scope["type"] != "http" or gate is None or not is_api_path(app_path(scope)):
            return await self.app(scope, receive, send)
        authorization = next((v.decode("latin-1") for k, v in scope.get("headers", [])
                              if k.lower() == b"authorization"), None)
        caller = gate.identify(authorization)
        if isinstance(caller, Refusal):
            return await refusal_response(caller)(scope, receive, send)
        scope.setdefault("state", {})[CALLER] = caller
        await self.app(scope, receive, send)
