"""Redaction: secrets never reach traces, memory or logs; usage counters survive."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import random
import re
import threading
import typing
from collections.abc import Iterator
from typing import Any, Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, TypeAdapter

import agentlab.redact as redact_module
from agentlab.errors import UserError
from agentlab.events import (
    EVENT_KINDS,
    Event,
    ModelCallEvent,
    RunFinished,
    RunStarted,
    ToolCallEvent,
    dump_event,
    parse_event,
)
from agentlab.messages import (
    AssistantMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from agentlab.redact import (
    DEFAULT_KEY_PATTERNS,
    DEFAULT_VALUE_PATTERNS,
    UNTOUCHED_EVENT_FIELDS,
    UNTOUCHED_MESSAGE_FIELDS,
    RedactingFilter,
    Redactor,
    ValuePattern,
    configure_redaction,
    default_redactor,
    install_log_redaction,
    register_secret,
    reset_redaction,
    uninstall_log_redaction,
)

R = "[REDACTED]"
OPENAI_KEY = "sk-proj-Z9aB8cD7eF6gH5iJ4kL3mN2"


@pytest.fixture(autouse=True)
def _fresh_default() -> Iterator[None]:
    reset_redaction()
    yield
    reset_redaction()
    uninstall_log_redaction()


@pytest.fixture
def r() -> Redactor:
    return Redactor()


# -- key names ---------------------------------------------------------------------------

SENSITIVE_KEYS = [
    "password",
    "Password",
    "PASSWORD",
    "user_password",
    "passwords",
    "db.password",
    "passwd",
    "pwd",
    "passphrase",
    "pass_phrase",
    "secret",
    "secrets",
    "client_secret",
    "clientSecret",
    "secret_key",
    "aws_secret_access_key",
    "token",
    "access_token",
    "accessToken",
    "refresh_token",
    "accesstoken",
    "x-auth-token",
    "id_token",
    "api_key",
    "apikey",
    "api-key",
    "apiKey",
    "APIKey",
    "X-Api-Key",
    "OPENAI_API_KEY",
    "api_keys",
    "access_key",
    "accessKeyId",
    "private_key",
    "privateKey",
    "authorization",
    "Authorization",
    "Proxy-Authorization",
    "auth",
    "oauth",
    "credential",
    "credentials",
    "cookie",
    "Set-Cookie",
    "cookies",
    "session_key",
    "sessionKey",
]

# Usage counters and ordinary words must survive.
NOT_SENSITIVE_KEYS = [
    "max_tokens",
    "maxTokens",
    "input_tokens",
    "output_tokens",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "num_tokens",
    "tokens",
    "token_count",
    "tokenCount",
    "token_usage",
    "token_type",  # "bearer": describes the token, holds none
    "max_token_length",
    "password_min_length",
    "tokenizer",
    "passage",
    "passed",
    "pass",
    "secretary",  # whole-part match: "secretary" is not "secret"
    "author",
    "authority",
    "key",
    "keys",
    "monkey",
    "keyboard",
    "session",
    "session_id",
    "order_id",
    "status",
    "summary",
]


@pytest.mark.parametrize("key", SENSITIVE_KEYS)
def test_sensitive_keys(r: Redactor, key: str) -> None:
    assert r.is_sensitive_key(key)
    assert r.redact_obj({key: "hunter2xyz"}) == {key: R}
    assert r.redact_json_text(json.dumps({key: "hunter2xyz"})) == json.dumps(
        {key: R}, separators=(",", ":")
    )
    if re.fullmatch(r"[\w.-]+", key):
        assert r.redact_text(f"{key}=hunter2xyz") == f"{key}={R}"
        tail = "" if "cookie" in key.lower() else " ok"  # a cookie header: to the line's end
        assert r.redact_text(f"config {key}: hunter2xyz ok") == f"config {key}: {R}{tail}"


@pytest.mark.parametrize("key", NOT_SENSITIVE_KEYS)
def test_not_sensitive_keys(r: Redactor, key: str) -> None:
    assert not r.is_sensitive_key(key)
    doc = json.dumps({key: "plainvalue1", "n": 1})
    assert r.redact_json_text(doc) is doc
    assert r.redact_text(f"{key}=plainvalue1") == f"{key}=plainvalue1"
    assert r.redact_text(f'"{key}": 1500') == f'"{key}": 1500'


def test_usage_counters_survive_in_a_model_request(r: Redactor) -> None:
    body = json.dumps(
        {
            "model": "gpt-4.1-mini",
            "max_tokens": 256,
            "usage": {"input_tokens": 10, "output_tokens": 3, "total_tokens": 13},
            "token_count": 13,
            "api_key": OPENAI_KEY,
        }
    )
    out = json.loads(r.redact_json_text(body))
    assert out["max_tokens"] == 256
    assert out["usage"] == {"input_tokens": 10, "output_tokens": 3, "total_tokens": 13}
    assert out["token_count"] == 13
    assert out["api_key"] == R


# -- secret values in text -----------------------------------------------------------------

VALUE_CASES = [
    ("openai key", f"using {OPENAI_KEY} now", f"using {R} now"),
    ("openai legacy key", "sk-abcdefghijklmnopqrstuvwxyz0123", R),
    ("anthropic-style key", "sk-ant-api03-abcdefghijklmnop_qrs", R),
    ("bearer", "sent Bearer abc.DEF-123_x~+/== ok", f"sent Bearer {R} ok"),
    ("bearer lowercase", "header bearer 0a1b2c3d4e", f"header bearer {R}"),
    ("aws access key id", "key AKIAIOSFODNN7EXAMPLE here", f"key {R} here"),
    ("github token", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", R),
    ("github oauth token", "x gho_ABCDEFGHIJKLMNOPQRST0123 y", f"x {R} y"),
    ("github server token", "ghs_ABCDEFGHIJKLMNOPQRST0123", R),
    ("github fine-grained", "github_pat_11ABCDEFG0123456789_abcdefghij", R),
    ("slack token", "xoxb-1234567890-0987654321-AbCdEf", R),
    ("slack user token", "(xoxp-1234567890-abcdef)", f"({R})"),
    (
        "jwt",
        "id eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6y",
        f"id {R}",
    ),
    (
        "pem private key",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabc==\n-----END RSA PRIVATE KEY-----\n",
        f"-----BEGIN RSA PRIVATE KEY-----{R}-----END RSA PRIVATE KEY-----\n",
    ),
    (
        "pem private key, pkcs8",
        "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADAN\\n-----END PRIVATE KEY-----",
        f"-----BEGIN PRIVATE KEY-----{R}-----END PRIVATE KEY-----",
    ),
    (
        "pem private key, truncated",
        "key: -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk",
        f"key: -----BEGIN OPENSSH PRIVATE KEY-----{R}",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in VALUE_CASES], ids=[c[0] for c in VALUE_CASES]
)
def test_value_patterns(r: Redactor, text: str, expected: str) -> None:
    assert r.redact_text(text) == expected
    assert r.redact_text(expected) == expected  # idempotent


def test_every_default_value_pattern_is_tested() -> None:
    names = {p.name for p in DEFAULT_VALUE_PATTERNS}
    assert names == {
        "pem_private_key",
        "url_credentials",
        "bearer_token",
        "openai_key",
        "aws_access_key_id",
        "github_token",
        "slack_token",
        "jwt",
    }
    for p in DEFAULT_VALUE_PATTERNS:
        assert p.triggers and all(t == t.lower() for t in p.triggers), p.name


@pytest.mark.parametrize(
    "text",
    [
        "the bearer of bad news",  # bearer + an ordinary word
        "a task-management-system-for-everyone",  # "sk-" inside a word
        "ask-me-anything-about-the-order",
        "AKIA123",  # too short
        "ghp_short",
        "xoxb-1",
        "eyJ.not.a.jwt",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",  # public material
        "mail bob@example.com or see https://example.com/a@b",
        "http://host:8080/path and https://user@host/only-a-user",
        "Order O-1001 was shipped; total: 42.0 USD",
    ],
)
def test_value_false_positives(r: Redactor, text: str) -> None:
    assert r.redact_text(text) is text


URL_CASES = [
    ("postgres://bob:s3cr3t@db:5432/app", f"postgres://bob:{R}@db:5432/app"),
    ("redis://:hunter2@127.0.0.1:6379/0", f"redis://:{R}@127.0.0.1:6379/0"),
    ("https://user:p@ss:w0rd@host/v1?x=1", f"https://user:{R}@host/v1?x=1"),
    (
        "cannot reach http://admin:topsecret@10.0.0.1:8000/v1: connection refused",
        f"cannot reach http://admin:{R}@10.0.0.1:8000/v1: connection refused",
    ),
    (
        "openai:gpt-4.1-mini@http://u:pa55word@host:8000/v1",
        f"openai:gpt-4.1-mini@http://u:{R}@host:8000/v1",
    ),
    ('{"base_url": "amqp://guest:guest123@mq/"}', f'{{"base_url": "amqp://guest:{R}@mq/"}}'),
]


@pytest.mark.parametrize(("text", "expected"), URL_CASES)
def test_url_credentials(r: Redactor, text: str, expected: str) -> None:
    assert r.redact_text(text) == expected
    assert r.redact_text(expected) == expected


PAIR_CASES = [
    ("password=hunter2", f"password={R}"),
    ("login with password: hunter2 please", f"login with password: {R} please"),
    ("?user=bob&api_key=abc123&page=2", f"?user=bob&api_key={R}&page=2"),
    ('{"api_key": "abc 123", "q": 1}', f'{{"api_key": "{R}", "q": 1}}'),
    ('"pin_password": 123456', f'"pin_password": "{R}"'),  # JSON-ish stays JSON-ish
    ("{'client_secret': 'x y z', 'user': 'bob'}", f"{{'client_secret': '{R}', 'user': 'bob'}}"),
    ('{\\"token\\": \\"abc\\"}', f'{{\\"token\\": \\"{R}\\"}}'),  # JSON inside a JSON string
    ("Authorization: Basic dXNlcjpwYXNz", f"Authorization: Basic {R}"),
    ("Authorization: token abcdef", f"Authorization: token {R}"),
    ("Cookie: sessionid=abc123", f"Cookie: {R}"),
    ("Cookie: theme=dark; sessionid=abc123\nHost: x", f"Cookie: {R}\nHost: x"),
    ('{"Set-Cookie": "sid=abc123; Path=/"}', f'{{"Set-Cookie": "{R}"}}'),
    ("OPENAI_API_KEY=whatever-value", f"OPENAI_API_KEY={R}"),
    ("--password=hunter2 --verbose", f"--password={R} --verbose"),
    ("secret => 'abc'", f"secret => '{R}'"),
    ("token_count: 5, password: x", f"token_count: 5, password: {R}"),
    ('"max_tokens": "password=abc"', f'"max_tokens": "password={R}"'),
]


@pytest.mark.parametrize(("text", "expected"), PAIR_CASES)
def test_key_value_pairs_in_text(r: Redactor, text: str, expected: str) -> None:
    assert r.redact_text(text) == expected
    assert r.redact_text(expected) == expected


@pytest.mark.parametrize(
    "text",
    [
        "password: null",
        '"token": ""',
        "password:",
        "the auth step failed: timeout",
        "Enter your password",
        "max_tokens=100 input_tokens: 20",
    ],
)
def test_pairs_left_alone(r: Redactor, text: str) -> None:
    assert r.redact_text(text) is text


def test_no_secret_returns_the_same_string(r: Redactor) -> None:
    s = "".join(["The order O-1001 ", "was shipped on Monday."])
    assert r.redact_text(s) is s
    assert r.redact_json_text(s) is s
    assert r.redact_text("") == ""


def test_non_ascii_text_keeps_positions(r: Redactor) -> None:
    text = "İİİ café password=hunter2 — ok"
    assert r.redact_text(text) == f"İİİ café password={R} — ok"


# -- JSON documents and objects ------------------------------------------------------------


def test_json_nested_keys_at_any_depth(r: Redactor) -> None:
    doc = json.dumps(
        {
            "a": {"b": [{"password": "p1"}, {"ok": "fine", "auth": {"user": "bob", "pass": "x"}}]},
            "pwd": 1234,
            "token": None,
            "cookie": True,
            "note": f"key is {OPENAI_KEY}",
            "ünïcode": "ça va",
        }
    )
    out = r.redact_json_text(doc)
    assert json.loads(out) == {
        "a": {"b": [{"password": R}, {"ok": "fine", "auth": R}]},
        "pwd": R,
        "token": None,
        "cookie": True,
        "note": f"key is {R}",
        "ünïcode": "ça va",
    }
    assert ", " not in out and ": " not in out  # compact
    assert "ça va" in out  # not \u-escaped


def test_json_unchanged_is_returned_verbatim(r: Redactor) -> None:
    doc = '{ "order_id" : "O-1001",\n "email": "a@b.c" }'  # "@" triggers the slow path
    assert r.redact_json_text(doc) is doc


def test_json_escapes_cannot_hide_a_key(r: Redactor) -> None:
    doc = '{"pass\\u0077ord": "hunter2"}'
    assert json.loads(r.redact_json_text(doc)) == {"password": R}


def test_json_inside_a_json_string(r: Redactor) -> None:
    doc = json.dumps({"body": json.dumps({"password": 1234, "n": 1})})
    inner = json.loads(json.loads(r.redact_json_text(doc))["body"])
    assert inner == {"password": R, "n": 1}


@pytest.mark.parametrize(
    "doc",
    ['{"password": "hunter2", broken', "[1, 2, password=hunter2", '{"a": 1} password=hunter2'],
)
def test_invalid_json_falls_back_to_text(r: Redactor, doc: str) -> None:
    out = r.redact_json_text(doc)
    assert "hunter2" not in out and R in out


def test_json_scalars_and_text(r: Redactor) -> None:
    assert r.redact_json_text('"password=hunter2"') == f'"password={R}"'
    assert r.redact_json_text("plain text, password: x") == f"plain text, password: {R}"


def test_redact_obj_is_recursive_and_never_mutates(r: Redactor) -> None:
    obj = {
        "list": ["ok", f"key {OPENAI_KEY}", ("t", {"api_key": "v"})],
        "n": 1.5,
        "nested": {"deep": {"secret": ["a", "b"], "empty": []}},
        OPENAI_KEY: "the key itself as a key",
    }
    before = json.dumps(obj, default=list)
    out = r.redact_obj(obj)
    assert json.dumps(obj, default=list) == before
    assert out == {
        "list": ["ok", f"key {R}", ("t", {"api_key": R})],
        "n": 1.5,
        "nested": {"deep": {"secret": R, "empty": []}},
        R: "the key itself as a key",
    }
    assert isinstance(out["list"][2], tuple)
    clean = {"a": [1, "two", {"b": None}]}
    assert r.redact_obj(clean) is clean


def test_sensitive_key_with_empty_or_redacted_value(r: Redactor) -> None:
    obj = {"password": "", "token": R, "secret": [], "auth": {}, "cookie": 0}
    assert r.redact_obj(obj) == {"password": "", "token": R, "secret": [], "auth": {}, "cookie": R}


# -- messages ------------------------------------------------------------------------------


def test_messages(r: Redactor) -> None:
    system = SystemMessage(content=f"Use key {OPENAI_KEY}.")
    user = UserMessage(content="my password: hunter2")
    call = ToolCall(
        id="call-1", name="login", arguments=json.dumps({"user": "bob", "password": "hunter2"})
    )
    assistant = AssistantMessage(content="Logging in with password=hunter2", tool_calls=(call,))
    tool = ToolMessage(
        tool_call_id="call-1",
        name="login",
        content=json.dumps({"session_key": "abc123", "ok": True}),
        is_error=True,
    )
    assert r.redact_message(system).content == f"Use key {R}."
    assert r.redact_message(user).content == f"my password: {R}"
    red = r.redact_message(assistant)
    assert isinstance(red, AssistantMessage)
    assert red.content == f"Logging in with password={R}"
    assert red.tool_calls[0].id == "call-1" and red.tool_calls[0].name == "login"
    assert json.loads(red.tool_calls[0].arguments) == {"user": "bob", "password": R}
    red_tool = r.redact_message(tool)
    assert isinstance(red_tool, ToolMessage)
    assert json.loads(red_tool.content) == {"session_key": R, "ok": True}
    assert (red_tool.tool_call_id, red_tool.name, red_tool.is_error) == ("call-1", "login", True)
    assert assistant.content == "Logging in with password=hunter2"  # the original is untouched


def test_clean_messages_are_returned_as_is(r: Redactor) -> None:
    for msg in (
        SystemMessage(content="Be brief."),
        UserMessage(content="Where is order O-1001?"),
        AssistantMessage(
            tool_calls=(ToolCall(id="c", name="get_order", arguments='{"order_id": "O-1"}'),)
        ),
        AssistantMessage(content=None),
        ToolMessage(tool_call_id="c", name="get_order", content='{"status": "shipped"}'),
    ):
        assert r.redact_message(msg) is msg


# -- events: one of every kind, built from the dataclass fields ------------------------------

SECRET_TEXT = f"see {OPENAI_KEY} password=Hunter2secret via http://bob:Pw0rdInUrl@host/v1"
SECRET_PARTS = (OPENAI_KEY, "Hunter2secret", "Pw0rdInUrl", "PlainKeyValue")
CLEAN_TEXT = "order O-1001 was shipped"


def _event_types() -> tuple[type, ...]:
    union = get_args(Event)[0]
    return get_args(union)


def _sample(tp: Any, text: str, secret: bool) -> Any:
    """A value of annotation `tp` whose every string holds `text`."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is str or tp is Any:
        return text
    if tp is bool:
        return True
    if tp is int:
        return 7
    if tp is float:
        return 1.25
    if origin is Literal:
        return args[0]
    if origin is Union or origin is type(int | None):
        members = [a for a in args if a is not type(None)]
        if (
            all(isinstance(a, type) and issubclass(a, BaseModel) for a in members)
            and len(members) > 1
        ):
            return _sample_model(members[0], text, secret)
        return _sample(members[0], text, secret)
    if origin is list or origin is tuple:
        (item, *_) = args
        item_args = get_args(item)
        if get_origin(item) is Union and all(issubclass(a, BaseModel) for a in item_args):
            values = [_sample_model(a, text, secret) for a in item_args]  # one of each message kind
        else:
            values = [_sample(item, text, secret)]
        return values if origin is list else tuple(values)
    if origin is dict:
        if args and not _holds_text(args[1]):  # e.g. dict[str, float]: text only in a key
            # (a secret value, not a sensitive key name: that would redact the number)
            return {f"see {OPENAI_KEY}" if secret else text: _sample(args[1], text, secret)}
        value = {"note": text, "nested": {"items": [text]}}
        if secret:
            value["api_key"] = "PlainKeyValue"
        return value
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _sample_model(tp, text, secret)
    raise AssertionError(
        f"the redaction tests cannot build a value of type {tp!r}: extend _sample() "
        "(and make sure agentlab.redact redacts it)"
    )


