"""The gateway when its Redis is stalled or gone: a prompt 503 the client may retry,
with an error id, never a hang or a 500; and service again once Redis is back."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from _redis import RedisServer

from agentlab.serve.gateway.app import create_gateway_app
from agentlab.serve.gateway.config import GatewayConfig
from agentlab.serve.gateway.errors import STORE_RETRY_AFTER_S
from agentlab.serve.gateway.keys import RedisKeyStore
from agentlab.serve.gateway.redis_clients import TIMEOUT_S
from agentlab.tracing import TraceStore

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

pytestmark = pytest.mark.slow  # it waits out Redis time limits


@pytest.fixture()
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_a_stalled_then_stopped_redis_is_a_503_and_the_gateway_recovers(
    tmp_path, redis: RedisServer
) -> None:
    cfg = GatewayConfig.model_validate(
        {
            "workspace": str(tmp_path / "ws"),
            "redis_url": redis.url,
            "shared_state_ttl_s": 0,  # every request reads the key and state from Redis
            "default_key_limits": {"requests": "1000/second"},
            "agents": {"echo": {"versions": [{"version": "1", "factory": ECHO}]}},
        }
    )
    key = RedisKeyStore(redis.url).create("acme", ["agents:*"])[1]
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_gateway_app(cfg)) as client:

        def post() -> tuple[float, object]:
            began = time.monotonic()
            answer = client.post("/v1/agents/echo/runs", json={"input": "hi"}, headers=headers)
            return time.monotonic() - began, answer

        assert post()[1].status_code == 200  # type: ignore[attr-defined]
        redis.freeze()
        try:
            waited, stalled = post()
        finally:
            redis.thaw()
        assert stalled.status_code == 503, stalled.text  # type: ignore[attr-defined]
        assert waited < 2 * TIMEOUT_S + 2  # one try and one retry, each bounded
        error = stalled.json()["error"]  # type: ignore[attr-defined]
        assert error["type"] == "unavailable" and "Redis" in error["message"]
        assert stalled.headers["Retry-After"] == str(STORE_RETRY_AFTER_S)  # type: ignore[attr-defined]
        assert post()[1].status_code == 200  # type: ignore[attr-defined]
        redis.stop()
        waited, gone = post()
        assert gone.status_code == 503 and waited < 2 * TIMEOUT_S + 2  # type: ignore[attr-defined]
    # Both refusals are in the usage records, with their error ids.
    rows = TraceStore(tmp_path / "ws").sql(
        "SELECT status_code, error_id FROM gateway_requests ORDER BY started_at"
    )
    assert [r[0] for r in rows] == [200, 503, 200, 503]
    assert rows[1][1] == error["error_id"]


ECHO = "gateway_fixtures.agents:echo"
