"""Campaign throughput: ``astrodriz-sm batch --workers 2`` against drizzlepac's runastrodriz, one after another.

In one invocation, on the same simulated associations (subarray, FLC and FLT, a 0.6 arcsec pointing
error, alignment on, astrometry served on loopback by the local service):

* A: drizzlepac's ``runastrodriz.process`` on each association in turn, each a child process in a
  fresh copy, as an operator's loop over a list would run it;
* B: one ``astrodriz-sm batch --workers 2`` over fresh copies of the same associations (an embedded
  LocalCluster of two one-thread workers, each association ``start -n 1`` in a process of its own).

It prints the wall time of each and associations per hour, their ratio, the peak resident memory
(the whole process tree, sampled every 0.1 s: for B the driver, the cluster and every run; also the
largest peak of one association from the ledger), the final WCSNAME of every product, and the
machine's load average before and after. Nothing is asserted: it measures and prints.

``benchmarks/compare_runastrodriz.py`` measures one association of each pipeline in depth; this
script reuses its child-process sampling and environment.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The sibling benchmark, found through the line above.
import compare_runastrodriz as cr

# Distinct association rootnames; the simulations are otherwise identical (same seed, same sky), so
# that one service database serves them all.
ROOTS = tuple(f"jsm00{n:02d}10" for n in range(11, 99))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--associations", type=int, default=6, metavar="N", help="associations (default 6)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="batch workers (default 2)")
    p.add_argument("--only", choices=("runastrodriz", "batch"), help="run one side only")
    p.add_argument("--keep", metavar="DIR", help="keep the simulations and run directories in DIR (new or empty)")
    p.add_argument("--json", metavar="FILE", help="also write the measurements as JSON")
    return p


def _associations(workroot: Path, n: int):
    from astrodriz_sm.sim import SimConfig, simulate_association

    return [simulate_association(workroot / "sim" / root, SimConfig(pointing_error=0.6, root=root))
            for root in ROOTS[:n]]


def _product_wcsnames(directories: list[Path], product_suffix: str = "_drc.fits") -> list[str | None]:
    from astropy.io import fits

    out = []
    for d in directories:
        products = sorted(d.glob(f"*{product_suffix}"))
        out.append(fits.getval(products[0], "WCSNAME", ext=("SCI", 1)) if products else None)
    return out


def run_runastrodriz(sims, workroot: Path, service_env: dict) -> dict:
    """Each association in turn, as an operator's loop would."""
    runs, t0 = [], time.monotonic()
    for sim in sims:
        d = workroot / "A" / sim.root
        cr.copy_association(sim.outdir, d)
        res = cr.run_child(cr.pipeline_command("runastrodriz", d / sim.asn.name), d,
                           cr.child_environment(service_env, d, sim.refvar), d, "_bench_runastrodriz")
        runs.append({"root": sim.root, "exit_code": res.exit_code, "wall_s": round(res.wall_s, 2),
                     "peak_tree_rss_gb": round(res.peak_tree_rss_kib / 2 ** 20, 3), "cpu_s": round(res.cpu_s, 1)})
        print(f"  runastrodriz {sim.root}: exit {res.exit_code}, {res.wall_s:.1f} s, "
              f"peak {res.peak_tree_rss_kib / 2 ** 20:.2f} GB", flush=True)
    wall = time.monotonic() - t0
    return {"wall_s": round(wall, 2), "runs": runs,
            "peak_tree_rss_gb": max(r["peak_tree_rss_gb"] for r in runs),
            "ok": sum(r["exit_code"] == 0 for r in runs),
            "wcsnames": _product_wcsnames([workroot / "A" / s.root for s in sims])}


