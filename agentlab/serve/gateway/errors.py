"""One error envelope for every rejection, and error records in the trace store.

Every answer that is not a success has the body
``{"error": {"type": str, "message": str, "error_id": str | null}}``: validation
(422), unreadable JSON, 401/403/404/405/409/413/429/503, and 500s. A 500 (or a run
that crashed) never shows a traceback, a file path or an exception's text: those
go to the trace store under an ``error_id`` (uuid4 hex) that the answer returns,
and one log line names it. Read a record back with::

    SELECT detail FROM alerts WHERE id = '<error_id>'

(an error record is an ``alert`` row of kind ``server_error``, joined to its run
when there is one, so it also shows in the run inspector and ``agentlab alerts``).
"""

# No `from __future__ import annotations`: FastAPI must see the real classes of the
# handlers defined in install_error_handlers (fastapi is imported lazily).
import logging
import time
import traceback
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from agentlab.events import AlertEvent
from agentlab.tracing import get_writer

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ERROR_ALERT",
    "ERROR_RESPONSES",
    "ApiError",
    "ErrorMiddleware",
    "ErrorResponse",
    "error_body",
    "error_response",
    "install_error_handlers",
    "record_error",
    "record_failure",
]

log = logging.getLogger("agentlab.serve")

ERROR_ALERT = "server_error"
"""The ``alerts.alert`` of an error record."""

STATUS_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


STORE_RETRY_AFTER_S = 5
"""The ``Retry-After`` of a 503 answered while the shared store is unreachable."""


class ApiError(Exception):
    """A request answered with an error: `status`, a `type` (see ``STATUS_TYPES``),
    a `message` saying what was wrong and what to do, extra `headers`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        headers: dict[str, str] | None = None,
        error_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type or STATUS_TYPES.get(status, "error")
        self.message = message
        self.headers = headers or {}
        self.error_id = error_id


class ErrorDetail(BaseModel):
    """What went wrong: `type` (see ``STATUS_TYPES``), what to do, the error id."""

    model_config = ConfigDict(extra="forbid")

    type: str
    message: str
    error_id: str | None


class ErrorResponse(BaseModel):
    """The body of every rejection (documented in the OpenAPI schema)."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorResponse, "description": "Refused: the error envelope."},
    "5XX": {"model": ErrorResponse, "description": "Failed or full: the error envelope."},
}
"""``responses=`` of a router: every route documents the envelope (and FastAPI's own
``{"detail": ...}`` 422 schema, which this gateway never answers, is left out)."""


def error_body(type: str, message: str, error_id: str | None = None) -> dict[str, Any]:
    """The envelope every rejection's body is."""
    return {"error": {"type": type, "message": message, "error_id": error_id}}


def error_response(error: ApiError) -> Any:
    """`error` as a JSON response in the envelope."""
    from fastapi.responses import JSONResponse

    return JSONResponse(
        status_code=error.status,
        content=error_body(error.type, error.message, error.error_id),
        headers=error.headers,
    )


def record_error(
    workspace: Path | None, exc: BaseException, *, where: str, run_id: str = ""
) -> str:
    """Record `exc` (type, message, traceback) in the trace store of `workspace`;
    log one line; return the new error id. Never raises."""
    detail = {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }
    return _record(workspace, where, run_id, detail)


def record_failure(
    workspace: Path | None, run_id: str, failure: dict[str, Any] | None, explanation: str | None
) -> str:
    """Record why run `run_id` failed (its failure record and full explanation, which
    may quote an exception) under a new error id; return it. Never raises."""
    detail = {**(failure or {}), "type": (failure or {}).get("error"), "message": explanation}
    return _record(workspace, f"run {run_id}", run_id, detail)


def _record(workspace: Path | None, where: str, run_id: str, detail: dict[str, Any]) -> str:
    error_id = uuid.uuid4().hex
    try:
        get_writer(workspace).emit(
            AlertEvent(
                id=error_id,
                run_id=run_id,
                step=0,
                alert=ERROR_ALERT,
                message=f"{detail.get('type') or 'error'} in {where}",
                detail={"error_id": error_id, "where": where, **detail},
                started_at=time.time(),
            )
        )
        stored = "details in the trace store"
    except Exception as store_error:  # the answer must still go out
        stored = f"NOT recorded: {type(store_error).__name__}"
    log.error("error %s: %s in %s; %s", error_id, detail.get("type") or "error", where, stored)
    return error_id


RUN_EXAMPLE = '{"input": "your question", "metadata": {}}'


def _validation_message(errors: Any, path: str) -> str:
    parts = []
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "invalid JSON")
            parts = [f"the body is not valid JSON ({reason})"]
            break
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        parts.append(f"{'.'.join(loc) or 'body'}: {error.get('msg', 'invalid')}")
    example = f" Send a JSON object like {RUN_EXAMPLE}." if path.endswith("/runs") else ""
    return "Invalid request: " + "; ".join(parts) + "." + example


def _http_message(status: int, detail: Any, method: str, path: str) -> str:
    if status == 404:
        return f"No such route or resource: {method} {path}. See /docs for the routes."
    if status == 405:
        return f"{method} is not allowed on {path}. See /docs for the routes."
    return str(detail) if isinstance(detail, str) else STATUS_TYPES.get(status, "error")


def install_error_handlers(app: "FastAPI", workspace: Path | None) -> None:
    """Answer every rejection of `app` in the envelope; record 500s in the trace
    store of `workspace` (None: the default workspace)."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Any:
        return error_response(ApiError(422, _validation_message(exc.errors(), request.url.path)))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Any:
        message = _http_message(exc.status_code, exc.detail, request.method, request.url.path)
        return error_response(ApiError(exc.status_code, message, headers=dict(exc.headers or {})))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Any:
        return error_response(exc)

    app.add_middleware(ErrorMiddleware, workspace=workspace)


class ErrorMiddleware:
    """Any exception that reaches it becomes a 500 in the envelope with an error
    id (details in the trace store); the error id is also put in
    ``scope["state"]["error_id"]`` for the request's usage record. Unlike an
    exception handler for ``Exception``, nothing is re-raised to the server, so
    the one log line is the only one."""

    def __init__(self, app: "ASGIApp", workspace: Path | None) -> None:
        self.app = app
        self.workspace = workspace

    async def __call__(self, scope: "Scope", receive: "Receive", send: "Send") -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: "Message") -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            where = f"{scope.get('method', '')} {scope.get('path', '')}"
            error_id = record_error(self.workspace, exc, where=where)
            scope.setdefault("state", {})["error_id"] = error_id
            if started:  # the answer is under way: nothing more can be said
                return
            response = error_response(_server_error(exc, error_id))
            await response(scope, receive, send)


def _server_error(exc: Exception, error_id: str) -> ApiError:
    """A 503 when the shared store (Redis) cannot be reached or answers too late:
    the client may retry; any other failure is a 500."""
    if _store_unreachable(exc):
        return ApiError(
            503,
            "The gateway cannot reach its shared store (Redis) right now, so it cannot "
            f"check this request's key and limits; retry in a few seconds (error id "
            f"{error_id}).",
            error_id=error_id,
            headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
        )
    return ApiError(
        500,
        "The server failed on this request; its details are recorded under "
        f"error id {error_id} (give it to the operator).",
        error_id=error_id,
    )


def _store_unreachable(exc: BaseException) -> bool:
    try:
        from redis.exceptions import ConnectionError as RedisDown
        from redis.exceptions import TimeoutError as RedisLate
    except ImportError:  # no redis extra: no Redis to be unreachable
        return False
    return isinstance(exc, RedisDown | RedisLate)
