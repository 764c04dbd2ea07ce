"""OpenAI-style errors: one builder for every error the fleet answers, and the failures behind them."""

from __future__ import annotations

from ray.exceptions import RayTaskError
from starlette.responses import JSONResponse


def error_response(status: int, message: str, *, type: str, code: str | None = None,
                   param: str | None = None) -> JSONResponse:
    """An OpenAI-style error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return JSONResponse(status_code=status, content={
        "error": {"message": message, "type": type, "param": param, "code": code or status}
    })


def refusal_response(refusal) -> JSONResponse:
    """A ``serving.policy.access.Refusal`` as an OpenAI-style error; 401s say how to authenticate."""
    response = error_response(refusal.status, refusal.message, type=refusal.type, code=refusal.code)
    if refusal.retry_after is not None:
        response.headers["Retry-After"] = str(refusal.retry_after)
    if refusal.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="slm-fleet"'
    return response


def openai_param(loc) -> str:
    """A pydantic error location in a request body, ``('body', 'tools', 0, 'function')``, as OpenAI names
    parameters: ``tools[0].function``."""
    path = ""
    for part in [p for p in loc if p != "body"]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path.lstrip(".")


def invalid_request(errors: list[dict], *, context: str = "") -> JSONResponse:
    """The 400 for pydantic ``errors`` of a request body, its first named by OpenAI parameter path."""
    errors = errors or [{"msg": "invalid request", "loc": ()}]
    first = errors[0]
    param = openai_param(first.get("loc", ()))
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return error_response(400, f"invalid request: {param or 'body'}: {first.get('msg')}{more}{context}",
                          type="invalid_request_error", param=param or None, code="invalid_parameter")


async def validation_error(request, exc) -> JSONResponse:
    """A request body that does not parse (FastAPI's RequestValidationError), named by its parameter."""
    return invalid_request(exc.errors())


async def client_error(request, exc) -> JSONResponse:
    """A request the request model itself refused (vLLM's VLLMValidationError, e.g. a tool_choice
    naming no offered tool), named by its parameter, instead of a 500."""
    message = exc.args[0] if exc.args else str(exc)
    return error_response(400, message, type="invalid_request_error", param=getattr(exc, "parameter", None),
                          code="invalid_parameter")


def root_cause(err: BaseException) -> BaseException:
    """The exception a Ray task raised, out of the RayTaskErrors wrapped around it on the way."""
    while isinstance(err, RayTaskError) and err.cause is not None:
        err = err.cause
    return err


class AdapterUnavailable(RuntimeError):
    """An adapter version could not be loaded on a replica; the message names it and why."""

    def __init__(self, adapter: str, version: str, cause: str):
        self.adapter, self.version, self.cause = adapter, version, cause
        super().__init__(f"adapter '{adapter}' version '{version}' cannot be loaded: {cause}")

    def __reduce__(self):  # crosses Ray process boundaries
        return (AdapterUnavailable, (self.adapter, self.version, self.cause))
