"""Test set-up: real model requests are blocked unless a test opts in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentlab.models import allow_model_requests, set_allow_model_requests

set_allow_model_requests(False)


@pytest.fixture
def allow_real_models() -> Iterator[None]:
    """Opt in to requests to real models (the local model, a loopback server)."""
    with allow_model_requests(True):
        yield


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh agentlab workspace directory, also set as the default."""
    path = tmp_path / "ws"
    monkeypatch.setenv("AGENTLAB_WORKSPACE", str(path))
    return path
