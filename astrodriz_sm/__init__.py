"""astrodriz-sm: HST runastrodriz as an event-sourced state machine.

The Python API (:mod:`astrodriz_sm.api`): :func:`process`, :func:`resume`, :func:`replay`, :func:`explain`.
"""

from .api import RunResult, explain, process, replay, resume, status
from .version import __version__

__all__ = ["RunResult", "__version__", "explain", "process", "replay", "resume", "status"]
