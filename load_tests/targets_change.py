"""Load on one route while its targets change under it (`make load-targets`).

Needs a fleet served from a file that is watched, `slm-fleet serve FILE` (or
`slm-fleet demo --file FILE`). While the users load SLMFLEET_ROUTE, this rewrites FILE every
SLMFLEET_CHANGE_EVERY seconds so that the route's traffic moves between two targets, 100/0 ->
50/50 -> 0/100 -> 50/50 -> 100/0 ...: its first target, and another version of that adapter (or
the adapter's base model where it has one version). At the end FILE gets its original bytes back,
the served-by counts are printed, and the exit code is 1 if any request failed, or if the load
never reached both targets although each had all the traffic for a while.

Environment variables:

  variable               what                                               default
  SLMFLEET_FLEET_FILE    the fleet file `slm-fleet serve` watches           required
  SLMFLEET_ROUTE         the route under load                               shout
  SLMFLEET_CHANGE_EVERY  seconds between two rewrites of the file           10
  SLMFLEET_CHAT_RATIO, SLMFLEET_STREAM_RATIO, SLMFLEET_PROMPT_WORDS, SLMFLEET_MAX_TOKENS,
  SLMFLEET_SEED          as in locustfile.py

Every rewrite goes to a temporary file beside FILE that then replaces it (os.replace), so the
watcher never reads half a file. Run it in one process (not --processes/--master): the served-by
counts are kept per process.

    SLMFLEET_FLEET_FILE=.load/fleet.yaml locust -f load_tests/targets_change.py --headless \\
        --host http://127.0.0.1:8000 -u 2 -r 2 -t 60s
"""

from __future__ import annotations

import collections
import logging
import os
import tempfile
from pathlib import Path

import gevent
import yaml
from fleet_user import FleetUser
from locust import events, task
from locust.runners import WorkerRunner
from workload import (
    WEIGHT_STEPS,
    SettingsError,
    TargetsChangeSettings,
    alternate_targets,
    parse_targets_change_settings,
    plan_request,
    served_by,
    target_label,
    with_route_targets,
)

from serving.api.documents import fleet_from_document, load_fleet_file
from serving.api.problems import FleetSpecError

logger = logging.getLogger("slmfleet.load")


class Scenario:
    """What the run shares: settings, the fleet file as it was, and what was seen."""

    def __init__(self, settings: TargetsChangeSettings, original: bytes, doc: dict, targets: tuple[dict, dict]):
        self.settings, self.original, self.doc, self.targets = settings, original, doc, targets
        self.labels = tuple(target_label(t) for t in targets)
        self.served_by: collections.Counter[str] = collections.Counter()
        self.steps_written = 0
        self.changer: gevent.Greenlet | None = None


scenario: Scenario | None = None


@events.init.add_listener
def _prepare(environment, **_):
    """Settings, the fleet file and the two targets; a problem stops the run with exit code 2."""
    global scenario
    try:
        settings = parse_targets_change_settings(os.environ)
        path = Path(settings.fleet_file)
        load_fleet_file(path)  # a file that cannot be read or is not a valid fleet: every problem, named
        original = path.read_bytes()
        doc = yaml.safe_load(original)
        targets = alternate_targets(doc, settings.route)
    except SettingsError as err:
        logger.error("%s", err)
        raise SystemExit(2) from None
    except FleetSpecError as err:
        logger.error("SLMFLEET_FLEET_FILE: %s", err)
        raise SystemExit(2) from None
    scenario = Scenario(settings, original, doc, targets)
    logger.info("route %s: traffic moves between %s and %s every %gs, by rewriting %s",
                settings.route, *scenario.labels, settings.change_every, path)


@events.test_start.add_listener
def _start_changes(environment, **_):
    if not isinstance(environment.runner, WorkerRunner):  # the file is rewritten once, not per worker
        scenario.changer = gevent.spawn(_change_targets)


def _change_targets() -> None:
    step = 0
    while True:
        weights = WEIGHT_STEPS[step % len(WEIGHT_STEPS)]
        changed = with_route_targets(scenario.doc, scenario.settings.route, scenario.targets, weights)
        fleet_from_document(changed, source=scenario.settings.fleet_file)  # never write a fleet that is invalid
        _replace(Path(scenario.settings.fleet_file), yaml.safe_dump(changed, sort_keys=False).encode())
        scenario.steps_written = step = step + 1
        logger.info("route %s: %s %d%% / %s %d%%", scenario.settings.route,
                    scenario.labels[0], weights[0], scenario.labels[1], weights[1])
        gevent.sleep(scenario.settings.change_every)


def _replace(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` atomically: a reader sees the old file or the new one, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@events.test_stop.add_listener
def _restore(environment, **_):
    """Stop the changes and give the fleet file its original bytes back (once, whichever event comes first)."""
    if scenario is None or scenario.changer is None:
        return
    scenario.changer.kill()
    scenario.changer = None
    _replace(Path(scenario.settings.fleet_file), scenario.original)
    logger.info("restored %s", scenario.settings.fleet_file)


@events.quitting.add_listener
def _report(environment, **_):
    if scenario is None or isinstance(environment.runner, WorkerRunner):
        return
    _restore(environment)
    route = scenario.settings.route
    print(f"\ntargets_change: route {route}, {scenario.steps_written} version(s) of "
          f"{scenario.settings.fleet_file} written, then the original restored")
    for label, count in sorted(scenario.served_by.items()):
        print(f"served by {label}: {count} request(s)")
    failures = environment.stats.total.num_failures
    # Steps 0/100 and then 50/50 written: each target has had all of the traffic for a while.
    both_expected = scenario.steps_written > WEIGHT_STEPS.index((0, 100)) + 1
    missing = [label for label in scenario.labels if not scenario.served_by[label]]
    if failures:
        print(f"FAILED: {failures} request(s) failed while the targets of route {route} changed")
        environment.process_exit_code = 1
    elif both_expected and missing:
        print(f"FAILED: no answer from {', '.join(missing)}: were the edits of {scenario.settings.fleet_file} "
              "applied? It must be the file `slm-fleet serve` watches")
        environment.process_exit_code = 1


class TargetsChangeUser(FleetUser):
    def on_start(self):
        super().on_start()
        self.rng = self.user_rng(scenario.settings.workload)

    @task
    def request(self):
        planned = plan_request(scenario.settings.workload, scenario.settings.route, self.rng)
        headers = self.send(planned)
        if headers is not None:
            label = served_by(headers)
            scenario.served_by[label] += 1
            if label not in scenario.labels:
                # Reported as its own failure: the answer was fine, who served it was not.
                self.environment.events.request.fire(
                    request_type="CHECK", name=f"served-by:{scenario.settings.route}", response_time=0,
                    response_length=0, context={},
                    exception=ValueError(f"served by {label}, not one of {', '.join(scenario.labels)}"))

