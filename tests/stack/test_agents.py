"""Agents on the real stack: tool calls and structured outputs through every route policy, cascades that
judge tool calls, the Responses API, MCP, with the real OpenAI, Agents SDK and MCP clients.

The ``tools`` route is the demo's tool-calling specialist (serving.local.demo_assets: a toy tool
language, ``"get" {"city": "paris", "days": 2}`` -> ``get_weather(city="paris", days=2)``), behind vLLM's
hermes parser with the offered tools' schemas enforced while decoding (``toolStrictLevel: parameter``).
No client here talks to anything but the fleet on loopback.
"""

from __future__ import annotations

import copy
import json

import httpx
import pytest
from openai import OpenAI

from serving.local.demo_assets import (
    DEMO_REQUEST,
    DEMO_REQUESTS,
    DEMO_TOOLS,
    is_expected_call,
    run_demo_tool,
    tool_requests,
)
from serving.policy.checks import tool_call_problem
from tests.stack.test_telemetry import moved, ray, scrape

WEATHER_ASK = DEMO_REQUEST["messages"]
WEATHER_TEXT = WEATHER_ASK[0]["content"]  # '"get" {"city": "paris", "days": 2}' (the toy tool language)
VALID_SHARE = 0.9
"""Share of valid tool calls the route must give on tool schemas the specialist never saw (the agents
issue's target). The engine's grammar (toolStrictLevel: parameter) keeps the tool name to the offered
ones and the arguments to their schemas; what it cannot do is end a string the model does not close,
or keep the model from writing a call's end inside one, and those calls are invalid."""


