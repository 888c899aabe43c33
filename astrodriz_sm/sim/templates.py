"""Headers of simulated exposures modelled on real MAST files (every detector but ACS/WFC).

The primary and extension headers of a detector's template file (see
`astrodriz_sm.sim.instruments`) are copied card by card, so that the
simulated files carry the keywords MAST delivers.  What describes the
template's own observation is replaced: identity, timing, pointing, filter,
subarray, reference files, photometry, gain and read noise, image statistics.
Every WCS the template carries (the primary one with its SIP, lookup-table and
fit keywords, the alternate and headerlet WCSs) is removed, and an OPUS-style
linear TAN WCS is written in its place, as the calibration pipeline delivers
before updatewcs.  Values are fixed or derived from the configuration, never
from the clock.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from .headers import FIXED_DATE, ChipLayout, ExposureTiming
from .instruments import Detector, template_path
from .reffiles import ReferenceSet

__all__ = ["Templates", "load_templates", "templated_aux", "templated_primary", "templated_sci"]

# Keywords of a WCS, each also with an alternate-WCS letter (CRPIX1A, WCSNAMEO, ...).
_WCS_BASE = ("WCSNAME", "WCSAXES", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CTYPE1", "CTYPE2",
             "CUNIT1", "CUNIT2", "CDELT1", "CDELT2", "CD1_1", "CD1_2", "CD2_1", "CD2_2",
             "PC1_1", "PC1_2", "PC2_1", "PC2_2", "RADESYS", "LONPOLE", "LATPOLE", "CRDER1",
             "CRDER2", "CSYER1", "CSYER2", "HDRNAME", "WCSTYPE", "RMS_RA", "RMS_DEC", "MJDREF",
             "MJD-OBS", "DATEREF")
_WCS_KEY = re.compile(r"^(?:{})[A-Z]?$".format("|".join(re.escape(k) for k in _WCS_BASE)))
# SIP, lookup-table distortion, IDC model and fit bookkeeping that updatewcs writes.
_DISTORTION_KEY = re.compile(
    r"^(?:(?:A|B|AP|BP)_(?:\d+_\d+|ORDER|DMAX)|D2IM\w*|DP\d|CPDIS\d|CPERR\d|NPOLEXT|OCX\d\d|OCY\d\d"
    r"|IDC\w+|TDD\w+|SIPNAME|DISTNAME|NPOLFILE|D2IMFILE|IDCTAB|WCSNAX\d|S_REGION|MDRIZSKY"
    r"|NMATCHES|FITGEOM|FITNAME|MATCHDAT|WCSVERS|IRAF-TLM)$")
# Structural cards astropy writes itself.
_STRUCTURE = {"XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT", "EXTEND", "SIMPLE"}
# CCD-only keywords that an SBC (MAMA) header adapted from HRC's must not carry.
_CCD_ONLY = re.compile(r"^(?:CCDAMP|CCDGAIN|CCDOFST\w|ATODGN\w|READNSE\w|BIASLEV\w|MEANBLEV|MEANFLSH"
                       r"|FLASHCUR|FLASHDUR|FLASHSTA|SHUTRPOS|CRSPLIT)$")


@dataclass(frozen=True)
class Templates:
    """Headers of a template file.

    Attributes
    ----------
    primary : astropy.io.fits.Header
    extensions : dict of (str, int) to astropy.io.fits.Header
        Image-extension headers by (EXTNAME, EXTVER).
    """

    primary: fits.Header
    extensions: dict[tuple[str, int], fits.Header]

    def extension(self, extname: str, ccdchip: int | None) -> fits.Header | None:
        """Header of the template's ``extname`` for a chip (by CCDCHIP of its SCI), or None."""
        scis = sorted(v for (n, v) in self.extensions if n == "SCI")
        extver = scis[0]
        for v in scis:
            if ccdchip is not None and self.extensions[("SCI", v)].get("CCDCHIP") == ccdchip:
                extver = v
        return self.extensions.get((extname, extver))


