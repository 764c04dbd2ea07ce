"""A Serve application that answers every completion at once with a canned body, no engine behind it.

The path benchmark (load_tests/bench/path.py) times it to split what Ray Serve's HTTP proxy and one replica
cost from what the handle call to the engine's replica costs.
"""

from __future__ import annotations

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

CANNED = {"id": "cmpl-echo", "object": "text_completion", "model": "echo",
          "choices": [{"index": 0, "text": " x", "finish_reason": "length", "logprobs": None}],
          "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


@serve.deployment(name="Echo", max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
class Echo:
    async def __call__(self, request: Request) -> JSONResponse:
        await request.body()  # read it, as every real ingress does
        return JSONResponse(CANNED)


app = Echo.bind()
