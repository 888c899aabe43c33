"""Simulated WFPC2 exposures: ``_c0m``/``_c1m`` files, a ``_d0m`` RAW equivalent, and their references.

WFPC2 data reach the pipeline as the archive delivers them: a calibrated
``_c0m`` file (four SCI groups in counts, PC1 and WF2-WF4, 800x800 each), its
data-quality ``_c1m`` file, and the ``_d0m`` raw file.  runastrodriz 3.11
converts the pair into an FLT file (``wfpc2Data.wfpc2_to_flt``) before anything
else, so these files carry only what that conversion, ``updatewcs``,
``photeq`` and AstroDrizzle's WFPC2 image class read.

The distortion is the real WFPC2 IDCTAB ``sad1946fu_idc.fits``.  That table has
no V2REF/V3REF/THETA columns: stwcs takes them from the OFFTAB, the
inter-chip offset table, which the simulator writes (`OFFSETS`) so that the
chips tile the sky as WFPC2's do: WF3 with WF2 above and WF4 beside it, the PC
in the fourth corner.  A CRDS cache naming both tables
(`write_crds_cache`) lets drizzlepac's ``wfpc2Data.apply_bestrefs`` run with
no CRDS server.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
from astropy.io import fits

from .instruments import ChipModel, Detector, template_directory

__all__ = [
    "CRDS_CONTEXT",
    "IDCTAB",
    "OFFSETS",
    "OFFTAB",
    "chip_models",
    "crds_environment",
    "dq_hdulist",
    "primary_header",
    "sci_header",
    "write_crds_cache",
    "write_offtab",
]

IDCTAB = "sad1946fu_idc.fits"
OFFTAB = "sm00011au_off.fits"
CRDS_CONTEXT = "hst_0001.pmap"
#: Filter of the simulated exposures (a row of the IDCTAB for each chip).
FILTER = "F555W"
#: (V2REF, V3REF) arcsec and THETA deg of each chip's reference pixel (425, 425), by DETECTOR.  No
#: chip shares WF3's V3REF exactly: stwcs's makewcs then takes the chip's direction from WF3 as 0.
OFFSETS = {1: (14.737, 17.338, 0.0), 2: (-42.33, 42.33, 90.0), 3: (-42.33, -42.33, 180.0),
           4: (33.63, -42.28, 270.0)}
#: PHOTFLAM (erg/cm2/A per DN at ATODGAIN 7) of each chip in F555W; photeq scales them to WF3's.
PHOTFLAM = {1: 3.483e-18, 2: 3.517e-18, 3: 3.480e-18, 4: 3.502e-18}
FIXED_DATE = "2019-06-01T00:00:00"
SERVERLESS_URL = "https://hst-serverless-mode.stsci.edu"


def chip_models(directory=None) -> list[ChipModel]:
    """The IDCTAB row of each chip (DETECTOR 1-4) for `FILTER`, with the OFFTAB's V2/V3/THETA."""
    path = template_directory(directory) / IDCTAB
    if not path.is_file():
        raise FileNotFoundError(f"WFPC2 IDCTAB {path} not found (set SimConfig.template_dir or "
                                "$ASTRODRIZ_SM_REFDATA)")
    with fits.open(path) as hdul:
        norder = int(hdul[0].header["NORDER"])
        rows = hdul[1].data
        models = []
        for chip in (1, 2, 3, 4):
            row = next(r for r in rows if int(r["DETCHIP"]) == chip and r["FILTER"].strip() == FILTER
                       and r["DIRECTION"].strip().upper() == "FORWARD")
            cx = np.zeros((norder + 1, norder + 1))
            cy = np.zeros_like(cx)
            for n in range(1, norder + 1):
                for m in range(n + 1):
                    cx[n, m], cy[n, m] = row[f"CX{n}{m}"], row[f"CY{n}{m}"]
            v2, v3, theta = OFFSETS[chip]
            models.append(ChipModel(ccdchip=chip, xsize=int(row["XSIZE"]), ysize=int(row["YSIZE"]),
                                    xref=float(row["XREF"]), yref=float(row["YREF"]), v2ref=v2, v3ref=v3,
                                    theta=theta, scale=float(row["SCALE"]), cx=cx, cy=cy))
    return models


