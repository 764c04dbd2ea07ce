"""The Responses API over chat completions: request and answer translations, the stream translator, and
the real ``openai`` SDK (and the Agents SDK) against a tiny app that uses them around a fake chat model."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from serving.dataplane.responses_api import ResponsesInputError, StreamTranslator, chat_request, response_from_chat

EVENTS = TypeAdapter(ResponseStreamEvent)
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
           "strict": True}
PARIS, ROME = '{"city":"Paris"}', '{"city":"Rome"}'
CHAT_WEATHER = {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}


# --- chat_request -----------------------------------------------------------------------------------

REQUESTS = {
    "string input": (
        {"model": "support", "input": "hi"},
        {"model": "support", "messages": [{"role": "user", "content": "hi"}]}),
    "instructions and sampling": (
        {"model": "support", "input": "hi", "instructions": "be brief", "temperature": 0.2, "top_p": 0.9,
         "max_output_tokens": 64, "user": "u1", "metadata": {"k": "v"}, "store": True, "reasoning": {"effort": "low"},
         "include": [], "truncation": "disabled", "text": {"verbosity": "low"}},
        {"model": "support", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
         "temperature": 0.2, "top_p": 0.9, "max_tokens": 64, "user": "u1"}),
    "message items and parts": (
        {"model": "m", "input": [
            {"role": "developer", "content": "rules"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"},
                                                            {"type": "input_text", "text": "b"}]},
            {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
             "content": [{"type": "output_text", "text": "c", "annotations": []}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"role": "system", "content": "more rules"}]},
        {"model": "m", "messages": [{"role": "system", "content": "rules"}, {"role": "user", "content": "a\nb"},
                                    {"role": "assistant", "content": "c"},
                                    {"role": "system", "content": "more rules"}]}),
    "function call round trip": (
        {"model": "m", "tools": [WEATHER], "tool_choice": "auto", "parallel_tool_calls": False, "input": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"type": "message", "role": "assistant", "content": "Looking."},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": PARIS},
            {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": ROME},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "rain"}]},
            {"type": "function_call", "call_id": "c3", "name": "get_weather", "arguments": "{}"}]},
        {"model": "m", "tools": [CHAT_WEATHER], "tool_choice": "auto", "parallel_tool_calls": False, "messages": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "content": "Looking.", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": PARIS}},
                {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": ROME}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": "rain"},
            {"role": "assistant", "tool_calls": [
                {"id": "c3", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}]}),
    "tool_choice function": (
        {"model": "m", "input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"}},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [CHAT_WEATHER],
         "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    "tool_choice allowed_tools": (
        {"model": "m", "input": "x", "tools": [WEATHER, {"type": "function", "name": "other"}],
         "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function",
                                                                                "name": "get_weather"}]}},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [CHAT_WEATHER],
         "tool_choice": "required"}),
    "tool_choice without tools is dropped": (
        {"model": "m", "input": "x", "tool_choice": "none", "parallel_tool_calls": True},
        {"model": "m", "messages": [{"role": "user", "content": "x"}]}),
    "text format text": (
        {"model": "m", "input": "x", "text": {"format": {"type": "text"}}},
        {"model": "m", "messages": [{"role": "user", "content": "x"}]}),
    "text format json_object": (
        {"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}),
    "text format json_schema": (
        {"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "city", "strict": True,
                                                         "schema": {"type": "object"}}}},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {
            "type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"}, "strict": True}}}),
    "stream asks for usage": (
        {"model": "m", "input": "x", "stream": True},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True,
         "stream_options": {"include_usage": True}}),
}


@pytest.mark.parametrize("body,chat", REQUESTS.values(), ids=REQUESTS.keys())
def test_chat_request(body, chat):
    assert chat_request(body) == chat


BAD_REQUESTS = {
    "no model": ({"input": "x"}, "model", "GET /v1/models"),
    "no input": ({"model": "m"}, "input", "required"),
    "empty input": ({"model": "m", "input": []}, "input", "non-empty"),
    "previous_response_id": ({"model": "m", "input": "x", "previous_response_id": "resp_1"},
                             "previous_response_id", "whole conversation"),
    "conversation": ({"model": "m", "input": "x", "conversation": "conv_1"}, "conversation", "whole conversation"),
    "background": ({"model": "m", "input": "x", "background": True}, "background", "stream"),
    "stored prompt": ({"model": "m", "input": "x", "prompt": {"id": "pmpt_1"}}, "prompt", "instructions"),
    "hosted tool": ({"model": "m", "input": "x", "tools": [WEATHER, {"type": "web_search"}]}, "tools[1].type",
                    "function tools only"),
    "mcp tool": ({"model": "m", "input": "x", "tools": [{"type": "mcp", "server_label": "s"}]}, "tools[0].type",
                 "'mcp'"),
    "tool without name": ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name", "required"),
    "unknown item": ({"model": "m", "input": ["x", {"type": "web_search_call"}]}, "input[0]", "object"),
    "unknown item type": ({"model": "m", "input": [{"type": "computer_call_output"}]}, "input[0].type",
                          "computer_call_output"),
    "item reference": ({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type",
                       "whole conversation"),
    "bad role": ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input[0].role", "one of"),
    "image part": ({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "x"}, {"type": "input_image", "image_url": "http://x"}]}]},
        "input[0].content[1].type", "text only"),
    "call without call_id": ({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
                             "input[0].call_id", "required"),
    "output without call_id": ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]},
                               "input[0].call_id", "required"),
    "required without tools": ({"model": "m", "input": "x", "tool_choice": "required"}, "tool_choice", "at least one"),
    "choice of an unknown function": ({"model": "m", "input": "x", "tools": [WEATHER],
                                       "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice.name",
                                      "get_weather"),
    "hosted tool choice": ({"model": "m", "input": "x", "tools": [WEATHER], "tool_choice": {"type": "file_search"}},
                           "tool_choice.type", "function tools only"),
    "bad text format": ({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type",
                        "json_schema"),
    "json_schema without schema": ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema",
                                                                                    "name": "n"}}},
                                   "text.format.schema", "schema"),
    "bad instructions": ({"model": "m", "input": "x", "instructions": ["x"]}, "instructions", "string"),
    "bad max_output_tokens": ({"model": "m", "input": "x", "max_output_tokens": "10"}, "max_output_tokens", "int"),
    "bad temperature": ({"model": "m", "input": "x", "temperature": True}, "temperature", "float"),
}


@pytest.mark.parametrize("body,param,says", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_chat_request_refuses(body, param, says):
    with pytest.raises(ResponsesInputError) as err:
        chat_request(body)
    assert err.value.param == param
    assert says in str(err.value)


# --- response_from_chat -----------------------------------------------------------------------------

def chat_answer(content=None, tool_calls=(), finish="stop", usage=True):
    message = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [{"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
                                 for cid, name, args in tool_calls]
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "adapter-x",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10} if usage else None}


def test_response_text():
    request = {"model": "support", "input": "hi", "instructions": "be brief", "tools": [WEATHER],
               "temperature": 0.5, "metadata": {"k": "v"}}
    body = response_from_chat(chat_answer("Hello!"), request)
    response = Response.model_validate(body)
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.incomplete_details is None and response.error is None
    assert response.model == "support"  # the route, not the adapter that answered
    assert response.output_text == "Hello!"
    [message] = response.output
    assert message.type == "message" and message.id.startswith("msg_") and message.status == "completed"
    assert response.usage.input_tokens == 7 and response.usage.output_tokens == 3 and response.usage.total_tokens == 10
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert response.instructions == "be brief" and response.tools[0].name == "get_weather"
    assert response.tool_choice == "auto" and response.parallel_tool_calls is True
    assert response.temperature == 0.5 and response.metadata == {"k": "v"} and response.store is False
    assert response.text.format.type == "text"


def test_response_tool_calls():
    chat = chat_answer("Let me check.", [("call_1", "get_weather", '{"city":"Paris"}'), ("call_2", "get_weather",
                                                                                         '{"city":"Rome"}')],
                       finish="tool_calls")
    response = Response.model_validate(response_from_chat(chat, {"model": "m", "input": "x", "tools": [WEATHER]}))
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["message", "function_call", "function_call"]
    calls = response.output[1:]
    assert [(c.call_id, c.name, json.loads(c.arguments)["city"]) for c in calls] == [
        ("call_1", "get_weather", "Paris"), ("call_2", "get_weather", "Rome")]
    assert all(c.id.startswith("fc_") and c.status == "completed" for c in calls)


def test_response_only_tool_calls_has_no_message():
    chat = chat_answer(None, [("call_1", "get_weather", "{}")], finish="tool_calls", usage=False)
    response = Response.model_validate(response_from_chat(chat, {"model": "m", "input": "x"}))
    assert [item.type for item in response.output] == ["function_call"] and response.usage is None


def test_response_incomplete():
    response = Response.model_validate(response_from_chat(chat_answer("Once upon a", finish="length"),
                                                          {"model": "m", "input": "x", "max_output_tokens": 3}))
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete" and response.max_output_tokens == 3


def test_response_empty_answer_is_an_empty_message():
    response = Response.model_validate(response_from_chat(chat_answer(""), {"model": "m", "input": "x"}))
    assert response.output_text == "" and len(response.output) == 1


# --- StreamTranslator -------------------------------------------------------------------------------

def chunk(content=None, tool_calls=None, finish=None):
    delta = {}
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "adapter-x",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


USAGE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "adapter-x", "choices": [],
         "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}}


def text_chunks(*pieces, finish="stop"):
    return [chunk(content="") | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                              "finish_reason": None}]}] + \
        [chunk(content=p) for p in pieces] + [chunk(finish=finish), USAGE]


def call_chunks(*calls):
    """Chunks as vLLM streams tool calls: id and name first, then argument fragments."""
    out = []
    for index, (call_id, name, fragments) in enumerate(calls):
        out.append(chunk(tool_calls=[{"index": index, "id": call_id, "type": "function",
                                      "function": {"name": name, "arguments": ""}}]))
        out += [chunk(tool_calls=[{"index": index, "function": {"arguments": f}}]) for f in fragments]
    return out + [chunk(finish="tool_calls"), USAGE]


def parse(sse: list[str]) -> list:
    """The events of SSE strings, each validated by the SDK's event union, its name matching its type."""
    events = []
    for text in sse:
        assert text.endswith("\n\n")
        name_line, data_line = text.rstrip("\n").split("\n")
        event = EVENTS.validate_python(json.loads(data_line.removeprefix("data: ")))
        assert name_line == f"event: {event.type}"
        events.append(event)
    return events


