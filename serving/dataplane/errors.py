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
