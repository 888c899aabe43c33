"""``astrodriz-sm batch``: many associations on a Dask cluster, each one a task, resumable, with a ledger.

The driver decides what each association needs from its event store (nothing, a resume, a start),
sends one task per association to the cluster (:func:`astrodriz_sm.campaign.worker.run_association`),
records every attempt in the ledger, and answers each outcome by its exit-code class
(:data:`astrodriz_sm.errors.CAMPAIGN_RETRY`): a final outcome is kept, a processing or internal
failure is tried once more, a process stopped by a signal is resumed, with twice the memory when
its memory was the cause.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config import LEASE_EXPIRY_VARIABLE, RECORDED_VARIABLES, product_differences
from ..model.options import RunConfig
from ..errors import (CAMPAIGN_RETRY, FINAL, HELD_ELSEWHERE, RETRY_ONCE, AstrodrizError, ExitCode, Interrupted,
                      UsageError)
from ..model import store_path
from ..model.options import chosen_options, start_arguments
from ..plumbing import size_text
from ..store.eventstore import utc_now
from .ledger import DONE, FAILED, FOUND, HELD, RETRY, SKIPPED, Attempt, Ledger, LedgerError
from .runs import NOT_VERIFIED, STORE_UNREADABLE, read_run, run_summary
from .worker import WAIT, Job, Outcome, run_association

# Variables of the driver's environment every association's process gets, on whichever worker: what
# the runs record, and the lease expiry.
JOB_VARIABLES = (*RECORDED_VARIABLES, LEASE_EXPIRY_VARIABLE)
# The Dask resource each worker offers and a retry for memory asks for, in bytes.
MEMORY_RESOURCE = "MEMORY"
# The name of every association's task (the dashboard's task group).
TASK_PREFIX = "association"
# How often the driver looks at the cluster while it waits for results, and how long a cluster may
# have no worker at all before the batch stops (a scheduler whose workers are gone).
WATCH_S = 2.0
NO_WORKERS_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Plan:
    """What an association needs: ``action`` is ``start``, ``resume`` or ``none``, and why.

    ``latest`` is the input's latest run when the plan was made (None: no run): the job runs only
    if no other process has run the association since (``start --expect-latest``).
    """

    action: str
    run_id: str | None
    reason: str
    latest: str | None = None


def store_of(input: Path) -> Path:
    """An association's event store: ``astrodriz_sm.db`` beside its input, as ``start`` makes it."""
    return store_path(input.parent)


def plan(input: Path, planned: RunConfig | None, retry_failed: bool = False) -> Plan:
    """Decide from the input's event store what its association needs.

    Parameters
    ----------
    input : Path
        Resolved input file.
    planned : RunConfig or None
        The configuration a start would record; None when it cannot be built (bad input: the start
        will say why, with its exit code).
    retry_failed : bool
        Run again an association whose run failed with a final exit class.

    Returns
    -------
    Plan
        ``none`` for a run that ended done or skipped, or failed with a final class, with the same
        products' settings; ``resume`` for an unfinished run; ``start`` otherwise.
    """
    stored = read_run(store_of(input), input=str(input))
    if stored.state == STORE_UNREADABLE:
        return Plan("start", None, stored.problem)  # a damaged store: start refuses it with exit 8
    if stored.state == NOT_VERIFIED:
        return Plan("start", None, stored.problem, stored.run_id)  # nothing its log says is trusted: a new run
    run, run_id = stored.run, stored.run_id
    if run is None:
        return Plan("start", None, "no run yet")
    if not run.is_ended:
        return Plan("resume", run_id, "unfinished", run_id)
    status, code = run.ended["status"], run.ended["exit_code"]
    differences = product_differences(run.config, planned) if planned is not None else ["configuration"]
    if differences:
        return Plan("start", None, f"run {run_id} ended {status} with other settings "
                                   f"({'; '.join(differences)})", run_id)
    if status in ("done", "skipped"):
        return Plan("none", run_id, f"run {run_id} ended {status}", run_id)
    final = CAMPAIGN_RETRY.get(_exit_code(code), FINAL) == FINAL
    if status == "failed" and final and not retry_failed:
        return Plan("none", run_id, f"run {run_id} failed with exit {code}", run_id)
    return Plan("start", None, f"run {run_id} ended {status} (exit {code})", run_id)


