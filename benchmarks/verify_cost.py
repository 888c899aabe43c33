"""What checking a run's hash chain costs the commands that read it (replay, explain, status, report).

For one run of an event store it prints the run's events and their stored bytes, then the median
wall time (over ``--repeat`` rounds) of the store's hash-chain check (``EventStore.verify``), of
reading the events alone (``EventStore.events``) and of both as the views do it
(``api.read_run``), and of rendering the trailer from them (what ``replay`` adds). Nothing is written.

Example::

    python benchmarks/verify_cost.py /data/jsim01010/astrodriz_sm.db jsim01010 --repeat 20
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import statistics
import time
from pathlib import Path

from astrodriz_sm import api
from astrodriz_sm.views.trailer import render_trailer


def _median_ms(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path, help="the event store (astrodriz_sm.db)")
    parser.add_argument("run", nargs="?", help="run id, rootname or input file (default: the latest run)")
    parser.add_argument("--repeat", type=int, default=20, metavar="N", help="rounds per measurement (default 20)")
    args = parser.parse_args(argv)

    store = api.open_store(args.store, read_only=True)
    run_id = api.find_run(store, args.run)
    check = store.verify(run_id)
    row, events, _ = api.read_run(store, run_id, unverified=True)
    with contextlib.closing(sqlite3.connect(f"{args.store.resolve().as_uri()}?mode=ro", uri=True)) as db:
        stored = db.execute("SELECT SUM(LENGTH(CAST(payload AS BLOB))), MAX(LENGTH(CAST(payload AS BLOB))) "
                            "FROM events WHERE run_id = ?", [run_id]).fetchone()
    print(f"run {run_id}: {check.n_events} events, {'verifies' if check.ok else 'does not verify: ' + check.reason}")
    print(f"payload bytes {stored[0]} (largest event {stored[1]}); store file {args.store.stat().st_size} bytes")
    verify = _median_ms(lambda: store.verify(run_id), args.repeat)
    read = _median_ms(lambda: store.events(run_id), args.repeat)
    both = _median_ms(lambda: api.read_run(store, run_id, unverified=True), args.repeat)
    trailer = _median_ms(lambda: render_trailer(row, events), args.repeat)
    print(f"median of {args.repeat}: verify {verify:.1f} ms, read events {read:.1f} ms, "
          f"verify + read (read_run) {both:.1f} ms, render trailer {trailer:.1f} ms")
    print(f"replay without the check: {read + trailer:.1f} ms; with it: {both + trailer:.1f} ms "
          f"(+{100 * verify / (read + trailer):.0f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
