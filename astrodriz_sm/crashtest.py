"""Crash harness: kill a run with SIGKILL at chosen points, resume it, compare with an uninterrupted run.

A child process runs the pipeline (:func:`astrodriz_sm.process`) with the runner's observer hook set
to stop the process (SIGSTOP) at a given point: right after an event is appended (a step starting or
completing) or at a progress point inside a step (a candidate fit found). The harness kills it with
SIGKILL there, at once or a given delay after letting it continue. It then runs
``astrodriz-sm resume`` and checks that the products' data arrays and WCS keywords equal those of
an uninterrupted run, that the log's hash chain verifies, that ``explain`` lists each candidate fit
once, that no stage directory or partial file is left behind, and that no process of the killed run
outlives it (its survivors: processes carrying the kill point's mark in their environment).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from .model import TRANSIENT_SUFFIXES
from .statemachine import EVENT_KINDS, fold
from .store.eventstore import EventStore

# (stage/step, observer point, delay in seconds[, condition]): step boundaries and the middle of the
# long steps (updatewcs, AstroDrizzle, source detection, fitting, promoting). A point is an event
# kind, or a progress point a handler names ('fitted': a fit was made, and is not yet recorded).
# With the condition "disk full" the run works on a tmpfs (root only) that is filled just before
# the kill, and emptied again before the resume.
KILL_POINTS = (
    ("init/resolve_inputs", "step.completed", 0.0),
    ("default/updatewcs", "step.started", 0.15),
    # With the process pool of the sky cells running: its workers must die with the run.
    ("default/updatewcs", "skycell", 0.0),
    ("default/astrodrizzle", "step.started", 1.0),
    ("default/astrodrizzle", "step.started", 3.0),
    ("default/verify_alignment", "step.started", 0.0),
    ("apriori/updatewcs", "step.started", 0.3),
    ("apriori/astrodrizzle", "step.started", 1.0),
    ("apriori/conclude", "step.completed", 0.0),
    ("aposteriori/align", "step.started", 0.4),
    ("aposteriori/align", "fitted", 0.0),
    ("aposteriori/astrodrizzle", "step.started", 1.0),
    ("final/astrodrizzle", "step.started", 1.0),
    ("final/promote", "step.started", 0.0),
    # One new file written beside its target, the others not yet; and the same with the disk full.
    ("final/promote", "promoted", 0.0),
    ("final/promote", "promoted", 0.0, "disk full"),
    ("final/replace", "step.started", 0.0),
    # One file renamed into place, the others not yet: the resume completes the set.
    ("final/replace", "replaced", 0.0),
    ("final/cleanup", "step.started", 0.0),
)
_WCS_KEYS = ("WCSNAME", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2",
             "CTYPE1", "CTYPE2", "NAXIS1", "NAXIS2")


# Environment variable set for a killed process, with a value of its own: every process it starts
# inherits it, so the processes of its tree can be found after it is gone.
TREE_MARK = "ASTRODRIZ_SM_PROCESS_TREE"
# How long the processes of a killed tree may take to end (the kernel's signals to them are immediate).
SURVIVOR_WAIT_S = 5.0


@dataclass
class KillResult:
    """Outcome of one kill point."""

    point: tuple
    killed: bool
    resume_exit: int | None
    identical: bool
    detail: str
    survivors: int = 0


def new_tree_mark() -> str:
    """A value for :data:`TREE_MARK` that no other process tree carries."""
    return uuid.uuid4().hex


def marked_processes(mark: str) -> list[int]:
    """Live processes (not zombies) whose environment holds ``TREE_MARK=mark`` (Linux ``/proc``)."""
    needle = f"{TREE_MARK}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # gone, or not ours to read
        if state not in ("Z", "X"):
            found.append(int(entry.name))
    return sorted(found)


def survivors(mark: str, wait: float = SURVIVOR_WAIT_S) -> list[int]:
    """The processes of a killed tree still alive after up to ``wait`` seconds (empty when all ended)."""
    deadline = time.monotonic() + wait
    while (alive := marked_processes(mark)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def kill_processes(pids) -> None:
    """SIGKILL each pid (one that already ended is skipped)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "astrodriz_sm.cli.main", "-q", *map(str, args)]


def product_signature(directory: Path) -> dict:
    """Data arrays and WCS keywords of every drizzled product in a directory."""
    sig = {}
    for product in sorted(directory.glob("*_dr[zc].fits")):
        with fits.open(product, memmap=False) as hdul:
            for hdu in hdul:
                if hdu.data is not None and hdu.name in ("SCI", "WHT", "CTX"):
                    sig[(product.name, hdu.name, hdu.ver)] = np.array(hdu.data)
                if hdu.name == "SCI":
                    sig[(product.name, "WCS", hdu.ver)] = tuple(hdu.header.get(k) for k in _WCS_KEYS)
    return sig


