"""Alignment error against the truth per detector, with drizzlepac's source positions and PSF-fitted ones.

For every detector and seed, one simulated 3-exposure subarray association with a 0.6" pointing
error is served on loopback by the local service, and ``astrodriz-sm start`` runs on a fresh copy
of it once with ``--centroids drizzlepac`` (3.11's positions, the default) and once with
``--centroids psf``. The final product (DRC, else DRZ) is measured against the truth as
``compare_runastrodriz.product_accuracy`` measures it: the RMS of the truth stars' offsets and
their mean offset, in mas.

It prints a table per detector (one row per seed) and a summary (mean and worst over the seeds);
``--json`` keeps every number. Nothing is asserted: it measures and prints.

Example::

    python benchmarks/accuracy.py --seeds 5 --jobs 2 --keep /tmp/accuracy --json /tmp/accuracy.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import compare_runastrodriz as bench

INSTRUMENTS = ("acs-wfc", "acs-hrc", "acs-sbc", "wfc3-uvis", "wfc3-ir", "wfpc2")
METHODS = ("drizzlepac", "psf")


@dataclass
class Measurement:
    """One run of astrodriz-sm on one simulated association."""

    instrument: str
    seed: int
    centroids: str
    exit_code: int | None
    status: str
    wall_s: float
    wcsname: str | None = None
    rms_mas: float | None = None
    mean_offset_mas: float | None = None
    n_stars: int | None = None
    native_scale_mas: float | None = None


def one_run(instrument: str, seed: int, method: str, sim, workdir: Path, service_env: dict,
            timeout: float | None) -> Measurement:
    d = workdir / f"{instrument}-{seed}-{method}"
    bench.copy_association(sim.outdir, d)
    # WFPC2: one exposure's _c0m file, as runastrodriz takes it (its product is the exposure's _drw).
    given = sim.c0m[0] if sim.c0m else sim.asn
    cmd = [sys.executable, "-m", "astrodriz_sm.cli.main", "-q", "start", "-n", "1", "--centroids", method,
           str(d / given.name)]
    res = bench.run_child(cmd, d, bench.child_environment(service_env, d, sim.refvar, sim.environment), d,
                          "_accuracy", timeout)
    root = sim.members[0] if sim.c0m else sim.root
    product = d / f"{root}_{'drc' if sim.flc else 'drw' if sim.c0m else 'drz'}.fits"
    m = Measurement(instrument, seed, method, res.exit_code, bench.run_status(res, product, timeout),
                    round(res.wall_s, 1))
    if product.exists():
        acc = bench.product_accuracy(product, sim)
        m.wcsname, m.rms_mas, m.mean_offset_mas, m.n_stars = (acc["wcsname"], acc["rms_mas"],
                                                              acc["mean_offset_mas"], acc["n_stars"])
    return m


def association(instrument: str, seed: int, workdir: Path):
    from astrodriz_sm.sim import SimConfig, simulate_association

    return simulate_association(workdir / f"{instrument}-{seed}" / "sim",
                                SimConfig(instrument=instrument, seed=seed, pointing_error=0.6,
                                          n_exposures=1 if instrument == "wfpc2" else 3))


def run_association(instrument: str, seed: int, workdir: Path, timeout: float | None) -> list[Measurement]:
    """Simulate one association, serve it, and run every centroid method on it."""
    from astrodriz_sm.sim.instruments import detector

    sim = association(instrument, seed, workdir)
    service = bench.start_local_service(sim.service_dir, workdir / f"{instrument}-{seed}" / "service.db")
    try:
        out = [one_run(instrument, seed, m, sim, workdir / f"{instrument}-{seed}", service.environment, timeout)
               for m in METHODS]
    finally:
        service.stop()
    for m in out:
        m.native_scale_mas = detector(instrument).pixel_scale * 1000.0
    return out


def _f(v, spec=".2f") -> str:
    return "-" if v is None else format(v, spec)


def tables(records: list[Measurement]) -> str:
    lines = []
    for inst in dict.fromkeys(r.instrument for r in records):
        rows = [r for r in records if r.instrument == inst]
        scale = rows[0].native_scale_mas
        lines += ["", f"## {inst} (native pixel {scale:.1f} mas)", "",
                  ("| seed | drizzlepac rms mas | drizzlepac mean offset mas | psf rms mas | psf mean offset mas "
                  "| stars | WCSNAME (drizzlepac / psf) |"),
                  "|---|---|---|---|---|---|---|"]
        for seed in sorted({r.seed for r in rows}):
            by = {r.centroids: r for r in rows if r.seed == seed}
            a, b = by.get("drizzlepac"), by.get("psf")
            names = " / ".join((x.wcsname or x.status) if x else "-" for x in (a, b))
            lines.append(f"| {seed} | {_f(a and a.rms_mas)} | {_f(a and a.mean_offset_mas)} | {_f(b and b.rms_mas)} "
                         f"| {_f(b and b.mean_offset_mas)} | {a.n_stars if a else '-'} | {names} |")
    lines += ["", "## summary over the seeds", "",
              ("| detector | method | runs ok | mean rms mas | worst rms mas | mean offset mas (mean) "
              "| worst mean offset mas |"), "|---|---|---|---|---|---|---|"]
    for inst in dict.fromkeys(r.instrument for r in records):
        for method in METHODS:
            ok = [r for r in records if r.instrument == inst and r.centroids == method and r.rms_mas is not None]
            n = len([r for r in records if r.instrument == inst and r.centroids == method])
            if not ok:
                lines.append(f"| {inst} | {method} | 0/{n} | - | - | - | - |")
                continue
            rms = [r.rms_mas for r in ok]
            off = [r.mean_offset_mas for r in ok]
            lines.append(f"| {inst} | {method} | {len(ok)}/{n} | {statistics.mean(rms):.2f} | {max(rms):.2f} "
                         f"| {statistics.mean(off):.2f} | {max(off):.2f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instruments", nargs="+", default=list(INSTRUMENTS), choices=INSTRUMENTS)
    p.add_argument("--seeds", type=int, default=5, help="seeds 1..N per detector (default 5)")
    p.add_argument("--jobs", type=int, default=1, help="associations processed at once (each run uses -n 1)")
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary directory)")
    p.add_argument("--json", metavar="FILE", help="write every measurement to FILE")
    p.add_argument("--timeout", type=float, default=1800, help="seconds before a run is killed")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    print(f"# command: {shlex.join(['accuracy.py', *argv])}")
    print(f"# started {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC", flush=True)
    workdir = bench.work_root(args.keep, "accuracy-")
    jobs = [(inst, seed) for inst in args.instruments for seed in range(1, args.seeds + 1)]
    t = time.monotonic()
    records = []
    # Processes, not threads: the simulator sets the reference-file variables in its environment.
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for out in pool.map(run_association, *zip(*jobs), [workdir] * len(jobs), [args.timeout or None] * len(jobs)):
            for m in out:
                print(f"{m.instrument} seed {m.seed} {m.centroids}: {m.status}, {m.wall_s:.0f} s, "
                      f"rms {_f(m.rms_mas)} mas, mean offset {_f(m.mean_offset_mas)} mas, {m.wcsname}", flush=True)
            records += out
    print(tables(records))
    print(f"\n# {len(records)} runs in {time.monotonic() - t:.0f} s; work directory {workdir}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in records], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