def _sample_model(cls: type[BaseModel], text: str, secret: bool) -> BaseModel:
    values: dict[str, Any] = {}
    for name, info in cls.model_fields.items():
        if name == "role":
            continue
        if name in UNTOUCHED_MESSAGE_FIELDS:
            values[name] = f"{name}-1"
        elif name == "arguments" and secret:
            values[name] = json.dumps({"api_key": "PlainKeyValue", "q": text})
        else:
            values[name] = _sample(info.annotation, text, secret)
    return cls(**values)


def _build_event(cls: type, text: str, *, secret: bool) -> Any:
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name == "kind":
            continue
        if f.name in UNTOUCHED_EVENT_FIELDS:
            values[f.name] = f"{f.name}-42"
        else:
            values[f.name] = _sample(hints[f.name], text, secret)
    return cls(**values)


def _holds_text(tp: Any) -> bool:
    """Independent of agentlab.redact: can a value of `tp` contain a string?"""
    if tp is str or tp is Any:
        return True
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return True
    if get_origin(tp) is Literal:
        return False
    return any(_holds_text(a) for a in get_args(tp) if a is not Ellipsis)


def test_event_union_matches_event_kinds() -> None:
    kinds = [typing.get_type_hints(cls)["kind"] for cls in _event_types()]
    assert sorted(get_args(k)[0] for k in kinds) == sorted(EVENT_KINDS)


