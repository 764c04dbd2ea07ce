"""``make flywheel``: the LLM-to-SLM loop closed for real in the demo world, each step a `slm-fleet` command.

The world: route ``assistant`` is a cascade. Its first tier is route ``assistant-small``, adapter
``assistant@v1`` (the demo's shout adapter: it shouts words back, and cannot call tools); its last
tier is the teacher (``serving.local.teacher``, the stand-in for a hosted large model), which does
both. The tier's checks are the route's contract: a tool request needs a well-formed call of an
offered tool (toolCall), words need to come back in upper case (a regex). Traffic is both tasks, so
every tool request escalates. Capture is on for ``assistant``; the loop then runs

    records -> clusters -> dataset -> train -> evaluate -> propose -> shadow -> canary (served, promoted)

and measures, on held-out prompts of each task sent to ``assistant-eval`` (the same cascade with
capture off, so measuring never feeds the training set), the share the first tier answers before and
after. ``run_loop`` returns those figures (the flywheel benchmark reads them).
"""

from __future__ import annotations

import copy
import json
import os
import random
import shlex
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import yaml

from serving.adapters.store import AdapterStore
from serving.api.capture import SECRET_ENV
from serving.flywheel import artifacts
from serving.local.demo import CAPTURE_SECRET, ensure_assets
from serving.local.demo_assets import BASE_NAME, WORDS, tool_requests
from serving.local.ports import free_port
from serving.local.s3 import local_s3
from serving.local.teacher import MODEL, TeacherServer

BUCKET = "slmfleet-demo"
CAPTURES = f"s3://{BUCKET}/flywheel/captures"
WORK = f"s3://{BUCKET}/flywheel"
ADAPTERS = f"s3://{BUCKET}/adapters"
WORD_CHECK = r"^ ?[A-Z]+( [A-Z]+)*$"
TASKS = ("words", "tools")


def fleet_document(teacher_url: str, around: dict | None = None) -> dict:
    """The loop's fleet (a ModelFleet manifest), its cascade's last tier at ``teacher_url``; with ``around`` (a
    fleet spec), that fleet with the loop's adapter, routes and capture added (its own base models kept)."""
    doc = _loop_fleet(teacher_url)
    if around is not None:
        spec, extra = copy.deepcopy(around), doc["spec"]
        names = {b["name"] for b in spec.get("baseModels", [])}
        spec["baseModels"] = spec.get("baseModels", []) + [b for b in extra["baseModels"] if b["name"] not in names]
        spec["adapters"] = spec.get("adapters", []) + extra["adapters"]
        spec["routes"] = spec.get("routes", []) + extra["routes"]
        spec["capture"] = extra["capture"]
        doc["spec"] = spec
    return doc


def _loop_fleet(teacher_url: str) -> dict:
    cascade = lambda capture: {  # noqa: E731 - the served route and its capture-off twin differ only there
        "policy": "cascade", "capture": {"enabled": capture},
        "tiers": [{"route": "assistant-small", "checks": {"toolCall": True, "regex": WORD_CHECK}},
                  {"endpoint": {"url": teacher_url, "model": MODEL}, "costPer1kTokens": 10}]}
    return {"apiVersion": "slmfleet.io/v1alpha1", "kind": "ModelFleet", "metadata": {"name": "flywheel"}, "spec": {
        "baseModels": [{"name": BASE_NAME, "source": f"s3://{BUCKET}/models/{BASE_NAME}", "engine": {
            "maxLoras": 2, "maxLoraRank": 8, "maxModelLen": 256, "dtype": "float32", "enforceEager": True,
            "toolCallParser": "hermes", "toolStrictLevel": "parameter"},
            "resources": {"cpu": 1}, "autoscaling": {"minReplicas": 1, "maxReplicas": 1}}],
        "adapters": [{"name": "assistant", "baseModel": BASE_NAME,
                      "versions": [{"version": "v1", "source": f"{ADAPTERS}/assistant/v1"}]}],
        "routes": [
            {"name": "assistant-small", "description": "The small specialist alone.",
             "targets": [{"adapter": "assistant", "version": "v1"}]},
            {"name": "assistant", "description": "The small specialist first, the teacher when it cannot.",
             **cascade(True)},
            {"name": "assistant-eval", "description": "The same cascade, never captured (the loop measures on it).",
             **cascade(False)},
        ],
        "capture": {"destination": CAPTURES, "sampleRate": 1, "flushInterval": "2s"},
    }}


def word_asks(n: int, seed: str) -> list[dict]:
    rng = random.Random(seed)
    return [{"messages": [{"role": "user", "content": " ".join(rng.sample(WORDS, rng.randint(1, 3)))}]}
            for _ in range(n)]


