"""Memory in three tiers.

* **Working memory** (:mod:`agentlab.memory.working`): what enters the context
  window at each step, within a token budget.
* **Short-term memory** (:mod:`agentlab.memory.short_term`): session state and
  recent results in a key-value store with per-key expiry; embedded (SQLite, no
  server) by default, Redis (:mod:`agentlab.memory.redis_store`) in production.
* **Long-term memory** (:mod:`agentlab.memory.long_term`): summaries, preferences
  and knowledge in LanceDB, searched semantically, by full text or both.

Names are imported on first use: the long-term tier needs ``agentlab-toolkit[memory]``
and the Redis backend ``agentlab-toolkit[redis]``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # an agent's memory
    "Memory": "agentlab.memory.agent_memory",
    "WorkingMemory": "agentlab.memory.working",
    "ContextOverflowError": "agentlab.memory.working",
    "EstimateCounter": "agentlab.tokens",
    "TokenCounter": "agentlab.tokens",
    # short-term
    "ShortTermStore": "agentlab.memory.short_term",
    "EmbeddedStore": "agentlab.memory.short_term",
    "SessionMemory": "agentlab.memory.short_term",
    "KeyAccess": "agentlab.memory.short_term",
    "RedisStore": "agentlab.memory.redis_store",
    # long-term
    "LongTermMemory": "agentlab.memory.long_term",
    "MemoryHit": "agentlab.memory.long_term",
    "Embedder": "agentlab.memory.embeddings",
    "MiniLMEmbedder": "agentlab.memory.embeddings",
    "HashEmbedder": "agentlab.memory.embeddings",
}

__all__ = [  # noqa: RUF022 - grouped as above, not sorted
    "Memory",
    "WorkingMemory",
    "ContextOverflowError",
    "EstimateCounter",
    "TokenCounter",
    "ShortTermStore",
    "EmbeddedStore",
    "SessionMemory",
    "KeyAccess",
    "RedisStore",
    "LongTermMemory",
    "MemoryHit",
    "Embedder",
    "MiniLMEmbedder",
    "HashEmbedder",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agentlab.memory' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
