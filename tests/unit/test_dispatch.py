"""What a failed send to a base deployment becomes: a dead engine or replica is a 503 with Retry-After (it is
being replaced), never a 500; the engine's own refusals pass through; the unexpected is a 500."""

from __future__ import annotations

import asyncio
import json

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


class FlakyIngress:
    """Fails the first ``failures`` sends with ``error``, then answers."""

    base_deployments = {"tiny-llama": object()}

    def __init__(self, error: BaseException, failures: int, answer=None):
        self.error, self.failures, self.sent = error, failures, 0
        self.answer = answer

    async def send(self, body, call_method, raw_request):
        self.sent += 1
        if self.sent <= self.failures:
            raise self.error
        from starlette.responses import JSONResponse

        return self.answer or JSONResponse({"ok": True})


def _dispatch(ingress, recorder):
    request = Request({"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []})
    return asyncio.run(dispatch(ingress, Target("tiny-llama", "shout", "v1"), object(), "chat", request,
                                telemetry(recorder)))


@pytest.mark.parametrize("error", [ActorDiedError(), _in_ray_task(EngineDeadError())], ids=["replica", "engine"])
def test_a_request_its_replica_failed_is_sent_once_more_and_counted(error):
    recorder = FakeRecorder()
    ingress = FlakyIngress(error, failures=1)
    assert _dispatch(ingress, recorder).status_code == 200 and ingress.sent == 2
    assert recorder.get("slmfleet_dispatch_retries_total", base_model="tiny-llama") == 1
    twice = FlakyIngress(error, failures=2)  # bounded: once
    with pytest.raises(DispatchFailed) as info:
        _dispatch(twice, FakeRecorder())
    assert twice.sent == 2 and info.value.type == "engine_unavailable"


def test_a_request_the_engine_refused_is_not_sent_again():
    ingress = FlakyIngress(OpenAIHTTPException(400, "prompt too long", type="BadRequestError"), failures=1)
    with pytest.raises(DispatchFailed):
        _dispatch(ingress, FakeRecorder())
    assert ingress.sent == 1


def test_a_full_queue_is_a_503_overloaded_to_retry_soon():
    from ray.serve.exceptions import BackPressureError

    err = failed(_in_ray_task(BackPressureError(num_queued_requests=8, max_queued_requests=8)))
    assert (err.status, err.type, err.retry_after) == (503, "overloaded", 1) and "8 request(s) wait" in err.message


def test_a_stream_cut_after_it_started_ends_with_an_sse_error_event():
    from serving.dataplane.dispatch import error_events

    async def cut():
        yield 'data: {"choices": [{"text": "RED"}]}\n\n'
        raise ActorDiedError()

    async def read():
        return [chunk async for chunk in error_events(cut())]

    chunks = asyncio.run(read())
    assert chunks[0].startswith('data: {"choices"')
    event = json.loads(chunks[1].removeprefix("data: "))
    assert event["error"]["type"] == "engine_unavailable" and event["error"]["code"] == 503
