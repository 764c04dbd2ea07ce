"""Load test of a running fleet through its OpenAI API (`make load`).

Each user sends chat completions and completions to the fleet's routes (``model`` = route name),
one after the other with no pause, so the number of users is the number of requests in flight.

Environment variables, all optional; an invalid one stops the run before any request, named:

  variable               what                                               default
  SLMFLEET_ROUTES        routes to load, comma-separated                    the routes GET /v1/models lists
  SLMFLEET_ROUTE_MIX     uniform, or zipf: the n-th route (SLMFLEET_ROUTES   uniform
                         or /v1/models order) gets a share prop. to 1/n^s
  SLMFLEET_ZIPF_S        the exponent s of zipf                             1.1
  SLMFLEET_CHAT_RATIO    share sent to /v1/chat/completions (the rest to    0.8
                         /v1/completions)
  SLMFLEET_STREAM_RATIO  share of streaming requests                        0.5
  SLMFLEET_PROMPT_WORDS  words per prompt, min:max, drawn uniformly         3:12
  SLMFLEET_MAX_TOKENS    max_tokens of every request                        16
  SLMFLEET_SEED          seed of the random choices (user n: seed + n)      unseeded
  SLMFLEET_API_KEY       a tenant's API key (a fleet with tenants)          none

Requests are reported by kind and route: ``chat:shout``, ``chat-stream:shout``, ``completion:json``,
``completion-stream:json``, each timed to its last byte. Rows of type TTFT (``chat-stream-ttft:shout``)
are the time to the first chunk of those streams; Locust's "Aggregated" row counts them too.
What counts as a failure is in ``fleet_user.py``.

    locust -f load_tests/locustfile.py --headless --host http://127.0.0.1:8000 -u 4 -r 2 -t 30s
"""

from __future__ import annotations

import logging
import os

import requests
from fleet_user import FleetUser
from locust import events, task
from workload import RoutePicker, Settings, SettingsError, parse_settings, plan_request

logger = logging.getLogger("slmfleet.load")

settings: Settings | None = None
routes: tuple[str, ...] = ()


@events.init.add_listener
def _prepare(environment, **_):
    """Settings and routes before any user starts; a problem stops the run with exit code 2."""
    global settings, routes
    try:
        settings = parse_settings(os.environ)
        routes = settings.routes or _fleet_routes(environment.host)
    except SettingsError as err:
        logger.error("%s", err)
        raise SystemExit(2) from None
    logger.info("routes: %s (%s mix)", ", ".join(routes), settings.route_mix)


def _fleet_routes(host: str | None) -> tuple[str, ...]:
    if not host:
        raise SettingsError("no --host: pass the fleet's URL, e.g. --host http://127.0.0.1:8000")
    try:
        key = os.environ.get("SLMFLEET_API_KEY")
        resp = requests.get(f"{host.rstrip('/')}/v1/models", timeout=10,
                            headers={"Authorization": f"Bearer {key}"} if key else {})
        resp.raise_for_status()
        found = tuple(m["id"] for m in resp.json()["data"])
    except (requests.RequestException, ValueError, KeyError, TypeError) as err:
        raise SettingsError(f"could not list the fleet's routes at {host}/v1/models ({err}); "
                            "is a fleet serving there? Or name them in SLMFLEET_ROUTES") from None
    if not found:
        raise SettingsError(f"{host}/v1/models lists no routes")
    return found


class OpenAIUser(FleetUser):
    def on_start(self):
        super().on_start()
        self.rng = self.user_rng(settings)
        self.picker = RoutePicker(routes, mix=settings.route_mix, zipf_s=settings.zipf_s, rng=self.rng)

    @task
    def request(self):
        self.send(plan_request(settings, self.picker.pick(), self.rng))