def _exit_code(code: int | None) -> ExitCode:
    try:
        return ExitCode(code)
    except ValueError:
        return ExitCode.INTERNAL


def judge(outcome: Outcome | None, attempts_this_batch: int, max_attempts: int) -> tuple[str, str]:
    """``(exit class, verdict)`` of an attempt; ``outcome`` None when its worker was lost.

    The class is the exit code's name (``ok``, ``input``, ``processing``, ...), ``signal SIGKILL``,
    ``memory`` (killed past its memory budget) or ``worker lost``. The verdict follows
    :data:`~astrodriz_sm.errors.CAMPAIGN_RETRY`: ``retry`` while the class allows another attempt
    and fewer than ``max_attempts`` were made in this batch, else ``done``, ``skipped`` or ``failed``;
    ``held elsewhere`` when another live process holds the association's run.
    """
    if outcome is None or outcome.exit_code is None:
        if outcome is None:
            exit_class = "worker lost"
        elif outcome.memory_killed:
            exit_class = "memory"
        else:
            exit_class = f"signal {signal.Signals(outcome.signal).name}"
        policy = CAMPAIGN_RETRY[ExitCode.INTERRUPTED]
    else:
        code = _exit_code(outcome.exit_code)
        exit_class, policy = code.name.lower(), CAMPAIGN_RETRY[code]
        if code == ExitCode.OK:
            # A skipped run (DRIZCORR=OMIT) exits 0 as runastrodriz does; its store says it was skipped.
            return ("skipped", SKIPPED) if outcome.run_status == "skipped" else (exit_class, DONE)
    if policy == HELD_ELSEWHERE:
        return exit_class, HELD
    if policy == FINAL:
        return exit_class, FAILED
    limit = min(2, max_attempts) if policy == RETRY_ONCE else max_attempts
    return exit_class, RETRY if attempts_this_batch < limit else FAILED


def read_input_list(path: str) -> list[str]:
    """The inputs listed in a file, one a line; blank lines and ``#`` comments are ignored.

    Raises
    ------
    UsageError
        When the file cannot be read.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the list of inputs ({exc.strerror or exc})") from None
    return [ln.split("#", 1)[0].strip() for ln in text.splitlines() if ln.split("#", 1)[0].strip()]


@dataclass
class BatchResult:
    """How a batch ended: the verdict of each association, the attempts made, where it ran."""

    verdicts: dict = field(default_factory=dict)  # input -> (verdict, exit code or None)
    attempts: int = 0
    already_done: int = 0
    dashboard: str | None = None
    exit_code: int = 0


class Progress:
    """The console's view of a batch: one line per finished attempt, led by a bar of the campaign."""

    def __init__(self, total: int, out, width: int = 30):
        self.total, self.out, self.width = total, out, width
        self.finished = Counter()

    def line(self, root: str, text: str, verdict: str | None = None) -> None:
        if verdict in (DONE, SKIPPED, FAILED):
            self.finished[verdict] += 1
        n = sum(self.finished.values())
        filled = self.width * n // self.total if self.total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.finished.items()))
        print(f"[{bar}] {n}/{self.total} ({counts or 'none finished'})  {root}: {text}", file=self.out, flush=True)


def _parse_memory(text: str | None, workers: int) -> int:
    """A per-worker memory limit in bytes: ``auto`` is this machine's memory shared among the workers."""
    import psutil
    from dask.utils import parse_bytes

    if text in (None, "auto"):
        return psutil.virtual_memory().total // workers
    try:
        return int(parse_bytes(text))
    except (ValueError, TypeError):
        raise UsageError(f"--memory-limit {text!r}: expected a size such as 4GB, or auto") from None


# This machine only: the dashboard shows every association's path and can stop tasks. Another
# address is used only when given (``--dashboard-address``).
DASHBOARD_ADDRESS = "127.0.0.1:8787"


