"""The Python API: what ``runastrodriz.process`` is to drizzlepac's users.

>>> import astrodriz_sm
>>> result = astrodriz_sm.process("ie6d07030_asn.fits")      # doctest: +SKIP
>>> result.status, result.wcsname                            # doctest: +SKIP
('done', 'IDC_4bb1536oi-FIT_REL_GAIAeDR3')

A call leaves nothing behind in the caller's process: ``os.environ``, the working directory, the
logging handlers and the libraries' module globals are as they were.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .config import (
    RunConfig,
    input_kind,
    lease_expiry_from_environment,
    pipeline_switches_from_environment,
    recorded_environment,
    require_input,
    require_library_path,
    switches_from_environment,
)
from .errors import InputError, Interrupted, LogCorruptError, RunHeldError, RunStateError, UsageError
from .logs import run_log
from .model import STORE_NAME, RunLayout, split_input_name, store_path
from .model.options import chosen_options
from .statemachine import RunState, fold
from .store.eventstore import (DEFAULT_LEASE_EXPIRY_S, EventStore, LeaseHeld, LeaseTakeover, StoreCorrupt, StoreError,
                               VerifyResult)
from .views.banner import does_not_verify, log_facts, unverified_banner

__all__ = ["STORE_NAME", "RunResult", "RunStatus", "explain", "find_run", "open_store", "process", "read_run",
           "replay", "report", "resume", "run_config", "status"]


@dataclass(frozen=True)
class RunResult:
    """How a run ended.

    Attributes
    ----------
    run_id : str
    status : {'done', 'skipped', 'failed'}
    exit_code : int
        The ``astrodriz-sm`` exit code of this outcome (see :class:`astrodriz_sm.errors.ExitCode`).
    products : tuple of Path
        The drizzled products (``_drz``, ``_drc``) beside the input.
    trailer : Path
        The ``.tra`` file.
    store : Path
        The event store holding the run's log.
    wcsname : str or None
        WCSNAME of the final products' WCS.
    reason : str or None
        Why a run failed or was skipped, in one line.
    report : ReportFiles or None
        The report page and QA JSON, when they were asked for (``report=True``).
    """

    run_id: str
    status: str
    exit_code: int
    products: tuple[Path, ...]
    trailer: Path
    store: Path
    wcsname: str | None
    reason: str | None
    report: object | None = None


def _store_location(store: str | os.PathLike | None, directory: Path | None = None) -> Path:
    """``store``, else ``astrodriz_sm.db`` in ``directory`` (default: the current one)."""
    return Path(store) if store else store_path(directory or Path.cwd())


def open_store(store: str | os.PathLike | None, directory: Path | None = None, *, create: bool = False,
               read_only: bool = False) -> EventStore:
    """The event store: ``store``, else ``astrodriz_sm.db`` in ``directory`` (default: the current one).

    Parameters
    ----------
    create : bool
        Create the store when it does not exist (only ``start`` does).
    read_only : bool
        Open it for reading only, as ``status``, ``replay``, ``explain`` and ``verify-log`` do: it may
        lie on a read-only file system, and nothing is written to it.

    Raises
    ------
    RunStateError
        When the store does not exist and ``create`` is False, or cannot be opened.
    LogCorruptError
        When the file is not a SQLite database or is damaged.
    """
    path = _store_location(store, directory)
    if not create and not path.is_file():
        raise RunStateError(f"{path}: no event store here (give --store PATH)", str(path))
    try:
        return EventStore(path, read_only=read_only)
    except StoreCorrupt as exc:
        raise LogCorruptError(str(exc), str(path)) from exc
    except StoreError as exc:
        raise RunStateError(str(exc), str(path)) from exc


def find_run(store: EventStore, name: str | os.PathLike | None) -> str:
    """The run a command names: its run id, an association rootname or an input file, or no name at all.

    Parameters
    ----------
    name : str or path, optional
        A run id (``jsim01010-20261207T120000-a1b2``); a rootname (``jsim01010``, ``j8abc1xyq``): its
        latest run; an input file (``jsim01010_asn.fits``, ``j8abc1xyq_flt.fits``, absolute or from
        the current directory): the latest run on that file, else on a file of that name elsewhere;
        None: the store's latest run.

    Returns
    -------
    str
        The run id.

    Raises
    ------
    RunStateError
        No run of that name, or no run at all.
    """
    if not name:
        latest = store.latest_run()
        if latest is None:
            raise RunStateError(f"{store.path}: no runs in this store")
        return latest["run_id"]
    name = os.fspath(name)
    runs = store.runs()  # oldest first: the last match is the latest run
    if any(r["run_id"] == name for r in runs):
        return name
    path = Path(name)
    parsed = split_input_name(path.name)
    if parsed is not None:
        # The same file first (runs record the resolved input path), then a file of that name elsewhere.
        matches = ([r for r in runs if r["input"] == str(path.resolve())]
                   or [r for r in runs if Path(r["input"]).name.lower() == path.name.lower()])
    else:
        matches = [r for r in runs if r["root"] == name.lower()]
    if matches:
        return matches[-1]["run_id"]
    # A few rootnames help; a campaign's worth would not fit on the one line.
    roots = sorted({r["root"] for r in runs})
    holds = f"it holds {len(runs)} run{'s' * (len(runs) != 1)}" + (f", of {', '.join(roots)}"
                                                                  if 0 < len(roots) <= 3 else "")
    raise RunStateError(f"{store.path}: no run, rootname or input file named {name!r} ({holds})",
                        str(store.path))


def _drive(runner, method: str) -> None:
    """``runner.run()`` or ``runner.resume()``; an interruption becomes one line saying how to go on."""
    try:
        getattr(runner, method)()
    except KeyboardInterrupt:
        events = runner.store.events(runner.run_id)
        state = fold(events)
        if state.in_progress:
            where = "at " + "/".join(min(state.in_progress))
        else:  # stopped at an event boundary: name the last step recorded
            last = next((e for e in reversed(events) if e.step), events[-1])
            where = f"after {last.stage}/{last.step}" if last.step else f"in {state.state}"
        raise Interrupted(f"interrupted {where}; continue with: astrodriz-sm resume {runner.run_id} "
                          f"--store {runner.store.path}", str(runner.store.path)) from None


def _result(store: EventStore, run_id: str, report: bool = False) -> RunResult:
    """How the run ended; with ``report``, its report written beside its products first."""
    from .views.report import write_report

    row = store.get_run(run_id)
    run = fold(store.events(run_id))
    layout = RunLayout(row["root"], Path(row["input"]))
    ended = run.ended or {}
    return RunResult(run_id=run_id, status=ended.get("status", "unfinished"), exit_code=ended.get("exit_code", 1),
                     products=tuple(layout.input_dir / p for p in ended.get("products", [])),
                     trailer=layout.trailer, store=Path(store.path),
                     wcsname=run.decision("wcs").get("chosen_wcsname"), reason=ended.get("reason"),
                     report=write_report(*read_run(store, run_id, unverified=True)) if report else None)


def run_config(input: str | os.PathLike, newpath: str | os.PathLike | None = None, *,
               environ: Mapping[str, str] | None = None, **options) -> tuple[RunConfig, str]:
    """The configuration :func:`process` would record for these arguments, and the input's rootname.

    Nothing is run and no store is opened: a campaign compares it with a finished run's configuration.
    ``options`` are :func:`process`'s run options (the rows of :data:`astrodriz_sm.model.options.CHOSEN`).

    Raises
    ------
    AstrodrizError
        As :func:`process` before a run starts.
    """
    from .store.eventstore import DEFAULT_LEASE_EXPIRY_S

    env = dict(os.environ if environ is None else environ)
    try:
        options = chosen_options(options)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    input_path = Path(input).resolve()
    if not input_path.parent.is_dir():
        raise InputError(f"{input_path}: directory does not exist", str(input_path))
    _, root = input_kind(input_path)
    apply_apriori, compute, notes = switches_from_environment(env, options["align_to_gaia"])
    reset_idctab, quality_testing = pipeline_switches_from_environment(env)
    # Checked before the run starts, so that a bad value does not leave an unfinished run behind.
    lease_expiry_from_environment(env, DEFAULT_LEASE_EXPIRY_S)
    if options["force_alignment"] and not options["verify_guiding"]:
        notes.append("-a has no effect without -v: it keeps alignment on when -v finds bad guiding")
    layout = RunLayout(root, input_path, Path(newpath).resolve() if newpath else None)
    for path in dict.fromkeys((input_path, layout.work_dir)):
        require_library_path(path)
    config = RunConfig(
        input=str(input_path), run_dir=str(layout.work_dir),
        newpath=str(layout.newpath) if layout.newpath else None, **options,
        apply_apriori=apply_apriori, compute_aposteriori=compute, reset_idctab=reset_idctab,
        quality_testing=quality_testing, environment=recorded_environment(env), notes=tuple(notes))
    return config, root


def process(input: str | os.PathLike, newpath: str | os.PathLike | None = None, *,
            environ: Mapping[str, str] | None = None, store: str | os.PathLike | None = None,
            log_json: str | os.PathLike | None = None, console: bool = True, resume_unfinished: bool = False,
            restart: bool = False, expect_latest: str | None = None, observer=None, report: bool = False,
            **options) -> RunResult:
    """Process an association or exposure, as ``runastrodriz.process`` does.

    The run options (``force`` ... ``centroids`` below) are the rows of
    :data:`astrodriz_sm.model.options.CHOSEN`, which holds their defaults and checks their values.

    Parameters
    ----------
    input : path
        ``<root>_asn.fits``, a singleton ``<root>_raw.fits``, or one ``_flt.fits``/``_flc.fits``.
    newpath : path, optional
        Process in ``NEWPATH/<root>`` and move the results back.
    force : bool
        Process even when DRIZCORR is OMIT (runastrodriz ``-f``).
    inmemory : bool
        Final AstroDrizzle keeps its intermediates in memory (``-i``).
    basic : bool
        Write no headerlets (``-b``).
    num_cores : int, optional
        AstroDrizzle's cores (all usable cores without it).
    debug : bool
        Keep the stage directories and write each verified product's focus JSON (``-d``).
    align_to_gaia : bool
        False: no a posteriori alignment, unless ``ASTROMETRY_COMPUTE_APOSTERIORI`` says on (``-g``).
    manifest : bool
        Write ``<root>_manifest.txt``, the files the run handed back (``-m``).
    force_alignment : bool
        Align even when ``verify_guiding`` found bad guiding (``-a``).
    verify_guiding : bool
        Check each exposure's guiding (``analyze.verify_guiding``) first; one with bad guiding is not
        processed (unless ``force``) and turns all alignment off (unless ``force_alignment``); a run
        left with no exposure fails with exit code 65 (``-v``).
    environ : mapping, optional
        The run's whole environment (``jref``, ``iref``, the ``ASTROMETRY_*`` switches, the service
        URLs, ``PIPELINE_RESET_IDCTAB``, ``PIPELINE_QUALITY_TESTING``), as ``subprocess``'s ``env``;
        default: the caller's ``os.environ``.
    store : path, optional
        The event store; default ``astrodriz_sm.db`` beside the input.
    log_json : path, optional
        Append one JSON object per log record to this file.
    console : bool
        Print progress lines on standard error.
    resume_unfinished : bool
        Continue this input's unfinished run, if there is one, instead of refusing.
    restart : bool
        Abandon this input's unfinished run, if there is one (an event says so), and start anew.
    expect_latest : str, optional
        The run id this input's latest run must still be, or ``"none"`` for no run; if another run
        has ended since, nothing is done (:class:`RunHeldError`). A campaign plans each association
        from its store, then runs it with this guard: another operator may have run it in between.
    observer : callable, optional
        ``observer(stage, step, point)``, the runner's hook (see :class:`astrodriz_sm.runner.Runner`).
    centroids : {'drizzlepac', 'psf'}
        Source positions of the a posteriori fit: drizzlepac 3.11's (``DAOStarFinder`` on each
        segment), or those refined by fitting a pixel-integrated Gaussian PSF to each source, which
        are unbiased on undersampled PSFs such as WFC3/IR's (:mod:`astrodriz_sm.handlers.centroids`).
    report : bool
        When the run ends, write its report page and QA JSON beside the products (see :func:`report`).

    Returns
    -------
    RunResult
        Also for a run that failed or was skipped: its ``status``, ``exit_code`` and ``reason`` say so.

    Raises
    ------
    AstrodrizError
        Before a run starts, with nothing written: bad input file name or directory, or no input file
        (:class:`InputError`), a switch that is not on/off (:class:`ConfigError`), bad options
        (:class:`UsageError`), an unfinished run on this input (:class:`RunStateError`), or one that
        a live process holds (:class:`RunHeldError`, also with ``resume_unfinished`` or ``restart``).
    """
    from .runner import Runner

    env = dict(os.environ if environ is None else environ)
    config, root = run_config(input, newpath, environ=env, **options)
    input_path = Path(config.input)
    require_input(input_path)
    with run_log(log_json, console) as log:
        events = open_store(store, input_path.parent, create=True)
        if (problem := events.integrity_problem()) is not None:
            raise LogCorruptError(f"{events.path}: damaged event store ({problem}); no run is added to it",
                                  str(events.path))
        expiry = lease_expiry_from_environment(env, DEFAULT_LEASE_EXPIRY_S)
        run_id, action, takeover = _claim(events, config, root, expiry, log, resume_unfinished=resume_unfinished,
                                          restart=restart, expect_latest=expect_latest)
        try:
            if action == "run":
                log.info("run started", run_id=run_id, stage="init", input=str(input_path), store=str(events.path))
            _drive(Runner(events, run_id, log=log, environ=env, observer=observer, takeover=takeover), action)
        finally:
            events.release_lease(run_id)  # the runner gives it up itself; this covers a failure before it ran
    return _result(events, run_id, report)


def _claim(events: EventStore, config: RunConfig, root: str, expiry_s: float, log, *, resume_unfinished: bool,
           restart: bool, expect_latest: str | None = None) -> tuple[str, str, LeaseTakeover | None]:
    """Find the input's unfinished run and take it, or create a new run, as one step of the store.

    Both happen under the store's write lock (:meth:`EventStore.exclusive`), with the run's lease taken
    before the lock is let go: of two processes starting on one input, whichever comes second finds
    the first one's run, and its live holder.

    Returns
    -------
    run_id : str
    action : {'run', 'resume'}
        What the runner does with it.
    takeover : LeaseTakeover or None
        The lease taken over from an unfinished run's holder that is gone.

    Raises
    ------
    RunHeldError
        The input's unfinished run is held by a live process (whatever ``resume_unfinished`` and
        ``restart`` say: neither takes a run from a process still writing it); or its latest run,
        ended, is not ``expect_latest``.
    RunStateError
        The input has an unfinished run, and neither ``resume_unfinished`` nor ``restart`` was given.
    """
    from .runner import Runner, start_run

    input_path = config.input
    with events.exclusive():
        previous = events.latest_run(input_path)
        state = fold(events.events(previous["run_id"])) if previous is not None else None
        latest = previous["run_id"] if previous is not None else "none"
        if expect_latest is not None and latest != expect_latest and (state is None or state.is_ended):
            ended = f", ended {state.ended['status']}," if state is not None else ""
            raise RunHeldError(f"{input_path}: its latest run is {latest}{ended} not {expect_latest} as planned: "
                               "another process has run it since; nothing done", input_path)
        if state is not None and not state.is_ended:
            try:
                events.check_lease(previous["run_id"])
            except LeaseHeld as exc:
                raise RunHeldError(f"{input_path}: {exc}", input_path) from None
            if resume_unfinished:
                if not (check := events.verify(previous["run_id"])).ok:
                    raise LogCorruptError(f"{events.path}: {does_not_verify(check)}; not resumed", str(events.path))
                return previous["run_id"], "resume", events.acquire_lease(previous["run_id"], expiry_s)
            if not restart:
                where = "/".join(min(state.in_progress)) if state.in_progress else state.state
                raise RunStateError(f"{input_path}: run {previous['run_id']} on this input is unfinished "
                                    f"(at {where}); continue it with --resume or 'astrodriz-sm resume "
                                    f"{previous['run_id']}'")
            Runner(events, previous["run_id"], log=log).abandon(
                "abandoned: a new run was started on this input (start --restart)")
        run_id = start_run(events, config, root)
        events.acquire_lease(run_id, expiry_s)
    return run_id, "run", None


def resume(run: str | os.PathLike | None = None, *, store: str | os.PathLike | None = None,
           environ: Mapping[str, str] | None = None, log_json: str | os.PathLike | None = None,
           console: bool = True, observer=None, report: bool = False) -> RunResult:
    """Continue an interrupted run.

    Parameters
    ----------
    run : str or path, optional
        The run id, an association rootname or an input file (see :func:`find_run`); default the
        store's latest run.
    store : path, optional
        Default ``astrodriz_sm.db`` in the current directory.
    environ : mapping, optional
        The environment the remaining steps run in (the run's recorded variables still apply).
    log_json, console, observer, report
        As for :func:`process`.

    Returns
    -------
    RunResult

    Raises
    ------
    RunStateError
        No such store or run, the run has ended, or another process holds it.
    LogCorruptError
        The store's file is damaged, or the run's hash chain does not verify; nothing is written to it.
    """
    from .runner import Runner

    events = open_store(store)
    if (problem := events.integrity_problem()) is not None:
        # A file cut short in its last pages still opens; appending to it would bury the damage.
        raise LogCorruptError(f"{events.path}: damaged event store ({problem}); not resumed", str(events.path))
    run_id = find_run(events, run)
    state = fold(events.events(run_id))
    if state.is_ended:
        raise RunStateError(f"run {run_id} already ended {state.ended['status']}; nothing to resume")
    check = events.verify(run_id)
    if not check.ok:
        raise LogCorruptError(f"{events.path}: {does_not_verify(check)}; not resumed", str(events.path))
    with run_log(log_json, console) as log:
        _drive(Runner(events, run_id, log=log, environ=dict(os.environ if environ is None else environ),
                      observer=observer), "resume")
    return _result(events, run_id, report)


def read_run(store: EventStore, run_id: str, unverified: bool = False) -> tuple[dict, list, VerifyResult]:
    """A run's row and events, after the check of their hash chain.

    Parameters
    ----------
    unverified : bool
        Return them also when the chain does not verify; the check says so, and every view of
        them then carries its banner (:func:`astrodriz_sm.views.banner.unverified_banner`).

    Returns
    -------
    row : dict
    events : list of Event
        Those the check covered (a run still going on may have appended more since).
    check : VerifyResult

    Raises
    ------
    LogCorruptError
        The chain does not verify (and ``unverified`` is False), or an event cannot be read at all.
    """
    check = store.verify(run_id)
    if not check.ok and not unverified:
        raise LogCorruptError(f"{store.path}: {does_not_verify(check)}; render it anyway with --unverified",
                              str(store.path))
    try:
        events = store.events(run_id)[:check.n_events]
    except StoreError as exc:
        raise LogCorruptError(f"{exc}; it cannot be rendered", str(store.path)) from None
    return store.get_run(run_id), events, check


def _read_named(run: str | os.PathLike | None, store: str | os.PathLike | None,
                unverified: bool) -> tuple[dict, list, VerifyResult]:
    """:func:`read_run` of the run ``run`` names in ``store`` (opened read-only, and closed again)."""
    events = open_store(store, read_only=True)
    try:
        return read_run(events, find_run(events, run), unverified)
    finally:
        events.close()


def replay(run: str | os.PathLike | None = None, *, store: str | os.PathLike | None = None,
           unverified: bool = False) -> str:
    """The run's trailer, rendered from its events alone (byte-identical to the ``.tra``).

    Parameters
    ----------
    run : str or path, optional
        The run id, an association rootname or an input file (see :func:`find_run`); default the
        store's latest run.
    store : path, optional
        Default ``astrodriz_sm.db`` in the current directory.
    unverified : bool
        Render a log whose hash chain does not verify; the trailer then opens with a banner saying so.

    Raises
    ------
    RunStateError
        No such store or run.
    LogCorruptError
        The log does not verify (without ``unverified``), or the store is damaged.
    """
    from .views.trailer import render_trailer

    row, recorded, check = _read_named(run, store, unverified)
    banner = unverified_banner(check)
    return (f"{banner}\n" if banner else "") + render_trailer(row, recorded)


def report(run: str | os.PathLike | None = None, *, store: str | os.PathLike | None = None,
           output: str | os.PathLike | None = None, unverified: bool = False):
    """Write a run's report: ``<root>_report.html`` and ``<root>_qa.json``.

    The page is one self-contained HTML file (figures embedded as PNG data URIs): the outcome and
    the rule that chose the WCS, the timeline with crashes and resumes, the WCS decision per
    exposure, the candidate fits, the residuals of the chosen fit, the focus, overlap and similarity
    checks, and a preview of each product. The QA JSON holds the same numbers in drizzlepac's
    ``HapDiagnostic`` layout. Both are made from the run's events and the files it handed back.

    Parameters
    ----------
    run : str or path, optional
        The run id, an association rootname or an input file (see :func:`find_run`); default the
        store's latest run.
    store : path, optional
        Default ``astrodriz_sm.db`` in the current directory.
    output : path, optional
        The directory to write into; default the store's directory (a copied run directory gets its
        report in the copy, and the run's recorded input directory is left alone).
    unverified : bool
        Render a log whose hash chain does not verify; the page then opens with a banner saying so
        and the QA JSON's ``run`` item carries it (``log_banner``).

    Returns
    -------
    astrodriz_sm.views.report.ReportFiles
        ``html`` and ``qa_json``.

    Raises
    ------
    RunStateError
        No such store or run.
    LogCorruptError
        The log does not verify (without ``unverified``), or the store is damaged.
    InputError
        A product or the fit's matched pairs the log lists is missing or changed, or ``output``
        cannot be written.
    """
    from .views.report import write_report

    # A read command writes only where it is told, or beside what it reads.
    return write_report(*_read_named(run, store, unverified), output or _store_location(store).resolve().parent)


def explain(run: str | os.PathLike | None = None, *, store: str | os.PathLike | None = None,
            unverified: bool = False) -> dict:
    """Every candidate WCS of every exposure, the one chosen and the rule (see :func:`views.explain.explain`).

    Parameters
    ----------
    run, store, unverified
        As for :func:`replay`.

    Returns
    -------
    dict
        :func:`views.explain.explain`'s document, and ``log``: the check of the hash chain
        (``verified``, ``events``, ``first_bad_seq``, ``reason``, ``banner``: None when it verifies).

    Raises
    ------
    RunStateError, LogCorruptError
        As :func:`replay`.
    """
    from .views.explain import explain as explain_run

    _, recorded, check = _read_named(run, store, unverified)
    return {**explain_run(fold(recorded)), "log": log_facts(check)}


class RunStatus(NamedTuple):
    """One run as :func:`status` reports it: its row, its folded state and the check of its log."""

    row: dict
    state: RunState
    check: VerifyResult


def status(run: str | os.PathLike | None = None, *, store: str | os.PathLike | None = None,
           unverified: bool = False) -> list[RunStatus]:
    """One run, or every run in the store.

    Parameters
    ----------
    run, store, unverified
        As for :func:`replay`; without ``run``, every run (each one's log checked).

    Raises
    ------
    RunStateError, LogCorruptError
        As :func:`replay`.
    """
    events = open_store(store, read_only=True)
    try:
        ids = [find_run(events, run)] if run else [r["run_id"] for r in events.runs()]
        return [RunStatus(row, fold(recorded), check)
                for row, recorded, check in (read_run(events, rid, unverified) for rid in ids)]
    finally:
        events.close()
