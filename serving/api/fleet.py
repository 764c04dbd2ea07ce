"""The fleet spec: the one source of truth for what a fleet is.

A ``FleetSpec`` is the ``spec`` of a ``ModelFleet`` resource. The serving application, the
``slm-fleet`` CLI and the operator all read it through these models; the CRD schema is generated
from them. Field names are camelCase in YAML (Kubernetes convention) and snake_case in Python.
This module holds base models, adapters and the fleet; routes and their policies are in
``serving.api.routes``.

Validation happens in two places:
- field-level rules (types, ranges, URI shapes) in the pydantic fields;
- fleet-level rules (references, duplicates, weights) in :func:`fleet_problems`, a pure function
  that reports every problem at once with the path of the offending field.
Rules that need an adapter's files (its rank, the base it was trained on) live in
``serving.adapters.meta`` and run where the files are read.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from serving.api.capture import CaptureSpec
from serving.api.fields import (
    DURATION_PATTERN,
    MEMORY_PATTERN,
    NAME_PATTERN,
    SHA256_PATTERN,
    VERSION_PATTERN,
    SpecModel,
    duration_seconds,
    memory_bytes,
    parse_s3_uri,
    version_label,
)
from serving.api.problems import FleetProblems, FleetSpecError, Problem, problems_from_validation_error
from serving.api.routes import CascadeTier, RouteSpec, TargetRef, TierChecks
from serving.api.tenants import ALL_ROUTES, TenancySettings, TenantSpec

# vLLM's tool-call and reasoning parser names (vllm.tool_parsers.ToolParserManager,
# vllm.reasoning.ReasoningParserManager), so a spec is checked without vLLM installed. A unit test
# keeps them equal to the installed vLLM's.
TOOL_CALL_PARSERS = (
    "apertus", "cohere_command3", "cohere_command4", "deepseek_v3", "deepseek_v31", "deepseek_v32", "deepseek_v4",
    "deepseek_v41", "dots", "ernie45", "functiongemma", "gemma4", "gigachat3", "glm45", "glm47", "granite",
    "granite-20b-fc", "granite4", "hermes", "hf", "hunyuan_a13b", "hy_v3", "hy_v4", "inkling", "internlm", "jamba",
    "k2_horizon", "kimi_k2", "kimi_k3", "lfm2", "ling3", "llama3_json", "llama4_json", "llama4_pythonic", "longcat",
    "mimo", "minicpm5", "minimax_m2", "minimax_m3", "mistral", "muse_glimmer", "olmo3", "openai", "phi4_mini_json",
    "plamo3", "poolside_v1", "pythonic", "qwen3_coder", "qwen3_json", "qwen3_xml", "seed_oss", "step3", "step3p5",
    "xlam",
)
REASONING_PARSERS = (
    "cohere_command3", "cohere_command4", "deepseek_r1", "deepseek_v3", "deepseek_v4", "deepseek_v41", "ernie45",
    "gemma4", "glm45", "glm47", "granite", "granite_thinking_parser", "hf", "holo2", "hunyuan_a13b", "hy_v3", "hy_v4",
    "inkling", "k2_horizon", "kimi_k2", "kimi_k3", "ling3", "mimo", "minicpmv", "minimax_m2",
    "minimax_m2_append_think", "minimax_m3", "mistral", "muse_glimmer", "nemotron_v3", "olmo3", "openai_gptoss",
    "plamo3", "poolside_v1", "qwen3", "seed_oss", "step3", "step3p5",
)


class EngineSettings(SpecModel):
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
    kv_cache_memory: str | None = Field(
        None, pattern=MEMORY_PATTERN,
        description="Memory for each replica's KV cache (vLLM kv_cache_memory_bytes), e.g. 256Mi or 4Gi. Unset, "
        "vLLM sizes it: from gpu_memory_utilization on a GPU, from VLLM_CPU_KVCACHE_SPACE (GiB) on CPU. A small "
        "base with a short context needs little: set it to fit more engines on a machine.",
    )
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto", description="Weight and activation dtype; 'auto' takes the model's."
    )
    enforce_eager: bool = Field(
        False,
        description="Run the model eagerly (no CUDA graphs or compilation): faster start, "
        "slower steady state. Useful on CPU and for debugging.",
    )
    tool_call_parser: Literal[TOOL_CALL_PARSERS] | None = Field(  # type: ignore[valid-type]
        None,
        description="How vLLM reads tool calls out of the model's text (vLLM --tool-call-parser), e.g. hermes "
        "(Qwen, Hermes), llama3_json, mistral, pythonic. Needed for requests with tools; the base's tokenizer "
        "must carry the parser's special tokens (hermes: <tool_call>, </tool_call>).",
    )
    enable_auto_tool_choice: bool | None = Field(
        None,
        description="Let the model decide when to call a tool (tool_choice auto, the OpenAI default; vLLM "
        "--enable-auto-tool-choice). Defaults to true when toolCallParser is set; false answers only "
        "tool_choice required or a named function.",
    )
    tool_strict_level: Literal["auto", "function", "parameter"] = Field(
        "auto",
        description="How strictly the engine holds tool calls to the offered tools while decoding (vLLM "
        "--tool-strict-level, a grammar over the call): auto: only what tool_choice and each tool's own "
        "'strict' ask; function: every call names an offered tool; parameter: and its arguments follow that "
        "tool's JSON Schema. The grammar leaves out some keywords (e.g. multipleOf, minimum), which a "
        "cascade's toolCall check still judges.",
    )
    chat_template: str | None = Field(
        None, min_length=1,
        description="Jinja chat template to use instead of the tokenizer's, inline; for a base whose own "
        "template cannot render tools.",
    )
    chat_template_file: str | None = Field(
        None, pattern=r"^[^/].*\.jinja2?$",
        description="The same as a .jinja file, by its path relative to the model directory (a local "
        "model source only; inline it with chatTemplate for an s3:// source).",
    )
    reasoning_parser: Literal[REASONING_PARSERS] | None = Field(  # type: ignore[valid-type]
        None,
        description="How vLLM separates a reasoning model's thinking from its answer (vLLM --reasoning-parser), "
        "e.g. qwen3, deepseek_r1.",
    )

    @field_validator("max_lora_rank")
    @classmethod
    def _supported_rank(cls, v: int) -> int:
        allowed = (1, 8, 16, 32, 64, 128, 256, 320, 512)
        if v not in allowed:
            raise ValueError(f"{v} is not a rank vLLM supports; use one of {allowed}")
        return v

    @model_validator(mode="after")
    def _cpu_loras_cover_gpu_loras(self) -> EngineSettings:
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(
                f"maxCpuLoras ({self.max_cpu_loras}) must be >= maxLoras ({self.max_loras})"
            )
        return self

    @field_validator("chat_template")
    @classmethod
    def _template_parses(cls, v: str | None) -> str | None:
        if v is not None:
            import jinja2

            try:
                jinja2.Environment().parse(v)
            except jinja2.TemplateSyntaxError as err:
                raise ValueError(f"the chat template is not valid Jinja: {err.message} (line {err.lineno})") from None
        return v

    @model_validator(mode="after")
    def _tool_settings(self) -> EngineSettings:
        if self.tool_strict_level != "auto" and self.tool_call_parser is None:
            raise ValueError(f"toolStrictLevel {self.tool_strict_level} needs toolCallParser (the calls it holds to "
                             "the tools are read by the parser), e.g. toolCallParser: hermes")
        if self.enable_auto_tool_choice and self.tool_call_parser is None:
            raise ValueError("enableAutoToolChoice needs toolCallParser (how vLLM reads the tool calls), "
                             "e.g. toolCallParser: hermes")
        if self.chat_template is not None and self.chat_template_file is not None:
            raise ValueError("give the chat template inline (chatTemplate) or as a file (chatTemplateFile), not both")
        return self

    @property
    def auto_tool_choice(self) -> bool:
        """Whether the model may decide to call a tool (tool_choice auto)."""
        if self.enable_auto_tool_choice is None:
            return self.tool_call_parser is not None
        return self.enable_auto_tool_choice

    @property
    def kv_cache_bytes(self) -> int | None:
        return memory_bytes(self.kv_cache_memory) if self.kv_cache_memory else None

    @property
    def resident_adapters(self) -> int:
        """Adapters a replica keeps loaded (host memory) before evicting the least recent."""
        return self.max_cpu_loras or 4 * self.max_loras


# GPU types a base model can ask for: Ray's accelerator_type names (ray.util.accelerators) that
# Ray Serve LLM accepts. A unit test keeps this list inside Ray's.
ACCELERATORS = ("T4", "L4", "L40S", "A10G", "A100", "A100-40G", "A100-80G", "H100", "H200", "B200",
                "AMD-Instinct-MI300X-OAM")


class Resources(SpecModel):
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
    def _accelerator_needs_gpu(self) -> Resources:
        if self.accelerator and self.gpu == 0:
            raise ValueError(f"accelerator {self.accelerator!r} needs gpu >= 1")
        return self


class Autoscaling(SpecModel):
    """Ray Serve autoscaling of one base model's deployment, independent of other bases."""

    min_replicas: int = Field(1, ge=0, description="Replicas kept when idle (0 scales to zero).")
    max_replicas: int = Field(1, ge=1, description="Upper bound on replicas.")
    target_ongoing_requests: float = Field(
        16, gt=0, description="Ongoing requests per replica that autoscaling aims for."
    )
    max_ongoing_requests: int | None = Field(
        None, ge=1, description="Requests one replica takes at once (Ray Serve max_ongoing_requests); more wait "
        "in each router's queue for the base. Default: 4 x targetOngoingRequests.")
    upscale_delay: str = Field(
        "30s", pattern=DURATION_PATTERN,
        description="How long the load must stay above the target before replicas are added (Ray Serve "
        "upscale_delay_s), e.g. 30s.")
    downscale_delay: str = Field(
        "10m", pattern=DURATION_PATTERN,
        description="How long the load must stay below the target before replicas are removed (Ray Serve "
        "downscale_delay_s), e.g. 10m: a replica holds an engine and its resident adapters, which a new one "
        "starts and loads again.")
    max_queued_requests: int = Field(
        256, ge=1, description="Requests that may wait for a replica of this base in each router replica's queue "
        "(Ray Serve max_queued_requests); beyond it, when every replica is busy, the fleet answers 503 overloaded "
        "with Retry-After instead of queueing without bound.")

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must be <= maxReplicas ({self.max_replicas})"
            )
        if self.max_ongoing_requests is not None and self.max_ongoing_requests < self.target_ongoing_requests:
            raise ValueError(f"maxOngoingRequests ({self.max_ongoing_requests}) must be >= targetOngoingRequests "
                             f"({self.target_ongoing_requests:g}), or autoscaling could never reach its target")
        return self

    @property
    def ongoing_bound(self) -> int:
        return self.max_ongoing_requests or max(1, int(4 * self.target_ongoing_requests))


