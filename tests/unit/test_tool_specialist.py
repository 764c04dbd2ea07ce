"""The tool-calling specialist's chat template and toy tool language (no training)."""

from __future__ import annotations

import json

import jsonschema
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from serving.local import demo_assets as d
from serving.policy.checks import HERMES_CALL


def _render(messages, tools=None):
    # The environment transformers renders chat templates in (trim/lstrip blocks, its tojson).
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)
    return env.from_string(d.CHAT_TEMPLATE).render(messages=messages, tools=tools, add_generation_prompt=True)


def test_a_single_user_message_renders_as_before():
    assert _render([{"role": "user", "content": "red fox"}]) == "in: red fox\nout:"
    assert _render([{"role": "system", "content": "be nice"}, {"role": "user", "content": "red fox"}]) \
        == "in: red fox\nout:"


def test_content_parts_null_content_and_bare_tools_do_not_crash():
    parts = [{"type": "text", "text": "red "}, {"type": "image_url", "image_url": {"url": "x"}},
             {"type": "text", "text": "fox"}]
    assert _render([{"role": "user", "content": parts}]) == "in: red fox\nout:"
    tools = [{"type": "function", "function": {"name": "ping"}},
             {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    msgs = [{"role": "user", "content": None}]
    assert _render(msgs, tools) == 'tools: "ping"(); "f"()\nin: \nout:' == d.render_prompt(msgs, tools)


def test_tools_history_and_results_render_as_the_model_reads_them():
    req = d.tool_result_requests("held_out", 1, 0)[0]
    text = _render(req["messages"], req["tools"])
    call = req["messages"][1]["tool_calls"][0]["function"]
    assert text.startswith("tools: ") and text.endswith("\nout:")
    assert d.hermes_call(call["name"], json.loads(call["arguments"])) in text
    assert f"\nresult: {req['messages'][2]['content']}\nout:" in text
    # vLLM hands the template the arguments already parsed into a dict: same rendering.
    parsed = json.loads(json.dumps(req["messages"]))
    parsed[1]["tool_calls"][0]["function"]["arguments"] = json.loads(call["arguments"])
    assert _render(parsed, req["tools"]) == text


@pytest.mark.parametrize("split", ["train", "held_out"])
def test_the_python_renderer_matches_the_template(split):
    for req in d.tool_requests(split, 50, 3) + d.tool_result_requests(split, 20, 3) + d.unhandled_tool_requests(10):
        assert d.render_prompt(req["messages"], req["tools"]) == _render(req["messages"], req["tools"])


def test_transformers_renders_the_template_with_tools(tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()))
    tok.chat_template = d.CHAT_TEMPLATE
    req = d.DEMO_REQUEST
    text = tok.apply_chat_template(req["messages"], tools=req["tools"], tokenize=False, add_generation_prompt=True)
    assert text == d.render_prompt(req["messages"], req["tools"])


def _names(split):
    reqs = d.tool_requests(split, 300, 0)
    tools = [t["function"] for r in reqs for t in r["tools"]]
    return {t["name"] for t in tools}, {p for t in tools for p in t["parameters"]["properties"]}


def test_held_out_tools_and_parameters_are_never_in_training():
    train_names, train_params = _names("train")
    held_names, held_params = _names("held_out")
    assert not train_names & held_names and not train_params & held_params
    assert not {n.split("_")[0] for n in train_names} & {n.split("_")[0] for n in held_names}
    assert not set(d.VALUES["train"]) & set(d.VALUES["held_out"])


@pytest.mark.parametrize("split", ["train", "held_out"])
def test_expected_calls_validate_and_score_as_exact(split):
    for req in d.tool_requests(split, 200, 1):
        exp = req["expected"]
        fn = {t["function"]["name"]: t["function"] for t in req["tools"]}[exp["name"]]
        jsonschema.validate(exp["arguments"], fn["parameters"])
        assert 1 <= len(req["tools"]) <= 3
        assert d.score_tool_call(d.hermes_call(**exp) + d.EOS, req) == {"valid": True, "exact": True}


def test_the_score_rejects_wrong_shapes_tools_and_arguments():
    req = d.DEMO_REQUESTS[1]
    assert d.score_tool_call(" 5 km", req)["valid"] is False
    assert d.score_tool_call(d.hermes_call("nope", {}), req)["valid"] is False
    wrong_type = d.hermes_call("convert_units", {"value": "x", "from": "km", "to": "mi"})
    assert d.score_tool_call(wrong_type, req)["valid"] is False
    other = d.hermes_call("convert_units", {"value": 7, "from": "km", "to": "mi"})
    assert d.score_tool_call(other, req) == {"valid": True, "exact": False}


def test_demo_tools_run_locally():
    assert d.run_demo_tool("get_weather", {"city": "paris"}).startswith("sunny")
    assert d.run_demo_tool("convert_units", {"value": 5, "from": "km", "to": "mi"}) == "3 point 1 mi"
    assert all(r["expected"] is None for r in d.unhandled_tool_requests(5))


def test_made_up_training_words_are_no_real_word():
    made_up = {w for lists in (d.VERBS, d.NOUNS, d.PARAMS, d.VALUES) for w in lists["train"]} - set(d._REAL_WORDS)
    assert len(made_up) >= 1000
    assert not made_up & set(d._REAL_WORDS) and not made_up & set(d.VALUES["held_out"] + d.PARAMS["held_out"])


def test_a_copy_example_answers_with_its_prompt_and_holds_no_whitespace_runs(tmp_path):
    import random

    tok = d._train_tokenizer(tmp_path)
    ids = d.copyable_ids(tok)
    assert 500 < len(ids) < len(tok)
    rng = random.Random(0)
    for _ in range(50):
        prompt, answer = d._copy_example(rng, tok, ids)
        text, given = prompt.removeprefix("in: ").split("\nout:")
        assert answer == f" {text}{d.EOS}" and text.strip()
        assert not set("\r\n\t\ufffd") & set(text)
        assert not set(tok(text, add_special_tokens=False)["input_ids"]) & set(range(d.N_SPECIAL))


def test_the_served_share_reads_calls_as_the_hermes_parser_does():
    from vllm.tool_parsers.hermes_tool_parser import Hermes2ProToolParser

    assert HERMES_CALL.pattern == Hermes2ProToolParser.tool_call_regex.pattern
    import re

    # vLLM compiles it with the regex package, whose flag values match re's.
    assert HERMES_CALL.flags & re.DOTALL and Hermes2ProToolParser.tool_call_regex.flags & re.DOTALL


def test_parsed_message_reads_calls_as_the_route_returns_them():
    req = d.DEMO_REQUESTS[0]
    call = d.hermes_call(**req["expected"])
    assert d.is_expected_call(d.parsed_message(call + " trailing text" + d.EOS + "more"), req["expected"])
    two = d.parsed_message(call + call)["tool_calls"]
    assert len(two) == 2 and two[0] == two[1]
    unclosed = d.parsed_message(d.TOOL_CALL_START + '{"name": "get_weather", "arguments": {"city": "pa')
    assert unclosed["tool_calls"][0]["function"]["name"] == ""
    assert d.parsed_message("sunny 21")["tool_calls"] == []
