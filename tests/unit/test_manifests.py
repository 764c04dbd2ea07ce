import pytest
import yaml

from serving.api.documents import API_VERSION, KIND, load_fleet_file
from serving.api.problems import FleetSpecError
from tests.unit.fleets import FLEET


def write(tmp_path, text: str):
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return path


def test_manifest_and_bare_spec_give_the_same_fleet(tmp_path):
    bare = load_fleet_file(write(tmp_path, yaml.safe_dump(FLEET)))
    manifest = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "f"}, "spec": FLEET}
    assert load_fleet_file(write(tmp_path, yaml.safe_dump(manifest))) == bare


@pytest.mark.parametrize("text,words", [
    ("apiVersion: slmfleet.io/v1alpha1\nkind: RayService\nspec: {}\n", "kind: is 'RayService'; expected 'ModelFleet'"),
    ("apiVersion: v1\nkind: ModelFleet\nspec: {}\n", "apiVersion: is 'v1'"),
    ("apiVersion: slmfleet.io/v1alpha1\nkind: ModelFleet\n", "spec: required field is missing"),
    ("routes: [\n", "not valid YAML"),
    ("- a\n- b\n", "expected a mapping"),
    ("a: 1\n---\nb: 2\n", "expected one YAML document, found 2"),
])
def test_bad_files(tmp_path, text, words):
    with pytest.raises(FleetSpecError) as info:
        load_fleet_file(write(tmp_path, text))
    assert words in str(info.value)


def test_manifest_errors_are_prefixed_with_spec(tmp_path):
    broken = {**FLEET, "routes": [{"name": "r", "targets": [{"adapter": "nope", "version": "v1"}]}]}
    manifest = {"apiVersion": API_VERSION, "kind": KIND, "spec": broken}
    with pytest.raises(FleetSpecError, match=r"spec\.routes\[0\]\.targets\[0\]\.adapter: .*unknown adapter 'nope'"):
        load_fleet_file(write(tmp_path, yaml.safe_dump(manifest)))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FleetSpecError, match="cannot read file"):
        load_fleet_file(tmp_path / "absent.yaml")


def test_example_fleets_are_valid():
    from pathlib import Path

    examples = sorted(Path(__file__).parents[2].glob("manifests/examples/*.yaml"))
    assert examples
    for path in examples:
        load_fleet_file(path)
