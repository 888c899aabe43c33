"""The runner: fold the log, ask the state machine what is next, run it, record it.

Handlers reach the store only through here: a handler returns a :class:`StepResult`, and the runner
appends what it learned together with ``step.completed`` in one transaction. A step is done when its
``step.completed`` event is in the log, so a run interrupted anywhere resumes by running this loop again.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path

import structlog

from .config import REFERENCE_VARIABLES, SERVICE_SETTINGS, lease_expiry_from_environment
from .errors import (AstrodrizError, ExitCode, LogCorruptError, NoViableDataError, ProcessingError, RunHeldError,
                     RunStateError)
from .handlers.common import StepContext, library_fallbacks, payload_logs
from .model.options import PRODUCT_SETTINGS
from .model import STAGES, RunConfig, RunLayout, last_step, partial_name, stage_steps, step_spec
from .plumbing import Timer, forks_tied, plain_directory_variables, sha256
from .statemachine import FAIL_RUN, STOP_STAGE, fold, next_action, plan, stage_files
from .statemachine.rules import HANDLER_RULES, NO_VIABLE_DATA, decisions_after, decisions_before
from .statemachine.state import (
    DECISION,
    LEASE_TAKEN_OVER,
    RUN_ENDED,
    RUN_RESUMED,
    RUN_STARTED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_INVALIDATED,
    STEP_STARTED,
    TRANSITION,
    WARNING,
)
from .store.eventstore import DEFAULT_LEASE_EXPIRY_S, EventStore, LeaseHeld, LeaseTakeover, StoreCorrupt, StoreError
from .version import __version__
from .views.trailer import render_trailer

# The version recorded with every run and in every step's fingerprint.
VERSION = __version__
LIBRARIES = ("drizzlepac", "stwcs", "tweakwcs", "photutils", "astropy", "numpy", "scipy", "transitions",
             "sqlite-utils", "structlog")
# Module globals the libraries set from the environment at import time; restored after every step.
LIBRARY_GLOBALS = (("drizzlepac.haputils.astrometric_utils", "SERVICELOCATION"),)

_END_CODES = {"done": ExitCode.OK, "skipped": ExitCode.OK}
# The error a rule's run failure (the decision's FAIL_RUN) ends the run with: its exit code and payload.
RUN_FAILURES = {NO_VIABLE_DATA: NoViableDataError}
# The step of an alignment stage that checks its service; redone when a resume changes the service settings.
PROBE_STEP = "probe_service"

Observer = Callable[[str, str, str], None]


def library_versions() -> dict:
    """Versions of the libraries that shape the results."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def fingerprint(run) -> dict:
    """What a step's result depends on besides its input files: software, reference files, options.

    Recorded with every ``step.started``; a resume compares it with the present one.
    """
    refs = {}
    paths = run.inputs.reference_paths if run.inputs else {}
    for key, path in sorted(paths.items()):
        refs[key] = {"name": Path(path).name, "sha256": sha256(path) if Path(path).exists() else None}
    options = {k: getattr(run.options, k) for k in PRODUCT_SETTINGS}
    return {"astrodriz_sm": VERSION, "libraries": library_versions(), "references": refs, "options": options}


def start_run(store: EventStore, config: RunConfig, root: str) -> str:
    """Create a run and record its configuration.

    Returns
    -------
    str
        The new run id.
    """
    run_id = store.create_run(config.input, root)
    store.append(run_id, "init", "", RUN_STARTED,
                 {"config": {**config.as_dict(), "root": root}, "version": VERSION,
                  "libraries": library_versions()})
    return run_id


_stop_requested = threading.Event()


def request_stop(signum=None, frame=None) -> None:
    """Signal handler for Ctrl-C and SIGTERM: stop the run (as ``KeyboardInterrupt``).

    The exception raised here can be lost when the signal lands where Python ignores exceptions
    (inside ``os.fork``'s callbacks, as AstroDrizzle forks its workers); the request is therefore
    also kept, and the runner raises it again at its next event.
    """
    _stop_requested.set()
    raise KeyboardInterrupt


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, children first (Linux ``/proc``)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # The command name is in parentheses and may hold spaces: the ppid follows the last ')'.
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        out += children
        frontier = children
    return out


