"""The ACL property, shared by every store: for random corpora, ACLs (with deny entries) and
users (0, 1, a few and hundreds of groups), every hit is authorized and the hits equal the exact
top-k over the authorized set. User and group ids are drawn from the whole Unicode range, from
real directory formats and from strings that look like query syntax (all valid ids).
``make_store(dim)`` returns a fresh, empty store."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag.filters import And, Eq, Filter, In, Not, Or, Prefix, Range, filter_view, matches, render
from rag.identity import PUBLIC, canonical_id, validate_principal
from rag.models import Acl, Chunk, Citation, MetadataValue
from rag.stores.base import VectorStore
from tests.principal_strategies import HOSTILE_IDS, ids

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


# -- metadata filters: no filter ever reaches past the ACL ---------------------------------------
FILTER_TEXT = "common"  # every chunk of the filter corpus says it: BM25 ranks them all
_GROUPS = ["group:hr", "group:eng", "group:board", *(f"group:{g}" for g in HOSTILE_IDS[:3])]
_POOL = [*_GROUPS, "user:alice", "user:mallory", "user:o'brien@example.com", PUBLIC]
_STRINGS = [
    "hr", "eng", "board", "", "a", "o'brien", "x') OR true OR ('a", "' OR '1'='1", "\\", "%",
    "_", "日本", "zoë", "HR", "h", "text/markdown", "text/plain", "application/pdf",
    "wiki/", "wiki/a.md", "hand", "handbook", "https://x/", "true", "false", "1", "2.5", "-3",
]  # fmt: skip
_NUMBERS = [-3, -0.5, 0, 1, 2.5, 3, 10, 1e12]
_KEYS = ["attr.team", "attr.level", "draft", "link", "x') OR true --", "we'ird \\ key"]
_TIMES = [datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC),
          datetime(2026, 2, 1, 9, tzinfo=UTC)]  # fmt: skip


def filter_corpus(size: int = 48, seed: int = 5) -> list[Chunk]:
    """Chunks with random ACLs and random metadata from a small, hostile vocabulary (so
    filters drawn from the same vocabulary hit, miss and collide)."""
    rng = np.random.default_rng(seed)
    chunks = []
    for i in range(size):
        doc = f"f{i}"
        metadata: dict[str, MetadataValue] = {}
        for key in _KEYS:
            roll = rng.random()
            if roll < 0.35:
                metadata[key] = _STRINGS[int(rng.integers(len(_STRINGS)))]
            elif roll < 0.6:
                metadata[key] = _NUMBERS[int(rng.integers(len(_NUMBERS)))]
            elif roll < 0.7:
                metadata[key] = bool(rng.random() < 0.5)
            elif roll < 0.75:
                metadata[key] = None
        if rng.random() < 0.8:
            metadata["mime_type"] = ["text/markdown", "text/plain", "application/pdf"][i % 3]
        if rng.random() < 0.8:
            metadata["modified"] = _TIMES[int(rng.integers(len(_TIMES)))].isoformat()
        allow = {_POOL[int(j)] for j in rng.choice(len(_POOL), size=int(rng.integers(1, 3)))}
        deny = {_POOL[int(j)] for j in rng.choice(len(_POOL), size=int(rng.integers(0, 2)))}
        source = ["handbook", "wiki", "o'brien's"][int(rng.integers(3))]
        uri = f"{['wiki/', 'handbook/', 'x'][i % 3]}{doc}.md"
        chunks.append(
            Chunk(
                id=Chunk.make_id(doc, 0),
                document_id=doc,
                source=source,
                ordinal=0,
                text=f"{FILTER_TEXT} {_STRINGS[i % len(_STRINGS)]} words",
                token_count=3,
                acl=Acl(allow=frozenset(allow), deny=frozenset(deny - allow)),
                citation=Citation(document_id=doc, uri=uri, title=f"{source} {doc}"),
                metadata=metadata,
            )
        )
    return chunks


def _make_leaf(kind: str, field: str, values: list[Any], bound: str) -> Filter:
    if kind == "eq":
        return Eq(field, values[0])
    if kind == "in":
        return In(field, values)
    if kind == "prefix" and isinstance(values[0], str) and field != "modified":
        return Prefix(field, values[0])
    if kind == "between":
        return Range(field, gte=values[0], lt=values[1])
    return Range(field, **{bound: values[0]})


def _encodable(text: str) -> bool:
    return "\x00" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


_KINDS = st.sampled_from(["eq", "in", "prefix", "between", "bound"])
_BOUNDS = st.sampled_from(["gt", "gte", "lt", "lte"])
_text_fields = st.sampled_from(["source", "uri", "path", "title", "mime_type", "document_id"])
_meta_fields = st.sampled_from([*_KEYS, "metadata.mime_type", "metadata.modified", "nokey"])
_strings = st.one_of(st.sampled_from(_STRINGS), st.text(max_size=4).filter(_encodable))


def _leaves_of(fields: st.SearchStrategy[str], value: st.SearchStrategy[Any]) -> Any:
    return st.builds(_make_leaf, _KINDS, fields, st.lists(value, min_size=2, max_size=3), _BOUNDS)


_leaves = st.one_of(
    _leaves_of(_text_fields, _strings),
    _leaves_of(_meta_fields, _strings),
    _leaves_of(_meta_fields, st.sampled_from(_NUMBERS)),
    st.builds(Eq, _meta_fields, st.booleans()),
    _leaves_of(st.just("modified"), st.sampled_from(_TIMES)),
)
filters: st.SearchStrategy[Filter] = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.builds(And, st.lists(children, min_size=1, max_size=3)),
        st.builds(Or, st.lists(children, min_size=1, max_size=3)),
        st.builds(Not, children),
    ),
    max_leaves=6,
)


def run_filter_property(
    store: VectorStore, chunks: list[Chunk], examples: int, *, exact: bool = True
) -> int:
    """For ``examples`` drawn (filter, user) pairs, on every search mode of the store: each hit
    is readable (ACL) and admitted (the reference semantics, :func:`rag.filters.matches`); with
    ``exact``, the hits are exactly the readable, admitted chunks (k is the corpus size).
    Returns the searches checked."""
    from tests.contract import search_modes

    modes = search_modes(store)
    views = {c.id: filter_view(c) for c in chunks}
    checks = 0

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(flt=filters, principals=st.sets(st.sampled_from(_POOL), min_size=1, max_size=4))
    def check(flt: Filter, principals: set[str]) -> None:
        nonlocal checks
        asking = frozenset(validate_principal(p) for p in principals)  # as UserContext gives
        want = {c.id for c in chunks if c.acl.permits(asking) and matches(flt, views[c.id])}
        for mode, run in modes.items():
            hits = run(FILTER_TEXT, asking, len(chunks), filter=flt)
            assert all(h.chunk.acl.permits(asking) for h in hits), f"ACL leak in {mode}"
            assert all(matches(flt, views[h.chunk.id]) for h in hits), f"{mode} ignored filter"
            if exact:
                assert {h.chunk.id for h in hits} == want, f"{mode}: {render(flt)}"
            checks += 1

    check()
    return checks
