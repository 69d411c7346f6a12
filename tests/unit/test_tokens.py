from __future__ import annotations

import hashlib

from rag.tokens import _SHIPPED, get_encoding, shipped_cache_dir


def test_shipped_vocabulary_works_offline() -> None:
    enc = get_encoding("cl100k_base")
    assert enc.decode(enc.encode("hello world")) == "hello world"
    assert len(enc.encode("hello world")) == 2


def test_cache_files_match_pinned_hashes() -> None:
    cache = shipped_cache_dir()
    for url, sha256 in _SHIPPED.values():
        key = hashlib.sha1(url.encode()).hexdigest()
        assert hashlib.sha256((cache / key).read_bytes()).hexdigest() == sha256
