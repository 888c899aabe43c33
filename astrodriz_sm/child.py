"""Child process of a concurrent drizzle: ``python -m astrodriz_sm.child <parent pid> <job file>``.

It ties its life to the pipeline process before importing anything heavy: a killed run must not
leave a drizzle writing into a stage directory that its resume is about to recreate.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys


def main(argv: list[str]) -> int:
    """Die with the parent (Linux ``PR_SET_PDEATHSIG``), then run the job file's AstroDrizzle.

    Returns
    -------
    int
        0, or 1 when AstroDrizzle failed (its one-line reason on standard output) or the parent
        had already gone.
    """
    parent, job_file = int(argv[0]), argv[1]
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above took effect
        return 1
    from .handlers.drizzle import drizzle_job

    return drizzle_job(job_file)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
