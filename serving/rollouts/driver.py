"""Drive the canary rollouts of a fleet: one ``tick`` reads, decides and reports; callers apply.

The operator (on Kubernetes) and ``slm-fleet serve`` (locally) call :meth:`Rollouts.tick` every
few seconds with the fleet spec, the rollouts' last status and any commands (pause, resume,
promote, abort). A tick reads each canary's numbers from a metric source, runs its quality probes
once per step, asks the pure engine (``serving.policy.rollout.decide``) and returns the new status of
every rollout, the canary weights (and the routes whose canary shadows live requests) to put into the
routing config, and the Events to report. The
status holds everything needed to go on: a driver that restarts resumes from it.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from serving.api.fields import version_label
from serving.api.fleet import FleetSpec
from serving.api.routes import RouteSpec
from serving.api.status import HISTORY, AnalysisStatus, HistoryEntry, RolloutStatus
from serving.api.status import RolloutPhase as Phase
from serving.observability.metrics import SHADOW
from serving.policy.rollout import TERMINAL, Command, Decision, Observation, State, decide, policy_for
from serving.policy.routing import carrying_routes
from serving.rollouts.metric_sources import MetricSource
from serving.rollouts.metric_sources import Target as MetricTarget
from serving.rollouts.probes import NotDeployedYet, ProbeResult, run_probes

log = logging.getLogger("slmfleet.rollout")
COMMAND_ANNOTATION = "slmfleet.io/rollout"
"""On a ModelFleet, `<command> [route]`: the operator applies it on its next tick, then removes it."""


def rfc3339(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, tz=datetime.UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def from_rfc3339(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def state_of(status: RolloutStatus) -> State:
    """The engine's state from a rollout's recorded status (a driver that restarts resumes from it)."""
    return State(rollout=status.rollout_id, phase=Phase(status.phase), step=status.step - 1,
                 step_started=from_rfc3339(status.step_started), steps_passed=status.steps_passed,
                 reason=status.reason)


COMMANDS = {c.value: c for c in Command}


def parse_command(text: str, spec: FleetSpec) -> tuple[str | None, Command]:
    """``"abort json"`` -> ("json", ABORT); ``"pause"`` -> (None, PAUSE): every rollout of the fleet.

    ValueError names what is wrong: an unknown command or a route without a rollout.
    """
    words = text.split()
    if not 1 <= len(words) <= 2 or words[0] not in COMMANDS:
        raise ValueError(f"rollout command {text!r}: expected '<command> [route]' with command one of "
                         f"{', '.join(COMMANDS)}")
    route = words[1] if len(words) == 2 else None
    with_rollout = [r.name for r in spec.routes if r.strategy is not None]
    if route is not None and route not in with_rollout:
        raise ValueError(f"rollout command {text!r}: route '{route}' has no canary strategy; routes with one: "
                         f"{', '.join(with_rollout) or 'none'}")
    return route, COMMANDS[words[0]]


def rollout_id(route: RouteSpec) -> str:
    """Identifies the rollout a route's strategy asks for (its canary, steps and analysis)."""
    canary = route.strategy.canary
    return policy_for(canary).fingerprint(version_label(route.canary_adapter(), canary.version))


def current(spec: FleetSpec, statuses: dict[str, RolloutStatus]) -> dict[str, RolloutStatus]:
    """The statuses that belong to the rollouts ``spec`` asks for now (a changed or removed one is dropped)."""
    return {r.name: statuses[r.name] for r in spec.routes
            if r.strategy is not None and r.name in statuses and statuses[r.name].rollout_id == rollout_id(r)}


def canary_weights(spec: FleetSpec, statuses: dict[str, RolloutStatus]) -> dict[str, int]:
    """Route -> canary weight from the statuses; 0 for a rollout no driver has started yet."""
    ours = current(spec, statuses)
    return {r.name: ours[r.name].weight if r.name in ours else 0 for r in spec.routes if r.strategy is not None}


