"""Run leases that expire: a heartbeat keeps a live holder's lease, a node that died frees its runs."""

from __future__ import annotations

import datetime as dt
import os
import socket
import sqlite3
import time

import pytest

from astrodriz_sm.crashtest import start_and_kill
from astrodriz_sm.store.eventstore import EventStore, StoreError

from .conftest import NO_ALIGNMENT, run_cli

ROOT = "jsm001010"
# A holder on a host that is not this one: its process cannot be looked up, only its lease's expiry.
FOREIGN = "4242:123456:node17.cluster.example"


def _utc(seconds_from_now: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds_from_now)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _leave_foreign_lease(store_path, run_id: str, expires_in: float) -> str:
    """Write the lease a process on another host would leave behind when it died; return its expiry."""
    expires = _utc(expires_in)
    with sqlite3.connect(store_path) as db:
        db.execute("INSERT OR REPLACE INTO leases (run_id, holder, acquired_utc, heartbeat_utc, expires_utc) "
                   "VALUES (?, ?, ?, ?, ?)", [run_id, FOREIGN, _utc(-600), _utc(-60), expires])
    return expires


def test_a_foreign_lease_holds_until_its_expiry_then_is_taken_over(tmp_path):
    store = EventStore(tmp_path / "astrodriz_sm.db")
    run_id = store.create_run(tmp_path / "x_asn.fits", "x")
    store.acquire_lease(run_id)
    store.release_lease(run_id)
    expires = _leave_foreign_lease(store.path, run_id, 1.0)
    with pytest.raises(StoreError) as refused:
        store.acquire_lease(run_id)
    assert str(refused.value).startswith(f"run {run_id} is being processed by pid 4242 on node17.cluster.example")
    assert str(refused.value).endswith(f"lease expires {expires} unless renewed); one writer at a time")
    time.sleep(1.2)
    takeover = store.acquire_lease(run_id, expiry_s=30)
    assert takeover.previous_holder == FOREIGN
    assert takeover.reason == f"the lease of pid 4242 on node17.cluster.example expired at {expires}"
    lease = store.lease(run_id)
    assert lease["holder"].split(":")[0] == str(os.getpid())
    assert lease["holder"].endswith(f":{socket.gethostname()}")


def test_the_holder_refreshes_its_heartbeat_and_learns_when_its_lease_was_taken(tmp_path):
    store = EventStore(tmp_path / "astrodriz_sm.db")
    run_id = store.create_run(tmp_path / "x_asn.fits", "x")
    store.acquire_lease(run_id, expiry_s=0.5)
    first = store.lease(run_id)
    with store.keep_lease(run_id, expiry_s=0.5) as keeper:
        time.sleep(0.35)
        second = store.lease(run_id)
        assert second["heartbeat_utc"] > first["heartbeat_utc"]
        assert second["expires_utc"] > first["expires_utc"]
        _leave_foreign_lease(store.path, run_id, 60)
        time.sleep(0.3)
        assert keeper.lost == f"the lease on run {run_id} now belongs to {FOREIGN}"


def test_a_run_left_locked_by_a_dead_node_resumes_after_the_expiry_with_a_takeover_event(simulated):
    _, d = simulated("lease", products="flt", n_exposures=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTROM")}
    env.update(jref=f"{d}/", **NO_ALIGNMENT)
    assert start_and_kill(d / f"{ROOT}_asn.fits", env, ("default/updatewcs", "step.completed", 0.0), timeout=300)
    store = EventStore(d / "astrodriz_sm.db")
    run_id = store.latest_run()["run_id"]
    expires = _leave_foreign_lease(store.path, run_id, 4.0)
    refused = run_cli("resume", run_id, cwd=d, env=env)
    assert refused.returncode == 75
    assert refused.stderr.strip().splitlines()[-1] == (
        f"astrodriz-sm: error: {store.path}: run {run_id} is being processed by pid 4242 on node17.cluster.example (since "
        f"{store.lease(run_id)['acquired_utc']}, last heartbeat {store.lease(run_id)['heartbeat_utc']}, lease "
        f"expires {expires} unless renewed); one writer at a time")
    while dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") <= expires:
        time.sleep(0.2)
    resumed = run_cli("resume", run_id, cwd=d, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    events = store.events(run_id)
    kinds = [e.kind for e in events]
    taken = events[kinds.index("lease.taken_over")]
    assert kinds[kinds.index("lease.taken_over") + 1] == "run.resumed"
    assert taken.payload["previous_holder"] == FOREIGN
    assert taken.payload["reason"] == f"the lease of pid 4242 on node17.cluster.example expired at {expires}"
    assert events[-1].payload["status"] == "done"
    assert store.lease(run_id) is None
    assert "lease.taken_over" in (d / f"{ROOT}.tra").read_text()
