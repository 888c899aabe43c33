"""The one reader of an association's run that the driver, the worker and the campaign page share."""

from __future__ import annotations

from pathlib import Path

from astrodriz_sm.campaign.driver import Plan, plan
from astrodriz_sm.campaign.runs import (
    NO_RUN,
    READ,
    RUN_MISSING,
    STORE_MISSING,
    STORE_UNREADABLE,
    read_run,
    run_summary,
)
from astrodriz_sm.store.eventstore import EventStore

WCSNAME = "IDC_0461802ej-FIT_REL_GAIAeDR3"


def _store(directory: Path, input: Path, ended: bool = True) -> tuple[Path, list[str]]:
    """An event store with two runs of ``input``: the later one chose an a posteriori WCS (and ended, if asked)."""
    path = directory / "astrodriz_sm.db"
    store = EventStore(path)
    ids = []
    for n in range(2):
        run_id = store.create_run(str(input), "jsm001010", run_id=f"jsm001010-{n}")
        store.append(run_id, "init", "", "run.started", {"config": {"input": str(input)}})
        store.append(run_id, "final", "choose", "step.started", {"fingerprint": "f"})
        store.append_many(run_id, [("final", "choose", "decision", {"decision": "wcs", "chosen_stage": "aposteriori",
                                                                     "chosen_wcsname": WCSNAME}),
                                   ("final", "choose", "step.completed", {})])
        if ended or n == 0:
            store.append(run_id, "done", "", "run.ended", {"status": "done", "exit_code": 0})
        ids.append(run_id)
    store.close()
    return path, ids


def test_the_latest_run_of_an_input_or_the_run_named(tmp_path):
    input = tmp_path / "jsm001010_asn.fits"
    path, (first, latest) = _store(tmp_path, input)
    stored = read_run(path, input=str(input))
    assert (stored.state, stored.problem, stored.run_id) == (READ, None, latest)
    assert [e.kind for e in stored.events] == ["run.started", "step.started", "decision", "step.completed",
                                               "run.ended"]
    assert stored.run.decision("wcs")["chosen_wcsname"] == WCSNAME
    assert read_run(path, run_id=first).run_id == first
    assert run_summary(path, str(input)) == {"run_id": latest, "run_status": "done", "exit_code": 0,
                                             "wcsname": WCSNAME, "wcs_type": "a posteriori"}


def test_what_the_store_says_when_it_has_no_run_to_give(tmp_path):
    input = tmp_path / "jsm001010_asn.fits"
    path, _ = _store(tmp_path, input)
    assert read_run(None, run_id="r") == read_run(path) == read_run(path, run_id=None, input=None)
    assert read_run(path).state == NO_RUN and read_run(path).problem == "the run never started: no event log"
    gone = tmp_path / "gone" / "astrodriz_sm.db"
    assert (read_run(gone, input=str(input)).state, read_run(gone, input=str(input)).problem) == (
        STORE_MISSING, f"{gone}: the event store is gone")
    other = str(tmp_path / "jsm002010_asn.fits")
    assert (read_run(path, input=other).state, read_run(path, input=other).problem) == (
        RUN_MISSING, f"{path}: no run of {other} in it")
    assert read_run(path, run_id="jsm001010-9").problem == f"{path}: no run jsm001010-9 in it"
    text = tmp_path / "text.db"
    text.write_text("not a database\n" * 100)
    stored = read_run(text, input=str(input))
    assert stored.state == STORE_UNREADABLE and str(text) in stored.problem and stored.events == ()
    assert run_summary(text, str(input)) == {"run_id": None, "run_status": None, "exit_code": None,
                                             "wcsname": None, "wcs_type": None}


def test_the_driver_plans_from_the_same_reader(tmp_path):
    input = tmp_path / "jsm001010_asn.fits"
    assert plan(input, None) == Plan("start", None, "no run yet")
    _, (_, latest) = _store(tmp_path, input, ended=False)
    p = plan(input, None)
    assert (p.action, p.run_id, p.reason) == ("resume", latest, "unfinished")
    assert run_summary(tmp_path / "astrodriz_sm.db", str(input))["run_status"] == "unfinished"
