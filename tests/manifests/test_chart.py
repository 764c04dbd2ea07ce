"""The Helm chart: lint, schema-valid Kubernetes objects, least-privilege RBAC, the operator's
command line and environment, and values.schema.json refusing bad values."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from serving.observability.metrics import PROMETHEUS_RENAME
from tests.manifests.conftest import CHART, CI_VALUES, NAMESPACE, assert_valid_for_kubernetes, by_kind, one

VALUE_SETS = [None, *CI_VALUES]
VALUE_IDS = ["defaults", *(p.stem for p in CI_VALUES)]
NAMESPACED = CHART / "ci" / "namespaced-values.yaml"
MONITORING = CHART / "ci" / "monitoring-values.yaml"
EXTERNAL_RBAC = CHART / "ci" / "external-rbac-values.yaml"

# (apiGroup, resource, verb) the operator needs, per scope; nothing else may be granted.
NAMESPACED_GRANTS = {
    *(("slmfleet.io", "modelfleets", v) for v in ("get", "list", "watch", "patch")),
    *(("slmfleet.io", "modelfleets/status", v) for v in ("get", "patch")),
    *(("ray.io", "rayservices", v) for v in ("get", "list", "watch", "create", "patch")),
    *((g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")),
    # The fleets' internal-key Secrets only: made once, then read; no list or watch of Secrets, no update.
    *(("", "secrets", v) for v in ("get", "create")),
}
CLUSTER_GRANTS = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}

KOPF = ["kopf", "run", "--standalone", "--liveness=http://0.0.0.0:8080/healthz", "-m", "operators.handlers"]


def values_args(values):
    return () if values is None else (values,)


def grants(role: dict) -> list[tuple[str, str, str]]:
    out = []
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, \
            f"{role['metadata']['name']}: unexpected rule keys {rule}"
        out += [(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]]
    return out


def container(objects: list[dict]) -> dict:
    (c,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def env_of(objects: list[dict]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(objects)["env"]}


@pytest.mark.parametrize("values", VALUE_SETS, ids=VALUE_IDS)
def test_lint_strict(helm, values):
    args = ["lint", "--strict", str(CHART)] + (["-f", str(values)] if values else [])
    done = helm.run(*args, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("values", VALUE_SETS, ids=VALUE_IDS)
def test_rendered_objects_are_valid_kubernetes(helm, values):
    objects = helm.objects(*values_args(values))
    assert {"Deployment"} <= {o["kind"] for o in objects}
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "PodMonitor":  # not a built-in kind: no schema to check against
            assert obj["apiVersion"] == "monitoring.coreos.com/v1", name
            assert obj["spec"]["selector"]["matchLabels"], name
            continue
        assert_valid_for_kubernetes(obj, name)
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"].get("namespace"), f"{name} has no namespace (breaks `kubectl apply -f install.yaml`)"
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "slm-fleet", name


def test_cluster_wide_rbac_is_exactly_what_the_operator_uses(helm):
    objects = helm.objects()
    assert not by_kind(objects, "Role") and not by_kind(objects, "RoleBinding")
    role = one(objects, "ClusterRole")
    granted = grants(role)
    assert len(granted) == len(set(granted)), f"duplicate grants: {granted}"
    assert set(granted) == NAMESPACED_GRANTS | CLUSTER_GRANTS
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    account = one(objects, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": NAMESPACE}]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


def test_namespaced_rbac_has_a_role_in_each_watched_namespace(helm):
    objects = helm.objects(NAMESPACED)
    account = one(objects, "ServiceAccount")["metadata"]["name"]
    roles = {r["metadata"]["namespace"]: r for r in by_kind(objects, "Role")}
    bindings = {b["metadata"]["namespace"]: b for b in by_kind(objects, "RoleBinding")}
    assert sorted(roles) == sorted(bindings) == ["team-a", "team-b"]
    for ns, role in roles.items():
        assert set(grants(role)) == NAMESPACED_GRANTS, ns
        assert bindings[ns]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                           "name": role["metadata"]["name"]}
        assert bindings[ns]["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    # Cluster-wide, only the CRD discovery kopf needs.
    cluster_role = one(objects, "ClusterRole")
    assert set(grants(cluster_role)) == CLUSTER_GRANTS
    assert one(objects, "ClusterRoleBinding")["roleRef"]["name"] == cluster_role["metadata"]["name"]


@pytest.mark.parametrize("values", VALUE_SETS, ids=VALUE_IDS)
def test_no_wildcards_anywhere_in_rbac(helm, values):
    objects = helm.objects(*values_args(values))
    for role in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], f"{role['metadata']['name']}: wildcard in {key}"
            assert not rule.get("resourceNames") and not rule.get("nonResourceURLs")


def test_external_rbac_renders_no_account_or_roles(helm):
    objects = helm.objects(EXTERNAL_RBAC)
    kinds = {o["kind"] for o in objects}
    assert kinds.isdisjoint({"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}), kinds
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "platform-managed-slm-fleet"


def test_operator_watches_all_namespaces_by_default(helm):
    c = container(helm.objects())
    assert c["command"] == KOPF + ["--all-namespaces"]
    assert "args" not in c


def test_operator_watches_only_listed_namespaces(helm):
    c = container(helm.objects(NAMESPACED))
    assert c["command"] == KOPF + ["--namespace=team-a", "--namespace=team-b"]


def test_operator_deployment_defaults(helm):
    objects = helm.objects()
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    c = container(objects)
    assert c["image"] == "ghcr.io/slm-fleet/operator:0.1.0"
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
    probe = c["livenessProbe"]["httpGet"]
    port = next(p["containerPort"] for p in c["ports"] if p["name"] == probe["port"])
    assert (probe["path"], port) == ("/healthz", 8080)
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_operator_environment_defaults(helm):
    assert env_of(helm.objects()) == {
        "SLMFLEET_RAY_IMAGE": "ghcr.io/slm-fleet/serving:0.1.0",
        "SLMFLEET_RAY_VERSION": "2.60.0",
        "SLMFLEET_HEAD_CPU": "1",
        "SLMFLEET_HEAD_MEMORY": "4Gi",
        "SLMFLEET_WORKER_MEMORY": "16Gi",
        "SLMFLEET_IMAGE_PULL_POLICY": "IfNotPresent",
        "SLMFLEET_RAY_SERVICE_ACCOUNT": "",
        "SLMFLEET_S3_ENDPOINT_URL": "",
        "SLMFLEET_S3_CREDENTIALS_SECRET": "",
        "SLMFLEET_OTLP_ENDPOINT": "",
        "SLMFLEET_PROMETHEUS_URL": "",
        "SLMFLEET_FLEET_URL": "http://{name}-serve-svc.{namespace}.svc:8000",
        "SLMFLEET_ROLLOUT_TICK_SECONDS": "10",
    }


def test_operator_environment_follows_values(helm):
    objects = helm.objects(NAMESPACED)
    assert env_of(objects) == {
        "SLMFLEET_RAY_IMAGE": "registry.example.com/ml/slm-fleet-serving:0.1.0-rc1-cu128",
        "SLMFLEET_RAY_VERSION": "2.60.0",
        "SLMFLEET_HEAD_CPU": "2",
        "SLMFLEET_HEAD_MEMORY": "8Gi",
        "SLMFLEET_WORKER_MEMORY": "48Gi",
        "SLMFLEET_IMAGE_PULL_POLICY": "Always",
        "SLMFLEET_RAY_SERVICE_ACCOUNT": "fleet-reader",
        "SLMFLEET_S3_ENDPOINT_URL": "http://minio.storage.svc:9000",
        "SLMFLEET_S3_CREDENTIALS_SECRET": "model-bucket",
        "SLMFLEET_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
        "SLMFLEET_PROMETHEUS_URL": "http://prometheus-operated.monitoring:9090",
        "SLMFLEET_FLEET_URL": "http://{name}-serve-svc.{namespace}.svc:8000",
        "SLMFLEET_ROLLOUT_TICK_SECONDS": "5",
    }
    c = container(objects)
    assert c["image"] == "registry.example.com/ml/slm-fleet-operator:0.1.0-rc1"
    assert c["imagePullPolicy"] == "Always"
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_operator_reads_every_variable_the_chart_sets(helm):
    from operators.settings import OperatorSettings

    settings = OperatorSettings.from_env(env_of(helm.objects(NAMESPACED)))
    assert settings.ray_image == "registry.example.com/ml/slm-fleet-serving:0.1.0-rc1-cu128"
    assert (settings.head_cpu, settings.head_memory, settings.worker_memory) == ("2", "8Gi", "48Gi")
    assert settings.image_pull_policy == "Always"
    assert settings.ray_service_account == "fleet-reader"
    assert (settings.s3_endpoint_url, settings.s3_credentials_secret) == ("http://minio.storage.svc:9000",
                                                                          "model-bucket")
    assert settings.otlp_endpoint == "http://otel-collector.observability:4318"
    assert (settings.prometheus_url, settings.rollout_tick_seconds) == (
        "http://prometheus-operated.monitoring:9090", 5.0)
    assert settings.fleet_url_for("chat", "team-a") == "http://chat-serve-svc.team-a.svc:8000"
    defaults = OperatorSettings.from_env(env_of(helm.objects()))
    assert defaults == OperatorSettings(), "the chart's defaults and the operator's must agree"


def test_pod_monitor_only_when_enabled(helm):
    assert not by_kind(helm.objects(), "PodMonitor")
    monitor = one(helm.objects(MONITORING), "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    # Every Ray pod, head and workers: the base-model replicas' metrics are exported by their nodes.
    assert monitor["spec"]["selector"] == {"matchLabels": {"ray.io/is-ray-node": "yes"}}
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("metrics", "/metrics", "15s")


def test_pod_monitor_renames_ray_metrics_as_the_catalog_expects(helm):
    (endpoint,) = one(helm.objects(MONITORING), "PodMonitor")["spec"]["podMetricsEndpoints"]
    assert endpoint["metricRelabelings"] == [PROMETHEUS_RENAME]


def test_pod_monitor_follows_watched_namespaces(helm):
    monitor = one(helm.objects(NAMESPACED, sets=("monitoring.enabled=true",)), "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


@pytest.mark.parametrize("values,notes", [
    (None, ["kubectl apply -f manifests/examples/quickstart.yaml", "kubectl get mf -A",
            "ModelFleets in all namespaces", "deployment/slm-fleet-operator"]),
    (NAMESPACED, ["kubectl apply -n team-a -f manifests/examples/quickstart.yaml", "kubectl get mf -n team-a",
                  "namespaces team-a, team-b"]),
], ids=["defaults", "namespaced"])
def test_notes_tell_how_to_deploy_a_fleet(helm, values, notes):
    args = ["install", "slm-fleet", str(CHART), "--dry-run=client", "--namespace", NAMESPACE]
    out = helm.run(*args, *(["-f", str(values)] if values else [])).stdout
    text = out[out.index("NOTES:"):]
    for line in notes:
        assert line in text


@pytest.mark.parametrize("values,words", [
    ({"watchNamespaces": "team-a"}, ["/watchNamespaces", "want array"]),
    ({"watchNamespaces": ["Team_A"]}, ["/watchNamespaces/0"]),
    ({"operater": {"image": {"tag": "x"}}}, ["'operater' not allowed"]),
    ({"serving": {"rayversion": "2.60.0"}}, ["/serving", "'rayversion' not allowed"]),
    ({"serving": {"imagePullPolicy": "Sometimes"}}, ["/serving/imagePullPolicy"]),
    ({"operator": {"image": {"repo": "x"}}}, ["/operator/image", "'repo' not allowed"]),
    ({"monitoring": {"enabled": "yes"}}, ["/monitoring/enabled", "want boolean"]),
    ({"monitoring": {"dashboard": {"enabeld": True}}}, ["/monitoring/dashboard", "'enabeld' not allowed"]),
    ({"serving": {"head": {"memory": "lots"}}}, ["/serving/head/memory"]),
    ({"serving": {"s3": {"endpointUrl": "minio:9000"}}}, ["/serving/s3/endpointUrl"]),
], ids=["namespaces-string", "namespace-name", "typo-top", "typo-nested", "pull-policy", "typo-image",
        "bool-string", "typo-dashboard", "bad-quantity", "endpoint-scheme"])
def test_schema_refuses_bad_values(helm, tmp_path, values, words):
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    done = helm.run("template", "x", str(CHART), "-f", str(path), check=False)
    assert done.returncode != 0, f"helm accepted {values}"
    assert "don't meet the specifications of the schema" in done.stderr, done.stderr
    for w in words:
        assert w in done.stderr, done.stderr


def test_lint_refuses_a_typo(helm, tmp_path):
    path = tmp_path / "values.yaml"
    path.write_text("monitoring:\n  enabeld: true\n")
    done = helm.run("lint", "--strict", str(CHART), "-f", str(path), check=False)
    assert done.returncode != 0 and "'enabeld' not allowed" in done.stdout + done.stderr


def _resolve(schema: dict, node: dict) -> dict:
    if "$ref" in node:
        return _resolve(schema, schema["definitions"][node["$ref"].rsplit("/", 1)[-1]])
    return node


def _declared(schema: dict, node: dict, path=()) -> dict[tuple, dict]:
    """Every key declared in the schema (not entries of free-form maps), by path."""
    out = {}
    for key, sub in _resolve(schema, node).get("properties", {}).items():
        sub = _resolve(schema, sub)
        out[path + (key,)] = sub
        out.update(_declared(schema, sub, path + (key,)))
    return out


def test_values_and_schema_agree_and_every_value_is_commented():
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    declared = _declared(schema, schema)
    for path, node in [((), schema), *declared.items()]:
        if "properties" in node:
            assert node.get("additionalProperties") is False, \
                f"{'.'.join(path) or 'top level'}: set additionalProperties false"

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in declared:
        value = defaults
        for key in path:
            assert isinstance(value, dict) and key in value, f"values.yaml has no default for {'.'.join(path)}"
            value = value[key]

    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z0-9_./-]+):(.*)$", line)
        if not m:
            continue
        indent = len(m[1])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m[2]))
        path = tuple(k for _, k in stack)
        if path not in declared or "properties" in declared[path]:
            continue  # a group of values, or an entry of a free-form map: its parent is commented
        commented = "#" in m[3] or lines[i - 1].strip().startswith("#")
        assert commented, f"values.yaml line {i + 1}: {'.'.join(path)} has no comment"
