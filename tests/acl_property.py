"""The ACL property, shared by every store: for random corpora, ACLs (with deny entries) and
users (0, 1, a few and hundreds of groups), every hit is authorized and the hits equal the exact
top-k over the authorized set. User and group ids are drawn from the whole Unicode range, from
real directory formats and from strings that look like query syntax (all valid ids).
``make_store(dim)`` returns a fresh, empty store."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag.identity import PUBLIC, canonical_id, validate_principal
from rag.models import Acl, Chunk, Citation
from rag.stores.base import VectorStore
from tests.principal_strategies import ids

DIM = 16
K = 10

StoreFactory = Callable[[int], AbstractContextManager[VectorStore]]


@dataclass
class Tally:
    trials: int = 0
    exact_matches: int = 0
    recall_sum: float = 0.0


# One chunk's ACL as indexes into the principal pool: 1-3 allowed, 0-2 denied. Drawn by
# hypothesis, so a failing corpus shrinks to the few chunks and principals that matter.
acl_indexes = st.tuples(
    st.sets(st.integers(0, 255), min_size=1, max_size=3),
    st.sets(st.integers(0, 255), max_size=2),
)


def _corpus(
    acls: list[tuple[set[int], set[int]]], groups: list[str], users: list[str]
) -> list[Chunk]:
    pool = [f"group:{g}" for g in groups] + [f"user:{u}" for u in users] + [PUBLIC]
    chunks = []
    for i, (allow, deny) in enumerate(acls):
        doc = f"d{i}"
        chunks.append(
            Chunk(
                id=Chunk.make_id(doc, 0),
                document_id=doc,
                source="p",
                ordinal=0,
                text=doc,
                token_count=1,
                acl=Acl(
                    allow=frozenset(pool[j % len(pool)] for j in allow),
                    deny=frozenset(pool[j % len(pool)] for j in deny),
                ),
                citation=Citation(document_id=doc, uri=doc, title=doc),
            )
        )
    return chunks


def _user(rng: np.random.Generator, groups: list[str], users: list[str]) -> frozenset[str]:
    shape = int(rng.integers(0, 4))
    n_groups = (0, 1, int(rng.integers(2, 6)), int(rng.integers(100, 400)))[shape]
    member_of: set[str] = set()
    if n_groups:
        picked = rng.choice(groups, size=min(n_groups, len(groups)), replace=False)
        member_of = {f"group:{g}" for g in picked}
        member_of |= {f"group:extra{j}" for j in range(max(0, n_groups - len(groups)))}
    raw = {f"user:{rng.choice(users)}", PUBLIC, *member_of}
    return frozenset(validate_principal(p) for p in raw)  # as UserContext.principals() gives


def run_acl_property(
    make_store: StoreFactory, corpora: int, trials_per_corpus: int, optimize: bool = True
) -> Tally:
    tally = Tally()

    @settings(
        max_examples=corpora,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        seed=st.integers(0, 2**32 - 1),
        names=st.lists(ids, min_size=2, max_size=70, unique_by=lambda n: canonical_id(n)),
        acls=st.lists(acl_indexes, min_size=1, max_size=300),
    )
    def check(seed: int, names: list[str], acls: list[tuple[set[int], set[int]]]) -> None:
        rng = np.random.default_rng(seed)  # vectors and the users asking
        cut = int(rng.integers(1, len(names)))
        groups, users = names[:cut], names[cut:]
        chunks = _corpus(acls, groups, users)
        vectors = rng.normal(size=(len(chunks), DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        with make_store(DIM) as store:
            store.upsert(chunks, vectors)
            maybe_optimize = getattr(store, "optimize", None)
            if optimize and maybe_optimize is not None and rng.random() < 0.5:
                maybe_optimize()
            for _ in range(trials_per_corpus):
                principals = _user(rng, groups, users)
                query = rng.normal(size=DIM).astype(np.float32)
                query /= np.linalg.norm(query)
                hits = store.search(query, principals, K)
                assert all(h.chunk.acl.permits(principals) for h in hits), "ACL leak"
                allowed = [i for i, c in enumerate(chunks) if c.acl.permits(principals)]
                scores = vectors[allowed] @ query
                order = np.argsort(-scores, kind="stable")[:K]
                expected = [chunks[allowed[j]].id for j in order]
                got = [h.chunk.id for h in hits]
                assert len(got) == len(expected), "restrictive filter returned fewer than k"
                tally.trials += 1
                tally.exact_matches += got == expected
                hit_share = len(set(got) & set(expected)) / len(expected) if expected else 1.0
                tally.recall_sum += hit_share

    check()
    return tally
