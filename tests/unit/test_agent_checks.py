"""Tool calls and structured outputs, the pure parts: engine settings in the spec, the checks that
judge an answer's tool calls and format (cascades, probes), and the request checks before sending."""

import pytest

from serving.api.fleet import REASONING_PARSERS, TOOL_CALL_PARSERS, EngineSettings, parse_fleet
from serving.api.problems import FleetSpecError
from serving.api.routes import TierChecks
from serving.policy.cascade import Answer, rejection, sse_chunks
from serving.policy.checks import response_format_problem, tool_call_problem
from serving.policy.request_checks import engine_problem, grammar_problem, tools_problem
from serving.render.serve_config import llm_config_dict
from tests.unit.fleets import fleet

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city"]}}}
CONVERT = {"type": "function", "function": {"name": "convert_units", "parameters": {"type": "object"}}}
ASK = {"messages": [{"role": "user", "content": "weather city paris"}], "tools": [WEATHER, CONVERT]}


def call(name, arguments, content=None):
    return {"role": "assistant", "content": content, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}]}


def text(content):
    return {"role": "assistant", "content": content}


# (case, answer message, request changes, words of the problem or None when the answer passes)
TOOL_CALLS = [
    ("valid call", call("get_weather", '{"city": "paris", "days": 2}'), {}, None),
    ("a text answer to a fresh request", text("it is sunny"), {}, "the answer is text, not a call"),
    ("a text answer after a tool result", text("sunny 21"), {"messages": [
        {"role": "user", "content": "weather city paris"}, call("get_weather", '{"city": "paris"}'),
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny 21"}]}, None),
    ("no tools offered", text("anything"), {"tools": None}, None),
    ("tool_choice none", text("x"), {"tool_choice": "none"}, None),
    ("unknown tool", call("get_time", "{}"), {}, "names 'get_time', which the request did not offer"),
    ("arguments not JSON", call("get_weather", '{"city": '), {}, "are not JSON"),
    ("missing required argument", call("get_weather", '{"days": 2}'), {}, "'city' is a required property"),
    ("argument breaks a constraint", call("get_weather", '{"city": "x", "days": 0}'), {}, "at days"),
    ("wrong type", call("get_weather", '{"city": 3}'), {}, "is not of type 'string'"),
    ("required but text", text("sunny"), {"tool_choice": "required"}, "requires a tool call"),
    ("named but text", text("sunny"), {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
     "requires a call of 'get_weather'"),
    ("named but another tool", call("convert_units", "{}"),
     {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, "tool_choice asked for 'get_weather'"),
    ("unparsed call in the text", text('<tool_call>{"name": "get_weather", "argu'), {}, "did not parse"),
]


@pytest.mark.parametrize("case,message,changes,words", TOOL_CALLS, ids=[c[0] for c in TOOL_CALLS])
def test_tool_call_check(case, message, changes, words):
    request = {k: v for k, v in {**ASK, **changes}.items() if v is not None}
    problem = tool_call_problem(message, request)
    if words is None:
        assert problem is None
    else:
        assert words in (problem or ""), problem


SCHEMA = {"type": "json_schema", "json_schema": {"name": "w", "schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.mark.parametrize("answer,response_format,words", [
    ('{"city": "paris"}', SCHEMA, None),
    ('{"town": "paris"}', SCHEMA, "'city' is a required property"),
    ("paris", SCHEMA, "is not JSON"),
    ('{"a": 1}', {"type": "json_object"}, None),
    ("[1]", {"type": "json_object"}, "not an object"),
    ("plain words", {"type": "text"}, None),
    ("plain words", None, None),
])
def test_response_format_check(answer, response_format, words):
    problem = response_format_problem(answer, {"response_format": response_format} if response_format else {})
    assert (problem is None) if words is None else words in (problem or ""), problem


def chat_payload(message, finish="stop"):
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3}}


def test_cascade_checks_escalate_with_their_kind():
    checks = TierChecks(tool_call=True, response_format=True)
    bad_call = Answer.of(chat_payload(call("get_time", "{}"), "tool_calls"))
    assert rejection(checks, bad_call, ASK)[0] == "tool_call"
    good_call = Answer.of(chat_payload(call("get_weather", '{"city": "paris"}'), "tool_calls"))
    assert rejection(checks, good_call, ASK) is None
    wrong_shape = Answer.of(chat_payload(text('{"town": "x"}')))
    assert rejection(checks, wrong_shape, {"messages": [], "response_format": SCHEMA})[0] == "response_format"
    # Without the checks set, the same answers pass: a tier is only judged by what it declares.
    assert rejection(TierChecks(), bad_call, ASK) is None
    # A regex judges text; a tool call has none, and the toolCall check is what judges it.
    assert rejection(TierChecks(regex="^x$", tool_call=True), good_call, ASK) is None


def test_a_streamed_cascade_answer_carries_its_tool_calls():
    payload = {"id": "x", "created": 1, "model": "m",
               **chat_payload(call("get_weather", '{"city": "paris"}'), "tool_calls")}
    chunks = sse_chunks(payload, "chat", include_usage=False)
    assert '"tool_calls": [{"index": 0, "id": "call_1"' in chunks[0]
    assert '"finish_reason": "tool_calls"' in chunks[1]


# --- requests checked before they are sent -------------------------------------------------------

@pytest.mark.parametrize("body,param,words", [
    ({"tools": [WEATHER]}, None, None),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "bogus"}}}]},
     "tools[0].function.parameters", "is not a valid JSON Schema"),
    ({"tools": [WEATHER, {"type": "function", "function": {"name": "g", "parameters": {"properties": 3}}}]},
     "tools[1].function.parameters", "tool 'g'"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}},
     "response_format.json_schema.schema", "not a valid JSON Schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format.json_schema.schema", "needs json_schema.schema"),
    ({"response_format": SCHEMA}, None, None),
])
def test_tools_and_schemas_are_checked_before_sending(body, param, words):
    problem = tools_problem(body)
    if param is None:
        assert problem is None
    else:
        assert problem.param == param and words in problem.message, problem


