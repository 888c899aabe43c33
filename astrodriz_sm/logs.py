"""Structured logs: one JSON object per line to a file, short progress lines on the console.

Each command or API call makes its own logger (:func:`run_log`); nothing is configured globally, so a
run leaves no logging state behind in the caller's process.
"""

from __future__ import annotations

import contextlib
import json
import sys

import structlog

from .errors import UsageError

_CONSOLE_SKIP = {"event", "timestamp", "level", "run_id", "stage", "step"}


@contextlib.contextmanager
def run_log(json_path: str | None = None, console: bool = True):
    """A structlog logger for one command.

    Parameters
    ----------
    json_path : str, optional
        File that receives one JSON object per log record (appended; closed on exit).
    console : bool
        Print a one-line summary of each record to standard error.

    Yields
    ------
    structlog BoundLogger
    """
    # Kept open for the life of the command: every record is appended and flushed by line.
    try:
        json_file = open(json_path, "a", buffering=1) if json_path else None  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"{json_path}: cannot write the JSON log ({exc.strerror or exc})", str(json_path)) from exc
    state = {"file": json_file}

    def tee_json(logger, method, event_dict):
        if state["file"] is not None:
            try:
                state["file"].write(json.dumps(event_dict, default=str, sort_keys=True) + "\n")
            except OSError as exc:
                # The JSON log is a copy of what the event log holds: losing it must not stop a run.
                print(f"astrodriz-sm: warning: {json_path}: cannot write the JSON log ({exc.strerror or exc}); "
                      "it stops here, the event log goes on", file=sys.stderr)
                with contextlib.suppress(OSError):
                    state["file"].close()
                state["file"] = None
        return event_dict

    def console_line(logger, method, event_dict):
        if not console:
            raise structlog.DropEvent
        where = "/".join(x for x in (event_dict.get("stage"), event_dict.get("step")) if x)
        extras = " ".join(f"{k}={v}" for k, v in event_dict.items() if k not in _CONSOLE_SKIP)
        ts = str(event_dict.get("timestamp", ""))[11:19]
        return f"{ts} {f'[{where}] ' if where else ''}{event_dict['event']}{' ' + extras if extras else ''}"

    logger = structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True),
                    tee_json, console_line],
        wrapper_class=structlog.BoundLogger)
    try:
        yield logger
    finally:
        if state["file"] is not None:
            with contextlib.suppress(OSError):
                state["file"].close()
