"""A misbehaving OpenAI-compatible chat-completions server, for injecting faults into agents.

Standard library only: a :class:`http.server.ThreadingHTTPServer` on loopback, in a
daemon thread, so it starts in milliseconds and needs no extra::

    from agentlab.testing import FaultServer

    with FaultServer() as server:                  # a free port on 127.0.0.1
        server.set_mode("rate_limit", retry_after=1.5)
        ...  # point any OpenAI client at server.base_url
        assert server.requests == 1

Modes (see :data:`MODES` for every parameter and its default):

* ``ok`` - a tiny scripted model: while tools are offered and no tool result came back
  since the last user message, it calls the first offered tool with arguments generated
  from that tool's JSON schema; then it answers ``"Done: <last tool result>"``; without
  tools it echoes the last user message.
* ``rate_limit`` (``retry_after``) - 429 with a ``Retry-After`` header.
* ``server_error`` - 500. ``unavailable`` (``retry_after``) - 503.
* ``hang`` (``seconds``) - sends nothing for ``seconds``, then the ``ok`` reply; released
  at once (connection closed, no reply) when the server stops.
* ``malformed`` (``body``) - 200 whose body is not a usable completion.
* ``invalid_arguments`` (``kind``) - a tool call whose arguments are not JSON / break the schema.
* ``unknown_tool`` (``name``) - a tool call to a tool that was not offered.
* ``flapping`` (``fail``, ``every``, ``failure`` and the failure's own parameters) - of
  every ``every`` requests the first ``fail`` get ``failure``, the rest are ``ok``.

Run it as a separate process with ``python -m agentlab.testing.fault_server --port N``;
drive it with ``POST /_fault`` ``{"mode": ..., ...params}``, read it with ``GET /_fault``,
and zero the counters with ``POST /_fault/reset``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import signal
import socketserver
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NamedTuple, Self

from agentlab.errors import UserError

__all__ = ["MODES", "FaultServer", "RequestRecord", "main"]

JSONObject = dict[str, Any]

#: Every mode, with its parameters and their defaults.
MODES: dict[str, dict[str, Any]] = {
    "ok": {},
    "rate_limit": {"retry_after": 1.0},
    "server_error": {},
    "unavailable": {"retry_after": None},
    "hang": {"seconds": 30.0},
    "malformed": {"body": "truncated"},
    "invalid_arguments": {"kind": "json"},
    "unknown_tool": {"name": "no_such_tool"},
    "flapping": {"fail": 1, "every": 2, "failure": "server_error"},
}

_MALFORMED_BODIES = ("truncated", "html", "empty", "no_choices")
_INVALID_KINDS = ("json", "schema")
_FLAPPING_FAILURES = tuple(m for m in MODES if m not in ("ok", "flapping"))
_STATUS = {
    "ok": 200,
    "rate_limit": 429,
    "server_error": 500,
    "unavailable": 503,
    "hang": None,
    "malformed": 200,
    "invalid_arguments": 200,
    "unknown_tool": 200,
}
_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_MAX_BODY = 32 * 1024 * 1024
_DONE_CHARS = 200


class RequestRecord(NamedTuple):
    """One chat-completion request: when it came, what the server did, the status sent.

    ``mode`` is the behaviour applied (for ``flapping``, the failure or ``"ok"``), or
    ``"unauthorized"`` / ``"bad_request"`` for requests rejected before any fault.
    ``status`` is ``None`` for a ``hang`` that has not been answered (yet).
    """

    time: float
    mode: str
    status: int | None


def _number(mode: str, key: str, value: Any, *, optional: bool = False) -> float | None:
    """Check that `value` is a non-negative number (or None when `optional`)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        allowed = "a number >= 0" + (" or None" if optional else "")
        raise UserError(f"set_mode({mode!r}): {key} must be {allowed}, got {value!r}")
    return float(value)


