"""The canary spec, the routing table with a canary, probes' checks and the rollout driver's tick.

The driver is fed an in-memory metric source and probe runner: what they return is the input of
these tests; the real sources are exercised in tests/unit/test_rollout_metrics.py and the stack.
"""

from __future__ import annotations

import pytest

from serving.api.fleet import parse_fleet
from serving.api.problems import FleetSpecError
from serving.api.routes import Probe
from serving.api.status import RolloutStatus
from serving.policy.rollout import Command, Observation
from serving.policy.routing import RoutingTable, UnknownVersion, sticky_bucket
from serving.render.serve_config import serve_config
from serving.rollouts.driver import Rollouts, parse_command, shadowing
from serving.rollouts.metric_sources import MetricSource
from serving.rollouts.probes import NotDeployedYet, ProbeResult, probe_problem, probe_request
from tests.unit.fleets import fleet

CANARY = {"version": "v2", "steps": [10, 50, 100], "interval": "30s",
          "analysis": {"minRequests": 10, "maxErrorRate": 0.05}}


def canary_fleet(canary=None, **changes):
    return parse_fleet(fleet(**{"routes.0.targets": [{"adapter": "shout", "version": "v1"}],
                                "routes.0.strategy": {"canary": canary or CANARY}, **changes}))


# --- spec -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("canary,changes,words", [
    ({**CANARY, "version": "v9"}, {}, "routes[0].strategy.canary.version: adapter 'shout' has no version 'v9'"),
    ({**CANARY, "version": "v1"}, {}, "already the route's stable target"),
    ({**CANARY, "adapter": "nope"}, {}, "canary names unknown adapter 'nope'"),
    ({**CANARY, "steps": [50, 10, 100]}, {}, "must strictly increase"),
    ({**CANARY, "steps": [10, 50]}, {}, "must end at 100"),
    ({**CANARY, "steps": [0, 100]}, {}, "each must be a weight in 1..100"),
    ({**CANARY, "interval": "30"}, {}, "routes[0].strategy.canary.interval"),
    (CANARY, {"routes.0.targets": [{"adapter": "shout", "version": "v1", "weight": 50},
                                   {"adapter": "json", "version": "v1", "weight": 50}]},
     "needs exactly one stable target"),
    ({**CANARY, "analysis": {"probes": {"prompts": [{"prompt": "x"}]}}}, {}, "a probe needs a check"),
    ({**CANARY, "analysis": {"probes": {"prompts": [{"regex": "x"}]}}}, {}, "give exactly one"),
    ({**CANARY, "analysis": {"probes": {"prompts": [{"prompt": "x", "regex": "x", "tools": [{"type": "function"}]}]}}},
     {}, "send messages instead"),
    ({**CANARY, "analysis": {"probes": {"prompts": [{"messages": [{"role": "user", "content": "x"}],
                                                    "toolCall": True}]}}}, {}, "give tools"),
    ({**CANARY, "analysis": {"probes": {"prompts": [{"messages": [{"role": "user", "content": "x"}],
                                                    "responseFormatCheck": True}]}}}, {}, "give responseFormat"),
    ({**CANARY, "analysis": {"probes": {"prompts": [{"prompt": "x", "regex": "(["}]}}}, {}, "does not compile"),
    ({**CANARY, "analysis": {"probes": {"prompts": [{"prompt": "x", "jsonSchema": {"type": "nope"}}]}}}, {},
     "not a valid JSON Schema"),
    ({**CANARY, "analysis": {"maxErrorRate": 2}}, {}, "maxErrorRate"),
])
def test_bad_canaries_are_refused_naming_the_field(canary, changes, words):
    data = fleet(**{"routes.0.targets": [{"adapter": "shout", "version": "v1"}],
                    "routes.0.strategy": {"canary": canary}, **changes})
    with pytest.raises(FleetSpecError) as err:
        parse_fleet(data)
    assert words in str(err.value)


def test_a_base_model_route_names_its_canary_adapter():
    data = fleet(**{"routes.2.strategy": {"canary": CANARY}})
    with pytest.raises(FleetSpecError, match="serves a base model; name the canary's adapter"):
        parse_fleet(data)
    spec = parse_fleet(fleet(**{"routes.2.strategy": {"canary": {**CANARY, "adapter": "shout"}}}))
    assert [t.version for t in RoutingTable(spec, {"echo": 10}).routes["echo"]] == [None, "v2"]


# --- routing ----------------------------------------------------------------------------------------

