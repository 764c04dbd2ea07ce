"""Judge a candidate before it serves: the candidate, the route's current first tier and the teacher on a
dataset's eval split, by the first tier's checks and by agreement with the teacher's answers.

The teacher's answers are the ones the dataset recorded (what the last tier returned); candidate and
first tier answer here, greedily, with transformers over the base's files (the CPU is enough for the
tiny bases of the demo and the tests; a large base wants the RayJob's GPU). A chat answer's
``<tool_call>`` bodies are read as calls, as the engine's hermes parser does.
"""

from __future__ import annotations

from dataclasses import dataclass

from serving.api.problems import UserError
from serving.api.routes import CascadeTier, RouteSpec, TierChecks
from serving.policy.cascade import Answer, rejection
from serving.policy.checks import hermes_message
from serving.policy.shadow import answer_key, normal_text

DEFAULT_THRESHOLD = 0.9
"""Share of the eval split on which the candidate must pass the first tier's checks for propose."""
DEFAULT_MAX_TASK_DROP = 0.0
"""How far under the first tier the candidate may pass one task's checks: none. A specialist trained for
one task that gets worse at another the route already served well is a regression, however well the
task it was trained for goes (the overall share hides it: the trained task's gain outweighs it)."""
UNCLUSTERED = "unclustered"


@dataclass(frozen=True)
class Contender:
    role: str
    """candidate, firstTier or teacher."""
    label: str
    source: str | None
    """The adapter version's S3 source, None for the base alone or for the recorded teacher."""


def first_tier(spec, route_name: str) -> tuple[RouteSpec, CascadeTier, str | None, str | None]:
    """(cascade route, its first tier, that tier's adapter, version) of ``route_name`` in ``spec``; a tier that
    names a split route is followed to its one stable target."""
    routes = {r.name: r for r in spec.routes}
    route = routes.get(route_name)
    if route is None:
        raise UserError(f"no route '{route_name}' in the fleet (routes: {', '.join(sorted(routes))})")
    if route.policy != "cascade":
        raise UserError(f"route '{route_name}' is a {route.policy} route; evaluate judges a cascade's first tier "
                        "against its teacher: name the cascade route")
    tier = route.tiers[0]
    target = tier
    if tier.route is not None:
        inner = routes[tier.route]
        if inner.policy != "split" or len(inner.targets) != 1:
            raise UserError(f"the first tier of '{route_name}' names route '{tier.route}', which is not a split route "
                            "with one target; the flywheel trains an adapter for one target")
        target = inner.targets[0]
    if target.endpoint if isinstance(target, CascadeTier) else False:
        raise UserError(f"the first tier of '{route_name}' is an external endpoint; the flywheel trains fleet adapters")
    return route, tier, target.adapter, target.version


