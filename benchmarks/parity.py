"""Differential parity of astrodriz-sm with drizzlepac's runastrodriz, case by case.

Each case simulates one association (`astrodriz_sm.sim.SimConfig`), serves its astrometry on
loopback with the local service, and runs both pipelines, one after the other, as child processes
on fresh copies of the association with the same environment (the functions of
``compare_runastrodriz.py``), each through its console command so that the exit codes compare:
``runastrodriz <input>`` in the copy's directory, ``astrodriz-sm -q start <input>``.

Per case it compares what the two handed back:

* the primary WCSNAME of SCI,1 of every FLT/FLC and of every DRZ/DRC, and the names of the
  exposures' alternate WCSs (reported, not part of parity);
* the stages run and, for a priori and a posteriori, whether each was kept: astrodriz-sm from its
  event store, runastrodriz from its standard output (`runastrodriz_stages`);
* per product, the largest difference of the SCI arrays over the pixels finite in both, relative to
  the largest |SCI| of runastrodriz's product there, and the pixels finite in one only;
* per product, the WCS keywords of the SCI header that differ (numbers beyond 1e-10 relative);
* the alignment error against the truth (`compare_runastrodriz.product_accuracy`: RMS of the truth
  stars' offsets in the DRC, else the DRZ, in mas) and the wall time of each run;
* whole files (`whole_file_differences`): the exit codes, the names of the files each run handed
  back (new or changed in its directory, `PRIVATE_FILES` left out), and every FITS file's HDUs,
  header keywords, HISTORY/COMMENT counts and data bit for bit, embedded headerlets included; the
  `TIME_STAMPS` keywords are exempt, `ALLOWED_DIFFERENCES` lists the accepted differences.

`parity_problems` turns a case's result into the list of its parity failures; the test suite
(``tests/test_parity.py``) asserts on the same function. ``--self`` runs astrodriz-sm twice per case
and compares the two runs' files the same way (`run_self`, `self_problems`).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import fnmatch
import hashlib
import io
import itertools
import json
import re
import shlex
import shutil
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import compare_runastrodriz as bench
import numpy as np

PIPELINES = bench.PIPELINES
STAGES = ("default", "apriori", "aposteriori", "final")
ALIGNMENT_STAGES = ("apriori", "aposteriori")
# What the local service would have answered for a priori solutions (sim/service.py writes them).
APRIORI_SERVICE_FILES = ("astrometrydb.ecsv", "gsc_offsets.ecsv")
WCS_KEYWORDS = ("CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2",
                "NAXIS1", "NAXIS2", "WCSNAME", "CTYPE1", "CTYPE2")
WCS_RELATIVE_TOLERANCE = 1e-10
# Defaults of `parity_problems`.
SCI_RELATIVE_TOLERANCE = 1e-4
ERROR_MARGIN_MAS = 0.5

# runastrodriz 3.11 logs at INFO to its standard output (process() sets the package logger to DEBUG
# only with debug=True), so its own debug lines ("Saving products with new alignment.", "Resetting
# WCS to pipeline-default solutions...", "A priori alignment FAILED!") never appear there. A stage's
# verdict is read from the INFO lines verify_alignment() and the code it calls print instead:
VERIFICATION_DONE = "Verification of alignment completed"   # verify_alignment, end of its try block
OVERLAP_VERIFIED = "Alignment verified based on overlap..."  # amutils.evaluate_overlap_diffs
OVERLAP_NOT_VERIFIED = "Alignment NOT verified based on overlap..."
ALIGN_GAVE_UP = ("Could not align ", "EXCEPTION encountered in align...")  # verify_alignment returns None
# verify_alignment's borderline rule: the focus check, logged at DEBUG only, joins the verdict.
BORDERLINE_FRACTION, BORDERLINE_MATCHES = 0.1, 10


# --------------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Case:
    """One simulated association and how it is handed to the pipelines.

    Attributes
    ----------
    name : str
    description : str
    config : dict
        `astrodriz_sm.sim.SimConfig` fields (the rest at their defaults).
    singleton : bool
        Hand the pipelines the first member's file instead of the ASN table: its ``_flt.fits``
        (else ``_flc.fits``, else ``_c0m.fits``), or the kind ``singleton_kind`` names.
    no_apriori : bool
        Serve no a priori solution: the service data lose `APRIORI_SERVICE_FILES` before loading.
    singleton_kind : str or None
        ``'flt'``, ``'flc'`` or ``'c0m'``: the file a singleton is handed as.
    expect_product : bool
        False when no drizzled product is due (DRIZCORR=OMIT): a run is ok when it exits 0.
    """

    name: str
    description: str
    config: dict = field(default_factory=dict)
    singleton: bool = False
    no_apriori: bool = False
    singleton_kind: str | None = None
    expect_product: bool = True


_CASES = (
    Case("clean", "ACS/WFC, 3 exposures, FLT+FLC, no pointing error"),
    Case("pointing", '0.6" header pointing error', {"pointing_error": 0.6}),
    Case("guiding", '2 px guiding failure of one exposure plus 0.6" pointing error',
         {"pointing_error": 0.6, "guiding_failure": 2.0}),
    Case("sparse", 'GAIAeDR3 empty in the field (limit 5 mag): the fit falls back to GSC242; 0.6"',
         {"pointing_error": 0.6, "catalog_limits": {"GAIAeDR3": 5.0}}),
    Case("zero-exptime", 'the last member with EXPTIME=0 (FLT and FLC); 0.6"',
         {"pointing_error": 0.6, "zero_exptime_members": 1}),
    Case("singleton", 'one exposure, its _flt.fits as input; 0.6"', {"n_exposures": 1, "pointing_error": 0.6},
         singleton=True),
    Case("flt-only", 'FLT files only; 0.6"', {"pointing_error": 0.6, "products": "flt"}),
    Case("flc-only", 'FLC files only; 0.6"', {"pointing_error": 0.6, "products": "flc"}),
    Case("large-offset", '5" pointing error (drizzlepac\'s 2dhist fit)', {"pointing_error": 5.0}),
    Case("post-2017-no-apriori", 'DATE-OBS 2019-05-01, no a priori solution in the service; 0.6"',
         {"pointing_error": 0.6, "date_obs": "2019-05-01"}, no_apriori=True),
    Case("pre-2017-no-apriori", 'DATE-OBS 2017-06-01, no a priori solution in the service; 0.6"',
         {"pointing_error": 0.6, "date_obs": "2017-06-01"}, no_apriori=True),
    # The other detectors, each with the files it really has (headers from real files in refdata).
    Case("acs-hrc", 'ACS/HRC, FLT+FLC; 0.6"', {"instrument": "acs-hrc", "pointing_error": 0.6}),
    Case("acs-sbc", 'ACS/SBC (MAMA: FLT only, no cosmic rays, no single-drizzle images); 0.6"',
         {"instrument": "acs-sbc", "pointing_error": 0.6}),
    Case("wfc3-uvis", 'WFC3/UVIS, FLT+FLC; 0.6"', {"instrument": "wfc3-uvis", "pointing_error": 0.6}),
    Case("wfc3-ir", 'WFC3/IR (FLT only, e-/s, SAMP/TIME); 0.6"', {"instrument": "wfc3-ir", "pointing_error": 0.6}),
    # runastrodriz takes WFPC2 one _c0m file at a time.
    Case("wfpc2", 'WFPC2, one exposure, its _c0m.fits as input (4 chips, counts); 0.6"',
         {"instrument": "wfpc2", "pointing_error": 0.6, "n_exposures": 1}, singleton=True),
    # Association layouts, inputs and headers that select other paths of runastrodriz.
    Case("crsplit-dither", 'CR-SPLIT + dither: 2 positions x 2 exposures, rows EXP-CR1 x2, EXP-CR2 x2, '
         'PROD-CR1, PROD-CR2, PROD-DTH; 0.6"',
         {"pointing_error": 0.6, "n_exposures": 4, "association": "crsplit-dither"}),
    Case("prod-rpt", 'repeated observation: 3 exposures at one pointing, EXP-RPT rows, one PROD-RPT row; 0.6"',
         {"pointing_error": 0.6, "association": "repeat"}),
    Case("flc-singleton", 'one exposure, its _flc.fits as input with its _flt.fits beside it; 0.6"',
         {"n_exposures": 1, "pointing_error": 0.6}, singleton=True, singleton_kind="flc"),
    Case("drizcorr-omit", 'DRIZCORR=OMIT in every exposure: no drizzled product is due; 0.6"',
         {"pointing_error": 0.6, "drizcorr": "OMIT"}, expect_product=False),
    Case("ngoodpix-zero", 'the last member (EXPTIME>0) flagged in DQ everywhere: NGOODPIX=0 on its chip; 0.6"',
         {"pointing_error": 0.6, "ngoodpix_zero_members": 1}),
    # 3.11 verifies an a priori stage by overlap difference only (limit 1.0), whose similarity term
    # over 3 misaligned exposures stays near 0.6: 8 exposures dilute each one's stars enough.
    Case("apriori-discarded", '8 exposures, a priori solutions off by 0, 1, ..., 7" east: the a priori '
         'stage misaligns the exposures and is discarded; 0.6"',
         {"pointing_error": 0.6, "n_exposures": 8, "apriori_scatter": 1.0}),
    Case("skymatch", "MDRIZTAB skymethod 'match', 4 overlapping exposures; 0.6\"",
         {"pointing_error": 0.6, "n_exposures": 4, "skymethod": "match"}),
)
CASES = {c.name: c for c in _CASES}


# --------------------------------------------------------------------------------------------
# what each pipeline did
# --------------------------------------------------------------------------------------------
def _sections(lines: list[tuple[float, str]]) -> dict[str, list[str]]:
    """runastrodriz's output cut at its stage headings: ``stage -> its lines`` for every stage run."""
    sections, current = {}, None
    for _, text in lines:
        for stage, heading in bench.RUNASTRODRIZ_PHASES:
            if heading in text and stage not in sections:
                current = stage
                sections[stage] = []
        if current is not None:
            sections[current].append(text)
    return sections


