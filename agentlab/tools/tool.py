"""`@tool`: a typed Python function with a docstring becomes a tool.

The JSON schema the model sees comes from the signature (through pydantic) and the
descriptions from the docstring, so they can never drift apart. Mistakes in the
definition fail at declaration time with a message that says how to fix them.
"""

from __future__ import annotations

import inspect
import re
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import (
    Annotated,
    Any,
    NewType,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    overload,
)

import docstring_parser
import pydantic_core
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PydanticUserError,
    ValidationError,
    create_model,
)
from pydantic.fields import FieldInfo

from agentlab.errors import UserError
from agentlab.messages import ToolDefinition

__all__ = [
    "Adapt",
    "Fallback",
    "FallbackSpec",
    "IdempotencyKey",
    "Tool",
    "ToolDefinitionError",
    "format_validation_error",
    "simpler",
    "tool",
]

IdempotencyKey = NewType("IdempotencyKey", str)
"""Annotate one parameter of a tool with it to receive the call's idempotency key.

The key (``<run_id>-<step>-<call_id>``) is the same every time the same call is
made again, after a restart or a recovery too; pass it to the service behind the
tool (most payment and messaging APIs take one) so that it does the work once.
The parameter is hidden from the model. A tool with one is taken to have side
effects and to deduplicate them: recovering a run whose process died inside such
a call makes the call again with the same key.
"""


class ToolDefinitionError(UserError):
    """A ``@tool`` definition is wrong; the message lists every problem and its fix."""

    def __init__(self, where: str, problems: Sequence[str]) -> None:
        self.where = where
        self.problems = list(problems)
        if len(problems) == 1:
            text = f"{where}: {problems[0]}"
        else:
            listed = "\n".join(f"  {i}. {p}" for i, p in enumerate(problems, 1))
            text = f"{where} has {len(problems)} problems:\n{listed}"
        super().__init__(text)


_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]{0,63}$")


