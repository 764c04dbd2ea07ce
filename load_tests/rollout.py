"""Load on routes during a canary rollout (`make load-rollout`): who answered, and who failed.

The same users as ``locustfile.py`` (same SLMFLEET_* variables), but each request is reported
under the version that served it, ``completion:shout@shout@v2``, so Locust's statistics show how
many requests the canary and the stable version each answered and how many of each failed. Run it
while a rollout progresses (`slm-fleet rollout status` shows where it is):

    SLMFLEET_ROUTES=shout locust -f load_tests/rollout.py --headless --host http://127.0.0.1:8000 \\
        -u 4 -r 4 -t 120s --csv .load/rollout
"""

from __future__ import annotations

import locustfile  # its init listener reads and checks the settings and routes
from fleet_user import FleetUser
from locust import task
from workload import RoutePicker, plan_request


class RolloutUser(FleetUser):
    def on_start(self):
        super().on_start()
        self.rng = self.user_rng(locustfile.settings)
        self.picker = RoutePicker(locustfile.routes, mix=locustfile.settings.route_mix,
                                  zipf_s=locustfile.settings.zipf_s, rng=self.rng)

    @task
    def request(self):
        self.send(plan_request(locustfile.settings, self.picker.pick(), self.rng), name_by_served=True)
