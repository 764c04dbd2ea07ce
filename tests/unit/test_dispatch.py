"""What a failed send to a base deployment becomes: a dead engine or replica is a 503 with Retry-After (it is
being replaced), never a 500; the engine's own refusals pass through; the unexpected is a 500."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import Request
from ray.exceptions import ActorDiedError, RayTaskError
from ray.serve.exceptions import DeploymentUnavailableError
from vllm.v1.engine.exceptions import EngineDeadError

from serving.dataplane.dispatch import RETRY_AFTER_S, DispatchFailed, dispatch
from serving.dataplane.errors import AdapterUnavailable
from serving.dataplane.ray_serve_llm import OpenAIHTTPException
from serving.policy.routing import Target
from tests.unit.test_telemetry import FakeRecorder, telemetry


class Ingress:
    base_deployments = {"tiny-llama": object()}

    def __init__(self, error: BaseException):
        self.error = error

    async def send(self, body, call_method, raw_request):
        raise self.error


def _in_ray_task(err: BaseException) -> RayTaskError:
    """``err`` as the router sees it from a handle call: wrapped in a RayTaskError."""
    try:
        raise err
    except BaseException as raised:  # noqa: BLE001
        return RayTaskError("FleetLLMServer.chat", "traceback", raised)


def failed(error: BaseException) -> DispatchFailed:
    request = Request({"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []})
    with pytest.raises(DispatchFailed) as info:
        asyncio.run(dispatch(Ingress(error), Target("tiny-llama", "shout", "v1"), object(), "chat", request,
                             telemetry(FakeRecorder())))
    return info.value


@pytest.mark.parametrize("error", [
    EngineDeadError(),
    _in_ray_task(EngineDeadError()),
    AdapterUnavailable("shout", "v1", "Failed to load lora model: EngineCore encountered an issue. See stack trace"),
    ActorDiedError(),
    DeploymentUnavailableError("BaseModel:tiny-llama"),
    OpenAIHTTPException(500, "EngineCore encountered an issue. See stack trace (above) for the root cause.",
                        type="InternalServerError"),
], ids=["engine-dead", "engine-dead-in-task", "lora-load-behind-a-dead-engine", "replica-died", "no-replica",
        "engine-error-answer"])
def test_a_dead_engine_or_replica_is_a_503_to_retry(error):
    err = failed(error)
    assert (err.status, err.type, err.retry_after) == (503, "engine_unavailable", RETRY_AFTER_S)
    assert "base model 'tiny-llama' is unavailable while its engine restarts" in err.message


def test_other_failures_keep_their_meaning():
    missing = failed(AdapterUnavailable("shout", "v1", "no adapter_config.json"))
    assert (missing.status, missing.type, missing.retry_after) == (503, "adapter_unavailable", None)
    refused = failed(OpenAIHTTPException(400, "prompt too long", type="BadRequestError"))
    assert (refused.status, refused.engine) == (400, True)
    bug = failed(KeyError("x"))
    assert (bug.status, bug.type) == (500, "internal_error")
