"""The OpenAI Responses API (``POST /v1/responses``) on top of the fleet's chat completions: pure translations.

The router answers a Responses request by translating it into a chat-completions request
(``chat_request``), sending that through its normal chat path (routing, cascades, classify routes),
and translating the chat answer back: ``response_from_chat`` for a JSON answer, ``StreamTranslator``
for a stream of ``chat.completion.chunk`` events (into Responses' typed SSE events). Nothing here
does I/O, and only the standard library is used: the ``openai`` package is the tests' yardstick
(every object built here validates with its models), not a runtime dependency.

The fleet is stateless: nothing is stored, so ``previous_response_id``, ``conversation`` and
``background`` are refused (the client sends the whole conversation in ``input``) and every answer
says ``store: false``. Only function tools exist (the caller runs them); OpenAI's hosted tools
(web search, file search, computer use, MCP ...) are refused. Input is text: image, file and audio
parts are refused. Fields with no chat equivalent that change nothing about the answer's content
(``include``, ``reasoning``, ``truncation``, ``service_tier``, ``prompt_cache_*``, ``stream_options``,
``text.verbosity`` ...) are accepted and ignored, so that SDKs which always send them work.
"""

from __future__ import annotations

import codecs
import json
import time
import uuid
from typing import Any


class ResponsesInputError(ValueError):
    """A Responses request the fleet cannot answer; the router answers it as a 400 naming ``param``."""

    def __init__(self, param: str, message: str):
        self.param = param
        super().__init__(message)


_STATELESS = ("the fleet keeps no responses or conversations (every answer has store: false): "
              "send the whole conversation in 'input' instead")

_REFUSED = {
    "previous_response_id": f"'previous_response_id' is not supported: {_STATELESS}",
    "conversation": f"'conversation' is not supported: {_STATELESS}",
    "prompt": "'prompt' (a stored prompt template) is not supported: the fleet stores no prompts; "
              "send the prompt text in 'instructions' and 'input'",
}

_ROLES = {"user": "user", "assistant": "assistant", "system": "system",
          # chat templates of open models know system, not developer: same meaning, older name
          "developer": "system"}

_TEXT_PARTS = {"input_text", "output_text", "text", "refusal"}

_TOOL_CHOICES = ("auto", "none", "required")

# Chat finish reasons that leave a Responses answer incomplete, and the reason it then gives.
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# --- request: Responses -> chat completions --------------------------------------------------------


def chat_request(body: dict) -> dict:
    """The chat-completions request that answers Responses request ``body``.

    Raises ``ResponsesInputError`` (naming the parameter, saying what to do instead) for what the
    fleet cannot do: stored state, hosted tools, non-text input, unknown input item types.
    A streamed request asks for the usage chunk: the final ``response.completed`` carries usage.
    """
    if not isinstance(body, dict):
        raise ResponsesInputError("body", "the request body must be a JSON object")
    for param, message in _REFUSED.items():
        if body.get(param) is not None:
            raise ResponsesInputError(param, message)
    if body.get("background"):
        raise ResponsesInputError("background", f"'background: true' is not supported: {_STATELESS}; "
                                                "send the request without it and wait for the answer (or stream it)")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ResponsesInputError("model", "'model' is required: the name of one of the fleet's routes "
                                           "(GET /v1/models lists them)")

    messages: list[dict] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise ResponsesInputError("instructions", "'instructions' must be a string (the system prompt)")
        if instructions:
            messages.append({"role": "system", "content": instructions})
    messages += _messages(body.get("input"))

    chat: dict[str, Any] = {"model": model, "messages": messages}
    tools = _tools(body.get("tools"))
    tool_choice, tools = _tool_choice(body.get("tool_choice"), tools)
    if tools:
        chat["tools"] = tools
        if tool_choice is not None:
            chat["tool_choice"] = tool_choice
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = _typed(body, "parallel_tool_calls", bool)
    for src, dst, kind in (("temperature", "temperature", (int, float)), ("top_p", "top_p", (int, float)),
                           ("max_output_tokens", "max_tokens", int), ("user", "user", str)):
        if body.get(src) is not None:
            chat[dst] = _typed(body, src, kind)
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _typed(body: dict, param: str, kind):
    value = body[param]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ResponsesInputError(param, f"'{param}' must be of type {names}")
    return value


