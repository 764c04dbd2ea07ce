"""A real Prometheus server (Debian's package) on loopback, scraping the fleet's metrics port."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import yaml

from serving.local.ports import free_port
from serving.observability.metrics import prometheus_scrape_rename
from tests.waiting import eventually

BINARY = "/usr/bin/prometheus"


class Prometheus:
    def __init__(self, folder: Path, target: str):
        self.folder, self.target = folder, target
        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Prometheus:
        if not shutil.which(BINARY):
            raise RuntimeError(f"{BINARY} is missing: `make test` installs Debian's prometheus package")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": "ray", "static_configs": [{"targets": [self.target]}],
                # The rule the chart's PodMonitor applies: Ray's ray_slmfleet_* become slmfleet_*.
                "metric_relabel_configs": [prometheus_scrape_rename()],
            }],
        }
        (self.folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(self.folder / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [BINARY, f"--config.file={self.folder / 'prometheus.yml'}", f"--storage.tsdb.path={self.folder / 'data'}",
             f"--web.listen-address={self.url.removeprefix('http://')}"],
            stdout=self.log, stderr=subprocess.STDOUT)

        def ready() -> bool:
            try:
                return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            eventually(ready, timeout=30, interval=0.3)
        except AssertionError:
            raise RuntimeError(f"prometheus did not become ready; see {self.folder / 'prometheus.log'}") from None
        return self

    def query(self, promql: str) -> list[dict]:
        """Instant query; raises with Prometheus's message on a bad expression."""
        resp = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        body = resp.json()
        if body.get("status") != "success":
            raise AssertionError(f"{promql}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]["result"]

    def value(self, promql: str) -> float:
        result = self.query(promql)
        return sum(float(r["value"][1]) for r in result)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.log.close()
