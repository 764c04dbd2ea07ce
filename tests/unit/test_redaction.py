"""PII is removed from every text field of a record before it is written (Presidio, offline)."""

from __future__ import annotations

import json

import pytest

from serving.api.capture import RedactionSettings
from serving.observability.redaction import Redactor, Span, nlp_engine, replace_spans


@pytest.fixture(scope="module")
def redactor():
    return Redactor(RedactionSettings(patterns=[{"name": "EMPLOYEE_ID", "regex": r"\bEMP-\d{6}\b"}]))


# (entity, text with the value, the value) — values that are not Presidio's own examples.
ENTITIES = [
    ("EMAIL_ADDRESS", "write to marguerite.okafor@quillmail.net today", "marguerite.okafor@quillmail.net"),
    ("PHONE_NUMBER", "ring me on (312) 555-0148 after five", "(312) 555-0148"),
    ("CREDIT_CARD", "charge 5555 5555 5555 4444 for it", "5555 5555 5555 4444"),
    ("IBAN_CODE", "send to GB82 WEST 1234 5698 7654 32 please", "GB82 WEST 1234 5698 7654 32"),
    ("IP_ADDRESS", "the box at 172.16.254.17 is down", "172.16.254.17"),
    ("US_SSN", "my social is 536-90-4399 ok", "536-90-4399"),
    ("EMPLOYEE_ID", "badge EMP-004211 lost", "EMP-004211"),
]


@pytest.mark.parametrize("entity,text,value", ENTITIES, ids=[e[0] for e in ENTITIES])
def test_each_entity_is_removed_and_typed(redactor, entity, text, value):
    [out] = redactor.redact_fields([text])
    assert value not in out
    assert f"<{entity}>" in out
    assert out == text.replace(value, f"<{entity}>")  # nothing else changed


def test_text_without_pii_is_unchanged(redactor):
    fields = ["red fox sun", "in: blue moon\nout:", '{"city": "Paris", "n": 3}', "v1.2.3 at 10:45", ""]
    assert redactor.redact_fields(fields) == fields


def test_a_value_split_across_fields_is_removed_from_each(redactor):
    out = redactor.redact_fields(["call me at (312)", "555-0148 tonight", "and 4111 1111", "1111 1111 thanks"])
    assert "(312)" not in out[0] and "555-0148" not in out[1]
    assert out[0].startswith("call me at ") and out[1].endswith(" tonight")
    assert "4111" not in out[2] and "1111 1111" not in out[3]


@pytest.mark.parametrize("head,tail", [
    ("noor.19@", "quarry.dev"), ("584-4", "3-4172"), ("DE95952890", "786666176031"), ("200.216.", "69.62"),
])
def test_a_value_split_inside_a_word_among_other_fields_is_removed(redactor, head, tail):
    fields = ["file it", "object", "string", head, tail, "filed", "thanks"]
    out = redactor.redact_fields(fields)
    assert head not in out[3] and tail not in out[4]
    assert out[:3] == fields[:3] and out[5:] == fields[5:]


def test_tool_arguments_and_nested_json_keep_their_shape(redactor):
    rec = {
        "route": "tools", "callerId": None,
        "request": {"messages": [{"role": "user", "content": "mail marguerite.okafor@quillmail.net"},
                                 {"role": "assistant", "tool_calls": [{"function": {
                                     "name": "send", "arguments": json.dumps({"to": "dev@quillmail.net", "n": 2})}}]}],
                    "tools": [{"type": "function", "function": {"name": "send", "parameters": {"type": "object"}}}]},
        "answer": {"text": None, "toolCalls": [{"name": "send", "arguments": json.dumps(
            {"to": {"ip": "172.16.254.17"}, "note": "from 536-90-4399"})}], "finishReason": "tool_calls"},
    }
    out = redactor.redact(rec)
    assert out["redacted"] is True and out["route"] == "tools"
    assert out["request"]["messages"][0]["content"] == "mail <EMAIL_ADDRESS>"
    sent = json.loads(out["request"]["messages"][1]["tool_calls"][0]["function"]["arguments"])
    assert sent == {"to": "<EMAIL_ADDRESS>", "n": 2}
    answered = json.loads(out["answer"]["toolCalls"][0]["arguments"])
    assert answered == {"to": {"ip": "<IP_ADDRESS>"}, "note": "from <US_SSN>"}
    assert out["request"]["tools"] == rec["request"]["tools"]
    assert "quillmail" not in json.dumps(out) and "172.16" not in json.dumps(out)


def test_names_need_an_ner_model():
    import spacy

    plain = Redactor(RedactionSettings())
    assert "PERSON" not in plain.finds and "EMAIL_ADDRESS" in plain.finds
    # A pipeline that yields PERSON spans (rules here, a trained NER model in production) is used as one.
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "PERSON", "pattern": "Marguerite Okafor"}])
    engine = nlp_engine()
    engine.nlp = {"en": nlp}
    named = Redactor(RedactionSettings(), engine=engine)
    assert "PERSON" in named.finds
    assert named.redact_fields(["ask Marguerite Okafor now"]) == ["ask <PERSON> now"]


def test_overlapping_matches_merge_under_the_surer_entity():
    text = "abc 1234567890 xx 99 z"
    spans = [Span(4, 10, "PHONE_NUMBER", 0.4), Span(6, 14, "US_SSN", 0.85), Span(18, 20, "IP_ADDRESS", 0.5)]
    assert replace_spans(text, spans) == "abc <US_SSN> xx <IP_ADDRESS> z"
    assert replace_spans(text, []) == text
