"""Init stage: interpret the input, find every exposure, read DRIZCORR, resolve reference files."""

from __future__ import annotations

import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..errors import InputError
from ..model import (
    DETECTORS,
    FLC,
    FLT,
    Exposure,
    ExposureSet,
    Inputs,
    StepResult,
    input_name,
    split_input_name,
)
from ..statemachine.state import NOTE
from .common import StepContext, check_fits, primary_header, sha256

REFERENCE_KEYWORDS = ("IDCTAB", "NPOLFILE", "D2IMFILE", "MDRIZTAB")
_ROOTNAME = re.compile(r"^[a-z0-9]{6,12}$")


def input_kind(path: Path) -> tuple[str, str]:
    """Classify the input file by its suffix.

    Returns
    -------
    kind : str
        ``'asn'``, ``'raw'``, ``'flt'`` or ``'flc'``.
    root : str
        The rootname that names the trailer: ``<root>.tra``.

    Raises
    ------
    InputError
        For any other file name.
    """
    parsed = split_input_name(path.name)
    if parsed is not None:
        return parsed
    raise InputError(f"{path}: expected an _asn, _raw, _flt or _flc FITS file", str(path))


def read_association(path: Path) -> tuple[list[str], str]:
    """Members present and the product name of an ASN table.

    Returns
    -------
    members : list of str
        Lower-case rootnames of the EXP-* members with MEMPRSNT true.
    product : str
        Lower-case name of the PROD-* row (the association root when absent).

    Raises
    ------
    InputError
        Empty table, no member, or a member name that is not a plain rootname.
    """
    check_fits(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(path, memmap=False) as hdul:
            if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
                raise InputError(f"{path}: no association table in extension 1", str(path))
            table = hdul[1].data
            cols = [c.upper() for c in hdul[1].columns.names]
            if not {"MEMNAME", "MEMTYPE", "MEMPRSNT"} <= set(cols):
                raise InputError(f"{path}: association table lacks MEMNAME/MEMTYPE/MEMPRSNT", str(path))
            rows = [(str(r["MEMNAME"]).strip(), str(r["MEMTYPE"]).strip().upper(), bool(r["MEMPRSNT"]))
                    for r in table] if table is not None else []
    members, product = [], None
    for name, memtype, present in rows:
        if not _ROOTNAME.match(name.lower()):
            # Refuse before anything is read or written: a name like '../x' would escape the run directory.
            raise InputError(f"{path}: member name {name!r} is not an HST rootname", str(path))
        if memtype.startswith("EXP") and present:
            if name.lower() in members:
                raise InputError(f"{path}: member {name.lower()} is listed more than once", str(path))
            members.append(name.lower())
        elif memtype.startswith("PROD") and product is None:
            product = name.lower()
    if not members:
        raise InputError(f"{path}: the association lists no exposure present (MEMPRSNT)", str(path))
    return members, product or path.name[: -len("_asn.fits")].lower()


def _exposure_facts(path: Path) -> dict:
    """Check one calibrated exposure and return what the pipeline needs from its header."""
    check_fits(path, need_sci=True)
    hdr = primary_header(path)
    instrument, detector = str(hdr.get("INSTRUME", "")).strip(), str(hdr.get("DETECTOR", "")).strip()
    if (instrument, detector) not in DETECTORS:
        raise InputError(f"{path}: unsupported instrument {instrument}/{detector} "
                         f"(supported: {', '.join('/'.join(s) for s in sorted(DETECTORS))})", str(path))
    exptime = hdr.get("EXPTIME")
    if exptime is None:
        raise InputError(f"{path}: no EXPTIME in the primary header", str(path))
    ngoodpix = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(path, memmap=True) as hdul:
            for h in hdul:
                if h.name == "SCI":
                    ngoodpix.append(h.header.get("NGOODPIX"))
                    if h.data is not None and np.isnan(h.data).all():
                        raise InputError(f"{path}: SCI,{h.ver} is all NaN; nothing to drizzle", str(path))
    empty = None
    if float(exptime) <= 0:
        empty = f"EXPTIME={float(exptime):g}"
    elif ngoodpix and all(n is not None and int(n) == 0 for n in ngoodpix):
        empty = "NGOODPIX=0"
    refs = {k: str(hdr[k]).strip() for k in REFERENCE_KEYWORDS if k in hdr}
    return {"instrument": instrument, "detector": detector, "exptime": float(exptime), "references": refs,
            "drizcorr": str(hdr.get("DRIZCORR", "")).strip().upper() or None, "empty": empty}


def _resolve_references(refs: dict, var: str, input_dir: Path, environment: dict) -> tuple[dict, dict]:
    """Find the reference files named in the headers.

    A ``jref$name`` reference needs the variable ``jref``; when it is not set and the file lies
    beside the input, the input directory is used (recorded as an environment update).

    Returns
    -------
    resolved : dict
        ``keyword -> absolute path`` (absent for 'N/A').
    environment_update : dict
    """
    update, resolved = {}, {}
    for key, value in refs.items():
        if value.upper() in ("N/A", "NONE", ""):
            continue
        if "$" in value:
            prefix, name = value.split("$", 1)
            base = environment.get(prefix) or update.get(prefix)
            if base is None:
                if (input_dir / name).exists():
                    update[prefix] = str(input_dir) + "/"
                    base = update[prefix]
                else:
                    raise InputError(f"{value}: {key} needs the environment variable {prefix!r}, which is "
                                     f"not set, and {name} is not in {input_dir}", value)
            path = Path(base) / name
        else:
            path = input_dir / value
        if not path.exists():
            raise InputError(f"{path}: {key} reference file not found", str(path))
        resolved[key] = str(path)
    if var not in environment and var not in update:
        update[var] = str(input_dir) + "/"  # stwcs expands the variable even for N/A references
    return resolved, update


def check_writable(directory: Path) -> None:
    """Make sure the input directory can take the results before any work is done.

    The products, the trailer and the updated exposures end up beside the input (also with
    NEWPATH), so a directory that refuses writes would otherwise fail the run part-way through,
    as a processing error. The probe is an anonymous temporary file, gone as soon as it is closed.

    Raises
    ------
    InputError
        Naming the directory and what the file system said.
    """
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise InputError(f"{directory}: input directory is not writable ({exc.strerror or exc})",
                         str(directory)) from exc


def resolve_inputs(ctx: StepContext) -> StepResult:
    """Interpret the input file and list the exposures to process.

    Follows runastrodriz's initialization: ASN table or singleton RAW/FLT/FLC, DRIZCORR from
    the RAW file of the first member, the FLC list used only when every member has one, the
    trailer named ``<root>.tra``. An FLC-only delivery has an FLC list and no FLT list.

    Returns
    -------
    StepResult
        Payload with ``inputs`` (:meth:`Inputs.to_payload`) and ``environment_update``.
    """
    input_path = Path(ctx.config["input"])
    input_dir = input_path.parent
    kind, root = input_kind(input_path)
    if not input_path.exists():
        raise InputError(f"{input_path}: file not found", str(input_path))
    check_writable(input_dir)
    notes = []
    asn = None
    if kind == "asn":
        members, product = read_association(input_path)
        root, asn = product, input_path.name
    else:
        members = [root]

    found = {FLT: [], FLC: []}
    raw, facts = [], {}
    for m in members:
        paths = {k: input_dir / input_name(m, k) for k in (FLT, FLC)}
        if not any(p.exists() for p in paths.values()):
            listed = f" listed in {input_path.name}" if asn else ""
            raise InputError(f"{paths[FLT]}: exposure {m}{listed} is missing (no _flt or _flc file)",
                             str(paths[FLT]))
        for k, p in paths.items():
            if p.exists():
                facts[p.name] = _exposure_facts(p)
                found[k].append(p.name)
        if (input_dir / input_name(m, "raw")).exists():
            raw.append(input_name(m, "raw"))
    complete = {k: len(found[k]) == len(members) for k in found}
    if not any(complete.values()):
        # Neither list is whole: some members have only an FLT file, others only an FLC file.
        short = next(m for m in members if input_name(m, FLT) not in found[FLT])
        path = input_dir / input_name(short, FLT)
        raise InputError(f"{path}: exposure {short} has an FLC file but no FLT file, and other exposures "
                         "have no FLC file: neither list is complete", str(path))
    for k in (FLC, FLT):
        if found[k] and not complete[k]:
            notes.append(f"only {len(found[k])} of {len(members)} exposures have an {k.upper()} file: "
                         f"{k.upper()} files not used")
            found[k] = []
    # Exposures with no exposure time or no good pixel are left out, as runastrodriz leaves them out of
    # the MDRIZTAB choice and AstroDrizzle drops them; when all are such, all are used and not aligned.
    empty = {}
    for name in found[FLT] + found[FLC]:
        if facts[name]["empty"]:
            empty.setdefault(split_input_name(name)[1], facts[name]["empty"])
    no_alignment, excluded = None, []
    if empty and len(empty) == len(members):
        no_alignment = "every exposure has EXPTIME=0 or NGOODPIX=0: all are drizzled, none is aligned"
    elif empty:
        excluded = [f"{m} ({why})" for m, why in empty.items()]
        found = {k: [n for n in names if split_input_name(n)[1] not in empty] for k, names in found.items()}
    used = found[FLT] + found[FLC]

    # DRIZCORR comes from the RAW file of the first member; without RAW, from the calibrated file.
    first_raw = input_dir / input_name(members[0], "raw")
    if first_raw.exists():
        check_fits(first_raw)
        drizcorr = str(primary_header(first_raw).get("DRIZCORR", "")).strip().upper() or None
        drizcorr_file = first_raw.name
    elif kind == "raw":
        raise InputError(f"{first_raw}: file not found", str(first_raw))
    else:
        drizcorr_file = used[0]
        drizcorr = facts[used[0]]["drizcorr"]
        notes.append(f"no RAW file for {members[0]}: DRIZCORR read from {drizcorr_file}")

    kinds = {(v["instrument"], v["detector"]) for v in facts.values()}
    if len(kinds) > 1:
        raise InputError(f"{input_path}: exposures mix instruments/detectors {sorted(kinds)}", str(input_path))
    instrument, detector = kinds.pop()
    exposures = ExposureSet(*(tuple(Exposure.from_name(n, instrument=instrument, detector=detector,
                                                       exptime=facts[n]["exptime"]) for n in found[k])
                              for k in (FLT, FLC)))
    first = facts[exposures.verified[0].name]
    references, env_update = _resolve_references(first["references"], DETECTORS[(instrument, detector)]
                                                 .reference_variable, input_dir, ctx.run.environment)
    inputs = Inputs(
        root=root, kind=kind, asn=asn, members=tuple(m for m in members if not excluded or m not in empty),
        exposures=exposures, raw=tuple(raw),
        drizcorr=drizcorr, drizcorr_file=drizcorr_file, references=first["references"],
        reference_paths=references,
        input_hashes={n: sha256(input_dir / n) for n in sorted(set(used + raw + ([asn] if asn else [])))},
        notes=tuple(notes), no_alignment=no_alignment)
    said = ([f"excluded from processing: {', '.join(excluded)}"] if excluded else []) + (
        [no_alignment] if no_alignment else [])
    return StepResult({"inputs": inputs.to_payload(), "environment_update": env_update},
                      facts=[(NOTE, {"message": m}) for m in said])
