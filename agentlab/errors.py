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
            f"{package!r} is not installed. Install it with: "
            f"pip install 'agentlab-toolkit[{extra}]'"
        )
        self.package = package
        self.extra = extra


class RunError(AgentlabError):
    """A failure while running an agent."""


class ModelError(RunError):
    """The model could not produce a usable response.

    `hint` says what to do about it (the run's explanation quotes it);
    `retryable` whether trying the same request again may succeed;
    `retry_after` the seconds the server asked to wait (``Retry-After``).
    """

    default_hint = "Read the error above; if it is a bug in a provider, report it."

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        retryable: bool = False,
        hint: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.retryable = retryable
        self.hint = hint or self.default_hint
        self.status_code = status_code
        self.retry_after = retry_after


class ModelUnavailableError(ModelError):
    """The model endpoint could not be reached, timed out, or answered 429 or 5xx."""

    default_hint = (
        "Check that the model server is running and reachable at the configured base "
        "URL, then run again; or give the agent a fallback model (fallback=[...])."
    )

    def __init__(self, message: str, **kwargs: object) -> None:
        kwargs.setdefault("retryable", True)
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class CircuitOpenError(ModelUnavailableError):
    """The endpoint's circuit breaker is open: the request was refused without being
    sent (not retried; a fallback model takes over)."""

    default_hint = (
        "Wait for the circuit breaker's next probe, fix the endpoint, or give the agent "
        "a fallback model (fallback=[...]) to take over meanwhile."
    )

    def __init__(self, message: str, **kwargs: object) -> None:
        kwargs["retryable"] = False
        super().__init__(message, **kwargs)


class ModelAuthError(ModelError):
    """The model endpoint rejected the credentials (401/403): never retried."""

    default_hint = (
        "Check the API key (the api_key argument or OPENAI_API_KEY) and that it is "
        "allowed to use this model."
    )


class ModelRequestError(ModelError):
    """The endpoint refused the request itself (400, 404, 422): never retried."""

    default_hint = (
        "The server named what it refused above: check the model name, the settings "
        "(max_tokens, temperature) and that the server supports tool calls."
    )


class MalformedResponseError(ModelError):
    """The endpoint answered, but its body could not be read as a chat completion."""

    default_hint = (
        "The server sent a reply that is not a chat completion: check that the base "
        "URL points at an OpenAI-compatible /v1 endpoint, or try again later."
    )

    def __init__(self, message: str, **kwargs: object) -> None:
        kwargs.setdefault("retryable", True)
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class UnexpectedModelOutputError(ModelError):
    """The model replied with something that is neither a tool call nor an answer."""

    default_hint = "Try a more capable model, a lower temperature, or fewer and clearer tools."

    def __init__(self, message: str, *, model: str = "", raw: str = "") -> None:
        super().__init__(message, model=model, retryable=True)
        self.raw = raw


class ModelRequestsBlockedError(ModelError):
    """Real model requests are blocked (tests block them unless a test opts in)."""

    default_hint = "Use a scripted model here, or opt in with allow_model_requests(True)."


class AllModelsFailedError(ModelError):
    """Every model of a :class:`~agentlab.models.FallbackModel` failed."""

    def __init__(self, message: str, errors: list[ModelError], *, model: str = "") -> None:
        last = errors[-1] if errors else None
        super().__init__(
            message,
            model=model,
            retryable=False,
            hint=last.hint if last is not None else None,
        )
        self.errors = errors


class BudgetExceededError(RunError):
    """A run reached one of its limits (:class:`~agentlab.budgets.Budget`).

    A control signal: the run ends with status ``budget_exceeded`` and an
    explanation naming the budget, what was spent, and what to change.
    """

    def __init__(self, message: str, *, budget: str, limit: float, spent: float, hint: str) -> None:
        super().__init__(message)
        self.budget = budget
        self.limit = limit
        self.spent = spent
        self.hint = hint


class ToolRetry(AgentlabError):
    """Raise inside a tool to send `message` back to the model as a correction."""


class ApprovalRequired(AgentlabError):
    """Control signal: a tool call needs a person's approval before it runs; the
    run pauses (status ``paused``) until it is resumed with a decision."""

    kind = "approval"

    def __init__(self, tool: str, arguments: str, key: str) -> None:
        super().__init__(f"tool {tool!r} needs approval before it runs ({arguments})")
        self.tool = tool
        self.arguments = arguments
        self.key = key

    @property
    def question(self) -> str:
        """What the person is asked."""
        return f"Approve the call to {self.tool!r} with {self.arguments}?"


class OutcomeUnknown(ApprovalRequired):
    """Control signal: a recovered run's process died inside this side-effecting
    call, and the tool cannot deduplicate it (it takes no idempotency key), so
    whether it happened is unknown: the run pauses for a person instead of making
    the call again blindly."""

    kind = "outcome_unknown"

    @property
    def question(self) -> str:
        return (
            f"The process making the call to {self.tool!r} with {self.arguments} stopped "
            "inside it (killed or crashed), so whether it happened is unknown, and the tool "
            "cannot deduplicate it (it takes no IdempotencyKey). Check the system behind it, "
            "then resume with answer='what happened' if it happened (the model is told), "
            "approve=True to make the call again, or approve=False to not make it."
        )


class TraceStoreError(AgentlabError):
    """The trace store could not be opened, migrated or queried."""


class MemoryStoreError(AgentlabError):
    """A memory store (short-term key-value or long-term vector) failed: it could
    not be opened or reached, or a stored value does not match the requested type."""
