"""The campaign ledger: one SQLite file, written only by the ``batch`` driver.

Each association's event log stays the truth about its run; the ledger records what the campaign
did with it: every attempt (which command, where, its exit code or signal, wall time, peak memory)
and the batches that made them. An association's state is that of its latest attempt; nothing
else holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ..errors import LogCorruptError, RunStateError
from ..store.eventstore import utc_now

LEDGER_NAME = "campaign.db"
LEDGER_VERSION = 1

#: Verdicts of an attempt: what the driver concluded from it.
DONE, SKIPPED, FAILED, RETRY = "done", "skipped", "failed", "retry"
#: Another live process (another batch or operator) held the association's run: waited for, then planned again.
HELD = "held elsewhere"
#: The action of a row that ran no process: a finished run found in its store, which the ledger had no record of.
FOUND = "found"
#: The state of an association, from the verdict of its latest attempt.
STATE_OF_VERDICT = {DONE: "done", SKIPPED: "skipped", FAILED: "failed", RETRY: "unfinished", HELD: "unfinished"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    batch_id INTEGER PRIMARY KEY, started_utc TEXT NOT NULL, ended_utc TEXT, cluster TEXT, dashboard TEXT,
    associations INTEGER NOT NULL, already_done INTEGER, options TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS associations (
    input TEXT PRIMARY KEY, root TEXT NOT NULL, added_utc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (
    input TEXT NOT NULL REFERENCES associations(input), attempt INTEGER NOT NULL, batch_id INTEGER NOT NULL,
    action TEXT NOT NULL, run_id TEXT, store TEXT, exit_code INTEGER, signal INTEGER, exit_class TEXT NOT NULL,
    verdict TEXT NOT NULL, wall_s REAL, peak_rss_bytes INTEGER, memory_budget_bytes INTEGER,
    memory_killed INTEGER NOT NULL DEFAULT 0, host TEXT, worker TEXT, started_utc TEXT, ended_utc TEXT,
    message TEXT, wcsname TEXT, wcs_type TEXT, PRIMARY KEY (input, attempt));
"""


class LedgerError(RunStateError):
    """There is no ledger at the path given."""


class LedgerCorrupt(LogCorruptError):
    """The file is not a campaign ledger, or is damaged."""


@dataclass(frozen=True)
class Attempt:
    """One row of ``attempts``: one process run for one association, or a finished run found in its store.

    Attributes
    ----------
    input : str
        The association's input file (resolved path).
    attempt : int
        1, 2, ... per association across batches; 0 for a run found already done.
    batch_id : int
    action : {'start', 'resume', 'found'}
    run_id, store : str or None
        The run and its event store.
    exit_code : int or None
        The process's exit code; None when it was killed by a signal or its worker was lost.
    signal : int or None
        The signal that killed it.
    exit_class : str
        ``ok``, ``input``, ... (the exit code's name), ``signal SIGKILL``, ``memory`` or ``worker lost``.
    verdict : {'done', 'skipped', 'failed', 'retry', 'held elsewhere'}
    wall_s : float or None
    peak_rss_bytes : int or None
        Peak resident memory of the process and its children.
    memory_budget_bytes : int or None
        The memory the attempt was allowed (its process tree was killed past it).
    memory_killed : bool
    host, worker : str or None
        Where it ran (host name, Dask worker address).
    started_utc, ended_utc : str or None
    message : str or None
        The process's last line on standard error (its one-line error), or why it was retried.
    wcsname, wcs_type : str or None
        The final products' WCSNAME and its type (``default``, ``a priori``, ``a posteriori``).
    """

    input: str
    attempt: int
    batch_id: int
    action: str
    run_id: str | None
    store: str | None
    exit_code: int | None
    signal: int | None
    exit_class: str
    verdict: str
    wall_s: float | None = None
    peak_rss_bytes: int | None = None
    memory_budget_bytes: int | None = None
    memory_killed: bool = False
    host: str | None = None
    worker: str | None = None
    started_utc: str | None = None
    ended_utc: str | None = None
    message: str | None = None
    wcsname: str | None = None
    wcs_type: str | None = None


_COLUMNS = tuple(Attempt.__dataclass_fields__)


