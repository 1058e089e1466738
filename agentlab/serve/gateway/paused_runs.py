"""Paused runs shared through Redis, so a run paused through one gateway machine is
resumed through any other (only with a ``redis_url``; without one, each machine
resumes the runs its own trace store holds).

* **Publish.** A gateway run (sync, async or resumed) that ends ``paused`` is
  exported from this machine's trace store (:func:`~agentlab.tracing.handoff.
  export_run`) to ``agentlab:gw:paused:<run_id>``, and its public state (what
  ``GET /v1/runs/{id}`` answers, with the gateway metadata the ownership checks
  read: key id, owner, agent, version) to ``agentlab:gw:state:<run_id>``; a
  resumed run that ends otherwise publishes its state only. Both live
  ``paused_run_ttl_s``. A run that does not pause and was never resumed costs no
  Redis round trip.
* **Claim.** A resume claims the paused run atomically (one Lua script takes the
  export and marks the state ``running``): of two concurrent resumes, through one
  gateway or two, exactly one goes on and the other gets 409. The claiming gateway
  imports the export into its own trace store (replacing an older copy: the run may
  have gone on elsewhere since), then resumes as usual. A resumption refused before
  it runs (429, 503, a 409 from the agent) puts the paused run back.
* **Generations.** The state counts the claims made so far (``resumes``); a run
  publishes with the count its resumption claimed (0 for a new run), and Redis
  drops a publication whose count is no longer current. So a pause published late
  (an async run's background end, after a fast resume already took the run
  through this machine's trace store) can never put back a run that is being, or
  has been, resumed.
* **Reading.** ``GET /v1/runs/{id}`` and the event stream read the state on Redis
  only for a run this machine's trace store has as ``paused`` or not at all: the
  machine where a run paused answers how it really ended elsewhere, and a machine
  that never saw the run answers from Redis (:meth:`PausedRuns.view`).

A run whose Redis records are gone (paused before Redis was configured, or longer
than ``paused_run_ttl_s`` ago) is resumed from the trace store of the machine that
has it, as without Redis.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.errors import UserError
from agentlab.serve.agent_app import RunResponse, RunState, public_state
from agentlab.serve.gateway.errors import ApiError, record_error
from agentlab.serve.gateway.redis_clients import async_redis
from agentlab.tracing import TraceStore
from agentlab.tracing.handoff import export_run, import_run

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = [
    "META_KEY",
    "PAUSED_PREFIX",
    "STATE_PREFIX",
    "Claim",
    "PausedRuns",
    "RunView",
]

log = logging.getLogger("agentlab.gateway")

META_KEY = "gateway"
"""The run metadata key under which the gateway records key, owner, agent, version."""
PAUSED_PREFIX = "agentlab:gw:paused:"
"""``<prefix><run_id>``: a paused run's export (:func:`~agentlab.tracing.handoff.export_run`)."""
STATE_PREFIX = "agentlab:gw:state:"
"""``<prefix><run_id>``: a hash of the run's latest shared state (``json``) and how
many times it was claimed (``resumes``)."""


