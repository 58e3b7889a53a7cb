"""Reading an adapter into host tensors laid out for the slot banks, with every check on the way.

:meth:`AdapterLoader.load` (blocking; the cache runs it in a thread) resolves the name,
fetches the directory, reads the checkpoint with adapters_lib (Stitch, AdapterHub or PEFT
format), checks it against the base model and the engine's limits, assigns the weights
strictly to adapters_lib's training modules (so shapes are checked exactly as the training
library checks them), then asks each module's bank for its serving tensors. Every error
names the adapter and its source.

The modules are built once per distinct config, on the meta device, and reused by every
later adapter with that config (building them costs more than the rest of a load). A
template keeps the tensors of the last adapter assigned to it until the next one: at most
``TEMPLATES`` adapters' worth of host memory besides the cache's tiers.
"""
from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adapters_lib.config import AdapterConfigError, AnyConfig
from adapters_lib.heads import HeadConfig, PredictionHead
from adapters_lib.injection import AdapterInstance
from adapters_lib.interface import ModelInterface
from adapters_lib.io import (AdapterCheckpoint, AdapterLoadError, BaseInfo, BaseMismatchError,
                             CorruptCheckpointError, read_checkpoint, weights_mismatch)
from adapters_lib.methods.base import LayerContext

from .banks import BANKS, LayoutError, site_nbytes
from .banks.ia3 import IA3Bank
from .errors import (AdapterError, CorruptAdapterError, IncompatibleAdapterError, InvalidAdapterError,
                     RankTooLargeError, UnsupportedAdapterError)
from .sources import AdapterSource, AdapterSources

logger = logging.getLogger(__name__)

# A pickle-format weights file -> the safetensors file that replaces it.
_BIN_FILES = {"pytorch_adapter.bin": "adapter.safetensors", "pytorch_model_head.bin": "model_head.safetensors",
              "adapter_model.bin": "adapter_model.safetensors"}
SiteKey = tuple[int, str, str]  # (layer, site, bank kind)
TEMPLATES = 8  # distinct adapter configs whose (meta) modules are kept for reuse


@dataclass(frozen=True)
class AdapterInfo:
    """What the engine knows of a loaded adapter besides its tensors.

    methods: the config's method names; head: the head's config (None without a head);
    nbytes: host bytes of its serving tensors and head; max_rank: largest LoRA rank (0: none).
    """

    name: str
    source: str
    config: AnyConfig
    methods: tuple[str, ...]
    head: HeadConfig | None
    nbytes: int
    max_rank: int
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HostAdapter:
    """An adapter ready to be written into a slot. sites: (layer, site, kind) -> bank tensors (CPU)."""

    info: AdapterInfo
    sites: dict[SiteKey, Any]
    head: PredictionHead | None


@dataclass(frozen=True)
class BaseModelSpec:
    """What the loader needs of the base model. vocab_size: None for models without one."""

    info: BaseInfo
    interface: ModelInterface
    contexts: list[LayerContext]
    vocab_size: int | None


