"""A real OpenLDAP ``slapd`` for tests: configured (``slapd.conf``, mdb backend) and seeded
(``slapd -T add``) in a temporary directory, listening on a free loopback port, stopped at the
end. Needs OpenLDAP's server (Debian: ``apt-get install slapd``; the tests skip without it).

Searches by non-root users are capped at 100 entries unless paged (``limits``), so a test that
reads more than that proves the client pages. As root, slapd simply runs as root (no ``-u``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SUFFIX = "dc=example,dc=com"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "admin-secret"
READER_DN = f"cn=reader,{SUFFIX}"
READER_PASSWORD = "reader-secret"
SIZE_LIMIT = 100

_SBIN = ["/usr/sbin", "/usr/local/sbin", "/usr/libexec", "/opt/homebrew/opt/openldap/libexec"]
_SCHEMA_DIRS = ["/etc/ldap/schema", "/etc/openldap/schema", "/usr/local/etc/openldap/schema"]
_MODULE_DIRS = [
    "/usr/lib/ldap",
    "/usr/lib64/openldap",
    "/usr/lib/openldap",
    "/usr/libexec/openldap",
]

# A few Active Directory attributes (private OIDs), so the seed can hold binary SIDs.
_AD_SCHEMA = """
attributetype ( 1.3.6.1.4.1.55555.1.1 NAME 'objectSid' EQUALITY octetStringMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.55555.1.2 NAME 'sAMAccountName' EQUALITY caseIgnoreMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.55555.1.3 NAME 'userPrincipalName' EQUALITY caseIgnoreMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.55555.2.1 NAME 'adAccount' SUP top AUXILIARY
    MAY ( objectSid $ sAMAccountName $ userPrincipalName ) )
"""


def slapd_binary() -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
    return shutil.which("slapd", path=path)


def _first_dir(candidates: list[str], probe: str) -> Path | None:
    for c in candidates:
        if (Path(c) / probe).exists():
            return Path(c)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return port if port < 65000 else free_port()


class Slapd:
    """One slapd process over its own directory ``root``, seeded with ``ldif``."""

    def __init__(self, binary: str, root: Path, ldif: str) -> None:
        self.binary = binary
        self.root = root
        self.ldif = ldif
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def _config(self) -> Path:
        schema = _first_dir(_SCHEMA_DIRS, "core.schema")
        if schema is None:
            raise RuntimeError(f"no OpenLDAP schema directory among {_SCHEMA_DIRS}")
        (self.root / "ad.schema").write_text(_AD_SCHEMA)
        (self.root / "db").mkdir(parents=True, exist_ok=True)
        lines = [f"include {schema / n}.schema" for n in ("core", "cosine", "inetorgperson")]
        lines.append(f"include {self.root / 'ad.schema'}")
        modules = _first_dir(_MODULE_DIRS, "back_mdb.la") or _first_dir(_MODULE_DIRS, "back_mdb.so")
        if modules is not None:  # else mdb is built in
            lines += [f"modulepath {modules}", "moduleload back_mdb"]
        lines += [
            f"pidfile {self.root / 'slapd.pid'}",
            f"argsfile {self.root / 'slapd.args'}",
            "database mdb",
            f'suffix "{SUFFIX}"',
            f'rootdn "{ADMIN_DN}"',
            f"rootpw {ADMIN_PASSWORD}",
            f"directory {self.root / 'db'}",
            "maxsize 104857600",
            f"limits users size.soft={SIZE_LIMIT} size.hard={SIZE_LIMIT} "
            f"size.pr={SIZE_LIMIT} size.prtotal=unlimited",
            "access to attrs=userPassword by anonymous auth by * none",
            "access to * by users read by * none",
        ]
        conf = self.root / "slapd.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> None:
        conf = self._config()
        seed = self.root / "seed.ldif"
        seed.write_text(self.ldif, encoding="utf-8")
        added = subprocess.run(
            [self.binary, "-T", "add", "-f", str(conf), "-l", str(seed)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if added.returncode != 0:
            raise RuntimeError(f"slapadd failed:\n{added.stdout}\n{added.stderr}")
        log = (self.root / "slapd.log").open("wb")
        self.process = subprocess.Popen(
            [self.binary, "-f", str(conf), "-h", f"{self.url}/", "-d", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited: {(self.root / 'slapd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("slapd did not listen within 30 s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