def test_a_base_without_a_tool_parser_is_named():
    plain, hermes = EngineSettings(), EngineSettings(tool_call_parser="hermes")
    problem = engine_problem({"tools": [WEATHER], "tool_choice": "auto"}, route="chat", base_model="tiny", engine=plain)
    assert problem.param == "tools" and "route 'chat'" in problem.message and "toolCallParser" in problem.message
    assert engine_problem({"tools": [WEATHER], "tool_choice": "none"}, route="c", base_model="b", engine=plain) is None
    assert engine_problem({"tool_choice": "none"}, route="c", base_model="b", engine=plain) is None
    assert engine_problem({"tools": [WEATHER], "tool_choice": "auto"}, route="c", base_model="b", engine=hermes) is None
    manual = EngineSettings(tool_call_parser="hermes", enable_auto_tool_choice=False)
    assert engine_problem({"tools": [WEATHER]}, route="c", base_model="b", engine=manual).param == "tool_choice"
    assert engine_problem({"tools": [WEATHER], "tool_choice": "required"}, route="c", base_model="b",
                          engine=manual) is None


# --- engine settings in the spec -----------------------------------------------------------------

@pytest.mark.parametrize("engine,words", [
    ({"toolCallParser": "hermess"}, "'hermes'"),  # an unknown parser lists the known ones
    ({"reasoningParser": "nope"}, "'qwen3'"),
    ({"enableAutoToolChoice": True}, "needs toolCallParser"),
    ({"toolStrictLevel": "parameter"}, "needs toolCallParser"),
    ({"toolCallParser": "hermes", "toolStrictLevel": "everything"}, "'parameter'"),
    ({"chatTemplate": "{% for m in messages %}", "toolCallParser": "hermes"}, "not valid Jinja"),
    ({"chatTemplate": "x", "chatTemplateFile": "t.jinja"}, "not both"),
    ({"chatTemplateFile": "/abs/t.jinja"}, "chatTemplateFile"),
])
def test_bad_engine_settings_are_named(engine, words):
    with pytest.raises(FleetSpecError) as err:
        parse_fleet(fleet(**{"baseModels.1.engine": engine}))
    assert "baseModels[1].engine" in str(err.value) and words in str(err.value), str(err.value)


def test_a_template_file_needs_a_local_model():
    with pytest.raises(FleetSpecError, match="give the template inline"):
        parse_fleet(fleet(**{"baseModels.0.engine": {"chatTemplateFile": "tools.jinja"}}))


def test_agent_settings_reach_vllm():
    spec = parse_fleet(fleet(**{"baseModels.1.engine": {"toolCallParser": "hermes", "reasoningParser": "qwen3",
                                                        "chatTemplateFile": "tools.jinja"}}))
    kwargs = llm_config_dict(spec.base("tiny-qwen"))["engine_kwargs"]
    assert kwargs["tool_call_parser"] == "hermes" and kwargs["enable_auto_tool_choice"] is True
    assert kwargs["tool_strict_level"] == "auto"
    assert kwargs["chat_template"] == "/models/tiny-qwen/tools.jinja" and kwargs["reasoning_parser"] == "qwen3"
    plain = llm_config_dict(parse_fleet(fleet()).base("tiny-qwen"))["engine_kwargs"]
    assert not {"tool_call_parser", "enable_auto_tool_choice", "chat_template", "reasoning_parser"} & set(plain)


def test_agent_settings_are_vllm_frontend_or_engine_arguments():
    """Ray Serve LLM refuses engine_kwargs that are neither; the names must stay vLLM's."""
    import dataclasses

    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import FrontendArgs

    known = {f.name for f in dataclasses.fields(FrontendArgs)} | {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    assert {"tool_call_parser", "enable_auto_tool_choice", "tool_strict_level", "chat_template",
            "reasoning_parser"} <= known


def test_parser_names_are_vllms():
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager

    assert set(TOOL_CALL_PARSERS) == set(ToolParserManager.list_registered())
    assert set(REASONING_PARSERS) == set(ReasoningParserManager.list_registered())


@pytest.mark.parametrize("message,body,param", [
    ("Grammar error: regex parse error: look-around is not supported", {"response_format": {"type": "json_schema"}},
     "response_format"),
    ("Grammar error: bad", {"structured_outputs": {"regex": "(?<=a)"}}, "structured_outputs"),
    ("Grammar error: bad", {}, "tools"),
    ("prompt too long", {"response_format": {}}, None),
])
def test_grammar_refusals_name_the_parameter(message, body, param):
    problem = grammar_problem(message, body)
    assert (problem is None) if param is None else (problem.param == param and "simplify" in problem.message)


def test_validation_errors_name_openai_parameters():
    from serving.dataplane.errors import openai_param

    assert openai_param(("body", "tools", 0, "function", "parameters")) == "tools[0].function.parameters"
    assert openai_param(("body", "model")) == "model" and openai_param(("body",)) == ""
