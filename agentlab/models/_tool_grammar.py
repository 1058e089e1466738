"""Tool calling for small local models: grammar-constrained calls, free-text answers.

A reply with tools takes up to two generations (measured on
``benchmarks/local_tool_calling.py``):

1. **Calls.** The system prompt is the function-calling prompt SmolLM2's instruct
   data uses (Synth-APIGen: a JSON ``<tools>`` list, reply
   ``<tool_call>[{"name": ..., "arguments": {...}}]</tool_call>``), and a grammar
   constrains the reply to a list of at most one call whose arguments follow that
   tool's schema, or the empty list. The JSON is compact (no free whitespace: small
   models otherwise pad with tabs until ``max_tokens``) and strings are bounded.
2. **Answer.** When the list is empty, the answer is free text from a plain prompt:
   the latest question, then the tool results as ``key: value`` facts.

Which tools: before the first call for a question, only the tools the question's words
point to are listed and allowed (:func:`agentlab.models.local_relevance.shortlist`);
none: the model answers without calling (a 135M model calls a tool for almost any
question otherwise). After a result, all tools are offered.

Argument values (:mod:`agentlab.models.local_values`), at every depth: a string with
a ``pattern`` (an id, an email) may only take a value that matches the pattern *and*
appears in a user message or a tool result, and that no answered call has used yet;
a tool whose required pattern parameter has no such value is left out of the
grammar. A 135M model invents ids and repeats calls otherwise, so give id parameters
a ``pattern``. Any other free string may only take a span of the conversation
(:func:`candidate_spans`): a run of 1 to ``SPAN_WORDS`` whitespace-separated words
within a clause (not across ``?!;"()[]{}``, nor a comma, colon or full stop followed
by a space), stripped of surrounding punctuation, from the latest user message
first, then the tool results and earlier user messages (at most ``MAX_SPANS``).
Spans may repeat an answered call (which is then retried without that tool). With
no span the parameter stays a bounded free string. Numbers take numbers written in
the conversation, enums the values the question mentions, and optional parameters
the question does not mention are left out. A reply that copies one value into two
arguments is generated again with the first of them barred from that value
(:func:`repeated_argument`), and repeated strings are dropped from lists.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from agentlab.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)
from agentlab.models.local_values import Evidence, narrow_parameters

__all__ = [
    "calls_grammar",
    "calls_schema",
    "calls_since_question",
    "candidate_spans",
    "conversation_texts",
    "is_repeated_call",
    "parse_calls",
    "render_answer_turns",
    "render_call_turns",
    "repeated_argument",
    "tool_call_count",
    "used_values",
]

MAX_ARGUMENT_CHARS = 64
SEPARATORS = (":", ",")  # (key, item): compact JSON
COPY_VALUES = True  # pattern parameters take values copied from the conversation
SPAN_WORDS = 3  # other string parameters copy spans of up to this many words (0: off)
MAX_SPANS = 200
_PUNCTUATION = "?,.!:;\"'()[]{}"
_CLAUSE_BREAK = re.compile(r"[?!;\"(){}\[\]]|[.,:](?=\s|$)")  # spans do not cross these
OPEN, CLOSE = "<tool_call>", "</tool_call>"

TOOL_PROMPT = """\
You are an expert in composing functions. You are given a question and a set of possible \
functions. Based on the question, you will need to make one or more function/tool calls to \
achieve the purpose. If none of the functions can be used, point it out and refuse to answer. \
If the given question lacks the parameters required by the function, also point it out.

You have access to the following tools:
<tools>{tools}</tools>

The output MUST strictly adhere to the following format, and NO other text MUST be included.
The example format is as follows. Please make sure the parameter type is correct. If no \
function call is needed, please make the tool calls an empty list '[]'.
<tool_call>[
{{"name": "func_name1", "arguments": {{"argument1": "value1", "argument2": "value2"}}}},
... (more tool calls as required)
]</tool_call>"""
RESULT = "Tool results:\n{results}"
ANSWER_PROMPT = (
    "{question}\n\nFacts:\n{facts}\n\nAnswer the question in one sentence using the facts."
)


# -- grammar ---------------------------------------------------------------------------


def _constrain(schema: Any) -> Any:
    """A copy of `schema` with closed objects, bounded strings and no annotations."""
    if isinstance(schema, list):
        return [_constrain(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _constrain(v) for k, v in schema.items() if k not in ("title", "description")}
    for key in ("properties", "$defs"):
        if isinstance(schema.get(key), dict):
            out[key] = {k: _constrain(v) for k, v in schema[key].items()}
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "object" in kinds and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    if "string" in kinds and not ({"maxLength", "enum", "const", "format"} & schema.keys()):
        out["maxLength"] = MAX_ARGUMENT_CHARS
    return out


def _prefix_refs(schema: Any, prefix: str) -> Any:
    """Rewrite local ``#/$defs/X`` references to ``#/$defs/<prefix>X``."""
    if isinstance(schema, list):
        return [_prefix_refs(s, prefix) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _prefix_refs(v, prefix) for k, v in schema.items()}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        out["$ref"] = "#/$defs/" + prefix + ref.removeprefix("#/$defs/")
    return out