def write_offtab(path: Path) -> Path:
    """The OFFTAB: one row per chip (DETCHIP, OBSDATE, V2REF, V3REF, THETA), as stwcs's ``readOfftab`` reads it."""
    chips = sorted(OFFSETS)
    cols = [fits.Column(name="DETCHIP", format="1I", array=np.array(chips, dtype=np.int16)),
            fits.Column(name="OBSDATE", format="10A", array=np.array(["1993-01-01"] * len(chips))),
            fits.Column(name="V2REF", format="1D", array=np.array([OFFSETS[c][0] for c in chips])),
            fits.Column(name="V3REF", format="1D", array=np.array([OFFSETS[c][1] for c in chips])),
            fits.Column(name="THETA", format="1D", array=np.array([OFFSETS[c][2] for c in chips]))]
    primary = fits.PrimaryHDU(header=fits.Header([
        ("DATE", FIXED_DATE, "date this file was written"), ("FILENAME", path.name, "name of file"),
        ("FILETYPE", "CHIP OFFSET", "type of reference file"), ("INSTRUME", "WFPC2", "instrument"),
        ("USEAFTER", "Jan 01 1993 00:00:00", "use after this date"),
        ("PEDIGREE", "DUMMY", "simulated inter-chip offsets"),
        ("DESCRIP", "Simulated WFPC2 inter-chip offsets for sad1946fu_idc.fits", "")]))
    table = fits.BinTableHDU.from_columns(cols)
    table.header["DATE"] = FIXED_DATE
    fits.HDUList([primary, table]).writeto(path, overwrite=True)
    return path


def _mapping(header: dict, selector: str) -> str:
    """Text of a CRDS mapping with its sha1sum, as CRDS computes it (the text without that line)."""
    lines = ["header = {"] + [f"    {k!r} : {v!r}," for k, v in sorted(header.items())] + ["}", "", selector, ""]
    text = "\n".join(lines)
    digest = hashlib.sha1(text.encode()).hexdigest()
    return text.replace("header = {\n", f"header = {{\n    'sha1sum' : {digest!r},\n", 1)


def write_crds_cache(cache: Path, references: dict[str, str]) -> Path:
    """A CRDS cache for the simulated WFPC2 references, usable without a CRDS server.

    Parameters
    ----------
    cache : Path
        Directory to write (``CRDS_PATH``); an existing one is replaced.
    references : dict
        ``{reftype: file name}`` (``idctab``, ``offtab``), selected for every date.

    Returns
    -------
    Path
        ``cache``.
    """
    if cache.exists():
        shutil.rmtree(cache)
    maps = cache / "mappings" / "hst"
    maps.mkdir(parents=True)
    (cache / "references" / "hst" / "wfpc2").mkdir(parents=True)
    common = {"derived_from": "astrodriz-sm simulator", "observatory": "HST"}
    imap = f"hst_wfpc2_{CRDS_CONTEXT.split('_')[1].split('.')[0]}.imap"
    (maps / CRDS_CONTEXT).write_text(_mapping(
        {**common, "mapping": "PIPELINE", "name": CRDS_CONTEXT, "parkey": ("INSTRUME",)},
        f"selector = {{\n    'WFPC2' : {imap!r},\n}}"))
    rmaps = {}
    for reftype, name in sorted(references.items()):
        rmap = f"hst_wfpc2_{reftype}_0001.rmap"
        rmaps[reftype] = rmap
        (maps / rmap).write_text(_mapping(
            {**common, "filekind": reftype.upper(), "instrument": "WFPC2", "mapping": "REFERENCE",
             "name": rmap, "parkey": (("DATE-OBS", "TIME-OBS"),)},
            f"selector = UseAfter({{\n    '1990-01-01 00:00:00' : {name!r},\n}})"))
    entries = "".join(f"    {k!r} : {v!r},\n" for k, v in sorted({"dgeofile": "N/A", **rmaps}.items()))
    (maps / imap).write_text(_mapping(
        {**common, "instrument": "WFPC2", "mapping": "INSTRUMENT", "name": imap, "parkey": ("REFTYPE",)},
        f"selector = {{\n{entries}}}"))
    config = cache / "config" / "hst"
    config.mkdir(parents=True)
    info = {"observatory": "hst", "operational_context": CRDS_CONTEXT, "edit_context": CRDS_CONTEXT,
            "versions_context": CRDS_CONTEXT, "bad_files": "", "bad_files_list": [],
            "force_remote_mode": False, "last_synced": FIXED_DATE.replace("T", " "),
            "reference_url": {}, "mapping_url": {}}
    (config / "server_config").write_text(repr(info) + "\n")
    return cache


