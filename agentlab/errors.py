"""Errors, grouped by who must act.

* :class:`UserError` - the code that *defines* something is wrong (a tool without
  types, an unknown model string). Raised at definition time; fix the code.
* :class:`RunError` - something failed while an agent was running (the model was
  unreachable, its output could not be used). The run loop turns these into a
  plain-language explanation on the run; they are raised only to callers of the
  low-level APIs.
* :class:`ToolRetry` - a control signal a tool raises to send a message back to the
  model so it can correct its call.
"""

from __future__ import annotations


class AgentlabError(Exception):
    """Root of every error agentlab raises."""


class UserError(AgentlabError):
    """A definition is wrong: the message says what and how to fix it."""


class MissingExtraError(UserError, ImportError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package!r} is not installed. Install it with: pip install 'agentlab[{extra}]'"
        )
        self.package = package
        self.extra = extra


class RunError(AgentlabError):
    """A failure while running an agent."""


class ModelError(RunError):
    """The model could not produce a usable response."""

    def __init__(self, message: str, *, model: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.model = model
        self.retryable = retryable


class ModelUnavailableError(ModelError):
    """The model endpoint could not be reached or answered with a server error."""


class ModelAuthError(ModelError):
    """The model endpoint rejected the credentials."""


class UnexpectedModelOutputError(ModelError):
    """The model replied with something that is neither a tool call nor an answer."""

    def __init__(self, message: str, *, model: str = "", raw: str = "") -> None:
        super().__init__(message, model=model, retryable=True)
        self.raw = raw


class ModelRequestsBlockedError(ModelError):
    """Real model requests are blocked (tests block them unless a test opts in)."""


class ToolRetry(AgentlabError):
    """Raise inside a tool to send `message` back to the model as a correction."""


class TraceStoreError(AgentlabError):
    """The trace store could not be opened, migrated or queried."""


class MemoryStoreError(AgentlabError):
    """A memory store (short-term key-value or long-term vector) failed: it could
    not be opened or reached, or a stored value does not match the requested type."""
