"""Agents and the run loop they share."""

from agentlab.agents.agent import Agent, Tracer
from agentlab.agents.plan import Plan, PlanStep, plan_diff
from agentlab.agents.plan_execute import PlanExecuteAgent
from agentlab.agents.react import ReActAgent
from agentlab.agents.records import RunResult, Step, ToolCallRecord
from agentlab.agents.replay_diff import RunDiff, StepDiff
from agentlab.agents.replaying import replay, replay_sync
from agentlab.agents.run import Run
from agentlab.agents.state_machine import State, StateBudget, StateMachine, Transition
from agentlab.agents.state_machine_agent import StateMachineAgent
from agentlab.redact import install_log_redaction

# Secrets never reach agentlab's log lines either (its loggers only; idempotent).
install_log_redaction()

__all__ = [
    "Agent",
    "Plan",
    "PlanExecuteAgent",
    "PlanStep",
    "ReActAgent",
    "Run",
    "RunDiff",
    "RunResult",
    "State",
    "StateBudget",
    "StateMachine",
    "StateMachineAgent",
    "Step",
    "StepDiff",
    "ToolCallRecord",
    "Tracer",
    "Transition",
    "plan_diff",
    "replay",
    "replay_sync",
]
