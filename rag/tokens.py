"""tiktoken with its vocabularies shipped in the package, hash-verified, so it works offline."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Final

import tiktoken

from rag.errors import ConfigurationError

# encoding -> (file tiktoken downloads, the name tiktoken caches it under, its SHA-256)
_SHIPPED: Final = {
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}


def _cache_key(url: str) -> str:
    # tiktoken caches a file under the SHA-1 of its URL (tiktoken.load.read_file_cached).
    return hashlib.sha1(url.encode()).hexdigest()  # noqa: S324 - a cache key, not security


def shipped_cache_dir() -> Path:
    """A tiktoken cache directory filled from the package's verified vocabularies."""
    target = Path(tempfile.gettempdir()) / "rag-tiktoken-cache"
    target.mkdir(parents=True, exist_ok=True)
    for name, (url, sha256) in _SHIPPED.items():
        dest = target / _cache_key(url)
        if dest.exists() and hashlib.sha256(dest.read_bytes()).hexdigest() == sha256:
            continue
        src = resources.files("rag") / "assets" / "tiktoken" / f"{name}.tiktoken"
        data = src.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ConfigurationError(f"shipped tiktoken vocabulary {name} fails its SHA-256 check")
        tmp = dest.with_suffix(".tmp")
        tmp.write_bytes(data)
        shutil.move(tmp, dest)
    return target


@lru_cache(maxsize=8)
def get_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding ``name``, working offline for the shipped encodings.

    A user-configured ``TIKTOKEN_CACHE_DIR`` is respected; otherwise the shipped files are used.
    tiktoken itself re-checks each cached file against its pinned hash.
    """
    if "TIKTOKEN_CACHE_DIR" not in os.environ and name in _SHIPPED:
        os.environ["TIKTOKEN_CACHE_DIR"] = str(shipped_cache_dir())
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:  # network errors, unknown names, hash mismatches
        raise ConfigurationError(
            f"tiktoken encoding {name!r} is unavailable (shipped offline: {sorted(_SHIPPED)})"
        ) from exc
