"""The pure parts of evaluate and propose, and the demo world's teacher."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from serving.api.documents import fleet_from_document
from serving.api.fleet import FleetSpec, parse_fleet
from serving.api.problems import UserError
from serving.api.routes import TierChecks
from serving.flywheel.evaluation import (
    first_tier,
    judge,
    parse_answer,
    regression_text,
    regressions,
    scores,
    task_labels,
    task_scores,
)
from serving.flywheel.proposals import probe_of, propose
from serving.flywheel.training import TrainSettings
from serving.local.flywheel_loop import fleet_document
from serving.local.teacher import teacher_message
from serving.policy.shadow import answer_key

ROOT = Path(__file__).parents[2]

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
CHECKS = TierChecks(tool_call=True, regex=r"^ ?[A-Z]+( [A-Z]+)*$")


def chat(content, answer, **extra):
    return {"messages": [{"role": "user", "content": content}, answer], **extra}


CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "paris"}'}}]}


@pytest.mark.parametrize("raw,example,expected", [
    (" RED FOX", chat("red fox", {"role": "assistant", "content": " RED FOX"}), (True, True)),
    (" RED FIX", chat("red fox", {"role": "assistant", "content": " RED FOX"}), (True, False)),
    (" red fox", chat("red fox", {"role": "assistant", "content": " RED FOX"}), (False, False)),
    ('<tool_call>{"name": "get_weather", "arguments": {"city": "paris"}}</tool_call>',
     chat('"get" {"city": "paris"}', CALL, tools=TOOLS), (True, True)),
    ('<tool_call>{"name": "get_weather", "arguments": {"city": "rome"}}</tool_call>',
     chat('"get" {"city": "paris"}', CALL, tools=TOOLS), (True, False)),
    ('<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>',
     chat('"get" {"city": "paris"}', CALL, tools=TOOLS), (False, False)),  # city is required
    (" PARIS", chat('"get" {"city": "paris"}', CALL, tools=TOOLS), (False, False)),  # words where a call is due
])
def test_judge_by_the_checks_and_by_agreement(raw, example, expected):
    assert judge(example, parse_answer(raw, "chat"), CHECKS) == expected


def test_agreement_ignores_argument_order_and_spacing():
    a = {"tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1, "b": 2}'}}]}
    b = {"tool_calls": [{"function": {"name": "f", "arguments": '{"b":2,"a":1}'}}]}
    assert answer_key(a) == answer_key(b) != answer_key({"content": "f"})
    assert answer_key({"content": " RED  FOX "}) == answer_key({"content": "RED FOX"})
    assert scores([(True, True), (True, False), (False, False), (True, True)]) == {
        "examples": 4, "passShare": 0.75, "agreement": 0.5}


def test_first_tier_follows_a_tier_route_to_its_adapter():
    spec = fleet_from_document(fleet_document("http://127.0.0.1:1/v1"), source="loop")
    route, tier, adapter, version = first_tier(spec, "assistant")
    assert (route.name, tier.route, adapter, version) == ("assistant", "assistant-small", "assistant", "v1")
    with pytest.raises(UserError, match="is a split route; evaluate judges a cascade"):
        first_tier(spec, "assistant-small")
    with pytest.raises(UserError, match="no route 'nope'"):
        first_tier(spec, "nope")


def test_the_loop_fleet_can_extend_a_served_fleet_without_replacing_its_bases():
    around = yaml.safe_load((ROOT / "manifests/examples/quickstart.yaml").read_text())["spec"]
    doc = fleet_document("http://127.0.0.1:1/v1", around=around)
    spec = fleet_from_document(doc, source="loop")
    assert [b.name for b in spec.base_models] == ["tiny-llama"]  # the served base, once, as it was
    assert spec.base_models[0] == parse_fleet(around).base_models[0]
    assert {"shout", "assistant-small", "assistant", "assistant-eval"} <= {r.name for r in spec.routes}
    assert spec.capture is not None and "capture" not in around  # the loop's capture, the input untouched
    assert first_tier(spec, "assistant")[2:] == ("assistant", "v1")


def test_propose_adds_the_version_and_a_canary_with_probes():
    doc = fleet_document("http://127.0.0.1:1/v1")
    probes = [probe_of(chat('"get" {"city": "paris"}', CALL, tools=TOOLS), CHECKS, 32),
              probe_of(chat("red fox", {"role": "assistant", "content": " RED FOX"}), CHECKS, 32)]
    assert probes[0]["toolCall"] is True and probes[0]["tools"] == TOOLS and probes[0]["messages"][-1]["role"] == "user"
    assert "regex" not in probes[0]  # a call has no text for it
    assert probes[1]["regex"] == CHECKS.regex and "toolCall" not in probes[1]
    new = propose(doc, canary_route="assistant-small", adapter="assistant", version="v2",
                  source="s3://slmfleet-demo/adapters/assistant/v2", sha256="a" * 64, probes=probes,
                  interval="10s", steps=[50, 100], shadow={"duration": "30s", "share": 100})
    spec = fleet_from_document(new, source="proposal")
    small = next(r for r in spec.routes if r.name == "assistant-small")
    canary = small.strategy.canary
    assert (canary.version, canary.steps, canary.interval) == ("v2", [50, 100], "10s")
    assert (canary.shadow.duration, canary.shadow.share, canary.shadow.min_agreement) == ("30s", 100, 0.8)
    assert len(canary.analysis.probes.prompts) == 2
    assert [v.version for v in spec.adapters[0].versions] == ["v1", "v2"]
    assert "strategy" not in doc["spec"]["routes"][0]  # the input is not changed
    with pytest.raises(UserError, match="already declares version 'v2'"):
        propose(new, canary_route="assistant-small", adapter="assistant", version="v2", source="s3://bucket/x",
                sha256=None, probes=[])
    again = propose(new, canary_route="assistant", adapter="assistant", version="v3", source="s3://bucket/x",
                    sha256=None, probes=[])
    with pytest.raises(Exception, match="canary rollouts apply to split routes"):
        FleetSpec.model_validate(again["spec"])


def test_a_probe_needs_a_check_that_applies():
    assert probe_of(chat("hi", {"role": "assistant", "content": "x"}), TierChecks(min_mean_logprob=-1), 8) is None


@pytest.mark.parametrize("body,expected", [
    ({"messages": [{"role": "user", "content": "red  fox"}]}, {"role": "assistant", "content": " RED FOX"}),
    ({"messages": [{"role": "user", "content": '"get" {"city": "paris"}'}], "tools": TOOLS},
     {"role": "assistant", "content": None, "tool_calls": [{"id": "call_teacher", "type": "function", "function": {
         "name": "get_weather", "arguments": json.dumps({"city": "paris"})}}]}),
    ({"messages": [{"role": "user", "content": '"put" {"city": "paris"}'}], "tools": TOOLS},
     {"role": "assistant", "content": ' "PUT" {"CITY": "PARIS"}'}),  # no such tool: words
])
def test_the_teacher_answers_both_tasks(body, expected):
    assert teacher_message(body) == expected


@pytest.mark.parametrize("change,message", [
    ({"rank": 0}, "--rank must be at least 1"),
    ({"learning_rate": 0}, "--lr must be above 0"),
    ({"epochs": 0}, "--epochs must be above 0"),
    ({"steps": 0}, "--steps must be at least 1"),
])
def test_train_settings_problems(change, message):
    assert message in TrainSettings(**change).problems()


@pytest.mark.parametrize("step,factor", [(0, 0.1), (9, 1.0), (10, 1.0), (55, 0.5), (99, 0.0003)])
def test_the_learning_rate_warms_up_then_decays_to_zero(step, factor):
    from serving.flywheel.training import lr_factor

    assert lr_factor(step, 100) == pytest.approx(factor, abs=1e-3)


@pytest.mark.parametrize("start_from,message", [
    ("assistant", "--start-from 'assistant': name it ADAPTER@VERSION, e.g. assistant@v1, or its s3:// source"),
    ("nope@v1", "has no adapter 'nope'"),
    ("assistant@v9", "adapter 'assistant' declares no version 'v9' (versions: v1)"),
])
def test_start_from_names_a_declared_version(tmp_path, start_from, message):
    from serving.cli.flywheel_commands import _start_source

    fleet = tmp_path / "fleet.json"
    fleet.write_text(json.dumps(fleet_document("http://127.0.0.1:9/v1")))
    assert _start_source("assistant@v1", str(fleet), "tiny-llama") == ("s3://slmfleet-demo/adapters/assistant/v1", None)
    assert _start_source("s3://b/a/v1/", None, "tiny-llama") == ("s3://b/a/v1", None)
    with pytest.raises(UserError, match=re.escape(message)):
        _start_source(start_from, str(fleet), "tiny-llama")
    with pytest.raises(UserError, match="give --fleet FILE"):
        _start_source("assistant@v1", None, "tiny-llama")
    with pytest.raises(UserError, match="is trained on base 'tiny-llama', not --base other"):
        _start_source("assistant@v1", str(fleet), "other")


def test_the_lineage_names_the_version_it_started_from_and_not_its_kept_settings():
    from serving.flywheel.training import lineage

    given = dict(dataset="s3://b/d", dataset_manifest={"route": "r"}, base_name="tiny-llama",
                 base_source="s3://b/models/tiny-llama", settings=TrainSettings(steps=4), run={"steps": 4})
    fresh, warm = lineage(**given), lineage(**given, start_from="s3://b/adapters/a/v1")
    assert fresh["startFrom"] is None and fresh["hyperparameters"]["rank"] == 8
    assert warm["startFrom"] == "s3://b/adapters/a/v1"
    assert "rank" not in warm["hyperparameters"] and warm["hyperparameters"]["steps"] == 4


def test_a_base_the_store_cannot_read_is_a_clear_error(tmp_path, monkeypatch):
    from serving.adapters.store import AdapterStoreError
    from serving.flywheel.training import cached_base

    class Store:
        def fingerprint(self, source):
            return "f"

        def download(self, source, dest):
            raise AdapterStoreError(f"no adapter files at {source}")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(UserError, match=r"cannot read the base model at s3://b/models/x \(no adapter files"):
        cached_base("s3://b/models/x", Store())

    class Empty(Store):
        def download(self, source, dest):
            (dest / "weights.bin").write_bytes(b"")

    with pytest.raises(UserError, match="holds no config.json"):
        cached_base("s3://b/models/y", Empty())


def test_probes_are_taken_from_each_kind_in_turn():
    from serving.flywheel.proposals import pick_probes

    tool = chat('"get" {"city": "paris"}', CALL, tools=TOOLS)
    words = chat("red fox", {"role": "assistant", "content": " RED FOX"})
    probes = pick_probes([words] * 5 + [tool] * 5, CHECKS, 16, n=4)
    assert [bool(p.get("tools")) for p in probes] == [False, True, False, True]
    assert pick_probes([words], TierChecks(min_mean_logprob=-1), 16) == []


@pytest.mark.parametrize("argv,expected", [
    ([], {}),  # the spec's defaults
    (["--shadow", "30s", "--shadow-share", "100", "--shadow-min-agreement", "0.6"],
     {"duration": "30s", "share": 100, "minAgreement": 0.6}),
    (["--no-shadow"], None),
])
def test_propose_starts_with_a_shadow_unless_told_not_to(argv, expected):
    from serving.cli.flywheel_commands import _shadow_of
    from serving.cli.main import build_parser

    args = build_parser().parse_args(["flywheel", "propose", "f.yaml", "--candidate", "a@v2", "--evaluation", "e",
                                      *argv])
    assert _shadow_of(args) == expected


def test_no_shadow_with_shadow_options_is_refused():
    from serving.cli.flywheel_commands import _shadow_of
    from serving.cli.main import build_parser

    args = build_parser().parse_args(["flywheel", "propose", "f.yaml", "--candidate", "a@v2", "--evaluation", "e",
                                      "--no-shadow", "--shadow", "1m"])
    with pytest.raises(UserError, match="drop the --shadow"):
        _shadow_of(args)


CLUSTERS = {"clusters": [{"cluster": 0, "topTerms": ["weather", "city", "get", "more"], "recordIds": ["t1", "t2"]},
                         {"cluster": 1, "topTerms": [], "recordIds": ["w1", "w2", "w3"]}],
            "noise": {"recordIds": ["n1"]}}


def test_task_labels_name_each_cluster_by_its_top_terms():
    assert task_labels(CLUSTERS) == {"t1": "cluster 0: weather, city, get", "t2": "cluster 0: weather, city, get",
                                     "w1": "cluster 1", "w2": "cluster 1", "w3": "cluster 1"}


def test_task_scores_group_the_eval_split_by_cluster():
    examples = [{"recordId": r} for r in ("t1", "w1", "t2", "w2", "n1", "w3")]
    judged = {"candidate": [(True, True), (True, False), (True, False), (False, False), (True, True), (True, True)],
              "firstTier": [(False, False), (True, True), (False, False), (True, True), (False, False), (True, True)]}
    assert task_scores(examples, judged, task_labels(CLUSTERS)) == [
        {"task": "cluster 0: weather, city, get", "examples": 2, "candidate": 1.0, "firstTier": 0.0},
        {"task": "cluster 1", "examples": 3, "candidate": 0.6667, "firstTier": 1.0},
        {"task": "unclustered", "examples": 1, "candidate": 1.0, "firstTier": 0.0}]


@pytest.mark.parametrize("candidate,first,max_drop,worse", [
    (1.0, 1.0, 0.0, False),
    (0.9, 1.0, 0.0, True),  # one word request in ten lost is a regression, whatever the trained task gained
    (0.9, 1.0, 0.1, False),
    (0.85, 1.0, 0.1, True),
    (1.0, 0.0, 0.0, False),  # the task it was trained for
    (0.0, 0.0, 0.0, False),
])
def test_a_task_regresses_when_the_candidate_passes_it_less_often(candidate, first, max_drop, worse):
    tasks = [{"task": "cluster 1", "examples": 10, "candidate": candidate, "firstTier": first}]
    assert bool(regressions(tasks, max_drop)) is worse


def test_propose_refuses_a_candidate_worse_at_another_task(tmp_path, capsys):
    from serving.cli.main import main

    worse = [{"task": "cluster 1: red, fox", "examples": 12, "candidate": 0.8333, "firstTier": 1.0}]
    report = {"candidateAdapter": "assistant", "candidateVersion": "v2", "candidate": {"passShare": 0.95},
              "regressions": worse, "route": "assistant", "dataset": str(tmp_path)}
    (tmp_path / "evaluation.json").write_text(json.dumps(report))
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(json.dumps(fleet_document("http://127.0.0.1:9/v1")))
    before = fleet.read_text()
    assert main(["flywheel", "propose", str(fleet), "--candidate", "assistant@v2", "--evaluation",
                 str(tmp_path / "evaluation.json"), "--threshold", "0.7"]) != 0
    err = capsys.readouterr().err
    assert "does worse than the first tier" in err and regression_text("assistant@v2", worse) in err, err
    assert fleet.read_text() == before  # nothing proposed
