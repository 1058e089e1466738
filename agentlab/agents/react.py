"""ReAct: think, act (call tools), observe the results, repeat until an answer."""

from __future__ import annotations

from agentlab.agents.agent import Agent
from agentlab.messages import Message, SystemMessage, UserMessage

__all__ = ["ReActAgent"]


class ReActAgent(Agent):
    """An agent that alternates reasoning and tool calls until it can answer."""

    default_instructions = (
        "You are a helpful assistant. Think step by step. Call a tool whenever it "
        "gives you information you need; read its result before the next step. When "
        "you have what you need, reply with the final answer and no tool call."
    )

    def opening_messages(self, input: str) -> list[Message]:
        return [SystemMessage(content=self.instructions), UserMessage(content=input)]
