"""Campaigns under faults, with real processes: two operators on the same data, lost Dask workers.

Every association is a small simulated one (two ``_flt`` exposures, alignment off): the point is
who runs what, not the fit.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from astrodriz_sm.campaign.ledger import FOUND, HELD
from astrodriz_sm.errors import ExitCode
from astrodriz_sm.sim import SimConfig, simulate_association
from astrodriz_sm.statemachine import fold
from astrodriz_sm.store.eventstore import EventStore, StoreError

from .conftest import NO_ALIGNMENT

STORE = "astrodriz_sm.db"

# A second operator's own run of one association, paused (by the runner's observer hook) at its
# first event until the file argv[3] appears; argv[2] is written once it is paused.
HOLDER = """
import pathlib, sys, time
import astrodriz_sm

paused, release = pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])

def observer(stage, step, point):
    if not paused.exists():
        paused.touch()
        while not release.exists():
            time.sleep(0.05)

sys.exit(astrodriz_sm.process(sys.argv[1], console=False, num_cores=1, observer=observer).exit_code)
"""


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "jref" and not k.startswith("ASTROM")}
    env.update(NO_ALIGNMENT, **extra)
    return env


def _associations(base: Path, roots: list[str]) -> list[Path]:
    for root in roots:
        simulate_association(base / root, SimConfig(root=root, products="flt", n_exposures=2, service=False))
    return [base / root / f"{root}_asn.fits" for root in roots]


def _batch(*args, cwd, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "astrodriz_sm.cli.main", "batch", "--dashboard-address",
                             "127.0.0.1:0", *map(str, args)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _attempts(ledger: Path) -> list[tuple]:
    """``(input, attempt, action, exit_class, verdict, run_id, message)`` of every attempt, read as they are written."""
    if not ledger.exists():
        return []
    conn = sqlite3.connect(f"{ledger.as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT input, attempt, action, exit_class, verdict, run_id, message FROM attempts "
                            "ORDER BY input, attempt").fetchall()
    except sqlite3.OperationalError:  # the driver is creating it
        return []
    finally:
        conn.close()


def _runs(asn: Path) -> list[tuple[str, str]]:
    """``(run id, status)`` of every run of the association's store."""
    with EventStore(asn.parent / STORE, read_only=True) as store:
        return [(r["run_id"], (fold(store.events(r["run_id"])).ended or {}).get("status", "unfinished"))
                for r in store.runs()]


def _until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def _holder_of(store_path: Path, step: tuple[str, str, str]) -> int | None:
    """The pid holding the store's latest run once its log's last event is ``(stage, step, kind)``."""
    if not store_path.exists():
        return None
    try:
        with EventStore(store_path, read_only=True) as store:
            latest = store.latest_run()
            events = store.events(latest["run_id"]) if latest else []
            lease = store.lease(latest["run_id"]) if latest else None
    except StoreError:  # being created: look again
        return None
    if events and (events[-1].stage, events[-1].step, events[-1].kind) == step and lease:
        return int(lease["holder"].split(":")[0])
    return None


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _finish(procs):
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.long
def test_two_batches_on_two_ledgers_run_each_association_once(tmp_path):
    """Two operators, two ledgers, the same four associations, and a third operator's run of the first.

    The third run is paused (observer hook) until both batches have met it: each records it ``held
    elsewhere``, waits, and records it ``found`` when it ends. Every association ends with exactly one
    run, done; both batches exit 0.
    """
    inputs = _associations(tmp_path, ["jsm001010", "jsm001020", "jsm001030", "jsm001040"])
    env = _env()
    paused, release = tmp_path / "paused", tmp_path / "release"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(inputs[0]), str(paused), str(release)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    batches = []
    try:
        _until(paused.exists, 120, "the third operator's run paused at its first event")
        ledgers = [tmp_path / "a.db", tmp_path / "b.db"]
        batches = [_batch("--workers", "1", "--ledger", ledger, *inputs, cwd=tmp_path, env=env) for ledger in ledgers]
        first = str(inputs[0])
        _until(lambda: all(any(a[0] == first and a[4] == HELD for a in _attempts(ledger)) for ledger in ledgers),
               300, "both batches met the held association")
        release.touch()
        assert holder.wait(timeout=300) == 0, holder.stderr.read()[-2000:]
        outputs = [b.communicate(timeout=900) for b in batches]
    finally:
        release.touch()
        _finish([holder, *batches])
    assert [b.returncode for b in batches] == [0, 0], [o[1][-3000:] for o in outputs]
    for asn in inputs:
        runs = _runs(asn)
        assert [status for _, status in runs] == ["done"], (asn.name, runs)
    (held_run, _), = _runs(inputs[0])
    for ledger in ledgers:
        attempts = _attempts(ledger)
        by_input = {}
        for a in attempts:
            by_input.setdefault(a[0], []).append(a)
        assert sorted(by_input) == sorted(map(str, inputs))
        # The held association: refused while the other operator held it, then found done.
        held = [(a[2], a[3], a[4], a[5]) for a in by_input[first]]
        assert held[0][1:3] == ("held", HELD) and held[0][3] == held_run, held
        assert held[-1] == (FOUND, "ok", "done", held_run), held
        assert f"being processed by pid {holder.pid} on " in by_input[first][0][6]
        for asn in inputs:
            last = by_input[str(asn)][-1]
            assert last[4] == "done" and last[5] == _runs(asn)[0][0], last
        # The ledger says which association this batch ran itself and which it found run by another.
        assert all(a[4] in ("done", HELD) for a in attempts), attempts
    # Between them, the two batches ran each of the other three associations once.
    ran = [a[0] for ledger in ledgers for a in _attempts(ledger) if a[2] in ("start", "resume") and a[4] == "done"]
    assert sorted(ran) == sorted(map(str, inputs[1:])), ran


