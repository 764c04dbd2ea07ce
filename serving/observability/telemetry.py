"""What the router records about each request: metrics and the router span.

``RequestTelemetry`` follows one request from arrival to its last byte. For a streamed answer
the last byte leaves long after the handler returned, so the response body is wrapped and the
request is finished when the stream ends. Token counts come from the OpenAI ``usage`` field; the
router asks the engine for it on streams (``stream_options.include_usage``) and drops that extra
chunk again when the client did not ask for it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator

from opentelemetry import context as otel_context
from opentelemetry import trace
from starlette.responses import Response, StreamingResponse

from serving.api import headers as h
from serving.api.fields import version_label
from serving.observability import tracing
from serving.observability.metrics import LIVE, Recorder
from serving.policy.routing import Target

logger = logging.getLogger("ray.serve").getChild("slmfleet.telemetry")


def usage_of(payload: dict) -> tuple[int, int] | None:
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not usage:
        return None
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def sse_events(chunk: str | bytes) -> list[str]:
    """The ``data:`` payloads in a piece of an SSE stream (Ray Serve LLM yields whole events)."""
    text = chunk.decode() if isinstance(chunk, bytes) else chunk
    return [line[5:].strip() for line in text.split("\n") if line.startswith("data:")]


def is_usage_only(event: str) -> bool:
    """The final chunk ``include_usage`` adds: usage and no choices."""
    if not event.startswith("{"):
        return False
    try:
        payload = json.loads(event)
    except ValueError:
        return False
    return not payload.get("choices") and payload.get("usage") is not None


class RequestTelemetry:
    """Metrics and the router span of one request."""

    def __init__(self, recorder: Recorder, *, route: str, call_method: str, stream: bool,
                 headers: dict[str, str] | None = None, traffic: str = LIVE):
        self.recorder, self.stream = recorder, stream
        self.started = time.perf_counter()
        self.labels = {"route": route, "base_model": "", "adapter": "", "version": "", "traffic": traffic}
        self.input_tokens = self.output_tokens = 0
        self.capture = None
        """A ``RequestCapture`` when this request is sampled for traffic capture: fed the answer, finished here."""
        self.answering: Target | None = None
        self.answered_by: str | None = None
        """Who answered, as tenants' usage names it: adapter@version, base NAME, or a cascade's tier."""
        self.cost: float | None = None
        self.escalated_tokens = 0
        """A cascade's tokens (prompt and answer) on the tiers it tried before the one that answered; ``cost`` is
        the cascade's over every tier (else it follows from the answer's usage)."""
        self.on_finish = None
        """Called with (this telemetry, HTTP status) once the answer is finished: a tenant's usage is settled."""
        # A client's own trace (W3C traceparent) continues through the fleet.
        self.span = tracing.tracer().start_span(
            "slmfleet.router", context=tracing.extract(headers), kind=trace.SpanKind.SERVER,
            attributes={"slmfleet.route": route, "slmfleet.call": call_method, "slmfleet.stream": stream,
                        "slmfleet.traffic": traffic})

    def target(self, target: Target) -> None:
        self.labels.update(base_model=target.base_model, adapter=target.adapter or "", version=target.version or "")
        self.answering = target
        if self.answered_by is None:
            self.answered_by = (version_label(target.adapter, target.version) if target.adapter
                                else f"base {target.base_model}")
        if self.capture is not None:
            self.capture.target(target.base_model, target.adapter, target.version)
        for key in ("base_model", "adapter", "version"):
            self.span.set_attribute(f"slmfleet.{key}", self.labels[key])

    def unknown_route(self) -> None:
        self.labels["route"] = ""  # a name the client made up is not a label: it is unbounded

    def dispatch_headers(self) -> dict[str, str]:
        """Headers for the base-model replica: dispatch time and the trace context."""
        headers = {h.DISPATCHED_AT: f"{time.time():.6f}"}
        token = otel_context.attach(trace.set_span_in_context(self.span))
        try:
            tracing.inject(headers)
        finally:
            otel_context.detach(token)
        return headers

    def answered(self, response: Response, *, client_wants_usage: bool) -> Response:
        """Record what is known once the handler has a response; streams finish later."""
        first_token = time.perf_counter() - self.started
        if response.status_code < 400:
            self.recorder.observe("slmfleet_time_to_first_token_seconds", first_token, **self.labels)
        if isinstance(response, StreamingResponse):
            response.body_iterator = self._watch(response.body_iterator, client_wants_usage)
            return response
        if response.status_code < 400:
            try:
                payload = json.loads(response.body)
            except ValueError:
                payload = None
            tokens = usage_of(payload) if payload else None
            if tokens:
                self.input_tokens, self.output_tokens = tokens
            if self.capture is not None and self.capture.answer is None and isinstance(payload, dict):
                self.capture.payload(payload)
        self.finish(response.status_code, _error_type(response))
        return response

    async def _watch(self, body: AsyncIterator, client_wants_usage: bool) -> AsyncIterator:
        error = None
        try:
            async for chunk in body:
                events = sse_events(chunk)
                for event in events:
                    if event.startswith("{"):
                        payload = json.loads(event)
                        if "error" in payload and not payload.get("choices"):
                            error = (payload["error"] or {}).get("type") or "internal_error"
                        tokens = usage_of(payload)
                        if tokens:
                            self.input_tokens, self.output_tokens = tokens
                        if self.capture is not None:
                            self.capture.feed(payload)
                if not client_wants_usage and any(is_usage_only(e) for e in events):
                    # Ray Serve LLM batches events into one chunk: drop just the usage event.
                    kept = [e for e in events if not is_usage_only(e)]
                    if not kept:
                        continue
                    chunk = "".join(f"data: {e}\n\n" for e in kept)
                yield chunk
        except BaseException:
            error = error or "stream_interrupted"
            raise
        finally:
            # A stream that broke after its 200 headers still counts as an error of that type.
            self.finish(200, error)

    def finish(self, status: int, error_type: str | None) -> None:
        duration = time.perf_counter() - self.started
        self.recorder.inc("slmfleet_requests_total", status=str(status), **self.labels)
        if error_type:
            self.recorder.inc("slmfleet_request_errors_total", error_type=error_type, **self.labels)
        else:
            self.recorder.observe("slmfleet_request_duration_seconds", duration, **self.labels)
            self.recorder.inc("slmfleet_input_tokens_total", self.input_tokens, **self.labels)
            self.recorder.inc("slmfleet_output_tokens_total", self.output_tokens, **self.labels)
        self.span.set_attributes({
            "http.response.status_code": status,
            "gen_ai.usage.input_tokens": self.input_tokens,
            "gen_ai.usage.output_tokens": self.output_tokens,
            "slmfleet.outcome": error_type or "ok",
        })
        if error_type:
            self.span.set_status(trace.Status(trace.StatusCode.ERROR, error_type))
        self.span.end()
        if self.on_finish is not None:
            try:
                self.on_finish(self, status if not error_type or status >= 400 else 599)
            except Exception:  # noqa: BLE001 - accounting never fails a request
                logger.exception("tenancy: the usage of a request could not be settled")
        if self.capture is not None:
            try:
                self.capture.finish(status, self.input_tokens, self.output_tokens, duration)
            except Exception:  # noqa: BLE001 - capture never fails a request
                logger.exception("capture: the record of a request could not be built")


def _error_type(response: Response) -> str | None:
    if response.status_code < 400:
        return None
    try:
        return (json.loads(response.body).get("error") or {}).get("type") or "error"
    except (ValueError, AttributeError):
        return "error"
