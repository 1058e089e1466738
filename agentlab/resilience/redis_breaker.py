"""Circuit breaker state in Redis, shared by every process that uses the same server.

Keys of the breaker NAME (``{...}`` is a Redis Cluster hash tag, so all four land
in one slot)::

    PREFIX{NAME}           hash: state, version, opened_at, failures, last_error,
                           seq (lease / member counter), incarnation (set when created)
    PREFIX{NAME}:failures  sorted set: failure times while closed (score = time)
    PREFIX{NAME}:probes    sorted set: half-open probe leases (score = expiry)
    PREFIX{NAME}:log       list: the last transitions, newest first, as JSON

Every operation is one Lua script (atomic on the server) that reads the clock
with ``TIME``, so all processes agree on time; times are epoch seconds. Each
transition increments ``version`` and is pushed on the log, so a process reports
the transitions others made (with their reasons) when it next talks to Redis. The
keys expire after an hour (or 10x the breaker's longest period) without changes;
a new ``incarnation`` then tells processes to resynchronise.

If Redis cannot be reached (or fails), the breaker does not fail its caller: the
store falls back to a per-process :class:`InProcessBreakerStore` (wall clock),
logs one warning per `warn_interval_s`, and tries Redis again after
`retry_interval_s`. State gathered during the outage is not merged back.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from agentlab.errors import MissingExtraError, UserError
from agentlab.resilience.breaker import (
    LOG_LENGTH,
    PLAIN_TICKET,
    BreakerConfig,
    BreakerTicket,
    InProcessBreakerStore,
    LogEntry,
    Outcome,
    process_origin,
)

if TYPE_CHECKING:
    import redis

__all__ = ["RedisBreakerStore"]

log = logging.getLogger("agentlab.resilience")

# KEYS: state hash, failures zset, probes zset, log list.
# ARGV: op, threshold, window, cooldown, max_probes, probe_timeout, lease, error,
#       since, origin, ttl_ms, log_len, window label, cooldown label.
_SCRIPT = r"""
local op = ARGV[1]
local threshold = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local cooldown = tonumber(ARGV[4])
local max_probes = tonumber(ARGV[5])
local probe_timeout = tonumber(ARGV[6])
local lease = ARGV[7]
local err = ARGV[8]
local since = tonumber(ARGV[9])
local origin = ARGV[10]
local ttl_ms = tonumber(ARGV[11])
local log_len = tonumber(ARGV[12])

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function fmt(x) return string.format('%.6f', x) end

local h = redis.call('HMGET', KEYS[1], 'state', 'version', 'opened_at', 'failures',
  'last_error', 'incarnation')
local state = h[1] or 'closed'
local version = tonumber(h[2]) or 0
local opened_at = tonumber(h[3])
local failures = tonumber(h[4]) or 0
local last_error = h[5] or ''
local incarnation = h[6] or ''
local before = version
local dirty = false

local function move(to, at, reason)
  version = version + 1
  redis.call('LPUSH', KEYS[4],
    cjson.encode({version, state, to, fmt(at), failures, reason, origin}))
  redis.call('LTRIM', KEYS[4], 0, log_len - 1)
  state = to
  dirty = true
end

if state == 'open' and opened_at and now >= opened_at + cooldown then
  redis.call('DEL', KEYS[3])
  move('half_open', opened_at + cooldown, 'cooldown of ' .. ARGV[14] ..
    ' s elapsed; letting ' .. ARGV[5] .. ' probe call(s) through')
end

local granted = ''
if op == 'acquire' then
  if state == 'closed' then
    granted = 'plain'
  elseif state == 'half_open' then
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', fmt(now))
    if redis.call('ZCARD', KEYS[3]) < max_probes then
      lease = tostring(redis.call('HINCRBY', KEYS[1], 'seq', 1))
      redis.call('ZADD', KEYS[3], fmt(now + probe_timeout), lease)
      granted = 'probe'
      dirty = true
    end
  end