def run_batch(sims, workroot: Path, service_env: dict, workers: int) -> dict:
    """One ``astrodriz-sm batch`` over all of them."""
    from astrodriz_sm.campaign import Ledger

    base = workroot / "B"
    base.mkdir(parents=True)
    for sim in sims:
        cr.copy_association(sim.outdir, base / sim.root)
    listing = base / "inputs.txt"
    listing.write_text("".join(f"{base / s.root / s.asn.name}\n" for s in sims))
    env = cr.child_environment(service_env, base)
    del env["jref"]  # each association's reference files lie beside it: the runs use its directory
    cmd = [sys.executable, "-m", "astrodriz_sm.cli.main", "batch", "--workers", str(workers), "--from-file",
           str(listing), "--ledger", str(base / "campaign.db"), "--dashboard-address", "127.0.0.1:0"]
    res = cr.run_child(cmd, base, env, base, "_bench_batch")
    ledger = Ledger(base / "campaign.db")
    rows = ledger.associations()
    attempts = [a for r in rows for a in r["attempts"]]
    ledger.close()
    print(f"  batch: exit {res.exit_code}, {res.wall_s:.1f} s, peak {res.peak_tree_rss_kib / 2 ** 20:.2f} GB "
          f"({res.peak_tree_processes} processes at the peak)", flush=True)
    return {"wall_s": round(res.wall_s, 2), "exit_code": res.exit_code, "cpu_s": round(res.cpu_s, 1),
            "peak_tree_rss_gb": round(res.peak_tree_rss_kib / 2 ** 20, 3),
            "peak_tree_processes": res.peak_tree_processes,
            "largest_association_rss_gb": round(max(a.peak_rss_bytes or 0 for a in attempts) / 2 ** 30, 3),
            "association_wall_s": [a.wall_s for a in attempts], "attempts": len(attempts),
            "ok": sum(a.exit_code == 0 for a in attempts),
            "wcsnames": _product_wcsnames([base / s.root for s in sims])}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    machine = cr.machine_description()
    print(f"# command: {shlex.join([sys.executable, *(sys.argv if argv is None else ['campaign.py', *argv])])}")
    print(f"# machine: {machine['nproc']} cores, {machine['memory_gib']} GiB, {machine['cpu_model']}, "
          f"drizzlepac {machine['drizzlepac']}")
    print(f"# started {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC, load average {os.getloadavg()}", flush=True)
    workroot = cr.work_root(args.keep, "campaign-benchmark-")
    t = time.monotonic()
    sims = _associations(workroot, args.associations)
    print(f"# simulated {len(sims)} associations ({time.monotonic() - t:.0f} s, not timed below)", flush=True)
    service = cr.start_local_service(sims[0].service_dir, workroot / "astrometry_service.db")
    print(f"# local astrometry service on {service.url}", flush=True)
    results = {}
    try:
        if args.only != "batch":
            print("runastrodriz, one association after another:", flush=True)
            results["runastrodriz"] = run_runastrodriz(sims, workroot, service.environment)
        if args.only != "runastrodriz":
            print(f"astrodriz-sm batch --workers {args.workers}:", flush=True)
            results["batch"] = run_batch(sims, workroot, service.environment, args.workers)
    finally:
        service.stop()
        if not args.keep:
            shutil.rmtree(workroot, ignore_errors=True)
    print(f"# ended {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC, load average {os.getloadavg()}\n")
    rows = [("pipeline", "associations ok", "wall (s)", "associations/hour", "peak tree RSS (GB)", "WCSNAMEs")]
    for name, r in results.items():
        r["per_hour"] = round(len(sims) / r["wall_s"] * 3600, 1)
        label = "runastrodriz, serial" if name == "runastrodriz" else f"batch --workers {args.workers}"
        rows.append((label, f"{r['ok']}/{len(sims)}", f"{r['wall_s']:.1f}", f"{r['per_hour']:.1f}",
                     f"{r['peak_tree_rss_gb']:.2f}", ", ".join(sorted({str(w) for w in r["wcsnames"]}))))
    if len(results) == 2:
        ratio = results["batch"]["per_hour"] / results["runastrodriz"]["per_hour"]
        results["throughput_ratio"] = round(ratio, 2)
        rows.append(("batch / runastrodriz", "", "", f"**{ratio:.2f}**", "", ""))
    print(cr.markdown(rows))
    if "batch" in results:
        b = results["batch"]
        print(f"\nbatch: {b['attempts']} attempts; per association {min(b['association_wall_s']):.1f}-"
              f"{max(b['association_wall_s']):.1f} s, the largest one's peak {b['largest_association_rss_gb']:.2f} GiB; "
              f"{b['peak_tree_processes']} processes at the tree's peak; CPU of the tree {b['cpu_s']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
