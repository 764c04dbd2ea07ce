"""A second fleet router, in its own Serve application, over the bench fleet's base deployment.

The faults benchmark deploys it with tenants and limits next to the fleet's own (open) router, so the two are
measured side by side over the same engine: what the limiter adds to a request.
"""

from __future__ import annotations

from ray import serve

from load_tests.bench.stack import BASE
from serving.dataplane.app import router_app
from serving.dataplane.router import FleetRouter
from serving.render.serve_config import APP_NAME, base_deployment_name


class SecondRouter(FleetRouter):
    def __init__(self):
        super().__init__({BASE: serve.get_deployment_handle(base_deployment_name(BASE), app_name=APP_NAME)})


app = router_app(None, SecondRouter, name="SecondRouter")
