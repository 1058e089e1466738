"""Serve any agentlab :class:`~agentlab.models.Model` as an OpenAI-compatible API.

``GET /v1/models`` and ``POST /v1/chat/completions`` (with ``tools=``, honoured by
the model, e.g. the local model's constrained decoding; ``stream: true`` returns
the whole reply as one SSE chunk). Run it with ``agentlab serve-model`` or::

    python -m agentlab.serve.model_server --model local:smollm2 --port 8000
"""

# No `from __future__ import annotations`: FastAPI must see the real `Request`
# class of the handlers defined inside create_app (fastapi is imported lazily).
import argparse
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from agentlab.errors import (
    MissingExtraError,
    ModelError,
    ModelUnavailableError,
    UnexpectedModelOutputError,
)
from agentlab.messages import AssistantMessage, ToolDefinition, from_openai
from agentlab.models import Model, ModelResponse, ModelSettings, infer_model

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["create_app", "serve"]


class _BadRequest(ValueError):
    """The request body is not a valid chat-completions request."""


def _error(status: int, message: str, kind: str, code: str | None = None) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(
        status_code=status,
        content={"error": {"message": message, "type": kind, "param": None, "code": code}},
    )


def _tools(body: dict[str, Any]) -> list[ToolDefinition]:
    if body.get("tool_choice") == "none":
        return []
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise _BadRequest("'tools' must be a list of {'type': 'function', 'function': {...}}.")
    out = []
    for i, t in enumerate(tools):
        function = t.get("function") if isinstance(t, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _BadRequest(
                f"tools[{i}] must be {{'type': 'function', 'function': "
                "{'name': ..., 'description': ..., 'parameters': {...}}}."
            )
        out.append(
            ToolDefinition(
                name=function["name"],
                description=function.get("description") or "",
                parameters=function.get("parameters") or {"type": "object", "properties": {}},
            )
        )
    return out


def _tool_choice(body: dict[str, Any]) -> str | None:
    """``tool_choice``: a mode, or ``{"type": "function", "function": {"name": ...}}``."""
    choice = body.get("tool_choice")
    if choice is None or isinstance(choice, str):
        return choice
    function = choice.get("function") if isinstance(choice, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise _BadRequest(
            "'tool_choice' must be 'auto', 'required', 'none' or "
            "{'type': 'function', 'function': {'name': ...}}."
        )
    return str(function["name"])


def _settings(body: dict[str, Any]) -> ModelSettings:
    try:
        return ModelSettings(
            temperature=body.get("temperature"),
            max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
            seed=body.get("seed"),
            tool_choice=_tool_choice(body),
        )
    except ValueError as e:
        raise _BadRequest(f"Invalid temperature, max_tokens, seed or tool_choice: {e}") from e


def _parse(body: Any) -> tuple[list[Any], list[ToolDefinition], ModelSettings]:
    if not isinstance(body, dict):
        raise _BadRequest("The request body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("'messages' must be a non-empty list of chat messages.")
    try:
        parsed = from_openai(messages)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise _BadRequest(f"Invalid 'messages': {e}") from e
    return parsed, _tools(body), _settings(body)


def _openai_message(message: AssistantMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    return out


def _completion(response: ModelResponse) -> dict[str, Any]:
    message = response.message
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": response.model_name,
        "choices": [
            {
                "index": 0,
                "message": _openai_message(message),
                "finish_reason": "tool_calls" if message.tool_calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": response.usage.input_tokens,
            "completion_tokens": response.usage.output_tokens,
            "total_tokens": response.usage.total_tokens,
        },
    }


def _chunks(completion: dict[str, Any]) -> Iterator[str]:
    """The completion as SSE chunks: one delta with everything, then the finish."""
    choice = completion["choices"][0]
    delta = dict(choice["message"])
    for i, call in enumerate(delta.get("tool_calls", ())):
        call["index"] = i
    base = {k: completion[k] for k in ("id", "created", "model")}
    base["object"] = "chat.completion.chunk"
    for chunk in (
        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {
            **base,
            "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}],
            "usage": completion["usage"],
        },
    ):
        yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"


def create_app(model: Model, *, api_key: str | None = None) -> "FastAPI":
    """A FastAPI app serving `model` as an OpenAI-compatible chat-completions API.

    With `api_key`, requests must send ``Authorization: Bearer <api_key>``.
    """
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import StreamingResponse
    except ImportError as e:
        raise MissingExtraError("fastapi", "serve") from e

    app = FastAPI(title=f"agentlab model server ({model.name})")

    @app.middleware("http")
    async def check_key(request: Request, call_next: Any) -> Any:
        if api_key is not None and not secrets.compare_digest(
            request.headers.get("authorization", ""), f"Bearer {api_key}"
        ):
            return _error(
                401,
                "Invalid or missing API key: send 'Authorization: Bearer "
                "<key>' with the key the server was started with.",
                "invalid_request_error",
                "invalid_api_key",
            )
        return await call_next(request)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": model.name, "object": "model", "created": 0, "owned_by": "agentlab"}],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        try:
            body = json.loads(await request.body())
            messages, tools, settings = _parse(body)
        except (ValueError, _BadRequest) as e:  # JSONDecodeError is a ValueError
            return _error(
                400,
                str(e)
                if isinstance(e, _BadRequest)
                else f"The request body is not valid JSON: {e}",
                "invalid_request_error",
            )
        try:
            response = await model.request(messages, tools, settings)
        except ModelUnavailableError as e:
            return _error(503, str(e), "server_error", "model_unavailable")
        except UnexpectedModelOutputError as e:
            return _error(500, str(e), "server_error", "unexpected_model_output")
        except ModelError as e:
            return _error(500, str(e), "server_error", "model_error")
        completion = _completion(response)
        if body.get("stream"):
            return StreamingResponse(_chunks(completion), media_type="text/event-stream")
        return completion

    return app


def serve(
    model: str = "local:smollm2",
    host: str = "127.0.0.1",
    port: int = 8000,
    threads: int = 1,
    api_key: str | None = None,
) -> None:
    """Serve `model` (a model string) over HTTP until interrupted."""
    try:
        import uvicorn
    except ImportError as e:
        raise MissingExtraError("uvicorn", "serve") from e
    kwargs = {"threads": threads} if model.partition(":")[0] == "local" else {}
    app = create_app(infer_model(model, **kwargs), api_key=api_key)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    """``python -m agentlab.serve.model_server``: the same as ``agentlab serve-model``."""
    parser = argparse.ArgumentParser(description="Serve a model as an OpenAI-compatible API.")
    parser.add_argument("--model", default="local:smollm2")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    args = parser.parse_args(argv)
    serve(
        model=args.model, host=args.host, port=args.port, threads=args.threads, api_key=args.api_key
    )


if __name__ == "__main__":
    main()