def test_the_canary_takes_its_weight_from_the_stable_target():
    spec = canary_fleet()
    assert [(t.version, t.weight) for t in RoutingTable(spec).routes["shout"]] == [("v1", 100), ("v2", 0)]
    routes = RoutingTable(spec, {"shout": 25}).routes
    assert [(t.version, t.weight) for t in routes["shout"]] == [("v1", 75), ("v2", 25)]
    config = serve_config(spec, canary_weights={"shout": 25})
    assert config["applications"][0]["deployments"][0]["user_config"]["canaryWeights"] == {"shout": 25}


def test_sticky_users_move_to_the_canary_at_most_once_as_it_grows():
    spec = canary_fleet()
    users = [f"user-{i}" for i in range(300)]
    seen = {u: [] for u in users}
    for weight in (0, 10, 25, 50, 100):
        table = RoutingTable(spec, {"shout": weight})
        for u in users:
            seen[u].append(table.resolve("shout", sticky_key=u).version)
    for u, versions in seen.items():
        flips = sum(a != b for a, b in zip(versions, versions[1:]))
        assert flips <= 1 and versions[0] == "v1" and versions[-1] == "v2", (u, versions)
    at_10 = sum(sticky_bucket("shout", u) >= 90 for u in users)
    assert 10 < at_10 < 60  # about 10% of 300


def test_a_pinned_version_is_served_whatever_its_weight():
    table = RoutingTable(canary_fleet())
    assert table.resolve("shout", version="v2").version == "v2"
    with pytest.raises(UnknownVersion, match="its versions: v1, v2"):
        table.resolve("shout", version="v7")


# --- probes -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("check,answer,passes", [
    ({"regex": "^[A-Z ]+$"}, "RED FOX", True),
    ({"regex": "^[A-Z ]+$"}, "fox red", False),
    ({"exact": "RED FOX"}, "  RED FOX\n", True),
    ({"exact": "RED FOX"}, "RED FOX!", False),
    ({"jsonSchema": {"type": "object", "required": ["text"]}}, '{"text": " red fox"}', True),
    ({"jsonSchema": {"type": "object", "required": ["text"]}}, '{"words": 2}', False),
    ({"jsonSchema": {"type": "object"}}, "red fox", False),
])
def test_probe_checks(check, answer, passes):
    payload = {"choices": [{"text": answer, "finish_reason": "stop"}]}
    problem = probe_problem(Probe.model_validate({"prompt": "in: red fox\nout:", **check}), payload)
    assert (problem is None) == passes, problem


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CHAT = {"messages": [{"role": "user", "content": "weather city paris"}], "tools": [WEATHER]}


def _call(name: str, arguments: str) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}]}}]}


def _text(text: str) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


@pytest.mark.parametrize("probe,payload,problem", [
    ({**CHAT, "toolCall": True}, _call("get_weather", '{"city": "paris"}'), None),
    ({**CHAT, "toolCall": True}, _call("get_time", '{"city": "paris"}'), "did not offer"),
    ({**CHAT, "toolCall": True}, _call("get_weather", '{"town": "paris"}'), "'city' is a required property"),
    ({**CHAT, "toolCall": True, "toolChoice": "required"}, _text("sunny"), "requires a tool call"),
    ({**CHAT, "toolCall": True, "regex": "paris"}, _call("get_weather", '{"city": "rome"}'), "does not match"),
    ({"messages": CHAT["messages"], "responseFormatCheck": True, "responseFormat": {
        "type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object", "required": ["city"]}}}},
     _text('{"town": "paris"}'), "'city' is a required property"),
])
def test_chat_probe_checks(probe, payload, problem):
    found = probe_problem(Probe.model_validate(probe), payload)
    assert (found is None) if problem is None else (problem in (found or "")), found


def test_chat_probe_request():
    path, body = probe_request(Probe.model_validate({**CHAT, "toolCall": True, "toolChoice": "required"}), "tools")
    assert path == "/v1/chat/completions"
    assert body["tools"] == [WEATHER] and body["tool_choice"] == "required" and body["model"] == "tools"


# --- the driver -------------------------------------------------------------------------------------

