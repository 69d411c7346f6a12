from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rag.errors import AccessDeniedError, InvalidPrincipalError
from rag.identity import PUBLIC, UserContext, require_user, validate_principal
from rag.models import Acl, Chunk


def test_principals_of_a_user() -> None:
    ctx = UserContext.of("alice", ["hr", "employees"])
    assert ctx.principals() == {"user:alice", "group:hr", "group:employees", PUBLIC}


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "user:",
        "group:",
        "alice",
        "user:a b",
        "user:a'b",
        "role:x",
        "user:-x",
        "PUBLIC",
        "user:a\n",
    ],
)
def test_invalid_principals(bad: str) -> None:
    with pytest.raises(InvalidPrincipalError):
        validate_principal(bad)


def test_user_context_validates_ids() -> None:
    with pytest.raises(ValueError, match="invalid"):
        UserContext.of("x' OR 1=1")
    with pytest.raises(ValueError, match="invalid"):
        UserContext.of("bob", ["ok", "no way"])


def test_deny_by_default() -> None:
    with pytest.raises(AccessDeniedError):
        require_user(None)


def test_acl_deny_wins_and_empty_admits_nobody() -> None:
    acl = Acl(allow=frozenset({"group:hr", PUBLIC}), deny=frozenset({"user:mallory"}))
    assert acl.permits({"user:alice", PUBLIC})
    assert not acl.permits({"user:mallory", "group:hr", PUBLIC})
    assert not Acl().permits({"user:x", PUBLIC})
    assert Acl.public().is_public


def test_models_are_immutable() -> None:
    acl = Acl.public()
    with pytest.raises(ValueError, match="frozen"):
        acl.allow = frozenset()  # type: ignore[misc]


def test_acl_digest_is_order_independent() -> None:
    a = Acl(allow=frozenset({"group:a", "group:b"}), deny=frozenset({"user:c"}))
    b = Acl(allow=frozenset({"group:b", "group:a"}), deny=frozenset({"user:c"}))
    assert a.digest() == b.digest() != Acl.public().digest()


def test_chunk_ids_are_deterministic_and_distinct() -> None:
    assert Chunk.make_id("d", 0) == Chunk.make_id("d", 0)
    assert len({Chunk.make_id("d", i) for i in range(1000)}) == 1000


ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._@+\-]{0,20}", fullmatch=True)


@given(
    user=ids,
    groups=st.lists(ids, max_size=20),
    allow=st.sets(ids, max_size=5),
    deny=st.sets(ids, max_size=3),
)
def test_acl_permits_matches_set_semantics(
    user: str, groups: list[str], allow: set[str], deny: set[str]
) -> None:
    ctx = UserContext.of(user, groups)
    acl = Acl(
        allow=frozenset(f"group:{g}" for g in allow), deny=frozenset(f"user:{d}" for d in deny)
    )
    expected = bool(set(groups) & allow) and user not in deny
    assert acl.permits(ctx.principals()) == expected
