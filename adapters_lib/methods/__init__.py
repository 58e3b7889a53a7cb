"""Adapter methods, one module each; importing this package registers them all."""
from . import bottleneck, ia3, lora  # noqa: F401  (registration on import)
