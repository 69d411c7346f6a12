"""The ``options`` of an ``s3`` source, checked one by one (read by
:func:`connectors.s3.from_options`; see :mod:`connectors.s3` for what each does)."""

from __future__ import annotations

from typing import Any, Final

from rag.errors import ConfigurationError

OPTIONS: Final = frozenset(
    {
        "url",
        "bucket",
        "prefix",
        "endpoint_url",
        "region",
        "profile",
        "page_size",
        "max_object_bytes",
        "case_sensitive_ids",
        "max_concurrency",
        "max_attempts",
    }
)
"""Every option an ``s3`` source may have."""


def text(name: str, options: dict[str, Any], key: str) -> str | None:
    """The option as a string, or None when it is not given."""
    value = options.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(f"source {name}: option {key} must be a string, got {value!r}")
    return value


def number(name: str, options: dict[str, Any], key: str, default: Any) -> Any:
    """The option as an integer (never a bool), or ``default`` when it is not given."""
    value = options.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigurationError(f"source {name}: option {key} must be an integer, got {value!r}")
    return value


def flag(name: str, options: dict[str, Any], key: str) -> bool:
    """The option as a bool (false when it is not given)."""
    value = options.get(key, False)
    if not isinstance(value, bool):
        raise ConfigurationError(f"source {name}: option {key} must be true or false")
    return value
