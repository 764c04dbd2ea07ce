"""Datasets from captured records: which answers are taken, dedup (exact and near), the seeded split."""

from __future__ import annotations

import pytest

from serving.api.problems import UserError
from serving.flywheel.datasets import build, dedup, example_of, manifest, select, split


def rec(text, answer="OK", *, last=True, status=200, finish="stop", calls=None, traffic="live", rid=None, **request):
    return {"id": rid or text, "status": status, "traffic": traffic, "redacted": True,
            "answeredBy": {"lastTier": last}, "escalated": last,
            "request": {"messages": [{"role": "user", "content": text}], **request},
            "answer": {"text": answer, "toolCalls": calls or [], "finishReason": finish}}


@pytest.mark.parametrize("record,answers,taken,why", [
    (rec("a"), "last-tier", True, None),
    (rec("a", last=False), "last-tier", False, "not answered by the last tier"),
    (rec("a", last=False), "accepted", True, None),
    (rec("a", status=500), "accepted", False, "failed requests"),
    (rec("a", finish="length"), "accepted", False, "answers cut at max_tokens"),
    (rec("a", traffic="shadow"), "accepted", False, "shadow traffic"),
    (rec("a", answer=" "), "accepted", False, "no answer to learn from"),
    (rec("a", answer=None, calls=[{"name": "f", "arguments": '{"x": 1}'}]), "accepted", True, None),
])
def test_which_answers_are_taken(record, answers, taken, why):
    chosen = select([record], answers)
    assert (len(chosen.examples) == 1) is taken
    assert dict(chosen.skipped) == ({why: 1} if why else {})


def test_examples_are_chat_rows_ending_with_the_answer():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    ex = example_of(rec("call f", answer=None, calls=[{"name": "f", "arguments": '{"x": 1}'}], tools=tools))
    assert ex["messages"][0] == {"role": "user", "content": "call f"}
    assert ex["messages"][-1]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"x": 1}'}
    assert ex["tools"] == tools and ex["recordId"] == "call f"
    completion = {"id": "p", "answer": {"text": " B"}, "request": {"prompt": "A"}}
    assert example_of(completion) == {"prompt": "A", "completion": " B", "recordId": "p"}


def test_dedup_removes_exact_and_near_duplicates_and_keeps_the_first():
    rows = [example_of(r) for r in (
        rec("red fox jumps", rid="1"), rec("Red  fox jumps ", rid="2"),  # exact, case and space aside
        rec("the quick red fox jumps over the lazy dog", rid="3"),
        rec("the quick red fox jumps over the lazy dog!", rid="4"),  # near
        rec("fox jumps red", rid="5"),  # reordered: another request
        rec("blue whale sings", rid="6"))]
    kept, exact, near = dedup(rows)
    assert [r["recordId"] for r in kept] == ["1", "3", "5", "6"] and (exact, near) == (1, 1)
    assert dedup(rows, near=1.01)[2] == 0  # near dedup off


def test_tools_offered_are_part_of_the_request():
    a = example_of(rec("go", tools=[{"type": "function", "function": {"name": "a"}}]))
    b = example_of(rec("go", tools=[{"type": "function", "function": {"name": "b"}}]))
    assert len(dedup([a, b])[0]) == 2


def test_split_is_seeded_and_disjoint():
    rows = [{"recordId": str(i)} for i in range(50)]
    train, evals = split(rows, eval_share=0.2, seed=3)
    assert (len(train), len(evals)) == (40, 10)
    assert {r["recordId"] for r in train}.isdisjoint(r["recordId"] for r in evals)
    assert split(rows, eval_share=0.2, seed=3) == (train, evals)
    assert split(rows, eval_share=0.2, seed=4) != (train, evals)


@pytest.mark.parametrize("n,share,message", [
    (9, 0.2, "9 example(s) after deduplication, too few"),
    (10, 1.0, "--eval-share 1.0 must be between 0 and 1"),
])
def test_too_small_to_split_says_what_to_do(n, share, message):
    with pytest.raises(UserError) as err:
        split([{"recordId": str(i)} for i in range(n)], eval_share=share, seed=0)
    assert message in str(err.value)


def test_build_counts_and_manifest():
    records = [rec(f"words {i} {'x' * i}") for i in range(20)]
    records += [rec("words 1 x", rid="again"), rec("no", last=False)]
    train, evals, counts = build(records, answers="last-tier", eval_share=0.25, seed=0)
    assert counts == {"records": 22, "selected": 21, "skipped": {"not answered by the last tier": 1},
                      "exactDuplicates": 1, "nearDuplicates": counts["nearDuplicates"], "train": len(train),
                      "eval": len(evals)}
    assert len(train) + len(evals) == 20 - counts["nearDuplicates"]
    m = manifest(source="s3://b/c", route="r", cluster=None, answers="last-tier", eval_share=0.25, seed=0,
                 near=0.95, counts=counts, records=records, train=train, evals=evals)
    assert m["redaction"]["redactedRecords"] == 22 and len(m["sourceRecords"]) == len(train) + len(evals)
