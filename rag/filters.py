"""Query-time metadata filters: a typed model, a small text syntax, and field resolution.

A filter narrows a search; it never widens it. Every store compiles it into a clause of its own
that is AND-ed with the ACL clause (the ACL stays in the outer conjunction), and the ACL and
internal fields cannot be named at all: a filter on ``allow``, ``acl_deny``, ``vector``… is a
:class:`~rag.errors.FilterError`.

Fields::

    source                 the source (connector instance) name
    uri, path              the document's URI (``path`` is an alias), usually with ``prefix``
    title                  the document title
    mime_type              the document's media type
    modified               the document's modified time (datetimes; dates are midnight UTC)
    document_id            the document id
    <key>, metadata.<key>  any document metadata key, e.g. ``attr.department`` (sidecar
                           attributes) or ``link``; ``metadata.<key>`` reaches a key that is
                           spelled like a built-in field

Semantics are two-valued: a document without the field fails every comparison on it, and
``not`` negates (``attr.team != "x"`` keeps documents that have no ``attr.team``). Built-in
fields are text (``modified`` a time). Metadata values compare by the literal's type: a string
(or ``true``/``false``) compares with the value's text (numbers as JSON writes them, booleans as
``true``/``false``); a number compares numerically with numeric values only (as 64-bit floats).
Strings order by code point, times at millisecond precision. Values longer than
``MAX_VALUE_CHARS`` characters, keys with control characters and null values are not
filterable (a document holding one has no such field).

Text syntax (``parse_filter``)::

    source = "handbook" and modified >= "2026-01-01"
    not (attr.team in ["hr", "legal"]) or path startswith "public/"

with ``and``/``or``/``not``, parentheses, ``= != < <= > >=``, ``in [..]``, ``not in [..]``,
``startswith``/``prefix``; strings in double or single quotes (backslash escapes ``\\"``,
``\\'``, ``\\\\``), numbers, ``true``/``false``. ``where(["key=value", ...])`` is the repeated
``--where`` form: equalities on strings, all AND-ed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from rag.errors import FilterError
from rag.models import Chunk, MetadataValue, epoch_ms

Scalar = str | int | float | bool
"""A value a filter compares with; ``modified`` takes datetimes (or ISO strings, parsed)."""
Value = Scalar | datetime

MAX_VALUES: Final = 1024
MAX_NODES: Final = 512
MAX_DEPTH: Final = 32
MAX_KEY_CHARS: Final = 256
MAX_VALUE_CHARS: Final = 4096

BUILTIN_FIELDS: Final = frozenset(
    {"source", "uri", "path", "title", "mime_type", "modified", "document_id"}
)
_ALIASES: Final = {"path": "uri"}
_RESERVED: Final = frozenset(
    {
        "allow",
        "deny",
        "principals",
        "vector",
        "embedding",
        "id",
        "chunk_id",
        "text",
        "citation",
        "metadata",
        "ordinal",
        "token_count",
        "score",
    }
)
_METADATA_PREFIX: Final = "metadata."
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class FieldRef:
    """What a filter field name refers to: a built-in document field, or a metadata key."""

    kind: Literal["builtin", "metadata"]
    name: str


def resolve_field(name: str) -> FieldRef:
    """The field ``name`` refers to; a FilterError for the ACL, internal or malformed names.

    ``acl*``, ``_*`` and internal names (``allow``, ``deny``, ``vector``, ``text``…) are refused
    whatever their case; metadata keys live in their own namespace in every store, so even
    ``metadata.allow`` can only ever reach a metadata key.
    """
    if not isinstance(name, str) or not name:
        raise FilterError("a filter field must be a non-empty string")
    if len(name) > MAX_KEY_CHARS or _CONTROL.search(name):
        raise FilterError(f"filter field {name[:40]!r} is too long or has control characters")
    if name.startswith(_METADATA_PREFIX):
        key = name[len(_METADATA_PREFIX) :]
        if not key:
            raise FilterError("filter field 'metadata.' names no metadata key")
        return FieldRef("metadata", key)
    folded = name.lower()
    if folded.startswith(("acl", "_")) or folded in _RESERVED:
        raise FilterError(
            f"cannot filter on {name!r}: access control and internal fields are not filterable"
        )
    if name in BUILTIN_FIELDS:
        return FieldRef("builtin", _ALIASES.get(name, name))
    return FieldRef("metadata", name)


def _checked_value(field: str, value: Any) -> Value:
    ref = resolve_field(field)
    if isinstance(value, datetime) or ref == FieldRef("builtin", "modified"):
        return _as_datetime(field, value)
    if ref.kind == "builtin" and not isinstance(value, str):
        raise FilterError(f"{field!r} is a text field: compare it with a quoted string")
    if isinstance(value, str):
        if "\x00" in value or not _encodable(value):
            raise FilterError(f"filter value for {field!r} is not valid text")
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if not _finite(value):
            raise FilterError(f"filter value for {field!r} must be a finite number, not {value}")
        return value
    raise FilterError(f"filter value for {field!r} must be a string, number or boolean")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no store can hold it
        return False
    return True


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _as_datetime(field: str, value: Any) -> datetime:
    """A timezone-aware datetime (naive ones and dates are UTC)."""
    if resolve_field(field) != FieldRef("builtin", "modified"):
        raise FilterError(f"{field!r} is not a time field; compare it with a string or number")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise FilterError(f"{field!r} takes an ISO 8601 date or time, not {value!r}") from exc
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, datetime):
        raise FilterError(f"{field!r} takes an ISO 8601 date or time, not {value!r}")
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _family(value: Value) -> str:
    if isinstance(value, datetime):
        return "time"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "string"


class _Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def __and__(self, other: Filter) -> And:
        return And([self, other])

    def __or__(self, other: Filter) -> Or:
        return Or([self, other])

    def __invert__(self) -> Not:
        return Not(self)

    def __str__(self) -> str:
        return render(self)  # type: ignore[arg-type]


class _Leaf(_Node):
    field: str

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("field"), str):
            return data  # pydantic reports the missing or mistyped field
        resolve_field(data["field"])
        return cls._check_values(data["field"], dict(data))

    @classmethod
    def _check_values(cls, field: str, data: dict[str, Any]) -> dict[str, Any]:
        return data


class Eq(_Leaf):
    """``field = value``."""

    op: Literal["eq"] = "eq"
    value: Value

    def __init__(self, field: str, value: Any, **data: Any) -> None:
        _construct(super().__init__, field=field, value=value, **data)

    @classmethod
    def _check_values(cls, field: str, data: dict[str, Any]) -> dict[str, Any]:
        if "value" in data:
            data["value"] = _checked_value(field, data["value"])
        return data


class In(_Leaf):
    """``field in [values]``: equal to one of them."""

    op: Literal["in"] = "in"
    values: tuple[Value, ...] = Field(min_length=1, max_length=MAX_VALUES)

    def __init__(self, field: str, values: Any, **data: Any) -> None:
        _construct(super().__init__, field=field, values=values, **data)

    @classmethod
    def _check_values(cls, field: str, data: dict[str, Any]) -> dict[str, Any]:
        values = data.get("values")
        if isinstance(values, str | bytes) or not isinstance(
            values, list | tuple | set | frozenset
        ):
            raise FilterError(f"'in' on {field!r} takes a list of values")
        if len(values) > MAX_VALUES:
            raise FilterError(f"'in' on {field!r} takes at most {MAX_VALUES} values")
        data["values"] = tuple(_checked_value(field, v) for v in values)
        return data


class Range(_Leaf):
    """``field`` within bounds (``gt``/``gte`` below, ``lt``/``lte`` above; at least one)."""

    op: Literal["range"] = "range"
    gt: Value | None = None
    gte: Value | None = None
    lt: Value | None = None
    lte: Value | None = None

    def __init__(
        self,
        field: str,
        *,
        gt: Any = None,
        gte: Any = None,
        lt: Any = None,
        lte: Any = None,
        **data: Any,
    ) -> None:
        _construct(super().__init__, field=field, gt=gt, gte=gte, lt=lt, lte=lte, **data)

    @classmethod
    def _check_values(cls, field: str, data: dict[str, Any]) -> dict[str, Any]:
        checked = {
            k: _checked_value(field, data[k])
            for k in ("gt", "gte", "lt", "lte")
            if data.get(k) is not None
        }
        if not checked:
            raise FilterError(f"a range on {field!r} needs a bound (gt, gte, lt or lte)")
        if {"gt", "gte"} <= checked.keys() or {"lt", "lte"} <= checked.keys():
            raise FilterError(f"a range on {field!r} takes one lower and one upper bound")
        families = {_family(v) for v in checked.values()}
        if len(families) > 1 or "bool" in families:
            raise FilterError(f"a range on {field!r} compares strings, numbers or times")
        return {**data, **checked}

    def bounds(self) -> dict[str, Value]:
        """The bounds that are set, by operator name."""
        items = {"gt": self.gt, "gte": self.gte, "lt": self.lt, "lte": self.lte}
        return {k: v for k, v in items.items() if v is not None}


class Prefix(_Leaf):
    """``field startswith value`` (strings)."""

    op: Literal["prefix"] = "prefix"
    value: str

    def __init__(self, field: str, value: Any, **data: Any) -> None:
        _construct(super().__init__, field=field, value=value, **data)

    @classmethod
    def _check_values(cls, field: str, data: dict[str, Any]) -> dict[str, Any]:
        value = data.get("value")
        if not isinstance(value, str) or resolve_field(field) == FieldRef("builtin", "modified"):
            raise FilterError(f"a prefix on {field!r} takes a string on a text field")
        _checked_value(field, value)
        return data


class And(_Node):
    """Every filter holds."""

    op: Literal["and"] = "and"
    filters: tuple[Filter, ...] = Field(min_length=1)

    def __init__(self, filters: Any, **data: Any) -> None:
        _construct(super().__init__, filters=tuple(filters), **data)


class Or(_Node):
    """At least one filter holds."""

    op: Literal["or"] = "or"
    filters: tuple[Filter, ...] = Field(min_length=1)

    def __init__(self, filters: Any, **data: Any) -> None:
        _construct(super().__init__, filters=tuple(filters), **data)


class Not(_Node):
    """The filter does not hold."""

    op: Literal["not"] = "not"
    filter: Filter

    def __init__(self, filter: Any, **data: Any) -> None:
        _construct(super().__init__, filter=filter, **data)


Filter = Annotated[Eq | In | Range | Prefix | And | Or | Not, Field(discriminator="op")]
"""A metadata filter (a discriminated union on ``op``; JSON round-trips via ``model_dump``)."""

for _model in (And, Or, Not):
    _model.model_rebuild()
_ADAPTER: Final[TypeAdapter[Filter]] = TypeAdapter(Filter)


def _construct(init: Any, **data: Any) -> None:
    try:
        init(**data)
    except ValidationError as exc:
        raise _filter_error(exc) from exc


def _filter_error(exc: ValidationError) -> FilterError:
    """Our own FilterError where a validator raised one; else the first error, described."""
    first = exc.errors()[0]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, FilterError):
        return cause
    where = ".".join(str(p) for p in first.get("loc", ()))
    msg = first.get("msg", "invalid")
    return FilterError(f"invalid filter: {where}: {msg}" if where else f"invalid filter: {msg}")
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg"))


def filter_from_json(data: Any) -> Filter:
    """A filter from its JSON form (``model_dump(mode="json")``); FilterError if invalid."""
    try:
        result = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise _filter_error(exc) from exc
    check_size(result)
    return result


def check_size(node: Filter) -> None:
    """FilterError if the filter nests deeper than MAX_DEPTH or has more than MAX_NODES."""
    count = 0
    stack: list[tuple[Filter, int]] = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH or count > MAX_NODES:
            raise FilterError(f"filter too large: at most {MAX_DEPTH} levels and {MAX_NODES} terms")
        if isinstance(current, And | Or):
            stack.extend((child, depth + 1) for child in current.filters)
        elif isinstance(current, Not):
            stack.append((current.filter, depth + 1))


def all_of(*filters: Filter | None) -> Filter | None:
    """The conjunction of the filters given (None entries skipped; None if none are left)."""
    present = [f for f in filters if f is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    result = And(present)
    check_size(result)
    return result


def where(pairs: list[str] | tuple[str, ...]) -> Filter | None:
    """``["key=value", ...]`` (repeated ``--where``) as AND-ed string equalities; None if empty.

    The value is everything after the first ``=`` (no quotes needed), and like the key stripped of
    surrounding whitespace; a ``modified`` value is parsed as an ISO date or time.
    """
    leaves: list[Filter] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise FilterError(f"--where takes key=value, not {pair!r}")
        leaves.append(Eq(key.strip(), value.strip()))
    return all_of(*leaves)


# -- the text syntax ---------------------------------------------------------------------------

_TOKEN: Final = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<number>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.:/-]))
  | (?P<op><=|>=|!=|==|=|<|>)
  | (?P<punct>[()\[\],])
  | (?P<name>[A-Za-z_][\w.:/-]*)
    """,
    re.VERBOSE,
)
_KEYWORDS: Final = frozenset({"and", "or", "not", "in", "startswith", "prefix", "true", "false"})
_ESCAPE: Final = re.compile(r"\\(.)", re.DOTALL)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    at: int


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    at = 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            raise FilterError(f"unexpected {text[at : at + 10]!r} at column {at + 1}: {text!r}")
        kind = match.lastgroup or ""
        if kind != "ws":
            word = match.group()
            if kind == "name" and word.lower() in _KEYWORDS:
                kind, word = "keyword", word.lower()
            out.append(_Token(kind, word, at))
        at = match.end()
    out.append(_Token("end", "", len(text)))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self._text = text
        self._tokens = _tokens(text)
        self._i = 0
        self._depth = 0
        self._leaves = 0

    def _peek(self) -> _Token:
        return self._tokens[self._i]

    def _next(self) -> _Token:
        token = self._tokens[self._i]
        self._i += 1
        return token

    def _fail(self, what: str, token: _Token | None = None) -> FilterError:
        token = token or self._peek()
        found = repr(token.text) if token.kind != "end" else "the end"
        return FilterError(f"{what} at column {token.at + 1}, found {found}: {self._text!r}")

    def _accept(self, kind: str, text: str | None = None) -> bool:
        token = self._peek()
        if token.kind == kind and (text is None or token.text == text):
            self._i += 1
            return True
        return False

    def parse(self) -> Filter:
        result = self._or()
        if self._peek().kind != "end":
            raise self._fail("expected 'and', 'or' or the end")
        return result

    def _or(self) -> Filter:
        parts = [self._and()]
        while self._accept("keyword", "or"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else Or(parts)

    def _and(self) -> Filter:
        parts = [self._unary()]
        while self._accept("keyword", "and"):
            parts.append(self._unary())
        return parts[0] if len(parts) == 1 else And(parts)

    def _unary(self) -> Filter:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise self._fail(f"filter nested deeper than {MAX_DEPTH} levels")
        try:
            if self._accept("keyword", "not"):
                return Not(self._unary())
            if self._accept("punct", "("):
                inner = self._or()
                if not self._accept("punct", ")"):
                    raise self._fail("expected ')'")
                return inner
            return self._comparison()
        finally:
            self._depth -= 1

    def _comparison(self) -> Filter:
        self._leaves += 1
        if self._leaves > MAX_NODES // 2:
            raise self._fail(f"filter too large: more than {MAX_NODES // 2} comparisons")
        token = self._next()
        if token.kind not in ("name", "string"):
            raise self._fail("expected a field name", token)
        field = _unquote(token.text) if token.kind == "string" else token.text
        op = self._next()
        if op.kind == "op":
            value = self._value()
            return _compare(field, op.text, value)
        if op.kind == "keyword" and op.text in ("startswith", "prefix"):
            value_token = self._peek()
            value = self._value()
            if not isinstance(value, str):
                raise self._fail(f"'{op.text}' takes a string", value_token)
            return Prefix(field, value)
        if op.kind == "keyword" and op.text == "in":
            return In(field, self._list())
        if op.kind == "keyword" and op.text == "not" and self._accept("keyword", "in"):
            return Not(In(field, self._list()))
        raise self._fail(f"expected an operator after {field!r}", op)

    def _list(self) -> list[Scalar]:
        if not self._accept("punct", "["):
            raise self._fail("expected '['")
        values = [self._value()]
        while self._accept("punct", ","):
            if self._peek().text == "]":
                break
            values.append(self._value())
        if not self._accept("punct", "]"):
            raise self._fail("expected ',' or ']'")
        return values

    def _value(self) -> Scalar:
        token = self._next()
        if token.kind == "string":
            return _unquote(token.text)
        if token.kind == "number":
            number = float(token.text)
            if re.fullmatch(r"[-+]?\d+", token.text):
                return int(token.text)
            return number
        if token.kind == "keyword" and token.text in ("true", "false"):
            return token.text == "true"
        raise self._fail("expected a value (a quoted string, a number, true or false)", token)


def _unquote(text: str) -> str:
    return _ESCAPE.sub(lambda m: m.group(1), text[1:-1])


def _compare(field: str, op: str, value: Scalar) -> Filter:
    if op in ("=", "=="):
        return Eq(field, value)
    if op == "!=":
        return Not(Eq(field, value))
    bound = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}[op]
    return Range(field, **{bound: value})