def fit_table_rows(lines: list[str]) -> list[dict]:
    """Rows of the last fit table ``perform_align`` printed (``filtered_table.pprint(max_width=-1)``).

    The columns are cut at the dashes line under the header; values are strings.
    """
    rows = []
    for i, text in enumerate(lines[:-1]):
        under = lines[i + 1].strip()
        if "imageName" in text and "matchSources" in text and under and set(under) <= {"-", " "}:
            spans = [m.span() for m in re.finditer(r"-+", lines[i + 1])]
            names = [text[a:b].strip() for a, b in spans]
            rows = []
            for row in lines[i + 2:]:
                if len(row) < spans[-1][0] or row.startswith("["):
                    break
                rows.append({n: row[a:b].strip() for n, (a, b) in zip(names, spans)})
    return rows


def _alignment_verdict(stage: str, lines: list[str]) -> tuple[str, str]:
    """(``'kept'``/``'discarded'``/``'undetermined'``, the evidence) of an alignment stage's lines."""
    if stage == "aposteriori":
        gave_up = next((t for t in lines if any(m in t for m in ALIGN_GAVE_UP)), None)
        if gave_up:
            return "discarded", gave_up.strip()
    if not any(VERIFICATION_DONE in t for t in lines):
        return "discarded", f"no '{VERIFICATION_DONE}' (verification raised or had no product)"
    overlap = [t for t in lines if OVERLAP_VERIFIED in t or OVERLAP_NOT_VERIFIED in t]
    if not overlap:
        # run_driz made no focus dictionaries (one exposure): verify_alignment verifies it.
        return "kept", "no overlap check (a singleton is verified)"
    if OVERLAP_NOT_VERIFIED in overlap[-1]:
        return "discarded", OVERLAP_NOT_VERIFIED
    if stage == "aposteriori":
        rows = fit_table_rows(lines)
        try:
            matches, catalog = int(rows[0]["matchSources"]), int(rows[0]["catalogSources"])
        except (IndexError, KeyError, ValueError):
            return "undetermined", f"{OVERLAP_VERIFIED} but no fit table to rule out the focus check"
        fraction = matches / catalog if catalog else 0.0
        if fraction < BORDERLINE_FRACTION or -1 < matches < BORDERLINE_MATCHES:
            return "undetermined", (f"{OVERLAP_VERIFIED}, {matches} of {catalog} sources matched: the focus "
                                    "check decides, logged at debug level only")
        return "kept", (f"{OVERLAP_VERIFIED} ({rows[0].get('fit_method')} fit to {rows[0].get('catalog')}, "
                        f"{matches} of {catalog} catalog sources matched)")
    return "kept", OVERLAP_VERIFIED


def runastrodriz_stages(lines: list[tuple[float, str]]) -> dict:
    """The stages runastrodriz 3.11 ran and its verdict on each alignment stage, from its output.

    A stage ran when its heading (`compare_runastrodriz.RUNASTRODRIZ_PHASES`) is printed. In an
    alignment stage's section (up to the next heading) verify_alignment keeps the stage's WCS
    exactly when it returns with ``alignment_verified``; at INFO level that is:

    * a posteriori: "Could not align" or "EXCEPTION encountered in align..." - discarded;
    * no "Verification of alignment completed" (an exception, or no product) - discarded;
    * "Alignment NOT verified based on overlap..." - discarded;
    * "Alignment verified based on overlap..." - kept, unless the fit table (a posteriori) shows
      fewer than 10 matches or a matched fraction below 0.1, when the debug-only focus check
      decides: undetermined;
    * no overlap verdict (one exposure: no focus dictionaries) - kept.

    Returns
    -------
    dict
        ``{"stages": {stage: 'run'|'kept'|'discarded'|'undetermined'}, "evidence": {stage: str}}``.
    """
    sections = _sections(lines)
    stages, evidence = {}, {}
    for stage in STAGES:
        if stage not in sections:
            continue
        if stage in ALIGNMENT_STAGES:
            stages[stage], evidence[stage] = _alignment_verdict(stage, sections[stage])
        else:
            stages[stage] = "run"
    return {"stages": stages, "evidence": evidence}


