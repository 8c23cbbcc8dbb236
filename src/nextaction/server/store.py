"""Where the service keeps live events: an embedded SQLite database behind a small interface.

The routes only talk to :class:`EventStore`, so a PostgreSQL store can follow without touching them.

Durability and erasure are the two promises the store keeps:

* :meth:`EventStore.add` returns only after the transaction is committed with ``synchronous=FULL`` in WAL
  mode, so an acknowledged event survives a killed server (and a power cut).
* :meth:`EventStore.delete_user` deletes with ``secure_delete=ON`` (SQLite overwrites the freed bytes with
  zeros) and then checkpoints the write-ahead log with ``TRUNCATE``, so the user's events cannot be read back
  from the database file or its WAL afterwards (tested by scanning the raw files).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nextaction.data.schema import BEHAVIOR, ITEM_ID, TIMESTAMP
from nextaction.errors import InputError

EVENT_ID = "event_id"


@dataclass(frozen=True)
class NewEvent:
    """One event to store; ``event_id`` (optional) makes re-posting it a no-op."""

    user_id: str
    item_id: str
    behavior: str
    timestamp: int  # epoch milliseconds
    event_id: str | None = None


@dataclass(frozen=True)
class AddResult:
    """What :meth:`EventStore.add` did: ``stored`` new rows; ``duplicates`` = batch positions whose
    ``event_id`` was already stored (nothing written for them)."""

    stored: int
    duplicates: list[int] = field(default_factory=list)


class EventStore(Protocol):
    """The storage interface of the service. Histories come back oldest first."""

    def add(self, events: Sequence[NewEvent]) -> AddResult: ...

    def history(self, user_id: str, *, limit: int) -> list[dict[str, Any]]: ...

    def delete_user(self, user_id: str) -> int: ...

    def count(self, *, user_id: str | None = None) -> int: ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    behavior TEXT NOT NULL,
    timestamp INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, timestamp, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def open_store(url: str) -> SQLiteEventStore:
    """``sqlite:///relative.db``, ``sqlite:////absolute.db`` or a bare path -> a store."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
    elif "://" in url:
        scheme = url.split("://", 1)[0]
        raise InputError(f"--store: unsupported store '{scheme}'; use sqlite:///path/to/events.db")
    else:
        path = url
    if not path:
        raise InputError("--store: the SQLite URL has no path; use sqlite:///events.db")
    return SQLiteEventStore(Path(path))


