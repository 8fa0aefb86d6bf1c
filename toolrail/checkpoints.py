"""Where runs are checkpointed: a SQLite file by default, Postgres for many workers."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from langgraph.checkpoint.base import BaseCheckpointSaver

from toolrail.errors import ConfigError
from toolrail.ledger import InMemorySideEffectLedger, PostgresSideEffectLedger, SideEffectLedger, SqliteSideEffectLedger

DEFAULT_DB = ".toolrail/checkpoints.sqlite"


def checkpoint_location(flag: str | None = None) -> str:
    """--db, else TOOLRAIL_CHECKPOINT_URL (Postgres), else TOOLRAIL_DB, else the default file."""
    return flag or os.environ.get("TOOLRAIL_CHECKPOINT_URL") or os.environ.get("TOOLRAIL_DB") or DEFAULT_DB


def is_postgres(location: str) -> bool:
    if location.startswith(("postgresql://", "postgres://")):
        return True
    scheme, sep, _ = location.partition("://")
    if sep and scheme.isidentifier():  # mysql://..., sqlite://...: not a file path either
        raise ConfigError(f"checkpoints go to a SQLite file path or a postgresql:// URL, not {scheme}://")
    return False


@asynccontextmanager
async def open_checkpointer(location: str) -> AsyncIterator[BaseCheckpointSaver]:
    if is_postgres(location):
        async with _postgres(location) as saver:
            yield saver
        return
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = _sqlite_path(location)
    try:  # fail here, with one line, rather than inside aiosqlite's worker thread
        import contextlib

        with contextlib.closing(sqlite3.connect(str(path), timeout=30)) as probe:
            probe.execute("PRAGMA user_version").fetchone()
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot use {path} for checkpoints: {exc}") from None
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        try:
            await saver.setup()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"cannot use {path} for checkpoints: {exc}") from None
        yield saver


@asynccontextmanager
async def _postgres(url: str) -> AsyncIterator[BaseCheckpointSaver]:
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    except ImportError:
        raise ConfigError("Postgres checkpoints need the postgres extra: pip install 'toolrail[postgres]'") from None
    import psycopg

    try:
        async with AsyncPostgresSaver.from_conn_string(url) as saver:
            await _setup_once(saver, url)
            yield saver
    except psycopg.Error as exc:
        raise ConfigError(f"cannot use the Postgres checkpoint database: {str(exc).strip().splitlines()[0]}") from None


SETUP_LOCK = 0x746F6F6C  # any constant: all toolrail workers agree on it


async def _setup_once(saver: BaseCheckpointSaver, url: str) -> None:
    """Workers starting together would race on the saver's migrations: take turns."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as lock:
        # Poll rather than block: a waiting pg_advisory_lock is an open transaction, and the
        # migrations' CREATE INDEX CONCURRENTLY would wait for it forever.
        while not (await (await lock.execute("SELECT pg_try_advisory_lock(%s)", (SETUP_LOCK,))).fetchone())[0]:
            await asyncio.sleep(0.1)
        try:
            await saver.setup()
        finally:
            await lock.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK,))


def open_ledger(location: str) -> SideEffectLedger:
    """The side-effect ledger lives where the checkpoints do (TOOLRAIL_LEDGER: a SQLite file instead)."""
    explicit = os.environ.get("TOOLRAIL_LEDGER")
    if explicit:
        return _sqlite_ledger(_sqlite_path(explicit, "TOOLRAIL_LEDGER"))
    if is_postgres(location):
        return PostgresSideEffectLedger(location)
    path = _sqlite_path(location)
    return _sqlite_ledger(path.with_name(path.stem + "-side-effects.sqlite"))


def _sqlite_ledger(path: Path) -> SqliteSideEffectLedger:
    ledger = SqliteSideEffectLedger(path)
    try:
        ledger.check()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"cannot use {path} for the side-effect ledger: {exc}") from None
    return ledger


def sqlite_ledger_beside(path: str | Path) -> SqliteSideEffectLedger:
    path = Path(path)
    return SqliteSideEffectLedger(path.with_name(path.stem + "-side-effects.sqlite"))


def ledger_for_checkpointer(checkpointer: BaseCheckpointSaver | None) -> SideEffectLedger | None:
    """The ledger that belongs with these checkpoints, or None when toolrail cannot tell.

    In memory (or no checkpointer: nothing can be resumed) -> in memory; a SQLite saver -> a
    file beside its database; a Postgres saver -> a table in its database.
    """
    from langgraph.checkpoint.memory import InMemorySaver

    if checkpointer is None or isinstance(checkpointer, InMemorySaver):
        return InMemorySideEffectLedger()
    kind = type(checkpointer).__name__
    if kind in ("AsyncSqliteSaver", "SqliteSaver"):
        path = _sqlite_file_of(checkpointer.conn)
        return sqlite_ledger_beside(path) if path else None
    if kind in ("AsyncPostgresSaver", "PostgresSaver"):
        url = _postgres_url_of(checkpointer.conn)
        return PostgresSideEffectLedger(url) if url else None
    return None


def _sqlite_file_of(conn: object) -> str | None:
    if isinstance(conn, sqlite3.Connection):
        row = conn.execute("PRAGMA database_list").fetchone()
        return row[2] if row and row[2] else None
    connector = getattr(conn, "_connector", None)  # aiosqlite: the file is in its connector's closure
    cells = dict(zip(getattr(getattr(connector, "__code__", None), "co_freevars", ()), getattr(connector, "__closure__", None) or ()))
    database = cells["database"].cell_contents if "database" in cells else None
    if database is None or str(database) in (":memory:", ""):
        return None
    return str(database)


def _postgres_url_of(conn: object) -> str | None:
    if hasattr(conn, "conninfo"):  # a pool
        return conn.conninfo
    info = getattr(conn, "info", None)
    if info is None:
        return None
    from psycopg.conninfo import make_conninfo

    return make_conninfo(info.dsn, password=info.password) if info.password else info.dsn


def ledger_from_environment() -> SideEffectLedger:
    """For the served graph (langgraph.json): TOOLRAIL_LEDGER_URL (a postgresql:// URL or a
    SQLite path), else the LangGraph server's own Postgres (POSTGRES_URI / DATABASE_URI), else
    `.toolrail/side-effects.sqlite` in the server's working folder. Opened on first use."""
    location = os.environ.get("TOOLRAIL_LEDGER_URL") or os.environ.get("POSTGRES_URI") or os.environ.get("DATABASE_URI")
    if location and is_postgres(location):
        return PostgresSideEffectLedger(location)
    path = Path(location or ".toolrail/side-effects.sqlite").absolute()  # the server's working folder at start
    return SqliteSideEffectLedger(path)


def _sqlite_path(location: str, what: str = "the checkpoint path") -> Path:
    path = Path(location)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the folder {path.parent}: {exc.strerror}") from None
    return path