def parse_filter(text: str) -> Filter:
    """The filter a text expression denotes (see the module docstring for the syntax)."""
    if not text or not text.strip():
        raise FilterError("empty filter expression")
    if len(text) > 16_384:
        raise FilterError("filter expression longer than 16,384 characters")
    result = _Parser(text).parse()
    check_size(result)
    return result


def render(node: Filter) -> str:
    """The text syntax of a filter; ``parse_filter(render(f)) == f`` for filters without
    nested single-child groups."""
    if isinstance(node, Eq):
        return f"{_name(node.field)} = {_literal(node.value)}"
    if isinstance(node, In):
        return f"{_name(node.field)} in [{', '.join(_literal(v) for v in node.values)}]"
    if isinstance(node, Prefix):
        return f"{_name(node.field)} startswith {_literal(node.value)}"
    if isinstance(node, Range):
        ops = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
        parts = [f"{_name(node.field)} {ops[k]} {_literal(v)}" for k, v in node.bounds().items()]
        return parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")"
    if isinstance(node, Not):
        return f"not ({render(node.filter)})"
    joiner = " and " if isinstance(node, And) else " or "
    return "(" + joiner.join(render(child) for child in node.filters) + ")"


def _name(field: str) -> str:
    if re.fullmatch(r"[A-Za-z_][\w.:/-]*", field) and field.lower() not in _KEYWORDS:
        return field
    return _literal(field)


