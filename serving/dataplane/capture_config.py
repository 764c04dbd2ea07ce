"""The router's traffic capture: the fleet's capture section applied to each request.

``configure`` runs on every routing-table swap: the sample rate of each route, and one writer per
capture configuration (a changed section gets a new writer; the old one writes what it holds and
stops). ``request`` decides whether a request is recorded and, if so, starts its record.
"""

from __future__ import annotations

import asyncio
import logging
import os

from fastapi import Request

from serving.adapters.store import s3_client
from serving.api import headers as h
from serving.api.fleet import FleetSpec
from serving.dataplane.tenancy import caller_of_scope
from serving.observability.capture import CaptureWriter, RequestCapture
from serving.observability.metrics import Recorder
from serving.policy.capture import caller_id, caller_of, route_sample_rate, sampled

logger = logging.getLogger("ray.serve").getChild("slmfleet.capture")


class TrafficCapture:
    def __init__(self, metrics: Recorder, writer_factory=CaptureWriter):
        self.metrics, self._writer_factory = metrics, writer_factory
        self.writer: CaptureWriter | None = None
        self.rates: dict[str, float] = {}
        self._secret: bytes | None = None
        self._retired: set[asyncio.Task] = set()

    def configure(self, spec: FleetSpec) -> None:
        capture = spec.capture
        if self.writer is not None and (capture is None or capture != self.writer.spec):
            self._retire(self.writer)
            self.writer = None
        if capture is None:
            self.rates = {}
            return
        if self.writer is None:
            self.writer = self._writer_factory(capture, self._count, s3_factory=s3_client)
        self.rates = {r.name: rate for r in spec.routes if (rate := route_sample_rate(capture, r)) is not None}
        secret = os.environ.get(capture.key_variable)
        self._secret = secret.encode() if secret else None
        if self._secret is None:
            logger.warning("capture: %s is not set, so records carry no callerId (and `flywheel forget` cannot find "
                           "a caller's records)", capture.key_variable)
        logger.info("capture to %s: %s", capture.destination,
                    ", ".join(f"{name} {rate:g}" for name, rate in self.rates.items()) or "no route")

    def request(self, route: str, policy: str, call: str, body, request: Request, *, via: str | None = None,
                cls: str | None = None) -> RequestCapture | None:
        """A record for this request if its route is captured and its conversation sampled; else None."""
        rate = self.rates.get(route)
        if rate is None or self.writer is None:
            return None
        user = getattr(body, "user", None)
        if not sampled(rate, user or request.headers.get(h.SESSION)):
            return None
        caller = caller_id(self._secret, caller_of(user, request.headers.get("authorization")))
        return RequestCapture(self.writer, route=route, policy=policy, call=call,
                              body=body.model_dump(exclude_unset=True, by_alias=True), caller_id=caller, via=via,
                              cls=cls, tenant=caller_of_scope(request.scope).name)

    def _count(self, outcome: str, route: str, n: int) -> None:
        if outcome == "written":
            self.metrics.inc("slmfleet_capture_records_total", n, route=route)
        else:
            self.metrics.inc("slmfleet_capture_dropped_total", n, route=route, reason=outcome)

    def _retire(self, writer: CaptureWriter) -> None:
        try:
            task = asyncio.get_running_loop().create_task(writer.close())
        except RuntimeError:  # no loop (reconfigure before serving): nothing was queued on it
            return
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def close(self) -> None:
        if self.writer is not None:
            await self.writer.close()
        if self._retired:
            await asyncio.gather(*self._retired, return_exceptions=True)
