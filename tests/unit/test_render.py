"""The RayService the operator renders: valid for KubeRay's own CRD schema and for Ray Serve."""

from __future__ import annotations

import copy
import shlex
from dataclasses import asdict
from functools import cache
from pathlib import Path

import pytest
import yaml
from openapi_schema_validator import OAS30Validator
from ray.serve.schema import ServeDeploySchema

from operators.render import (
    rayjob_yaml,
    rayservice_yaml,
    render_rayservice,
    render_training_rayjob,
    training_entrypoint,
)
from operators.settings import OperatorSettings
from serving.api.documents import load_fleet_file
from serving.api.fleet import FleetSpec
from serving.flywheel.training import TrainSettings
from tests.unit.fleets import fleet

ROOT = Path(__file__).parents[2]
KUBERAY_CRD = ROOT / "tests" / "data" / "kuberay" / "ray.io_rayservices.yaml"  # see its README
KUBERAY_RAYJOB_CRD = ROOT / "tests" / "data" / "kuberay" / "ray.io_rayjobs.yaml"
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
FULL = OperatorSettings(ray_image="registry.test/serving:1", s3_endpoint_url="http://minio.storage:9000",
                        s3_credentials_secret="bucket-creds", ray_service_account="fleet-reader",
                        otlp_endpoint="http://otel-collector:4318")


def _closed(node):
    """Objects with declared properties refuse unknown fields (the API server would prune them)."""
    if isinstance(node, list):
        return [_closed(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _closed(v) for k, v in node.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@cache
def kuberay_validator(path: Path = KUBERAY_CRD) -> OAS30Validator:
    if not path.is_file():
        pytest.fail(f"KubeRay's CRD is missing at {path}")
    crd = yaml.safe_load(path.read_text())
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return OAS30Validator(_closed(copy.deepcopy(v1["schema"]["openAPIV3Schema"])))


def kuberay_errors(obj: dict, crd: Path = KUBERAY_CRD) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in kuberay_validator(crd).iter_errors(obj)]


def gpu_fleet() -> FleetSpec:
    return FleetSpec.model_validate(fleet(**{
        "baseModels.0.resources": {"cpu": 4, "gpu": 2, "accelerator": "L4"},
        "baseModels.0.autoscaling": {"minReplicas": 0, "maxReplicas": 4},
    }))


SPECS = {p.name: load_fleet_file(p) for p in EXAMPLES} | {"gpu-accelerator": gpu_fleet()}


@pytest.mark.parametrize("settings", [OperatorSettings(), FULL], ids=["defaults", "s3-and-account"])
@pytest.mark.parametrize("name", SPECS)
def test_rendered_rayservice_is_valid_for_kuberay_and_ray_serve(name, settings):
    rs = render_rayservice(SPECS[name], name="fleet", namespace="team-a", settings=settings, owner_uid="u-1")
    assert kuberay_errors(rs) == []
    ServeDeploySchema.model_validate(yaml.safe_load(rs["spec"]["serveConfigV2"]))
    assert yaml.safe_load(rayservice_yaml(rs)) == rs  # the review YAML is the same object


def test_one_worker_group_per_base_model_sized_for_one_replica():
    rs = render_rayservice(gpu_fleet(), name="f", namespace="ns", settings=FULL)
    cluster = rs["spec"]["rayClusterConfig"]
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert list(groups) == ["tiny-llama", "tiny-qwen"]
    gpu = groups["tiny-llama"]
    assert (gpu["replicas"], gpu["minReplicas"], gpu["maxReplicas"]) == (0, 0, 4)
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "5", "memory": "16Gi", "nvidia.com/gpu": "2"}  # engine CPUs + 1 for the replica actor
    assert gpu["labels"] == {"slmfleet.io/base-model": "tiny-llama", "ray.io/accelerator-type": "L4"}
    assert gpu["resources"] == {"accelerator_type:L4": "1"}
    cpu = groups["tiny-qwen"]
    limits = cpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "resources" not in cpu and "nvidia.com/gpu" not in limits
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no engines on the head
    assert cluster["enableInTreeAutoscaling"] is True


