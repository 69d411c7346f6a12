"""Bedrock metadata sidecars (connectors.sidecar) and how their ACL keys combine with a folder's
policy (connectors.policy): pure functions, no S3."""

from __future__ import annotations

import json
from typing import Any

import pytest

from connectors.policy import ROOT, Scope, check_overrides, enter
from connectors.sidecar import MAX_SIDECAR_BYTES, parse_sidecar
from rag.errors import PolicyError
from rag.identity import PUBLIC
from rag.models import Acl

REL = "kb/report.pdf.metadata.json"


def parse(document: Any, case_sensitive: bool = False) -> Any:
    return parse_sidecar(REL, json.dumps(document, indent=2).encode(), case_sensitive)


def typed(kind: str, field: str, value: Any, embed: bool = True) -> dict[str, Any]:
    return {"value": {"type": kind, field: value}, "includeForEmbedding": embed}


def test_plain_and_typed_attributes() -> None:
    car = parse(
        {
            "metadataAttributes": {
                "team": "finance",
                "year": 2024,
                "ratio": 0.5,
                "final": False,
                "tags": ["q3", "budget"],
                "author": typed("STRING", "stringValue", "Lisa"),
                "pages": typed("NUMBER", "numberValue", 12, embed=False),
                "draft": typed("BOOLEAN", "booleanValue", True),
                "labels": typed("STRING_LIST", "stringListValue", ["a", "b"]),
            },
            "documentStructureConfiguration": {"type": "RECORD_BASED_STRUCTURE_METADATA"},
        }
    )
    assert car.rule is None and car.warnings == ()
    assert car.metadata() == {
        "attr.author": "Lisa",
        "attr.draft": True,
        "attr.final": False,
        "attr.labels": '["a", "b"]',
        "attr.pages": 12,
        "attr.ratio": 0.5,
        "attr.tags": '["q3", "budget"]',
        "attr.team": "finance",
        "attr.year": 2024,
    }


def test_digest_follows_attributes_not_acl() -> None:
    base = parse({"metadataAttributes": {"team": "finance", "tags": ["a"]}})
    same = parse({"allow": ["group:x"], "metadataAttributes": {"tags": ["a"], "team": "finance"}})
    other = parse({"metadataAttributes": {"team": "treasury", "tags": ["a"]}})
    assert base.digest() == same.digest() != other.digest()
    assert parse({}).digest() != base.digest()


def test_acl_keys_are_canonical_and_fail_closed() -> None:
    car = parse(
        {"allow": ["group:HR", "user:\u200bbob"], "deny": ["user:Mallory"], "inherit": False}
    )
    assert car.rule is not None
    assert car.rule.allow == {"group:hr"} and not car.rule.inherit
    assert "user:mallory" in car.rule.deny
    (warning,) = car.warnings
    assert REL in warning and "allow entry dropped" in warning and "line 4" in warning
    assert parse({"public": True}).rule.allow == {PUBLIC}
    sensitive = parse({"allow": ["group:HR"]}, case_sensitive=True)
    assert sensitive.rule is not None and sensitive.rule.allow == {"group.cs:HR"}
    with pytest.raises(PolicyError, match=r"line 6: deny entry is invalid"):
        parse({"allow": ["group:x"], "deny": ["user:\u0000"]})


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"{not json", "invalid JSON"),
        (b'["a"]', "must hold a JSON object"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"allow": ["group:a"], "allow": []}', "appears twice"),
        (b'{"metadataAttributes": {"x": NaN}}', "NaN is not a JSON number"),
        (b'{"metadataAttributes": {"x": 1e999}}', "must be finite"),
        (b'{"metadataAttributes": {"x": null}}', "attribute 'x'"),
        (b'{"metadataAttributes": {"x": {"a": 1}}}', "attribute 'x'"),
        (b'{"metadataAttributes": {"x": []}}', "one or more strings"),
        (b'{"metadataAttributes": {"x": ["a", 1]}}', "one or more strings"),
        (b'{"metadataAttributes": {"": "v"}}', "attribute name"),
        (b'{"metadataAttributes": ["a"]}', "metadataAttributes must be an object"),
        (b'{"metadataattributes": {}}', "unknown key 'metadataattributes'"),
        (b'{"allow": "group:a"}', "key allow"),
        (b'{"inherit": "no"}', "key inherit"),
        (b'{"documentStructureConfiguration": 3}', "documentStructureConfiguration"),
    ],
)
def test_malformed_sidecars_are_errors(raw: bytes, problem: str) -> None:
    with pytest.raises(PolicyError, match=problem.replace("(", r"\(")) as caught:
        parse_sidecar(REL, raw)
    assert str(caught.value).startswith(REL)


