import pytest

from serving.api.fields import memory_bytes, parse_s3_uri
from serving.api.fleet import FleetSpec, parse_fleet
from serving.api.problems import FleetSpecError
from tests.unit.fleets import DELETE, FLEET, fleet


def test_valid_fleet_parses_with_defaults():
    spec = parse_fleet(FLEET)
    assert [b.name for b in spec.base_models] == ["tiny-llama", "tiny-qwen"]
    qwen = spec.base("tiny-qwen")
    assert qwen.engine.max_loras == 4 and qwen.engine.resident_adapters == 16
    assert qwen.autoscaling.min_replicas == 1 and qwen.resources.gpu == 0
    # round trip through the YAML (alias) form
    assert FleetSpec.model_validate(spec.model_dump(by_alias=True)) == spec


# (case, changes, path named in the error, words the message must contain)
BROKEN = [
    ("unknown base of adapter", {"adapters.0.baseModel": "llama-70b"},
     "adapters[0].baseModel", "unknown base model 'llama-70b'"),
    ("unknown adapter in route", {"routes.1.targets.0.adapter": "sql"},
     "routes[1].targets[0].adapter", "unknown adapter 'sql'"),
    ("unknown version in route", {"routes.0.targets.1.version": "v9"},
     "routes[0].targets[1].version", "has no version 'v9'"),
    ("unknown base in route", {"routes.2.targets.0.baseModel": "nope"},
     "routes[2].targets[0].baseModel", "unknown base model 'nope'"),
    ("weights not 100", {"routes.0.targets.1.weight": 20},
     "routes[0].targets", "sum to 110; they must sum to 100"),
    ("weight out of range", {"routes.0.targets.1.weight": 120},
     "routes[0].targets[1].weight", "less than or equal to 100"),
    ("duplicate base", {"baseModels.1.name": "tiny-llama", "adapters.1.baseModel": "tiny-llama"},
     "baseModels[1].name", "duplicate name 'tiny-llama'"),
    ("duplicate adapter", {"adapters.1.name": "shout"}, "adapters[1].name", "duplicate name 'shout'"),
    ("duplicate route", {"routes.1.name": "shout"}, "routes[1].name", "duplicate name 'shout'"),
    ("duplicate version", {"adapters.0.versions.1.version": "v1", "routes.0.targets.1.version": "v1"},
     "adapters[0].versions[1].version", "lists version 'v1' twice"),
    ("same target twice", {"routes.0.targets.1.version": "v1"},
     "routes[0].targets[1]", "same target twice"),
    ("adapter source not s3", {"adapters.0.versions.0.source": "/tmp/shout"},
     "adapters[0].versions[0].source", "not an S3 URI"),
    ("base source bad scheme", {"baseModels.0.source": "gs://models/x"},
     "baseModels[0].source", "only s3:// URIs or local paths"),
    ("bad bucket", {"adapters.0.versions.0.source": "s3://A_B/x"},
     "adapters[0].versions[0].source", "not an S3 URI"),
    ("bad sha256", {"adapters.0.versions.1.sha256": "xyz"},
     "adapters[0].versions[1].sha256", "String should match pattern"),
    ("unsupported rank", {"baseModels.0.engine.maxLoraRank": 12},
     "baseModels[0].engine.maxLoraRank", "not a rank vLLM supports"),
    ("cpu loras below gpu loras", {"baseModels.0.engine.maxCpuLoras": 1},
     "baseModels[0].engine", "maxCpuLoras (1) must be >= maxLoras (2)"),
    ("kv cache memory without a unit", {"baseModels.0.engine.kvCacheMemory": "256"},
     "baseModels[0].engine.kvCacheMemory", "String should match pattern"),
    ("kv cache memory in decimal units", {"baseModels.0.engine.kvCacheMemory": "256M"},
     "baseModels[0].engine.kvCacheMemory", "String should match pattern"),
    ("min above max replicas", {"baseModels.0.autoscaling": {"minReplicas": 3, "maxReplicas": 2}},
     "baseModels[0].autoscaling", "minReplicas (3) must be <= maxReplicas (2)"),
    ("downscale delay not a duration", {"baseModels.0.autoscaling": {"downscaleDelay": "600"}},
     "baseModels[0].autoscaling.downscaleDelay", "String should match pattern"),
    ("negative spill margin", {"baseModels.0.placement": {"spillMargin": -1}},
     "baseModels[0].placement.spillMargin", "greater than or equal to 0"),
    ("bad base name", {"baseModels.1.name": "Tiny_Qwen", "adapters.1.baseModel": "Tiny_Qwen"},
     "baseModels[1].name", "String should match pattern"),
    ("typo in field", {"baseModels.0.engine.maxLora": 2},
     "baseModels[0].engine.maxLora", "unknown field"),
    ("target with both kinds", {"routes.2.targets.0.adapter": "shout"},
     "routes[2].targets[0]", "exactly one of adapter (with version) or baseModel"),
    ("adapter target without version", {"routes.1.targets.0.version": DELETE},
     "routes[1].targets[0]", "needs a version"),
    ("no routes", {"routes": []}, "routes", "at least 1 item"),
    ("missing source", {"baseModels.0.source": DELETE}, "baseModels[0].source", "required field is missing"),
    ("accelerator without a GPU", {"baseModels.0.resources": {"gpu": 0, "accelerator": "L4"}},
     "baseModels[0].resources", "accelerator 'L4' needs gpu >= 1"),
    ("unknown accelerator", {"baseModels.0.resources": {"gpu": 1, "accelerator": "RTX9090"}},
     "baseModels[0].resources.accelerator", "Input should be 'T4', 'L4'"),
]


@pytest.mark.parametrize("case,changes,path,words", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_fleets_name_the_field(case, changes, path, words):
    with pytest.raises(FleetSpecError) as info:
        parse_fleet(fleet(**changes))
    problems = {str(p.path): p.message for p in info.value.problems}
    assert path in problems, f"{case}: expected a problem at {path}, got {problems}"
    assert words in problems[path], problems[path]


def test_every_problem_is_reported_at_once():
    with pytest.raises(FleetSpecError) as info:
        parse_fleet(fleet(**{"adapters.0.baseModel": "x", "routes.1.targets.0.adapter": "sql"}))
    assert len(info.value.problems) == 2
    assert "2 problem(s)" in str(info.value)


@pytest.mark.parametrize("uri,expected", [
    ("s3://bucket", ("bucket", "")),
    ("s3://bucket/a/b/", ("bucket", "a/b")),
    ("s3://my.bucket-1/x", ("my.bucket-1", "x")),
])
def test_parse_s3_uri(uri, expected):
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize("uri", ["http://bucket/x", "s3:/bucket", "s3://B/x", "bucket/x"])
def test_parse_s3_uri_rejects(uri):
    with pytest.raises(ValueError, match="not an S3 URI"):
        parse_s3_uri(uri)


@pytest.mark.parametrize("text,expected", [("64Mi", 64 * 2**20), ("4Gi", 4 * 2**30), ("512Ki", 512 * 2**10),
                                           ("1Ti", 2**40)])
def test_memory_bytes(text, expected):
    assert memory_bytes(text) == expected
