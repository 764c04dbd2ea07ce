"""The Locust user both scenarios share: sends one planned OpenAI request and judges the answer.

A request counts as failed unless it is HTTP 200, carries ``X-SLMFleet-Route`` equal to its route,
and is a valid OpenAI answer: a JSON body with choices, or an SSE stream of chunks that ends with
``data: [DONE]``. A streaming request is timed to its last byte; its time to first chunk is
reported again under its own name (``chat-stream-ttft:shout``).
"""

from __future__ import annotations

import itertools
import os
import random
import time
from collections.abc import Mapping

import requests
from locust import HttpUser, constant
from workload import PlannedRequest, Settings, SSEStream, StreamError, answer_problem, header_problem, served_by

# A request that has not finished by then has failed; it also bounds how long a run can hang.
REQUEST_TIMEOUT_S = 120

_user_numbers = itertools.count()


class ResponseProblem(Exception):
    pass


class FleetUser(HttpUser):
    """A closed-loop user: it sends its next request as soon as the previous one is answered."""

    abstract = True
    wait_time = constant(0)

    def on_start(self):
        key = os.environ.get("SLMFLEET_API_KEY")
        if key:  # a fleet with tenants: every request carries the tenant's key
            self.client.headers["Authorization"] = f"Bearer {key}"

    def user_rng(self, settings: Settings) -> random.Random:
        """This user's random source: user n of a run with SLMFLEET_SEED=s uses seed s + n."""
        n = next(_user_numbers)
        return random.Random(settings.seed + n) if settings.seed is not None else random.Random()

    def send(self, planned: PlannedRequest, *, name_by_served: bool = False) -> Mapping[str, str] | None:
        """Send ``planned`` and report it to Locust; the answer's headers if it succeeded, else None.

        ``name_by_served``: report it as ``<name>@<who served it>`` (``completion:shout@shout@v2``).
        """
        started = time.perf_counter()
        with self.client.post(planned.path, json=planned.body, name=planned.name, stream=planned.stream,
                              catch_response=True, timeout=REQUEST_TIMEOUT_S) as resp:
            if name_by_served:
                resp.request_meta["name"] = f"{planned.name}@{served_by(resp.headers)}"
            try:
                if resp.status_code != 200:
                    raise ResponseProblem(f"HTTP {resp.status_code}: {resp.text[:200]}")
                problem = header_problem(resp.headers, planned.route)
                if problem:
                    raise ResponseProblem(problem)
                if planned.stream:
                    size = self._read_stream(resp, planned, started)
                    # Locust timed a streaming request to its headers; report it to its last byte.
                    resp.request_meta["response_time"] = (time.perf_counter() - started) * 1000
                    resp.request_meta["response_length"] = size
                else:
                    problem = answer_problem(resp.json())
                    if problem:
                        raise ResponseProblem(problem)
            except (ResponseProblem, StreamError) as err:
                resp.failure(str(err))
                return None
            except (ValueError, requests.RequestException) as err:  # a body that is not JSON, a stream cut short
                resp.failure(f"{type(err).__name__}: {err}")
                return None
            resp.success()
            return resp.headers

    def _read_stream(self, resp, planned: PlannedRequest, started: float) -> int:
        stream, size = SSEStream(), 0
        # chunk_size=None: lines as the server flushes them, so the first chunk is timed when it arrives.
        for line in resp.iter_lines(chunk_size=None):
            size += len(line) + 1
            if stream.feed(line) is not None and stream.chunks == 1:
                self.environment.events.request.fire(
                    request_type="TTFT", name=planned.ttft_name, response_time=(time.perf_counter() - started) * 1000,
                    response_length=0, exception=None, context={})
        stream.finish()
        return size
