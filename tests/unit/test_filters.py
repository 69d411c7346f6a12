"""Metadata filters: the model, the text syntax, the reference semantics, and golden tests of
what each store compiles (LanceDB SQL, OpenSearch DSL). Store behaviour is in tests/contract.py."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag.errors import FilterError, InvalidRequestError
from rag.filters import (
    And,
    Eq,
    Filter,
    In,
    Not,
    Or,
    Prefix,
    Range,
    all_of,
    filter_from_json,
    filter_view,
    matches,
    parse_filter,
    render,
    where,
)
from rag.stores.lancedb import compile_acl_filter, compile_filter
from rag.stores.opensearch_dsl import (
    bm25_query,
    filter_fields,
    knn_query,
    num_token,
)
from rag.stores.opensearch_dsl import (
    compile_acl_filter as os_acl,
)
from rag.stores.opensearch_dsl import compile_filter as os_filter
from tests.contract import FILTERED

JAN = datetime(2026, 1, 1, tzinfo=UTC)
JAN_MS = 1767225600000


# -- the text syntax ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('source = "handbook"', Eq("source", "handbook")),
        ("source == 'handbook'", Eq("source", "handbook")),
        ('source != "x"', Not(Eq("source", "x"))),
        ('modified >= "2026-01-01"', Range("modified", gte=JAN)),
        ('modified < "2026-01-01T00:00:00Z"', Range("modified", lt=JAN)),
        ("attr.level > 2", Range("attr.level", gt=2)),
        ("attr.level <= -2.5e1", Range("attr.level", lte=-25.0)),
        ("draft = TRUE", Eq("draft", True)),
        ('attr.team in ["hr", "eng",]', In("attr.team", ["hr", "eng"])),
        ('attr.team not in ["hr"]', Not(In("attr.team", ["hr"]))),
        ('path startswith "wiki/"', Prefix("path", "wiki/")),
        ('uri prefix "s3://b/"', Prefix("uri", "s3://b/")),
        ('"odd key" = "v"', Eq("odd key", "v")),
        (r'title = "say \"hi\" \\ bye"', Eq("title", 'say "hi" \\ bye')),
        ("title = 'it\\'s'", Eq("title", "it's")),
        (
            'a = "1" or b = "2" and c = "3"',
            Or([Eq("a", "1"), And([Eq("b", "2"), Eq("c", "3")])]),
        ),
        (
            '(a = "1" or b = "2") and not c = "3"',
            And([Or([Eq("a", "1"), Eq("b", "2")]), Not(Eq("c", "3"))]),
        ),
        ('NOT not a = "1"', Not(Not(Eq("a", "1")))),
        (
            'source = "handbook" and modified >= "2026-01-01"',
            And([Eq("source", "handbook"), Range("modified", gte=JAN)]),
        ),
    ],
)
def test_parse(text: str, expected: Filter) -> None:
    assert parse_filter(text) == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("source", "operator"),
        ('source = "a" b', "column 14"),
        ('(source = "a"', r"expected '\)'"),
        ('source = "a")', "column 13"),
        ("source = handbook", "expected a value"),
        ('source = "unterminated', "unexpected"),
        ('attr.x in "a"', r"expected '\['"),
        ("attr.x in []", "expected a value"),
        ("attr.x startswith 3", "takes a string"),
        ("attr.x = 2026-01-01", "unexpected|expected a value"),
        ('modified > "yesterday"', "ISO 8601"),
        ('modified startswith "2026"', "text field"),
        ("source = 3", "text field"),
        ('acl_allow = "group:x"', "not filterable"),
        ('ACL_DENY = "user:x"', "not filterable"),
        ('allow in ["public"]', "not filterable"),
        ('deny = "x"', "not filterable"),
        ('acl_checked_ms > "0"', "not filterable"),
        ('vector = "x"', "not filterable"),
        ('_id = "x"', "not filterable"),
        ('text = "x"', "not filterable"),
        ('metadata = "x"', "not filterable"),
        ('"metadata." = "x"', "no metadata key"),
        ('"a\x01b" = "x"', "control"),
        ("attr.n > 1e999", "finite"),
        ("a = 1 and " * 600 + "a = 1", "too large"),
        ("not " * 40 + 'a = "1"', "nested deeper"),
        ("(" * 40 + 'a = "1"' + ")" * 40, "nested deeper"),
    ],
)
def test_parse_errors_are_filter_errors(text: str, match: str) -> None:
    with pytest.raises(FilterError, match=match):
        parse_filter(text)


def test_filter_error_is_an_invalid_request() -> None:
    assert issubclass(FilterError, InvalidRequestError)
    assert issubclass(FilterError, ValueError)


def test_where_pairs() -> None:
    assert where([]) is None
    assert where(["source=handbook"]) == Eq("source", "handbook")
    assert where(["attr.team = hr", "link=https://x/?a=b"]) == And(
        [Eq("attr.team", "hr"), Eq("link", "https://x/?a=b")]
    )
    assert where(["modified=2026-01-01"]) == Eq("modified", JAN)
    for bad in ["novalue", "=x", " =x"]:
        with pytest.raises(FilterError):
            where([bad])
    with pytest.raises(FilterError, match="not filterable"):
        where(["acl_allow=public"])


def test_all_of() -> None:
    a, b = Eq("a", "1"), Eq("b", "2")
    assert all_of() is None
    assert all_of(None, None) is None
    assert all_of(a, None) == a
    assert all_of(a, b) == And([a, b])
    assert a & b == And([a, b])
    assert a | b == Or([a, b])
    assert ~a == Not(a)


def test_model_checks() -> None:
    assert Eq("modified", date(2026, 1, 1)) == Eq("modified", "2026-01-01T00:00:00")
    assert Range("modified", gte="2026-01-01T01:00:00+01:00") == Range("modified", gte=JAN)
    with pytest.raises(FilterError, match="needs a bound"):
        Range("attr.x")
    with pytest.raises(FilterError, match="one lower"):
        Range("attr.x", gt=1, gte=2)
    with pytest.raises(FilterError, match="strings, numbers or times"):
        Range("attr.x", gt=1, lt="z")
    with pytest.raises(FilterError, match="strings, numbers or times"):
        Range("attr.x", gt=True)
    with pytest.raises(FilterError, match="list"):
        In("attr.x", "abc")
    with pytest.raises(FilterError):
        In("attr.x", [])
    with pytest.raises(FilterError, match="valid text"):
        Eq("attr.x", "a\x00b")
    with pytest.raises(FilterError, match="valid text"):
        Eq("attr.x", "\ud800")
    with pytest.raises(FilterError):
        And([])


def test_json_round_trip_and_errors() -> None:
    flt = parse_filter(
        'not (source = "a" or attr.n in [1, 2.5, "x", true]) and modified < "2026-01-01" '
        'and path startswith "w/"'
    )
    data = flt.model_dump(mode="json")
    assert filter_from_json(data) == flt
    assert parse_filter(render(flt)) == flt
    with pytest.raises(FilterError, match="not filterable"):
        filter_from_json({"op": "eq", "field": "acl_allow", "value": "public"})
    with pytest.raises(FilterError):
        filter_from_json({"op": "match_all"})
    with pytest.raises(FilterError):
        filter_from_json({"op": "eq", "field": "a", "value": {"bool": {}}})


# -- what a chunk offers, and the reference semantics -----------------------------------------
def test_filter_view() -> None:
    by_doc = {c.document_id: c for c in FILTERED}
    view = filter_view(by_doc["wiki-oncall"])
    assert view.source == "wiki"
    assert view.uri == "wiki/oncall.md"
    assert view.mime_type == "text/markdown"
    assert view.modified_ms == 1768435200000
    assert view.strings["attr.level"] == "2.5"
    assert view.strings["draft"] == "true"
    assert view.numbers == {"attr.level": 2.5}
    bare = filter_view(by_doc["misc-bare"])
    assert bare.mime_type is None and bare.modified_ms is None and bare.strings == {}


def test_missing_fields_fail_every_comparison_and_not_negates() -> None:
    bare = filter_view(next(c for c in FILTERED if c.document_id == "misc-bare"))
    for text in ['attr.team = "hr"', 'attr.team != "hr"', "attr.level < 100"]:
        positive = parse_filter(text)
        assert matches(positive, bare) is text.endswith('!= "hr"')
        assert matches(Not(positive), bare) is not matches(positive, bare)


def test_numbers_and_text_compare_by_the_literal_type() -> None:
    pay = filter_view(next(c for c in FILTERED if c.document_id == "handbook-pay"))
    assert matches(parse_filter("attr.level = 3"), pay)
    assert matches(parse_filter("attr.level = 3.0"), pay)
    assert matches(parse_filter('attr.level = "3"'), pay)
    assert not matches(parse_filter('attr.level = "3.0"'), pay)
    assert matches(parse_filter("attr.level > 2.9"), pay)
    assert matches(parse_filter('attr.level > "20"'), pay)  # as text, "3" > "20"
    assert not matches(parse_filter("attr.level > 20"), pay)  # as a number, 3 < 20


# -- golden: LanceDB SQL -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flt", "sql"),
    [
        (Eq("source", "handbook"), "(source = 'handbook')"),
        (Eq("path", "a.md"), "(uri IS NOT NULL AND uri = 'a.md')"),
        (
            Range("modified", gte=JAN),
            f"(modified_ms IS NOT NULL AND modified_ms >= {JAN_MS})",
        ),
        (
            Eq("attr.team", "o'brien"),
            "(json_get_string(meta_str, 'attr.team') IS NOT NULL AND "
            "json_get_string(meta_str, 'attr.team') = 'o''brien')",
        ),
        (
            Range("attr.level", gt=2, lte=9.5),
            "((json_get_float(meta_num, 'attr.level') IS NOT NULL AND "
            "json_get_float(meta_num, 'attr.level') > 2.0) AND "
            "(json_get_float(meta_num, 'attr.level') IS NOT NULL AND "
            "json_get_float(meta_num, 'attr.level') <= 9.5))",
        ),
        (
            Eq("draft", True),
            "(json_get_string(meta_str, 'draft') IS NOT NULL AND "
            "json_get_string(meta_str, 'draft') = 'true')",
        ),
        (
            In("attr.x", ["a", 1, "b"]),
            "((json_get_string(meta_str, 'attr.x') IS NOT NULL AND "
            "json_get_string(meta_str, 'attr.x') IN ('a', 'b')) OR "
            "(json_get_float(meta_num, 'attr.x') IS NOT NULL AND "
            "json_get_float(meta_num, 'attr.x') IN (1.0)))",
        ),
        (
            Prefix("uri", "it's/"),
            "(uri IS NOT NULL AND starts_with(uri, 'it''s/'))",
        ),
        (
            Not(Or([Eq("source", "a"), Eq("document_id", "b")])),
            "(NOT ((source = 'a') OR (document_id = 'b')))",
        ),
        (
            Eq("x') OR true OR ('", "v') OR 1=1 --"),
            "(json_get_string(meta_str, 'x'') OR true OR (''') IS NOT NULL AND "
            "json_get_string(meta_str, 'x'') OR true OR (''') = 'v'') OR 1=1 --')",
        ),
        (
            Eq("metadata.allow", "public"),
            "(json_get_string(meta_str, 'allow') IS NOT NULL AND "
            "json_get_string(meta_str, 'allow') = 'public')",
        ),
    ],
)
def test_lancedb_golden(flt: Filter, sql: str) -> None:
    assert compile_filter(flt) == sql


def test_lancedb_sql_never_names_acl_columns() -> None:
    for text in ['allow = "x"', '"acl_allow" = "x"', 'deny = "x"']:
        with pytest.raises(FilterError):
            compile_filter(parse_filter(text))
    sql = compile_filter(parse_filter('metadata.allow = "x" or metadata.deny = "y"'))
    assert "array_has" not in sql and " allow" not in sql.replace("'allow'", "")
    assert compile_acl_filter(frozenset({"public"})).startswith("array_has_any(allow")


# -- golden: OpenSearch DSL ----------------------------------------------------------------------
def _tok(key: str, value: str) -> str:
    return f"{key}\x1f{value}"


@pytest.mark.parametrize(
    ("flt", "dsl"),
    [
        (Eq("source", "handbook"), {"term": {"source": "handbook"}}),
        (Prefix("path", "wiki/"), {"prefix": {"uri": "wiki/"}}),
        (Range("modified", gte=JAN), {"range": {"modified_ms": {"gte": JAN_MS}}}),
        (Eq("attr.team", "hr"), {"term": {"meta_str": _tok("attr.team", "hr")}}),
        (Eq("draft", False), {"term": {"meta_str": _tok("draft", "false")}}),
        (Eq("attr.n", 2), {"term": {"meta_num": num_token("attr.n", 2.0)}}),
        (
            In("attr.x", ["a", 1]),
            {
                "bool": {
                    "should": [
                        {"terms": {"meta_str": [_tok("attr.x", "a")]}},
                        {"terms": {"meta_num": [num_token("attr.x", 1.0)]}},
                    ],
                    "minimum_should_match": 1,
                }
            },
        ),
        (
            Range("attr.team", gt="h"),
            {"range": {"meta_str": {"gt": _tok("attr.team", "h"), "lt": "attr.team\x20"}}},
        ),
        (
            Range("attr.n", lte=5),
            {"range": {"meta_num": {"gte": "attr.n\x1f", "lte": num_token("attr.n", 5.0)}}},
        ),
        (Prefix("link", "https://"), {"prefix": {"meta_str": _tok("link", "https://")}}),
        (
            Not(And([Eq("source", "a"), Or([Eq("title", "t")])])),
            {
                "bool": {
                    "must_not": [
                        {
                            "bool": {
                                "filter": [
                                    {"term": {"source": "a"}},
                                    {
                                        "bool": {
                                            "should": [{"term": {"title": "t"}}],
                                            "minimum_should_match": 1,
                                        }
                                    },
                                ]
                            }
                        }
                    ]
                }
            },
        ),
    ],
)
def test_opensearch_golden(flt: Filter, dsl: dict[str, Any]) -> None:
    assert os_filter(flt) == dsl


def test_opensearch_acl_clause_stays_in_the_outer_filter() -> None:
    principals = frozenset({"user:a", "public"})
    flt = parse_filter('source = "x" or not source = "x"')
    acl = os_acl(principals)
    knn = knn_query([0.0, 1.0], principals, 5, 100, None, flt)
    assert knn["query"]["knn"]["vector"]["filter"] == {"bool": {"filter": [acl, os_filter(flt)]}}
    bm25 = bm25_query("q", principals, 5, None, flt)
    assert bm25["query"]["bool"]["filter"] == [acl, os_filter(flt)]
    assert bm25_query("q", principals, 5)["query"]["bool"]["filter"] == [acl]


def test_opensearch_fields_of_a_chunk() -> None:
    leave = next(c for c in FILTERED if c.document_id == "handbook-leave")
    fields = filter_fields(filter_view(leave))
    assert fields["uri"] == "handbook/leave.md"
    assert fields["modified_ms"] == 1769936400000
    assert _tok("attr.team", "hr") in fields["meta_str"]
    assert fields["meta_num"] == [num_token("attr.level", 1.0)]
    assert fields["filters_v"] == 1


EDGES = [-1.7976931348623157e308, -1.0, -5e-324, -0.0, 0.0, 5e-324, 2.5, 1e300]


def test_numeric_tokens_at_the_edges() -> None:
    tokens = [num_token("k", v) for v in EDGES]
    assert tokens[3] == tokens[4]  # -0.0 is 0.0
    assert sorted(set(tokens)) == [t for i, t in enumerate(tokens) if i != 3]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=2, max_size=8))
def test_numeric_tokens_sort_like_the_numbers(values: list[float]) -> None:
    tokens = [num_token("k", v) for v in values]
    assert sorted(tokens) == [num_token("k", v) for v in sorted(values)]
    assert num_token("k", -0.0) == num_token("k", 0.0)
    assert all(len(t) == len("k\x1f") + 16 for t in tokens)
