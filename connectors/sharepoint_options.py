"""The ``options`` of a ``sharepoint`` source, and the client certificate they may name (see
:mod:`connectors.sharepoint` for what each option does)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from connectors.graph import DEFAULT_SCOPE, Credential
from rag.errors import ConfigurationError, InvalidPrincipalError
from rag.identity import canonical_principal


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DriveRef(_Strict):
    """A drive by id (a document library's or a user's OneDrive), and the name its documents'
    URIs start with (default: the drive's name in Graph)."""

    id: str = Field(min_length=1)
    name: str | None = None


class SiteRef(_Strict):
    """A site, by Graph id (``contoso.sharepoint.com,<guid>,<guid>``) or by
    ``<hostname>:/<path>`` (``contoso.sharepoint.com:/sites/eng``): all its document libraries,
    or those named in ``libraries``."""

    site: str = Field(min_length=1)
    name: str | None = None
    libraries: list[str] | None = None


class SharePointOptions(_Strict):
    """The ``options`` of a ``sharepoint`` source (see the module docstring)."""

    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    client_secret_env: str | None = None
    client_certificate_path: Path | None = None
    client_certificate_password_env: str | None = None
    authority_url: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com"
    scope: str = DEFAULT_SCOPE
    ca_bundle: Path | None = None
    sites: list[str | SiteRef] = Field(default_factory=list)
    drives: list[str | DriveRef] = Field(default_factory=list)
    anonymous_links: Literal["public", "ignore"] = "ignore"
    organization_links: str = "ignore"
    principal_property: Literal["upn", "email", "id"] = "upn"
    group_property: Literal["id", "name"] = "id"
    state_dir: Path | None = None
    page_size: int = Field(default=200, ge=1, le=1000)
    max_concurrency: int = Field(default=4, ge=1, le=32)
    max_retries: int = Field(default=5, ge=0, le=20)
    max_retry_after_seconds: float = Field(default=120.0, ge=0)
    timeout_seconds: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> SharePointOptions:
        given = [self.client_secret, self.client_secret_env, self.client_certificate_path]
        if sum(x is not None for x in given) != 1:
            raise ValueError(
                "give exactly one of client_secret, client_secret_env, client_certificate_path"
            )
        if not (self.sites or self.drives):
            raise ValueError("name at least one site (sites) or drive (drives)")
        if self.organization_links not in ("ignore", "public"):
            try:
                canonical_principal(self.organization_links)
            except InvalidPrincipalError as exc:
                raise ValueError(
                    f"organization_links: ignore, public or a principal: {exc}"
                ) from None
        return self

    def site_refs(self) -> list[SiteRef]:
        return [SiteRef(site=s) if isinstance(s, str) else s for s in self.sites]

    def drive_refs(self) -> list[DriveRef]:
        return [DriveRef(id=d) if isinstance(d, str) else d for d in self.drives]


def load_certificate(path: Path, password_env: str | None) -> Credential:
    """MSAL's certificate credential from a PEM file holding the private key and certificate."""
    try:
        text = path.read_text("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the client certificate {path}: {exc}") from exc
    key = re.search(
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", text, re.S
    )
    cert = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
    if key is None or cert is None:
        raise ConfigurationError(f"{path}: a PEM file with a private key and its certificate")
    credential = {"private_key": key.group(0), "public_certificate": cert.group(0)}
    if password_env:
        password = os.environ.get(password_env)
        if password is None:
            raise ConfigurationError(f"the environment variable {password_env} is not set")
        credential["passphrase"] = password
    return credential
