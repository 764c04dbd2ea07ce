"""The chat and completion request models the router parses bodies into.

They are Ray Serve LLM's (vLLM's) request models with one change: vLLM's ``mode="before"`` validators
read the raw body before its fields are typed, so a wrong type there (``"messages": 3``,
``"structured_outputs": "x"``) raised ``TypeError``/``AttributeError`` out of the validator, which
FastAPI answers with a 500. Here such a failure becomes a validation error that names the field whose
type is wrong, and the fleet's handler answers it as a 400 in OpenAI's shape.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError, model_validator
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

from serving.dataplane.errors import openai_param

# What a validator written for a well-typed dict raises when it is handed something else.
_UNTYPED_READS = (TypeError, AttributeError, KeyError, IndexError)


def mistyped_field(model: type, data: Any) -> str | None:
    """The first field of ``data`` whose value does not validate against ``model``'s field type, with the
    reason, e.g. ``"messages: Input should be a valid list"``; None when every field's type fits."""
    if not isinstance(data, dict):
        return None
    for name, value in data.items():
        adapter = _field_adapter(model, name)
        if adapter is None:
            continue
        try:
            adapter.validate_python(value)
        except ValidationError as err:
            first = err.errors()[0]
            return f"{openai_param((name, *first.get('loc', ())))}: {first.get('msg')}"
    return None


@cache
def _field_adapter(model: type, name: str) -> TypeAdapter | None:
    field = model.model_fields.get(name)
    if field is None:
        return None
    annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    return TypeAdapter(annotation)


class _TypedBody:
    @model_validator(mode="wrap")
    @classmethod
    def _wrong_types_are_invalid(cls, data: Any, handler):
        try:
            return handler(data)
        except _UNTYPED_READS as err:
            # Only on the failure path: find the field to name (the happy path pays nothing).
            raise ValueError(mistyped_field(cls, data) or f"the body does not fit the request ({err})") from None


class ChatBody(_TypedBody, ChatCompletionRequest):
    """A chat completion request (``/v1/chat/completions``)."""


class CompletionBody(_TypedBody, CompletionRequest):
    """A completion request (``/v1/completions``)."""