def shadowing(spec: FleetSpec, statuses: dict[str, RolloutStatus]) -> list[str]:
    """The routes whose canary is in its shadow phase: the router copies their live requests to it."""
    ours = current(spec, statuses)
    return [name for name, status in ours.items() if status.phase == Phase.SHADOWING.value]


def summary(statuses: list[RolloutStatus]) -> tuple[str | None, str | None]:
    """(phase, canary) texts for `kubectl get mf` columns: "Progressing", "shout@v2=25%"."""
    if not statuses:
        return None, None
    if len(statuses) == 1:
        phases = statuses[0].phase
    else:
        phases = ", ".join(f"{s.route}:{s.phase}" for s in statuses)
    return phases, ", ".join(f"{s.canary}={s.weight}%" for s in statuses)


@dataclass
class Tick:
    statuses: dict[str, RolloutStatus] = field(default_factory=dict)
    """Every route with a canary strategy -> its rollout's status."""
    weights: dict[str, int] = field(default_factory=dict)
    """Route -> canary weight for the routing config."""
    shadowing: list[str] = field(default_factory=list)
    """Routes whose canary shadows live requests, for the routing config."""
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """(type, reason, message) of what changed, for Kubernetes Events or the console."""


def _target_name(adapter: str | None, version: str | None, base_model: str | None) -> str:
    return version_label(adapter, version) if adapter else f"base model {base_model}"


