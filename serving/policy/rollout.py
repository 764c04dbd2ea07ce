"""The canary rollout engine: a pure state machine, no I/O, no clock of its own.

``decide(policy, state, observation, now, command)`` returns the next state, the canary's share of
the route's traffic, and the reason. The operator (on Kubernetes) and ``slm-fleet serve`` (locally)
call it on every tick with the metrics they read; whatever they read, the rules are these:

- A rollout with a shadow phase starts Shadowing at 0%: the router copies a share of the route's live
  requests to the canary and judges its answers, unseen. At the end of the phase's duration: too few
  shadowed requests → wait; error rate and agreement within their limits → the first step; else
  RolledBack. Its state is step -1 (status step 0), so a pause of it resumes into it, at 0%.
- A rollout without one starts at its first step's weight. At the end of each step's interval the step's
  analysis decides: not enough requests yet → wait; every check passed → next step (or Promoted
  after the last one, the 100% step, passed too); any check failed → RolledBack, the canary back to 0%.
- A canary that cannot load fails at once (Failed, 0%); it never gets past its first step's share.
- Pause holds the current weight; resume restarts the step's interval. Promote jumps to 100%;
  abort rolls back. Promoted, RolledBack and Failed are terminal until the rollout itself (its
  canary, steps or analysis) changes, which starts a new rollout.
- The stable version keeps ``100 - canary`` percent; on every failure path that is 100%.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from enum import Enum

from serving.api.routes import CanaryAnalysis, CanaryShadow, CanaryStrategy, steps_problem
from serving.api.status import RolloutPhase as Phase

TERMINAL = (Phase.PROMOTED, Phase.ROLLED_BACK, Phase.FAILED)


class Command(str, Enum):
    PAUSE = "pause"
    RESUME = "resume"
    PROMOTE = "promote"
    ABORT = "abort"


@dataclass(frozen=True)
class Analysis:
    """What a step must show before the canary gets more traffic."""

    # Defaults are the spec's (CanaryAnalysis): one home for them.
    min_requests: int = CanaryAnalysis.model_fields["min_requests"].default
    max_error_rate: float = CanaryAnalysis.model_fields["max_error_rate"].default
    max_p95_ms: float | None = CanaryAnalysis.model_fields["max_p95_ms"].default
    max_p95_ratio: float | None = CanaryAnalysis.model_fields["max_p95_ratio"].default
    """Canary p95 over stable p95."""
    min_probe_pass_rate: float | None = None
    """Share of quality probes the canary must pass; None: no probes."""


@dataclass(frozen=True)
class Shadow:
    """The shadow phase: what the canary's unseen answers to copied live requests must show."""

    duration_s: float
    share: int = CanaryShadow.model_fields["share"].default
    """Percent of live requests copied to the canary (the router's part; part of the fingerprint)."""
    min_requests: int = CanaryShadow.model_fields["min_requests"].default
    min_agreement: float = CanaryShadow.model_fields["min_agreement"].default
    max_error_rate: float = CanaryShadow.model_fields["max_error_rate"].default


