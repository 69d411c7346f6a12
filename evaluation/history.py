"""Past runs of each suite, one JSON line per run, for regression checks and trend plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def history_file(out_dir: Path, suite: str) -> Path:
    return out_dir / "history" / f"{suite}.jsonl"


def load_history(out_dir: Path, suite: str) -> list[dict[str, Any]]:
    path = history_file(out_dir, suite)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def append_history(out_dir: Path, suite: str, entry: dict[str, Any]) -> None:
    path = history_file(out_dir, suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")
