"""PII removed from captured records before they are written: Microsoft Presidio, offline.

Every string a record carries — messages, prompt, answer, tool names' arguments (parsed out of their
JSON) — is a *field*. Fields are analysed one by one and also joined, in order, with a space between
them, so a value split across fields (a phone number's area code in one argument, the rest in the
next) is still found; each part of it is removed from the field that holds it. A match is replaced
by its entity's placeholder, ``<EMAIL_ADDRESS>``, ``<PHONE_NUMBER>``..., or the name of a pattern
from the spec.

Presidio's pattern recognizers need no model. PERSON and LOCATION need an NER model (a spaCy
pipeline): the first of ``NER_MODELS`` that is installed is used; without one those two entities are
not found, and ``Redactor.finds`` says so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from serving.api.capture import NER_ENTITIES, RedactionSettings

logger = logging.getLogger("ray.serve").getChild("slmfleet.redaction")

NER_MODELS = ("en_core_web_lg", "en_core_web_md", "en_core_web_sm", "en_core_web_trf")
"""spaCy English pipelines with an NER component, best first."""
SEPARATOR = " "
"""Neighbouring fields are also read joined by a space (a value split at a word: "(415)" "555-0173"), and each
pair of neighbours with nothing between (one split inside a word: "rosa.qu" "int@example.net"); where two
fields only look like one value, over-redacting them is the safe side."""
TOOL_ARGUMENT_KEYS = ("arguments",)
"""Keys whose string value is JSON (a tool call's arguments): redacted value by value, keys kept."""


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    entity: str
    score: float


def _offline_tldextract() -> None:
    """Presidio's e-mail recognizer asks tldextract, whose default extractor fetches the public suffix list
    from the network on first use (and waits for it to fail where there is none): use its bundled snapshot."""
    import tldextract.tldextract as tld

    if tld.TLD_EXTRACTOR.suffix_list_urls:
        tld.TLD_EXTRACTOR = tld.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


def installed_ner_model() -> str | None:
    import spacy.util

    return next((name for name in NER_MODELS if spacy.util.is_package(name)), None)


def nlp_engine(model: str | None = None):
    """A Presidio NLP engine: spaCy ``model`` (with NER), or a blank English tokenizer (offline, no NER)."""
    import spacy
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    class _Engine(SpacyNlpEngine):
        # SpacyNlpEngine.load downloads a missing model; this one loads what is here or a blank pipeline.
        def load(self) -> None:
            self.nlp = {"en": spacy.load(model) if model else spacy.blank("en")}

    engine = _Engine(models=[{"lang_code": "en", "model_name": model or "blank"}])
    engine.load()
    return engine


class Redactor:
    """Removes ``settings``' entities from text; ``engine`` is a Presidio NLP engine (default: see module doc)."""

    def __init__(self, settings: RedactionSettings, engine=None):
        from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry

        _offline_tldextract()
        model = None if engine is not None else installed_ner_model()
        engine = engine if engine is not None else nlp_engine(model)
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.load_predefined_recognizers(nlp_engine=engine, languages=["en"])
        for p in settings.patterns:
            registry.add_recognizer(PatternRecognizer(supported_entity=p.name, supported_language="en",
                                                      patterns=[Pattern(p.name, p.regex, p.score)]))
        self.analyzer = AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])
        self.entities = settings.entity_names
        self.min_score = settings.min_score
        self.ner = model is not None or _has_ner(engine)
        self.finds = [e for e in self.entities if e not in NER_ENTITIES or self.ner]
        """The entities this redactor can find: without an NER model, PERSON and LOCATION are left out."""
        if len(self.finds) < len(self.entities):
            logger.warning("no NER model installed (%s): %s are not redacted", " or ".join(NER_MODELS),
                           ", ".join(e for e in self.entities if e not in self.finds))

    def spans(self, text: str) -> list[Span]:
        if not text.strip():
            return []
        results = self.analyzer.analyze(text=text, language="en", entities=self.finds,
                                        score_threshold=self.min_score)
        return [Span(r.start, r.end, r.entity_type, r.score) for r in results]

    def redact_fields(self, fields: list[str]) -> list[str]:
        """``fields`` with every entity removed, also those that run across neighbouring fields."""
        per_field = [self.spans(f) for f in fields]
        # (first field, the text read, where each of its fields starts in it)
        joins = [(0, SEPARATOR.join(fields), _starts(fields, SEPARATOR))] if len(fields) > 1 else []
        joins += [(i, fields[i] + fields[i + 1], [0, len(fields[i])]) for i in range(len(fields) - 1)
                  if fields[i].strip() and fields[i + 1].strip()]
        for first, text, starts in joins:
            for span in self.spans(text):
                for j, start in enumerate(starts):
                    f = fields[first + j]
                    lo, hi = max(span.start - start, 0), min(span.end - start, len(f))
                    if lo < hi:
                        per_field[first + j].append(Span(lo, hi, span.entity, span.score))
        return [replace_spans(f, s) for f, s in zip(fields, per_field)]

    def redact(self, record: dict) -> dict:
        """A copy of ``record`` with every string under ``record['request']`` and ``record['answer']`` redacted."""
        return redact_record(record, self.redact_fields)


