"""The runner: fold the log, ask the state machine what is next, run it, record it.

Handlers reach the store only through here. A step is done when its ``step.completed`` event
is in the log, so a run interrupted anywhere resumes by simply running this loop again.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from importlib import metadata
from pathlib import Path

import structlog

from . import __version__
from .config import RunConfig
from .errors import AstrodrizError, ExitCode, ProcessingError, RunStateError
from .handlers import HANDLERS, StepContext
from .handlers.common import Timer, sha256
from .statemachine import STAGES, fold, next_action, plan, stage_files
from .statemachine.state import (
    RUN_ENDED,
    RUN_RESUMED,
    RUN_STARTED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_INVALIDATED,
    STEP_STARTED,
    TRANSITION,
)
from .store.eventstore import EventStore, StoreError
from .store.trailer import render_trailer

LIBRARIES = ("drizzlepac", "stwcs", "tweakwcs", "photutils", "astropy", "numpy", "scipy", "transitions",
             "sqlite-utils", "structlog")

_END_CODES = {"done": ExitCode.OK, "skipped": ExitCode.SKIPPED}

# "<stage>/<step> <event kind>": after appending the first such event the process stops itself
# (SIGSTOP), so the crash harness can kill it at exactly that point instead of racing a poll.
PAUSE_VARIABLE = "ASTRODRIZ_SM_PAUSE_AT"


def library_versions() -> dict:
    """Versions of the libraries that shape the results."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# Steps that do not read their stage directory: a resume that has only these left needs no check.
_NO_DIRECTORY_STEPS = {"probe_service", "choose_wcs", "conclude", "cleanup"}


def fingerprint(run) -> dict:
    """What a step's result depends on besides its input files: libraries, reference files, options.

    Recorded with every ``step.started``; a resume compares it with the present one.
    """
    refs = {}
    for key, path in sorted(run.inputs.get("reference_paths", {}).items()):
        refs[key] = {"name": Path(path).name, "sha256": sha256(path) if Path(path).exists() else None}
    options = {k: run.config.get(k) for k in ("force", "inmemory", "basic", "num_cores", "apply_apriori",
                                               "compute_aposteriori")}
    return {"libraries": library_versions(), "references": refs, "options": options}


def start_run(store: EventStore, config: RunConfig, root: str) -> str:
    """Create a run and record its configuration.

    Returns
    -------
    str
        The new run id.
    """
    run_id = store.create_run(config.input, root)
    store.append(run_id, "init", "", RUN_STARTED,
                 {"config": {**config.as_dict(), "root": root}, "version": __version__,
                  "libraries": library_versions()})
    return run_id


