import random
from collections import Counter

import pytest

from serving.policy.placement import Placement, ReplicaLoad, place


def r(name, queue, *resident, capacity=8):
    return ReplicaLoad(name, frozenset(resident), queue, capacity)


# (case, replicas, model id, avoid, expected replica, expected placement); spill margin 2 throughout.
CASES = [
    ("holder within the margin takes it", [r("a", 2, "x"), r("b", 1)], "x", (), "a", Placement.RESIDENT),
    ("holder exactly at the margin still takes it", [r("a", 3, "x"), r("b", 1)], "x", (), "a", Placement.RESIDENT),
    ("holder past the margin spills to the least loaded", [r("a", 4, "x"), r("b", 1)], "x", (), "b",
     Placement.SPILL),
    ("the least busy of two holders", [r("a", 5, "x"), r("b", 2, "x"), r("c", 0)], "x", (), "b",
     Placement.RESIDENT),
    ("no holder: least loaded", [r("a", 2, "y"), r("b", 1, "y", "z")], "x", (), "b", Placement.COLD),
    ("no holder, equal load: fewest resident", [r("a", 1, "y", "z"), r("b", 1, "y")], "x", (), "b",
     Placement.COLD),
    ("spill, equal load: fewest resident", [r("a", 6, "x"), r("b", 0, "y", "z"), r("c", 0, "y")], "x", (), "c",
     Placement.SPILL),
    ("base model: least loaded whatever it holds", [r("a", 2), r("b", 0, "x", "y")], None, (), "b", Placement.BASE),
    ("empty model id is the base", [r("a", 0), r("b", 0)], "", (), "a", Placement.BASE),
    ("unknown queue counts as idle", [r("a", 3), r("b", None)], None, (), "b", Placement.BASE),
    ("a retry avoids the replica that failed it", [r("a", 0, "x"), r("b", 5)], "x", ("a",), "b", Placement.COLD),
    ("avoiding every replica falls back to all", [r("a", 0, "x")], "x", ("a",), "a", Placement.RESIDENT),
    ("a full holder is passed over", [r("a", 8, "x"), r("b", 7)], "x", (), "b", Placement.COLD),
    ("all full: still a choice (the replica refuses, Ray backs off)", [r("a", 8, "x"), r("b", 8)], "x", (), "a",
     Placement.RESIDENT),
]


@pytest.mark.parametrize("case,replicas,model_id,avoid,replica,placement", CASES, ids=[c[0] for c in CASES])
def test_placement_table(case, replicas, model_id, avoid, replica, placement):
    choice = place(replicas, model_id, spill_margin=2, avoid=avoid)
    assert (choice.replica, choice.placement) == (replica, placement)


def test_no_replicas_no_choice():
    assert place([], "x", spill_margin=2) is None


def test_ties_follow_the_given_order_so_a_shuffled_input_spreads_load():
    replicas = [r(name, 0, "x") for name in "abcd"]
    assert place(replicas, "x", spill_margin=2).replica == "a"
    rng = random.Random(3)
    counts = Counter(place(rng.sample(replicas, len(replicas)), "x", spill_margin=2).replica for _ in range(400))
    assert set(counts) == set("abcd") and min(counts.values()) > 60


def test_a_hot_adapter_spreads_over_replicas_as_load_grows():
    """Simulate placing a burst of requests for one adapter on three replicas (queues grow as they are placed,
    nothing completes): affinity keeps it on its holder until the margin, then it becomes resident elsewhere,
    and from then on its load is shared by the holders."""
    queues = {"a": 0, "b": 0, "c": 0}
    resident = {"a": {"x"}, "b": set(), "c": set()}
    placements = []
    for _ in range(30):
        loads = [ReplicaLoad(n, frozenset(resident[n]), queues[n], 64) for n in queues]
        choice = place(loads, "x", spill_margin=4)
        placements.append(choice.placement)
        queues[choice.replica] += 1
        resident[choice.replica].add("x")
    assert placements[:5] == [Placement.RESIDENT] * 5
    assert placements[5] == Placement.SPILL  # a at 5, b at 0: past the margin of 4
    assert all(resident[n] == {"x"} for n in queues)
    assert max(queues.values()) - min(queues.values()) <= 5
    # Two loads (b and c) for 30 requests, where random placement over three replicas loads on every replica.
    assert Counter(placements)[Placement.SPILL] == 2


def test_margin_zero_is_least_loaded_with_residency_as_tiebreak():
    assert place([r("a", 1, "x"), r("b", 0)], "x", spill_margin=0).replica == "b"
    assert place([r("a", 0, "x"), r("b", 0)], "x", spill_margin=0).replica == "a"
