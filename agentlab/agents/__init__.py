"""Agents and the run loop they share."""

from agentlab.agents.agent import Agent
from agentlab.agents.react import ReActAgent
from agentlab.agents.records import RunResult, Step, ToolCallRecord
from agentlab.agents.run import Run, Tracer

__all__ = ["Agent", "ReActAgent", "Run", "RunResult", "Step", "ToolCallRecord", "Tracer"]
