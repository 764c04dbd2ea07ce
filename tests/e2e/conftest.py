"""The optional end-to-end suite: what the kmock emulator cannot show, against a real cluster.

Runs only when SLMFLEET_E2E_CONTEXT names a kube context (kind or any disposable cluster);
otherwise every test here is skipped with that reason. It needs no GPU and no KubeRay
controller: it installs the chart (CRD, ServiceAccount, RBAC), stops the chart's operator pod
(its image may not be in the cluster) and runs the same operator here, logged in as the chart's
ServiceAccount, so the API server enforces exactly the chart's RBAC. If the cluster has no
RayService CRD, the vendored KubeRay CRD is applied (and left, as CRDs are cluster-wide).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
KUBECTL, HELM = ROOT / ".tools" / "kubectl", ROOT / ".tools" / "helm"
CONTEXT = os.environ.get("SLMFLEET_E2E_CONTEXT")
NO_CLUSTER = ("no cluster configured: set SLMFLEET_E2E_CONTEXT to the kube context of a disposable cluster "
              "(e.g. `kind create cluster` then SLMFLEET_E2E_CONTEXT=kind-kind make e2e)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.skipif(not CONTEXT, reason=NO_CLUSTER))


def kubectl(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(KUBECTL), "--context", CONTEXT, *args], input=input, capture_output=True,
                          text=True, timeout=120)
    if check and done.returncode != 0:
        pytest.fail(f"kubectl {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done


def kubectl_json(*args: str) -> dict | None:
    done = kubectl(*args, "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


class Cluster:
    def __init__(self, namespace: str, release: str):
        self.namespace, self.release = namespace, release
        self.account = f"{release}-operator"

    def apply(self, manifest: dict, *, server_side: bool = True) -> subprocess.CompletedProcess:
        args = ["apply", "-n", self.namespace, "-f", "-"]
        if server_side:
            args += ["--server-side", "--field-manager=e2e"]
        return kubectl(*args, input=yaml.safe_dump(manifest), check=False)

    def get(self, kind: str, name: str) -> dict | None:
        return kubectl_json("get", kind, name, "-n", self.namespace)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    for tool in (KUBECTL, HELM):
        if not tool.is_file():
            pytest.fail(f"{tool.relative_to(ROOT)} is missing: run `make tools`")
    suffix = uuid.uuid4().hex[:6]
    c = Cluster(f"slmfleet-e2e-{suffix}", f"slmfleet-e2e-{suffix}")
    if kubectl("get", "crd", "rayservices.ray.io", check=False).returncode != 0:
        kubectl("apply", "--server-side", "-f", str(ROOT / "tests/data/kuberay/ray.io_rayservices.yaml"))
    kubectl("create", "namespace", c.namespace)
    helm = [str(HELM), "--kube-context", CONTEXT]
    try:
        subprocess.run([*helm, "install", c.release, str(ROOT / "helm/slm-fleet"), "-n", c.namespace, "--wait=false",
                        "--set", f"fullnameOverride={c.release}", "--set", f"watchNamespaces={{{c.namespace}}}"],
                       check=True, capture_output=True, text=True, timeout=180)
        kubectl("scale", "deployment", f"{c.release}-operator", "-n", c.namespace, "--replicas=0")
        yield c
    finally:
        subprocess.run([*helm, "uninstall", c.release, "-n", c.namespace], capture_output=True, timeout=180)
        kubectl("delete", "namespace", c.namespace, "--wait=false", check=False)


@pytest.fixture(scope="session")
def operator(cluster, tmp_path_factory):
    """The operator as a process, with a kubeconfig holding only the chart ServiceAccount's token."""
    token = kubectl("create", "token", cluster.account, "-n", cluster.namespace, "--duration=1h").stdout.strip()
    raw = json.loads(kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout)
    server = raw["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [{"name": "e2e", "cluster": server}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "e2e", "user": "operator",
                                                       "namespace": cluster.namespace}}],
    }
    folder = tmp_path_factory.mktemp("operator")
    (folder / "kubeconfig").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLMFLEET_", "KUBERNETES_"))}
    env["KUBECONFIG"] = str(folder / "kubeconfig")
    log = open(folder / "operator.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "kopf", "run", "--standalone", "-m", "operators.handlers",
                             f"--namespace={cluster.namespace}"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    yield proc
    proc.terminate()
    proc.wait(timeout=30)
    log.close()
    print((folder / "operator.log").read_text()[-4000:])  # shown with -rA / on failure
