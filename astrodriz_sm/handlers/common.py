"""What every handler needs: the step context, safe FITS reads, the fallbacks a library's log reports.

Hashes, copies, captured output and timers are :mod:`astrodriz_sm.plumbing`.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

from astropy.io import fits

from ..errors import InputError
from ..model import Inputs, RunConfig, RunLayout


@dataclass
class StepContext:
    """Everything a handler may use.

    Attributes
    ----------
    run : RunState
        The folded state before the step.
    config : RunConfig
        The run configuration recorded in ``run.started``.
    stage, step : str
    layout : RunLayout
        Every path of the run.
    progress : callable
        ``progress(message, point=None)`` tells the user what a long step is doing; ``point`` names
        the moment for the runner's observer (for example ``'fitted'`` after each fit).
    decisions : dict
        ``kind -> payload`` of the decisions the runner took, by their rules, before the step: what the
        handler works from (which stage's exposures, whether cosmic rays are identified again, ...).
        The runner records them with the step's facts.
    rules : object
        The rules a handler needs in the middle of its work (where a fit search ends, which fit is
        applied), as attributes; the runner records their outcome from the candidates the step returns.
    """

    run: Any  # the folded RunState
    config: RunConfig
    stage: str
    step: str
    layout: RunLayout
    progress: Callable[..., None] = field(default=lambda message, point=None: None)
    decisions: dict = field(default_factory=dict)
    rules: Any = None

    @property
    def cores(self) -> int:
        """Cores the step may use: ``-n``, else every core this process may run on."""
        return self.config.num_cores or len(os.sched_getaffinity(0))

    @property
    def inputs(self) -> Inputs:
        """What the init stage recorded."""
        return self.run.inputs

    @property
    def root(self) -> str:
        """Association (or exposure) rootname."""
        return self.run.root

    @property
    def input_dir(self) -> Path:
        """Directory of the input file; changed only by the final ``promote`` step."""
        return self.layout.input_dir

    @property
    def work_dir(self) -> Path:
        """Where stage directories live: ``input_dir``, or ``<NEWPATH>/<root>``."""
        return self.layout.work_dir

    def stage_dir(self, stage: str | None = None) -> Path:
        """``<work_dir>/<root>_<stage>``."""
        return self.layout.stage_dir(stage or self.stage)


def check_fits(path: Path, need_sci: bool = False) -> None:
    """Make sure a file is a complete, readable FITS file.

    Parameters
    ----------
    path : Path
    need_sci : bool
        Also require at least one SCI extension.

    Raises
    ------
    InputError
        Naming the file: missing, not FITS, truncated, or without SCI.
    """
    if not path.exists():
        raise InputError(f"{path}: file not found", str(path))
    size = path.stat().st_size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
                extnames = [h.name for h in hdul]
                # A truncated file opens fine; its last data block is simply missing.
                for i in range(len(hdul)):
                    info = hdul.fileinfo(i)
                    if info["datLoc"] + info["datSpan"] > size:
                        raise InputError(f"{path}: truncated FITS file (HDU {i} needs "
                                         f"{info['datLoc'] + info['datSpan']} bytes, file has {size})",
                                         str(path))
    except InputError:
        raise
    except Exception as exc:  # astropy raises OSError, TypeError, ValueError... for non-FITS data
        raise InputError(f"{path}: not a readable FITS file ({exc})", str(path)) from exc
    if need_sci and "SCI" not in extnames:
        raise InputError(f"{path}: no SCI extension", str(path))


def primary_header(path: Path) -> fits.Header:
    """Primary header of a checked FITS file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fits.getheader(path, 0)


# A library line saying it did something other than what it was asked and carried on: drizzlepac's sky
# step reverting 'match' to 'localmin' when skypac fails, stsci.tools going on without a DQ file it
# could not read, stwcs skipping a WCS key it could not read, drizzlepac's source finding "using
# alternative background calculation instead" when photutils' Background2D raises, tweakwcs using a
# convex hull instead of a union (or an inaccurate overlap area) after a MalformedPolygonError.
FALLBACK_PHRASES = re.compile(r"\b(reverting|falling back|fall back|could not|using\b.*\binstead"
                              r"|MalformedPolygonError)\b", re.IGNORECASE)
# Lines with those words that report an outcome the pipeline records as a decision, not a substitution:
# drizzlepac's "Could not align <image> ..." is a fit that failed, which the a posteriori stage decides on.
OUTCOME_PHRASES = re.compile(r"\bcould not align\b", re.IGNORECASE)


def library_fallbacks(text: str) -> list[str]:
    """Lines of a library log that report a fallback, each once, in order.

    Parameters
    ----------
    text : str
        What a step captured from the libraries (a payload's ``log``).

    Returns
    -------
    list of str
        The stripped lines with "Reverting", "falling back", "fall back", "Could not", "using ...
        instead" or "MalformedPolygonError" (:data:`FALLBACK_PHRASES`), except outcome lines
        (:data:`OUTCOME_PHRASES`).
    """
    found = []
    for line in text.splitlines():
        line = line.strip()
        if FALLBACK_PHRASES.search(line) and not OUTCOME_PHRASES.search(line) and line not in found:
            found.append(line)
    return found


def payload_logs(payload) -> list[str]:
    """Every library log a step payload holds: ``log`` values at any depth (products carry their own)."""
    if isinstance(payload, dict):
        out = [v for k, v in payload.items() if k == "log" and isinstance(v, str)]
        for k, v in payload.items():
            if k != "log":
                out += payload_logs(v)
        return out
    if isinstance(payload, list):
        return [text for item in payload for text in payload_logs(item)]
    return []