@pytest.mark.long
def test_a_killed_localcluster_worker_is_replaced_and_its_run_resumed(tmp_path):
    """SIGKILL of the Dask worker process running an association's ``start`` during its default drizzle.

    The worker's death stops the run (SIGTERM, its lease given up); Dask runs the task again on the
    worker its nanny starts anew; that ``start --resume`` takes the unfinished run over and ends it done.
    """
    (asn,) = _associations(tmp_path, ["jsm001010"])
    ledger = tmp_path / "campaign.db"
    batch = _batch("--workers", "1", "--ledger", ledger, asn, cwd=tmp_path, env=_env())
    try:
        run_pid = _until(lambda: _holder_of(asn.parent / STORE, ("default", "astrodrizzle", "step.started")), 300,
                         "the run reached default/astrodrizzle")
        worker_pid = _parent(run_pid)
        os.kill(worker_pid, signal.SIGKILL)
        out, err = batch.communicate(timeout=600)
    finally:
        _finish([batch])
    assert batch.returncode == 0, err[-3000:]
    (run_id, status), = _runs(asn)
    assert status == "done"
    with EventStore(asn.parent / STORE, read_only=True) as store:
        kinds = [e.kind for e in store.events(run_id)]
    assert kinds.count("run.resumed") == 1
    attempts = _attempts(ledger)
    assert [(a[2], a[3], a[4], a[5]) for a in attempts] == [("start", "ok", "done", run_id)], attempts


def _dask(*args, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_" + args[0], *args[1:]], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.long
def test_an_external_worker_killed_mid_task_then_a_cluster_without_workers(tmp_path):
    """An external ``dask scheduler`` and ``dask worker`` on 127.0.0.1.

    The worker is SIGKILLed during the default drizzle and a new one joins: the run is taken over and
    ends done, batch exit 0. Then the only worker is killed and none joins: the next batch says so in
    one line after ``--no-workers-timeout``, exit 9, and a batch with a worker again ends it done.
    """
    first, second = _associations(tmp_path, ["jsm001010", "jsm001020"])
    env = _env()
    ledger = tmp_path / "campaign.db"
    port = _free_port()
    scheduler = _dask("scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address",
                      "127.0.0.1:0", env=env)
    address = f"tcp://127.0.0.1:{port}"
    worker_args = ("worker", address, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
                   "--dashboard-address", "127.0.0.1:0")
    procs = [scheduler]
    try:
        procs.append(worker := _dask(*worker_args, env=env))
        batch = _batch("--scheduler", address, "--ledger", ledger, first, cwd=tmp_path, env=env)
        procs.append(batch)
        run_pid = _until(lambda: _holder_of(first.parent / STORE, ("default", "astrodrizzle", "step.started")), 300,
                         "the run reached default/astrodrizzle")
        assert _parent(run_pid) == worker.pid
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        procs.append(worker := _dask(*worker_args, env=env))
        out, err = batch.communicate(timeout=600)
        assert batch.returncode == 0, err[-3000:]
        (run_id, status), = _runs(first)
        assert status == "done"
        with EventStore(first.parent / STORE, read_only=True) as store:
            assert [e.kind for e in store.events(run_id)].count("run.resumed") == 1

        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        t0 = time.monotonic()
        stopped = _batch("--scheduler", address, "--ledger", ledger, "--no-workers-timeout", "5", second,
                         cwd=tmp_path, env=env)
        procs.append(stopped)
        out, err = stopped.communicate(timeout=120)
        waited = time.monotonic() - t0
        assert stopped.returncode == ExitCode.INTERRUPTED, err[-3000:]
        assert err.strip().splitlines()[-1] == (
            f"astrodriz-sm: batch stopped: no Dask worker on {address} for 5 s, 1 association unfinished; "
            "start workers, then run the same batch again to resume them")
        assert waited < 60, waited
        procs.append(_dask(*worker_args, env=env))
        again = _batch("--scheduler", address, "--ledger", ledger, second, cwd=tmp_path, env=env)
        procs.append(again)
        out, err = again.communicate(timeout=600)
        assert again.returncode == 0, err[-3000:]
        assert [status for _, status in _runs(second)] == ["done"]
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
