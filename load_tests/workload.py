"""What the Locust scenarios send and how they judge answers: pure, no I/O, no Locust.

The locustfiles (``locustfile.py``, ``targets_change.py``) only wire these to HTTP; everything
here is covered by ``tests/unit/test_workload.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import json
import random
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

# Words for generated prompts: short, common, and inside the tiny demo model's vocabulary.
WORDS = ("red", "fox", "sun", "blue", "moon", "green", "river", "stone", "cold", "wind", "tree", "bird",
         "fast", "slow", "dark", "light", "rain", "snow", "fire", "sea")

ROUTE_MIXES = ("uniform", "zipf")
KINDS = ("chat", "completion")
# The targets_change scenario's weights for (first target, second target), in order, repeating.
WEIGHT_STEPS = ((100, 0), (50, 50), (0, 100), (50, 50))


class SettingsError(ValueError):
    """One or more SLMFLEET_* variables are invalid; the message names each of them."""


class StreamError(ValueError):
    """An SSE answer that is not a complete OpenAI stream."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """The workload of ``locustfile.py``, from the environment (see :func:`parse_settings`)."""

    routes: tuple[str, ...] | None
    """Routes to send to, in rank order for ``zipf``; None: the fleet's routes from GET /v1/models."""
    route_mix: str
    """``uniform`` (every route alike) or ``zipf`` (the n-th route gets a share proportional to 1/n^s)."""
    zipf_s: float
    """Exponent s of the Zipf mix."""
    chat_ratio: float
    """Share of requests sent to /v1/chat/completions; the rest go to /v1/completions."""
    stream_ratio: float
    """Share of requests with ``"stream": true``."""
    prompt_words: tuple[int, int]
    """(min, max) words per prompt, drawn uniformly."""
    max_tokens: int
    """``max_tokens`` of every request."""
    seed: int | None
    """Seed of each user's random choices (user n uses seed + n); None: unseeded."""


@dataclasses.dataclass(frozen=True)
class TargetsChangeSettings:
    """The workload of ``targets_change.py``: load on one route while its targets change."""

    fleet_file: str
    """The fleet file that ``slm-fleet serve`` watches; rewritten during the test, restored at its end."""
    route: str
    """The route under load whose targets change."""
    change_every: float
    """Seconds between two rewrites of the fleet file."""
    workload: Settings
    """Request mix (chat/stream ratios, prompt length, max_tokens); its routes are ``(route,)``."""


def parse_settings(env: Mapping[str, str]) -> Settings:
    """Settings from SLMFLEET_* variables, defaults for those unset.

    Raises SettingsError naming every invalid variable at once.
    """
    problems: list[str] = []
    settings = _workload(env, problems)
    _raise_for(problems)
    return settings


def parse_targets_change_settings(env: Mapping[str, str]) -> TargetsChangeSettings:
    """Settings of the targets_change scenario; SettingsError names every invalid variable.

    SLMFLEET_ROUTES and SLMFLEET_ROUTE_MIX do not apply: all load goes to SLMFLEET_ROUTE.
    """
    problems: list[str] = []
    fleet_file = env.get("SLMFLEET_FLEET_FILE", "").strip()
    if not fleet_file:
        problems.append("SLMFLEET_FLEET_FILE is not set: set it to the file that `slm-fleet serve FILE` watches")
    route = env.get("SLMFLEET_ROUTE", "shout").strip()
    if not route:
        problems.append("SLMFLEET_ROUTE is empty: name the route whose targets change")
    change_every = _number(env, "SLMFLEET_CHANGE_EVERY", "10", float, problems, low=0.5)
    workload = _workload({k: v for k, v in env.items() if k not in ("SLMFLEET_ROUTES", "SLMFLEET_ROUTE_MIX")},
                         problems)
    _raise_for(problems)
    return TargetsChangeSettings(fleet_file=fleet_file, route=route, change_every=change_every,
                                 workload=dataclasses.replace(workload, routes=(route,)))


def _workload(env: Mapping[str, str], problems: list[str]) -> Settings:
    routes = None
    if env.get("SLMFLEET_ROUTES", "").strip():
        routes = tuple(r.strip() for r in env["SLMFLEET_ROUTES"].split(",") if r.strip())
        if len(set(routes)) != len(routes):
            problems.append(f"SLMFLEET_ROUTES={env['SLMFLEET_ROUTES']!r} names a route twice")
    mix = env.get("SLMFLEET_ROUTE_MIX", "uniform").strip()
    if mix not in ROUTE_MIXES:
        problems.append(f"SLMFLEET_ROUTE_MIX={mix!r} is not one of: {', '.join(ROUTE_MIXES)}")
    seed = _number(env, "SLMFLEET_SEED", "", int, problems) if env.get("SLMFLEET_SEED", "").strip() else None
    return Settings(
        routes=routes, route_mix=mix,
        zipf_s=_number(env, "SLMFLEET_ZIPF_S", "1.1", float, problems, low=0.0),
        chat_ratio=_number(env, "SLMFLEET_CHAT_RATIO", "0.8", float, problems, low=0.0, high=1.0),
        stream_ratio=_number(env, "SLMFLEET_STREAM_RATIO", "0.5", float, problems, low=0.0, high=1.0),
        prompt_words=_word_range(env.get("SLMFLEET_PROMPT_WORDS", "3:12"), problems),
        max_tokens=_number(env, "SLMFLEET_MAX_TOKENS", "16", int, problems, low=1),
        seed=seed)


