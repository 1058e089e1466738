"""The tool linter: each rule on tools that break it and on tools that do not, the
options (ignore, thresholds), the report's views, the repo's own agents, and the
`agentlab lint` command."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from agentlab.agents import ReActAgent
from agentlab.cli import app
from agentlab.demo.support import build_support_agent
from agentlab.errors import UserError
from agentlab.export.exporter import lint_notebook
from agentlab.memory.tools import recall, remember
from agentlab.messages import ToolDefinition
from agentlab.models import FunctionModel
from agentlab.tools import LintReport, Tool, lint_tools

ROOT = Path(__file__).parents[1]
SAMPLE = Path(__file__).parent / "data" / "capitals_agent.ipynb"
GOOD_TEXT = "Look up the weather forecast of a city for the next five days, by the hour."


def definition(
    name: str = "get_forecast",
    description: str = GOOD_TEXT,
    properties: dict[str, Any] | None = None,
) -> ToolDefinition:
    """A tool as the model sees it, built by hand (not by @tool)."""
    return ToolDefinition(
        name=name,
        description=description,
        parameters={"type": "object", "properties": properties or {}},
    )


def findings(report: LintReport, rule: str) -> list[tuple[str, str | None, str | None]]:
    """(severity, tool, parameter) of the findings of `rule`."""
    return [(f.severity, f.tool, f.parameter) for f in report.findings if f.rule == rule]


# -- names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["search", "get_data", "run", "do", "process", "tool", "helper", "tool2", "doIt"]
)
def test_generic_names_are_errors(name: str) -> None:
    report = lint_tools([definition(name)])
    assert findings(report, "generic_name") == [("error", name, None)]
    assert not report.ok and report.errors[0].rule == "generic_name"


@pytest.mark.parametrize(
    "name", ["get_forecast", "search_products", "recall", "capital", "log_in", "order_status"]
)
def test_names_that_say_the_domain_pass(name: str) -> None:
    assert findings(lint_tools([definition(name)]), "generic_name") == []


def test_a_generic_name_gets_a_name_from_its_description() -> None:
    text = "Search the product catalogue by keyword; gives matching products with prices."
    (finding,) = lint_tools([definition("search", text)]).errors
    assert "'search_product_catalogue' (from its description)" in finding.fix
    assert "generic words only (search)" in finding.message


# -- descriptions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("description", "severity", "says"),
    [
        ("", "error", "has no description"),
        ("TODO: write this", "error", "placeholder (todo)"),
        ("Does stuff.", "error", "says nothing the name does not"),
        ("Gets the forecast.", "error", "says nothing the name does not"),
        ("Hourly city weather.", "error", "3 words long"),
        ("The weather of a city.", "info", "brief (5 words)"),
    ],
)
def test_vague_descriptions(description: str, severity: str, says: str) -> None:
    report = lint_tools([definition(description=description)])
    (finding,) = [f for f in report.findings if f.rule == "vague_description"]
    assert finding.severity == severity and says in finding.message
    assert finding.fix


def test_a_description_that_says_what_and_when_passes() -> None:
    assert lint_tools([definition()]).findings == ()


# -- parameters -----------------------------------------------------------------------


def test_parameter_descriptions() -> None:
    report = lint_tools(
        [
            definition(
                properties={
                    "city": {"type": "string"},
                    "x": {"type": "number"},
                    "unit_system": {"type": "string", "description": "The unit system."},
                    "hours": {
                        "type": "integer",
                        "maximum": 120,
                        "description": "How far ahead, like 48.",
                    },
                }
            )
        ]
    )
    assert findings(report, "parameter_description") == [
        ("error", "get_forecast", "x"),  # no description and a name that says nothing
        ("warning", "get_forecast", "city"),
        ("warning", "get_forecast", "unit_system"),  # only repeats its name
    ]
    (x,) = report.errors
    assert "telling name instead of 'x'" in x.fix and "type (number)" in x.message


class Filter(BaseModel):
    """Which orders."""

    status: str = Field(description="Only orders in this state, like shipped.")


class CheckedFilter(BaseModel):
    """Which orders."""

    status: Literal["open", "shipped"] = Field(description="Only orders in this state.")


def free_parameters(
    customer_id: str,
    placed_since: str,
    contact_email: str,
    callback_url: str,
    limit: int,
    offset: int,
    sort_by: str = "date",
    filter: Filter | None = None,
    order_ids: list[str] | None = None,
) -> list[str]:
    """List the orders of a customer, newest first, with their status and total.

    Args:
        customer_id: The customer's id, like C-001.
        placed_since: Only orders placed on or after this day, like 2024-05-01.
        contact_email: Where the customer wants news, like ana@example.com.
        callback_url: Called when the list is ready, like https://example.com/hook.
        limit: At most this many orders, like 20.
        offset: Orders to skip first, like 40.
        sort_by: What comes first: date or total.
        filter: Only orders that match.
        order_ids: Only these orders, like ["O-1001"].
    """
    return []


def checked_parameters(
    customer_id: Annotated[str, Field(pattern=r"^C-[0-9]{3}$")],
    placed_since: date,
    contact_email: Annotated[str, Field(pattern=r"^\S+@\S+$")],
    callback_url: Annotated[str, Field(json_schema_extra={"format": "uri"})],
    limit: Annotated[int, Field(ge=1, le=100)],
    offset: Annotated[int, Field(ge=0)],
    sort_by: Literal["date", "total"] = "date",
    filter: CheckedFilter | None = None,
    order_ids: list[Annotated[str, Field(pattern=r"^O-[0-9]{4}$")]] | None = None,
) -> list[str]:
    return []


checked_parameters.__doc__ = free_parameters.__doc__
list_orders = Tool(free_parameters, name="list_orders")
list_orders_checked = Tool(checked_parameters, name="list_orders")


def test_free_strings_and_unbounded_numbers_where_a_constraint_is_expected() -> None:
    report = lint_tools([list_orders])
    by_parameter = {f.parameter: f for f in report.findings if f.rule == "parameter_constraint"}
    assert sorted(by_parameter) == sorted(
        [
            "customer_id",
            "placed_since",
            "contact_email",
            "callback_url",
            "limit",
            "offset",
            "sort_by",
            "filter.status",  # nested models are walked
            "order_ids",  # and the items of lists
        ]
    )
    assert all(f.severity == "warning" for f in by_parameter.values())
    assert "pattern=" in by_parameter["customer_id"].fix
    assert "datetime.date" in by_parameter["placed_since"].fix
    assert "EmailStr" in by_parameter["contact_email"].fix
    assert "AnyUrl" in by_parameter["callback_url"].fix
    assert "le=100" in by_parameter["limit"].fix
    assert "ge=0" in by_parameter["offset"].fix
    assert "Literal[" in by_parameter["sort_by"].fix


def test_constrained_parameters_pass() -> None:
    assert findings(lint_tools([list_orders_checked]), "parameter_constraint") == []


# -- overlaps ---------------------------------------------------------------------------


def test_overlapping_tools() -> None:
    orders = "List the orders of a customer with their status and totals, newest first."
    customer = {"customer_id": {"type": "string", "pattern": "^C-", "description": "Like C-001."}}
    report = lint_tools(
        [
            definition("find_orders", orders, customer),
            definition("search_orders", orders, customer),  # a duplicate of find_orders
            definition("get_forecast"),
            definition("get_forecasts", "The hourly outlook for one town, sun and rain."),
            definition("city_weather", GOOD_TEXT.replace("Look up", "Give")),
        ]
    )
    assert findings(report, "overlap") == [
        ("error", "find_orders", None),
        ("warning", "get_forecast", None),
        ("warning", "get_forecast", None),
    ]
    duplicate, names, texts = [f for f in report.findings if f.rule == "overlap"]
    assert duplicate.other == "search_orders" and "like duplicates" in duplicate.message
    assert "names 100% alike" in duplicate.message
    assert "the same parameters (customer_id)" in duplicate.message
    assert names.other == "get_forecasts" and "names 100% alike" in names.message
    assert texts.other == "city_weather" and "descriptions 100% alike" in texts.message
    assert "shared words: weather, forecast, city" in texts.message
    assert "Use city_weather instead when" in texts.fix


def test_same_name_twice_is_an_error() -> None:
    report = lint_tools([definition(), definition()])
    assert findings(report, "overlap") == [("error", "get_forecast", None)]
    assert "2 tools are named 'get_forecast'" in report.errors[0].message


def test_tools_that_differ_pass() -> None:
    other = definition("convert_currency", "Convert an amount of money between two currencies.")
    assert findings(lint_tools([definition(), other]), "overlap") == []


# -- how many --------------------------------------------------------------------------


def many(n: int) -> list[ToolDefinition]:
    """`n` distinct, well described tools: half about orders, half about customers."""
    subjects = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    subjects += ["india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa"]
    subjects += ["quebec", "romeo", "sierra", "tango", "uniform", "victor"]
    return [
        definition(
            f"{'order' if i % 2 else 'customer'}_{subjects[i]}",
            f"Report on the {subjects[i]} {'orders' if i % 2 else 'customers'} "
            f"region {subjects[i]}: totals by week, month and year.",
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(("n", "expected"), [(15, []), (16, ["warning"]), (21, ["error"])])
def test_too_many_tools(n: int, expected: list[str]) -> None:
    report = lint_tools(many(n), ignore=["overlap"])
    assert [f.severity for f in report.findings if f.rule == "too_many_tools"] == expected


def test_too_many_tools_suggests_a_split_by_domain() -> None:
    (finding,) = lint_tools(many(21), ignore=["overlap"]).errors
    assert finding.tool is None and finding.where == "(tool set)"
    assert "21 tools on one agent" in finding.message
    assert "customer: customer_alpha, customer_charlie" in finding.fix
    assert "order: order_bravo, order_delta" in finding.fix


def test_thresholds_are_set_by_keyword() -> None:
    assert findings(lint_tools(many(6), max_tools_warning=5), "too_many_tools") == [
        ("warning", None, None)
    ]
    brief = [definition(description="The weather of a city.")]
    assert findings(lint_tools(brief, brief_description_words=4), "vague_description") == []
    assert findings(lint_tools(brief, min_description_words=6), "vague_description") == [
        ("error", "get_forecast", None)
    ]
    with pytest.raises(UserError, match=r"max_tools_warning .* is above max_tools_error"):
        lint_tools([], max_tools_warning=30)
    with pytest.raises(UserError, match=r"name_similarity must be a number in \(0, 1\]"):
        lint_tools([], name_similarity=0)


# -- ignore -----------------------------------------------------------------------------


def test_ignore_rules_everywhere_or_per_tool_or_parameter() -> None:
    tools = [
        definition("search", GOOD_TEXT, {"q": {"type": "string"}}),
        definition("run", GOOD_TEXT + " Run it."),
    ]
    assert {f.tool for f in lint_tools(tools).errors} == {"search", "run"}
    report = lint_tools(tools, ignore={"generic_name": ["search"]})
    assert findings(report, "generic_name") == [("error", "run", None)]
    assert findings(lint_tools(tools, ignore=["generic_name"]), "generic_name") == []
    assert findings(lint_tools(tools, ignore="generic_name"), "generic_name") == []
    assert findings(lint_tools(tools, ignore={"generic_name": "*"}), "generic_name") == []
    assert (
        findings(
            lint_tools(tools, ignore={"parameter_description": ["search.q"]}),
            "parameter_description",
        )
        == []
    )
    assert findings(lint_tools(tools, ignore={"overlap": ["run"]}), "overlap") == []


@pytest.mark.parametrize(
    ("ignore", "message"),
    [
        (["generic_names"], "no lint rule 'generic_names'; the rules are generic_name, "),
        ({"generic_name": ["serch"]}, "names 'serch', which is not a tool here"),
        ({"generic_name": "search"}, r"must be a list of tool names, like \['search'\]"),
    ],
)
def test_bad_ignores_are_refused(ignore: Any, message: str) -> None:
    with pytest.raises(UserError, match=message):
        lint_tools([definition("search")], ignore=ignore)


# -- what it lints ------------------------------------------------------------------------


def test_lints_what_the_model_sees_of_any_kind_of_tool() -> None:
    def get_forecast(city: str) -> str:
        """Look up the weather forecast of a city for the next five days, by the hour.

        Args:
            city: The city, like Paris.
        """
        return "sunny"

    openai = {"type": "function", "function": definition("run").model_dump()}
    anthropic = {"name": "do", "description": "", "input_schema": {"type": "object"}}
    report = lint_tools([get_forecast, openai, anthropic, definition("tool")])
    assert report.tools == ("get_forecast", "run", "do", "tool")
    assert {f.tool for f in report.findings if f.rule == "generic_name"} == {"run", "do", "tool"}

    assert lint_tools(Tool(get_forecast)).tools == ("get_forecast",)  # one tool
    agent = ReActAgent(FunctionModel(lambda m, t: "ok"), [Tool(get_forecast)], trace=False)
    assert lint_tools(agent).subject == "agent 'agent'" and lint_tools(agent).tools == (
        "get_forecast",
    )


@pytest.mark.parametrize("bad", ["search", 42, [object()], [{"description": "no name"}]])
def test_bad_targets_are_refused(bad: Any) -> None:
    with pytest.raises(UserError, match="lint_tools"):
        lint_tools(bad)


def test_a_function_without_docstring_is_refused_by_tool_itself() -> None:
    def nameless(city: str) -> str:
        return city

    with pytest.raises(UserError, match="has no description"):
        lint_tools([nameless])


# -- the report -----------------------------------------------------------------------------


def test_report_views() -> None:
    report = lint_tools(
        [definition("get_data", "Does <stuff>."), definition(description="The weather of a city.")]
    )
    assert not report.ok
    assert [f.severity for f in report.findings] == ["error", "error", "info"]  # errors first
    assert len(report.errors) == 2 and report.warnings == [] and len(report.infos) == 1
    text = str(report)
    assert text.startswith("Tool lint: 2 tools, 2 errors, 0 warnings, 1 info\n")
    assert "  error    generic_name           get_data\n" in text and "fix: Rename it" in text

    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["tools"] == ["get_data", "get_forecast"]
    assert data["counts"] == {"error": 2, "warning": 0, "info": 1}
    assert data["findings"][0]["rule"] == "generic_name"
    assert set(data["findings"][0]) == {
        "rule", "severity", "tool", "parameter", "message", "fix", "other",
    }  # fmt: skip

    html = report._repr_html_()
    assert "Does &lt;stuff&gt;." in html and "<stuff>" not in html
    assert "var(--jp-error-color1" in html and "var(--jp-layout-color" in html
    assert '<span class="bad">error</span>' in html and '<span class="muted">info</span>' in html
    assert 'class="callout bad"' in html

    clean = lint_tools([definition()])
    assert clean.ok and "no findings" in str(clean) and 'class="callout ok"' in clean._repr_html_()


# -- the repo's own agents ------------------------------------------------------------------


def test_the_demo_agent_and_memory_tools_pass(tmp_path: Path) -> None:
    agent = build_support_agent("scripted:schema", db_path=tmp_path / "shop.duckdb", trace=False)
    report = lint_tools([*agent.tools, Tool(recall), Tool(remember)])
    assert report.findings == (), str(report)


@pytest.mark.slow  # imports nbformat and IPython's transformer (~2-6 s)
def test_the_repo_notebooks_export_agents_pass(workspace: Path) -> None:
    for notebook in (ROOT / "notebooks" / "01_build_an_agent.ipynb", SAMPLE):
        report = lint_notebook(notebook)
        assert report.ok, str(report)
    assert lint_notebook(SAMPLE).subject == "agent 'capitals'"


# -- `agentlab lint` ------------------------------------------------------------------------

BAD_MODULE = '''
from agentlab.tools import tool

# OpenAI-style definitions: the linter reads what the model is sent, however it was made.
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_data",
            "description": "Does stuff.",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
]


@tool
def get_weather_forecast(city: str) -> str:
    """The weather forecast of a city for the next five days, by the hour.

    Args:
        city: The city, like Paris.
    """
    return city


GOOD = [get_weather_forecast]


def build_tools():
    return [*TOOLS, get_weather_forecast]


def needs_arguments(path):
    return []
'''


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module with poor and good tools, importable from the working directory."""
    (tmp_path / "lint_target_tools.py").write_text(textwrap.dedent(BAD_MODULE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "lint_target_tools", raising=False)
    return "lint_target_tools"


def test_cli_lints_module_attributes_and_factories(module: str) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["lint", f"{module}:TOOLS"])
    assert result.exit_code == 1, result.output
    assert "Tool lint: 1 tool, 3 errors" in result.output
    assert "generic_name" in result.output and "fix:" in result.output

    result = runner.invoke(app, ["lint", f"{module}:GOOD"])
    assert result.exit_code == 0 and "no findings" in result.output

    result = runner.invoke(app, ["lint", f"{module}:build_tools", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.output)["tools"] == ["get_data", "get_weather_forecast"]

    ignored = ["--ignore", "generic_name", "--ignore", "vague_description=get_data"]
    ignored += ["--ignore", "parameter_description=get_data.q"]
    result = runner.invoke(app, ["lint", f"{module}:TOOLS", *ignored, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["counts"]["error"] == 0


def test_cli_thresholds_and_bad_options(module: str) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["lint", f"{module}:GOOD", "--threshold", "max_tools_warning=0", "--json"]
    )
    assert result.exit_code == 0
    assert json.loads(result.output)["counts"]["warning"] == 1
    result = runner.invoke(app, ["lint", f"{module}:GOOD", "--threshold", "max_tools=3"])
    assert isinstance(result.exception, UserError)
    assert "the thresholds are brief_description_words" in str(result.exception)
    result = runner.invoke(app, ["lint", f"{module}:GOOD", "--threshold", "name_similarity=x"])
    assert "'x' is not a number" in str(result.exception)
    result = runner.invoke(app, ["lint", f"{module}:needs_arguments"])
    assert result.exit_code == 2 and "takes arguments" in result.output
    result = runner.invoke(app, ["lint", f"{module}:MISSING"])
    assert result.exit_code == 2 and "cannot import" in result.output


@pytest.mark.slow  # three processes (~4 s)
def test_cli_lints_a_notebook_and_exits_by_severity(module: str, tmp_path: Path) -> None:
    """The real entry point, in a process of its own: exit 0 (notebook) and 1 (errors)."""
    command = [sys.executable, "-m", "agentlab.cli", "lint"]
    done = subprocess.run(
        [*command, str(SAMPLE)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "Tool lint of agent 'capitals': 1 tool, 0 errors" in done.stdout
    done = subprocess.run(
        [*command, f"{module}:TOOLS", "--json"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["ok"] is False
    done = subprocess.run(
        [*command, str(tmp_path / "nowhere.ipynb")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.startswith("agentlab: No notebook at")
