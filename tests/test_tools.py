import asyncio
import json
import traceback
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field, ValidationError

from agentlab.errors import UserError
from agentlab.tools import Tool, format_validation_error, serialize_result, tool
from agentlab.tools.tool import ToolDefinitionError


@tool
def get_order(order_id: str, include_items: bool = False) -> dict:
    """Look up one order by its id.

    Use this when the customer gives an order id.

    Args:
        order_id: The order id, like "O-1001".
        include_items: Whether to list the items too.
    """
    return {"order_id": order_id, "items": [] if include_items else None}


def test_schema_comes_from_signature_and_docstring():
    d = get_order.definition
    assert d.name == "get_order"
    assert (
        d.description
        == "Look up one order by its id.\n\nUse this when the customer gives an order id."
    )
    assert d.parameters == {
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "description": 'The order id, like "O-1001".'},
            "include_items": {
                "type": "boolean",
                "default": False,
                "description": "Whether to list the items too.",
            },
        },
        "required": ["order_id"],
        "additionalProperties": False,
    }


def test_tool_is_still_callable_as_a_function():
    assert get_order("O-1")["order_id"] == "O-1"


def test_annotated_field_descriptions_and_literals():
    @tool
    def ship(speed: Annotated[Literal["slow", "fast"], Field(description="How fast.")]) -> str:
        """Ship something."""
        return speed

    assert ship.definition.parameters["properties"]["speed"] == {
        "enum": ["slow", "fast"],
        "type": "string",
        "description": "How fast.",
    }


def test_missing_type_fails_at_declaration_with_fix():
    with pytest.raises(UserError, match=r"parameter 'x' has no type annotation\. Add one"):

        @tool
        def bad(x) -> int:
            """Do it.

            Args:
                x: a thing
            """
            return x


def test_missing_description_fails_at_declaration():
    with pytest.raises(UserError, match=r"has no description\. Add a docstring"):

        @tool
        def bad(x: int) -> int:
            return x


def test_missing_parameter_description_fails():
    with pytest.raises(UserError, match=r"parameter 'y' has no description.*Args section"):

        @tool
        def bad(x: int, y: int) -> int:
            """Add.

            Args:
                x: first
            """
            return x + y


def test_var_args_and_bad_names_are_refused():
    with pytest.raises(UserError, match=r"\*args"):
        Tool(lambda *args: 1, name="f", description="d")
    with pytest.raises(UserError, match="the name must match"):
        Tool(get_order.function, name="has space")
    with pytest.raises(UserError, match="timeout must be a positive"):
        Tool(get_order.function, timeout=0)


def test_validation_error_message_names_argument_and_value():
    with pytest.raises(ValidationError) as info:
        get_order.validate('{"order_id": 5, "include_items": "maybe", "extra": 1}')
    text = format_validation_error("get_order", info.value)
    assert "Invalid arguments for tool 'get_order':" in text
    assert "- order_id: Input should be a valid string (got 5)" in text
    assert "- include_items:" in text and "(got 'maybe')" in text
    assert "- extra: Extra inputs are not permitted" in text
    assert text.endswith("Call get_order again with corrected arguments.")


def test_malformed_json_is_a_validation_error():
    with pytest.raises(ValidationError) as info:
        get_order.validate('{"order_id": ')
    assert "Invalid JSON" in format_validation_error("get_order", info.value)


def test_async_tool_and_result_serialization():
    class Out(BaseModel):
        total: float

    @tool
    async def total(order_id: str) -> Out:
        """Total of an order.

        Args:
            order_id: The order id.
        """
        await asyncio.sleep(0)
        return Out(total=12.5)

    assert total.is_async
    result = asyncio.run(total.call(total.validate('{"order_id": "O-1"}')))
    assert serialize_result(result) == '{"total":12.5}'
    assert json.loads(serialize_result({"a": [1, 2]})) == {"a": [1, 2]}
    assert serialize_result("plain") == "plain"


def test_every_problem_of_a_definition_is_reported_at_once_with_a_short_traceback():
    with pytest.raises(ToolDefinitionError) as error:

        @tool(timeout=0, cost=-1)
        def lookup(x, *rest, y: int) -> str:  # type: ignore[no-untyped-def]
            """Look something up.

            Args:
                x: What to look for.
            """
            return ""

    problems = error.value.problems
    assert len(problems) == 5, problems
    message = str(error.value)
    assert message.startswith("Tool 'lookup' (") and "has 5 problems:" in message
    for expected in (
        "1. timeout must be a positive number",
        "2. cost must be 0 or more",
        "3. parameter 'x' has no type annotation",
        "4. *rest cannot be described",
        "5. parameter 'y' has no description",
    ):
        assert expected in message
    frames = traceback.extract_tb(error.value.__traceback__)
    assert frames[0].filename == __file__, "the user's line comes first"
    assert [Path(f.filename).name for f in frames[1:]] == ["tool.py"], "then one of ours"
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_a_type_no_schema_can_describe_is_a_definition_error():
    class Basket:
        pass

    with pytest.raises(ToolDefinitionError, match=r"cannot be described to a model: .*Basket"):

        @tool
        def weigh(basket: Basket) -> float:
            """Weigh a basket.

            Args:
                basket: The basket.
            """
            return 0.0
