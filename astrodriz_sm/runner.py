"""The runner: fold the log, ask the state machine what is next, run it, record it.

Handlers reach the store only through here. A step is done when its ``step.completed`` event
is in the log, so a run interrupted anywhere resumes by simply running this loop again.
"""

from __future__ import annotations

import os
import traceback
from importlib import metadata
from pathlib import Path

import structlog

from . import __version__
from .config import RunConfig
from .errors import AstrodrizError, ExitCode
from .handlers import HANDLERS, StepContext
from .handlers.common import Timer
from .statemachine import fold, next_action
from .statemachine.state import (
    RUN_ENDED,
    RUN_RESUMED,
    RUN_STARTED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_STARTED,
    TRANSITION,
)
from .store.eventstore import EventStore
from .store.trailer import render_trailer

LIBRARIES = ("drizzlepac", "stwcs", "tweakwcs", "photutils", "astropy", "numpy", "scipy", "transitions",
             "sqlite-utils", "structlog")

_END_CODES = {"done": ExitCode.OK, "skipped": ExitCode.SKIPPED}


def library_versions() -> dict:
    """Versions of the libraries that shape the results."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


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

    # -- recording -------------------------------------------------------------------------------
    def append(self, stage: str, step: str, kind: str, payload: dict):
        """Append an event and refresh the trailer."""
        ev = self.store.append(self.run_id, stage, step, kind, payload)
        self.write_trailer()
        return ev

    def write_trailer(self) -> Path | None:
        """Render the trailer from the log into ``<input dir>/<root>.tra`` (atomically)."""
        events = self.store.events(self.run_id)
        run = fold(events)
        path = Path(run.config.get("input", self.run_row["input"])).parent / f"{self.run_row['root']}.tra"
        if not path.parent.exists():
            return None
        tmp = path.with_name(f".{path.name}.partial")
        try:
            tmp.write_text(render_trailer(self.run_row, events))
            os.replace(tmp, path)
        except OSError:
            return None  # a read-only input directory must not stop the run; the log has everything
        return path

    # -- running ---------------------------------------------------------------------------------
    def resume_marker(self) -> None:
        """Record that an unfinished run is being picked up again."""
        run = fold(self.store.events(self.run_id))
        after = ("interrupted step " + "/".join(min(run.in_progress))
                 if run.in_progress else f"interruption in state {run.state}")
        self.append(run.state or "init", "", RUN_RESUMED, {"after": after, "pid": os.getpid()})

    def run(self) -> ExitCode:
        """Run until the log says the run has ended.

        Returns
        -------
        ExitCode
        """
        while True:
            run = fold(self.store.events(self.run_id))
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
        self.append(stage, step, STEP_STARTED, {})
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
        self.append(status, "", RUN_ENDED, {"status": status, "exit_code": int(code), "reason": reason,
                                            "products": products})
        self.log.info("run ended", stage=status, status=status, exit_code=int(code))
