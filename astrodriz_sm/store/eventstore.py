"""Append-only, hash-chained event log stored in a SQLite file.

Every pipeline run is a row of ``runs`` and an ordered sequence of ``events``.
Each event carries the SHA-256 hash of its own canonical content together with
the hash of the event before it, so any alteration of a stored event, or the
removal of one from the middle of a run, is detected by :meth:`EventStore.verify`.
SQLite triggers additionally refuse ``UPDATE`` and ``DELETE`` on both tables.

Several processes may append to the same file at once: each append reads the
tail of the chain and inserts the new event inside a single ``BEGIN IMMEDIATE``
transaction, so sequence numbers are never handed out twice.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import pathlib
import secrets
import socket
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import sqlite_utils

__all__ = [
    "DEFAULT_LEASE_EXPIRY_S",
    "GENESIS_HASH",
    "SCHEMA_VERSION",
    "Event",
    "EventStore",
    "LeaseHeld",
    "LeaseKeeper",
    "LeaseTakeover",
    "StoreError",
    "VerifyResult",
    "canonical_json",
    "event_hash",
    "to_jsonable",
    "utc_now",
]

SCHEMA_VERSION = 1
GENESIS_HASH = "0" * 64
BUSY_TIMEOUT_S = 30.0

_EVENT_COLUMNS = ("run_id", "seq", "utc", "stage", "step", "kind", "payload", "prev_hash", "hash")

_TRIGGERS_SQL = """
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS runs_no_update BEFORE UPDATE ON runs
BEGIN SELECT RAISE(ABORT, 'runs are append-only'); END;
CREATE TRIGGER IF NOT EXISTS runs_no_delete BEFORE DELETE ON runs
BEGIN SELECT RAISE(ABORT, 'runs are append-only'); END;
"""


class StoreError(Exception):
    """Raised when the event store cannot be opened, read or written as requested."""


class StoreCorrupt(StoreError):
    """The store's file is not a SQLite database, or its pages are damaged."""


class LeaseHeld(StoreError):
    """A live process holds the run's lease; ``holder`` is its ``pid:start time:host``."""

    def __init__(self, message: str, holder: str):
        super().__init__(message)
        self.holder = holder


