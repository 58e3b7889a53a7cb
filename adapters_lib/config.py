"""Adapter method configs, the method registry and the config-string parser.

A method is a plug-in (one file in ``adapters_lib/methods``) that registers a
:class:`MethodSpec`: its config class, its aliases and a builder that creates the
training-time modules of one transformer layer. Config strings follow the AdapterHub
library: ``"lora"``, ``"lora[r=16,alpha=32]"``, unions ``"seq_bn|lora"``.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError


class AdapterConfigError(ValueError):
    """An adapter config, config string or checkpoint config is invalid."""


class MethodConfig(BaseModel):
    """Base of every method config: validated, immutable, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    method: ClassVar[str] = ""
    leave_out: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the method name under ``"method"``."""
        return {"method": self.method, **self.model_dump(mode="json")}

    def parts(self) -> tuple["MethodConfig", ...]:
        """The single-method configs this config applies (itself; a union has several)."""
        return (self,)

    def applies_to_layer(self, layer: int) -> bool:
        return layer not in self.leave_out


class UnionConfig(BaseModel):
    """Several methods applied together, e.g. ``seq_bn|lora`` (AdapterHub's ConfigUnion)."""

    model_config = ConfigDict(frozen=True)
    method: ClassVar[str] = "union"
    configs: tuple[MethodConfig, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"method": "union", "configs": [c.to_dict() for c in self.configs]}

    def parts(self) -> tuple[MethodConfig, ...]:
        return self.configs


AnyConfig = MethodConfig | UnionConfig


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its name, config class, aliases and layer builder.

    ``build_layer(config, layer_ctx) -> dict[site, nn.Module]`` creates the modules of one
    transformer layer; sites are linear roles (``q``, ``k``, ``v``, ``o``, ``ffn_in``,
    ``ffn_gate``, ``ffn_out``) or sublayer outputs (``attn``, ``ffn``).
    """

    name: str
    config_cls: type[MethodConfig]
    build_layer: Callable[..., dict]
    aliases: tuple[str, ...] = ()


class MethodRegistry:
    """Name -> MethodSpec, with aliases. Methods register themselves on import."""

    def __init__(self) -> None:
        self._specs: dict[str, MethodSpec] = {}
        self._aliases: dict[str, str] = {}

    def register(self, spec: MethodSpec) -> MethodSpec:
        for key in (spec.name, *spec.aliases):
            if key in self._aliases:
                raise AdapterConfigError(f"adapter method name {key!r} is registered twice")
            self._aliases[key] = spec.name
        self._specs[spec.name] = spec
        return spec

    def get(self, name: str) -> MethodSpec:
        canonical = self._aliases.get(name.lower())
        if canonical is None:
            raise AdapterConfigError(f"unknown adapter method {name!r}; valid methods: {', '.join(self.names())}")
        return self._specs[canonical]

    def names(self) -> list[str]:
        return sorted(self._aliases)


METHODS = MethodRegistry()

_ITEM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\[(.*)\])?\s*$", re.S)


def make_config(method: str, **fields: Any) -> MethodConfig:
    """Build a method config by name, with a clear error for unknown or bad fields."""
    spec = METHODS.get(method)
    unknown = sorted(set(fields) - set(spec.config_cls.model_fields))
    if unknown:
        valid = ", ".join(sorted(spec.config_cls.model_fields))
        raise AdapterConfigError(f"unknown field(s) {unknown} for method {spec.name!r}; valid fields: {valid}")
    try:
        return spec.config_cls(**fields)
    except ValidationError as err:
        raise AdapterConfigError(f"invalid config for method {spec.name!r}: {err}") from None


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text.strip()


def _parse_fields(body: str, item: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    depth, start = 0, 0
    pieces = []
    for i, ch in enumerate(body + ","):
        depth += ch in "[({"
        depth -= ch in "])}"
        if ch == "," and depth == 0:
            pieces.append(body[start:i])
            start = i + 1
    for piece in filter(str.strip, pieces):
        key, sep, value = piece.partition("=")
        if not sep or not key.strip().isidentifier():
            raise AdapterConfigError(f"malformed config string {item!r}: expected name=value, got {piece.strip()!r}")
        fields[key.strip()] = _parse_value(value)
    return fields


def parse_config_string(text: str) -> AnyConfig:
    """Parse ``"lora[r=16,alpha=32]"`` or a union ``"seq_bn|lora[r=4]"`` into a config."""
    items = [item for item in text.split("|")]
    configs = []
    for item in items:
        match = _ITEM.match(item)
        if match is None:
            raise AdapterConfigError(f"malformed config string {text!r}: cannot parse {item!r}")
        configs.append(make_config(match.group(1), **_parse_fields(match.group(2) or "", item)))
    return configs[0] if len(configs) == 1 else make_union(configs)


def make_union(configs: list[MethodConfig]) -> UnionConfig:
    """Union of single-method configs; each method may appear once."""
    names = [c.method for c in configs]
    if len(set(names)) != len(names):
        raise AdapterConfigError(f"a union uses each method once, got {names}")
    return UnionConfig(configs=tuple(configs))


def config_from_dict(data: dict[str, Any]) -> AnyConfig:
    """Inverse of ``to_dict``."""
    data = dict(data)
    method = data.pop("method", None)
    if method is None:
        raise AdapterConfigError(f"adapter config has no 'method' field: {sorted(data)}")
    if method == "union":
        return make_union([config_from_dict(c) for c in data["configs"]])
    return make_config(method, **data)


def resolve_config(config: str | dict | AnyConfig) -> AnyConfig:
    """Accept a config object, a dict (``to_dict`` form) or a config string."""
    if isinstance(config, (MethodConfig, UnionConfig)):
        return config
    if isinstance(config, dict):
        return config_from_dict(config)
    if isinstance(config, str):
        return parse_config_string(config)
    raise AdapterConfigError(f"an adapter config is a string, dict or config object, got {type(config).__name__}")
