"""Canary rollouts of a fleet served by ``slm-fleet serve``: the operator's engine, run locally.

A thread ticks the shared driver (``serving.rollouts.driver``) and redeploys the routing config in
place when a canary's weight changes. A small HTTP endpoint on loopback serves the rollouts'
status and takes commands; ``slm-fleet rollout status|pause|resume|promote|abort`` talks to it:

    GET  /rollouts                  -> [RolloutStatus, ...]
    POST /rollouts/<command>        -> every rollout of the fleet
    POST /rollouts/<command>/<route>
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from serving.api.fleet import FleetSpec
from serving.api.status import RolloutStatus
from serving.policy.rollout import Command
from serving.rollouts.driver import Rollouts, canary_weights, current, parse_command, shadowing

log = logging.getLogger("slmfleet.rollout")
DEFAULT_CONTROL_PORT = 8100
"""Loopback port of the rollout control endpoint of `slm-fleet serve`."""
DEFAULT_TICK_SECONDS = 5.0
"""How often `slm-fleet serve` evaluates its canary rollouts."""


class LocalRollouts:
    """Drives the rollouts of one locally served fleet; ``deploy(spec, weights, shadowing)`` applies a config."""

    def __init__(self, spec: FleetSpec, rollouts: Rollouts,
                 deploy: Callable[[FleetSpec, dict[str, int], list[str]], object], *,
                 tick_s: float = DEFAULT_TICK_SECONDS, report: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.time):
        self.spec, self.rollouts, self.deploy, self.tick_s, self.report, self.clock = (
            spec, rollouts, deploy, tick_s, report, clock)
        self.statuses: dict[str, RolloutStatus] = {}
        self.weights: dict[str, int] = canary_weights(spec, {})
        self.shadowing: list[str] = []
        self._commands: dict[str | None, Command] = {}
        self._lock = threading.RLock()  # one deploy at a time: the file watcher's or the ticker's

    def apply(self, spec: FleetSpec) -> None:
        """Deploy a new spec (an edited fleet file) with the canary weights its rollouts have now."""
        with self._lock:
            self.spec = spec
            self.statuses = current(spec, self.statuses)
            self.weights = canary_weights(spec, self.statuses)
            self.shadowing = shadowing(spec, self.statuses)
            self.deploy(spec, self.weights, self.shadowing)

    def command(self, text: str) -> str:
        """Queue ``"<command> [route]"`` for the next tick; ValueError says what is wrong."""
        with self._lock:
            route, command = parse_command(text, self.spec)
            self._commands[route] = command
        return f"{command.value} queued for {route or 'every rollout'}; applied within {self.tick_s:g}s"

    def tick(self) -> None:
        with self._lock:
            spec, commands, self._commands = self.spec, self._commands, {}
        result = self.rollouts.tick(spec, self.statuses, self.clock(), commands)
        with self._lock:
            if spec is not self.spec:  # the file changed meanwhile: its deploy wins, tick again
                return
            self.statuses = result.statuses
            if (result.weights, result.shadowing) != (self.weights, self.shadowing):
                self.weights, self.shadowing = result.weights, result.shadowing
                self.deploy(spec, self.weights, self.shadowing)
        for _type, reason, message in result.events:
            self.report(f"{reason}: {message}")

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.tick_s):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a failed tick is logged; the next one tries again
                log.exception("rollout tick failed")

    def status_json(self) -> list[dict]:
        with self._lock:
            return [s.model_dump(mode="json", by_alias=True, exclude_none=True) for s in self.statuses.values()]


def serve_control(driver: LocalRollouts, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve the rollouts' status and commands on ``host:port`` in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.rstrip("/") != "/rollouts":
                return self._send(404, {"error": "GET /rollouts"})
            self._send(200, driver.status_json())

        def do_POST(self):
            parts = self.path.strip("/").split("/", 2)
            if len(parts) < 2 or parts[0] != "rollouts":
                return self._send(404, {"error": "POST /rollouts/<command>[/<route>]"})
            try:
                self._send(200, {"message": driver.command(" ".join(parts[1:]))})
            except ValueError as err:
                self._send(400, {"error": str(err)})

        def log_message(self, *args):  # quiet: the CLI reports what matters
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="rollout-control", daemon=True).start()
    return server