def store_stages(store_path: Path) -> dict:
    """The stages astrodriz-sm entered and, per alignment stage, its ``conclude`` verdict.

    Returns
    -------
    dict
        As `runastrodriz_stages` (``'unfinished'`` for a stage without a completed ``conclude``),
        plus ``"status"``, the run's end.
    """
    from astrodriz_sm.statemachine import fold
    from astrodriz_sm.store.eventstore import EventStore

    if not store_path.exists():
        return {"stages": {}, "evidence": {}, "status": f"{store_path.name} does not exist"}
    store = EventStore(store_path, read_only=True)
    try:
        latest = store.latest_run()
        run = fold(store.events(latest["run_id"])) if latest else None
    finally:
        store.close()
    if run is None:
        return {"stages": {}, "evidence": {}, "status": "no run in the store"}
    stages, evidence = {}, {}
    for stage in (t["to"] for t in run.transitions):
        if stage not in STAGES:
            continue
        if stage == "final" and run.state == "skipped":
            continue  # DRIZCORR=OMIT: the final stage only writes headers; 3.11 prints no final heading
        if stage in ALIGNMENT_STAGES:
            conclusion = run.output(stage, "conclude")
            stages[stage] = ("kept" if conclusion["kept"] else "discarded") if conclusion else "unfinished"
            evidence[stage] = conclusion.get("reason") or ""
        else:
            stages[stage] = "run"
    return {"stages": stages, "evidence": evidence, "status": run.state}


def stages_text(stages: dict) -> str:
    """``default, apriori kept, aposteriori discarded, final``: the stages run, with the verdicts."""
    return ", ".join(s if v == "run" else f"{s} {v}" for s, v in stages.items()) or "-"


def sci_wcsnames(path: Path) -> tuple[str | None, str]:
    """Primary WCSNAME of a file's SCI,1 header (None when absent) and its alternate WCSs' names.

    The alternates (``A=IDC_x, B=IDC_x-GSC240, O=OPUS``) keep what earlier stages applied, e.g. the
    a priori WCSNAME that a later fit replaced as primary.
    """
    from astropy.io import fits

    header = fits.getheader(path, ("SCI", 1))
    alternates = sorted((k[-1], str(header[k])) for k in header if re.fullmatch(r"WCSNAME[A-Z]", k))
    return header.get("WCSNAME"), ", ".join(f"{key}={name}" for key, name in alternates)


# --------------------------------------------------------------------------------------------
# comparing the products
# --------------------------------------------------------------------------------------------
def _differs(a, b) -> bool:
    """True when two header values differ: numbers beyond `WCS_RELATIVE_TOLERANCE`, others at all."""
    numbers = (int, float, np.integer, np.floating)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return abs(float(a) - float(b)) > WCS_RELATIVE_TOLERANCE * max(abs(float(a)), abs(float(b)))
    return (a.strip() if isinstance(a, str) else a) != (b.strip() if isinstance(b, str) else b)


def product_differences(ours: Path, theirs: Path) -> dict:
    """SCI array and WCS keyword differences of astrodriz-sm's product against runastrodriz's.

    Returns
    -------
    dict
        ``max_rel_diff``: max |ours - theirs| over the pixels finite in both divided by the max
        |theirs| there (None when the shapes differ or no pixel is finite in both);
        ``finite_in_one_only``: pixels finite in one array and not in the other; ``shapes``;
        ``wcs_differences``: ``{keyword: {"runastrodriz": value, "astrodriz-sm": value}}``.
    """
    from astropy.io import fits

    with fits.open(ours) as a_hdul, fits.open(theirs) as b_hdul:
        a_hdu, b_hdu = a_hdul["SCI", 1], b_hdul["SCI", 1]
        wcs = {}
        for key in WCS_KEYWORDS:
            a, b = a_hdu.header.get(key), b_hdu.header.get(key)
            if _differs(a, b):
                wcs[key] = {"runastrodriz": b, "astrodriz-sm": a}
        a_sci = np.asarray(a_hdu.data, dtype=np.float64)
        b_sci = np.asarray(b_hdu.data, dtype=np.float64)
    out = {"shapes": {"runastrodriz": list(b_sci.shape), "astrodriz-sm": list(a_sci.shape)},
           "max_rel_diff": None, "finite_in_one_only": None, "wcs_differences": wcs}
    if a_sci.shape == b_sci.shape:
        fa, fb = np.isfinite(a_sci), np.isfinite(b_sci)
        both = fa & fb
        out["finite_in_one_only"] = int(np.count_nonzero(fa ^ fb))
        if both.any():
            scale = float(np.max(np.abs(b_sci[both])))
            diff = float(np.max(np.abs(a_sci[both] - b_sci[both])))
            out["max_rel_diff"] = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
    return out


# --------------------------------------------------------------------------------------------
# whole files
# --------------------------------------------------------------------------------------------
#: Header keywords whose value is the wall-clock time of writing: exempt from the whole-file
#: comparison in every file, HDU and embedded headerlet. The evidence for each is in docs/parity.md
#: (two astrodriz-sm runs of the same input, ``--self``, differ in these and nothing else).
TIME_STAMPS = {
    "DATE": "the date (and time) the HDU was written: stwcs's headerlets, AstroDrizzle's products",
    "IRAF-TLM": "the local time of the last modification, '%H:%M:%S (%d/%m/%Y)' (drizzlepac.util.getLTime, "
                "stsci.tools.asnutil)",
}
#: Files left in a run directory that are not handed back: (glob, why not).
PRIVATE_FILES = (
    ("astrodriz_sm.db", "astrodriz-sm's event store: the record of the run, not a product"),
    ("astrodriz_sm.db-*", "the event store's SQLite write-ahead log and shared memory"),
    ("_parity_*.stdout", "this harness's copy of the pipeline's standard output"),
    ("_parity_*.stderr", "this harness's copy of the pipeline's standard error"),
    # The logging file handlers of the libraries both pipelines call, left in the working directory.
    ("stwcs.log", "stwcs.updatewcs's log file"),
    ("astrometry.log", "stwcs.updatewcs.astrometry_utils's log file (astrometry database queries)"),
    ("headerlet.log", "stwcs.wcsutil.headerlet's log file"),
    ("photeq.log", "drizzlepac.photeq's log file (WFPC2: runastrodriz runs photeq in its working directory)"),
    ("*_pydriz_copy.log", "runastrodriz's copy of AstroDrizzle's log before it appends it to the trailer "
                          "(RA 1032-1036)"),
)
#: ``FileDifference.item`` of the differences that are not a header keyword.
EXIT_CODE, FILE, HDU, DATA = "exit code", "file", "HDU", "data"
#: Accepted whole-file differences: (file glob, HDU glob such as ``"SCI,1"`` or ``"*"``, header
#: keyword or ``"data"``, reason). Each entry needs its evidence in docs/parity.md.
ALLOWED_DIFFERENCES: tuple[tuple[str, str, str, str], ...] = (
    ("*_dr[zcw].fits", "SCI,1", "S_REGION",
     "3.11 computes a product's S_REGION only when run_driz returns focus dictionaries, which the final "
     "drizzle never does (RA 773-776, 1029), so its product keeps the first input's S_REGION (fitsblender's "
     "copy): one exposure's footprint. astrodriz-sm writes the product's own footprint."),
    ("*_fit_matches.ecsv", "", FILE,
     "astrodriz-sm's addition: the chosen a posteriori fit's matched source pairs, handed back with the "
     "products that carry the fit (the run report and explain read them)."),
)
#: What a file or HDU present on one side only reads as on the other.
ABSENT = "(absent)"
COMMENTARY = ("HISTORY", "COMMENT")
# Extensions that hold a whole FITS file (stwcs's headerlets, astropy's FitsHDU).
EMBEDDED_FITS_XTENSIONS = ("HDRLET", "FITS")
_BITPIX_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


