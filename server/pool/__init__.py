"""The one owner of model lifecycle: `ModelPool` (turns, policy, administration) over `Residency` (which
models are in memory: load, room, eviction, crashes). No llama_cpp here: a model is anything with the
engine interface's `close()` and `exited()`."""

from server.pool.entry import Lease, PoolEvents, State
from server.pool.model_pool import ModelPool
from server.pool.pace import RETRY_AFTER_MAX, Pace
from server.pool.residency import CRASH_LIMIT

__all__ = ["CRASH_LIMIT", "RETRY_AFTER_MAX", "Lease", "ModelPool", "Pace", "PoolEvents", "State"]
