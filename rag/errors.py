"""The exception hierarchy of the project. Every error we raise is one of these.

    RagError
    ├── ConfigurationError        settings are missing or contradict each other
    ├── InvalidRequestError       a request out of bounds (k <= 0, k too large); a ValueError
    │   └── FilterError           a metadata filter that does not parse or names a bad field
    ├── AccessDeniedError         no identity, or an identity we refuse to search for
    │   ├── InvalidPrincipalError an id or principal that is not valid (empty, control chars)
    │   └── AuthenticationError   a bearer token that does not prove who the caller is
    ├── MissingAclError           a document arrived without an ACL and is not explicitly public
    │   └── PolicyError           the policy that gives its ACL is broken (it is hidden)
    ├── DocumentError             one source document cannot be ingested (it is quarantined)
    │   ├── UnsupportedFormatError
    │   ├── ParseError
    │   ├── EmptyDocumentError
    │   ├── EncryptedDocumentError
    │   ├── DocumentTooLargeError
    │   └── ClassificationBlockedError its label may not reach this embedder
    ├── EmbeddingError            the embedding backend failed
    │   └── EmbeddingMismatchError an index was built with another model or dimension
    ├── StoreError                the vector store failed
    │   └── IndexNotFoundError    a read found nothing ingested (and created nothing)
    ├── ConnectorError            a source could not be listed or read
    ├── AuditError                the audit trail could not be written or read
    └── DirectoryError            the group directory (LDAP, SCIM) could not be read or synced

Third-party errors are translated at the boundary with ``raise ... from``.
"""

from __future__ import annotations


class RagError(Exception):
    """Base class of every error this project raises."""


class ConfigurationError(RagError):
    """Settings are missing, invalid, or contradict each other."""


class InvalidRequestError(RagError, ValueError):
    """A request with arguments out of bounds, e.g. a search for ``k <= 0`` results."""


class FilterError(InvalidRequestError):
    """A metadata filter that does not parse or names a field that cannot be filtered on (the
    ACL and internal fields never can); the message says where and why."""


class AccessDeniedError(RagError):
    """A search without an identity, or for an identity we refuse to search for."""


class InvalidPrincipalError(AccessDeniedError):
    """A principal or id that is not valid (see ``rag.identity``). Deliberately not a
    ``ValueError``: pydantic passes it through unwrapped, so callers never see a raw
    ``ValidationError`` for an identity."""


class AuthenticationError(AccessDeniedError):
    """A bearer token that could not be verified (signature, issuer, audience, expiry, keys or
    claims); the message says why and never echoes the token."""


class MissingAclError(RagError):
    """A document without an ACL that is not explicitly public: it is never indexed."""


class PolicyError(MissingAclError):
    """A source's permission policy is broken (malformed, or naming what does not exist): the
    documents it governs are hidden, and the message names the file, line and bad value."""


class DocumentError(RagError):
    """One source document cannot be ingested; the pipeline quarantines it and goes on."""

    reason_code = "error"


class UnsupportedFormatError(DocumentError):
    reason_code = "unsupported_format"


class ParseError(DocumentError):
    reason_code = "parse_error"


class ParseTimeoutError(DocumentError):
    reason_code = "parse_timeout"


class EmptyDocumentError(DocumentError):
    reason_code = "empty"


class EncryptedDocumentError(DocumentError):
    reason_code = "encrypted"


class DocumentTooLargeError(DocumentError):
    reason_code = "too_large"


class ClassificationBlockedError(DocumentError):
    """The document's classification may not be sent to the configured embedder."""

    reason_code = "classification_blocked"


class EmbeddingError(RagError):
    """The embedding backend failed."""


class EmbeddingMismatchError(EmbeddingError):
    """The index was built with another embedding model or dimension."""


class StoreError(RagError):
    """The vector store failed."""


class IndexNotFoundError(StoreError):
    """A read (search, count) found no index: nothing was ingested there. Reads create nothing."""


class AuditError(RagError):
    """An audit record could not be written or read (a retrieval fails with it by default)."""


class ConnectorError(RagError):
    """A source could not be listed or read."""


class DirectoryError(RagError):
    """The group directory (LDAP, SCIM) could not be read or synced; the stored one is unchanged."""
