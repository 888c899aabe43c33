"""An association's run as its event store records it: the one reader of the driver, the worker and the page.

The driver plans from the input's latest run, the worker reports it after its process ended, and the
campaign's report page reads the run the ledger's latest attempt names. All three open the store
here, read-only, check the run's hash chain as every reader of a run does, and get the events with
what the store said when it could not give them: a log that does not verify gives none of its
events, so nothing it says passes for what the run recorded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..model import STAGE_LABELS
from ..statemachine import RunState, fold
from ..store.eventstore import EventStore, StoreError
from ..views.banner import does_not_verify

# What a store says about a run: read, or why not.
NO_RUN, STORE_MISSING, STORE_UNREADABLE, RUN_MISSING, NOT_VERIFIED, READ = (
    "no run", "store missing", "store unreadable", "run not in its store", "log does not verify", "read")
# WCS type of the final products, by the stage whose WCS the final decision chose; the ledgers
# written so far call the pipeline-default WCS "default".
WCS_TYPES = {**STAGE_LABELS, "default": "default"}


@dataclass(frozen=True)
class StoredRun:
    """One run read from an association's event store.

    Attributes
    ----------
    state : str
        :data:`READ`, or why not: :data:`NO_RUN`, :data:`STORE_MISSING`, :data:`STORE_UNREADABLE`,
        :data:`RUN_MISSING`, :data:`NOT_VERIFIED`.
    problem : str or None
        The store's own words when the run could not be read; for :data:`NOT_VERIFIED`, the check's
        (``run <id>: the log does not verify (first bad event: seq <n>: <why>)``).
    run_id : str or None
    events : tuple of Event
        Empty unless ``state`` is :data:`READ`.
    first_bad_seq : int or None
        The first event of the run's log that fails the hash check (:data:`NOT_VERIFIED` only).
    """

    state: str
    problem: str | None = None
    run_id: str | None = None
    events: tuple = ()
    first_bad_seq: int | None = None

    @cached_property
    def run(self) -> RunState | None:
        """The folded run; None unless read."""
        return fold(self.events) if self.events else None


def read_run(store: str | os.PathLike | None, *, input: str | None = None, run_id: str | None = None) -> StoredRun:
    """The run ``run_id`` of ``store``, or else the latest run of ``input`` in it.

    Parameters
    ----------
    store : path or None
        The association's event store.
    input : str, optional
        The input file as the run recorded it; its latest run is read when no ``run_id`` is given.
    run_id : str, optional
        The run to read (the one a ledger attempt names).

    Returns
    -------
    StoredRun
        :data:`NO_RUN` without a store or without a run to look for (the process stopped before it
        made a run), :data:`NOT_VERIFIED` (and no events) when the run's hash chain does not verify;
        never raises for a missing, damaged or foreign store.
    """
    if not store or not (run_id or input):
        return StoredRun(NO_RUN, "the run never started: no event log")
    if not Path(store).is_file():
        return StoredRun(STORE_MISSING, f"{store}: the event store is gone")
    try:
        events_store = EventStore(store, read_only=True)
    except StoreError as exc:
        return StoredRun(STORE_UNREADABLE, str(exc))
    try:
        if run_id is None:
            row = events_store.latest_run(str(input))
            if row is None:
                return StoredRun(RUN_MISSING, f"{store}: no run of {input} in it")
            run_id = row["run_id"]
        try:
            events_store.get_run(run_id)
        except StoreError:
            return StoredRun(RUN_MISSING, f"{store}: no run {run_id} in it", run_id)
        # The chain is checked before any event is read, as every reader of a run does (api.read_run).
        check = events_store.verify(run_id)
        if not check.ok:
            return StoredRun(NOT_VERIFIED, does_not_verify(check), run_id, first_bad_seq=check.first_bad_seq)
        events = events_store.events(run_id)
    except StoreError as exc:
        return StoredRun(STORE_UNREADABLE, str(exc), run_id)
    finally:
        events_store.close()
    if not events:
        return StoredRun(RUN_MISSING, f"{store}: no run {run_id} in it", run_id)
    return StoredRun(READ, None, run_id, tuple(events))


def run_summary(store: str | os.PathLike, input: str) -> dict:
    """The input's latest run in its store: id, status, exit code, WCSNAME and WCS type (all None without one)."""
    stored = read_run(store, input=input)
    run = stored.run
    if run is None:
        return {"run_id": None, "run_status": None, "exit_code": None, "wcsname": None, "wcs_type": None}
    chosen = run.decision("wcs")
    done = bool(run.ended) and run.ended["status"] == "done"
    return {"run_id": stored.run_id, "run_status": run.ended["status"] if run.ended else "unfinished",
            "exit_code": run.ended["exit_code"] if run.ended else None,
            "wcsname": chosen.get("chosen_wcsname") if done else None,
            "wcs_type": WCS_TYPES.get(chosen.get("chosen_stage")) if done else None}