def crds_environment(cache: Path) -> dict[str, str]:
    """Environment under which CRDS assigns best references from ``cache`` with no server."""
    return {"CRDS_PATH": str(cache), "CRDS_SERVER_URL": SERVERLESS_URL, "CRDS_OBSERVATORY": "hst",
            "CRDS_READONLY_CACHE": "1"}


def primary_header(det: Detector, *, member: str, asn_id: str, suffix: str, layouts, timing, refs,
                   pa_v3: float, ra_targ: float, dec_targ: float, exptime: float, drizcorr: str,
                   postarg: tuple[float, float]) -> fits.Header:
    """Primary header of a ``_c0m``, ``_c1m`` or ``_d0m`` file (no DETECTOR: the chips carry it).

    Parameters as for `astrodriz_sm.sim.headers.primary_header`; ``suffix`` is
    ``'c0m'``, ``'c1m'``, ``'d0m'`` or ``'flt'`` (the header-only pointing file).
    """
    h = fits.Header()
    h["NEXTEND"] = (len(layouts), "number of extensions")
    h["DATE"] = (FIXED_DATE[:10], "date this file was written (yyyy-mm-dd)")
    h["FILENAME"] = (f"{member}_{suffix}.fits", "name of file")
    h["FILETYPE"] = ({"c1m": "DQF", "d0m": "SCI"}.get(suffix, "SCI"), "type of data found in data file")
    h["TELESCOP"] = ("HST", "telescope used to acquire data")
    h["INSTRUME"] = ("WFPC2", "identifier for instrument used to acquire data")
    h["EQUINOX"] = (2000.0, "equinox of celestial coord. system")
    h["ROOTNAME"] = (member, "rootname of the observation set")
    h["IMAGETYP"] = ("EXT", "DARK/BIAS/IFLAT/UFLAT/VFLAT/KSPOT/EXT/ECAL")
    h["PRIMESI"] = ("WFPC2", "instrument designated as prime")
    h["TARGNAME"] = ("SIM-FIELD", "proposer's target name")
    h["RA_TARG"] = (ra_targ, "right ascension of the target (deg) (J2000)")
    h["DEC_TARG"] = (dec_targ, "declination of the target (deg) (J2000)")
    h["PROPOSID"] = (99999, "PEP proposal identifier")
    h["LINENUM"] = ("01.001", "proposal logsheet line number")
    h["PA_V3"] = (pa_v3, "position angle of V3-axis of HST (deg)")
    h["FGSLOCK"] = ("FINE", "commanded FGS lock (FINE,COARSE,GYROS,UNKNOWN)")
    h["MTFLAG"] = (False, "moving target flag; T if it is a moving target")
    h["DATE-OBS"] = (timing.date_obs, "UT date of start of observation (yyyy-mm-dd)")
    h["TIME-OBS"] = (timing.time_obs, "UT time of start of observation (hh:mm:ss)")
    h["EXPSTART"] = (timing.expstart, "exposure start time (Modified Julian Date)")
    h["EXPEND"] = (timing.expend, "exposure end time (Modified Julian Date)")
    h["EXPTIME"] = (exptime, "exposure duration (seconds)--calculated")
    h["DARKTIME"] = (exptime, "dark time (seconds)")
    h["EXPFLAG"] = ("NORMAL", "Exposure interruption indicator")
    for key in ("QUALCOM1", "QUALCOM2", "QUALCOM3", "QUALITY"):
        h[key] = ""
    h["POSTARG1"] = (round(postarg[0], 6), "POSTARG in axis 1 direction")
    h["POSTARG2"] = (round(postarg[1], 6), "POSTARG in axis 2 direction")
    h["MODE"] = ("FULL", "instr. mode: FULL (full res.), AREA (2x2 sum)")
    h["SERIALS"] = ("OFF", "serial clocks: ON, OFF")
    h["FILTNAM1"] = (FILTER, "first filter name")
    h["FILTNAM2"] = ("", "second filter name")
    h["FILTER1"] = (29, "first filter number (0-48)")
    h["FILTER2"] = (0, "second filter number (0-48)")
    h["FILTROT"] = (0.0, "partial filter rotation angle (degrees)")
    h["ATODGAIN"] = (det.gain, "analog to digital gain (electrons/DN)")
    h["SHUTTER"] = ("A", "shutter in place at beginning of exposure")
    h["SATURATE"] = (4095, "Data value at which saturation occurs")
    for key in ("MASKCORR", "ATODCORR", "BLEVCORR", "BIASCORR", "DARKCORR", "FLATCORR", "SHADCORR",
                "DOPHOTOM"):
        h[key] = ("PERFORM" if suffix == "d0m" else "COMPLETE", "calibration switch")
    h["DRIZCORR"] = (drizcorr, "drizzle processing")
    h["FLATFILE"] = ("N/A", "flat field file name")
    h["IDCTAB"] = (refs.idctab, "image distortion correction table")
    h["OFFTAB"] = (refs.offtab, "inter-chip offsets table")
    h["DGEOFILE"] = ("N/A", "Distortion correction image")
    h["ASN_ID"] = (asn_id.upper(), "unique identifier assigned to association")
    h["ASN_TAB"] = (f"{asn_id.lower()}_asn.fits", "name of the association table")
    h["ASN_MTYP"] = ("EXP-DTH", "Role of the Member in the Association")
    return h


