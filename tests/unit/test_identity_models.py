from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from rag.errors import AccessDeniedError, InvalidPrincipalError, RagError
from rag.identity import (
    MAX_ID_CHARS,
    PUBLIC,
    UserContext,
    canonical_id,
    canonical_principal,
    deny_forms,
    require_user,
    validate_principal,
)
from rag.models import Acl, Chunk
from tests.principal_strategies import HOSTILE_IDS, REAL_WORLD_IDS, any_text, ids, is_valid_id


def test_principals_of_a_user() -> None:
    ctx = UserContext.of("alice", ["hr", "employees"])
    assert ctx.principals() == {"user:alice", "group:hr", "group:employees", PUBLIC}


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "user:",
        "group:   ",
        "alice",
        "role:x",
        "user:a\nb",
        "user:a\x00b",
        "group:zero\u200bwidth",
        "user:bidi\u202eevil",
        "user:\ud800",
        "user:" + "x" * (MAX_ID_CHARS + 1),
    ],
)
def test_invalid_principals(bad: str) -> None:
    with pytest.raises(InvalidPrincipalError):
        validate_principal(bad)


REAL_WORLD = [*REAL_WORLD_IDS, *HOSTILE_IDS[:-1], "x" * MAX_ID_CHARS]


@pytest.mark.parametrize("ident", REAL_WORLD)
def test_real_world_ids_are_accepted(ident: str) -> None:
    ctx = UserContext.of(ident, [ident])
    folded = unicodedata.normalize("NFC", ident).casefold()
    assert ctx.principals() == {f"user:{folded}", f"group:{folded}", PUBLIC}
    assert validate_principal(f"group:{ident}") == f"group:{folded}"


def test_canonical_form_is_nfc_stripped_and_case_folded() -> None:
    decomposed = "user:Jose\u0301"  # e + combining acute
    assert validate_principal(f"  {decomposed}\t") == "user:jos\u00e9"
    assert validate_principal("user:Mallory@Corp.EXAMPLE") == "user:mallory@corp.example"
    assert validate_principal("USER:Straße") == "user:strasse"
    assert validate_principal(" Public ") == PUBLIC
    assert canonical_principal("group:Eng", case_sensitive=True) == "group.cs:Eng"
    assert canonical_principal("group.cs:Eng") == "group.cs:Eng"  # explicit exact form kept


def test_deny_written_in_another_case_still_denies() -> None:
    acl = Acl(allow=frozenset({PUBLIC}), deny=frozenset({"user:Mallory@Corp.example"}))
    assert not acl.permits(UserContext.of("mallory@corp.example").principals())
    assert not acl.permits(UserContext.of("MALLORY@CORP.EXAMPLE").principals())


def test_user_context_refuses_a_bad_user_and_drops_bad_groups(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(InvalidPrincipalError, match="invalid user id"):
        UserContext.of("x\x00")
    with pytest.raises(InvalidPrincipalError):
        UserContext(user_id="   ")
    ctx = UserContext.of("bob", ["ok", "bad\u200b", "", "Finance Team"])
    assert ctx.groups == {"ok", "Finance Team"}
    assert ctx.principals() == {"user:bob", "group:ok", "group:finance team", PUBLIC}
    assert "dropped an invalid group" in caplog.text


def test_identity_errors_are_never_raw_validation_errors() -> None:
    for build in (
        lambda: UserContext.of("a\x01"),
        lambda: UserContext.model_validate({"user_id": "\u2028"}),
        lambda: Acl(allow=frozenset({"user:\x7f"})),
        lambda: Acl.model_validate({"allow": ["nobody"]}),
    ):
        with pytest.raises(InvalidPrincipalError) as info:
            build()
        assert not isinstance(info.value, ValidationError)
        assert isinstance(info.value, RagError)


def test_long_values_are_truncated_in_messages() -> None:
    with pytest.raises(InvalidPrincipalError) as info:
        UserContext.of("x" * 10_000)
    assert len(str(info.value)) < 400
    assert "10000 characters" in str(info.value)


def test_case_sensitive_forms_are_opt_in() -> None:
    ctx = UserContext.of("Alice", ["Eng"])
    assert "user.cs:Alice" not in ctx.principals()
    assert ctx.principals(case_sensitive=True) == {
        "user:alice",
        "group:eng",
        "user.cs:Alice",
        "group.cs:Eng",
        PUBLIC,
    }


def test_case_sensitive_deny_is_stored_in_every_form() -> None:
    assert deny_forms("user.cs:Mallory") == {"user.cs:Mallory", "user:mallory"}
    assert deny_forms("user:mallory") == {"user:mallory"}


@pytest.mark.parametrize(
    ("old", "new", "admitted", "refused"),
    [
        ({"group:hr"}, {PUBLIC}, [{"group:hr"}], [{"group:eng"}]),
        ({PUBLIC}, {"group:hr"}, [{"group:hr"}], [{"group:eng"}]),
        ({"group:hr", "group:eng"}, {"group:eng", "group:pm"}, [{"group:eng"}], [{"group:hr"}]),
        ({"group:hr"}, {"group:eng"}, [], [{"group:hr"}, {"group:eng"}, {"group:hr", "group:eng"}]),
    ],
)
def test_acl_meet_admits_only_what_both_admit(
    old: set[str], new: set[str], admitted: list[set[str]], refused: list[set[str]]
) -> None:
    a = Acl(allow=frozenset(old), deny=frozenset({"user:m"}))
    b = Acl(allow=frozenset(new), deny=frozenset({"user:n"}))
    meet = a.meet(b)
    for held in admitted:
        assert meet.permits({*held, PUBLIC, "user:x"})
    for held in [
        *refused,
        *({*h, "user:m"} for h in admitted),
        *({*h, "user:n"} for h in admitted),
    ]:
        assert not meet.permits({*held, PUBLIC})


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
    fold = canonical_id
    expected = bool({fold(g) for g in groups} & {fold(a) for a in allow}) and fold(user) not in {
        fold(d) for d in deny
    }
    assert acl.permits(ctx.principals()) == expected


formats = st.sampled_from(REAL_WORLD_IDS + HOSTILE_IDS)


@given(value=st.one_of(any_text, formats, st.builds(lambda a, b: a + b, formats, any_text)))
def test_canonical_principal_over_the_whole_unicode_range(value: str) -> None:
    for kind in ("user", "group"):
        raw = f"{kind}:{value}"
        if not is_valid_id(value):
            with pytest.raises(InvalidPrincipalError):
                validate_principal(raw)
            continue
        once = validate_principal(raw)
        assert validate_principal(once) == once  # idempotent
        assert once.startswith(f"{kind}:")
        assert (
            validate_principal(f"{kind}:{value.upper()}")
            == validate_principal(f"{kind}:{value.lower()}")
            or value.upper().casefold() != value.lower().casefold()
        )
        exact = canonical_principal(raw, case_sensitive=True)
        assert canonical_principal(exact) == exact
        assert exact == f"{kind}.cs:{unicodedata.normalize('NFC', value).strip()}"
