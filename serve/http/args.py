"""StitchArgs: the typed arguments that build a Stitch app (CLI, Ray Serve config, KubeRay)."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..engine import EngineConfig


def demo_adapters_dir() -> Path:
    """The demo adapters bundled with the package (trained on the packaged MiniLM)."""
    return Path(str(resources.files("serve") / "demo_adapters"))


class StitchArgs(BaseModel):
    """Everything ``build_app`` needs.

    engine: the engine of each model replica. adapter_dirs: directories whose
    subdirectories are adapters, served under their directory names (empty: the bundled
    demo adapters); they are added to the engine's adapter roots. model_name: the base
    model's name in the API (``model`` field; default: ``engine.model``). replicas /
    max_replicas: model replicas (autoscaling between them when max_replicas > replicas).
    num_gpus_per_replica / num_cpus_per_replica: Ray resources of a model replica.
    api_key: protects the admin calls (default: the STITCH_API_KEY environment variable).
    directory_sync_seconds: how stale a replica's view of runtime registrations may be.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: EngineConfig = EngineConfig()
    adapter_dirs: tuple[Path, ...] = ()
    model_name: str | None = None
    replicas: int = Field(1, ge=1)
    max_replicas: int | None = Field(None, ge=1)
    num_gpus_per_replica: float = Field(0.0, ge=0.0)
    num_cpus_per_replica: float = Field(1.0, gt=0.0)
    api_key: str | None = Field(default_factory=lambda: os.environ.get("STITCH_API_KEY") or None)
    adapter_label_limit: int = Field(100, ge=1)
    directory_sync_seconds: float = Field(1.0, gt=0.0)

    @model_validator(mode="after")
    def _replica_range(self) -> "StitchArgs":
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below replicas ({self.replicas})")
        return self

    def served_dirs(self) -> tuple[Path, ...]:
        return tuple(Path(d).resolve() for d in self.adapter_dirs) or (demo_adapters_dir(),)

    def base_name(self) -> str:
        return self.model_name or self.engine.model

    def engine_config(self) -> EngineConfig:
        """The engine config with the served directories among its adapter roots."""
        roots = tuple(dict.fromkeys((*self.engine.adapter_roots, *self.served_dirs())))
        return self.engine.model_copy(update={"adapter_roots": roots})
