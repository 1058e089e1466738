"""Agents and the run loop they share."""

from agentlab.agents.agent import Agent, Tracer
from agentlab.agents.react import ReActAgent
from agentlab.agents.records import RunResult, Step, ToolCallRecord
from agentlab.agents.run import Run
from agentlab.redact import install_log_redaction

# Secrets never reach agentlab's log lines either (its loggers only; idempotent).
install_log_redaction()

__all__ = ["Agent", "ReActAgent", "Run", "RunResult", "Step", "ToolCallRecord", "Tracer"]
