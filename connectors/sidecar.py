"""Metadata sidecars in the Amazon Bedrock Knowledge Base format, with our ACL keys beside them.

An object ``report.pdf`` may have a sidecar ``report.pdf.metadata.json`` in the same folder (at
most 10 KiB, UTF-8 JSON)::

    {
      "metadataAttributes": {
        "team": "finance",                      # string, number, boolean, or a list of strings
        "year": 2024,
        "tags": ["q3", "budget"],
        "author": {"value": {"type": "STRING", "stringValue": "Lisa"},
                   "includeForEmbedding": true}  # Bedrock's typed form: STRING, NUMBER,
      },                                         # BOOLEAN or STRING_LIST
      "allow": ["group:finance"],               # our keys: the same as a [files."name"]
      "deny": ["user:mallory"],                 # override of a .rag-acl.toml, applied on top
      "inherit": true,                          # of it (inherit = false drops the allow list
      "public": false,                          # above, never the deny)
      "classification": "confidential"
    }

Bedrock's ``documentStructureConfiguration`` (CSV record layout) is accepted and ignored, as is
``includeForEmbedding`` (this pipeline embeds the text only). Anything else (an unknown key, a
value of another type, an attribute value that is null, NaN or a nested object, a duplicated
key, an invalid deny entry, more than 10 KiB, not UTF-8 JSON) makes the sidecar malformed:
:func:`parse_sidecar` raises :class:`PolicyError` naming the file, line and value, and the
connector lists the object with that error (hidden, quarantined with the reason), never without
its sidecar. An invalid *allow* entry is dropped and reported, as in a policy file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from connectors.policy import PolicyReader, RawRule, Rule
from rag.errors import PolicyError
from rag.identity import shown
from rag.models import MetadataValue, stable_hash

SIDECAR_SUFFIX: Final = ".metadata.json"
MAX_SIDECAR_BYTES: Final = 10 * 1024
"""Bedrock's quota for one metadata file (10 KB)."""
MAX_NAME_CHARS: Final = 256
ATTRIBUTE_PREFIX: Final = "attr."
"""Attributes become document metadata under ``attr.<name>``."""

ACL_KEYS: Final = frozenset(RawRule.model_fields)
_BEDROCK_KEYS: Final = frozenset({"metadataAttributes", "documentStructureConfiguration"})
_TYPED: Final = {
    "STRING": "stringValue",
    "NUMBER": "numberValue",
    "BOOLEAN": "booleanValue",
    "STRING_LIST": "stringListValue",
}

AttributeValue = str | int | float | bool | tuple[str, ...]


@dataclass(frozen=True)
class Sidecar:
    """A parsed sidecar: its attributes, and its ACL rule if it sets any ACL key."""

    attributes: Mapping[str, AttributeValue]
    rule: Rule | None
    warnings: tuple[str, ...] = ()

    def digest(self) -> str:
        """A stable hash of the attributes (not of the ACL keys: an ACL change alone must stay
        an ACL-only update)."""
        canonical = {k: list(v) if isinstance(v, tuple) else v for k, v in self.attributes.items()}
        return stable_hash(json.dumps(canonical, sort_keys=True, ensure_ascii=False))

    def metadata(self) -> dict[str, MetadataValue]:
        """Document metadata: ``attr.<name>`` per attribute; a list of strings is stored as its
        JSON text (document metadata values are scalars)."""
        return {
            f"{ATTRIBUTE_PREFIX}{name}": (
                json.dumps(list(value), ensure_ascii=False) if isinstance(value, tuple) else value
            )
            for name, value in sorted(self.attributes.items())
        }


def sidecar_key(key: str) -> str:
    """The key of the sidecar of the object ``key``."""
    return key + SIDECAR_SUFFIX