elseif op == 'success' or op == 'failure' then
  local ok = op == 'success'
  if not ok then
    last_error = err
    dirty = true
  end
  local expiry = false
  if lease ~= '' and state == 'half_open' then
    expiry = redis.call('ZSCORE', KEYS[3], lease)
  end
  if expiry and tonumber(expiry) > now then
    redis.call('DEL', KEYS[3])
    if ok then
      failures = 0
      opened_at = nil
      redis.call('DEL', KEYS[2])
      move('closed', now, 'probe call succeeded')
    else
      failures = failures + 1
      opened_at = now
      local reason = 'probe call failed'
      if err ~= '' then reason = reason .. ': ' .. err end
      move('open', now, reason)
    end
  elseif not ok then
    if state == 'closed' then
      local member = fmt(now) .. '#' .. redis.call('HINCRBY', KEYS[1], 'seq', 1)
      redis.call('ZADD', KEYS[2], fmt(now), member)
      redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', fmt(now - window))
      local n = redis.call('ZCARD', KEYS[2])
      if n >= threshold then
        failures = n
        opened_at = now
        redis.call('DEL', KEYS[2])
        local word = 'failures'
        if n == 1 then word = 'failure' end
        local reason = n .. ' ' .. word .. ' within ' .. ARGV[13] .. ' s'
        if err ~= '' then reason = reason .. '; last error: ' .. err end
        move('open', now, reason)
      end
    else
      failures = failures + 1
    end
  end
elseif op == 'reset' then
  redis.call('DEL', KEYS[2], KEYS[3])
  failures = 0
  opened_at = nil
  if state ~= 'closed' then move('closed', now, 'reset') end
  dirty = true
end

if dirty then
  if incarnation == '' then
    incarnation = t[1] .. '.' .. t[2]
    redis.call('HSET', KEYS[1], 'incarnation', incarnation)
  end
  redis.call('HSET', KEYS[1], 'state', state, 'version', version,
    'failures', failures, 'last_error', last_error)
  if opened_at then
    redis.call('HSET', KEYS[1], 'opened_at', fmt(opened_at))
  else
    redis.call('HDEL', KEYS[1], 'opened_at')
  end
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ttl_ms) end
end

local count = failures
local next_probe = ''
if state == 'closed' then
  count = redis.call('ZCOUNT', KEYS[2], '(' .. fmt(now - window), '+inf')
elseif state == 'open' and opened_at then
  next_probe = fmt(opened_at + cooldown)
elseif state == 'half_open' then
  local live = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. fmt(now), '+inf',
    'WITHSCORES', 'LIMIT', 0, 1)
  if live[2] and redis.call('ZCOUNT', KEYS[3], '(' .. fmt(now), '+inf') >= max_probes then
    next_probe = live[2]
  else
    next_probe = fmt(now)
  end
end

local entries = {}
if since < 0 then
  entries = redis.call('LRANGE', KEYS[4], 0, 0)
elseif version > since then
  entries = redis.call('LRANGE', KEYS[4], 0, math.min(version - since, log_len) - 1)
end
local opened = ''
if opened_at then opened = fmt(opened_at) end
return {state, granted, lease, tostring(count), opened, next_probe, last_error,
  fmt(now), tostring(version), tostring(before), entries, incarnation}
