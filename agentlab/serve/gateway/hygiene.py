"""Request hygiene: a body-size limit enforced while the body streams in, strict
JSON, an input-length limit and a cap on the runs one worker takes at once.

Decisions:

* The body limit answers 413 from the ``Content-Length`` header before reading
  anything, and otherwise counts the bytes as they arrive (chunked bodies): no
  body larger than the limit is ever held in memory.
* JSON is parsed strictly: ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON,
  though Python's parser takes them and they silently become ``null`` on the
  way out) and duplicate keys in one object (which one wins is parser-dependent)
  are 422s.
* The run cap answers 503 with ``Retry-After`` at once when every slot is taken,
  with no queue by default: a queue only moves the wait from the client into
  the server, where the client can no longer decide to go elsewhere; see
  :class:`RunSlots` and the report for the measurement behind it.
"""

# No `from __future__ import annotations`: FastAPI must see the real classes.
import asyncio
import functools
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from agentlab.serve.gateway.errors import ApiError, error_response

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "BodyLimitMiddleware",
    "RunSlots",
    "check_input",
    "strict_json_loads",
    "strict_json_route",
]


class _BodyTooLarge(Exception):
    """Raised out of ``receive`` once the body passed the limit."""


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"The request body is larger than this server's limit of {limit:,} bytes "
        "(max_body_bytes). Send a smaller body.",
    )


class BodyLimitMiddleware:
    """413 for a body over `max_bytes`: from ``Content-Length`` before anything is
    read, or as soon as the streamed bytes pass the limit."""

    def __init__(self, app: "ASGIApp", max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: "Scope", receive: "Receive", send: "Send") -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await error_response(_too_large(self.max_bytes))(scope, receive, send)
            return
        seen = 0
        exceeded = started = False
        refusal = error_response(_too_large(self.max_bytes))

        async def counted() -> "Message":
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def tracked(message: "Message") -> None:
            nonlocal started
            if exceeded:  # the app caught the error and answered: answer 413 instead
                if not started and message["type"] == "http.response.start":
                    started = True
                    await refusal(scope, receive, send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _BodyTooLarge:
            if not started:
                await refusal(scope, receive, send)


def _content_length(scope: "Scope") -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class _StrictJSONError(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _StrictJSONError(f"{name} is not a JSON number; send a finite number or null")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _StrictJSONError(f"the key {dup!r} appears twice in one object")
    return obj


def _reject_huge(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _StrictJSONError(f"the number {text[:20]} is too large for a double")
    return value


def strict_json_loads(data: bytes | str) -> Any:
    """Parse JSON, refusing NaN/Infinity, numbers that overflow, duplicate keys and
    nesting past the interpreter's recursion limit (raises :class:`json.JSONDecodeError`)."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    try:
        return json.loads(
            text,
            parse_constant=_reject_constant,
            object_pairs_hook=_no_duplicates,
            parse_float=_reject_huge,
        )
    except _StrictJSONError as exc:
        raise json.JSONDecodeError(str(exc), text, 0) from None
    except RecursionError:
        raise json.JSONDecodeError("the JSON nests too deeply; flatten it", text, 0) from None
    except json.JSONDecodeError:
        raise
    except ValueError:  # an integer past Python's digit limit
        raise json.JSONDecodeError("a number has too many digits", text, 0) from None


@functools.cache
def strict_json_route(guard: Callable[[Any], Awaitable[None]] | None = None) -> type:
    """The FastAPI route class whose JSON bodies are parsed by :func:`strict_json_loads`
    (pass it as ``APIRouter(route_class=...)``; fastapi is imported on first call);
    `guard(request)`, when given, runs before the body is read and may raise."""
    from fastapi import Request
    from fastapi.routing import APIRoute

    class StrictJSONRequest(Request):
        async def json(self) -> Any:
            if not hasattr(self, "_json"):
                body = await self.body()
                try:
                    self._json = strict_json_loads(body)
                except UnicodeDecodeError as exc:
                    raise json.JSONDecodeError("the body is not UTF-8", "", exc.start) from None
            return self._json

    class StrictJSONRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Any], Coroutine[Any, Any, Any]]:
            handler = super().get_route_handler()

            async def strict(request: Request) -> Any:
                if guard is not None:
                    await guard(request)
                return await handler(StrictJSONRequest(request.scope, request.receive))

            return strict

    return StrictJSONRoute


def check_input(text: str, max_chars: int) -> None:
    """413 when `text` (a run's input) is longer than `max_chars`."""
    if len(text) > max_chars:
        raise ApiError(
            413,
            f"The input is {len(text):,} characters; this server takes at most "
            f"{max_chars:,} (max_input_chars). Send a shorter input.",
        )


class RunSlots:
    """At most `limit` runs at once in this worker; `queue` more may wait up to
    `queue_timeout_s` for a slot; past that, 503 with ``Retry-After``."""

    def __init__(self, limit: int, *, queue: int = 0, queue_timeout_s: float = 1.0) -> None:
        self.limit = limit
        self.queue = queue
        self.queue_timeout_s = queue_timeout_s
        self.running = 0
        self._waiting = 0
        self._free = asyncio.Condition()

    def _full(self) -> ApiError:
        return ApiError(
            503,
            f"This server is running its maximum of {self.limit} runs at once "
            "(max_concurrent_runs per worker). Try again in a moment.",
            headers={"Retry-After": "1"},
        )

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the body of the ``async with``."""
        if self.running >= self.limit:
            if self._waiting >= self.queue:
                raise self._full()
            self._waiting += 1
            try:
                async with self._free:
                    await asyncio.wait_for(
                        self._free.wait_for(lambda: self.running < self.limit),
                        self.queue_timeout_s,
                    )
            except TimeoutError:
                raise self._full() from None
            finally:
                self._waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            if self._waiting:
                async with self._free:
                    self._free.notify()
