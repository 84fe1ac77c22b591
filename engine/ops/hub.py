"""Companion models' files on the Hugging Face Hub, named ``owner/repository/path/in/it``."""

from __future__ import annotations

import os
from pathlib import Path

from engine.loading import ModelLoadError
from engine.requests import first_line


def is_hub_file(source: str) -> bool:
    """Whether ``source`` names a file in a Hub repository rather than a local path."""
    local = source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().exists()
    return not local and source.count("/") >= 2


def hub_file(source: str, what: str) -> tuple[Path, str]:
    """The local copy of ``owner/repository/path`` (downloaded once, then from the cache) and
    its identity. Raises ModelLoadError naming ``what``."""
    from huggingface_hub import hf_hub_download

    owner, name, inner = source.split("/", 2)
    repo = f"{owner}/{name}"
    try:
        path = Path(hf_hub_download(repo, inner))
    except Exception as exc:
        offline = " (offline: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        first = first_line(exc)
        raise ModelLoadError(f"Could not download {what} {source}{offline}: {first}") from exc
    return path, hub_identity(repo, inner)


def hub_identity(repo: str, filename: str) -> str:
    """``repo@revision`` of a Hub download (the cache keeps it under the commit's name)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename)
    parts = Path(found).parts if isinstance(found, str) else ()
    revision = parts[parts.index("snapshots") + 1] if "snapshots" in parts else "unknown"
    return f"{repo}@{revision}"
