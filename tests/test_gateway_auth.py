"""The gateway's authenticator: what a worker remembers of verified keys."""

from __future__ import annotations

import time

from agentlab.serve.gateway.auth import Authenticator
from agentlab.serve.gateway.keys import SQLiteKeyStore


def test_a_worker_remembers_verified_keys_for_the_ttl_only(tmp_path) -> None:
    """The key cache: one store lookup per key per interval; a key revoked elsewhere
    is refused once the interval is over."""
    store = SQLiteKeyStore(tmp_path / "gateway.sqlite")
    record, key = store.create("acme", ["agents:*"])
    lookups = []
    verify = store.verify
    store.verify = lambda k: lookups.append(k) or verify(k)  # type: ignore[method-assign]
    auth = Authenticator(store, cache_ttl_s=0.2)
    assert auth._verify(key) == record
    assert auth._verify(key) == record and len(lookups) == 1
    assert auth._verify("agl_0000000000000000_nope") is None
    assert auth._verify("agl_0000000000000000_nope") is None and len(lookups) == 2
    SQLiteKeyStore(tmp_path / "gateway.sqlite").revoke(record.id)  # another worker
    assert auth._verify(key) == record  # still within the interval
    time.sleep(0.25)
    assert auth._verify(key) is None and len(lookups) == 3
    assert Authenticator(store)._verify(key) is None  # no cache: every time