@dataclass(frozen=True)
class Policy:
    steps: tuple[int, ...]
    """Canary weights in percent, increasing, ending at 100."""
    interval_s: float
    analysis: Analysis = field(default_factory=Analysis)
    shadow: Shadow | None = None

    def __post_init__(self):
        problem = steps_problem(self.steps)
        if problem:
            raise ValueError(problem)
        if self.interval_s <= 0:
            raise ValueError("interval must be positive")

    def fingerprint(self, canary: str) -> str:
        """Identifies the rollout: a change of canary, steps or analysis starts a new one."""
        text = json.dumps({"canary": canary, **asdict(self)}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def policy_for(canary: CanaryStrategy) -> Policy:
    """The engine's policy for a route's ``strategy.canary``."""
    a, sh = canary.analysis, canary.shadow
    shadow = None if sh is None else Shadow(duration_s=sh.duration_seconds, share=sh.share,
                                            min_requests=sh.min_requests, min_agreement=sh.min_agreement,
                                            max_error_rate=sh.max_error_rate)
    return Policy(steps=tuple(canary.steps), interval_s=canary.interval_seconds, analysis=Analysis(
        min_requests=a.min_requests, max_error_rate=a.max_error_rate, max_p95_ms=a.max_p95_ms,
        max_p95_ratio=a.max_p95_ratio, min_probe_pass_rate=a.probes.min_pass_rate if a.probes else None),
        shadow=shadow)


@dataclass(frozen=True)
class Observation:
    """What was measured for the canary (and stable) since the current step started."""

    requests: int = 0
    errors: int = 0
    p95_ms: float | None = None
    stable_p95_ms: float | None = None
    probe_pass_rate: float | None = None
    load_error: str | None = None
    """Why the canary version cannot load on a replica, if it cannot."""
    agreed: int = 0
    """Shadow phase: answers that passed the route's checks and agreed with the answer returned."""


@dataclass(frozen=True)
class State:
    rollout: str
    """The policy fingerprint this state belongs to."""
    phase: Phase
    step: int
    step_started: float
    steps_passed: int = 0
    reason: str = ""


@dataclass(frozen=True)
class Decision:
    state: State
    canary_weight: int
    changed: bool
    """Whether the phase, step or weight differs from the state passed in."""

    @property
    def stable_weight(self) -> int:
        return 100 - self.canary_weight


SHADOW_STEP = -1
"""The state's step while the shadow phase (or a pause of it) holds: before the first step."""


def weight(policy: Policy, state: State) -> int:
    if state.phase == Phase.PROMOTED:
        return 100
    if state.phase in (Phase.ROLLED_BACK, Phase.FAILED) or state.step == SHADOW_STEP:
        return 0
    return policy.steps[state.step]


def shadowing(state: State) -> bool:
    """Whether the router copies live requests to the canary now (not while the shadow phase is paused)."""
    return state.phase == Phase.SHADOWING


def _latency_failures(analysis: Analysis, p95_ms: float, stable_p95_ms: float | None) -> list[str]:
    failures = []
    if analysis.max_p95_ms is not None and p95_ms > analysis.max_p95_ms:
        failures.append(f"p95 {p95_ms:.0f} ms > {analysis.max_p95_ms:.0f} ms")
    # No stable p95 (stable had no traffic in the window, as at a 100% step): nothing to compare.
    if analysis.max_p95_ratio is not None and stable_p95_ms:
        ratio = p95_ms / stable_p95_ms
        if ratio > analysis.max_p95_ratio:
            failures.append(f"p95 {ratio:.2f}x stable > {analysis.max_p95_ratio:.2f}x")
    return failures


def analyse(analysis: Analysis, obs: Observation) -> tuple[bool | None, str]:
    """(passed, reason): None while the step has too few requests, or lacks a number, to judge.

    A limit that is already broken fails the step at once; a pass waits for every number a limit
    needs, because counters, the latency histogram and the probes arrive apart.
    """
    # No request, nothing to judge (an error rate of 0/0), whatever minRequests says; the spec
    # asks for 1 or more, the engine takes any policy (its property test found 0).
    needed = max(analysis.min_requests, 1)
    if obs.requests < needed:
        return None, f"waiting for traffic: {obs.requests}/{needed} requests"
    failures, waiting = [], []
    error_rate = obs.errors / obs.requests
    if error_rate > analysis.max_error_rate:
        failures.append(f"error rate {error_rate:.1%} > {analysis.max_error_rate:.1%}")
    if analysis.max_p95_ms is not None or analysis.max_p95_ratio is not None:
        if obs.p95_ms is None:
            waiting.append(f"waiting for the canary's latency ({obs.requests} requests counted, no p95 yet)")
        else:
            failures += _latency_failures(analysis, obs.p95_ms, obs.stable_p95_ms)
    if analysis.min_probe_pass_rate is not None:
        if obs.probe_pass_rate is None:
            waiting.append("waiting for the quality probes")
        elif obs.probe_pass_rate < analysis.min_probe_pass_rate:
            failures.append(f"probes passed {obs.probe_pass_rate:.0%} < {analysis.min_probe_pass_rate:.0%}")
    if failures:
        return False, "; ".join(failures)
    if waiting:
        return None, "; ".join(waiting)
    return True, f"{obs.requests} requests, error rate {error_rate:.1%}" + (
        f", p95 {obs.p95_ms:.0f} ms" if obs.p95_ms is not None else "")


def analyse_shadow(shadow: Shadow, obs: Observation) -> tuple[bool | None, str]:
    """(passed, reason) of the shadow phase; None while too few requests were shadowed."""
    needed = max(shadow.min_requests, 1)
    if obs.requests < needed:
        return None, f"waiting for shadowed requests: {obs.requests}/{needed}"
    failures = []
    error_rate = obs.errors / obs.requests
    if error_rate > shadow.max_error_rate:
        failures.append(f"error rate {error_rate:.1%} > {shadow.max_error_rate:.1%}")
    answered = obs.requests - obs.errors
    agreement = obs.agreed / answered if answered else 0.0
    if agreement < shadow.min_agreement:
        failures.append(f"agreement {agreement:.0%} < {shadow.min_agreement:.0%}")
    if failures:
        return False, "; ".join(failures)
    return True, f"{obs.requests} shadowed, agreement {agreement:.0%}, error rate {error_rate:.1%}"


def decide(policy: Policy, canary: str, state: State | None, obs: Observation, now: float,
           command: Command | None = None) -> Decision:
    """The next state of the rollout of ``canary`` under ``policy``."""
    fingerprint = policy.fingerprint(canary)
    if state is None or state.rollout != fingerprint:
        if policy.shadow is not None:
            start = State(fingerprint, Phase.SHADOWING, SHADOW_STEP, now,
                          reason=f"shadowing {policy.shadow.share}% of live requests")
        else:
            start = State(fingerprint, Phase.PROGRESSING, 0, now, reason=f"started at {policy.steps[0]}%")
        # A command, or a canary that cannot load, applies from the very first tick.
        new = _next(policy, start, obs, now, command) if (command or obs.load_error) else start
        return Decision(new, weight(policy, new), True)
    new = _next(policy, state, obs, now, command)
    changed = (new.phase, new.step) != (state.phase, state.step)
    return Decision(new, weight(policy, new), changed)


def _next(policy: Policy, s: State, obs: Observation, now: float, command: Command | None) -> State:
    if s.phase in TERMINAL:
        return s  # until the rollout changes
    if obs.load_error:  # before promote: a version that cannot load never gets the traffic
        return replace(s, phase=Phase.FAILED, reason=f"canary cannot load: {obs.load_error}")
    if command == Command.ABORT:
        return replace(s, phase=Phase.ROLLED_BACK, reason="aborted")
    if command == Command.PROMOTE:
        return replace(s, phase=Phase.PROMOTED, reason="promoted by hand")
    if command == Command.PAUSE:
        return replace(s, phase=Phase.PAUSED, reason="paused")
    if s.phase == Phase.PAUSED:
        if command == Command.RESUME:
            phase = Phase.SHADOWING if s.step == SHADOW_STEP else Phase.PROGRESSING
            return replace(s, phase=phase, step_started=now, reason="resumed")
        return s
    if s.phase == Phase.SHADOWING:
        return _shadow_next(policy, s, obs, now)
    if now - s.step_started < policy.interval_s:
        return s
    passed, why = analyse(policy.analysis, obs)
    if passed is None:
        return replace(s, reason=why)
    if not passed:
        return replace(s, phase=Phase.ROLLED_BACK, reason=f"step {s.step + 1} failed: {why}")
    if s.step + 1 == len(policy.steps):
        return replace(s, phase=Phase.PROMOTED, steps_passed=s.steps_passed + 1, reason=f"all steps passed: {why}")
    return replace(s, step=s.step + 1, step_started=now, steps_passed=s.steps_passed + 1,
                   reason=f"step {s.step + 1} passed ({why}); now {policy.steps[s.step + 1]}%")


def _shadow_next(policy: Policy, s: State, obs: Observation, now: float) -> State:
    if now - s.step_started < policy.shadow.duration_s:
        return s
    passed, why = analyse_shadow(policy.shadow, obs)
    if passed is None:
        return replace(s, reason=why)
    if not passed:
        return replace(s, phase=Phase.ROLLED_BACK, reason=f"shadow failed: {why}")
    return replace(s, phase=Phase.PROGRESSING, step=0, step_started=now,
                   reason=f"shadow passed ({why}); now {policy.steps[0]}%")
