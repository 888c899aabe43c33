"""Init stage: interpret the input, find every exposure, read DRIZCORR, resolve reference files."""

from __future__ import annotations

import dataclasses
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..config import input_kind, require_input
from ..errors import InputError, ProcessingError
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
from ..model.events import NOTE, VERIFICATION
from ..plumbing import captured_output, sha256, working_directory
from . import wfpc2
from .common import StepContext, check_fits, primary_header

REFERENCE_KEYWORDS = ("IDCTAB", "NPOLFILE", "D2IMFILE", "MDRIZTAB")
# The ASN rows that name the product, in asnutil.readASNTable's order of preference.
PRODUCT_ROWS = ("PROD-DTH", "PROD-RPT", "PROD-CRJ")
_ROOTNAME = re.compile(r"^[a-z0-9]{6,12}$")


def read_association(path: Path) -> tuple[list[str], str]:
    """Members present and the product name of an ASN table.

    Returns
    -------
    members : list of str
        Lower-case rootnames of the EXP-* members with MEMPRSNT true.
    product : str
        Lower-case name of the product: the first PROD-DTH row, else the first PROD-RPT row, else
        the first PROD-CRJ row, else the association's rootname, as ``asnutil.readASNTable`` names
        AstroDrizzle's output for runastrodriz 3.11 (a CR-SPLIT + dither association's PROD-CR1 and
        PROD-CR2 rows name intermediate products, not this one).

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
    members, products = [], {}
    for name, memtype, present in rows:
        if not _ROOTNAME.match(name.lower()):
            # Refuse before anything is read or written: a name like '../x' would escape the run directory.
            raise InputError(f"{path}: member name {name!r} is not an HST rootname", str(path))
        if memtype.startswith("EXP") and present:
            if name.lower() in members:
                raise InputError(f"{path}: member {name.lower()} is listed more than once", str(path))
            members.append(name.lower())
        elif memtype in PRODUCT_ROWS:
            products.setdefault(memtype, name.lower())
    if not members:
        raise InputError(f"{path}: the association lists no exposure present (MEMPRSNT)", str(path))
    product = next((products[t] for t in PRODUCT_ROWS if t in products), None)
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
    goodpix = DETECTORS[(instrument, detector)].good_pixels_keyword
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(path, memmap=True) as hdul:
            for h in hdul:
                if h.name == "SCI":
                    ngoodpix.append(h.header.get(goodpix))
                    if h.data is not None and np.isnan(h.data).all():
                        raise InputError(f"{path}: SCI,{h.ver} is all NaN; nothing to drizzle", str(path))
    # runastrodriz 3.11 reads the good pixels of SCI,1 only (RA 566); AstroDrizzle's check_files drops
    # an ACS or WFC3 file whose SCI extensions sum to no good pixel.
    empty = dropped = None
    if float(exptime) <= 0:
        empty = dropped = f"EXPTIME={float(exptime):g}"
    elif ngoodpix and ngoodpix[0] is not None and float(ngoodpix[0]) <= 0:
        empty = f"{goodpix}=0 in SCI,1"
    if dropped is None and instrument in ("ACS", "WFC3") and ngoodpix and sum(float(n or 0) for n in ngoodpix) == 0:
        dropped = f"{goodpix}=0 in every SCI extension"
    refs = {k: str(hdr[k]).strip() for k in REFERENCE_KEYWORDS if k in hdr}
    return {"instrument": instrument, "detector": detector, "exptime": float(exptime), "references": refs,
            "drizcorr": str(hdr.get("DRIZCORR", "")).strip().upper() or None, "empty": empty,
            "dropped": dropped}


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


def idctab_resets(input_dir: Path, names: list[str], facts: dict) -> tuple[dict, list[str]]:
    """The exposures whose IDCTAB differs from their RAW file's (``PIPELINE_RESET_IDCTAB``).

    runastrodriz compares each FLT/FLC primary IDCTAB with the RAW file's before processing. Here
    nothing is changed yet: the default stage resets its copies, so the inputs stay as delivered
    until the final stage hands results back.

    Parameters
    ----------
    input_dir : Path
    names : list of str
        The calibrated files to process.
    facts : dict
        ``file -> facts`` as :func:`_exposure_facts` read them (``references``).

    Returns
    -------
    resets : dict
        ``{file: {'from': IDCTAB, 'to': the RAW file's IDCTAB, 'raw': RAW file}}``.
    notes : list of str
        Exposures that have no RAW file or whose RAW file names no IDCTAB: kept as they are.

    Raises
    ------
    InputError
        A RAW file that is not a readable FITS file.
    """
    resets, notes = {}, []
    for name in names:
        raw = input_dir / input_name(split_input_name(name)[1], "raw")
        if not raw.exists():
            notes.append(f"PIPELINE_RESET_IDCTAB: no RAW file for {name}: its IDCTAB is kept")
            continue
        check_fits(raw)
        wanted = str(primary_header(raw).get("IDCTAB", "")).strip()
        if not wanted:
            notes.append(f"PIPELINE_RESET_IDCTAB: {raw.name} names no IDCTAB: that of {name} is kept")
            continue
        current = facts[name]["references"].get("IDCTAB")
        if current != wanted:
            resets[name] = {"from": current, "to": wanted, "raw": raw.name}
    return resets, notes


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
    input_path = Path(ctx.config.input)
    input_dir = input_path.parent
    kind, root = input_kind(input_path)
    require_input(input_path)
    check_writable(input_dir)
    notes = []
    asn = None
    if kind == "asn":
        members, product = read_association(input_path)
        root, asn = product, input_path.name
    else:
        members = [root]
    converted, said = {}, []
    if wfpc2.is_wfpc2(input_path, kind):
        if len(members) > 1:
            # runastrodriz 3.11 converts one _c0m file per run, and verifies no WFPC2 product: drizzlepac's
            # WFPC2 parameters reject no cosmic rays, so the focus of several exposures cannot be compared.
            raise InputError(f"{input_path}: lists {len(members)} WFPC2 exposures; WFPC2 is processed one "
                             "exposure at a time, as runastrodriz does: give each one's _c0m file", str(input_path))
        conversion = wfpc2.convert_exposures(input_dir, members, ctx.run.environment)
        converted, said = conversion["converted"], conversion["notes"]
        members = [m for m in members if m not in conversion["refused"]]

    found = {FLT: [], FLC: []}
    raw, facts = [], {}
    # An _flc input is processed alone, even with its FLT beside it (runastrodriz 3.11 builds its FLC
    # name from the input's and finds the input itself).
    calibrated = (FLC,) if kind == FLC else (FLT, FLC)
    # Every absent member is named at once: a delivery short of many files is fixed in one go.
    absent = sorted(m for m in members if not any((input_dir / input_name(m, k)).exists() for k in calibrated))
    if len(absent) == 1:
        listed = f" listed in {input_path.name}" if asn else ""
        missing = input_dir / input_name(absent[0], calibrated[0])
        raise InputError(f"{missing}: exposure {absent[0]}{listed} is missing (no _flt or _flc file)", str(missing))
    if absent:
        raise InputError(f"{input_path}: {len(absent)} of {len(members)} members missing (no _flt or _flc file): "
                         f"{', '.join(input_name(m, calibrated[0]) for m in absent)}", str(input_path))
    for m in members:
        paths = {k: input_dir / input_name(m, k) for k in calibrated}
        for k, p in paths.items():
            if p.exists():
                facts[p.name] = _exposure_facts(p)
                found[k].append(p.name)
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
    # Exposures with no exposure time or no good pixel stay in the lists, as runastrodriz keeps them: they
    # get the WCS updates, choose no MDRIZTAB row (Product.mdriztab_inputs), and AstroDrizzle drops
    # some itself (Exposure.dropped). When every one is empty, none is aligned to GAIA (a guard says so).
    empty = {}
    for name in found[FLT] + found[FLC]:
        if facts[name]["empty"] or facts[name]["dropped"]:
            empty.setdefault(split_input_name(name)[1], (facts[name]["empty"], facts[name]["dropped"]))
    used = found[FLT] + found[FLC]

    kinds = {(v["instrument"], v["detector"]) for v in facts.values()}
    if len(kinds) > 1:
        raise InputError(f"{input_path}: exposures mix instruments/detectors {sorted(kinds)}", str(input_path))
    instrument, detector = kinds.pop()
    raw_kind = DETECTORS[(instrument, detector)].raw_kind
    raw = [input_name(m, raw_kind) for m in members if (input_dir / input_name(m, raw_kind)).exists()]

    # DRIZCORR comes from the RAW file of the first member; without RAW, from the calibrated file.
    first_raw = input_dir / input_name(members[0], raw_kind)
    if first_raw.exists():
        check_fits(first_raw)
        drizcorr = str(primary_header(first_raw).get("DRIZCORR", "")).strip().upper() or None
        drizcorr_file = first_raw.name
    elif kind == "raw":
        raise InputError(f"{first_raw}: file not found", str(first_raw))
    else:
        drizcorr_file = used[0]
        drizcorr = facts[used[0]]["drizcorr"]
        notes.append(f"no {raw_kind.upper()} file for {members[0]}: DRIZCORR read from {drizcorr_file}")
    exposures = ExposureSet(*(tuple(Exposure.from_name(n, instrument=instrument, detector=detector,
                                                       exptime=facts[n]["exptime"], empty=facts[n]["empty"],
                                                       dropped=facts[n]["dropped"])
                                    for n in found[k])
                              for k in (FLT, FLC)))
    first = facts[exposures.verified[0].name]
    header_references = first["references"]
    resets = {}
    if ctx.config.reset_idctab:
        resets, reset_notes = idctab_resets(input_dir, exposures.names, facts)
        notes += reset_notes
        if exposures.verified[0].name in resets:
            # The stages work with the RAW file's IDCTAB: resolve that one, and expect its WCSNAME.
            header_references = {**header_references, "IDCTAB": resets[exposures.verified[0].name]["to"]}
    references, env_update = _resolve_references(header_references, DETECTORS[(instrument, detector)]
                                                 .reference_variable, input_dir, ctx.run.environment)
    inputs = Inputs(
        root=root, kind=kind, asn=asn, members=tuple(members),
        exposures=exposures, raw=tuple(raw),
        drizcorr=drizcorr, drizcorr_file=drizcorr_file, references=header_references,
        reference_paths=references,
        input_hashes={n: sha256(input_dir / n) for n in sorted(set(used + raw + ([asn] if asn else []) + [
            f for c in converted.values() for f in (c["c0m"], c["c1m"]) if f]))},
        notes=tuple(notes), idctab_reset=resets)
    said += [f"{m}: {_empty_note(why, drop)}" for m, (why, drop) in empty.items()]
    payload = {"inputs": inputs.to_payload(), "environment_update": env_update}
    if converted:
        payload["wfpc2_converted"] = converted
        payload["log"] = conversion["log"]
    return StepResult(payload, facts=[(NOTE, {"message": m}) for m in said])


def _empty_note(empty: str | None, dropped: str | None) -> str:
    """What happens to an exposure without data (see `Exposure.empty` and `Exposure.dropped`)."""
    if empty and dropped == empty:
        return f"{empty}: processed, chooses no drizzle parameters, not drizzled"
    if empty and dropped:
        return f"{empty}: processed, chooses no drizzle parameters; {dropped}: not drizzled"
    return f"{empty}: processed, chooses no drizzle parameters" if empty else f"{dropped}: processed, not drizzled"


def _guiding_message(text: str, path: Path) -> str | None:
    """drizzlepac's own line on the guiding of ``path`` (``... GUIDING detected as: BAD.``), without its directory."""
    lines = [ln.split(": ", 1)[-1] for ln in text.splitlines() if "GUIDING" in ln]
    return lines[-1].replace(str(path), path.name) if lines else None


def verify_guiding(ctx: StepContext) -> StepResult:
    """``-v``: drizzlepac's ``analyze.verify_guiding`` on each exposure, as runastrodriz 3.11 applies it.

    The FLC file is examined when there is one (CTE tails are no trailed stars), else the FLT file;
    only the inputs are read. An exposure with bad guiding is removed from processing, its FLT and
    FLC alike, unless ``-f``; any bad guiding turns all alignment off, unless ``-a``: then no WCS of
    these exposures can be trusted.

    Returns
    -------
    StepResult
        ``inputs`` (the exposures left, replacing those of ``resolve_inputs``), ``guiding`` per
        file examined, ``removed``; a ``verification`` fact per file examined and a ``note`` per
        consequence. When no exposure is left, the guiding rule's decision fails the run (exit 65).
    """
    from drizzlepac.haputils import analyze

    inputs = ctx.inputs
    force, force_alignment = ctx.config.force, ctx.config.force_alignment
    facts, guiding, bad, log = [], {}, [], []
    ctx.progress(f"verifying the guiding of {len(inputs.exposures.verified)} exposures")
    for exposure in inputs.exposures.verified:
        path = ctx.input_dir / exposure.name
        # The name relative to its directory: drizzlepac's file-name parsing would misread a directory
        # such as 'data (copy)' in an absolute one.
        with captured_output() as out, working_directory(ctx.input_dir):
            try:
                is_bad = bool(analyze.verify_guiding(exposure.name))
            except Exception as exc:
                raise ProcessingError(f"{path}: verify_guiding failed: {exc}", str(path)) from exc
        log.append(out.getvalue())
        guiding[exposure.name] = "bad" if is_bad else "good"
        action = None
        if is_bad:
            bad.append(exposure)
            action = "kept: -f" if force else "removed from processing with its FLT and FLC files"
        facts.append((VERIFICATION, {"check": "guiding", "file": exposure.name, "guiding": guiding[exposure.name],
                                     "verdict": "fail" if is_bad else "pass",
                                     "reason": _guiding_message(out.getvalue(), path), "action": action}))
    if not bad:
        return StepResult({"inputs": inputs.to_payload(), "guiding": guiding, "removed": [], "log": "".join(log)},
                          facts=facts)
    removed = []
    changes = {}
    if not force:
        roots = {e.rootname for e in bad}
        removed = [n for n in inputs.exposures.names if split_input_name(n)[1] in roots]
        kept = {k: tuple(e for e in getattr(inputs.exposures, k) if e.rootname not in roots) for k in (FLT, FLC)}
        # Inputs without an exposure have no instrument: with none left they stay as resolved, and the
        # guiding rule, finding every one removed, fails the run.
        if any(kept.values()):
            changes.update(exposures=ExposureSet(kept[FLT], kept[FLC]),
                           members=tuple(m for m in inputs.members if m not in roots))
    # The guiding rule: the runner records its guiding_removal and guiding_alignment decisions.
    alignment = ctx.rules.bad_guiding([e.name for e in bad], removed, force, force_alignment)[-1]
    if not alignment["alignment"]:
        reason = alignment["reason"]
        changes["no_alignment"] = f"{reason}; {inputs.no_alignment}" if inputs.no_alignment else reason
    updated = dataclasses.replace(inputs, **changes)
    return StepResult({"inputs": updated.to_payload(), "guiding": guiding, "removed": removed, "log": "".join(log)},
                      facts=facts)
