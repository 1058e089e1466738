"""Counting the tokens of messages for working memory.

A model that has a tokenizer on this machine counts with it (the bundled local
model: its GGUF vocabulary, through the llama.cpp runtime). Everything else, hosted
models included, gets :class:`EstimateCounter`: an honest estimate, not a
download. OpenAI's tokenizers (tiktoken) fetch their vocabulary files on first
use, which an offline toolkit cannot do.

The estimate is ``ceil(characters / 3.5)`` per text plus a fixed
:data:`MESSAGE_OVERHEAD` per message for the chat template's role markers. 3.5 is
a little under the ~4 characters per token that large-vocabulary tokenizers give
on English prose, so prose is overcounted slightly. JSON, ids and numbers pack
fewer characters per token (SmolLM2's tokenizer: 4.6 on the demo's system prompt
but 1.8 on a JSON tool result), so for JSON-heavy conversations either leave
headroom under the model's real context size or pass a smaller
``chars_per_token``.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

from agentlab.messages import Message

__all__ = [
    "MESSAGE_OVERHEAD",
    "EstimateCounter",
    "TokenCounter",
    "count_message",
    "message_text",
    "message_text_length",
]

MESSAGE_OVERHEAD = 4
"""Tokens counted per message for the chat template (role markers, separators)."""


@runtime_checkable
class TokenCounter(Protocol):
    """Counts tokens of text; `name` says how (shown in traces and the inspector)."""

    @property
    def name(self) -> str: ...

    def count(self, text: str) -> int: ...


class EstimateCounter:
    """``ceil(len(text) / chars_per_token)``: for models without a local tokenizer."""

    def __init__(self, chars_per_token: float = 3.5) -> None:
        if chars_per_token <= 0:
            raise ValueError("chars_per_token must be positive")
        self.chars_per_token = chars_per_token

    @property
    def name(self) -> str:
        return f"estimate ({self.chars_per_token:g} characters per token)"

    def count(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token)


def message_text(message: Message) -> str:
    """The text of a message the model reads: content, tool names and arguments."""
    parts = [message.content or ""]
    if message.role == "assistant":
        parts.extend(f"{call.name}({call.arguments})" for call in message.tool_calls)
    elif message.role == "tool":
        parts.insert(0, message.name)
    return "\n".join(p for p in parts if p)


def message_text_length(message: Message) -> int:
    """``len(message_text(message))``, without building the text."""
    content = message.content
    length = len(content) if content else 0
    parts = 1 if length else 0
    if message.role == "assistant":
        for call in message.tool_calls:  # "name(arguments)": never empty
            length += len(call.name) + len(call.arguments) + 2
            parts += 1
    elif message.role == "tool" and message.name:
        length += len(message.name)
        parts += 1
    return length + parts - 1 if parts else 0


def count_message(counter: TokenCounter, message: Message) -> int:
    """Tokens of one message, with the chat template's overhead."""
    if type(counter) is EstimateCounter:  # the estimate needs only the text's length
        return math.ceil(message_text_length(message) / counter.chars_per_token) + MESSAGE_OVERHEAD
    return counter.count(message_text(message)) + MESSAGE_OVERHEAD
