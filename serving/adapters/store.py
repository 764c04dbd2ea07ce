"""Adapter store: PEFT adapter directories in S3, one immutable prefix per adapter version.

Layout written by :meth:`AdapterStore.push` and read by the serving side::

    s3://bucket/prefix/<adapter>/<version>/adapter_config.json
                                          /adapter_model.safetensors
                                          /slmfleet-adapter.json   (name, version, sha256, files)

Endpoint, region and credentials come from the standard AWS environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ...), so the same code talks to AWS S3 or a local S3-compatible store.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from serving.adapters.meta import CONFIG_NAME, WEIGHT_NAMES, AdapterConfigError, AdapterMeta, parse_adapter_config
from serving.api.fields import parse_s3_uri

MANIFEST_NAME = "slmfleet-adapter.json"


class AdapterStoreError(Exception):
    """An adapter could not be pushed, listed or fetched; the message says which and why."""


def digest_files(root: Path, names: list[str]) -> str:
    """sha256 over the named files' relative paths and contents (order-independent)."""
    outer = hashlib.sha256()
    for name in sorted(names):
        inner = hashlib.sha256((root / name).read_bytes()).hexdigest()
        outer.update(f"{name}\0{inner}\n".encode())
    return outer.hexdigest()


def adapter_files(directory: Path) -> list[str]:
    """Relative paths of the files that make up an adapter (the store's manifest excluded)."""
    return sorted(
        str(p.relative_to(directory)) for p in directory.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME
    )


def check_adapter_dir(directory: Path) -> AdapterMeta:
    """The adapter's metadata, or AdapterConfigError if ``directory`` is no PEFT LoRA adapter."""
    if not directory.is_dir():
        raise AdapterConfigError(f"{directory} is not a directory")
    config = directory / CONFIG_NAME
    if not config.is_file():
        raise AdapterConfigError(f"{directory} has no {CONFIG_NAME}: not a PEFT adapter directory")
    meta = parse_adapter_config(config.read_bytes())
    if not any((directory / w).is_file() for w in WEIGHT_NAMES):
        raise AdapterConfigError(f"{directory} has no adapter weights ({' or '.join(WEIGHT_NAMES)})")
    return meta


@dataclass(frozen=True)
class StoredAdapter:
    adapter: str
    version: str
    uri: str
    sha256: str | None
    base_model: str | None
    rank: int | None


def _join(bucket: str, *parts: str) -> str:
    return "s3://" + "/".join([bucket, *[p.strip("/") for p in parts if p.strip("/")]])


S3_CONNECT_TIMEOUT_S = 3
S3_READ_TIMEOUT_S = 10
S3_ATTEMPTS = 2
"""An S3 call that gets no connection or no bytes fails after about 2 x (3 or 10) s, not boto3's default of
minutes (60 s timeouts, retried): a cold adapter load during an S3 outage answers 503 soon, and a blackholed
store never hangs a request (or the capture writer, or the limiter's snapshots)."""


def s3_client():
    """A boto3 S3 client from the standard AWS environment (AWS_ENDPOINT_URL for S3-compatible stores)."""
    import boto3
    from botocore.config import Config

    # Without a region boto3 refuses to sign; S3-compatible stores ignore the value.
    return boto3.client("s3", region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"), config=Config(
        connect_timeout=S3_CONNECT_TIMEOUT_S, read_timeout=S3_READ_TIMEOUT_S,
        retries={"max_attempts": S3_ATTEMPTS, "mode": "standard"}))