class Tool:
    """A function the model can call, with validated arguments.

    Calling the tool object like a function calls the wrapped function directly.

    Args:
        function: a typed function (sync or async) with a docstring.
        name: the name the model sees (default: the function's).
        description: instead of the docstring's text.
        timeout: seconds a call may take before it is abandoned.
        cache_ttl: cache results for this many seconds: a second call with the
            same validated arguments in the same session is served from the
            agent's short-term memory (and traced as a cache hit).
        cost: US dollars one call costs (a paid API), counted as saved on a hit.
        requires_approval: the call has side effects a person must approve first:
            the run pauses before it (``run.resume(approve=...)``, the notebook's
            approval widget, ``agentlab runs resume``, or the served app's
            ``POST /v1/runs/{id}/resume``).
        side_effects: the call changes something outside the run (sends, pays,
            writes). Its start is recorded before it runs, so a run recovered after
            its process died never makes it again blindly: a call whose outcome is
            unknown pauses the run for a person, unless the tool takes an
            :data:`IdempotencyKey` (then it is made again with the same key).
            Implied by ``requires_approval`` and by an ``IdempotencyKey`` parameter.
        fallback: alternatives tried in order when a call fails for good (it
            raised, timed out, or its circuit breaker is open; not invalid
            arguments or a declined approval, which go back to the model): another
            tool called with the same arguments, ``simpler(adapt)`` (this tool
            with a simpler request), or ``Fallback(other, adapt=...)`` /
            ``(other, adapt)``. See :class:`Fallback`.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        cache_ttl: float | None = None,
        cost: float | None = None,
        requires_approval: bool = False,
        side_effects: bool = False,
        fallback: Sequence[FallbackSpec] = (),
    ) -> None:
        self.function = function
        self.requires_approval = requires_approval
        self.name = name or function.__name__
        self.is_async = inspect.iscoroutinefunction(function)
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self.cost = cost
        where = f"Tool {self.name!r} ({_where(function)})"
        problems: list[str] = []  # every mistake of the definition, reported at once
        if not _NAME.match(self.name):
            problems.append(
                f"the name must match {_NAME.pattern} (letters, digits, "
                "'_' or '-', at most 64 characters)."
            )
        if timeout is not None and timeout <= 0:
            problems.append("timeout must be a positive number of seconds.")
        if cache_ttl is not None and cache_ttl <= 0:
            problems.append("cache_ttl must be a positive number of seconds.")
        if cost is not None and cost < 0:
            problems.append("cost must be 0 or more US dollars per call.")
        doc = docstring_parser.parse(inspect.getdoc(function) or "")
        summary = "\n\n".join(p for p in (doc.short_description, doc.long_description) if p)
        self.description = (description or summary).strip()
        if not self.description:
            problems.append(
                "it has no description. Add a docstring that says what the tool does "
                "and when to use it, or pass @tool(description=...)."
            )
        hints = _type_hints(function, problems)
        self.key_parameter: str | None = _key_parameter(hints, problems)
        """The parameter that receives the call's :data:`IdempotencyKey`, if any."""
        self.side_effects = side_effects or requires_approval or self.key_parameter is not None
        args_model = _arguments_model(
            function,
            hints,
            {p.arg_name: p.description for p in doc.params if p.description},
            problems,
            skip=self.key_parameter,
        )
        if args_model is None:
            raise ToolDefinitionError(where, problems)
        self.args_model = args_model
        self.definition = ToolDefinition(
            name=self.name,
            description=self.description,
            parameters=_clean_schema(self.args_model.model_json_schema()),
        )
        self.fallback: tuple[Fallback, ...] = tuple(
            alternative
            for spec in fallback
            if (alternative := self._alternative(spec, problems)) is not None
        )
        """The alternatives, in order, each with its tool resolved (:class:`Fallback`)."""
        if problems:
            raise ToolDefinitionError(where, problems)

    def _alternative(self, spec: FallbackSpec, problems: list[str]) -> Fallback | None:
        """`spec` as a :class:`Fallback` whose tool is set, checked against this tool
        (None, with the reason added to `problems`, when it cannot serve)."""
        if isinstance(spec, Tool):
            spec = Fallback(spec)
        elif isinstance(spec, tuple) and len(spec) == 2:
            spec = Fallback(spec[0], adapt=spec[1])
        if not isinstance(spec, Fallback) or not isinstance(spec.tool, Tool | None):
            problems.append(
                f"fallback entry {spec!r} is not understood. Pass a tool "
                "(another @tool), simpler(adapt) for this tool with a simpler request, "
                "or Fallback(other_tool, adapt=...)."
            )
            return None
        if spec.adapt is not None and not callable(spec.adapt):
            problems.append(
                f"the adapt of fallback {spec.label(self)!r} must be a function "
                f"taking the arguments dict and returning the simpler one (got {spec.adapt!r})."
            )
            return None
        alternative = spec.tool or self
        if spec.adapt is None:
            if alternative is self:
                problems.append(
                    "a tool cannot be its own fallback with the same arguments "
                    "(that is the same failing call). Use simpler(adapt) to ask for less."
                )
                return None
            mismatches = _mismatches(self.args_model, alternative.args_model)
            if mismatches:
                problems.append(
                    f"fallback {alternative.name!r} cannot take its arguments: "
                    + "; ".join(mismatches)
                    + f". Make the parameters match, or convert them with "
                    f"Fallback({alternative.name}, adapt=lambda args: {{...}})."
                )
                return None
        return Fallback(alternative, adapt=spec.adapt)

    def validate(self, arguments: str) -> BaseModel:
        """Validate the model's JSON arguments (raises pydantic ``ValidationError``)."""
        return self.args_model.model_validate_json(arguments or "{}")

    def keyword_arguments(self, args: BaseModel | None, key: str | None = None) -> dict[str, Any]:
        """The function's keyword arguments: the validated ones, plus the call's
        idempotency `key` when the tool takes one."""
        if self.key_parameter is None:  # the common case: no copy (the call only reads it)
            return args.__dict__ if args is not None else {}
        if key is None:
            raise UserError(
                f"Tool {self.name!r} takes an idempotency key ({self.key_parameter!r}); "
                "pass key=... when calling it outside a run."
            )
        kwargs = dict(args.__dict__) if args is not None else {}
        kwargs[self.key_parameter] = IdempotencyKey(key)
        return kwargs

    async def call(self, args: BaseModel, key: str | None = None) -> Any:
        """Call the function with validated arguments (sync functions run inline);
        `key` is the idempotency key for a tool that takes one."""
        result = self.function(**self.keyword_arguments(args, key))
        if self.is_async:
            result = await result
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    def _repr_html_(self) -> str:
        from agentlab.tools.html import tool_html

        return tool_html(self)


