"""The keys file: which API key belongs to which tenant, as sha256 hashes (the keys themselves are never kept).

``slm-fleet keys create --tenant T --file F`` makes a key, prints it once and adds its entry here::

    # SLM Fleet API keys: sha256 of each key and the tenant it belongs to.
    keys:
    - tenant: team-a
      sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
      id: key-9f86d081
      created: "2026-12-03T10:00:00Z"

Revoking a key is deleting its entry. ``slm-fleet serve --keys F`` (locally) and the router on Kubernetes
(the Secret ``tenancy.keysSecret`` names, mounted as a file) reread the file within seconds of a change.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import yaml

from serving.api.fields import NAME_PATTERN, SHA256_PATTERN
from serving.api.problems import UserError

KEY_PREFIX = "sk-slmfleet-"
INTERNAL_KEY_ENV = "SLMFLEET_INTERNAL_KEY"
"""The fleet's internal key (canary probes, the demo's own requests), in the environment of the process that
sends them (``slm-fleet serve`` makes one when it starts, the operator keeps it in a Secret); the router knows
only its hash."""
HEADER = "# SLM Fleet API keys: sha256 of each key and the tenant it belongs to (slm-fleet keys create).\n"


class KeysFileError(UserError):
    """A keys file that cannot be used; the message names the entry and field."""


@dataclass(frozen=True)
class KeyEntry:
    tenant: str
    sha256: str
    id: str
    """How logs and errors name the key: ``key-`` and the first 8 hex digits of its hash, never the key."""
    created: str | None = None


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def key_id(sha256: str) -> str:
    return f"key-{sha256[:8]}"


def new_key() -> str:
    """A fresh API key: 256 random bits, URL-safe, with a prefix secret scanners recognise."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_entry(tenant: str, key: str, *, now: datetime | None = None) -> KeyEntry:
    digest = key_sha256(key)
    created = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return KeyEntry(tenant, digest, key_id(digest), created)


def parse_keys(text: str, *, source: str = "keys file") -> list[KeyEntry]:
    """The entries of a keys file; KeysFileError names every entry that is wrong."""
    try:
        data = yaml.safe_load(text) if text.strip() else {"keys": []}
    except yaml.YAMLError as err:
        raise KeysFileError(f"{source} is not YAML: {err}") from None
    if data is None:
        data = {"keys": []}
    if not isinstance(data, dict) or not isinstance(data.get("keys", []), list) or set(data) - {"keys"}:
        raise KeysFileError(f"{source} must be a mapping with one field, keys: a list of "
                            "{tenant, sha256} entries (slm-fleet keys create writes them)")
    entries, problems, seen = [], [], set()
    for i, item in enumerate(data.get("keys") or []):
        if not isinstance(item, dict):
            problems.append(f"keys[{i}]: must be a mapping with tenant and sha256")
            continue
        unknown = set(item) - {"tenant", "sha256", "id", "created"}
        tenant, digest = item.get("tenant"), str(item.get("sha256") or "").lower()
        if unknown:
            problems.append(f"keys[{i}]: unknown field(s) {', '.join(sorted(map(str, unknown)))}; an entry has "
                            "tenant, sha256, id and created")
        if not isinstance(tenant, str) or not re.match(NAME_PATTERN, tenant):
            problems.append(f"keys[{i}].tenant: must be a tenant name of the fleet (lowercase letters, digits, '-')")
        if not re.match(SHA256_PATTERN, digest):
            problems.append(f"keys[{i}].sha256: must be the 64 hex digits of the key's sha256 (never the key itself)")
        elif digest in seen:
            problems.append(f"keys[{i}].sha256: the same key is listed twice")
        seen.add(digest)
        if not problems or not problems[-1].startswith(f"keys[{i}]"):
            entries.append(KeyEntry(tenant, digest, key_id(digest), str(item["created"]) if item.get("created")
                                    else None))
    if problems:
        raise KeysFileError(f"{source} is invalid ({len(problems)} problem(s)):\n" +
                            "\n".join(f"  - {p}" for p in problems))
    return entries


def format_keys(entries: list[KeyEntry]) -> str:
    """A keys file holding ``entries`` (what ``parse_keys`` reads back)."""
    rows = [{k: v for k, v in {"tenant": e.tenant, "sha256": e.sha256, "id": e.id, "created": e.created}.items()
             if v is not None} for e in entries]
    return HEADER + yaml.safe_dump({"keys": rows}, sort_keys=False)