class AdapterLoader:
    """Name -> HostAdapter, validated.

    Args:
        sources: resolves names and fetches directories.
        base: the base model's description.
        dtype: the serving dtype of every tensor.
        max_rank: the largest LoRA rank accepted.
        allow_bin_weights: accept ``.bin`` weights that no safetensors file replaces.
    """

    def __init__(self, sources: AdapterSources, base: BaseModelSpec, dtype: torch.dtype, max_rank: int,
                 allow_bin_weights: bool = False) -> None:
        self.sources = sources
        self.base = base
        self.dtype = dtype
        self.max_rank = max_rank
        self.allow_bin_weights = allow_bin_weights
        self._templates: OrderedDict[str, _Template] = OrderedDict()  # config key -> modules, LRU
        self._template_lock = threading.Lock()  # loads run in threads; one assigns a template at a time

    def load(self, name: str) -> HostAdapter:
        """Fetch, read, check and lay out adapter ``name``. Raises an AdapterError subclass."""
        return self.read(name, *self.fetch(name))

    def fetch(self, name: str, into_memory: bool = False) -> tuple[AdapterSource, Path]:
        """Resolve ``name`` and make its directory local (a Hub download waits on the network, not the CPU).

        ``into_memory`` also reads its files once, so that :meth:`read` finds them in memory
        (the OS page cache): for a read that will hold the steps' lock, where a slow disk
        must not stall the steps."""
        source = self.sources.resolve(name)
        directory = self.sources.fetch(name, source)
        if into_memory:
            _read_files(directory)
        return source, directory

    def read(self, name: str, source: AdapterSource, directory: Path) -> HostAdapter:
        """Read, check and lay out a fetched adapter (CPU work). Raises an AdapterError subclass."""
        try:
            return self._load(name, source, directory)
        except AdapterError:
            raise
        except (AdapterLoadError, AdapterConfigError) as err:
            raise _classify(name, source, err) from None

    def _load(self, name: str, source: AdapterSource, directory: Path) -> HostAdapter:
        self._check_weight_files(name, source, directory)
        ckpt = read_checkpoint(directory, self.base.interface, self.base.info)
        if ckpt.base is not None:
            ckpt.base.check_fits(self.base.info, "the adapter")
        self._check_rank(name, source, ckpt)
        with self._template_lock:
            instance = self._modules(name, source, ckpt)
            sites = self._sites(name, source, instance)
        head = self._head(name, source, ckpt)
        nbytes = sum(site_nbytes(site) for site in sites.values()) + _module_nbytes(head)
        info = AdapterInfo(name=name, source=str(source), config=ckpt.config,
                           methods=tuple(part.method for part in ckpt.config.parts()), head=ckpt.head_config,
                           nbytes=nbytes, max_rank=_max_rank(ckpt.config),
                           metadata={**ckpt.metadata, **source.metadata})
        return HostAdapter(info, sites, head)

    def _check_weight_files(self, name: str, source: AdapterSource, directory: Path) -> None:
        if self.allow_bin_weights:
            return
        for binary, safe in _BIN_FILES.items():
            if (directory / binary).exists() and not (directory / safe).exists():
                raise InvalidAdapterError(name, str(source), f"{binary} is a pickle-format weights file; this "
                                          "engine serves safetensors (set allow_bin_weights to accept .bin files)")

    def _check_rank(self, name: str, source: AdapterSource, ckpt: AdapterCheckpoint) -> None:
        rank = _max_rank(ckpt.config)
        if rank > self.max_rank:
            raise RankTooLargeError(name, str(source), f"LoRA rank {rank} is above this engine's max rank "
                                    f"{self.max_rank}")

    def _modules(self, name: str, source: AdapterSource, ckpt: AdapterCheckpoint) -> AdapterInstance:
        """The config's template modules with the checkpoint's tensors assigned (under the template lock)."""
        template = self._template(name, source, ckpt.config)
        problem = weights_mismatch(template.shapes, ckpt.weights)
        if problem:
            raise InvalidAdapterError(name, str(source), f"weights do not match its config: {problem}")
        template.assign(ckpt.weights)
        return template.instance

    def _template(self, name: str, source: AdapterSource, config: AnyConfig) -> "_Template":
        key = json.dumps(config.to_dict(), sort_keys=True)
        template = self._templates.get(key)
        if template is None:
            try:
                with torch.device("meta"):
                    template = _Template(AdapterInstance("template", config, self.base.contexts))
            except AdapterConfigError as err:
                raise UnsupportedAdapterError(name, str(source), str(err)) from None
            self._templates[key] = template
            if len(self._templates) > TEMPLATES:
                self._templates.popitem(last=False)
        self._templates.move_to_end(key)
        return template

    def _sites(self, name: str, source: AdapterSource, instance: AdapterInstance) -> dict[SiteKey, Any]:
        sites: dict[SiteKey, Any] = {}
        for layer, layer_sites in enumerate(instance.layers):
            for site, methods in layer_sites.items():
                banks = [self._bank(name, source, module) for module in methods.values()]
                _check_site_order(name, source, layer, site, banks)
                for bank, module in zip(banks, methods.values()):
                    sites[(layer, site, bank.kind)] = self._extract(name, source, bank, module)
        return sites

    def _bank(self, name: str, source: AdapterSource, module: nn.Module):
        bank = BANKS.for_module(module)
        if bank is None:
            raise UnsupportedAdapterError(name, str(source), f"{type(module).__name__} has no serving layout")
        return bank

    def _extract(self, name: str, source: AdapterSource, bank, module: nn.Module) -> Any:
        try:
            return bank.extract(module, self.dtype)
        except LayoutError as err:
            raise UnsupportedAdapterError(name, str(source), str(err)) from None

    def _head(self, name: str, source: AdapterSource, ckpt: AdapterCheckpoint) -> PredictionHead | None:
        if ckpt.head_config is None:
            return None
        head = PredictionHead(ckpt.head_config, self.base.info.hidden_size, self.base.vocab_size)
        try:
            head.load_state_dict(ckpt.head_weights or {}, strict=True)
        except RuntimeError as err:
            raise InvalidAdapterError(name, str(source), f"head weights do not match its config: {_first_line(err)}") from None
        return head.to(self.dtype).eval().requires_grad_(False)


