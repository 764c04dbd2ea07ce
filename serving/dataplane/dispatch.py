"""Send one request to a base-model deployment and map whatever fails to an OpenAI-style error.

The router (split and classify routes) and the cascade runner (fleet tiers) both send through
:func:`dispatch`; they differ only in what they do with a :class:`DispatchFailed`: the router
answers it, a cascade escalates to its next tier.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from fastapi import Request
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from starlette.responses import Response, StreamingResponse
from vllm.v1.engine.exceptions import EngineDeadError

from serving.api import headers as h
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
OVERLOADED_RETRY_AFTER_S = 1
"""Retry-After of a 503 overloaded: every replica of the base is at maxOngoingRequests and the router's queue
for it (maxQueuedRequests) is full."""


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

    A request the base's engine or replica failed before answering anything (it died, or is being replaced) is
    sent once more, to another replica where there is one: placement avoids the replica of the first try (a lone
    replica is tried again; if it is still down, the answer is the 503). A
    stream cut after it started ends with an SSE error event (``error_events``), never a hung connection.

    Raises DispatchFailed: 503 service_unavailable for a base with no deployment yet, 503
    adapter_unavailable for a version a replica cannot load, 503 engine_unavailable (with
    ``retry_after``) while the base's engine or replica is dead and being replaced, 503 overloaded (with
    ``retry_after``) when the router's queue for the base is full, the engine's own status for what it
    refused, 500 internal_error for anything else (logged with its traceback).
    """
    if target.base_model not in ingress.base_deployments:
        raise DispatchFailed(503, "service_unavailable", f"base model '{target.base_model}' has no deployment yet; "
                             "it starts when the fleet's base models are redeployed")
    try:
        try:
            response = await _send(ingress, body, call_method, request, telemetry)
        except _EngineGone as gone:
            logger.warning("base %s: %s; sending the request to another replica", target.base_model, gone.why)
            telemetry.recorder.inc("slmfleet_dispatch_retries_total", base_model=target.base_model)
            response = await _send(ingress, body, call_method, request, telemetry, retry=True)
    except _EngineGone as gone:
        raise _engine_unavailable(target, gone.why) from None
    except OpenAIHTTPException as err:
        raise DispatchFailed(err.status_code, err.type, err.message, engine=True) from None
    except Exception as err:  # noqa: BLE001 - every failure below becomes an answer
        cause = root_cause(err)
        if isinstance(cause, BackPressureError):
            raise DispatchFailed(503, "overloaded", f"base model '{target.base_model}' is overloaded: every replica "
                                 f"is busy and {cause.args[0]} request(s) wait already; retry after "
                                 f"{OVERLOADED_RETRY_AFTER_S} s", retry_after=OVERLOADED_RETRY_AFTER_S) from None
        if isinstance(cause, TimeoutError):  # the replica stopped at the request's deadline
            raise DispatchFailed(504, "timeout", f"base model '{target.base_model}' did not finish within the "
                                 "request's deadline; the generation was stopped") from None
        if isinstance(cause, AdapterUnavailable):
            logger.error("adapter=%s version=%s unavailable: %s", cause.adapter, cause.version, cause.cause)
            raise DispatchFailed(503, "adapter_unavailable", str(cause)) from None
        logger.exception("target=%s failed", target.model_id)
        raise DispatchFailed(500, "internal_error", f"{type(cause).__name__}: {cause}") from None
    return response


class _EngineGone(Exception):
    def __init__(self, why: str):
        self.why = why


async def _send(ingress: Sender, body, call_method: str, request: Request, telemetry: RequestTelemetry, *,
                retry: bool = False) -> Response:
    """One try; _EngineGone when the engine or replica was gone before anything was answered. A ``retry``
    carries the header with which placement (serving.dataplane.placement_router) avoids the first try's replica."""
    headers = telemetry.dispatch_headers()
    if retry:
        headers[h.RETRY] = "1"
    try:
        response = await ingress.send(body, call_method, with_headers(request, headers))
    except OpenAIHTTPException as err:
        if ENGINE_DEAD in (err.message or ""):
            raise _EngineGone(err.message) from None
        raise
    except asyncio.CancelledError:
        raise
    except Exception as err:
        cause = root_cause(err)
        if engine_down(cause):
            raise _EngineGone(f"{type(cause).__name__}: {cause}") from None
        raise
    if isinstance(response, StreamingResponse):
        response.body_iterator = error_events(response.body_iterator)
    return response


async def error_events(chunks: AsyncIterator) -> AsyncIterator:
    """A stream's chunks; if the stream breaks after it started (its replica or engine died), an SSE error event
    ends it, which OpenAI's clients raise as an APIError, instead of a connection cut without a word."""
    try:
        async for chunk in chunks:
            yield chunk
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except Exception as err:  # noqa: BLE001 - said to the client, in the stream
        cause = root_cause(err)
        down = engine_down(cause)
        logger.warning("a stream broke after it started: %s: %s", type(cause).__name__, cause)
        error = {"message": f"the stream broke: {'the engine or its replica died' if down else 'internal error'} "
                            f"({type(cause).__name__}); retry the request",
                 "type": "engine_unavailable" if down else "internal_error", "param": None,
                 "code": 503 if down else 500}
        yield f"data: {json.dumps({'error': error})}\n\n"


def _engine_unavailable(target: Target, why: str) -> DispatchFailed:
    return DispatchFailed(503, "engine_unavailable", f"base model '{target.base_model}' is unavailable while its "
                          f"engine restarts ({why}); retry after {RETRY_AFTER_S} s", retry_after=RETRY_AFTER_S)


def with_headers(request: Request, extra: dict[str, str]) -> Request:
    """The request as the base-model replica sees it (Ray Serve LLM forwards its headers)."""
    lower = {k.lower() for k in extra}
    headers = [(k, v) for k, v in request.scope["headers"] if k.decode().lower() not in lower]
    headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
    return Request({**request.scope, "headers": headers}, request.receive)
