"""Circuit breakers: stop calling a dependency that keeps failing, probe it later.

The state machine (one per dependency name)::

    closed --(failure_threshold failures within window_s)--> open
    open --(cooldown_s elapsed)--> half_open
    half_open --(a probe call succeeds)--> closed      (failures cleared)
    half_open --(a probe call fails)--> open           (another cooldown)

Failure-counting rule: a failure counts for ``window_s`` seconds after it is
reported. The breaker opens when ``failure_threshold`` failures are inside the
window; successes in the closed state do *not* erase them (a flapping dependency
that fails 5 times a minute opens even if it succeeds in between).

Half-open admits at most ``half_open_max_calls`` probe calls at a time; every
other caller fails fast with :class:`BreakerOpen`. A probe holds a lease that
expires after ``probe_timeout_s``: a probe whose caller crashed frees its slot
then, so the breaker cannot be wedged. Reports from calls that are not (or no
longer) the probe never change the state, except that failures in the closed
state count.

The state lives in a :class:`BreakerStore`: :class:`InProcessBreakerStore`
(default, thread-safe, injectable clock) or ``RedisBreakerStore`` (shared by
every process using the same Redis). Stores keep a short, numbered log of
transitions so that each :class:`CircuitBreaker` reports every transition it
notices, including those made by other processes, exactly once and in order.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, runtime_checkable

from agentlab.errors import RunError, UserError

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "BreakerConfig",
    "BreakerOpen",
    "BreakerRegistry",
    "BreakerState",
    "BreakerStore",
    "BreakerTicket",
    "BreakerTransition",
    "CircuitBreaker",
    "InProcessBreakerStore",
    "Outcome",
    "breaker_registry",
    "process_origin",
]

log = logging.getLogger("agentlab.resilience")

BreakerState = Literal["closed", "open", "half_open"]
CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"

#: Transitions each store remembers (per breaker) for processes catching up.
LOG_LENGTH: Final = 32
#: Longest error text kept (in messages, snapshots and Redis).
MAX_ERROR_CHARS: Final = 500


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """How a breaker trips and recovers (times in seconds).

    `probe_timeout_s` (how long a probe call may stay out before its slot is given
    to another caller) defaults to `cooldown_s`, and at least 1 s.
    """

    failure_threshold: int = 5
    window_s: float = 60.0
    cooldown_s: float = 30.0
    half_open_max_calls: int = 1
    probe_timeout_s: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.failure_threshold, int) or self.failure_threshold < 1:
            problems.append(
                f"failure_threshold must be an int >= 1, got {self.failure_threshold!r}"
            )
        if not self.window_s > 0:
            problems.append(f"window_s must be > 0, got {self.window_s!r}")
        if not self.cooldown_s >= 0:
            problems.append(f"cooldown_s must be >= 0, got {self.cooldown_s!r}")
        if not isinstance(self.half_open_max_calls, int) or self.half_open_max_calls < 1:
            problems.append(
                f"half_open_max_calls must be an int >= 1, got {self.half_open_max_calls!r}"
            )
        if self.probe_timeout_s is not None and not self.probe_timeout_s > 0:
            problems.append(f"probe_timeout_s must be > 0 or None, got {self.probe_timeout_s!r}")
        if problems:
            raise UserError("invalid BreakerConfig: " + "; ".join(problems))

    @property
    def probe_timeout(self) -> float:
        """The effective probe lease, in seconds."""
        if self.probe_timeout_s is not None:
            return self.probe_timeout_s
        return max(self.cooldown_s, 1.0)


@dataclass(frozen=True, slots=True)
class BreakerTicket:
    """What :meth:`CircuitBreaker.acquire` hands out: pass it back when reporting.

    `probe` is true for the half-open probe call; `lease` identifies its slot.
    """

    probe: bool = False
    lease: str = ""


#: The one ticket every closed-state call gets (no allocation on the hot path).
PLAIN_TICKET: Final = BreakerTicket()


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    """One state change. `at` is wall-clock epoch seconds; `observed` is true when
    another process made the change and this one noticed it afterwards."""

    name: str
    from_state: BreakerState
    to_state: BreakerState
    at: float
    failures: int
    reason: str
    observed: bool = False


class BreakerOpen(RunError):
    """A call was refused because the circuit breaker of its dependency is open
    (or half-open with its probe call already out). Retry after `retry_in` s."""

    def __init__(
        self,
        message: str,
        *,
        name: str,
        state: BreakerState,
        retry_in: float,
        failures: int,
        opened_at: float | None = None,
        next_probe_at: float | None = None,
        last_error: str | None = None,
    ) -> None:
        super().__init__(message)
        self.name = name
        self.state = state
        self.retry_in = retry_in
        self.failures = failures
        self.opened_at = opened_at
        self.next_probe_at = next_probe_at
        self.last_error = last_error


_ORIGIN: list[str] = ["", ""]  # [pid, "pid@host"], recomputed after a fork


def process_origin() -> str:
    """``"pid@host"``: which process made a transition."""
    pid = str(os.getpid())
    if _ORIGIN[0] != pid:
        _ORIGIN[:] = [pid, f"{pid}@{socket.gethostname()}"]
    return _ORIGIN[1]


# --- stores --------------------------------------------------------------------

#: A log entry: (version, from_state, to_state, at_epoch, failures, reason, origin).
LogEntry = tuple[int, str, str, float, int, str, str]


@dataclass(slots=True)
class Outcome:
    """What a store operation saw, in wall-clock epoch seconds.

    `version` counts transitions; `before` is the version before this operation
    (entries after it were caused by it); `log` holds the entries newer than the
    `since` the caller passed, oldest first (only the newest one if `since` < 0).
    `granted` is the ticket for an admitted acquire, else None. `source` names the
    state space the versions belong to; `note` explains a degraded store.
    """

    state: str
    version: int
    before: int
    granted: BreakerTicket | None
    failures: int
    opened_at: float | None
    next_probe_at: float | None
    last_error: str
    now: float
    log: list[LogEntry]
    source: str
    note: str = ""


@runtime_checkable
class BreakerStore(Protocol):
    """Where breaker state lives; every operation is atomic per breaker name."""

    identity: str

    def acquire(self, name: str, config: BreakerConfig, since: int) -> Outcome:
        """Admit a call (``granted`` set) or refuse it."""
        ...

    def record(
        self,
        name: str,
        config: BreakerConfig,
        ticket: BreakerTicket,
        ok: bool,
        error: str,
        since: int,
    ) -> Outcome:
        """Report how an admitted call ended."""
        ...

    def view(self, name: str, config: BreakerConfig, since: int) -> Outcome:
        """The current state (applying a due open -> half_open change)."""
        ...

    def reset(self, name: str, config: BreakerConfig, since: int) -> Outcome:
        """Force the breaker closed and forget its failures."""
        ...


class _Record:
    """One breaker's state in an :class:`InProcessBreakerStore` (clock seconds)."""

    __slots__ = (
        "failures",
        "last_error",
        "lock",
        "log",
        "opened_at",
        "probes",
        "state",
        "version",
        "window",
    )

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state: str = CLOSED
        self.version = 0
        self.window: deque[float] = deque()  # failure times while closed
        self.failures = 0  # while open / half-open: failures since it opened
        self.opened_at: float | None = None
        self.last_error = ""
        self.probes: dict[str, float] = {}  # lease -> expiry
        self.log: deque[LogEntry] = deque(maxlen=LOG_LENGTH)


