"""Feature flags: stages by key group, sticky percentages, versions and tools switched
off, audited changes, and the admin routes."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agentlab.agents import ReActAgent
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, ToolMessage
from agentlab.models import FunctionModel
from agentlab.serve.gateway.ab import NoVersionAvailable, Router
from agentlab.serve.gateway.app import create_gateway_app
from agentlab.serve.gateway.config import AgentConfig, GatewayConfig
from agentlab.serve.gateway.flags import Flag, Flags, FlagTarget, ToolVariants, UnknownFlagError
from agentlab.serve.gateway.keys import ApiKey, SQLiteKeyStore
from agentlab.serve.gateway.shared_state import SQLiteState

pytestmark = pytest.mark.timeout(60)

ECHO = "gateway_fixtures.agents:echo"
ECHO_V2 = "gateway_fixtures.agents:echo_v2"


def refund() -> str:
    """Refund the customer's last order."""
    return "refunded"


def lookup() -> str:
    """Look the order up."""
    return "order 42"


def support() -> ReActAgent:
    """Calls `refund` whether or not it is offered, then reports what it was offered
    and what the call gave."""

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> Any:
        last = messages[-1]
        offered = ",".join(sorted(t.name for t in tools))
        if isinstance(last, ToolMessage):
            return f"offered={offered} result={last.content}"
        return AssistantMessage(tool_calls=[ToolCall(id="c1", name="refund", arguments="{}")])

    return ReActAgent(FunctionModel(reply, name="support"), [refund, lookup], name="support")


def key(owner: str = "acme", groups: tuple[str, ...] = ()) -> ApiKey:
    return ApiKey(
        id="0" * 16, owner=owner, scopes=("agents:*",), groups=groups, created_at=datetime.now(UTC)
    )


INTERNAL, BETA, NOBODY = key(groups=("internal",)), key(groups=("beta",)), key()
V2 = FlagTarget(agent="echo", version="2")


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ("off", (False, False, False)),
        ("internal", (True, False, False)),
        ("beta", (True, True, False)),
        ("everyone", (True, True, True)),
    ],
)
def test_stages_by_key_group(stage, expected) -> None:
    flag = Flag(target=V2, stage=stage)
    assert tuple(flag.on_for("f", k, "alice") for k in (INTERNAL, BETA, NOBODY)) == expected


def test_group_names_are_configurable() -> None:
    flag = Flag(target=V2, stage="beta", internal_group="staff", beta_group="early")
    assert flag.on_for("f", key(groups=("early",)), None)
    assert not flag.on_for("f", BETA, None) and not flag.on_for("f", INTERNAL, None)


def test_percentages_are_sticky_per_user() -> None:
    flag = Flag(target=V2, stage="everyone", percent=25)
    on = [u for u in (f"u{i}" for i in range(10_000)) if flag.on_for("f", NOBODY, u)]
    assert len(on) == pytest.approx(2_500, abs=200)
    assert all(flag.on_for("f", NOBODY, u) for u in on)  # the same users every time
    wider = Flag(target=V2, stage="everyone", percent=50)
    assert all(wider.on_for("f", NOBODY, u) for u in on)  # 25% -> 50% keeps the first 25%
    other = [u for u in (f"u{i}" for i in range(10_000)) if flag.on_for("g", NOBODY, u)]
    assert len(set(on) & set(other)) < 1_000  # another flag picks other users
    # outside the stage, the percentage does not matter; no user: the key's owner
    assert not Flag(target=V2, stage="internal", percent=100).on_for("f", NOBODY, "u1")
    assert flag.on_for("f", key("u3"), None) == flag.on_for("f", NOBODY, "u3")


def test_a_flag_needs_a_target() -> None:
    with pytest.raises(ValueError, match="switches a version or a tool"):
        FlagTarget(agent="echo")
    with pytest.raises(ValueError, match="less than or equal to 100"):
        Flag(target=V2, percent=120)


