"""The serving engine: one frozen base model, adapter slots, a two-tier adapter cache and a
mixed-adapter scheduler. No HTTP: the HTTP layer calls :class:`Engine` and maps its errors.

Modules, from the model up:

* ``banks/``     per-method slot layouts (LoRA, IA3, bottleneck): stacked ``[S, ...]``
                 tensors of one site and the kernel calls that apply them;
* ``layers``     ``AdapterSlots``: hooks on the base model at the places adapters_lib's
                 ``ModelInterface`` names, banks per (layer, site), heads per slot;
                 ``StepContext``: the step's AdapterBatch, read by every hook;
* ``sources``    adapter names -> registry entries, directories under the roots, Hub repos;
* ``loader``     read (adapters_lib formats), validate, lay out -> ``HostAdapter``;
* ``cache``      ``AdapterCache``: device slots + host tier, LRU, pins, single-flight loads;
* ``runner``     ``ModelRunner``: one step (pad, AdapterBatch, forward, heads, pooling);
* ``scheduler``  ``Scheduler``: admission, batching across adapters, the step thread;
* ``kvcache``    ``SequenceKVCache``: the running sequences' keys and values, one row each;
* ``sampling``   ``SamplingParams``; greedy / temperature / top-k / top-p with per-request generators;
* ``textstream`` ``TextStream``: incremental detokenization and stop strings;
* ``decoding``   ``GenerationRunner``: prefill and decode steps of the running batch;
* ``generation`` ``GenerationScheduler``: continuous batching, chunks, ``GenerationStream``;
* ``engine``     ``Engine``: ``classify``, ``embed``, ``generate``, lifecycle, stats;
* ``errors``     the error types; ``config``: ``EngineConfig``.
"""
from .cache import AdapterCache, CacheStats, Lease
from .config import EngineConfig
from .engine import ClassifyResult, EmbedResult, Engine, EngineStats, GenerationResult
from .errors import (AdapterError, CorruptAdapterError, EmptyInputError, EngineClosedError, EngineError,
                     IncompatibleAdapterError, InputTooLongError, InvalidAdapterError, InvalidInputError,
                     PathOutsideRootsError, QueueFullError, RankTooLargeError, UnknownAdapterError,
                     UnsupportedAdapterError, UnsupportedTaskError)
from .generation import GenerationChunk, GenerationStats, GenerationStream
from .loader import AdapterInfo
from .sampling import SamplingParams
from .scheduler import SchedulerStats
from .sources import AdapterRegistry, RegistryEntry

__all__ = [
    "AdapterCache", "AdapterError", "AdapterInfo", "AdapterRegistry", "CacheStats", "ClassifyResult",
    "CorruptAdapterError", "EmbedResult", "EmptyInputError", "Engine", "EngineClosedError", "EngineConfig",
    "EngineError", "EngineStats", "GenerationChunk", "GenerationResult", "GenerationStats", "GenerationStream",
    "IncompatibleAdapterError", "InputTooLongError", "InvalidAdapterError",
    "InvalidInputError", "Lease", "PathOutsideRootsError", "QueueFullError", "RankTooLargeError", "RegistryEntry",
    "SamplingParams", "SchedulerStats", "UnknownAdapterError", "UnsupportedAdapterError", "UnsupportedTaskError",
]