def _raise_for(problems: list[str]) -> None:
    if problems:
        raise SettingsError("invalid load test settings:\n  - " + "\n  - ".join(problems))


def _number(env, name, default, kind, problems, *, low=None, high=None):
    raw = env.get(name, "").strip() or default
    try:
        value = kind(raw)
    except ValueError:
        problems.append(f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}")
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        problems.append(f"{name}={raw!r} must be {bounds}")
    return value


def _word_range(raw: str, problems: list[str]) -> tuple[int, int] | None:
    try:
        low, high = (int(part) for part in raw.strip().split(":"))
    except ValueError:
        problems.append(f"SLMFLEET_PROMPT_WORDS={raw!r} is not min:max (two integers, e.g. 3:12)")
        return None
    if not 1 <= low <= high:
        problems.append(f"SLMFLEET_PROMPT_WORDS={raw!r} needs 1 <= min <= max")
    return low, high


def zipf_weights(n: int, s: float) -> list[float]:
    """Shares of ranks 1..n under Zipf's law with exponent ``s`` (proportional to 1/k^s); they sum to 1."""
    raw = [1 / k**s for k in range(1, n + 1)]
    total = sum(raw)
    return [w / total for w in raw]


class RoutePicker:
    """Picks the route of each request; the same ``rng`` seed gives the same sequence."""

    def __init__(self, routes: Sequence[str], *, mix: str, zipf_s: float = 1.1, rng: random.Random):
        if not routes:
            raise ValueError("no routes to send to")
        self.routes = tuple(routes)
        self.weights = zipf_weights(len(self.routes), zipf_s) if mix == "zipf" else [1.0] * len(self.routes)
        self._rng = rng

    def pick(self) -> str:
        return self._rng.choices(self.routes, weights=self.weights)[0]


@dataclasses.dataclass(frozen=True)
class PlannedRequest:
    """One request to send: where, what, and the name it is reported under."""

    route: str
    kind: str  # chat | completion
    stream: bool
    path: str
    body: dict

    @property
    def name(self) -> str:
        """Locust's name for it: bounded by kind x stream x route, never per prompt."""
        return request_name(self.kind, self.stream, self.route)

    @property
    def ttft_name(self) -> str:
        return request_name(self.kind, self.stream, self.route, ttft=True)


def request_name(kind: str, stream: bool, route: str, *, ttft: bool = False) -> str:
    """``chat:shout``, ``completion-stream:json``, ``chat-stream-ttft:shout`` (time to first chunk)."""
    return f"{kind}{'-stream' if stream else ''}{'-ttft' if ttft else ''}:{route}"


def prompt(rng: random.Random, words: tuple[int, int]) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(*words)))


def plan_request(settings: Settings, route: str, rng: random.Random) -> PlannedRequest:
    """The next request for ``route``: chat or completion, streaming or not, with a fresh prompt."""
    kind = "chat" if rng.random() < settings.chat_ratio else "completion"
    stream = rng.random() < settings.stream_ratio
    text = prompt(rng, settings.prompt_words)
    body: dict = {"model": route, "max_tokens": settings.max_tokens, "stream": stream}
    if kind == "chat":
        path = "/v1/chat/completions"
        body["messages"] = [{"role": "user", "content": text}]
    else:
        path = "/v1/completions"
        body["prompt"] = f"in: {text}\nout:"
    return PlannedRequest(route=route, kind=kind, stream=stream, path=path, body=body)


def answer_problem(body: object) -> str | None:
    """Why a (non-streaming) JSON answer is not an OpenAI completion; None when it is one."""
    if not isinstance(body, dict):
        return "answer is not a JSON object"
    if "error" in body:
        return f"answer is an error: {body['error']}"
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        return "answer has no choices"
    return None


def header_problem(headers: Mapping[str, str], route: str) -> str | None:
    """Why the served-by headers do not fit ``route``; None when they do."""
    got = headers.get("X-SLMFleet-Route")
    if got != route:
        return f"X-SLMFleet-Route is {got!r}, expected {route!r}"
    return None