def test_changes_are_audited_and_seen_by_other_workers(tmp_path) -> None:
    path = tmp_path / "gateway.sqlite"
    mine, theirs = Flags(SQLiteState(path, ttl_s=0.2)), Flags(SQLiteState(path, ttl_s=0.2))
    assert theirs.all() == {}
    mine.put("new-echo", Flag(target=V2, stage="internal"), who="ops")
    mine.put("new-echo", Flag(target=V2, stage="beta"), who="lead")
    deadline = time.monotonic() + 2
    while theirs.all().get("new-echo") != Flag(target=V2, stage="beta"):
        assert time.monotonic() < deadline, "the other worker never saw the flag change"
        time.sleep(0.05)
    mine.delete("new-echo", who="ops")
    with pytest.raises(UnknownFlagError, match="new-echo"):
        mine.get("new-echo")
    with pytest.raises(UnknownFlagError):
        mine.delete("new-echo", who="ops")
    audit = theirs.state.audit()
    assert [(a.action, a.who) for a in audit] == [
        ("flag.delete", "ops"),
        ("flag.put", "lead"),
        ("flag.put", "ops"),
    ]
    assert audit[2].before is None and audit[2].after["stage"] == "internal"
    assert (audit[1].before["stage"], audit[1].after["stage"]) == ("internal", "beta")
    assert (audit[0].before["stage"], audit[0].after) == ("beta", None)
    assert audit[0].at >= audit[1].at >= audit[2].at


def test_a_version_behind_a_disabled_flag_is_never_chosen(tmp_path) -> None:
    state = SQLiteState(tmp_path / "gateway.sqlite")
    flags = Flags(state)
    config = AgentConfig.model_validate(
        {
            "versions": [
                {"version": "1", "factory": ECHO, "weight": 1},
                {"version": "2", "factory": ECHO_V2, "weight": 1, "fallback": "1"},
            ]
        }
    )
    r = Router({"echo": config}, state, flags=flags)
    users = [f"u{i}" for i in range(1_000)]
    assert set(Counter(r.choose("echo", key=NOBODY, user=u).version for u in users)) == {"1", "2"}
    flags.put("v2", Flag(target=V2, stage="internal"), who="ops")
    assert {r.choose("echo", key=NOBODY, user=u).version for u in users} == {"1"}
    assert {r.choose("echo", key=BETA, user=u).version for u in users} == {"1"}
    internal = Counter(r.choose("echo", key=INTERNAL, user=u).version for u in users)
    assert internal["2"] == pytest.approx(500, abs=60)
    flags.put("v1", Flag(target=FlagTarget(agent="echo", version="1")), who="ops")  # off
    with pytest.raises(NoVersionAvailable, match="switched off by a feature flag"):
        r.choose("echo", key=NOBODY, user="u1")


def test_a_tool_flag_leaves_the_tool_out_of_the_run() -> None:
    agent = support()
    variants = ToolVariants()
    assert variants.without(agent, frozenset({"not-a-tool"})) is agent
    without = variants.without(agent, frozenset({"refund"}))
    assert without is variants.without(agent, frozenset({"refund"}))  # built once
    assert without.tool_names == ["lookup"] and agent.tool_names == ["refund", "lookup"]
    agent.trace = without.trace = False
    full = agent.run_sync("refund me")
    assert full.output == "offered=lookup,refund result=refunded"
    cut = without.run_sync("refund me")
    assert cut.output is not None and cut.output.startswith("offered=lookup result=Tool not")
    assert agent.run_sync("again").output == "offered=lookup,refund result=refunded"


# -- the admin routes ----------------------------------------------------------------------


@pytest.fixture()
def gateway(tmp_path) -> Any:
    store = SQLiteKeyStore(tmp_path / "ws" / "gateway.sqlite")
    keys = {
        "admin": store.create("ops", ["admin"])[1],
        "staff": store.create("staff", ["agents:*"], groups=["internal"])[1],
        "user": store.create("acme", ["agents:*"])[1],
    }
    cfg = GatewayConfig.model_validate(
        {
            "workspace": str(tmp_path / "ws"),
            "default_key_limits": {"requests": "10000/second"},
            "agents": {
                "support": {"versions": [{"version": "1", "factory": f"{__name__}:support"}]},
                "echo": {
                    "versions": [
                        {"version": "1", "factory": ECHO, "weight": 0},
                        {"version": "2", "factory": ECHO_V2, "weight": 1, "fallback": "1"},
                    ]
                },
            },
        }
    )
    with TestClient(create_gateway_app(cfg)) as client:

        def call(method: str, path: str, who: str = "admin", **kwargs: Any) -> Any:
            headers = {"Authorization": f"Bearer {keys[who]}"}
            return client.request(method, path, headers=headers, **kwargs)

        yield call