@dataclass
class Rollouts:
    """The rollouts of one fleet. Holds only a cache of probe results; the status is the state."""

    source: MetricSource
    fleet_url: str | None = None
    """Where the fleet answers (probes go there); None: probes cannot run and wait."""
    probe: Callable[..., ProbeResult] = run_probes
    """Runs a step's probes: (fleet_url, route, version, prompts) -> ProbeResult."""
    api_key: str | None = None
    """The fleet's internal key the probes authenticate with (a fleet with tenants); None: the environment's."""
    _probed: dict[str, tuple[tuple[str, int], ProbeResult]] = field(default_factory=dict)
    """Route -> ((rollout, step), the probe results of that step): only each route's current step is kept."""

    def tick(self, spec: FleetSpec, previous: dict[str, RolloutStatus], now: float,
             commands: dict[str | None, Command] | None = None) -> Tick:
        """Advance every rollout of ``spec`` by one tick; ``commands`` maps a route (None: all) to a command."""
        result = Tick()
        with_rollout = {r.name for r in spec.routes if r.strategy is not None}
        self._probed = {name: kept for name, kept in self._probed.items() if name in with_rollout}
        for route in spec.routes:
            if route.strategy is None:
                continue
            command = (commands or {}).get(route.name) or (commands or {}).get(None)
            status, decision, changed = self._route(route, previous.get(route.name), now, command,
                                                    via=carrying_routes(spec, route.name))
            result.statuses[route.name] = status
            result.weights[route.name] = decision.canary_weight
            if decision.state.phase == Phase.SHADOWING:
                result.shadowing.append(route.name)
            if changed:
                phase = status.phase
                result.events.append(("Warning" if phase in ("RolledBack", "Failed") else "Normal", f"Rollout{phase}",
                                      f"route {route.name}: {status.canary} at {status.weight}% "
                                      f"(step {status.step}/{status.steps}): {status.reason}"))
        return result

    def _route(self, route: RouteSpec, prev: RolloutStatus | None, now: float, command: Command | None,
               via: tuple[str, ...] = ()) -> tuple[RolloutStatus, Decision, bool]:
        """``via``: the routes whose requests reach this one (a cascade naming it as a tier): the canary's
        traffic through them counts too."""
        canary = route.strategy.canary
        adapter = route.canary_adapter()
        canary_id = version_label(adapter, canary.version)
        policy = policy_for(canary)
        state = state_of(prev) if prev is not None and prev.rollout_id == rollout_id(route) else None
        obs, analysis, probes, note = Observation(), prev.analysis if state else None, None, ""
        if state is not None and state.phase not in TERMINAL:
            try:
                obs, analysis, probes = self._observe(route, state, now, via)
            except Exception as err:  # noqa: BLE001 - no numbers: the step waits, commands still apply
                note = f"cannot read metrics: {type(err).__name__}: {err}"
                log.warning("route %s: %s", route.name, note)
        decision = decide(policy, canary_id, state, obs, now, command)
        new = decision.state
        if note and new.phase not in TERMINAL:
            new = replace(new, reason=note)
        if new.phase == Phase.ROLLED_BACK and probes is not None and probes.failures and "probes" in new.reason:
            new = replace(new, reason=f"{new.reason} ({probes.failures[0]})")
        history = list(prev.history) if state is not None else []
        changed = decision.changed or (state is not None and state.phase != new.phase)
        if changed:
            history = (history + [HistoryEntry(time=rfc3339(now), phase=new.phase.value, step=new.step + 1,
                                               weight=decision.canary_weight, reason=new.reason)])[-HISTORY:]
        stable = route.targets[0]
        status = RolloutStatus(
            route=route.name, canary=canary_id, stable=_target_name(stable.adapter, stable.version, stable.base_model),
            rollout_id=new.rollout, phase=new.phase.value, step=new.step + 1, steps=len(policy.steps),
            weight=decision.canary_weight, step_started=rfc3339(new.step_started), steps_passed=new.steps_passed,
            reason=new.reason, analysis=analysis, history=history)
        return status, decision, changed

    def _observe(self, route: RouteSpec, state: State, now: float, via: tuple[str, ...] = ()):
        canary = route.strategy.canary
        stable = route.targets[0]
        since = state.step_started
        if state.phase == Phase.SHADOWING:  # the copies alone: the canary has no live traffic yet
            obs = self.source.observe(MetricTarget(route.name, route.canary_adapter(), canary.version,
                                                   traffic=SHADOW), since)
            return obs, AnalysisStatus(requests=obs.requests, errors=obs.errors, p95_ms=_round(obs.p95_ms),
                                       agreed=obs.agreed), None
        obs = self.source.observe(MetricTarget(route.name, route.canary_adapter(), canary.version, via), since)
        stable_obs = self.source.observe(MetricTarget(route.name, stable.adapter or "", stable.version or "", via),
                                         since)
        probes = None
        if canary.analysis.probes is not None and state.phase == Phase.PROGRESSING:
            probes = self._probes(route, state)
        obs = replace(obs, stable_p95_ms=stable_obs.p95_ms,
                      probe_pass_rate=probes.pass_rate if probes else None,
                      load_error=obs.load_error or (probes.load_error if probes else None))
        analysis = AnalysisStatus(
            requests=obs.requests, errors=obs.errors, p95_ms=_round(obs.p95_ms),
            stable_p95_ms=_round(stable_obs.p95_ms),
            probes_passed=probes.passed if probes else None, probes_total=probes.total if probes else None)
        return obs, analysis, probes

    def _probes(self, route: RouteSpec, state: State) -> ProbeResult | None:
        """The step's probe results: run once per step, kept for the step's later ticks."""
        key = (state.rollout, state.step)
        kept = self._probed.get(route.name)
        if kept is not None and kept[0] == key:
            return kept[1]
        if self.fleet_url is None:
            return None
        try:
            result = self.probe(self.fleet_url, route.name, route.strategy.canary.version,
                                route.strategy.canary.analysis.probes.prompts,
                                **({"api_key": self.api_key} if self.api_key else {}))
        except NotDeployedYet:
            return None  # the new routing config is still being applied: next tick
        self._probed[route.name] = (key, result)
        log.info("route %s step %d probes: %d/%d passed%s", route.name, state.step + 1, result.passed,
                 result.total, f"; {result.failures}" if result.failures else "")
        return result


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