def served_by(headers: Mapping[str, str]) -> str:
    """Who served an answer, from its headers: ``shout@v1`` or ``base tiny-llama``."""
    adapter = headers.get("X-SLMFleet-Adapter")
    if adapter:
        return f"{adapter}@{headers.get('X-SLMFleet-Version')}"
    return f"base {headers.get('X-SLMFleet-Base-Model')}"


class SSEStream:
    """Checks an OpenAI server-sent-event stream, one line at a time.

    Every event must be ``data: <JSON chunk with a choices list>``; the last one ``data: [DONE]``.
    :meth:`feed` returns the chunk a line carried (None for blank lines and comments) so the caller
    can time the first one; it and :meth:`finish` raise StreamError.
    """

    def __init__(self) -> None:
        self.chunks = 0
        self.done = False

    def feed(self, line: str | bytes) -> dict | None:
        if isinstance(line, bytes):
            line = line.decode("utf-8")
        line = line.rstrip("\r\n")
        if not line or line.startswith(":"):
            return None
        if self.done:
            raise StreamError(f"data after [DONE]: {line[:80]!r}")
        if not line.startswith("data:"):
            raise StreamError(f"not an SSE data line: {line[:80]!r}")
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return None
        try:
            chunk = json.loads(data)
        except ValueError:
            raise StreamError(f"chunk is not JSON: {data[:80]!r}") from None
        if isinstance(chunk, dict) and "error" in chunk:
            raise StreamError(f"stream carried an error: {chunk['error']}")
        if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
            raise StreamError(f"chunk has no choices list: {data[:80]!r}")
        self.chunks += 1
        return chunk

    def finish(self) -> None:
        """Call at the end of the body: raises StreamError unless chunks came and then [DONE]."""
        if not self.done:
            raise StreamError(f"stream ended without data: [DONE] (after {self.chunks} chunk(s))")
        if not self.chunks:
            raise StreamError("stream had no chunks before [DONE]")


def fleet_spec(doc: dict) -> dict:
    """The spec part of a fleet file's document: a ModelFleet manifest's ``spec``, or the bare spec."""
    return doc["spec"] if "kind" in doc or "apiVersion" in doc else doc


def alternate_targets(doc: dict, route: str) -> tuple[dict, dict]:
    """The two targets the targets_change scenario moves ``route``'s traffic between.

    The first is the route's first target. The second is another version of the same adapter
    where it has one, else the adapter's base model; for a base-model target, the last version of
    the first adapter on that base. Raises SettingsError (naming SLMFLEET_ROUTE) when there is none.
    """
    spec = fleet_spec(doc)
    routes = {r["name"]: r for r in spec.get("routes", [])}
    if route not in routes:
        raise SettingsError(f"SLMFLEET_ROUTE={route!r} is not a route of the fleet file; "
                            f"its routes: {', '.join(routes) or 'none'}")
    first = {k: v for k, v in routes[route]["targets"][0].items() if k != "weight"}
    adapters = spec.get("adapters", [])
    if "adapter" in first:
        adapter = next((a for a in adapters if a["name"] == first["adapter"]), None)
        if adapter is None:
            raise SettingsError(f"SLMFLEET_ROUTE={route!r}: its adapter {first['adapter']!r} is not in the fleet file")
        others = [v["version"] for v in adapter["versions"] if v["version"] != first["version"]]
        second = {"adapter": adapter["name"], "version": others[0]} if others else {"baseModel": adapter["baseModel"]}
    else:
        on_base = [a for a in adapters if a["baseModel"] == first["baseModel"] and a.get("versions")]
        if not on_base:
            raise SettingsError(f"SLMFLEET_ROUTE={route!r} serves base model {first['baseModel']!r}, which has no "
                                "adapter to move traffic to; pick a route with an adapter target")
        second = {"adapter": on_base[0]["name"], "version": on_base[0]["versions"][-1]["version"]}
    return first, second


def target_label(target: Mapping[str, str]) -> str:
    """The :func:`served_by` label of a route target from a fleet file."""
    if "adapter" in target:
        return f"{target['adapter']}@{target['version']}"
    return f"base {target['baseModel']}"


def with_route_targets(doc: dict, route: str, targets: Sequence[dict], weights: Sequence[int]) -> dict:
    """A copy of the fleet document with ``route``'s targets replaced by ``targets`` at ``weights``."""
    changed = copy.deepcopy(doc)
    for r in fleet_spec(changed)["routes"]:
        if r["name"] == route:
            r["targets"] = [{**t, "weight": w} for t, w in zip(targets, weights, strict=True)]
    return changed


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine: 127.0.0.0/8, ::1 or localhost."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
