"""Where runs are checkpointed: a SQLite file by default."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from langgraph.checkpoint.base import BaseCheckpointSaver

from toolrail.errors import ConfigError


@asynccontextmanager
async def open_checkpointer(location: str) -> AsyncIterator[BaseCheckpointSaver]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = Path(location)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the checkpoint folder {path.parent}: {exc.strerror}") from None
    if path.is_dir():
        raise ConfigError(f"the checkpoint path {path} is a folder; give a file path")
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        yield saver
