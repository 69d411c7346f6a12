"""A drive's items as persisted between listings, kept current with Graph's delta query: delta
items are applied to the last snapshot, and the result replaces it atomically only once a delta
round has finished (see :mod:`connectors.sharepoint`, **Listing**)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from connectors.graph import GraphClient, GraphError, GraphGoneError
from rag.errors import ConnectorError
from rag.models import stable_hash

log = logging.getLogger(__name__)

SNAPSHOT_VERSION: Final = 1
_SELECT: Final = (
    "id,name,parentReference,file,folder,root,package,deleted,size,lastModifiedDateTime,webUrl,cTag"
)


@dataclass
class DriveSnapshot:
    """A drive's items as the last finished delta round left them, and its delta link."""

    drive_id: str
    delta_link: str | None = None
    items: dict[str, dict[str, Any]] = field(default_factory=dict)

    def apply(self, item: Any) -> None:
        """One delta item: the latest state of an item, or its deletion."""
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            return
        if "deleted" in item:
            self.items.pop(item["id"], None)
            return
        parent = item.get("parentReference") or {}
        file = item.get("file") if isinstance(item.get("file"), dict) else None
        kind = "root" if "root" in item else "folder" if "folder" in item else "other"
        if file is not None and kind == "other" and "package" not in item:
            kind = "file"
        self.items[item["id"]] = {
            "name": str(item.get("name") or ""),
            "parent": parent.get("id") if isinstance(parent, dict) else None,
            "kind": kind,
            "mime": file.get("mimeType") if file else None,
            "hashes": file.get("hashes") if file and isinstance(file.get("hashes"), dict) else {},
            "size": item.get("size") if isinstance(item.get("size"), int) else 0,
            "modified": item.get("lastModifiedDateTime"),
            "webUrl": item.get("webUrl"),
            "cTag": item.get("cTag"),
        }

    def paths(self) -> dict[str, str]:
        """item id -> path from the root, for every item whose parents reach the root."""
        found: dict[str, str] = {}

        def resolve(item_id: str, depth: int) -> str | None:
            if item_id in found:
                return found[item_id]
            record = self.items.get(item_id)
            if record is None or depth > 500:
                return None
            if record["kind"] == "root":
                found[item_id] = ""
                return ""
            parent = resolve(record["parent"], depth + 1) if record["parent"] else None
            if parent is None:
                return None
            found[item_id] = f"{parent}/{record['name']}" if parent else record["name"]
            return found[item_id]

        for item_id in self.items:
            resolve(item_id, 0)
        return found

    def prune(self) -> int:
        """Drop items no longer below the root (a deleted folder's leftovers); their count."""
        live = self.paths()
        gone = [i for i in self.items if i not in live]
        for item_id in gone:
            del self.items[item_id]
        return len(gone)

    def files(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(item id, path, record) of every file, by path."""
        paths = self.paths()
        rows = [
            (i, paths[i], r) for i, r in self.items.items() if r["kind"] == "file" and i in paths
        ]
        yield from sorted(rows, key=lambda row: row[1])

    @classmethod
    def load(cls, path: Path, drive_id: str) -> DriveSnapshot | None:
        """The stored snapshot, or None when there is none (or it is unreadable: resync)."""
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("snapshot %s unreadable, the drive is enumerated again: %s", path, exc)
            return None
        if not isinstance(data, dict) or data.get("version") != SNAPSHOT_VERSION:
            return None
        items, link = data.get("items"), data.get("delta_link")
        if data.get("drive_id") != drive_id or not isinstance(items, dict):
            return None
        return cls(drive_id, link if isinstance(link, str) else None, items)

    def save(self, path: Path) -> None:
        """Replace the stored snapshot atomically (a crash leaves the old one or the new one)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        data = {
            "version": SNAPSHOT_VERSION,
            "drive_id": self.drive_id,
            "delta_link": self.delta_link,
            "items": self.items,
        }
        try:
            with tmp.open("w", encoding="utf-8") as handle:
                json.dump(data, handle, separators=(",", ":"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ConnectorError(f"cannot write the drive snapshot {path}: {exc}") from exc


def snapshot_path(state_dir: Path, drive_id: str) -> Path:
    """Where the snapshot of a drive is stored."""
    return state_dir / f"drive-{stable_hash(drive_id, length=16)}.json"


def delta_round(
    client: GraphClient, drive_id: str, label: str, old: DriveSnapshot | None, page_size: int
) -> DriveSnapshot:
    """One delta round from ``old`` (or from scratch: without a snapshot or a delta link of this
    client, and after a ``410 Gone``): the drive's snapshot once it has finished. Raises
    ``GraphError`` (nothing is saved) when the round fails or its answer cannot be trusted."""
    fresh = f"/drives/{quote(drive_id, safe='!')}/root/delta?$top={page_size}&$select={_SELECT}"
    resume = old is not None and old.delta_link is not None and client.owns(old.delta_link)
    snapshot = DriveSnapshot(drive_id, None, dict(old.items) if resume and old else {})
    link = old.delta_link if resume and old and old.delta_link else fresh
    resynced = False
    while True:
        try:
            for page in client.pages(link):
                for item in page.get("value") or []:
                    snapshot.apply(item)
                if "@odata.deltaLink" in page:
                    snapshot.delta_link = str(page["@odata.deltaLink"])
            break
        except GraphGoneError as exc:
            if resynced:
                raise
            log.warning("drive %s: %s; enumerating it again", label, exc)
            resynced = True
            snapshot = DriveSnapshot(drive_id)
            location = exc.location
            link = location if location and client.owns(location) else fresh
    if snapshot.delta_link is None:
        raise GraphError(f"drive {label}: the delta query ended without a deltaLink")
    if snapshot.items and not any(r["kind"] == "root" for r in snapshot.items.values()):
        # without its root no path resolves: listing nothing would hide the whole drive
        raise GraphError(f"drive {label}: the delta query never returned the root")
    pruned = snapshot.prune()
    if pruned:
        log.info("drive %s: %d items no longer below the root were dropped", label, pruned)
    return snapshot
