"""The gateway config: YAML/TOML, errors that name the key path, secrets only by
environment reference; API keys in SQLite and on a real Redis."""

from __future__ import annotations

import sqlite3

import pytest
from _redis import RedisServer

from agentlab.serve.gateway.config import ConfigError, load_config
from agentlab.serve.gateway.keys import RedisKeyStore, SQLiteKeyStore, UnknownKeyError
from agentlab.serve.gateway.quotas import Limits

AGENTS = """
agents:
  echo:
    versions:
      - {version: "1", factory: "gateway_fixtures.agents:echo", weight: 1}
      - {version: "2", factory: "gateway_fixtures.agents:echo_v2", weight: 3, fallback: "1"}
"""


def write(tmp_path, text: str, name: str = "gw.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_config_resolves_env_references_and_workspace(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GW_REDIS_PASSWORD", "hunter2")
    path = write(
        tmp_path,
        AGENTS + "workspace: ws\nredis_url: 'redis://:${GW_REDIS_PASSWORD}@127.0.0.1:1/0'\n",
    )
    config = load_config(path)
    assert config.workspace == (tmp_path / "ws").resolve()
    assert config.redis_url == "redis://:hunter2@127.0.0.1:1/0"
    assert config.quota_storage == config.redis_url
    assert [v.spec for v in config.agents["echo"].versions] == [
        "gateway_fixtures.agents:echo",
        "gateway_fixtures.agents:echo_v2",
    ]


def test_toml_config(tmp_path) -> None:
    text = (
        '[agents.support]\nversions = [{version = "1", package = "support_agent"}]\n'
        "[hygiene]\nmax_body_bytes = 4096\n"
    )
    config = load_config(write(tmp_path, text, "gw.toml"))
    assert config.agents["support"].versions[0].spec == "support_agent:create_agent"
    assert config.hygiene.max_body_bytes == 4096


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (AGENTS + "hygiene: {max_body_bytes: 10, bogus: 1}\n", "hygiene.bogus: unknown key"),
        (AGENTS + "hygiene: {max_body_bytes: 10, bogus: 1}\n", "max_input_chars"),
        (AGENTS + "colour: blue\n", "colour: unknown key; the keys at the top are agents"),
        (AGENTS.replace('weight: 3, fallback: "1"', 'fallback: "9"'), "fallback '9' must be"),
        (AGENTS.replace('factory: "gateway_fixtures.agents:echo", ', ""), "exactly one of"),
        ("agents: {}\n", "agents: Dictionary should have at least 1 item"),
        (AGENTS + "hygiene: {run_timeout_s: -1}\n", "hygiene.run_timeout_s: Input should be"),
    ],
)
def test_errors_name_the_key_path(tmp_path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=r"gw\.yaml") as error:
        load_config(write(tmp_path, text))
    assert expected in str(error.value)


@pytest.mark.parametrize(
    "line",
    [
        "redis_url: 'redis://:hunter2@127.0.0.1:6379/0'",
        "otlp_endpoint: 'https://x.example/v1?api_key=sk-abcdef1234567890abcdef12'",
        "hygiene: {api_token: plain-value}",
    ],
)
def test_inline_secrets_are_refused(tmp_path, line: str) -> None:
    with pytest.raises(ConfigError, match=r"looks like a secret.*\$\{") as error:
        load_config(write(tmp_path, AGENTS + line + "\n"))
    assert "hunter2" not in str(error.value) and "sk-abc" not in str(error.value)


def test_missing_environment_variable(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("GW_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match="redis_url: the environment variable GW_NOT_SET"):
        load_config(write(tmp_path, AGENTS + "redis_url: '${GW_NOT_SET}'\n"))


def test_not_a_config_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"\.yaml, \.yml or \.toml"):
        load_config(write(tmp_path, AGENTS, "gw.json"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "agents: [\n"))


@pytest.fixture(params=["sqlite", "redis"])
def key_store(request, tmp_path):
    if request.param == "sqlite":
        yield SQLiteKeyStore(tmp_path / "gateway.sqlite")
        return
    with RedisServer() as server:
        yield RedisKeyStore(server.url)


def test_key_lifecycle(key_store) -> None:
    limits = Limits(requests="5/second", cost_per_day=2.5)
    record, key = key_store.create("acme", ["agents:echo"], groups=["beta"], limits=limits)
    assert key.startswith(f"agl_{record.id}_")
    assert key_store.verify(key) == record
    assert record.limits == limits and record.groups == ("beta",)
    assert key_store.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert key_store.verify("agl_0000000000000000_" + key.rsplit("_", 1)[1]) is None
    assert key_store.verify("not a key") is None
    revoked = key_store.revoke(record.id)
    assert revoked.revoked_at is not None
    assert key_store.revoke(record.id).revoked_at == revoked.revoked_at  # idempotent
    assert key_store.verify(key) is None
    assert [r.id for r in key_store.list()] == [record.id]
    with pytest.raises(UnknownKeyError, match="keys list"):
        key_store.revoke("0123456789abcdef")


def test_scopes(key_store) -> None:
    admin, _ = key_store.create("ops", ["admin"])
    scoped, _ = key_store.create("acme", ["agents:echo", "runs:read"])
    every, _ = key_store.create("globex", ["agents:*"])
    assert admin.allows("agents:echo") and admin.allows("admin") and admin.allows("metrics")
    assert scoped.allows("agents:echo") and not scoped.allows("agents:other")
    assert not scoped.allows("admin") and scoped.allows("runs:read")
    assert every.allows("agents:anything") and not every.allows("admin")
    with pytest.raises(Exception, match="unknown scope 'root'"):
        key_store.create("x", ["root"])


def test_sqlite_keeps_only_hashes(tmp_path) -> None:
    store = SQLiteKeyStore(tmp_path / "gateway.sqlite")
    _, key = store.create("acme", ["agents:*"])
    secret = key.rsplit("_", 1)[1]
    with sqlite3.connect(tmp_path / "gateway.sqlite") as con:
        rows = con.execute("SELECT * FROM api_keys").fetchall()
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    assert secret not in repr(rows) and mode == "wal"
    for file in tmp_path.iterdir():
        assert secret.encode() not in file.read_bytes()
