"""Operator settings from the environment, the generated CRD, and the CLI commands around them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from operators.crd import crd, crd_yaml
from operators.settings import OperatorSettings, SettingsError
from serving.cli.main import main

QUICKSTART = str(Path(__file__).parents[2] / "manifests" / "examples" / "quickstart.yaml")


def test_settings_default_and_from_env():
    assert OperatorSettings.from_env({}) == OperatorSettings()
    s = OperatorSettings.from_env({"SLMFLEET_RAY_IMAGE": "r/s:2", "SLMFLEET_WORKER_MEMORY": "48Gi",
                                   "SLMFLEET_S3_ENDPOINT_URL": "", "UNRELATED": "x"})
    assert (s.ray_image, s.worker_memory, s.s3_endpoint_url) == ("r/s:2", "48Gi", None)  # empty means unset


@pytest.mark.parametrize("env,words", [
    ({"SLMFLEET_HEAD_MEMORY": "lots"}, "SLMFLEET_HEAD_MEMORY='lots' is not a Kubernetes quantity"),
    ({"SLMFLEET_HEAD_CPU": "1 core"}, "SLMFLEET_HEAD_CPU='1 core' is not a Kubernetes quantity"),
    ({"SLMFLEET_IMAGE_PULL_POLICY": "Sometimes"}, "must be one of Always, IfNotPresent, Never"),
    ({"SLMFLEET_RAY_VERSION": "latest"}, "SLMFLEET_RAY_VERSION='latest' is not a Ray version"),
    ({"SLMFLEET_S3_ENDPOINT_URL": "minio:9000"}, "must be an http(s):// URL"),
    ({"SLMFLEET_OTLP_ENDPOINT": "collector:4318"}, "SLMFLEET_OTLP_ENDPOINT='collector:4318' must be an http(s):// URL"),
    ({"SLMFLEET_S3_CREDENTIALS_SECRET": "Bucket_Creds"}, "is not a Kubernetes object name"),
    ({"SLMFLEET_PROMETHEUS_URL": "prometheus:9090"},
     "SLMFLEET_PROMETHEUS_URL='prometheus:9090' must be an http(s):// URL"),
    ({"SLMFLEET_ROLLOUT_TICK_SECONDS": "0"}, "SLMFLEET_ROLLOUT_TICK_SECONDS='0' must be a positive number"),
    ({"SLMFLEET_ROLLOUT_TICK_SECONDS": "often"}, "must be a positive number of seconds"),
    ({"SLMFLEET_FLEET_URL": "http://{fleet}:8000"}, "may only use {name} and {namespace}"),
], ids=["memory", "cpu", "pull-policy", "ray-version", "endpoint", "otlp-endpoint", "secret-name", "prometheus",
        "tick-zero", "tick-word", "fleet-url"])
def test_bad_settings_name_the_variable(env, words):
    with pytest.raises(SettingsError, match="invalid operator settings") as err:
        OperatorSettings.from_env(env)
    assert words in str(err.value)


def _walk(node, path="$"):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def test_crd_is_structural_with_columns_and_status():
    doc = crd()
    (version,) = doc["spec"]["versions"]
    assert doc["metadata"]["name"] == "modelfleets.slmfleet.io"
    assert doc["spec"]["names"]["shortNames"] == ["mf"] and doc["spec"]["scope"] == "Namespaced"
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Ready", "Routes", "Adapters", "Rollout", "Canary", "Age"]
    schema = version["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema["properties"]["spec"], "spec"):
        if ".properties." in path + "." and path.endswith(".properties"):
            continue
        if "properties" in node or "items" in node or "enum" in node:
            assert "type" in node, f"{path} has no type: the API server rejects non-structural schemas"
        for key in ("$ref", "anyOf", "oneOf", "allOf", "const", "title"):
            assert key not in node, f"{path} uses {key}"
    assert schema["properties"]["spec"]["properties"]["baseModels"]["items"]["properties"]["resources"][
        "properties"]["accelerator"]["enum"][0] == "T4"


def test_crd_descriptions_come_from_the_spec():
    routes = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["routes"]
    assert routes["description"] == "Public routes (model names)."


def test_accelerators_are_ones_ray_serve_llm_accepts():
    from ray.llm._internal.serve.core.configs.llm_config import AcceleratorType

    from serving.api.fleet import ACCELERATORS

    assert set(ACCELERATORS) <= {t.value for t in AcceleratorType}


def test_cli_crd_prints_the_crd(capsys):
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == crd_yaml()


def test_cli_render_prints_the_rayservice(capsys, monkeypatch):
    monkeypatch.setenv("SLMFLEET_RAY_IMAGE", "registry.test/serving:9")
    assert main(["render", QUICKSTART, "--namespace", "team-a"]) == 0
    rs = yaml.safe_load(capsys.readouterr().out)
    assert (rs["kind"], rs["metadata"]["name"], rs["metadata"]["namespace"]) == ("RayService", "quickstart", "team-a")
    assert "ownerReferences" not in rs["metadata"]  # the operator adds it; GitOps users own the object
    assert rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.test/serving:9"
    assert "applications:" in rs["spec"]["serveConfigV2"]


@pytest.mark.parametrize("args,env,words", [
    (["render", "missing.yaml"], {}, "cannot read file: No such file"),
    (["render", "BARE"], {}, "a bare spec has no metadata.name; pass --name NAME"),
    (["render", QUICKSTART], {"SLMFLEET_HEAD_MEMORY": "x"}, "SLMFLEET_HEAD_MEMORY='x'"),
], ids=["missing-file", "bare-spec", "bad-setting"])
def test_cli_render_errors(args, env, words, capsys, monkeypatch, tmp_path):
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump(yaml.safe_load(open(QUICKSTART))["spec"]))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main([str(bare) if a == "BARE" else a for a in args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err


async def test_the_rollout_tick_comes_from_the_settings_the_operator_started_with():
    import types

    from operators import handlers

    class Stopped:
        """kopf's DaemonStopped as the daemon uses it: falsy until stopped, wait(timeout)."""

        def __init__(self, ticks):
            self.waits, self.ticks = [], ticks

        def __bool__(self):
            return len(self.waits) >= self.ticks

        async def wait(self, timeout):
            self.waits.append(timeout)

    memo = types.SimpleNamespace(settings=OperatorSettings(rollout_tick_seconds=0.25))
    body = {"metadata": {"name": "f", "namespace": "default"}, "status": {}}  # no RayService yet: a quiet tick
    stopped = Stopped(ticks=3)
    await handlers.drive_rollouts(body=body, memo=memo, stopped=stopped)
    assert stopped.waits == [0.25, 0.25, 0.25]