class AdapterStore:
    """Thin boto3 layer over the layout above."""

    def __init__(self, client=None):
        self.s3 = client or s3_client()

    def _call(self, what: str, fn, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchBucket",):
                raise AdapterStoreError(f"{what}: bucket '{kwargs.get('Bucket')}' does not exist") from None
            raise AdapterStoreError(f"{what}: {code or err}") from None
        except BotoCoreError as err:
            raise AdapterStoreError(f"{what}: {err}") from None

    def _objects(self, bucket: str, prefix: str) -> list[dict]:
        objects, token = [], None
        while True:
            kwargs = {"Bucket": bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(f"listing s3://{bucket}/{prefix}", self.s3.list_objects_v2, **kwargs)
            objects += page.get("Contents", [])
            if not page.get("IsTruncated"):
                return objects
            token = page["NextContinuationToken"]

    def _keys(self, bucket: str, prefix: str) -> list[str]:
        return [o["Key"] for o in self._objects(bucket, prefix)]

    def fingerprint(self, source: str) -> str:
        """What the files under ``source`` are, from one listing (names, sizes, ETags): it changes when
        any file is rewritten, so a cached copy of a version pinned by no sha256 is not reused stale."""
        bucket, prefix = parse_s3_uri(source)
        listed = sorted((o["Key"], o.get("Size"), o.get("ETag")) for o in self._objects(bucket, f"{prefix}/")
                        if o["Key"].rsplit("/", 1)[-1] != MANIFEST_NAME)
        return hashlib.sha256(json.dumps(listed).encode()).hexdigest()

    def push(self, directory: str | Path, *, adapter: str, version: str, to: str,
             lineage: dict | None = None) -> StoredAdapter:
        """Upload a PEFT adapter directory as ``<to>/<adapter>/<version>/``; versions are immutable.

        ``lineage`` (what the flywheel trained it from) is kept in the version's manifest."""
        directory = Path(directory)
        meta = check_adapter_dir(directory)
        bucket, prefix = parse_s3_uri(to)
        key_prefix = "/".join(p for p in (prefix, adapter, version) if p)
        uri = _join(bucket, key_prefix)
        if self._keys(bucket, key_prefix + "/"):
            raise AdapterStoreError(
                f"{uri} already holds a version; versions are immutable, push under a new --version"
            )
        names = adapter_files(directory)
        sha = digest_files(directory, names)
        self.upload_dir(directory, uri, names=names)
        manifest = {"adapter": adapter, "version": version, "sha256": sha, "files": names,
                    "baseModel": meta.base_model, "rank": meta.rank}
        if lineage is not None:
            manifest["lineage"] = lineage
        # Written last: a version without its manifest is an interrupted push, not a version.
        self._call(f"writing {MANIFEST_NAME} to {uri}", self.s3.put_object, Bucket=bucket,
                   Key=f"{key_prefix}/{MANIFEST_NAME}", Body=json.dumps(manifest, indent=2).encode())
        return StoredAdapter(adapter, version, uri, sha, meta.base_model, meta.rank)

    def upload_dir(self, directory: str | Path, uri: str, *, names: list[str] | None = None) -> None:
        """Upload the files under ``directory`` to ``uri`` (e.g. a base model's weights)."""
        directory = Path(directory)
        bucket, prefix = parse_s3_uri(uri)
        for name in names if names is not None else adapter_files(directory):
            key = f"{prefix}/{name}" if prefix else name
            self._call(f"uploading {name} to {uri}", self.s3.upload_file,
                       Filename=str(directory / name), Bucket=bucket, Key=key)

    def list(self, uri: str) -> list[StoredAdapter]:
        """Every pushed adapter version under ``uri`` (found by its manifest)."""
        bucket, prefix = parse_s3_uri(uri)
        out = []
        for key in self._keys(bucket, f"{prefix}/" if prefix else ""):
            if key.rsplit("/", 1)[-1] != MANIFEST_NAME:
                continue
            body = self._call(f"reading s3://{bucket}/{key}", self.s3.get_object, Bucket=bucket, Key=key)
            m = json.loads(body["Body"].read())
            out.append(StoredAdapter(m["adapter"], m["version"], _join(bucket, key.rsplit("/", 1)[0]),
                                     m.get("sha256"), m.get("baseModel"), m.get("rank")))
        return sorted(out, key=lambda s: (s.adapter, s.version))

    def read_manifest(self, source: str) -> dict:
        """The manifest ``push`` wrote for the version at ``source`` (sha256, files, base, lineage)."""
        bucket, prefix = parse_s3_uri(source)
        key = f"{prefix}/{MANIFEST_NAME}" if prefix else MANIFEST_NAME
        body = self._call(f"reading {source}/{MANIFEST_NAME} (was it pushed with `slm-fleet adapters push` or "
                          "`flywheel train`?)", self.s3.get_object, Bucket=bucket, Key=key)
        return json.loads(body["Body"].read())

    def write_manifest(self, source: str, manifest: dict) -> None:
        """Rewrite a version's manifest (``flywheel propose`` adds the threshold it passed to the lineage)."""
        bucket, prefix = parse_s3_uri(source)
        key = f"{prefix}/{MANIFEST_NAME}" if prefix else MANIFEST_NAME
        self._call(f"writing {source}/{MANIFEST_NAME}", self.s3.put_object, Bucket=bucket, Key=key,
                   Body=json.dumps(manifest, indent=2).encode())

    def read_config(self, source: str) -> AdapterMeta:
        """The adapter_config.json under ``source``, parsed; errors say what is missing where."""
        bucket, prefix = parse_s3_uri(source)
        key = f"{prefix}/{CONFIG_NAME}" if prefix else CONFIG_NAME
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except BotoCoreError as err:  # no connection, a timeout: the store is unreachable
            raise AdapterStoreError(f"reading {source}/{CONFIG_NAME}: S3 unreachable: {err}") from None
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NoSuchBucket"):
                raise AdapterStoreError(
                    f"no {CONFIG_NAME} at {source} ({code}); push the adapter there with `slm-fleet adapters push`"
                ) from None
            raise AdapterStoreError(f"reading {source}/{CONFIG_NAME}: {code or err}") from None
        try:
            return parse_adapter_config(body)
        except AdapterConfigError as err:
            raise AdapterStoreError(f"{source}: {err}") from None

    def download(self, source: str, dest: str | Path, *, sha256: str | None = None) -> str:
        """Fetch the adapter files under ``source`` into ``dest``; returns their digest.

        With ``sha256``, files that do not match are deleted and AdapterStoreError is raised.
        """
        bucket, prefix = parse_s3_uri(source)
        dest = Path(dest)
        keys = [k for k in self._keys(bucket, f"{prefix}/") if k.rsplit("/", 1)[-1] != MANIFEST_NAME]
        if not keys:
            raise AdapterStoreError(f"no adapter files at {source}; "
                                    "push the adapter there with `slm-fleet adapters push`")
        names = []
        for key in keys:
            name = key[len(prefix) + 1:]
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            self._call(f"downloading {key}", self.s3.download_file, Bucket=bucket, Key=key, Filename=str(dest / name))
            names.append(name)
        digest = digest_files(dest, names)
        if sha256 is not None and digest != sha256:
            for name in names:
                (dest / name).unlink(missing_ok=True)
            raise AdapterStoreError(
                f"files at {source} have sha256 {digest}, expected {sha256}: the adapter is corrupt "
                "or was overwritten; re-push it as a new version"
            )
        return digest


def source_problems(spec, store: AdapterStore) -> list:
    """Problems with the adapter files a fleet points at: missing, unreadable, wrong base, rank.

    Reads only each version's adapter_config.json, never the weights.
    """
    from serving.adapters.meta import adapter_problems
    from serving.api.problems import Problem

    problems = []
    for i, adapter in enumerate(spec.adapters):
        base = next((b for b in spec.base_models if b.name == adapter.base_model), None)
        for j, v in enumerate(adapter.versions):
            path = f"spec.adapters[{i}].versions[{j}].source"
            try:
                meta = store.read_config(v.source)
            except AdapterStoreError as err:
                problems.append(Problem(path, f"adapter '{adapter.name}' version '{v.version}': {err}"))
                continue
            for p in adapter_problems(meta, base=base) if base else []:
                problems.append(Problem(path, f"adapter '{adapter.name}' version '{v.version}' {p}"))
    return problems
