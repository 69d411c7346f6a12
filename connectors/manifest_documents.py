"""From a manifest's records to the documents it lists (see ``connectors.manifest``): each
entry's ACL and label, built as a folder policy's rule is, its metadata, MIME type and content
hash; and the hidden document of each record that is broken (``acl_error``: where and why).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from connectors.manifest_content import HIDDEN, ContentReader, Http
from connectors.manifest_lines import Entry, Record, describe, uri_of
from connectors.policy import PolicyReader, RawRule
from rag.errors import PolicyError
from rag.models import Acl, SourceDocument, stable_hash
from rag.parsing import mime_type_for


@dataclass(frozen=True)
class _AclOf:
    """The ACL and label of one combination of ACL keys, with its problems (not yet naming a
    line): the dropped allow entries, or the invalid deny entry that hides the document."""

    acl: Acl | None
    label: str | None
    dropped: tuple[str, ...] = ()
    error: str | None = None


@dataclass
class Listed:
    """What a listing has found so far."""

    documents: list[SourceDocument] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    policy_errors: list[str] = field(default_factory=list)
    acls: dict[tuple[Any, ...], _AclOf] = field(default_factory=dict)  # by the keys as given


class _LineReader(PolicyReader):
    """A policy reader for one manifest line: every problem it names is on that line."""

    def __init__(self, origin: str, line: int, case_sensitive: bool) -> None:
        super().__init__(origin, "", case_sensitive)
        self._line = line

    def line_of(self, needle: Any, key: str | None = None) -> int | str:
        return self._line


class DocumentBuilder:
    """Makes the documents of the source ``name``. Construction does no I/O."""

    def __init__(self, name: str, case_sensitive: bool, content: ContentReader) -> None:
        self._name = name
        self._case_sensitive = case_sensitive
        self._content = content

    def document(
        self, record: Record, default_at: datetime, http: Http, listed: Listed
    ) -> SourceDocument:
        """The document of ``record`` (hidden when it is broken), its problems noted in
        ``listed``."""
        if record.entry is None:
            listed.policy_errors.append(f"{record.where()}: {record.error}")
            return self.hidden(record, default_at)
        try:
            entry = record.model or Entry.model_validate(record.entry)
        except ValidationError as exc:
            return self._hidden_because(record, describe(exc), default_at, listed)
        rules = self._acl(entry, listed.acls)
        if rules.error is not None or rules.acl is None:
            return self._hidden_because(record, str(rules.error), default_at, listed)
        listed.policy_errors.extend(f"{record.where()}: {p}" for p in rules.dropped)
        acl, label = rules.acl, rules.label
        content_hash, size, file_at = self._content.listed_hash(entry, http)
        uri = entry.uri or entry.id
        metadata: dict[str, str | int | float | bool | None] = {}
        if urlsplit(uri).scheme in ("http", "https"):
            metadata["link"] = uri
        metadata.update(entry.metadata)
        metadata["manifest_id"] = entry.id
        return SourceDocument(
            source=self._name,
            id=stable_hash(self._name, entry.id),
            uri=uri,
            title=entry.title or entry.id,
            mime_type=_mime_type(entry, uri),
            content_hash=content_hash,
            size_bytes=size,
            modified_at=entry.modified_at or file_at or default_at,
            acl=acl,
            classification=label,
            metadata=metadata,
        )

    def _hidden_because(
        self, record: Record, reason: str, default_at: datetime, listed: Listed
    ) -> SourceDocument:
        hidden = Record(record.id, record.line, record.origin, error=reason, uri=uri_of(record))
        listed.policy_errors.append(f"{record.where()}: {reason}")
        return self.hidden(hidden, default_at)

    def hidden(self, record: Record, default_at: datetime) -> SourceDocument:
        """The document of a record that has no entry, hidden with its error."""
        message = f"{record.where()}: {record.error}"
        return SourceDocument(
            source=self._name,
            id=stable_hash(self._name, record.id),
            uri=record.uri or record.id,
            title=record.id,
            mime_type="text/plain",
            content_hash=HIDDEN + stable_hash(message, length=16),
            size_bytes=0,
            modified_at=default_at,
            acl=None,
            acl_error=f"manifest error: {message}",
            metadata={"manifest_id": record.id},
        )

    def _acl(self, entry: Entry, known: dict[tuple[Any, ...], _AclOf]) -> _AclOf:
        """The entry's ACL and label, built as a folder policy's rule is (with no parent): an
        invalid allow entry is dropped, an invalid deny entry hides the document. Worked out
        once per combination of keys in a listing (a manifest repeats its groups)."""
        key = (tuple(entry.allow), tuple(entry.deny), entry.public, entry.classification)
        if key in known:
            return known[key]
        reader = _LineReader("", 0, self._case_sensitive)
        where = f"{reader.rel}: line 0: "
        raw = RawRule(
            allow=entry.allow,
            deny=entry.deny,
            public=entry.public,
            classification=entry.classification,
        )
        try:
            rule = reader.rule(raw, "")
        except PolicyError as exc:
            result = _AclOf(None, None, error=str(exc).removeprefix(where))
        else:
            # the principals are canonical already (canonical_principal, deny_forms)
            acl = Acl.model_construct(allow=rule.allow, deny=rule.deny)
            dropped = tuple(w.removeprefix(where) for w in reader.warnings)
            result = _AclOf(acl, rule.label, dropped)
        known[key] = result
        return result


def _mime_type(entry: Entry, uri: str) -> str:
    if entry.mime_type:
        return entry.mime_type.lower()
    named = entry.path or (urlsplit(entry.url).path if entry.url else None)
    found = (mime_type_for(named) if named else None) or mime_type_for(urlsplit(uri).path)
    return found or ("text/plain" if entry.text is not None else "application/octet-stream")
