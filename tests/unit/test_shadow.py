"""Shadow traffic: judging a candidate's unseen answer (pure), and the router's copying of live requests
(in-process, with a fake base deployment and recorder)."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import BaseModel, ConfigDict
from starlette.responses import JSONResponse

from serving.api.fleet import parse_fleet
from serving.api.routes import TierChecks
from serving.dataplane import shadow_runner
from serving.dataplane.ray_serve_llm import OpenAIHTTPException
from serving.dataplane.shadow_runner import ShadowRunner
from serving.policy.routing import RoutingTable
from serving.policy.shadow import AGREE, DISAGREE, FAILED_CHECKS, agrees, outcome
from tests.unit.fleets import fleet
from tests.unit.test_telemetry import FakeRecorder

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ASK = {"messages": [{"role": "user", "content": "weather in paris"}], "tools": [WEATHER]}


def chat(content=None, calls=()) -> dict:
    message = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [{"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": a}}
                                 for i, (n, a) in enumerate(calls)]
    return {"choices": [{"message": message, "finish_reason": "tool_calls" if calls else "stop"}]}


def text(t: str) -> dict:
    return {"choices": [{"text": t, "finish_reason": "stop"}]}


CALL = chat(calls=[("get_weather", '{"city": "Paris"}')])


@pytest.mark.parametrize("checks,answer,returned,expected", [
    (None, chat("RED FOX"), chat(" RED   FOX "), AGREE),  # whitespace aside
    (None, chat("RED FOX"), chat("red fox"), DISAGREE),
    (None, chat(calls=[("get_weather", '{"city":"Paris"}')]), CALL, AGREE),  # arguments compared as JSON
    (None, chat(calls=[("get_weather", '{"city": "Lyon"}')]), CALL, DISAGREE),
    (None, chat("it is sunny"), CALL, DISAGREE),  # words where a call was returned
    (TierChecks(tool_call=True), chat(calls=[("get_weather", '{"town": "Paris"}')]), CALL, FAILED_CHECKS),
    (TierChecks(tool_call=True), chat(calls=[("get_weather", '{"city": "Paris"}')]), CALL, AGREE),
    (TierChecks(regex="^[A-Z ]+$"), chat("red fox"), chat("red fox"), FAILED_CHECKS),  # agreeing is not enough
    (None, text("RED FOX\n"), text("RED FOX"), AGREE),  # completions
    (TierChecks(regex="^[A-Z ]+$"), text("RED"), text("FOX"), DISAGREE),
], ids=["same-text", "other-text", "same-call", "other-arguments", "text-for-call", "call-fails-schema",
        "call-passes", "fails-regex", "completion-agrees", "completion-differs"])
def test_a_shadow_answer_is_judged_by_the_checks_then_by_agreement(checks, answer, returned, expected):
    assert outcome(checks, ASK, answer, returned) == expected


def test_agreement_is_symmetric():
    pairs = [(chat("a"), chat("a ")), (CALL, chat("x")), (text("1"), text("2"))]
    assert all(agrees(a, b) == agrees(b, a) for a, b in pairs)


# --- the router's part ------------------------------------------------------------------------------

class Body(BaseModel):
    """Stands in for Ray Serve LLM's request models: what the runner reads of them."""

    model_config = ConfigDict(extra="allow")
    model: str


class Fleet:
    """The router as the runner sees it: a routing table and a base deployment that answers (or fails)."""

    def __init__(self, answer=None, fail=None, share=100):
        data = fleet(**{"routes.0.targets": [{"adapter": "shout", "version": "v1"}],
                        "routes.0.strategy": {"canary": {"version": "v2", "shadow": {"share": share}}}})
        self.table = RoutingTable(parse_fleet(data), {"shout": 0}, ["shout"])
        self.base_deployments = {"tiny-llama": object()}
        self.answer, self.fail, self.sent = answer, fail, []

    async def send(self, body, call_method, raw_request):
        self.sent.append((body.model_dump(), dict(raw_request.headers)))
        if self.fail:
            raise self.fail
        return JSONResponse(self.answer)


def copy_of(fleet_, returned, rng=lambda: 0.0, routes=("shout",)):
    recorder = FakeRecorder()
    runner = ShadowRunner(fleet_, recorder, rng=rng)

    async def go():
        runner.after(routes, Body(model="shout", **ASK), "chat", returned)
        await asyncio.gather(*runner._tasks)

    asyncio.run(go())
    return recorder


SHADOW_V2 = {"route": "shout", "base_model": "tiny-llama", "adapter": "shout", "version": "v2", "traffic": "shadow"}


def test_a_copy_goes_to_the_canary_without_the_clients_headers_and_is_counted_apart():
    f = Fleet(answer=chat("RED FOX"))
    recorder = copy_of(f, chat("RED FOX"))
    (body, headers), = f.sent
    assert body["model"] == "tiny-llama:shout@v2" and body["messages"] == ASK["messages"]
    assert "authorization" not in headers and "x-slmfleet-version" not in headers
    assert recorder.get("slmfleet_shadow_answers_total", outcome="agree", **SHADOW_V2) == 1
    assert recorder.get("slmfleet_requests_total", status="200", **SHADOW_V2) == 1
    assert not [k for k in recorder.values if ("traffic", "live") in k[1]]  # nothing counted as live


def test_a_failing_canary_counts_as_a_shadow_error_and_nothing_is_raised():
    recorder = copy_of(Fleet(fail=OpenAIHTTPException(400, "prompt too long", type="BadRequestError")), chat("x"))
    assert recorder.get("slmfleet_shadow_answers_total", outcome="error", **SHADOW_V2) == 1
    assert recorder.get("slmfleet_request_errors_total", error_type="BadRequestError", **SHADOW_V2) == 1
    crashed = copy_of(Fleet(answer="not an answer"), chat("x"))  # the runner's own failure: counted, logged
    assert crashed.get("slmfleet_shadow_answers_total", outcome="error", **SHADOW_V2) == 1


def test_only_the_share_is_copied_and_only_routes_that_shadow():
    assert not Fleet(answer=chat("x"), share=30).sent
    f = Fleet(answer=chat("x"), share=30)
    copy_of(f, chat("x"), rng=lambda: 0.5)  # 50 >= 30: not copied
    copy_of(f, chat("x"), rng=lambda: 0.2)
    copy_of(f, chat("x"), routes=("json", "echo"))  # no canary shadows there
    copy_of(f, None)  # the live request failed: nothing to compare with
    assert len(f.sent) == 1


def test_copies_over_the_in_flight_bound_are_dropped_and_counted(monkeypatch):
    monkeypatch.setattr(shadow_runner, "MAX_IN_FLIGHT", 2)
    f = Fleet(answer=chat("x"))
    recorder = FakeRecorder()
    runner = ShadowRunner(f, recorder, rng=lambda: 0.0)

    async def go():
        for _ in range(5):
            runner.after(["shout"], Body(model="shout", **ASK), "chat", chat("x"))
        await asyncio.gather(*runner._tasks)

    asyncio.run(go())
    assert len(f.sent) == 2 and recorder.get("slmfleet_shadow_dropped_total", route="shout") == 3
    assert json.dumps(f.sent[0][0])  # what was sent is plain JSON
