"""The fault server: every mode does what it says, driven by the real openai SDK and httpx."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from agentlab.errors import UserError
from agentlab.testing import MODES, FaultServer, RequestRecord

pytestmark = pytest.mark.timeout(30)

ORDER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_order",
        "description": "Look up an order.",
        "parameters": {
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "count": {"type": "integer", "minimum": 3},
                "price": {"type": "number"},
                "gift": {"type": "boolean"},
                "status": {"enum": ["shipped", "pending"]},
                "version": {"const": 2},
                "address": {"$ref": "#/$defs/Address"},
                "note": {"anyOf": [{"type": "null"}, {"type": "string"}]},
                "optional": {"type": "string"},
            },
            "required": [
                "order_id",
                "count",
                "price",
                "gift",
                "status",
                "version",
                "address",
                "note",
            ],
            "$defs": {
                "Address": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "zip": {"type": "integer"}},
                    "required": ["city"],
                }
            },
        },
    },
}
OTHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": "refund", "parameters": {"type": "object", "properties": {}}},
}
USER = [{"role": "user", "content": "What is the status of order O-1001?"}]


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


def make_client(srv: FaultServer, *, timeout: float = 3.0, **kw: Any) -> openai.OpenAI:
    kw.setdefault("max_retries", 0)
    kw.setdefault("api_key", "x")
    return openai.OpenAI(base_url=srv.base_url, timeout=timeout, **kw)


@pytest.fixture
def client(server: FaultServer) -> Iterator[openai.OpenAI]:
    c = make_client(server)
    yield c
    c.close()


def chat(c: openai.OpenAI, **kw: Any) -> Any:
    kw.setdefault("model", "gpt-test")
    kw.setdefault("messages", USER)
    return c.chat.completions.create(**kw)


def raw_post(srv: FaultServer, body: Any, path: str = "/v1/chat/completions", **kw: Any) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
    return httpx.post(srv.url + path, content=content, headers=headers, timeout=3.0, **kw)


# -- ok: the scripted model -------------------------------------------------------------


def test_ok_without_tools_echoes_the_last_user_message(server, client):
    reply = chat(client, model="my-model")
    assert reply.choices[0].message.content == USER[0]["content"]
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "my-model"
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.created > 0
    prompt_chars = len(json.dumps(USER))
    assert reply.usage.prompt_tokens == -(-prompt_chars // 4)
    assert reply.usage.completion_tokens == -(-len(USER[0]["content"]) // 4)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert server.requests == 1
    assert server.last_request is not None and server.last_request["model"] == "my-model"


def test_ok_calls_the_first_tool_with_schema_generated_arguments(client):
    reply = chat(client, tools=[ORDER_TOOL, OTHER_TOOL])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.id and call.type == "function"
    assert call.function.name == "get_order"
    assert json.loads(call.function.arguments) == {
        "order_id": "x",
        "count": 3,
        "price": 1.0,
        "gift": False,
        "status": "shipped",
        "version": 2,
        "address": {"city": "x"},
        "note": "x",
    }
    assert reply.usage.completion_tokens >= 1


def test_ok_answers_done_with_the_tool_result_once_it_came_back(client):
    result = "shipped " * 50
    messages = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_order", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": result},
    ]
    reply = chat(client, messages=messages, tools=[ORDER_TOOL])
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == "Done: " + result[:200]
    # A new user turn starts over: the tool is called again.
    again = chat(
        client, messages=[*messages, {"role": "user", "content": "and O-2?"}], tools=[ORDER_TOOL]
    )
    assert again.choices[0].message.tool_calls[0].function.name == "get_order"


def test_ok_honours_tool_choice(client):
    assert chat(client, tools=[ORDER_TOOL], tool_choice="none").choices[0].message.content
    named = chat(
        client,
        tools=[ORDER_TOOL, OTHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "refund"}},
    )
    assert named.choices[0].message.tool_calls[0].function.name == "refund"
    assert json.loads(named.choices[0].message.tool_calls[0].function.arguments) == {}


def test_models_lists_one_model(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["fault-model"]


# -- HTTP errors ------------------------------------------------------------------------


def test_rate_limit_is_429_with_retry_after_and_an_openai_error_body(server, client):
    server.set_mode("rate_limit", retry_after=1.5)
    with pytest.raises(openai.RateLimitError) as info:
        chat(client)
    assert info.value.status_code == 429
    assert info.value.response.headers["Retry-After"] == "1.5"
    assert info.value.code == "rate_limit_exceeded"
    raw = raw_post(server, {"model": "m", "messages": USER})
    assert raw.status_code == 429
    assert raw.headers["retry-after"] == "1.5"
    assert set(raw.json()["error"]) == {"message", "type", "param", "code"}
    assert server.requests_by_mode == {"rate_limit": 2}


def test_server_error_is_500_and_unavailable_is_503(server, client):
    server.set_mode("server_error")
    with pytest.raises(openai.InternalServerError) as info:
        chat(client)
    assert info.value.status_code == 500
    server.set_mode("unavailable")
    with pytest.raises(openai.InternalServerError) as info:
        chat(client)
    assert info.value.status_code == 503
    assert "retry-after" not in info.value.response.headers
    server.set_mode("unavailable", retry_after=2)
    with pytest.raises(openai.InternalServerError) as info:
        chat(client)
    assert info.value.response.headers["retry-after"] == "2"
    assert [r.status for r in server.log] == [500, 503, 503]


def test_the_sdk_honours_retry_after_and_the_server_counts_every_attempt(server):
    server.set_mode("flapping", fail=2, every=3, failure="rate_limit", retry_after=0.05)
    c = make_client(server, max_retries=2)
    started = time.monotonic()
    assert chat(c).choices[0].message.content
    assert time.monotonic() - started < 2.0
    assert server.requests == 3
    assert [r.status for r in server.log] == [429, 429, 200]


def test_401_without_the_api_key_and_it_is_not_retried():
    with FaultServer(api_key="secret") as srv:
        with pytest.raises(openai.AuthenticationError) as info:
            chat(make_client(srv, api_key="wrong", max_retries=3))
        assert info.value.status_code == 401
        assert srv.requests == 1
        assert srv.requests_by_mode == {"unauthorized": 1}
        assert httpx.get(srv.base_url + "/models", timeout=3).status_code == 401
        assert chat(make_client(srv, api_key="secret")).choices[0].message.content
        assert srv.requests_by_mode == {"unauthorized": 1, "ok": 1}


# -- hang -------------------------------------------------------------------------------


def test_hang_times_out_the_client_and_stop_is_still_fast(capfd):
    srv = FaultServer(mode="hang", seconds=30).start()
    try:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            chat(make_client(srv, timeout=0.5))
        assert 0.4 < time.monotonic() - started < 2.0
        # A second request is still hanging (its client waits) when the server stops.
        outcome: list[BaseException] = []

        def waiting() -> None:
            try:
                httpx.post(
                    srv.base_url + "/chat/completions",
                    json={"model": "m", "messages": USER},
                    timeout=10,
                )
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=waiting, daemon=True)
        thread.start()
        deadline = time.monotonic() + 3
        while srv.requests < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.requests == 2
        assert [r.status for r in srv.log] == [None, None]
    finally:
        started = time.monotonic()
        srv.stop()
        assert time.monotonic() - started < 1.0
    thread.join(timeout=3)
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.TransportError)
    assert capfd.readouterr().err == ""


def test_a_short_hang_answers_late_and_a_client_gone_mid_hang_breaks_nothing(server, capfd):
    server.set_mode("hang", seconds=0.3)
    started = time.monotonic()
    assert chat(make_client(server)).choices[0].message.content
    assert time.monotonic() - started >= 0.3
    assert server.log[-1].status == 200
    # This client leaves after 0.1 s; the server writes its reply to a closed socket.
    with pytest.raises(openai.APITimeoutError):
        chat(make_client(server, timeout=0.1))
    time.sleep(0.4)
    server.set_mode("ok")
    assert chat(make_client(server)).choices[0].message.content
    assert server.requests == 3
    assert capfd.readouterr().err == ""


# -- bad bodies and tool calls ----------------------------------------------------------


def test_malformed_makes_the_sdk_fail_to_parse(server, client):
    server.set_mode("malformed")
    with pytest.raises((json.JSONDecodeError, openai.APIResponseValidationError)):
        chat(client)
    raw = raw_post(server, {"model": "m", "messages": USER})
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw.content)
    server.set_mode("malformed", body="empty")
    assert raw_post(server, {"model": "m", "messages": USER}).content == b""
    server.set_mode("malformed", body="html")
    assert raw_post(server, {"model": "m", "messages": USER}).text.startswith("<html>")
    server.set_mode("malformed", body="no_choices")
    assert chat(client).choices == []


def test_invalid_arguments_are_not_json_or_break_the_schema(server, client):
    server.set_mode("invalid_arguments")
    call = chat(client, tools=[ORDER_TOOL]).choices[0].message.tool_calls[0]
    assert call.function.name == "get_order"
    with pytest.raises(json.JSONDecodeError):
        json.loads(call.function.arguments)
    server.set_mode("invalid_arguments", kind="schema")
    call = chat(client, tools=[ORDER_TOOL]).choices[0].message.tool_calls[0]
    args = json.loads(call.function.arguments)
    assert "order_id" not in args  # a required property is missing
    assert args["count"] == 3


def test_unknown_tool_calls_a_tool_that_was_not_offered(server, client):
    server.set_mode("unknown_tool")
    reply = chat(client, tools=[ORDER_TOOL])
    assert reply.choices[0].finish_reason == "tool_calls"
    assert reply.choices[0].message.tool_calls[0].function.name == "no_such_tool"
    server.set_mode("unknown_tool", name="get_order")  # never one that was offered
    name = chat(client, tools=[ORDER_TOOL]).choices[0].message.tool_calls[0].function.name
    assert name != "get_order" and name.startswith("get_order")


# -- flapping and counters --------------------------------------------------------------


def test_flapping_fails_exactly_fail_of_every(server, client):
    server.set_mode("flapping", fail=2, every=3, failure="server_error")
    outcomes = []
    for _ in range(9):
        try:
            chat(client)
            outcomes.append("ok")
        except openai.InternalServerError:
            outcomes.append("fail")
    assert outcomes == ["fail", "fail", "ok"] * 3
    assert server.requests == 9
    assert server.requests_by_mode == {"server_error": 6, "ok": 3}


def test_counts_are_exact_under_concurrency_and_reset(server):
    def one() -> None:
        c = make_client(server)
        chat(c)
        c.close()

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert server.requests == 16
    assert server.requests_by_mode == {"ok": 16}
    record = server.log[0]
    assert isinstance(record, RequestRecord)
    when, mode, status = record
    assert abs(when - time.time()) < 10 and mode == "ok" and status == 200
    server.reset_counts()
    assert (server.requests, server.requests_by_mode, server.log) == (0, {}, [])


def test_set_mode_rejects_unknown_modes_and_parameters(server):
    with pytest.raises(UserError, match="unknown fault mode 'nope'"):
        server.set_mode("nope")
    with pytest.raises(UserError, match="unknown parameter"):
        server.set_mode("server_error", retry_after=1)
    with pytest.raises(UserError, match="fail <= every"):
        server.set_mode("flapping", fail=3, every=2)
    with pytest.raises(UserError, match="retry_after"):
        server.set_mode("rate_limit", retry_after=-1)
    assert server.mode == "ok"
    assert set(MODES) >= {"ok", "rate_limit", "hang", "flapping"}


# -- wrong requests ---------------------------------------------------------------------


def test_wrong_paths_and_bodies_get_json_errors_naming_the_problem(server, client):
    with pytest.raises(openai.BadRequestError, match="stream=true is not supported"):
        chat(client, stream=True)
    cases = [
        (b"{not json", "not valid JSON"),
        ({"model": "m"}, "'messages'"),
        ({"messages": USER}, "'model'"),
        ({"model": "m", "messages": [{"content": "hi"}]}, "messages[0]"),
        ({"model": "m", "messages": USER, "tools": [{"type": "x"}]}, "tools[0]"),
    ]
    for body, problem in cases:
        reply = raw_post(server, body)
        assert reply.status_code == 400, body
        assert problem in reply.json()["error"]["message"]
    missing = httpx.post(server.base_url + "/completions", json={}, timeout=3)
    assert missing.status_code == 404 and "/v1/completions" in missing.json()["error"]["message"]
    wrong = httpx.get(server.base_url + "/chat/completions", timeout=3)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert server.requests_by_mode == {"bad_request": 6}


def test_http_control_sets_the_mode_and_reports_counts(server, client):
    control = server.url + "/_fault"
    state = httpx.post(control, json={"mode": "unavailable", "retry_after": 0.5}, timeout=3).json()
    assert state["mode"] == "unavailable" and state["params"] == {"retry_after": 0.5}
    assert server.mode == "unavailable"
    with pytest.raises(openai.InternalServerError):
        chat(client)
    state = httpx.get(control, timeout=3).json()
    assert state["requests"] == 1 and state["requests_by_mode"] == {"unavailable": 1}
    bad = httpx.post(control, json={"mode": "sideways"}, timeout=3)
    assert bad.status_code == 400 and "sideways" in bad.json()["error"]["message"]
    assert httpx.post(control + "/reset", timeout=3).json()["requests"] == 0


# -- a separate process -----------------------------------------------------------------


@pytest.fixture
def fault_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    cmd = [sys.executable, "-m", "agentlab.testing.fault_server", "--port", "0"]
    cmd += ["--mode", "rate_limit", "--param", "retry_after=0.25"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(timeout=10), "the fault server printed no URL within 10 s"
        url = proc.stdout.readline().strip()
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.mark.skipif(os.name == "nt", reason="SIGTERM handling is POSIX")
def test_the_subprocess_prints_its_url_and_obeys_http_control(fault_process):
    proc, base_url = fault_process
    assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
    c = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=3)
    with pytest.raises(openai.RateLimitError) as info:
        chat(c)
    assert info.value.response.headers["retry-after"] == "0.25"
    control = base_url.removesuffix("/v1") + "/_fault"
    httpx.post(control, json={"mode": "ok"}, timeout=3).raise_for_status()
    assert chat(c).choices[0].message.content
    state = httpx.get(control, timeout=3).json()
    assert state["requests_by_mode"] == {"rate_limit": 1, "ok": 1}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    assert proc.stderr is not None and proc.stderr.read() == ""
