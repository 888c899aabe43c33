"""One association on a Dask worker: ``astrodriz-sm start`` (or ``resume``) as a process of its own.

The process keeps its environment, memory and AstroDrizzle's own worker processes apart from the
Dask worker and from other associations. The worker watches its process tree: the peak resident
memory is reported, and a tree that grows past the attempt's memory budget is killed (SIGKILL),
which the driver answers with a retry that is given more memory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import psutil

from ..store.eventstore import utc_now
from .runs import run_summary

# How often the process tree's memory is read.
SAMPLE_INTERVAL_S = 0.2
# How often a wait for another holder of a run looks at the store.
HOLDER_POLL_S = 1.0
#: The action of a job that runs no process: wait until no live process holds the input's run.
WAIT = "wait"


@dataclass(frozen=True)
class Job:
    """What the driver asks a worker to do for one association (sent to the worker as it is).

    Attributes
    ----------
    input : str
        The association's input file.
    store : str
        Its event store.
    action : {'start', 'resume', 'wait'}
        What the plan found to do. Both ``start`` and ``resume`` run ``start --resume``: it continues
        an unfinished run whose holder is gone, so that a task run again after its worker died takes
        its own earlier run over. ``wait`` runs no process: it returns when no live process holds the
        input's run any more.
    run_id : str or None
        The run a ``resume`` continues.
    start_arguments : tuple of str
        The options of ``astrodriz-sm start`` (``-n 1``, ``-g``, ...).
    newpath : str or None
        ``start``'s NEWPATH: node-local scratch disk the run works in (``batch --scratch``).
    environment : dict
        Variables the process gets on top of the worker's environment (reference directories, service
        URLs, switches): the same on every worker.
    memory_budget : int or None
        Bytes the process tree may use; None: the Dask worker's memory limit (none outside a worker).
    latest : str or None
        The input's latest run when the job was planned (None: no run). Another process that has run
        the association since makes the job do nothing (exit 75), and the driver plans again.
    """

    input: str
    store: str
    action: str
    run_id: str | None
    start_arguments: tuple = ()
    newpath: str | None = None
    environment: dict = field(default_factory=dict)
    memory_budget: int | None = None
    latest: str | None = None

    def command(self) -> list[str]:
        """The ``astrodriz-sm`` command line of this job."""
        cli = [sys.executable, "-m", "astrodriz_sm.cli.main", "-q"]
        # A resume too is a start that continues the input's unfinished run: it then also takes over
        # one that a worker that died left, and does nothing when another process has run it since.
        newpath = [self.newpath] if self.newpath else []
        return [*cli, "start", "--resume", "--expect-latest", self.latest or "none", self.input, *newpath,
                *self.start_arguments, "--store", self.store]


@dataclass(frozen=True)
class Outcome:
    """How one attempt went, as seen on the worker.

    Attributes
    ----------
    exit_code : int or None
        None when a signal ended the process.
    signal : int or None
    memory_killed : bool
        The worker killed the process tree for exceeding ``memory_budget``.
    memory_budget : int or None
    wall_s : float
    peak_rss_bytes : int
    message : str or None
        The last line the process wrote on standard error.
    run_id, run_status, wcsname, wcs_type : str or None
        From the event store after the process ended: the input's latest run, how it stands (``done``,
        ``failed``, ``skipped`` or ``unfinished``), the final WCSNAME and its type.
    host, worker : str
    started_utc, ended_utc : str
    """

    exit_code: int | None
    signal: int | None
    memory_killed: bool
    memory_budget: int | None
    wall_s: float
    peak_rss_bytes: int
    message: str | None
    run_id: str | None
    run_status: str | None
    wcsname: str | None
    wcs_type: str | None
    host: str
    worker: str | None
    started_utc: str
    ended_utc: str


def _dask_worker():
    try:
        from distributed import get_worker

        return get_worker()
    except ValueError:  # not inside a Dask worker (called directly)
        return None


# Run before the command replaces it (exec keeps it): be sent SIGTERM when the thread that started the
# process ends. That thread waits for the process until it exits, so it ends first only when the Dask
# worker dies; SIGTERM then stops the run as Ctrl-C does (its workers stopped, its lease given up), and
# the next batch resumes it. Set in the child itself, not in a preexec_fn, which is unsafe in a
# process with threads.
_TIED = ("import ctypes, os, signal, sys; ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM); "
         "os.getppid() == int(sys.argv[1]) or sys.exit(9); os.execv(sys.argv[2], sys.argv[2:])")


def tied_command(command: list[str]) -> list[str]:
    """``command``, set to stop (SIGTERM) when the calling thread ends (Linux ``PR_SET_PDEATHSIG``)."""
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-c", _TIED, str(os.getpid()), *command]


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    with contextlib.suppress(psutil.Error):
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
    return total


def _kill_tree(proc: psutil.Process) -> None:
    with contextlib.suppress(psutil.Error):
        for p in [*proc.children(recursive=True), proc]:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGKILL)


def wait_for_holder(job: Job) -> Outcome:
    """Return when no live process holds ``job.input``'s latest run any more.

    A run gives up its lease when it ends or is interrupted; a holder that died is judged by
    :meth:`EventStore.check_lease` (its process gone, or its lease expired on another host).
    """
    from ..store.eventstore import EventStore, LeaseHeld, StoreError

    worker = _dask_worker()
    started, t0 = utc_now(), time.monotonic()
    first = None
    try:
        with EventStore(job.store, read_only=True) as store:
            while (latest := store.latest_run(job.input)) is not None:
                try:
                    store.check_lease(latest["run_id"])
                    break
                except LeaseHeld as exc:
                    first = first or str(exc)
                time.sleep(HOLDER_POLL_S)
    except StoreError:
        pass  # the next attempt's command says what is wrong with the store
    wall = time.monotonic() - t0
    summary = run_summary(job.store, job.input)
    return Outcome(exit_code=0, signal=None, memory_killed=False, memory_budget=job.memory_budget,
                   wall_s=round(wall, 3), peak_rss_bytes=0,
                   message=f"waited {wall:.0f} s: {first}" if first else "no live holder",
                   **{k: v for k, v in summary.items() if k != "exit_code"}, host=socket.gethostname(),
                   worker=worker.address if worker is not None else None, started_utc=started, ended_utc=utc_now())


def run_association(job: Job) -> Outcome:
    """Run one job's process to its end, watching its memory; the Dask task of an association.

    Returns
    -------
    Outcome
    """
    if job.action == WAIT:
        return wait_for_holder(job)
    worker = _dask_worker()
    budget = job.memory_budget
    if budget is None and worker is not None:
        budget = worker.memory_manager.memory_limit or None
    env = {**os.environ, **job.environment}
    started = utc_now()
    t0 = time.monotonic()
    peak, memory_killed = 0, False
    with tempfile.TemporaryFile() as err:
        # Its own session: a kill for memory reaches every process the run started.
        popen = subprocess.Popen(tied_command(job.command()), env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        proc = psutil.Process(popen.pid)
        while popen.poll() is None:
            rss = _tree_rss(proc)
            peak = max(peak, rss)
            if budget and rss > budget and not memory_killed:
                memory_killed = True
                _kill_tree(proc)
            time.sleep(SAMPLE_INTERVAL_S)
        wall = time.monotonic() - t0
        err.seek(0)
        lines = [ln for ln in err.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    code = popen.returncode
    return Outcome(exit_code=code if code >= 0 else None, signal=-code if code < 0 else None,
                   memory_killed=memory_killed, memory_budget=budget, wall_s=round(wall, 3), peak_rss_bytes=peak,
                   message=lines[-1] if lines else None,
                   **{k: v for k, v in run_summary(job.store, job.input).items() if k != "exit_code"},
                   host=socket.gethostname(), worker=worker.address if worker is not None else None,
                   started_utc=started, ended_utc=utc_now())
