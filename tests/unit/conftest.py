"""Fixtures shared by the unit tests of tokens and of identity resolution."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def idp_server() -> Iterator[Any]:
    """A loopback OIDC provider (discovery + JWKS) for the module's tests."""
    from tests.unit.test_auth import IdP

    server = IdP()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()
