"""Quality probes: prompts or chats sent to a canary version, with checks on each answer.

``probe_problem`` (pure) judges one answer; ``run_probes`` sends the prompts to the fleet with the
canary version pinned (``X-SLMFleet-Version``), so they reach it whatever its current weight. An
answer that says the version cannot be loaded (``adapter_unavailable``) is reported as a load
error, which fails the rollout at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import httpx

from serving.api import headers as h
from serving.api.keys import INTERNAL_KEY_ENV
from serving.api.routes import Probe
from serving.policy.checks import format_problem, response_format_problem, tool_call_problem


def probe_request(probe: Probe, route: str) -> tuple[str, dict]:
    """(path, body) of the request ``probe`` sends to ``route``: a completion, or a chat."""
    body = {"model": route, "max_tokens": probe.max_tokens, "temperature": 0}
    if probe.prompt is not None:
        return "/v1/completions", {**body, "prompt": probe.prompt}
    body["messages"] = probe.messages
    if probe.tools is not None:
        body["tools"] = probe.tools
    if probe.tool_choice is not None:
        body["tool_choice"] = probe.openai_tool_choice
    if probe.response_format is not None:
        body["response_format"] = probe.response_format
    return "/v1/chat/completions", body


def probe_problem(probe: Probe, payload: dict, request: dict | None = None) -> str | None:
    """Why the answer ``payload`` (a completion or chat completion) to ``request`` fails ``probe``, or None."""
    choice = (payload.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    text = choice.get("text") if "text" in choice else message.get("content") or ""
    request = request or probe_request(probe, "")[1]
    if probe.tool_call:
        problem = tool_call_problem(message, request)
        if problem:
            return problem
    if probe.response_format_check:
        problem = response_format_problem(text, request)
        if problem:
            return problem
    if probe.regex is None and probe.json_schema is None and probe.exact is None:
        return None
    return format_problem(text, regex=probe.regex, json_schema=probe.json_schema, exact=probe.exact)


class NotDeployedYet(Exception):
    """The fleet does not route to the canary version yet (its new config is still being applied)."""


@dataclass
class ProbeResult:
    passed: int = 0
    total: int = 0
    failures: list[str] = field(default_factory=list)
    load_error: str | None = None

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.total if self.total else None


def run_probes(fleet_url: str, route: str, version: str, probes: list[Probe], *, timeout_s: float = 60,
               api_key: str | None = None) -> ProbeResult:
    """Send every probe to ``route`` pinned to ``version``; an unreachable fleet raises httpx.HTTPError.

    They authenticate with the fleet's internal key (every route, pinned versions, no limits): ``api_key``, else
    this process's (``SLMFLEET_INTERNAL_KEY``, which ``slm-fleet serve`` sets)."""
    result = ProbeResult()
    key = api_key or os.environ.get(INTERNAL_KEY_ENV)
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=fleet_url, timeout=timeout_s, headers=auth) as client:
        for i, probe in enumerate(probes):
            path, body = probe_request(probe, route)
            resp = client.post(path, headers={h.VERSION: version}, json=body)
            result.total += 1
            if resp.status_code != 200:
                error = _error(resp)
                if error.get("code") == "version_not_found":
                    raise NotDeployedYet(error.get("message", ""))
                if error.get("type") == "adapter_unavailable":
                    result.load_error = error.get("message", resp.text[:300])
                    return result
                result.failures.append(f"probe {i + 1}: HTTP {resp.status_code}: "
                                       f"{error.get('message', resp.text[:200])}")
                continue
            problem = probe_problem(probe, resp.json(), body)
            if problem:
                result.failures.append(f"probe {i + 1}: {problem}")
            else:
                result.passed += 1
    return result


def _error(resp: httpx.Response) -> dict:
    try:
        return resp.json().get("error") or {}
    except ValueError:
        return {}