@dataclass(frozen=True)
class FileDifference:
    """One whole-file difference between two runs' hand-back.

    Attributes
    ----------
    file : str
        Path relative to the run directory (``""`` for the run itself: the exit code).
    hdu : str
        ``EXTNAME,EXTVER``; inside an embedded headerlet ``HDRLET,2 > SIPWCS,1``; ``""`` for the file.
    item : str
        A header keyword (``KEY[2]`` for its second card when repeated), ``"HISTORY cards"`` /
        ``"COMMENT cards"`` (their counts), `DATA`, `HDU` (present on one side only), `FILE`
        or `EXIT_CODE`.
    theirs, ours
        The values (the reference run's first: runastrodriz, or the first of two runs).
    note : str
        For `DATA`: how many values differ and by how much.
    """

    file: str
    hdu: str
    item: str
    theirs: object
    ours: object
    note: str = ""

    def text(self) -> str:
        """``item: theirs / ours`` (and the note)."""
        return f"{self.item}: {self.theirs!r} / {self.ours!r}" + (f" ({self.note})" if self.note else "")


def private_reason(name: str) -> str | None:
    """Why ``name`` (relative to a run directory) is not handed back, or None when it is."""
    return next((why for pattern, why in PRIVATE_FILES if fnmatch.fnmatchcase(Path(name).name, pattern)), None)


def file_digests(directory: Path) -> dict[str, str]:
    """SHA-256 of every file under ``directory``, by its path relative to it."""
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def handed_back(directory: Path, before: dict[str, str]) -> list[str]:
    """Files under ``directory`` that are new or changed since ``before`` (`file_digests`), private ones
    (`PRIVATE_FILES`) left out."""
    return sorted(name for name, digest in file_digests(directory).items()
                  if before.get(name) != digest and private_reason(name) is None)


def _values_differ(a, b) -> bool:
    """Header values differ: numbers beyond `WCS_RELATIVE_TOLERANCE` relative, anything else at all."""
    numbers = (int, float, np.integer, np.floating)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool | np.bool_) \
            and not isinstance(b, bool | np.bool_):
        return abs(float(a) - float(b)) > WCS_RELATIVE_TOLERANCE * max(abs(float(a)), abs(float(b)))
    return type(a) is not type(b) or a != b


def header_differences(theirs, ours) -> list[tuple[str, object, object]]:
    """``(item, theirs, ours)`` of two headers: every keyword's value(s), and the HISTORY/COMMENT counts.

    Blank-keyword cards are ignored; a keyword repeated on a side is compared card by card
    (``KEY[2]`` is its second card).
    """
    def cards(header):
        values = collections.defaultdict(list)
        for card in header.cards:
            if card.keyword and card.keyword not in COMMENTARY:
                values[card.keyword].append(card.value)
        return values

    a, b = cards(theirs), cards(ours)
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, []), b.get(key, [])
        for i in range(max(len(va), len(vb))):
            x = va[i] if i < len(va) else ABSENT
            y = vb[i] if i < len(vb) else ABSENT
            if (x is ABSENT) != (y is ABSENT) or (x is not ABSENT and _values_differ(x, y)):
                out.append((key if max(len(va), len(vb)) == 1 else f"{key}[{i + 1}]", x, y))
    for key in COMMENTARY:
        na, nb = (len(h[key]) if key in h else 0 for h in (theirs, ours))
        if na != nb:
            out.append((f"{key} cards", na, nb))
    return out


def _hdus(content: bytes) -> dict[str, tuple]:
    """``EXTNAME,EXTVER -> (header, raw data bytes)`` of a FITS file's bytes (a repeated key gets ``#2``)."""
    from astropy.io import fits

    out = {}
    with fits.open(io.BytesIO(content), memmap=False) as hdul:
        for i, hdu in enumerate(hdul):
            info = hdul.fileinfo(i)
            key = f"{hdu.name or 'PRIMARY'},{hdu.ver}"
            n = 2
            while key in out:
                key, n = f"{hdu.name},{hdu.ver}#{n}", n + 1
            out[key] = (hdu.header.copy(), content[info["datLoc"]:info["datLoc"] + info["datSpan"]])
    return out


def _embedded_fits(header, raw: bytes) -> bytes:
    """The FITS file an HDRLET (or FITS) extension holds: its data, gunzipped when COMPRESS."""
    size = int(header.get("NAXIS1", len(raw)))
    data = raw[:size]
    if header.get("COMPRESS"):
        # The stream is followed by FITS padding, which zlib leaves in unused_data.
        data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
    return data


def _image_values(header, raw: bytes):
    """An image HDU's data as an array of its on-disk type (None when it is not a plain image)."""
    dtype = _BITPIX_DTYPES.get(header.get("BITPIX"))
    naxis = int(header.get("NAXIS", 0))
    if dtype is None or header.get("XTENSION", "IMAGE") not in ("IMAGE",) or not naxis:
        return None
    shape = tuple(int(header[f"NAXIS{k}"]) for k in range(naxis, 0, -1))
    return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)


