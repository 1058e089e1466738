"""Secrets stay out of the workspace: agents run with passwords, API keys and
tokens in their input, tool arguments, tool results and model URLs, then every
byte of the workspace (segments and DuckDB) is searched for them."""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import Sequence
from pathlib import Path

from agentlab import ReActAgent, tool
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, ToolMessage
from agentlab.models import FunctionModel, RetryPolicy
from agentlab.models.openai_compat import OpenAIModel
from agentlab.redact import install_log_redaction
from agentlab.testing import FaultServer
from agentlab.tracing import TraceStore

PASSWORD = "hunter2-correct-horse"
API_KEY = "sk-proj-abcdefghijklmnop1234567890"
URL_PASSWORD = "urlpass-7f3a9c"
TOKEN = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"
SECRETS = (PASSWORD, API_KEY, URL_PASSWORD, TOKEN)


@tool
def log_in(user: str, password: str) -> dict:
    """Log a user in.

    Args:
        user: The user name.
        password: The user's password.
    """
    return {"user": user, "session_token": TOKEN, "ok": True}


def logs_in(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
    if any(isinstance(m, ToolMessage) for m in messages):
        return AssistantMessage(content=f"Logged in; your token is {TOKEN}.")
    arguments = json.dumps({"user": "ada", "password": PASSWORD})
    return AssistantMessage(tool_calls=(ToolCall(id="c1", name="log_in", arguments=arguments),))


def every_byte(workspace: Path) -> bytes:
    return b"".join(p.read_bytes() for p in workspace.rglob("*") if p.is_file())


def test_no_secret_reaches_the_workspace_or_the_logs(workspace, allow_real_models, caplog) -> None:
    install_log_redaction()  # as agentlab.agents does on import (another test may undo it)
    store = TraceStore(workspace)
    agent = ReActAgent(FunctionModel(logs_in), [log_in], trace=store)
    result = agent.run_sync(f"Log me in: my password: {PASSWORD} and api_key={API_KEY}")
    assert result.ok and TOKEN in result.output, "the caller still gets its answer"

    with FaultServer(mode="server_error") as server, caplog.at_level(logging.DEBUG, "agentlab"):
        url = server.base_url.replace("http://", f"http://ada:{URL_PASSWORD}@")
        model = OpenAIModel("x", base_url=url, api_key=API_KEY, timeout=2)
        failed = ReActAgent(model, trace=store, retry=RetryPolicy(2, initial=0.01)).run_sync("hi")
        logging.getLogger("agentlab.test").warning("using key %s at %s", API_KEY, url)
    assert failed.status == "failed"
    assert URL_PASSWORD not in failed.explanation

    store.ingest()
    data = every_byte(workspace)
    assert b"log_in" in data and b"[REDACTED]" in data, "the runs were recorded"
    for secret in SECRETS:
        assert secret.encode() not in data, f"{secret[:6]}... found in the workspace"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert API_KEY not in logged and URL_PASSWORD not in logged


def test_workspace_files_are_readable_by_their_owner_only(workspace) -> None:
    store = TraceStore(workspace)
    ReActAgent(FunctionModel(lambda m, t: "hi"), trace=store).run_sync("hello")
    assert stat.S_IMODE(workspace.stat().st_mode) == 0o700
    segments = list((workspace / "traces" / "segments").glob("*.jsonl"))
    assert segments and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in segments)