Adapt = Callable[[dict[str, Any]], dict[str, Any]]
"""Makes a simpler request: takes the validated arguments as a dict (a copy) and
returns the arguments for the alternative (fewer fields, a smaller limit...)."""


@dataclass(frozen=True, slots=True)
class Fallback:
    """An alternative for a tool call that failed for good.

    `tool` (None: the tool that declares it) is called with the same validated
    arguments, or with ``adapt(arguments)`` when `adapt` is given: a simpler
    request. The alternative's own layers apply (validation, approval, cache,
    breaker, timeout). Without `adapt`, the declaration checks that the
    alternative accepts the arguments (names and types)::

        @tool(timeout=5, fallback=[
            search_mirror,                                   # same arguments
            simpler(lambda a: {**a, "limit": 5}),            # this tool, asking for less
            Fallback(search_cache, adapt=lambda a: {"q": a["query"]}),
        ])
        def search(query: str, limit: int = 50) -> list[dict]: ...
    """

    tool: Tool | None = None
    adapt: Adapt | None = None

    def label(self, owner: Tool) -> str:
        """How a try is named in messages and traces."""
        name = (self.tool or owner).name
        return name if self.adapt is None else f"{name} (simpler request)"


FallbackSpec = Tool | Fallback | tuple[Tool, Adapt]
"""What ``@tool(fallback=[...])`` takes: a tool, a :class:`Fallback`, or ``(tool, adapt)``."""


def simpler(adapt: Adapt) -> Fallback:
    """The same tool again with a simpler request made by `adapt`, e.g.
    ``@tool(fallback=[simpler(lambda args: {**args, "limit": 5})])``."""
    return Fallback(None, adapt=adapt)


def _mismatches(mine: type[BaseModel], theirs: type[BaseModel]) -> list[str]:
    """Why a tool with arguments `theirs` cannot take validated `mine` (empty: it can).

    Names and types only; constraints (``Field(le=...)``) are checked when the
    alternative validates the call."""
    problems = []
    for name, field in mine.model_fields.items():
        other = theirs.model_fields.get(name)
        if other is None:
            problems.append(f"it has no parameter {name!r}")
        elif not _accepts(other.annotation, field.annotation):
            problems.append(
                f"its {name!r} is {_type_name(other.annotation)}, "
                f"not {_type_name(field.annotation)}"
            )
    for name, field in theirs.model_fields.items():
        if name not in mine.model_fields and field.is_required():
            problems.append(f"it requires {name!r}, which is not among the arguments")
    return problems


def _accepts(theirs: Any, mine: Any) -> bool:
    """Does a parameter of type `theirs` accept every value of type `mine`?"""
    if theirs is Any or theirs == mine:
        return True
    members = _union_members(theirs)
    return all(m in members or (m is int and float in members) for m in _union_members(mine))


def _union_members(tp: Any) -> tuple[Any, ...]:
    return get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,)


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _where(function: Callable[..., Any]) -> str:
    code = getattr(function, "__code__", None)
    if code is None:
        return getattr(function, "__qualname__", repr(function))
    return f"{function.__qualname__} at {code.co_filename}:{code.co_firstlineno}"


def _has_description(annotation: Any) -> bool:
    if get_origin(annotation) is Annotated:
        return any(isinstance(m, FieldInfo) and m.description for m in get_args(annotation)[1:])
    return False


def _type_hints(function: Callable[..., Any], problems: list[str]) -> dict[str, Any]:
    try:
        return get_type_hints(function, include_extras=True)
    except Exception as exc:  # an annotation that cannot be resolved
        problems.append(f"cannot resolve its type annotations ({exc}).")
        return {}


def _key_parameter(hints: dict[str, Any], problems: list[str]) -> str | None:
    """The one parameter annotated :data:`IdempotencyKey` (None when there is none)."""
    names = [name for name, hint in hints.items() if hint is IdempotencyKey]
    if len(names) > 1:
        problems.append(
            f"parameters {names} are all IdempotencyKey; a call has one key, "
            "so annotate one parameter with it."
        )
    return names[0] if names else None


