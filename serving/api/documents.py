"""Read fleet files: a plain FleetSpec, or a whole ``ModelFleet`` manifest (apiVersion/kind/spec)."""

from __future__ import annotations

from pathlib import Path

import yaml

from serving.api.fleet import FleetSpec, parse_fleet
from serving.api.problems import FleetSpecError, Problem

GROUP = "slmfleet.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelFleet"


def fleet_from_document(doc: object, *, source: str) -> FleetSpec:
    """A FleetSpec from one YAML document: a ModelFleet manifest or a bare spec."""
    if not isinstance(doc, dict):
        raise FleetSpecError([Problem("", "expected a mapping (a ModelFleet manifest or a fleet spec)")], source)
    if "kind" in doc or "apiVersion" in doc:
        problems = []
        if doc.get("kind") != KIND:
            problems.append(Problem("kind", f"is '{doc.get('kind')}'; expected '{KIND}'"))
        if doc.get("apiVersion") != API_VERSION:
            problems.append(Problem("apiVersion", f"is '{doc.get('apiVersion')}'; expected '{API_VERSION}'"))
        if "spec" not in doc:
            problems.append(Problem("spec", "required field is missing"))
        if problems:
            raise FleetSpecError(problems, source)
        return parse_fleet(doc["spec"], source=source, prefix="spec")
    return parse_fleet(doc, source=source)


def load_fleet_file(path: str | Path) -> FleetSpec:
    """Parse a fleet YAML file; FleetSpecError names every problem, with its field."""
    return read_fleet_file(path)[0]


def read_fleet_file(path: str | Path) -> tuple[FleetSpec, dict]:
    """The spec and the manifest's metadata (empty for a bare spec) of a fleet YAML file."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise FleetSpecError([Problem("", f"cannot read file: {err.strerror}")], source) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise FleetSpecError([Problem("", f"not valid YAML: {err}")], source) from None
    if len(docs) != 1:
        raise FleetSpecError([Problem("", f"expected one YAML document, found {len(docs)}")], source)
    metadata = docs[0].get("metadata") if isinstance(docs[0], dict) else None
    return fleet_from_document(docs[0], source=source), dict(metadata or {})
