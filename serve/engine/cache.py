"""AdapterCache: a device tier of slots and a host tier under a byte budget, both LRU.

* Device tier: ``num_slots`` slots of the :class:`~serve.engine.layers.AdapterSlots`;
  the cache owns the name <-> slot table. A request pins its adapter from the moment it
  asks for it (before a cold load lands) until its rows are done; eviction takes the
  least recently used unpinned adapter and never a pinned one. When every slot is pinned,
  a new adapter waits for a release.
* Host tier: :class:`~serve.engine.loader.HostAdapter` objects (CPU tensors already laid
  out for the banks), evicted least recently used first while their bytes exceed
  ``max_host_bytes``; pinned and loading adapters stay. An adapter larger than the whole
  budget stays until the next load.
* Loads are single-flight: one task per cold adapter fetches it (in a thread: a Hub
  download waits on the network), reads it (on the cache's one reader thread; on a CPU
  device with several intra-op threads, under the slots' lock, so between steps) and
  writes it into a slot (in a thread, under the slots' lock, between steps); every
  request for that adapter awaits the same task through ``asyncio.shield``, so a
  cancelled request never cancels a load others wait on. A failed load raises in every
  waiter and leaves every other adapter as it was.

Every method runs on the event loop's thread.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import AsyncIterator

import torch

from .layers import AdapterSlots
from .loader import AdapterInfo, AdapterLoader, HostAdapter
from .sources import AdapterSource
from .stats import SECONDS_BOUNDS, Buckets

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheStats:
    """Counters since start, and current occupancy.

    device_hits / misses: acquires that found the adapter in a slot / did not;
    host_hits: slot fills served from the host tier; loads / load_failures: reads from a
    source; load_seconds / bytes_loaded: over successful reads; device_evictions /
    host_evictions: adapters dropped from a tier; slots_used, host_bytes: occupancy now;
    load_latency: histogram of successful reads' seconds.
    """

    device_hits: int = 0
    misses: int = 0
    host_hits: int = 0
    loads: int = 0
    load_failures: int = 0
    load_seconds: float = 0.0
    bytes_loaded: int = 0
    device_evictions: int = 0
    host_evictions: int = 0
    slots_used: int = 0
    host_bytes: int = 0
    load_latency: Buckets = Buckets.empty(SECONDS_BOUNDS)


@dataclass(frozen=True)
class Lease:
    """A pinned adapter: its slot stays its own until the lease is released."""

    name: str
    slot: int
    info: AdapterInfo


@dataclass(frozen=True)
class _Resident:
    slot: int
    info: AdapterInfo


class AdapterCache:
    """Adapter name -> device slot, loading on demand.

    Args:
        slots: the serving layers the adapters are written into.
        loader: reads and validates adapters (blocking; run in threads).
        max_host_bytes: budget of the host tier.
    """

    def __init__(self, slots: AdapterSlots, loader: AdapterLoader, max_host_bytes: int) -> None:
        self._slots = slots
        self._loader = loader
        self.max_host_bytes = max_host_bytes
        self._free = list(reversed(range(slots.spec.num_slots)))
        self._device: OrderedDict[str, _Resident] = OrderedDict()  # least recently used first
        self._host: OrderedDict[str, HostAdapter] = OrderedDict()
        self._host_bytes = 0
        self._pins: Counter[str] = Counter()
        self._flights: dict[str, asyncio.Task] = {}
        self._orphans: dict[str, int] = {}  # forgotten while pinned: name -> slot to free on release
        self._released = asyncio.Event()
        self._stats = CacheStats()
        self._reader: ThreadPoolExecutor | None = None
        self._reads_between_steps = slots.spec.device.type == "cpu" and torch.get_num_threads() > 1

    # -- public -------------------------------------------------------------
    @asynccontextmanager
    async def lease(self, name: str) -> AsyncIterator[Lease]:
        """Pin adapter ``name`` (loading it if needed) for the duration of the block."""
        lease = await self.acquire(name)
        try:
            yield lease
        finally:
            self.release(lease)

    async def acquire(self, name: str) -> Lease:
        """Pin adapter ``name`` in a slot, loading it if needed; pair with :meth:`release`."""
        resident = self._device.get(name)
        self._count(device_hits=resident is not None, misses=resident is None)
        self._pins[name] += 1  # from now on: a load that lands stays until this request is done
        try:
            while resident is None:
                await self._flight(name)
                resident = self._device.get(name)
        except BaseException:
            self._unpin(name)
            raise
        self._touch(name)
        return Lease(name, resident.slot, resident.info)

    def release(self, lease: Lease) -> None:
        """Unpin one lease; an adapter with no lease left may be evicted."""
        self._unpin(lease.name)

    def _unpin(self, name: str) -> None:
        self._pins[name] -= 1
        if self._pins[name] <= 0:
            del self._pins[name]
            if name in self._orphans:
                self._free.append(self._orphans.pop(name))
            self._released.set()

    def forget(self, name: str) -> None:
        """Drop ``name`` from both tiers; a slot still pinned by requests in flight is freed when they end."""
        if name in self._host:
            self._host_bytes -= self._host.pop(name).info.nbytes
        resident = self._device.pop(name, None)
        if resident is None:
            return
        if self._pins[name]:
            self._orphans[name] = resident.slot
        else:
            self._free.append(resident.slot)
            self._released.set()

    def stats(self) -> CacheStats:
        return replace(self._stats, slots_used=len(self._device), host_bytes=self._host_bytes)

    def resident(self) -> list[str]:
        """Adapters in device slots, least recently used first."""
        return list(self._device)

    def host_resident(self) -> list[str]:
        """Adapters in the host tier, least recently used first."""
        return list(self._host)

    def pinned(self, name: str) -> int:
        """Number of leases held on ``name``."""
        return self._pins[name]

    async def close(self) -> None:
        """Cancel loads in flight (their threads finish on their own)."""
        for task in list(self._flights.values()):
            task.cancel()
        await asyncio.gather(*self._flights.values(), return_exceptions=True)
        if self._reader is not None:
            self._reader.shutdown(wait=False)
            self._reader = None

    # -- loading --------------------------------------------------------------
    async def _flight(self, name: str) -> None:
        task = self._flights.get(name)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._make_resident(name))
            self._flights[name] = task
            task.add_done_callback(partial(self._landed, name))
        await asyncio.shield(task)

    def _landed(self, name: str, task: asyncio.Task) -> None:
        self._flights.pop(name, None)
        if not task.cancelled():
            task.exception()  # every waiter got it; mark it retrieved

    async def _make_resident(self, name: str) -> None:
        adapter = self._host.get(name)
        if adapter is None:
            adapter = await self._load(name)
        else:
            self._count(host_hits=True)
        slot = await self._claim_slot()
        try:
            await asyncio.to_thread(self._slots.write, slot, adapter.sites, adapter.head)
        except BaseException:
            self._free.append(slot)
            raise
        self._device[name] = _Resident(slot, adapter.info)
        logger.info("adapter %r is in slot %d", name, slot)

    async def _load(self, name: str) -> HostAdapter:
        start = time.perf_counter()
        try:
            source, directory = await asyncio.to_thread(self._loader.fetch, name, self._reads_between_steps)
            adapter = await self._read(name, source, directory)
        except Exception as err:
            self._count(load_failures=True)
            logger.warning("loading adapter %r failed: %s", name, err)
            raise
        seconds = time.perf_counter() - start
        self._stats = replace(self._stats, loads=self._stats.loads + 1, load_seconds=self._stats.load_seconds + seconds,
                              bytes_loaded=self._stats.bytes_loaded + adapter.info.nbytes,
                              load_latency=self._stats.load_latency.observe(seconds))
        self._host[name] = adapter
        self._host_bytes += adapter.info.nbytes
        self._trim_host(keep=name)
        logger.info("loaded adapter %r (%d bytes) from %s in %.1f ms", name, adapter.info.nbytes,
                    adapter.info.source, seconds * 1e3)
        return adapter

    async def _read(self, name: str, source: AdapterSource, directory: Path) -> HostAdapter:
        """Read a fetched adapter on the cache's one reader thread; between steps when steps run
        parallel regions on the CPU.

        Reads are CPU work, mostly under the GIL: run side by side they only take turns, so
        one reader thread does them all. When a CPU step runs several intra-op threads, a
        read takes a core from one of them, and each parallel region waits for its slowest
        thread: a read beside a step stretched it by more than the read's own time. Under the
        slots' lock a read runs between two steps, and the step after it waits once for it;
        the step thread, already waiting for the lock, usually takes it next, so a burst of
        cold loads spreads over the following steps, about one read per step. With one
        intra-op thread (a Ray replica with 1 CPU) there is no region to stall, and waiting
        for a gap between steps only made loads slower (HTTP scenario 2: 10.4 ms of load
        time per request instead of 1.6); on a GPU the step thread mostly waits for the
        device. In both cases reads run beside steps.
        """
        if self._reader is None:
            self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stitch-read")
        return await asyncio.get_running_loop().run_in_executor(self._reader, self._guarded_read, name, source,
                                                                directory)

    def _guarded_read(self, name: str, source: AdapterSource, directory: Path) -> HostAdapter:
        with self._slots.lock if self._reads_between_steps else nullcontext():
            return self._loader.read(name, source, directory)

    # -- eviction -------------------------------------------------------------
    async def _claim_slot(self) -> int:
        """A free slot, or the slot of the least recently used unpinned adapter; waits while all are pinned."""
        while True:
            slot = self._take_slot()
            if slot is not None:
                return slot
            self._released.clear()
            await self._released.wait()

    def _take_slot(self) -> int | None:
        if self._free:
            return self._free.pop()
        victim = next((name for name in self._device if not self._pins[name]), None)
        if victim is None:
            return None
        self._count(device_evictions=True)
        logger.debug("evicting adapter %r from its slot", victim)
        return self._device.pop(victim).slot

    def _trim_host(self, keep: str) -> None:
        for name in list(self._host):
            if self._host_bytes <= self.max_host_bytes:
                return
            if name == keep or self._pins[name] or name in self._flights:
                continue
            self._host_bytes -= self._host.pop(name).info.nbytes
            self._count(host_evictions=True)

    def _touch(self, name: str) -> None:
        self._device.move_to_end(name)
        if name in self._host:
            self._host.move_to_end(name)

    def _count(self, **flags: bool) -> None:
        self._stats = replace(self._stats, **{key: getattr(self._stats, key) + int(on) for key, on in flags.items()})
