"""Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama, llama.cpp
servers, LiteLLM, ``agentlab serve-model``) through the official ``openai`` SDK."""

from __future__ import annotations

import asyncio
import email.utils
import os
import re
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agentlab.errors import (
    MalformedResponseError,
    MissingExtraError,
    ModelAuthError,
    ModelError,
    ModelRequestError,
    ModelUnavailableError,
    UserError,
)
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, to_openai
from agentlab.models.base import (
    TOOL_CHOICES,
    Model,
    ModelResponse,
    ModelSettings,
    check_allow_model_requests,
    forced_tools,
)
from agentlab.redact import register_secret
from agentlab.usage import Usage

if TYPE_CHECKING:
    import openai

__all__ = ["OpenAIModel"]

_PLACEHOLDER_KEY = "not-needed"
_DEFAULT_ENDPOINT = "https://api.openai.com/v1"
_USERINFO = re.compile(r"(://[^/@:\s]*:)[^/@\s]*@")


class OpenAIModel(Model):
    """A chat model behind an OpenAI-compatible API (``"openai:NAME"``).

    `base_url` and `api_key` default to ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``.
    A custom `base_url` without any key gets a placeholder key (local servers
    ignore it). The SDK's own retries are off (``max_retries=0``): the agent's
    retry layer makes every attempt, so each one is counted and traced. SDK errors
    are translated at this boundary: timeouts, connection errors, 429 and 5xx into
    :class:`ModelUnavailableError` (retryable, with the server's ``Retry-After``),
    401/403 into :class:`ModelAuthError`, other 4xx into
    :class:`ModelRequestError`, and a reply that is not a chat completion into
    :class:`MalformedResponseError` (retryable).
    """

    def __init__(
        self,
        name: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        max_retries: int = 0,
        timeout: float = 60.0,
    ) -> None:
        self.model = name
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if not self.base_url:
                raise UserError(
                    f"No API key for 'openai:{name}'. Set OPENAI_API_KEY (or pass api_key=), "
                    "or point base_url at an OpenAI-compatible server."
                )
            key = _PLACEHOLDER_KEY
        register_secret(key)  # never in a trace, an explanation or a log line
        self._api_key = key
        self.max_retries = max_retries
        self.timeout = timeout
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    @property
    def endpoint(self) -> str:
        """The base URL requests go to, with any password in it masked."""
        return _masked(self.base_url or _DEFAULT_ENDPOINT)

    def _client(self) -> openai.AsyncOpenAI:
        """The SDK client for the running event loop (clients are bound to one loop:
        the sync API runs on a background loop while notebooks may await directly)."""
        openai = _openai()
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = openai.AsyncOpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                max_retries=self.max_retries,
                timeout=self.timeout,
            )
            self._clients[loop] = client
        return client

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        check_allow_model_requests(self.name)
        client = self._client()
        kwargs: dict[str, Any] = {"model": self.model, "messages": to_openai(messages)}
        if tools:
            kwargs["tools"] = [t.to_openai() for t in tools]
        if settings is not None:
            for field in ("temperature", "max_tokens", "timeout", "seed"):
                value = getattr(settings, field)
                if value is not None:
                    kwargs[field] = value
            if tools and settings.tool_choice is not None:
                kwargs["tool_choice"] = _tool_choice(tools, settings.tool_choice)
        try:
            completion = await client.chat.completions.create(**kwargs)
        except _openai().APIError as e:
            raise self._translate(e) from e
        except ValueError as e:  # the body is not JSON (json.JSONDecodeError)
            raise self._malformed(f"a body that is not JSON ({e})") from e
        return self._response(completion)

    def _malformed(self, what: str) -> MalformedResponseError:
        return MalformedResponseError(
            f"{self.name} at {self.endpoint} answered with {what}.", model=self.name
        )

    def _response(self, completion: Any) -> ModelResponse:
        choices = getattr(completion, "choices", None)
        if not isinstance(choices, list):
            raise self._malformed(f"something that is not a chat completion: {completion!r:.200}")
        if not choices or getattr(choices[0], "message", None) is None:
            raise self._malformed("no choices")
        message = choices[0].message
        calls = tuple(
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "{}")
            for c in message.tool_calls or ()
            if getattr(c, "function", None) is not None
        )
        usage = completion.usage
        return ModelResponse(
            message=AssistantMessage(content=message.content, tool_calls=calls),
            usage=Usage(
                input_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                output_tokens=getattr(usage, "completion_tokens", 0) or 0,
                requests=1,
            ),
            model_name=self.name,
        )

    def _translate(self, error: openai.APIError) -> ModelError:
        """Turn an ``openai`` SDK error into the matching agentlab error."""
        openai = _openai()

        where = f"{self.name} at {self.endpoint}"
        if isinstance(error, openai.APITimeoutError):
            return ModelUnavailableError(
                f"{where} did not answer within {self.timeout:g} s (timeout).",
                model=self.name,
            )
        if isinstance(error, openai.APIConnectionError):
            return ModelUnavailableError(
                f"Could not reach {where} ({_masked(str(error))}).", model=self.name
            )
        if isinstance(error, openai.APIResponseValidationError):
            return self._malformed(f"a body that is not a chat completion ({error})")
        status = getattr(error, "status_code", None)
        message = _server_message(error)
        if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
            return ModelAuthError(
                f"{where} rejected the credentials ({message}).",
                model=self.name,
                status_code=status,
            )
        if status == 429 or (status is not None and status >= 500):
            return ModelUnavailableError(
                f"{where} is unavailable right now ({message}).",
                model=self.name,
                status_code=status,
                retry_after=_retry_after(error),
            )
        return ModelRequestError(
            f"{where} refused the request ({message}).", model=self.name, status_code=status
        )

    async def aclose(self) -> None:
        """Close the client of the running event loop (others close with their loop)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()


def _openai() -> Any:
    try:
        import openai
    except ImportError as e:
        raise MissingExtraError("openai", "openai") from e
    return openai


def _masked(url: str) -> str:
    """`url` with the password of any ``user:password@`` part replaced by ***."""
    return _USERINFO.sub(r"\1***@", url)


def _retry_after(error: openai.APIError) -> float | None:
    """Seconds from the response's ``Retry-After`` (or ``retry-after-ms``) header."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:  # an HTTP date
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _server_message(error: openai.APIError) -> str:
    """The error message the server sent, with the HTTP status."""
    body = getattr(error, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    status = getattr(error, "status_code", None)
    text = message or getattr(error, "message", None) or str(error)
    text = _masked(str(text))
    return f"HTTP {status}: {text}" if status else text


def _tool_choice(tools: Sequence[ToolDefinition], choice: str) -> str | dict[str, Any]:
    """The OpenAI ``tool_choice`` for :attr:`ModelSettings.tool_choice`."""
    if choice in TOOL_CHOICES:
        return choice
    (tool,) = forced_tools(tools, choice) or ()
    return {"type": "function", "function": {"name": tool.name}}
