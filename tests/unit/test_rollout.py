"""The canary rollout state machine: table-driven walks and properties that hold on any input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.api.status import RolloutPhase as Phase
from serving.policy.rollout import (
    SHADOW_STEP,
    TERMINAL,
    Analysis,
    Command,
    Observation,
    Policy,
    Shadow,
    analyse,
    analyse_shadow,
    decide,
    shadowing,
)

POLICY = Policy(steps=(5, 25, 50, 100), interval_s=60,
                analysis=Analysis(min_requests=20, max_error_rate=0.05, max_p95_ms=500, max_p95_ratio=1.5,
                                  min_probe_pass_rate=0.9))
GOOD = Observation(requests=50, errors=0, p95_ms=200, stable_p95_ms=180, probe_pass_rate=1.0)
CANARY = "shout@v2"


def run(steps, policy=POLICY):
    """Feed (seconds later, observation, command) ticks; the decisions made."""
    state, now, out = None, 0.0, []
    for later, obs, command in steps:
        now += later
        d = decide(policy, CANARY, state, obs, now, command)
        state = d.state
        out.append(d)
    return out


def test_a_good_canary_is_promoted_step_by_step():
    out = run([(0, GOOD, None)] + [(60, GOOD, None)] * 5)
    assert [d.canary_weight for d in out] == [5, 25, 50, 100, 100, 100]
    # The 100% step is checked too.
    assert [d.state.phase for d in out][-3:] == [Phase.PROGRESSING, Phase.PROMOTED, Phase.PROMOTED]
    assert out[-1].state.steps_passed == 4 and out[-2].changed and not out[-1].changed
    assert "step 1 passed" in out[1].state.reason and "now 25%" in out[1].state.reason


@pytest.mark.parametrize("obs,words", [
    (Observation(requests=50, errors=5, p95_ms=200, stable_p95_ms=180, probe_pass_rate=1.0), "error rate 10.0% > 5.0%"),
    (Observation(requests=50, errors=0, p95_ms=800, stable_p95_ms=700, probe_pass_rate=1.0), "p95 800 ms > 500 ms"),
    (Observation(requests=50, errors=0, p95_ms=400, stable_p95_ms=100, probe_pass_rate=1.0),
     "p95 4.00x stable > 1.50x"),
    (Observation(requests=50, errors=0, p95_ms=200, stable_p95_ms=180, probe_pass_rate=0.5), "probes passed 50% < 90%"),
    # A broken limit fails the step even while another number has not arrived yet.
    (Observation(requests=50, errors=50), "error rate 100.0% > 5.0%"),
    (Observation(requests=50, errors=0, p95_ms=900), "p95 900 ms > 500 ms"),
], ids=["errors", "p95", "p95-ratio", "probes", "errors-without-latency", "p95-without-probes"])
def test_a_bad_step_rolls_back_with_the_numbers(obs, words):
    out = run([(0, GOOD, None), (60, GOOD, None), (60, obs, None)])
    last = out[-1]
    assert last.state.phase == Phase.ROLLED_BACK and last.canary_weight == 0 and last.stable_weight == 100
    assert last.state.reason.startswith("step 2 failed") and words in last.state.reason


@pytest.mark.parametrize("obs,words", [
    (Observation(requests=3), "waiting for traffic: 3/20 requests"),
    (Observation(requests=50, p95_ms=100, stable_p95_ms=100), "waiting for the quality probes"),
    # The counters arrived before the latency histogram: a pass waits for the p95.
    (Observation(requests=50, probe_pass_rate=1.0),
     "waiting for the canary's latency (50 requests counted, no p95 yet)"),
    (Observation(requests=50), "waiting for the canary's latency (50 requests counted, no p95 yet); "
                               "waiting for the quality probes"),
], ids=["traffic", "probes", "latency", "latency-and-probes"])
def test_a_step_without_enough_evidence_waits(obs, words):
    out = run([(0, GOOD, None), (60, obs, None), (600, obs, None)])
    assert [d.canary_weight for d in out] == [5, 5, 5] and out[-1].state.phase == Phase.PROGRESSING
    assert out[-1].state.reason == words


def test_without_stable_traffic_the_ratio_is_not_judged():
    # At 100% stable serves nothing, so there is no stable p95 to compare with.
    alone = Observation(requests=50, errors=0, p95_ms=200, probe_pass_rate=1.0)
    out = run([(0, GOOD, None), (60, GOOD, None), (60, GOOD, None), (60, GOOD, None), (60, alone, None)])
    assert out[-1].state.phase == Phase.PROMOTED


def test_nothing_moves_before_the_interval_ends():
    out = run([(0, GOOD, None), (59, GOOD, None)])
    assert out[-1].canary_weight == 5 and not out[-1].changed


def test_a_canary_that_cannot_load_fails_at_once():
    broken = Observation(load_error="adapter 'shout' version 'v2' cannot be loaded: no adapter files")
    out = run([(0, GOOD, None), (1, broken, None)])
    assert out[-1].state.phase == Phase.FAILED and out[-1].canary_weight == 0
    assert "no adapter files" in out[-1].state.reason
    assert run([(0, broken, None)])[0].canary_weight == 0  # not even the first step


def test_pause_holds_resume_restarts_the_interval():
    out = run([(0, GOOD, None), (10, GOOD, Command.PAUSE), (600, GOOD, None), (0, GOOD, Command.RESUME),
               (59, GOOD, None), (1, GOOD, None)])
    assert [d.state.phase for d in out] == [Phase.PROGRESSING, Phase.PAUSED, Phase.PAUSED, Phase.PROGRESSING,
                                            Phase.PROGRESSING, Phase.PROGRESSING]
    assert [d.canary_weight for d in out] == [5, 5, 5, 5, 5, 25]


@pytest.mark.parametrize("command,phase,canary", [(Command.PROMOTE, Phase.PROMOTED, 100),
                                                  (Command.ABORT, Phase.ROLLED_BACK, 0)])
def test_manual_promote_and_abort(command, phase, canary):
    out = run([(0, GOOD, None), (5, GOOD, command), (60, GOOD, None), (0, GOOD, Command.RESUME)])
    assert all(d.state.phase == phase and d.canary_weight == canary for d in out[1:])


def test_a_changed_rollout_starts_again():
    done = run([(0, GOOD, Command.ABORT)])[-1].state
    same = decide(POLICY, CANARY, done, GOOD, 100)
    assert same.state.phase == Phase.ROLLED_BACK
    other = decide(POLICY, "shout@v3", done, GOOD, 100)
    assert other.state.phase == Phase.PROGRESSING and other.canary_weight == 5 and other.changed


@pytest.mark.parametrize("steps,words", [((), "each must be"), ((5, 150), "each must be"),
                                         ((50, 25, 100), "must increase"), ((5, 50), "must end at 100")])
def test_bad_policies_are_refused(steps, words):
    with pytest.raises(ValueError, match=words):
        Policy(steps=steps, interval_s=60)


SHADOWED = Policy(steps=(50, 100), interval_s=60, analysis=POLICY.analysis,
                  shadow=Shadow(duration_s=120, share=30, min_requests=10, min_agreement=0.8, max_error_rate=0.1))
AGREEING = Observation(requests=20, errors=1, agreed=17)


def test_a_shadow_phase_comes_first_with_no_live_traffic_then_the_steps():
    out = run([(0, AGREEING, None), (119, AGREEING, None), (1, AGREEING, None), (60, GOOD, None), (60, GOOD, None)],
              SHADOWED)
    assert [d.state.phase for d in out] == [Phase.SHADOWING, Phase.SHADOWING, Phase.PROGRESSING, Phase.PROGRESSING,
                                            Phase.PROMOTED]
    assert [d.canary_weight for d in out] == [0, 0, 50, 100, 100]
    assert out[0].state.step == SHADOW_STEP and shadowing(out[0].state) and not shadowing(out[2].state)
    assert out[0].state.reason == "shadowing 30% of live requests"
    # 17 of the 19 answers given agreed: 89%; 1 error of 20: 5%.
    assert out[2].state.reason == "shadow passed (20 shadowed, agreement 89%, error rate 5.0%); now 50%"
    assert out[2].changed and out[-1].state.steps_passed == 2


@pytest.mark.parametrize("obs,passed,words", [
    (Observation(requests=9, agreed=9), None, "waiting for shadowed requests: 9/10"),
    (Observation(requests=20, errors=0, agreed=15), False, "agreement 75% < 80%"),
    (Observation(requests=20, errors=4, agreed=16), False, "error rate 20.0% > 10.0%"),
    # Every copy failed: nothing answered agrees, and the errors are over the limit.
    (Observation(requests=20, errors=20), False, "error rate 100.0% > 10.0%; agreement 0% < 80%"),
    (Observation(requests=10, errors=0, agreed=8), True, "10 shadowed, agreement 80%, error rate 0.0%"),
], ids=["too-few", "disagrees", "errors", "all-errors", "at-the-limits"])
def test_the_shadow_phase_is_judged_on_its_fields(obs, passed, words):
    assert analyse_shadow(SHADOWED.shadow, obs) == (passed, words)


def test_a_shadow_that_disagrees_rolls_back_before_any_live_request():
    out = run([(0, AGREEING, None), (120, Observation(requests=20, agreed=4), None), (60, GOOD, None)], SHADOWED)
    assert [d.state.phase for d in out] == [Phase.SHADOWING, Phase.ROLLED_BACK, Phase.ROLLED_BACK]
    assert all(d.canary_weight == 0 for d in out)
    assert out[1].state.reason == "shadow failed: agreement 20% < 80%"


def test_a_shadow_waits_past_its_duration_for_requests():
    out = run([(0, AGREEING, None), (600, Observation(requests=3, agreed=3), None), (10, AGREEING, None)], SHADOWED)
    assert [d.state.phase for d in out] == [Phase.SHADOWING, Phase.SHADOWING, Phase.PROGRESSING]
    assert out[1].state.reason == "waiting for shadowed requests: 3/10"


def test_a_paused_shadow_stops_copying_and_resumes_into_the_shadow():
    out = run([(0, AGREEING, None), (10, AGREEING, Command.PAUSE), (600, AGREEING, None),
               (0, AGREEING, Command.RESUME), (119, AGREEING, None), (1, AGREEING, None)], SHADOWED)
    assert [d.state.phase for d in out] == [Phase.SHADOWING, Phase.PAUSED, Phase.PAUSED, Phase.SHADOWING,
                                            Phase.SHADOWING, Phase.PROGRESSING]
    assert [d.canary_weight for d in out] == [0, 0, 0, 0, 0, 50]
    assert not shadowing(out[1].state)  # paused: no copies either


@pytest.mark.parametrize("command,phase,canary", [(Command.PROMOTE, Phase.PROMOTED, 100),
                                                  (Command.ABORT, Phase.ROLLED_BACK, 0)])
def test_a_shadow_can_be_promoted_or_aborted_by_hand(command, phase, canary):
    out = run([(0, AGREEING, None), (5, AGREEING, command)], SHADOWED)
    assert out[-1].state.phase == phase and out[-1].canary_weight == canary


def test_a_canary_that_cannot_load_fails_in_its_shadow():
    out = run([(0, AGREEING, None), (1, Observation(requests=5, errors=5, load_error="no adapter files"), None)],
              SHADOWED)
    assert out[-1].state.phase == Phase.FAILED and out[-1].canary_weight == 0


def test_adding_a_shadow_changes_the_rollout():
    assert SHADOWED.fingerprint(CANARY) != Policy(steps=(50, 100), interval_s=60,
                                                   analysis=POLICY.analysis).fingerprint(CANARY)


observations = st.builds(
    Observation,
    requests=st.integers(0, 200), errors=st.integers(0, 200),
    p95_ms=st.one_of(st.none(), st.floats(1, 2000)), stable_p95_ms=st.one_of(st.none(), st.floats(1, 2000)),
    probe_pass_rate=st.one_of(st.none(), st.floats(0, 1)),
    load_error=st.one_of(st.none(), st.just("no adapter files")), agreed=st.integers(0, 200),
).filter(lambda o: o.errors <= o.requests and o.agreed <= o.requests - o.errors)
ticks = st.lists(st.tuples(st.floats(0, 200), observations, st.one_of(st.none(), st.sampled_from(list(Command)))),
                 min_size=1, max_size=30)
policies = st.builds(
    Policy,
    steps=st.lists(st.integers(1, 99), max_size=4, unique=True).map(lambda ws: tuple(sorted(ws)) + (100,)),
    interval_s=st.floats(1, 120),
    analysis=st.builds(Analysis, min_requests=st.integers(0, 50), max_error_rate=st.floats(0, 0.5),
                       min_probe_pass_rate=st.one_of(st.none(), st.floats(0, 1))),
    shadow=st.one_of(st.none(), st.builds(Shadow, duration_s=st.floats(1, 120), min_requests=st.integers(0, 50),
                                          min_agreement=st.floats(0, 1), max_error_rate=st.floats(0, 0.5))),
)


@settings(max_examples=300, deadline=None)
@given(policy=policies, steps=ticks)
def test_invariants(policy, steps):
    out = run(steps, policy)
    for i, d in enumerate(out):
        assert d.canary_weight + d.stable_weight == 100
        if d.state.phase in (Phase.ROLLED_BACK, Phase.FAILED):
            assert d.canary_weight == 0  # the stable version serves everything
        if d.state.step == SHADOW_STEP and d.state.phase != Phase.PROMOTED:  # (promoted by hand from the shadow)
            assert d.canary_weight == 0 and d.state.phase in (Phase.SHADOWING, Phase.PAUSED, *TERMINAL)
            assert policy.shadow is not None
        elif d.state.phase in (Phase.PROGRESSING, Phase.PAUSED):
            assert d.canary_weight == policy.steps[d.state.step]
        if policy.shadow is not None and d.canary_weight and Command.PROMOTE not in [c for _, _, c in steps[: i + 1]]:
            # No live traffic before the shadow phase passed.
            assert any(e.state.reason.startswith("shadow passed") for e in out[: i + 1])
        if i and out[i - 1].state.phase in TERMINAL:
            assert d.state == out[i - 1].state  # terminal until the rollout changes
        if d.state.phase == Phase.PROMOTED and Command.PROMOTE not in [c for _, _, c in steps[: i + 1]]:
            assert d.state.steps_passed == len(policy.steps)  # promoted only after every step passed
    weights = [d.canary_weight for d in out if d.state.phase == Phase.PROGRESSING]
    assert weights == sorted(weights)  # the canary's share only grows while progressing


@settings(max_examples=200, deadline=None)
@given(policy=policies, steps=ticks)
def test_a_canary_that_cannot_load_never_gets_past_its_first_step(policy, steps):
    broken = [(t, Observation(load_error="corrupt"), c) for t, _, c in steps]
    out = run(broken, policy)
    assert all(d.canary_weight == 0 and d.state.phase == Phase.FAILED for d in out)  # even when promoted by hand


def test_a_step_without_requests_waits_even_when_none_are_required():
    passed, why = analyse(Analysis(min_requests=0), Observation(requests=0))
    assert passed is None and why == "waiting for traffic: 0/1 requests"