@functools.lru_cache(maxsize=8)
def _read_templates(path: str) -> Templates:
    with fits.open(path) as hdul:
        primary = hdul[0].header.copy()
        extensions = {(hdu.header["EXTNAME"], int(hdu.header.get("EXTVER", 1))): hdu.header.copy()
                      for hdu in hdul[1:] if isinstance(hdu, fits.ImageHDU) and "EXTNAME" in hdu.header}
    return Templates(primary, extensions)


def load_templates(det: Detector, template_dir=None) -> Templates:
    """Headers of ``det``'s template file (read once per process)."""
    return _read_templates(str(template_path(det, template_dir)))


def _stripped(template: fits.Header, det: Detector) -> fits.Header:
    """A copy of a template header without structure, WCS and distortion cards."""
    h = fits.Header()
    for card in template.cards:
        # Record-valued cards (DP1 = 'EXTVER: 1') come as 'DP1.EXTVER'.
        key = card.keyword.split(".")[0]
        if key in _STRUCTURE or _WCS_KEY.match(key) or _DISTORTION_KEY.match(key):
            continue
        if det.detector == "SBC" and _CCD_ONLY.match(key):
            continue
        # A fresh card: the cached template must not change with the copy.
        h.append(fits.Card.fromstring(card.image), end=True)
    return h


def _put(h: fits.Header, key: str, value, comment: str | None = None) -> None:
    """Set a keyword in place if the template has it, else append it."""
    if key in h:
        h[key] = value
    else:
        h[key] = (value, comment) if comment else value


