"""Generate the ModelFleet CRD from the pydantic models: the schema is never written by hand.

Pydantic emits JSON Schema (2020-12, with $refs); Kubernetes wants a structural OpenAPI v3.0
schema: everything inlined, a type on every node, ``nullable`` instead of ``null`` unions, and no
``additionalProperties: false`` (the API server prunes unknown fields instead).
"""

from __future__ import annotations

import copy
from typing import Any

from serving.api.documents import GROUP, KIND, VERSION
from serving.api.fleet import FleetSpec
from serving.api.status import FleetStatus

PLURAL = "modelfleets"
CRD_NAME = f"{PLURAL}.{GROUP}"

PRINTER_COLUMNS = [
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
     "description": "Whether every route is served."},
    {"name": "Routes", "type": "integer", "jsonPath": ".status.routeCount"},
    {"name": "Adapters", "type": "integer", "jsonPath": ".status.adapterCount",
     "description": "Adapter versions in the fleet."},
    {"name": "Rollout", "type": "string", "jsonPath": ".status.rolloutPhase",
     "description": "Phase of the canary rollouts."},
    {"name": "Canary", "type": "string", "jsonPath": ".status.canary",
     "description": "Canary versions and their share of traffic."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _structural(node: Any, defs: dict) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _structural({**target, **extra}, defs)
    node = dict(node)
    for key in ("title", "$defs"):
        node.pop(key, None)
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    if node.get("type") == "object" and "properties" not in node and node.get("additionalProperties") in (True, {}):
        # A free-form object (a probe's JSON Schema): kept as written instead of pruned.
        del node["additionalProperties"]
        node["x-kubernetes-preserve-unknown-fields"] = True
    options = node.pop("anyOf", None)
    if options is not None:
        non_null = [o for o in options if o.get("type") != "null"]
        if len(non_null) != 1:
            raise ValueError(f"cannot express union {options} in a structural schema")
        merged = {**_structural(non_null[0], defs), **{k: v for k, v in node.items()}}
        if len(non_null) < len(options):
            merged["nullable"] = True
        node = merged
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(node.get(bound), (int, float)) and not isinstance(node.get(bound), bool):
            node["minimum" if bound == "exclusiveMinimum" else "maximum"] = node[bound]
            node[bound] = True
    if node.get("default", 0) is None:
        del node["default"]
    return {k: _structural(v, defs) for k, v in node.items()}


def openapi_schema(model) -> dict:
    """A structural OpenAPI v3.0 schema for a pydantic model (camelCase field names)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(raw, raw.get("$defs", {}))


def crd() -> dict:
    spec_schema = openapi_schema(FleetSpec)
    spec_schema["description"] = "Base models, adapters with versions, and routes of the fleet."
    status_schema = openapi_schema(FleetStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL,
                      "singular": KIND.lower(), "shortNames": ["mf"], "categories": ["slmfleet"]},
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "A fleet of LoRA-adapted small language models served on Ray Serve.",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema,
                        "status": status_schema,
                    },
                }},
            }],
        },
    }


def crd_yaml() -> str:
    import yaml

    header = "# Generated by `slm-fleet crd` from the pydantic models in serving/api/. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)
