import pytest
from ray.serve.schema import ServeDeploySchema

from serving.api.fleet import parse_fleet
from serving.render.serve_config import (
    ROUTER_DEPLOYMENT,
    adapter_catalog,
    base_deployment_name,
    llm_config_dict,
    serve_config,
)
from tests.unit.fleets import fleet


def test_config_is_a_valid_ray_serve_config():
    config = serve_config(parse_fleet(fleet()))
    schema = ServeDeploySchema.model_validate(config)
    app = schema.applications[0]
    assert app.import_path == "serving.dataplane.app:build_app"
    names = [d.name for d in app.deployments]
    assert names == [ROUTER_DEPLOYMENT, base_deployment_name("tiny-llama"), base_deployment_name("tiny-qwen")]


def test_route_adapter_and_autoscaling_changes_leave_app_args_alone():
    """Ray Serve restarts replicas when args change; these changes must be applied in place."""
    before = serve_config(parse_fleet(fleet()))["applications"][0]
    after = serve_config(parse_fleet(fleet(**{
        "routes.0.targets.0.weight": 50, "routes.0.targets.1.weight": 50,
        "adapters.1.versions": [{"version": "v1", "source": "s3://adapters/json/v1"},
                                {"version": "v2", "source": "s3://adapters/json/v2"}],
        "baseModels.0.autoscaling": {"minReplicas": 1, "maxReplicas": 4},
    })))["applications"][0]
    assert after["args"] == before["args"]
    assert after["import_path"] == before["import_path"]
    assert after["deployments"] != before["deployments"]
    assert after["deployments"][1]["autoscaling_config"]["max_replicas"] == 4


def test_autoscaling_delays_and_placement_reach_ray_serve_in_place():
    before = serve_config(parse_fleet(fleet()))["applications"][0]
    base = before["deployments"][1]
    # Ray Serve's own defaults, unless the spec says otherwise.
    delays = base["autoscaling_config"]["upscale_delay_s"], base["autoscaling_config"]["downscale_delay_s"]
    assert delays == (30, 600)
    router = base["request_router_config"]
    assert router["request_router_class"] == "serving.dataplane.placement_router:PlacementRouter"
    assert router["request_router_kwargs"] == {"base_model": "tiny-llama", "spill_margin": 4}
    after = serve_config(parse_fleet(fleet(**{
        "baseModels.0.autoscaling": {"upscaleDelay": "2s", "downscaleDelay": "1m"},
        "baseModels.0.placement": {"spillMargin": 0}})))["applications"][0]
    assert after["args"] == before["args"]
    scaled = after["deployments"][1]
    delays = scaled["autoscaling_config"]["upscale_delay_s"], scaled["autoscaling_config"]["downscale_delay_s"]
    assert delays == (2, 60)
    assert scaled["request_router_config"]["request_router_kwargs"]["spill_margin"] == 0
    ServeDeploySchema.model_validate(serve_config(parse_fleet(fleet())))


def test_placement_router_class_imports():
    from ray.serve.request_router import RequestRouter

    from serving.dataplane.placement_router import PlacementRouter

    assert issubclass(PlacementRouter, RequestRouter)


def test_base_model_change_changes_app_args():
    before = serve_config(parse_fleet(fleet()))["applications"][0]["args"]
    after = serve_config(parse_fleet(fleet(**{"baseModels.0.engine.maxLoras": 4})))["applications"][0]["args"]
    assert before != after


def test_adapter_catalog_holds_each_version_of_that_base_only():
    catalog = adapter_catalog(parse_fleet(fleet()), "tiny-llama")
    assert set(catalog) == {"tiny-llama:shout@v1", "tiny-llama:shout@v2"}
    assert catalog["tiny-llama:shout@v2"] == {
        "adapter": "shout", "version": "v2", "source": "s3://adapters/shout/v2", "sha256": "a" * 64}


def test_llm_config_for_cpu_and_gpu_bases():
    spec = parse_fleet(fleet(**{"baseModels.1.resources": {"cpu": 4, "gpu": 2}}))
    cpu = llm_config_dict(spec.base("tiny-llama"))
    assert cpu["model_loading_config"] == {"model_id": "tiny-llama", "model_source": {"bucket_uri": "s3://models/tiny-llama"}}
    assert cpu["engine_kwargs"]["max_loras"] == 2 and cpu["engine_kwargs"]["max_lora_rank"] == 8
    assert cpu["placement_group_config"] == {"bundles": [{"CPU": 1}]}
    assert "kv_cache_memory_bytes" not in cpu["engine_kwargs"]
    gpu = llm_config_dict(spec.base("tiny-qwen"))
    assert gpu["model_loading_config"]["model_source"] == "/models/tiny-qwen"
    assert gpu["engine_kwargs"]["tensor_parallel_size"] == 2
    assert gpu["placement_group_config"]["bundles"] == [{"GPU": 1, "CPU": 4}, {"GPU": 1}]


def test_kv_cache_memory_is_sized_in_bytes():
    config = llm_config_dict(parse_fleet(fleet(**{"baseModels.0.engine.kvCacheMemory": "64Mi"})).base("tiny-llama"))
    assert config["engine_kwargs"]["kv_cache_memory_bytes"] == 64 * 2**20


@pytest.mark.parametrize("changes", [{}, {"baseModels.0.engine.kvCacheMemory": "2Gi"}])
def test_llm_config_is_accepted_by_ray_serve_llm(changes):
    from ray.serve.llm import LLMConfig

    LLMConfig(**llm_config_dict(parse_fleet(fleet(**changes)).base("tiny-llama")))


def test_serve_config_command_names_the_application_and_its_route_prefix(capsys):
    import yaml

    from serving.cli.main import main

    assert main(["serve-config", "manifests/examples/quickstart.yaml", "--app-name", "team-a",
                 "--route-prefix", "/team-a"]) == 0
    app = ServeDeploySchema.model_validate(yaml.safe_load(capsys.readouterr().out)).applications[0]
    assert (app.name, app.route_prefix) == ("team-a", "/team-a")
    assert main(["serve-config", "manifests/examples/quickstart.yaml", "--route-prefix", "team-a"]) == 1
    assert "--route-prefix 'team-a' must start with '/'" in capsys.readouterr().err