@dataclass(frozen=True)
class Event:
    """One immutable entry of a run's event log.

    Attributes
    ----------
    run_id : str
        Identifier of the run the event belongs to.
    seq : int
        1-based position of the event within its run.
    utc : str
        ISO 8601 UTC timestamp with microseconds and a trailing ``'Z'``.
    stage : str
        Pipeline stage that emitted the event.
    step : str
        Step within the stage; ``''`` when not applicable.
    kind : str
        Event type, e.g. ``'started'`` or ``'completed'``.
    payload : dict
        Decoded JSON payload.
    prev_hash : str
        ``hash`` of the previous event of the run, or :data:`GENESIS_HASH`.
    hash : str
        SHA-256 hex digest of the event's canonical content (see :func:`event_hash`).
    """

    run_id: str
    seq: int
    utc: str
    stage: str
    step: str
    kind: str
    payload: dict
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of checking one run's hash chain.

    Attributes
    ----------
    run_id : str
        The run that was checked.
    ok : bool
        True when every stored event matches its hash and links to its predecessor.
    n_events : int
        Number of events stored for the run.
    first_bad_seq : int or None
        Sequence number of the first stored event that fails a check, None when `ok`.
    reason : str
        Human-readable description of the first failure; ``''`` when `ok`.
    """

    run_id: str
    ok: bool
    n_events: int
    first_bad_seq: int | None
    reason: str


def utc_now() -> str:
    """Return the current UTC time as an ISO 8601 string.

    Returns
    -------
    str
        Timestamp of the form ``YYYY-mm-ddTHH:MM:SS.ffffffZ``.
    """
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_jsonable(obj: Any) -> Any:
    """Convert `obj` into plain JSON types (dict, list, str, int, float, bool, None).

    Parameters
    ----------
    obj : object
        Value to convert. Supported: None, bool, int, float, str (and their
        subclasses), numpy scalars (integer, floating, bool) and arrays, mappings
        with string keys, lists, tuples and ``os.PathLike`` objects.

    Returns
    -------
    object
        An equivalent value built only from plain JSON types. Tuples and arrays
        become lists, paths become strings. Non-finite floats are kept as floats
        (they serialise as ``NaN``/``Infinity``, which Python's json reads back).

    Raises
    ------
    TypeError
        If `obj`, or anything nested in it, has an unsupported type, or a mapping
        has a non-string key.
    """
    if obj is None:
        return None
    # bool before int: bool is an int subclass and must stay true/false in JSON.
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    if isinstance(obj, str):
        # str.__str__ strips subclasses (e.g. str-mixin enums) down to the plain value.
        return str.__str__(obj)
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise TypeError(f"cannot convert numpy array of dtype {obj.dtype} to JSON")
        return to_jsonable(obj.tolist())
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be str, got {type(key).__name__}: {key!r}")
            out[str.__str__(key)] = to_jsonable(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(item) for item in obj]
    if isinstance(obj, os.PathLike):
        path = os.fspath(obj)
        if not isinstance(path, str):
            raise TypeError(f"cannot convert bytes path {path!r} to JSON")
        return path
    raise TypeError(f"object of type {type(obj).__name__} is not JSON-serialisable: {obj!r}")


def canonical_json(obj: Any) -> str:
    """Serialise plain JSON data in the store's canonical form.

    Parameters
    ----------
    obj : object
        Plain JSON data (see :func:`to_jsonable`).

    Returns
    -------
    str
        ``json.dumps`` with sorted keys, no whitespace and non-ASCII kept as is.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(
    run_id: str, seq: int, utc: str, stage: str, step: str, kind: str, payload: dict, prev_hash: str
) -> str:
    """Compute the chain hash of one event.

    Parameters
    ----------
    run_id, seq, utc, stage, step, kind, prev_hash
        The event's fields.
    payload : dict
        The decoded payload (not its JSON text).

    Returns
    -------
    str
        SHA-256 hex digest of the canonical JSON of the object
        ``{run_id, seq, utc, stage, step, kind, payload, prev_hash}``.
    """
    content = {
        "run_id": run_id,
        "seq": seq,
        "utc": utc,
        "stage": stage,
        "step": step,
        "kind": kind,
        "payload": payload,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()



def _process_start_time(pid: int) -> str | None:
    """Start time of a process in clock ticks since boot (Linux), None when it does not exist."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _process_identity() -> str:
    pid = os.getpid()
    return f"{pid}:{_process_start_time(pid)}:{socket.gethostname()}"


def _holder_alive_here(holder: str) -> bool | None:
    """Whether the process that wrote a lease still runs: None when it ran on another host.

    Only this host's ``/proc`` can say; a lease from another host is judged by its expiry.
    """
    pid, start, host = holder.split(":", 2)
    if host != socket.gethostname():
        return None
    return _process_start_time(int(pid)) == start


def _parse_utc(text: str) -> _dt.datetime:
    return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=_dt.UTC)


def _utc_in(seconds: float) -> str:
    return (_dt.datetime.now(_dt.UTC) + _dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: Seconds a lease stays valid after its holder's last heartbeat, unless the holder says otherwise.
DEFAULT_LEASE_EXPIRY_S = 300.0

_LEASES_SQL = ("CREATE TABLE IF NOT EXISTS leases (run_id TEXT PRIMARY KEY, holder TEXT NOT NULL, "
               "acquired_utc TEXT NOT NULL, heartbeat_utc TEXT, expires_utc TEXT)")


@dataclass(frozen=True)
class LeaseTakeover:
    """A lease taken from a holder that is gone: the facts the ``lease.taken_over`` event records.

    Attributes
    ----------
    previous_holder : str
        ``pid:start time:host`` of the holder whose lease was taken.
    acquired_utc, heartbeat_utc, expires_utc : str
        When that holder took the lease, its last heartbeat, and when the lease expired (or would have).
    reason : str
        Why it could be taken: the holder's process is gone (this host), or the lease expired.
    """

    previous_holder: str
    acquired_utc: str
    heartbeat_utc: str
    expires_utc: str
    reason: str

    def as_payload(self) -> dict:
        """The event payload."""
        return {"previous_holder": self.previous_holder, "acquired_utc": self.acquired_utc,
                "heartbeat_utc": self.heartbeat_utc, "expires_utc": self.expires_utc, "reason": self.reason}


class LeaseKeeper:
    """A thread that refreshes this process's lease on a run every ``expiry_s / 5`` seconds.

    It uses a connection of its own, so a long transaction elsewhere in the process never delays
    it. ``lost`` is set when the lease is found to belong to someone else (taken over after this
    process stalled longer than its expiry): the holder must then stop writing.
    """

    def __init__(self, path: pathlib.Path, run_id: str, holder: str, expiry_s: float):
        self.path, self.run_id, self.holder, self.expiry_s = path, run_id, holder, expiry_s
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{run_id}", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=BUSY_TIMEOUT_S)

    def _beat(self) -> None:
        conn = sqlite3.connect(os.fspath(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            while not self._stop.wait(self.expiry_s / 5):
                try:
                    cur = conn.execute("UPDATE leases SET heartbeat_utc = ?, expires_utc = ? "
                                       "WHERE run_id = ? AND holder = ?",
                                       [utc_now(), _utc_in(self.expiry_s), self.run_id, self.holder])
                except sqlite3.Error:
                    continue  # a busy or briefly unreadable store: the next beat tries again
                if cur.rowcount == 0:
                    row = conn.execute("SELECT holder FROM leases WHERE run_id = ?", [self.run_id]).fetchone()
                    self.lost = f"the lease on run {self.run_id} now belongs to {row[0] if row else 'nobody'}"
                    return
        finally:
            conn.close()


class EventStore:
    """Append-only event log of pipeline runs backed by one SQLite file.

    A fresh connection is opened for each operation, so an ``EventStore`` may be
    shared between threads and survives ``fork``; separate processes may open
    the same file and append concurrently (writers wait up to 30 s for the lock).

    Parameters
    ----------
    path : str or os.PathLike
        Database file. It is created, with the schema, if it does not exist.
    read_only : bool
        Open an existing store for reading only (also on a read-only file system); never create one.

    Attributes
    ----------
    path : pathlib.Path
        The database file.

    Raises
    ------
    StoreError
        If the file is not a SQLite database, cannot be opened or created, is a
        SQLite database without an event-store schema, or has an unsupported
        schema version. The message starts with the path.
    """

    def __init__(self, path: str | os.PathLike, read_only: bool = False) -> None:
        self.path = pathlib.Path(path)
        self.read_only = read_only
        self._closed = False
        self._conn = None
        self._conn_pid = None
        self._lock = threading.RLock()
        self._exclusive = False
        if read_only and not self.path.is_file():
            raise StoreError(f"{self.path}: no event store here")
        try:
            with self._db() as db:
                if read_only:
                    self._check_version(db)
                else:
                    self._ensure_schema(db)
        except sqlite3.Error as exc:
            self.close()
            raise StoreError(f"{self.path}: cannot open event store: {exc}") from exc

    def __repr__(self) -> str:
        return f"EventStore({str(self.path)!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; later calls raise :class:`StoreError`."""
        with self._lock:
            if self._conn is not None and self._conn_pid == os.getpid():
                self._conn.close()
            self._conn = None
            self._closed = True

    def __del__(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None and getattr(self, "_conn_pid", None) == os.getpid():
            conn.close()

    # -- connections ---------------------------------------------------------

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite_utils.Database]:
        """The store's connection, opened once per process and used by one thread at a time.

        One long-lived connection, because closing the last connection to a WAL database
        checkpoints it: a connection per call made every append cost milliseconds. A forked
        child opens its own.
        """
        with self._lock:
            if self._closed:
                raise StoreError(f"{self.path}: event store is closed")
            if self._conn is None or self._conn_pid != os.getpid():
                self._conn, self._conn_pid = self._connect(), os.getpid()
            try:
                yield sqlite_utils.Database(self._conn, recursive_triggers=False, execute_plugins=False)
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError):
                    raise
                # Not a database, or a damaged one: no retry will help, and it must not look like a bug.
                raise StoreCorrupt(f"{self.path}: damaged event store ({exc})") from exc

    def _connect(self) -> sqlite3.Connection:
        """A new connection; a file that is not a database, or a damaged one, raises :class:`StoreCorrupt`."""
        # isolation_level=None: transactions are begun explicitly (BEGIN IMMEDIATE), never implicitly
        # by the sqlite3 module as a deferred read that later fails to upgrade to a write lock without waiting.
        writable = os.access(self.path.parent, os.W_OK) and os.access(self.path, os.W_OK)
        if self.read_only and writable:
            # Opened as a writer that may not write (query_only): a reader of a WAL store makes its
            # -wal and -shm files, and only a writer, closing last, removes them again.
            conn = sqlite3.connect(os.fspath(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
        elif self.read_only:
            # Nothing can be writing a store this process may not write (a read-only file system, a
            # file of another user): read it as it is, without a WAL index.
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro&immutable=1", uri=True,
                                   timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        else:
            conn = sqlite3.connect(os.fspath(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
        try:
            if self.read_only and writable:
                conn.execute("PRAGMA query_only = ON")
            elif not self.read_only:
                # In WAL mode NORMAL keeps every committed event through a process crash and never
                # corrupts the file; only an OS crash could drop the last commits.
                conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            conn.close()
            if isinstance(exc, sqlite3.OperationalError):
                raise
            # A truncated file fails here, on the first statement, before any table is read.
            raise StoreCorrupt(f"{self.path}: damaged event store ({exc})") from exc
        return conn

    @staticmethod
    @contextlib.contextmanager
    def _write_on(db: sqlite_utils.Database) -> Iterator[None]:
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            raise
        db.conn.execute("COMMIT")

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite_utils.Database]:
        with self._db() as db:
            if self._exclusive:  # inside exclusive(): its transaction already holds the write lock
                yield db
                return
            with self._write_on(db):
                yield db

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the store's write lock across several calls, as one transaction.

        What the calls inside read cannot change before they write: no other process can append,
        create a run or take a lease in between (they wait, up to the busy timeout). Used to find an
        input's unfinished run and create a new one (with its lease) as one step.
        """
        with self._db() as db, self._write_on(db):
            self._exclusive = True
            try:
                yield
            finally:
                self._exclusive = False

    def _ensure_schema(self, db: sqlite_utils.Database) -> None:
        if "schema" not in db.table_names():
            with self._write_on(db):
                # Re-check under the write lock: another process may have just created it.
                names = set(db.table_names())
                if "schema" not in names:
                    if names:
                        raise StoreError(
                            f"{self.path}: SQLite database without an event-store schema "
                            f"(tables: {', '.join(sorted(names))})"
                        )
                    self._create_schema(db)
        self._check_version(db)
        db.enable_wal()

    @staticmethod
    def _create_schema(db: sqlite_utils.Database) -> None:
        db.table("schema").create({"version": int}, not_null={"version"})
        db.table("schema").insert({"version": SCHEMA_VERSION})
        db.table("runs").create(
            {"run_id": str, "input": str, "root": str, "created_utc": str},
            pk="run_id",
            not_null={"run_id", "input", "root", "created_utc"},
        )
        db.table("events").create(
            {
                "run_id": str,
                "seq": int,
                "utc": str,
                "stage": str,
                "step": str,
                "kind": str,
                "payload": str,
                "prev_hash": str,
                "hash": str,
            },
            pk=("run_id", "seq"),
            not_null=set(_EVENT_COLUMNS),
        )
        db.executescript(_TRIGGERS_SQL)

    def _check_version(self, db: sqlite_utils.Database) -> None:
        row = db.execute("SELECT version FROM schema").fetchone()
        if row is None:
            raise StoreError(f"{self.path}: schema table is empty")
        version = row[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this software ({SCHEMA_VERSION})"
            )
        if version < SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is older than this software ({SCHEMA_VERSION})"
            )

    def integrity_problem(self) -> str | None:
        """SQLite's ``quick_check`` of the whole file: None when it is sound, else its first finding."""
        with self._db() as db:
            rows = [r[0] for r in db.execute("PRAGMA quick_check").fetchall()]
        if rows == ["ok"]:
            return None
        findings = [ln.strip() for row in rows for ln in row.splitlines() if ln.strip() and not ln.startswith("***")]
        return "; ".join(findings[:3]) + (f" and {len(findings) - 3} more" if len(findings) > 3 else "")

    # -- one writer per run -------------------------------------------------------
    def acquire_lease(self, run_id: str, expiry_s: float = DEFAULT_LEASE_EXPIRY_S) -> LeaseTakeover | None:
        """Become the one process allowed to advance a run.

        The lease names its holder by pid, process start time and host, and says until when it is
        valid (``expiry_s`` after the holder's last heartbeat, see :meth:`keep_lease`). A lease whose
        holder ran on this host lapses when that process is gone (a SIGKILL leaves the row behind,
        but the process is gone; a recycled pid is not mistaken for it). A lease from another host,
        whose process this host cannot see, lapses at its expiry: a node that died frees its runs.

        Parameters
        ----------
        run_id : str
        expiry_s : float
            Seconds the lease stays valid after each heartbeat.

        Returns
        -------
        LeaseTakeover or None
            What was taken over from a holder that is gone, None when the run had no lease.

        Raises
        ------
        LeaseHeld
            When a live process holds the lease (on another host: one whose lease has not expired).
        """
        now = utc_now()
        with self._write() as db:
            self._ensure_leases(db)
            takeover = self._lease_state(db, run_id)
            db.execute("INSERT OR REPLACE INTO leases (run_id, holder, acquired_utc, heartbeat_utc, expires_utc) "
                       "VALUES (?, ?, ?, ?, ?)", [run_id, _process_identity(), now, now, _utc_in(expiry_s)])
        return takeover

    def check_lease(self, run_id: str) -> None:
        """Raise :class:`LeaseHeld` when a live process other than this one holds ``run_id``'s lease.

        As :meth:`acquire_lease` judges it, without taking the lease.
        """
        with self._db() as db:
            if "leases" in db.table_names():
                self._lease_state(db, run_id)

    @staticmethod
    def _lease_state(db: sqlite_utils.Database, run_id: str) -> LeaseTakeover | None:
        """What taking ``run_id``'s lease now would take over; :class:`LeaseHeld` if a live holder has it."""
        row = db.execute("SELECT holder, acquired_utc, heartbeat_utc, expires_utc FROM leases "
                         "WHERE run_id = ?", [run_id]).fetchone()
        if row is None or row[0] == _process_identity():
            return None
        holder, acquired, heartbeat = row[0], row[1], row[2] or row[1]
        # A lease written before leases expired: valid for the default expiry after it was taken.
        expires = row[3] or (_parse_utc(acquired) + _dt.timedelta(seconds=DEFAULT_LEASE_EXPIRY_S)
                             ).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        alive = _holder_alive_here(holder)
        pid, _, host = holder.split(":", 2)
        if alive or (alive is None and _parse_utc(expires) > _parse_utc(utc_now())):
            until = "" if alive else f", lease expires {expires} unless renewed"
            raise LeaseHeld(f"run {run_id} is being processed by pid {pid} on {host} "
                            f"(since {acquired}, last heartbeat {heartbeat}{until}); one writer at a time", holder)
        reason = ("the holder's process is gone" if alive is False
                  else f"the lease of pid {pid} on {host} expired at {expires}")
        return LeaseTakeover(holder, acquired, heartbeat, expires, reason)

    def keep_lease(self, run_id: str, expiry_s: float = DEFAULT_LEASE_EXPIRY_S) -> LeaseKeeper:
        """A context that refreshes this process's lease on ``run_id`` until it exits (see :class:`LeaseKeeper`)."""
        return LeaseKeeper(self.path, run_id, _process_identity(), expiry_s)

    def lease(self, run_id: str) -> dict | None:
        """The lease row of a run (holder, acquired, heartbeat and expiry times), None when it has none."""
        with self._db() as db:
            if "leases" not in db.table_names():
                return None
            rows = list(db.query("SELECT * FROM leases WHERE run_id = ?", [run_id]))
        return rows[0] if rows else None

    def release_lease(self, run_id: str) -> None:
        """Give up the lease on a run (only the holder's own lease is removed)."""
        with self._write() as db:
            self._ensure_leases(db)
            db.execute("DELETE FROM leases WHERE run_id = ? AND holder = ?", [run_id, _process_identity()])

    @staticmethod
    def _ensure_leases(db: sqlite_utils.Database) -> None:
        db.execute(_LEASES_SQL)
        columns = {c.name for c in db.table("leases").columns}
        # Stores made before leases expired have neither column: add them (their rows read as expiring
        # the default time after they were taken).
        for name in ("heartbeat_utc", "expires_utc"):
            if name not in columns:
                db.execute(f"ALTER TABLE leases ADD COLUMN {name} TEXT")

    # -- runs ----------------------------------------------------------------

    def create_run(self, input: str | os.PathLike, root: str, run_id: str | None = None) -> str:
        """Register a new run.

        Parameters
        ----------
        input : str or os.PathLike
            Path of the input file, stored as given (not resolved).
        root : str
            Association rootname.
        run_id : str, optional
            Identifier to use. Default ``f"{root}-{YYYYmmddTHHMMSS}-{4 random hex}"``.

        Returns
        -------
        str
            The run identifier.

        Raises
        ------
        StoreError
            If a run with this identifier already exists.
        """
        now = _dt.datetime.now(_dt.UTC)
        if run_id is None:
            run_id = f"{root}-{now:%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"
        row = {
            "run_id": run_id,
            "input": os.fspath(input),
            "root": root,
            "created_utc": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        try:
            with self._write() as db:
                if db.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchone():
                    raise StoreError(f"run {run_id!r} already exists in {self.path}")
                db.table("runs").insert(row)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot create run {run_id!r}: {exc}") from exc
        return run_id

    def runs(self) -> list[dict]:
        """List all runs.

        Returns
        -------
        list of dict
            Rows with keys ``run_id``, ``input``, ``root``, ``created_utc``,
            ordered by ``created_utc`` then ``run_id``.
        """
        with self._db() as db:
            return list(db.query("SELECT * FROM runs ORDER BY created_utc, run_id"))

    def get_run(self, run_id: str) -> dict:
        """Return one run's row.

        Parameters
        ----------
        run_id : str
            Run identifier.

        Returns
        -------
        dict
            Keys ``run_id``, ``input``, ``root``, ``created_utc``.

        Raises
        ------
        StoreError
            If there is no such run.
        """
        with self._db() as db:
            rows = list(db.query("SELECT * FROM runs WHERE run_id = ?", [run_id]))
        if not rows:
            raise StoreError(f"no run {run_id!r} in {self.path}")
        return rows[0]

    def latest_run(self, input: str | os.PathLike | None = None) -> dict | None:
        """Return the most recently created run.

        Parameters
        ----------
        input : str or os.PathLike, optional
            Only consider runs whose stored input path equals this one exactly.

        Returns
        -------
        dict or None
            The run's row, or None if there is no matching run.
        """
        sql = "SELECT * FROM runs"
        params: list[str] = []
        if input is not None:
            sql += " WHERE input = ?"
            params.append(os.fspath(input))
        sql += " ORDER BY created_utc DESC, run_id DESC LIMIT 1"
        with self._db() as db:
            rows = list(db.query(sql, params))
        return rows[0] if rows else None

    # -- events --------------------------------------------------------------

    def append(
        self,
        run_id: str,
        stage: str,
        step: str | None,
        kind: str,
        payload: Mapping[str, Any] | None = None,
        utc: str | None = None,
    ) -> Event:
        """Append one event to a run's log.

        Parameters
        ----------
        run_id : str
            An existing run.
        stage : str
            Pipeline stage emitting the event.
        step : str or None
            Step within the stage; None is stored as ``''``.
        kind : str
            Event type.
        payload : mapping, optional
            Event data; converted with :func:`to_jsonable`. Default ``{}``.
        utc : str, optional
            Timestamp to record; default the current time (see :func:`utc_now`).

        Returns
        -------
        Event
            The stored event, with its payload decoded from the stored JSON.

        Raises
        ------
        StoreError
            If the run does not exist or the database cannot be written.
        TypeError
            If `payload` is not a mapping or holds values that are not JSON-serialisable.
        """
        return self.append_many(run_id, [(stage, step, kind, payload)], utc)[0]

    def append_many(self, run_id: str, entries: Sequence[tuple], utc: str | None = None) -> list[Event]:
        """Append several events to a run's log in one transaction: all of them, or none.

        Parameters
        ----------
        run_id : str
            An existing run.
        entries : sequence of (stage, step, kind, payload)
            As the arguments of :meth:`append`, in log order.
        utc : str, optional
            Timestamp of every event; default the current time.

        Returns
        -------
        list of Event

        Raises
        ------
        StoreError, TypeError
            As :meth:`append`.
        """
        utc = utc_now() if utc is None else utc
        prepared = []
        for stage, step, kind, payload in entries:
            if payload is None:
                payload = {}
            if not isinstance(payload, Mapping):
                raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
            payload_text = canonical_json(to_jsonable(payload))
            # Hash the decoded form so that it matches what verify() recomputes from storage.
            prepared.append((stage, "" if step is None else step, kind, payload_text, json.loads(payload_text)))
        out = []
        try:
            with self._write() as db:
                if not db.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchone():
                    raise StoreError(f"no run {run_id!r} in {self.path}")
                last = db.execute(
                    "SELECT seq, hash FROM events WHERE run_id = ? ORDER BY seq DESC LIMIT 1", [run_id]
                ).fetchone()
                seq, prev_hash = (0, GENESIS_HASH) if last is None else (last[0], last[1])
                for stage, step, kind, payload_text, decoded in prepared:
                    seq += 1
                    digest = event_hash(run_id, seq, utc, stage, step, kind, decoded, prev_hash)
                    row = (run_id, seq, utc, stage, step, kind, payload_text, prev_hash, digest)
                    db.table("events").insert(dict(zip(_EVENT_COLUMNS, row)))
                    out.append(Event(run_id, seq, utc, stage, step, kind, decoded, prev_hash, digest))
                    prev_hash = digest
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot append to run {run_id!r}: {exc}") from exc
        return out

    def _rows(self, run_id: str) -> list[tuple]:
        with self._db() as db:
            return db.execute(
                f"SELECT {', '.join(_EVENT_COLUMNS)} FROM events WHERE run_id = ? ORDER BY seq", [run_id]
            ).fetchall()

    def events(self, run_id: str) -> list[Event]:
        """Return a run's events.

        Parameters
        ----------
        run_id : str
            Run identifier. An unknown run yields an empty list.

        Returns
        -------
        list of Event
            Ordered by ``seq``.

        Raises
        ------
        StoreError
            If a stored payload is not valid JSON (the log has been tampered with).
        """
        out = []
        for row in self._rows(run_id):
            rid, seq, utc, stage, step, kind, payload_text, prev_hash, digest = row
            try:
                payload = json.loads(payload_text)
            except (TypeError, ValueError) as exc:
                raise StoreError(f"{self.path}: run {rid!r} seq {seq}: payload is not valid JSON") from exc
            out.append(Event(rid, seq, utc, stage, step, kind, payload, prev_hash, digest))
        return out

    def verify(self, run_id: str) -> VerifyResult:
        """Check a run's hash chain.

        Each stored event must have the next consecutive ``seq`` (starting at 1),
        a ``prev_hash`` equal to the previous event's ``hash`` (or
        :data:`GENESIS_HASH` for seq 1), a canonical-JSON payload, and a ``hash``
        equal to :func:`event_hash` recomputed from its content. Checking stops at
        the first failure.

        Removal of the *last* event(s) of a run leaves a valid shorter chain and
        cannot be detected from the chain alone; compare `n_events` against an
        externally recorded count if that matters.

        Parameters
        ----------
        run_id : str
            Run identifier.

        Returns
        -------
        VerifyResult
            ``first_bad_seq`` is the stored seq of the first failing event; after a
            gap it is the seq found following the missing one(s). ``reason`` reads
            e.g. ``"seq 5: hash mismatch (content altered)"``,
            ``"seq 7: prev_hash does not match seq 6"`` or
            ``"seq 4: missing (expected 4, found 5)"``.

        Raises
        ------
        StoreError
            If there is no such run.
        """
        self.get_run(run_id)
        rows = self._rows(run_id)
        n = len(rows)

        def bad(seq: int, reason: str) -> VerifyResult:
            return VerifyResult(run_id, False, n, seq, reason)

        expected = 1
        prev_hash = GENESIS_HASH
        for rid, seq, utc, stage, step, kind, payload_text, stored_prev, stored_hash in rows:
            if seq != expected:
                if isinstance(seq, int) and seq > expected:
                    return bad(seq, f"seq {expected}: missing (expected {expected}, found {seq})")
                return bad(seq, f"seq {seq}: out of order (expected {expected})")
            if stored_prev != prev_hash:
                link = "the genesis hash" if seq == 1 else f"seq {seq - 1}"
                return bad(seq, f"seq {seq}: prev_hash does not match {link}")
            try:
                payload = json.loads(payload_text)
            except (TypeError, ValueError):
                return bad(seq, f"seq {seq}: payload is not valid JSON (content altered)")
            if not isinstance(payload, dict) or canonical_json(payload) != payload_text:
                return bad(seq, f"seq {seq}: payload is not in canonical form (content altered)")
            recomputed = event_hash(rid, seq, utc, stage, step, kind, payload, stored_prev)
            if recomputed != stored_hash:
                return bad(seq, f"seq {seq}: hash mismatch (content altered)")
            prev_hash = stored_hash
            expected += 1
        return VerifyResult(run_id, True, n, None, "")