def _starts(fields: list[str], separator: str) -> list[int]:
    starts, offset = [], 0
    for f in fields:
        starts.append(offset)
        offset += len(f) + len(separator)
    return starts


def _has_ner(engine) -> bool:
    nlp = getattr(engine, "nlp", None) or {}
    pipeline = nlp.get("en") if isinstance(nlp, dict) else None
    # A trained NER component, or rules that set entities the same way (an entity ruler).
    return pipeline is not None and bool({"ner", "entity_ruler"} & set(getattr(pipeline, "pipe_names", ())))


def replace_spans(text: str, spans: list[Span]) -> str:
    """``text`` with each span (overlapping ones merged, the higher-scored entity named) replaced by <ENTITY>."""
    merged: list[list] = []
    for s in sorted(spans, key=lambda s: (s.start, -s.end)):
        if merged and s.start < merged[-1][1]:
            last = merged[-1]
            last[1] = max(last[1], s.end)
            if s.score > last[3]:
                last[2], last[3] = s.entity, s.score
        else:
            merged.append([s.start, s.end, s.entity, s.score])
    out, pos = [], 0
    for start, end, entity, _ in merged:
        out += [text[pos:start], f"<{entity}>"]
        pos = end
    return "".join(out) + text[pos:]


REDACTED_PARTS = ("request", "answer")
"""The parts of a record that carry what callers and models wrote; the rest is the fleet's own data."""


def redact_record(record: dict, redact_fields: Callable[[list[str]], list[str]]) -> dict:
    """A copy of ``record`` whose strings under REDACTED_PARTS went through ``redact_fields`` in one call.

    A tool call's ``arguments`` JSON is parsed so that its values, not its keys, are fields; it is
    written back as JSON. Arguments that are not JSON are redacted as one string.
    """
    leaves: list[str] = []

    def collect(value, key=None):
        if isinstance(value, str):
            parsed = _json_arguments(value) if key in TOOL_ARGUMENT_KEYS else None
            if parsed is not None:
                return ("json", collect(parsed))
            leaves.append(value)
            return ("leaf", len(leaves) - 1)
        if isinstance(value, dict):
            return ("dict", {k: collect(v, k) for k, v in value.items()})
        if isinstance(value, list):
            return ("list", [collect(v) for v in value])
        return ("value", value)

    shapes = {part: collect(record[part]) for part in REDACTED_PARTS if part in record}
    redacted = redact_fields(leaves) if leaves else []
    if len(redacted) != len(leaves):
        raise ValueError(f"redaction returned {len(redacted)} fields for {len(leaves)}")

    def rebuild(shape):
        kind, value = shape
        if kind == "leaf":
            return redacted[value]
        if kind == "json":
            return json.dumps(rebuild(value), ensure_ascii=False)
        if kind == "dict":
            return {k: rebuild(v) for k, v in value.items()}
        if kind == "list":
            return [rebuild(v) for v in value]
        return value

    return {**record, **{part: rebuild(shape) for part, shape in shapes.items()}, "redacted": True}


def _json_arguments(text: str):
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    return parsed if isinstance(parsed, (dict, list)) else None
