"""Compare drizzlepac's ``runastrodriz`` with ``astrodriz-sm start`` on one simulated association.

The association is simulated once (`astrodriz_sm.sim.simulate_association`), its astrometry is
served on loopback by the local service (`astrodriz_sm.services`), and each pipeline runs as a
child process on a fresh copy of the association, A (runastrodriz) and B (astrodriz-sm)
alternating, ``--repeat`` times each.

Per run it measures:

* wall time of the child process (start to exit);
* peak resident memory of the whole process tree: every 0.1 s the VmRSS of the child and of
  every process descended from it or in its session is read from /proc and summed (pages
  shared between forked workers count once per process); the kernel's maximum RSS of the
  largest single process of the tree (``wait4`` rusage) and the tree's CPU time are kept too;
* the number of AstroDrizzle runs: runastrodriz - AstroDrizzle's own step-time reports in the
  child's output; astrodriz-sm - products in the ``step.completed`` payloads of the
  ``astrodrizzle`` steps in its event store;
* the alignment error of the final product (``_drc``, ``_drz`` with ``--flt-only``) against the
  simulation truth: `measure_product_astrometry` RMS times the product's pixel scale;
* the final product's WCSNAME.

``--unreachable`` points the three service variables at a closed loopback port instead.

Nothing here asserts anything about the numbers: it measures and prints.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import itertools
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

SERVICE_VARIABLES = ("ASTROMETRY_SERVICE_URL", "GSSS_WEBSERVICES_URL", "ASTROMETRIC_CATALOG_URL")
PIPELINES = ("runastrodriz", "astrodriz-sm")
POLL_INTERVAL = 0.1
WIDE_BOX_ABOVE_PX = 2.0
STORE_NAME = "astrodriz_sm.db"

# runastrodriz's own stage headings (drizzlepac 3.11 runastrodriz.process), in order.
RUNASTRODRIZ_PHASES = (
    ("default", "Starting alignment with bad-pixel identification"),
    ("apriori", "Starting alignment with a priori solutions"),
    ("aposteriori", "Starting a posteriori alignment"),
    ("final", "Creating final combined,corrected product"),
)
_AD_REPORT = re.compile(r"^\s*Step\s+Elapsed time\s*$")
_AD_TOTAL = re.compile(r"\bTotal\s+([0-9.]+) sec\s*$")
_AD_STARTED = re.compile(r"astrodrizzle started", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# machine
# --------------------------------------------------------------------------------------------
def machine_description() -> dict:
    """Cores, memory, CPU model, kernel and library versions of this machine."""
    info = {"nproc": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "kernel": platform.release(), "python": platform.python_version()}
    try:
        meminfo = Path("/proc/meminfo").read_text()
        kib = int(re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.MULTILINE).group(1))
        info["memory_gib"] = round(kib / 2 ** 20, 1)
    except (OSError, AttributeError):
        info["memory_gib"] = None
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
        info["cpu_model"] = found.group(1).strip() if found else None
    except OSError:
        info["cpu_model"] = None
    from importlib import metadata

    for name in ("drizzlepac", "stwcs", "tweakwcs", "photutils", "astropy", "numpy"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = None
    return info


# --------------------------------------------------------------------------------------------
# process tree sampling
# --------------------------------------------------------------------------------------------
def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, session) of every process visible in /proc."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue  # gone meanwhile
        rest = stat[stat.rfind(b")") + 2:].split()
        table[int(entry.name)] = (int(rest[1]), int(rest[3]))
    return table


def tree_pids(root: int) -> set[int]:
    """``root``, its descendants, and every process of its session (orphans re-parented to init)."""
    table = _proc_table()
    children = collections.defaultdict(list)
    for pid, (ppid, _) in table.items():
        children[ppid].append(pid)
    found = {pid for pid, (_, sid) in table.items() if sid == root} | ({root} & table.keys())
    # Descend from every member of the session too: a process that started a session of its own
    # (a campaign's run below a Dask worker) is found only through its parent.
    todo = list(found | {root})
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (0 if it has gone or is a zombie)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


# --------------------------------------------------------------------------------------------
# one child run
# --------------------------------------------------------------------------------------------
@dataclass
class ChildResult:
    """How one child process went."""

    exit_code: int | None
    wall_s: float
    peak_tree_rss_kib: int
    peak_tree_processes: int
    max_single_rss_kib: int
    cpu_s: float
    timed_out: bool
    stdout_lines: list = field(default_factory=list, repr=False)  # (seconds since start, text)
    stderr_tail: list = field(default_factory=list)


def _reader(stream, sink: list, t0: float, log, tail: collections.deque | None = None) -> None:
    for raw in iter(stream.readline, b""):
        text = raw.decode("utf-8", "replace").rstrip("\n")
        t = time.monotonic() - t0
        sink.append((t, text))
        if tail is not None:
            tail.append(text)
        log.write(f"{t:9.3f} {text}\n")
    stream.close()


def run_child(cmd: list[str], cwd: Path, env: dict, log_dir: Path, name: str,
              timeout: float | None = None) -> ChildResult:
    """Run ``cmd``, sampling the RSS of its process tree every `POLL_INTERVAL` seconds.

    Standard output and error go to ``log_dir/<name>.stdout`` / ``.stderr``, each line prefixed
    with the seconds since the start. A run longer than ``timeout`` is killed (its whole session).
    """
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    out_lines, err_lines = [], []
    tail = collections.deque(maxlen=20)
    with open(log_dir / f"{name}.stdout", "w") as out_log, open(log_dir / f"{name}.stderr", "w") as err_log:
        readers = [threading.Thread(target=_reader, args=(proc.stdout, out_lines, t0, out_log), daemon=True),
                   threading.Thread(target=_reader, args=(proc.stderr, err_lines, t0, err_log, tail),
                                    daemon=True)]
        for r in readers:
            r.start()
        peak, peak_n, timed_out = 0, 0, False
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    wall = time.monotonic() - t0
                    break
                pids = tree_pids(proc.pid)
                total = sum(rss_kib(p) for p in pids)
                if total > peak:
                    peak, peak_n = total, len(pids)
                if timeout and time.monotonic() - t0 > timeout and not timed_out:
                    timed_out = True
                    os.killpg(proc.pid, signal.SIGKILL)
                time.sleep(max(0.0, POLL_INTERVAL - (time.monotonic() - t0) % POLL_INTERVAL))
        except BaseException:
            # Interrupted (Ctrl-C): the run is in its own session, so it would outlive the benchmark.
            os.killpg(proc.pid, signal.SIGKILL)
            os.waitpid(proc.pid, 0)
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        # Orphans of the run (if any) still hold the pipes: end them, they belong to this run.
        if tree_pids(proc.pid) - {proc.pid}:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for r in readers:
            r.join(timeout=10)
    return ChildResult(exit_code=proc.returncode, wall_s=wall, peak_tree_rss_kib=peak,
                       peak_tree_processes=peak_n, max_single_rss_kib=usage.ru_maxrss,
                       cpu_s=usage.ru_utime + usage.ru_stime, timed_out=timed_out,
                       stdout_lines=out_lines, stderr_tail=list(tail))


# --------------------------------------------------------------------------------------------
# what each pipeline did
# --------------------------------------------------------------------------------------------
def runastrodriz_breakdown(lines: list[tuple[float, str]], wall: float) -> dict:
    """AstroDrizzle runs and the time of each runastrodriz stage, from its time-stamped output.

    The stage boundaries are runastrodriz's own headings; 'setup' is everything before the
    first (interpreter start, imports, updatewcs without the astrometry database).
    """
    marks = [("setup", 0.0)]
    ad_total = collections.defaultdict(float)
    ad_runs = collections.Counter()
    started = 0
    for t, text in lines:
        for phase, heading in RUNASTRODRIZ_PHASES:
            if heading in text and all(p != phase for p, _ in marks):
                marks.append((phase, t))
        phase = marks[-1][0]
        if _AD_REPORT.match(text):
            ad_runs[phase] += 1
        if m := _AD_TOTAL.search(text):
            ad_total[phase] += float(m.group(1))
        if _AD_STARTED.search(text):
            started += 1
    marks.append(("end", wall))
    phases = {}
    for (phase, t), (_, t_next) in itertools.pairwise(marks):
        phases[phase] = {"seconds": round(t_next - t, 2), "astrodrizzle_runs": ad_runs[phase],
                         "astrodrizzle_seconds": round(ad_total[phase], 2)}
    return {"astrodrizzle_runs": sum(ad_runs.values()), "astrodrizzle_started_markers": started,
            "phases": phases}


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def store_breakdown(store_path: Path) -> dict:
    """AstroDrizzle runs, step times and time outside steps, from astrodriz-sm's event store."""
    from astrodriz_sm.store.eventstore import EventStore

    if not store_path.exists():
        return {"error": f"{store_path} does not exist"}
    store = EventStore(store_path)
    latest = store.latest_run()
    if latest is None:
        return {"error": "no run in the store"}
    events = store.events(latest["run_id"])
    steps = collections.OrderedDict()
    ad_runs, ad_seconds = 0, 0.0
    started_at = {}
    in_steps = 0.0
    for e in events:
        key = f"{e.stage}/{e.step}"
        if e.kind == "step.started":
            started_at[key] = _utc(e.utc)
        elif e.kind == "step.completed":
            steps[key] = steps.get(key, 0.0) + float(e.payload.get("seconds") or 0.0)
            if key in started_at:
                in_steps += (_utc(e.utc) - started_at.pop(key)).total_seconds()
            if e.step == "astrodrizzle":
                # A product the final stage reused from its stage was not drizzled again.
                products = [p for p in e.payload.get("products", []) if not p.get("reused_from")]
                ad_runs += len(products)
                ad_seconds += sum(float(p.get("seconds") or 0.0) for p in products)
    span = (_utc(events[-1].utc) - _utc(events[0].utc)).total_seconds() if events else 0.0
    ended = next((e.payload for e in reversed(events) if e.kind == "run.ended"), None)
    return {
        "run_id": latest["run_id"], "n_events": len(events),
        "status": ended.get("status") if ended else None,
        "astrodrizzle_runs": ad_runs, "astrodrizzle_seconds": round(ad_seconds, 2),
        "step_seconds": {k: round(v, 3) for k, v in steps.items()},
        "sum_step_seconds": round(sum(steps.values()), 2),
        "event_span_seconds": round(span, 2),
        # From the first to the last event, the time not inside a handler's own timer: appending
        # events, folding the log, rendering the trailer, fingerprints, transitions. An upper bound
        # on the event store's work during the run, not a measurement of it.
        "outside_steps_seconds": round(span - sum(steps.values()), 2),
        "between_step_events_seconds": round(span - in_steps, 2),
        # The runner's own timer around appends, reads, folds and trailer renders (run.ended).
        "event_store_seconds": ended.get("log_seconds") if ended else None,
        "event_store_share": ended.get("log_share") if ended else None,
        "reused_products": [p["reused_from"] for e in events if e.kind == "step.completed"
                            and e.step == "astrodrizzle" for p in e.payload.get("products", [])
                            if p.get("reused_from")],
        "store_bytes": store_path.stat().st_size,
    }


