"""SLM-first cascades, the pure part: what a tier is asked, and whether its answer is accepted.

A cascade route tries its tiers in order (small specialist first, large model last). A tier's
answer is accepted when every check set on it passes; otherwise the request goes to the next
tier, and the reason is kept for the response's headers. The cascade runner
(``serving.dataplane.cascade_runner``) does the sending; this module only judges, so every rule
here is tested without a server.

Streaming: a cascade cannot send a token before it knows the tier that will answer, so a streamed
request is answered after the accepted tier finished and passed its checks, as one content chunk
and the closing chunks (the time to first token is the whole answer's time). ``sse_chunks`` makes
that stream.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from serving.api import headers as h
from serving.api.routes import TierChecks
from serving.policy.checks import format_problem, response_format_problem, tool_call_problem


@dataclass(frozen=True)
class Answer:
    """The parts of an OpenAI completion or chat completion the checks read."""

    text: str
    finish_reason: str | None
    token_logprobs: tuple[float, ...] | None
    """Log-probability of each generated token; None if the tier returned none."""
    message: dict = field(default_factory=dict)
    """A chat answer's message (content, tool_calls); empty for a completion."""

    @classmethod
    def of(cls, body: dict) -> Answer:
        choice = (body.get("choices") or [{}])[0]
        logprobs = choice.get("logprobs") or None
        message = choice.get("message") or {}
        if "message" in choice:  # chat: logprobs.content[i].logprob
            text = message.get("content") or ""
            values = [c.get("logprob") for c in (logprobs or {}).get("content") or []] if logprobs else None
        else:  # completion: logprobs.token_logprobs[i]
            text = choice.get("text") or ""
            values = list((logprobs or {}).get("token_logprobs") or []) if logprobs else None
        values = tuple(v for v in values if v is not None) if values is not None else None
        return cls(text=text, finish_reason=choice.get("finish_reason"), token_logprobs=values or None,
                   message=message)


def needs_logprobs(checks: TierChecks) -> bool:
    return checks.min_mean_logprob is not None or checks.min_token_logprob is not None


def rejection(checks: TierChecks, answer: Answer, request: dict | None = None) -> tuple[str, str] | None:
    """(kind, reason) of the first failed check, or None when the answer is accepted.

    ``request`` is the client's request (its tools, tool_choice and response_format are what the
    toolCall and responseFormat checks judge by). kind is a metric label: truncated,
    low_confidence, tool_call, response_format or format.
    """
    request = request or {}
    if checks.tool_call:
        problem = tool_call_problem(answer.message, request)
        if problem:
            return "tool_call", problem
    if not checks.accept_truncated and answer.finish_reason == "length":
        return "truncated", "cut at max_tokens (finish reason 'length')"
    if needs_logprobs(checks):
        lp = answer.token_logprobs
        if not lp:
            return "low_confidence", "the tier returned no token log-probabilities"
        mean = sum(lp) / len(lp)
        if checks.min_mean_logprob is not None and mean < checks.min_mean_logprob:
            return "low_confidence", f"mean logprob {mean:.2f} < {checks.min_mean_logprob:g}"
        if checks.min_token_logprob is not None and min(lp) < checks.min_token_logprob:
            return "low_confidence", f"min token logprob {min(lp):.2f} < {checks.min_token_logprob:g}"
    if checks.response_format and not answer.message.get("tool_calls"):
        problem = response_format_problem(answer.text, request)
        if problem:
            return "response_format", problem
    if checks.regex is None and checks.json_schema is None:
        return None
    if answer.message.get("tool_calls") and not answer.text:
        return None  # a tool call has no text to match; the toolCall check judges it
    problem = format_problem(answer.text, regex=checks.regex, json_schema=checks.json_schema)
    if problem:
        return "format", problem
    return None


def tier_request(body: dict, call_method: str, checks: TierChecks, model: str) -> dict:
    """The request a tier gets: the client's, not streamed, for ``model``, with logprobs when checks need them."""
    request = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    request["model"] = model
    if needs_logprobs(checks):
        if call_method == "chat":
            request["logprobs"] = True
        elif request.get("logprobs") is None:
            request["logprobs"] = 1
    return request


def client_view(payload: dict, body: dict, call_method: str) -> dict:
    """The accepted answer as the client asked for it: without logprobs it did not request."""
    asked = body.get("logprobs")
    if asked is not None and asked is not False:  # chat: true; completions: a number, 0 included
        return payload
    out = dict(payload)
    out["choices"] = [{**c, "logprobs": None} for c in payload.get("choices") or []]
    return out


def header_safe(text: str) -> str:
    """HTTP header values are latin-1 text on one line."""
    return text.replace("\r", " ").replace("\n", " ").encode("ascii", "backslashreplace").decode()


