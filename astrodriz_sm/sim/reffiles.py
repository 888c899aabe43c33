"""Reference files for simulated associations.

For ACS/WFC the simulator either writes its own self-contained instrument (an
IDCTAB-format distortion table, no NPOLFILE and no D2IMFILE) or points at real
ACS/WFC reference files in a directory given by the user.  For the other
detectors it writes an IDCTAB derived from the detector's real header template
(see `astrodriz_sm.sim.instruments`), with NPOLFILE and D2IMFILE 'N/A'.  It
always writes its own MDRIZTAB, the table AstroDrizzle reads with
``mdriztab=True``.

Every file is written with fixed DATE keywords so that two runs with the same
configuration produce identical bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from .instruments import DEFAULT_INSTRUMENT, ChipModel, Detector, chip_models, detector

__all__ = [
    "FILTER1",
    "FILTER2",
    "REAL_D2IMFILE",
    "REAL_IDCTAB",
    "REAL_NPOLFILE",
    "SIM_IDCTAB",
    "SIM_MDRIZTAB",
    "ReferenceSet",
    "idc_coefficients",
    "prepare_reference_files",
    "write_detector_idctab",
    "write_idctab",
    "write_mdriztab",
]

#: Names of the files the simulator writes (9-character roots, as drizzlepac expects).
SIM_IDCTAB = "sm00001aj_idc.fits"
SIM_MDRIZTAB = "sm00002aj_mdz.fits"

#: Real ACS/WFC reference files used in ``refdir`` mode.
REAL_IDCTAB = "qbu1641sj_idc.fits"
REAL_NPOLFILE = "qbu16424j_npl.fits"
REAL_D2IMFILE = "new_wfc_d2i.fits"

FILTER1 = "F606W"
FILTER2 = "CLEAR2L"

#: Fixed creation date written into every reference file.
FIXED_DATE = "2019-01-01T00:00:00"

# Full-frame WFC chip geometry: each chip is 4096 x 2048 with the model reference
# pixel at its centre.
CHIP_XSIZE, CHIP_YSIZE = 4096, 2048
CHIP_XREF, CHIP_YREF = 2048.0, 1024.0
IDC_SCALE = 0.05  # arcsec / pixel
IDC_NORDER = 4

# V2/V3 (arcsec) of each chip's reference pixel; chip 1 lies about 104" (one chip
# height plus the inter-chip gap) below chip 2 in V3, as on ACS/WFC.
_V23REF = {1: (261.0, 198.3), 2: (256.6, 302.2)}


@dataclass(frozen=True)
class ReferenceSet:
    """Reference files used by a simulated association.

    Attributes
    ----------
    idctab, npolfile, d2imfile, mdriztab : str
        Header values (``jref$<name>`` or ``'N/A'``).
    paths : dict of str to Path
        Files present in the output directory, keyed by header keyword.
    """

    idctab: str
    npolfile: str
    d2imfile: str
    mdriztab: str
    paths: dict[str, Path]
    offtab: str = "N/A"


def _linear_terms(chip: int) -> tuple[float, float, float, float]:
    """Linear IDC terms (CX10, CX11, CY10, CY11) in arcsec/pixel.

    ACS/WFC's detector x axis runs nearly along V3 and its y axis nearly along
    V2, and the two are not perpendicular on the sky: pixels project to rhombi
    whose sides meet at about 85 degrees, with scales that differ by ~1 %.
    """
    # (scale along x, angle of x from V3, scale along y, angle of y from V2)
    sx, ax, sy, ay = {1: (0.0487, 2.70, 0.0493, 2.50), 2: (0.0503, 2.23, 0.0499, 1.71)}[chip]
    ax, ay = np.deg2rad(ax), np.deg2rad(ay)
    # V2 = cx10*x + cx11*y ; V3 = cy10*x + cy11*y
    return (float(sx * np.sin(ax)), float(sy * np.cos(ay)),
            float(sx * np.cos(ax)), float(sy * np.sin(ay)))


def idc_coefficients(chip: int) -> tuple[np.ndarray, np.ndarray]:
    """Distortion polynomial of the simulated instrument for one chip.

    Parameters
    ----------
    chip : int
        CCDCHIP (1 or 2).

    Returns
    -------
    cx, cy : ndarray of shape (5, 5)
        ``cx[i, j]`` multiplies ``x**(i-j) * y**j`` (pixels relative to
        XREF/YREF) and gives V2 in arcsec; likewise ``cy`` for V3.  Beyond
        the linear terms the quadratic terms displace the chip corners by up to
        ~60 pixels (1.5 pixels over a central 512x512 subarray) and the cubic
        terms by up to ~5 pixels, comparable to ACS/WFC's distortion.
    """
    cx = np.zeros((IDC_NORDER + 1, IDC_NORDER + 1))
    cy = np.zeros_like(cx)
    cx[1, 0], cx[1, 1], cy[1, 0], cy[1, 1] = _linear_terms(chip)
    sign = 1.0 if chip == 1 else 0.8
    # Quadratic terms: up to ~3" (60 px) at the chip corners.
    cx[2, 0], cx[2, 1], cx[2, 2] = 9.0e-8 * sign, -3.4e-7, 4.1e-7 * sign
    cy[2, 0], cy[2, 1], cy[2, 2] = -4.6e-7, 2.9e-7 * sign, -1.1e-7
    # Cubic terms: up to ~0.25" (5 px) at the chip corners.
    cx[3, 0], cx[3, 1], cx[3, 2], cx[3, 3] = 2.0e-12, -2.6e-11, -5.0e-12 * sign, -2.3e-11
    cy[3, 0], cy[3, 1], cy[3, 2], cy[3, 3] = -2.0e-11, -3.0e-12, -2.2e-11 * sign, 3.4e-12
    return cx, cy


def _fixed_primary(header: fits.Header) -> fits.PrimaryHDU:
    hdu = fits.PrimaryHDU(header=header)
    hdu.header["DATE"] = (FIXED_DATE, "date this file was written")
    return hdu


def _write_idc_file(path: Path, rows: dict[str, list], real_format: str, text_columns: tuple[str, ...],
                    instrume: str, detector: str, norder: int, descrip: str, extra=()) -> Path:
    """Write an IDCTAB: the ``rows`` columns in their order, and its primary header.

    ``real_format`` is the FITS format of the non-integer, non-text columns; ``extra`` are more
    primary-header cards, after the common ones.
    """
    formats = {"DETCHIP": "1I", "DIRECTION": "8A", "XSIZE": "1J", "YSIZE": "1J",
               **{key: "8A" for key in text_columns}}
    cols = [fits.Column(name=n, format=formats.get(n, real_format), array=np.array(values),
                        unit={"DETCHIP": "chip", "SCALE": "arcsec"}.get(n))
            for n, values in rows.items()]
    table = fits.BinTableHDU.from_columns(cols, name="IDCall.fits")
    phdr = fits.Header()
    phdr["FILENAME"] = (path.name, "name of file")
    phdr["NEXTEND"] = (1, "number of extensions in file")
    phdr["USEAFTER"] = "Jan 01 2002 00:00:00"
    phdr["PEDIGREE"] = "DUMMY 01/01/2019"
    phdr["INSTRUME"] = instrume
    phdr["DETECTOR"] = detector
    phdr["NORDER"] = norder
    phdr["FILETYPE"] = "DISTORTION COEFFICIENTS"
    phdr["DESCRIP"] = descrip
    for key, value in extra:
        phdr[key] = value
    fits.HDUList([_fixed_primary(phdr), table]).writeto(path, overwrite=True)
    return path


def write_idctab(path: Path) -> Path:
    """Write the simulated instrument's IDCTAB.

    The table has the column layout of the ACS/WFC IDCTAB (DETCHIP, DIRECTION,
    FILTER1, FILTER2, XSIZE, YSIZE, XREF, YREF, V2REF, V3REF, SCALE, CX10..CX44,
    CY10..CY44) with one FORWARD row per chip for F606W/CLEAR2L.  A small
    constant time-dependent skew (TDDORDER=0) is declared in the primary
    header so that stwcs' TDD correction is well defined.

    Parameters
    ----------
    path : Path
        Output file name (its root should have 9 characters).

    Returns
    -------
    Path
        ``path``.
    """
    names = ["DETCHIP", "DIRECTION", "FILTER1", "FILTER2", "XSIZE", "YSIZE", "XREF", "YREF",
             "V2REF", "V3REF", "SCALE"]
    coeff_names = [f"{axis}{i}{j}" for axis in ("CX", "CY")
                   for i in range(1, IDC_NORDER + 1) for j in range(i + 1)]
    rows: dict[str, list] = {n: [] for n in names + coeff_names}
    for chip in (1, 2):
        cx, cy = idc_coefficients(chip)
        rows["DETCHIP"].append(chip)
        rows["DIRECTION"].append("FORWARD")
        rows["FILTER1"].append(FILTER1)
        rows["FILTER2"].append(FILTER2)
        rows["XSIZE"].append(CHIP_XSIZE)
        rows["YSIZE"].append(CHIP_YSIZE)
        rows["XREF"].append(CHIP_XREF)
        rows["YREF"].append(CHIP_YREF)
        rows["V2REF"].append(_V23REF[chip][0])
        rows["V3REF"].append(_V23REF[chip][1])
        rows["SCALE"].append(IDC_SCALE)
        for name in coeff_names:
            arr = cx if name.startswith("CX") else cy
            rows[name].append(arr[int(name[2]), int(name[3])])

    return _write_idc_file(
        path, rows, "1E", ("FILTER1", "FILTER2"), "ACS", "WFC", IDC_NORDER,
        "Simulated ACS/WFC-like distortion for astrodriz_sm tests",
        extra=[("TDDORDER", (0, "order of the time-dependent skew model")),
               ("TDD_DATE", (2016.0, "reference date of the skew model (decimal year)")),
               ("TDD_A0", (0.02, "time-dependent skew alpha (pixels)")),
               ("TDD_B0", (-0.01, "time-dependent skew beta (pixels)"))])


# MDRIZTAB columns: (name, FITS format).  Formats follow what drizzlepac's
# mdzhandler understands: text 'A', logical '1L', integer '1J', real '1E'.
_MDZ_COLUMNS: list[tuple[str, str]] = [
    ("filter", "24A"), ("numimages", "1J"),
    ("build", "1L"), ("stepsize", "1J"), ("coeffs", "8A"), ("context", "1L"),
    ("clean", "1L"), ("group", "8A"), ("crbitval", "1J"),
    ("static", "1L"), ("static_sig", "1E"),
    ("subsky", "1L"), ("skymethod", "16A"), ("skystat", "8A"), ("skywidth", "1E"),
    ("skylower", "1E"), ("skyupper", "1E"), ("skyclip", "1J"), ("skylsigma", "1E"),
    ("skyusigma", "1E"), ("use_static", "1L"), ("sky_bits", "8A"),
    ("driz_separate", "1L"), ("driz_sep_kernel", "8A"), ("driz_sep_wt_scl", "8A"),
    ("driz_sep_pixfrac", "1E"), ("driz_sep_fillval", "1E"), ("driz_sep_bits", "1J"),
    ("median", "1L"), ("median_newmasks", "1L"), ("combine_maskpt", "1E"),
    ("combine_type", "8A"), ("combine_nsigma", "8A"), ("combine_nlow", "1J"),
    ("combine_nhigh", "1J"), ("combine_lthresh", "1E"), ("combine_hthresh", "1E"),
    ("combine_grow", "1J"),
    ("blot", "1L"), ("blot_interp", "8A"), ("blot_sinscl", "1E"),
    ("driz_cr", "1L"), ("driz_cr_corr", "1L"), ("driz_cr_snr", "16A"),
    ("driz_cr_grow", "1J"), ("driz_cr_ctegrow", "1J"), ("driz_cr_scale", "16A"),
    ("driz_combine", "1L"), ("final_wht_type", "8A"), ("final_kernel", "8A"),
    ("final_wt_scl", "8A"), ("final_pixfrac", "1E"), ("final_fillval", "1E"),
    ("final_bits", "1J"), ("final_units", "8A"),
]

# Good DQ bits for drizzling: 16 hot, 64 warm, 256 saturated, 512 bad ref, 1024 sink
# pixel (the values the ACS/WFC pipeline treats as good).
_GOOD_BITS = 16 + 64 + 256 + 512 + 1024
NAN = float("nan")


def _mdz_row(numimages: int, cr_reject: bool = True) -> dict[str, object]:
    """Parameters for one MDRIZTAB row (``numimages`` or more exposures).

    ``cr_reject`` False (detectors without cosmic rays) switches off the
    separate drizzle, median, blot and driz_cr steps at any number of images.
    """
    multi = numimages > 1 and cr_reject
    return {
        "filter": "ANY", "numimages": numimages,
        "build": True, "stepsize": 10, "coeffs": "header", "context": True,
        "clean": False, "group": "", "crbitval": 4096,
        "static": multi, "static_sig": 4.0,
        "subsky": True, "skymethod": "localmin", "skystat": "median", "skywidth": 0.1,
        "skylower": -100.0, "skyupper": NAN, "skyclip": 5, "skylsigma": 4.0,
        "skyusigma": 4.0, "use_static": True, "sky_bits": "0",
        "driz_separate": multi, "driz_sep_kernel": "turbo", "driz_sep_wt_scl": "exptime",
        "driz_sep_pixfrac": 1.0, "driz_sep_fillval": NAN, "driz_sep_bits": _GOOD_BITS,
        "median": multi, "median_newmasks": True, "combine_maskpt": 0.3,
        # Two or three images: 'minmed' is robust with so few samples; more: median
        # with the highest value rejected.
        "combine_type": "minmed" if numimages < 4 else "median",
        "combine_nsigma": "4 3", "combine_nlow": 0,
        "combine_nhigh": 1 if numimages >= 4 else 0,
        "combine_lthresh": NAN, "combine_hthresh": NAN, "combine_grow": 1,
        "blot": multi, "blot_interp": "poly5", "blot_sinscl": 1.0,
        "driz_cr": multi, "driz_cr_corr": False, "driz_cr_snr": "3.5 3.0",
        "driz_cr_grow": 1, "driz_cr_ctegrow": 0, "driz_cr_scale": "1.2 0.7",
        "driz_combine": True, "final_wht_type": "EXP", "final_kernel": "square",
        "final_wt_scl": "exptime", "final_pixfrac": 1.0, "final_fillval": NAN,
        "final_bits": _GOOD_BITS, "final_units": "cps",
    }


def write_mdriztab(path: Path, max_images: int = 4, det: Detector | None = None,
                   skymethod: str | None = None) -> Path:
    """Write an MDRIZTAB with generic ('ANY' filter) rows for 1..``max_images`` exposures.

    drizzlepac picks the last row whose ``numimages`` does not exceed the number
    of inputs, so the last row applies to all larger associations.  With one
    exposure there is no cosmic-ray rejection (no separate drizzle, median,
    blot or driz_cr); from two exposures on all steps run.

    Parameters
    ----------
    path : Path
        Output file name.
    max_images : int, optional
        Number of rows.
    det : Detector, optional
        Detector the table is for (default ACS/WFC); without cosmic rays
        (`Detector.cosmic_rays`) no row rejects them.
    skymethod : str, optional
        ``skymethod`` of every row instead of 'localmin'.

    Returns
    -------
    Path
        ``path``.
    """
    det = det or detector(DEFAULT_INSTRUMENT)
    rows = [_mdz_row(n, det.cosmic_rays) for n in range(1, max_images + 1)]
    if skymethod is not None:
        for row in rows:
            row["skymethod"] = skymethod
    cols = []
    for name, fmt in _MDZ_COLUMNS:
        values = [row[name] for row in rows]
        if fmt == "1L":
            array = np.array(values, dtype=bool)
        elif fmt == "1J":
            array = np.array(values, dtype=np.int32)
        elif fmt == "1E":
            array = np.array(values, dtype=np.float32)
        else:
            array = np.array(values, dtype=str)
        cols.append(fits.Column(name=name, format=fmt, array=array))
    table = fits.BinTableHDU.from_columns(cols)
    phdr = fits.Header()
    phdr["FILENAME"] = path.name
    phdr["INSTRUME"] = det.instrume
    phdr["DETECTOR"] = det.detector
    phdr["FILETYPE"] = "MULTIDRIZZLE PARAMETERS"
    phdr["USEAFTER"] = "Jan 01 2002 00:00:00"
    phdr["PEDIGREE"] = "DUMMY 01/01/2019"
    phdr["DESCRIP"] = f"AstroDrizzle parameters for simulated {det.instrume}/{det.detector} associations"
    fits.HDUList([_fixed_primary(phdr), table]).writeto(path, overwrite=True)
    return path


def write_detector_idctab(path: Path, det: Detector, chips: list[ChipModel]) -> Path:
    """Write the IDCTAB of a templated detector, one FORWARD row per chip.

    The columns are those of the real tables: DETCHIP, DIRECTION, the filter
    column(s) (WFC3: FILTER; ACS: FILTER1 and FILTER2, where the SBC rows carry
    'N/A' in FILTER2 as stwcs expects for the MAMA), XSIZE, YSIZE, XREF, YREF,
    V2REF, V3REF, THETA, SCALE, CX10..CXnn, CY10..CYnn.

    Parameters
    ----------
    path : Path
        Output file name (its root should have 9 characters).
    det : Detector
    chips : list of ChipModel
        Rows, e.g. from `astrodriz_sm.sim.instruments.chip_models`.

    Returns
    -------
    Path
        ``path``.
    """
    norder = chips[0].norder
    filters = det.header_filters()
    if det.detector == "SBC":
        filters["FILTER2"] = "N/A"
    names = ["DETCHIP", "DIRECTION", *filters, "XSIZE", "YSIZE", "XREF", "YREF",
             "V2REF", "V3REF", "THETA", "SCALE"]
    coeff_names = [f"{axis}{i}{j}" for axis in ("CX", "CY")
                   for i in range(1, norder + 1) for j in range(i + 1)]
    rows: dict[str, list] = {n: [] for n in names + coeff_names}
    for chip in chips:
        values = {"DETCHIP": chip.ccdchip, "DIRECTION": "FORWARD", **filters,
                  "XSIZE": chip.xsize, "YSIZE": chip.ysize, "XREF": chip.xref, "YREF": chip.yref,
                  "V2REF": chip.v2ref, "V3REF": chip.v3ref, "THETA": chip.theta, "SCALE": chip.scale}
        for name in names:
            rows[name].append(values[name])
        for name in coeff_names:
            arr = chip.cx if name.startswith("CX") else chip.cy
            rows[name].append(arr[int(name[2]), int(name[3])])
    # Double precision: the coefficients come from real headers and are kept as written.
    return _write_idc_file(path, rows, "1D", tuple(filters), det.instrume, det.detector, norder,
                           f"Simulated {det.instrume}/{det.detector} distortion from {det.template}")


def prepare_reference_files(outdir: Path, refdir: str | os.PathLike | None,
                            max_images: int, det: Detector | None = None,
                            template_dir: str | os.PathLike | None = None,
                            skymethod: str | None = None) -> ReferenceSet:
    """Write or link the reference files for one association into ``outdir``.

    Parameters
    ----------
    outdir : Path
        Output directory; users run with ``<refvar>=<outdir>/`` (``jref``,
        ``iref``; see `Detector.refvar`).
    refdir : path-like or None
        ACS/WFC only.  None: write the simulated IDCTAB (NPOLFILE and D2IMFILE
        are 'N/A').  Otherwise: symbolic links in ``outdir`` to the real
        ACS/WFC IDCTAB, NPOLFILE and D2IMFILE found in ``refdir``.
    max_images : int
        Number of MDRIZTAB rows to write.
    det : Detector, optional
        Default ACS/WFC.  Any other detector gets the IDCTAB derived from its
        template (`write_detector_idctab`) and NPOLFILE/D2IMFILE 'N/A'.
    template_dir : path-like, optional
        Where the templates are (see `astrodriz_sm.sim.instruments.template_directory`).

    Returns
    -------
    ReferenceSet
    """
    det = det or detector(DEFAULT_INSTRUMENT)
    paths: dict[str, Path] = {}
    var = det.refvar
    if det.is_wfpc2:
        return _wfpc2_reference_files(outdir, template_dir)
    if det.template is not None:
        paths["IDCTAB"] = write_detector_idctab(outdir / det.idctab, det, chip_models(det, template_dir))
        npol = d2im = "N/A"
    elif refdir is None:
        paths["IDCTAB"] = write_idctab(outdir / SIM_IDCTAB)
        npol = d2im = "N/A"
    else:
        refdir = Path(refdir).resolve()
        for key, name in (("IDCTAB", REAL_IDCTAB), ("NPOLFILE", REAL_NPOLFILE),
                          ("D2IMFILE", REAL_D2IMFILE)):
            source = refdir / name
            if not source.is_file():
                raise FileNotFoundError(f"{key} {source} not found")
            link = outdir / name
            if link.is_symlink() or link.exists():
                link.unlink()
            # A link, not a copy: reference files are large and stay where they are.
            link.symlink_to(source)
            paths[key] = link
        npol, d2im = f"{var}${REAL_NPOLFILE}", f"{var}${REAL_D2IMFILE}"
    paths["MDRIZTAB"] = write_mdriztab(outdir / det.mdriztab, max_images=max_images, det=det,
                                        skymethod=skymethod)
    return ReferenceSet(idctab=f"{var}${paths['IDCTAB'].name}", npolfile=npol, d2imfile=d2im,
                        mdriztab=f"{var}${det.mdriztab}", paths=paths)


def _wfpc2_reference_files(outdir: Path, template_dir) -> ReferenceSet:
    """WFPC2: a copy of the real IDCTAB, the simulated OFFTAB and a CRDS cache naming both.

    AstroDrizzle takes WFPC2's parameters from drizzlepac's own configuration, not an MDRIZTAB.
    """
    import shutil

    from . import wfpc2
    from .instruments import template_directory

    source = template_directory(template_dir) / wfpc2.IDCTAB
    if not source.is_file():
        raise FileNotFoundError(f"WFPC2 IDCTAB {source} not found")
    idctab = outdir / wfpc2.IDCTAB
    if idctab.is_symlink() or idctab.exists():
        idctab.unlink()
    # A copy (170 kB): uref must hold it beside the OFFTAB, and the template stays untouched.
    shutil.copyfile(source, idctab)
    offtab = wfpc2.write_offtab(outdir / wfpc2.OFFTAB)
    wfpc2.write_crds_cache(outdir / "crds", {"idctab": idctab.name, "offtab": offtab.name})
    return ReferenceSet(idctab=f"uref${idctab.name}", npolfile="N/A", d2imfile="N/A", mdriztab="N/A",
                        offtab=f"uref${offtab.name}", paths={"IDCTAB": idctab, "OFFTAB": offtab})