def stop_descendants(timeout: float = 10.0) -> list[int]:
    """Kill every process this one started (AstroDrizzle workers, concurrent drizzles) and wait for them.

    Returns
    -------
    list of int
        The pids that were killed.
    """
    pids = _descendants(os.getpid())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap our own children
            try:
                state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                break
            if state in ("Z", "X"):
                break
            time.sleep(0.02)
    return pids


@contextlib.contextmanager
def isolated(environ: Mapping, overrides: Mapping):
    """Run a step in ``environ`` updated with ``overrides``; leave the process as it was.

    The environment, the working directory, the root logger's handlers and level, ``sys.excepthook``,
    ``sys.stdout`` and ``sys.stderr``, and the library globals of :data:`LIBRARY_GLOBALS` are restored
    afterwards, whatever the step did.
    """
    saved_env = dict(os.environ)
    cwd = os.getcwd()
    # stsci.tools' global logging replaces (and at its teardown deletes) these.
    saved_sys = {name: getattr(sys, name) for name in ("excepthook", "stdout", "stderr")}
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved_globals = []
    for module, name in LIBRARY_GLOBALS:
        # Imported under the caller's environment, so that the value kept is the caller's.
        mod = sys.modules.get(module) or importlib.import_module(module)
        saved_globals.append((mod, name, getattr(mod, name)))
    os.environ.clear()
    os.environ.update(environ)
    os.environ.update(overrides)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(cwd)
        root.handlers, _ = saved_root
        root.setLevel(saved_root[1])
        for name, value in saved_sys.items():
            setattr(sys, name, value)
        for mod, name, value in saved_globals:
            setattr(mod, name, value)


