"""Property: for random corpora, ACLs and users, every hit is authorized and, with exact search,
the hits equal the exact top-k over the authorized set. At least 10,000 (user, query) trials."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag.config import StoreSettings
from rag.identity import PUBLIC
from rag.models import Acl, Chunk, Citation
from rag.stores.base import IndexInfo
from rag.stores.lancedb import LanceDBStore

CORPORA = 50
TRIALS_PER_CORPUS = 200
DIM = 16
K = 10
_trials = 0


def _corpus(rng: np.random.Generator, groups: list[str], users: list[str]) -> list[Chunk]:
    chunks = []
    for i in range(int(rng.integers(1, 400))):
        pool = [f"group:{g}" for g in groups] + [f"user:{u}" for u in users] + [PUBLIC]
        allow = set(rng.choice(pool, size=int(rng.integers(1, 4)), replace=True))
        deny = (
            set(rng.choice(pool, size=int(rng.integers(0, 3)), replace=True))
            if rng.random() < 0.3
            else set()
        )
        doc = f"d{i}"
        chunks.append(
            Chunk(
                id=Chunk.make_id(doc, 0),
                document_id=doc,
                source="p",
                ordinal=0,
                text=doc,
                token_count=1,
                acl=Acl(allow=frozenset(allow), deny=frozenset(deny)),
                citation=Citation(document_id=doc, uri=doc, title=doc),
            )
        )
    return chunks


def _user(rng: np.random.Generator, groups: list[str], users: list[str]) -> frozenset[str]:
    shape = rng.integers(0, 4)
    n_groups = {0: 0, 1: 1, 2: int(rng.integers(2, 6)), 3: int(rng.integers(100, 400))}[int(shape)]
    member_of = (
        {f"group:{g}" for g in rng.choice(groups, size=min(n_groups, len(groups)), replace=False)}
        if n_groups
        else set()
    )
    if n_groups > len(groups):  # hundreds of groups, most unknown to the corpus
        member_of |= {f"group:extra{j}" for j in range(n_groups - len(groups))}
    return frozenset({f"user:{rng.choice(users)}", PUBLIC, *member_of})


@settings(
    max_examples=CORPORA,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32 - 1))
def _check_corpus(seed: int) -> None:
    global _trials
    rng = np.random.default_rng(seed)
    groups = [f"g{i}" for i in range(int(rng.integers(1, 40)))]
    users = [f"u{i}" for i in range(int(rng.integers(1, 30)))]
    chunks = _corpus(rng, groups, users)
    vectors = rng.normal(size=(len(chunks), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory() as tmp:
        store = LanceDBStore(Path(tmp), StoreSettings())
        store.ensure_index(IndexInfo("prop", DIM))
        store.upsert(chunks, vectors)
        if rng.random() < 0.5:
            store.optimize()  # with and without the label indexes
        for _ in range(TRIALS_PER_CORPUS):
            principals = _user(rng, groups, users)
            query = rng.normal(size=DIM).astype(np.float32)
            query /= np.linalg.norm(query)
            hits = store.search(query, principals, K)
            assert all(h.chunk.acl.permits(principals) for h in hits)
            allowed = [i for i, c in enumerate(chunks) if c.acl.permits(principals)]
            scores = vectors[allowed] @ query
            expected = [chunks[allowed[j]].id for j in np.argsort(-scores, kind="stable")[:K]]
            assert [h.chunk.id for h in hits] == expected
            _trials += 1


def test_acl_property_10k_trials() -> None:
    _check_corpus()
    assert _trials >= 10_000