@pytest.mark.parametrize("cls", _event_types(), ids=lambda c: c.__name__)
def test_every_event_kind_is_redacted(r: Redactor, cls: type) -> None:
    event = _build_event(cls, SECRET_TEXT, secret=True)
    raw = dump_event(event)
    assert all(part.encode() in raw for part in SECRET_PARTS[:3])
    red = r.redact_event(event)
    dumped = dump_event(red)
    for part in SECRET_PARTS:
        assert part.encode() not in dumped, f"{cls.__name__} leaks {part!r}: {dumped!r}"
    parse_event(dumped)  # still a valid event
    assert type(red) is cls and dump_event(event) == raw  # a copy; the original is untouched
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        before, after = getattr(event, f.name), getattr(red, f.name)
        if f.name in UNTOUCHED_EVENT_FIELDS or not _holds_text(hints[f.name]):
            assert after == before, f"{cls.__name__}.{f.name} must be untouched"
        else:
            assert after != before, f"{cls.__name__}.{f.name} holds text but was not redacted"


@pytest.mark.parametrize("cls", _event_types(), ids=lambda c: c.__name__)
def test_each_text_field_alone_is_redacted(r: Redactor, cls: type) -> None:
    """A secret in any single field is found (the fast path must look at every field)."""
    clean = _build_event(cls, CLEAN_TEXT, secret=False)
    hints = typing.get_type_hints(cls)
    fields = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in UNTOUCHED_EVENT_FIELDS and _holds_text(hints[f.name])
    ]
    assert fields
    for name in fields:
        dirty = dataclasses.replace(clean, **{name: _sample(hints[name], SECRET_TEXT, True)})
        red = r.redact_event(dirty)
        assert red is not dirty, f"{cls.__name__}.{name}"
        dumped = dump_event(red)
        assert not any(p.encode() in dumped for p in SECRET_PARTS), f"{cls.__name__}.{name}"


