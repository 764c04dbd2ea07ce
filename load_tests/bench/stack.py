"""The local tiny fleet the benchmarks measure: moto S3, Ray Serve, vLLM on CPU, started once.

The bench fleet has one base (``tiny-llama``, ``maxLoras`` 4, 8 resident per replica) and:
- ``a0``..``a7``: eight adapters (copies of the demo adapters), a route each, for throughput;
- ``cold0``..``cold11``: twelve more, requested once cold then warm, for cold-load latency;
- ``base``: the base model without an adapter;
- ``tools``: the tool-calling specialist (adapter only, no route: the agents benchmark's cascade uses it).
Next to the fleet runs a second Serve application, ``direct``: Ray Serve LLM's own
``OpenAiIngress`` over the same base deployment, the baseline for the router's overhead.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path

from load_tests.tcp_proxy import TCPProxy
from serving.adapters.store import AdapterStore
from serving.api.fleet import parse_fleet
from serving.local import runtime as local_runtime
from serving.local.demo import ensure_assets
from serving.local.s3 import local_s3

ROOT = Path(__file__).parents[2]
BUCKET = "slmfleet-bench"
BASE = "tiny-llama"
MAX_LORAS = 4
THROUGHPUT_ADAPTERS = [f"a{i}" for i in range(8)]
COLD_ADAPTERS = [f"cold{i}" for i in range(12)]


def bench_fleet(replicas: int = 1, max_loras: int = MAX_LORAS, resident: int = 8) -> dict:
    adapters = THROUGHPUT_ADAPTERS + COLD_ADAPTERS
    return {
        "baseModels": [{
            "name": BASE, "source": f"s3://{BUCKET}/models/{BASE}",
            "engine": {"maxLoras": max_loras, "maxCpuLoras": resident, "maxLoraRank": 8, "maxModelLen": 256,
                       "dtype": "float32", "enforceEager": True, "toolCallParser": "hermes",
                       "toolStrictLevel": "parameter"},
            "resources": {"cpu": 1},
            "autoscaling": {"minReplicas": replicas, "maxReplicas": replicas},
        }],
        "adapters": [{"name": a, "baseModel": BASE,
                      "versions": [{"version": "v1", "source": f"s3://{BUCKET}/adapters/{a}/v1"}]}
                     for a in adapters + ["tools"]],
        "routes": [{"name": a, "targets": [{"adapter": a, "version": "v1"}]} for a in adapters]
        + [{"name": "base", "targets": [{"baseModel": BASE}]}],
    }


def direct_app(bases: list[str]) -> dict:
    """The ``direct`` application (load_tests/bench/direct.py) over the fleet's ``bases``."""
    return {"name": "direct", "route_prefix": "/direct", "import_path": "load_tests.bench.direct:build",
            "args": {"bases": list(bases)}, "runtime_env": {"env_vars": {"PYTHONPATH": str(ROOT)}}}


DIRECT_APP = direct_app([BASE])


def with_tenant(spec_data: dict) -> tuple[dict, Path, str]:
    """``spec_data`` with a tenant ``bench`` whose limits never bind, so that every request takes the key check and
    the limiter's whole path (leases, settling); its keys file and its key."""
    import copy
    import tempfile

    from serving.api.keys import format_keys, new_entry, new_key

    key = new_key()
    keys = Path(tempfile.mkdtemp(prefix="slmfleet-bench-keys-")) / "keys.yaml"
    keys.write_text(format_keys([new_entry("bench", key)]))
    tenanted = copy.deepcopy(spec_data)
    tenanted["tenants"] = [{"name": "bench", "routes": ["*"], "requestsPerMinute": 10_000_000,
                            "tokensPerMinute": 10_000_000_000, "budget": {"tokens": 10**15, "period": "month"}}]
    return tenanted, keys, key


