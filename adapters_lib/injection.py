"""Adapter modules of a model and the hooks that stitch them into its forward pass.

``AdapterSet`` (attached as ``model.stitch``) owns every adapter and head of a model and
the active setup. Forward hooks installed once, at the places the model's
:class:`~adapters_lib.interface.ModelInterface` names, run the active adapters' modules:

* linear sites (q, k, v, qkv, o, ffn_in, ffn_gate, ffn_out): ``y = module(x, y, linear)``;
* sublayer sites (attn, ffn): ``h = module(h, r, layer_norm)``, with the residual stream
  ``r`` captured by a pre-hook on the module the interface names.
"""
from __future__ import annotations

import inspect
from functools import partial

import torch
from torch import nn

from .config import METHODS, AnyConfig
from .interface import ModelInterface, get_submodule, linear_dims
from .methods.base import LayerContext

SUBLAYER_SITES = ("attn", "ffn")


class AdapterInstance(nn.Module):
    """One named adapter. ``layers[i][site][method]`` is the module of a method at a site."""

    def __init__(self, name: str, config: AnyConfig, contexts: list[LayerContext]) -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.merged = False
        self.layers = nn.ModuleList(self._build_layer(ctx) for ctx in contexts)

    def _build_layer(self, ctx: LayerContext) -> nn.ModuleDict:
        sites = nn.ModuleDict()
        for part in self.config.parts():
            if not part.applies_to_layer(ctx.index):
                continue
            for site, module in METHODS.get(part.method).build_layer(part, ctx).items():
                if site not in sites:
                    sites[site] = nn.ModuleDict()
                sites[site][part.method] = module
        return sites

    def site_modules(self, layer: int, site: str) -> list[nn.Module]:
        sites = self.layers[layer]
        return list(sites[site].values()) if site in sites else []


def _first_tensor(output):
    return output if isinstance(output, torch.Tensor) else output[0]


def _replace_first(output, value: torch.Tensor):
    return value if isinstance(output, torch.Tensor) else (value, *output[1:])


class AdapterSet(nn.Module):
    """All adapters and heads of one model, its active setup, and its hooks."""

    def __init__(self, model: nn.Module, interface: ModelInterface) -> None:
        super().__init__()
        self.interface = interface
        self.adapters = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        self.active: tuple[str, ...] = ()
        self.active_head: str | None = None
        self._residuals: dict[tuple[int, str], torch.Tensor] = {}
        layers = get_submodule(model.base_model, interface.layers)
        self._layer_norms: dict[tuple[int, str], nn.Module | None] = {}
        self.contexts = [self._install(i, layer) for i, layer in enumerate(layers)]

    # -- installation -------------------------------------------------------
    def _install(self, index: int, layer: nn.Module) -> LayerContext:
        dims = {}
        for role, path in self.interface.linears.items():
            module = get_submodule(layer, path)
            dims[role] = linear_dims(module)
            module.register_forward_hook(partial(self._linear_hook, index, role))
        for site_name in SUBLAYER_SITES:
            self._install_sublayer(index, layer, site_name)
        hidden = dims["o"][1]
        return LayerContext(index=index, hidden_size=hidden, linears=dims, post_ln=self.interface.post_ln)

    def _install_sublayer(self, index: int, layer: nn.Module, site_name: str) -> None:
        site = getattr(self.interface, site_name)
        source = get_submodule(layer, site.residual)
        position = list(inspect.signature(source.forward).parameters).index(site.residual_arg)
        source.register_forward_pre_hook(partial(self._residual_hook, index, site_name, position), with_kwargs=True)
        get_submodule(layer, site.output).register_forward_hook(partial(self._sublayer_hook, index, site_name))
        self._layer_norms[(index, site_name)] = get_submodule(layer, site.layer_norm) if site.layer_norm else None

    # -- hooks ----------------------------------------------------------------
    def _active_modules(self, layer: int, site: str) -> list[nn.Module]:
        mods = []
        for name in self.active:
            instance = self.adapters[name]
            mods += [m for m in instance.site_modules(layer, site) if not (instance.merged and _mergeable(m))]
        return mods

    def _linear_hook(self, layer: int, role: str, module, args, output):
        mods = self._active_modules(layer, role)
        if not mods:
            return None
        x = args[0]
        for mod in mods:
            output = mod(x, output, module)
        return output

    def _residual_hook(self, layer: int, site: str, position: int, module, args, kwargs):
        arg = self.interface_site(site).residual_arg
        self._residuals[(layer, site)] = args[position] if len(args) > position else kwargs[arg]

    def _sublayer_hook(self, layer: int, site: str, module, args, output):
        residual = self._residuals.pop((layer, site), None)
        mods = self._active_modules(layer, site)
        if not mods:
            return None
        h = _first_tensor(output)
        for mod in mods:
            h = mod(h, residual, self._layer_norms[(layer, site)])
        return _replace_first(output, h)

    def interface_site(self, site: str):
        return getattr(self.interface, site)

    # -- adapters -------------------------------------------------------------
    def add(self, name: str, config: AnyConfig) -> AdapterInstance:
        instance = AdapterInstance(name, config, self.contexts)
        self.adapters[name] = instance
        return instance


def _mergeable(module: nn.Module) -> bool:
    return hasattr(module, "delta_weight") or hasattr(module, "scale")