@pytest.mark.parametrize("cls", _event_types(), ids=lambda c: c.__name__)
def test_clean_events_are_returned_as_is(r: Redactor, cls: type, monkeypatch) -> None:
    event = _build_event(cls, CLEAN_TEXT, secret=False)
    # The fast path: one scan, no walk, no copy.
    monkeypatch.setattr(Redactor, "_walk_dataclass", lambda self, obj: pytest.fail("walked"))
    assert r.redact_event(event) is event


def test_typical_events_untouched_fields(r: Redactor) -> None:
    event = ToolCallEvent(
        id="r-1-1",
        run_id="r",
        step=3,
        tool="login",
        arguments='{"user": "bob", "password": "hunter2"}',
        result='{"ok": true, "token": "abc"}',
        status="ok",
        latency_ms=1.5,
        started_at=10.0,
        cache="miss",
        saved_cost=None,
    )
    red = r.redact_event(event)
    assert json.loads(red.arguments) == {"user": "bob", "password": R}
    assert red.result is not None and json.loads(red.result) == {"ok": True, "token": R}
    assert (red.id, red.run_id, red.step, red.tool, red.latency_ms, red.cache) == (
        "r-1-1",
        "r",
        3,
        "login",
        1.5,
        "miss",
    )
    finished = RunFinished(
        run_id="r",
        status="failed",
        explanation="the model at http://u:hunter2pw@host/v1 could not be reached",
        steps=1,
        input_tokens=100,
        output_tokens=5,
        latency_ms=2.0,
        ended_at=3.0,
    )
    red_finished = r.redact_event(finished)
    assert red_finished.explanation == f"the model at http://u:{R}@host/v1 could not be reached"
    assert (red_finished.input_tokens, red_finished.output_tokens) == (100, 5)
    call = ModelCallEvent(
        id="m",
        run_id="r",
        step=1,
        model="openai:gpt@http://u:hunter2pw@host/v1",
        messages=[UserMessage(content="hi")],
        context_messages=1,
        tools=[],
        status="error",
        error="401 from http://u:hunter2pw@host/v1",
        latency_ms=1.0,
        started_at=1.0,
    )
    assert b"hunter2pw" not in dump_event(r.redact_event(call))


