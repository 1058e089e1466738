"""The customer-support demo: a small shop database in DuckDB, support tools over
it, a ReAct agent, scripted questions with expected answers, and a runner that
prints per-run metrics and a SQL query over the traces (``agentlab demo``)."""

from agentlab.demo.database import (
    create_demo_database,
    demo_database_path,
    shared_demo_database,
)
from agentlab.demo.questions import QUESTIONS, DemoQuestion, ExpectedCall
from agentlab.demo.runner import run_demo
from agentlab.demo.support import build_support_agent, support_tools

__all__ = [
    "QUESTIONS",
    "DemoQuestion",
    "ExpectedCall",
    "build_support_agent",
    "create_demo_database",
    "demo_database_path",
    "run_demo",
    "shared_demo_database",
    "support_tools",
]