def _data_note(theirs_header, theirs_raw: bytes, ours_header, ours_raw: bytes) -> tuple[object, object, str]:
    """(theirs, ours, note) of two differing data parts: shapes and types, and what differs."""
    a, b = _image_values(theirs_header, theirs_raw), _image_values(ours_header, ours_raw)
    if a is None or b is None or a.shape != b.shape or a.dtype != b.dtype:
        describe = (lambda v, raw: f"{len(raw)} bytes" if v is None else f"{v.dtype.str} {list(v.shape)}")
        note = ""
        if len(theirs_raw) == len(ours_raw):  # a table, say: which bytes
            differ = np.frombuffer(theirs_raw, np.uint8) != np.frombuffer(ours_raw, np.uint8)
            note = f"{int(differ.sum())} of {len(theirs_raw)} bytes differ"
        return describe(a, theirs_raw), describe(b, ours_raw), note
    bits = f"u{a.dtype.itemsize}"
    differ = a.view(bits) != b.view(bits)
    note = f"{int(differ.sum())} of {a.size} values differ"
    af, bf = a[differ].astype(np.float64), b[differ].astype(np.float64)
    finite = np.isfinite(af) & np.isfinite(bf)
    if finite.any():
        note += f", max |difference| {float(np.max(np.abs(af[finite] - bf[finite]))):.6g}"
    if (~finite).any():
        note += f", {int((~finite).sum())} non-finite in one"
    return f"{a.dtype.str} {list(a.shape)}", f"{b.dtype.str} {list(b.shape)}", note


def fits_differences(theirs: bytes, ours: bytes, file: str, within: str = "") -> list[FileDifference]:
    """Every difference of two FITS files' contents, HDU by HDU matched by (EXTNAME, EXTVER).

    Headers: every keyword's value (`header_differences`); data: bit for bit, an embedded
    headerlet (HDRLET) compared as the FITS file it holds, recursively (HDU ``HDRLET,1 > ...``).

    Parameters
    ----------
    theirs, ours : bytes
        The two files' contents.
    file : str
        The file's name, for the differences.
    within : str
        Prefix of the HDU names (the embedding HDU's, for a headerlet).
    """
    a, b = _hdus(theirs), _hdus(ours)
    out = []
    for key in [*a, *(k for k in b if k not in a)]:
        hdu = f"{within}{key}"
        if key not in a or key not in b:
            out.append(FileDifference(file, hdu, HDU, "present" if key in a else ABSENT,
                                      "present" if key in b else ABSENT))
            continue
        (ha, ra), (hb, rb) = a[key], b[key]
        out += [FileDifference(file, hdu, item, x, y) for item, x, y in header_differences(ha, hb)]
        if ra == rb:
            continue
        if ha.get("XTENSION") in EMBEDDED_FITS_XTENSIONS and hb.get("XTENSION") in EMBEDDED_FITS_XTENSIONS:
            out += fits_differences(_embedded_fits(ha, ra), _embedded_fits(hb, rb), file, f"{hdu} > ")
        else:
            out.append(FileDifference(file, hdu, DATA, *_data_note(ha, ra, hb, rb)))
    return out


def is_fits(path: Path) -> bool:
    """A FITS file by its first card (not by its name)."""
    with open(path, "rb") as fh:
        return fh.read(9) == b"SIMPLE  ="


def whole_file_differences(theirs_dir: Path, theirs_files: list[str], ours_dir: Path, ours_files: list[str],
                           exit_codes: tuple[int | None, int | None]) -> list[FileDifference]:
    """Everything two runs handed back, compared: exit codes, file names, and every FITS file's contents.

    A FITS file handed back by one run only is still compared with the other run's copy when that run
    left one (an input it did not change): the differences show what the one run wrote into it.
    Non-FITS files (trailer, manifest, JSON) are compared by name only.
    """
    out = []
    if exit_codes[0] != exit_codes[1]:
        out.append(FileDifference("", "", EXIT_CODE, *exit_codes))
    for name in sorted(set(theirs_files) ^ set(ours_files)):
        out.append(FileDifference(name, "", FILE, "handed back" if name in theirs_files else ABSENT,
                                  "handed back" if name in ours_files else ABSENT))
    for name in sorted(set(theirs_files) | set(ours_files)):
        a, b = Path(theirs_dir) / name, Path(ours_dir) / name
        if a.is_file() and b.is_file() and is_fits(a) and is_fits(b):
            out += fits_differences(a.read_bytes(), b.read_bytes(), name)
    return out


def time_stamp(diff: FileDifference) -> bool:
    """A difference in one of the `TIME_STAMPS` keywords."""
    return diff.item.split("[")[0] in TIME_STAMPS


def allowed_reason(diff: FileDifference) -> str | None:
    """The reason `ALLOWED_DIFFERENCES` gives for a difference, or None."""
    item = DATA if diff.item == DATA else diff.item.split("[")[0]
    return next((why for file, hdu, what, why in ALLOWED_DIFFERENCES
                 if fnmatch.fnmatchcase(diff.file, file) and fnmatch.fnmatchcase(diff.hdu, hdu) and what == item),
                None)


def remaining_differences(diffs: list[FileDifference]) -> list[FileDifference]:
    """The differences that are neither time stamps nor allowed."""
    return [d for d in diffs if not time_stamp(d) and allowed_reason(d) is None]


def differences_text(diffs: list[FileDifference], labels: tuple[str, str] = ("runastrodriz", "astrodriz-sm")) -> str:
    """Differences grouped by file and HDU: ``item: theirs / ours``, one per line."""
    lines = []
    for file, in_file in itertools.groupby(sorted(diffs, key=lambda d: d.file), key=lambda d: d.file):
        in_file = list(in_file)
        lines.append(f"- {file or '(run)'} ({len(in_file)})")
        for hdu, in_hdu in itertools.groupby(in_file, key=lambda d: d.hdu):
            in_hdu = list(in_hdu)
            indent = "    "
            if hdu:
                lines.append(f"  - {hdu} ({len(in_hdu)})")
                indent = "      "
            lines += [f"{indent}{d.text()}" for d in in_hdu]
    header = f"({labels[0]} / {labels[1]})"
    return header + "\n" + "\n".join(lines) if lines else "none"


def stamp_summary(diffs: list[FileDifference]) -> str:
    """How many exempt time stamps differed, per keyword, and in how many files."""
    stamps = [d for d in diffs if time_stamp(d)]
    counts = collections.Counter(d.item.split("[")[0] for d in stamps)
    return ", ".join(f"{key} x{n} in {len({d.file for d in stamps if d.item.split('[')[0] == key})} files"
                     for key, n in sorted(counts.items())) or "none"


# --------------------------------------------------------------------------------------------
# one case
# --------------------------------------------------------------------------------------------
@dataclass
class PipelineRun:
    """What one pipeline handed back for a case."""

    pipeline: str
    directory: str
    exit_code: int | None
    status: str
    wall_s: float
    exposures: dict = field(default_factory=dict)  # FLT/FLC name -> WCSNAME of SCI,1
    alternates: dict = field(default_factory=dict)  # FLT/FLC name -> its alternate WCSs' names
    products: dict = field(default_factory=dict)   # DRZ/DRC name -> WCSNAME of SCI,1
    stages: dict = field(default_factory=dict)
    stage_evidence: dict = field(default_factory=dict)
    error_rms_mas: float | None = None
    accuracy: dict = field(default_factory=dict)
    handed_back: list = field(default_factory=list)  # `handed_back`: new or changed files of the run


