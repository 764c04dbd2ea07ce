"""Classify routes on the real stack: the classifier picks the specialist, the answer says which."""

from __future__ import annotations

import copy

import pytest

from tests.unit.task_prompts import EXAMPLES, held_out

TARGETS = {"loud": "shout", "reversed": "reverse", "structured": "json"}


@pytest.fixture(scope="module")
def classify_fleet(fleet):
    spec = copy.deepcopy(fleet.spec_data)
    spec["routes"] += [{
        "name": "assist", "policy": "classify", "default": {"route": "echo"},
        "classifier": {"minSimilarity": 0.2},
        "classes": [{"name": "greeting", "baseModel": "tiny-llama", "keywords": ["hello", "hi"]},
                    {"name": "caps", "adapter": "shout", "version": "v1", "keywords": ["caps"]}] + [
            {"name": name, "adapter": TARGETS[name], "version": "v1", "examples": examples}
            for name, examples in EXAMPLES.items()],
    }, {
        # A cascade whose first tier is the classify route: the specialist answers if it shouts.
        "name": "c-assist", "policy": "cascade",
        "tiers": [{"route": "assist", "checks": {"regex": "^[^a-z]+$"}}, {"baseModel": "tiny-llama"}],
    }]
    fleet.deploy(spec)
    yield
    fleet.deploy(fleet.spec_data)


def test_held_out_prompts_are_answered_by_their_specialist(classify_fleet, client):
    prompts = held_out(per_phrasing=1)
    served = []
    for prompt, task in prompts:
        r = client.post("/v1/chat/completions", json={
            "model": "assist", "messages": [{"role": "user", "content": prompt}], "max_tokens": 4})
        assert r.status_code == 200, r.text
        assert r.headers["x-slmfleet-route"] == "assist"
        served.append((task, r.headers["x-slmfleet-class"], r.headers.get("x-slmfleet-adapter")))
    correct = sum(task == cls and adapter == TARGETS[task] for task, cls, adapter in served)
    assert correct / len(served) >= 0.9, served


def test_rules_and_the_default(classify_fleet, client):
    r = client.post("/v1/completions", json={"model": "assist", "prompt": "hello there", "max_tokens": 4})
    assert (r.headers["x-slmfleet-class"], r.headers["x-slmfleet-classified-by"]) == ("greeting", "keyword")
    assert r.headers["x-slmfleet-base-model"] == "tiny-llama" and "x-slmfleet-adapter" not in r.headers
    r = client.post("/v1/completions", json={"model": "assist", "prompt": "How do I bake sourdough bread?",
                                              "max_tokens": 4})
    assert r.status_code == 200 and r.headers["x-slmfleet-class"] == "default"
    assert r.headers["x-slmfleet-classified-by"].startswith("default ")
    assert r.headers["x-slmfleet-via-route"] == "echo" and r.headers["x-slmfleet-route"] == "assist"
    card = client.get("/v1/models/assist").json()
    assert card["metadata"] == {"policy": "classify",
                                "classes": ["greeting", "caps", "loud", "reversed", "structured"]}


def test_a_cascade_tier_can_be_a_classify_route(classify_fleet, client):
    # The keyword picks the shout adapter, which shouts the words of its toy task in the prompt format it
    # was trained on (the keyword on a line before it: a word it never saw it would copy as it is).
    r = client.post("/v1/completions", json={"model": "c-assist", "prompt": "caps\nin: red fox\nout:",
                                              "max_tokens": 6, "temperature": 0})
    assert r.status_code == 200, r.text
    assert (r.headers["x-slmfleet-tier"], r.headers["x-slmfleet-tier-name"]) == ("1", "route assist"), \
        r.headers.get("x-slmfleet-escalations")
    r = client.post("/v1/completions", json={"model": "c-assist", "prompt": "in: hi red fox\nout:",
                                              "max_tokens": 6, "temperature": 0})  # the base model answers: lower case
    assert r.headers["x-slmfleet-tier"] == "2" and "does not match" in r.headers["x-slmfleet-escalations"]