def _literal(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return '"' + value.isoformat() + '"'
    if isinstance(value, int | float):
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- what a chunk offers to filters, and the reference semantics ------------------------------


@dataclass(frozen=True)
class FilterView:
    """The filterable fields of one chunk, as every store indexes them (one definition, so the
    stores agree). ``strings`` holds each metadata value's text, ``numbers`` the numeric ones."""

    source: str
    document_id: str
    uri: str | None
    title: str | None
    mime_type: str | None
    modified_ms: int | None
    strings: dict[str, str]
    numbers: dict[str, float]

    def builtin(self, name: str) -> str | int | None:
        value: str | int | None = getattr(self, "modified_ms" if name == "modified" else name)
        return value


def value_text(value: MetadataValue) -> str | None:
    """A metadata value's text as filters compare it (None: not filterable)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(float(value) if isinstance(value, float) else value)
    if isinstance(value, str) and len(value) <= MAX_VALUE_CHARS and "\x00" not in value:
        return value if _encodable(value) else None
    return None


def filter_view(chunk: Chunk) -> FilterView:
    """The filterable fields of ``chunk``: built-ins from its citation and its ``mime_type`` and
    ``modified`` (ISO 8601) metadata, every filterable metadata key by text and by number."""
    strings: dict[str, str] = {}
    numbers: dict[str, float] = {}
    for key, value in chunk.metadata.items():
        if len(key) > MAX_KEY_CHARS or _CONTROL.search(key) or not _encodable(key):
            continue
        text = value_text(value)
        if text is None:
            continue
        strings[key] = text
        if isinstance(value, int | float) and not isinstance(value, bool) and _finite(value):
            numbers[key] = float(value)
    return FilterView(
        source=chunk.source,
        document_id=chunk.document_id,
        uri=_short(chunk.citation.uri),
        title=_short(chunk.citation.title),
        mime_type=_short(chunk.metadata.get("mime_type")),
        modified_ms=_modified_ms(chunk.metadata.get("modified")),
        strings=strings,
        numbers=numbers,
    )


def _short(value: MetadataValue) -> str | None:
    return value_text(value) if isinstance(value, str) else None


def _modified_ms(value: MetadataValue) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return epoch_ms(at if at.tzinfo is not None else at.replace(tzinfo=UTC))


def time_ms(value: Value) -> int:
    """A filter's time value in epoch milliseconds, as stores compare ``modified``."""
    assert isinstance(value, datetime)
    return epoch_ms(value)


def matches(node: Filter, view: FilterView) -> bool:
    """Whether a chunk with ``view`` passes ``node``: the reference semantics every store's
    compiled filter must agree with (tests compare them)."""
    if isinstance(node, And):
        return all(matches(child, view) for child in node.filters)
    if isinstance(node, Or):
        return any(matches(child, view) for child in node.filters)
    if isinstance(node, Not):
        return not matches(node.filter, view)
    ref = resolve_field(node.field)
    if isinstance(node, Eq):
        return _holds(ref, view, node.value, lambda a, b: a == b)
    if isinstance(node, In):
        return any(_holds(ref, view, v, lambda a, b: a == b) for v in node.values)
    if isinstance(node, Prefix):
        return _holds(ref, view, node.value, lambda a, b: isinstance(a, str) and a.startswith(b))
    checks = {
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
    }
    return all(_holds(ref, view, v, checks[op]) for op, v in node.bounds().items())


def _holds(ref: FieldRef, view: FilterView, value: Value, test: Any) -> bool:
    field: str | int | float | None
    if ref.kind == "builtin":
        field = view.builtin(ref.name)
        target: Any = time_ms(value) if ref.name == "modified" else value
    elif isinstance(value, bool):
        field, target = view.strings.get(ref.name), "true" if value else "false"
    elif isinstance(value, int | float):
        field, target = view.numbers.get(ref.name), float(value)
    else:
        field, target = view.strings.get(ref.name), value
    return field is not None and bool(test(field, target))


__all__ = [
    "And",
    "Eq",
    "FieldRef",
    "Filter",
    "FilterView",
    "In",
    "Not",
    "Or",
    "Prefix",
    "Range",
    "all_of",
    "filter_from_json",
    "filter_view",
    "matches",
    "parse_filter",
    "render",
    "resolve_field",
    "where",
]