class TextTier:
    """An OpenAI-compatible endpoint that answers every chat in words, whatever tools it is offered."""

    ANSWER = "I would look that up for you."

    def __init__(self):
        import http.server
        import threading

        answer = self.ANSWER

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                self.rfile.read(int(self.headers.get("content-length", 0)))
                body = json.dumps({"id": "chatcmpl-text", "object": "chat.completion", "created": 0, "model": "chatty",
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": answer}}],
                                   "usage": {"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13}}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def text_tier():
    tier = TextTier()
    yield tier
    tier.server.shutdown()


@pytest.fixture(scope="module")
def agent_fleet(fleet, text_tier):
    spec = copy.deepcopy(fleet.spec_data)
    tools = {"adapter": "tools", "version": "v1"}
    spec["routes"] += [
        {"name": "assistant", "policy": "classify", "default": {"baseModel": "tiny-llama"},
         "description": "Tool calls go to the tool specialist, the rest to the base model.",
         "classes": [{"name": "tool-use", **tools, "keywords": ["get", "convert"]}]},
        # A tier that answers in words (an OpenAI-compatible endpoint here, TextTier): judged on tool calls,
        # it escalates.
        {"name": "c-tools", "policy": "cascade", "tiers": [
            {"endpoint": {"url": f"{text_tier.url}/v1", "model": "chatty"}, "costPer1kTokens": 0.1,
             "checks": {"toolCall": True}},
            {**tools, "costPer1kTokens": 1.0}]},
        {"name": "c-specialist", "policy": "cascade", "tiers": [
            {**tools, "checks": {"toolCall": True}}, {"baseModel": "tiny-llama"}]},
        {"name": "c-format", "policy": "cascade", "tiers": [
            {"baseModel": "tiny-llama", "checks": {"responseFormat": True, "acceptTruncated": True}},
            {"adapter": "json", "version": "v1"}]},
        {"name": "plain", "targets": [{"baseModel": "tiny-plain"}]},
    ]
    fleet.deploy(spec)
    yield spec
    fleet.deploy(fleet.spec_data)


@pytest.fixture(scope="module")
def openai_client(fleet):
    with OpenAI(base_url=f"{fleet.url}/v1", api_key="not-needed", max_retries=0, timeout=120) as c:
        yield c


def ask_tools(client: OpenAI, route: str = "tools", messages=WEATHER_ASK, tools=DEMO_TOOLS, **extra):
    return client.chat.completions.with_raw_response.create(
        model=route, messages=messages, tools=tools, max_tokens=48, temperature=0, **extra)


# --- the specialist and the tool-call path ---------------------------------------------------------

def test_the_specialist_calls_tools_it_never_saw(agent_fleet, openai_client):
    asks = tool_requests("held_out", n=60, seed=7)
    valid = exact = 0
    problems = []
    for ask in asks:
        answer = ask_tools(openai_client, messages=ask["messages"], tools=ask["tools"]).parse()
        message = answer.choices[0].message.model_dump(exclude_none=True)
        problem = tool_call_problem(message, ask)
        valid += problem is None
        exact += is_expected_call(message, ask["expected"])
        if problem:
            problems.append(problem)
    print(f"held-out tool calls: {valid}/{len(asks)} valid, {exact}/{len(asks)} exact; problems: {problems[:5]}")
    assert valid / len(asks) >= VALID_SHARE, problems


def test_a_full_agent_turn_with_the_openai_client(agent_fleet, openai_client):
    raw = ask_tools(openai_client)
    assert raw.headers["x-slmfleet-adapter"] == "tools"
    answer = raw.parse()
    message = answer.choices[0].message
    assert answer.choices[0].finish_reason == "tool_calls" and len(message.tool_calls) == 1, message
    call = message.tool_calls[0]
    # An offered tool with arguments valid for it (which tool, and which values, the toy specialist often
    # gets wrong: the agents benchmark measures how often it is right).
    assert tool_call_problem(message.model_dump(exclude_none=True), DEMO_REQUEST) is None
    result = run_demo_tool(call.function.name, json.loads(call.function.arguments))
    turn2 = WEATHER_ASK + [message.model_dump(exclude_none=True),
                           {"role": "tool", "tool_call_id": call.id, "content": result}]
    final = ask_tools(openai_client, messages=turn2).parse().choices[0].message
    print(f"agent turn: {WEATHER_TEXT!r} -> {call.function.name}({call.function.arguments}) -> {result!r} -> "
          f"{final.content!r}")
    assert not final.tool_calls and final.content.strip(), final  # the result, reported in words


def test_tool_calls_stream_as_deltas(agent_fleet, openai_client):
    whole = ask_tools(openai_client).parse().choices[0].message.tool_calls[0].function
    stream = openai_client.chat.completions.create(model="tools", messages=WEATHER_ASK, tools=DEMO_TOOLS,
                                                   max_tokens=48, temperature=0, stream=True)
    name, arguments, finish = "", "", None
    for chunk in stream:
        for delta_call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            name += delta_call.function.name or ""
            arguments += delta_call.function.arguments or ""
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert (name, json.loads(arguments), finish) == (whole.name, json.loads(whole.arguments), "tool_calls")


# The named choice asks for the conversion in the toy language: forced to a tool the prompt does not
# ask for, the tiny model may write digits of its integer argument until max_tokens (the grammar
# allows any length), which is the model's doing and not what this test is about.
@pytest.mark.parametrize("tool_choice,name,messages", [
    ("required", None, WEATHER_ASK),
    ({"type": "function", "function": {"name": "convert_units"}}, "convert_units", DEMO_REQUESTS[1]["messages"]),
])
def test_tool_choice_required_and_named(agent_fleet, openai_client, tool_choice, name, messages):
    answer = ask_tools(openai_client, messages=messages, tool_choice=tool_choice).parse()
    calls = answer.choices[0].message.tool_calls
    assert calls, answer
    assert tool_call_problem(answer.choices[0].message.model_dump(exclude_none=True),
                             {"messages": messages, "tools": DEMO_TOOLS, "tool_choice": tool_choice}) is None
    if name:
        assert calls[0].function.name == name


def test_a_tool_loop_stays_on_the_class_of_its_first_turn(agent_fleet, openai_client):
    raw = ask_tools(openai_client, route="assistant")
    assert (raw.headers["x-slmfleet-class"], raw.headers["x-slmfleet-adapter"]) == ("tool-use", "tools")
    message = raw.parse().choices[0].message
    call = message.tool_calls[0]
    turn2 = WEATHER_ASK + [message.model_dump(exclude_none=True),
                           {"role": "tool", "tool_call_id": call.id, "content": "sunny 21 c in paris"}]
    raw2 = ask_tools(openai_client, route="assistant", messages=turn2)
    assert (raw2.headers["x-slmfleet-class"], raw2.headers["x-slmfleet-adapter"]) == ("tool-use", "tools")
    assert not raw2.parse().choices[0].message.tool_calls  # the specialist reports the result in words


# --- structured outputs through every policy ------------------------------------------------------

# A finite value at the top (an enum): the tiny model, held to the schema, cannot run past max_tokens.
# (Not an object: JSON allows whitespace between an object's tokens, and the tiny base, unsure after
# "{", pads with it until max_tokens; a real model does not.)
SCHEMA = {"type": "string", "enum": ["fox", "cat"]}
JSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}}


@pytest.mark.parametrize("route", ["echo", "assistant", "c-specialist"])
def test_structured_outputs_constrain_the_answer_on_every_policy(agent_fleet, client, route):
    ask = {"model": route, "messages": [{"role": "user", "content": "red fox"}], "max_tokens": 48, "temperature": 0}
    r = client.post("/v1/chat/completions", json={**ask, "response_format": JSON_FORMAT})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["choices"][0]["message"]["content"]) in ("fox", "cat")
    r = client.post("/v1/chat/completions", json={**ask, "structured_outputs": {"regex": "(RED|BLUE) (FOX|CAT)"}})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] in ("RED FOX", "RED CAT", "BLUE FOX", "BLUE CAT")