def candidate_spans(
    texts: Sequence[str], max_words: int | None = None, limit: int | None = None
) -> list[str]:
    """The distinct runs of 1 to `max_words` (``SPAN_WORDS``) whitespace-separated
    words within a clause of `texts` (earlier texts first, shorter runs first),
    stripped of surrounding punctuation; at most `limit` (``MAX_SPANS``) of them."""
    max_words = SPAN_WORDS if max_words is None else max_words
    limit = MAX_SPANS if limit is None else limit
    spans: dict[str, None] = {}
    for text in texts:
        clauses = [c.split() for c in _CLAUSE_BREAK.split(text)]
        for n in range(1, max_words + 1):
            for words in clauses:
                for i in range(len(words) - n + 1):
                    span = " ".join(words[i : i + n]).strip(_PUNCTUATION)
                    if span:
                        spans[span] = None
                    if len(spans) >= limit:
                        return list(spans)
    return list(spans)


def calls_schema(
    tools: Sequence[ToolDefinition],
    texts: Sequence[str] = (),
    used: set[str] | frozenset[str] = frozenset(),
    spans: Sequence[str] = (),
    *,
    required: bool = False,
    avoid: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON schema of a list of at most one call ``{"name": ..., "arguments": ...}``
    (exactly one when a call is `required`); `avoid` maps argument names to a value
    they may not take (when they have others to choose from).

    `texts` are where pattern arguments are copied from, `used` the values they may
    no longer take, `spans` the values other string arguments may take (see the
    module docstring); a required call whose tools would all be left out for want
    of a value to copy takes free values instead. Each tool's ``$defs`` move to the
    root, prefixed with the tool name, since references resolve against the root.
    """
    defs: dict[str, Any] = {}
    options: list[dict[str, Any]] = []
    for t in tools:
        params: dict[str, Any] | None = _prefix_refs(_constrain(t.parameters), f"{t.name}__")
        if COPY_VALUES and params:
            evidence = Evidence(texts[0] if texts else "", texts, frozenset(used), spans)
            copied = narrow_parameters(params, evidence)
            if copied is None and not required:
                continue
            params = copied or params
        if params and avoid:
            params = _avoiding(params, avoid)
        for name, spec in (params or {}).pop("$defs", {}).items():
            defs[f"{t.name}__{name}"] = spec
        options.append(
            {
                "type": "object",
                "properties": {
                    "name": {"const": t.name},
                    "arguments": params or {"type": "object"},
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = {"type": "array", "maxItems": 1 if options else 0}
    if required and options:
        schema["minItems"] = 1
    if options:
        schema["items"] = {"anyOf": options}
    if defs:
        schema["$defs"] = defs
    return schema


def _avoiding(params: dict[str, Any], avoid: Mapping[str, Any]) -> dict[str, Any]:
    properties = dict(params.get("properties") or {})
    for key, bad in avoid.items():
        spec = properties.get(key)
        if isinstance(spec, dict) and isinstance(spec.get("enum"), list):
            rest = [v for v in spec["enum"] if not _same_value(v, bad)]
            properties[key] = {**spec, "enum": rest} if rest else spec
    return {**params, "properties": properties}


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.strip().casefold() == b.strip().casefold()
    return type(a) is type(b) and a == b


def repeated_argument(call: ToolCall) -> dict[str, Any]:
    """``{name: value}`` for the first top-level argument whose string or number value
    a later argument repeats (a small model copies one value into several slots), or
    ``{}``."""
    arguments = _arguments(call)
    if not isinstance(arguments, dict):
        return {}
    items = [(k, v) for k, v in arguments.items() if isinstance(v, (str, int, float))]
    for i, (key, value) in enumerate(items):
        if any(_same_value(value, other) for _, other in items[i + 1 :]):
            return {key: value}
    return {}


def calls_grammar(
    tools: Sequence[ToolDefinition],
    texts: Sequence[str] = (),
    used: set[str] | frozenset[str] = frozenset(),
    spans: Sequence[str] = (),
    *,
    required: bool = False,
    avoid: Mapping[str, Any] | None = None,
) -> str:
    """The llguidance grammar of ``<tool_call>[...]</tool_call>`` (see :func:`calls_schema`)."""
    key_separator, item_separator = SEPARATORS
    schema = {
        "x-guidance": {
            "whitespace_flexible": False,
            "key_separator": key_separator,
            "item_separator": item_separator,
        },
        **calls_schema(tools, texts, used, spans, required=required, avoid=avoid),
    }
    return f'%llguidance {{}}\nstart: "{OPEN}" calls "{CLOSE}"\ncalls: %json {json.dumps(schema)}'


def parse_calls(text: str, call_number: int) -> tuple[ToolCall, ...] | None:
    """The calls a phase-1 reply holds (``()`` for none; ids numbered from
    `call_number`), or ``None`` if it is not a list of calls."""
    body = text.strip().removeprefix(OPEN)
    if not body.endswith(CLOSE):
        return None
    try:
        data = json.loads(body.removesuffix(CLOSE), strict=False)
    except ValueError:
        return None
    if not isinstance(data, list):
        return None
    calls = []
    for i, item in enumerate(data):
        if not (
            isinstance(item, dict)
            and isinstance(item.get("name"), str)
            and isinstance(item.get("arguments"), dict)
        ):
            return None
        arguments = json.dumps(_without_repeats(item["arguments"]))
        calls.append(ToolCall(id=f"call_{call_number + i}", name=item["name"], arguments=arguments))
    return tuple(calls)


def _without_repeats(value: Any) -> Any:
    """`value` with repeated strings dropped from its lists, at any depth (a small model
    repeats a list item until ``maxItems``)."""
    if isinstance(value, dict):
        return {k: _without_repeats(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_without_repeats(v) for v in value]
        seen: list[Any] = []
        for item in items:
            if not (isinstance(item, str) and item in seen):
                seen.append(item)
        return seen
    return value


# -- history ---------------------------------------------------------------------------


def _system_text(messages: Sequence[Message]) -> str:
    return "\n\n".join(m.content for m in messages if isinstance(m, SystemMessage)).strip()


def _arguments(call: ToolCall) -> Any:
    try:
        return json.loads(call.arguments, strict=False)
    except ValueError:
        return call.arguments


def _calls_text(calls: Sequence[ToolCall]) -> str:
    key_separator, item_separator = SEPARATORS
    body = [{"name": c.name, "arguments": _arguments(c)} for c in calls]
    return OPEN + json.dumps(body, separators=(item_separator, key_separator)) + CLOSE


def render_call_turns(
    messages: Sequence[Message], tools: Sequence[ToolDefinition]
) -> list[dict[str, str]]:
    """Phase 1 turns: the caller's system prompt and the function-calling prompt, then
    the history (calls as the model emits them, results as user turns)."""
    listing = json.dumps(
        [
            {
                "name": t.name,
                "description": t.description,
                "parameters": {
                    k: v
                    for k, v in t.parameters.items()
                    if k not in ("additionalProperties", "title")
                },
            }
            for t in tools
        ]
    )
    system = "\n\n".join(filter(None, [_system_text(messages), TOOL_PROMPT.format(tools=listing)]))
    out = [{"role": "system", "content": system}]
    calls = {c.id: c for m in messages if isinstance(m, AssistantMessage) for c in m.tool_calls}
    results: list[str] = []
    for m in [*messages, None]:
        if isinstance(m, ToolMessage):
            call = calls.get(m.tool_call_id)
            what = f"{m.name}({json.dumps(_arguments(call))})" if call else m.name
            results.append(f"{what} {'failed' if m.is_error else 'returned'}: {m.content}")
            continue
        if results:
            out.append({"role": "user", "content": RESULT.format(results="\n".join(results))})
            results = []
        if isinstance(m, UserMessage):
            out.append({"role": "user", "content": m.content})
        elif isinstance(m, AssistantMessage):
            text = _calls_text(m.tool_calls) if m.tool_calls else (m.content or "")
            out.append({"role": "assistant", "content": text})
    return out


def _facts(value: Any, indent: str = "") -> list[str]:
    """A decoded tool result as ``key: value`` lines."""
    if isinstance(value, dict):
        lines = []
        for k, v in value.items():
            if isinstance(v, (dict, list)) and not _is_flat_list(v):
                lines += [f"{indent}{k}:", *_facts(v, indent + "  ")]
            else:
                lines.append(f"{indent}{k}: {_scalar(v)}")
        return lines
    if isinstance(value, list) and not _is_flat_list(value):
        head = f"{indent}{len(value)} item{'' if len(value) == 1 else 's'}:"
        return [head, *(f"{indent}- " + ", ".join(_facts(item)) for item in value)]
    return [f"{indent}{_scalar(value)}"]


def _is_flat_list(value: Any) -> bool:
    return isinstance(value, list) and not any(isinstance(v, (dict, list)) for v in value)


def _scalar(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_scalar(v) for v in value) if value else "none"
    if value is None:
        return "none"
    return value if isinstance(value, str) else json.dumps(value)


def _result_facts(m: ToolMessage) -> list[str]:
    if m.is_error:
        return [f"{m.name} failed: {m.content}"]
    try:
        return _facts(json.loads(m.content, strict=False))
    except ValueError:
        return [m.content]


def render_answer_turns(messages: Sequence[Message]) -> list[dict[str, str]]:
    """Phase 2 (and tool-less) turns: plain chat, the latest question restated with the
    results of the calls made since as facts.

    With results, the caller's system prompt is left out (the model then tends to
    refuse instead of using the facts).
    """
    last = max((i for i, m in enumerate(messages) if isinstance(m, UserMessage)), default=-1)
    results = [m for m in messages[last + 1 :] if isinstance(m, ToolMessage)]
    system = _system_text(messages)
    out = [{"role": "system", "content": system}] if system and not results else []
    for m in messages[: max(last, 0)]:
        if isinstance(m, UserMessage):
            out.append({"role": "user", "content": m.content})
        elif isinstance(m, AssistantMessage) and m.content and not m.tool_calls:
            out.append({"role": "assistant", "content": m.content})
    question = messages[last].content if last >= 0 else ""
    if results:
        facts = "\n".join(line for m in results for line in _result_facts(m))
        question = ANSWER_PROMPT.format(question=question, facts=facts)
    if question:
        out.append({"role": "user", "content": question})
    return out


def conversation_texts(messages: Sequence[Message]) -> list[str]:
    """The user messages and tool results, where arguments are copied from: the latest
    user message first, then the rest, latest first."""
    texts = [m for m in reversed(messages) if isinstance(m, (UserMessage, ToolMessage))]
    i = next((i for i, m in enumerate(texts) if isinstance(m, UserMessage)), 0)
    return [m.content for m in [*texts[i : i + 1], *texts[:i], *texts[i + 1 :]]]


def _answered(messages: Sequence[Message]) -> list[ToolCall]:
    done = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    return [
        c for m in messages if isinstance(m, AssistantMessage) for c in m.tool_calls if c.id in done
    ]


def used_values(messages: Sequence[Message]) -> set[str]:
    """The string argument values of the calls already answered."""
    values: set[str] = set()
    for call in _answered(messages):
        arguments = _arguments(call)
        if isinstance(arguments, dict):
            values |= {v for v in arguments.values() if isinstance(v, str)}
    return values


def calls_since_question(messages: Sequence[Message]) -> int:
    """How many tool calls were made since the latest user message."""
    count = 0
    for m in messages:
        if isinstance(m, UserMessage):
            count = 0
        elif isinstance(m, AssistantMessage):
            count += len(m.tool_calls)
    return count


def tool_call_count(messages: Sequence[Message]) -> int:
    """How many tool calls the history already holds (numbers the next call id)."""
    return sum(len(m.tool_calls) for m in messages if isinstance(m, AssistantMessage))


def _canonical(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments, strict=False), sort_keys=True)
    except ValueError:
        return arguments


def is_repeated_call(call: ToolCall, messages: Sequence[Message]) -> bool:
    """Whether `call` repeats a call (same tool, same arguments) already answered."""
    return any(
        c.name == call.name and _canonical(c.arguments) == _canonical(call.arguments)
        for c in _answered(messages)
    )
