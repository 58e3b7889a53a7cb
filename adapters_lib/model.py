"""``adapters_lib.init(model)``: AdapterHub's model API on a Hugging Face model, in place.

``init`` gives the model's object a subclass that adds the methods below (the model's
class itself is untouched) and attaches an :class:`~adapters_lib.injection.AdapterSet`
as ``model.stitch``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers.utils import ModelOutput

from . import methods  # noqa: F401  (registers the built-in methods)
from .config import AdapterConfigError, AnyConfig, resolve_config
from .heads import HeadConfig, PredictionHead
from .injection import AdapterInstance, AdapterSet
from .interface import INTERFACES
from .io import AdapterCheckpoint, AdapterLoadError, BaseInfo, read_checkpoint, save_checkpoint, weights_mismatch


@dataclass
class HeadOutput(ModelOutput):
    """Output of a forward pass through an adapter's head."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None


def init(model: torch.nn.Module) -> torch.nn.Module:
    """Add adapter support to a supported Hugging Face model, in place; returns it."""
    if isinstance(model, AdapterModelMixin):
        return model
    interface = INTERFACES.get(model.config.model_type)
    cls = type(model)
    model.__class__ = type(cls.__name__, (AdapterModelMixin, cls), {"__module__": cls.__module__})
    model.stitch = AdapterSet(model, interface)
    return model


