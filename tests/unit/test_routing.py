import random
from collections import Counter

import pytest

from serving.api.fleet import parse_fleet
from serving.policy.routing import RoutingTable, Target, UnknownRoute, multiplexed_id, pick, sticky_bucket
from tests.unit.fleets import fleet


def table(weights=(90, 10)):
    return RoutingTable(parse_fleet(fleet(**{"routes.0.targets.0.weight": weights[0],
                                             "routes.0.targets.1.weight": weights[1]})))


def test_targets_resolve_to_base_deployment_and_multiplexed_id():
    t = table()
    shout = t.routes["shout"][0]
    assert shout == Target("tiny-llama", "shout", "v1", 90)
    assert shout.model_id == multiplexed_id("tiny-llama", "shout", "v1") == "tiny-llama:shout@v1"
    echo = t.resolve("echo")
    assert echo.adapter is None and echo.model_id == "tiny-llama"
    assert t.resolve("json").base_model == "tiny-qwen"


@pytest.mark.parametrize("weights", [(90, 10), (50, 50), (5, 95), (100, 0), (0, 100)])
def test_weighted_split_over_many_decisions(weights):
    t, rng, n = table(weights), random.Random(7), 2000
    counts = Counter(t.resolve("shout", rng=rng).version for _ in range(n))
    for version, weight in zip(("v1", "v2"), weights):
        share = counts[version] / n
        # 4 standard deviations of a binomial share: fails on a wrong split, not on noise.
        sigma = (weight / 100 * (1 - weight / 100) / n) ** 0.5
        assert abs(share - weight / 100) <= 4 * sigma + 1e-9, (version, share, weight)


def test_sticky_key_keeps_one_target_and_spreads_keys_by_weight():
    t = table((50, 50))
    for user in ("alice", "bob", "carol"):
        assert len({t.resolve("shout", sticky_key=user).version for _ in range(50)}) == 1
    counts = Counter(t.resolve("shout", sticky_key=f"user-{i}").version for i in range(2000))
    assert 0.45 < counts["v1"] / 2000 < 0.55


def test_raising_a_canary_weight_never_moves_a_sticky_user_back():
    users = [f"u{i}" for i in range(500)]
    before = {u: table((95, 5)).resolve("shout", sticky_key=u).version for u in users}
    after = {u: table((75, 25)).resolve("shout", sticky_key=u).version for u in users}
    assert all(after[u] == "v2" for u in users if before[u] == "v2")
    assert sum(v == "v2" for v in after.values()) > sum(v == "v2" for v in before.values())


def test_sticky_bucket_is_stable_and_in_range():
    assert sticky_bucket("r", "k") == sticky_bucket("r", "k")
    assert all(0 <= sticky_bucket("r", str(i)) < 100 for i in range(1000))


def test_pick_lays_weights_out_in_order():
    a, b, c = Target("x", weight=20), Target("y", weight=30), Target("z", weight=50)
    assert [pick((a, b, c), i).base_model for i in (0, 19, 20, 49, 50, 99)] == ["x", "x", "y", "y", "z", "z"]


@pytest.mark.parametrize("route,words", [("nope", "model 'nope' is not a route"), (None, "names no model")])
def test_unknown_route_lists_the_available_ones(route, words):
    with pytest.raises(UnknownRoute) as info:
        table().resolve(route)
    assert words in str(info.value) and "echo, json, shout" in str(info.value)
