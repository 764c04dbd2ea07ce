"""Which requests are captured and what a captured record holds (pure; the writer is in observability).

A record is one JSON object per answered request, ``schemaVersion`` 1:

    schemaVersion, id, time (UTC, ISO 8601), route, via (the classify route that sent it here, or
    null), policy (split | cascade | classify), class, call (chat | completions), traffic (live),
    answeredBy {tier, tierName, baseModel, adapter, version, endpoint},
    request {messages | prompt, tools, tool_choice, response_format, max_tokens, temperature, stop},
    answer {text, toolCalls, finishReason}, status, escalated, escalations [{tier, by, reason}],
    tokens {input, output}, latencyMs, callerId, tenant, redacted

Only the request fields above are kept: headers (an ``Authorization`` or API key) never are, and
the caller (the request's ``user``, else its bearer key) is kept only as ``callerId``, an HMAC
keyed with a secret, so no dictionary of names or keys reverses it.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from serving.api.capture import CaptureSpec
from serving.api.routes import RouteSpec

SCHEMA_VERSION = 1
REQUEST_FIELDS = ("messages", "prompt", "tools", "tool_choice", "response_format", "max_tokens",
                  "max_completion_tokens", "temperature", "top_p", "stop")


def route_sample_rate(capture: CaptureSpec | None, route: RouteSpec) -> float | None:
    """The share of ``route``'s conversations to record, or None when it is not captured."""
    if capture is None:
        return None
    own = route.capture
    if own is not None and own.enabled is False:
        return None
    listed = capture.routes is None or route.name in capture.routes
    if not listed and not (own is not None and own.enabled):
        return None
    rate = own.sample_rate if own is not None and own.sample_rate is not None else capture.sample_rate
    return rate if rate > 0 else None


def sampled(rate: float, sticky_key: str | None, draw=random.random) -> bool:
    """Whether a request is recorded: by its conversation (the sticky key) when it has one, so every turn of
    a sampled conversation is; by ``draw`` otherwise."""
    if rate >= 1:
        return True
    if sticky_key is None:
        return draw() < rate
    point = int.from_bytes(hashlib.sha256(b"capture:" + sticky_key.encode()).digest()[:8], "big") / 2**64
    return point < rate


def caller_of(user: str | None, authorization: str | None) -> str | None:
    """Who is calling, as far as the router knows before tenants: the ``user`` field, else the bearer key."""
    if user:
        return f"user:{user}"
    if authorization and authorization.lower().startswith("bearer ") and authorization[7:].strip():
        return f"key:{authorization[7:].strip()}"
    return None


def caller_id(secret: bytes | None, caller: str | None) -> str | None:
    """The caller keyed-hashed (HMAC-SHA256, hex); None without a caller or a secret."""
    if not caller or not secret:
        return None
    return hmac.new(secret, caller.encode(), hashlib.sha256).hexdigest()


def forget_ids(secret: bytes, caller: str) -> set[str]:
    """The callerIds one person's records may carry: as a ``user`` and as a bearer key."""
    if caller.startswith(("user:", "key:")):
        return {caller_id(secret, caller)}
    return {caller_id(secret, f"user:{caller}"), caller_id(secret, f"key:{caller}")}


def request_part(body: dict) -> dict:
    """The parts of a request body a record keeps (never headers, keys or the raw user)."""
    return {k: body[k] for k in REQUEST_FIELDS if body.get(k) is not None}


def answer_part(payload: dict | None, call: str) -> dict:
    """Text or tool calls, and finish reason, of an OpenAI chat or completion response body."""
    choice = ((payload or {}).get("choices") or [{}])[0]
    if call == "chat":
        message = choice.get("message") or {}
        functions = [c.get("function") or {} for c in message.get("tool_calls") or []]
        calls = [{"name": f.get("name"), "arguments": f.get("arguments")} for f in functions]
        return {"text": message.get("content"), "toolCalls": calls, "finishReason": choice.get("finish_reason")}
    return {"text": choice.get("text"), "toolCalls": [], "finishReason": choice.get("finish_reason")}