def answer_headers(route: str, tier: int, tier_name: str, rejected: list[dict]) -> dict[str, str]:
    """Who answered a cascade request, and why each earlier tier was not used."""
    headers = {h.ROUTE: route, h.TIER: str(tier), h.TIER_NAME: header_safe(tier_name)}
    if rejected:
        headers[h.ESCALATIONS] = header_safe(
            "; ".join(f"tier {r['tier']} ({r['by']}): {r['reason']}" for r in rejected))
    return headers


def explanation(tier: int, tier_name: str, rejected: list[dict]) -> dict:
    """The same, as the ``slmfleet`` field of the JSON body (``X-SLMFleet-Explain: true``)."""
    return {"tier": tier, "answeredBy": tier_name, "rejected": rejected}


def sse_chunks(payload: dict, call_method: str, *, include_usage: bool) -> list[str]:
    """An accepted, complete answer as the OpenAI stream of ``data:`` events, ending in [DONE]."""
    created = payload.get("created") or int(time.time())
    base = {"id": payload.get("id", "cascade"), "created": created, "model": payload.get("model", "")}
    events = []
    for i, choice in enumerate(payload.get("choices") or []):
        if call_method == "chat":
            message = choice.get("message") or {}
            obj = "chat.completion.chunk"
            delta = {"role": "assistant", "content": message.get("content") or ""}
            if message.get("tool_calls"):  # each call whole, in one delta (the OpenAI stream allows it)
                delta["tool_calls"] = [{"index": j, "id": c.get("id"), "type": c.get("type", "function"),
                                        "function": c.get("function") or {}}
                                       for j, c in enumerate(message["tool_calls"])]
            first = {"index": i, "delta": delta, "finish_reason": None}
            last = {"index": i, "delta": {}, "finish_reason": choice.get("finish_reason")}
        else:
            obj = "text_completion"
            first = {"index": i, "text": choice.get("text") or "", "finish_reason": None}
            last = {"index": i, "text": "", "finish_reason": choice.get("finish_reason")}
        events.append({**base, "object": obj, "choices": [first]})
        events.append({**base, "object": obj, "choices": [last]})
    if include_usage and payload.get("usage"):
        events.append({**base, "object": events[0]["object"] if events else "text_completion", "choices": [],
                       "usage": payload["usage"]})
    return [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]


@dataclass
class TierUse:
    """One tier tried for one request: its tokens (prompt + answer, 0 if it failed) and outcome."""

    tier: int
    tokens: int
    outcome: str
    """accepted, or the escalation reason: truncated, low_confidence, format, error, timeout."""


def tokens_of(payload: dict | None) -> int:
    usage = (payload or {}).get("usage") or {}
    return int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)


def request_costs(costs_per_1k: list[float], uses: list[TierUse]) -> tuple[float, float]:
    """(what the cascade cost, what sending the request straight to the last tier would have cost).

    Every tier tried costs its tokens; the baseline prices the accepted answer's tokens at the last
    tier's rate (the large model would have read the same prompt and written an answer as long).
    """
    cost = sum(u.tokens * costs_per_1k[u.tier - 1] / 1000 for u in uses)
    answered = next((u for u in uses if u.outcome == "accepted"), None)
    baseline = answered.tokens * costs_per_1k[-1] / 1000 if answered else 0.0
    return cost, baseline


@dataclass
class RouteStats:
    """Running totals of one cascade route (in one router replica)."""

    tiers: int
    requests: int = 0
    answered_by: dict[int, int] = field(default_factory=dict)
    escalations: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    cost: float = 0.0
    baseline_cost: float = 0.0

    def add(self, uses: list[TierUse], costs_per_1k: list[float]) -> None:
        self.requests += 1
        for u in uses:
            if u.outcome == "accepted":
                self.answered_by[u.tier] = self.answered_by.get(u.tier, 0) + 1
            else:
                self.escalations[u.outcome] = self.escalations.get(u.outcome, 0) + 1
        if not any(u.outcome == "accepted" for u in uses):
            self.failed += 1
        cost, baseline = request_costs(costs_per_1k, uses)
        self.cost += cost
        self.baseline_cost += baseline

    def report(self, route: str) -> dict:
        first = self.answered_by.get(1, 0)
        return {
            "route": route,
            "requests": self.requests,
            "answeredByTier": {str(t): self.answered_by.get(t, 0) for t in range(1, self.tiers + 1)},
            "failed": self.failed,
            "escalationRate": round(1 - first / self.requests, 4) if self.requests else None,
            "escalations": dict(sorted(self.escalations.items())),
            "estimatedCost": round(self.cost, 6),
            "costIfAllToLastTier": round(self.baseline_cost, 6),
            "estimatedSavings": round(1 - self.cost / self.baseline_cost, 4) if self.baseline_cost else None,
        }