def tool_asks(n: int, seed: int) -> list[dict]:
    return [{"messages": r["messages"], "tools": r["tools"]} for r in tool_requests("train", n, seed=seed)]


def traffic(n: int, seed: int) -> list[tuple[str, dict]]:
    """``n`` requests of each task, interleaved."""
    return [pair for w, t in zip(word_asks(n, f"loop:{seed}"), tool_asks(n, seed)) for pair in (("words", w),
                                                                                                 ("tools", t))]


def ask(http: httpx.Client, url: str, route: str, body: dict) -> dict:
    r = http.post(f"{url}/chat/completions", json={"model": route, "max_tokens": 48, "temperature": 0, **body},
                  timeout=120)
    return {"status": r.status_code, "tier": r.headers.get("x-slmfleet-tier"),
            "adapter": r.headers.get("x-slmfleet-adapter"), "version": r.headers.get("x-slmfleet-version")}


def first_tier_share(http: httpx.Client, url: str, asks: list[dict]) -> float:
    answers = [ask(http, url, "assistant-eval", a) for a in asks]
    return round(sum(a["status"] == 200 and a["tier"] == "1" for a in answers) / len(answers), 4)


class Step:
    """Runs and prints `slm-fleet` commands, as a user would type them."""

    def __init__(self, env: dict, log=print):
        self.env, self.log = env, log

    def __call__(self, *args: str, quiet: bool = False) -> str:
        self.log(f"\n$ slm-fleet {shlex.join(args)}")
        started = time.perf_counter()
        done = subprocess.run([str(Path(sys.executable).parent / "slm-fleet"), *args], env=self.env, text=True,
                              capture_output=True)
        lines = (done.stdout + ("" if quiet else done.stderr)).splitlines()
        lines = [line if len(line) <= 160 else line[:157] + "..." for line in lines]
        shown = "\n".join(lines if len(lines) <= 40 else [*lines[:3], "...", *lines[-3:]])
        self.log(shown.rstrip())
        if done.returncode != 0:
            raise RuntimeError(f"`slm-fleet {shlex.join(args)}` failed ({done.returncode}): {done.stderr[-2000:]}")
        self.log(f"  ({time.perf_counter() - started:.1f} s)")
        return done.stdout