class Numbers(MetricSource):
    """Per (version, since) observations as a test sets them."""

    def __init__(self):
        self.by_version: dict[str, Observation] = {}
        self.shadow = Observation()
        """What the shadow copies (traffic="shadow") show."""
        self.asked: list[tuple[str, float]] = []
        self.traffic: list[str] = []
        self.broken = False

    def observe(self, target, since):
        if self.broken:
            raise ConnectionError("prometheus down")
        self.asked.append((target.version, since))
        self.traffic.append(target.traffic)
        if target.traffic == "shadow":
            return self.shadow
        return self.by_version.get(target.version, Observation())


GOOD = Observation(requests=40, errors=0, p95_ms=100)


def drive(rollouts, spec, ticks):
    """Run ticks (seconds later, canary observation, commands); the list of Tick results."""
    statuses, now, out = {}, 1_000.0, []
    for later, obs, commands in ticks:
        now += later
        if obs is not None:
            rollouts.source.by_version["v2"] = obs
        tick = rollouts.tick(spec, statuses, now, commands)
        statuses = tick.statuses
        out.append(tick)
    return out


def test_a_good_canary_is_promoted_and_its_status_tells_the_story():
    spec = canary_fleet()
    out = drive(Rollouts(Numbers()), spec, [(0, GOOD, None), (31, GOOD, None), (31, GOOD, None), (31, GOOD, None)])
    assert [t.weights["shout"] for t in out] == [10, 50, 100, 100]
    final = out[-1].statuses["shout"]
    assert (final.phase, final.steps_passed, final.canary, final.stable) == ("Promoted", 3, "shout@v2", "shout@v1")
    assert [(h.phase, h.weight) for h in final.history] == [
        ("Progressing", 10), ("Progressing", 50), ("Progressing", 100), ("Promoted", 100)]
    assert final.analysis.requests == 40
    assert [e[1] for t in out for e in t.events] == ["RolloutProgressing"] * 3 + ["RolloutPromoted"]
    # The status survives a round trip through the API (a restart resumes from it).
    again = RolloutStatus.model_validate(final.model_dump(mode="json", by_alias=True))
    assert again == final


def test_an_erroring_canary_rolls_back_with_the_numbers():
    out = drive(Rollouts(Numbers()), canary_fleet(), [(0, GOOD, None), (31, Observation(requests=40, errors=8), None)])
    s = out[-1].statuses["shout"]
    assert (s.phase, s.weight, out[-1].weights["shout"]) == ("RolledBack", 0, 0)
    assert "error rate 20.0% > 5.0%" in s.reason
    assert out[-1].events[0][0] == "Warning"


def test_a_canary_that_cannot_load_fails_on_the_first_tick_that_sees_it():
    bad = Observation(requests=3, errors=3, load_error="3 request(s) failed with adapter_unavailable")
    out = drive(Rollouts(Numbers()), canary_fleet(), [(0, None, None), (2, bad, None)])
    assert out[-1].statuses["shout"].phase == "Failed" and out[-1].weights["shout"] == 0
    assert "cannot load" in out[-1].statuses["shout"].reason


def test_probes_run_once_per_step_and_failing_ones_roll_back():
    calls = []

    def probe(url, route, version, prompts):
        calls.append(version)
        return ProbeResult(passed=1, total=2, failures=["probe 2: 'fox red' does not match /^[A-Z ]+$/"])

    canary = {**CANARY, "analysis": {"minRequests": 10, "probes": {"prompts": [
        {"prompt": "in: red fox\nout:", "regex": "^[A-Z ]+$"}] * 2}}}
    out = drive(Rollouts(Numbers(), fleet_url="http://fleet", probe=probe), canary_fleet(canary),
                [(0, GOOD, None), (5, GOOD, None), (5, GOOD, None), (21, GOOD, None)])
    assert calls == ["v2"]
    s = out[-1].statuses["shout"]
    assert s.phase == "RolledBack" and "probes passed 50% < 100%" in s.reason and "fox red" in s.reason
    assert (s.analysis.probes_passed, s.analysis.probes_total) == (1, 2)


def test_probe_results_are_kept_for_each_routes_current_step_only():
    canary = {**CANARY, "analysis": {"minRequests": 10, "probes": {"prompts": [{"prompt": "x", "exact": "X"}]}}}
    rollouts = Rollouts(Numbers(), fleet_url="http://fleet", probe=lambda *a: ProbeResult(passed=1, total=1))
    spec = canary_fleet(canary)
    drive(rollouts, spec, [(0, GOOD, None), (31, GOOD, None), (31, GOOD, None), (31, GOOD, None)])
    assert list(rollouts._probed) == ["shout"]  # one entry per route, not one per step ever probed
    rollouts.tick(parse_fleet(fleet()), {}, 2_000.0)  # the route's strategy is removed
    assert rollouts._probed == {}