class InProcessBreakerStore:
    """Breaker state in this process, guarded by one lock per breaker.

    `clock` returns seconds (``time.monotonic`` by default; inject a fake one in
    tests); times are reported as wall-clock epoch seconds, converted with the
    offset between ``time.time()`` and `clock` measured when the store is made.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._offset = time.time() - clock()
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()
        self._leases = itertools.count(1)
        self.identity = f"memory:{id(self):x}"

    def __repr__(self) -> str:
        return f"InProcessBreakerStore(breakers={len(self._records)})"

    def record_for(self, name: str) -> _Record:
        """The state record of `name` (created closed)."""
        rec = self._records.get(name)
        if rec is None:
            with self._lock:
                rec = self._records.setdefault(name, _Record())
        return rec

    def acquire(self, name: str, config: BreakerConfig, since: int) -> Outcome:
        rec = self.record_for(name)
        with rec.lock:
            now = self.clock()
            before = rec.version
            self._advance(rec, config, now)
            granted: BreakerTicket | None = None
            if rec.state == CLOSED:
                granted = PLAIN_TICKET
            elif rec.state == HALF_OPEN:
                self._expire_probes(rec, now)
                if len(rec.probes) < config.half_open_max_calls:
                    lease = f"m{next(self._leases)}"
                    rec.probes[lease] = now + config.probe_timeout
                    granted = BreakerTicket(probe=True, lease=lease)
            return self._outcome(rec, config, now, before, granted, since)

    def record(
        self,
        name: str,
        config: BreakerConfig,
        ticket: BreakerTicket,
        ok: bool,
        error: str,
        since: int,
    ) -> Outcome:
        rec = self.record_for(name)
        with rec.lock:
            now = self.clock()
            before = rec.version
            self._advance(rec, config, now)
            if not ok:
                rec.last_error = error
            expiry = rec.probes.get(ticket.lease) if ticket.probe else None
            if rec.state == HALF_OPEN and expiry is not None and expiry > now:
                rec.probes.clear()
                if ok:
                    rec.window.clear()
                    rec.failures = 0
                    rec.opened_at = None
                    self._move(rec, CLOSED, now, "probe call succeeded")
                else:
                    rec.failures += 1
                    rec.opened_at = now
                    self._move(rec, OPEN, now, _reopen_reason(error))
            elif not ok:
                if rec.state == CLOSED:
                    window = rec.window
                    window.append(now)
                    _prune(window, now - config.window_s)
                    if len(window) >= config.failure_threshold:
                        rec.failures = len(window)
                        rec.opened_at = now
                        window.clear()
                        self._move(rec, OPEN, now, _open_reason(rec.failures, config, error))
                else:
                    rec.failures += 1  # a late report: counted, no state change
            return self._outcome(rec, config, now, before, None, since)

    def view(self, name: str, config: BreakerConfig, since: int) -> Outcome:
        rec = self.record_for(name)
        with rec.lock:
            now = self.clock()
            before = rec.version
            self._advance(rec, config, now)
            return self._outcome(rec, config, now, before, None, since)

    def reset(self, name: str, config: BreakerConfig, since: int) -> Outcome:
        rec = self.record_for(name)
        with rec.lock:
            now = self.clock()
            before = rec.version
            rec.window.clear()
            rec.probes.clear()
            rec.failures = 0
            rec.opened_at = None
            if rec.state != CLOSED:
                self._move(rec, CLOSED, now, "reset")
            return self._outcome(rec, config, now, before, None, since)

    # internals (called with rec.lock held)

    def _move(self, rec: _Record, to: str, at: float, reason: str) -> None:
        rec.version += 1
        entry = (
            rec.version,
            rec.state,
            to,
            at + self._offset,
            rec.failures,
            reason,
            process_origin(),
        )
        rec.log.append(entry)
        rec.state = to

    def _advance(self, rec: _Record, config: BreakerConfig, now: float) -> None:
        if rec.state == OPEN and rec.opened_at is not None:
            due = rec.opened_at + config.cooldown_s
            if now >= due:
                rec.probes.clear()
                self._move(rec, HALF_OPEN, due, _half_open_reason(config))

    @staticmethod
    def _expire_probes(rec: _Record, now: float) -> None:
        for lease in [lease for lease, expiry in rec.probes.items() if expiry <= now]:
            del rec.probes[lease]

    def _outcome(
        self,
        rec: _Record,
        config: BreakerConfig,
        now: float,
        before: int,
        granted: BreakerTicket | None,
        since: int,
    ) -> Outcome:
        offset = self._offset
        next_probe: float | None = None
        if rec.state == CLOSED:
            _prune(rec.window, now - config.window_s)
            failures = len(rec.window)
        else:
            failures = rec.failures
            if rec.state == OPEN and rec.opened_at is not None:
                next_probe = rec.opened_at + config.cooldown_s + offset
            elif rec.state == HALF_OPEN:
                out = [expiry for expiry in rec.probes.values() if expiry > now]
                full = len(out) >= config.half_open_max_calls
                next_probe = (min(out) if full else now) + offset
        if since < 0:
            entries = list(rec.log)[-1:]
        elif rec.version > since:
            entries = [entry for entry in rec.log if entry[0] > since]
        else:
            entries = []
        return Outcome(
            state=rec.state,
            version=rec.version,
            before=before,
            granted=granted,
            failures=failures,
            opened_at=None if rec.opened_at is None else rec.opened_at + offset,
            next_probe_at=next_probe,
            last_error=rec.last_error,
            now=now + offset,
            log=entries,
            source=self.identity,
        )


def _prune(window: deque[float], horizon: float) -> None:
    """Drop failure times at or before `horizon` (they left the window)."""
    while window and window[0] <= horizon:
        window.popleft()


# Reason texts. RedisBreakerStore's Lua script builds the same ones.
def _open_reason(failures: int, config: BreakerConfig, error: str) -> str:
    word = "failure" if failures == 1 else "failures"
    reason = f"{failures} {word} within {config.window_s:g} s"
    return f"{reason}; last error: {error}" if error else reason


def _half_open_reason(config: BreakerConfig) -> str:
    return (
        f"cooldown of {config.cooldown_s:g} s elapsed; "
        f"letting {config.half_open_max_calls} probe call(s) through"
    )


def _reopen_reason(error: str) -> str:
    return f"probe call failed: {error}" if error else "probe call failed"


# --- the breaker ---------------------------------------------------------------


def _error_text(error: str | BaseException | None) -> str:
    if error is None:
        return ""
    if isinstance(error, BaseException):
        text = str(error)
        error = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 3] + "..."


def _when(epoch: float, now: float) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
    delta = epoch - now
    return (
        f"{stamp} ({max(0.0, -delta):.1f} s ago)" if delta <= 0 else f"{stamp} (in {delta:.1f} s)"
    )


Listener = Callable[[BreakerTransition], object]


class CircuitBreaker:
    """A circuit breaker around one dependency (a model endpoint, a tool).

    ::

        ticket = breaker.acquire()          # raises BreakerOpen when refused
        try:
            result = call()
        except Exception as e:
            breaker.record_failure(ticket, error=e)
            raise
        breaker.record_success(ticket)

    `store` defaults to a new :class:`InProcessBreakerStore` using `clock`
    (``time.monotonic`` if not given). `on_transition` (and any :meth:`subscribe`
    listener) is called, outside every lock, once per state change this breaker
    notices, in order; a listener that raises is logged and ignored.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        store: BreakerStore | None = None,
        *,
        clock: Callable[[], float] | None = None,
        on_transition: Listener | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise UserError(f"a circuit breaker needs a non-empty name, got {name!r}")
        if store is None:
            store = InProcessBreakerStore(clock or time.monotonic)
        elif clock is not None:
            raise UserError(
                f"CircuitBreaker({name!r}): pass `clock` to the store, not to the breaker, "
                "when you give a store (e.g. InProcessBreakerStore(clock=...))"
            )
        self.name = name
        self.config = config if config is not None else BreakerConfig()
        self.store: BreakerStore = store
        self._listeners: list[Listener] = [] if on_transition is None else [on_transition]
        self._lock = threading.Lock()
        self._pending: deque[BreakerTransition] = deque()
        self._emitting = False
        # What this breaker has reported: the store version and state it reached.
        self._source = ""
        self._seen = -1  # -1: not in contact with the store yet
        self._seen_state: BreakerState = CLOSED
        # Fast path (in-process store): the record, and the version at which it
        # was last seen closed (-2 when it was not).
        self._record: _Record | None = None
        self._closed_version = -2
        if isinstance(store, InProcessBreakerStore):
            rec = store.record_for(name)
            self._record = rec
            self._source = store.identity
            self._seen = rec.version
            self._seen_state = rec.state  # type: ignore[assignment]
            self._closed_version = rec.version if rec.state == CLOSED else -2

    def __repr__(self) -> str:  # no store round trip: the state last seen
        return f"CircuitBreaker({self.name!r}, state={self._seen_state!r}, store={self.store!r})"

    # the calls

    def acquire(self) -> BreakerTicket:
        """Admit one call, or raise :class:`BreakerOpen` (fail fast)."""
        rec = self._record
        if rec is not None and rec.version == self._closed_version:
            return PLAIN_TICKET  # closed and nothing changed: no lock, no allocation
        out = self.store.acquire(self.name, self.config, self._seen)
        self._observe(out)
        if out.granted is None:
            raise self._refusal(out)
        return out.granted

    def record_success(self, ticket: BreakerTicket) -> BreakerTransition | None:
        """Report that the admitted call succeeded; returns the transition it caused."""
        if not ticket.probe:
            return None  # successes only matter for the probe
        out = self.store.record(self.name, self.config, ticket, True, "", self._seen)
        return self._observe(out)

    def record_failure(
        self, ticket: BreakerTicket, error: str | BaseException | None = None
    ) -> BreakerTransition | None:
        """Report that the admitted call failed (`error`: text or the exception);
        returns the transition it caused, if any."""
        out = self.store.record(
            self.name, self.config, ticket, False, _error_text(error), self._seen
        )
        return self._observe(out)

    # looking at it

    @property
    def state(self) -> BreakerState:
        """``"closed"``, ``"open"`` or ``"half_open"`` (open turns half-open once the
        cooldown has elapsed)."""
        rec = self._record
        if rec is not None and rec.version == self._closed_version:
            return CLOSED
        out = self.store.view(self.name, self.config, self._seen)
        self._observe(out)
        return out.state  # type: ignore[return-value]

    def snapshot(self) -> dict[str, Any]:
        """State, failures (in the window while closed; since it opened otherwise),
        opened_at / next_probe_at (epoch seconds or None) and last_error."""
        out = self.store.view(self.name, self.config, self._seen)
        self._observe(out)
        return {
            "name": self.name,
            "state": out.state,
            "failures": out.failures,
            "opened_at": out.opened_at,
            "next_probe_at": out.next_probe_at,
            "last_error": out.last_error or None,
        }

    def reset(self) -> BreakerTransition | None:
        """Force it closed and forget its failures (shared stores: for everyone)."""
        return self._observe(self.store.reset(self.name, self.config, self._seen))

    # listeners

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` for every transition; returns a function that unsubscribes."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    # internals

    def _observe(self, out: Outcome) -> BreakerTransition | None:
        """Queue the transitions in `out` this breaker has not reported yet, report
        them (outside the lock) and return the last one this operation caused."""
        caused: BreakerTransition | None = None
        stale = False
        with self._lock:
            if out.source != self._source:  # another version space: resynchronise
                self._source = out.source
                self._seen = -1
            elif out.version < self._seen:  # older than what another thread reported
                stale = True
            if stale:
                pass
            elif self._seen < 0:  # first contact: only catch up with the current state
                newest = out.log[-1] if out.log else None
                if out.state != self._seen_state:
                    if newest is not None and newest[0] == out.version and newest[2] == out.state:
                        self._queue(self._transition(newest))
                    else:
                        self._queue(self._synthetic(out))
            else:
                for entry in out.log:
                    if entry[0] <= self._seen:
                        continue  # already reported (by another thread's call)
                    if entry[1] != self._seen_state:  # entries were lost in between
                        self._queue(self._synthetic(out, entry[1]))
                    transition = self._transition(entry)
                    self._queue(transition)
                    self._seen = entry[0]
                    if entry[0] > out.before:
                        caused = transition
                if out.state != self._seen_state:
                    self._queue(self._synthetic(out))
            if not stale:
                self._seen = out.version
                self._seen_state = out.state  # type: ignore[assignment]
                self._closed_version = self._seen if out.state == CLOSED else -2
            emit = bool(self._pending) and not self._emitting
            if emit:
                self._emitting = True
        if caused is None and out.log and out.log[-1][0] > out.before:
            caused = self._transition(out.log[-1])
        if emit:
            self._drain()
        return caused

    def _queue(self, transition: BreakerTransition) -> None:
        self._pending.append(transition)
        self._seen_state = transition.to_state

    def _transition(self, entry: LogEntry) -> BreakerTransition:
        _version, from_state, to_state, at, failures, reason, origin = entry
        return BreakerTransition(
            name=self.name,
            from_state=from_state,  # type: ignore[arg-type]
            to_state=to_state,  # type: ignore[arg-type]
            at=at,
            failures=failures,
            reason=reason,
            observed=origin != process_origin(),
        )

    def _synthetic(self, out: Outcome, to_state: str | None = None) -> BreakerTransition:
        """A change noticed without its log entry (lost, or made while out of contact)."""
        reason = "changed elsewhere; noticed by this process"
        if out.note:
            reason = f"{reason} ({out.note})"
        return BreakerTransition(
            name=self.name,
            from_state=self._seen_state,
            to_state=(to_state or out.state),  # type: ignore[arg-type]
            at=out.now,
            failures=out.failures,
            reason=reason,
            observed=True,
        )

    def _drain(self) -> None:
        """Call the listeners for each queued transition, in order (one thread at a
        time drains; transitions queued meanwhile by other threads are included)."""
        try:
            while True:
                with self._lock:
                    if not self._pending:
                        self._emitting = False
                        return
                    transition = self._pending.popleft()
                    listeners = list(self._listeners)
                for listener in listeners:
                    try:
                        listener(transition)
                    except Exception:
                        log.exception("circuit breaker %r: a transition listener failed", self.name)
        except BaseException:  # KeyboardInterrupt in a listener: do not stay "emitting"
            with self._lock:
                self._emitting = False
            raise

    def _refusal(self, out: Outcome) -> BreakerOpen:
        """The :class:`BreakerOpen` explaining why this call is refused."""
        state: BreakerState = out.state  # type: ignore[assignment]
        now = out.now
        next_probe = out.next_probe_at
        retry_in = max(0.0, next_probe - now) if next_probe is not None else self.config.cooldown_s
        parts = [f"Circuit breaker {self.name!r} is {state.replace('_', '-')}: calls fail fast."]
        if out.opened_at is not None:
            parts.append(
                f"It opened at {_when(out.opened_at, now)} after {out.failures} failure(s)"
                + (f" (last error: {out.last_error})." if out.last_error else ".")
            )
        elif out.last_error:
            parts.append(f"{out.failures} failure(s); last error: {out.last_error}.")
        if state == HALF_OPEN:
            parts.append(
                "A probe call is testing whether it has recovered; if it succeeds the "
                "breaker closes, otherwise it stays open for another "
                f"{self.config.cooldown_s:g} s. The probe slot frees at the latest at "
                f"{_when(next_probe, now) if next_probe is not None else 'its timeout'}."
            )
        elif next_probe is not None:
            parts.append(f"The next probe call is allowed at {_when(next_probe, now)}.")
        if out.note:
            parts.append(f"Note: {out.note}.")
        parts.append(
            f"What to do: check that the dependency is reachable and healthy, retry after "
            f"{retry_in:.1f} s or use a fallback; CircuitBreaker.reset() forces it closed."
        )
        return BreakerOpen(
            " ".join(parts),
            name=self.name,
            state=state,
            retry_in=retry_in,
            failures=out.failures,
            opened_at=out.opened_at,
            next_probe_at=next_probe,
            last_error=out.last_error or None,
        )


# --- the registry --------------------------------------------------------------


class BreakerRegistry:
    """The circuit breakers of this process, one per name (shared by every run)."""

    def __init__(self) -> None:
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BreakerRegistry({self.names()!r})"

    def get(
        self,
        name: str,
        config: BreakerConfig | None = None,
        store: BreakerStore | None = None,
    ) -> CircuitBreaker:
        """The breaker named `name`, created on first use.

        A later call with a different `config` reconfigures the existing breaker
        (its state is kept); a different kind of `store` (another identity) is a
        mistake and raises UserError.
        """
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                breaker = CircuitBreaker(name, config, store)
                self._breakers[name] = breaker
                return breaker
        if config is not None and config != breaker.config:
            breaker.config = config
        if (
            store is not None
            and store is not breaker.store
            and getattr(store, "identity", None) != getattr(breaker.store, "identity", None)
        ):
            raise UserError(
                f"circuit breaker {name!r} already exists with store {breaker.store!r}; "
                f"it cannot switch to {store!r}. Pass the same store, or call "
                "breaker_registry().reset() first (tests)"
            )
        return breaker

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._breakers)

    def reset(self) -> None:
        """Forget every breaker (tests); shared state in Redis is left alone."""
        with self._lock:
            self._breakers.clear()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{name: breaker.snapshot()}`` for every breaker."""
        with self._lock:
            breakers = list(self._breakers.values())
        return {breaker.name: breaker.snapshot() for breaker in breakers}

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __len__(self) -> int:
        return len(self._breakers)

    def __iter__(self) -> Iterator[CircuitBreaker]:
        with self._lock:
            return iter(list(self._breakers.values()))


_REGISTRY = BreakerRegistry()


def breaker_registry() -> BreakerRegistry:
    """This process's :class:`BreakerRegistry`."""
    return _REGISTRY