"""


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _shown(url: str) -> str:
    """`url` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class RedisBreakerStore:
    """Breaker state in Redis (``pip install 'agentlab-toolkit[redis]'``).

    `url_or_client` is a ``redis://`` URL (the store connects lazily, waiting at
    most `timeout_s` for a connection or a reply, retrying once) or a
    ``redis.Redis`` you configured yourself. Keys start with `prefix`.
    """

    def __init__(
        self,
        url_or_client: str | redis.Redis = "redis://127.0.0.1:6379/0",
        prefix: str = "agentlab:breaker:",
        *,
        timeout_s: float = 0.5,
        retry_interval_s: float = 5.0,
        warn_interval_s: float = 60.0,
    ) -> None:
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as e:
            raise MissingExtraError("redis", "redis") from e
        if not prefix:
            raise UserError(
                "RedisBreakerStore needs a non-empty key prefix, e.g. 'agentlab:breaker:'"
            )
        if isinstance(url_or_client, str):
            self.url = url_or_client
            try:
                client = redis.Redis.from_url(
                    url_or_client,
                    socket_connect_timeout=timeout_s,
                    socket_timeout=timeout_s,
                    retry=Retry(NoBackoff(), 1),
                )
            except ValueError as e:
                raise UserError(f"invalid Redis URL {_shown(url_or_client)!r}: {e}") from e
        else:
            client = url_or_client
            kwargs = client.connection_pool.connection_kwargs
            host, port, db = kwargs.get("host", "?"), kwargs.get("port", "?"), kwargs.get("db", 0)
            self.url = f"redis://{host}:{port}/{db}"
        self.prefix = prefix
        self.identity = f"redis:{_shown(self.url)}:{prefix}"
        self.retry_interval_s = retry_interval_s
        self.warn_interval_s = warn_interval_s
        self._client = client
        self._script = client.register_script(_SCRIPT)
        self._errors: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)
        self._fallback = InProcessBreakerStore(clock=time.time)
        self._down_until = 0.0  # monotonic; Redis is skipped until then
        self._warned_at: float | None = None
        self._note = f"Redis at {_shown(self.url)} is unreachable; using this process's state"

    def __repr__(self) -> str:
        return f"RedisBreakerStore({_shown(self.url)!r}, prefix={self.prefix!r})"

    @property
    def degraded(self) -> bool:
        """True while Redis is skipped after a failure (the fallback is in use)."""
        return time.monotonic() < self._down_until

    def keys(self, name: str) -> list[str]:
        """The four Redis keys of breaker `name`."""
        base = f"{self.prefix}{{{name}}}"
        return [base, f"{base}:failures", f"{base}:probes", f"{base}:log"]

    # the store operations

    def acquire(self, name: str, config: BreakerConfig, since: int) -> Outcome:
        out = self._run("acquire", name, config, "", "", since)
        if out is None:
            out = self._fallback.acquire(name, config, since)
            out.note = self._note
        return out

    def record(
        self,
        name: str,
        config: BreakerConfig,
        ticket: BreakerTicket,
        ok: bool,
        error: str,
        since: int,
    ) -> Outcome:
        op = "success" if ok else "failure"
        out = self._run(op, name, config, ticket.lease if ticket.probe else "", error, since)
        if out is None:
            out = self._fallback.record(name, config, ticket, ok, error, since)
            out.note = self._note
        return out

    def view(self, name: str, config: BreakerConfig, since: int) -> Outcome:
        out = self._run("view", name, config, "", "", since)
        if out is None:
            out = self._fallback.view(name, config, since)
            out.note = self._note
        return out

    def reset(self, name: str, config: BreakerConfig, since: int) -> Outcome:
        self._fallback.reset(name, config, -1)
        out = self._run("reset", name, config, "", "", since)
        if out is None:
            out = self._fallback.view(name, config, since)
            out.note = self._note
        return out

    # internals

    def _run(
        self, op: str, name: str, config: BreakerConfig, lease: str, error: str, since: int
    ) -> Outcome | None:
        """Run the script; None when Redis failed (the caller uses the fallback)."""
        if self._down_until and time.monotonic() < self._down_until:
            return None
        longest = max(config.window_s, config.cooldown_s + config.probe_timeout)
        ttl_ms = int(max(3600.0, 10 * longest) * 1000)
        args: list[str | int | float] = [
            op,
            config.failure_threshold,
            repr(float(config.window_s)),
            repr(float(config.cooldown_s)),
            config.half_open_max_calls,
            repr(float(config.probe_timeout)),
            lease,
            error,
            since,
            process_origin(),
            ttl_ms,
            LOG_LENGTH,
            f"{config.window_s:g}",
            f"{config.cooldown_s:g}",
        ]
        try:
            raw = self._script(keys=self.keys(name), args=args)
            out = self._parse(raw)
        except self._errors as e:
            self._unreachable(e)
            return None
        if self._down_until:
            self._down_until = 0.0
            log.info("Redis at %s is reachable again; breakers share state", _shown(self.url))
        return out

    def _parse(self, raw: Any) -> Outcome:
        state, granted, lease, count, opened, next_probe, last_error, now, version, before = (
            _text(value) for value in raw[:10]
        )
        entries: list[LogEntry] = []
        for item in reversed(raw[10]):
            v, from_state, to_state, at, failures, reason, origin = json.loads(_text(item))
            entries.append((int(v), from_state, to_state, float(at), int(failures), reason, origin))
        ticket: BreakerTicket | None = None
        if granted == "plain":
            ticket = PLAIN_TICKET
        elif granted == "probe":
            ticket = BreakerTicket(probe=True, lease=lease)
        return Outcome(
            state=state,
            version=int(version),
            before=int(before),
            granted=ticket,
            failures=int(count),
            opened_at=float(opened) if opened else None,
            next_probe_at=float(next_probe) if next_probe else None,
            last_error=last_error,
            now=float(now),
            log=entries,
            source=f"{self.identity}#{_text(raw[11])}",
        )

    def _unreachable(self, error: BaseException) -> None:
        now = time.monotonic()
        self._down_until = now + self.retry_interval_s
        if self._warned_at is None or now - self._warned_at >= self.warn_interval_s:
            self._warned_at = now
            log.warning(
                "Redis at %s failed (%s: %s): circuit breakers fall back to this "
                "process's state (not shared with other processes) and retry Redis "
                "every %g s; this warning repeats at most every %g s",
                _shown(self.url),
                type(error).__name__,
                error,
                self.retry_interval_s,
                self.warn_interval_s,
            )
