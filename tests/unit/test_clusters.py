"""Finding tasks in traffic: HDBSCAN over MiniLM embeddings of a generated multi-task prompt set with
paraphrased tasks, two that overlap (weather and unit conversion share words), and noise."""

from __future__ import annotations

import random

import numpy as np
import pytest

from serving.flywheel.clusters import NOISE, cluster_labels, describe, find_clusters, purity, request_text

CITIES = ["paris", "berlin", "tokyo", "lima", "oslo", "cairo", "madrid", "seoul", "dublin", "quito"]
TASKS = {
    "weather": ["what is the weather in {c} tomorrow", "will it rain in {c} this weekend",
                "forecast for {c} for the next {n} days", "is it going to be sunny in {c}",
                "how cold will it get in {c} tonight", "do I need an umbrella in {c} today"],
    # Overlaps weather (temperatures, cities) but is another task.
    "convert": ["convert {n} km to miles", "how many pounds is {n} kg", "{n} celsius in fahrenheit please",
                "what is {n} miles in kilometres", "turn {n} inches into centimetres",
                "change {n} litres to gallons"],
    "translate": ["translate 'good morning' into {l}", "how do you say thank you in {l}",
                  "say 'where is the station' in {l}", "what is 'cheese' in {l}",
                  "give me the {l} for 'see you tomorrow'", "{l} translation of 'I am hungry'"],
    "summarise": ["summarise this email from {p} about the budget", "give me a short summary of the meeting with {p}",
                  "tl;dr of the report {p} sent", "boil down {p}'s message to two lines",
                  "recap the thread with {p} in one paragraph", "brief summary of {p}'s proposal please"],
}
LANGS = ["french", "german", "spanish", "italian", "japanese", "portuguese"]
PEOPLE = ["anna", "omar", "li", "sofia", "james", "priya"]
NOISE_PROMPTS = ["my cat knocked over a plant", "what's your favourite colour", "tell me a joke about ducks",
                 "the printer on floor three is broken again", "is pluto a planet", "write a haiku about tea",
                 "who won the chess match yesterday", "recommend a podcast", "how old is the universe",
                 "why do onions make you cry", "hello?", "asdf qwerty"]


def traffic(n_per_task: int = 40, seed: int = 0) -> tuple[list[dict], list[str]]:
    rng = random.Random(seed)
    records, truth = [], []
    for task, templates in TASKS.items():
        for i in range(n_per_task):
            text = rng.choice(templates).format(c=rng.choice(CITIES), n=rng.randint(2, 90), l=rng.choice(LANGS),
                                                p=rng.choice(PEOPLE))
            records.append({"id": f"{task}-{i}", "route": "assistant", "escalated": task == "convert",
                            "answeredBy": {"lastTier": task == "convert"},
                            "request": {"messages": [{"role": "system", "content": "be brief"},
                                                     {"role": "user", "content": text}]}})
            truth.append(task)
    for i, text in enumerate(NOISE_PROMPTS):
        records.append({"id": f"noise-{i}", "route": "assistant", "escalated": False, "answeredBy": {},
                        "request": {"prompt": text}})
        truth.append("noise")
    order = list(range(len(records)))
    rng.shuffle(order)
    return [records[i] for i in order], [truth[i] for i in order]


@pytest.fixture(scope="module")
def found():
    records, truth = traffic()
    report, png = find_clusters(records, embedding="minilm")
    labels = {rid: c["cluster"] for c in report["clusters"] for rid in c["recordIds"]}
    return records, truth, report, png, [labels.get(r["id"], NOISE) for r in records]


def test_clusters_are_the_tasks(found):
    records, truth, report, _, labels = found
    tasks = [t for t in truth if t != "noise"]
    clustered = [lab for lab, t in zip(labels, truth) if t != "noise"]
    print({c["cluster"]: (c["size"], c["topTerms"]) for c in report["clusters"]})
    assert purity(labels, truth) >= 0.95
    assert len(report["clusters"]) == len(TASKS)
    assert sum(lab == NOISE for lab in clustered) / len(tasks) <= 0.15  # most task requests are clustered


def test_noise_is_kept_apart(found):
    _, truth, report, _, labels = found
    noise_labels = [lab for lab, t in zip(labels, truth) if t == "noise"]
    assert sum(lab == NOISE for lab in noise_labels) / len(noise_labels) >= 0.75
    assert report["noise"]["size"] >= sum(lab == NOISE for lab in noise_labels)


def test_each_cluster_says_how_much_escalated_and_what_it_is(found):
    _, _, report, png, _ = found
    convert = next(c for c in report["clusters"] if c["escalatedShare"] > 0.5)
    assert convert["escalatedShare"] >= 0.9
    assert {"km", "kg", "miles", "convert", "celsius", "litres", "pounds", "inches"} & set(convert["topTerms"])
    assert all(c["escalatedShare"] <= 0.1 for c in report["clusters"] if c is not convert)
    assert abs(sum(c["share"] for c in report["clusters"]) + report["noise"]["share"] - 1) < 1e-3
    assert all(len(c["examples"]) == 5 and c["size"] == len(c["recordIds"]) for c in report["clusters"])
    assert png.startswith(b"\x89PNG")


@pytest.mark.parametrize("record,text", [
    ({"request": {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"},
                               {"role": "assistant", "content": "yo"}, {"role": "user", "content": "more"}]}},
     "hi more"),
    ({"request": {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}]}},
     "a"),
    ({"request": {"prompt": "p"}}, "p"),
    ({"request": {"prompt": ["x", "y"]}}, "x y"),
    ({"request": {}}, ""),
])
def test_request_text(record, text):
    assert request_text(record) == text


def test_too_few_requests_are_all_noise():
    assert cluster_labels(np.eye(3), min_cluster_size=5).tolist() == [NOISE] * 3
    assert describe([], [], np.array([]), embedding="minilm")["clusters"] == []


@pytest.mark.parametrize("labels,truth,expected", [
    ([0, 0, 1, 1], ["a", "a", "b", "b"], 1.0),
    ([0, 0, 0, 1], ["a", "a", "b", "b"], 0.75),
    ([NOISE, 0, 0], ["x", "a", "a"], 1.0),
    ([NOISE], ["a"], 0.0),
])
def test_purity(labels, truth, expected):
    assert purity(labels, truth) == expected