@dataclass
class CaseResult:
    """Both pipelines' runs of a case and their comparison."""

    case: str
    description: str
    input: str
    no_apriori: bool
    config: dict
    simulation_s: float
    runs: dict = field(default_factory=dict)      # pipeline -> PipelineRun
    products: dict = field(default_factory=dict)  # product name -> `product_differences`
    whole_file: list = field(default_factory=list)  # `whole_file_differences`, time stamps included


@dataclass
class SelfResult:
    """Two astrodriz-sm runs of the same case and their whole-file comparison (reproducibility)."""

    case: str
    description: str
    input: str
    config: dict
    runs: list = field(default_factory=list)        # the two PipelineRuns
    whole_file: list = field(default_factory=list)  # `whole_file_differences`, time stamps included


def prepare_case(case: Case, workdir: Path):
    """Simulate a case's association in ``workdir/sim``; return it and the input's file name."""
    from astrodriz_sm.sim import SimConfig, simulate_association

    sim = simulate_association(workdir / "sim", SimConfig(**case.config))
    if case.no_apriori:
        for name in APRIORI_SERVICE_FILES:
            (sim.service_dir / name).unlink()
    if case.singleton:
        files = getattr(sim, case.singleton_kind) if case.singleton_kind else (sim.flt or sim.flc or sim.c0m)
        return sim, files[0].name
    return sim, sim.asn.name


def verified_product_name(sim, input_name: str) -> str:
    """The product both pipelines verify and measure: the DRC when there are FLCs, else the DRZ."""
    root = sim.root if input_name == sim.asn.name else input_name.rsplit("_", 1)[0]
    return f"{root}_{'drc' if sim.flc else 'drw' if sim.c0m else 'drz'}.fits"


def run_pipeline(pipeline: str, sim, input_name: str, dest: Path, service_env: dict,
                 timeout: float | None, expect_product: bool = True) -> PipelineRun:
    """Run one pipeline's console command on a fresh copy of the association in ``dest`` and read what
    it handed back (``expect_product`` False: the run is ok when it exits 0, with no product)."""
    bench.copy_association(sim.outdir, dest)
    before = file_digests(dest)
    res = bench.run_child(bench.pipeline_command(pipeline, dest / input_name, console=True), dest,
                          bench.child_environment(service_env, dest, sim.refvar, sim.environment), dest,
                          f"_parity_{pipeline}", timeout)
    verified = dest / verified_product_name(sim, input_name)
    # With no product due, the directory stands for it: only the exit code and the timeout count.
    run = PipelineRun(pipeline=pipeline, directory=str(dest), exit_code=res.exit_code,
                      status=bench.run_status(res, verified if expect_product else dest, timeout),
                      wall_s=round(res.wall_s, 2),
                      handed_back=handed_back(dest, before))
    # WFPC2: the FLT files both pipelines make from the _c0m files.
    for path in [*sim.flt, *sim.flc] or [dest / f"{m}_flt.fits" for m in sim.members]:
        if (dest / path.name).exists():
            run.exposures[path.name], run.alternates[path.name] = sci_wcsnames(dest / path.name)
    for path in sorted([*dest.glob("*_drz.fits"), *dest.glob("*_drc.fits"), *dest.glob("*_drw.fits")]):
        run.products[path.name] = sci_wcsnames(path)[0]
    found = runastrodriz_stages(res.stdout_lines) if pipeline == "runastrodriz" else store_stages(
        dest / bench.STORE_NAME)
    run.stages, run.stage_evidence = found["stages"], found["evidence"]
    measured = verified if verified.exists() else next(
        (dest / name for name in sorted(run.products, key=lambda n: not n.endswith("_drc.fits"))), None)
    if measured is not None:
        try:
            run.accuracy = bench.product_accuracy(measured, sim)
            run.error_rms_mas = run.accuracy["rms_mas"]
        except Exception as exc:  # noqa: BLE001 - a measurement failure is reported, not fatal
            run.status += f"; measurement failed: {type(exc).__name__}: {exc}"
    return run


def run_case(case: Case, workdir: Path, timeout: float | None = None, log=None) -> CaseResult:
    """Simulate a case, serve it, run runastrodriz then astrodriz-sm on it, and compare.

    Parameters
    ----------
    case : Case
    workdir : Path
        Empty or new directory for the simulation (``sim``), the service store and the run
        directories (``runastrodriz``, ``astrodriz-sm``).
    timeout : float, optional
        Seconds after which a run is killed.
    log : callable, optional
        Called with one line of progress at a time.

    Returns
    -------
    CaseResult
    """
    log = log or (lambda _text: None)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    sim, input_name = prepare_case(case, workdir)
    result = CaseResult(case=case.name, description=case.description, input=input_name,
                        no_apriori=case.no_apriori, config=dict(case.config),
                        simulation_s=round(time.monotonic() - t, 1))
    service = bench.start_local_service(sim.service_dir, workdir / "astrometry_service.db")
    log(f"{case.name}: simulated {input_name} ({result.simulation_s:.0f} s); service on {service.url}"
        + (" without a priori solutions" if case.no_apriori else ""))
    try:
        for pipeline in PIPELINES:
            run = run_pipeline(pipeline, sim, input_name, workdir / pipeline, service.environment, timeout,
                               case.expect_product)
            result.runs[pipeline] = run
            log(f"{case.name}: {pipeline} {run.wall_s:.1f} s, {run.status}")
    finally:
        service.stop()
    theirs, ours = result.runs["runastrodriz"], result.runs["astrodriz-sm"]
    for name in sorted(set(theirs.products) & set(ours.products)):
        result.products[name] = product_differences(Path(ours.directory) / name, Path(theirs.directory) / name)
    result.whole_file = compare_runs(theirs, ours)
    return result


def compare_runs(theirs: PipelineRun, ours: PipelineRun) -> list[FileDifference]:
    """`whole_file_differences` of two runs' hand-back and exit codes."""
    return whole_file_differences(Path(theirs.directory), theirs.handed_back, Path(ours.directory),
                                  ours.handed_back, (theirs.exit_code, ours.exit_code))


def run_self(case: Case, workdir: Path, timeout: float | None = None, log=None) -> SelfResult:
    """Simulate a case, serve it, run astrodriz-sm on it twice (fresh copies) and compare the two runs.

    The run directories are ``workdir/astrodriz-sm-1`` and ``-2``; see `run_case`.
    """
    log = log or (lambda _text: None)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sim, input_name = prepare_case(case, workdir)
    result = SelfResult(case=case.name, description=case.description, input=input_name, config=dict(case.config))
    service = bench.start_local_service(sim.service_dir, workdir / "astrometry_service.db")
    try:
        for n in (1, 2):
            run = run_pipeline("astrodriz-sm", sim, input_name, workdir / f"astrodriz-sm-{n}", service.environment,
                               timeout, case.expect_product)
            result.runs.append(run)
            log(f"{case.name}: astrodriz-sm run {n} {run.wall_s:.1f} s, {run.status}")
    finally:
        service.stop()
    result.whole_file = compare_runs(*result.runs)
    return result


