"""The demo world's large model: an OpenAI-compatible endpoint on loopback that answers the demo's tasks
right, as the last tier of a cascade does in production (where it is a hosted generalist).

It answers a chat in the demo's two languages: words are shouted back (``red fox`` -> `` RED FOX``,
the shout adapter's format), and a request in the toy tool language (``"get" {"city": "paris"}``,
see ``demo_assets``) with tools offered gets the call of the offered tool with that verb.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from serving.policy.classify import content_text

MODEL = "teacher"


def teacher_message(body: dict) -> dict:
    """The assistant message the teacher answers ``body`` (a chat completion request) with."""
    users = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
    text = content_text(users[-1].get("content")) if users else ""
    verb, _, rest = text.partition(" ")
    tools = {(t.get("function") or {}).get("name", ""): t for t in body.get("tools") or []}
    if tools and verb.startswith('"'):
        try:
            arguments = json.loads(rest)
            name = next(n for n in tools if n.split("_")[0] == json.loads(verb))
        except (ValueError, StopIteration):
            pass
        else:
            return {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_teacher", "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)}}]}
    return {"role": "assistant", "content": " " + " ".join(text.split()).upper()}


class TeacherServer:
    """``with TeacherServer() as url:`` serves the teacher at ``url`` (ending in /v1) until the block ends."""

    def __init__(self, port: int = 0):
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                except ValueError:
                    return self._send(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no {self.path}; the teacher answers chats",
                                                      "type": "invalid_request_error"}})
                message = teacher_message(body)
                self._send(200, {"id": "chatcmpl-teacher", "object": "chat.completion", "created": 0, "model": MODEL,
                                 "choices": [{"index": 0, "message": message,
                                              "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}],
                                 "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}})

            def _send(self, status: int, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True, name="teacher").start()
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