def templated_primary(templates: Templates, det: Detector, *, member: str, asn_id: str, suffix: str,
                      layouts: list[ChipLayout], timing: ExposureTiming, refs: ReferenceSet,
                      pa_v3: float, ra_targ: float, dec_targ: float, exptime: float, drizcorr: str,
                      postarg: tuple[float, float]) -> fits.Header:
    """Primary header of an FLT/FLC/RAW file, from the template's.

    Parameters as for `astrodriz_sm.sim.headers.primary_header`, plus the
    detector's templates and `Detector`.

    Returns
    -------
    astropy.io.fits.Header
    """
    full = layouts[0].naxis1 == det.chip_size[0] and layouts[0].naxis2 == det.chip_size[1]
    h = _stripped(templates.primary, det)
    n_ext = 1 if suffix == "raw" else len(det.extensions) * len(layouts)
    _put(h, "NEXTEND", n_ext, "Number of standard extensions")
    _put(h, "DATE", FIXED_DATE[:10], "date this file was written (yyyy-mm-dd)")
    _put(h, "FILENAME", f"{member}_{suffix}.fits", "name of file")
    _put(h, "INSTRUME", det.instrume, "identifier for instrument used to acquire data")
    _put(h, "ROOTNAME", member, "rootname of the observation set")
    _put(h, "IMAGETYP", "EXT", "type of exposure identifier")
    _put(h, "PRIMESI", det.instrume, "instrument designated as prime")
    _put(h, "TARGNAME", "SIM-FIELD", "proposer's target name")
    _put(h, "RA_TARG", ra_targ, "right ascension of the target (deg) (J2000)")
    _put(h, "DEC_TARG", dec_targ, "declination of the target (deg) (J2000)")
    _put(h, "PROPOSID", 99999, "PEP proposal identifier")
    _put(h, "LINENUM", "01.001", "proposal logsheet line number")
    for key in ("PR_INV_L", "PR_INV_F", "PR_INV_M"):
        if key in h:
            h[key] = "SIMULATED" if key == "PR_INV_L" else ""
    _put(h, "FGSLOCK", "FINE", "commanded FGS lock (FINE,COARSE,GYROS,UNKNOWN)")
    _put(h, "GYROMODE", "T", "number of gyros scheduled, T=3+OBAD")
    _put(h, "MTFLAG", h.get("MTFLAG", "F"), "moving target flag; T if it is a moving target")
    _put(h, "DATE-OBS", timing.date_obs, "UT date of start of observation (yyyy-mm-dd)")
    _put(h, "TIME-OBS", timing.time_obs, "UT time of start of observation (hh:mm:ss)")
    _put(h, "EXPSTART", timing.expstart, "exposure start time (Modified Julian Date)")
    _put(h, "EXPEND", timing.expend, "exposure end time (Modified Julian Date)")
    _put(h, "EXPTIME", exptime, "exposure duration (seconds)--calculated")
    _put(h, "TEXPTIME", exptime, "total exposure time (seconds)")
    if "DARKTIME" in h:
        h["DARKTIME"] = exptime
    _put(h, "EXPFLAG", "NORMAL", "Exposure interruption indicator")
    for key in ("QUALCOM1", "QUALCOM2", "QUALCOM3", "QUALITY"):
        _put(h, key, "")
    _put(h, "PA_V3", pa_v3, "position angle of V3-axis of HST (deg)")
    _put(h, "POSTARG1", round(postarg[0], 6), "POSTARG in axis 1 direction")
    _put(h, "POSTARG2", round(postarg[1], 6), "POSTARG in axis 2 direction")
    _put(h, "SUBARRAY", not full, "data from a subarray (T) or full frame (F)")
    _put(h, "DETECTOR", det.detector, "detector in use")
    for key, value in det.filters:
        _put(h, key, value, "element selected from filter wheel")
    aperture = det.aperture if full else det.subarray_aperture.format(size=layouts[0].naxis1)
    _put(h, "APERTURE", aperture, "aperture name")
    _put(h, "PROPAPER", aperture, "proposed aperture name")
    # Calibration switches: PERFORM in the RAW file, as calibrated in the template otherwise.
    for card in h.cards:
        if card.keyword.endswith("CORR") and card.value in ("COMPLETE", "PERFORM"):
            if card.keyword == "DRIZCORR":
                continue
            h[card.keyword] = "PERFORM" if suffix == "raw" else "COMPLETE"
    if "PCTECORR" in h:
        h["PCTECORR"] = {"raw": "PERFORM", "flc": "COMPLETE"}.get(suffix, "OMIT")
    _put(h, "DRIZCORR", drizcorr, "drizzle processing")
    _put(h, "IDCTAB", refs.idctab, "image distortion correction table")
    _put(h, "NPOLFILE", refs.npolfile, "Non-polynomial offsets array")
    _put(h, "D2IMFILE", refs.d2imfile, "Column Correction Reference File")
    _put(h, "MDRIZTAB", refs.mdriztab, "MultiDrizzle parameter table")
    if "DGEOFILE" in h:
        h["DGEOFILE"] = "N/A"
    _photometry(h, det, primary=True)
    if det.detector != "SBC":
        amps = "".join(sorted(set("".join(lay.amp for lay in layouts))))
        _put(h, "CCDAMP", amps, "CCD Amplifier Readout Configuration")
        for amp in "ABCD":
            # Amplifiers not read out stay 0 (drizzlepac averages the non-zero ones).
            used = amp in amps
            _put(h, f"ATODGN{amp}", det.gain if used else 0.0, f"calibrated gain for amplifier {amp}")
        for amp in "ABCD":
            used = amp in amps
            _put(h, f"READNSE{amp}", det.readnoise if used else 0.0,
                 f"calibrated read noise for amplifier {amp}")
    _put(h, "ASN_ID", asn_id.upper(), "unique identifier assigned to association")
    _put(h, "ASN_TAB", f"{asn_id.lower()}_asn.fits", "name of the association table")
    _put(h, "ASN_MTYP", "EXP-DTH", "Role of the Member in the Association")
    return h


def _photometry(h: fits.Header, det: Detector, primary: bool) -> None:
    """Photometry keywords where the template has them (IR: always in the primary header)."""
    values = {"PHOTMODE": det.photmode, "PHOTFLAM": det.photflam, "PHOTFNU": None,
              "PHOTZPT": det.photzpt, "PHOTPLAM": det.photplam, "PHOTBW": det.photbw,
              "PHTFLAM1": det.photflam, "PHTFLAM2": det.photflam, "PHTRATIO": 1.0}
    for key, value in values.items():
        if value is not None and (key in h or (primary and det.count_rate and key.startswith("PHOT"))):
            _put(h, key, value)