def compare(reference: dict, other: dict) -> str:
    """'' when equal, else what differs."""
    if reference.keys() != other.keys():
        return f"different products/extensions: {sorted(set(reference) ^ set(other))}"
    for key, ref in reference.items():
        val = other[key]
        if isinstance(ref, np.ndarray):
            if ref.shape != val.shape or not np.array_equal(ref, val, equal_nan=True):
                return f"{key} data differ"
        elif ref != val:
            return f"{key} WCS keywords differ: {ref} != {val}"
    return ""


def _leftovers(directory: Path, root: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir()
                  if (p.is_dir() and p.name.startswith(f"{root}_")) or p.name.endswith(TRANSIENT_SUFFIXES))


def pause_at(target: str):
    """An observer for :func:`astrodriz_sm.process` that stops this process (SIGSTOP) at ``target``.

    ``target`` is ``'<stage>/<step> <point>'``; the process stops the first time the point is reached.
    """
    pending = [target]

    def observe(stage: str, step: str, point: str) -> None:
        if pending and f"{stage}/{step} {point}" == pending[0]:
            pending.clear()
            os.kill(os.getpid(), signal.SIGSTOP)

    return observe


def child(target: str, input_path: str, newpath: str | None = None) -> int:
    """The child process: run the pipeline on ``input_path`` (in ``newpath``), stopping itself at ``target``."""
    from . import process

    return process(input_path, newpath, console=False, observer=pause_at(target)).exit_code


DISK_FULL = "disk full"


