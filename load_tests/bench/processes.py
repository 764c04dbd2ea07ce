"""Finding the fleet's processes on this machine (for the benchmarks and tests that kill or count them)."""

from __future__ import annotations

import psutil


def replica_pids(deployment: str, app: str = "slm-fleet") -> list[int]:
    """The process ids of a deployment's live replicas on this machine, by the title Ray gives their processes
    (``ray::ServeReplica:<app>:<deployment>``); Ray's state API needs the dashboard, which the fleet runs without."""
    title = f"ServeReplica:{app}:{deployment}"
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and any(
                    part.startswith(f"ray::{title}") for part in proc.info["cmdline"] or []):
                pids.append(proc.info["pid"])
        except psutil.Error:
            continue
    return pids


def running_replicas(deployment: str, app: str = "slm-fleet") -> int:
    """Replicas of a deployment that run and take requests, as the Serve controller sees it (from a Ray driver)."""
    from ray import serve

    return serve.status().applications[app].deployments[deployment].replica_states.get("RUNNING", 0)