def _check_params(mode: str, params: dict[str, Any]) -> JSONObject:
    """Validate `params` for `mode`; return them with the defaults filled in."""
    if mode not in MODES:
        raise UserError(f"unknown fault mode {mode!r}; choose one of: {', '.join(MODES)}")
    allowed = dict(MODES[mode])
    if mode == "flapping":
        failure = params.get("failure", allowed["failure"])
        if failure not in _FLAPPING_FAILURES:
            raise UserError(
                f"set_mode('flapping'): failure must be one of {', '.join(_FLAPPING_FAILURES)}, "
                f"got {failure!r}"
            )
        allowed.update(MODES[failure])
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        names = ", ".join(allowed) or "none"
        raise UserError(
            f"set_mode({mode!r}) got unknown parameter(s) {', '.join(unknown)}; "
            f"its parameters are: {names}"
        )
    out = {**allowed, **params}
    if "retry_after" in out:
        out["retry_after"] = _number(mode, "retry_after", out["retry_after"], optional=True)
    if "seconds" in out:
        out["seconds"] = _number(mode, "seconds", out["seconds"])
    if mode == "malformed" and out["body"] not in _MALFORMED_BODIES:
        raise UserError(
            f"set_mode('malformed'): body must be one of {', '.join(_MALFORMED_BODIES)}, "
            f"got {out['body']!r}"
        )
    if mode == "invalid_arguments" and out["kind"] not in _INVALID_KINDS:
        raise UserError(
            f"set_mode('invalid_arguments'): kind must be 'json' or 'schema', got {out['kind']!r}"
        )
    if mode == "unknown_tool" and not (isinstance(out["name"], str) and out["name"]):
        raise UserError(
            f"set_mode('unknown_tool'): name must be a non-empty string, got {out['name']!r}"
        )
    if mode == "flapping":
        fail, every = out["fail"], out["every"]
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (fail, every))
        if not ints or every < 1 or not 0 <= fail <= every:
            raise UserError(
                f"set_mode('flapping'): need integers 0 <= fail <= every and every >= 1, "
                f"got fail={fail!r}, every={every!r}"
            )
    return out


# ---------------------------------------------------------------------------------------
# Replies
# ---------------------------------------------------------------------------------------