def parse_sidecar(rel: str, data: bytes, case_sensitive: bool = False) -> Sidecar:
    """The sidecar ``rel`` (named in messages) from its bytes, or :class:`PolicyError`."""
    if len(data) > MAX_SIDECAR_BYTES:
        raise PolicyError(
            f"{rel}: {len(data)} bytes, over the {MAX_SIDECAR_BYTES}-byte limit of a metadata file"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{rel}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    reader = PolicyReader(rel, text, case_sensitive)
    try:
        document = json.loads(text, object_pairs_hook=_unique, parse_constant=_no_constant)
    except (json.JSONDecodeError, _MalformedError) as exc:
        raise PolicyError(f"{rel}: invalid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise PolicyError(f"{rel}: must hold a JSON object, got {type(document).__name__}")
    unknown = sorted(set(document) - _BEDROCK_KEYS - ACL_KEYS)
    if unknown:
        raise PolicyError(
            f"{rel}: line {reader.line_of(unknown[0])}: unknown key {unknown[0]!r} "
            f"(known: metadataAttributes, documentStructureConfiguration, "
            f"{', '.join(sorted(ACL_KEYS))})"
        )
    structure = document.get("documentStructureConfiguration", {})
    if not isinstance(structure, dict):
        raise PolicyError(f"{rel}: documentStructureConfiguration must be an object")
    attributes = _attributes(reader, document.get("metadataAttributes", {}))
    rule = _rule(reader, {k: v for k, v in document.items() if k in ACL_KEYS})
    return Sidecar(attributes, rule, tuple(reader.warnings))


def _rule(reader: PolicyReader, raw: dict[str, Any]) -> Rule | None:
    if not raw:
        return None
    try:
        parsed = RawRule.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(reader.describe(exc)) from None
    return reader.rule(parsed, "")


def _attributes(reader: PolicyReader, raw: object) -> dict[str, AttributeValue]:
    if not isinstance(raw, dict):
        line = reader.line_of("metadataAttributes")
        raise PolicyError(f"{reader.rel}: line {line}: metadataAttributes must be an object")
    out: dict[str, AttributeValue] = {}
    for name, value in raw.items():
        if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise PolicyError(
                f"{reader.rel}: line {reader.line_of(name)}: attribute name {shown(name, 40)} must "
                f"be 1 to {MAX_NAME_CHARS} printable characters"
            )
        try:
            out[name] = _typed(value) if isinstance(value, dict) else _plain(value)
        except _MalformedError as exc:
            raise PolicyError(
                f"{reader.rel}: line {reader.line_of(name)}: attribute {name!r}: {exc}"
            ) from None
    return out


def _plain(value: object) -> AttributeValue:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise _MalformedError(f"a number must be finite, got {value}")
        return value
    if isinstance(value, list):
        if not value or not all(isinstance(item, str) for item in value):
            raise _MalformedError("a list must hold one or more strings")
        return tuple(value)
    raise _MalformedError(
        f"a value must be a string, number, boolean or list of strings, got {shown(value, 40)}"
    )


def _typed(value: dict[str, Any]) -> AttributeValue:
    """Bedrock's ``{"value": {"type": ..., "<type>Value": ...}, "includeForEmbedding": ...}``."""
    if set(value) - {"value", "includeForEmbedding"} or "value" not in value:
        raise _MalformedError(
            f"an object must be {{'value': {{...}}, 'includeForEmbedding': bool}}, got keys "
            f"{sorted(value)}"
        )
    if not isinstance(value.get("includeForEmbedding", False), bool):
        raise _MalformedError("includeForEmbedding must be true or false")
    inner = value["value"]
    kind = inner.get("type") if isinstance(inner, dict) else None
    if not isinstance(inner, dict) or kind not in _TYPED:
        raise _MalformedError(f"value.type must be one of {sorted(_TYPED)}")
    field = _TYPED[kind]
    if set(inner) != {"type", field}:
        raise _MalformedError(
            f"a {kind} value holds exactly 'type' and {field!r}, got {sorted(inner)}"
        )
    typed = inner[field]
    good = {
        "STRING": isinstance(typed, str),
        "NUMBER": isinstance(typed, int | float) and not isinstance(typed, bool),
        "BOOLEAN": isinstance(typed, bool),
        "STRING_LIST": isinstance(typed, list),
    }[kind]
    if not good:
        raise _MalformedError(f"{field} of a {kind} value cannot be {shown(typed, 40)}")
    return _plain(typed)


class _MalformedError(ValueError):
    """A value the sidecar format does not allow (raised inside parsing, never out of it)."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys appear once: a repeated key could hide the value a reader sees."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _MalformedError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _no_constant(name: str) -> float:
    raise _MalformedError(f"{name} is not a JSON number")