class Ledger:
    """The campaign ledger at ``path`` (created when ``create``).

    Raises
    ------
    LedgerError
        When the file does not exist and ``create`` is False (exit 7).
    LedgerCorrupt
        When it is not SQLite, or not a ledger (exit 8).
    """

    def __init__(self, path: str | os.PathLike, create: bool = False):
        self.path = Path(path).resolve()
        if not create and not self.path.is_file():
            raise LedgerError(f"{self.path}: no campaign ledger here (give its path, or run batch first)",
                              str(self.path))
        if not self.path.parent.is_dir():
            raise LedgerError(f"{self.path}: cannot create the campaign ledger: directory {self.path.parent} "
                              "does not exist", str(self.path))
        if self.path.is_file() and self.path.stat().st_size == 0:
            # sqlite would take it for a new database; a ledger is never empty once made.
            raise LedgerCorrupt(f"{self.path}: empty file, not a campaign ledger", str(self.path))
        try:
            self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "ledger" not in tables:
                raise LedgerCorrupt(f"{self.path}: SQLite file without a campaign ledger (tables: "
                                    f"{', '.join(sorted(tables))})", str(self.path))
            if not tables and not create:
                raise LedgerCorrupt(f"{self.path}: SQLite file without a campaign ledger (no tables)", str(self.path))
            # Checked before anything is written: a damaged page found later would take a batch row with it.
            problems = [r[0] for r in self._conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise LedgerCorrupt(f"{self.path}: damaged campaign ledger ({problems[0]})", str(self.path))
            if create:
                self._conn.executescript(_SCHEMA)
                if self._conn.execute("SELECT COUNT(*) FROM ledger").fetchone()[0] == 0:
                    self._conn.execute("INSERT INTO ledger VALUES (?)", [LEDGER_VERSION])
        except sqlite3.DatabaseError as exc:
            what = "not a campaign ledger" if "not a database" in str(exc) else "damaged campaign ledger"
            raise LedgerCorrupt(f"{self.path}: {what} ({exc})", str(self.path)) from None

    def close(self) -> None:
        """Close the connection (and give up the driver's lock, if this ledger holds it)."""
        self._conn.close()
        if getattr(self, "_lock", None) is not None:
            # Removed while still locked: a batch that opened it meanwhile finds, once it holds the
            # lock, that the name no longer leads to its file, and opens the name anew.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._lock.name)
            self._lock.close()
            self._lock = None

    def lock_for_driver(self) -> None:
        """Become the one batch that writes this ledger, until :meth:`close`.

        A lock file beside the ledger (``<ledger>.lock``, ``flock``), so that two batches on one
        ledger do not run the same associations against each other.

        Raises
        ------
        LedgerError
            When another batch holds it (exit 7); the message names its pid and host.
        """
        path = self.path.with_name(self.path.name + ".lock")
        while True:
            lock = open(path, "a+")  # noqa: SIM115 - held open for the batch's lifetime, closed by close()
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "another process"
                lock.close()
                raise LedgerError(f"{self.path}: in use by another batch ({holder}); one batch per ledger at a "
                                  "time", str(self.path)) from None
            try:
                if os.stat(path).st_ino == os.fstat(lock.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            lock.close()  # a batch that ended removed this file after it was opened here: open the name anew
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        lock.flush()
        self._lock = lock

    # -- the driver's writes ---------------------------------------------------------------------
    def begin_batch(self, associations: int, options: dict) -> int:
        """Record a new batch; return its id."""
        cur = self._conn.execute("INSERT INTO batches (started_utc, associations, options) VALUES (?, ?, ?)",
                                 [utc_now(), associations, json.dumps(options, sort_keys=True)])
        return cur.lastrowid

    def describe_batch(self, batch_id: int, *, cluster: str | None = None, dashboard: str | None = None,
                       already_done: int | None = None) -> None:
        """Record where a batch runs and how many of its associations were already done."""
        for column, value in (("cluster", cluster), ("dashboard", dashboard), ("already_done", already_done)):
            if value is not None:
                self._conn.execute(f"UPDATE batches SET {column} = ? WHERE batch_id = ?", [value, batch_id])

    def end_batch(self, batch_id: int) -> None:
        """Record the end of a batch."""
        self._conn.execute("UPDATE batches SET ended_utc = ? WHERE batch_id = ?", [utc_now(), batch_id])

    def add_association(self, input: str, root: str) -> None:
        """Register an association (once; later batches find it there)."""
        self._conn.execute("INSERT OR IGNORE INTO associations VALUES (?, ?, ?)", [input, root, utc_now()])

    def next_attempt(self, input: str) -> int:
        """The number the next attempt on ``input`` gets."""
        row = self._conn.execute("SELECT MAX(attempt) FROM attempts WHERE input = ?", [input]).fetchone()
        return (row[0] or 0) + 1

    def record(self, attempt: Attempt) -> None:
        """Append one attempt."""
        values = [getattr(attempt, c) for c in _COLUMNS]
        self._conn.execute(f"INSERT INTO attempts ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(values))})",
                           values)

    # -- reading ---------------------------------------------------------------------------------
    def associations(self) -> list[dict]:
        """Every association: ``input``, ``root`` and its ``attempts`` (list of :class:`Attempt`, in order)."""
        rows = self._conn.execute("SELECT input, root FROM associations ORDER BY added_utc, input").fetchall()
        out = {inp: {"input": inp, "root": root, "attempts": []} for inp, root in rows}
        for row in self._conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM attempts ORDER BY input, attempt"):
            a = _attempt(row)
            out[a.input]["attempts"].append(a)
        return list(out.values())

    def attempts_of(self, input: str) -> list[Attempt]:
        """The attempts on one association, in order."""
        rows = self._conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM attempts WHERE input = ? ORDER BY attempt",
                                  [input]).fetchall()
        return [_attempt(row) for row in rows]

    def batches(self) -> list[dict]:
        """Every batch, oldest first."""
        cur = self._conn.execute("SELECT * FROM batches ORDER BY batch_id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]


def _attempt(row: tuple) -> Attempt:
    values = dict(zip(_COLUMNS, row))
    values["memory_killed"] = bool(values["memory_killed"])
    return Attempt(**values)


def state_of(attempts: list[Attempt]) -> str:
    """An association's state: ``pending`` before any attempt, else that of the latest attempt's verdict."""
    return STATE_OF_VERDICT[attempts[-1].verdict] if attempts else "pending"


def process_attempts(attempts: list[Attempt]) -> list[Attempt]:
    """The attempts that worked on the association's run: not the runs found already done, nor the
    starts that found another live process holding it (they did nothing)."""
    return [a for a in attempts if a.action != FOUND and a.verdict != HELD]
