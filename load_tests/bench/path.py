"""The serving path against the physical limit (issue 16): the fleet router, Ray Serve LLM's own ingress and
vLLM's own OpenAI server alone, over the same tiny base and adapter, in alternating blocks of one run.

Two cores are not shared three ways: vLLM's own server (its API process and engine core, one process group) is
stopped with SIGSTOP while the Ray arms run and continued for its own blocks, when the Ray engine is idle (a vLLM
engine without requests waits on its input queue). Two more arms split the path into hops: ``echo`` (Ray Serve's
HTTP proxy and a replica that answers at once, no engine: load_tests/bench/echo.py) and ``floor`` (an HTTP
round trip to vLLM's ``/health``: the client, the loopback and uvicorn).

The fleet runs with a tenant and limits that never bind, as users would run it: every request takes the key
check and the limiter's path. Last, py-spy samples a router replica under load (``router_profile``; the
collapsed stacks in ``.bench/path_router.folded``).

Ray Serve's path is what the environment of ``make bench`` selects: ``RAY_SERVE_ENABLE_HA_PROXY=1
RAY_SERVE_THROUGHPUT_OPTIMIZED=1 make bench BENCH=path`` measures its high-throughput mode (``serve_path`` in the
figures says which ran).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from load_tests.bench.measure import Sample, completion, load, stack_shares, summary, tpot_p50_ms
from load_tests.bench.stack import BASE, ROOT, with_tenant
from serving.local.demo import ensure_assets

VLLM_PORT = 8790
ECHO_APP = {"name": "echo", "route_prefix": "/echo", "import_path": "load_tests.bench.echo:app",
            "runtime_env": {"env_vars": {"PYTHONPATH": str(ROOT)}}}
# (concurrency, generated tokens, streamed, requests per arm): the tail figures take 1000 per arm.
CASES = {"c1_t1": (1, 1, False, 1000), "c16_t1": (16, 1, False, 1000), "c1_t32_stream": (1, 32, True, 200),
         "c16_t32": (16, 32, False, 480)}
BURNER_CASE = "c1_t1"
ROUNDS = 5


class VllmAlone:
    """vLLM's own OpenAI server over the bench base and adapter ``a0``, in a process group of its own."""

    def __init__(self, base: str, adapter: str, port: int = VLLM_PORT):
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(Path(tempfile.gettempdir()) / "slmfleet-bench-vllm.log", "w")  # noqa: SIM115
        # The bench fleet's engine settings (load_tests/bench/stack.py), so the engines do the same work.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", base,
             "--served-model-name", BASE, "--enable-lora", "--lora-modules", f"a0={adapter}", "--max-lora-rank", "8",
             "--max-loras", "4", "--max-cpu-loras", "8", "--max-model-len", "256", "--dtype", "float32",
             "--enforce-eager", "--host", "127.0.0.1", "--port", str(port)],
            start_new_session=True, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")})
        deadline = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None:
                self._log.close()
                raise RuntimeError(f"vLLM's own server exited ({self.proc.returncode}); see {self._log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"vLLM's own server not up after 300 s; see {self._log.name}")
            time.sleep(1)

    def pause(self) -> None:
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


@contextlib.contextmanager
def burner(core: int = 0):
    """A process spinning on one core: the tail under contention."""
    proc = subprocess.Popen([sys.executable, "-c",
                             f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True:\n    pass"])
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


async def _gets(url: str, n: int) -> list[Sample]:
    async with httpx.AsyncClient(timeout=30) as client:
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            r = await client.get(url)
            samples.append(Sample(r.status_code == 200, time.perf_counter() - started, 0.0, 0))
        return samples


def profile_router(url: str, body: dict, headers: dict, *, seconds: int = 20, concurrency: int = 16,
                   out: Path = ROOT / ".bench" / "path_router.folded") -> dict:
    """py-spy on a fleet router replica while ``concurrency`` requests are kept in flight: the collapsed stacks in
    ``out`` (for a flame graph) and the shares of the samples by the leaf function that held the GIL, and of
    those inside the fleet's own code (``serving/``), top 15 each."""
    import threading

    from load_tests.bench.processes import replica_pids
    from serving.render.serve_config import ROUTER_DEPLOYMENT

    pid = replica_pids(ROUTER_DEPLOYMENT)[0]
    stop = threading.Event()

    def keep_busy():
        while not stop.is_set():
            load(url, [body] * (concurrency * 4), concurrency, headers)

    busy = threading.Thread(target=keep_busy, daemon=True)
    busy.start()
    try:
        subprocess.run([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--duration",
                        str(seconds), "--rate", "200", "--gil", "--nonblocking", "--format", "raw", "--output",
                        str(out)], check=True, capture_output=True)
    finally:
        stop.set()
        busy.join()
    return {"seconds": seconds, "file": str(out.relative_to(ROOT)), **stack_shares(out.read_text(), "serving/")}


def path(stack, *, rounds: int = ROUNDS, cases: dict = CASES) -> dict:
    assets = ensure_assets(ROOT / ".demo" / "assets")
    # The bench stack pushes the task adapters under a0..a7 in this order (load_tests/bench/stack.py: _stage).
    a0 = sorted(path for name, path in assets["adapters"].items() if name != "tools")[0]
    tenanted, keys, key = with_tenant(stack.spec_data)
    untenanted = stack.spec_data  # redeploy makes the tenanted spec the stack's: the benchmarks after get this back
    stack.redeploy(tenanted, keys_file=str(keys), extra_apps=(ECHO_APP,))
    try:
        vllm = VllmAlone(assets["base"], a0)
    except BaseException:
        stack.redeploy(untenanted)
        raise
    auth = {"Authorization": f"Bearer {key}"}
    arms = {"vllm": (f"{vllm.url}/v1/completions", "a0", None),
            "ray_serve_llm": (f"{stack.direct_url}/v1/completions", f"{BASE}:a0@v1", None),
            "fleet": (f"{stack.url}/v1/completions", "a0", auth),
            "echo": (f"{stack.url}/echo/v1/completions", "echo", None)}
    rng = random.Random(16)

    def measure(case: str) -> dict:
        concurrency, tokens, stream, requests = cases[case]
        per_block = max(1, requests // rounds)
        samples = {arm: [] for arm in [*arms, "floor"]}
        walls = dict.fromkeys(samples, 0.0)
        for _ in range(rounds):
            for arm in rng.sample([*arms, "floor"], len(arms) + 1):
                (vllm.resume if arm in ("vllm", "floor") else vllm.pause)()
                if arm == "floor":
                    got, wall = asyncio.run(_gets(f"{vllm.url}/health", per_block)), 0.0
                else:
                    url, model, headers = arms[arm]
                    got, wall = load(url, [completion(model, max_tokens=tokens, stream=stream)] * per_block,
                                     concurrency, headers)
                samples[arm] += got
                walls[arm] += wall
        vllm.resume()
        return {arm: {**summary(got, walls[arm] or 1.0), **({"tpot_p50_ms": tpot_p50_ms(got)} if stream else {})}
                for arm, got in samples.items()}

    try:
        for arm, (url, model, headers) in arms.items():  # warm every arm (and a0 on both engines)
            (vllm.resume if arm == "vllm" else vllm.pause)()
            load(url, [completion(model, max_tokens=4)] * 20, 2, headers)
        vllm.resume()
        results = {case: measure(case) for case in cases}
        with burner():
            results[f"{BURNER_CASE}_burner"] = measure(BURNER_CASE)
        vllm.pause()
        url, model, headers = arms["fleet"]
        profile = profile_router(url, completion(model, max_tokens=1), headers)
    finally:
        vllm.close()
        stack.redeploy(untenanted)

    one = results["c1_t1"]
    p50 = {arm: one[arm]["p50_ms"] for arm in one}
    proxy_hop = p50["echo"] - p50["floor"]
    stream, c16 = results["c1_t32_stream"], results["c16_t32"]
    burnt = results[f"{BURNER_CASE}_burner"]
    return {
        "arms": {"vllm": "vLLM's own OpenAI server alone", "ray_serve_llm": "Ray Serve LLM's own ingress (direct)",
                 "fleet": "the fleet router, tenant key and limits on", "echo": "Serve proxy + a replica, no engine",
                 "floor": "GET vLLM /health: client, loopback, uvicorn"},
        "isolation": "vLLM's own server SIGSTOPped while the Ray arms run; the Ray engine idle during vLLM's blocks",
        "rounds": rounds, "cases": {case: {"concurrency": c, "max_tokens": t, "stream": s, "requests_per_arm": n}
                                    for case, (c, t, s, n) in cases.items()},
        "serve_path": {name: os.environ.get(name, "0") for name in
                       ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED")},
        **results,
        "vllm_p50_ms": p50["vllm"], "ray_serve_llm_p50_ms": p50["ray_serve_llm"], "fleet_p50_ms": p50["fleet"],
        "fleet_minus_vllm_p50_ms": round(p50["fleet"] - p50["vllm"], 1),
        "fleet_minus_ray_serve_llm_p50_ms": round(p50["fleet"] - p50["ray_serve_llm"], 1),
        "hops_ms": {"serve_proxy_and_replica": round(proxy_hop, 1),
                    "handle_to_engine_replica_and_llm_server": round(p50["ray_serve_llm"] - p50["vllm"] - proxy_hop, 1),
                    "fleet_router": round(p50["fleet"] - p50["ray_serve_llm"], 1)},
        "fleet_over_vllm_tpot": round(stream["fleet"]["tpot_p50_ms"] / stream["vllm"]["tpot_p50_ms"], 3),
        "fleet_over_vllm_throughput": round(c16["fleet"]["tokens_per_second"] / c16["vllm"]["tokens_per_second"], 3),
        "fleet_over_ray_serve_llm_p99": round(one["fleet"]["p99_ms"] / one["ray_serve_llm"]["p99_ms"], 3),
        "fleet_over_ray_serve_llm_p99_burner": round(burnt["fleet"]["p99_ms"] / burnt["ray_serve_llm"]["p99_ms"], 3),
        "router_profile": profile,
    }
