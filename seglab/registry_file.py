"""The registry file: its schema migrations, and how a damaged, foreign or newer file is
recognised, set aside and locked (see :mod:`seglab.registry`)."""

from __future__ import annotations

import fcntl
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from seglab.runstate import RUN_FIELDS, RegistryError

# The tables and run columns this seglab needs; a file without them is not a registry.
TABLES = ("runs", "events", "queue", "reservations", "intents")
# SQLite's primary result codes for a damaged file and for a file that is no database.
DAMAGE_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB

# Each entry upgrades the schema by one version: entry i takes user_version i to i + 1.
# Never edit a released entry; append a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            recipe TEXT NOT NULL,
            variant TEXT NOT NULL,
            recipe_sha TEXT NOT NULL,
            resolved_recipe TEXT NOT NULL,
            host TEXT NOT NULL,
            gpus TEXT NOT NULL,
            runtime TEXT NOT NULL,
            handle TEXT,
            run_dir TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            exit_code INTEGER,
            best_miou REAL,
            last_iter INTEGER,
            total_iters INTEGER,
            last_loss REAL,
            img_per_s REAL,
            message TEXT
        )""",
        "CREATE INDEX runs_by_status ON runs (status, created_at)",
        """CREATE TABLE events (
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            time REAL NOT NULL,
            payload TEXT NOT NULL,
            PRIMARY KEY (run_id, seq)
        ) WITHOUT ROWID""",
        "CREATE INDEX events_by_kind ON events (run_id, kind, seq)",
        """CREATE TABLE queue (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL,
            request TEXT NOT NULL,
            created_at REAL NOT NULL,
            state TEXT NOT NULL,
            claimed_at REAL
        )""",
        "CREATE INDEX queue_by_state ON queue (state, id)",
        """CREATE TABLE reservations (
            host TEXT NOT NULL,
            gpu TEXT NOT NULL,
            run_id TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (host, gpu)
        ) WITHOUT ROWID""",
        "CREATE INDEX reservations_by_run ON reservations (run_id)",
    ),
    ("ALTER TABLE runs ADD COLUMN members TEXT NOT NULL DEFAULT '[]'",),
    # Version 3 adds the status "killed": no statement, but a seglab that does not know it
    # sees a newer schema instead of a status it cannot read.
    (),
    # Version 4: the write-ahead intents of lifecycle operations (seglab.runs.intents).
    (
        """CREATE TABLE intents (
            run_id TEXT PRIMARY KEY,
            op TEXT NOT NULL,
            owner TEXT NOT NULL,
            created_at REAL NOT NULL,
            detail TEXT NOT NULL
        ) WITHOUT ROWID""",
    ),
    # Version 5: where each run's events.jsonl was ingested up to (inode, byte offset), so
    # a refresh reads only what was appended since.
    (
        """CREATE TABLE cursors (
            run_id TEXT PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
            inode INTEGER NOT NULL,
            offset INTEGER NOT NULL
        ) WITHOUT ROWID""",
    ),
)


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def identity(path: Path) -> tuple[int, int] | None:
    """Which file is at ``path`` now (device, inode), or None when there is none."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def is_damage(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the file is damaged or no database at all."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return (code & 0xFF) in DAMAGE_CODES
    return "file is not a database" in str(exc) or "malformed" in str(exc)


def version_problem(conn: sqlite3.Connection) -> str | None:
    """Why the file's schema version rules it out (newer, or another program's tables)."""
    version = user_version(conn)
    if version > len(MIGRATIONS):
        return f"its schema version {version} is newer than this seglab knows ({len(MIGRATIONS)})"
    if version == 0 and conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
        return "it holds tables that seglab did not create"
    return None


def schema_problem(conn: sqlite3.Connection) -> str | None:
    """What a migrated file lacks of the tables and run columns seglab reads."""
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    tables = {name for (name,) in rows}
    missing = [name for name in TABLES if name not in tables]
    if missing:
        return f"it lacks the table(s) {', '.join(missing)}"
    columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    missing = [name for name in RUN_FIELDS if name not in columns]
    if missing:
        return f"its runs table lacks the column(s) {', '.join(missing)}"
    return None


def aside_name(path: Path) -> Path:
    """``registry.sqlite3.corrupt-<UTC time>``, numbered if that name is taken."""
    stem = f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    aside, number = path.with_name(stem), 1
    while aside.exists():
        aside, number = path.with_name(f"{stem}.{number}"), number + 1
    return aside


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the file ``path`` (created if needed) for the block."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch the file to WAL mode (a no-op once it is).

    Changing the journal mode does not wait on the busy handler, so processes that open a
    new file together retry here until the first one has switched it.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    if mode.lower() != "wal":
        raise RegistryError(
            f"the registry needs SQLite WAL mode, but its file system gives journal mode {mode!r}"
        )


def migrate(conn: sqlite3.Connection, migrations: Sequence[Sequence[str]]) -> None:
    """Bring the schema to `len(migrations)`; safe when several processes race to do it."""
    if user_version(conn) == len(migrations):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = user_version(conn)  # re-read under the write lock
        if version > len(migrations):
            raise RegistryError(
                f"registry schema version {version} is newer than this seglab knows "
                f"({len(migrations)}); upgrade seglab"
            )
        for number in range(version, len(migrations)):
            for statement in migrations[number]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {len(migrations)}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