def parse_answer(raw: str, call: str) -> dict:
    """An OpenAI-style response body of generated text (a chat's hermes tool calls parsed as the engine does)."""
    if call != "chat":
        return {"choices": [{"text": raw, "finish_reason": "stop"}]}
    message = hermes_message(raw)
    return {"choices": [{"message": message, "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}]}


def judge(example: dict, body: dict, checks: TierChecks) -> tuple[bool, bool]:
    """(passes the checks, agrees with the example's recorded answer) for one answer ``body``."""
    request = {k: example[v] for k, v in (("tools", "tools"), ("tool_choice", "toolChoice"),
                                          ("response_format", "responseFormat")) if v in example}
    if "prompt" in example:
        answer = Answer.of(body)
        agreed = normal_text(answer.text) == normal_text(example["completion"])
        return rejection(checks, answer, request) is None, agreed
    message = body["choices"][0]["message"]
    passed = rejection(checks, Answer.of(body), {**request, "messages": example["messages"][:-1]}) is None
    return passed, answer_key(message) == answer_key(example["messages"][-1])


def scores(results: list[tuple[bool, bool]]) -> dict:
    n = len(results)
    return {"examples": n, "passShare": round(sum(p for p, _ in results) / n, 4) if n else 0.0,
            "agreement": round(sum(a for _, a in results) / n, 4) if n else 0.0}


def task_labels(clusters_report: dict) -> dict[str, str]:
    """recordId -> its task's name ("cluster 0: weather, city") from a clusters.json; noise is unclustered."""
    labels = {}
    for c in clusters_report.get("clusters", []):
        terms = ", ".join(c.get("topTerms", [])[:3])
        name = f"cluster {c.get('cluster')}" + (f": {terms}" if terms else "")
        labels.update({rid: name for rid in c.get("recordIds", [])})
    return labels


def task_scores(examples: list[dict], judged: dict[str, list[tuple[bool, bool]]],
                labels: dict[str, str]) -> list[dict]:
    """Per task (cluster) of the eval split, each contender's share passing the checks; ``judged`` maps a
    role to its results in the order of ``examples``; examples of no cluster are one "unclustered" task."""
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(labels.get(ex.get("recordId"), UNCLUSTERED), []).append(i)
    return [{"task": task, "examples": len(rows),
             **{role: round(sum(results[i][0] for i in rows) / len(rows), 4) for role, results in judged.items()}}
            for task, rows in sorted(groups.items(), key=lambda kv: (kv[0] == UNCLUSTERED, kv[0]))]


def regressions(tasks: list[dict], max_drop: float = DEFAULT_MAX_TASK_DROP) -> list[dict]:
    """The tasks on which the candidate passes the checks more than ``max_drop`` less often than the first tier."""
    return [t for t in tasks if t["candidate"] < t["firstTier"] - max_drop - 1e-9]


def regression_text(candidate: str, found: list[dict]) -> str:
    return "; ".join(f"on {t['task']} {candidate} passes {t['candidate']:.0%} of {t['examples']} eval example(s), "
                     f"the first tier {t['firstTier']:.0%}" for t in found)


class Generator:
    """Greedy answers of the base, alone or with one adapter at a time, on the CPU."""

    def __init__(self, base_dir):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self.base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).eval()

    def prompt(self, example: dict) -> str:
        if "prompt" in example:
            return example["prompt"]
        return self.tokenizer.apply_chat_template(example["messages"][:-1], tools=example.get("tools"),
                                                  tokenize=False, add_generation_prompt=True)

    def answers(self, adapter_dir, examples: list[dict], max_new_tokens: int = 64, batch: int = 16) -> list[str]:
        model = self.base
        if adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(self.base, str(adapter_dir)).eval()
        out = []
        try:
            for i in range(0, len(examples), batch):
                prompts = [self.prompt(e) for e in examples[i:i + batch]]
                enc = self.tokenizer(prompts, return_tensors="pt", padding=True)
                with self.torch.no_grad():
                    rows = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                          pad_token_id=self.tokenizer.pad_token_id,
                                          eos_token_id=self.tokenizer.eos_token_id)
                for row in rows[:, enc["input_ids"].shape[1]:]:
                    out.append(self.tokenizer.decode(row, skip_special_tokens=False)
                               .split(self.tokenizer.eos_token)[0].replace(self.tokenizer.pad_token, ""))
        finally:
            if adapter_dir is not None:
                model.unload()  # the base again, for the next contender
        return out


def table(report: dict) -> str:
    rows = [("", "MODEL", "PASSES CHECKS", "AGREES WITH TEACHER")]
    for role in ("candidate", "firstTier", "teacher"):
        r = report[role]
        rows.append((role, r["label"], f"{r['passShare']:.2f}", f"{r['agreement']:.2f}"))
    lines = _aligned(rows)
    if report.get("tasks"):
        worse = {t["task"] for t in report.get("regressions", [])}
        lines += ["", *_aligned([("TASK", "EXAMPLES", "CANDIDATE PASSES", "FIRST TIER PASSES")] + [
            (t["task"], str(t["examples"]), f"{t['candidate']:.2f}",
             f"{t['firstTier']:.2f}" + ("  <- worse" if t["task"] in worse else "")) for t in report["tasks"]])]
    return "\n".join(lines)


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
