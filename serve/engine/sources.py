"""Where adapters come from: a registry index, local directories under the roots, the Hub.

A request names an adapter; :meth:`AdapterSources.resolve` finds its source, in order:

1. the registry index: a JSON file ``{"adapters": {"<name>": {"source": "...",
   "revision": null, "metadata": {...}}}}``; ``source`` is ``hf://org/repo`` for a Hub
   repo, else a directory (relative to an adapter root, or absolute inside one);
2. a directory ``<root>/<name>`` under one of the configured roots;
3. a Hub repo id ``org/repo`` (or ``hf://org/repo``), only with ``allow_hub_ids``.

Local paths never leave the roots: a path is resolved (``..`` and symlinks included) and
refused with PathOutsideRootsError when it lands outside every root. Hub downloads call
huggingface_hub directly: ``adapters_lib.hub.resolve_adapter_path`` first tries a name as a
path relative to the working directory, which a server must not do with request input.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .errors import InvalidAdapterError, PathOutsideRootsError, UnknownAdapterError

HUB_PREFIX = "hf://"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*$")
_MAX_NAME = 256


@dataclass(frozen=True)
class RegistryEntry:
    """One registered adapter. source: ``hf://org/repo`` or a directory; metadata: free-form (task, labels, ...)."""

    name: str
    source: str
    revision: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class AdapterRegistry:
    """Adapter name -> RegistryEntry."""

    def __init__(self, entries: Sequence[RegistryEntry] = ()) -> None:
        self._entries = {entry.name: entry for entry in entries}

    @classmethod
    def from_file(cls, path: str | Path) -> "AdapterRegistry":
        """Read a JSON index ``{"adapters": {name: {"source", "revision", "metadata"}}}``."""
        try:
            data = json.loads(Path(path).read_text())
            entries = [RegistryEntry(name=name, **spec) for name, spec in data["adapters"].items()]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"adapter registry {path}: cannot read it: {err}") from None
        return cls(entries)

    def get(self, name: str) -> RegistryEntry | None:
        return self._entries.get(name)

    def entries(self) -> list[RegistryEntry]:
        return list(self._entries.values())

    def add(self, entry: RegistryEntry) -> None:
        """Register (or replace) an entry."""
        self._entries[entry.name] = entry

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)


@dataclass(frozen=True)
class AdapterSource:
    """A resolved source. kind: "local" (location: a directory) or "hub" (location: a repo id)."""

    kind: str
    location: str
    revision: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.kind == "hub":
            return f"Hub repo {self.location}" + (f"@{self.revision}" if self.revision else "")
        return f"directory {self.location}"


class AdapterSources:
    """Resolves adapter names to sources and fetches their directories.

    Args:
        roots: the only local directories adapters may be read from.
        registry: the registry index (optional).
        allow_hub_ids: whether a request may name a Hub repo that is not registered.
    """

    def __init__(self, roots: Sequence[str | Path] = (), registry: AdapterRegistry | None = None,
                 allow_hub_ids: bool = False) -> None:
        self.roots = [Path(root).resolve() for root in roots]
        self.registry = registry or AdapterRegistry()
        self.allow_hub_ids = allow_hub_ids

    def resolve(self, name: str) -> AdapterSource:
        """The source of ``name``; UnknownAdapterError or PathOutsideRootsError otherwise."""
        _check_name(name)
        entry = self.registry.get(name)
        if entry is not None:
            return self._registered(entry)
        local = self._under_roots(name, name)
        if local is not None:
            return AdapterSource("local", str(local))
        repo = name.removeprefix(HUB_PREFIX)
        if self.allow_hub_ids and _REPO_ID.match(repo):
            return AdapterSource("hub", repo)
        hub = " or a Hub repo id" if self.allow_hub_ids else ""
        raise UnknownAdapterError(name, "", f"not in the registry and not a directory under the adapter roots{hub}")

    def fetch(self, name: str, source: AdapterSource) -> Path:
        """The local directory of a source (a Hub repo is downloaded through the HF cache)."""
        if source.kind == "local":
            return Path(source.location)
        return _download(name, source)

    def _registered(self, entry: RegistryEntry) -> AdapterSource:
        if entry.source.startswith(HUB_PREFIX):
            repo = entry.source.removeprefix(HUB_PREFIX)
            if not _REPO_ID.match(repo):
                raise UnknownAdapterError(entry.name, entry.source, "the registry names an invalid Hub repo id")
            return AdapterSource("hub", repo, entry.revision, entry.metadata)
        local = self._under_roots(entry.name, entry.source)
        if local is None:
            raise UnknownAdapterError(entry.name, entry.source, "the registered directory does not exist")
        return AdapterSource("local", str(local), entry.revision, entry.metadata)

    def _under_roots(self, name: str, path: str) -> Path | None:
        """The existing directory ``path`` names under a root; None when there is none."""
        for root in self.roots:
            candidate = (root / path).resolve()
            if not candidate.is_relative_to(root):
                raise PathOutsideRootsError(name, path, "the path leaves the adapter roots")
            if candidate != root and candidate.is_dir():
                return candidate
        if Path(path).is_absolute() or ".." in Path(path).parts:
            raise PathOutsideRootsError(name, path, "the path leaves the adapter roots")
        return None


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME or "\x00" in name:
        raise UnknownAdapterError(str(name)[:_MAX_NAME], "", f"an adapter name is 1 to {_MAX_NAME} characters")


def _download(name: str, source: AdapterSource) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(source.location, revision=source.revision))
    except (HfHubHTTPError, LocalEntryNotFoundError) as err:
        raise UnknownAdapterError(name, str(source), f"cannot fetch it from the Hub: {err}") from None
    except (OSError, ValueError) as err:
        raise InvalidAdapterError(name, str(source), f"cannot fetch it from the Hub: {err}") from None
