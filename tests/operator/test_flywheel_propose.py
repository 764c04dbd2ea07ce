"""`slm-fleet flywheel propose --modelfleet`: the candidate's version and canary patched into a ModelFleet
through the Kubernetes API (kmock), its lineage recorded in the adapter store (local S3)."""

from __future__ import annotations

import asyncio
import json

import pytest

from serving.local.flywheel_loop import fleet_document
from serving.local.s3 import local_s3
from tests.operator.conftest import FLEETS

SOURCE = "s3://slmfleet-demo/adapters/assistant/v2"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture
def s3():
    with local_s3(buckets=("slmfleet-demo",)) as url:
        import boto3

        boto3.client("s3").put_object(Bucket="slmfleet-demo", Key="adapters/assistant/v2/slmfleet-adapter.json",
                                      Body=json.dumps({"adapter": "assistant", "version": "v2", "sha256": "b" * 64,
                                                       "lineage": {"dataset": "d"}}).encode())
        yield url


def evaluation(tmp_path, pass_share: float) -> str:
    dataset = tmp_path / "dataset"
    dataset.mkdir(exist_ok=True)
    (dataset / "manifest.json").write_text(json.dumps({"kind": "slmfleet.dataset", "route": "assistant"}))
    (dataset / "train.jsonl").write_text("")
    (dataset / "eval.jsonl").write_text(json.dumps({"messages": [
        {"role": "user", "content": '"get" {"city": "paris"}'},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "paris"}'}}]}], "tools": TOOLS}) + "\n")
    path = tmp_path / f"evaluation-{pass_share}.json"
    path.write_text(json.dumps({
        "kind": "slmfleet.evaluation", "dataset": str(dataset), "route": "assistant",
        "candidate": {"passShare": pass_share, "agreement": pass_share}, "candidateAdapter": "assistant",
        "candidateVersion": "v2", "candidateSource": SOURCE, "candidateSha256": "b" * 64}))
    return str(path)


async def test_propose_patches_the_modelfleet_and_records_the_threshold(k8s, api, s3, tmp_path, monkeypatch, capsys):
    from serving.adapters.store import AdapterStore
    from serving.cli.main import main

    monkeypatch.setenv("SLMFLEET_KUBE_API", str(k8s.url).rstrip("/"))
    doc = fleet_document("http://teacher.example/v1")
    doc["metadata"] = {"name": "flywheel", "namespace": "default"}
    assert (await api.post(FLEETS, json=doc)).status_code in (200, 201)
    argv = ["flywheel", "propose", "--modelfleet", "flywheel", "--namespace", "default", "--candidate",
            "assistant@v2", "--interval", "30s"]

    assert await asyncio.to_thread(main, [*argv, "--evaluation", evaluation(tmp_path, 0.5)]) == 1
    assert "passed the first tier's checks on 50% of the eval split, under the threshold 90%" in capsys.readouterr().err
    fleet = (await api.get(f"{FLEETS}/flywheel")).json()
    assert [v["version"] for v in fleet["spec"]["adapters"][0]["versions"]] == ["v1"]  # untouched

    assert await asyncio.to_thread(main, [*argv, "--evaluation", evaluation(tmp_path, 0.95)]) == 0
    assert "proposed assistant@v2 on route 'assistant-small' in ModelFleet default/flywheel" in capsys.readouterr().out
    fleet = (await api.get(f"{FLEETS}/flywheel")).json()
    versions = fleet["spec"]["adapters"][0]["versions"]
    assert versions[-1] == {"version": "v2", "source": SOURCE, "sha256": "b" * 64}
    small = next(r for r in fleet["spec"]["routes"] if r["name"] == "assistant-small")
    canary = small["strategy"]["canary"]
    assert canary["version"] == "v2" and canary["interval"] == "30s"
    (probe,) = canary["analysis"]["probes"]["prompts"]
    assert probe["toolCall"] is True and probe["tools"] == TOOLS
    assert AdapterStore().read_manifest(SOURCE)["lineage"]["proposal"]["threshold"] == 0.9

    assert await asyncio.to_thread(main, [*argv, "--evaluation", evaluation(tmp_path, 0.95)]) == 1
    assert "already declares version 'v2'" in capsys.readouterr().err