def translate(chunks, request=None):
    translator = StreamTranslator(request or {"model": "support", "input": "x", "stream": True})
    sse = []
    for c in chunks:
        sse += translator.feed(c)
    sse += translator.finish()
    assert translator.finish() == [] and translator.feed(chunk("late")) == []  # nothing after the end
    return parse(sse)


def check_sequence(events):
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
    ids = {e.response.id for e in events if hasattr(e, "response")}
    assert len(ids) == 1  # one response, from created to completed


def test_stream_text():
    events = translate(text_chunks("Hel", "lo", " there"))
    check_sequence(events)
    assert [e.type for e in events[2:]] == [
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = next(e for e in events if e.type == "response.output_text.done")
    final = events[-1].response
    assert deltas == done.text == final.output_text == "Hello there"
    assert final.status == "completed" and final.usage.total_tokens == 9 and final.model == "support"
    Response.model_validate(final.model_dump())
    item_ids = {e.item_id for e in events if hasattr(e, "item_id")}
    assert item_ids == {final.output[0].id}


def test_stream_tool_calls():
    events = translate([chunk(content="Checking.")] + call_chunks(("call_a", "get_weather", ['{"ci', 'ty":"Paris"}']),
                                                                  ("call_b", "get_weather", ['{"city":', '"Rome"}'])))
    check_sequence(events)
    final = events[-1].response
    assert final.status == "completed"
    assert [i.type for i in final.output] == ["message", "function_call", "function_call"]
    for index, (call_id, city) in enumerate([("call_a", "Paris"), ("call_b", "Rome")], start=1):
        item = final.output[index]
        assert item.call_id == call_id and json.loads(item.arguments) == {"city": city}
        deltas = "".join(e.delta for e in events
                         if e.type == "response.function_call_arguments.delta" and e.output_index == index)
        done = next(e for e in events if e.type == "response.function_call_arguments.done" and e.output_index == index)
        assert deltas == done.arguments == item.arguments
        added = next(e for e in events if e.type == "response.output_item.added" and e.output_index == index)
        assert added.item.call_id == call_id and added.item.name == "get_weather"
    # the text item is done before the first call is added
    types = [(e.type, getattr(e, "output_index", None)) for e in events]
    assert types.index(("response.output_item.done", 0)) < types.index(("response.output_item.added", 1))
    assert sum(e.type == "response.output_item.done" for e in events) == 3


def test_stream_incomplete():
    events = translate(text_chunks("Once", " upon", finish="length"))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert events[-1].response.output[0].status == "incomplete"


def test_stream_empty_answer():
    events = translate([chunk(finish="stop")])
    check_sequence(events)
    assert events[-1].type == "response.completed" and events[-1].response.output_text == ""


def test_stream_error_chunk_fails_the_response():
    translator = StreamTranslator({"model": "m", "input": "x"})
    sse = translator.feed(chunk("partial")) + translator.feed({"error": {"message": "engine died", "code": 500}})
    assert translator.feed(chunk("more")) == [] and translator.finish() == []
    events = parse(sse)
    check_sequence(events)
    failed = events[-1]
    assert failed.type == "response.failed" and failed.response.status == "failed"
    assert failed.response.error.code == "server_error" and failed.response.error.message == "engine died"
    assert failed.response.output[0].status == "incomplete"


def test_stream_fail_rate_limited():
    [*_, failed] = parse(StreamTranslator({"model": "m", "input": "x"}).fail({"message": "slow down", "code": 429}))
    assert failed.response.error.code == "rate_limit_exceeded"


def test_feed_sse_splits_lines_and_utf8_anywhere():
    chunks = text_chunks("héllo ", "wörld")
    raw = "".join(f"data: {json.dumps(c, ensure_ascii=False)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    data = raw.encode()
    translator = StreamTranslator({"model": "m", "input": "x"})
    sse = []
    for i in range(0, len(data), 7):  # cuts through lines and multi-byte characters
        sse += translator.feed_sse(data[i:i + 7])
    events = parse(sse)
    assert events[-1].type == "response.completed" and events[-1].response.output_text == "héllo wörld"


# --- the openai SDK and the Agents SDK against an app using all of it ------------------------------

def fake_model(chat: dict) -> tuple[str | None, list[tuple[str, str, str]]]:
    """A chat model: calls get_weather when asked about the weather, answers the tool's result, else echoes."""
    last = chat["messages"][-1]
    if last["role"] == "tool":
        return f"The weather: {last['content']}.", []
    if chat.get("tools") and "weather" in last["content"]:
        return None, [("call_w1", "get_weather", json.dumps({"city": "Paris"}))]
    return f"echo: {last['content']}", []


def fleet_app(seen: list[dict]) -> Starlette:
    async def responses(request: Request):
        body = await request.json()
        try:
            chat = chat_request(body)
        except ResponsesInputError as err:
            return JSONResponse(status_code=400, content={"error": {
                "message": str(err), "type": "invalid_request_error", "param": err.param, "code": None}})
        seen.append(chat)
        text, calls = fake_model(chat)
        if not chat.get("stream"):
            finish = "tool_calls" if calls else "stop"
            return JSONResponse(response_from_chat(chat_answer(text, calls, finish=finish), body))
        chunks = text_chunks(*re.findall(r"\S+\s*", text)) if text else call_chunks(
            *[(cid, name, [args[:5], args[5:]]) for cid, name, args in calls])
        translator = StreamTranslator(body)

        async def events():
            for c in chunks:
                for event in translator.feed(c):
                    yield event
            for event in translator.finish():
                yield event
        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/responses", responses, methods=["POST"])])


@pytest.fixture
def fleet():
    seen: list[dict] = []
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=fleet_app(seen)))
    client = openai.AsyncOpenAI(base_url="http://fleet.test/v1", api_key="x", http_client=http, max_retries=0)
    return client, seen


