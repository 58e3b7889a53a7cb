"""Adapter checkpoints: Stitch's own format, and reading the AdapterHub and PEFT formats.

Own format (a directory):
  adapter_config.json   {"format": "stitch-adapter", "format_version": 1, "name", "config",
                         "base_model": {name_or_path, model_type, hidden_size, num_layers},
                         "library_version", "metadata": {task, language, dataset, labels, metrics, ...}}
  adapter.safetensors   weights keyed "layers.<i>.<site>.<method>.<param>"
  head_config.json, head.safetensors   when the adapter has a prediction head
No pickle: AdapterHub's ``pytorch_adapter.bin`` is read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import AdapterConfigError, AnyConfig, config_from_dict
from .heads import HeadConfig

FORMAT = "stitch-adapter"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter.safetensors"
HEAD_CONFIG_FILE = "head_config.json"
HEAD_WEIGHTS_FILE = "head.safetensors"


class AdapterLoadError(ValueError):
    """A checkpoint cannot be read or does not fit the model; the message names both."""


class CorruptCheckpointError(AdapterLoadError):
    """A checkpoint file cannot be parsed (JSON, safetensors or torch weights)."""


class BaseMismatchError(AdapterLoadError):
    """A checkpoint was made for a base model of another type, hidden size or depth."""


def library_version() -> str:
    try:
        return importlib_metadata.version("stitch-serve")
    except importlib_metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class BaseInfo:
    """What an adapter must match in its base model."""

    model_type: str
    hidden_size: int
    num_layers: int
    name_or_path: str = ""

    @classmethod
    def from_model_config(cls, config) -> "BaseInfo":
        return cls(config.model_type, config.hidden_size, config.num_hidden_layers,
                   str(getattr(config, "_name_or_path", "") or ""))

    def describe(self) -> str:
        return f"{self.model_type} (hidden size {self.hidden_size}, {self.num_layers} layers)"

    def check_fits(self, model: "BaseInfo", what: str) -> None:
        """Raise BaseMismatchError when an adapter made for self cannot run on ``model``."""
        same = (self.model_type, self.hidden_size, self.num_layers) == (model.model_type, model.hidden_size, model.num_layers)
        if not same:
            raise BaseMismatchError(f"{what} was made for {self.describe()}, but the model is {model.describe()}")


@dataclass
class AdapterCheckpoint:
    """An adapter in Stitch's terms, whatever format it was read from."""

    name: str
    config: AnyConfig
    weights: dict[str, torch.Tensor]
    base: BaseInfo | None  # None: the format does not say (shapes are still checked on load)
    metadata: dict[str, Any] = field(default_factory=dict)
    head_config: HeadConfig | None = None
    head_weights: dict[str, torch.Tensor] | None = None
    source: str = ""
    format: str = FORMAT

    def describe(self) -> str:
        return f"adapter {self.name!r} from {self.source}" if self.source else f"adapter {self.name!r}"

    def nbytes(self) -> int:
        tensors = list(self.weights.values()) + list((self.head_weights or {}).values())
        return sum(t.numel() * t.element_size() for t in tensors)


