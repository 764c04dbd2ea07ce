"""Traffic capture in the fleet spec: which requests are recorded, where, for how long, redacted how.

Capture is off unless the fleet has a ``capture`` section. The router samples per conversation (the
sticky key: the request's ``user`` or ``X-Session-Id``), so an agent's turns are kept or skipped
together, redacts every text field and writes the records to S3 as gzip JSON lines. A route can
override the fleet's choice (``routes[].capture``).
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from serving.api.fields import (
    DURATION_PATTERN,
    SecretKeyRef,
    SpecModel,
    check_regex_and_schema,
    duration_seconds,
    parse_s3_uri,
)

# Presidio's entity names for what the router removes from captured text. PERSON and LOCATION are
# found only where an NER model (a spaCy pipeline) is installed; the rest by pattern, offline.
PATTERN_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN")
NER_ENTITIES = ("PERSON", "LOCATION")
ENTITIES = PATTERN_ENTITIES + NER_ENTITIES
ENTITY_NAME = r"^[A-Z][A-Z0-9_]{1,47}$"
SECRET_ENV = "SLMFLEET_CAPTURE_SECRET"
"""The router's environment variable with the key of caller ids when ``callerIdSecret`` is not set."""


class RedactionPattern(SpecModel):
    """An extra kind of sensitive text, found by a regular expression."""

    name: str = Field(pattern=ENTITY_NAME, description="Entity name, also its placeholder: <NAME>, e.g. "
                      "EMPLOYEE_ID.")
    regex: str = Field(min_length=1, description="Regular expression of the text to remove (Python re).")
    score: float = Field(0.9, gt=0, le=1, description="Confidence Presidio gives a match (a match below "
                         "minScore is kept).")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str) -> str:
        check_regex_and_schema(v, None)
        return v


class RedactionSettings(SpecModel):
    """What is removed from every text field of a record before it is written (Microsoft Presidio)."""

    entities: list[str] = Field(
        list(ENTITIES), min_length=1,
        description="Presidio entities to remove, each replaced by <ENTITY> (e.g. <EMAIL_ADDRESS>): "
        f"{', '.join(ENTITIES)}. {', '.join(NER_ENTITIES)} need an NER model in the router's image.",
    )
    patterns: list[RedactionPattern] = Field(default_factory=list, description="Extra patterns to remove.")
    min_score: float = Field(0.3, ge=0, le=1, description="Lowest Presidio confidence at which a match is "
                             "removed; lower removes more.")

    @field_validator("entities")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [e for e in v if e not in ENTITIES]
        if unknown:
            raise ValueError(f"unknown entities {unknown}; known: {', '.join(ENTITIES)} (add others as patterns)")
        return v

    @model_validator(mode="after")
    def _distinct_names(self) -> RedactionSettings:
        clash = {p.name for p in self.patterns} & set(ENTITIES)
        if clash:
            raise ValueError(f"pattern names {sorted(clash)} are built-in entities; list them under entities")
        return self

    @property
    def entity_names(self) -> list[str]:
        return list(self.entities) + [p.name for p in self.patterns]


class CaptureSpec(SpecModel):
    """Record sampled requests and their answers, redacted, to S3, for the flywheel (off unless set)."""

    destination: str = Field(description="s3://bucket/prefix the records go to, as "
                             "<prefix>/route=<route>/date=<YYYY-MM-DD>/<time>-<id>.jsonl.gz.")
    sample_rate: float = Field(0.1, ge=0, le=1, description="Share of conversations recorded (0..1), decided per "
                               "sticky key (user or X-Session-Id) so an agent's turns stay together.")
    routes: list[str] | None = Field(None, description="Routes whose traffic is recorded; unset: every route.")
    retention: str = Field("30d", pattern=DURATION_PATTERN, description="How long records are kept, e.g. 30d: "
                           "`slm-fleet flywheel prune --fleet FILE` deletes older ones (or, with --lifecycle, "
                           "prints the S3 lifecycle rule that does).")
    caller_id_secret: SecretKeyRef | None = Field(
        None, description="Key of the HMAC that turns a caller (user, or API key) into the record's callerId. "
        f"Unset: the router's {SECRET_ENV} variable; with neither, callerId is null.")
    redaction: RedactionSettings = Field(default_factory=RedactionSettings, description="PII removed before "
                                         "writing.")
    flush_interval: str = Field("10s", pattern=r"^([1-9]|10)s$", description="Longest time a record waits before "
                                "it is written (1s..10s); records are also written on shutdown.")
    batch_size: int = Field(500, ge=1, le=100000, description="Records per object: a full batch is written at "
                            "once.")
    queue_size: int = Field(10000, ge=1, le=1000000, description="Records waiting to be redacted and written; "
                            "beyond it records are dropped and counted (slmfleet_capture_dropped_total), never "
                            "slowing a request.")

    @field_validator("destination")
    @classmethod
    def _s3(cls, v: str) -> str:
        parse_s3_uri(v)
        return v

    @property
    def flush_seconds(self) -> int:
        return duration_seconds(self.flush_interval)

    @property
    def key_variable(self) -> str:
        return self.caller_id_secret.env_name if self.caller_id_secret else SECRET_ENV


class RouteCapture(SpecModel):
    """A route's own capture choice, over the fleet's ``capture`` section."""

    enabled: bool | None = Field(None, description="Record this route (true) or never (false); unset: as the "
                                 "fleet's capture.routes says.")
    sample_rate: float | None = Field(None, ge=0, le=1, description="This route's share of conversations "
                                      "recorded; unset: the fleet's sampleRate.")