@dataclass(frozen=True)
class RunView:
    """A run as the gateway answers about it: `row` holds its ``status``,
    ``metadata`` (the gateway's under :data:`META_KEY`), tokens and cost; `state` is
    what ``GET /v1/runs/{id}`` answers. `shared`: read from Redis, not from this
    machine's trace store."""

    row: dict[str, Any]
    state: RunState
    shared: bool = False

    @property
    def status(self) -> str:
        return self.state.status

    @classmethod
    def of_row(cls, row: dict[str, Any], error_id: str | None) -> RunView:
        """The view of a trace-store run row (`error_id`: its error record, if any)."""
        return cls(row, public_state(row, error_id))

    @classmethod
    def shared_as(
        cls,
        state: RunState,
        gateway: dict[str, Any],
        *,
        input_tokens: int | None,
        output_tokens: int | None,
        cost: float | None,
    ) -> RunView:
        row = {
            "run_id": state.run_id,
            "status": state.status,
            "metadata": {META_KEY: gateway},
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost": cost,
        }
        return cls(row, state, shared=True)

    @property
    def gateway(self) -> dict[str, Any]:
        """The gateway's metadata of the run: key id, owner, agent, version."""
        return dict((self.row.get("metadata") or {}).get(META_KEY) or {})

    def to_json(self) -> str:
        return json.dumps(
            {
                "state": self.state.model_dump(mode="json"),
                "gateway": self.gateway,
                "input_tokens": self.row.get("input_tokens"),
                "output_tokens": self.row.get("output_tokens"),
                "cost": self.row.get("cost"),
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> RunView:
        doc = json.loads(text)
        return cls.shared_as(
            RunState.model_validate(doc["state"]),
            doc["gateway"],
            input_tokens=doc.get("input_tokens"),
            output_tokens=doc.get("output_tokens"),
            cost=doc.get("cost"),
        )


@dataclass(frozen=True)
class Claim:
    """A paused run taken for one resumption: the claim count it made (`generation`,
    which its publications carry), and what :meth:`PausedRuns.put_back` restores."""

    run_id: str
    generation: int
    payload: bytes  # b"": the run was not shared; this machine's trace store has it
    before: bytes  # the state's JSON before the claim (b"": none)


# KEYS: paused, state. ARGV: the running state's JSON, ttl (s).
_CLAIM = """
local payload = redis.call('GET', KEYS[1]) or ''
local before = redis.call('HGET', KEYS[2], 'json') or ''
if payload == '' and before ~= '' then return {'taken', 0, '', before} end
local resumes = tonumber(redis.call('HGET', KEYS[2], 'resumes') or '0') + 1
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], 'json', ARGV[1], 'resumes', resumes)
redis.call('EXPIRE', KEYS[2], ARGV[2])
return {'claimed', resumes, payload, before}
"""
# KEYS: paused, state. ARGV: generation ('': any), ttl (s), the state's JSON ('': none),
# the export ('': none). Returns 0 when the generation is no longer current.
_PUBLISH = """
local resumes = redis.call('HGET', KEYS[2], 'resumes') or '0'
if ARGV[1] ~= '' and tonumber(resumes) ~= tonumber(ARGV[1]) then return 0 end
if ARGV[4] ~= '' then redis.call('SET', KEYS[1], ARGV[4], 'EX', ARGV[2]) end
redis.call('HSET', KEYS[2], 'json', ARGV[3], 'resumes', resumes)
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class _Connection:
    client: Redis
    claim: AsyncScript
    publish: AsyncScript


class PausedRuns:
    """The paused runs and shared run states of the gateways that share the Redis
    at `redis_url`; `workspace` is this machine's (its trace store receives the runs
    it claims). One client per event loop, made on first use."""

    def __init__(self, redis_url: str, workspace: Path, *, ttl_s: int) -> None:
        async_redis(redis_url)  # the extra is installed (a client connects lazily)
        self.redis_url = redis_url
        self.workspace = workspace
        self.ttl_s = ttl_s
        self._connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Connection] = (
            weakref.WeakKeyDictionary()
        )

    def _connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        found = self._connections.get(loop)
        if found is None:
            client = async_redis(self.redis_url)
            found = _Connection(
                client, client.register_script(_CLAIM), client.register_script(_PUBLISH)
            )
            self._connections[loop] = found
        return found

    async def view(self, run_id: str) -> RunView | None:
        """The run's latest shared state, or None when Redis has none."""
        text = await self._connection().client.hget(STATE_PREFIX + run_id, "json")
        return RunView.from_json(text) if text else None

    async def claim(self, run_id: str, view: RunView) -> Claim:
        """Take the paused run `run_id` (seen as `view`) for one resumption and import
        it into this machine's trace store; 409 when another resumption has it."""
        running = RunView.shared_as(
            view.state.model_copy(
                update={"status": "running", "output": None, "explanation": None, "pending": None}
            ),
            view.gateway,
            input_tokens=view.row.get("input_tokens"),
            output_tokens=view.row.get("output_tokens"),
            cost=view.row.get("cost"),
        )
        keys = [PAUSED_PREFIX + run_id, STATE_PREFIX + run_id]
        verdict, generation, payload, before = await self._connection().claim(
            keys=keys, args=[running.to_json(), self.ttl_s]
        )
        if verdict == b"taken":
            now = RunView.from_json(before).status
            raise ApiError(
                409,
                f"Run {run_id} is no longer waiting to be resumed: another request resumed "
                f"it (it is {now} now). GET /v1/runs/{run_id} says how it goes on.",
            )
        claim = Claim(run_id, int(generation), payload, before)
        if payload:
            try:
                await asyncio.to_thread(
                    import_run, TraceStore(self.workspace), payload, replace=True
                )
            except UserError as exc:  # e.g. from a newer agentlab: another machine may read it
                await self.put_back(claim)
                error_id = record_error(self.workspace, exc, where=f"importing run {run_id}")
                raise ApiError(
                    409,
                    f"Run {run_id} paused on a gateway machine whose trace this one cannot "
                    "read: resume it through a machine that runs the same agentlab version.",
                    error_id=error_id,
                ) from None
        return claim

    async def put_back(self, claim: Claim) -> None:
        """Undo `claim` (its resumption was refused before it ran): the run waits to be
        resumed again, through any gateway."""
        await self._publish(claim.run_id, claim.generation, claim.before, claim.payload)

    async def publish(
        self,
        response: RunResponse,
        gateway: dict[str, Any],
        *,
        generation: int | None,
    ) -> None:
        """Share how the run of `response` ended: its state, and its export when it
        ended paused. `generation`: the claim count of its resumption (0: a new run;
        None: whatever it is). Never raises: a run that cannot be shared can still be
        resumed through this machine."""
        run_id = response.run_id
        state = RunState.model_validate({k: getattr(response, k) for k in RunState.model_fields})
        view = RunView.shared_as(
            state,
            gateway,
            input_tokens=response.usage.input_tokens,
            output_tokens=response.usage.output_tokens,
            cost=response.cost,
        )
        try:
            payload = b""
            if response.status == "paused":
                payload = await asyncio.to_thread(export_run, TraceStore(self.workspace), run_id)
            current = await self._publish(run_id, generation, view.to_json().encode(), payload)
        except Exception as exc:  # Redis or the trace store unreachable
            record_error(self.workspace, exc, where=f"sharing run {run_id} through Redis")
            return
        if not current:
            log.info("run %s: not shared, another request resumed it meanwhile", run_id)

    async def _publish(
        self, run_id: str, generation: int | None, state: bytes, payload: bytes
    ) -> bool:
        keys = [PAUSED_PREFIX + run_id, STATE_PREFIX + run_id]
        args = ["" if generation is None else generation, self.ttl_s, state, payload]
        return bool(await self._connection().publish(keys=keys, args=args))

    async def aclose(self) -> None:
        """Close this event loop's client."""
        found = self._connections.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found.client.aclose()
