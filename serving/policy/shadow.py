"""Shadow traffic, the judging part: what a candidate's unseen answer to a copied live request shows. Pure.

In a canary's shadow phase the router copies a share of a route's live requests to the candidate
after the client's answer is known. The copy's answer is never returned; it is judged by the route's
checks (the tier checks of the cascade that names the route, if one does) and by agreement with the
answer that was returned (which may be a later tier's: the teacher's, when the stable tier escalated).
"""

from __future__ import annotations

import json
import re

from serving.api.routes import TierChecks
from serving.policy.cascade import Answer, rejection

AGREE, DISAGREE, FAILED_CHECKS, ERROR = "agree", "disagree", "failed_checks", "error"
"""Outcomes of a shadowed request (the ``outcome`` label of slmfleet_shadow_answers_total)."""


def normal_text(text) -> str:
    """Text as agreement compares it: stripped, runs of whitespace as one space."""
    return re.sub(r"\s+", " ", str(text or "").strip())


def answer_key(message: dict) -> tuple:
    """What two chat answers must share to agree: the same text (whitespace aside), or the same calls with equal
    arguments (in any key order)."""
    calls = []
    for c in message.get("tool_calls") or []:
        fn = c.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            args = fn.get("arguments")
        calls.append((fn.get("name"), json.dumps(args, sort_keys=True)))
    return ("calls", tuple(calls)) if calls else ("text", normal_text(message.get("content")))


def agrees(answer: dict, returned: dict) -> bool:
    """Whether two response bodies (chat or completion) give the same answer."""
    a, b = Answer.of(answer), Answer.of(returned)
    if a.message or b.message:
        return answer_key(a.message) == answer_key(b.message)
    return normal_text(a.text) == normal_text(b.text)


def outcome(checks: TierChecks | None, request: dict, answer: dict, returned: dict) -> str:
    """AGREE, DISAGREE or FAILED_CHECKS for the candidate's ``answer`` to ``request``, ``returned`` being what the
    client got."""
    if checks is not None and rejection(checks, Answer.of(answer), request) is not None:
        return FAILED_CHECKS
    return AGREE if agrees(answer, returned) else DISAGREE