# -- the fast path never lets through what the full walk catches ------------------------------


class _AlwaysWalk(Redactor):
    """The reference: no fast path, every event walked field by field."""

    def _clean(self, v: Any) -> bool:
        return False


REGISTERED = "reg-4f2a9c-value"  # no trigger: only the literal check finds it
# (text, secret part that must not survive); None: nothing to redact.
TRICKY: list[tuple[str, str | None]] = [
    ("order O-1001 was shipped", None),
    ("The sum is 10.", None),
    ('{"a": 1, "b": 2}', None),
    ("max_tokens: 12, token_count=3", None),
    ("a passage about a monkey, a keyboard and an author", None),
    ("mail bob@example.com or see http://example.com/a?b=c", None),
    ("the bearer of bad news", None),
    ("session_id: 4f2a", None),
    ("api_key", None),  # a word alone, later used as a dict key
    ("password", None),
    (f"see {OPENAI_KEY}", OPENAI_KEY),
    ("Authorization: Bearer abc.def-123", "abc.def-123"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig_abcdefgh", "eyJzdWIiOiIxMjM0In0"),
    ("http://bob:Pw0rdInUrl@host/v1", "Pw0rdInUrl"),
    ("key id AKIAABCDEFGHIJKLMNOP", "AKIAABCDEFGHIJKLMNOP"),
    ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "abcdefghijklmnopqrstuvwxyz0123456789"),
    ("xoxb-1234567890-abcdef", "1234567890-abcdef"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIsecretbody\n-----END RSA PRIVATE KEY-----", "MIIsecret"),
    ('{"api_key": "PlainKeyValue"}', "PlainKeyValue"),
    ('{"user": "ada", "password": "hunter2pass"}', "hunter2pass"),
    ('{"args": "{\\"password\\": \\"nested-pw-9\\"}"}', "nested-pw-9"),  # JSON in a JSON string
    ('{"p\\u0061ssword": "escaped-pw-7"}', "escaped-pw-7"),  # a \u escape hides the key
    ('{"q": "\\u0073k-proj-Z9aB8cD7eF6gH5iJ4kL3mN2"}', "Z9aB8cD7eF6gH5iJ4kL3mN2"),
    ("password=Hunter2secret", "Hunter2secret"),
    ("apiKey: camelKeyValue", "camelKeyValue"),
    ('{"to\u212aen": "kelvin-value"}', "kelvin-value"),  # the Kelvin sign lowercases to 'k'
    ("to\u212aen: kelvin-text", None),  # in text, only ASCII key names are matched
    (f"the value {REGISTERED} again", REGISTERED),
]
PLAIN = ["hello", "42", "add", "ok", '{"a": 1}', "x=1", "a: b", "The sum is 10.", "é ü", "O-1001"]
PLAIN.append(f"the value {REGISTERED} again")  # clean until registered half-way
SAFE_KEYS = ["note", "x", "token_count", "max_tokens", "author"]
KEYS = ["api_key", "apiKey", "password", "session_key", "to\u212aen"]


def _random_event(rng: random.Random, texts: list[str]) -> Any:
    """An event of a random kind whose strings are made of `texts`; most are clean (so
    the fast path and its memory of clean strings are exercised), some hold secrets."""
    near = [t for t, secret in TRICKY if secret is None and t in texts]
    dirty = [t for t in texts if t not in near]

    def text() -> str:
        def one() -> str:
            roll = rng.random()
            return rng.choice(dirty if roll < 0.03 else near if roll < 0.1 else PLAIN)

        return " ".join(one() for _ in range(rng.randint(1, 2)))

    def key() -> str:
        return rng.choice(KEYS if rng.random() < 0.05 else SAFE_KEYS)

    def value(depth: int = 0) -> Any:
        roll = rng.random()
        if depth < 2 and roll < 0.2:
            return {key(): value(depth + 1) for _ in range(rng.randint(1, 3))}
        if depth < 2 and roll < 0.3:
            return [value(depth + 1) for _ in range(rng.randint(1, 3))]
        return rng.choice([text(), text(), 7, None, 1.5])

    kind = rng.randrange(3)
    if kind == 0:
        return ToolCallEvent(
            id="r-1-1",
            run_id="r",
            step=1,
            tool=rng.choice(["add", "login"]),
            arguments=text(),
            result=text(),
            error=rng.choice([None, text()]),
            latency_ms=1.0,
            started_at=2.0,
        )
    if kind == 1:
        calls = tuple(ToolCall(id=f"c{i}", name="add", arguments=text()) for i in range(2))
        return ModelCallEvent(
            id="r-1",
            run_id="r",
            step=1,
            model="scripted:function",
            messages=[
                UserMessage(content=text()),
                ToolMessage(tool_call_id="c0", name="add", content=text()),
            ],
            context_messages=2,
            tools=["add", "login"],
            response=AssistantMessage(content=rng.choice([None, text()]), tool_calls=calls),
            latency_ms=1.0,
            started_at=2.0,
            error=rng.choice([None, text()]),
            attempts=[{"number": 1, "model": "m", "status": "error", "error": value()}],
        )
    return RunStarted(
        run_id="r",
        agent="agent",
        model="m",
        input=text(),
        started_at=1.0,
        metadata={key(): value() for _ in range(rng.randint(0, 3))},
    )


@pytest.mark.parametrize("seed", range(4))
def test_fast_path_matches_the_full_walk_on_random_events(seed: int) -> None:
    """A property test (seeded): on a long sequence of events made of tricky texts, the
    fast path (strings remembered as clean, skipped scans) writes exactly what the full
    walk writes; a secret is registered half-way, after its text was seen clean."""
    rng = random.Random(seed)
    texts = [t for t, _ in TRICKY]
    r = Redactor()
    for i in range(600):
        if i == 300:
            r.add_secret(REGISTERED)
        event = _random_event(rng, texts)
        fast = dump_event(r.redact_event(event))
        assert fast == dump_event(_AlwaysWalk(secrets=r.secrets).redact_event(event)), event
        if i >= 300:
            assert REGISTERED.encode() not in fast


@pytest.mark.parametrize(("text", "secret"), [t for t in TRICKY if t[1]], ids=lambda v: str(v)[:24])
def test_each_tricky_secret_is_caught_after_the_cache_is_warm(text: str, secret: str) -> None:
    r = Redactor(secrets=[REGISTERED])
    for clean, _ in TRICKY:  # remember every clean text first
        r.redact_event(_tool_event(clean, clean))
    for event in (
        _tool_event(text, "ok"),
        _tool_event("{}", text),
        _tool_event("{}", json.dumps({"note": text})),
        _tool_event("{}", json.dumps({"data": json.dumps({"inner": text})})),
    ):
        dumped = dump_event(r.redact_event(event))
        assert secret.encode() not in dumped.replace(b"\\\\", b"\\"), dumped
        assert dumped == dump_event(_AlwaysWalk(secrets=[REGISTERED]).redact_event(event))


def _tool_event(arguments: str, result: str) -> ToolCallEvent:
    return ToolCallEvent(
        id="r-1-1",
        run_id="r",
        step=1,
        tool="login",
        arguments=arguments,
        result=result,
        latency_ms=1.0,
        started_at=2.0,
    )


def test_a_word_seen_clean_is_still_checked_as_a_key() -> None:
    r = Redactor()
    for word in ("api_key", "password", "apiKey"):
        seen = RunStarted(run_id="r", agent="a", model="m", input=word, started_at=1.0)
        assert r.redact_event(seen) is seen  # clean: no ':' or '=', so no key-value pair
        used = RunStarted(
            run_id="r", agent="a", model="m", input="hi", started_at=1.0, metadata={word: "v4lue"}
        )
        assert r.redact_event(used).metadata == {word: R}


def test_a_secret_registered_later_is_caught_in_a_text_seen_clean_before() -> None:
    r = Redactor()
    event = _tool_event("{}", "tok-4f2a9c")
    assert r.redact_event(event) is event
    assert r.redact_event(event) is event  # now remembered as clean
    r.add_secret("tok-4f2a9c")
    assert r.redact_event(event).result == R


def test_clean_strings_are_remembered_and_skipped(r: Redactor) -> None:
    event = _tool_event('{"a": 1}', "order O-1001 was shipped")
    assert r.redact_event(event) is event
    out: list[str] = []
    assert r._gather(event, out, r._secret_state[2]) and out == []  # nothing left to scan


def test_dump_event_is_what_pydantic_writes_for_every_event_kind() -> None:
    """``dump_event`` serializes message unions as ``Any`` (faster): same bytes."""
    for cls in _event_types():
        for text, secret in ((SECRET_TEXT, True), (CLEAN_TEXT, False), ('é\x01\u2028"\\/', False)):
            event = _build_event(cls, text, secret=secret)
            assert dump_event(event) == TypeAdapter(cls).serializer.to_json(event), cls


# -- literal secrets, the process-wide redactor ------------------------------------------------


def test_register_secret() -> None:
    assert not register_secret("short")  # < 6 characters: would redact ordinary words
    assert not register_secret(None)
    assert not register_secret("    ab   ")
    assert register_secret("my-odd-key-format-42")
    assert register_secret("my-odd-key-format-42")  # twice is fine
    assert default_redactor().redact_text("k=my-odd-key-format-42!") == f"k={R}!"
    assert default_redactor().redact_text("short stays") == "short stays"
    # Registered secrets survive a reconfiguration.
    configure_redaction(key_patterns=["ssn"], extra_secrets=["another-secret-value"])
    red = default_redactor()
    assert red.redact_text("my-odd-key-format-42 another-secret-value") == f"{R} {R}"
    assert red.is_sensitive_key("ssn") and not red.is_sensitive_key("password")


def test_longest_secret_wins() -> None:
    r = Redactor(secrets=["abcdef", "abcdefghij"])
    assert r.redact_text("xx abcdefghij yy") == f"xx {R} yy"


def test_configure_disabled_and_reset() -> None:
    configure_redaction(enabled=False)
    text = "password=hunter2"
    event = _build_event(ToolCallEvent, SECRET_TEXT, secret=True)
    assert default_redactor().redact_text(text) is text
    assert default_redactor().redact_event(event) is event
    assert redact_module.redact_text(text) is text
    reset_redaction()
    assert redact_module.redact_text(text) == f"password={R}"
    assert redact_module.redact_event(event) is not event
    assert redact_module.redact_json_text('{"token": "x"}') == f'{{"token":"{R}"}}'
    assert redact_module.redact_obj({"token": "x"}) == {"token": R}
    assert redact_module.redact_message(UserMessage(content=text)).content == f"password={R}"


def test_register_and_configure_are_thread_safe() -> None:
    errors: list[BaseException] = []

    def register(i: int) -> None:
        try:
            for j in range(40):
                register_secret(f"thread-{i}-secret-{j}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reconfigure() -> None:
        for _ in range(20):
            configure_redaction()

    threads = [threading.Thread(target=register, args=(i,)) for i in range(6)]
    threads.append(threading.Thread(target=reconfigure))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    secrets = set(default_redactor().secrets)
    assert {f"thread-{i}-secret-{j}" for i in range(6) for j in range(40)} <= secrets


# -- configuration ---------------------------------------------------------------------------


def test_custom_patterns_and_replacement() -> None:
    r = Redactor(
        key_patterns=[*DEFAULT_KEY_PATTERNS, "ssn", "national_id"],
        value_patterns=[
            *DEFAULT_VALUE_PATTERNS,
            r"acme-[0-9a-f]{8}",  # no triggers: searched in every string
            ValuePattern("acme_header", r"X-Acme: (?P<secret>\w+)", ("x-acme",)),
            re.compile(r"corp_[a-z]{4}\b", re.IGNORECASE),
        ],
        replacement="***",
    )
    assert r.redact_text("id acme-0123abcd ok") == "id *** ok"
    assert r.redact_text("X-Acme: s3cr3t") == "X-Acme: ***"
    assert r.redact_text("CORP_ABCD") == "***"
    assert r.redact_text("ssn=123-45-6789, nationalId: 99") == "ssn=***, nationalId: ***"
    assert r.redact_obj({"ssn": 1, "password": "x"}) == {"ssn": "***", "password": "***"}
    assert r.redact_text("password=***") == "password=***"


def test_only_custom_key_patterns() -> None:
    r = Redactor(key_patterns=["pin"], value_patterns=[])
    assert r.redact_text("pin=1234 password=x sk-abcdefghijklmnopqrstu") == (
        f"pin={R} password=x sk-abcdefghijklmnopqrstu"
    )
    r2 = Redactor(key_patterns=["(?:x|y)_code"])  # no literal trigger: always checked
    assert r2.redact_text("y_code: 42") == f"y_code: {R}"


def test_safe_key_parts_are_configurable() -> None:
    r = Redactor(safe_key_parts=())
    assert r.is_sensitive_key("token_count")
    assert not r.is_sensitive_key("max_tokens")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"key_patterns": ["pass(word"]},
        {"value_patterns": ["sk-[a-z"]},
        {"value_patterns": [r"(a)\1"]},
        {"value_patterns": [42]},
        {"replacement": ""},
    ],
)
def test_bad_configuration_is_a_user_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UserError):
        Redactor(**kwargs)