def _wcs_block(crval, crpix, cd) -> list[tuple[str, object, str]]:
    return [("WCSAXES", 2, "number of World Coordinate System axes"),
            ("CRPIX1", float(crpix[0]), "x-coordinate of reference pixel"),
            ("CRPIX2", float(crpix[1]), "y-coordinate of reference pixel"),
            ("CRVAL1", float(crval[0]), "first axis value at reference pixel"),
            ("CRVAL2", float(crval[1]), "second axis value at reference pixel"),
            ("CTYPE1", "RA---TAN", "the coordinate type for the first axis"),
            ("CTYPE2", "DEC--TAN", "the coordinate type for the second axis"),
            ("CD1_1", float(cd[0, 0]), "partial of first axis coordinate w.r.t. x"),
            ("CD1_2", float(cd[0, 1]), "partial of first axis coordinate w.r.t. y"),
            ("CD2_1", float(cd[1, 0]), "partial of second axis coordinate w.r.t. x"),
            ("CD2_2", float(cd[1, 1]), "partial of second axis coordinate w.r.t. y")]


def _with_wcs(h: fits.Header, crval, crpix, cd, layout: ChipLayout) -> fits.Header:
    """Insert the linear WCS where OPUS puts it (before LTV1), and the subarray offsets."""
    anchor = "LTV1" if "LTV1" in h else None
    for key, value, comment in _wcs_block(crval, crpix, cd):
        if anchor is None:
            h.append((key, value, comment), end=True)
        else:
            h.insert(anchor, (key, value, comment))
    _put(h, "LTV1", float(layout.ltv1), "offset in X to subsection start")
    _put(h, "LTV2", float(layout.ltv2), "offset in Y to subsection start")
    _put(h, "LTM1_1", 1.0, "reciprocal of sampling rate in X")
    _put(h, "LTM2_2", 1.0, "reciprocal of sampling rate in Y")
    return h