def parity_problems(result: CaseResult, sci_tolerance: float = SCI_RELATIVE_TOLERANCE,
                    error_margin_mas: float = ERROR_MARGIN_MAS) -> list[str]:
    """What keeps a case from parity; empty when astrodriz-sm matches runastrodriz.

    Parity: both runs ended ``ok``; the same WCSNAME on every exposure and product (and the same
    files); the same stages with the same verdicts; where a product's WCS keywords agree, SCI arrays
    within ``sci_tolerance`` relative and finite on the same pixels; astrodriz-sm's error against the
    truth at most runastrodriz's + ``error_margin_mas``.
    """
    theirs, ours = result.runs["runastrodriz"], result.runs["astrodriz-sm"]
    problems = [f"{r.pipeline}: {r.status}" for r in (theirs, ours) if r.status != "ok"]
    for what in ("exposures", "products"):
        a, b = getattr(theirs, what), getattr(ours, what)
        for name in sorted(set(a) | set(b)):
            if name not in a or name not in b:
                problems.append(f"{name}: handed back by {'runastrodriz' if name in a else 'astrodriz-sm'} only")
            elif a[name] != b[name]:
                problems.append(f"{name}: WCSNAME {a[name]} (runastrodriz) != {b[name]} (astrodriz-sm)")
    if theirs.stages != ours.stages:
        problems.append(f"stages: {stages_text(theirs.stages)} (runastrodriz) != {stages_text(ours.stages)} "
                        "(astrodriz-sm)")
    for name, diff in result.products.items():
        if diff["wcs_differences"]:
            continue  # different WCS, different pixels: reported, not compared
        if diff["max_rel_diff"] is None or diff["max_rel_diff"] > sci_tolerance:
            problems.append(f"{name}: SCI relative difference {diff['max_rel_diff']} > {sci_tolerance:g}"
                            f" (shapes {diff['shapes']})")
        if diff["finite_in_one_only"]:
            problems.append(f"{name}: {diff['finite_in_one_only']} pixels finite in one product only")
    if theirs.error_rms_mas is not None and (ours.error_rms_mas is None
                                             or ours.error_rms_mas > theirs.error_rms_mas + error_margin_mas):
        problems.append(f"error against the truth {ours.error_rms_mas} mas > runastrodriz's "
                        f"{theirs.error_rms_mas} + {error_margin_mas:g} mas")
    problems += [_problem(d) for d in remaining_differences(result.whole_file)]
    return problems


def self_problems(result: SelfResult) -> list[str]:
    """What keeps two astrodriz-sm runs of a case from handing back the same files: a run that did not
    end ``ok``, and every whole-file difference but the time stamps and the allowed ones."""
    return ([f"run {n}: {r.status}" for n, r in enumerate(result.runs, 1) if r.status != "ok"]
            + [_problem(d) for d in remaining_differences(result.whole_file)])


def _problem(diff: FileDifference) -> str:
    return f"{diff.file or '(run)'}" + (f" [{diff.hdu}]" if diff.hdu else "") + f" {diff.text()}"


# --------------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------------
def _same(a, b) -> str:
    return "yes" if a == b else "NO"


def _names(values: dict) -> str:
    """Distinct WCSNAMEs of a name -> WCSNAME mapping, each with its count when they differ."""
    distinct = sorted({str(v) for v in values.values()})
    if len(distinct) <= 1:
        return distinct[0] if distinct else "-"
    return ", ".join(f"{v} x{sum(str(x) == v for x in values.values())}" for v in distinct)


def _error(run: PipelineRun) -> str:
    text = bench._fmt(run.error_rms_mas, ".1f")
    return f"{text} (31 px box)" if run.accuracy.get("box") == "box31" else text


def _rel(diff: dict | None) -> str:
    if diff is None:
        return "-"
    rel = "shape differs" if diff["max_rel_diff"] is None else f"{diff['max_rel_diff']:.1e}"
    return f"{rel} ({diff['finite_in_one_only'] if diff['finite_in_one_only'] is not None else '-'})"


def _wcs_text(products: dict) -> str:
    parts = []
    for name, diff in products.items():
        for key, v in diff["wcs_differences"].items():
            parts.append(f"{name.rsplit('_', 1)[1][:3]} {key}: {v['runastrodriz']} / {v['astrodriz-sm']}")
    return "; ".join(parts) or "none"


def case_report(result: CaseResult) -> str:
    """The per-case comparison as text: runs, WCSNAMEs, stages, products, errors, parity."""
    theirs, ours = result.runs["runastrodriz"], result.runs["astrodriz-sm"]
    lines = [f"## {result.case}: {result.description}", "",
             f"input {result.input}; SimConfig {json.dumps(result.config)}"
             + ("; service without astrometrydb.ecsv and gsc_offsets.ecsv" if result.no_apriori else ""), ""]
    rows = [("pipeline", "exit", "wall (s)", "error RMS (mas)", "stars", "status", "directory")]
    for r in (theirs, ours):
        rows.append((r.pipeline, str(r.exit_code), f"{r.wall_s:.1f}", _error(r),
                     bench._fmt(r.accuracy.get("n_stars"), "d"), r.status, r.directory))
    lines += [bench.markdown(rows), ""]
    rows = [("file", "runastrodriz WCSNAME", "astrodriz-sm WCSNAME", "same?", "runastrodriz alternates",
             "astrodriz-sm alternates", "same?")]
    for what in ("exposures", "products"):
        a, b = getattr(theirs, what), getattr(ours, what)
        for name in sorted(set(a) | set(b)):
            alt_a, alt_b = theirs.alternates.get(name, ""), ours.alternates.get(name, "")
            rows.append((name, str(a.get(name, "(absent)")), str(b.get(name, "(absent)")),
                         _same(a.get(name, "(absent)"), b.get(name, "(absent)")),
                         alt_a, alt_b, _same(alt_a, alt_b) if what == "exposures" else ""))
    lines += [bench.markdown(rows), ""]
    rows = [("stage", "runastrodriz", "astrodriz-sm", "same?", "runastrodriz evidence", "astrodriz-sm reason")]
    for stage in STAGES:
        a, b = theirs.stages.get(stage, "not run"), ours.stages.get(stage, "not run")
        rows.append((stage, a, b, _same(a, b), theirs.stage_evidence.get(stage, ""),
                     ours.stage_evidence.get(stage, "")))
    lines += [bench.markdown(rows), ""]
    if result.products:
        rows = [("product", "max rel. SCI difference", "finite in one only",
                 "WCS keywords differing (runastrodriz / astrodriz-sm)")]
        for name, diff in result.products.items():
            rel = "shapes differ" if diff["max_rel_diff"] is None else f"{diff['max_rel_diff']:.3e}"
            wcs = "; ".join(f"{k}: {v['runastrodriz']} / {v['astrodriz-sm']}"
                            for k, v in diff["wcs_differences"].items()) or "none"
            rows.append((name, rel, bench._fmt(diff["finite_in_one_only"], "d"), wcs))
        lines += [bench.markdown(rows), ""]
    lines += whole_file_report(result.whole_file)
    problems = parity_problems(result)
    lines.append("parity: " + ("yes" if not problems else "NO\n" + "\n".join(f"- {p}" for p in problems)))
    if theirs.alternates != ours.alternates:
        lines.append("note: the alternate WCSs of the exposures differ (not part of parity)")
    return "\n".join(lines)