@dataclass
class StreamedAnswer:
    """A streamed answer put back together from its chunks (``feed`` each parsed SSE event)."""

    call: str
    text: list[str] = field(default_factory=list)
    calls: dict[int, dict] = field(default_factory=dict)
    finish_reason: str | None = None

    def feed(self, chunk: dict) -> None:
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            if self.call == "chat":
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    self.text.append(delta["content"])
                for c in delta.get("tool_calls") or []:
                    call = self.calls.setdefault(c.get("index", 0), {"name": None, "arguments": ""})
                    fn = c.get("function") or {}
                    call["name"] = fn.get("name") or call["name"]
                    call["arguments"] += fn.get("arguments") or ""
            elif choice.get("text"):
                self.text.append(choice["text"])
            self.finish_reason = choice.get("finish_reason") or self.finish_reason

    def part(self) -> dict:
        return {"text": "".join(self.text) if self.text else None,
                "toolCalls": [self.calls[i] for i in sorted(self.calls)], "finishReason": self.finish_reason}


@dataclass
class AnsweredBy:
    base_model: str | None = None
    adapter: str | None = None
    version: str | None = None
    endpoint: str | None = None
    tier: int | None = None
    tier_name: str | None = None
    last_tier: bool | None = None
    """A cascade's answer: whether its last tier (the teacher) gave it; None outside cascades."""

    def part(self) -> dict:
        return {"tier": self.tier, "tierName": self.tier_name, "lastTier": self.last_tier,
                "baseModel": self.base_model or None, "adapter": self.adapter or None,
                "version": self.version or None, "endpoint": self.endpoint}


def record(*, route: str, policy: str, call: str, request: dict, answer: dict, answered_by: AnsweredBy, status: int,
           input_tokens: int, output_tokens: int, latency_s: float, caller: str | None, via: str | None = None,
           cls: str | None = None, escalations: list[dict] | None = None, traffic: str = "live",
           tenant: str | None = None,
           now: datetime | None = None, record_id: str | None = None) -> dict:
    """One capture record (schemaVersion 1, see the module doc), before redaction."""
    now = now or datetime.now(UTC)
    return {
        "schemaVersion": SCHEMA_VERSION, "id": record_id or uuid.uuid4().hex,
        "time": now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "route": route, "via": via, "policy": policy, "class": cls, "call": call, "traffic": traffic,
        "answeredBy": answered_by.part(), "request": request, "answer": answer, "status": status,
        "escalated": bool(escalations), "escalations": list(escalations or []),
        "tokens": {"input": input_tokens, "output": output_tokens}, "latencyMs": round(latency_s * 1000, 3),
        "callerId": caller, "tenant": tenant, "redacted": False,
    }


RECORD_KEYS = frozenset(record(route="r", policy="split", call="chat", request={}, answer={},
                               answered_by=AnsweredBy(), status=200, input_tokens=0, output_tokens=0,
                               latency_s=0, caller=None))


def record_problem(obj) -> str | None:
    """Why ``obj`` is not a capture record this code reads (foreign or from a newer schema), or None."""
    if not isinstance(obj, dict):
        return f"not a JSON object but {type(obj).__name__}"
    version = obj.get("schemaVersion")
    if version != SCHEMA_VERSION:
        return f"schemaVersion {version!r}; this slm-fleet reads {SCHEMA_VERSION}"
    missing = sorted(RECORD_KEYS - obj.keys())
    if missing:
        return f"missing {', '.join(missing)}"
    if not isinstance(obj.get("request"), dict) or not isinstance(obj.get("answer"), dict):
        return "request and answer must be objects"
    return None


def object_key(prefix: str, route: str, when: datetime, name: str) -> str:
    """Where a batch of ``route``'s records from day ``when`` is written: partitioned by route and date."""
    from urllib.parse import quote

    path = f"route={quote(route, safe='')}/date={when.astimezone(UTC):%Y-%m-%d}/{name}.jsonl.gz"
    return f"{prefix}/{path}" if prefix else path


def partition_of(key: str) -> tuple[str | None, str | None]:
    """(route, date) of an object key written by ``object_key``; None for parts it lacks."""
    from urllib.parse import unquote

    route = date = None
    for part in key.split("/"):
        if part.startswith("route="):
            route = unquote(part[6:])
        elif part.startswith("date="):
            date = part[5:]
    return route, date
