"""Serving layers: slot banks stitched into the frozen base model.

:class:`AdapterSlots` hooks the model once, at the places its
:class:`~adapters_lib.interface.ModelInterface` names (the same places adapters_lib's
training-time hooks use): every linear role, whose ``forward`` it wraps (a LoRA bank
computes the whole adapted linear in one pass, so a post-hook cannot serve it), and the
output of every residual sublayer (a forward hook; a pre-hook captures the residual
stream). Banks are created lazily, the first time an adapter writes a method at a site.
During a step (:meth:`AdapterSlots.step`) the hooks read one :class:`StepContext`;
outside a step they call through, so the model stays the plain base model. Base weights
are never written.

Thread safety: ``lock`` serialises steps and slot writes; the runner holds it for a whole
step, the cache for one slot write (and, on a CPU device, for one adapter read).
"""
from __future__ import annotations

import copy
import inspect
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Iterator

import torch
from torch import nn

from adapters_lib.heads import PredictionHead
from adapters_lib.interface import ModelInterface, get_submodule, linear_dims
from adapters_lib.methods.base import LayerContext
from kernels import AdapterBatch

from .banks import BANKS, BankSpec, SlotBank
from .banks.bottleneck import BottleneckBank

SUBLAYERS = ("attn", "ffn")


class StepContext:
    """What the hooks of one step read: the step's AdapterBatch and its restrictions.

    ``batch_for(slots)`` is the batch with every token outside ``slots`` set to -1, built
    at most once per step per subset (a bank serving only some of the step's slots runs
    its kernel on their tokens alone). ``residuals`` holds the residual streams captured
    for the sublayers of the current forward pass.
    """

    def __init__(self, batch: AdapterBatch, token_slots: torch.Tensor) -> None:
        # token_slots: [T] int64 on the CPU; batch: built from it, on the model's device
        self.batch = batch
        self.token_slots = token_slots
        self.active = frozenset(slot for slot, _, _ in batch.segments)
        self.residuals: dict[tuple[int, str], torch.Tensor] = {}
        self._batches: dict[frozenset[int], AdapterBatch] = {self.active: batch}
        self._masks: dict[frozenset[int], torch.Tensor] = {}

    def batch_for(self, slots: frozenset[int]) -> AdapterBatch:
        """The AdapterBatch of the tokens whose slot is in ``slots`` (others: -1)."""
        if slots not in self._batches:
            keep = torch.isin(self.token_slots, torch.tensor(sorted(slots)))
            restricted = torch.where(keep, self.token_slots, -1)
            self._batches[slots] = AdapterBatch.from_slots(restricted).to(self.batch.device)
        return self._batches[slots]

    def mask_for(self, slots: frozenset[int]) -> torch.Tensor:
        """[T, 1] bool: whether each token's slot is in ``slots``."""
        if slots not in self._masks:
            self._masks[slots] = (self.batch_for(slots).slots >= 0).unsqueeze(1)
        return self._masks[slots]


@dataclass
class LinearSite:
    """One linear of one layer and its banks, in application order."""

    module: nn.Module
    banks: list[SlotBank] = field(default_factory=list)

    def serving(self, active: frozenset[int]) -> list[tuple[SlotBank, frozenset[int]]]:
        """The banks holding a slot of ``active``, each with those slots, in application order."""
        return [(bank, frozenset(bank.slots & active)) for bank in self.banks if not bank.slots.isdisjoint(active)]


@dataclass
class SublayerSite:
    """One residual sublayer of one layer: its post-LN layer norm (None on pre-LN models) and bottleneck."""

    layer_norm: nn.Module | None
    bank: BottleneckBank | None = None

    def serves(self, active: frozenset[int]) -> bool:
        return self.bank is not None and not self.bank.slots.isdisjoint(active)


