"""Answer checks that cascades and rollout probes share: regex, JSON Schema, exact match. Pure."""

from __future__ import annotations

import json
import re


def format_problem(text: str, *, regex: str | None = None, json_schema: dict | None = None,
                   exact: str | None = None) -> str | None:
    """Why ``text`` fails a format check (regex, JSON Schema or exact match), or None."""
    if exact is not None and text.strip() != exact:
        return f"expected exactly {exact!r}, got {text.strip()!r}"
    if regex is not None and not re.search(regex, text):
        return f"{short(text)!r} does not match /{regex}/"
    if json_schema is not None:
        import jsonschema

        try:
            value = json.loads(text)
        except ValueError as err:
            return f"{short(text)!r} is not JSON: {err}"
        error = jsonschema.exceptions.best_match(
            jsonschema.validators.validator_for(json_schema)(json_schema).iter_errors(value))
        if error is not None:
            return f"{short(text)!r} does not match the schema: {error.message}"
    return None


def short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
