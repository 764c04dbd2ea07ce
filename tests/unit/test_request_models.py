"""The router's request models: a wrong type that vLLM's before-validators choke on is a validation error
naming the field (the handler's 400), never the TypeError that FastAPI answered with a 500."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serving.dataplane.request_models import ChatBody, CompletionBody, mistyped_field

CHAT = {"model": "shout", "messages": [{"role": "user", "content": "red fox"}], "max_tokens": 2}
COMPLETION = {"model": "shout", "prompt": "red fox", "max_tokens": 2}


@pytest.mark.parametrize("model,base,field,value,words", [
    # The cases the stack test found answering 500 before these models existed.
    (ChatBody, CHAT, "messages", -12345.5, "messages: Input should be a valid list"),
    (ChatBody, CHAT, "structured_outputs", [[{"x": None}]], "structured_outputs"),
    (ChatBody, CHAT, "structured_outputs", "not-a-number-or-object", "structured_outputs"),
    (ChatBody, CHAT, "structured_outputs", -12345.5, "structured_outputs"),
    (CompletionBody, COMPLETION, "structured_outputs", [[{"x": None}]], "structured_outputs"),
    (CompletionBody, COMPLETION, "structured_outputs", "not-a-number-or-object", "structured_outputs"),
    (CompletionBody, COMPLETION, "structured_outputs", -12345.5, "structured_outputs"),
    # Wrong types pydantic already caught stay caught.
    (ChatBody, CHAT, "max_tokens", "many", "max_tokens"),
    (CompletionBody, COMPLETION, "temperature", {"hot": True}, "temperature"),
], ids=["chat-messages-number", "chat-so-list", "chat-so-string", "chat-so-number", "completion-so-list",
        "completion-so-string", "completion-so-number", "chat-max-tokens", "completion-temperature"])
def test_a_wrong_type_is_a_validation_error_that_names_the_field(model, base, field, value, words):
    with pytest.raises(ValidationError) as caught:
        model.model_validate({**base, field: value})
    assert words in str(caught.value)


@pytest.mark.parametrize("model,body", [
    (ChatBody, CHAT),
    (ChatBody, {**CHAT, "structured_outputs": {"json": {"type": "object"}}}),
    (CompletionBody, COMPLETION),
    (CompletionBody, {**COMPLETION, "structured_outputs": {"choice": ["a", "b"]}}),
], ids=["chat", "chat-structured", "completion", "completion-structured"])
def test_a_well_typed_body_parses_as_vllm_would(model, body):
    parsed = model.model_validate(body)
    assert parsed.model == "shout" and parsed.max_tokens == 2


def test_mistyped_field_names_the_first_field_that_does_not_fit():
    body = {"model": "shout", "n": "x", "messages": 3}  # in the body's order: n comes before messages
    assert mistyped_field(ChatBody, body) == "n: Input should be a valid integer, unable to parse string as an integer"
    assert mistyped_field(ChatBody, {**CHAT, "tools": "x"}).startswith("tools: ")
    assert mistyped_field(ChatBody, CHAT) is None
    assert mistyped_field(ChatBody, "not a dict") is None
    assert mistyped_field(ChatBody, {"no_such_field": 1}) is None
