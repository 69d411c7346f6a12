"""LDAP and Active Directory as a DirectorySource (``ldap3``, paged searches).

Users come from ``ldap_user_base_dns`` and groups from ``ldap_group_base_dns``; a group's
members are the DNs in its member attributes (``member``, ``uniqueMember``), users or groups,
with Active Directory's ranged values (``member;range=0-1499``) read to the end. A user's id is
``ldap_user_id_attribute``, a group's its ``cn``; where one is missing or shared, the DN. Binary
``objectSid``/``objectGUID`` values become ``S-1-5-...``/GUID strings. Any failure (connection,
bind, a result other than success) is a DirectoryError: nothing partial is returned.
"""

from __future__ import annotations

import contextlib
import math
import re
import ssl
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import parse_dn

from rag.config import DirectorySettings
from rag.directory.base import (
    DirectoryGroup,
    DirectorySnapshot,
    DirectoryUser,
    Progress,
    canonical_names,
    unique_ids,
)
from rag.errors import ConfigurationError, DirectoryError, InvalidPrincipalError

_PAGED: Final = "1.2.840.113556.1.4.319"
_UID_SUFFIX: Final = re.compile(r"#'[01]*'B$")  # uniqueMember's optional "#'0101'B"
_RANGE: Final = re.compile(r"^range=(\d+)-(\d+|\*)$", re.IGNORECASE)
_MAX_ERRORS: Final = 20

Entry = tuple[str, dict[str, list[bytes]]]
"""(DN, raw attribute values by lower-case attribute name, range options stripped)."""


