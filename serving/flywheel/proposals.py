"""Propose a trained candidate: its version and a canary of it, added to a fleet document. Pure: a
document (a ModelFleet manifest or a bare spec, as parsed YAML) in, a new one out."""

from __future__ import annotations

import copy

from serving.api.problems import UserError
from serving.api.routes import TierChecks

PROBES = 4
"""Eval examples made into the canary's probes."""


def probe_of(example: dict, checks: TierChecks, max_tokens: int) -> dict | None:
    """A canary probe (spec form) from an eval example, checked as the first tier is; None if none applies."""
    if "prompt" in example:
        probe = {"prompt": example["prompt"], "maxTokens": max_tokens}
    else:
        probe = {"messages": example["messages"][:-1], "maxTokens": max_tokens}
        if example.get("tools"):
            probe["tools"] = example["tools"]
        choice = example.get("toolChoice")
        if isinstance(choice, dict):
            choice = (choice.get("function") or {}).get("name")
        if choice:
            probe["toolChoice"] = choice
        if example.get("responseFormat"):
            probe["responseFormat"] = example["responseFormat"]
    # As in the cascade, a tool request's answer is judged by toolCall, the text checks judge text answers.
    calls = bool(checks.tool_call and probe.get("tools"))
    if checks.regex and not calls:
        probe["regex"] = checks.regex
    if checks.json_schema and not calls:
        probe["jsonSchema"] = checks.json_schema
    if calls:
        probe["toolCall"] = True
    if checks.response_format and probe.get("responseFormat"):
        probe["responseFormatCheck"] = True
    if not any(k in probe for k in ("regex", "jsonSchema", "toolCall", "responseFormatCheck")):
        return None
    return probe


def pick_probes(examples: list[dict], checks: TierChecks, max_tokens: int, n: int = PROBES) -> list[dict]:
    """Up to ``n`` probes from ``examples`` (the eval examples the candidate passed: a probe guards what the
    evaluation saw it do), taken in turn from each kind (tool requests, chats, completions) so each is probed."""
    kinds: dict[str, list[dict]] = {}
    for ex in examples:
        probe = probe_of(ex, checks, max_tokens)
        if probe is not None:
            kinds.setdefault("tools" if probe.get("tools") else "prompt" if "prompt" in probe else "chat",
                             []).append(probe)
    picked: list[dict] = []
    while len(picked) < n and any(kinds.values()):
        for kind in sorted(kinds):
            if kinds[kind] and len(picked) < n:
                picked.append(kinds[kind].pop(0))
    return picked


def _named(items: list[dict], name: str, what: str) -> dict:
    for item in items:
        if item.get("name") == name:
            return item
    raise UserError(f"the fleet has no {what} '{name}'")


def propose(doc: dict, *, canary_route: str, adapter: str, version: str, source: str, sha256: str | None,
            probes: list[dict], interval: str | None = None, steps: list[int] | None = None,
            shadow: dict | None = None) -> dict:
    """``doc`` with ``adapter@version`` declared and a canary of it on ``canary_route`` (a split route whose
    one stable target is that adapter), starting with the ``shadow`` phase (spec form) if one is given."""
    new = copy.deepcopy(doc)
    spec = new["spec"] if "spec" in new else new
    entry = _named(spec.get("adapters") or [], adapter, "adapter")
    versions = entry.setdefault("versions", [])
    if any(v.get("version") == version for v in versions):
        raise UserError(f"adapter '{adapter}' already declares version '{version}'; train and propose another "
                        "version (versions are immutable)")
    versions.append({"version": version, "source": source, **({"sha256": sha256} if sha256 else {})})
    route = _named(spec.get("routes") or [], canary_route, "route")
    if (route.get("strategy") or {}).get("canary"):
        current = route["strategy"]["canary"]
        raise UserError(f"route '{canary_route}' already rolls out {current.get('adapter') or adapter}@"
                        f"{current.get('version')}; let it finish (or abort it) before proposing another")
    canary: dict = {"version": version}
    stable = (route.get("targets") or [{}])[0]
    if stable.get("adapter") != adapter:
        canary["adapter"] = adapter
    if steps:
        canary["steps"] = steps
    if interval:
        canary["interval"] = interval
    analysis: dict = {}
    if probes:
        analysis["probes"] = {"prompts": probes}
    if analysis:
        canary["analysis"] = analysis
    if shadow is not None:
        canary["shadow"] = shadow
    route["strategy"] = {"canary": canary}
    return new