@contextlib.contextmanager
def _cluster(scheduler: str | None, workers: int, memory_limit: str | None, dashboard_address: str):
    """A Dask client: on an existing scheduler, else on an embedded LocalCluster of one thread per worker.

    Yields the client, a description of the cluster, and its dashboard's URL: the scheduler's own for
    an existing one; for the embedded one, the address its dashboard socket is bound to.
    """
    from distributed import Client, LocalCluster
    from distributed.utils import format_dashboard_link

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise UsageError(f"--scheduler {scheduler}: no Dask scheduler answers there ({exc})") from None
        with client:
            yield client, scheduler, client.dashboard_link
        return
    import dask

    limit = _parse_memory(memory_limit, workers)
    # Saturation 1.0: the scheduler holds queued associations and hands one to a worker when its
    # thread is free. Its default (1.1) gives a one-thread worker two, and a long association then
    # waits behind another while a worker that finished sits idle.
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}), LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=limit,
                      resources={MEMORY_RESOURCE: limit}, dashboard_address=dashboard_address) as cluster, \
            Client(cluster) as client:
        # Dask's own link names the scheduler's host whatever the dashboard is bound to.
        http = cluster.scheduler.http_server
        yield (client, f"LocalCluster of {workers} workers, 1 thread and {size_text(limit)} each",
               format_dashboard_link(f"[{http.address}]" if ":" in http.address else http.address, http.port))


def _largest_memory_offer(client) -> int | None:
    offers = [w.get("resources", {}).get(MEMORY_RESOURCE) for w in client.scheduler_info()["workers"].values()]
    offers = [o for o in offers if o]
    return int(max(offers)) if offers else None