def whole_file_report(diffs: list[FileDifference], labels=("runastrodriz", "astrodriz-sm")) -> list[str]:
    """The whole-file section of a report: the remaining differences grouped, the allowed ones, the stamps."""
    remaining = remaining_differences(diffs)
    allowed = [d for d in diffs if not time_stamp(d) and allowed_reason(d) is not None]
    lines = [f"whole-file differences ({len(remaining)}):", differences_text(remaining, labels), ""]
    if allowed:
        lines += [f"allowed differences ({len(allowed)}):",
                  *(f"- {_problem(d)}: {allowed_reason(d)}" for d in allowed), ""]
    lines += [f"exempt time stamps that differ: {stamp_summary(diffs)}", ""]
    return lines


def self_report(result: SelfResult) -> str:
    """Two astrodriz-sm runs of a case compared file by file, as text."""
    lines = [f"## {result.case} (astrodriz-sm against itself): {result.description}", "",
             f"input {result.input}; SimConfig {json.dumps(result.config)}", ""]
    rows = [("run", "exit", "wall (s)", "files handed back", "status", "directory")]
    for n, r in enumerate(result.runs, 1):
        rows.append((str(n), str(r.exit_code), f"{r.wall_s:.1f}", str(len(r.handed_back)), r.status, r.directory))
    lines += [bench.markdown(rows), "", "files handed back by run 1: " + ", ".join(result.runs[0].handed_back), ""]
    lines += whole_file_report(result.whole_file, ("run 1", "run 2"))
    problems = self_problems(result)
    lines.append("reproducible: " + ("yes" if not problems else "NO\n" + "\n".join(f"- {p}" for p in problems)))
    return "\n".join(lines)


def summary_table(results: list[CaseResult]) -> str:
    """One markdown row per case (R: runastrodriz, A: astrodriz-sm)."""
    rows = [("case", "exposure WCSNAME R", "exposure WCSNAME A", "same?", "alternate WCSNAMEs same?",
             "product WCSNAME R",
             "product WCSNAME A", "same?", "stages R", "stages A", "same?",
             "DRZ SCI rel. diff (finite in one)", "DRC SCI rel. diff (finite in one)", "WCS keyword diffs (R / A)",
             "error R / A (mas)", "wall R / A (s)", "whole-file diffs", "parity")]
    for res in results:
        r, a = res.runs["runastrodriz"], res.runs["astrodriz-sm"]
        drz = next((d for n, d in res.products.items() if n.endswith("_drz.fits")), None)
        drc = next((d for n, d in res.products.items() if n.endswith("_drc.fits")), None)
        rows.append((res.case, _names(r.exposures), _names(a.exposures), _same(r.exposures, a.exposures),
                     _same(r.alternates, a.alternates), _names(r.products), _names(a.products), _same(r.products, a.products),
                     stages_text(r.stages), stages_text(a.stages), _same(r.stages, a.stages),
                     _rel(drz), _rel(drc), _wcs_text(res.products), f"{_error(r)} / {_error(a)}",
                     f"{r.wall_s:.1f} / {a.wall_s:.1f}", str(len(remaining_differences(res.whole_file))),
                     "yes" if not parity_problems(res) else "NO"))
    return bench.markdown(rows)


def self_summary_table(results: list[SelfResult]) -> str:
    """One markdown row per case run twice by astrodriz-sm."""
    rows = [("case", "files handed back (run 1 / 2)", "exit (1 / 2)", "whole-file diffs", "exempt stamps differing",
             "reproducible")]
    for res in results:
        a, b = res.runs
        rows.append((res.case, f"{len(a.handed_back)} / {len(b.handed_back)}", f"{a.exit_code} / {b.exit_code}",
                     str(len(remaining_differences(res.whole_file))), stamp_summary(res.whole_file),
                     "yes" if not self_problems(res) else "NO"))
    return bench.markdown(rows)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(CASES), metavar="A,B,...",
                   help="cases to run, in order (default: all): " + ", ".join(CASES))
    p.add_argument("--json", metavar="FILE", help="also write every result as JSON")
    p.add_argument("--keep", metavar="DIR", help="keep each case's simulation and run directories in DIR/<case>")
    p.add_argument("--timeout", type=float, default=0, metavar="SEC",
                   help="kill a run after SEC seconds (default: no limit)")
    p.add_argument("--self", action="store_true", dest="self_check",
                   help="run astrodriz-sm twice per case instead, and compare its two runs' files")
    return p


def main(argv=None) -> int:
    """Run the selected cases one at a time and print each comparison and the summary table."""
    args = build_parser().parse_args(argv)
    names = [n.strip() for n in args.cases.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        raise SystemExit(f"unknown case(s): {', '.join(unknown) or '(none given)'}; cases: {', '.join(CASES)}")
    machine = bench.machine_description()
    print(f"# command: {shlex.join([sys.executable, *sys.argv])}" if argv is None
          else f"# command: {shlex.join(['parity.py', *argv])}")
    print(f"# machine: {machine['nproc']} cores, {machine['memory_gib']} GiB, Python {machine['python']}, "
          f"drizzlepac {machine['drizzlepac']}, stwcs {machine['stwcs']}, tweakwcs {machine['tweakwcs']}")
    print(f"# started {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC", flush=True)
    workroot = bench.work_root(args.keep, "parity-")
    results = []
    run, report = (run_self, self_report) if args.self_check else (run_case, case_report)
    try:
        for name in names:
            result = run(CASES[name], workroot / name, args.timeout or None,
                         log=lambda text: print(f"# {text}", flush=True))
            results.append(result)
            print()
            print(report(result), flush=True)
            print()
            if not args.keep:
                shutil.rmtree(workroot / name, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(workroot, ignore_errors=True)
    if args.self_check:
        print("## Summary (astrodriz-sm against itself)\n")
        print(self_summary_table(results))
    else:
        print("## Summary (R: runastrodriz, A: astrodriz-sm)\n")
        print(summary_table(results))
    if args.keep:
        print(f"\nrun directories kept in {workroot}")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": sys.argv if argv is None else argv, "machine": machine,
                                               "results": [asdict(r) for r in results]},
                                              indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
