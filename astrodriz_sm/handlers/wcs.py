"""The pipeline-default WCS: stwcs's updatewcs on the stage copies, and the sky cells runastrodriz adds."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from astropy.io import fits

from ..errors import ProcessingError
from ..model import StepResult
from ..plumbing import Timer, captured_output, hashes, working_directory
from .common import StepContext

def _wcsnames(path: Path) -> list[str]:
    with fits.open(path, memmap=False) as hdul:
        return [str(h.header.get("WCSNAME", "")) for h in hdul if h.name == "SCI"]


def _sky_footprint_key(name: str) -> tuple:
    """The SCI WCS keywords a file's sky footprint depends on."""
    with fits.open(name, memmap=False) as hdul:
        return tuple((h.header.get("NAXIS1"), h.header.get("NAXIS2"),
                      *(repr(v) for k, v in h.header.items() if k.startswith(("CRVAL", "CRPIX", "CD", "CTYPE",
                                                                               "A_", "B_", "D2IM", "NPOL"))))
                     for h in hdul if h.name == "SCI")


def _skycell_value(name: str) -> str:
    from drizzlepac.haputils.cell_utils import get_sky_cells

    return "; ".join(cell[8:] for cell in (get_sky_cells([name]) or {}))


def add_skycells(names: list[str], workers: int = 1, computed=None) -> dict:
    """SKYCELL in every SCI header, as drizzlepac's ``add_skycell_to_header`` writes it.

    That function computes the sky cells of the whole file once per SCI extension; the value
    depends on the file's footprint only, so it is computed once per distinct WCS (an FLT and its
    FLC share theirs) and written to every extension, after S_REGION, as drizzlepac places it.
    The distinct footprints are computed in ``workers`` child processes (about 8 s each for a
    full-frame ACS/WFC exposure, in pure Python).

    Parameters
    ----------
    names : list of str
        The files, in the current directory.
    workers : int
        Child processes for the footprints (1: none).
    computed : callable, optional
        ``computed(name)`` after each distinct footprint's value is known (the child processes,
        if any, still running).

    Returns
    -------
    dict
        File name -> SKYCELL value ('' when drizzlepac finds none).
    """
    keys = {name: _sky_footprint_key(name) for name in names}
    first = {}  # footprint -> the first file that has it
    for name, key in keys.items():
        first.setdefault(key, name)
    if workers > 1 and len(first) > 1:
        values = []
        with ProcessPoolExecutor(min(workers, len(first)), mp_context=multiprocessing.get_context("fork")) as pool:
            for name, value in zip(first.values(), pool.map(_skycell_value, first.values())):
                values.append(value)
                if computed is not None:
                    computed(name)
    else:
        values = []
        for name in first.values():
            values.append(_skycell_value(name))
            if computed is not None:
                computed(name)
    known = dict(zip(first, values))
    written = {}
    for name in names:
        value = written[name] = known[keys[name]]
        if not value:
            continue
        with fits.open(name, mode="update") as hdul:
            for h in hdul:
                if h.name != "SCI":
                    continue
                if "SKYCELL" in h.header:
                    h.header["SKYCELL"] = (value, "Skycell(s) that this image occupies")
                else:
                    h.header.insert("S_REGION", ("SKYCELL", value, "Skycell(s) that this image occupies"),
                                    after=True)
    return written


def updatewcs(ctx: StepContext) -> StepResult:
    """Apply the distortion model: ``updatewcs(use_db=False)`` to the pipeline-default WCS.

    As runastrodriz 3.11 does, S_REGION is computed first and SKYCELL after.

    Returns
    -------
    StepResult
        The WCSNAME every exposure got (``IDC_<idctab root>``), output hashes and the library log.

    Raises
    ------
    ProcessingError
        When stwcs fails or the resulting WCSNAME is not ``IDC_<idctab root>``.
    """
    from drizzlepac.haputils import processing_utils
    from stwcs.updatewcs import updatewcs as stwcs_updatewcs

    d = ctx.stage_dir()
    idctab = ctx.inputs.references.get("IDCTAB", "")
    expected = "IDC_" + Path(idctab.split("$")[-1]).name.split("_idc")[0] if idctab else None
    groups = [[e.name for e in g] for g in ctx.inputs.exposures.lists]
    ctx.progress(f"updatewcs(use_db=False) on {sum(map(len, groups))} exposures")
    with Timer() as t, captured_output() as out, working_directory(d):
        # runastrodriz 3.11 writes S_REGION from the header's WCS as delivered, before any updatewcs,
        # and SKYCELL from the pipeline-default WCS after it; later stages leave both alone.
        for name in (n for g in groups for n in g):
            processing_utils.compute_sregion(name)
        for group in [[e.name for e in g] for g in ctx.inputs.updated_lists]:
            try:
                stwcs_updatewcs(list(group), use_db=False, checkfiles=False)
            except Exception as exc:
                raise ProcessingError(f"{d / group[0]}: updatewcs failed: {exc}", str(d / group[0])) from exc
        # A progress point while the sky cells' processes are running (the crash harness kills there).
        add_skycells([n for g in groups for n in g], workers=ctx.cores,
                     computed=lambda name: ctx.progress(f"SKYCELL of {name}", point="skycell"))
    names = {n: _wcsnames(d / n) for g in groups for n in g}
    found = sorted({w for ws in names.values() for w in ws})
    if expected and found != [expected]:
        raise ProcessingError(f"{d}: updatewcs gave WCSNAME {found}, expected {expected}", str(d))
    return StepResult({"wcsname": found[0] if len(found) == 1 else found, "wcsnames": names,
                       "files": hashes(d, [n for g in groups for n in g]), "seconds": t.elapsed,
                       "log": out.getvalue()})