class PlacementSettings(SpecModel):
    """How the base's replicas share its requests (serving.policy.placement): adapter-aware and load-aware."""

    spill_margin: int = Field(
        4, ge=0,
        description="Ongoing requests by which the least busy replica holding a request's adapter may exceed the "
        "least busy replica before the request goes to that one instead, which loads the adapter too: a hot "
        "adapter then becomes resident on more replicas rather than queueing on one. 0 sends each request to the "
        "least busy replica (residency only breaks ties); a large value keeps every adapter on its first replica.")


class BaseModelSpec(SpecModel):
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
    placement: PlacementSettings = Field(default_factory=PlacementSettings,
                                         description="Which replica takes each request.")
    cost_per_1k_tokens: float = Field(0, ge=0, alias="costPer1kTokens", description="Cost of 1,000 tokens "
                                      "(prompt + answer) answered by this base model alone; its adapters and "
                                      "cascade tiers inherit it unless they set their own. For tenants' usage "
                                      "and cascade savings.")

    @field_validator("source")
    @classmethod
    def _source_shape(cls, v: str) -> str:
        if "://" in v:
            if not v.startswith("s3://"):
                raise ValueError(f"'{v}': only s3:// URIs or local paths are supported")
            parse_s3_uri(v)
        return v

    @model_validator(mode="after")
    def _template_file_is_local(self) -> BaseModelSpec:
        if self.engine.chat_template_file and self.source.startswith("s3://"):
            raise ValueError(f"engine.chatTemplateFile reads a file next to a local model; base '{self.name}' "
                             "comes from S3: give the template inline with engine.chatTemplate")
        return self


