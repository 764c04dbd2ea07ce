"""Where the flywheel steps read and write what they make (clusters, datasets, evaluations): an
``s3://`` prefix, or a local directory for a step run by hand."""

from __future__ import annotations

import json
from pathlib import Path

from serving.adapters.store import s3_client
from serving.api.fields import parse_s3_uri
from serving.api.problems import UserError


def _s3_parts(uri: str) -> tuple[str, str]:
    try:
        return parse_s3_uri(uri)
    except ValueError as err:
        raise UserError(str(err)) from None


def join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def put(uri: str, data: bytes, *, content_type: str = "application/octet-stream", client=None) -> None:
    """Write ``data`` at ``uri`` (an ``s3://`` key, or a local path)."""
    if not uri.startswith("s3://"):
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return
    bucket, key = _s3_parts(uri)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        (client or s3_client()).put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
    except (ClientError, BotoCoreError) as err:
        raise UserError(f"cannot write {uri}: {err}") from None


def get(uri: str, *, client=None) -> bytes:
    """The bytes at ``uri`` (an ``s3://`` key, or a local path); UserError naming it when it is not there."""
    if not uri.startswith("s3://"):
        try:
            return Path(uri).read_bytes()
        except OSError as err:
            raise UserError(f"cannot read {uri}: {err.strerror}") from None
    bucket, key = _s3_parts(uri)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return (client or s3_client()).get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        raise UserError(f"cannot read {uri}: {code or err}") from None
    except BotoCoreError as err:
        raise UserError(f"cannot reach the S3 endpoint for {uri}: {err}; is AWS_ENDPOINT_URL set?") from None


def put_json(uri: str, obj, *, client=None) -> None:
    put(uri, json.dumps(obj, indent=2, ensure_ascii=False).encode(), content_type="application/json", client=client)


def get_json(uri: str, *, what: str, client=None):
    try:
        return json.loads(get(uri, client=client))
    except ValueError:
        raise UserError(f"{uri} is not JSON; is it the {what}?") from None


def put_jsonl(uri: str, rows: list[dict], *, client=None) -> None:
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    put(uri, body, content_type="application/x-ndjson", client=client)


def get_jsonl(uri: str, *, client=None) -> list[dict]:
    rows = []
    for n, line in enumerate(get(uri, client=client).splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise UserError(f"{uri} line {n} is not JSON") from None
    return rows