def save_checkpoint(directory: str | Path, ckpt: AdapterCheckpoint) -> Path:
    """Write ``ckpt`` in Stitch's own format; returns the directory."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, "format_version": 1, "name": ckpt.name, "config": ckpt.config.to_dict(),
              "base_model": vars(ckpt.base), "library_version": library_version(), "metadata": ckpt.metadata}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(_contiguous(ckpt.weights), out / WEIGHTS_FILE)
    if ckpt.head_config is not None:
        (out / HEAD_CONFIG_FILE).write_text(ckpt.head_config.model_dump_json(indent=2) + "\n")
        save_file(_contiguous(ckpt.head_weights or {}), out / HEAD_WEIGHTS_FILE)
    return out


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CorruptCheckpointError(f"{what}: cannot read {path.name}: {err}") from None


def weights_mismatch(shapes: dict[str, torch.Size], weights: dict[str, torch.Tensor]) -> str:
    """Why ``weights`` would not load strictly where the state dict has these ``shapes`` ("" when they would)."""
    missing = sorted(shapes.keys() - weights.keys())
    unexpected = sorted(weights.keys() - shapes.keys())
    if missing or unexpected:
        return f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
    for key, tensor in weights.items():
        if tensor.shape != shapes[key]:
            return (f"{key} has shape {tuple(tensor.shape)}, the config needs {tuple(shapes[key])} "
                    "(rank or size mismatch)")
    return ""


def read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise CorruptCheckpointError(f"{what}: {path.name} is not a valid safetensors file: {err}") from None


def read_torch_weights(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A ``.bin`` state dict, loaded without unpickling arbitrary objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise CorruptCheckpointError(f"{what}: {path.name} cannot be loaded safely: {err}") from None


def read_weights_file(directory: Path, names: tuple[str, ...], what: str) -> dict[str, torch.Tensor]:
    """The first of ``names`` that exists: ``.safetensors`` read directly, ``.bin`` without pickle."""
    for name in names:
        path = directory / name
        if path.exists():
            return read_safetensors(path, what) if name.endswith(".safetensors") else read_torch_weights(path, what)
    raise AdapterLoadError(f"{what}: no weights file ({' or '.join(names)})")


def read_own(directory: Path, data: dict[str, Any]) -> AdapterCheckpoint:
    what = f"adapter at {directory}"
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.exists():
        raise AdapterLoadError(f"{what}: no weights file {WEIGHTS_FILE}")
    try:
        config = config_from_dict(data["config"])
        base = BaseInfo(**data["base_model"])
    except (KeyError, TypeError, AdapterConfigError) as err:
        raise AdapterLoadError(f"{what}: invalid {CONFIG_FILE}: {err}") from None
    head_config, head_weights = _read_own_head(directory, what)
    return AdapterCheckpoint(name=data.get("name") or directory.name, config=config,
                             weights=read_safetensors(weights_path, what), base=base,
                             metadata=data.get("metadata") or {}, head_config=head_config,
                             head_weights=head_weights, source=str(directory))


def _read_own_head(directory: Path, what: str):
    if not (directory / HEAD_CONFIG_FILE).exists():
        return None, None
    try:
        head_config = HeadConfig.model_validate(read_json(directory / HEAD_CONFIG_FILE, what))
    except ValueError as err:
        raise AdapterLoadError(f"{what}: invalid {HEAD_CONFIG_FILE}: {err}") from None
    return head_config, read_safetensors(directory / HEAD_WEIGHTS_FILE, what)


def read_checkpoint(path: str | Path, interface=None, model: BaseInfo | None = None) -> AdapterCheckpoint:
    """Read an adapter directory in any supported format (own, AdapterHub, PEFT).

    Foreign formats name modules of a particular model: reading them needs the target
    model's ``interface`` (a ModelInterface) and its ``BaseInfo``.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise AdapterLoadError(f"adapter path {directory} is not a directory")
    if not (directory / CONFIG_FILE).exists():
        raise AdapterLoadError(f"adapter at {directory}: no {CONFIG_FILE} (not an adapter directory)")
    data = read_json(directory / CONFIG_FILE, f"adapter at {directory}")
    if data.get("format") == FORMAT:
        return read_own(directory, data)
    from .formats import adapterhub, peft

    foreign = "peft_type" in data or ("config" in data and "model_type" in data)
    if foreign and (interface is None or model is None):
        raise AdapterLoadError(f"adapter at {directory}: a foreign-format checkpoint needs the target model")
    if "peft_type" in data:
        return peft.read(directory, data, interface, model.num_layers)
    if foreign:
        return adapterhub.read(directory, data, interface, model)
    raise AdapterLoadError(f"adapter at {directory}: {CONFIG_FILE} is in no known format (Stitch, AdapterHub, PEFT)")
