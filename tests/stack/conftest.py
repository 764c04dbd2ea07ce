"""The real stack, started once per test session: moto S3, Ray Serve, vLLM on CPU, tiny model.

The test fleet is the quickstart fleet plus routes that exercise splits and failures:
- ``ab``: 50/50 between two adapters, for stickiness;
- ``ghost``: a version that was never pushed; ``corrupt``: a version whose sha256 is wrong;
- ``misfit``: an adapter trained on another base;
and a second base, ``tiny-plain``: the same weights with no tool-call parser.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from load_tests.tcp_proxy import TCPProxy
from serving.adapters.store import AdapterStore
from serving.api.documents import load_fleet_file
from serving.api.fleet import parse_fleet
from serving.local import runtime as local_runtime
from serving.local.demo import ensure_assets, stage
from serving.local.ports import free_port
from serving.local.s3 import local_s3
from tests.stack.otlp_receiver import OTLPReceiver
from tests.stack.prometheus_server import Prometheus

ROOT = Path(__file__).parents[2]
QUICKSTART = ROOT / "manifests/examples/quickstart.yaml"
ASSETS = Path(os.environ.get("SLMFLEET_TEST_ASSETS", ROOT / ".demo/assets"))
BUCKET = "slmfleet-demo"
CAPTURE_SECRET = "stack-test-capture-secret"
"""The key of captured callerIds: in the environment Ray's workers inherit (SLMFLEET_CAPTURE_SECRET)."""


def _test_fleet() -> dict:
    spec = yaml.safe_load(QUICKSTART.read_text())["spec"]
    spec = copy.deepcopy(spec)
    # The same weights without a tool-call parser: what a request with tools gets from such a base.
    plain = copy.deepcopy(spec["baseModels"][0])
    plain["engine"].pop("toolCallParser")
    plain["engine"].pop("toolStrictLevel")
    spec["baseModels"].append({**plain, "name": "tiny-plain"})
    spec["adapters"] += [
        {"name": "ghost", "baseModel": "tiny-llama",
         "versions": [{"version": "v1", "source": f"s3://{BUCKET}/adapters/ghost/v1"}]},
        {"name": "corrupt", "baseModel": "tiny-llama",
         "versions": [{"version": "v1", "source": f"s3://{BUCKET}/adapters/shout/v1", "sha256": "0" * 64}]},
        {"name": "misfit", "baseModel": "tiny-llama",
         "versions": [{"version": "v1", "source": f"s3://{BUCKET}/adapters/misfit/v1"}]},
    ]
    spec["routes"] += [
        {"name": "ab", "targets": [{"adapter": "shout", "version": "v1", "weight": 50},
                                   {"adapter": "reverse", "version": "v1", "weight": 50}]},
        {"name": "ghost", "targets": [{"adapter": "ghost", "version": "v1"}]},
        {"name": "corrupt", "targets": [{"adapter": "corrupt", "version": "v1"}]},
        {"name": "misfit", "targets": [{"adapter": "misfit", "version": "v1"}]},
    ]
    return spec


HEAVY_LAST = ("test_autoscaling.py", "test_families.py")
"""Modules that load the machine most (a second replica under Locust; a second Serve application of three
engines at a time): they run after the other stack tests. Run mid-session (CI, stop 28), the tests after them
that wait on Prometheus, rollouts and cold loads timed out."""


def pytest_collection_modifyitems(config, items):
    """Every test under tests/stack is a ``stack`` test: ``pytest -m "not stack"`` leaves them out. The
    HEAVY_LAST modules go last, in that order (a stable sort keeps every other test where it was)."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.stack)
    heavy = [here / name for name in HEAVY_LAST]
    items.sort(key=lambda item: heavy.index(item.path) + 1 if item.path in heavy else 0)


class Fleet:
    def __init__(self, url: str, spec_data: dict, assets: dict, metrics_url: str):
        self.url, self.spec_data, self.assets, self.metrics_url = url, spec_data, assets, metrics_url
        self.spec = parse_fleet(spec_data)

    def deploy(self, spec_data: dict) -> None:
        local_runtime.deploy(parse_fleet(spec_data), port=self.port)

    def counter(self, name: str, **labels: str) -> float:
        """The sum of a fleet counter's series (Ray exports it as ray_<name>) whose labels include ``labels``."""
        text = httpx.get(self.metrics_url, timeout=30).text
        return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
                   if s.name == f"ray_{name}" and labels.items() <= s.labels.items())

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@pytest.fixture(scope="session")
def s3_proxy():
    """The local S3 behind a TCP proxy the fleet talks through, so a test can take S3 away (drop or blackhole its
    connections) and give it back without emptying it."""
    with local_s3(buckets=(BUCKET,)) as url:
        proxy = TCPProxy(int(url.rsplit(":", 1)[1]))
        os.environ["AWS_ENDPOINT_URL"] = proxy.url  # before Ray starts: its workers inherit it
        try:
            yield proxy
        finally:
            proxy.close()


@pytest.fixture(scope="session")
def s3(s3_proxy):
    return s3_proxy.url


@pytest.fixture(scope="session")
def assets():
    return ensure_assets(ASSETS)


@pytest.fixture(scope="session")
def otlp():
    with OTLPReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def fleet(s3, assets, otlp, tmp_path_factory):
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    store = AdapterStore()
    misfit = tmp_path_factory.mktemp("misfit")
    shutil.copytree(assets["adapters"]["shout"], misfit, dirs_exist_ok=True)
    cfg = json.loads((misfit / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "Qwen/Qwen3-1.7B"
    (misfit / "adapter_config.json").write_text(json.dumps(cfg))

    spec_data = _test_fleet()
    stage(load_fleet_file(QUICKSTART), assets, store)
    store.push(misfit, adapter="misfit", version="v1", to=f"s3://{BUCKET}/adapters")

    port = free_port()
    metrics_port = free_port()
    while metrics_port == port:
        metrics_port = free_port()
    # Ray's workers inherit this environment: the replicas export their spans to ``otlp``.
    os.environ.update(OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url, OTEL_BSP_SCHEDULE_DELAY="100",
                      OTEL_SERVICE_NAME="slm-fleet-test", SLMFLEET_CAPTURE_SECRET=CAPTURE_SECRET)
    # 14 logical CPUs on 2 cores: a base replica takes its resources.cpu plus 1 (its own); the faults and
    # autoscaling tests run a second replica of tiny-plain beside the two bases, and the families test six more
    # bases of 0.5 CPU each.
    local_runtime.start_ray(num_cpus=14, metrics_port=metrics_port, metrics_report_interval_ms=500)
    try:
        local_runtime.deploy(parse_fleet(spec_data), port=port)
        yield Fleet(f"http://127.0.0.1:{port}", spec_data, assets, f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        local_runtime.shutdown()


@pytest.fixture(scope="session")
def prometheus(fleet, tmp_path_factory):
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), fleet.metrics_url.removeprefix("http://").split("/")[0])
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def client(fleet):
    with httpx.Client(base_url=fleet.url, timeout=120) as c:
        yield c
