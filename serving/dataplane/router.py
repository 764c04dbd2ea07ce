"""The fleet router: the OpenAI-compatible ingress in front of the base-model deployments.

It builds on Ray Serve LLM's ``OpenAiIngress`` (request models, streaming, handle options for
multiplexed adapters, session propagation) and adds the fleet's part: a public route name is
resolved to a weighted, sticky target (``serving.policy.routing``, pure) whose multiplexed id is sent to
that base's deployment. The routing table lives in the deployment's ``user_config`` and is
replaced in place by ``reconfigure``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from fastapi import Request
from pydantic import ValidationError
from ray.serve.handle import DeploymentHandle
from starlette.responses import JSONResponse, Response, StreamingResponse
from vllm.exceptions import VLLMValidationError

from serving.api import headers as h
from serving.api.fleet import parse_fleet
from serving.api.problems import FleetSpecError
from serving.api.routes import TargetRef
from serving.dataplane.auth import GATE
from serving.dataplane.capture_config import TrafficCapture
from serving.dataplane.cascade_runner import CascadeRunner
from serving.dataplane.dispatch import DispatchFailed, dispatch, with_headers
from serving.dataplane.errors import client_error, error_response, invalid_request, refusal_response, root_cause
from serving.dataplane.mcp_tools import FleetMCP
from serving.dataplane.placement_router import set_spill_margins
from serving.dataplane.ray_serve_llm import IngressBase, ModelCard, OpenAIHTTPException
from serving.dataplane.request_guard import LIMITS
from serving.dataplane.request_models import ChatBody, CompletionBody
from serving.dataplane.responses_api import ResponsesInputError, StreamTranslator, chat_request, response_from_chat
from serving.dataplane.shadow_runner import ShadowRunner
from serving.dataplane.tenancy import CALLER, Admission, TenantGate, caller_of_scope
from serving.embedding.embedders import embedder
from serving.observability.metrics import Recorder
from serving.observability.telemetry import RequestTelemetry
from serving.policy.access import ANYONE, Refusal, route_refusal
from serving.policy.classify import Choice, TaskClassifier, prompt_text
from serving.policy.limits import estimate_tokens
from serving.policy.request_checks import RequestProblem, deadline, engine_problem, grammar_problem, tools_problem
from serving.policy.routing import RoutingTable, Target, UnknownRoute, UnknownVersion
from serving.render.serve_config import base_deployment_name

logger = logging.getLogger("ray.serve").getChild("slmfleet.router")

OWNER = "slm-fleet"


def served_by_headers(route: str, target: Target) -> dict[str, str]:
    headers = {h.ROUTE: route, h.BASE_MODEL: target.base_model}
    if target.adapter is not None:
        headers[h.ADAPTER] = target.adapter
        headers[h.VERSION] = target.version
    return headers


class FleetRouter(IngressBase):
    def __init__(self, llm_deployments: dict[str, DeploymentHandle]):
        cards = {name: ModelCard(id=name, object="model", owned_by=OWNER, permission=[], metadata={})
                 for name in llm_deployments}
        super().__init__(llm_deployments, cards)
        self._table: RoutingTable | None = None
        self._metrics = Recorder("router")
        self._shadows = ShadowRunner(self, self._metrics)
        self._cascades = CascadeRunner(self, self._metrics, self._shadows)
        self._classifiers: dict[str, TaskClassifier] = {}
        self._scale_to_zero: set[str] = set()
        self._mcp = FleetMCP(self._answer_mcp, visible=self._may_call)
        self._capture = TrafficCapture(self._metrics)
        self._gate = TenantGate(self._metrics)
        GATE.gate = self._gate  # the Authenticate middleware of this process reads it

    def reconfigure(self, user_config: dict) -> None:
        """Swap in a new routing table; a bad one is refused and the current one kept."""
        try:
            spec = parse_fleet(user_config.get("fleet"), source="router user_config")
        except FleetSpecError as err:
            if self._table is None:
                raise
            logger.error("refusing new routing config, keeping the current one: %s", err)
            return
        table = RoutingTable(spec, user_config.get("canaryWeights"), user_config.get("shadowing") or ())
        # Embedding the classes' examples (and loading the embedding model, once) takes seconds:
        # done here, before the new table takes requests.
        self._classifiers = {name: TaskClassifier(r, embedder) for name, r in table.classifies.items()}
        self._table = table
        self._capture.configure(spec)
        self._gate.configure(spec, keys_file=user_config.get("keysFile"),
                             internal_sha256=user_config.get("internalKeySha256"))
        LIMITS.max_bytes = spec.max_request_bytes
        set_spill_margins({b.name: b.placement.spill_margin for b in spec.base_models})
        self._scale_to_zero = {b.name for b in spec.base_models if b.autoscaling.min_replicas == 0}
        self._mcp.set_routes([(name, table.descriptions.get(name)) for name in table.names])
        logger.info("routing table: %d route(s): %s", len(spec.routes), ", ".join(self._table.routes))

    @property
    def table(self) -> RoutingTable:
        if self._table is None:  # only if deployed without the user_config serve_config renders
            raise OpenAIHTTPException(503, "the router has no routing config yet", type="service_unavailable")
        return self._table

    def _route_card(self, name: str) -> ModelCard:
        if name in self.table.cascades:
            metadata = {"policy": "cascade", "tiers": [t.describe() for t in self.table.cascades[name].tiers]}
        elif name in self.table.classifies:
            metadata = {"policy": "classify", "classes": [c.name for c in self.table.classifies[name].classes]}
        else:
            metadata = {"targets": [t.describe() for t in self.table.routes[name]]}
        if self.table.descriptions.get(name):
            metadata["description"] = self.table.descriptions[name]
        return ModelCard(id=name, object="model", owned_by=OWNER, permission=[], metadata=metadata)

    def _may_call(self, request, route: str) -> bool:
        """Whether the caller of ``request`` (None: an open fleet's anyone) may use ``route``."""
        caller = caller_of_scope(request.scope) if request is not None else ANYONE
        return caller.may_call(route) and (request is not None or self._gate.spec is None or self._gate.spec.open)

    async def models(self, request: Request):
        """The routes the caller may use (all of them on an open fleet)."""
        return {"object": "list", "data": [self._route_card(n).model_dump() for n in self.table.names
                                           if self._may_call(request, n)]}

    async def model_data(self, model: str, request: Request):
        if model not in self.table.names or not self._may_call(request, model):
            return error_response(404, str(UnknownRoute(model, self.table.names)),
                                  type="invalid_request_error", code="model_not_found", param="model")
        return self._route_card(model).model_dump()

    async def __del__(self):
        """Ray Serve calls it on a graceful shutdown: captured records still queued are written."""
        await self._capture.close()

    async def completions(self, body: CompletionBody, request: Request) -> Response:
        return await self._serve(body, request, "completions")

    async def chat(self, body: ChatBody, request: Request) -> Response:
        problem = chat_problem(body)
        if problem is not None:
            return error_response(400, problem.message, type="invalid_request_error", param=problem.param)
        return await self._serve(body, request, "chat")

    async def responses(self, request: Request) -> Response:
        """The OpenAI Responses API, answered through the chat path (``responses_api`` translates both ways)."""
        try:
            body = await request.json()
        except ValueError as err:
            return error_response(400, f"the request body is not JSON: {err}", type="invalid_request_error")
        if not isinstance(body, dict):
            return error_response(400, "the request body must be a JSON object", type="invalid_request_error")
        try:
            chat_body = ChatBody.model_validate(chat_request(body))
        except ResponsesInputError as err:
            return error_response(400, str(err), type="invalid_request_error", param=err.param)
        except VLLMValidationError as err:
            return await client_error(request, err)
        except ValidationError as err:
            return invalid_request(err.errors(), context=" (in the chat request the Responses input maps to)")
        answer = await self.chat(chat_body, request)
        if answer.status_code != 200:
            return answer  # an OpenAI error body: the Responses API's errors have the same shape
        headers = {k: v for k, v in answer.headers.items() if k.lower().startswith("x-")}
        if isinstance(answer, StreamingResponse):
            return StreamingResponse(_responses_events(answer.body_iterator, StreamTranslator(body)),
                                     media_type="text/event-stream", headers=headers)
        return JSONResponse(response_from_chat(json.loads(answer.body), body), headers=headers)

    async def mcp(self, request: Request) -> Response:
        """MCP over streamable HTTP: each route is a tool (``mcp_tools``); the MCP app answers the raw request."""
        return _ASGIAnswer(self._mcp.asgi_app, request)

    async def usage(self, request: Request) -> Response:
        """The caller's tenant's usage across the fleet: requests, tokens and estimated cost per route and who
        answered, and its budget."""
        report = await self._gate.usage(caller_of_scope(request.scope))
        return refusal_response(report) if isinstance(report, Refusal) else JSONResponse(report)

    async def _answer_mcp(self, route: str, arguments: dict, http_request: Request | None = None) -> dict:
        """One MCP tool call: a chat request to ``route``, answered with the text and who served it."""
        messages = arguments.get("messages") or [{"role": "user", "content": arguments["prompt"]}]
        body = {"model": route, "messages": messages}
        body.update({k: arguments[k] for k in ("max_tokens", "temperature") if k in arguments})
        try:
            chat_body = ChatBody.model_validate(body)
        except ValidationError as err:
            raise ValueError(f"invalid messages: {err.errors()[0].get('msg')}") from None
        except VLLMValidationError as err:
            raise ValueError(err.args[0] if err.args else str(err)) from None
        caller = caller_of_scope(http_request.scope) if http_request is not None else ANYONE
        request = Request({"type": "http", "method": "POST", "path": "/mcp", "headers": [], "query_string": b"",
                           "state": {CALLER: caller}})
        answer = await self.chat(chat_body, request)
        payload = json.loads(answer.body)
        if answer.status_code != 200:
            return {"error": payload.get("error") or {"message": f"HTTP {answer.status_code}"}}
        choice = (payload.get("choices") or [{}])[0]
        served_by = {k: v for k, v in answer.headers.items() if k.lower().startswith("x-slmfleet-")}
        return {"text": (choice.get("message") or {}).get("content") or "", "route": route, "served_by": served_by,
                "finish_reason": choice.get("finish_reason"), "usage": payload.get("usage")}

    async def _serve(self, body, request: Request, call_method: str) -> Response:
        """Answer a client's request on the route it names, if its caller may use that route now."""
        caller = caller_of_scope(request.scope)
        route = body.model
        refusal = route_refusal(caller, route, self.table.names, pins_version=bool(request.headers.get(h.VERSION)))
        if refusal is not None:
            self._gate.refused(caller, refusal.code)
            return refusal_response(refusal)
        seconds = deadline(request.headers.get(h.TIMEOUT), self.table.request_timeout_s)
        if isinstance(seconds, RequestProblem):
            return error_response(400, seconds.message, type="invalid_request_error", param=seconds.param,
                                  code="invalid_header")
        admission = await self._gate.admit(caller, route, estimate_tokens(request_chars(body), max_tokens_of(body)))
        if isinstance(admission, Refusal):
            return refusal_response(admission)
        loop = asyncio.get_running_loop()
        ends = loop.time() + seconds
        # The replica stops the generation by the same time: cancelling the call here would not reach it (Ray
        # Serve cancels a replica's call only when its own caller, the HTTP proxy, cancels).
        request = with_headers(request, {h.DEADLINE: f"{time.time() + seconds:.3f}"})
        try:
            # Past the deadline the answer is cancelled, and with it the request on the engine (Ray Serve cancels
            # the replica's call, which aborts the generation).
            async with asyncio.timeout(seconds):
                response = await self._answer(body, request, call_method, admission=admission)
        except TimeoutError:
            self._gate.settle(admission, status=504, answered_by="", prompt_tokens=0, completion_tokens=0, cost=0)
            logger.warning("route %s: no answer within its deadline of %g s", route, seconds)
            return error_response(504, f"route '{route}' gave no answer within the request's deadline of {seconds:g} s "
                                  "(the fleet's requestTimeout, or X-SLMFleet-Timeout); the generation was stopped",
                                  type="timeout", code="deadline_exceeded")
        if isinstance(response, StreamingResponse):
            response.body_iterator = _until(response.body_iterator, ends, route)
        return response

    async def _answer(self, body, request: Request, call_method: str, *, admission: Admission | None = None,
                      chosen: Target | None = None, via: str | None = None, cls: str | None = None) -> Response:
        """Answer ``body`` on its route; ``chosen`` is a target a classify route already picked, ``via`` the
        classify route that sent the request here, ``cls`` the class it picked (both for the capture record);
        ``admission`` is settled with the tokens used once the answer is finished."""
        route = body.model
        if chosen is None and route in self.table.cascades:
            capture = self._capture.request(route, "cascade", call_method, body, request, via=via, cls=cls)
            return await self._cascades.serve(self.table.cascades[route], body, request, call_method, capture,
                                              settle=self._settler(admission))
        if chosen is None and route in self._classifiers:
            return await self._classify(route, body, request, call_method, admission)
        stream = bool(getattr(body, "stream", False))
        telemetry = RequestTelemetry(self._metrics, route=route or "", call_method=call_method, stream=stream,
                                     headers=dict(request.headers))
        telemetry.on_finish = self._settler(admission)
        if route in self.table.names:
            telemetry.capture = self._capture.request(route, "classify" if chosen else "split", call_method, body,
                                                      request, via=via, cls=cls)
        client_wants_usage = bool(getattr(body, "stream_options", None) and body.stream_options.include_usage)
        sticky_key = body.user or request.headers.get(h.SESSION)
        try:
            target = chosen or self.table.resolve(route, sticky_key=sticky_key, version=request.headers.get(h.VERSION))
        except UnknownRoute as err:
            telemetry.unknown_route()
            return telemetry.answered(error_response(
                404, str(err), type="invalid_request_error", code="model_not_found", param="model"),
                client_wants_usage=client_wants_usage)
        except UnknownVersion as err:
            return telemetry.answered(error_response(
                404, str(err), type="invalid_request_error", code="version_not_found"),
                client_wants_usage=client_wants_usage)
        telemetry.target(target)
        if call_method == "chat":
            problem = engine_problem(tool_fields(body), route=route, base_model=target.base_model,
                                     engine=self.table.engines[target.base_model])
            if problem is not None:
                response = error_response(400, problem.message, type="invalid_request_error", param=problem.param)
                response.headers.update(served_by_headers(route, target))
                return telemetry.answered(response, client_wants_usage=client_wants_usage)
        update = {"model": target.model_id}
        if stream:  # token counts for the metrics; the extra chunk is dropped if not asked for
            update["stream_options"] = (body.stream_options or _stream_options()).model_copy(
                update={"include_usage": True})
        try:
            response = await dispatch(self, target, body.model_copy(update=update), call_method, request, telemetry)
        except DispatchFailed as err:
            grammar = grammar_problem(err.message, body.model_dump(
                include={"response_format", "structured_outputs"}, exclude_none=True)) if err.engine else None
            if grammar is not None:
                response = error_response(400, grammar.message, type="invalid_request_error", param=grammar.param)
            else:
                response = error_response(err.status, err.message if err.engine else
                                          f"route '{route}' failed: {err}" if err.status == 500 else
                                          f"route '{route}': {err}",
                                          type=err.type)
                if err.retry_after is not None:
                    response.headers["Retry-After"] = str(err.retry_after)
        response.headers.update(served_by_headers(route, target))
        answered = telemetry.answered(response, client_wants_usage=client_wants_usage)
        if chosen is None and route in self.table.shadows:
            self._shadows.after([route], body, call_method, _payload_of(answered))
        return answered

    def _settler(self, admission: Admission | None):
        """What the request's telemetry calls when its answer is finished: the tenant's usage, settled."""
        if admission is None or admission.caller.tenant is None:
            return None
        table = self.table

        def settle(telemetry: RequestTelemetry, status: int) -> None:
            prompt, completion = telemetry.input_tokens, telemetry.output_tokens
            cost = telemetry.cost
            if cost is None:
                cost = (prompt + completion) * table.cost_per_1k_tokens(telemetry.answering) / 1000 \
                    if telemetry.answering is not None else 0.0
            prompt += telemetry.escalated_tokens  # a cascade's tiers before the one that answered: billed too
            self._gate.settle(admission, status=status, answered_by=telemetry.answered_by or "", cost=cost,
                              prompt_tokens=prompt if status < 400 else 0,
                              completion_tokens=completion if status < 400 else 0)
        return settle

    def classified(self, route: str, body: dict):
        """The class (or the default) of classify route ``route`` for a request ``body``, counted."""
        return self._choose(route, body)[1]

    def _choose(self, route: str, body: dict) -> tuple[Choice, TargetRef]:
        choice = self._classifiers[route].classify(prompt_text(body))
        spec = self.table.classifies[route]
        ref = next(c for c in spec.classes if c.name == choice.cls) if choice.cls else spec.default
        self._metrics.inc("slmfleet_classifications_total", route=route, task=choice.cls or "default", how=choice.how)
        return choice, ref

    async def _classify(self, route: str, body, request: Request, call_method: str,
                        admission: Admission | None) -> Response:
        """Pick the route's class for the prompt, then answer as its target (or its route) would."""
        choice, ref = self._choose(route, body.model_dump(exclude_unset=True))
        if ref.route is not None:
            response = await self._answer(body.model_copy(update={"model": ref.route}), request, call_method,
                                          admission=admission, via=route, cls=choice.cls)
            response.headers[h.VIA_ROUTE] = ref.route
            response.headers[h.ROUTE] = route
        else:
            response = await self._answer(body, request, call_method, admission=admission,
                                          chosen=self.table.target_of(ref), cls=choice.cls)
        response.headers[h.CLASS] = choice.cls or "default"
        response.headers[h.CLASSIFIED_BY] = choice.how + (f" {choice.score:.2f}" if choice.score is not None
                                                                     else "")
        return response

    async def route_stats(self, name: str):
        """A cascade route's escalation rate and estimated savings, as counted by this router replica."""
        if name not in self.table.cascades:
            known = ", ".join(self.table.cascades) or "none"
            return error_response(404, f"'{name}' is not a cascade route of this fleet; cascade routes: {known}",
                                  type="invalid_request_error", code="model_not_found")
        return self._cascades.report(self.table.cascades[name])

    async def healthz(self):
        return {"status": "ok"}

    async def readyz(self):
        """Ready when a routing table is loaded and every base model's engine answers health checks.

        A base with minReplicas 0 that has no replica is ready ("scaled to zero"): its first request waits for
        one. It is not asked for its health then, which would be a request that starts a replica (and a probe
        every few seconds would keep it from ever scaling to zero)."""
        bases = {}
        idle = await asyncio.to_thread(_without_replicas, self._scale_to_zero) if self._scale_to_zero else set()
        for name, handle in self.base_deployments.items():
            if name in idle:
                bases[name] = "scaled to zero"
                continue
            try:
                await handle.check_health.remote()
                bases[name] = "ok"
            except Exception as err:  # noqa: BLE001 - reported, not raised
                bases[name] = f"unhealthy: {root_cause(err)}"
        ready = self._table is not None and all(v in ("ok", "scaled to zero") for v in bases.values())
        return JSONResponse(status_code=200 if ready else 503, content={"ready": ready, "baseModels": bases})


def _without_replicas(bases: set[str]) -> set[str]:
    """Those of ``bases`` whose deployment runs no replica now, as the Serve controller sees it."""
    from ray import serve

    app = serve.get_replica_context().app_name
    deployments = serve.status().applications[app].deployments
    return {b for b in bases if base_deployment_name(b) in deployments
            and deployments[base_deployment_name(b)].replica_states.get("RUNNING", 0) == 0}


class _ASGIAnswer(Response):
    """A response that hands the request to another ASGI app (the MCP server), which answers it itself."""

    def __init__(self, app, request: Request):
        self.app, self.request = app, request
        self.background = None

    async def __call__(self, scope, receive, send) -> None:
        await self.app(self.request.scope, self.request.receive, send)


async def _until(chunks, ends: float, route: str):
    """A stream's chunks until the request's deadline (loop time ``ends``); then an SSE error event ends it, and the
    stream below is closed (which cancels the generation)."""
    loop = asyncio.get_running_loop()
    iterator = chunks.__aiter__()
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(iterator.__anext__(), max(0.0, ends - loop.time()))
            except StopAsyncIteration:
                return
            except TimeoutError:
                error = {"message": f"route '{route}' did not finish within the request's deadline; the generation "
                                    "was stopped", "type": "timeout", "param": None, "code": "deadline_exceeded"}
                yield f"data: {json.dumps({'error': error})}\n\n"
                return
            yield chunk
    finally:
        if hasattr(iterator, "aclose"):
            await iterator.aclose()


async def _responses_events(chat_stream, translator: StreamTranslator):
    """The chat stream's SSE bytes as Responses events (``response.completed`` last)."""
    async for data in chat_stream:
        for event in translator.feed_sse(data):
            yield event
    for event in translator.finish():
        yield event


def _payload_of(response: Response) -> dict | None:
    """A whole JSON answer's body; None for an error or a stream (whose answer is not held: not shadowed)."""
    if response.status_code != 200 or isinstance(response, StreamingResponse):
        return None
    try:
        return json.loads(response.body)
    except ValueError:
        return None


def request_chars(body) -> int:
    """How long a request's prompt is, in characters (messages or prompt, and tools): to estimate its tokens."""
    length = 0
    for name in ("messages", "prompt", "tools", "input"):
        value = getattr(body, name, None)
        if value:
            length += len(value) if isinstance(value, str) else len(json.dumps(
                body.model_dump(include={name}, mode="json").get(name), default=str))
    return length


def max_tokens_of(body) -> int | None:
    return getattr(body, "max_completion_tokens", None) or getattr(body, "max_tokens", None)


def tool_fields(body) -> dict:
    """The parts of a chat request the tool and format checks read, as the client sent them."""
    return body.model_dump(include={"tools", "tool_choice", "response_format"}, exclude_none=True, by_alias=True)


def chat_problem(body) -> RequestProblem | None:
    """A chat request's tools or response_format schema that no engine could use (checked before routing)."""
    if not (getattr(body, "tools", None) or getattr(body, "response_format", None)):
        return None
    return tools_problem(tool_fields(body))


def _stream_options():
    from vllm.entrypoints.generate.base.protocol import StreamOptions

    return StreamOptions()


ENDPOINTS = {
    "models": lambda app: app.get("/v1/models"),
    "model_data": lambda app: app.get("/v1/models/{model:path}"),
    "completions": lambda app: app.post("/v1/completions"),
    "chat": lambda app: app.post("/v1/chat/completions"),
    "responses": lambda app: app.post("/v1/responses"),
    "mcp": lambda app: app.api_route("/mcp", methods=["GET", "POST", "DELETE"]),
    "route_stats": lambda app: app.get("/v1/fleet/routes/{name:path}/stats"),
    "usage": lambda app: app.get("/v1/fleet/usage"),
    "healthz": lambda app: app.get("/healthz"),
    "readyz": lambda app: app.get("/readyz"),
}
