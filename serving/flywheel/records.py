"""Captured records in S3: read them back, enforce retention, forget one caller.

The capture writer (``serving.observability.capture``) writes gzip JSON lines under
``<prefix>/route=<route>/date=<YYYY-MM-DD>/``. Reading skips, and counts by reason, whatever is not a
record this code knows (another object under the prefix, a line that is not JSON, a record of
another schemaVersion), so one bad object never hides the rest.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from serving.adapters.store import s3_client
from serving.api.fields import DURATION_PATTERN, duration_seconds, parse_s3_uri
from serving.api.problems import UserError
from serving.policy.capture import partition_of, record_problem


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: a duration back from now (``2h``, ``7d``) or an ISO date or time (UTC unless it says)."""
    import re

    now = now or datetime.now(UTC)
    if re.match(DURATION_PATTERN, text):
        return now - timedelta(seconds=duration_seconds(text))
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"--since {text!r} is neither a duration (30m, 2h, 7d) nor an ISO time "
                        "(2026-12-01 or 2026-12-01T10:00:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def record_time(rec: dict) -> datetime | None:
    try:
        return datetime.fromisoformat(str(rec.get("time", "")).replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass
class ReadStats:
    objects: int = 0
    records: int = 0
    skipped: Counter = field(default_factory=Counter)
    """Reason -> count of objects or lines skipped."""

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        return f"{self.records} record(s) from {self.objects} object(s)" + (f"; skipped: {skipped}" if skipped else "")


class CaptureStore:
    """Thin boto3 layer over the capture layout."""

    def __init__(self, client=None):
        self.s3 = client or s3_client()

    def objects(self, src: str, route: str | None = None) -> list[dict]:
        """The objects under ``src`` (one route's only, with ``route``): S3's Key, LastModified and Size."""
        try:
            bucket, prefix = parse_s3_uri(src)
        except ValueError as err:
            raise UserError(str(err)) from None
        base = f"{prefix}/" if prefix else ""
        if route is not None:
            base += f"route={quote(route, safe='')}/"
        from botocore.exceptions import BotoCoreError, ClientError

        found = []
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
                found += page.get("Contents", [])
        except ClientError as err:
            raise UserError(f"cannot list {src}: {err.response.get('Error', {}).get('Message', err)}") from None
        except BotoCoreError as err:
            raise UserError(f"cannot reach the S3 endpoint for {src}: {err}; is AWS_ENDPOINT_URL set "
                            "(make demo prints it)?") from None
        return found

    def _lines(self, bucket: str, key: str, stats: ReadStats) -> list[bytes] | None:
        body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        try:
            return gzip.decompress(body).splitlines()
        except (OSError, EOFError, zlib.error):
            stats.skipped["objects that are not gzip"] += 1
            return None

    def read(self, src: str, *, route: str | None = None, since: datetime | None = None,
             stats: ReadStats | None = None) -> Iterator[dict]:
        """Every record under ``src`` (of ``route``, from ``since`` on), oldest object first."""
        stats = stats if stats is not None else ReadStats()
        bucket, _ = parse_s3_uri(src)
        for obj in sorted(self.objects(src, route), key=lambda o: (partition_of(o["Key"])[1] or "", o["Key"])):
            _, day = partition_of(obj["Key"])
            if since is not None and day and day < f"{since.astimezone(UTC):%Y-%m-%d}":
                continue
            if not obj["Key"].endswith(".jsonl.gz"):
                stats.skipped["objects that are not .jsonl.gz"] += 1
                continue
            lines = self._lines(bucket, obj["Key"], stats)
            if lines is not None:
                stats.objects += 1
                yield from parse_records(lines, stats, since=since)

    def prune(self, src: str, older_than_s: int, *, now: datetime | None = None) -> int:
        """Delete the objects whose day (or, outside the layout, last change) is older than ``older_than_s``."""
        now = now or datetime.now(UTC)
        cutoff = now - timedelta(seconds=older_than_s)
        bucket, _ = parse_s3_uri(src)
        doomed = [obj["Key"] for obj in self.objects(src) if expired(obj["Key"], obj["LastModified"], cutoff)]
        for i in range(0, len(doomed), 1000):
            self.s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in doomed[i:i + 1000]]})
        return len(doomed)

    def forget(self, src: str, caller_ids: set[str]) -> tuple[int, int]:
        """Remove every record whose callerId is one of ``caller_ids``: (objects changed, records removed)."""
        bucket, _ = parse_s3_uri(src)
        changed = removed = 0
        for obj in self.objects(src):
            if not obj["Key"].endswith(".jsonl.gz"):
                continue
            lines = self._lines(bucket, obj["Key"], ReadStats())
            if lines is None:
                continue
            kept = [line for line in lines if not is_callers(line, caller_ids)]
            if len(kept) == len(lines):
                continue
            changed, removed = changed + 1, removed + len(lines) - len(kept)
            if kept:
                self.s3.put_object(Bucket=bucket, Key=obj["Key"], Body=gzip.compress(b"\n".join(kept) + b"\n"),
                                   ContentType="application/gzip")
            else:
                self.s3.delete_object(Bucket=bucket, Key=obj["Key"])
        return changed, removed


def parse_records(lines: list[bytes], stats: ReadStats, *, since: datetime | None = None) -> Iterator[dict]:
    """The records in one object's lines (from ``since`` on); what is not a record is skipped and counted."""
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            stats.skipped["lines that are not JSON"] += 1
            continue
        problem = record_problem(rec)
        if problem is not None:
            stats.skipped["foreign records (" + problem.split(";")[0] + ")"] += 1
            continue
        when = record_time(rec)
        if since is not None and when is not None and when < since:
            continue
        stats.records += 1
        yield rec


def expired(key: str, last_modified: datetime, cutoff: datetime) -> bool:
    """Whether an object is older than ``cutoff``: by its day partition, else (outside the layout) its last change.
    A day partition holds records up to its end, so it is old once its last moment is."""
    _, day = partition_of(key)
    try:
        end = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC) + timedelta(days=1) if day else None
    except ValueError:
        end = None
    return (end or last_modified) < cutoff


def is_callers(line: bytes, caller_ids: set[str]) -> bool:
    try:
        return json.loads(line).get("callerId") in caller_ids
    except (ValueError, AttributeError):
        return False


def lifecycle_rule(src: str, retention_s: int) -> dict:
    """An S3 lifecycle configuration that expires the records under ``src`` after the retention (in days,
    rounded up: S3 expires by whole days), for ``aws s3api put-bucket-lifecycle-configuration``."""
    _, prefix = parse_s3_uri(src)
    days = max(1, -(-retention_s // 86400))
    return {"Rules": [{"ID": "slmfleet-capture-retention", "Status": "Enabled",
                       "Filter": {"Prefix": f"{prefix}/" if prefix else ""}, "Expiration": {"Days": days}}]}