# --- cascades judging tool calls and formats -------------------------------------------------------

def test_a_text_answer_where_a_call_is_wanted_escalates(agent_fleet, fleet, openai_client):
    before = scrape(fleet)
    raw = ask_tools(openai_client, route="c-tools")
    assert raw.headers["x-slmfleet-tier"] == "2" and raw.headers["x-slmfleet-tier-name"] == "tools@v1"
    assert "tier 1 (chatty at http://" in raw.headers["x-slmfleet-escalations"]
    assert "the request offers tools and the answer is text" in raw.headers["x-slmfleet-escalations"]
    message = raw.parse().choices[0].message
    assert tool_call_problem(message.model_dump(exclude_none=True), DEMO_REQUEST) is None, message
    moved(fleet, before, [(ray("slmfleet_cascade_tier_answers_total"),
                           {"route": "c-tools", "tier": "1", "outcome": "tool_call"}, 1),
                          (ray("slmfleet_cascade_tier_answers_total"),
                           {"route": "c-tools", "tier": "2", "outcome": "accepted"}, 1)])
    stats = openai_client.get("/fleet/routes/c-tools/stats", cast_to=httpx.Response).json()
    assert stats["escalations"] == {"tool_call": 1}


def test_a_streamed_cascade_answer_carries_the_call(agent_fleet, openai_client):
    stream = openai_client.chat.completions.create(model="c-tools", messages=WEATHER_ASK, tools=DEMO_TOOLS,
                                                   max_tokens=48, temperature=0, stream=True)
    calls = [c for chunk in stream if chunk.choices for c in chunk.choices[0].delta.tool_calls or []]
    assert len(calls) == 1 and calls[0].function.name in ("get_weather", "convert_units")
    assert isinstance(json.loads(calls[0].function.arguments), dict)


def _weather_tool(city: dict, days: dict) -> list[dict]:
    tool = next(t for t in DEMO_TOOLS if t["function"]["name"] == "get_weather")
    return [{**tool, "function": {**tool["function"], "parameters": {
        "type": "object", "properties": {"city": city, "days": days}, "required": ["city", "days"]}}}]


def test_the_specialist_answers_what_it_can(agent_fleet, openai_client):
    handled = ask_tools(openai_client, route="c-specialist")
    assert handled.headers["x-slmfleet-tier"] == "1", handled.headers.get("x-slmfleet-escalations")


@pytest.mark.parametrize("case,tools,tool_choice,words", [
    # Calls are decoded by a grammar (toolStrictLevel: parameter; and any named or required call), which
    # keeps them well-formed but does not enforce every JSON Schema keyword (xgrammar drops multipleOf next
    # to a maximum): the check catches what the grammar let through (the specialist copies days: 2).
    ("auto", _weather_tool({"type": "string"}, {"type": "integer", "multipleOf": 1000, "maximum": 99}),
     None, "at days"),
    ("named", _weather_tool({"type": "string"}, {"type": "integer", "multipleOf": 1000, "maximum": 99}),
     {"type": "function", "function": {"name": "get_weather"}}, "at days"),
])
def test_a_call_that_breaks_the_schema_escalates(agent_fleet, openai_client, case, tools, tool_choice, words):
    extra = {"tool_choice": tool_choice} if tool_choice else {}
    escalated = ask_tools(openai_client, route="c-specialist", tools=tools, **extra)
    assert escalated.headers["x-slmfleet-tier"] == "2", escalated.parse()
    reasons = escalated.headers["x-slmfleet-escalations"]
    assert reasons.startswith("tier 1 (tools@v1): tool call 0 (get_weather): the arguments do not match the schema")
    assert words in reasons, reasons


