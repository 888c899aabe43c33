"""WFPC2 inputs: the ``_c0m``/``_c1m`` pair of each exposure made into an FLT file, as runastrodriz 3.11 does.

runastrodriz converts the calibrated WFPC2 file with ``wfpc2Data.wfpc2_to_flt``, drops an
exposure that ``_analyze_exposure`` refuses (bad guiding, ``analyze_data``'s rules, no filter),
assigns the best IDCTAB, OFFTAB and DGEOFILE from CRDS (``wfpc2Data.apply_bestrefs``) and puts
every chip on the photometry of WF3 (``photeq``, reference extension 3). Each of these drizzlepac
functions runs here on a copy in a scratch directory beside the input; the finished FLT file is
renamed into place, so the input directory never holds half of one.

CRDS is used when the run's environment names a cache (``CRDS_PATH``). Without it runastrodriz
would fetch rules from the public CRDS server into a temporary cache; on a machine without that
server this stops the process, so here the header's references are kept and a note says so.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import InputError, NoViableDataError, ProcessingError
from ..model import input_name
from ..plumbing import captured_output, plain_directory_variables, sha256, working_directory
from .common import check_fits, primary_header

#: Calibrated WFPC2 file, its data-quality file and its raw file, by suffix.
C0M, C1M, D0M = "c0m", "c1m", "d0m"
#: Reference types runastrodriz 3.11 asks CRDS for (``apply_bestrefs``'s default).
BESTREF_TYPES = ("idctab", "dgeofile", "offtab")
#: The chip whose PHOTFLAM all chips are scaled to (runastrodriz: ``ref_phot_ext=3``).
PHOTEQ_REFERENCE_EXTENSION = 3


def is_wfpc2(input_path: Path, kind: str) -> bool:
    """Whether a run's input is WFPC2 data still to be converted (a ``_c0m``/``_d0m`` file or its ASN)."""
    if kind in (C0M, D0M):
        return True
    if kind != "asn":
        return False
    check_fits(input_path)
    return str(primary_header(input_path).get("INSTRUME", "")).strip().upper() == "WFPC2"


def _converted(c0m: Path, workdir: Path, environ: dict) -> tuple[Path | None, list[str], str]:
    """Make the FLT file of one exposure in ``workdir``; None when runastrodriz would not process it.

    Returns
    -------
    flt : Path or None
    notes : list of str
    log : str
        What drizzlepac and CRDS printed.
    """
    from drizzlepac import photeq, runastrodriz, wfpc2Data

    for src in (c0m, c0m.with_name(c0m.name.replace(f"_{C0M}", f"_{C1M}"))):
        if src.exists():
            # A link: the conversion only reads these (the scratch directory is beside them).
            try:
                os.link(src, workdir / src.name)
            except OSError:
                shutil.copyfile(src, workdir / src.name)
    notes = []
    # Names relative to the scratch directory: drizzlepac's file-name parsing would misread a directory
    # such as 'data (copy)' in an absolute one.
    with captured_output() as out, working_directory(workdir):
        try:
            flt = workdir / Path(wfpc2Data.wfpc2_to_flt(c0m.name)).name
        except Exception as exc:
            raise InputError(f"{c0m}: cannot be converted to an FLT file: {exc}", str(c0m)) from exc
        if not runastrodriz._analyze_exposure(flt.name):
            refused = f"{c0m.name}: not processed: it fails runastrodriz's checks (guiding, analyze_data, filter)"
            return None, [refused], out.getvalue()
        if environ.get("CRDS_PATH"):
            before = {k: str(primary_header(flt).get(k.upper(), "")) for k in BESTREF_TYPES}
            try:
                wfpc2Data.apply_bestrefs(flt.name, dirname=str(workdir), reftypes=list(BESTREF_TYPES))
            except (Exception, SystemExit) as exc:
                raise ProcessingError(f"{c0m}: CRDS could not assign best references "
                                      f"(CRDS_PATH={environ['CRDS_PATH']}): {exc}", str(c0m)) from exc
            after = {k: str(primary_header(flt).get(k.upper(), "")) for k in BESTREF_TYPES}
            changed = [f"{k.upper()} {before[k]} -> {after[k]}" for k in BESTREF_TYPES if before[k] != after[k]]
            notes.append(f"{flt.name}: CRDS best references: " + (", ".join(changed) or "as in the header"))
        else:
            notes.append(f"{flt.name}: CRDS_PATH is not set: the IDCTAB, OFFTAB and DGEOFILE the header "
                         "names are kept (no best references from CRDS)")
        try:
            photeq.photeq(files=flt.name, ref_phot_ext=PHOTEQ_REFERENCE_EXTENSION, readonly=False, logfile=None)
        except Exception as exc:  # noqa: BLE001 - runastrodriz logs any failure and goes on unscaled
            notes.append(f"{flt.name}: photeq was unable to run: {exc}")
    return flt, notes, out.getvalue()


def convert_exposures(input_dir: Path, members: list[str], environ: dict) -> dict:
    """Convert every member's ``_c0m`` (and ``_c1m``) file into ``<member>_flt.fits`` beside it.

    Parameters
    ----------
    input_dir : Path
    members : list of str
        Exposure rootnames.
    environ : dict
        The run's environment (``uref``, ``CRDS_*``), already applied to this process.

    Returns
    -------
    dict
        ``converted`` (``{flt: {'c0m': name, 'c1m': name or None, 'sha256': of the c0m}}``),
        ``refused`` (rootnames not processed), ``notes`` and ``log``.

    Raises
    ------
    InputError
        A member without its ``_c0m`` file, or one that cannot be converted.
    NoViableDataError
        When no exposure is left to process (runastrodriz exits 65).
    """
    converted, refused, notes, logs = {}, [], [], []
    # apply_bestrefs reads uref from the process environment; stwcs needs it for any reference.
    os.environ.setdefault("uref", f"{input_dir}/")
    for member in members:
        c0m = input_dir / input_name(member, C0M)
        if not c0m.exists():
            raise InputError(f"{c0m}: exposure {member} is missing (no _c0m file)", str(c0m))
        check_fits(c0m, need_sci=True)
        c1m = c0m.with_name(input_name(member, C1M))
        if not c1m.exists():
            notes.append(f"{c1m.name} not found: {member}'s DQ arrays are all zero")
        with tempfile.TemporaryDirectory(prefix=f".{member}_convert_", dir=input_dir) as tmp, \
                plain_directory_variables(("uref",)):
            flt, said, log = _converted(c0m, Path(tmp), environ)
            notes += said
            logs.append(log)
            if flt is None:
                refused.append(member)
                continue
            os.replace(flt, input_dir / flt.name)
        converted[flt.name] = {"c0m": c0m.name, "c1m": c1m.name if c1m.exists() else None,
                               "sha256": sha256(c0m)}
        notes.append(f"{c0m.name}" + (f" and {c1m.name}" if c1m.exists() else "")
                     + f" converted to {flt.name} (wfpc2Data.wfpc2_to_flt, photeq to chip 3)")
    if not converted:
        raise NoViableDataError(f"{input_dir / input_name(members[0], C0M)}: no viable data: no WFPC2 exposure "
                                "passes runastrodriz's checks", str(input_dir / input_name(members[0], C0M)))
    return {"converted": converted, "refused": refused, "notes": notes, "log": "".join(logs)}