class SQLiteEventStore:
    """Events in one SQLite file (WAL mode). Safe to share between threads and processes:
    each thread gets its own connection, writers serialise on SQLite's lock."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 30_000) -> None:
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            raise InputError(f"--store: folder '{self.path.parent}' does not exist; create it first")
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        con = self._con()
        con.executescript(_SCHEMA)

    def _con(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            try:
                # isolation_level=None: we issue BEGIN ourselves, so every transaction is explicit
                con = sqlite3.connect(self.path, isolation_level=None, timeout=self._busy_timeout_ms / 1000)
            except sqlite3.OperationalError as e:
                raise InputError(f"--store: cannot open '{self.path}': {e}") from None
            con.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = FULL")  # a commit is on disk before add() returns
            con.execute("PRAGMA secure_delete = ON")  # deleted rows are overwritten, not just unlinked
            self._local.con = con
        return con

    # ---- writes -------------------------------------------------------------------------------------

    def add(self, events: Sequence[NewEvent]) -> AddResult:
        """Store a batch in one transaction (all or nothing); duplicates by ``event_id`` are skipped."""
        con = self._con()
        duplicates: list[int] = []
        stored = 0
        sql = "INSERT OR IGNORE INTO events (event_id, user_id, item_id, behavior, timestamp) VALUES (?,?,?,?,?)"
        con.execute("BEGIN IMMEDIATE")
        try:
            cur = con.cursor()
            for pos, e in enumerate(events):
                cur.execute(sql, (e.event_id, e.user_id, e.item_id, e.behavior, e.timestamp))
                if cur.rowcount == 1:
                    stored += 1
                else:
                    duplicates.append(pos)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return AddResult(stored=stored, duplicates=duplicates)

    def add_many(self, rows: Iterable[tuple[str, str, str, int]]) -> int:
        """Bulk load (user_id, item_id, behavior, timestamp) rows without event ids; returns the count."""
        con = self._con()
        before = con.total_changes
        con.execute("BEGIN IMMEDIATE")
        try:
            con.executemany(
                "INSERT INTO events (user_id, item_id, behavior, timestamp) VALUES (?,?,?,?)", rows
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return con.total_changes - before

    def delete_user(self, user_id: str) -> int:
        """Erase every event of the user; returns how many. The bytes are gone from the files too."""
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            n = con.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self._checkpoint()
        return n

    def _checkpoint(self, *, timeout_s: float = 10.0) -> None:
        """Copy the WAL into the database file and truncate it to zero bytes.

        A reader in another thread or process can hold the checkpoint back for a moment; retry until the
        WAL is empty, because until then the erased events' old pages may still sit in it.
        """
        con = self._con()
        deadline = time.monotonic() + timeout_s
        while True:
            busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("could not checkpoint the event store's WAL (readers kept it busy)")
            time.sleep(0.01)

    def set_meta(self, key: str, value: str) -> None:
        self._con().execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # ---- reads --------------------------------------------------------------------------------------

    def history(self, user_id: str, *, limit: int) -> list[dict[str, Any]]:
        """The user's last ``limit`` events, oldest first (by timestamp, then arrival)."""
        rows = (
            self._con()
            .execute(
                "SELECT item_id, behavior, timestamp FROM events WHERE user_id = ? "
                "ORDER BY timestamp DESC, seq DESC LIMIT ?",
                (user_id, limit),
            )
            .fetchall()
        )
        return [{ITEM_ID: i, BEHAVIOR: b, TIMESTAMP: t} for i, b, t in reversed(rows)]

    def has_user(self, user_id: str) -> bool:
        row = self._con().execute("SELECT 1 FROM events WHERE user_id = ? LIMIT 1", (user_id,)).fetchone()
        return row is not None

    def count(self, *, user_id: str | None = None) -> int:
        """Stored events: all of them, or the user's."""
        if user_id is None:
            return int(self._con().execute("SELECT count(*) FROM events").fetchone()[0])
        row = self._con().execute("SELECT count(*) FROM events WHERE user_id = ?", (user_id,)).fetchone()
        return int(row[0])

    def get_meta(self, key: str) -> str | None:
        row = self._con().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None


def seed_from_model(store: SQLiteEventStore, model_dir: str | Path) -> int:
    """Copy every event the model was trained and evaluated on into the store, once (marked in ``meta``);
    returns how many were added (0 when the store was seeded before).

    So the users of the training log are known to the service from the start; from then on the store, not
    the model directory, is the source of histories (and ``DELETE /users/…`` erases a user there).
    """
    from nextaction.data.dataset import PreparedDataset
    from nextaction.data.schema import USER_ID

    if store.get_meta("seeded_from") is not None:
        return 0
    data = PreparedDataset.load(Path(model_dir) / "data")  # the events only: no model to load for this
    seqs = data.seqs
    user_ids = data.users[USER_ID].to_list()
    item_ids = ["", *data.items[ITEM_ID].to_list()]
    behaviors = list(data.behaviors)
    offsets = seqs.offsets.tolist()
    items = seqs.items.tolist()
    behs = seqs.behaviors.tolist()
    times = seqs.timestamps.tolist()

    def rows() -> Iterable[tuple[str, str, str, int]]:
        for u, uid in enumerate(user_ids, start=1):
            for j in range(offsets[u], offsets[u + 1]):
                yield (uid, item_ids[items[j]], behaviors[behs[j]], times[j])

    n = store.add_many(rows())
    store.set_meta("seeded_from", str(Path(model_dir).resolve()))
    return n


__all__ = [
    "EVENT_ID",
    "AddResult",
    "EventStore",
    "NewEvent",
    "SQLiteEventStore",
    "open_store",
    "seed_from_model",
]
