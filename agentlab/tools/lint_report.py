"""The tool linter's findings and report, as text, HTML and JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from agentlab._html import box, callout, esc, table

__all__ = ["SEVERITIES", "LintFinding", "LintReport", "Severity"]

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")
_TONE = {"error": "bad", "warning": "warn", "info": "muted"}


@dataclass(frozen=True, slots=True)
class LintFinding:
    """One problem in a tool set: which rule, how bad, where, what, and the fix.

    `tool` is None for a finding about the whole set (too many tools); `parameter`
    is a dotted path into the tool's arguments (``filter.status``) or None;
    `other` is the second tool of an overlap.
    """

    rule: str
    severity: Severity
    tool: str | None
    parameter: str | None
    message: str
    fix: str
    other: str | None = None

    @property
    def where(self) -> str:
        """``tool``, ``tool.parameter``, ``tool / other`` or ``(tool set)``."""
        if self.tool is None:
            return "(tool set)"
        if self.parameter:
            return f"{self.tool}.{self.parameter}"
        return f"{self.tool} / {self.other}" if self.other else self.tool

    def to_dict(self) -> dict[str, Any]:
        """The finding as a JSON-able dict."""
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.message} Fix: {self.fix}"


@dataclass(frozen=True)
class LintReport:
    """What :func:`~agentlab.tools.lint_tools` returns: the findings, errors first.

    `subject` names the agent linted ("agent 'support'"; "" for a list of tools).
    `ok` is True when there is no error (warnings and notes do not fail it).
    """

    subject: str
    tools: tuple[str, ...]
    findings: tuple[LintFinding, ...]

    @property
    def errors(self) -> list[LintFinding]:
        """The findings of severity ``error``: the ones that fail CI and block export."""
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[LintFinding]:
        """The findings of severity ``warning``."""
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def infos(self) -> list[LintFinding]:
        """The findings of severity ``info``: suggestions."""
        return [f for f in self.findings if f.severity == "info"]

    @property
    def ok(self) -> bool:
        """No errors."""
        return not self.errors

    def counts(self) -> dict[str, int]:
        """How many findings of each severity."""
        return {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}

    def summary(self) -> str:
        """``agent 'x': 3 tools, 1 error, 2 warnings, 0 infos`` (no subject for a list)."""
        counts = ", ".join(f"{n} {s}{'' if n == 1 else 's'}" for s, n in self.counts().items())
        plural = "" if len(self.tools) == 1 else "s"
        head = f"{self.subject}: " if self.subject else ""
        return f"{head}{len(self.tools)} tool{plural}, {counts}"

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-able dict."""
        return {
            "subject": self.subject,
            "ok": self.ok,
            "tools": list(self.tools),
            "counts": self.counts(),
            "findings": [f.to_dict() for f in self.findings],
        }

    def __str__(self) -> str:
        lines = [
            f"Tool lint of {self.summary()}" if self.subject else f"Tool lint: {self.summary()}"
        ]
        if not self.findings:
            lines.append("  no findings")
        for f in self.findings:
            lines.append(f"  {f.severity:<7}  {f.rule:<21}  {f.where}")
            lines.append(f"           {f.message}")
            lines.append(f"           fix: {f.fix}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        tone = "bad" if self.errors else "warn" if self.warnings else "ok"
        body = callout(esc(self.summary()), tone)
        rows = [
            [
                f'<span class="{_TONE[f.severity]}">{esc(f.severity)}</span>',
                f'<span class="tag">{esc(f.rule)}</span>',
                f"<code>{esc(f.where)}</code>",
                esc(f.message),
                esc(f.fix),
            ]
            for f in self.findings
        ]
        if rows:
            body += table(
                ["severity", "rule", "where", "problem", "fix"], rows, cls="agentlab-lint"
            )
        return box("Tool lint", body)