def test_probes_wait_while_the_canary_is_not_routed_yet():
    def probe(url, route, version, prompts):
        raise NotDeployedYet("route 'shout' has no version 'v2' to pin")

    canary = {**CANARY, "analysis": {"minRequests": 10, "probes": {"prompts": [{"prompt": "x", "exact": "X"}]}}}
    out = drive(Rollouts(Numbers(), fleet_url="http://fleet", probe=probe), canary_fleet(canary),
                [(0, GOOD, None), (31, GOOD, None)])
    s = out[-1].statuses["shout"]
    assert (s.phase, s.weight) == ("Progressing", 10) and "waiting for the quality probes" in s.reason


def test_commands_and_a_missing_metric_source():
    numbers = Numbers()
    rollouts, spec = Rollouts(numbers), canary_fleet()
    out = drive(rollouts, spec, [(0, GOOD, None), (5, GOOD, {None: Command.PAUSE}), (60, GOOD, None),
                                 (1, GOOD, {"shout": Command.RESUME})])
    assert [t.statuses["shout"].phase for t in out] == ["Progressing", "Paused", "Paused", "Progressing"]
    assert out[-1].weights["shout"] == 10  # a pause holds the weight; resume restarts the step's interval
    numbers.broken = True
    s = rollouts.tick(spec, out[-1].statuses, 2_000, None).statuses["shout"]
    assert (s.phase, s.weight) == ("Progressing", 10) and "cannot read metrics: ConnectionError" in s.reason
    s = rollouts.tick(spec, {"shout": s}, 2_001, {"shout": Command.ABORT}).statuses["shout"]
    assert (s.phase, s.weight, s.reason) == ("RolledBack", 0, "aborted")


def test_a_changed_canary_starts_a_new_rollout():
    spec = canary_fleet()
    done = drive(Rollouts(Numbers()), spec, [(0, GOOD, {None: Command.ABORT})])[-1]
    assert done.statuses["shout"].phase == "RolledBack"
    spec3 = canary_fleet({**CANARY, "steps": [20, 100]})
    s = Rollouts(Numbers()).tick(spec3, done.statuses, 2_000).statuses["shout"]
    assert (s.phase, s.weight, s.history[-1].reason) == ("Progressing", 20, "started at 20%")
    assert len(s.history) == 1


@pytest.mark.parametrize("text,expected", [
    ("abort shout", ("shout", Command.ABORT)),
    ("pause", (None, Command.PAUSE)),
])
def test_parse_command(text, expected):
    assert parse_command(text, canary_fleet()) == expected


@pytest.mark.parametrize("text,words", [
    ("explode shout", "command one of pause, resume, promote, abort"),
    ("abort json", "route 'json' has no canary strategy; routes with one: shout"),
    ("", "expected '<command> [route]'"),
])
def test_parse_command_refuses_with_what_to_do(text, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace("[", r"\[")):
        parse_command(text, canary_fleet())


# --- the local driver (its control endpoint and `slm-fleet rollout`: tests/stack/test_rollout_control.py) ---

def local_rollouts():
    """A LocalRollouts on a good canary, with its deploys recorded instead of sent to Ray; (driver, deploys, clock)."""
    from serving.local.rollouts import LocalRollouts

    deployed = []
    numbers = Numbers()
    numbers.by_version["v2"] = GOOD
    clock = [1_000.0]
    driver = LocalRollouts(canary_fleet(), Rollouts(numbers), deploy=lambda spec, w, _: deployed.append(dict(w)),
                           tick_s=1, report=lambda line: None, clock=lambda: clock[0])
    return driver, deployed, clock


@pytest.fixture
def local():
    return local_rollouts()


def test_local_rollouts_redeploy_when_a_weight_changes(local):
    driver, deployed, clock = local
    driver.apply(driver.spec)
    driver.tick()
    clock[0] += 5
    driver.tick()  # same step: no redeploy
    clock[0] += 31
    driver.tick()
    assert deployed == [{"shout": 0}, {"shout": 10}, {"shout": 50}]


# --- the shadow phase ---------------------------------------------------------------------------------

SHADOW = {"duration": "60s", "share": 50, "minRequests": 10, "minAgreement": 0.8}
CASCADE = {"name": "smart", "policy": "cascade", "tiers": [
    {"route": "shout", "checks": {"regex": "^[A-Z ]+$"}}, {"baseModel": "tiny-llama"}]}