class AdapterVersion(SpecModel):
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


class AdapterSpec(SpecModel):
    """A LoRA adapter (a fine-tuned specialist) over one base model, with its versions."""

    name: str = Field(pattern=NAME_PATTERN, description="Adapter name, unique in the fleet.")
    base_model: str = Field(description="Name of the base model this adapter was trained on.")
    versions: list[AdapterVersion] = Field(min_length=1, description="Available versions.")
    cost_per_1k_tokens: float | None = Field(None, ge=0, alias="costPer1kTokens", description="Cost of 1,000 "
                                             "tokens answered by this adapter; unset: its base model's.")



class FleetSpec(SpecModel):
    """Spec of a ModelFleet: base models, adapters with versions, and routes."""

    base_models: list[BaseModelSpec] = Field(min_length=1, description="Base models, one deployment each.")
    adapters: list[AdapterSpec] = Field(default_factory=list, description="LoRA adapters and their versions.")
    routes: list[RouteSpec] = Field(min_length=1, description="Public routes (model names).")
    capture: CaptureSpec | None = Field(None, description="Record sampled, redacted traffic to S3 for the "
                                        "flywheel; off unless set.")
    max_request_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Largest request body the router "
                                   "accepts, in bytes (default 10 MiB); a larger one is answered 413.")
    request_timeout: str = Field("120s", pattern=DURATION_PATTERN, description="Deadline of a request in the "
                                 "router, from arrival to its last byte (e.g. 30s, 5m); a client may shorten it "
                                 "with the X-SLMFleet-Timeout header (seconds). Past it: 504 deadline_exceeded (a "
                                 "stream ends with an error event), and the generation is aborted on the engine.")
    tenants: list[TenantSpec] = Field(default_factory=list, description="Who may call the fleet: each tenant's "
                                      "routes and limits. None declared: an open fleet, every route to anyone "
                                      "without a key.")
    tenancy: TenancySettings = Field(default_factory=TenancySettings, description="Where tenants' keys are and "
                                     "how their limits' state is kept.")

    @model_validator(mode="after")
    def _consistent(self) -> FleetSpec:
        problems = fleet_problems(self)
        if problems:
            raise FleetProblems(problems)
        return self

    def base(self, name: str) -> BaseModelSpec:
        return next(b for b in self.base_models if b.name == name)

    @property
    def request_timeout_seconds(self) -> int:
        return duration_seconds(self.request_timeout)

    @property
    def open(self) -> bool:
        """No tenants: anyone may call every route without a key."""
        return not self.tenants

    def cost_per_1k_tokens(self, ref: TargetRef | CascadeTier) -> float:
        """What 1,000 tokens answered by ``ref`` cost: its own costPer1kTokens (a tier's), else its adapter's,
        else its base model's, else 0 (another route, an endpoint)."""
        own = getattr(ref, "cost_per_1k_tokens", None)
        if own is not None:
            return own
        base = ref.base_model
        if ref.adapter is not None:
            adapter = next((a for a in self.adapters if a.name == ref.adapter), None)
            if adapter is None:
                return 0.0
            if adapter.cost_per_1k_tokens is not None:
                return adapter.cost_per_1k_tokens
            base = adapter.base_model
        return next((b.cost_per_1k_tokens for b in self.base_models if b.name == base), 0.0)



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
    return problems + route_cycles(spec) + _capture_problems(spec, route_names) + _tenant_problems(spec, route_names)