class Stack:
    def __init__(self, url: str, spec_data: dict, metrics_url: str, s3_proxy=None):
        self.url, self.spec_data, self.metrics_url = url, spec_data, metrics_url
        self.s3_proxy = s3_proxy
        """The TCP proxy the fleet reaches S3 through (the faults benchmark takes S3 away with it)."""
        self.direct_url = f"{url}/direct"

    def redeploy(self, spec_data: dict, *, overrides: dict | None = None, extra_apps: tuple[dict, ...] = (),
                 keys_file: str | None = None) -> None:
        """Deploy ``spec_data`` in place, with the ``direct`` application over its bases (and ``extra_apps``);
        ``keys_file`` holds the tenants' keys of a spec with tenants."""
        spec = parse_fleet(spec_data)
        local_runtime.deploy(spec, port=self.port, overrides=overrides, keys_file=keys_file,
                             extra_apps=(direct_app([b.name for b in spec.base_models]), *extra_apps))
        self.spec_data = spec_data

    def restart(self, spec_data: dict, *, placement_switch: bool = False) -> None:
        """Deploy the fleet from scratch: callers' handles pick their request router only once. With
        ``placement_switch`` every base deployment gets the bench's switchable request router
        (load_tests/bench/switch_router.py), whose placement ``switch_router.set_mode`` changes in place."""
        from ray import serve

        from serving.render.serve_config import APP_NAME, base_deployment_name, request_router_config

        serve.delete("direct")
        serve.delete(APP_NAME)
        overrides = None
        if placement_switch:
            from load_tests.bench.switch_router import set_mode

            set_mode("balanced")  # the fleet's own, until a benchmark switches
            overrides = {base_deployment_name(b.name): {"request_router_config": {
                **request_router_config(b), "request_router_class": "load_tests.bench.switch_router:SwitchRouter"}}
                for b in parse_fleet(spec_data).base_models}
        self.redeploy(spec_data, overrides=overrides)

    def counter(self, name: str, **labels) -> float:
        """Sum of a fleet counter over its series (Ray exports it as ray_<name>)."""
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(self.metrics_url, timeout=10).text
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == f"ray_{name}" and all(s.labels.get(k) == v for k, v in labels.items()))

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def _stage(assets: dict) -> None:
    store = AdapterStore()
    store.s3.create_bucket(Bucket=BUCKET)
    store.upload_dir(assets["base"], f"s3://{BUCKET}/models/{BASE}")
    # The task adapters (the tool specialist answers tool requests only) under many names; and the tool
    # specialist as itself, for the agents benchmark.
    sources = itertools.cycle(sorted(path for name, path in assets["adapters"].items() if name != "tools"))
    for name in THROUGHPUT_ADAPTERS + COLD_ADAPTERS:
        store.push(next(sources), adapter=name, version="v1", to=f"s3://{BUCKET}/adapters")
    store.push(assets["adapters"]["tools"], adapter="tools", version="v1", to=f"s3://{BUCKET}/adapters")


@contextlib.contextmanager
def running_stack(port: int = 8700, metrics_port: int = 8701, num_cpus: int = 12):
    # Logical CPUs on 2 cores: a base replica takes its resources.cpu plus 1 (its own), and the scale benchmark
    # runs six base replicas of 0.25 CPU beside the routers.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    # Ray's workers inherit it: the fleet's own processes import the bench's request router and applications.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    assets = ensure_assets(ROOT / ".demo" / "assets")
    with local_s3() as s3_url:
        proxy = TCPProxy(int(s3_url.rsplit(":", 1)[1]))
        os.environ["AWS_ENDPOINT_URL"] = proxy.url  # before Ray starts: its workers inherit it
        _stage(assets)
        local_runtime.start_ray(num_cpus=num_cpus, metrics_port=metrics_port, metrics_report_interval_ms=500)
        try:
            print("starting the bench fleet (about a minute on CPU)...", flush=True)
            stack = Stack(f"http://127.0.0.1:{port}", bench_fleet(), f"http://127.0.0.1:{metrics_port}/metrics",
                          proxy)
            stack.redeploy(stack.spec_data)
            yield stack
        finally:
            local_runtime.shutdown()
            proxy.close()
