"""Adapter downloads on a node shared by replicas: never delete a directory an engine may read."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.adapters.store import AdapterStoreError
from serving.dataplane.adapter_loader import SOURCE_MARKER, fetch_once


class FakeStore:
    def __init__(self, during=None, fail=False, files="v1 files"):
        self.calls, self.during, self.fail, self.files = [], during, fail, files

    def fingerprint(self, source):
        return f"{source}:{self.files}"

    def download(self, source, dest, *, sha256=None):
        self.calls.append(source)
        if self.fail:
            raise AdapterStoreError("files have sha256 x, expected y")
        (Path(dest) / "adapter_model.safetensors").write_text(source)
        if self.during:
            self.during()


def leftovers(local: Path) -> list[str]:
    return sorted(p.name for p in local.parent.iterdir() if p != local)


def test_first_fetch_downloads_then_reuses(tmp_path):
    local, store = tmp_path / "shout@v1", FakeStore()
    fetch_once(store, "s3://b/shout/v1", None, local)
    fetch_once(store, "s3://b/shout/v1", None, local)
    assert store.calls == ["s3://b/shout/v1"]
    assert (local / "adapter_model.safetensors").read_text() == "s3://b/shout/v1"
    assert (local / SOURCE_MARKER).is_file() and leftovers(local) == []


def test_a_replica_that_finishes_first_keeps_its_directory(tmp_path):
    local = tmp_path / "shout@v1"
    other = FakeStore()

    def another_replica_finishes():
        fetch_once(other, "s3://b/shout/v1", None, local)
        (local / "in-use-by-engine").write_text("x")

    fetch_once(FakeStore(during=another_replica_finishes), "s3://b/shout/v1", None, local)
    assert (local / "in-use-by-engine").is_file()  # not replaced under the other engine
    assert leftovers(local) == []


def test_a_different_source_for_the_same_id_replaces_it(tmp_path):
    local = tmp_path / "shout@v1"
    fetch_once(FakeStore(), "s3://b/shout/v1", None, local)
    fetch_once(FakeStore(), "s3://b/elsewhere/v1", "a" * 64, local)
    assert (local / "adapter_model.safetensors").read_text() == "s3://b/elsewhere/v1"
    assert leftovers(local) == []


def test_a_failed_download_leaves_nothing_behind(tmp_path):
    local = tmp_path / "shout@v1"
    with pytest.raises(AdapterStoreError):
        fetch_once(FakeStore(fail=True), "s3://b/shout/v1", "0" * 64, local)
    assert not local.exists() and leftovers(local) == []


def test_files_pushed_again_under_a_source_with_no_sha256_are_fetched_again(tmp_path):
    """The demo and the tests regenerate their adapters and push them under the same sources."""
    local, store = tmp_path / "shout@v1", FakeStore()
    fetch_once(store, "s3://b/shout/v1", None, local)
    store.files = "regenerated files"
    fetch_once(store, "s3://b/shout/v1", None, local)
    assert store.calls == ["s3://b/shout/v1", "s3://b/shout/v1"] and leftovers(local) == []
