"""The gateway's configuration: one YAML (``.yaml``/``.yml``) or TOML (``.toml``) file.

.. code-block:: yaml

    host: 127.0.0.1
    port: 8000
    workers: 2
    workspace: .agentlab              # relative to this file
    redis_url: ${REDIS_URL}           # optional: keys, rate limits and budgets on Redis
    otlp_endpoint: ${OTLP_ENDPOINT}   # optional
    default_key_limits: {requests: "10/second", cost_per_day: 5}
    reserve_cost_per_run: 0.05        # reserved when an agent has no Budget(cost=...)
    hygiene: {max_body_bytes: 1048576, max_input_chars: 20000, run_timeout_s: 60,
              max_concurrent_runs: 32}
    version_breaker: {failures: 5, window_s: 60, cooldown_s: 30}   # per agent version
    shared_state_ttl_s: 1             # runtime weights/flags reach other workers within this
    agents:
      support_agent:
        limits: {requests: "100/second"}
        versions:
          - {version: "1", package: support_agent, weight: 90}
          - {version: "2", factory: "support_agent_v2:create_agent", weight: 10,
             fallback: "1"}

Secrets are never written in the file: a value may name environment variables,
``${NAME}`` (the whole value or a part of it, e.g. ``redis://:${REDIS_PASSWORD}@host``),
and a literal value that looks like a secret (an API key, a URL with a password, a
key named like ``password`` or ``token``) is refused. Every error names the key
path and says what to write.
"""

from __future__ import annotations

import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentlab.errors import UserError
from agentlab.redact import default_redactor
from agentlab.serve.gateway.quotas import Limits
from agentlab.serve.gateway.version_breakers import VersionBreakerSettings

__all__ = [
    "AgentConfig",
    "ConfigError",
    "GatewayConfig",
    "Hygiene",
    "VersionConfig",
    "load_config",
]

CONFIG_ENV = "AGENTLAB_GATEWAY_CONFIG"
"""The environment variable through which ``agentlab serve`` hands the config path
to each uvicorn worker."""

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_FORBID = ConfigDict(extra="forbid")


class ConfigError(UserError):
    """The gateway config is wrong: the message names the key path and the fix."""


class VersionConfig(BaseModel):
    """One version of an agent: where its factory is, its share of traffic."""

    model_config = _FORBID

    version: str = Field(min_length=1)
    package: str | None = Field(
        default=None, description="An exported package's import name (its create_agent())."
    )
    factory: str | None = Field(
        default=None, description="'module:function' returning an Agent, without arguments."
    )
    weight: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    fallback: str | None = Field(
        default=None, description="The version that takes this one's traffic when it fails."
    )

    @model_validator(mode="after")
    def _one_source(self) -> VersionConfig:
        if (self.package is None) == (self.factory is None):
            raise ValueError(
                "give exactly one of 'package' (an exported package, e.g. package: "
                "support_agent) or 'factory' ('module:function')"
            )
        if self.factory is not None and not re.fullmatch(r"[\w.]+:\w+", self.factory):
            raise ValueError(f"factory {self.factory!r}: write it as 'package.module:function'")
        return self

    @property
    def spec(self) -> str:
        """``module:function`` building this version's agent."""
        return self.factory or f"{self.package}:create_agent"


class AgentConfig(BaseModel):
    """An agent served under its name: its versions and the limits on all of them."""

    model_config = _FORBID

    versions: list[VersionConfig] = Field(min_length=1)
    limits: Limits = Field(default_factory=Limits)

    @model_validator(mode="after")
    def _versions_consistent(self) -> AgentConfig:
        names = [v.version for v in self.versions]
        if len(set(names)) != len(names):
            raise ValueError(f"versions must have different names, got {names}")
        for v in self.versions:
            if v.fallback is not None and (v.fallback not in names or v.fallback == v.version):
                raise ValueError(
                    f"version {v.version!r}: fallback {v.fallback!r} must be another of "
                    f"this agent's versions {names}"
                )
        if not any(v.weight > 0 for v in self.versions):
            raise ValueError("at least one version needs a weight above 0")
        return self


class Hygiene(BaseModel):
    """Request hygiene per worker (see :mod:`agentlab.serve.gateway.hygiene`)."""

    model_config = _FORBID

    max_body_bytes: int = Field(default=1 << 20, gt=0)
    max_input_chars: int = Field(default=20_000, gt=0)
    run_timeout_s: float = Field(default=120.0, gt=0, allow_inf_nan=False)
    max_concurrent_runs: int = Field(default=32, gt=0)
    queue: int = Field(default=0, ge=0, description="Runs that may wait for a slot.")
    queue_timeout_s: float = Field(default=1.0, gt=0, allow_inf_nan=False)