class Runner:
    """Drive one run to its end.

    Parameters
    ----------
    store : EventStore
    run_id : str
    log : structlog logger, optional
        Bound logger for the JSON log and console progress.
    environ : mapping, optional
        The environment the steps run in, before the run's recorded variables are applied
        (default: this process's environment when the runner is made).
    handlers : mapping, optional
        ``(stage, step) -> handler``; default :data:`astrodriz_sm.handlers.HANDLERS`.
    observer : callable, optional
        The runner's one hook: ``observer(stage, step, point)`` is called after every event is
        appended (``point`` is the event kind) and at every progress point a handler names (such as
        ``'fitted'`` after each a posteriori fit). Progress displays and the crash harness use it.
    takeover : LeaseTakeover, optional
        The lease this process already took over when it claimed the run (see
        :func:`astrodriz_sm.api.process`): recorded as the run's ``lease.taken_over`` event.
    """

    def __init__(self, store: EventStore, run_id: str, log=None, *, environ: Mapping | None = None,
                 handlers: Mapping | None = None, observer: Observer | None = None,
                 takeover: LeaseTakeover | None = None):
        if handlers is None:
            from .handlers import HANDLERS as handlers
        self.store = store
        self.run_id = run_id
        self.run_row = store.get_run(run_id)
        self.log = (log or structlog.get_logger()).bind(run_id=run_id)
        self.environ = dict(os.environ if environ is None else environ)
        self.handlers = handlers
        self.observer = observer
        self._events = None
        self._started = time.perf_counter()
        self._keeper = None
        self._claimed_takeover = takeover
        # Time spent on the log itself (appends, reads, folds, trailer), reported in run.ended.
        self.log_seconds = 0.0

    # -- recording -------------------------------------------------------------------------------
    def events(self) -> list:
        """The run's events; read once, then kept current by append (this process holds the lease)."""
        if self._events is None:
            t = time.perf_counter()
            self._events = self.store.events(self.run_id)
            self.log_seconds += time.perf_counter() - t
        return self._events

    def state(self):
        """``fold`` of the run's events."""
        events = self.events()
        t = time.perf_counter()
        run = fold(events)
        self.log_seconds += time.perf_counter() - t
        return run

    def record(self, entries: list[tuple]) -> list:
        """Append ``(stage, step, kind, payload)`` entries in one transaction and refresh the trailer."""
        if self._keeper is not None and self._keeper.lost:
            # Stalled past the lease's expiry and taken over: the other holder writes now.
            raise RunStateError(f"{self._keeper.lost}; this process stops writing")
        events = self.events()
        t = time.perf_counter()
        new = self.store.append_many(self.run_id, entries)
        events.extend(new)
        self.write_trailer()
        self.log_seconds += time.perf_counter() - t
        for ev in new:
            self._observe(ev.stage, ev.step, ev.kind)
        if _stop_requested.is_set():
            raise KeyboardInterrupt
        return new

    def append(self, stage: str, step: str, kind: str, payload: dict):
        """Append one event (see :meth:`record`)."""
        return self.record([(stage, step, kind, payload)])[0]

    def _observe(self, stage: str, step: str, point: str) -> None:
        if self.observer is not None:
            self.observer(stage, step, point)

    def write_trailer(self) -> Path | None:
        """Render the trailer from the log into ``<input dir>/<root>.tra`` (atomically)."""
        events = self.events()
        path = RunLayout(self.run_row["root"], Path(self.run_row["input"])).trailer
        if not path.parent.exists():
            return None
        tmp = path.with_name(partial_name(path.name))
        try:
            tmp.write_text(render_trailer(self.run_row, events))
            os.replace(tmp, path)
        except OSError:
            # The trailer is a rendering: the log has everything, so a failed write (a full disk)
            # must not stop a run, nor leave half a file behind.
            with contextlib.suppress(OSError):
                tmp.unlink()
            return None
        return path

    # -- running ---------------------------------------------------------------------------------
    def resume(self) -> ExitCode:
        """Pick up an unfinished run: record the resume, recheck the current stage, run on.

        Returns
        -------
        ExitCode
        """
        with self._lease():
            run = self.state()
            after = ("interrupted step " + "/".join(min(run.in_progress))
                     if run.in_progress else f"interruption in state {run.state}")
            payload = {"after": after, "pid": os.getpid()}
            # Service URLs and timeouts are taken from this resume's environment: the ones recorded
            # may be what made the run hang.
            changed = {k: self.environ[k] for k in SERVICE_SETTINGS
                       if k in self.environ and self.environ[k] != run.environment.get(k)}
            if changed:
                payload["environment_update"] = changed
            self.append(run.state or "init", "", RUN_RESUMED, payload)
            if changed:
                self._reprobe(self.state(), changed)
            self._recheck_stage(self.state())
            return self._loop()

    def _reprobe(self, run, changed: dict) -> None:
        """Redo the service probe of the current stage, unless the stage has concluded."""
        stage = run.state
        probes = [s.step for s in stage_steps(stage) if s.step == PROBE_STEP and run.is_completed(stage, s.step)]
        if probes and stage in STAGES and not run.is_completed(stage, last_step(stage)):
            self.append(stage, probes[0], STEP_INVALIDATED,
                        {"reason": f"service settings changed on resume ({', '.join(sorted(changed))})"})

    def abandon(self, reason: str) -> None:
        """End an unfinished run without finishing it (``start --restart``); the event says why."""
        with self._lease():
            run = self.state()
            self.append(run.state or "init", "", RUN_ENDED, {"status": "abandoned", "exit_code": int(ExitCode.RUN_STATE),
                                                             "reason": reason, "products": []})

    def _recheck_stage(self, run) -> None:
        """Invalidate the current stage's completed steps when its files or fingerprint changed.

        Steps work on the stage's files in place, so a step is only trusted if the directory
        still holds exactly what the last completed step left and the software, reference files
        and options are those it ran with; otherwise the stage starts again from fresh copies.
        """
        stage = run.state
        if stage not in STAGES or stage == "init":
            return
        steps = [s for s in plan(run, stage) if run.is_completed(stage, s)]
        remaining = [s for s in plan(run, stage) if not run.is_completed(stage, s)]
        if not steps or not any(step_spec(stage, s).reads_stage_directory for s in remaining):
            return
        reason = None
        now = fingerprint(run)
        for step in steps:
            then = run.fingerprints.get((stage, step))
            if then is not None and then != now:
                changed = sorted(k for k in now if now[k] != then.get(k))
                reason = f"fingerprint of {stage}/{step} changed ({', '.join(changed)})"
                break
        if reason is None:
            d = RunLayout.of(run.config, run.root).stage_dir(stage)
            for name, digest in sorted(stage_files(run, stage).items()):
                actual = sha256(d / name) if (d / name).exists() else None
                if actual != digest:
                    reason = (f"{d / name} is missing" if actual is None else
                              f"{d / name} changed since it was recorded (sha256 {actual[:12]} != {digest[:12]})")
                    break
        if reason is None:
            return
        self.log.info("stage restarts", stage=stage, reason=reason)
        self.record([(stage, step, STEP_INVALIDATED, {"reason": reason}) for step in steps])

    @contextlib.contextmanager
    def _lease(self):
        """Hold the run's lease (one writer at a time) for the duration.

        On Ctrl-C or SIGTERM (``KeyboardInterrupt``) the processes the step started are stopped before
        the lease is given up, so that a resume never meets a worker still writing. A process killed
        outright cannot stop them: every process forked meanwhile is tied to its parent
        (:func:`astrodriz_sm.plumbing.forks_tied`) and dies with it.
        """
        expiry = lease_expiry_from_environment(self.environ, DEFAULT_LEASE_EXPIRY_S)
        try:
            takeover = self.store.acquire_lease(self.run_id, expiry) or self._claimed_takeover
        except LeaseHeld as exc:
            raise RunHeldError(f"{self.store.path}: {exc}", str(self.store.path)) from None
        except StoreCorrupt as exc:
            raise LogCorruptError(str(exc), str(self.store.path)) from exc
        except StoreError as exc:
            raise RunStateError(str(exc)) from exc
        self._claimed_takeover = None
        try:
            with forks_tied(), self.store.keep_lease(self.run_id, expiry) as self._keeper:
                if takeover is not None:
                    self.log.info("lease taken over", reason=takeover.reason)
                    self.append(self.state().state or "init", "", LEASE_TAKEN_OVER, takeover.as_payload())
                yield
        except KeyboardInterrupt:
            stop_descendants()
            _stop_requested.clear()
            raise
        finally:
            self._keeper = None
            self.store.release_lease(self.run_id)

    def run(self) -> ExitCode:
        """Run a new run until the log says it has ended.

        Returns
        -------
        ExitCode
        """
        with self._lease():
            return self._loop()

    def _loop(self) -> ExitCode:
        while True:
            run = self.state()
            action = next_action(run)
            if action.kind == "none":
                return ExitCode(run.ended["exit_code"])
            if action.kind == "step":
                self._step(run, action.stage, action.step)
            elif action.kind == "transition":
                self.log.info("transition", stage=action.stage, to=action.transition["to"])
                self.append(action.stage, "", TRANSITION, action.transition)
            elif action.kind == "end":
                self._end(run)

    def _context(self, run, stage: str, step: str, decisions: dict | None = None) -> StepContext:
        def progress(message: str, point: str | None = None) -> None:
            self.log.info("progress", stage=stage, step=step, message=message)
            if point is not None:
                self._observe(stage, step, point)

        return StepContext(run=run, config=run.options, stage=stage, step=step,
                           layout=RunLayout.of(run.config, run.root), progress=progress,
                           decisions=dict(decisions or {}), rules=HANDLER_RULES)

    @staticmethod
    def _stop_if_requested(exc: BaseException | None = None) -> None:
        """Raise ``KeyboardInterrupt`` when Ctrl-C or SIGTERM asked the run to stop.

        The signal's exception may have landed in library code that swallows exceptions
        (stsci.tools' configuration parsing turns it into a KeyError under a bare ``except:``):
        whatever the step then raised or returned is no result of it. The run is interrupted
        instead, and its resume runs the step again.
        """
        if _stop_requested.is_set():
            raise KeyboardInterrupt from exc

    def _failed(self, stage: str, step: str, payload: dict) -> None:
        self._stop_if_requested()
        self.log.error("step failed", stage=stage, step=step, error=payload["message"])
        self.append(stage, step, STEP_FAILED, payload)

    def _step(self, run, stage: str, step: str) -> None:
        handler = self.handlers[(stage, step)]
        self.append(stage, step, STEP_STARTED, {"fingerprint": fingerprint(run)})
        self.log.info("step started", stage=stage, step=step)
        try:
            # The rules this step works from: pure functions of the state before it, so a retried step
            # recomputes the same payloads.
            before = decisions_before(run, stage, step)
            ctx = self._context(run, stage, step, {d["decision"]: d for d in before})
            # Handlers see the environment recorded with the run, also on resume in another shell.
            with Timer() as t, isolated(self.environ, run.environment), \
                    plain_directory_variables(REFERENCE_VARIABLES):
                # init reads the input directory only: a run it refuses leaves no empty NEWPATH/<root> behind.
                if ctx.work_dir != ctx.input_dir and stage != "init":
                    ctx.work_dir.mkdir(parents=True, exist_ok=True)
                result = handler(ctx)
            if any(kind == DECISION for kind, _ in result.facts):
                raise RuntimeError(f"the handler of {stage}/{step} returned a decision: decisions are the rules'")
            payload = dict(result.payload)
            payload.setdefault("seconds", t.elapsed)
            facts = [(DECISION, d) for d in before] + list(result.facts)
            # The rules that decide from what the step measured, on the state with its results folded in.
            after = decisions_after(run.after_step(stage, step, facts, payload), stage, step)
        except AstrodrizError as exc:
            self._stop_if_requested(exc)
            return self._failed(stage, step, exc.as_payload())
        except OSError as exc:
            self._stop_if_requested(exc)
            # The file system said no (no space, permission denied): name the file, keep it one line.
            where = exc.filename or f"{stage}/{step}"
            return self._failed(stage, step, ProcessingError(f"{where}: {exc.strerror or exc}",
                                                             exc.filename).as_payload())
        except Exception as exc:  # noqa: BLE001 - a defect or unforeseen library failure: keep the traceback
            self._stop_if_requested(exc)
            return self._failed(stage, step, {
                "error": type(exc).__name__, "message": f"{stage}/{step}: unexpected error: {exc}",
                "path": None, "exit_code": int(ExitCode.INTERNAL), "traceback": traceback.format_exc()})
        # A stop requested while the handler ran: what it returned may be the work of a library that
        # swallowed the signal's exception and went on with its defaults.
        self._stop_if_requested()
        facts += [(DECISION, d) for d in after]
        failure = next((d for d in before + after if d.get(FAIL_RUN)), None)
        if failure is not None:
            # A rule failed the run: what the step measured and the decision are recorded, then the failure.
            self.record([(stage, step, kind, fact) for kind, fact in facts])
            error = RUN_FAILURES[failure[FAIL_RUN]](failure["reason"], failure.get("path"))
            return self._failed(stage, step, error.as_payload())
        stop = next((d[STOP_STAGE] for d in before + after if d.get(STOP_STAGE)), None)
        if stop is not None:
            if not step_spec(stage, step).may_stop:
                return self._failed(stage, step, {
                    "error": "RuntimeError", "message": f"{stage}/{step}: a rule stopped its stage, which this step "
                    "may not do", "path": None, "exit_code": int(ExitCode.INTERNAL), "traceback": None})
            payload[STOP_STAGE] = stop
        # A library that substituted another method says so only in its log: make it a fact of the step.
        warned = set()
        for text in payload_logs(payload):
            for line in library_fallbacks(text):
                if line not in warned:
                    warned.add(line)
                    facts.append((WARNING, {"message": line}))
        for kind, fact in facts:
            self.log.info(kind, stage=stage, step=step, **{k: v for k, v in fact.items()
                                                           if k in ("verdict", "check", "chosen_stage")})
        self.record([(stage, step, kind, fact) for kind, fact in facts]
                    + [(stage, step, STEP_COMPLETED, payload)])
        self.log.info("step completed", stage=stage, step=step, seconds=payload["seconds"])

    def _end(self, run) -> None:
        status = run.state
        if status == "failed":
            code = ExitCode(run.failure.get("exit_code", ExitCode.INTERNAL))
            reason = run.failure.get("message")
        else:
            code = _END_CODES[status]
            reason = None
            if status == "skipped":
                reason = next(g["reason"] for g in run.transitions[-1]["guards"] if g["guard"] == "drizcorr_perform")
        products = run.output("final", "replace").get("products", [])
        seconds = time.perf_counter() - self._started
        payload = {"status": status, "exit_code": int(code), "reason": reason, "products": products,
                   "process_seconds": round(seconds, 3), "log_seconds": round(self.log_seconds, 3),
                   "log_share": round(self.log_seconds / seconds, 5)}
        if status == "failed":
            # What a failed run leaves for a look (and what the next start replaces).
            layout = RunLayout.of(run.config, run.root)
            kept = list(layout.stage_dirs)
            if layout.work_dir != layout.input_dir:
                kept.append(layout.work_dir)
            payload["kept_directories"] = [str(p) for p in kept if p.is_dir()]
        self.append(status, "", RUN_ENDED, payload)
        self.log.info("run ended", stage=status, status=status, exit_code=int(code))
