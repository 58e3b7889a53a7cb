"""Finding adapters: local directories and Hugging Face Hub repositories."""
from __future__ import annotations

from pathlib import Path

from .io import AdapterLoadError


def resolve_adapter_path(path_or_repo: str | Path, revision: str | None = None) -> Path:
    """A local adapter directory; a Hub repo id (``org/name``) is downloaded through the HF cache."""
    local = Path(path_or_repo)
    if local.exists():
        return local
    text = str(path_or_repo)
    if text.count("/") != 1 or text.startswith((".", "/")):
        raise AdapterLoadError(f"adapter {text!r}: no such directory, and not a Hub repo id (org/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(text, revision=revision))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as err:
        raise AdapterLoadError(f"adapter {text!r}: cannot fetch it from the Hugging Face Hub: {err}") from None
