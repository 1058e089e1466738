"""The gateway's authenticator: what a worker remembers of verified keys."""

from __future__ import annotations

import time

from _event_loop import ticks_while

from agentlab.serve.gateway.auth import Authenticator
from agentlab.serve.gateway.keys import SQLiteKeyStore


async def test_a_worker_remembers_verified_keys_for_the_ttl_only(tmp_path) -> None:
    """The key cache: one store lookup per key per interval; a key revoked elsewhere
    is refused once the interval is over."""
    store = SQLiteKeyStore(tmp_path / "gateway.sqlite")
    record, key = store.create("acme", ["agents:*"])
    lookups = []
    verify = store.verify
    store.verify = lambda k: lookups.append(k) or verify(k)  # type: ignore[method-assign]
    auth = Authenticator(store, cache_ttl_s=0.2)
    assert await auth._verify(key) == record
    assert await auth._verify(key) == record and len(lookups) == 1
    assert await auth._verify("agl_0000000000000000_nope") is None
    assert await auth._verify("agl_0000000000000000_nope") is None and len(lookups) == 2
    SQLiteKeyStore(tmp_path / "gateway.sqlite").revoke(record.id)  # another worker
    assert await auth._verify(key) == record  # still within the interval
    time.sleep(0.25)
    assert await auth._verify(key) is None and len(lookups) == 3
    assert await Authenticator(store)._verify(key) is None  # no cache: every time


async def test_a_slow_key_store_holds_up_its_request_not_the_worker(tmp_path) -> None:
    store = SQLiteKeyStore(tmp_path / "gateway.sqlite")
    record, key = store.create("acme", ["agents:*"])
    verify = store.verify

    def slow(presented: str) -> object:
        time.sleep(0.5)  # a stalled Redis, a busy SQLite
        return verify(presented)

    store.verify = slow  # type: ignore[assignment,method-assign]
    verified, ticks = await ticks_while(Authenticator(store)._verify(key))
    assert verified == record
    assert ticks >= 20  # the event loop went on serving while the store answered
