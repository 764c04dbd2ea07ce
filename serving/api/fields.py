"""What every part of the fleet spec shares: the model base class, name patterns, durations, S3 URIs."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
VERSION_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62})$"
ROUTE_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,126})$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/(?P<key>.*))?$")



class SpecModel(BaseModel):
    """A part of the spec: camelCase in YAML, snake_case in Python, unknown fields refused, frozen."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class SecretKeyRef(SpecModel):
    """A key of a Kubernetes Secret in the fleet's namespace."""

    name: str = Field(pattern=NAME_PATTERN, description="Secret name.")
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]+$", description="Key in the Secret.")

    @property
    def env_name(self) -> str:
        """The environment variable the operator sets from it in the Ray pods (the router reads it)."""
        return "SLMFLEET_SECRET_" + re.sub(r"[^A-Z0-9]", "_", f"{self.name}_{self.key}".upper())


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/prefix/`` into ``("bucket", "some/prefix")``; ValueError if not S3."""
    match = S3_URI.match(uri)
    if not match:
        raise ValueError(
            f"'{uri}' is not an S3 URI: expected s3://<bucket>/<prefix> with a valid bucket name"
        )
    return match["bucket"], (match["key"] or "").strip("/")


DURATION_PATTERN = r"^[1-9][0-9]*(s|m|h|d)$"
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> int:
    """``"30s"``, ``"5m"``, ``"1h"``, ``"30d"`` in seconds (the shape DURATION_PATTERN admits)."""
    return int(text[:-1]) * _DURATION_UNITS[text[-1]]


MEMORY_PATTERN = r"^[1-9][0-9]*(Ki|Mi|Gi|Ti)$"
_MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def memory_bytes(text: str) -> int:
    """``"256Mi"``, ``"4Gi"`` in bytes (the Kubernetes binary quantities MEMORY_PATTERN admits)."""
    return int(text[:-2]) * _MEMORY_UNITS[text[-2:]]


def check_regex_and_schema(regex: str | None, schema: dict | None) -> None:
    if regex is not None:
        try:
            re.compile(regex)
        except re.error as err:
            raise ValueError(f"regex {regex!r} does not compile: {err}") from None
    if schema is not None:
        error = schema_error(schema)
        if error:
            raise ValueError(f"jsonSchema {error}")


def schema_error(schema) -> str | None:
    """What makes ``schema`` no JSON Schema ("is not a valid JSON Schema at <path>: ..."), or None."""
    import jsonschema

    if not isinstance(schema, dict):
        return f"must be a JSON Schema object, not {type(schema).__name__}"
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as err:
        where = "/".join(str(p) for p in err.absolute_path)
        return f"is not a valid JSON Schema{' at ' + where if where else ''}: {err.message}"
    return None



def version_label(adapter: str, version: str) -> str:
    """How an adapter version is named to people, in statuses, headers' readers and tables: ``shout@v1``."""
    return f"{adapter}@{version}"