def _messages(input_: Any) -> list[dict]:
    if input_ is None:
        raise ResponsesInputError("input", "'input' is required: a string, or a list of message, function_call "
                                           "and function_call_output items")
    if isinstance(input_, str):
        return [{"role": "user", "content": input_}]
    if not isinstance(input_, list) or not input_:
        raise ResponsesInputError("input", "'input' must be a string or a non-empty list of items")
    messages: list[dict] = []
    for i, item in enumerate(input_):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise ResponsesInputError(param, f"'{param}' must be an object (a message or a function call item)")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in _ROLES:
                raise ResponsesInputError(f"{param}.role", f"'{param}.role' must be one of user, assistant, "
                                                           f"system, developer (got {role!r})")
            messages.append({"role": _ROLES[role], "content": _text(item.get("content"), f"{param}.content")})
        elif kind == "function_call":
            call = {"id": _field(item, "call_id", param), "type": "function",
                    "function": {"name": _field(item, "name", param), "arguments": _field(item, "arguments", param)}}
            # One assistant turn in chat is its text and all its calls: Responses lists them as separate items.
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": _field(item, "call_id", param),
                             "content": _text(item.get("output"), f"{param}.output")})
        elif kind == "reasoning":
            continue  # another model's reasoning: chat templates drop earlier turns' reasoning anyway
        elif kind == "item_reference":
            raise ResponsesInputError(f"{param}.type", f"'{param}' is an item_reference: {_STATELESS}")
        else:
            raise ResponsesInputError(f"{param}.type", f"input item type {kind!r} at '{param}' is not supported: "
                                                       "the fleet takes message, function_call and "
                                                       "function_call_output items")
    return messages


def _field(item: dict, name: str, param: str) -> str:
    value = item.get(name)
    if not isinstance(value, str):
        raise ResponsesInputError(f"{param}.{name}", f"'{param}.{name}' is required and must be a string")
    return value


def _text(content: Any, param: str) -> str:
    """The text of a message's content (a string or a list of text parts); other parts are refused."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ResponsesInputError(param, f"'{param}' must be a string or a list of input_text parts")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _TEXT_PARTS:
            raise ResponsesInputError(f"{param}[{j}].type", f"content part type {kind!r} at '{param}[{j}]' is not "
                                                            "supported: the fleet's routes take text only "
                                                            "(input_text parts)")
        text = part.get("refusal" if kind == "refusal" else "text")
        if not isinstance(text, str):
            raise ResponsesInputError(f"{param}[{j}].text", f"'{param}[{j}].text' must be a string")
        texts.append(text)
    return "\n".join(texts)  # how vLLM itself joins a chat message's text parts


def _tools(tools: Any) -> list[dict]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise ResponsesInputError("tools", "'tools' must be a list of function tools")
    chat_tools = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise ResponsesInputError(f"tools[{i}].type", f"tool type {kind!r} at 'tools[{i}]' is not supported: the "
                                                          "fleet runs function tools only (your code runs them); "
                                                          "hosted tools (web_search, file_search, computer, mcp, "
                                                          "code_interpreter ...) are OpenAI's own")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise ResponsesInputError(f"tools[{i}].name", f"'tools[{i}].name' is required and must be a string")
        function = {"name": name}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        chat_tools.append({"type": "function", "function": function})
    return chat_tools


def _tool_choice(choice: Any, tools: list[dict]) -> tuple[Any, list[dict]]:
    """The chat tool_choice for Responses' ``choice``, and the tools it leaves offered."""
    names = [t["function"]["name"] for t in tools]
    if choice is None:
        return None, tools
    if choice in _TOOL_CHOICES:
        if choice == "required" and not tools:
            raise ResponsesInputError("tool_choice", "tool_choice 'required' needs at least one tool in 'tools'")
        return choice, tools
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function":
        if choice.get("name") not in names:
            raise ResponsesInputError("tool_choice.name", f"tool_choice names function {choice.get('name')!r}, "
                                                          f"which is not in 'tools' ({', '.join(names) or 'none'})")
        return {"type": "function", "function": {"name": choice["name"]}}, tools
    if kind == "allowed_tools":
        # Chat has no allowed-tools subset: offering only those tools means the same to the model.
        allowed = {t.get("name") for t in choice.get("tools") or [] if isinstance(t, dict)}
        mode = choice.get("mode", "auto")
        if mode not in ("auto", "required") or not allowed <= set(names):
            raise ResponsesInputError("tool_choice", "allowed_tools must name functions in 'tools', "
                                                     "with mode auto or required")
        return mode, [t for t in tools if t["function"]["name"] in allowed]
    if kind is None:
        raise ResponsesInputError("tool_choice", "tool_choice must be auto, none, required or "
                                                 "{\"type\": \"function\", \"name\": ...}")
    raise ResponsesInputError("tool_choice.type", f"tool_choice type {kind!r} is not supported: the fleet runs "
                                                  "function tools only")


def _response_format(text: Any) -> dict | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise ResponsesInputError("text", "'text' must be an object, e.g. {\"format\": {\"type\": \"text\"}}")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise ResponsesInputError("text.format.schema", "text.format json_schema needs 'schema' (a JSON schema)")
        schema = {"name": fmt.get("name") or "response", "schema": fmt["schema"]}
        for key in ("description", "strict"):
            if fmt.get(key) is not None:
                schema[key] = fmt[key]
        return {"type": "json_schema", "json_schema": schema}
    raise ResponsesInputError("text.format.type", f"text.format type {kind!r} is not supported: use text, "
                                                  "json_schema or json_object")


