"""Test doubles that run outside the agent.

:class:`FaultServer` is a misbehaving OpenAI-compatible chat-completions server on
loopback (rate limits, server errors, hangs, malformed replies, bad tool calls, flapping)
for tests, benchmarks and tutorials. Names are imported on first use, so that
``python -m agentlab.testing.fault_server`` runs cleanly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentlab.testing.fault_server import MODES, FaultServer, RequestRecord

__all__ = ["MODES", "FaultServer", "RequestRecord"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("agentlab.testing.fault_server"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
