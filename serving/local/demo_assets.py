"""Generate a tiny base model and task-specialised LoRA adapters for demos and tests.

No model hub is reachable here, so the demo fleet is made on the spot: a Llama-architecture
model small enough to train on a CPU in a few minutes (hidden 128, 2 heads of 64, a few layers;
vLLM's CPU attention kernel rejects head dims under 32) and PEFT LoRA adapters trained briefly on
toy tasks, so that each route visibly answers differently.

Every task reads ``in: <words>\\nout:`` and answers on the same line:

    base     in: red fox\\nout: red fox          (the base model learns to echo)
    shout    in: red fox\\nout: RED FOX
    reverse  in: red fox\\nout: fox red          (the words in reverse order)
    json     in: red fox\\nout: {"text": " red fox"}

The tasks share the base's echo skill and differ in one learnable twist, which is what a
fine-tune adds to a base in practice.

The ``tools`` adapter is a tool-calling specialist in the shape vLLM's ``hermes`` tool parser
reads. The chat template renders the offered OpenAI ``tools`` as one line before the
conversation, and the toy tool language is::

    tools: "get_weather"(city:string,days:integer); "convert_units"(value:integer,from:km|mi|kg|lb,...)
    in: "get" {"city": "paris", "days": 2}
    out:<tool_call>{"name": "get_weather", "arguments": {"city": "paris", "days": 2}}</tool_call>

The request names the tool by the first word of its name (its verb; the offered tools have
different verbs) and gives the arguments as JSON, which the call copies. After a tool result the
model answers with the result's text::

    ...</tool_call>
    result: sunny 21
    out: sunny 21

Tool schemas are generated from word lists (verb_noun names, 1-3 parameters of type string,
integer, boolean or enum). The word lists are split: the ``held_out`` tools, parameters and
values never appear in the tool adapter's training, nor in the base's tool-shaped training; the
base only learns to echo those words in plain text, the way a pretrained model knows words
without knowing anyone's tool schema. The training split is mostly made-up words (over a thousand,
each seen a few times), so the specialist learns to copy names and values rather than recall
them. :func:`tool_requests` gives requests of either split.

Copying is what makes a specialist work on tools it never saw, and a model this small only learns
it with help: tied input and output embeddings, and a first phase that trains nothing but echoing
random token spans (:func:`_copy_example`), before any task.

The fleet serves the specialist with the engine holding calls to the offered schemas while
decoding (``toolStrictLevel: parameter``): the tool name is one of the offered ones, and the
arguments follow their schemas. ``assets.json`` records the held-out shares of valid and exact
calls both ways: ``served_tool_call_*`` under that grammar (the one vLLM builds, see
:func:`served_tool_call_shares`) and ``tool_call_*`` with plain greedy decoding, where the tiny
model's misspelt tool names make almost every call invalid.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BASE_NAME = "tiny-llama"
WORDS = (
    "red blue green fox cat dog sun moon star tree river stone cloud rain wind fire "
    "bird fish road hill lake snow leaf rock wave song book door lamp ship"
).split()
EOS = "</s>"
TOOL_CALL_START, TOOL_CALL_END = "<tool_call>", "</tool_call>"
SPECIAL_TOKENS = ["<s>", EOS, "<pad>", TOOL_CALL_START, TOOL_CALL_END]  # token ids 0-4
N_SPECIAL = len(SPECIAL_TOKENS)

# The chat template. A single user message renders exactly ``in: {content}\nout:``. Offered tools
# come first, on one line (``tools: name(param:type,...);...``, an enum's values stand for its
# type); an assistant message renders its content or its tool calls exactly as the model emits
# them; a tool result renders ``\nresult: {content}`` followed by ``\nout:`` after the last result
# of a row. System messages are ignored; a content list contributes its text parts.
CHAT_TEMPLATE = (
    "{%- macro text(c) -%}"
    "{%- if c is string -%}{{ c }}"
    "{%- elif c -%}{%- for p in c -%}"
    "{%- if p is string -%}{{ p }}{%- elif p['type'] == 'text' -%}{{ p['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if tools -%}{{ 'tools: ' }}"
    "{%- for t in tools -%}"
    "{%- set f = t['function'] if t['function'] is defined else t -%}"
    "{%- set ps = ((f['parameters'] or {})['properties'] or {}) -%}"
    "{{ f['name'] | tojson }}("
    "{%- for k, s in ps.items() -%}{{ k }}:"
    "{%- if s['enum'] -%}{{ s['enum'] | join('|') }}"
    "{%- elif s['type'] is string -%}{{ s['type'] }}"
    "{%- elif s['type'] -%}{{ s['type'] | join('|') }}"
    "{%- else -%}any{%- endif -%}"
    "{%- if not loop.last -%},{%- endif -%}"
    "{%- endfor -%})"
    "{%- if not loop.last -%}{{ '; ' }}{%- endif -%}"
    "{%- endfor -%}{{ '\\n' }}"
    "{%- endif -%}"
    "{%- set ns = namespace(started=false) -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}"
    "{%- if ns.started -%}{{ '\\n' }}{%- endif -%}"
    "in: {{ text(m['content']) }}{{ '\\nout:' }}"
    "{%- set ns.started = true -%}"
    "{%- elif m['role'] == 'assistant' -%}"
    "{{ text(m['content']) }}"
    "{%- for tc in (m['tool_calls'] or []) -%}"
    "{%- set fn = tc['function'] if tc['function'] is defined else tc -%}"
    "<tool_call>{\"name\": {{ fn['name'] | tojson }}, \"arguments\": "
    "{%- if fn['arguments'] is string %} {{ fn['arguments'] }}"
    "{%- elif fn['arguments'] %} {{ fn['arguments'] | tojson }}"
    "{%- else %} {{ '{}' }}{%- endif -%}"
    "{{ '}' }}</tool_call>"
    "{%- endfor -%}"
    "{%- set ns.started = true -%}"
    "{%- elif m['role'] == 'tool' -%}"
    "{{ '\\nresult: ' }}{{ text(m['content']) }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' -%}{{ '\\nout:' }}{%- endif -%}"
    "{%- set ns.started = true -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


@dataclass(frozen=True)
class Task:
    name: str
    answer: Callable[[list[str]], str]
    description: str


TASKS = {
    "shout": Task("shout", lambda w: " ".join(w).upper(), "answers in upper case"),
    "reverse": Task("reverse", lambda w: " ".join(reversed(w)), "answers the words reversed"),
    # The leading space keeps the answer's first token the same as in a plain answer, which a
    # tiny LoRA learns in seconds.
    "json": Task("json", lambda w: json.dumps({"text": " " + " ".join(w)}), "answers in a JSON shape"),
}
ECHO = Task("base", lambda w: " ".join(w), "echoes the words")
TOOLS_ADAPTER = "tools"


def prompt_for(words: list[str]) -> str:
    return f"in: {' '.join(words)}\nout:"


# --- the toy tool language -------------------------------------------------------------------

def _split(words: str, n_held_out: int) -> dict[str, list[str]]:
    w = words.split()
    return {"train": w[n_held_out:], "held_out": w[:n_held_out]}


# The first words of each list are held out: never in a tool the adapter (or the base) trains on.
# The demo tools' words are in the training split (the demo's tools are like those it learned on;
# the tools themselves are not in its training data).
VERBS = _split(
    "fetch rename archive merge reset sync tune wash "
    "find list make send reserve open close start stop check add remove update read write play "
    "show track search load save sort move copy join plan pay order buy sell call ask rate "
    "mark lock scan print draw build clean fill hide keep lend mix pick post push pull ring "
    "rent test get convert", 8)
NOUNS = _split(
    "invoice profile backup server playlist parcel garden budget "
    "time alarm email file user ticket flight hotel photo note task event price stock meeting "
    "report video image recipe message contact folder device light window account cart coupon "
    "movie podcast review route station train taxi table room plant receipt "
    "driver weather units", 8)
PARAMS = _split(
    "currency region priority scope filter kind text guests "
    "count limit name query date hour minute size color level mode lang topic title amount "
    "page label tag owner sender target source format style speed volume width height weight "
    "score rank year month week age seats city days value from to", 8)
VALUES = _split(
    "tokyo cairo lima oslo delhi rome nairobi sydney lisbon athens warsaw prague dublin madrid "
    "apple banana cherry grape lemon mango peach plum pear melon olive onion pepper carrot "
    "tomato potato honey sugar salt bread butter cheese cream milk coffee tea juice water "
    "silver gold copper iron glass paper cotton wool silk velvet marble amber coral ivory "
    "jade ruby pearl topaz north south east west spring summer autumn winter morning evening "
    "berlin vienna paris london km mi kg lb", 14)
_REAL_WORDS = sorted({w for lists in (VERBS, NOUNS, PARAMS, VALUES) for split in lists.values() for w in split})


def _made_up_words(n: int) -> list[str]:
    """``n`` made-up words of 1-3 consonant-vowel syllables ("kotu", "zibame"), none a real word of the
    lists above. The training split's tools are mostly made of them: with a few dozen real words the
    specialist would learn to recall those; with thousands of words it sees once or twice it has to
    copy what the request gives it, which is what a tool it never saw needs."""
    rng, out = random.Random("made-up words"), set()
    while len(out) < n:
        w = "".join(rng.choice("bcdfghjklmnprstvwz") + rng.choice("aeiou") for _ in range(rng.randint(1, 3)))
        if w not in _REAL_WORDS:
            out.add(w)
    return sorted(out)


_MADE_UP = _made_up_words(1200)
VERBS["train"] += _MADE_UP[:150]
NOUNS["train"] += _MADE_UP[150:300]
PARAMS["train"] += _MADE_UP[300:600]
VALUES["train"] += _MADE_UP[600:]
TYPES = ("string", "string", "integer", "integer", "boolean", "enum")

# A documented toy tool set for the demo. ``run_demo_tool`` runs them locally.
DEMO_TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "The weather forecast for a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "convert_units", "description": "Convert a length or a weight.",
        "parameters": {"type": "object", "properties": {
            "value": {"type": "integer"},
            "from": {"type": "string", "enum": ["km", "mi", "kg", "lb"]},
            "to": {"type": "string", "enum": ["km", "mi", "kg", "lb"]}},
            "required": ["value", "from", "to"]}}},
]
DEMO_REQUESTS = [
    {"messages": [{"role": "user", "content": '"get" {"city": "paris", "days": 2}'}], "tools": DEMO_TOOLS,
     "expected": {"name": "get_weather", "arguments": {"city": "paris", "days": 2}}},
    {"messages": [{"role": "user", "content": '"convert" {"value": 5, "from": "km", "to": "mi"}'}], "tools": DEMO_TOOLS,
     "expected": {"name": "convert_units", "arguments": {"value": 5, "from": "km", "to": "mi"}}},
]
DEMO_REQUEST = DEMO_REQUESTS[0]
_FACTORS = {("km", "mi"): 0.621371, ("mi", "km"): 1.609344, ("kg", "lb"): 2.204623, ("lb", "kg"): 0.453592}


def run_demo_tool(name: str, arguments: dict) -> str:
    """Run one of :data:`DEMO_TOOLS` locally; the result is short text the model can echo."""
    if name == "get_weather":
        city, days = str(arguments.get("city", "")), int(arguments.get("days", 1) or 1)
        temp = 10 + sum(map(ord, city)) % 15
        return f"sunny {temp} c in {city} for {days} days" if days != 1 else f"sunny {temp} c in {city}"
    if name == "convert_units":
        src, dst, value = arguments.get("from"), arguments.get("to"), float(arguments.get("value", 0))
        if src == dst:
            return f"{value:g} {dst}"
        if (src, dst) not in _FACTORS:
            return f"cannot convert {src} to {dst}"
        return f"{value * _FACTORS[src, dst]:.1f} {dst}".replace(".", " point ")
    return f"unknown tool {name}"


def _tool_schema(rng: random.Random, split: str, verb: str, noun: str) -> dict:
    params = rng.sample(PARAMS[split], rng.randint(1, 3))
    props: dict[str, dict] = {}
    for p in params:
        kind = rng.choice(TYPES)
        if kind == "enum":
            props[p] = {"type": "string", "enum": rng.sample(VALUES[split], rng.randint(2, 3))}
        else:
            props[p] = {"type": kind}
    required = [p for i, p in enumerate(params) if i == 0 or rng.random() < 0.5]
    fn = {"name": f"{verb}_{noun}", "parameters": {"type": "object", "properties": props, "required": required}}
    if rng.random() < 0.7:
        fn["description"] = f"{verb.capitalize()} the {noun}."
    return {"type": "function", "function": fn}


def _value(rng: random.Random, split: str, schema: dict):
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = schema["type"]
    if kind == "integer":
        return rng.randint(1, 99)
    if kind == "boolean":
        return rng.random() < 0.5
    return rng.choice(VALUES[split])


def _word(value) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _offer(rng: random.Random, split: str) -> tuple[list[dict], int]:
    n = rng.randint(1, 3)
    verbs, nouns = rng.sample(VERBS[split], n), rng.sample(NOUNS[split], n)
    return [_tool_schema(rng, split, v, w) for v, w in zip(verbs, nouns)], rng.randrange(n)


def tool_requests(split: str = "held_out", n: int = 100, seed: int = 0) -> list[dict]:
    """OpenAI-style request pieces: ``{"messages", "tools", "expected": {"name", "arguments"}}``.

    ``split`` is ``"train"`` (what the adapter learned on) or ``"held_out"`` (tools, parameter
    names and values it never saw). 1-3 tools are offered; the request names one by its verb.
    """
    rng = random.Random(f"{split}:{seed}")
    out = []
    for _ in range(n):
        tools, pick = _offer(rng, split)
        fn = tools[pick]["function"]
        props, required = fn["parameters"]["properties"], fn["parameters"]["required"]
        args = {p: _value(rng, split, s) for p, s in props.items() if p in required or rng.random() < 0.5}
        verb = fn["name"].split("_")[0]
        content = f"{json.dumps(verb)} {json.dumps(args)}"
        out.append({"messages": [{"role": "user", "content": content}], "tools": tools,
                    "expected": {"name": fn["name"], "arguments": args}})
    return out


def tool_result_requests(split: str = "held_out", n: int = 100, seed: int = 0) -> list[dict]:
    """Second turns: the request, the assistant's tool call and the tool's result; ``expected``
    is ``{"content": ...}``, the text the model answers with (the result, echoed)."""
    rng = random.Random(f"result:{split}:{seed}")
    out = []
    for i, req in enumerate(tool_requests(split, n, seed)):
        call = req["expected"]
        result = " ".join(_word(rng.choice([rng.randint(1, 99), rng.choice(VALUES[split])]))
                          for _ in range(rng.randint(1, 3)))
        call_id = f"call_{i}"
        messages = [*req["messages"],
                    {"role": "assistant", "content": None, "tool_calls": [{
                        "id": call_id, "type": "function",
                        "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}}]},
                    {"role": "tool", "tool_call_id": call_id, "content": result}]
        out.append({"messages": messages, "tools": req["tools"], "expected": {"content": " " + result}})
    return out


def unhandled_tool_requests(n: int = 20, seed: int = 0) -> list[dict]:
    """Requests the specialist is not meant to handle: tools are offered but the request names
    none of them (free text, or a verb no offered tool has). ``expected`` is None: a cascade
    should escalate these to a larger tier."""
    rng = random.Random(f"unhandled:{seed}")
    out = []
    for i in range(n):
        tools, _ = _offer(rng, "held_out")
        offered = {t["function"]["name"].split("_")[0] for t in tools}
        if i % 2:
            verb = rng.choice([v for v in VERBS["train"] + VERBS["held_out"] if v not in offered])
            args = {rng.choice(PARAMS["held_out"]): rng.choice(VALUES["held_out"])}
            content = f"{json.dumps(verb)} {json.dumps(args)}"
        else:
            content = rng.choice(["what can you do", "tell me a joke about the sea", "who are you",
                                  "summarise the last meeting", "why is the sky blue"])
        out.append({"messages": [{"role": "user", "content": content}], "tools": tools, "expected": None})
    return out


def hermes_call(name: str, arguments: dict) -> str:
    """A tool call exactly as the ``tools`` adapter emits it (and the chat template renders it)."""
    return f"{TOOL_CALL_START}{json.dumps({'name': name, 'arguments': arguments})}{TOOL_CALL_END}"


def _text(content) -> str:
    if isinstance(content, str):
        return content
    parts = content or []
    return "".join(p if isinstance(p, str) else p.get("text", "") for p in parts
                   if isinstance(p, str) or p.get("type") == "text")


def _type_text(s: dict) -> str:
    if s.get("enum"):
        return "|".join(str(v) for v in s["enum"])
    t = s.get("type")
    return t if isinstance(t, str) else "|".join(t) if t else "any"


def render_prompt(messages: list[dict], tools: list[dict] | None = None) -> str:
    """What :data:`CHAT_TEMPLATE` renders, in Python (the training data is made with it)."""
    out = []
    if tools:
        sigs = []
        for t in tools:
            f = t.get("function", t)
            props = ((f.get("parameters") or {}).get("properties") or {})
            sigs.append(f"{json.dumps(f['name'])}({','.join(f'{k}:{_type_text(s)}' for k, s in props.items())})")
        out.append("tools: " + "; ".join(sigs) + "\n")
    started = False
    for i, m in enumerate(messages):
        if m["role"] == "user":
            out.append(("\n" if started else "") + f"in: {_text(m.get('content'))}\nout:")
        elif m["role"] == "assistant":
            out.append(_text(m.get("content")))
            for tc in m.get("tool_calls") or []:
                fn = tc.get("function", tc)
                args = fn.get("arguments")
                args = args if isinstance(args, str) else json.dumps(args) if args else "{}"
                out.append(f'{TOOL_CALL_START}{{"name": {json.dumps(fn["name"])}, "arguments": {args}}}{TOOL_CALL_END}')
        elif m["role"] == "tool":
            out.append(f"\nresult: {_text(m.get('content'))}")
            if i == len(messages) - 1 or messages[i + 1]["role"] != "tool":
                out.append("\nout:")
        else:
            continue
        started = True
    return "".join(out)


_CALL = re.compile(re.escape(TOOL_CALL_START) + r"(.*?)" + re.escape(TOOL_CALL_END), re.DOTALL)


def is_expected_call(message: dict, expected: dict | None) -> bool:
    """Whether a chat answer ``message`` is exactly one call, the ``expected`` one (name and arguments)."""
    calls = message.get("tool_calls") or []
    if expected is None or len(calls) != 1:
        return False
    function = calls[0].get("function") or {}
    try:
        arguments = json.loads(function.get("arguments") or "null")
    except ValueError:
        return False
    return {"name": function.get("name"), "arguments": arguments} == expected


def score_tool_call(output: str, request: dict) -> dict:
    """Judge a model's raw answer to a :func:`tool_requests` request, as the engine's parser and the
    fleet's ``toolCall`` check would.

    ``valid``: the answer is exactly one hermes tool call that passes the toolCall check (names an
    offered tool, arguments valid against its JSON Schema). ``exact``: also the expected call.
    """
    m = _CALL.fullmatch(output.replace(EOS, "").strip())
    try:
        call = json.loads(m.group(1)) if m else None
    except ValueError:
        call = None
    if not isinstance(call, dict) or set(call) != {"name", "arguments"} or not isinstance(call["arguments"], dict):
        return {"valid": False, "exact": False}
    return _judge(_call_message([(call["name"], json.dumps(call["arguments"]))]), request)


def parsed_message(output: str) -> dict:
    """The chat answer the fleet returns for a raw ``output`` (up to EOS) under the hermes parser
    (``serving.policy.checks.hermes_message``), with an empty call list when it holds none."""
    from serving.policy.checks import hermes_message

    message = hermes_message(output.split(EOS)[0])
    return {**message, "content": None, "tool_calls": message.get("tool_calls", [])}


def _call_message(calls: list[tuple[str, str]]) -> dict:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": name, "arguments": arguments}} for name, arguments in calls]}


def _judge(message: dict, request: dict) -> dict:
    from serving.policy.checks import tool_call_problem

    valid = bool(message["tool_calls"]) and tool_call_problem(message, request) is None
    return {"valid": valid, "exact": valid and is_expected_call(message, request.get("expected"))}


def _shares(scores: list[dict]) -> dict:
    return {"valid": sum(s["valid"] for s in scores) / len(scores),
            "exact": sum(s["exact"] for s in scores) / len(scores)}


# --- training data ---------------------------------------------------------------------------

def _general_words() -> list[str]:
    """Every real word of the tool language, both splits: what the base knows as plain words."""
    return sorted(set(_REAL_WORDS) | {"true", "false", "c", "in", "for", "sunny", "point", "days", "cannot", "convert"})


def copyable_ids(tokenizer) -> list[int]:
    """The tokens :func:`_copy_example` draws from: every token but the special ones, whitespace
    other than a single space, and pieces of a multi-byte character. A token the base never emits
    keeps a low score; one it learned to echo at random is what it falls back on when it is unsure,
    and under a grammar that allows whitespace (a JSON schema's) it would pad with it forever."""
    ids = []
    for i in range(N_SPECIAL, len(tokenizer)):
        text = tokenizer.decode([i])
        if text.strip(" ") and text.isprintable() and "\ufffd" not in text:
            ids.append(i)
    return ids


def _copy_example(rng: random.Random, tokenizer, ids: list[int]) -> tuple[str, str]:
    """A span of 2-16 random tokens (of ``ids``, :func:`copyable_ids`), echoed, after 0-6 random
    tokens that the prompt already gives. A pretrained model's most general skill is to repeat what
    is in its context (induction heads); this tiny base learns it here first, before any task, and
    keeps it while it learns the rest. The given tokens vary where the copy starts, so that what it
    learns is to continue the span it is copying (which works after any prefix: a JSON key, a tool
    call's name) rather than to look back a fixed distance. The specialist's calls copy names and
    values from the request with it."""
    text = tokenizer.decode([rng.choice(ids) for _ in range(rng.randint(2, 16))])
    given = tokenizer.decode([rng.choice(ids) for _ in range(rng.randint(0, 6))])
    return f"in: {text}\nout:{given}", f" {text}{EOS}"


def _echo_example(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(WORDS, rng.randint(1, 3))
    # The base echoes every form an adapter answers in, so that each answer token has a trained
    # output embedding before the adapters (which do not touch lm_head) need it.
    form = rng.choice([TASKS["shout"].answer, TASKS["json"].answer, ECHO.answer, ECHO.answer])
    text = form(words)
    return f"in: {text}\nout:", f" {text}{EOS}"


def _words_example(rng: random.Random, general: list[str]) -> tuple[str, str]:
    """Plain words of the tool language (both splits) and numbers, echoed: the base knows every
    word the way a pretrained model does, without having seen it in anyone's tool schema."""
    words = [rng.choice([rng.randint(1, 99), *rng.sample(general, 3)]) for _ in range(rng.randint(1, 4))]
    # Also as a JSON list: a word right after a quote is another token than after a space.
    text = json.dumps(words) if rng.random() < 0.5 else " ".join(map(_word, words))
    return f"in: {text}\nout:", f" {text}{EOS}"


def _tool_example(rng: random.Random) -> tuple[str, str]:
    seed = rng.randrange(10**9)
    if rng.random() < 0.25:
        req = tool_result_requests("train", 1, seed)[0]
        return render_prompt(req["messages"], req["tools"]), req["expected"]["content"] + EOS
    req = tool_requests("train", 1, seed)[0]
    return render_prompt(req["messages"], req["tools"]), hermes_call(**req["expected"]) + EOS


def _task_example(task: Task) -> Callable[[random.Random], tuple[str, str]]:
    def make(rng: random.Random) -> tuple[str, str]:
        words = rng.sample(WORDS, rng.randint(1, 3))
        return prompt_for(words), f" {task.answer(words)}{EOS}"
    return make


def _train_tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    general = _general_words()
    makers = [_task_example(t) for t in TASKS.values()] + [_echo_example, _tool_example] * 2
    makers += [lambda r: _words_example(r, general)] * 2
    corpus = ["".join(m(rng)) for m in makers for _ in range(400)]
    corpus += [" ".join(general)] * 20 + [json.dumps(general)] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token=EOS, pad_token="<pad>",
        additional_special_tokens=[TOOL_CALL_START, TOOL_CALL_END],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def _batches(makers: list[tuple[float, Callable[[random.Random], tuple[str, str]]]], tokenizer,
             rng: random.Random, steps: int, batch: int):
    """``steps`` batches; each is made by one of ``makers`` (picked by weight), so that a batch's
    examples are of about the same length."""
    weights, fns = zip(*makers)
    for _ in range(steps):
        make = rng.choices(fns, weights)[0]
        pairs = [make(rng) for _ in range(batch)]
        enc = tokenizer([p + a for p, a in pairs], return_tensors="pt", padding=True)
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        # Loss only on the answer: the prompt is given, the model learns what follows "out:".
        for i, n_prompt in enumerate(len(ids) for ids in tokenizer([p for p, _ in pairs])["input_ids"]):
            labels[i, :n_prompt] = -100
        yield enc["input_ids"], enc["attention_mask"], labels


def _train(model, params, batches, lr: float, steps: int) -> float:
    import torch

    opt = torch.optim.AdamW(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20, 2 * (1 - s / steps) + 0.1))
    model.train()
    loss = torch.tensor(0.0)
    for input_ids, attention_mask, labels in batches:
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
    model.eval()
    return float(loss.detach())


def greedy(model, tokenizer, prompts: list[str], max_new_tokens: int = 64, batch: int = 50) -> list[str]:
    """Greedy continuations of ``prompts`` (special tokens kept, up to and without EOS)."""
    import torch

    outs = []
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        for i in range(0, len(prompts), batch):
            enc = tokenizer(prompts[i:i + batch], return_tensors="pt", padding=True)
            with torch.no_grad():
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            for row in gen[:, enc["input_ids"].shape[1]:]:
                text = tokenizer.decode(row, skip_special_tokens=False)
                outs.append(text.split(EOS)[0].replace(tokenizer.pad_token, ""))
    finally:
        tokenizer.padding_side = side
    return outs


def task_accuracy(model, tokenizer, task: Task, n: int = 20) -> float:
    """Share of ``n`` fresh prompts that ``model`` answers exactly as ``task`` does (greedy)."""
    rng = random.Random(f"check:{task.name}")
    words = [rng.sample(WORDS, rng.randint(1, 3)) for _ in range(n)]
    outs = greedy(model, tokenizer, [prompt_for(w) for w in words], max_new_tokens=24)
    return sum(o.strip() == task.answer(w).strip() for o, w in zip(outs, words)) / n


def tool_call_shares(model, tokenizer, requests: list[dict]) -> dict:
    """The share of valid and of exact tool calls the model makes for ``requests``."""
    outs = greedy(model, tokenizer, [render_prompt(r["messages"], r["tools"]) for r in requests])
    return _shares([score_tool_call(o, r) for o, r in zip(outs, requests)])


def served_tool_call_shares(model, tokenizer, requests: list[dict], max_new_tokens: int = 48) -> dict:
    """:func:`tool_call_shares` as the fleet serves the specialist: each call decoded under the grammar
    vLLM builds for its ``hermes`` parser at ``toolStrictLevel: parameter`` (the same structural tag,
    compiled by the same xgrammar), greedy, ``tool_choice: auto``, and read as that parser reads it
    (:func:`parsed_message`)."""
    import torch
    import xgrammar
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionToolsParam
    from vllm.tool_parsers.structural_tag_registry import get_model_structural_tag
    from vllm.tool_parsers.tool_strict_level import ToolStrictLevel
    from xgrammar.contrib.hf import LogitsProcessor

    compiler = xgrammar.GrammarCompiler(xgrammar.TokenizerInfo.from_huggingface(
        tokenizer, vocab_size=model.config.vocab_size))
    scores = []
    for request in requests:
        tag = get_model_structural_tag(
            "hermes", [ChatCompletionToolsParam.model_validate(t) for t in request["tools"]], "auto",
            reasoning=False, strict_level=ToolStrictLevel.PARAMETER)
        grammar = compiler.compile_structural_tag(json.dumps(tag.model_dump()))
        enc = tokenizer([render_prompt(request["messages"], request["tools"])], return_tensors="pt")
        with torch.no_grad():
            row = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 logits_processor=[LogitsProcessor(grammar)],
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)[0]
        output = tokenizer.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=False)
        scores.append(_judge(parsed_message(output), request))
    return _shares(scores)