# --- answer: chat completion -> Response ---------------------------------------------------------


def response_from_chat(chat: dict, request: dict) -> dict:
    """The Responses ``Response`` object for a successful chat completion ``chat`` of Responses request ``request``.

    ``model`` is the request's (the route the client named, not the adapter that answered). A chat
    answer cut short (finish_reason length) is ``incomplete`` with reason max_output_tokens.
    """
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    finish = choice.get("finish_reason")
    status = "incomplete" if finish in _INCOMPLETE else "completed"
    output = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        output.append(_call_item(_new_id("fc"), call.get("id") or _new_id("call"), function.get("name") or "",
                                 function.get("arguments") or "", status))
    text = message.get("content")
    if text or not output:  # an empty answer is still one (empty) message
        output.insert(0, _message_item(_new_id("msg"), text or "", status))
    return _response(request, _new_id("resp"), chat.get("created") or int(time.time()), output,
                     finish=finish, usage=_usage(chat.get("usage")))


def _message_item(item_id: str, text: str, status: str) -> dict:
    return {"type": "message", "id": item_id, "role": "assistant", "status": status,
            "content": [_text_part(text)]}


def _text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def _usage(usage: dict | None) -> dict | None:
    if not usage:
        return None
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.get("total_tokens") or prompt + completion}


def _response(request: dict, response_id: str, created_at: int, output: list[dict], *, finish: str | None = None,
              usage: dict | None = None, status: str | None = None, error: dict | None = None) -> dict:
    """A Response object: what was produced, and the request's settings echoed as OpenAI echoes them."""
    if status is None:
        status = "incomplete" if finish in _INCOMPLETE else "completed"
    text = dict(request.get("text") or {})
    text.setdefault("format", {"type": "text"})
    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "model": request.get("model") or "", "output": output, "usage": usage, "error": error,
        "incomplete_details": {"reason": _INCOMPLETE[finish]} if status == "incomplete" else None,
        "instructions": request.get("instructions"), "tools": request.get("tools") or [],
        "tool_choice": request.get("tool_choice") or "auto",
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "temperature": request.get("temperature"), "top_p": request.get("top_p"),
        "max_output_tokens": request.get("max_output_tokens"), "text": text, "user": request.get("user"),
        "metadata": request.get("metadata") or {}, "previous_response_id": None, "reasoning": None,
        "truncation": "disabled", "background": False, "store": False,
    }


# --- streaming: chat.completion.chunk events -> Responses events ----------------------------------


def sse_event(event: dict) -> str:
    """One Responses server-sent event: its type as the SSE event name, the event as JSON data."""
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'), ensure_ascii=False)}\n\n"