def test_a_response_format_failure_escalates(agent_fleet, client):
    ask = {"model": "c-format", "messages": [{"role": "user", "content": "red fox"}], "temperature": 0,
           "response_format": JSON_FORMAT}
    ok = client.post("/v1/chat/completions", json={**ask, "max_tokens": 48})
    assert ok.headers["x-slmfleet-tier"] == "1", ok.headers.get("x-slmfleet-escalations")
    cut = client.post("/v1/chat/completions", json={**ask, "max_tokens": 1})  # JSON cut short: not valid
    assert cut.headers["x-slmfleet-tier"] == "2"
    assert "is not JSON" in cut.headers["x-slmfleet-escalations"]


# --- the Responses API -------------------------------------------------------------------------------

RESPONSES_TOOLS = [{"type": "function", "name": t["function"]["name"], "description": t["function"]["description"],
                    "parameters": t["function"]["parameters"]} for t in DEMO_TOOLS]


def test_responses_api_text(agent_fleet, openai_client):
    raw = openai_client.responses.with_raw_response.create(model="shout", input="red fox", max_output_tokens=8,
                                                           temperature=0)
    assert raw.headers["x-slmfleet-adapter"] == "shout"
    response = raw.parse()
    assert response.status in ("completed", "incomplete") and response.store is False
    assert response.output_text.strip().startswith("RED")


def test_responses_api_tool_loop_and_stream(agent_fleet, openai_client):
    first = openai_client.responses.create(model="tools", input=WEATHER_TEXT, tools=RESPONSES_TOOLS,
                                           temperature=0, max_output_tokens=48)
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name in ("get_weather", "convert_units") and isinstance(json.loads(call.arguments), dict)
    result = run_demo_tool(call.name, json.loads(call.arguments))
    second = openai_client.responses.create(
        model="tools", tools=RESPONSES_TOOLS, temperature=0, max_output_tokens=48,
        input=[{"role": "user", "content": WEATHER_TEXT}, call.model_dump(exclude_none=True),
               {"type": "function_call_output", "call_id": call.call_id, "output": result}])
    assert second.output_text.strip() and not [i for i in second.output if i.type == "function_call"]
    with openai_client.responses.stream(model="tools", input=WEATHER_TEXT, tools=RESPONSES_TOOLS,
                                        temperature=0, max_output_tokens=48) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.function_call_arguments.delta" in kinds
    assert [i.name for i in final.output if i.type == "function_call"] in (["get_weather"], ["convert_units"])


