"""Adapter sources: registry index, local roots, Hub repos (through huggingface_hub, faked offline)."""
import json

import huggingface_hub
import pytest

from serve.engine import AdapterRegistry, PathOutsideRootsError, RegistryEntry, UnknownAdapterError
from serve.engine.sources import AdapterSources
from tests.serve.helpers import METHOD_CONFIGS, make_engine, run, write_adapter


def test_registry_entries_resolve_under_the_roots_with_metadata(tmp_path):
    (tmp_path / "dirs" / "v1").mkdir(parents=True)
    index = tmp_path / "registry.json"
    index.write_text(json.dumps({"adapters": {"sentiment": {"source": "dirs/v1", "metadata": {"task": "sst2"}}}}))
    sources = AdapterSources([tmp_path], AdapterRegistry.from_file(index))
    source = sources.resolve("sentiment")
    assert (source.kind, source.location, source.metadata) == ("local", str(tmp_path / "dirs" / "v1"), {"task": "sst2"})
    assert sources.resolve("dirs/v1").location == source.location


def test_registry_entries_outside_the_roots_are_refused(tmp_path):
    registry = AdapterRegistry([RegistryEntry("x", str(tmp_path.parent))])
    with pytest.raises(PathOutsideRootsError):
        AdapterSources([tmp_path], registry).resolve("x")


def test_hub_ids_need_permission_or_a_registry_entry(tmp_path):
    assert AdapterSources([tmp_path], allow_hub_ids=True).resolve("org/repo").kind == "hub"
    with pytest.raises(UnknownAdapterError):
        AdapterSources([tmp_path]).resolve("org/repo")
    registry = AdapterRegistry([RegistryEntry("x", "hf://org/repo", revision="v2")])
    source = AdapterSources([tmp_path], registry).resolve("x")
    assert (source.kind, source.location, source.revision) == ("hub", "org/repo", "v2")
    with pytest.raises(UnknownAdapterError):
        AdapterSources([], AdapterRegistry([RegistryEntry("y", "hf://../etc")])).resolve("y")


def test_a_hub_adapter_loads_through_huggingface_hub(tmp_path, monkeypatch):
    write_adapter(tmp_path / "snapshot", "bert", "remote", METHOD_CONFIGS["ia3"])
    calls = []

    def fake_download(repo_id, revision=None):
        calls.append((repo_id, revision))
        return str(tmp_path / "snapshot" / "remote")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    engine = make_engine("bert", tmp_path / "roots", allow_hub_ids=True)
    (tmp_path / "roots").mkdir()

    async def main():
        async with engine:
            return await engine.load_adapter("org/remote")

    info = run(main())
    assert calls == [("org/remote", None)] and info.source == "Hub repo org/remote"