def test_flags_through_the_admin_routes(gateway) -> None:
    tool_flag = {"target": {"agent": "support", "tool": "refund"}, "stage": "internal"}
    put = gateway("PUT", "/v1/admin/flags/refunds", json=tool_flag)
    assert put.status_code == 200 and put.json()["stage"] == "internal"

    def run(agent: str, who: str) -> dict[str, Any]:
        answer = gateway("POST", f"/v1/agents/{agent}/runs", who, json={"input": "refund me"})
        assert answer.status_code == 200
        return answer.json()

    assert run("support", "staff")["output"] == "offered=lookup,refund result=refunded"
    assert run("support", "user")["output"].startswith("offered=lookup result=Tool not")
    assert run("echo", "user")["version"] == "2"
    version_flag = {"target": {"agent": "echo", "version": "2"}, "stage": "internal"}
    assert gateway("PUT", "/v1/admin/flags/echo-v2", json=version_flag).status_code == 200
    assert (run("echo", "user")["version"], run("echo", "staff")["version"]) == ("1", "2")

    listed = gateway("GET", "/v1/admin/flags").json()
    assert sorted(listed) == ["echo-v2", "refunds"] and listed["refunds"]["percent"] == 100
    assert gateway("GET", "/v1/admin/flags/echo-v2").json()["target"]["version"] == "2"
    assert gateway("DELETE", "/v1/admin/flags/echo-v2").status_code == 200
    assert run("echo", "user")["version"] == "2"  # the flag is gone: version 2 is back

    audit = gateway("GET", "/v1/admin/audit", params={"limit": 2}).json()
    assert [(a["action"], a["name"], a["who"]) for a in audit] == [
        ("flag.delete", "flag/echo-v2", "ops"),
        ("flag.put", "flag/echo-v2", "ops"),
    ]
    assert audit[0]["before"]["stage"] == "internal" and audit[0]["after"] is None


@pytest.mark.parametrize(
    ("method", "path", "who", "body", "status", "message"),
    [
        ("GET", "/v1/admin/flags", "user", None, 403, "lacks the scope 'admin'"),
        ("GET", "/v1/admin/audit", "staff", None, 403, "lacks the scope 'admin'"),
        ("GET", "/v1/admin/flags/nope", "admin", None, 404, "no feature flag is named 'nope'"),
        ("DELETE", "/v1/admin/flags/nope", "admin", None, 404, "no feature flag"),
        ("GET", "/v1/admin/audit?limit=0", "admin", None, 422, "limit must be between"),
        (
            "PUT",
            "/v1/admin/flags/x",
            "admin",
            {"target": {"agent": "echo", "version": "9"}},
            422,
            "names no served agent, version or tool",
        ),
        (
            "PUT",
            "/v1/admin/flags/x",
            "admin",
            {"target": {"agent": "support", "tool": "delete_everything"}},
            422,
            "tools ['lookup', 'refund']",
        ),
        (
            "PUT",
            "/v1/admin/flags/x",
            "admin",
            {"target": {"agent": "echo", "version": "2"}, "stage": "sometimes"},
            422,
            "stage",
        ),
        ("PUT", "/v1/admin/flags/x", "admin", {"target": {"agent": "echo"}}, 422, "a version"),
        (
            "PUT",
            "/v1/admin/flags/a b",
            "admin",
            {"target": {"agent": "echo", "version": "2"}},
            422,
            "flag name 'a b'",
        ),
    ],
)
def test_admin_route_rejections(gateway, method, path, who, body, status, message) -> None:
    answer = gateway(method, path, who, **({"json": body} if body is not None else {}))
    assert answer.status_code == status
    error = answer.json()["error"]
    assert set(answer.json()) == {"error"} and message in error["message"]
    assert gateway("GET", "/v1/admin/audit").json() == []  # nothing was changed