def product_accuracy(product: Path, sim) -> dict:
    """RMS and mean offset (mas) of truth stars in the product, its WCSNAME and pixel scale.

    `measure_product_astrometry` centroids in a 7-pixel box around each predicted position (stars
    whose offsets disagree with the others by more than 5 sigma, a cosmic ray in the box, left out), which
    cannot follow offsets beyond a few pixels (an unaligned product). When that measurement gives
    more than `WIDE_BOX_ABOVE_PX`, the product is measured again with a 31-pixel box around stars
    isolated by 31 pixels (fewer stars), and that value is reported, marked as such.
    """
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    from astrodriz_sm.sim import measure_product_astrometry, observation_epoch

    header = fits.getheader(product, ("SCI", 1))
    scale = float(proj_plane_pixel_scales(WCS(header))[0] * 3.6e6)
    epoch = observation_epoch(sim.truth_json)
    out = {"wcsname": header.get("WCSNAME"), "scale_mas": round(scale, 3)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # photutils' per-star "fit may not have converged"
        measurements = {"box7": measure_product_astrometry(product, sim.truth_catalog, epoch)}
        if not measurements["box7"].rms <= WIDE_BOX_ABOVE_PX:
            measurements["box31"] = measure_product_astrometry(product, sim.truth_catalog, epoch,
                                                               box_size=31, isolation=31.0)
    for name, acc in measurements.items():
        out[name] = {"n_stars": acc.n_stars, "n_rejected": acc.n_rejected, "rms_mas": round(acc.rms * scale, 2),
                     "mean_offset_mas": round(float(np.hypot(acc.mean_dx, acc.mean_dy)) * scale, 2)}
    used = "box31" if "box31" in measurements else "box7"
    out.update(out[used], box=used)
    return out


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------
@dataclass
class RunRecord:
    """One pipeline run: what was measured, and how it ended."""

    pipeline: str
    index: int
    directory: str
    exit_code: int | None
    status: str
    wall_s: float
    peak_tree_rss_gb: float
    peak_tree_processes: int
    max_single_rss_gb: float
    cpu_s: float
    astrodrizzle_runs: int | None
    error_rms_mas: float | None = None
    mean_offset_mas: float | None = None
    n_stars: int | None = None
    wcsname: str | None = None
    accuracy: dict = field(default_factory=dict)
    breakdown: dict = field(default_factory=dict)


def copy_association(source: Path, dest: Path) -> None:
    """The association's files (not the truth or service subdirectories) into a new directory."""
    dest.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.is_file():
            shutil.copy2(entry, dest / entry.name)


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_environment(service_env: dict, refdir: Path, refvar: str = "jref", extra: dict | None = None) -> dict:
    """A pipeline's environment: this one's, the services, ``extra`` (a simulation's CRDS cache, say),
    and ``refvar`` (jref, iref, uref) set to ``refdir``."""
    env = {k: v for k, v in os.environ.items()
           if k not in SERVICE_VARIABLES and not k.startswith("ASTROMETRY_")}
    env.update(service_env)
    env.update(extra or {})
    env[refvar] = f"{refdir}/"
    env["PYTHONUNBUFFERED"] = "1"  # line time stamps for runastrodriz's stage breakdown
    return env


def pipeline_command(pipeline: str, asn: Path, console: bool = False) -> list[str]:
    """A pipeline's command line for the input ``asn`` (runastrodriz runs in its directory).

    ``console=False``: ``runastrodriz.process()`` and the CLI module through this interpreter, as the
    timings of ``docs/performance.md`` were measured. ``console=True``: the console commands of this
    interpreter's environment, ``runastrodriz <input>`` and ``astrodriz-sm -q start <input>``, as an
    operator runs them; their exit codes are the ones to compare (runastrodriz's ``main()`` catches
    the SystemExit that ``process()`` raises and returns 0).
    """
    if console:
        scripts = Path(sys.executable).parent  # the environment's bin, not the resolved interpreter's
        if pipeline == "runastrodriz":
            return [str(scripts / "runastrodriz"), asn.name]
        return [str(scripts / "astrodriz-sm"), "-q", "start", str(asn)]
    if pipeline == "runastrodriz":
        return [sys.executable, "-c",
                f"from drizzlepac import runastrodriz; runastrodriz.process({asn.name!r})"]
    return [sys.executable, "-m", "astrodriz_sm.cli.main", "-q", "start", str(asn)]


def run_status(res: ChildResult, product: Path, timeout: float | None) -> str:
    """How a run ended: ``'ok'`` when it exited 0 leaving ``product``, else why not, in one line."""
    if res.timed_out:
        return f"killed after {timeout:g} s"
    if res.exit_code != 0:
        last = res.stderr_tail[-1] if res.stderr_tail else "(no stderr)"
        return f"exit {res.exit_code}: {last}"
    if not product.exists():
        last = res.stderr_tail[-1] if res.stderr_tail else (res.stdout_lines[-1][1] if res.stdout_lines else "")
        return f"exit 0 without {product.name}: {last}"
    return "ok"


def start_local_service(service_dir: Path, db: Path):
    """Load a simulation's service data (``<outdir>/service``) into a new store ``db`` and serve it.

    Returns
    -------
    astrodriz_sm.services.ServiceHandle
        The running service on 127.0.0.1 (``.url``, ``.environment``, ``.stop()``).
    """
    from astrodriz_sm.services import ServiceStore, start_server

    ServiceStore(db).load_directory(service_dir)
    return start_server(db)


def one_run(pipeline: str, index: int, sim, workroot: Path, service_env: dict, product_name: str,
            timeout: float | None) -> RunRecord:
    d = workroot / f"{'A' if pipeline == 'runastrodriz' else 'B'}{index}-{pipeline}"
    copy_association(sim.outdir, d)
    asn = d / sim.asn.name
    res = run_child(pipeline_command(pipeline, asn), d, child_environment(service_env, d, sim.refvar), d,
                    f"_bench_{pipeline}", timeout)
    product = d / product_name
    status = run_status(res, product, timeout)
    if pipeline == "runastrodriz":
        breakdown = runastrodriz_breakdown(res.stdout_lines, res.wall_s)
    else:
        breakdown = store_breakdown(d / STORE_NAME)
    rec = RunRecord(pipeline=pipeline, index=index, directory=str(d), exit_code=res.exit_code, status=status,
                    wall_s=round(res.wall_s, 2), peak_tree_rss_gb=round(res.peak_tree_rss_kib / 2 ** 20, 3),
                    peak_tree_processes=res.peak_tree_processes,
                    max_single_rss_gb=round(res.max_single_rss_kib / 2 ** 20, 3), cpu_s=round(res.cpu_s, 1),
                    astrodrizzle_runs=breakdown.get("astrodrizzle_runs"), breakdown=breakdown)
    if product.exists():
        try:
            acc = product_accuracy(product, sim)
            rec.error_rms_mas, rec.mean_offset_mas = acc["rms_mas"], acc["mean_offset_mas"]
            rec.n_stars, rec.wcsname = acc["n_stars"], acc["wcsname"]
            rec.accuracy = acc
        except Exception as exc:  # noqa: BLE001 - a measurement failure is reported, not fatal
            rec.status += f"; measurement failed: {type(exc).__name__}: {exc}"
    return rec


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _error(rec: RunRecord) -> str:
    """The RMS error, marked '(31 px box)' when the wide-box measurement was needed."""
    text = _fmt(rec.error_rms_mas, ".1f")
    return f"{text} (31 px box)" if rec.accuracy.get("box") == "box31" else text


def summary_table(records: list[RunRecord]) -> str:
    rows = [("pipeline", "runs ok", "median wall (s)", "peak RSS (GB)", "CPU (s)", "AstroDrizzle runs",
             "error RMS (mas)", "mean offset (mas)", "WCSNAME", "failures")]
    med = {}
    for pipeline in PIPELINES:
        recs = [r for r in records if r.pipeline == pipeline]
        if not recs:
            continue
        ok = [r for r in recs if r.status == "ok"]
        # Medians over the runs that ended with a product; failed runs are listed under failures.
        med[pipeline] = (_median([r.wall_s for r in ok]), _median([r.peak_tree_rss_gb for r in ok]))
        wcsnames = sorted({str(r.wcsname) for r in recs if r.wcsname})
        ad = sorted({r.astrodrizzle_runs for r in recs if r.astrodrizzle_runs is not None})
        failures = "; ".join(f"#{r.index}: {r.status}" for r in recs if r.status != "ok") or "-"
        rows.append((pipeline, f"{len(ok)}/{len(recs)}", _fmt(med[pipeline][0], ".1f"),
                     _fmt(med[pipeline][1], ".2f"), _fmt(_median([r.cpu_s for r in ok]), ".0f"),
                     ",".join(map(str, ad)) or "-",
                     _fmt(_median([r.error_rms_mas for r in recs]), ".1f")
                     + (" (31 px box)" if any(r.accuracy.get("box") == "box31" for r in recs) else ""),
                     _fmt(_median([r.mean_offset_mas for r in recs]), ".1f"), ", ".join(wcsnames) or "-",
                     failures))
    if len(med) == 2 and all(med[p][0] for p in PIPELINES) and all(med[p][1] for p in PIPELINES):
        a, b = med["runastrodriz"], med["astrodriz-sm"]
        rows.append(("ours / runastrodriz", "", f"{b[0] / a[0]:.2f}", f"{b[1] / a[1]:.2f}", "", "", "", "", "",
                     ""))
    return markdown(rows)


def runs_table(records: list[RunRecord]) -> str:
    rows = [("run", "pipeline", "exit", "wall (s)", "peak tree RSS (GB)", "processes at peak",
             "largest process RSS (GB)", "CPU (s)", "AstroDrizzle runs", "error RMS (mas)", "stars", "WCSNAME",
             "status")]
    for r in records:
        rows.append((str(r.index), r.pipeline, str(r.exit_code), f"{r.wall_s:.1f}", f"{r.peak_tree_rss_gb:.2f}",
                     str(r.peak_tree_processes), f"{r.max_single_rss_gb:.2f}", f"{r.cpu_s:.0f}",
                     _fmt(r.astrodrizzle_runs, "d"), _error(r), _fmt(r.n_stars, "d"),
                     str(r.wcsname or "-"), r.status))
    return markdown(rows)


def breakdown_text(rec: RunRecord) -> str:
    """Where the time of one run went."""
    b = rec.breakdown
    lines = [f"{rec.pipeline} run {rec.index} ({rec.wall_s:.1f} s wall):"]
    if rec.pipeline == "runastrodriz":
        rows = [("stage (from its output headings)", "seconds", "AstroDrizzle runs", "AstroDrizzle seconds")]
        for phase, p in b.get("phases", {}).items():
            rows.append((phase, f"{p['seconds']:.1f}", str(p["astrodrizzle_runs"]),
                         f"{p['astrodrizzle_seconds']:.1f}"))
        lines.append(markdown(rows))
        lines.append(f"('astrodrizzle started' markers in its output: {b.get('astrodrizzle_started_markers')})")
    elif "error" in b:
        lines.append(f"event store: {b['error']}")
    else:
        rows = [("stage/step (event store 'seconds')", "seconds")]
        rows += [(k, f"{v:.2f}") for k, v in b["step_seconds"].items()]
        rows.append(("sum of steps", f"{b['sum_step_seconds']:.1f}"))
        rows.append(("first to last event", f"{b['event_span_seconds']:.1f}"))
        rows.append(("of which outside the handlers' timers (appends, folds, trailer renders, fingerprints)",
                     f"{b['outside_steps_seconds']:.1f}"))
        rows.append(("before the first event and after the last (interpreter start, imports, exit)",
                     f"{rec.wall_s - b['event_span_seconds']:.1f}"))
        lines.append(markdown(rows))
        share = b.get("event_store_share")
        lines.append(f"AstroDrizzle: {b['astrodrizzle_runs']} runs, {b['astrodrizzle_seconds']:.1f} s"
                     f" (reused: {', '.join(b['reused_products']) or 'none'}); "
                     f"{b['n_events']} events, store {b['store_bytes'] / 2 ** 20:.1f} MiB; "
                     "event-store share of the run (run.ended log_seconds / process_seconds): "
                     + (f"{b['event_store_seconds']:.2f} s, {100 * share:.2f} %" if share is not None
                        else "not recorded"))
    return "\n".join(lines)


def markdown(rows) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    out = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(rows[0], widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows[1:]]
    return "\n".join(out)


def work_root(keep: str | None, prefix: str) -> Path:
    """The directory the runs go into: ``--keep DIR`` (new or empty), else a fresh temporary one."""
    if not keep:
        return Path(tempfile.mkdtemp(prefix=prefix))
    root = Path(keep).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise SystemExit(f"{root}: --keep directory is not empty")
    return root


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full-frame", action="store_true", help="two 4096x2048 chips (default: 512x512 subarray)")
    p.add_argument("--exposures", type=int, choices=(3, 4), default=3, help="association members (default 3)")
    p.add_argument("--pointing-error", type=float, default=0.6, metavar="ARCSEC",
                   help="common header pointing error (default 0.6)")
    p.add_argument("--flt-only", action="store_true", help="FLT exposures only (default: FLC and FLT)")
    p.add_argument("--repeat", type=int, default=1, metavar="N", help="runs of each pipeline (default 1)")
    p.add_argument("--unreachable", action="store_true",
                   help="point the service variables at a closed loopback port")
    p.add_argument("--only", choices=PIPELINES, help="run one pipeline only")
    p.add_argument("--timeout", type=float, default=0, metavar="SEC",
                   help="kill a run after SEC seconds (default: no limit)")
    p.add_argument("--keep", metavar="DIR", help="keep the simulation and run directories in DIR (new or empty)")
    p.add_argument("--json", metavar="FILE", help="also write every measurement as JSON")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    machine = machine_description()
    print(f"# command: {shlex.join([sys.executable, *sys.argv])}" if argv is None
          else f"# command: {shlex.join(['compare_runastrodriz.py', *argv])}")
    print(f"# machine: {machine['nproc']} cores ({machine['usable_cores']} usable), "
          f"{machine['memory_gib']} GiB, {machine['cpu_model']}, Linux {machine['kernel']}, "
          f"Python {machine['python']}, drizzlepac {machine['drizzlepac']}, stwcs {machine['stwcs']}")
    print(f"# started {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC", flush=True)

    from astrodriz_sm.services import service_environment
    from astrodriz_sm.sim import SimConfig, simulate_association

    workroot = work_root(args.keep, "compare-runastrodriz-")
    config = SimConfig(n_exposures=args.exposures, full_frame=args.full_frame, pointing_error=args.pointing_error,
                       products="flt" if args.flt_only else "flt+flc")
    t = time.monotonic()
    sim = simulate_association(workroot / "sim", config)
    print(f"# simulated {sim.asn.name}: {args.exposures} exposures, "
          f"{'full frame' if args.full_frame else f'{config.subarray_size}x{config.subarray_size} subarray'}, "
          f"{'FLT only' if args.flt_only else 'FLC+FLT'}, pointing error {args.pointing_error:g} arcsec "
          f"({time.monotonic() - t:.0f} s, not timed below)", flush=True)

    service = None
    if args.unreachable:
        port = closed_port()
        service_env = service_environment(f"http://127.0.0.1:{port}/")
        print(f"# services unreachable: port {port} on 127.0.0.1 is closed")
    else:
        service = start_local_service(sim.service_dir, workroot / "astrometry_service.db")
        service_env = service.environment
        print(f"# local astrometry service on {service.url} (served by this process, outside the measured tree)")
    for key in SERVICE_VARIABLES:
        print(f"#   {key}={service_env[key]}")
    print(flush=True)

    pipelines = [args.only] if args.only else list(PIPELINES)
    from astrodriz_sm.model import Exposure, ExposureSet

    # The verified product: the DRC, or the DRZ of an FLT-only association.
    exposures = ExposureSet(tuple(Exposure.from_name(p.name) for p in sim.flt),
                            tuple(Exposure.from_name(p.name) for p in sim.flc))
    product_name = exposures.verified_product(sim.root).name
    records = []
    try:
        for i in range(1, args.repeat + 1):
            for pipeline in pipelines:
                print(f"run {i}/{args.repeat} {pipeline} ...", end=" ", flush=True)
                rec = one_run(pipeline, i, sim, workroot, service_env, product_name, args.timeout or None)
                records.append(rec)
                print(f"{rec.wall_s:.1f} s, peak RSS {rec.peak_tree_rss_gb:.2f} GB, "
                      f"error {_fmt(rec.error_rms_mas, '.1f')} mas, {rec.status}", flush=True)
                if not args.keep:
                    shutil.rmtree(rec.directory, ignore_errors=True)
    finally:
        if service is not None:
            service.stop()
        if not args.keep:
            shutil.rmtree(workroot, ignore_errors=True)

    print("\n## Summary (medians over successful runs; peak RSS: the whole process tree, sampled every 0.1 s)\n")
    print(summary_table(records))
    print("\n## Runs\n")
    print(runs_table(records))
    print("\n## Where the time goes (last run of each pipeline)\n")
    for pipeline in pipelines:
        last = [r for r in records if r.pipeline == pipeline][-1:]
        for rec in last:
            print(breakdown_text(rec))
            print()
    if args.keep:
        print(f"run directories kept in {workroot}")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": sys.argv, "machine": machine, "config": asdict(config),
                                               "unreachable": args.unreachable,
                                               "runs": [asdict(r) for r in records]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