def test_key_cache_is_bounded() -> None:
    r = Redactor()
    for i in range(redact_module._KEY_CACHE_SIZE + 500):
        r.is_sensitive_key(f"field_{i}")
    assert len(r._key_cache) <= redact_module._KEY_CACHE_SIZE


# -- logging ---------------------------------------------------------------------------------


def _capture(logger: logging.Logger) -> io.StringIO:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return stream


def test_a_library_that_wraps_the_record_factory_after_us_keeps_redaction() -> None:
    install_log_redaction()
    ours = logging.getLogRecordFactory()

    def foreign(*args, **kwargs):  # type: ignore[no-untyped-def] - what Ray's logging does
        return ours(*args, **kwargs)

    logging.setLogRecordFactory(foreign)
    child = logging.getLogger("agentlab.models.test_foreign_factory")
    stream = _capture(child)
    try:
        install_log_redaction()  # again, after the library wrapped ours: no loop
        child.info("calling with api_key=%s", "abc123")
        assert "abc123" not in stream.getvalue() and "api_key=" in stream.getvalue()
    finally:
        logging.setLogRecordFactory(ours)
        child.handlers.clear()


def test_install_log_redaction_covers_child_loggers() -> None:
    parent = logging.getLogger("agentlab")
    child = logging.getLogger("agentlab.models.test_redaction")
    stream = _capture(child)
    try:
        flt = install_log_redaction()
        assert install_log_redaction() is flt  # idempotent
        child.info("calling %s with api_key=%s", "http://u:hunter2pw@h/v1", "abc123")
        child.info("plain %s %d", "message", 3)
        try:
            raise RuntimeError(f"bad key {OPENAI_KEY}")
        except RuntimeError:
            child.exception("failed")
        child.info("args %s", {"password": "hunter2dict"})
        out = stream.getvalue()
        for secret in ("hunter2pw", "abc123", OPENAI_KEY, "hunter2dict"):
            assert secret not in out
        assert "plain message 3" in out and "RuntimeError: bad key [REDACTED]" in out
        other = logging.getLogger("someone_else")
        other_stream = _capture(other)
        other.info("password=hunter2x")
        assert "hunter2x" in other_stream.getvalue()  # only agentlab loggers
        uninstall_log_redaction()
        child.info("password=hunter2y")
        assert "hunter2y" in stream.getvalue()
    finally:
        child.handlers.clear()
        logging.getLogger("someone_else").handlers.clear()
        child.propagate = parent.propagate = True


def test_redacting_filter_on_a_handler(monkeypatch) -> None:
    monkeypatch.setattr(logging, "raiseExceptions", False)  # the bad-args record below
    logger = logging.getLogger("test_redaction.handler")
    stream = _capture(logger)
    logger.handlers[0].addFilter(RedactingFilter(Redactor(secrets=["my-literal-key"])))
    try:
        logger.warning("key my-literal-key and token: %r", "xyz789")
        logger.warning("broken %s %s", "one")  # bad args: logging reports it, nothing raises
        assert stream.getvalue().startswith(f"test_redaction.handler key {R} and token: '{R}'")
    finally:
        logger.handlers.clear()


def test_redacting_filter_uses_the_current_default() -> None:
    flt = RedactingFilter()
    record = logging.LogRecord(
        "agentlab", logging.INFO, __file__, 1, "value %s", ("abc-123456",), None
    )
    register_secret("abc-123456")
    assert flt.filter(record) is True
    assert record.getMessage() == f"value {R}"
