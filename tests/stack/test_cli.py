"""The slm-fleet CLI: exit codes and messages users see."""

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]


def cli(*args, env=None):
    import os

    return subprocess.run([sys.executable, "-m", "serving.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_validate_ok():
    out = cli("validate", "manifests/examples/quickstart.yaml")
    assert out.returncode == 0, out.stderr
    assert "valid: 1 base model(s), 4 adapter(s) with 4 version(s), 5 route(s)" in out.stdout


def test_validate_lists_every_problem_with_its_field(tmp_path):
    doc = yaml.safe_load((ROOT / "manifests/examples/quickstart.yaml").read_text())
    doc["spec"]["routes"][0]["targets"][0]["weight"] = 60
    doc["spec"]["adapters"][1]["baseModel"] = "llama-70b"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = cli("validate", str(path))
    assert out.returncode == 1
    assert "2 problem(s)" in out.stderr
    assert "spec.adapters[1].baseModel: adapter 'reverse' names unknown base model 'llama-70b'" in out.stderr
    assert "spec.routes[0].targets: weights of route 'shout' sum to 60; they must sum to 100" in out.stderr
    assert "Traceback" not in out.stderr


def test_validate_sources_against_s3(s3, fleet):
    out = cli("validate", "--sources", "manifests/examples/quickstart.yaml")
    assert out.returncode == 0, out.stderr
    assert "adapter sources checked" in out.stdout


def test_serve_config_prints_a_ray_serve_config():
    out = cli("serve-config", "manifests/examples/quickstart.yaml")
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    assert config["applications"][0]["import_path"] == "serving.dataplane.app:build_app"
    assert config["http_options"] == {"host": "0.0.0.0", "port": 8000}


def test_adapters_push_and_list(s3, assets):
    import boto3

    boto3.client("s3").create_bucket(Bucket="cli-tests")
    pushed = cli("adapters", "push", assets["adapters"]["reverse"], "--adapter", "reverse", "--version", "v3",
                 "--to", "s3://cli-tests/adapters")
    assert pushed.returncode == 0, pushed.stderr
    assert "pushed reverse v3 to s3://cli-tests/adapters/reverse/v3" in pushed.stdout
    listed = cli("adapters", "list", "s3://cli-tests/adapters")
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[0].split() == ["ADAPTER", "VERSION", "BASE", "RANK", "SHA256", "SOURCE"]
    assert listed.stdout.splitlines()[1].split()[:4] == ["reverse", "v3", "tiny-llama", "8"]
    again = cli("adapters", "push", assets["adapters"]["reverse"], "--adapter", "reverse", "--version", "v3",
                "--to", "s3://cli-tests/adapters")
    assert again.returncode == 1 and "versions are immutable" in again.stderr


def test_adapters_push_refuses_a_non_adapter_dir(s3, tmp_path):
    out = cli("adapters", "push", str(tmp_path), "--adapter", "x", "--version", "v1", "--to", "s3://cli-tests/a")
    assert out.returncode == 1
    assert "not pushed" in out.stderr and "no adapter_config.json" in out.stderr