class AdapterModelMixin:
    """Adapter methods with AdapterHub's names. Mixed into an initialised model's class."""

    stitch: AdapterSet

    # -- adding and removing ------------------------------------------------
    def add_adapter(self, name: str, config: str | dict | AnyConfig = "seq_bn", overwrite_ok: bool = False,
                    set_active: bool = False) -> AdapterInstance:
        """Add a new adapter ``name`` of the given method config (a string like ``"lora[r=16]"``)."""
        if name in self.stitch.adapters and not overwrite_ok:
            raise AdapterConfigError(f"an adapter named {name!r} exists already (pass overwrite_ok=True)")
        instance = self.stitch.add(name, resolve_config(config))
        self._to_model_device(instance)
        if set_active:
            self.set_active_adapters(name)
        return instance

    def _to_model_device(self, module: torch.nn.Module) -> None:
        """Match the model's device, dtype and train/eval mode."""
        ref = next(self.base_model.parameters())
        module.to(device=ref.device, dtype=ref.dtype)
        module.train(self.training)

    def _add_head(self, name: str, config: HeadConfig, overwrite_ok: bool) -> PredictionHead:
        if name in self.stitch.heads and not overwrite_ok:
            raise AdapterConfigError(f"a head named {name!r} exists already (pass overwrite_ok=True)")
        head = PredictionHead(config, self.config.hidden_size, getattr(self.config, "vocab_size", None))
        self._to_model_device(head)
        self.stitch.heads[name] = head
        return head

    def add_classification_head(self, name: str, num_labels: int = 2, layers: int = 2,
                                activation_function: str = "tanh", id2label: dict[int, str] | None = None,
                                pooling: str | None = None, overwrite_ok: bool = False) -> PredictionHead:
        """A sequence classification head; pools the first token (encoders) or the last (causal models)."""
        pooling = pooling or ("last" if self._is_causal() else "cls")
        config = HeadConfig(type="classification", num_labels=num_labels, layers=layers, pooling=pooling,
                            activation_function=activation_function, id2label=id2label)
        return self._add_head(name, config, overwrite_ok)

    def add_tagging_head(self, name: str, num_labels: int = 2, layers: int = 1,
                         id2label: dict[int, str] | None = None, overwrite_ok: bool = False) -> PredictionHead:
        """A per-token classification head."""
        config = HeadConfig(type="tagging", num_labels=num_labels, layers=layers, id2label=id2label)
        return self._add_head(name, config, overwrite_ok)

    def add_causal_lm_head(self, name: str, overwrite_ok: bool = False) -> PredictionHead:
        """A language-modelling head, initialised from the input embeddings."""
        head = self._add_head(name, HeadConfig(type="causal_lm", num_labels=self.config.vocab_size), overwrite_ok)
        with torch.no_grad():
            head.layers[0].weight.copy_(self.get_input_embeddings().weight)
        return head

    def _is_causal(self) -> bool:
        return self.stitch.interface.attn.layer_norm is None

    def delete_adapter(self, name: str) -> None:
        """Remove an adapter (and deactivate it)."""
        self._require(name)
        self.stitch.active = tuple(n for n in self.stitch.active if n != name)
        del self.stitch.adapters[name]

    def delete_head(self, name: str) -> None:
        if name in self.stitch.heads:
            del self.stitch.heads[name]
        if self.stitch.active_head == name:
            self.stitch.active_head = None

    def _require(self, name: str) -> AdapterInstance:
        if name not in self.stitch.adapters:
            known = ", ".join(self.stitch.adapters) or "none"
            raise AdapterConfigError(f"no adapter named {name!r}; this model has: {known}")
        return self.stitch.adapters[name]

    # -- activation and training -------------------------------------------
    def set_active_adapters(self, names: str | Sequence[str] | None) -> None:
        """Activate one adapter, several (applied in order), or none. A head of the same name goes along."""
        names = () if names is None else (names,) if isinstance(names, str) else tuple(names)
        for name in names:
            self._require(name)
        self.stitch.active = names
        heads = [n for n in names if n in self.stitch.heads]
        self.stitch.active_head = heads[-1] if heads else None

    @property
    def active_adapters(self) -> tuple[str, ...]:
        return self.stitch.active

    def train_adapter(self, names: str | Sequence[str]) -> None:
        """Freeze the base; only the named adapters (and their heads) train. Activates them."""
        self.set_active_adapters(names)
        for param in self.parameters():
            param.requires_grad_(False)
        for name in self.stitch.active:
            self.stitch.adapters[name].requires_grad_(True)
            if name in self.stitch.heads:
                self.stitch.heads[name].requires_grad_(True)
        self.train()

    def forward(self, *args, **kwargs):
        """The model's own forward; with an active head, the head's logits (and loss for ``labels``)."""
        head_name = self.stitch.active_head
        if head_name is None:
            return super().forward(*args, **kwargs)
        labels = kwargs.pop("labels", None)
        # A bare AutoModel is its own base_model: call its forward, not itself again.
        base_forward = super().forward if self.base_model is self else self.base_model
        outputs = base_forward(*args, **kwargs)
        head = self.stitch.heads[head_name]
        logits = head(outputs[0], kwargs.get("attention_mask"))
        loss = head.loss(logits, labels) if labels is not None else None
        return HeadOutput(loss=loss, logits=logits, hidden_states=outputs[0])

    # -- saving and loading -------------------------------------------------
    def base_info(self) -> BaseInfo:
        return BaseInfo.from_model_config(self.config)

    def adapter_checkpoint(self, name: str, with_head: bool = True, metadata: dict | None = None) -> AdapterCheckpoint:
        """The adapter ``name`` (and its head) as a format-independent checkpoint."""
        instance = self._require(name)
        head = self.stitch.heads[name] if with_head and name in self.stitch.heads else None
        return AdapterCheckpoint(
            name=name, config=instance.config, weights=dict(instance.state_dict()), base=self.base_info(),
            metadata=dict(metadata or getattr(instance, "metadata", {}) or {}),
            head_config=head.config if head else None, head_weights=dict(head.state_dict()) if head else None)

    def save_adapter(self, directory: str | Path, name: str, with_head: bool = True,
                     metadata: dict[str, Any] | None = None) -> Path:
        """Save adapter ``name`` (and its head) apart from the base, in Stitch's format."""
        return save_checkpoint(directory, self.adapter_checkpoint(name, with_head, metadata))

    def load_adapter(self, path: str | Path, load_as: str | None = None, with_head: bool = True,
                     set_active: bool = False) -> str:
        """Load an adapter saved by Stitch, AdapterHub or PEFT (a local directory or a Hub repo id)."""
        from .hub import resolve_adapter_path

        ckpt = read_checkpoint(resolve_adapter_path(path), self.stitch.interface, self.base_info())
        return self.add_checkpoint(ckpt, load_as=load_as, with_head=with_head, set_active=set_active)

    def add_checkpoint(self, ckpt: AdapterCheckpoint, load_as: str | None = None, with_head: bool = True,
                       set_active: bool = False) -> str:
        """Add an adapter from a checkpoint after checking it fits this model; returns its name."""
        name = load_as or ckpt.name
        if ckpt.base is not None:
            ckpt.base.check_fits(self.base_info(), ckpt.describe())
        instance = AdapterInstance(name, ckpt.config, self.stitch.contexts)
        _load_strict(instance, ckpt.weights, ckpt.describe())
        instance.metadata = ckpt.metadata
        self._to_model_device(instance)
        self.stitch.adapters[name] = instance
        if with_head and ckpt.head_config is not None:
            head = PredictionHead(ckpt.head_config, self.config.hidden_size, getattr(self.config, "vocab_size", None))
            _load_strict(head, ckpt.head_weights or {}, f"head of {ckpt.describe()}")
            self._to_model_device(head)
            self.stitch.heads[name] = head
        if set_active:
            self.set_active_adapters(name)
        return name

    # -- merging and averaging ----------------------------------------------
    def merge_adapter(self, name: str) -> None:
        """Fold a LoRA / IA3 adapter into the base weights (for export); it then stops applying."""
        from .merge import merge_into_base

        merge_into_base(self, self._require(name))

    def average_adapter(self, name: str, adapter_list: Sequence[str], weights: Sequence[float] | None = None,
                        set_active: bool = False) -> AdapterInstance:
        """A new adapter whose parameters are the weighted sum of the listed adapters' (same config)."""
        from .merge import average_state

        sources = [self._require(n) for n in adapter_list]
        weights = list(weights) if weights is not None else [1.0 / len(sources)] * len(sources)
        instance = self.add_adapter(name, sources[0].config)
        instance.load_state_dict(average_state(sources, weights))
        if set_active:
            self.set_active_adapters(name)
        return instance


def _load_strict(module: torch.nn.Module, weights: dict[str, torch.Tensor], what: str) -> None:
    problem = weights_mismatch({key: value.shape for key, value in module.state_dict().items()}, weights)
    if problem:
        raise AdapterLoadError(f"{what}: weights do not match its config; {problem}")
    module.load_state_dict(weights)
