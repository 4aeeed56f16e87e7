"""The run registry: one SQLite file holding runs, their events, the launch queue and GPU
reservations.

It is a cache of the truth on the hosts (container labels, run directories), safe for
several seglab processes at once: WAL mode, a busy timeout, one connection per process and
thread, short transactions, and ``BEGIN IMMEDIATE`` around every read-modify-write. The
schema is versioned with ``PRAGMA user_version`` and upgraded by :data:`MIGRATIONS`.

A file that cannot be used (not a database, damaged, written by a newer seglab, another
program's tables) never stops a command: it is moved aside to
``registry.sqlite3.corrupt-<UTC time>`` with its WAL, the user is told which file and why
in one warning line, and a fresh registry takes its place; the run manager's reconcile
refills it from the hosts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from seglab import paths
from seglab.errors import did_you_mean
from seglab.events import Event, from_dict
from seglab.registry_file import (
    MIGRATIONS,
    aside_name,
    enable_wal,
    identity,
    is_damage,
    locked,
    migrate,
    schema_problem,
    version_problem,
)
from seglab.runstate import (
    FINAL_STATUSES,
    RUN_FIELDS,
    AmbiguousRunError,
    IntentRow,
    Member,
    QueueItem,
    RegistryError,
    RunRecord,
    RunStatus,
    UnknownRunError,
    UnusableRegistryError,
)

__all__ = [
    "FINAL_STATUSES",
    "MIGRATIONS",
    "RUN_FIELDS",
    "AmbiguousRunError",
    "IntentRow",
    "Member",
    "QueueItem",
    "Registry",
    "RegistryError",
    "RunRecord",
    "RunStatus",
    "UnknownRunError",
    "UnusableRegistryError",
]

_RUN_COLUMNS = ", ".join(RUN_FIELDS)
log = logging.getLogger(__name__)


class Registry:
    """The SQLite registry at `path` (default: `seglab.paths.registry_file()`).

    Connections are opened lazily, one per thread and process, so a Registry may be
    shared by threads and survives a fork.
    """

    def __init__(self, path: Path | None = None, *, timeout: float = 30.0) -> None:
        self.path = path if path is not None else paths.registry_file()
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[tuple[int, sqlite3.Connection]] = []

    # -- connections and schema -------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            if self._local.file == identity(self.path):
                return conn
            self._drop()  # the file was set aside (or deleted) since: open the new one
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Opened under the set-aside lock: no thread or process renames the file (or its
        # WAL) while another opens, switches to WAL or migrates it.
        with locked(self._lock_path):
            seen = identity(self.path)
            try:
                conn = self._open()
            except UnusableRegistryError as exc:
                self._move_aside(exc.reason, seen)
                seen = identity(self.path)
                conn = self._open()
        self._local.conn, self._local.pid = conn, os.getpid()
        self._local.file = seen or identity(self.path)  # None: SQLite has just created it
        with self._lock:
            self._opened.append((os.getpid(), conn))
        return conn

    def _open(self) -> sqlite3.Connection:
        """A connection to a usable, migrated file (UnusableRegistryError if it is not)."""
        conn = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            enable_wal(conn, self.timeout)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            problem = version_problem(conn)
            if problem is None:
                migrate(conn, MIGRATIONS)
                problem = schema_problem(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if is_damage(exc):
                raise UnusableRegistryError(self.path, str(exc)) from exc
            raise
        except BaseException:
            conn.close()
            raise
        if problem:
            conn.close()
            raise UnusableRegistryError(self.path, problem)
        return conn

    def _drop(self) -> None:
        """Close this thread's connection (the next call opens a new one)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        # This thread's state only: replacing the threading.local would also wipe the
        # other threads' (they would forget which file their connection is to).
        vars(self._local).clear()
        if conn is not None:
            with self._lock:
                self._opened = [(pid, c) for pid, c in self._opened if c is not conn]
            conn.close()

    def _set_aside(self, reason: str, seen: tuple[int, int] | None) -> None:
        """Move the unusable file ``seen`` (device, inode) aside with its WAL, and tell the
        user, once: under a lock file, a file at the path that is no longer ``seen`` was
        set aside by another seglab process or thread already, and is left alone.
        """
        self._drop()
        with locked(self._lock_path):
            self._move_aside(reason, seen)

    @property
    def _lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def _move_aside(self, reason: str, seen: tuple[int, int] | None) -> None:
        """:meth:`_set_aside` with its lock held."""
        if identity(self.path) != seen:
            return
        aside = aside_name(self.path)
        for suffix in ("-wal", "-shm", ""):  # the WAL first: a fresh file must not find it
            source = self.path.with_name(self.path.name + suffix)
            if source.exists():
                source.rename(aside.with_name(aside.name + suffix))
        log.warning(
            "seglab: the registry %s cannot be used (%s); moved it to %s and started a "
            "fresh one, which seglab refills from the hosts",
            self.path,
            reason,
            aside,
        )

    def _recovering(self, exc: sqlite3.DatabaseError) -> None:
        """Set the file aside when ``exc`` says it is damaged; otherwise re-raise ``exc``."""
        if not is_damage(exc):
            raise exc
        self._set_aside(str(exc), getattr(self._local, "file", None))

    def _rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        """Every row of a read; a file found damaged is set aside and the read answered
        from the fresh registry."""
        try:
            return self._connection().execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            self._recovering(exc)
        return self._connection().execute(sql, params).fetchall()

    def close(self) -> None:
        """Close this process's connections (a later call opens new ones)."""
        with self._lock:
            mine = [conn for pid, conn in self._opened if pid == os.getpid()]
            self._opened = [(pid, conn) for pid, conn in self._opened if pid != os.getpid()]
        for conn in mine:
            conn.close()
        self._local = threading.local()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def schema_version(self) -> int:
        """The schema version of the file (`PRAGMA user_version`)."""
        return int(self._rows("PRAGMA user_version")[0][0])

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction that holds the write lock from its first statement.

        A file found damaged is set aside, and the write refused with a RegistryError
        (the fresh registry does not hold what the write was about).
        """
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self._recovering(exc)
            raise RegistryError(
                f"the registry {self.path} was damaged ({exc}) and has been replaced",
                "run the command again",
            ) from exc

    # -- runs --------------------------------------------------------------------------------

    def upsert_run(self, record: RunRecord) -> None:
        """Insert `record`, or replace every field of the run with the same id."""
        values = _to_row(dataclasses.asdict(record))
        updates = ", ".join(f"{name} = excluded.{name}" for name in RUN_FIELDS[1:])
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES ({', '.join('?' * len(RUN_FIELDS))}) "
                f"ON CONFLICT (run_id) DO UPDATE SET {updates}",
                [values[name] for name in RUN_FIELDS],
            )

    def has_run(self, run_id: str) -> bool:
        """Whether the registry holds a run with this id."""
        return bool(self._rows("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)))

    def resolve(self, text: str) -> str:
        """The full id of the run ``text`` names: the run of that id, else the one run whose
        id starts with ``text``, else the one whose short id (the hex after the last dot)
        does. Raises AmbiguousRunError listing the matches, or UnknownRunError."""
        if self.has_run(text):
            return text
        pattern = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        ids = [
            str(row[0])
            for row in self._rows(
                "SELECT run_id FROM runs WHERE run_id LIKE ? ESCAPE '\\' ORDER BY run_id",
                (f"{pattern}%",),
            )
            if str(row[0]).startswith(text)  # LIKE ignores ASCII case
        ]
        if not ids and text:
            ids = [
                str(row[0])
                for row in self._rows("SELECT run_id FROM runs ORDER BY run_id")
                if str(row[0]).rsplit(".", 1)[-1].startswith(text)
            ]
        if len(ids) == 1:
            return ids[0]
        if ids:
            raise AmbiguousRunError(text, ids)
        known = [r[0] for r in self._rows("SELECT run_id FROM runs")]
        raise UnknownRunError(text, known)

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id (UnknownRunError, with a did-you-mean, if there is none)."""
        rows = self._rows(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            known = [r[0] for r in self._rows("SELECT run_id FROM runs")]
            raise UnknownRunError(run_id, known)
        return _from_row(rows[0])

    def list_runs(self, include_finished: bool = True, host: str | None = None) -> list[RunRecord]:
        """Runs oldest first; without `include_finished`, only those not yet ended."""
        where: list[str] = []
        params: list[str] = []
        if not include_finished:
            where.append(f"status NOT IN ({', '.join('?' * len(FINAL_STATUSES))})")
            params.extend(str(s) for s in sorted(FINAL_STATUSES))
        if host is not None:
            where.append("host = ?")
            params.append(host)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._rows(
            f"SELECT {_RUN_COLUMNS} FROM runs{clause} ORDER BY created_at, run_id", params
        )
        return [_from_row(row) for row in rows]

    def update_run(self, run_id: str, /, **fields: Any) -> RunRecord:
        """Set some fields of a run and return the updated record.

        Unknown field names raise ValueError; a missing run raises UnknownRunError.
        """
        if "run_id" in fields:
            raise ValueError("a run's run_id cannot change; upsert a new run instead")
        for name in fields:
            if name not in RUN_FIELDS:
                raise ValueError(f"unknown run field {name!r}{did_you_mean(name, RUN_FIELDS)}")
        if not fields:
            return self.get_run(run_id)
        values = _to_row(fields)
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._write() as conn:
            cursor = conn.execute(
                f"UPDATE runs SET {assignments} WHERE run_id = ?", [*values.values(), run_id]
            )
            missing = cursor.rowcount == 0
        if missing:
            raise UnknownRunError(run_id)
        return self.get_run(run_id)

    def delete_run(self, run_id: str) -> bool:
        """Forget a run with its events, queue entries and reservations; False if unknown."""
        with self._write() as conn:
            conn.execute("DELETE FROM reservations WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM queue WHERE run_id = ?", (run_id,))
            deleted = conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount
        return deleted > 0

    # -- events ------------------------------------------------------------------------------

    def add_events(self, run_id: str, events: Iterable[Event]) -> int:
        """Store events of a run, ignoring any already stored (same seq); returns how many
        were new. The run's derived fields (last_iter, last_loss, img_per_s, best_miou,
        total_iters) are updated in the same transaction.
        """
        rows = [
            (run_id, e.seq, e.kind, e.time, json.dumps(e.to_dict(), allow_nan=False))
            for e in events
        ]
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
                raise UnknownRunError(run_id)
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO events (run_id, seq, kind, time, payload) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            added = conn.total_changes - before
            if added:
                _refresh_derived(conn, run_id)
        return added

    def events(
        self, run_id: str, kind: str | None = None, after_seq: int | None = None
    ) -> list[Event]:
        """A run's events in seq order, optionally of one kind and after a given seq."""
        sql = "SELECT payload FROM events WHERE run_id = ?"
        params: list[Any] = [run_id]
        if kind is not None:  # the planner, without statistics, would scan the run's events
            sql = "SELECT payload FROM events INDEXED BY events_by_kind WHERE run_id = ?"
            sql += " AND kind = ?"
            params.append(kind)
        if after_seq is not None:
            sql += " AND seq > ?"
            params.append(after_seq)
        rows = self._rows(sql + " ORDER BY seq", params)
        return [from_dict(json.loads(payload)) for (payload,) in rows]

    def last_seq(self, run_id: str) -> int | None:
        """The highest stored event seq of a run (None when it has no events)."""
        (value,) = self._rows("SELECT MAX(seq) FROM events WHERE run_id = ?", (run_id,))[0]
        return None if value is None else int(value)

    def cursor(self, run_id: str) -> tuple[int, int]:
        """``(inode, byte offset)`` up to which the run's events.jsonl was ingested
        (``(0, 0)``: not read yet; a remote file's inode is 0)."""
        rows = self._rows("SELECT inode, offset FROM cursors WHERE run_id = ?", (run_id,))
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    def set_cursor(self, run_id: str, inode: int, offset: int) -> None:
        """Record that the run's events.jsonl was ingested up to ``offset``."""
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO cursors (run_id, inode, offset) "
                "SELECT run_id, ?, ? FROM runs WHERE run_id = ?",
                (inode, offset, run_id),
            )

    # -- queue -------------------------------------------------------------------------------

    def enqueue(self, run_id: str, request: Mapping[str, Any]) -> int:
        """Append a launch to the queue; returns its queue id."""
        payload = json.dumps(dict(request), allow_nan=False)
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO queue (run_id, request, created_at, state) "
                "VALUES (?, ?, ?, 'pending')",
                (run_id, payload, time.time()),
            )
        assert cursor.lastrowid is not None  # an INSERT into a rowid table always sets it
        return cursor.lastrowid

    def pending(self) -> list[QueueItem]:
        """Unclaimed launches, first in first out."""
        rows = self._rows(
            "SELECT id, run_id, request, created_at, state FROM queue "
            "WHERE state = 'pending' ORDER BY id"
        )
        return [_queue_item(row) for row in rows]

    def claim(self, queue_id: int) -> QueueItem | None:
        """Take a pending launch; exactly one caller gets it, the others get None."""
        with self._write() as conn:
            claimed = conn.execute(
                "UPDATE queue SET state = 'claimed', claimed_at = ? "
                "WHERE id = ? AND state = 'pending'",
                (time.time(), queue_id),
            ).rowcount
            row = conn.execute(
                "SELECT id, run_id, request, created_at, state FROM queue WHERE id = ?",
                (queue_id,),
            ).fetchone()
        return _queue_item(row) if claimed else None

    def unclaim(self, queue_id: int) -> bool:
        """Put a claimed launch back in the queue, keeping its place; False if none."""
        with self._write() as conn:
            return (
                conn.execute(
                    "UPDATE queue SET state = 'pending', claimed_at = NULL "
                    "WHERE id = ? AND state = 'claimed'",
                    (queue_id,),
                ).rowcount
                > 0
            )

    def drop(self, queue_id: int) -> bool:
        """Remove a queue entry (pending or claimed); False if there was none."""
        with self._write() as conn:
            return conn.execute("DELETE FROM queue WHERE id = ?", (queue_id,)).rowcount > 0

    # -- reservations ------------------------------------------------------------------------

    def reserve(self, host: str, gpus: Sequence[str], run_id: str) -> bool:
        """Reserve all `gpus` of `host` for `run_id`, or none of them.

        Returns False (reserving nothing) when another run holds any of them; GPUs the
        same run already holds count as reserved.
        """
        wanted = sorted(set(gpus))
        if not wanted:
            return True
        marks = ", ".join("?" * len(wanted))
        with self._write() as conn:
            taken = conn.execute(
                f"SELECT 1 FROM reservations WHERE host = ? AND gpu IN ({marks}) "
                "AND run_id != ? LIMIT 1",
                [host, *wanted, run_id],
            ).fetchone()
            if taken is not None:
                return False
            now = time.time()
            conn.executemany(
                "INSERT OR IGNORE INTO reservations (host, gpu, run_id, created_at) "
                "VALUES (?, ?, ?, ?)",
                [(host, gpu, run_id, now) for gpu in wanted],
            )
        return True

    def release(self, run_id: str) -> int:
        """Release every GPU `run_id` holds; returns how many."""
        with self._write() as conn:
            return conn.execute("DELETE FROM reservations WHERE run_id = ?", (run_id,)).rowcount

    # -- intents ----------------------------------------------------------------------------

    def set_intent(self, run_id: str, op: str, owner: str, detail: Mapping[str, Any]) -> None:
        """Write (or replace) the intent of the operation about to act on ``run_id``."""
        payload = json.dumps(dict(detail), allow_nan=False)
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO intents (run_id, op, owner, created_at, detail) "
                "VALUES (?, ?, ?, ?, ?)",
                (run_id, op, owner, time.time(), payload),
            )

    def clear_intent(self, run_id: str, owner: str | None = None) -> bool:
        """Forget the intent on ``run_id`` (only ``owner``'s, if given); False if none."""
        sql, params = "DELETE FROM intents WHERE run_id = ?", [run_id]
        if owner is not None:
            sql += " AND owner = ?"
            params.append(owner)
        with self._write() as conn:
            return conn.execute(sql, params).rowcount > 0

    def intents(self) -> list[IntentRow]:
        """Every intent not yet cleared, oldest first."""
        rows = self._rows(
            "SELECT run_id, op, owner, created_at, detail FROM intents ORDER BY created_at"
        )
        return [IntentRow(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def release_orphans(self, older_than: float) -> list[str]:
        """Release reservations made over ``older_than`` s ago whose run has ended or is
        gone with no intent on it (a seglab killed between reserving and launching);
        returns the run ids."""
        final = ", ".join(f"'{s}'" for s in sorted(FINAL_STATUSES))
        where = (
            "created_at < ? AND run_id NOT IN (SELECT run_id FROM intents) AND ("
            "run_id NOT IN (SELECT run_id FROM runs) OR "
            f"run_id IN (SELECT run_id FROM runs WHERE status IN ({final})))"
        )
        with self._write() as conn:
            cutoff = (time.time() - older_than,)
            rows = conn.execute(f"SELECT DISTINCT run_id FROM reservations WHERE {where}", cutoff)
            ids = sorted(run_id for (run_id,) in rows)
            conn.execute(f"DELETE FROM reservations WHERE {where}", cutoff)
        return ids

    def holders(self, host: str | None = None) -> dict[tuple[str, str], str]:
        """`(host, gpu) -> run_id` for every reservation (of one host, if given)."""
        sql = "SELECT host, gpu, run_id FROM reservations"
        params: tuple[str, ...] = ()
        if host is not None:
            sql += " WHERE host = ?"
            params = (host,)
        rows = self._rows(sql + " ORDER BY host, gpu", params)
        return {(h, g): r for h, g, r in rows}


# -- helpers ---------------------------------------------------------------------------------


def _to_row(fields: Mapping[str, Any]) -> dict[str, Any]:
    row = dict(fields)
    if "gpus" in row:
        row["gpus"] = json.dumps([str(g) for g in row["gpus"]])
    if "members" in row:
        row["members"] = json.dumps(
            [m if isinstance(m, dict) else dataclasses.asdict(m) for m in row["members"]]
        )
    if "status" in row:
        row["status"] = str(RunStatus(row["status"]))
    return row


def _from_row(row: Sequence[Any]) -> RunRecord:
    values = dict(zip(RUN_FIELDS, row, strict=True))
    values["gpus"] = tuple(json.loads(values["gpus"]))
    values["members"] = tuple(Member.from_dict(m) for m in json.loads(values["members"]))
    values["status"] = RunStatus(values["status"])
    return RunRecord(**values)


def _queue_item(row: Sequence[Any]) -> QueueItem:
    return QueueItem(
        id=row[0], run_id=row[1], request=json.loads(row[2]), created_at=row[3], state=row[4]
    )


def _refresh_derived(conn: sqlite3.Connection, run_id: str) -> None:
    """Recompute a run's derived fields from all of its stored events (order-proof)."""
    conn.execute(
        """UPDATE runs SET
            last_iter = COALESCE((SELECT json_extract(payload, '$.iter') FROM events
                INDEXED BY events_by_kind WHERE run_id = :run AND kind = 'train'
                ORDER BY seq DESC LIMIT 1), last_iter),
            last_loss = COALESCE((SELECT json_extract(payload, '$.loss') FROM events
                INDEXED BY events_by_kind WHERE run_id = :run AND kind = 'train'
                ORDER BY seq DESC LIMIT 1), last_loss),
            img_per_s = COALESCE((SELECT json_extract(payload, '$.img_per_s') FROM events
                INDEXED BY events_by_kind WHERE run_id = :run AND kind = 'train'
                ORDER BY seq DESC LIMIT 1), img_per_s),
            total_iters = COALESCE((SELECT json_extract(payload, '$.total_iters') FROM events
                INDEXED BY events_by_kind WHERE run_id = :run AND kind = 'start'
                ORDER BY seq DESC LIMIT 1), total_iters),
            best_miou = COALESCE((SELECT MAX(value) FROM (
                SELECT json_extract(payload, '$.miou') AS value FROM events
                    INDEXED BY events_by_kind WHERE run_id = :run AND kind = 'eval'
                UNION ALL
                SELECT json_extract(payload, '$.best_miou') FROM events
                    INDEXED BY events_by_kind WHERE run_id = :run AND kind = 'end')), best_miou)
        WHERE run_id = :run""",
        {"run": run_id},
    )