class LdapDirectory:
    """A DirectorySource over LDAP; connects only in :meth:`snapshot`."""

    def __init__(self, settings: DirectorySettings) -> None:
        if not settings.ldap_user_base_dns:
            raise ConfigurationError("directory.ldap_user_base_dns is required for ldap")
        if settings.ldap_bind_dn and settings.ldap_password is None:
            # an empty password is an unauthenticated bind: anonymous, and a partial directory
            raise ConfigurationError("directory.ldap_password is required with ldap_bind_dn")
        self._s = settings

    @property
    def name(self) -> str:
        return f"ldap:{self._s.ldap_url}"

    def snapshot(self, progress: Progress | None = None) -> DirectorySnapshot:
        """Every user and group; ``progress`` is told the entries read after each page (LDAP
        announces no total: it stays None)."""
        s = self._s
        read = 0

        def paged(entries: int) -> None:
            nonlocal read
            read += entries
            if progress is not None:
                progress(read, None)

        user_attrs = sorted({s.ldap_user_id_attribute, *s.ldap_user_alias_attributes})
        group_attrs = sorted(
            {s.ldap_group_name_attribute, *s.ldap_group_alias_attributes, *s.ldap_member_attributes}
        )
        try:
            conn = self._connect()
            try:
                users = self._search(
                    conn, s.ldap_user_base_dns, s.ldap_user_filter, user_attrs, paged
                )
                group_bases = s.ldap_group_base_dns or s.ldap_user_base_dns
                groups = self._search(conn, group_bases, s.ldap_group_filter, group_attrs, paged)
            finally:
                _close(conn)
        except (LDAPException, OSError) as exc:
            raise DirectoryError(
                f"LDAP directory {s.ldap_url}: {type(exc).__name__}: {exc}"
            ) from exc
        return self._build(users, groups)

    def _connect(self) -> ldap3.Connection:
        s = self._s
        tls = None
        if s.ldap_start_tls or s.ldap_url.lower().startswith("ldaps:"):
            ca = str(s.ldap_ca_certs) if s.ldap_ca_certs else None
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ca)
        timeout = max(1, math.ceil(s.ldap_timeout_seconds))  # ldap3 wants whole seconds
        server = ldap3.Server(
            s.ldap_url.rstrip("/"), get_info=ldap3.NONE, tls=tls, connect_timeout=timeout
        )
        conn = ldap3.Connection(
            server,
            user=s.ldap_bind_dn,
            password=s.ldap_password.get_secret_value() if s.ldap_password else None,
            read_only=True,
            auto_referrals=False,
            receive_timeout=timeout,
            raise_exceptions=False,
        )
        conn.open()
        if s.ldap_start_tls and not conn.start_tls():
            _close(conn)
            raise DirectoryError(f"LDAP StartTLS with {s.ldap_url} failed: {conn.result}")
        if not conn.bind():
            _close(conn)
            raise DirectoryError(
                f"LDAP bind to {s.ldap_url} as {s.ldap_bind_dn or 'anonymous'!r} failed: "
                f"{conn.result.get('description')} {conn.result.get('message') or ''}".rstrip()
            )
        return conn

    def _search(
        self,
        conn: ldap3.Connection,
        bases: Sequence[str],
        filt: str,
        attrs: list[str],
        paged: Callable[[int], None],
    ) -> dict[tuple[Any, ...], Entry]:
        """Every entry under ``bases`` by DN key (overlapping bases give each entry once);
        ``paged(entries)`` after each page."""
        found: dict[tuple[Any, ...], tuple[str, dict[str, list[bytes]]]] = {}
        for base in bases:
            for dn, raw in self._paged(conn, base, filt, attrs, paged):
                found.setdefault(dn_key(dn), (dn, raw))
        return {k: (dn, self._full_ranges(conn, dn, raw)) for k, (dn, raw) in found.items()}

    def _paged(
        self,
        conn: ldap3.Connection,
        base: str,
        filt: str,
        attrs: list[str],
        paged: Callable[[int], None],
    ) -> list[tuple[str, dict[str, list[bytes]]]]:
        entries: list[tuple[str, dict[str, list[bytes]]]] = []
        cookie: bytes | None = None
        while True:
            conn.search(
                base,
                filt,
                ldap3.SUBTREE,
                attributes=attrs,
                paged_size=self._s.ldap_page_size,
                paged_cookie=cookie,
            )
            _check(conn, f"search of {base!r} for {filt!r}")
            before = len(entries)
            for item in conn.response or ():
                if item.get("type") == "searchResEntry":
                    entries.append((item["dn"], dict(item["raw_attributes"])))
            paged(len(entries) - before)
            control = conn.result.get("controls", {}).get(_PAGED, {})
            cookie = control.get("value", {}).get("cookie") or None
            if not cookie:
                return entries

    def _full_ranges(
        self, conn: ldap3.Connection, dn: str, raw: dict[str, list[bytes]]
    ) -> dict[str, list[bytes]]:
        """Attributes by lower-case name, AD's ranged values (``member;range=0-1499``) completed
        with further base searches."""
        out: dict[str, list[bytes]] = {}
        for key, values in raw.items():
            name, _, option = key.partition(";")
            out.setdefault(name.lower(), []).extend(values)
            match = _RANGE.match(option)
            while match and match.group(2) != "*":
                ask = f"{name};range={int(match.group(2)) + 1}-*"
                conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=[ask])
                _check(conn, f"ranged read of {name} of {dn!r}")
                match = None
                for item in conn.response or ():
                    for got, more in item.get("raw_attributes", {}).items():
                        got_name, _, got_option = got.partition(";")
                        if got_name.lower() == name.lower():
                            out[name.lower()].extend(more)
                            match = _RANGE.match(got_option)
                if match is None:
                    raise DirectoryError(f"ranged read of {name} of {dn!r} ended early")
        return out

    def _build(
        self, users: dict[tuple[Any, ...], Entry], groups: dict[tuple[Any, ...], Entry]
    ) -> DirectorySnapshot:
        s = self._s
        errors: list[str] = []
        user_keys, group_keys = sorted(users, key=str), sorted(groups, key=str)
        user_ids = unique_ids(
            [_first(users[k][1], s.ldap_user_id_attribute) for k in user_keys],
            [users[k][0] for k in user_keys],
        )
        group_ids = unique_ids(
            [_first(groups[k][1], s.ldap_group_name_attribute) for k in group_keys],
            [groups[k][0] for k in group_keys],
        )
        user_of = dict(zip(user_keys, user_ids, strict=True))
        group_of = dict(zip(group_keys, group_ids, strict=True))
        out_users = []
        for k in user_keys:
            dn, attrs = users[k]
            names = [*self._names(attrs, s.ldap_user_alias_attributes), *dn_aliases(dn)]
            try:
                out_users.append(DirectoryUser(id=user_of[k], aliases=canonical_names(names)))
            except InvalidPrincipalError as exc:
                errors.append(f"user {dn!r} skipped: {exc}")
        out_groups = []
        dangling = 0
        for k in group_keys:
            dn, attrs = groups[k]
            names = [
                *self._names(attrs, [s.ldap_group_name_attribute, *s.ldap_group_alias_attributes]),
                *dn_aliases(dn),
            ]
            member_users, member_groups = [], []
            for attr in s.ldap_member_attributes:
                for value in attrs.get(attr.lower(), ()):
                    member = dn_key(_UID_SUFFIX.sub("", value.decode("utf-8", "replace")))
                    if member in user_of:
                        member_users.append(user_of[member])
                    elif member in group_of:
                        member_groups.append(group_of[member])
                    else:
                        dangling += 1
            try:
                out_groups.append(
                    DirectoryGroup(
                        id=group_of[k],
                        aliases=canonical_names(names),
                        member_users=member_users,
                        member_groups=member_groups,
                    )
                )
            except InvalidPrincipalError as exc:
                errors.append(f"group {dn!r} skipped: {exc}")
        if dangling:
            errors.append(f"{dangling} member value(s) name no listed user or group")
        return DirectorySnapshot(
            source=self.name,
            users=tuple(out_users),
            groups=tuple(out_groups),
            complete=True,
            errors=tuple(errors[:_MAX_ERRORS]),
        )

    def _names(self, attrs: dict[str, list[bytes]], names: Sequence[str]) -> list[str]:
        out: list[str] = []
        for attr in names:
            for raw in attrs.get(attr.lower(), ()):
                text = decode_value(attr, raw)
                if text is None:
                    continue
                out.append(text)
                if attr.lower() == "samaccountname" and self._s.ldap_domain:
                    out.append(f"{self._s.ldap_domain}\\{text}")
        return out


