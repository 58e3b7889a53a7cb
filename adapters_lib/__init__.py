"""Stitch's adapter training library: AdapterHub's API for Hugging Face Transformers models.

    import adapters_lib
    adapters_lib.init(model)
    model.add_adapter("sst2", config="seq_bn")
    model.add_classification_head("sst2", num_labels=2)
    model.train_adapter("sst2")
"""
from .config import METHODS, AdapterConfigError, MethodConfig, UnionConfig, parse_config_string, resolve_config
from .heads import HeadConfig
from .interface import INTERFACES, ModelInterface, SublayerSite, register_interface
from .io import AdapterCheckpoint, AdapterLoadError, BaseInfo, read_checkpoint, save_checkpoint
from .methods.bottleneck import DoubleSeqBnConfig, ParBnConfig, ScaledParBnConfig, SeqBnConfig
from .methods.ia3 import IA3Config
from .methods.lora import LoRAConfig
from .model import AdapterModelMixin, init

__all__ = [
    "METHODS", "INTERFACES", "AdapterCheckpoint", "AdapterConfigError", "AdapterLoadError", "AdapterModelMixin",
    "BaseInfo", "DoubleSeqBnConfig", "HeadConfig", "IA3Config", "LoRAConfig", "MethodConfig", "ModelInterface",
    "ParBnConfig", "ScaledParBnConfig", "SeqBnConfig", "SublayerSite", "UnionConfig", "init",
    "parse_config_string", "read_checkpoint", "register_interface", "resolve_config", "save_checkpoint",
]