async def test_sdk_create_and_function_call_round_trip(fleet):
    client, seen = fleet
    response = await client.responses.create(model="support", input="hello", instructions="be brief")
    assert response.output_text == "echo: hello" and response.model == "support"
    assert seen[-1]["messages"][0] == {"role": "system", "content": "be brief"}

    tools = [WEATHER]
    first = await client.responses.create(model="support", input="what's the weather?", tools=tools)
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    history = [{"role": "user", "content": "what's the weather?"}, *[i.model_dump() for i in first.output],
               {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    second = await client.responses.create(model="support", input=history, tools=tools)
    assert second.output_text == "The weather: sunny."
    assert seen[-1]["messages"][1]["tool_calls"][0]["id"] == call.call_id


async def test_sdk_refusal_is_a_400(fleet):
    client, _ = fleet
    with pytest.raises(openai.BadRequestError) as err:
        await client.responses.create(model="support", input="x", previous_response_id="resp_1")
    assert err.value.param == "previous_response_id" and "whole conversation" in err.value.message


async def test_sdk_stream(fleet):
    client, _ = fleet
    async with client.responses.stream(model="support", input="hello fleet") as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert deltas == ["echo: ", "hello ", "fleet"] and "".join(deltas) == final.output_text
    assert final.usage.total_tokens == 9

    events = [e async for e in await client.responses.create(model="support", input="weather?", tools=[WEATHER],
                                                              stream=True)]
    assert events[-1].type == "response.completed"
    [call] = events[-1].response.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}


async def test_agents_sdk_runs_a_tool_loop(fleet):
    import agents
    agents.set_tracing_disabled(True)
    client, seen = fleet
    calls = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return "sunny"

    agent = agents.Agent(name="helper", instructions="help", tools=[get_weather],
                         model=agents.OpenAIResponsesModel(model="support", openai_client=client))
    result = await agents.Runner.run(agent, "what's the weather?")
    assert calls == ["Paris"] and result.final_output == "The weather: sunny."

    streamed = agents.Runner.run_streamed(agent, "what's the weather?")
    async for _ in streamed.stream_events():
        pass
    assert streamed.final_output == "The weather: sunny." and calls == ["Paris", "Paris"]
