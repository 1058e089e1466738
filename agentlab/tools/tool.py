"""`@tool`: a typed Python function with a docstring becomes a tool.

The JSON schema the model sees comes from the signature (through pydantic) and the
descriptions from the docstring, so they can never drift apart. Mistakes in the
definition fail at declaration time with a message that says how to fix them.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Annotated, Any, get_args, get_origin, get_type_hints, overload

import docstring_parser
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from agentlab.errors import UserError
from agentlab.messages import ToolDefinition

__all__ = ["Tool", "format_validation_error", "tool"]

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
    ) -> None:
        self.function = function
        self.requires_approval = requires_approval
        self.name = name or function.__name__
        self.is_async = inspect.iscoroutinefunction(function)
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self.cost = cost
        where = f"Tool {self.name!r} ({_where(function)})"
        if not _NAME.match(self.name):
            raise UserError(
                f"{where}: the name must match {_NAME.pattern} (letters, digits, "
                "'_' or '-', at most 64 characters)."
            )
        if timeout is not None and timeout <= 0:
            raise UserError(f"{where}: timeout must be a positive number of seconds.")
        if cache_ttl is not None and cache_ttl <= 0:
            raise UserError(f"{where}: cache_ttl must be a positive number of seconds.")
        if cost is not None and cost < 0:
            raise UserError(f"{where}: cost must be 0 or more US dollars per call.")
        doc = docstring_parser.parse(inspect.getdoc(function) or "")
        summary = "\n\n".join(p for p in (doc.short_description, doc.long_description) if p)
        self.description = (description or summary).strip()
        if not self.description:
            raise UserError(
                f"{where} has no description. Add a docstring that says what the tool does "
                "and when to use it, or pass @tool(description=...)."
            )
        self.args_model = _arguments_model(
            function, where, {p.arg_name: p.description for p in doc.params if p.description}
        )
        self.definition = ToolDefinition(
            name=self.name,
            description=self.description,
            parameters=_clean_schema(self.args_model.model_json_schema()),
        )

    def validate(self, arguments: str) -> BaseModel:
        """Validate the model's JSON arguments (raises pydantic ``ValidationError``)."""
        return self.args_model.model_validate_json(arguments or "{}")

    async def call(self, args: BaseModel) -> Any:
        """Call the function with validated arguments (sync functions run inline)."""
        result = self.function(**args.__dict__)
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


def _where(function: Callable[..., Any]) -> str:
    code = getattr(function, "__code__", None)
    if code is None:
        return getattr(function, "__qualname__", repr(function))
    return f"{function.__qualname__} at {code.co_filename}:{code.co_firstlineno}"


def _has_description(annotation: Any) -> bool:
    if get_origin(annotation) is Annotated:
        return any(isinstance(m, FieldInfo) and m.description for m in get_args(annotation)[1:])
    return False


def _arguments_model(
    function: Callable[..., Any], where: str, descriptions: dict[str, str]
) -> type[BaseModel]:
    signature = inspect.signature(function)
    try:
        hints = get_type_hints(function, include_extras=True)
    except Exception as exc:  # an annotation that cannot be resolved
        raise UserError(f"{where}: cannot resolve its type annotations ({exc}).") from exc
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise UserError(
                f"{where}: *{param.name} / **{param.name} cannot be described "
                "to a model. Use named, typed parameters."
            )
        if param.name not in hints:
            raise UserError(
                f"{where}: parameter {param.name!r} has no type annotation. "
                f"Add one, e.g. `{param.name}: str`."
            )
        annotation = hints[param.name]
        description = descriptions.get(param.name)
        if not description and not _has_description(annotation):
            raise UserError(
                f"{where}: parameter {param.name!r} has no description. Document it in the "
                f"docstring's Args section (`{param.name}: what it is`), or use "
                f"Annotated[..., Field(description=...)]."
            )
        default = ... if param.default is inspect.Parameter.empty else param.default
        field = Field(default, description=description) if description else Field(default)
        fields[param.name] = (annotation, field)
    model_name = "".join(part.title() for part in re.split(r"[_-]", function.__name__))
    return create_model(f"{model_name}Arguments", __config__=ConfigDict(extra="forbid"), **fields)


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
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a typed function (sync or async) with a docstring into a :class:`Tool`.

    Use as ``@tool``, ``@tool(timeout=5)`` or ``@tool(cache_ttl=300)``. The
    docstring's first paragraphs describe the tool; its ``Args:`` section describes
    each parameter. The options are those of :class:`Tool`.
    """
    options: dict[str, Any] = {
        "name": name,
        "description": description,
        "timeout": timeout,
        "cache_ttl": cache_ttl,
        "cost": cost,
        "requires_approval": requires_approval,
    }
    if function is not None:
        return Tool(function, **options)
    return lambda f: Tool(f, **options)