def test_responses_api_refuses_what_a_stateless_fleet_cannot_do(agent_fleet, client):
    r = client.post("/v1/responses", json={"model": "shout", "input": "x", "previous_response_id": "resp_1"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "previous_response_id"
    r = client.post("/v1/responses", json={"model": "nope", "input": "x"})
    assert r.status_code == 404 and "available models" in r.json()["error"]["message"]


# --- real agent frameworks --------------------------------------------------------------------------

@pytest.mark.parametrize("api", ["chat_completions", "responses"])
async def test_the_openai_agents_sdk_runs_a_tool_loop(agent_fleet, fleet, api):
    import agents
    from openai import AsyncOpenAI

    agents.set_tracing_disabled(True)  # no export to OpenAI: nothing but loopback
    calls = []

    @agents.function_tool
    def get_weather(city: str, days: int) -> str:
        """The weather forecast for a city."""
        calls.append((city, days))
        return run_demo_tool("get_weather", {"city": city, "days": days})

    async with AsyncOpenAI(base_url=f"{fleet.url}/v1", api_key="not-needed", max_retries=0) as client:
        model_cls = agents.OpenAIChatCompletionsModel if api == "chat_completions" else agents.OpenAIResponsesModel
        agent = agents.Agent(name="weather", instructions="Use the tools.", tools=[get_weather],
                             model=model_cls(model="tools", openai_client=client),
                             model_settings=agents.ModelSettings(temperature=0, max_tokens=48))
        result = await agents.Runner.run(agent, WEATHER_TEXT, max_turns=3)
    # The SDK offered its own schema of the tool (with additionalProperties false, both required), ran the
    # call it got, sent the result back and took the specialist's words as the final output.
    assert len(calls) == 1 and isinstance(calls[0][0], str) and isinstance(calls[0][1], int), calls
    assert isinstance(result.final_output, str) and result.final_output.strip()


# --- MCP -----------------------------------------------------------------------------------------------

async def test_mcp_clients_list_and_call_the_routes(agent_fleet, fleet):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(f"{fleet.url}/mcp") as (read, write, *_), ClientSession(read, write) as mcp:
        await mcp.initialize()
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
        assert {"shout", "tools", "assistant", "c-tools"} <= set(tools)
        assert tools["shout"].description == "Answers the words in upper case."
        assert "prompt" in tools["shout"].input_schema["properties"]
        result = await mcp.call_tool("shout", {"prompt": "red fox", "max_tokens": 8, "temperature": 0})
        assert not result.is_error, result
        assert result.structured_content["text"].strip().startswith("RED")
        assert result.structured_content["served_by"]["x-slmfleet-adapter"] == "shout"
        bad = await mcp.call_tool("shout", {"max_tokens": 8})
        assert bad.is_error and "prompt" in bad.content[0].text
        gone = await mcp.call_tool("ghost", {"prompt": "x"})
        assert gone.is_error and "ghost" in gone.content[0].text
        # The server is still there after errors.
        assert (await mcp.call_tool("echo", {"prompt": "red fox", "max_tokens": 4})).is_error is False


# --- bad input ----------------------------------------------------------------------------------------

BAD_SCHEMA_TOOL = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                                 "properties": {"a": {"type": 7}}}}}]


@pytest.mark.parametrize("case,body,param,words", [
    ("tool schema", {"model": "tools", "tools": BAD_SCHEMA_TOOL}, "tools[0].function.parameters",
     "not a valid JSON Schema"),
    ("named tool not offered", {"model": "tools", "tools": DEMO_TOOLS,
                                "tool_choice": {"type": "function", "function": {"name": "launch"}}}, "tool_choice",
     "does not match any of the specified `tools`"),
    ("tool_choice without tools", {"model": "tools", "tool_choice": "required"}, "tool_choice",
     "`tools` must be set"),
    ("parameters not an object", {"model": "tools", "tools": [{"type": "function", "function": {
        "name": "f", "parameters": "x"}}]}, "tools[0].function.parameters", "valid dictionary"),
    ("schema the grammar rejects", {"model": "echo", "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=a)b"}}}}}},
     "response_format", "cannot be compiled into a decoding grammar"),
    ("response_format schema", {"model": "echo", "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "nope"}}}}}},
     "response_format.json_schema.schema", "not a valid JSON Schema"),
    ("no tool parser", {"model": "plain", "tools": DEMO_TOOLS}, "tools", "toolCallParser"),
])
def test_bad_agent_input_is_a_400_naming_the_parameter(agent_fleet, client, case, body, param, words):
    r = client.post("/v1/chat/completions", json={"messages": WEATHER_ASK, "max_tokens": 8, **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert words in error["message"], error
    if param:
        assert error["param"] == param
    if case == "no tool parser":
        assert "route 'plain'" in error["message"]
    assert client.post("/v1/chat/completions", json={"model": "shout", "messages": WEATHER_ASK,
                                                     "max_tokens": 4}).status_code == 200


def test_slm_fleet_mcp_prints_the_client_config_and_the_tools(agent_fleet, fleet):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "serving.cli", "mcp", "--url", fleet.url], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    config, *tools = done.stdout.splitlines()
    assert json.loads(config)["mcpServers"]["slm-fleet"]["url"] == f"{fleet.url}/mcp"
    assert any(line.split()[0] == "tools" and "tool-calling specialist" in line for line in tools), tools