def _close(conn: ldap3.Connection) -> None:
    with contextlib.suppress(LDAPException, OSError):
        conn.unbind()


def _check(conn: ldap3.Connection, what: str) -> None:
    result = conn.result or {}
    if result.get("result") != 0:
        raise DirectoryError(
            f"LDAP {what} failed: {result.get('description')} (code {result.get('result')}) "
            f"{result.get('message') or ''}".rstrip()
        )


def _first(attrs: dict[str, list[bytes]], attr: str) -> str | None:
    values = sorted(v for v in (decode_value(attr, r) for r in attrs.get(attr.lower(), ())) if v)
    return values[0] if values else None


def decode_value(attr: str, raw: bytes) -> str | None:
    """An attribute value as text: binary SIDs as ``S-1-...``, GUIDs in their string form."""
    name = attr.lower()
    if name in ("objectsid", "securityidentifier") and not raw.startswith(b"S-"):
        return sid_string(raw)
    if name == "objectguid" and len(raw) == 16:
        return str(uuid.UUID(bytes_le=raw))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def sid_string(raw: bytes) -> str | None:
    """A binary security identifier as ``S-<revision>-<authority>-<sub>-...``; None if malformed."""
    if len(raw) < 8 or len(raw) != 8 + 4 * raw[1]:
        return None
    authority = int.from_bytes(raw[2:8], "big")
    subs = [int.from_bytes(raw[8 + 4 * i : 12 + 4 * i], "little") for i in range(raw[1])]
    return "-".join(["S", str(raw[0]), str(authority), *map(str, subs)])


def dn_key(dn: str) -> tuple[Any, ...]:
    """A DN's identity for matching member values: attribute types lower-cased, values
    unescaped and case-folded, spacing ignored; the folded text where it does not parse."""
    try:
        parts = parse_dn(dn, strip=True)
    except LDAPException:
        return (dn.strip().casefold(),)
    return tuple((t.lower(), _unescape(v).casefold(), sep) for t, v, sep in parts)


def dn_aliases(dn: str) -> list[str]:
    """A DN as returned, and without the spaces around its separators."""
    try:
        parts = parse_dn(dn, strip=True)
    except LDAPException:
        return [dn]
    return [dn, "".join(f"{t}={v}{sep}" for t, v, sep in parts)]


def _unescape(value: str) -> str:
    out = bytearray()
    i = 0
    while i < len(value):
        pair = value[i + 1 : i + 3]
        if value[i] == "\\" and len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
            out += bytes.fromhex(pair)
            i += 3
        elif value[i] == "\\" and i + 1 < len(value):
            out += value[i + 1].encode()
            i += 2
        else:
            out += value[i].encode()
            i += 1
    return out.decode("utf-8", "replace")