def generator_key() -> str:
    """What the assets depend on: this module's source and the versions of the libraries that train.

    ``ensure_assets`` regenerates assets whose summary carries another key.
    """
    from importlib.metadata import version

    text = Path(__file__).read_bytes() + " ".join(version(p) for p in TRAINING_LIBRARIES).encode()
    return hashlib.sha256(text).hexdigest()[:16]


TRAINING_LIBRARIES = ("torch", "transformers", "peft", "tokenizers")


def _lora():
    from peft import LoraConfig

    return LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )


def generate(out_dir: str | Path, *, copy_steps: int = 1000, base_steps: int = 800, adapter_steps: int = 250,
             tool_steps: int = 800, eval_requests: int = 200, served_eval_requests: int = 60) -> dict:
    """Write ``base/`` (a tiny Llama) and ``adapters/<task>/`` (PEFT LoRA) under ``out_dir``.

    Returns a summary (paths, final training losses, the tool adapter's held-out shares of valid
    and exact calls, plain and as served, the generator key). Deterministic for given step counts
    and library versions.
    """
    import torch
    from peft import get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(2)
    out = Path(out_dir)
    base_dir, adapters_dir = out / "base", out / "adapters"
    tokenizer = _train_tokenizer(base_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # Tied: copying a token is then the identity from input to output embedding, which a 2-layer
        # model finds in a few hundred steps; untied, it has to learn that map for every token and
        # in these few minutes copies none it was not drilled on.
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    # First the copy skill (_copy_example), then the base sees every task's prompts but always
    # answers with the echo: it knows the format, and the adapters each add one twist on top. It
    # also learns plain words of the tool language and, like base models trained with some
    # function-calling data, a little tool calling on the training split; the ``tools`` adapter is
    # the specialist. Copying stays in the mix so that the rest does not wear it away.
    general = _general_words()
    ids = copyable_ids(tokenizer)
    copy = (1.0, lambda r: _copy_example(r, tokenizer, ids))
    losses = {"copy": _train(model, list(model.parameters()),
                             _batches([copy], tokenizer, random.Random(2), copy_steps, 32), 3e-3, copy_steps)}
    base_mix = [(0.4, _echo_example), (0.15, lambda r: _words_example(r, general)), (0.15, _tool_example),
                (0.3, copy[1])]
    base_batches = _batches(base_mix, tokenizer, random.Random(1), base_steps, 32)
    losses["base"] = _train(model, list(model.parameters()), base_batches, 2e-3, base_steps)
    model.config.name_or_path = BASE_NAME
    model.save_pretrained(base_dir, safe_serialization=True)
    model.generation_config.save_pretrained(base_dir)

    makers = {name: ([(1.0, _task_example(task))], adapter_steps, 5e-3) for name, task in TASKS.items()}
    makers[TOOLS_ADAPTER] = ([(1.0, _tool_example)], tool_steps, 5e-3)
    shares, served, accuracy = {}, {}, {}
    for i, (name, (make, steps, lr)) in enumerate(makers.items()):
        # A short LoRA run on a tiny model now and then lands on a plateau (an adapter that only
        # echoes): each task adapter is checked on fresh prompts and trained again (another
        # seed, a gentler rate) if it misses, so every generation serves adapters that work.
        for attempt in range(3):
            peft_model = get_peft_model(model, _lora())
            trainable = [p for p in peft_model.parameters() if p.requires_grad]
            batches = _batches(make, tokenizer, random.Random(10 + i + 100 * attempt), steps, 32)
            losses[name] = _train(peft_model, trainable, batches, lr / (1 + attempt), steps)
            if name in TASKS:
                accuracy[name] = task_accuracy(peft_model, tokenizer, TASKS[name])
            if accuracy.get(name, 1.0) >= 0.8 or attempt == 2:
                break
            model = peft_model.unload()
        if name == TOOLS_ADAPTER:
            held_out = tool_requests("held_out", eval_requests, seed=1)
            shares = tool_call_shares(peft_model, tokenizer, held_out)
            served = served_tool_call_shares(peft_model, tokenizer, held_out[:served_eval_requests])
        adapter_dir = adapters_dir / name
        peft_model.save_pretrained(adapter_dir)
        # PEFT records the training-time path of the base; name the base as the fleet knows it.
        cfg_path = adapter_dir / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = BASE_NAME
        cfg_path.write_text(json.dumps(cfg, indent=2))
        model = peft_model.unload()  # the frozen base, LoRA layers removed, for the next task

    summary = {
        "base": str(base_dir),
        "adapters": {name: str(adapters_dir / name) for name in makers},
        "final_loss": {k: round(v, 4) for k, v in losses.items()},
        "task_accuracy": {k: round(v, 4) for k, v in accuracy.items()},
        "tool_call_valid_share": round(shares["valid"], 4),
        "tool_call_exact_share": round(shares["exact"], 4),
        "served_tool_call_valid_share": round(served["valid"], 4),
        "served_tool_call_exact_share": round(served["exact"], 4),
        "generator": generator_key(),
    }
    (out / "assets.json").write_text(json.dumps(summary, indent=2))
    return summary


def generate_in_child(out_dir: str | Path) -> dict:
    """:func:`generate` in a fresh interpreter, so the assets depend on nothing the calling process did (its
    imported libraries' global settings, thread pools). Made so, they came out byte for byte the same in the
    test session after its unit tests and from a shell (2026-12-07)."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "serving.local.demo_assets", str(out_dir)], check=True,
                   stdout=subprocess.DEVNULL)
    return json.loads((Path(out_dir) / "assets.json").read_text())


if __name__ == "__main__":  # what generate_in_child runs
    import sys

    print(json.dumps(generate(sys.argv[1] if len(sys.argv) > 1 else "demo-assets"), indent=2))
