"""No process of a run outlives it, however the run's process ends."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from astrodriz_sm.crashtest import (
    TREE_MARK,
    kill_processes,
    marked_processes,
    new_tree_mark,
    survivors,
)
from astrodriz_sm.statemachine import fold
from astrodriz_sm.store.eventstore import EventStore

from .conftest import NO_ALIGNMENT

ROOT = "jsm001010"
STORE = "astrodriz_sm.db"


def _age(pid: int) -> float:
    """Seconds since the process started (0 when it is gone)."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return 0.0
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


def _in_progress(d: Path) -> set:
    if not (d / STORE).exists():
        return set()
    try:
        store = EventStore(d / STORE)
        return fold(store.events(store.latest_run()["run_id"])).in_progress
    except Exception:  # noqa: BLE001 - the store is being created; look again
        return set()


@pytest.mark.parametrize("products,size,cores,step,tree", [
    ("flt", 512, 2, "updatewcs", 2),  # the SKYCELL process pool (fork context)
    # Subarrays large enough for AstroDrizzle's workers to live a second.
    ("flt", 1536, 2, "astrodrizzle", 2),  # AstroDrizzle's multiprocessing workers, forked by the run
    ("flt+flc", 1536, 4, "astrodrizzle", 4),  # two drizzle children (exec), each forking its own workers
], ids=["pool-workers", "astrodrizzle-workers", "workers-of-drizzle-children"])
def test_no_process_outlives_a_killed_run(simulated, products, size, cores, step, tree):
    """SIGKILL of ``astrodriz-sm start`` while its step has child processes: none of them is left.

    The descendants are stopped (SIGSTOP) just before the kill, so that none can end on its own by
    finishing its share of a small drizzle: only the run's death may end them (SIGKILL ends a
    stopped process). Only those past their first moments are stopped: one stopped between its fork
    and its tie would never reach the tie.
    """
    _, d = simulated(f"tree-{products}-{size}", products=products, n_exposures=2, subarray_size=size)
    mark = new_tree_mark()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTROM")}
    env.update(jref=f"{d}/", **NO_ALIGNMENT, **{TREE_MARK: mark})
    proc = subprocess.Popen([sys.executable, "-m", "astrodriz_sm.cli.main", "-q", "start", "-n", str(cores),
                             d / f"{ROOT}_asn.fits"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    held = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            held = [p for p in marked_processes(mark) if p != proc.pid and _age(p) > 0.1]
            if len(held) >= tree - 1 and ("default", step) in _in_progress(d):
                break
            time.sleep(0.01)
        assert proc.poll() is None and len(held) >= tree - 1, f"the run never had {tree - 1} descendants in {step}"
        for pid in held:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        alive = survivors(mark, wait=5.0)
        assert alive == [], f"{len(alive)} processes outlived the run ({len(held)} descendants held when killed)"
    finally:
        proc.kill()
        proc.wait()
        kill_processes(marked_processes(mark))