def templated_sci(templates: Templates, det: Detector, *, layout: ChipLayout, member: str,
                  crval: tuple[float, float], crpix: tuple[float, float], cd: np.ndarray,
                  orientat: float, data: np.ndarray, err: np.ndarray, dq: np.ndarray,
                  exptime: float = 0.0) -> fits.Header:
    """SCI extension header, from the template's SCI header of the same chip.

    Parameters
    ----------
    templates : Templates
    det : Detector
    layout : ChipLayout
    member : str
        Exposure rootname (EXPNAME).
    crval, crpix : (float, float)
        WCS reference point (deg) and pixel (1-based).
    cd : ndarray of shape (2, 2)
        CD matrix (deg/pixel).
    orientat : float
        Position angle of the image y axis (deg east of north).
    data, err, dq : ndarray
        The SCI, ERR and DQ arrays (for NGOODPIX and the statistics keywords).
    exptime : float, optional
        Integration time (IR: SAMPTIME of the last sample).

    Returns
    -------
    astropy.io.fits.Header
    """
    h = _stripped(templates.extension("SCI", layout.ccdchip if layout.header_ccdchip else None), det)
    _identity(h, "SCI", layout, member)
    _put(h, "BUNIT", det.bunit, "brightness units")
    if layout.header_ccdchip:
        _put(h, "CCDCHIP", layout.ccdchip, "CCD chip (1 or 2)")
    _with_wcs(h, crval, crpix, cd, layout)
    _put(h, "ORIENTAT", round(orientat, 6), "position angle of image y axis (deg. e of n)")
    _put(h, "RA_APER", crval[0], "RA of aperture reference position")
    _put(h, "DEC_APER", crval[1], "Declination of aperture reference position")
    _put(h, "PA_APER", round(orientat, 6), "Position Angle of reference aperture center (de")
    _put(h, "VAFACTOR", 1.0, "velocity aberration plate scale factor")
    _put(h, "CENTERA1", int(layout.naxis1 // 2 - layout.ltv1 + 1), "subarray axis1 center pt in unbinned dect. pix")
    _put(h, "CENTERA2", int(layout.naxis2 // 2 - layout.ltv2 + 1), "subarray axis2 center pt in unbinned dect. pix")
    _put(h, "SIZAXIS1", layout.naxis1, "subarray axis1 size in unbinned detector pixels")
    _put(h, "SIZAXIS2", layout.naxis2, "subarray axis2 size in unbinned detector pixels")
    _photometry(h, det, primary=False)
    good = dq == 0
    _put(h, "NGOODPIX", int(good.sum()), "number of good pixels")
    _statistics(h, data, err, good)
    _put(h, "MEANDARK", float(h.get("MEANDARK", 0.0)), "average of the dark values subtracted")
    if "SAMPTIME" in h:
        h["SAMPTIME"] = exptime
    return h


def _identity(h: fits.Header, extname: str, layout: ChipLayout, member: str) -> None:
    _put(h, "EXTNAME", extname, "extension name")
    _put(h, "EXTVER", layout.extver, "extension version number")
    _put(h, "DATE", FIXED_DATE[:10], "date this file was written (yyyy-mm-dd)")
    _put(h, "INHERIT", True, "inherit the primary header")
    if "ROOTNAME" in h:
        h["ROOTNAME"] = member
    _put(h, "EXPNAME", member, "exposure identifier")


def _statistics(h: fits.Header, data: np.ndarray, err: np.ndarray, good: np.ndarray) -> None:
    """GOOD*/SNR* statistics of the good pixels, rounded so that they print reproducibly."""
    if not good.any():
        values = dict.fromkeys(("GOODMIN", "GOODMAX", "GOODMEAN", "SNRMIN", "SNRMAX", "SNRMEAN"), 0.0)
    else:
        d = data[good].astype(np.float64)
        e = err[good].astype(np.float64)
        snr = np.divide(d, e, out=np.zeros_like(d), where=e > 0)
        values = {"GOODMIN": d.min(), "GOODMAX": d.max(), "GOODMEAN": d.mean(),
                  "SNRMIN": snr.min(), "SNRMAX": snr.max(), "SNRMEAN": snr.mean()}
    for key, value in values.items():
        if key in h:
            h[key] = float(np.float32(value))


def templated_aux(templates: Templates, det: Detector, extname: str, sci: fits.Header,
                  layout: ChipLayout) -> fits.Header:
    """ERR, DQ, SAMP or TIME header: the template's (or a plain one), with the SCI WCS."""
    template = templates.extension(extname, layout.ccdchip if layout.header_ccdchip else None)
    if template is None:
        h = fits.Header()
        _identity(h, extname, layout, sci["EXPNAME"])
        if extname == "ERR":
            h["BUNIT"] = (det.bunit, "brightness units")
        if layout.header_ccdchip:
            h["CCDCHIP"] = sci["CCDCHIP"]
        h["LTV1"] = 0.0
    else:
        h = _stripped(template, det)
        _identity(h, extname, layout, sci["EXPNAME"])
        if extname == "ERR":
            _put(h, "BUNIT", det.bunit, "brightness units")
    crval = (sci["CRVAL1"], sci["CRVAL2"])
    crpix = (sci["CRPIX1"], sci["CRPIX2"])
    cd = np.array([[sci["CD1_1"], sci["CD1_2"]], [sci["CD2_1"], sci["CD2_2"]]])
    _with_wcs(h, crval, crpix, cd, layout)
    for key in ("NGOODPIX", "GOODMIN", "GOODMAX", "GOODMEAN"):
        if key in h:
            # The ERR statistics are not worth recomputing; the SCI ones describe the chip.
            h[key] = sci.get(key, 0) if key == "NGOODPIX" else 0.0
    if "VAFACTOR" in h:
        h["VAFACTOR"] = 1.0
    if "PA_APER" in h:
        h["PA_APER"] = sci["PA_APER"]
    return h