def sci_header(det: Detector, *, layout, member: str, crval, crpix, cd, orientat: float,
               dq: np.ndarray | None = None) -> fits.Header:
    """SCI group header of a ``_c0m`` file: DETECTOR, a linear TAN WCS, photometry, GPIXELS."""
    from .headers import _wcs_cards

    chip = layout.ccdchip
    h = fits.Header()
    h["EXTNAME"] = ("SCI", "extension name")
    h["EXTVER"] = (layout.extver, "extension version number")
    h["DATE"] = (FIXED_DATE[:10], "date this file was written (yyyy-mm-dd)")
    h["INHERIT"] = (True, "inherit the primary header")
    h["EXPNAME"] = (member, "exposure identifier")
    h["BUNIT"] = ("COUNTS", "brightness units")
    h["DETECTOR"] = (chip, "CCD detector: PC 1, WFC 2-4")
    _wcs_cards(h, layout, crval, crpix, cd)
    h["LTV1"] = (float(layout.ltv1), "offset in X to subsection start")
    h["LTV2"] = (float(layout.ltv2), "offset in Y to subsection start")
    h["ORIENTAT"] = (round(orientat, 6), "position angle of image y axis (deg. e of n)")
    h["VAFACTOR"] = (1.0, "velocity aberration plate scale factor")
    h["PHOTMODE"] = (f"WFPC2,{chip},A2D7,{FILTER},,CAL", "Photometry mode")
    h["PHOTFLAM"] = (PHOTFLAM[chip], "inverse sensitivity (erg/cm2/A per DN)")
    h["PHOTZPT"] = (det.photzpt, "ST magnitude system zero point")
    h["PHOTPLAM"] = (det.photplam, "Pivot wavelength (Angstroms)")
    h["PHOTBW"] = (det.photbw, "RMS bandwidth of the filter (Angstroms)")
    good = layout.naxis1 * layout.naxis2 if dq is None else int((dq == 0).sum())
    h["GPIXELS"] = (good, "number of good pixels")
    return h


def dq_hdulist(primary: fits.Header, scis: list[fits.Header], dqs: list[np.ndarray]) -> fits.HDUList:
    """The ``_c1m`` file: one data-quality group per chip, named SCI as the archive's converted files are."""
    hdul = fits.HDUList([fits.PrimaryHDU(header=primary)])
    for sci, dq in zip(scis, dqs):
        h = sci.copy()
        h["BUNIT"] = "UNITLESS"
        hdul.append(fits.ImageHDU(dq.astype(np.int16), header=h))
    return hdul