def _tenant_problems(spec: FleetSpec, route_names: list[str]) -> list[Problem]:
    problems = []
    dup = _duplicates([t.name for t in spec.tenants])
    for i, tenant in enumerate(spec.tenants):
        if tenant.name in dup:
            problems.append(Problem(f"tenants[{i}].name", f"duplicate tenant '{tenant.name}'; names must be unique"))
        for j, route in enumerate(tenant.routes):
            if route != ALL_ROUTES and route not in route_names:
                problems.append(Problem(f"tenants[{i}].routes[{j}]", f"tenant '{tenant.name}' names unknown route "
                                        f"'{route}'; routes: {', '.join(route_names)} (or '*' for all)"))
    if not spec.tenants and spec.tenancy != TenancySettings():
        problems.append(Problem("tenancy", "tenancy settings apply to tenants, and this fleet declares none (it is "
                                "open); add tenants or remove tenancy"))
    return problems


def _capture_problems(spec: FleetSpec, route_names: list[str]) -> list[Problem]:
    problems = []
    if spec.capture is not None:
        for j, name in enumerate(spec.capture.routes or []):
            if name not in route_names:
                problems.append(Problem(f"capture.routes[{j}]", f"capture names unknown route '{name}'; routes: "
                                        f"{', '.join(route_names)}"))
        return problems
    for i, route in enumerate(spec.routes):
        if route.capture is not None and route.capture.enabled is not False:
            problems.append(Problem(f"routes[{i}].capture", f"route '{route.name}' sets capture, but the fleet has "
                                    "no capture section (its destination); add capture: {destination: s3://...}"))
    return problems


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


def route_cycles(spec: FleetSpec) -> list[Problem]:
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
        return [Problem(f"{path}.version",
                        f"'{version_label(name, canary.version)}' is already the route's stable target; "
                        "a canary must be another version")]
    return []



def parse_fleet(data: object, *, source: str = "fleet spec", prefix: str = "") -> FleetSpec:
    """Validate ``data`` (a dict from YAML/JSON) as a FleetSpec; FleetSpecError lists every problem."""
    try:
        return FleetSpec.model_validate(data)
    except ValidationError as err:
        raise FleetSpecError(problems_from_validation_error(err, prefix), source) from None