def _error(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> JSONObject:
    """An OpenAI-style error body."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class _Reject(Exception):
    """Answer the current request with an error status and an OpenAI-style body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = _error(message, type_, code, param)
        self.headers = headers or {}


def _text(content: Any) -> str:
    """The text of a message's content: a string, a list of parts, or nothing."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else json.dumps(content)


def _resolve(schema: JSONObject, root: JSONObject) -> JSONObject:
    """Follow a local ``$ref`` (``#/$defs/X``) inside `root`."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    node: Any = root
    for part in ref[2:].split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _clamp(value: float, schema: JSONObject, step: float) -> float:
    """Move `value` inside the schema's minimum/maximum bounds."""
    if isinstance(schema.get("minimum"), int | float):
        value = max(value, schema["minimum"])
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        value = max(value, schema["exclusiveMinimum"] + step)
    if isinstance(schema.get("maximum"), int | float):
        value = min(value, schema["maximum"])
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        value = min(value, schema["exclusiveMaximum"] - step)
    return value


_FORMATS = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "00:00:00",
    "email": "x@example.com",
    "uri": "https://example.com",
    "uuid": "00000000-0000-0000-0000-000000000000",
}


def example_value(schema: Any, root: JSONObject | None = None, depth: int = 0) -> Any:
    """A value valid for a JSON schema: required properties only; "x", 1, 1.0, false,
    the first enum value, the const."""
    if not isinstance(schema, dict) or depth > 32:
        return None
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return example_value((non_null or options)[0], root, depth + 1)
    type_ = schema.get("type")
    if isinstance(type_, list):
        type_ = next((t for t in type_ if t != "null"), "null")
    if type_ is None:
        type_ = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if type_ == "string":
        if schema.get("format") in _FORMATS:
            return _FORMATS[schema["format"]]
        length = schema.get("minLength", 1)
        length = min(length, schema.get("maxLength", length))
        return "x" * int(length)
    if type_ == "integer":
        return int(_clamp(1, schema, 1))
    if type_ == "number":
        return float(_clamp(1.0, schema, 0.5))
    if type_ == "boolean":
        return False
    if type_ == "null":
        return None
    if type_ == "array":
        count = int(schema.get("minItems", 0))
        return [example_value(schema.get("items", {}), root, depth + 1) for _ in range(count)]
    properties = schema.get("properties") or {}
    return {
        name: example_value(properties.get(name, {"type": "string"}), root, depth + 1)
        for name in schema.get("required") or []
    }


def _schema_violation(parameters: JSONObject) -> JSONObject:
    """Valid-looking JSON arguments that break the schema: a required property is
    missing; else the first property has the wrong type; else an extra property."""
    args = example_value(parameters)
    args = args if isinstance(args, dict) else {}
    required = [n for n in parameters.get("required") or [] if n in args]
    if required:
        del args[required[0]]
        return args
    properties = parameters.get("properties") or {}
    if properties:
        name, schema = next(iter(properties.items()))
        value = example_value(schema, parameters)
        return {name: 1 if isinstance(value, str) else "not-a-valid-value"}
    return {"unexpected_argument": "x"}


def _tokens(chars: int) -> int:
    """Estimate tokens at 4 characters per token."""
    return max(1, math.ceil(chars / 4))


class _Request(NamedTuple):
    """A validated chat-completion request."""

    body: JSONObject
    model: str
    messages: list[JSONObject]
    tools: list[JSONObject]  # the "function" objects of the offered tools
    tool_choice: Any


def _validate(raw: bytes) -> _Request:
    """Parse and check a chat-completion body; raise :class:`_Reject` naming the problem."""
    if not raw:
        raise _Reject(400, "the request body is empty: send a JSON chat-completion request")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Reject(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _Reject(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _Reject(400, "'model' is required and must be a non-empty string", param="model")
    if body.get("stream"):
        raise _Reject(
            400,
            "stream=true is not supported by the fault server; send stream=false",
            param="stream",
            code="unsupported_value",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Reject(400, "'messages' must be a non-empty list", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise _Reject(
                400,
                f"messages[{i}] must be an object whose 'role' is one of {', '.join(_ROLES)}",
                param=f"messages[{i}]",
            )
    tools: list[JSONObject] = []
    raw_tools = body.get("tools")
    if raw_tools is not None:
        if not isinstance(raw_tools, list):
            raise _Reject(400, "'tools' must be a list", param="tools")
        for i, t in enumerate(raw_tools):
            fn = t.get("function") if isinstance(t, dict) else None
            if (
                not isinstance(t, dict)
                or t.get("type") != "function"
                or not isinstance(fn, dict)
                or not isinstance(fn.get("name"), str)
                or not fn["name"]
                or not isinstance(fn.get("parameters", {}), dict)
            ):
                raise _Reject(
                    400,
                    f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ..., "
                    "'parameters': {...}}}}",
                    param=f"tools[{i}]",
                )
            tools.append(fn)
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if name not in {t["name"] for t in tools}:
            raise _Reject(
                400,
                f"tool_choice names tool {name!r}, which is not in 'tools'",
                param="tool_choice",
            )
    elif choice not in (None, "auto", "none", "required"):
        raise _Reject(
            400,
            "tool_choice must be 'auto', 'none', 'required' or a named function",
            param="tool_choice",
        )
    return _Request(body, model, messages, tools, choice)


def _since_last_user(messages: list[JSONObject]) -> list[JSONObject]:
    """The messages after the last user message."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return messages[i + 1 :]
    return messages


def _pick_tool(req: _Request) -> JSONObject | None:
    """The tool the scripted model calls now, or None to answer with text."""
    if not req.tools or req.tool_choice == "none":
        return None
    if isinstance(req.tool_choice, dict):
        name = req.tool_choice["function"]["name"]
        return next(t for t in req.tools if t["name"] == name)
    answered = any(m.get("role") == "tool" for m in _since_last_user(req.messages))
    if answered and req.tool_choice != "required":
        return None
    return req.tools[0]


def _answer(req: _Request) -> str:
    """The scripted model's text answer."""
    results = [m for m in _since_last_user(req.messages) if m.get("role") == "tool"]
    if results:
        return "Done: " + _text(results[-1].get("content"))[:_DONE_CHARS]
    users = [m for m in req.messages if m.get("role") == "user"]
    return _text(users[-1].get("content")) if users else "Done."


def _completion(
    req: _Request, number: int, *, content: str | None = None, call: tuple[str, str] | None = None
) -> JSONObject:
    """An OpenAI chat.completion with either text `content` or one tool `call` (name, args)."""
    message: JSONObject = {"role": "assistant", "content": content, "refusal": None}
    if call is not None:
        message["tool_calls"] = [
            {
                "id": f"call_fault{number:06d}",
                "type": "function",
                "function": {"name": call[0], "arguments": call[1]},
            }
        ]
        completion_chars = len(call[0]) + len(call[1])
    else:
        completion_chars = len(content or "")
    prompt_chars = len(json.dumps(req.messages)) + (len(json.dumps(req.tools)) if req.tools else 0)
    prompt, completion = _tokens(prompt_chars), _tokens(completion_chars)
    return {
        "id": f"chatcmpl-fault{number:06d}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "system_fingerprint": "fp_agentlab_fault",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if call is not None else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _ok_reply(req: _Request, number: int) -> JSONObject:
    """The scripted model's reply: a tool call with schema-generated arguments, or text."""
    tool = _pick_tool(req)
    if tool is None:
        return _completion(req, number, content=_answer(req))
    args = example_value(tool.get("parameters") or {"type": "object", "properties": {}})
    return _completion(req, number, call=(tool["name"], json.dumps(args)))


# ---------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its :class:`FaultServer` and stays quiet."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], fault: FaultServer) -> None:
        self.fault = fault
        self.stopping = threading.Event()  # set by stop(): releases hung requests
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without the reverse DNS lookup HTTPServer does (it can take seconds)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that went away; report anything else (a bug here)."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Routes one request: /v1/chat/completions, /v1/models and the /_fault controls."""

    server: _HTTPServer
    server_version = "agentlab-fault-server"
    sys_version = ""
    timeout = 30  # socket timeout for reading a request / writing a reply

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log."""

    def do_GET(self) -> None:
        """Handle GET."""
        self._dispatch("GET")

    def do_POST(self) -> None:
        """Handle POST."""
        self._dispatch("POST")

    def do_PUT(self) -> None:
        """Handle PUT (always an error)."""
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        """Handle DELETE (always an error)."""
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        """Handle PATCH (always an error)."""
        self._dispatch("PATCH")

    # -- plumbing ------------------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: bytes | JSONObject,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            if self.headers.get("Transfer-Encoding"):
                raise _Reject(400, "chunked request bodies are not supported: send Content-Length")
            return b""
        try:
            size = int(length)
        except ValueError:
            raise _Reject(400, f"bad Content-Length header {length!r}") from None
        if not 0 <= size <= _MAX_BODY:
            raise _Reject(413, f"request body too large ({size} bytes)")
        return self.rfile.read(size)

    def _dispatch(self, method: str) -> None:
        try:
            self._route(method)
        except _Reject as exc:
            self._send(exc.status, exc.body, headers=exc.headers)
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away; nothing to answer
        except Exception as exc:  # a bug in the fault server: answer 500, keep serving
            body = _error(f"fault server bug: {type(exc).__name__}: {exc}", "server_error")
            with contextlib.suppress(OSError):
                self._send(500, body)

    def _route(self, method: str) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        routes = {
            "/v1/chat/completions": ("POST",),
            "/v1/models": ("GET",),
            "/_fault": ("GET", "POST"),
            "/_fault/reset": ("POST",),
        }
        # Read the body first: closing with unread data makes the client see a reset.
        raw = self._read_body() if method in ("POST", "PUT", "PATCH") else b""
        if path not in routes:
            raise _Reject(
                404,
                f"unknown path {path!r}: this server offers POST /v1/chat/completions, "
                "GET /v1/models, GET|POST /_fault and POST /_fault/reset",
                code="unknown_url",
            )
        if method not in routes[path]:
            raise _Reject(
                405,
                f"{method} is not allowed on {path}; use {' or '.join(routes[path])}",
                code="method_not_allowed",
                headers={"Allow": ", ".join(routes[path])},
            )
        fault = self.server.fault
        if path == "/_fault":
            if method == "POST":
                self._control(raw)
            self._send(200, fault.state())
        elif path == "/_fault/reset":
            fault.reset_counts()
            self._send(200, fault.state())
        elif path == "/v1/models":
            self._check_auth()
            self._send(200, fault.models())
        else:
            self._chat(raw)

    def _control(self, raw: bytes) -> None:
        try:
            body = json.loads(raw or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _Reject(400, f"the /_fault body is not valid JSON: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("mode"), str):
            raise _Reject(400, 'POST /_fault needs a JSON object like {"mode": "ok", ...params}')
        params = {k: v for k, v in body.items() if k != "mode"}
        try:
            self.server.fault.set_mode(body["mode"], **params)
        except UserError as exc:
            raise _Reject(400, str(exc), param="mode") from None

    def _check_auth(self) -> None:
        key = self.server.fault.api_key
        if key is not None and self.headers.get("Authorization") != f"Bearer {key}":
            raise _Reject(
                401,
                "Incorrect API key provided: send 'Authorization: Bearer <key>' with the "
                "fault server's api_key",
                code="invalid_api_key",
            )

    # -- chat completions ---------------------------------------------------------------

    def _chat(self, raw: bytes) -> None:
        fault = self.server.fault
        try:
            self._check_auth()
        except _Reject as exc:
            fault._record("unauthorized", exc.status)
            raise
        try:
            req = _validate(raw)
        except _Reject as exc:
            fault._record("bad_request", exc.status)
            raise
        fault._last_request = req.body
        mode, params, number, entry = fault._take()
        if mode == "hang":
            if self.server.stopping.wait(params["seconds"]):
                self.close_connection = True  # the server is stopping: drop the request
                return
            fault._answered(entry, 200)  # before the reply: the client may look at once
            self._send(200, _ok_reply(req, number))
        elif mode == "ok":
            self._send(200, _ok_reply(req, number))
        elif mode in ("rate_limit", "unavailable"):
            headers = {}
            if params["retry_after"] is not None:
                headers["Retry-After"] = f"{params['retry_after']:g}"
            if mode == "rate_limit":
                body = _error(
                    "Rate limit reached (injected by the fault server). Please retry after "
                    f"{params['retry_after']} s.",
                    "requests",
                    "rate_limit_exceeded",
                )
                self._send(429, body, headers=headers)
            else:
                body = _error(
                    "The server is overloaded or not ready yet (injected by the fault server).",
                    "server_error",
                    "service_unavailable",
                )
                self._send(503, body, headers=headers)
        elif mode == "server_error":
            body = _error(
                "The server had an error while processing your request (injected by the "
                "fault server).",
                "server_error",
                "internal_error",
            )
            self._send(500, body)
        elif mode == "malformed":
            self._malformed(req, number, params["body"])
        elif mode == "invalid_arguments":
            tool_name: str = req.tools[0]["name"] if req.tools else "tool"
            parameters: JSONObject = (req.tools[0].get("parameters") if req.tools else None) or {}
            if params["kind"] == "json":
                args = json.dumps(example_value(parameters) or {})[:-1]  # truncated JSON
            else:
                args = json.dumps(_schema_violation(parameters))
            self._send(200, _completion(req, number, call=(tool_name, args)))
        elif mode == "unknown_tool":
            offered = {t["name"] for t in req.tools}
            name = params["name"]
            while name in offered:
                name += "_unknown"
            self._send(200, _completion(req, number, call=(name, "{}")))
        else:  # pragma: no cover - _check_params rejects anything else
            raise AssertionError(mode)

    def _malformed(self, req: _Request, number: int, kind: str) -> None:
        if kind == "truncated":
            data = json.dumps(_ok_reply(req, number)).encode()
            self._send(200, data[: len(data) // 2])
        elif kind == "html":
            page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            self._send(200, page, content_type="text/html")
        elif kind == "empty":
            self._send(200, b"")
        else:  # no_choices: valid JSON, but not a usable completion
            reply = _ok_reply(req, number)
            reply["choices"] = []
            self._send(200, reply)


# ---------------------------------------------------------------------------------------
# The public object
# ---------------------------------------------------------------------------------------


class FaultServer:
    """An OpenAI-compatible chat-completions server on loopback that fails on demand.

    Args:
        port: The TCP port; ``None`` (or 0) picks a free one.
        host: The address to listen on (IPv4).
        mode: The initial mode (see :data:`MODES`); ``params`` are its parameters.
        api_key: When set, requests to ``/v1`` without ``Authorization: Bearer <key>``
            get 401.
        model_name: The model ``GET /v1/models`` lists (replies echo the request's model).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        mode: str = "ok",
        api_key: str | None = None,
        model_name: str = "fault-model",
        **params: Any,
    ) -> None:
        self.host = host
        self.api_key = api_key
        self.model_name = model_name
        self._requested_port = port or 0
        self._port: int | None = None
        self._lock = threading.Lock()
        self._mode = "ok"
        self._params: JSONObject = {}
        self._cycle = 0
        self._generation = 0
        self._numbered = 0
        self._log: list[RequestRecord] = []
        self._by_mode: Counter[str] = Counter()
        self._last_request: JSONObject | None = None
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.set_mode(mode, **params)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 5.0) -> Self:
        """Start serving in a daemon thread; return once the server answers."""
        if self._httpd is not None:
            raise UserError("this FaultServer is already running; stop() it first")
        httpd = _HTTPServer((self.host, self._requested_port), self)
        self._httpd, self._port = httpd, int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fault-server-{self._port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = http.client.HTTPConnection(self._connect_host, self._port, timeout=0.5)
                try:
                    conn.request("GET", "/_fault")
                    if conn.getresponse().status == 200:
                        return self
                finally:
                    conn.close()
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the fault server did not answer within {timeout} s")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving and close the socket; hung requests are dropped. Idempotent."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        httpd.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=1.0)
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        return self if self.running else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self.running else "stopped"
        return f"<FaultServer {where} mode={self.mode!r} requests={self.requests}>"

    # -- addresses -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._httpd is not None

    @property
    def port(self) -> int:
        """The TCP port (known once started, or when given)."""
        port = self._port or self._requested_port
        if not port:
            raise UserError("the port is picked when the server starts: call start() first")
        return port

    @property
    def _connect_host(self) -> str:
        return "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host

    @property
    def url(self) -> str:
        """The server's root URL, e.g. ``http://127.0.0.1:8123`` (controls live at /_fault)."""
        return f"http://{self._connect_host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. ``http://127.0.0.1:8123/v1``."""
        return f"{self.url}/v1"

    # -- mode ----------------------------------------------------------------------------

    def set_mode(self, mode: str, **params: Any) -> None:
        """Switch behaviour for the next requests (thread-safe); see :data:`MODES`."""
        checked = _check_params(mode, params)
        with self._lock:
            self._mode, self._params, self._cycle = mode, checked, 0

    @property
    def mode(self) -> str:
        """The current mode."""
        return self._mode

    @property
    def params(self) -> JSONObject:
        """The current mode's parameters, defaults included."""
        with self._lock:
            return dict(self._params)

    # -- counters ------------------------------------------------------------------------

    @property
    def requests(self) -> int:
        """Chat-completion requests received, rejected ones included."""
        with self._lock:
            return len(self._log)

    @property
    def requests_by_mode(self) -> dict[str, int]:
        """Requests per behaviour applied (see :class:`RequestRecord` for the keys)."""
        with self._lock:
            return dict(self._by_mode)

    @property
    def log(self) -> list[RequestRecord]:
        """Every chat-completion request as ``(time, mode, status)``, oldest first."""
        with self._lock:
            return list(self._log)

    @property
    def last_request(self) -> JSONObject | None:
        """The body of the last valid chat-completion request."""
        return self._last_request

    def reset_counts(self) -> None:
        """Zero the counters and the log, and restart the flapping cycle."""
        with self._lock:
            self._log.clear()
            self._by_mode.clear()
            self._cycle = 0
            self._generation += 1
            self._last_request = None

    def state(self) -> JSONObject:
        """Mode and counters, as ``GET /_fault`` returns them."""
        with self._lock:
            return {
                "mode": self._mode,
                "params": dict(self._params),
                "requests": len(self._log),
                "requests_by_mode": dict(self._by_mode),
                "log": [list(r) for r in self._log],
            }

    def models(self) -> JSONObject:
        """The ``GET /v1/models`` body."""
        return {
            "object": "list",
            "data": [
                {"id": self.model_name, "object": "model", "created": 0, "owned_by": "agentlab"}
            ],
        }

    # -- used by the handler -------------------------------------------------------------

    def _record(self, mode: str, status: int | None) -> tuple[int, int]:
        """Log one request; return (generation, index) to update its status later."""
        with self._lock:
            self._log.append(RequestRecord(time.time(), mode, status))
            self._by_mode[mode] += 1
            return self._generation, len(self._log) - 1

    def _take(self) -> tuple[str, JSONObject, int, tuple[int, int]]:
        """Pick the behaviour for one valid request and log it, atomically."""
        with self._lock:
            mode, params = self._mode, self._params
            if mode == "flapping":
                failing = self._cycle % params["every"] < params["fail"]
                self._cycle += 1
                if failing:
                    mode = params["failure"]
                    params = {k: params[k] for k in MODES[mode]}
                else:
                    mode, params = "ok", {}
            self._numbered += 1
            self._log.append(RequestRecord(time.time(), mode, _STATUS[mode]))
            self._by_mode[mode] += 1
            return mode, params, self._numbered, (self._generation, len(self._log) - 1)

    def _answered(self, entry: tuple[int, int], status: int) -> None:
        """Fill in the status of a request answered late (a hang)."""
        generation, index = entry
        with self._lock:
            if generation == self._generation and index < len(self._log):
                self._log[index] = self._log[index]._replace(status=status)


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


def _parse_param(text: str) -> tuple[str, Any]:
    """``key=value``: the value as JSON when it parses, else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> int:
    """Run a fault server until SIGTERM/SIGINT; print its base URL on one line."""
    parser = argparse.ArgumentParser(
        prog="python -m agentlab.testing.fault_server",
        description="A misbehaving OpenAI-compatible server. Drive it with POST /_fault.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--mode", default="ok", choices=list(MODES), help="initial mode")
    parser.add_argument(
        "--param",
        action="append",
        type=_parse_param,
        default=[],
        metavar="KEY=VALUE",
        help="a parameter of the mode, e.g. --param retry_after=1.5 (repeatable)",
    )
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    parser.add_argument("--model-name", default="fault-model", help="model GET /v1/models lists")
    args = parser.parse_args(argv)

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    try:
        server = FaultServer(
            args.port,
            host=args.host,
            mode=args.mode,
            api_key=args.api_key,
            model_name=args.model_name,
            **dict(args.param),
        ).start()
    except (UserError, OSError, RuntimeError) as exc:
        print(f"fault server: {exc}", file=sys.stderr)
        return 2
    print(server.base_url, flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