@pytest.mark.parametrize(
    "value",
    [
        {"value": {"type": "STRING", "stringValue": 3}},
        {"value": {"type": "NUMBER", "numberValue": True}},
        {"value": {"type": "BOOLEAN", "booleanValue": "true"}},
        {"value": {"type": "STRING_LIST", "stringListValue": "a"}},
        {"value": {"type": "STRING", "numberValue": 3}},
        {"value": {"type": "DATE", "stringValue": "2024"}},
        {"value": {"type": "STRING", "stringValue": "a"}, "includeForEmbedding": "yes"},
        {"value": {"type": "STRING", "stringValue": "a"}, "extra": 1},
        {"type": "STRING", "stringValue": "a"},
    ],
)
def test_typed_values_must_match_their_type(value: dict[str, Any]) -> None:
    with pytest.raises(PolicyError, match="attribute 'x'"):
        parse({"metadataAttributes": {"x": value}})


def test_size_limit_is_bedrocks() -> None:
    pad = "x" * (MAX_SIDECAR_BYTES - len('{"metadataAttributes": {"p": ""}}'))
    at_limit = json.dumps({"metadataAttributes": {"p": pad}}).encode()
    assert len(at_limit) == MAX_SIDECAR_BYTES
    assert parse_sidecar(REL, at_limit).attributes["p"] == pad
    with pytest.raises(PolicyError, match="over the 10240-byte limit"):
        parse_sidecar(REL, at_limit + b" ")


# -- how a sidecar's rule combines with the folder's policy --------------------------------
POLICY = b"""allow = ["group:eng"]
deny = ["user:mallory"]
classification = "internal"

[files."report.pdf"]
allow = ["group:finance"]
"""


def scope(problems: list[str] | None = None) -> Scope:
    here = enter(ROOT, "kb/.rag-acl.toml", POLICY, False, problems if problems is not None else [])
    return check_overrides(here, "kb/.rag-acl.toml", {"report.pdf", "plain.md"}, [])


def test_sidecar_rule_applies_after_the_files_override() -> None:
    here = scope()
    car = parse({"allow": ["user:bob"], "classification": "Restricted"})
    acl, label = here.file("report.pdf", car.rule)
    assert acl is not None
    assert acl.allow == {"group:eng", "group:finance", "user:bob"}
    assert acl.deny >= {"user:mallory"} and label == "restricted"
    assert here.file("plain.md") == (
        Acl(allow=frozenset({"group:eng"}), deny=acl.deny),
        "internal",
    )


def test_sidecar_inherit_false_drops_allow_never_deny() -> None:
    car = parse({"inherit": False, "allow": ["user:bob"]})
    acl, label = scope().file("report.pdf", car.rule)
    assert acl is not None and acl.allow == {"user:bob"}
    assert "user:mallory" in acl.deny and label == "internal"
    only_deny = parse({"deny": ["group:finance"]})
    narrowed, _ = scope().file("report.pdf", only_deny.rule)
    assert narrowed is not None and not narrowed.permits({"group:finance", "user:x"})
    assert narrowed.permits({"group:eng"})


def test_a_sidecar_cannot_lift_a_broken_policy() -> None:
    problems: list[str] = []
    broken = enter(ROOT, "kb/.rag-acl.toml", b"allow = [", False, problems)
    car = parse({"public": True})
    assert broken.file("report.pdf", car.rule) == (None, None)
    assert broken.error is not None and problems and "invalid TOML" in problems[0]
