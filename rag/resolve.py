"""From a caller to principals: a verified token or a trusted id, expanded by the directory.

At query time a user's principals are the user (and every alias the directory knows for them,
so a token carrying only an ``oid`` reads documents whose ACL names the user's e-mail), their
groups from the token, and their transitive groups from the synced directory, as
``RAG_DIRECTORY__GROUP_SOURCE`` says (``token``, ``directory`` or ``both``). A user removed from
a group in the directory loses what it gave them at the next directory sync, with no re-ingest.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rag.config import Settings
from rag.errors import ConfigurationError
from rag.identity import UserContext

if TYPE_CHECKING:
    from rag.auth import TokenVerifier
    from rag.directory.store import DirectoryStore

log = logging.getLogger(__name__)


class IdentityResolver:
    """Construction does no I/O: keys and the directory are read on first use."""

    def __init__(
        self,
        settings: Settings,
        *,
        verifier: TokenVerifier | None = None,
        directory: DirectoryStore | None = None,
    ) -> None:
        self._group_source = settings.directory.group_source
        self._verifier = verifier
        self._directory = directory
        if self._directory is None and settings.directory.backend != "none":
            from rag.directory import open_directory

            self._directory = open_directory(settings)
        if self._directory is None and self._group_source == "directory":
            raise ConfigurationError(
                "directory.group_source is 'directory' but no directory is configured "
                "(RAG_DIRECTORY__BACKEND)"
            )
        self._settings = settings

    @classmethod
    def from_settings(cls, settings: Settings) -> IdentityResolver:
        return cls(settings)

    @property
    def expands(self) -> bool:
        """Whether contexts gain anything here (a directory is configured)."""
        return self._directory is not None

    def from_token(self, token: str) -> UserContext:
        """Verify a bearer token (AuthenticationError if it proves nothing) and expand it."""
        if self._verifier is None:
            from rag.auth import TokenVerifier

            self._verifier = TokenVerifier.from_settings(self._settings)
        identity = self._verifier.verify(token)
        return self.expand(identity.context(), overage=identity.claims_overage)

    def expand(self, context: UserContext, *, overage: bool = False) -> UserContext:
        """``context`` with the directory's aliases and groups, per the group source. A token
        whose groups overflowed (Entra overage) takes its groups from the directory."""
        if context.expanded:
            return context
        use_token = self._group_source in ("token", "both")
        if self._directory is None:
            if overage:
                log.warning(
                    "token of %s lists no groups (overage) and no directory is configured: "
                    "searching with the user's own principals only",
                    context.user_id,
                )
            return context.model_copy(update={"expanded": True})
        resolved = self._directory.resolve(context.user_id)
        groups: set[str] = set(context.groups) if use_token else set()
        if self._group_source in ("directory", "both") or overage:
            groups |= resolved.group_names
        aliases = (set(resolved.aliases) | {resolved.user_id}) if resolved.found else set()
        return UserContext(
            user_id=context.user_id,
            groups=frozenset(groups),
            aliases=frozenset(aliases),
            issuer=context.issuer,
            subject=context.subject,
            expanded=True,
        )