class StreamTranslator:
    """Turns one streamed chat completion into the Responses events of one streamed Response.

    Feed it the chat stream's chunks (``feed`` for parsed ``chat.completion.chunk`` dicts, or
    ``feed_sse`` for the raw SSE text as it arrives), then call ``finish`` when the chat stream
    ends; each call returns the SSE strings (``sse_event``) to send on, possibly none. The events:
    ``response.created`` and ``response.in_progress`` first; per text answer ``output_item.added``,
    ``content_part.added``, ``output_text.delta``..., ``output_text.done``, ``content_part.done``,
    ``output_item.done``; per tool call ``output_item.added``, ``function_call_arguments.delta``...,
    ``.done``, ``output_item.done``; last ``response.completed`` (or ``response.incomplete``) with
    the whole Response, as ``response_from_chat`` would build it. An error in the chat stream
    (``{"error": {...}}``, or ``fail``) ends it with ``response.failed`` instead. After the last
    event every call returns nothing.
    """

    def __init__(self, request: dict):
        self._request = request
        self._id = _new_id("resp")
        self._created = int(time.time())
        self._seq = 0
        self._items: list[dict] = []  # output items, in output order, as they are so far
        self._open: list[int] = []  # output indexes of the items not done yet
        self._text: int | None = None  # output index of the message item taking text, while open
        self._calls: dict[int, int] = {}  # chat tool call index -> output index
        self._usage: dict | None = None
        self._finish: str | None = None
        self._started = self._ended = False
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._buffer = ""

    def start(self) -> list[str]:
        """``response.created`` and ``response.in_progress`` (sent by the first feed if not called)."""
        if self._started:
            return []
        self._started = True
        response = _response(self._request, self._id, self._created, [], status="in_progress")
        return [self._event("response.created", response=response),
                self._event("response.in_progress", response=response)]

    def feed(self, chunk: dict) -> list[str]:
        """The events for one parsed chat stream chunk (an error chunk ends the stream: ``fail``)."""
        events = self.start()
        if self._ended:
            return events
        if "error" in chunk:
            return events + self.fail(chunk["error"])
        if chunk.get("usage"):
            self._usage = _usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # chat_request never asks for n > 1
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events += self._text_delta(delta["content"])
            for call in delta.get("tool_calls") or []:
                events += self._call_delta(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return events

    def feed_sse(self, data: bytes | str) -> list[str]:
        """The events for a piece of the chat stream's raw SSE text; ``data: [DONE]`` finishes."""
        self._buffer += self._decoder.decode(data) if isinstance(data, bytes) else data
        *lines, self._buffer = self._buffer.split("\n")
        events: list[str] = []
        for line in lines:
            line = line.rstrip("\r")
            if not line.startswith("data:"):
                continue  # blank separators, comments, event names: chat streams carry everything in data
            payload = line[len("data:"):].strip()
            events += self.finish() if payload == "[DONE]" else self.feed(json.loads(payload))
        return events

    def finish(self) -> list[str]:
        """Close what is open; ``response.completed``, or ``response.incomplete`` if cut short."""
        events = self.start()
        if self._ended:
            return events
        if not self._items:  # an empty answer is still one (empty) message
            events += self._open_text()
        status = "incomplete" if self._finish in _INCOMPLETE else "completed"
        for index in list(self._open):
            events += self._close(index, status)
        self._ended = True
        response = _response(self._request, self._id, self._created, self._items, finish=self._finish,
                             usage=self._usage)
        return events + [self._event(f"response.{response['status']}", response=response)]

    def fail(self, error: dict | str) -> list[str]:
        """End the stream with ``response.failed``, carrying ``error``'s message (the chat error body's)."""
        events = self.start()
        if self._ended:
            return events
        self._ended = True
        for index in self._open:
            self._items[index]["status"] = "incomplete"
        message = error.get("message") if isinstance(error, dict) else str(error)
        code = error.get("code") if isinstance(error, dict) else None
        failure = {"code": "rate_limit_exceeded" if code in (429, "429", "rate_limit_exceeded") else "server_error",
                   "message": message or "the chat completion failed"}
        response = _response(self._request, self._id, self._created, self._items, status="failed", error=failure,
                             usage=self._usage)
        return events + [self._event("response.failed", response=response)]

    def _event(self, kind: str, **fields) -> str:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return sse_event(event)

    def _add(self, item: dict) -> tuple[int, str]:
        index = len(self._items)
        self._items.append(item)
        self._open.append(index)
        return index, self._event("response.output_item.added", output_index=index, item=item)

    def _open_text(self) -> list[str]:
        index, added = self._add({**_message_item(_new_id("msg"), "", "in_progress"), "content": []})
        self._text = index
        self._items[index]["content"].append(_text_part(""))
        return [added, self._event("response.content_part.added", item_id=self._items[index]["id"],
                                   output_index=index, content_index=0, part=_text_part(""))]

    def _text_delta(self, text: str) -> list[str]:
        events = self._open_text() if self._text is None else []
        item = self._items[self._text]
        item["content"][0]["text"] += text
        return events + [self._event("response.output_text.delta", item_id=item["id"], output_index=self._text,
                                     content_index=0, delta=text, logprobs=[])]

    def _call_delta(self, delta: dict) -> list[str]:
        events: list[str] = []
        function = delta.get("function") or {}
        number = delta.get("index", 0)
        if number not in self._calls:
            if self._text is not None:  # the text before a call is done when the call starts
                events += self._close(self._text, "completed")
            index, added = self._add(_call_item(_new_id("fc"), delta.get("id") or _new_id("call"),
                                                function.get("name") or "", "", "in_progress"))
            self._calls[number] = index
            events.append(added)
        index = self._calls[number]
        item = self._items[index]
        if function.get("name") and not item["name"]:
            item["name"] = function["name"]
        if function.get("arguments"):
            item["arguments"] += function["arguments"]
            events.append(self._event("response.function_call_arguments.delta", item_id=item["id"],
                                      output_index=index, delta=function["arguments"]))
        return events

    def _close(self, index: int, status: str) -> list[str]:
        item = self._items[index]
        self._open.remove(index)
        item["status"] = status
        if item["type"] == "message":
            self._text = None
            part = item["content"][0]
            events = [self._event("response.output_text.done", item_id=item["id"], output_index=index,
                                  content_index=0, text=part["text"], logprobs=[]),
                      self._event("response.content_part.done", item_id=item["id"], output_index=index,
                                  content_index=0, part=part)]
        else:
            events = [self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                                  name=item["name"], arguments=item["arguments"])]
        return events + [self._event("response.output_item.done", output_index=index, item=item)]