def _arguments_model(
    function: Callable[..., Any],
    hints: dict[str, Any],
    descriptions: dict[str, str],
    problems: list[str],
    skip: str | None = None,
) -> type[BaseModel] | None:
    """The pydantic model of the arguments the model sends (None, with the reason
    added to `problems`, when the parameters cannot make one)."""
    fields: dict[str, Any] = {}
    for param in inspect.signature(function).parameters.values():
        if param.name == skip:  # filled in by agentlab, not by the model
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            stars = "*" if param.kind is param.VAR_POSITIONAL else "**"
            problems.append(
                f"{stars}{param.name} cannot be described to a model. Use named, typed parameters."
            )
            continue
        annotation = hints.get(param.name, Any)
        if param.name not in hints:
            problems.append(
                f"parameter {param.name!r} has no type annotation. "
                f"Add one, e.g. `{param.name}: str`."
            )
        description = descriptions.get(param.name)
        if not description and not _has_description(annotation):
            problems.append(
                f"parameter {param.name!r} has no description. Document it in the "
                f"docstring's Args section (`{param.name}: what it is`), or use "
                f"Annotated[..., Field(description=...)]."
            )
        default = ... if param.default is inspect.Parameter.empty else param.default
        field = Field(default, description=description) if description else Field(default)
        fields[param.name] = (annotation, field)
    model_name = "".join(part.title() for part in re.split(r"[_-]", function.__name__))
    try:
        model = create_model(
            f"{model_name}Arguments", __config__=ConfigDict(extra="forbid"), **fields
        )
        model.model_json_schema()
    except PydanticUserError as exc:  # a type no JSON schema can describe
        problems.append(
            "its parameters cannot be described to a model: "
            f"{exc.message.splitlines()[0]} "
            "Use JSON types (str, int, float, bool, lists, dicts, enums, pydantic models)."
        )
        return None
    return model


def _clean_schema(schema: Any) -> Any:
    """Drop pydantic's titles: noise for the model, not information."""
    if isinstance(schema, dict):
        return {
            k: _clean_schema(v)
            for k, v in schema.items()
            if not (k == "title" and isinstance(v, str))
        }
    if isinstance(schema, list):
        return [_clean_schema(v) for v in schema]
    return schema


def format_validation_error(tool_name: str, error: ValidationError) -> str:
    """A message the model can act on: which argument, what was wrong, what it sent."""
    lines = [f"Invalid arguments for tool {tool_name!r}:"]
    for e in error.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "(arguments)"
        got = "" if e["type"] in ("missing", "json_invalid") else f" (got {e['input']!r})"
        lines.append(f"- {loc}: {e['msg']}{got}")
    lines.append(f"Call {tool_name} again with corrected arguments.")
    return "\n".join(lines)


def serialize_result(result: Any) -> str:
    """Tool results reach the model as text: strings as they are, the rest as JSON."""
    if isinstance(result, str):
        return result
    if isinstance(result, BaseModel):
        return result.model_dump_json()
    return pydantic_core.to_json(result).decode()


@overload
def tool(function: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    cache_ttl: float | None = None,
    cost: float | None = None,
    requires_approval: bool = False,
    side_effects: bool = False,
    fallback: Sequence[FallbackSpec] = (),
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    cache_ttl: float | None = None,
    cost: float | None = None,
    requires_approval: bool = False,
    side_effects: bool = False,
    fallback: Sequence[FallbackSpec] = (),
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a typed function (sync or async) with a docstring into a :class:`Tool`.

    Use as ``@tool``, ``@tool(timeout=5)``, ``@tool(cache_ttl=300)`` or
    ``@tool(fallback=[other_tool, simpler(adapt)])``. The docstring's first
    paragraphs describe the tool; its ``Args:`` section describes each parameter.
    The options are those of :class:`Tool`.
    """
    options: dict[str, Any] = {
        "name": name,
        "description": description,
        "timeout": timeout,
        "cache_ttl": cache_ttl,
        "cost": cost,
        "requires_approval": requires_approval,
        "side_effects": side_effects,
        "fallback": fallback,
    }

    def declare(f: Callable[..., Any]) -> Tool:
        try:
            return Tool(f, **options)
        except ToolDefinitionError as exc:
            error = exc
        # Raised again from here: the traceback shows the user's line, not the
        # checks inside Tool that found the problems.
        raise error.with_traceback(None) from None

    return declare(function) if function is not None else declare
