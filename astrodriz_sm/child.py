"""Child process of a concurrent drizzle: ``python -m astrodriz_sm.child <parent pid> <job file>``.

It ties its life to the pipeline process before importing anything heavy: a killed run must not
leave a drizzle writing into a stage directory that its resume is about to recreate. AstroDrizzle's
workers, forked from here, are tied to it in turn.
"""

from __future__ import annotations

import sys

from .plumbing import tie_forks_in_this_process, tie_to_parent


def main(argv: list[str]) -> int:
    """Die with the parent (Linux ``PR_SET_PDEATHSIG``), then run the job file's AstroDrizzle.

    Every process forked here (AstroDrizzle's workers, with ``num_cores`` above 1) dies with this one.

    Returns
    -------
    int
        0, or 1 when AstroDrizzle failed (its one-line reason on standard output) or the parent
        had already gone.
    """
    parent, job_file = int(argv[0]), argv[1]
    if not tie_to_parent(parent):  # the parent died before the tie took effect
        return 1
    tie_forks_in_this_process()
    from .handlers.drizzle import drizzle_job

    return drizzle_job(job_file)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
