"""The capture writer: records queued by the router, redacted off the event loop, written to S3.

``submit`` never waits: a record joins a bounded queue, or, when the queue is full, is dropped and
counted. A worker task takes what is queued at least every ``flushInterval`` (sooner when a batch is
full), and hands it to one worker thread that redacts each record (Presidio, built there on first
use, so neither the router's start nor a request waits for it) and writes one gzip JSON-lines object
per route and day. A record whose redaction fails is dropped and counted, never written raw; a
batch S3 refuses is counted too. ``close`` writes what is left (the router calls it on shutdown).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from serving.api.capture import CaptureSpec
from serving.api.fields import parse_s3_uri
from serving.policy.capture import AnsweredBy, StreamedAnswer, answer_part, object_key, record, request_part

logger = logging.getLogger("ray.serve").getChild("slmfleet.capture")

Counter = Callable[[str, str, int], None]
"""``count(outcome, route, n)``, on the event loop: outcome is written, queue_full, redaction_failed or
write_failed."""


def default_redactor(spec: CaptureSpec):
    from serving.observability.redaction import Redactor

    return Redactor(spec.redaction).redact


class CaptureWriter:
    def __init__(self, spec: CaptureSpec, count: Counter, *, s3_factory: Callable, redactor_factory=default_redactor):
        """``s3_factory()`` makes the boto3 client, in the worker thread on first write."""
        self.spec, self.count = spec, count
        self.bucket, self.prefix = parse_s3_uri(spec.destination)
        self._s3_factory, self._redactor_factory = s3_factory, redactor_factory
        self._s3 = self._redact = None
        self._queue: deque[dict] = deque()
        self._wake = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._closed = False
        # One thread: redaction and writes in order, and Presidio's objects used from one thread only.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slmfleet-capture")

    def submit(self, record: dict) -> bool:
        """Queue ``record`` (called on the event loop); False when it was dropped."""
        if self._closed or len(self._queue) >= self.spec.queue_size:
            self.count("queue_full", record.get("route", ""), 1)
            return False
        self._queue.append(record)
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run())
        if len(self._queue) >= self.spec.batch_size:
            self._wake.set()
        return True

    async def _run(self) -> None:
        while not self._closed:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.spec.flush_seconds)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything queued now."""
        loop = asyncio.get_running_loop()
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.spec.batch_size))]
            try:
                counts = await loop.run_in_executor(self._thread, self._write, batch)
            except Exception:  # noqa: BLE001 - nothing may stop the worker
                logger.exception("capture: a batch of %d records was lost", len(batch))
                counts = [("write_failed", r.get("route", ""), 1) for r in batch]
            for outcome, route, n in counts:  # on the event loop: metrics are not touched from the thread
                self.count(outcome, route, n)

    async def close(self) -> None:
        """Write what is queued and stop; later records are dropped and counted."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._worker is not None:
            self._worker.cancel()
        await self.flush()
        self._thread.shutdown(wait=True)

    # The worker thread.
    def _write(self, batch: list[dict]) -> list[tuple[str, str, int]]:
        if self._redact is None:
            started = time.perf_counter()
            self._redact = self._redactor_factory(self.spec)
            logger.info("capture: redaction ready in %.1f s", time.perf_counter() - started)
        counts, groups = [], {}
        for raw in batch:
            route = raw.get("route", "")
            try:
                clean = self._redact(raw)
            except Exception as err:  # noqa: BLE001 - a record that cannot be redacted is never written
                logger.warning("capture: redaction failed, record dropped: %s: %s", type(err).__name__, err)
                counts.append(("redaction_failed", route, 1))
                continue
            line = json.dumps(clean, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
            groups.setdefault((route, raw.get("time", "")[:10]), []).append(line)
        if groups and self._s3 is None:
            self._s3 = self._s3_factory()
        now = datetime.now(UTC)
        for (route, day), lines in groups.items():
            when = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC) if day else now
            key = object_key(self.prefix, route, when, f"{now:%H%M%S}-{uuid.uuid4().hex[:12]}")
            try:
                self._s3.put_object(Bucket=self.bucket, Key=key, Body=gzip.compress(b"".join(lines)),
                                    ContentType="application/gzip")
            except Exception as err:  # noqa: BLE001 - counted; the request was answered long ago
                logger.error("capture: writing %d records to s3://%s/%s failed: %s", len(lines), self.bucket, key, err)
                counts.append(("write_failed", route, len(lines)))
                continue
            counts.append(("written", route, len(lines)))
        return counts


class RequestCapture:
    """What is known of one sampled request as it is answered; ``finish`` submits its record.

    The request's telemetry (``RequestTelemetry.capture``) feeds it the answer, streamed or not, and
    finishes it with the status, tokens and latency it measured.
    """

    def __init__(self, writer: CaptureWriter, *, route: str, policy: str, call: str, body: dict,
                 caller_id: str | None, via: str | None = None, cls: str | None = None, tenant: str | None = None):
        self.writer, self.call = writer, call
        self.fields = {"route": route, "policy": policy, "call": call, "via": via, "cls": cls, "caller": caller_id,
                       "tenant": tenant}
        """What ``record`` takes that is known when the request arrives."""
        self.request = request_part(body)
        self.by = AnsweredBy()
        self.escalations: list[dict] = []
        self.answer: dict | None = None
        self.streamed = StreamedAnswer(call)

    def target(self, base_model: str, adapter: str | None, version: str | None) -> None:
        self.by.base_model, self.by.adapter, self.by.version = base_model, adapter, version

    def tier(self, n: int, name: str, rejected: list[dict], endpoint: str | None, *, last: bool) -> None:
        self.by.tier, self.by.tier_name, self.by.endpoint, self.by.last_tier = n, name, endpoint, last
        self.escalations = list(rejected)

    def payload(self, payload: dict | None) -> None:
        """The whole answer (a non-streamed body, or a cascade's chosen answer)."""
        self.answer = answer_part(payload, self.call)

    def feed(self, chunk: dict) -> None:
        if self.answer is None:
            self.streamed.feed(chunk)

    def finish(self, status: int, input_tokens: int, output_tokens: int, latency_s: float) -> None:
        self.writer.submit(record(**self.fields, request=self.request, answer=self.answer or self.streamed.part(),
                                  answered_by=self.by, status=status, input_tokens=input_tokens,
                                  output_tokens=output_tokens, latency_s=latency_s, escalations=self.escalations))
