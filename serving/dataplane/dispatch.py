"""Send one request to a base-model deployment and map whatever fails to an OpenAI-style error.

The router (split and classify routes) and the cascade runner (fleet tiers) both send through
:func:`dispatch`; they differ only in what they do with a :class:`DispatchFailed`: the router
answers it, a cascade escalates to its next tier.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from fastapi import Request
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError
from starlette.responses import Response
from vllm.v1.engine.exceptions import EngineDeadError

from serving.dataplane.errors import AdapterUnavailable, root_cause
from serving.dataplane.ray_serve_llm import OpenAIHTTPException
from serving.observability.telemetry import RequestTelemetry
from serving.policy.routing import Target

logger = logging.getLogger("ray.serve").getChild("slmfleet.dispatch")
ENGINE_DEAD = "EngineCore encountered an issue"
"""What vLLM says (EngineDeadError, and the adapter loads that fail behind it) once its engine process died."""
RETRY_AFTER_S = 5
"""Retry-After of a 503 while a base's engine or replica restarts (Serve replaces it by itself)."""
ENGINE_GONE = (EngineDeadError, RayActorError, ActorUnavailableError, ReplicaUnavailableError,
               DeploymentUnavailableError)


def engine_down(cause: BaseException) -> bool:
    """Whether a failure means the engine (or its replica) is gone, not that this request was wrong."""
    return isinstance(cause, ENGINE_GONE) or ENGINE_DEAD in str(cause)


class Sender(Protocol):
    """What dispatch sends through: the router (``ray_serve_llm.IngressBase``)."""

    @property
    def base_deployments(self) -> Mapping[str, object]: ...

    async def send(self, body, call_method: str, raw_request: Request) -> Response: ...


@dataclass
class DispatchFailed(Exception):
    """A request the base deployment did not answer: HTTP status, OpenAI error type, message."""

    status: int
    type: str
    message: str
    engine: bool = False
    """The engine's own answer (e.g. a prompt too long), passed on as it is."""
    retry_after: int | None = None
    """Seconds after which a retry may succeed (a Retry-After header), for a base that is restarting."""

    def __str__(self) -> str:
        return self.message


async def dispatch(ingress: Sender, target: Target, body, call_method: str, request: Request,
                   telemetry: RequestTelemetry) -> Response:
    """The base deployment's answer to ``body`` (whose ``model`` is ``target.model_id``).

    Raises DispatchFailed: 503 service_unavailable for a base with no deployment yet, 503
    adapter_unavailable for a version a replica cannot load, 503 engine_unavailable (with
    ``retry_after``) while the base's engine or replica is dead and being replaced, the engine's own
    status for what it refused, 500 internal_error for anything else (logged with its traceback).
    """
    if target.base_model not in ingress.base_deployments:
        raise DispatchFailed(503, "service_unavailable", f"base model '{target.base_model}' has no deployment yet; "
                             "it starts when the fleet's base models are redeployed")
    try:
        return await ingress.send(body, call_method, with_headers(request, telemetry.dispatch_headers()))
    except OpenAIHTTPException as err:
        if ENGINE_DEAD in (err.message or ""):
            raise _engine_unavailable(target, err.message) from None
        raise DispatchFailed(err.status_code, err.type, err.message, engine=True) from None
    except Exception as err:  # noqa: BLE001 - every failure below becomes an answer
        cause = root_cause(err)
        if engine_down(cause):
            logger.warning("base %s unavailable: %s: %s", target.base_model, type(cause).__name__, cause)
            raise _engine_unavailable(target, f"{type(cause).__name__}: {cause}") from None
        if isinstance(cause, AdapterUnavailable):
            logger.error("adapter=%s version=%s unavailable: %s", cause.adapter, cause.version, cause.cause)
            raise DispatchFailed(503, "adapter_unavailable", str(cause)) from None
        logger.exception("target=%s failed", target.model_id)
        raise DispatchFailed(500, "internal_error", f"{type(cause).__name__}: {cause}") from None


def _engine_unavailable(target: Target, why: str) -> DispatchFailed:
    return DispatchFailed(503, "engine_unavailable", f"base model '{target.base_model}' is unavailable while its "
                          f"engine restarts ({why}); retry after {RETRY_AFTER_S} s", retry_after=RETRY_AFTER_S)


def with_headers(request: Request, extra: dict[str, str]) -> Request:
    """The request as the base-model replica sees it (Ray Serve LLM forwards its headers)."""
    lower = {k.lower() for k in extra}
    headers = [(k, v) for k, v in request.scope["headers"] if k.decode().lower() not in lower]
    headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
    return Request({**request.scope, "headers": headers}, request.receive)