def start_and_kill(asn: Path, env: dict, point: tuple, timeout: float = 600.0, on_stop=None,
                   mark: str | None = None) -> bool:
    """Run the pipeline on ``asn`` in a child process and SIGKILL it at ``point``.

    The child stops itself at the point (see :func:`pause_at`), however loaded the machine is
    (polling the log from outside can miss a short step); it then runs ``delay`` more seconds and
    is killed. ``on_stop()``, when given, runs while the child is stopped. With ``mark``, the child
    (and so every process it starts) carries ``TREE_MARK=mark`` in its environment.

    Returns
    -------
    bool
        False when the run ended before the kill point.
    """
    where, kind, delay = point[:3]
    if mark is not None:
        env = {**env, TREE_MARK: mark}
    proc = subprocess.Popen([sys.executable, "-m", "astrodriz_sm.crashtest", "child", f"{where} {kind}", str(asn)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status = os.waitpid(proc.pid, os.WUNTRACED | os.WNOHANG)
        if pid == 0:
            time.sleep(0.02)
        elif os.WIFSTOPPED(status):
            if on_stop is not None:
                on_stop()
            if delay:
                proc.send_signal(signal.SIGCONT)
                time.sleep(delay)
            if proc.poll() is not None:
                return False
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        else:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return False
    proc.kill()
    proc.wait()
    return False


def _fill(directory: Path, leave: int = 100_000) -> Path:
    """Fill the file system of ``directory`` but for ``leave`` bytes; return the filler file."""
    filler = directory / "filler"
    st = os.statvfs(directory)
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def run_point(source: Path, asn_name: str, env: dict, point: tuple, reference: dict, workroot: Path,
              timeout: float = 600.0) -> KillResult:
    """Copy the association, run it, kill it at ``point``, resume, compare."""
    base = Path(tempfile.mkdtemp(prefix="kill-", dir=workroot))
    disk_full = point[3:] == (DISK_FULL,)
    if disk_full:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", base], check=True)
    try:
        return _run_point(base, source, asn_name, env, point, reference, timeout, disk_full)
    finally:
        if disk_full:
            subprocess.run(["umount", base], check=True)


def _run_point(base: Path, source: Path, asn_name: str, env: dict, point: tuple, reference: dict,
               timeout: float, disk_full: bool) -> KillResult:
    d = base / "data"
    shutil.copytree(source, d)
    root = asn_name.removesuffix("_asn.fits")
    store = d / "astrodriz_sm.db"
    fillers = []
    on_stop = (lambda: fillers.append(_fill(base))) if disk_full else None
    mark = new_tree_mark()
    if not start_and_kill(d / asn_name, env, point, timeout, on_stop=on_stop, mark=mark):
        kill_processes(marked_processes(mark))
        return KillResult(point, False, None, False, "the run ended before the kill point")
    # Counted before anything else happens: a survivor would go on writing into what the resume reads.
    alive = survivors(mark)
    kill_processes(alive)
    for filler in fillers:
        filler.unlink()
    problems = []
    if alive:
        problems.append(f"{len(alive)} processes outlived the killed run")
    where, kind, delay = point[:3]
    log = EventStore(store)
    last = log.events(log.latest_run()["run_id"])[-1]
    # A progress point lies inside its step: the last event is then the step's start.
    expected = kind if kind in EVENT_KINDS else "step.started"
    if not delay and (f"{last.stage}/{last.step}", last.kind) != (where, expected):
        problems.append(f"killed after {last.stage}/{last.step} {last.kind}, not at the point")
    resumed = subprocess.run(_cli("resume", "--store", store), env=env, capture_output=True, text=True,
                             timeout=timeout, check=False)
    if resumed.returncode != 0:
        return KillResult(point, True, resumed.returncode, False,
                          "; ".join(problems + resumed.stderr.strip().splitlines()[-1:]), len(alive))
    verify = subprocess.run(_cli("verify-log", "--store", store), env=env, capture_output=True, text=True,
                            check=False)
    if verify.returncode != 0:
        problems.append("log does not verify: " + verify.stdout.strip())
    if leftovers := _leftovers(d, root):
        problems.append(f"left behind: {leftovers}")
    if diff := compare(reference, product_signature(d)):
        problems.append(diff)
    events = log.events(log.latest_run()["run_id"])
    if not any(e.kind == "run.resumed" for e in events):
        problems.append("no run.resumed event")
    catalogs = [c["catalog"] for c in fold(events).candidates.get("aposteriori", [])]
    if len(catalogs) != len(set(catalogs)):
        problems.append(f"candidate fits listed more than once: {catalogs}")
    shutil.rmtree(d, ignore_errors=True)
    return KillResult(point, True, 0, not problems, "; ".join(problems), len(alive))


def harness(source: Path, asn_name: str, env: dict, points=KILL_POINTS, workers: int = 2,
            out=sys.stdout) -> list[KillResult]:
    """Run the uninterrupted reference, then every kill point; print one line per point and the tally.

    Parameters
    ----------
    source : Path
        Directory of a simulated association (never modified).
    asn_name : str
        ``<root>_asn.fits``.
    env : dict
        Environment of the child processes (``jref``, service URLs).
    points : sequence
        Kill points ``(stage/step, event kind, delay seconds)``.
    workers : int
        Kill points run concurrently.

    Returns
    -------
    list of KillResult
    """
    workroot = Path(tempfile.mkdtemp(prefix="crash-harness-"))
    try:
        ref_dir = workroot / "reference"
        shutil.copytree(source, ref_dir)
        subprocess.run(_cli("start", ref_dir / asn_name), env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        reference = product_signature(ref_dir)
        if os.geteuid() != 0:  # mounting a tmpfs needs root
            for p in (p for p in points if p[3:] == (DISK_FULL,)):
                print(f"{p[0]:28s} {p[1]:15s} +{p[2]:.2f}s  not run: {DISK_FULL} needs root", file=out)
            points = [p for p in points if p[3:] != (DISK_FULL,)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda p: run_point(source, asn_name, env, p, reference, workroot), points))
        for r in results:
            status = "identical" if r.identical else ("NOT KILLED" if not r.killed else "DIFFERENT")
            condition = f" ({r.point[3]})" if r.point[3:] else ""
            print(f"{r.point[0]:28s} {r.point[1]:15s} +{r.point[2]:.2f}s{condition}  {status}  "
                  f"survivors: {r.survivors}  {r.detail}".rstrip(), file=out)
        killed = [r for r in results if r.killed]
        print(f"{sum(r.identical for r in killed)}/{len(killed)} kill points resumed identical, "
              f"survivors: {sum(r.survivors for r in killed)}", file=out)
        return results
    finally:
        shutil.rmtree(workroot, ignore_errors=True)


def main(argv=None) -> int:
    """Simulate the demo association, serve its astrometry, and run the crash harness on it."""
    from .services import ServiceStore, start_server
    from .sim import SimConfig, simulate_association

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        return child(*argv[1:4])

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--flt-only", action="store_true", help="FLT exposures only (faster)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="crash-sim-") as tmp:
        sim = simulate_association(Path(tmp) / "data",
                                   SimConfig(pointing_error=0.6, products="flt" if args.flt_only else "flt+flc"))
        db = Path(tmp) / "service.db"
        ServiceStore(db).load_directory(sim.service_dir)
        service = start_server(db)
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("ASTROM")}
            env.update(service.environment, jref=f"{sim.outdir}/")
            results = harness(sim.outdir, sim.asn.name, env, workers=args.workers)
        finally:
            service.stop()
    killed = [r for r in results if r.killed]
    return 0 if killed and all(r.identical for r in killed) and len(killed) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