def run_batch(inputs: list[str], options: dict, *, ledger_path: str | os.PathLike, workers: int = 2,
              memory_limit: str | None = None, scheduler: str | None = None, scratch: str | None = None,
              task_memory: int | None = None, max_attempts: int = 3, retry_failed: bool = False,
              environ: dict | None = None, dashboard_address: str = DASHBOARD_ADDRESS,
              no_workers_timeout: float = NO_WORKERS_TIMEOUT_S, out=None) -> BatchResult:
    """Run a campaign: every input to its end, on a Dask cluster; see the module's description.

    Parameters
    ----------
    inputs : list of str
        Input files, as ``start`` takes them.
    options : dict
        ``start``'s run options for every association, by their API names
        (:data:`astrodriz_sm.model.options.CHOSEN`); ``num_cores`` is 1 unless told otherwise.
    ledger_path : path
        The campaign ledger (created if missing).
    workers, memory_limit : int, str
        The embedded LocalCluster's workers (one thread each) and each one's memory (``4GB``, ``auto``).
    scheduler : str, optional
        Address of an existing Dask scheduler to use instead.
    scratch : str, optional
        Node-local directory each run works in (``start``'s NEWPATH).
    task_memory : int, optional
        Bytes each association's processes may use at first; default the worker's memory limit.
    max_attempts : int
        Attempts per association in one batch.
    retry_failed : bool
        Run again associations whose run failed with a final exit class.
    environ : dict, optional
        Whose :data:`JOB_VARIABLES` every process gets (default ``os.environ``).
    dashboard_address : str
        Where the embedded cluster serves its dashboard.
    no_workers_timeout : float
        Seconds the cluster may have no worker at all (the workers of ``scheduler`` gone) before the
        batch stops, as an interruption: one line, exit 9, and the next batch resumes.
    out : file, optional
        The console (default standard error).

    Returns
    -------
    BatchResult
        ``exit_code`` 0 when every association ended done or skipped; else the failed ones' exit
        code when they share one, else 5.
    """
    from distributed import wait

    from ..api import run_config

    out = sys.stderr if out is None else out
    try:
        # One core each unless told otherwise: the cluster runs one association per worker thread.
        options = chosen_options({"num_cores": 1, **options})
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    env = dict(os.environ if environ is None else environ)
    job_env = {k: env[k] for k in JOB_VARIABLES if k in env}
    ledger = Ledger(ledger_path, create=True)
    try:
        ledger.lock_for_driver()
    except LedgerError:
        ledger.close()
        raise
    result = BatchResult()
    resolved = list(dict.fromkeys(str(Path(i).resolve()) for i in inputs))
    batch_id = ledger.begin_batch(len(resolved), {**options, "workers": workers, "scheduler": scheduler,
                                                  "memory_limit": memory_limit, "scratch": scratch,
                                                  "task_memory": task_memory, "max_attempts": max_attempts})
    pending: dict[str, Job] = {}
    roots, planned_of = {}, {}
    for text in resolved:
        path = Path(text)
        try:
            planned_of[text], roots[text] = run_config(path, scratch, environ=env, **options)
        except AstrodrizError:
            planned_of[text], roots[text] = None, path.name.split("_")[0]
        ledger.add_association(text, roots[text])
        p = plan(path, planned_of[text], retry_failed)
        if p.action == "none":
            result.already_done += 1
            # A run finished outside this ledger (by hand, or by a batch with another ledger): record it once.
            result.verdicts[text] = _found(ledger, text, batch_id, p.reason, attempt=0)
            continue
        pending[text] = Job(text, str(store_of(path)), p.action, p.run_id, start_arguments(options), scratch, job_env,
                            task_memory, latest=p.latest)
    ledger.describe_batch(batch_id, already_done=result.already_done)
    progress = Progress(len(resolved), out)
    if result.already_done:
        print(f"{result.already_done} of {len(resolved)} associations already finished with these settings",
              file=out)
    if not pending:
        ledger.end_batch(batch_id)
        ledger.close()
        result.exit_code = _batch_exit(result.verdicts)
        return result
    counts, submitted_n, futures = Counter(), Counter(), {}
    stopped_for = None
    try:
        with _cluster(scheduler, workers, memory_limit, dashboard_address) as (client, where, dashboard):
            result.dashboard = dashboard
            ledger.describe_batch(batch_id, cluster=where, dashboard=result.dashboard)
            print(f"{len(pending)} associations on {where}; Dask dashboard: {result.dashboard}", file=out, flush=True)
            offer = _largest_memory_offer(client)

            def submit(text: str, job: Job, resources: dict | None = None) -> None:
                if job.action != WAIT:
                    counts[text] += 1
                submitted_n[text] += 1
                # One task group for the whole campaign ("association-..."), so that the scheduler
                # queues it as root tasks instead of assigning every association at once. A wait for
                # another holder comes after every association that can run now.
                fut = client.submit(run_association, job, key=f"{TASK_PREFIX}-{roots[text]}-{batch_id}-"
                                    f"{submitted_n[text]}-{os.urandom(3).hex()}", pure=False, resources=resources,
                                    priority=-1 if job.action == WAIT else 0)
                futures[fut] = (text, job, utc_now())

            def _answer(fut, text: str, job: Job, submitted: str) -> None:
                try:
                    outcome = fut.result()
                except Exception as exc:  # noqa: BLE001 - the worker died or the task could not run
                    outcome, lost = None, f"{type(exc).__name__}: {exc}"
                else:
                    lost = None
                path = Path(text)
                if job.action == WAIT and outcome is not None:
                    # The other holder ended or is gone: plan again from its store.
                    p = plan(path, planned_of[text], retry_failed)
                    if p.action == "none":
                        verdict = result.verdicts[text] = _found(ledger, text, batch_id, f"{p.reason}; "
                                                                 f"{outcome.message}")
                        progress.line(roots[text], f"{p.reason} (by another process)", verdict[0])
                    else:
                        progress.line(roots[text], f"{outcome.message}; {p.action}")
                        submit(text, replace(job, action=p.action, run_id=p.run_id, latest=p.latest))
                    return
                exit_class, verdict = judge(outcome, counts[text], max_attempts)
                result.attempts += 1
                retry_job, resources, note = None, None, None
                if verdict == HELD:
                    counts[text] -= 1  # nothing was run: not an attempt of this batch's own
                    retry_job = replace(job, action=WAIT)
                elif verdict == RETRY:
                    p = plan(path, planned_of[text], retry_failed=True)
                    budget = job.memory_budget
                    if outcome is not None and outcome.memory_killed:
                        budget = 2 * outcome.memory_budget
                        if offer is not None:
                            budget = min(budget, offer)
                            resources = {MEMORY_RESOURCE: budget}
                        note = (f"killed past {size_text(outcome.memory_budget)}; retried with "
                                f"{size_text(budget)}" + ("" if budget > outcome.memory_budget else
                                                          " (no worker offers more)"))
                    retry_job = replace(job, action=p.action if p.action != "none" else "start", run_id=p.run_id,
                                        memory_budget=budget, latest=p.latest)
                o = outcome
                ledger.record(Attempt(
                    text, ledger.next_attempt(text), batch_id, job.action, o.run_id if o else job.run_id, job.store,
                    o.exit_code if o else None, o.signal if o else None, exit_class, verdict,
                    wall_s=o.wall_s if o else None, peak_rss_bytes=o.peak_rss_bytes if o else None,
                    memory_budget_bytes=o.memory_budget if o else job.memory_budget,
                    memory_killed=bool(o and o.memory_killed), host=o.host if o else None,
                    worker=o.worker if o else None, started_utc=o.started_utc if o else submitted,
                    ended_utc=o.ended_utc if o else utc_now(), message=note or lost or (o.message if o else None),
                    wcsname=o.wcsname if o else None, wcs_type=o.wcs_type if o else None))
                what = f"{job.action} -> {exit_class}" + (f" ({o.wcs_type} WCS)" if o and o.wcs_type
                                                          and verdict == DONE else "")
                if o is not None:
                    what += f", {o.wall_s:.1f} s, peak {size_text(o.peak_rss_bytes)}"
                if note:
                    what += f"; {note}"
                if retry_job is not None and retry_job.action == WAIT:
                    what += "; waiting for the other holder"
                elif retry_job is not None:
                    what += f"; {retry_job.action} (attempt {counts[text] + 1})"
                if retry_job is not None:
                    submit(text, retry_job, resources)
                else:
                    result.verdicts[text] = (verdict, o.exit_code if o else None)
                progress.line(roots[text], what, verdict)
            for text, job in pending.items():
                submit(text, job)
            no_workers_since = None
            while futures:
                try:
                    done = wait(list(futures), timeout=WATCH_S, return_when="FIRST_COMPLETED").done
                except TimeoutError:
                    done = set()
                if not done and not client.nthreads():
                    no_workers_since = no_workers_since or time.monotonic()
                    if time.monotonic() - no_workers_since >= no_workers_timeout:
                        stopped_for = f"no Dask worker on {where} for {no_workers_timeout:g} s"
                        raise KeyboardInterrupt
                    continue
                no_workers_since = None
                for fut in done:
                    _answer(fut, *futures.pop(fut))

    except KeyboardInterrupt:
        for text, job, submitted in futures.values():
            ledger.record(Attempt(text, ledger.next_attempt(text), batch_id, job.action, job.run_id, job.store, None,
                                  None, "batch interrupted", RETRY, memory_budget_bytes=job.memory_budget,
                                  started_utc=submitted, ended_utc=utc_now(),
                                  message=f"the batch was stopped{f' ({stopped_for})' if stopped_for else ''}; "
                                          "the next batch resumes or starts it"))
        # Leaving the cluster's context stopped its workers, and with them the runs (SIGTERM).
        unfinished = len(resolved) - len(result.verdicts)
        what = f"{unfinished} association{'s' if unfinished != 1 else ''} unfinished"
        if stopped_for:
            raise Interrupted(f"batch stopped: {stopped_for}, {what}; start workers, then run the same batch "
                              "again to resume them", str(ledger.path)) from None
        raise Interrupted(f"batch interrupted with {what}; run the same batch again to resume them",
                          str(ledger.path)) from None
    finally:
        ledger.end_batch(batch_id)
        ledger.close()
    result.exit_code = _batch_exit(result.verdicts)
    return result


