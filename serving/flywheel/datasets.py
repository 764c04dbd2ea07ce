"""A fine-tuning set from captured traffic: the answers that were accepted, deduplicated, split.

By default only the last tier's answers are taken (the teacher's: what the large model answered
when the small one could not); ``accepted`` takes every answer the route returned that passed its
tier's checks, which keeps what the first tier already does right in the set, so a new version
trained on it does not forget it. An example is in the chat format fine-tuning APIs take
(``messages`` ending with the assistant's answer, ``tools`` where offered); a completion is
``prompt`` / ``completion``.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from serving.api.problems import UserError
from serving.flywheel.clusters import request_text, went_to_last_tier

Answers = Literal["last-tier", "accepted"]
NEAR_DUPLICATE = 0.95
"""Cosine similarity of the requests' character n-grams at which two examples are one."""
MIN_EXAMPLES = 10


@dataclass
class Selection:
    examples: list[dict] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)


def answer_message(rec: dict) -> dict | None:
    """The record's answer as an assistant message, or None when there is none to learn from."""
    answer = rec.get("answer") or {}
    calls = [c for c in answer.get("toolCalls") or [] if isinstance(c, dict) and c.get("name")]
    if calls:
        return {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{i}", "type": "function",
             "function": {"name": c["name"], "arguments": c.get("arguments") or "{}"}} for i, c in enumerate(calls)]}
    text = answer.get("text")
    if isinstance(text, str) and text.strip():
        return {"role": "assistant", "content": text}
    return None


def example_of(rec: dict) -> dict | None:
    """One fine-tuning example from a record (chat or completion), or None if it has no usable answer."""
    answer, request = answer_message(rec), rec.get("request") or {}
    if answer is None:
        return None
    if request.get("messages"):
        ex = {"messages": [*request["messages"], answer]}
        for key, name in (("tools", "tools"), ("tool_choice", "toolChoice"), ("response_format", "responseFormat")):
            if request.get(key) is not None:
                ex[name] = request[key]
    elif isinstance(request.get("prompt"), str) and answer.get("content"):
        ex = {"prompt": request["prompt"], "completion": answer["content"]}
    else:
        return None
    return {**ex, "recordId": rec.get("id")}


def select(records: list[dict], answers: Answers = "last-tier") -> Selection:
    """The examples of ``records`` whose answers count as accepted; what is left out, counted by why."""
    out = Selection()
    for rec in records:
        answer = rec.get("answer") or {}
        if rec.get("status") != 200:
            out.skipped["failed requests"] += 1
        elif rec.get("traffic", "live") != "live":
            out.skipped["shadow traffic"] += 1
        elif answer.get("finishReason") == "length":
            out.skipped["answers cut at max_tokens"] += 1
        elif answers == "last-tier" and not went_to_last_tier(rec):
            out.skipped["not answered by the last tier"] += 1
        elif (ex := example_of(rec)) is None:
            out.skipped["no answer to learn from"] += 1
        else:
            out.examples.append(ex)
    return out


def example_input(ex: dict) -> str:
    """What dedup compares: the caller's words (and offered tool names) of an example."""
    if "prompt" in ex:
        return ex["prompt"]
    text = request_text({"request": {"messages": ex["messages"][:-1]}})
    tools = sorted((t.get("function") or {}).get("name", "") for t in ex.get("tools") or [])
    return text + (" | tools: " + ",".join(tools) if tools else "")


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def dedup(examples: list[dict], near: float = NEAR_DUPLICATE) -> tuple[list[dict], int, int]:
    """(kept, exact duplicates removed, near duplicates removed); the first of each group is kept.

    Exact: the same request, whitespace and case aside. Near: character 3-5-grams (across word
    boundaries, so a reordering is another request) with cosine similarity at or above ``near``.
    """
    seen, unique = set(), []
    for ex in examples:
        key = _normal(example_input(ex))
        if key not in seen:
            seen.add(key)
            unique.append(ex)
    exact = len(examples) - len(unique)
    if len(unique) < 2 or near > 1:
        return unique, exact, 0
    from sklearn.feature_extraction.text import TfidfVectorizer

    matrix = TfidfVectorizer(analyzer="char", ngram_range=(3, 5)).fit_transform(
        [_normal(example_input(ex)) for ex in unique])
    kept_rows: list[int] = []
    for i in range(len(unique)):
        if kept_rows:
            sims = (matrix[kept_rows] @ matrix[i].T).toarray().ravel()
            if sims.max() >= near:
                continue
        kept_rows.append(i)
    return [unique[i] for i in kept_rows], exact, len(unique) - len(kept_rows)


def split(examples: list[dict], *, eval_share: float, seed: int,
          min_examples: int = MIN_EXAMPLES) -> tuple[list[dict], list[dict]]:
    """(train, eval), a seeded shuffle; UserError when there are too few examples to split."""
    if not 0 < eval_share < 1:
        raise UserError(f"--eval-share {eval_share} must be between 0 and 1 (e.g. 0.2)")
    n_eval = max(1, round(len(examples) * eval_share))
    if len(examples) < max(min_examples, 2) or len(examples) - n_eval < 1:
        raise UserError(f"the dataset has {len(examples)} example(s) after deduplication, too few to split into "
                        f"train and eval (at least {max(min_examples, 2)}): capture more traffic (a higher "
                        "sampleRate, or longer), widen the selection (--answers accepted, another --cluster), or "
                        "lower --min-examples")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    eval_rows = sorted(order[:n_eval])
    train_rows = sorted(order[n_eval:])
    return [examples[i] for i in train_rows], [examples[i] for i in eval_rows]


def build(records: list[dict], *, answers: Answers, eval_share: float, seed: int, near: float = NEAR_DUPLICATE,
          min_examples: int = MIN_EXAMPLES) -> tuple[list[dict], list[dict], dict]:
    """(train, eval, counts) from records already narrowed to a route or cluster."""
    chosen = select(records, answers)
    kept, exact, near_dupes = dedup(chosen.examples, near)
    train, evals = split(kept, eval_share=eval_share, seed=seed, min_examples=min_examples)
    counts = {"records": len(records), "selected": len(chosen.examples), "skipped": dict(chosen.skipped),
              "exactDuplicates": exact, "nearDuplicates": near_dupes, "train": len(train), "eval": len(evals)}
    return train, evals, counts


def manifest(*, source: str, route: str | None, cluster: dict | None, answers: Answers, eval_share: float, seed: int,
             near: float, counts: dict, records: list[dict], train: list[dict], evals: list[dict]) -> dict:
    """What a dataset is made of, written next to it as manifest.json (the train step's lineage reads it)."""
    redacted = sum(bool(r.get("redacted")) for r in records)
    used = {ex["recordId"] for ex in train + evals}
    return {
        "kind": "slmfleet.dataset", "format": "chat", "source": source, "route": route,
        "cluster": cluster, "answers": answers, "split": {"evalShare": eval_share, "seed": seed},
        "nearDuplicate": near, "counts": counts,
        "redaction": {"redactedRecords": redacted, "records": len(records),
                      "note": "records are redacted by the router before they are written"},
        "sourceRecords": sorted(r.get("id") for r in records if r.get("id") in used),
    }