def test_replicas_ask_for_the_accelerator_the_group_declares():
    rs = render_rayservice(gpu_fleet(), name="f", namespace="ns", settings=OperatorSettings())
    app = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]
    assert "http_options" not in yaml.safe_load(rs["spec"]["serveConfigV2"])  # KubeRay runs the proxy
    assert app["args"]["baseModels"][0]["resources"]["accelerator"] == "L4"


def test_s3_tracing_and_service_account_reach_every_ray_pod():
    rs = render_rayservice(gpu_fleet(), name="f", namespace="ns", settings=FULL)
    cluster = rs["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        assert pod["serviceAccountName"] == "fleet-reader"
        (c,) = pod["containers"]
        assert c["image"] == "registry.test/serving:1"
        assert c["env"] == [{"name": "AWS_ENDPOINT_URL", "value": "http://minio.storage:9000"},
                            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector:4318"}]
        assert c["envFrom"] == [{"secretRef": {"name": "bucket-creds"}}]


def test_defaults_add_no_s3_environment_or_account():
    rs = render_rayservice(gpu_fleet(), name="f", namespace="ns", settings=OperatorSettings())
    head = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    assert "serviceAccountName" not in head and "env" not in head["containers"][0]


def test_owner_reference_only_with_an_owner():
    spec = gpu_fleet()
    assert "ownerReferences" not in render_rayservice(spec, name="f", namespace="ns", settings=FULL)["metadata"]
    owned = render_rayservice(spec, name="f", namespace="ns", settings=FULL, owner_uid="uid-9")["metadata"]
    assert owned["ownerReferences"] == [{"apiVersion": "slmfleet.io/v1alpha1", "kind": "ModelFleet", "name": "f",
                                         "uid": "uid-9", "controller": True, "blockOwnerDeletion": True}]
    assert owned["labels"]["slmfleet.io/fleet"] == "f"


def test_rendering_is_deterministic():
    a = render_rayservice(gpu_fleet(), name="f", namespace="ns", settings=FULL)
    b = render_rayservice(gpu_fleet(), name="f", namespace="ns", settings=FULL)
    assert rayservice_yaml(a) == rayservice_yaml(b)


def test_schema_check_catches_a_broken_rayservice():
    """The validator is strict enough to matter: a misplaced field fails it."""
    rs = render_rayservice(gpu_fleet(), name="f", namespace="ns", settings=FULL)
    rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["gpus"] = 1
    rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]["maxReplicas"] = "4"
    errors = kuberay_errors(rs)
    assert any("workerGroupSpecs.0" in e and "'gpus' was unexpected" in e for e in errors), errors
    assert any("workerGroupSpecs.1.maxReplicas" in e for e in errors), errors


@pytest.mark.parametrize("settings", [OperatorSettings(), FULL], ids=["defaults", "s3-and-account"])
@pytest.mark.parametrize("gpus", [0, 1])
def test_training_rayjob_is_valid_for_kuberay(settings, gpus):
    entrypoint = training_entrypoint(dataset="s3://b/d", base_source="s3://b/models/tiny", adapter="a", version="v2",
                                     to="s3://b/adapters", settings=asdict(TrainSettings(steps=300)))
    job = render_training_rayjob(name="train-a-v2", namespace="ml", settings=settings, entrypoint=entrypoint,
                                 gpus=gpus)
    assert kuberay_errors(job, KUBERAY_RAYJOB_CRD) == []
    assert yaml.safe_load(rayjob_yaml(job)) == job
    args = shlex.split(job["spec"]["entrypoint"])
    assert args[:4] == ["slm-fleet", "flywheel", "train", "s3://b/d"] and "--ray-train" in args
    assert args[args.index("--steps") + 1] == "300" and "--epochs" not in args and "--start-from" not in args
    warm = training_entrypoint(dataset="s3://b/d", base_source="s3://b/models/tiny", adapter="a", version="v2",
                               to="s3://b/adapters", settings=asdict(TrainSettings()), start_from="s3://b/adapters/a/v1")
    warm = shlex.split(warm)
    assert warm[warm.index("--start-from") + 1] == "s3://b/adapters/a/v1"
    worker = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert ("nvidia.com/gpu" in worker["resources"]["limits"]) is bool(gpus)
    assert job["spec"]["shutdownAfterJobFinishes"] is True
