"""``slm-fleet serve``: run a fleet on a local Ray instance, follow edits of its file, drive its rollouts."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from serving.api.documents import load_fleet_file
from serving.api.fleet import FleetSpec
from serving.api.problems import FleetSpecError, UserError
from serving.local import runtime as local_runtime
from serving.local.ports import free_port
from serving.local.rollouts import DEFAULT_CONTROL_PORT, DEFAULT_TICK_SECONDS, LocalRollouts, serve_control
from serving.rollouts.driver import Rollouts
from serving.rollouts.metric_sources import PrometheusSource, ScrapeSource

EXIT_OK = 0


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop()


def fleet_rollouts(spec: FleetSpec, source, *, port: int, host: str = "127.0.0.1",
                   tick_s: float = DEFAULT_TICK_SECONDS, report=print, keys_file: str | None = None) -> LocalRollouts:
    """The rollouts of a fleet served on this process's Ray on ``host:port``: each decision redeployed in place."""
    return LocalRollouts(
        spec, Rollouts(source, fleet_url=f"http://127.0.0.1:{port}"), tick_s=tick_s, report=report,
        deploy=lambda spec, weights, shadowing: local_runtime.deploy(spec, host=host, port=port,
                                                                     canary_weights=weights, shadowing=shadowing,
                                                                     keys_file=keys_file))


def serve_until_stopped(path: str, *, host: str, port: int, num_cpus: int | None, metrics_port: int | None = None,
                        on_ready=None, prometheus_url: str | None = None, control_port: int | None = None,
                        rollout_tick_s: float = DEFAULT_TICK_SECONDS,
                        adjust: Callable[[FleetSpec], FleetSpec] | None = None, keys_file: str | None = None) -> int:
    """Serve the fleet in ``path``; redeploy in place when the file changes; stop on SIGINT/SIGTERM.

    ``adjust`` changes each spec read from the file before it is served (the demo turns capture on).
    ``keys_file`` is the tenants' keys file (``slm-fleet keys create``); the router rereads it when it changes.

    A changed file that does not validate is reported and the running fleet keeps serving. Canary
    rollouts (a route's strategy.canary) are driven meanwhile, their status and commands served on
    127.0.0.1:``control_port`` for ``slm-fleet rollout``.
    """
    adjust = adjust or (lambda spec: spec)
    spec = adjust(load_fleet_file(path))
    control_port = control_port or DEFAULT_CONTROL_PORT
    # Rollouts read the fleet's own metrics when no Prometheus is named, so Ray must export them.
    scrape_port = metrics_port or free_port()
    source = PrometheusSource(prometheus_url) if prometheus_url else ScrapeSource(f"http://127.0.0.1:{scrape_port}/metrics")
    if keys_file is not None and not os.path.isfile(keys_file):
        raise UserError(f"--keys {keys_file}: no such file; make it with slm-fleet keys create --tenant NAME "
                        f"--file {keys_file}")
    rollouts = fleet_rollouts(spec, source, host=host, port=port, tick_s=rollout_tick_s, keys_file=keys_file)
    stop = threading.Event()
    try:
        print(f"starting fleet from {path} (first start takes about a minute on CPU)...", flush=True)
        local_runtime.start_ray(num_cpus=num_cpus, metrics_port=scrape_port)
        # After ray.init, which installs a SIGTERM handler of its own that aborts the driver.
        signal.signal(signal.SIGTERM, _raise_stop)
        signal.signal(signal.SIGINT, _raise_stop)
        rollouts.apply(spec)
        if on_ready:
            try:
                on_ready(spec)
            except Exception as err:  # noqa: BLE001 - the greeting failed; the fleet serves on
                print(f"(the requests made on start failed: {type(err).__name__}: {err}; the fleet keeps serving)",
                      flush=True)
        print(tenancy_summary(spec, keys_file), flush=True)
        print(f"fleet serving at http://{host}:{port}/v1 ({len(spec.routes)} routes); "
              f"edit {path} to change routes live; Ctrl-C to stop", flush=True)
        if metrics_port:
            print(f"Prometheus metrics at http://127.0.0.1:{metrics_port}/metrics (ray_slmfleet_*)", flush=True)
        try:
            serve_control(rollouts, control_port)
        except OSError as err:
            raise UserError(f"cannot serve rollout control on 127.0.0.1:{control_port} ({err}); "
                            "pick another with --control-port") from None
        threading.Thread(target=rollouts.run, args=(stop,), name="rollouts", daemon=True).start()
        if any(r.strategy for r in spec.routes):
            print(f"canary rollouts running; `slm-fleet rollout status --control http://127.0.0.1:{control_port}`",
                  flush=True)
        watch_fleet_file(path, lambda spec: rollouts.apply(adjust(spec)))
    except _Stop:
        print("\nstopping fleet...", flush=True)
        return EXIT_OK
    finally:
        stop.set()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        local_runtime.shutdown()


def tenancy_summary(spec: FleetSpec, keys_file: str | None) -> str:
    """What the start-up log says of who may call the fleet."""
    if spec.open:
        extra = f" (--keys {keys_file} is not used: keys apply to tenants)" if keys_file else ""
        return f"open fleet: no tenants declared, so every route answers anyone without a key{extra}"
    names = ", ".join(t.name for t in spec.tenants)
    if keys_file is None:
        return (f"{len(spec.tenants)} tenant(s) ({names}) but no --keys file: every request needs a key, and none "
                "is known yet (slm-fleet keys create --tenant NAME --file FILE, then serve with --keys FILE)")
    return f"{len(spec.tenants)} tenant(s) ({names}); API keys from {keys_file} (reread when it changes)"


def watch_fleet_file(path: str | Path, apply: Callable[[FleetSpec], object], *, interval_s: float = 2.0,
                     stop: threading.Event | None = None) -> None:
    """Call ``apply(spec)`` each time the file at ``path`` changes, until ``stop`` is set.

    Polls the file's mtime every ``interval_s``. An edit that does not validate is reported on
    stderr and skipped, so the fleet keeps serving the previous spec. Without ``stop`` it returns
    only by an exception (``slm-fleet serve``: the signal handler's).
    """
    stop = stop or threading.Event()
    mtime = os.stat(path).st_mtime
    while not stop.wait(interval_s):
        current = os.stat(path).st_mtime
        if current == mtime:
            continue
        mtime = current
        try:
            spec = load_fleet_file(path)
        except FleetSpecError as err:
            print(f"not applied, fleet keeps serving the previous spec:\n{err}", file=sys.stderr, flush=True)
            continue
        apply(spec)
        print(f"applied {path}: {len(spec.routes)} routes", flush=True)