def wait_ready(http: httpx.Client, url: str, exited, timeout_s: float = 900) -> None:
    """Until the fleet answers; ``exited()`` is the serving process's exit code once it has one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if exited() is not None:
            raise RuntimeError(f"slm-fleet serve exited ({exited()}); see .flywheel/serve.log")
        try:
            if http.get(f"{url}/models", timeout=5).status_code == 200 and ask(
                    http, url, "assistant-small", word_asks(1, "ready")[0])["status"] == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(3)
    raise RuntimeError("the fleet did not come up in time")


def rollout_of(http: httpx.Client, control: str, route: str) -> dict:
    try:
        return next((s for s in http.get(f"{control}/rollouts", timeout=10).json() if s["route"] == route), {})
    except (httpx.HTTPError, ValueError):
        return {}


@contextmanager
def served_by_subprocess(fleet: Path, env: dict, log):
    """`slm-fleet serve FILE` in a child process, as a user runs it; yields (API URL, rollout control URL)."""
    port, control_port = free_port(), free_port()
    log(f"$ slm-fleet serve {fleet} --port {port} --control-port {control_port} --rollout-tick 2")
    with open(fleet.parent / "serve.log", "w") as serve_log:
        serve = subprocess.Popen([str(Path(sys.executable).parent / "slm-fleet"), "serve", str(fleet), "--port",
                                  str(port), "--control-port", str(control_port), "--rollout-tick", "2"],
                                 env=env, stdout=serve_log, stderr=subprocess.STDOUT)
        try:
            yield f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{control_port}", serve.poll
        finally:
            serve.terminate()
            try:
                serve.wait(timeout=120)
            except subprocess.TimeoutExpired:
                serve.kill()


def served_on_running_ray(port: int, metrics_url: str, tick_s: float = 2):
    """A ``serving`` for ``run_loop`` on a Ray instance this process already runs (the tests' and benchmarks'),
    as `slm-fleet serve` serves a file: deployed on ``port``, its edits followed, its rollouts driven."""
    import threading

    from serving.api.documents import load_fleet_file
    from serving.local.rollouts import serve_control
    from serving.local.serve import fleet_rollouts, watch_fleet_file
    from serving.rollouts.metric_sources import ScrapeSource

    @contextmanager
    def serving(path: Path, env: dict, log):
        spec = load_fleet_file(path)
        url = f"http://127.0.0.1:{port}"
        rollouts = fleet_rollouts(spec, ScrapeSource(metrics_url), port=port, tick_s=tick_s, report=log)
        rollouts.apply(spec)
        control_port = free_port()
        control = serve_control(rollouts, control_port)
        stop = threading.Event()
        threading.Thread(target=rollouts.run, args=(stop,), daemon=True).start()
        threading.Thread(target=watch_fleet_file, args=(path, rollouts.apply), kwargs={"stop": stop},
                         daemon=True).start()
        try:
            yield f"{url}/v1", f"http://127.0.0.1:{control_port}", lambda: None
        finally:
            stop.set()
            control.shutdown()

    return serving


def run_loop(*, workdir: str | Path = ".flywheel", assets: str | Path = ".demo/assets", n_traffic: int = 120,
             n_held_out: int = 20, train_steps: int = 400, serving=served_by_subprocess, s3_url: str | None = None,
             around: dict | None = None, log=print) -> dict:
    """Close the loop once; returns its figures (see the flywheel benchmark).

    ``serving(fleet_file, env, log)`` serves the fleet file and follows its edits (by default `slm-fleet serve`
    in a child process); ``s3_url``: an S3 endpoint the environment already points at (else a local one);
    ``around``: a fleet spec already served there, which the loop's fleet extends rather than replaces (so serving
    it restarts none of that fleet's engines)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    summary = ensure_assets(assets)
    held_out = {"words": word_asks(n_held_out, "held-out"), "tools": tool_asks(n_held_out, 10_000)}
    with ExitStack() as stack:
        s3_url = s3_url or stack.enter_context(local_s3())
        teacher_url = stack.enter_context(TeacherServer())
        log(f"local S3 at {s3_url}; the teacher (the large model's stand-in) at {teacher_url}")
        store = AdapterStore()
        if BUCKET not in [b["Name"] for b in store.s3.list_buckets().get("Buckets", [])]:
            store.s3.create_bucket(Bucket=BUCKET)
        store.upload_dir(summary["base"], f"s3://{BUCKET}/models/{BASE_NAME}")
        if not store.list(f"{ADAPTERS}/assistant"):
            store.push(summary["adapters"]["shout"], adapter="assistant", version="v1", to=ADAPTERS)
        fleet = workdir / "fleet.yaml"
        fleet.write_text(yaml.safe_dump(fleet_document(teacher_url, around), sort_keys=False))
        env = {**os.environ, SECRET_ENV: os.environ.get(SECRET_ENV, CAPTURE_SECRET),
               "HF_HUB_DISABLE_PROGRESS_BARS": "1",
               "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
        url, control, exited = stack.enter_context(serving(fleet, env, log))
        with httpx.Client() as http:
            wait_ready(http, url, exited)
            figures = steps(Step(env, log), http, url, control, fleet, held_out, n_traffic, train_steps, log)
    log(f"\nheld-out tool requests answered by the first tier: {figures['first_tier_share_before']:.0%} before, "
        f"{figures['first_tier_share_after']:.0%} after; word requests: "
        f"{figures['first_tier_share_other_tasks_before']:.0%} before, "
        f"{figures['first_tier_share_other_tasks_after']:.0%} after; promoted: {figures['promoted']}")
    (workdir / "figures.json").write_text(json.dumps(figures, indent=2))
    return figures


def steps(step: Step, http: httpx.Client, url: str, control: str, fleet: Path, held_out: dict, n_traffic: int,
          train_steps: int, log) -> dict:
    figures: dict = {}
    figures["first_tier_share_before"] = first_tier_share(http, url, held_out["tools"])
    figures["first_tier_share_other_tasks_before"] = first_tier_share(http, url, held_out["words"])
    log(f"fleet up; the first tier answers {figures['first_tier_share_before']:.0%} of held-out tool requests "
        f"and {figures['first_tier_share_other_tasks_before']:.0%} of held-out word requests")
    sent = [ask(http, url, "assistant", body) for _, body in traffic(n_traffic, seed=1)]
    figures["requests_sent"] = len(sent)
    log(f"sent {len(sent)} requests to route 'assistant' (half words, half tool calls); "
        f"{sum(s['tier'] == '2' for s in sent)} escalated to the teacher")
    time.sleep(5)  # the capture writer flushes every 2 s here
    step("flywheel", "records", CAPTURES, "--route", "assistant", quiet=True)
    step("flywheel", "clusters", CAPTURES, "--route", "assistant", "--to", f"{WORK}/clusters")
    dataset = f"{WORK}/datasets/assistant-1"
    step("flywheel", "dataset", CAPTURES, "--route", "assistant", "--answers", "accepted", "--to", dataset)
    # A candidate that does worse than v1 at words (evaluate --clusters) is not proposed: the loop trains
    # once more, with another seed, as a user would after propose refused it.
    for attempt, seed in enumerate((0, 1), 1):
        version = f"v{attempt + 1}"
        started = time.perf_counter()
        # From v1, not a fresh adapter: it keeps shouting words and learns the calls on top (offline on one saved
        # dataset, fresh adapters lost 1-3 of 21 eval word examples in 3 of 6 runs, from v1 none in 3).
        step("flywheel", "train", dataset, "--base", BASE_NAME, "--fleet", str(fleet), "--adapter", "assistant",
             "--version", version, "--to", ADAPTERS, "--start-from", "assistant@v1", "--lr", "2e-3", "--steps",
             str(train_steps), "--batch-size", "16", "--seed", str(seed), "--quiet")
        figures["train_seconds"] = round(time.perf_counter() - started, 1)
        # 0.7, not the default 0.9: evaluate answers without the engine's grammar (toolStrictLevel), which keeps
        # the served calls to the offered schemas, so the tiny candidate scores lower there (0.82-0.98 over runs)
        # than it serves (every held-out tool request, after). A task may drop by 0.05, one eval example in twenty
        # (a task has 20-26 here): v1 learned words from thousands of examples, the candidate keeps them with ~90,
        # and in 3 of 5 runs one word example of 21-26 came out otherwise. More than that is still refused, and the
        # held-out word share after (first_tier_share_other_tasks_after) shows what the words lost.
        step("flywheel", "evaluate", dataset, "--candidate", f"assistant@{version}", "--fleet", str(fleet),
             "--threshold", "0.7", "--clusters", f"{WORK}/clusters/clusters.json", "--max-task-drop", "0.05")
        evaluation = f"{dataset}/evaluation-assistant-{version}.json"
        report = artifacts.get_json(evaluation, what="evaluation")
        figures.update(evaluated_tasks=report["tasks"], training_attempts=attempt, candidate_version=version)
        if not report["regressions"]:
            break
        log(f"assistant@{version} does worse than assistant@v1 at a task; training again with another seed")
    step("flywheel", "propose", str(fleet), "--candidate", f"assistant@{version}", "--evaluation", evaluation,
         "--threshold", "0.7", "--interval", "10s", "--steps", "50", "100",
         # Every live request copied for 10 s. Agreement at 0.7, under the default 0.8: where the first tier answered
         # (words), the candidate must repeat its exact wording to agree, which a retrained version need not do
         # (a run agreed on 95% of 44 copies).
         "--shadow", "10s", "--shadow-share", "100", "--shadow-min-requests", "10", "--shadow-min-agreement", "0.7")
    final = canary(http, url, control, log, version)
    figures["promoted"] = final.get("phase") == "Promoted"
    # Why it ended where it did: the last reason and each transition's, for whoever reads a failed run's figures.
    history = [h.get("reason") or "" for h in final.get("history", [])]
    figures["rollout"] = {"phase": final.get("phase"), "reason": final.get("reason"), "history": history}
    figures["shadow"] = next((reason for reason in history if reason.startswith("shadow ")), None)
    step("rollout", "status", "--control", control)
    figures["first_tier_share_after"] = first_tier_share(http, url, held_out["tools"])
    figures["first_tier_share_other_tasks_after"] = first_tier_share(http, url, held_out["words"])
    return figures


def canary(http: httpx.Client, url: str, control: str, log, version: str, timeout_s: float = 900) -> dict:
    """Send the route's traffic while the canary shadows it, then rolls out; the rollout's status at its end."""
    deadline, seed, last, status = time.monotonic() + timeout_s, 100, None, {}
    log(f"\nserving traffic while the canary of assistant@{version} shadows, then rolls out on assistant-small...")
    while time.monotonic() < deadline:
        status = rollout_of(http, control, "assistant-small")
        phase = status.get("phase")
        if (phase, status.get("weight")) != last and phase:
            last = (phase, status.get("weight"))
            log(f"  rollout: {phase} at {status.get('weight')}% {status.get('reason', '')}".rstrip())
        if phase in ("Promoted", "RolledBack", "Failed"):
            return status
        for _, body in traffic(5, seed):
            ask(http, url, "assistant", body)
        seed += 1
    return status


def main() -> int:
    try:
        figures = run_loop()
    except RuntimeError as err:
        print(f"\nthe loop stopped: {err}", file=sys.stderr)
        return 1
    return 0 if figures["promoted"] else 1


if __name__ == "__main__":
    sys.exit(main())