@pytest.mark.parametrize("shadow,words", [
    ({"share": 0}, "routes[0].strategy.canary.shadow.share"),
    ({"duration": "soon"}, "routes[0].strategy.canary.shadow.duration"),
    ({"minAgreement": 1.5}, "routes[0].strategy.canary.shadow.minAgreement"),
    ({"mirror": True}, "mirror"),
])
def test_bad_shadows_are_refused_naming_the_field(shadow, words):
    with pytest.raises(FleetSpecError) as err:
        canary_fleet({**CANARY, "shadow": shadow})
    assert words in str(err.value)


def test_the_routing_table_shadows_only_the_routes_the_driver_names():
    data = fleet(**{"routes.0.targets": [{"adapter": "shout", "version": "v1"}],
                    "routes.0.strategy": {"canary": {**CANARY, "shadow": SHADOW}}})
    spec = parse_fleet({**data, "routes": [*data["routes"], CASCADE]})
    assert RoutingTable(spec).shadows == {}
    plan = RoutingTable(spec, {"shout": 0}, ["shout"]).shadows["shout"]
    assert (plan.target.adapter, plan.target.version, plan.share) == ("shout", "v2", 50)
    assert plan.checks.regex == "^[A-Z ]+$"  # the checks of the cascade tier naming the route
    # The canary takes no live traffic while it shadows.
    assert [(t.version, t.weight) for t in RoutingTable(spec, {"shout": 0}, ["shout"]).routes["shout"]] == [
        ("v1", 100), ("v2", 0)]
    alone = canary_fleet({**CANARY, "shadow": SHADOW})
    assert RoutingTable(alone, {}, ["shout"]).shadows["shout"].checks is None  # agreement alone judges
    config = serve_config(spec, canary_weights={"shout": 0}, shadowing=["shout", "gone"])
    assert config["applications"][0]["deployments"][0]["user_config"]["shadowing"] == ["shout"]
    assert "shadowing" not in serve_config(spec)["applications"][0]["deployments"][0]["user_config"]


def test_a_shadow_phase_reads_the_copies_then_the_steps_read_live_traffic():
    spec = canary_fleet({**CANARY, "shadow": SHADOW})
    numbers = Numbers()
    numbers.by_version["v2"] = GOOD
    numbers.shadow = Observation(requests=12, errors=0, agreed=11)
    rollouts = Rollouts(numbers)
    out = drive(rollouts, spec, [(0, None, None), (30, None, None), (31, None, None), (31, GOOD, None)])
    assert [t.shadowing for t in out] == [["shout"], ["shout"], [], []]
    assert [t.weights["shout"] for t in out] == [0, 0, 10, 50]
    shadowed = out[1].statuses["shout"]
    assert (shadowed.phase, shadowed.step, shadowed.analysis.requests, shadowed.analysis.agreed) == (
        "Shadowing", 0, 12, 11)
    assert numbers.traffic[:2] == ["shadow", "shadow"] and set(numbers.traffic[2:]) == {"live"}
    passed = out[2].statuses["shout"]
    assert passed.reason == "shadow passed (12 shadowed, agreement 92%, error rate 0.0%); now 10%"
    assert [(h.phase, h.step, h.weight) for h in passed.history] == [("Shadowing", 0, 0), ("Progressing", 1, 10)]
    assert shadowing(spec, out[0].statuses) == ["shout"] and shadowing(spec, out[2].statuses) == []
    # A restart resumes the shadow from the status.
    again = drive(Rollouts(numbers), spec, [(0, None, None)])
    assert again[0].statuses["shout"].phase == "Shadowing"


def test_local_rollouts_redeploy_when_the_shadow_starts_and_ends():
    from serving.local.rollouts import LocalRollouts

    spec = canary_fleet({**CANARY, "shadow": SHADOW})
    numbers = Numbers()
    numbers.shadow = Observation(requests=12, agreed=12)
    deployed, clock = [], [1_000.0]
    driver = LocalRollouts(spec, Rollouts(numbers), deploy=lambda spec, w, shadowing: deployed.append(
        (dict(w), list(shadowing))), tick_s=1, report=lambda line: None, clock=lambda: clock[0])
    driver.apply(spec)
    driver.tick()
    clock[0] += 61
    driver.tick()
    assert deployed == [({"shout": 0}, []), ({"shout": 0}, ["shout"]), ({"shout": 10}, [])]
