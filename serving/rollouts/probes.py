"""Quality probes: prompts sent to a canary version, with a check on each answer.

``probe_problem`` (pure) judges one answer; ``run_probes`` sends the prompts to the fleet with the
canary version pinned (``X-SLMFleet-Version``), so they reach it whatever its current weight. An
answer that says the version cannot be loaded (``adapter_unavailable``) is reported as a load
error, which fails the rollout at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from serving.api import headers as h
from serving.api.routes import Probe
from serving.policy.checks import format_problem


def probe_problem(probe: Probe, answer: str) -> str | None:
    """Why ``answer`` fails ``probe``'s check, or None if it passes."""
    return format_problem(answer, regex=probe.regex, json_schema=probe.json_schema, exact=probe.exact)


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


def run_probes(fleet_url: str, route: str, version: str, probes: list[Probe], *, timeout_s: float = 60) -> ProbeResult:
    """Send every probe to ``route`` pinned to ``version``; an unreachable fleet raises httpx.HTTPError."""
    result = ProbeResult()
    with httpx.Client(base_url=fleet_url, timeout=timeout_s) as client:
        for i, probe in enumerate(probes):
            resp = client.post("/v1/completions", headers={h.VERSION: version}, json={
                "model": route, "prompt": probe.prompt, "max_tokens": probe.max_tokens, "temperature": 0})
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
            problem = probe_problem(probe, resp.json()["choices"][0]["text"])
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
