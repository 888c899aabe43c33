"""Exit codes and the exceptions that map onto them.

One table of exit codes serves every ``astrodriz-sm`` command; the README prints it.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes of ``astrodriz-sm``; each member's ``meaning`` says when it is used."""

    def __new__(cls, value: int, meaning: str):
        # The meaning travels with the member: an attribute docstring would not reach the help text.
        member = int.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member

    OK = 0, ("The run ended ``done``, or ``skipped`` (DRIZCORR is OMIT and ``-f`` was not given: "
             "runastrodriz's command exits 0 too), or the command succeeded.")
    INTERNAL = 1, "An unexpected error: a defect; the traceback is in the log."
    USAGE = 2, "Bad command line."
    INPUT = 3, "Bad input: a file missing, unreadable, truncated or not what HST delivers."
    PROCESSING = 5, "A processing step failed (updatewcs, AstroDrizzle, ...); the run ended ``failed``."
    CONFIG = 6, "Bad configuration: an environment variable with a value that is not on/off."
    RUN_STATE = 7, "The run cannot be started or resumed in its current state (unknown, finished, unfinished)."
    LOG_CORRUPT = 8, "The event log failed verification (hash chain broken) or its file is damaged."
    INTERRUPTED = 9, "Interrupted (Ctrl-C, SIGTERM): the run can be resumed."
    NO_VIABLE_DATA = 65, ("No exposure left to process (-v removed every one); the run ended ``failed``, "
                          "with runastrodriz's code for it.")
    HELD = 75, ("Another live process (another operator, batch or host) holds this input's unfinished run; "
                "nothing was done: try again when it ends.")


EXIT_CODE_MEANINGS = {code: code.meaning for code in ExitCode}

# What a campaign does when an association's process ends with each code. A final outcome is kept;
# a failure that may not recur (a defect met once, a library failing on a busy node) is tried once
# more; a process stopped from outside (a signal, the node going away) is resumed.
FINAL, RETRY_ONCE, RESUME, HELD_ELSEWHERE = "final", "retried once", "resumed", "waited for"
CAMPAIGN_RETRY = {
    ExitCode.OK: FINAL, ExitCode.INTERNAL: RETRY_ONCE, ExitCode.USAGE: FINAL, ExitCode.INPUT: FINAL,
    ExitCode.PROCESSING: RETRY_ONCE, ExitCode.CONFIG: FINAL,
    ExitCode.RUN_STATE: FINAL, ExitCode.LOG_CORRUPT: FINAL, ExitCode.INTERRUPTED: RESUME,
    ExitCode.NO_VIABLE_DATA: FINAL,
    # Another live process holds the input's run: waited for, then planned again (never a failure).
    ExitCode.HELD: HELD_ELSEWHERE,
}


class AstrodrizError(Exception):
    """Base of the errors that end a command with a one-line message.

    Parameters
    ----------
    message : str
        One line naming the file (where there is one) and the problem.
    path : str, optional
        The file concerned.
    """

    exit_code = ExitCode.INTERNAL

    def __init_subclass__(cls, exit_code: ExitCode | None = None, **kwargs):
        # Each kind of error names its exit code in its class statement: one table, no repetition.
        super().__init_subclass__(**kwargs)
        if exit_code is not None:
            cls.exit_code = exit_code

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path

    def as_payload(self) -> dict:
        """Describe the error for an event payload."""
        return {"error": type(self).__name__, "message": str(self), "path": self.path,
                "exit_code": int(self.exit_code)}


class InputError(AstrodrizError, exit_code=ExitCode.INPUT):
    """An input file is missing, unreadable or malformed."""


class ConfigError(AstrodrizError, exit_code=ExitCode.CONFIG):
    """The configuration (environment variables, options) is invalid."""


class ProcessingError(AstrodrizError, exit_code=ExitCode.PROCESSING):
    """A processing library (stwcs, drizzlepac) failed on valid-looking input."""


class RunStateError(AstrodrizError, exit_code=ExitCode.RUN_STATE):
    """The requested run cannot be started or resumed."""


class RunHeldError(AstrodrizError, exit_code=ExitCode.HELD):
    """Another live process holds the input's unfinished run (its lease); nothing was done."""


class UsageError(AstrodrizError, exit_code=ExitCode.USAGE):
    """An option or argument has a value the command cannot take."""


class LogCorruptError(AstrodrizError, exit_code=ExitCode.LOG_CORRUPT):
    """The event store is damaged, or a run's hash chain does not verify."""


class Interrupted(AstrodrizError, exit_code=ExitCode.INTERRUPTED):
    """A run was stopped by Ctrl-C or SIGTERM; its workers are gone and it can be resumed."""


class NoViableDataError(AstrodrizError, exit_code=ExitCode.NO_VIABLE_DATA):
    """No exposure is left to process, as runastrodriz's ``Ret_code.NO_VIABLE_DATA`` (exit 65)."""