def _found(ledger: Ledger, text: str, batch_id: int, reason: str, attempt: int | None = None) -> tuple:
    """Record the run a store holds for ``text`` as the association's outcome (action ``found``).

    Parameters
    ----------
    attempt : int or None
        The attempt number (0 for a run found before any attempt); None: the next one. With 0 for an
        association the ledger already has attempts of, nothing is recorded.

    Returns
    -------
    tuple
        ``(verdict, exit code)`` of the association.
    """
    store = str(store_of(Path(text)))
    summary = run_summary(store, text)
    verdict = _state_verdict(summary["run_status"])
    if attempt is None or not ledger.attempts_of(text):
        ledger.record(Attempt(text, ledger.next_attempt(text) if attempt is None else attempt, batch_id, FOUND,
                              summary["run_id"], store, summary["exit_code"], None,
                              _exit_code(summary["exit_code"]).name.lower(), verdict, message=reason,
                              wcsname=summary["wcsname"], wcs_type=summary["wcs_type"]))
    return verdict, summary["exit_code"]


def _state_verdict(run_status: str | None) -> str:
    return {"done": DONE, "skipped": SKIPPED}.get(run_status, FAILED)


def _batch_exit(verdicts: dict) -> int:
    """0 when every association ended done or skipped; else the failures' exit code if they share one, else 5."""
    codes = {code for verdict, code in verdicts.values() if verdict not in (DONE, SKIPPED)}
    if not codes:
        return int(ExitCode.OK)
    return codes.pop() if len(codes) == 1 and None not in codes else int(ExitCode.PROCESSING)
