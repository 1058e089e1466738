"""A tracer that keeps a run's events in memory, for tests of what gets recorded."""

from __future__ import annotations

from typing import Any


class Recorder:
    """Pass as ``trace=``; ``of(EventType)`` lists the recorded events of that type."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, event: Any) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]