class Runner:
    """Drive one run to its end.

    Parameters
    ----------
    store : EventStore
    run_id : str
    log : structlog logger, optional
        Bound logger for the JSON log and console progress.
    """

    def __init__(self, store: EventStore, run_id: str, log=None):
        self.store = store
        self.run_id = run_id
        self.run_row = store.get_run(run_id)
        self.log = (log or structlog.get_logger()).bind(run_id=run_id)
        self._events = None
        self._started = time.perf_counter()
        # Time spent on the log itself (appends, reads, folds, trailer), reported in run.ended.
        self.log_seconds = 0.0
        self._pause_at = os.environ.get(PAUSE_VARIABLE)

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

    def append(self, stage: str, step: str, kind: str, payload: dict):
        """Append an event and refresh the trailer."""
        events = self.events()
        t = time.perf_counter()
        ev = self.store.append(self.run_id, stage, step, kind, payload)
        events.append(ev)
        self.write_trailer()
        self.log_seconds += time.perf_counter() - t
        if self._pause_at == f"{stage}/{step} {kind}":
            self._pause_at = None
            os.kill(os.getpid(), signal.SIGSTOP)
        return ev

    def write_trailer(self) -> Path | None:
        """Render the trailer from the log into ``<input dir>/<root>.tra`` (atomically)."""
        events = self.events()
        path = Path(self.run_row["input"]).parent / f"{self.run_row['root']}.tra"
        if not path.parent.exists():
            return None
        tmp = path.with_name(f".{path.name}.partial")
        try:
            tmp.write_text(render_trailer(self.run_row, events))
            os.replace(tmp, path)
        except OSError:
            return None  # the trailer is a rendering: the log has everything, so a failed write must not stop a run
        return path

    # -- running ---------------------------------------------------------------------------------
    def resume(self) -> ExitCode:
        """Pick up an unfinished run: record the resume, recheck the current stage, run on.

        Returns
        -------
        ExitCode
        """
        self._lease()
        try:
            run = self.state()
            after = ("interrupted step " + "/".join(min(run.in_progress))
                     if run.in_progress else f"interruption in state {run.state}")
            self.append(run.state or "init", "", RUN_RESUMED, {"after": after, "pid": os.getpid()})
            self._recheck_stage(self.state())
            return self._loop()
        finally:
            self.store.release_lease(self.run_id)

    def _recheck_stage(self, run) -> None:
        """Invalidate the current stage's completed steps when its files or fingerprint changed.

        Steps work on the stage's files in place, so a step is only trusted if the directory
        still holds exactly what the last completed step left and the libraries, reference files
        and options are those it ran with; otherwise the stage starts again from fresh copies.
        """
        stage = run.state
        if stage not in STAGES or stage == "init":
            return
        steps = [s for s in plan(run, stage) if run.is_completed(stage, s)]
        remaining = [s for s in plan(run, stage) if not run.is_completed(stage, s)]
        if not steps or set(remaining) <= _NO_DIRECTORY_STEPS:
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
            d = Path(self._context(run, stage, "").stage_dir())
            for name, digest in sorted(stage_files(run, stage).items()):
                actual = sha256(d / name) if (d / name).exists() else None
                if actual != digest:
                    reason = (f"{d / name} is missing" if actual is None else
                              f"{d / name} changed since it was recorded (sha256 {actual[:12]} != {digest[:12]})")
                    break
        if reason is None:
            return
        self.log.info("stage restarts", stage=stage, reason=reason)
        for step in steps:
            self.append(stage, step, STEP_INVALIDATED, {"reason": reason})

    def _lease(self) -> None:
        try:
            self.store.acquire_lease(self.run_id)
        except StoreError as exc:
            raise RunStateError(str(exc)) from exc

    def run(self) -> ExitCode:
        """Run a new run until the log says it has ended.

        Returns
        -------
        ExitCode
        """
        self._lease()
        try:
            return self._loop()
        finally:
            self.store.release_lease(self.run_id)

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

    def _context(self, run, stage: str, step: str) -> StepContext:
        input_dir = Path(run.config["input"]).parent
        root = run.inputs.get("root") or run.config["root"]
        work_dir = Path(run.config["newpath"]) / root if run.config.get("newpath") else input_dir

        def emit(kind: str, payload: dict) -> None:
            self.log.info(kind, stage=stage, step=step, **{k: v for k, v in payload.items()
                                                          if k in ("verdict", "check", "chosen_stage")})
            self.append(stage, step, kind, payload)

        def progress(message: str) -> None:
            self.log.info("progress", stage=stage, step=step, message=message)

        return StepContext(run=run, stage=stage, step=step, input_dir=input_dir, work_dir=work_dir,
                           emit=emit, progress=progress)

    def _step(self, run, stage: str, step: str) -> None:
        handler = HANDLERS[(stage, step)]
        self.append(stage, step, STEP_STARTED, {"fingerprint": fingerprint(run)})
        self.log.info("step started", stage=stage, step=step)
        # Handlers see the environment recorded with the run, also on resume in another shell.
        os.environ.update(run.environment)
        ctx = self._context(run, stage, step)
        try:
            with Timer() as t:
                if ctx.work_dir != ctx.input_dir:
                    ctx.work_dir.mkdir(parents=True, exist_ok=True)
                payload = handler(ctx)
        except AstrodrizError as exc:
            self.log.error("step failed", stage=stage, step=step, error=str(exc))
            self.append(stage, step, STEP_FAILED, exc.as_payload())
            return
        except OSError as exc:
            # The file system said no (no space, permission denied): name the file, keep it one line.
            where = exc.filename or f"{stage}/{step}"
            error = ProcessingError(f"{where}: {exc.strerror or exc}", exc.filename)
            self.log.error("step failed", stage=stage, step=step, error=str(error))
            self.append(stage, step, STEP_FAILED, error.as_payload())
            return
        except Exception as exc:  # noqa: BLE001 - a defect or unforeseen library failure: keep the traceback
            self.log.error("step failed", stage=stage, step=step, error=repr(exc))
            self.append(stage, step, STEP_FAILED, {
                "error": type(exc).__name__, "message": f"{stage}/{step}: unexpected error: {exc}",
                "path": None, "exit_code": int(ExitCode.INTERNAL), "traceback": traceback.format_exc()})
            return
        payload.setdefault("seconds", t.elapsed)
        self.append(stage, step, STEP_COMPLETED, payload)
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
        products = run.output("final", "promote").get("products", [])
        seconds = time.perf_counter() - self._started
        self.append(status, "", RUN_ENDED, {"status": status, "exit_code": int(code), "reason": reason,
                                            "products": products, "process_seconds": round(seconds, 3),
                                            "log_seconds": round(self.log_seconds, 3),
                                            "log_share": round(self.log_seconds / seconds, 5)})
        self.log.info("run ended", stage=status, status=status, exit_code=int(code))