class _Template:
    """An adapter config's modules (built on the meta device) and where each state-dict tensor goes.

    ``shapes`` is what ``weights_mismatch`` checks a checkpoint against; ``assign`` then puts
    its tensors in place (no copy) with one ``setattr`` per tensor: a strict
    ``load_state_dict`` walks every module and costs several times more.
    """

    def __init__(self, instance: AdapterInstance) -> None:
        self.instance = instance
        self.shapes = {key: tensor.shape for key, tensor in instance.state_dict(keep_vars=True).items()}
        self.targets = {key: _owner(instance, key) for key in self.shapes}  # key -> (module, attribute, parameter?)

    def assign(self, weights: dict[str, torch.Tensor]) -> None:
        for key, tensor in weights.items():
            module, attr, parameter = self.targets[key]
            setattr(module, attr, nn.Parameter(tensor, requires_grad=False) if parameter else tensor)


def _owner(root: nn.Module, key: str) -> tuple[nn.Module, str, bool]:
    """The module that holds state-dict entry ``key``, the attribute's name, and whether it is a parameter."""
    path, _, attr = key.rpartition(".")
    module = root.get_submodule(path)
    return module, attr, attr in module._parameters


def _check_site_order(name: str, source: AdapterSource, layer: int, site: str, banks: list) -> None:
    """The serving order per site (LoRA, IA3 input, IA3 output; one bottleneck) must give the same result."""
    kinds = [bank.kind for bank in banks]
    repeated = sorted({kind for kind in kinds if kinds.count(kind) > 1})
    if repeated:
        raise UnsupportedAdapterError(name, str(source), f"layer {layer} {site}: several {repeated[0]} methods at "
                                      "one site have no serving layout")
    if IA3Bank.kind in kinds and kinds[-1] != IA3Bank.kind:
        raise UnsupportedAdapterError(name, str(source), f"layer {layer} {site}: the union applies ia3 before "
                                      f"{kinds[-1]}; serving applies output scaling last (put ia3 last in the union)")


def _classify(name: str, source: AdapterSource, err: Exception) -> AdapterError:
    if isinstance(err, BaseMismatchError):
        return IncompatibleAdapterError(name, str(source), str(err))
    if isinstance(err, CorruptCheckpointError):
        return CorruptAdapterError(name, str(source), str(err))
    return InvalidAdapterError(name, str(source), str(err))


def _read_files(directory: Path) -> None:
    """Read every file of an adapter directory once, through one small buffer (a missing
    directory is left for :meth:`AdapterLoader.read` to report)."""
    buffer = bytearray(1 << 20)
    for path in directory.iterdir() if directory.is_dir() else ():
        if path.is_file():
            with path.open("rb", buffering=0) as file:
                while file.readinto(buffer):
                    pass


def _max_rank(config: AnyConfig) -> int:
    return max((part.r for part in config.parts() if part.method == "lora"), default=0)


def _module_nbytes(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() * p.element_size() for p in module.parameters())


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines[1:4] if len(lines) > 1 else lines)
