"""What every slot bank shares: where its tensors live, and the registry of banks by module type."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

import torch
from torch import nn


class LayoutError(ValueError):
    """A training module uses an option that the serving slot layout cannot express."""


@dataclass(frozen=True)
class BankSpec:
    """Where a bank's tensors live. num_slots: S; backend: a kernels backend module."""

    num_slots: int
    device: torch.device
    dtype: torch.dtype
    backend: ModuleType


class SlotBank:
    """Stacked per-slot tensors of one method at one site of one layer.

    Subclasses set ``kind`` (the name the loader and the layers use), ``order`` (position
    among the banks of one linear site: lower applies first), ``fuses_linear`` (the bank
    computes the whole linear, base matmul included: ``linear(x, batch, module) -> y``,
    instead of updating its output: ``apply(x, y, batch, module)``) and implement ``extract``
    (a training module -> its host tensors), ``for_site`` (an empty bank sized for them),
    ``write`` and ``clear``. ``slots`` holds the occupied slot numbers.
    """

    kind: ClassVar[str] = ""
    order: ClassVar[int] = 0
    fuses_linear: ClassVar[bool] = False

    def __init__(self, spec: BankSpec) -> None:
        self.spec = spec
        self.slots: set[int] = set()

    @classmethod
    def extract(cls, module: nn.Module, dtype: torch.dtype) -> Any:
        """The host tensors of one training module, in the serving dtype."""
        raise NotImplementedError

    @classmethod
    def for_site(cls, spec: BankSpec, site: Any) -> "SlotBank":
        """An empty bank whose shapes fit ``site`` (the output of ``extract``)."""
        raise NotImplementedError

    def write(self, slot: int, site: Any) -> None:
        raise NotImplementedError

    def clear(self, slot: int) -> None:
        raise NotImplementedError

    def zeros(self, *shape: int) -> torch.Tensor:
        return torch.zeros(shape, device=self.spec.device, dtype=self.spec.dtype)


def grow(tensor: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """``tensor`` zero-padded along ``dim`` to ``size`` (itself when already that wide)."""
    extra = size - tensor.shape[dim]
    if extra <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = extra
    return torch.cat([tensor, tensor.new_zeros(shape)], dim=dim)


def host(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A detached, contiguous CPU copy in ``dtype``."""
    return tensor.detach().to(device="cpu", dtype=dtype).contiguous()


def site_nbytes(site: Any) -> int:
    """Bytes of the tensors held by a site dataclass (tensors and pairs of tensors)."""
    total = 0
    for field in dataclasses.fields(site):
        value = getattr(site, field.name)
        for tensor in value if isinstance(value, tuple) else (value,):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


class BankRegistry:
    """Training module class -> the bank that serves it. Bank modules register on import."""

    def __init__(self) -> None:
        self._by_module: dict[type, type[SlotBank]] = {}

    def register(self, module_cls: type, bank_cls: type[SlotBank]) -> None:
        self._by_module[module_cls] = bank_cls

    def for_module(self, module: nn.Module) -> type[SlotBank] | None:
        """The bank of the module's exact class (a subclass may need a bank of its own)."""
        return self._by_module.get(type(module))

    def by_kind(self, kind: str) -> type[SlotBank]:
        return next(bank for bank in self._by_module.values() if bank.kind == kind)


BANKS = BankRegistry()