class GatewayConfig(BaseModel):
    """The whole gateway config (see the module docstring for an example)."""

    model_config = _FORBID

    agents: dict[str, AgentConfig] = Field(min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    workspace: Path | None = None
    redis_url: str | None = Field(
        default=None, description="Keys, rate limits and budgets on Redis (several workers)."
    )
    otlp_endpoint: str | None = None
    rate_limit_storage: str | None = Field(
        default=None,
        description="The `limits` storage URI; default: redis_url if set, else memory://.",
    )
    default_key_limits: Limits = Field(default_factory=Limits)
    reserve_cost_per_run: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    reserve_tokens_per_run: int = Field(default=0, ge=0)
    hygiene: Hygiene = Field(default_factory=Hygiene)
    version_breaker: VersionBreakerSettings = Field(default_factory=VersionBreakerSettings)
    shared_state_ttl_s: float = Field(
        default=1.0,
        ge=0,
        allow_inf_nan=False,
        description="How stale runtime weights, flags and verified API keys may be on "
        "another worker (a key revoked through one is refused by all within this).",
    )
    paused_run_ttl_s: int = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="With redis_url: how long a paused run (and the latest state of a "
        "resumed one) stays on Redis, resumable and readable through every gateway "
        "machine; after that, only through the machine where it paused.",
    )

    @model_validator(mode="after")
    def _agent_names(self) -> GatewayConfig:
        for name in self.agents:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise ValueError(
                    f"agent name {name!r}: use letters, digits, '_', '.' or '-' (it is a URL part)"
                )
        return self

    @property
    def quota_storage(self) -> str:
        """Where rate-limit counters and budgets live."""
        return self.rate_limit_storage or self.redis_url or "memory://"


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read, check and resolve the config at `path` (env references expanded; a
    relative workspace taken relative to the file)."""
    path = Path(path)
    raw = _read(path)
    try:
        _refuse_secrets(raw, [])
        resolved = _expand(raw, [])
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        config = GatewayConfig.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + _explain(exc)) from None
    workspace = config.workspace
    if workspace is not None and not workspace.is_absolute():
        config.workspace = (path.parent / workspace).resolve()
    return config


def _read(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".toml"):
        raise ConfigError(f"{path}: a gateway config is a .yaml, .yml or .toml file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the gateway config {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text) if suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} is not valid {suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys (agents: ..., ...)")
    return data


def _where(path: list[Any]) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _refuse_secrets(value: Any, path: list[Any]) -> None:
    """No literal secret anywhere: a key named like a secret must hold only env
    references, and no value may look like a secret."""
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_secrets(item, [*path, key])
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_secrets(item, [*path, i])
        return
    if not isinstance(value, str):
        return
    literal = _REFERENCE.sub("", value)
    redactor = default_redactor()
    named_secret = bool(path) and redactor.is_sensitive_key(str(path[-1])) and literal.strip()
    if named_secret or redactor.redact_text(literal) != literal:
        raise ConfigError(
            f"{_where(path)}: the value looks like a secret written into the config. "
            "Put it in an environment variable and write a reference instead, e.g. "
            f"{path[-1] if path else 'key'}: ${{MY_SECRET}} (or part of a value: "
            "redis://:${REDIS_PASSWORD}@host:6379/0)."
        )


def _expand(value: Any, path: list[Any]) -> Any:
    """`value` with every ``${NAME}`` replaced by the environment variable's value."""
    if isinstance(value, dict):
        return {k: _expand(v, [*path, k]) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, [*path, i]) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(
                f"{_where(path)}: the environment variable {name} is not set; set it "
                f"(export {name}=...) or remove the reference"
            )
        return os.environ[name]

    return _REFERENCE.sub(lookup, value)


def _explain(exc: ValidationError) -> str:
    """One line per problem: the key path, what is wrong, what to write."""
    lines = []
    for error in exc.errors():
        where = _where([p for p in error["loc"] if not isinstance(p, str) or p])
        if error["type"] == "extra_forbidden":
            parent = error["loc"][:-1]
            lines.append(
                f"{where}: unknown key; the keys {'here' if parent else 'at the top'} are "
                f"{_known_keys(parent)}"
            )
        elif error["type"] == "missing":
            lines.append(f"{where}: required; add it")
        else:
            lines.append(f"{where}: {error['msg']} (got {error.get('input')!r})")
    return "; ".join(lines)


def _known_keys(loc: tuple[Any, ...]) -> str:
    """The keys the config allows at `loc` (a pydantic error location)."""
    tp: Any = GatewayConfig
    for part in loc:
        if typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
        elif isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
            if typing.get_origin(tp) in (typing.Union, types.UnionType):
                tp = next(a for a in typing.get_args(tp) if a is not type(None))
        else:
            return "(see the gateway config documentation)"
    fields = tp.model_fields if isinstance(tp, type) and issubclass(tp, BaseModel) else {}
    return ", ".join(sorted(fields)) or "(none)"