class AdapterSlots:
    """The slot banks of every site of a model, the heads of every slot, and the hooks.

    Args:
        model: the base model (``model.base_model`` holds the layers the interface names).
        interface: where adapters attach in this architecture.
        spec: number of slots, device, dtype and kernels backend of every bank.
    """

    def __init__(self, model: nn.Module, interface: ModelInterface, spec: BankSpec) -> None:
        self.spec = spec
        self.interface = interface
        self.lock = threading.Lock()
        self.linears: dict[tuple[int, str], LinearSite] = {}
        self.sublayers: dict[tuple[int, str], SublayerSite] = {}
        self.heads: dict[int, PredictionHead] = {}
        self._slot_banks: dict[int, list[SlotBank]] = {}
        self._step: StepContext | None = None
        layers = get_submodule(model.base_model, interface.layers)
        self.contexts = [self._install(index, layer) for index, layer in enumerate(layers)]

    # -- installation -------------------------------------------------------
    def _install(self, index: int, layer: nn.Module) -> LayerContext:
        """Hook one layer; returns its LayerContext (what adapters_lib's builders need)."""
        dims = {}
        for role, path in self.interface.linears.items():
            module = get_submodule(layer, path)
            dims[role] = linear_dims(module)
            self.linears[(index, role)] = LinearSite(module)
            module.forward = partial(self._linear_forward, (index, role), module.forward)
        for name in SUBLAYERS:
            self._install_sublayer(index, layer, name)
        return LayerContext(index=index, hidden_size=dims["o"][1], linears=dims, post_ln=self.interface.post_ln)

    def _install_sublayer(self, index: int, layer: nn.Module, name: str) -> None:
        site = getattr(self.interface, name)
        norm = get_submodule(layer, site.layer_norm) if site.layer_norm else None
        self.sublayers[(index, name)] = SublayerSite(norm)
        source = get_submodule(layer, site.residual)
        position = list(inspect.signature(source.forward).parameters).index(site.residual_arg)
        source.register_forward_pre_hook(partial(self._residual_hook, (index, name), position, site.residual_arg),
                                         with_kwargs=True)
        get_submodule(layer, site.output).register_forward_hook(partial(self._sublayer_hook, (index, name)))

    # -- slots --------------------------------------------------------------
    def write(self, slot: int, sites: dict[tuple[int, str, str], Any], head: PredictionHead | None) -> None:
        """Put an adapter into ``slot`` (emptying it first): its per-site tensors, keyed (layer, site, kind), and head."""
        with self.lock:
            banks = [self._bank(key, site) for key, site in sites.items()]
            self._clear(slot, keep=banks)  # the banks written next overwrite their slot whole
            for bank, site in zip(banks, sites.values()):
                bank.write(slot, site)
            self._slot_banks[slot] = banks
            if head is not None:
                self.heads[slot] = self._on_device(head)

    def _on_device(self, head: PredictionHead) -> PredictionHead:
        """The head on the banks' device (a copy when it lives elsewhere: the host tier keeps its own)."""
        if next(head.parameters()).device == self.spec.device:
            return head
        return copy.deepcopy(head).to(self.spec.device)

    def _clear(self, slot: int, keep: list[SlotBank] = ()) -> None:
        for bank in self._slot_banks.pop(slot, ()):
            if not any(bank is kept for kept in keep):
                bank.clear(slot)
        self.heads.pop(slot, None)

    def _bank(self, key: tuple[int, str, str], site: Any) -> SlotBank:
        """The bank of (layer, site, kind), created to fit ``site`` on first use."""
        layer, name, kind = key
        if name in SUBLAYERS:
            sublayer = self.sublayers[(layer, name)]
            if sublayer.bank is None:
                sublayer.bank = BANKS.by_kind(kind).for_site(self.spec, site)
            return sublayer.bank
        linear = self.linears[(layer, name)]
        bank = next((b for b in linear.banks if b.kind == kind), None)
        if bank is None:
            bank = BANKS.by_kind(kind).for_site(self.spec, site)
            linear.banks = sorted([*linear.banks, bank], key=lambda b: b.order)
        return bank

    # -- steps --------------------------------------------------------------
    @contextmanager
    def step(self, batch: AdapterBatch, token_slots: torch.Tensor) -> Iterator[StepContext]:
        """Within this context, forward passes apply each token's slot. Hold ``lock`` around it."""
        self._step = StepContext(batch, token_slots)
        try:
            yield self._step
        finally:
            self._step = None

    def _linear_forward(self, key: tuple[int, str], base_forward, x: torch.Tensor) -> torch.Tensor:
        """A linear's forward: its own outside a step or when no bank serves the step, else
        the base output with every serving bank applied (a fusing bank, LoRA, which comes
        first, computes the linear itself)."""
        step, site = self._step, self.linears[key]
        serving = site.serving(step.active) if step is not None else []
        if not serving:
            return base_forward(x)
        flat = x.reshape(-1, x.shape[-1])                                  # flat: [T, H_in]
        bank, slots = serving[0]
        if bank.fuses_linear:
            y = bank.linear(flat, step.batch_for(slots), site.module)     # y: [T, H_out]
            serving = serving[1:]
        else:
            y = base_forward(flat)
        for bank, slots in serving:
            bank.apply(flat, y, step.batch_for(slots), site.module)
        return y.view(*x.shape[:-1], y.shape[-1])

    def _residual_hook(self, key: tuple[int, str], position: int, arg: str, module, args, kwargs):
        step = self._step
        if step is not None and self.sublayers[key].serves(step.active):
            step.residuals[key] = args[position] if len(args) > position else kwargs[arg]

    def _sublayer_hook(self, key: tuple[int, str], module: nn.Module, args, output):
        step, site = self._step, self.sublayers[key]
        if step is None or not site.serves(step.active):
            return None
        h = output if isinstance(output, torch.Tensor) else output[0]
        residual = step.residuals.pop(key)
        flat = site.bank.apply(h.reshape(-1, h.shape[-1]), residual.reshape(-1, h.shape[-1]),
                               site.layer_norm, step)  # flat: [T, H]
        new = flat.view(h.shape)
        return new if isinstance(output, torch.Tensor) else (new, *output[1:])

