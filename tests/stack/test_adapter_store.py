"""The adapter store against a real S3 endpoint (moto server)."""

import json
import shutil

import boto3
import pytest

from serving.adapters.meta import AdapterConfigError
from serving.adapters.store import AdapterStore, AdapterStoreError, source_problems
from serving.api.fleet import parse_fleet

BUCKET = "store-tests"


@pytest.fixture(scope="module")
def store(s3):
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return AdapterStore()


def test_push_list_read_download_roundtrip(store, assets, tmp_path):
    stored = store.push(assets["adapters"]["json"], adapter="json", version="v7", to=f"s3://{BUCKET}/team-a")
    assert stored.uri == f"s3://{BUCKET}/team-a/json/v7"
    assert stored.base_model == "tiny-llama" and stored.rank == 8 and len(stored.sha256) == 64
    assert [(s.adapter, s.version, s.sha256) for s in store.list(f"s3://{BUCKET}/team-a")] == [
        ("json", "v7", stored.sha256)]
    assert store.read_config(stored.uri).rank == 8
    digest = store.download(stored.uri, tmp_path / "out", sha256=stored.sha256)
    assert digest == stored.sha256
    assert (tmp_path / "out" / "adapter_config.json").is_file()


def test_versions_are_immutable(store, assets):
    store.push(assets["adapters"]["shout"], adapter="shout", version="v1", to=f"s3://{BUCKET}/imm")
    with pytest.raises(AdapterStoreError, match="versions are immutable"):
        store.push(assets["adapters"]["reverse"], adapter="shout", version="v1", to=f"s3://{BUCKET}/imm")
    assert store.read_config(f"s3://{BUCKET}/imm/shout/v1").base_model == "tiny-llama"


def test_wrong_digest_deletes_the_download(store, assets, tmp_path):
    stored = store.push(assets["adapters"]["shout"], adapter="shout", version="v2", to=f"s3://{BUCKET}/dig")
    with pytest.raises(AdapterStoreError, match="expected " + "f" * 64):
        store.download(stored.uri, tmp_path / "out", sha256="f" * 64)
    assert not list((tmp_path / "out").rglob("*.safetensors"))


@pytest.mark.parametrize("breakage,words", [
    ("no_config", "no adapter_config.json"),
    ("no_weights", "no adapter weights"),
    ("bad_json", "not valid JSON"),
])
def test_push_refuses_what_is_not_a_peft_lora_adapter(store, assets, tmp_path, breakage, words):
    bad = tmp_path / "bad"
    shutil.copytree(assets["adapters"]["shout"], bad)
    if breakage == "no_config":
        (bad / "adapter_config.json").unlink()
    elif breakage == "no_weights":
        (bad / "adapter_model.safetensors").unlink()
    else:
        (bad / "adapter_config.json").write_text("{")
    with pytest.raises(AdapterConfigError, match=words):
        store.push(bad, adapter="bad", version="v1", to=f"s3://{BUCKET}/bad")
    assert store.list(f"s3://{BUCKET}/bad") == []


def test_missing_bucket_is_named(store, assets):
    with pytest.raises(AdapterStoreError, match="bucket 'no-such-bucket' does not exist"):
        store.push(assets["adapters"]["shout"], adapter="x", version="v1", to="s3://no-such-bucket/x")


def test_source_problems_find_missing_versions_and_wrong_bases(store, assets, tmp_path):
    misfit = tmp_path / "misfit"
    shutil.copytree(assets["adapters"]["shout"], misfit)
    cfg = json.loads((misfit / "adapter_config.json").read_text())
    (misfit / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": "other-base", "r": 16}))
    store.push(misfit, adapter="misfit", version="v1", to=f"s3://{BUCKET}/src")
    store.push(assets["adapters"]["shout"], adapter="shout", version="v1", to=f"s3://{BUCKET}/src")
    spec = parse_fleet({
        "baseModels": [{"name": "tiny-llama", "source": "/m", "engine": {"maxLoraRank": 8}}],
        "adapters": [
            {"name": "shout", "baseModel": "tiny-llama", "versions": [
                {"version": "v1", "source": f"s3://{BUCKET}/src/shout/v1"},
                {"version": "v2", "source": f"s3://{BUCKET}/src/shout/v2"}]},
            {"name": "misfit", "baseModel": "tiny-llama", "versions": [
                {"version": "v1", "source": f"s3://{BUCKET}/src/misfit/v1"}]},
        ],
        "routes": [{"name": "r", "targets": [{"adapter": "shout", "version": "v1"}]}],
    })
    problems = [str(p) for p in source_problems(spec, store)]
    assert len(problems) == 3, problems
    assert problems[0].startswith("spec.adapters[0].versions[1].source: adapter 'shout' version 'v2': "
                                  "no adapter_config.json")
    assert "trained on base 'other-base'" in problems[1]
    assert "rank 16, above maxLoraRank 8" in problems[2]


def test_the_fingerprint_changes_when_files_are_written_again(store, assets):
    uri = store.push(assets["adapters"]["shout"], adapter="shout", version="v1", to=f"s3://{BUCKET}/fp").uri
    before = store.fingerprint(uri)
    assert store.fingerprint(uri) == before
    store.upload_dir(assets["adapters"]["reverse"], uri)  # the same names, other weights
    assert store.fingerprint(uri) != before
