"""The demo's own requests: one that fails is a row of the table, never an exception that takes the demo (and
the fleet it serves) down. Against a small OpenAI-shaped server on loopback that fails one route."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from serving.api.fleet import parse_fleet
from serving.local.demo import DEMO_PROMPTS, ask_every_route
from tests.unit.fleets import fleet


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if body["model"] == "json":  # an engine killed under it, say
            status, payload = 500, {"error": {"message": "EngineDeadError", "type": "internal_error", "code": 500}}
        else:
            status, payload = 200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                    "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                        "role": "assistant", "content": " RED FOX "}}]}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-slmfleet-base-model", "tiny-llama")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_a_failed_demo_request_is_a_row_not_a_crash():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        rows = ask_every_route(parse_fleet(fleet()), f"http://127.0.0.1:{server.server_port}/v1")
    finally:
        server.shutdown()
    by_route = {}
    for route, served, _prompt, answer in rows:
        by_route.setdefault(route, []).append((served, answer))
    assert len(rows) == 3 * len(DEMO_PROMPTS)
    assert all(answer.startswith("failed: ") and "EngineDeadError" in answer for _, answer in by_route["json"])
    assert by_route["shout"][0] == ("base tiny-llama", "RED FOX")
