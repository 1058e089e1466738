"""Fuzzing the gateway's OpenAPI schema with schemathesis, over real HTTP to
`agentlab serve` on 127.0.0.1.

* With an admin key, valid (positive) and invalid (negative) requests for every
  operation: no 500, every answer conforms to the schema, and every 4xx is the one
  error envelope.
* The same fuzzing with no key, a bad key and a key without the scope: 0 answers
  other than 401/403 on the protected routes (every route but ``/healthz``).

Each operation gets a bounded number of examples (derandomized, so a run is
repeatable), and the module a time limit.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from _http import load_benchmark
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.timeout(600)

EXAMPLES = 60  # per operation and generation mode, with a valid key
BYPASS_EXAMPLES = 25  # per operation, generation mode and identity
ENVELOPE_KEYS = {"type", "message", "error_id"}


bench = load_benchmark("gateway")  # serve_gateway, AGENT

CONFIG = {
    "default_key_limits": {"requests": "100000/minute"},
    "hygiene": {
        "max_body_bytes": 65536,
        "max_input_chars": 1000,
        "run_timeout_s": 5,
        "max_concurrent_runs": 8,
    },
    "agents": {"echo": {"versions": [{"version": "1", "factory": bench.AGENT}]}},
}
KEYS = {
    "admin": {"owner": "ops", "scopes": ["admin"]},
    "metrics": {"owner": "watcher", "scopes": ["metrics"]},  # no agent, no admin scope
}
PUBLIC = {"/healthz"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with bench.serve_gateway(tmp_path_factory.mktemp("fuzz"), CONFIG, KEYS, workers=1) as server:
        yield server


@pytest.fixture(scope="module")
def schema(gateway: Any) -> Any:
    return schemathesis.openapi.from_url(gateway.url + "/openapi.json")


def _fuzz(
    operation: Any,
    mode: GenerationMode,
    examples: int,
    send: Callable[[Any], Any],
    path_parameters: dict[str, str] | None = None,
) -> None:
    """Send `examples` generated cases of `operation` in `mode` through `send`
    (with `path_parameters` fixed, when given)."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def run(case: Any) -> None:
        send(case)

    try:
        run()
    except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
        assert mode is GenerationMode.NEGATIVE, operation.label


def _operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def _envelope_problem(response: Any) -> str | None:
    """What is wrong with a 4xx answer's body, or None when it is the envelope."""
    try:
        body = response.json()
    except ValueError:
        return "not JSON"
    if not (isinstance(body, dict) and set(body) == {"error"}):
        return f"not the envelope: {str(body)[:200]}"
    error = body["error"]
    if not (isinstance(error, dict) and set(error) == ENVELOPE_KEYS and error["message"]):
        return f"not the envelope: {str(body)[:200]}"
    return None


def test_fuzzing_with_a_valid_key_finds_no_500_and_no_schema_violation(
    gateway: Any, schema: Any
) -> None:
    statuses: collections.Counter[int] = collections.Counter()
    failures: list[str] = []
    headers = gateway.headers("admin")

    def send(case: Any) -> None:
        response = case.call(base_url=gateway.url, headers=headers, timeout=30)
        statuses[response.status_code] += 1
        label = f"{case.method} {case.formatted_path} -> {response.status_code}"
        try:
            case.validate_response(
                response,
                checks=[not_a_server_error, response_schema_conformance, status_code_conformance],
            )
        except AssertionError as exc:  # schemathesis' failures are AssertionErrors
            failures.append(f"{label}: {str(exc)[:300]}")
        if 400 <= response.status_code < 500 and (problem := _envelope_problem(response)):
            failures.append(f"{label}: {problem}")

    operations = _operations(schema)
    assert len(operations) >= 6, [op.label for op in operations]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, EXAMPLES, send)
            if "{agent}" in operation.path:  # the bodies of a served agent's routes too
                _fuzz(operation, mode, EXAMPLES, send, path_parameters={"agent": "echo"})
    sent = sum(statuses.values())
    print(
        f"\nfuzzed {sent} requests with a valid key over {len(operations)} operations: "
        f"{dict(sorted(statuses.items()))}; {len(failures)} findings"
    )
    assert sent >= len(operations) * 20
    assert statuses[200] + statuses[201] > 0  # the fuzzing reached the handlers
    assert not failures, "\n".join(sorted(set(failures))[:30])


IDENTITIES = {  # name: (its headers, the one status every protected route answers)
    "no key": (lambda server: {}, 401),
    "bad key": (lambda server: {"Authorization": "Bearer agl_0123456789abcdef_" + "x" * 43}, 401),
    "no scope": (lambda server: server.headers("metrics"), 403),
}


def test_fuzzing_without_a_valid_key_gets_only_401_or_403(gateway: Any, schema: Any) -> None:
    outcomes: collections.Counter[tuple[str, int]] = collections.Counter()
    bypasses: list[str] = []
    protected = [op for op in _operations(schema) if op.path not in PUBLIC]
    for identity, (headers_of, expected) in IDENTITIES.items():
        headers = headers_of(gateway)

        def send(
            case: Any, identity: str = identity, headers: Any = headers, expected: int = expected
        ) -> None:
            case.headers = {  # a generated header must not carry a credential in
                k: v
                for k, v in (case.headers or {}).items()
                if k.lower() not in ("authorization", "x-api-key")
            }
            response = case.call(base_url=gateway.url, headers=headers, timeout=30)
            outcomes[(identity, response.status_code)] += 1
            if response.status_code != expected:
                bypasses.append(
                    f"{identity}: {case.method} {case.formatted_path} -> "
                    f"{response.status_code} {response.text[:160]}"
                )

        for operation in protected:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz(operation, mode, BYPASS_EXAMPLES, send)
    sent = sum(outcomes.values())
    print(
        f"\nfuzzed {sent} requests without a valid key over {len(protected)} protected "
        f"operations: {dict(sorted(outcomes.items()))}; {len(bypasses)} not 401/403"
    )
    assert sent >= len(protected) * len(IDENTITIES) * 10
    assert not bypasses, "\n".join(bypasses[:30])
