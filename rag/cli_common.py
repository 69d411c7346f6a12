"""What the command modules share: the settings for a ``--data-dir`` option."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rag.config import Settings

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Where the index lives (default: RAG_DATA_DIR).")
]


def settings_for(data_dir: Path | None) -> Settings:
    """The settings from the environment, with ``data_dir`` when one is given."""
    settings = Settings()
    return settings.model_copy(update={"data_dir": data_dir}) if data_dir else settings
