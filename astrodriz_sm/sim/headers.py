"""FITS headers of simulated ACS/WFC exposures, as the HST calibration pipeline writes them.

The keyword set is what ``stwcs.updatewcs``, AstroDrizzle and drizzlepac's
``runastrodriz``/``analyze`` read, plus the usual descriptive keywords of an
ACS/WFC FLT file.  Values are fixed or derived from the configuration, never
from the clock, so that files are reproducible byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.time import Time, TimeDelta

from .instruments import ChipModel, Detector
from .reffiles import CHIP_XREF, CHIP_YREF, FILTER1, FILTER2, ReferenceSet

__all__ = [
    "ChipLayout",
    "ExposureTiming",
    "asn_hdulist",
    "aux_header",
    "chip_layouts",
    "exposure_timing",
    "member_names",
    "primary_header",
    "sci_header",
]

# Constant file-creation stamp (real files carry processing dates; these must not vary).
FIXED_DATE = "2019-06-01T00:00:00"

# Detector properties shared by rendering and headers.
GAIN = 2.0          # e-/DN (ATODGN*)
READNOISE = 4.0     # e- (READNSE*)
PHOTFLAM = 7.8624e-20
PHOTPLAM = 5921.1
PHOTBW = 672.3
PHOTZPT = -21.1


@dataclass(frozen=True)
class ChipLayout:
    """Geometry of one SCI extension.

    Attributes
    ----------
    extver : int
        EXTVER of the SCI/ERR/DQ triplet.
    ccdchip : int
        CCDCHIP (ACS/WFC: [SCI,1] is chip 2, [SCI,2] is chip 1).
    naxis1, naxis2 : int
        Image size.
    ltv1, ltv2 : float
        Offset from full-chip to image pixels (``x_image = x_chip + LTV1``).
    xref, yref : float
        Model reference pixel of the chip (full-chip pixels; ACS/WFC's by default).
    amps : str or None
        Amplifier(s) reading out this image; None: ACS/WFC's (see `amp`).
    header_ccdchip : bool
        Whether the SCI header carries CCDCHIP (the real WFC3/IR and ACS/HRC
        headers do not; stwcs then takes chip 1).
    """

    extver: int
    ccdchip: int
    naxis1: int
    naxis2: int
    ltv1: float
    ltv2: float
    xref: float = CHIP_XREF
    yref: float = CHIP_YREF
    amps: str | None = None
    header_ccdchip: bool = True

    @property
    def crpix(self) -> tuple[float, float]:
        """Model reference pixel (XREF, YREF) in image pixels (1-based)."""
        return self.xref + self.ltv1, self.yref + self.ltv2

    @property
    def amp(self) -> str:
        """Amplifier(s) reading out this image."""
        if self.amps is not None:
            return self.amps
        if self.naxis1 == 4096:
            return "CD" if self.ccdchip == 2 else "AB"
        return "B" if self.ccdchip == 1 else "C"


@dataclass(frozen=True)
class ExposureTiming:
    """Time keywords of one exposure."""

    date_obs: str
    time_obs: str
    expstart: float
    expend: float

    @property
    def decimal_year(self) -> float:
        """Mid-exposure epoch in decimal years."""
        return float(Time(0.5 * (self.expstart + self.expend), format="mjd", scale="utc").decimalyear)


def chip_layouts(full_frame: bool, subarray_size: int, det: Detector | None = None,
                 chips: list[ChipModel] | None = None) -> list[ChipLayout]:
    """SCI extensions of an exposure.

    A subarray is a single ``subarray_size`` square on one chip (ACS/WFC:
    chip 1; others: `Detector.subarray_chip`) centred on the chip's model
    reference pixel (stwcs handles single-chip subarrays; two chips with
    different LTV2 are not handled correctly by stwcs).

    Parameters
    ----------
    full_frame : bool
    subarray_size : int
    det : Detector, optional
        Default ACS/WFC.
    chips : list of ChipModel, optional
        Distortion models of a templated detector's chips (their XREF/YREF).
    """
    if det is not None and (det.template is not None or det.is_wfpc2):
        if chips is None:
            raise ValueError(f"{det.name}: chip models are needed")
        layouts = []
        # WFPC2 has no subarray readout, and its four 800x800 chips are small: always all of them.
        full_frame = full_frame or det.is_wfpc2
        for k, (ccd, model) in enumerate(zip(det.ccdchips, chips)):
            common = {"ccdchip": model.ccdchip, "xref": model.xref, "yref": model.yref,
                      "header_ccdchip": ccd is not None}
            if full_frame:
                layouts.append(ChipLayout(k + 1, naxis1=det.chip_size[0], naxis2=det.chip_size[1],
                                          ltv1=0.0, ltv2=0.0, amps=det.amps[k], **common))
            elif k == det.subarray_chip:
                half = subarray_size // 2
                layouts.append(ChipLayout(1, naxis1=subarray_size, naxis2=subarray_size,
                                          ltv1=-(model.xref - half), ltv2=-(model.yref - half),
                                          amps=det.subarray_amp, **common))
        return layouts
    if full_frame:
        return [ChipLayout(1, 2, 4096, 2048, 0.0, 0.0), ChipLayout(2, 1, 4096, 2048, 0.0, 0.0)]
    half = subarray_size // 2
    return [ChipLayout(1, 1, subarray_size, subarray_size,
                       -(CHIP_XREF - half), -(CHIP_YREF - half))]


def member_names(root: str, n: int) -> list[str]:
    """Exposure rootnames of an association (lower case).

    ``jsm001010`` gives ``jsm001a1q``, ``jsm001a2q``, ... (``ism001010``:
    ``ism001a1q``, ...): the first six
    characters, a visit letter and exposure digit (base 36 past 9), and 'q'.
    """
    if len(root) != 9:
        raise ValueError(f"association root {root!r} must have 9 characters")
    digits = "123456789abcdefghijklmnopqrstuvwxyz"
    if n > len(digits):
        raise ValueError(f"at most {len(digits)} exposures per association")
    return [f"{root[:6]}a{digits[i]}q".lower() for i in range(n)]


def exposure_timing(date_obs: str, exptime: float, index: int) -> ExposureTiming:
    """Start/end of exposure ``index``: the visit starts at 10:00 UT, exposures 60 s apart."""
    start = Time(f"{date_obs}T10:00:00", scale="utc") + TimeDelta(index * (exptime + 60.0), format="sec")
    start_iso = start.isot
    return ExposureTiming(date_obs=start_iso[:10], time_obs=start_iso[11:19],
                          expstart=round(float(start.mjd), 8),
                          expend=round(float(start.mjd) + exptime / 86400.0, 8))


def primary_header(*, member: str, asn_id: str, suffix: str, layouts: list[ChipLayout],
                   timing: ExposureTiming, refs: ReferenceSet, pa_v3: float,
                   ra_targ: float, dec_targ: float, exptime: float, drizcorr: str,
                   postarg: tuple[float, float]) -> fits.Header:
    """Primary header of an FLT/FLC/RAW file.

    Parameters
    ----------
    member : str
        Exposure rootname (lower case).
    asn_id : str
        Association rootname.
    suffix : {'flt', 'flc', 'raw'}
        File type.
    layouts : list of ChipLayout
        SCI extensions of the file.
    timing : ExposureTiming
    refs : ReferenceSet
    pa_v3, ra_targ, dec_targ, exptime : float
    drizcorr : {'PERFORM', 'OMIT'}
    postarg : (float, float)
        Dither offset in arcsec along the aperture axes (informational).

    Returns
    -------
    astropy.io.fits.Header
    """
    subarray = layouts[0].naxis1 != 4096
    amps = "".join(sorted(set("".join(lay.amp for lay in layouts))))
    h = fits.Header()
    h["NEXTEND"] = (1 if suffix == "raw" else 3 * len(layouts), "Number of standard extensions")
    h["DATE"] = (FIXED_DATE, "date this file was written (yyyy-mm-dd)")
    h["FILENAME"] = (f"{member}_{suffix}.fits", "name of file")
    h["FILETYPE"] = ("SCI", "type of data found in data file")
    h["TELESCOP"] = ("HST", "telescope used to acquire data")
    h["INSTRUME"] = ("ACS", "identifier for instrument used to acquire data")
    h["EQUINOX"] = (2000.0, "equinox of celestial coord. system")
    h["ROOTNAME"] = (member, "rootname of the observation set")
    h["IMAGETYP"] = ("EXT", "type of exposure identifier")
    h["PRIMESI"] = ("ACS", "instrument designated as prime")
    h["TARGNAME"] = ("SIM-FIELD", "proposer's target name")
    h["RA_TARG"] = (ra_targ, "right ascension of the target (deg) (J2000)")
    h["DEC_TARG"] = (dec_targ, "declination of the target (deg) (J2000)")
    h["PROPOSID"] = (99999, "PEP proposal identifier")
    h["LINENUM"] = ("01.001", "proposal logsheet line number")
    h["FGSLOCK"] = ("FINE", "commanded FGS lock (FINE,COARSE,GYROS,UNKNOWN)")
    h["DATE-OBS"] = (timing.date_obs, "UT date of start of observation (yyyy-mm-dd)")
    h["TIME-OBS"] = (timing.time_obs, "UT time of start of observation (hh:mm:ss)")
    h["EXPSTART"] = (timing.expstart, "exposure start time (Modified Julian Date)")
    h["EXPEND"] = (timing.expend, "exposure end time (Modified Julian Date)")
    h["EXPTIME"] = (exptime, "exposure duration (seconds)--calculated")
    h["TEXPTIME"] = (exptime, "total exposure time (seconds)")
    h["EXPFLAG"] = ("NORMAL", "Exposure interruption indicator")
    h["QUALCOM1"] = ""
    h["QUALITY"] = ""
    h["PA_V3"] = (pa_v3, "position angle of V3-axis of HST (deg)")
    h["POSTARG1"] = (round(postarg[0], 6), "POSTARG in axis 1 direction")
    h["POSTARG2"] = (round(postarg[1], 6), "POSTARG in axis 2 direction")
    h["OBSTYPE"] = ("IMAGING", "observation type - imaging or spectroscopic")
    h["OBSMODE"] = ("ACCUM", "operating mode")
    h["CTEIMAGE"] = ("NONE", "type of Charge Transfer Image, if applicable")
    h["SCLAMP"] = ("NONE", "lamp status, NONE or name of lamp which is on")
    h["NRPTEXP"] = (1, "number of repeat exposures in set: default 1")
    h["SUBARRAY"] = (subarray, "data from a subarray (T) or full frame (F)")
    h["DETECTOR"] = ("WFC", "detector in use: WFC, HRC, or SBC")
    h["FILTER1"] = (FILTER1, "element selected from filter wheel 1")
    h["FILTER2"] = (FILTER2, "element selected from filter wheel 2")
    aperture = f"WFC1-{layouts[0].naxis1}" if subarray else "WFC"
    h["APERTURE"] = (aperture, "aperture name")
    h["PROPAPER"] = (aperture, "proposed aperture name")
    h["CRSPLIT"] = (1, "number of cosmic ray split exposures")
    h["MTFLAG"] = ("F", "moving target flag; T if it is a moving target")
    # Calibration switches: PERFORM in the RAW file, COMPLETE once calacs has run.
    for key in ("DQICORR", "BLEVCORR", "BIASCORR", "DARKCORR", "FLATCORR", "PHOTCORR", "EXPSCORR"):
        h[key] = "PERFORM" if suffix == "raw" else "COMPLETE"
    for key in ("ATODCORR", "FLSHCORR", "CRCORR", "SHADCORR", "RPTCORR"):
        h[key] = "OMIT"
    h["PCTECORR"] = ({"raw": "PERFORM", "flc": "COMPLETE"}.get(suffix, "OMIT"),
                     "pixel-based CTE correction")
    h["DRIZCORR"] = (drizcorr, "drizzle processing")
    h["BPIXTAB"] = "N/A"
    h["IDCTAB"] = (refs.idctab, "image distortion correction table")
    h["NPOLFILE"] = (refs.npolfile, "Non-polynomial offsets array")
    h["D2IMFILE"] = (refs.d2imfile, "Column Correction Reference File")
    h["MDRIZTAB"] = (refs.mdriztab, "MultiDrizzle parameter table")
    h["PHOTMODE"] = ("ACS WFC1 F606W", "observation configuration for photometry")
    h["PHOTFLAM"] = (PHOTFLAM, "inverse sensitivity, ergs/cm2/Ang/electron")
    h["PHOTZPT"] = (PHOTZPT, "ST magnitude zero point")
    h["PHOTPLAM"] = (PHOTPLAM, "Pivot wavelength (Angstroms)")
    h["PHOTBW"] = (PHOTBW, "RMS bandwidth of filter plus detector")
    h["CCDAMP"] = (amps, "CCD Amplifier Readout Configuration")
    h["CCDGAIN"] = (GAIN, "commanded gain of CCD")
    for amp in "ABCD":
        h[f"ATODGN{amp}"] = (GAIN, f"calibrated gain for amplifier {amp}")
    for amp in "ABCD":
        h[f"READNSE{amp}"] = (READNOISE, f"calibrated read noise for amplifier {amp}")
    h["ASN_ID"] = (asn_id.upper(), "unique identifier assigned to association")
    h["ASN_TAB"] = (f"{asn_id.lower()}_asn.fits", "name of the association table")
    h["ASN_MTYP"] = ("EXP-DTH", "Role of the Member in the Association")
    return h


def sci_header(*, layout: ChipLayout, member: str, crval: tuple[float, float],
               crpix: tuple[float, float], cd: np.ndarray, ngoodpix: int,
               orientat: float, meandark: float = 0.0) -> fits.Header:
    """SCI extension header with an OPUS-style (linear TAN, no distortion) WCS.

    Parameters
    ----------
    layout : ChipLayout
    member : str
        Exposure rootname (EXPNAME).
    crval, crpix : (float, float)
        WCS reference point (deg) and pixel (1-based).
    cd : ndarray of shape (2, 2)
        CD matrix (deg/pixel).
    ngoodpix : int
        Number of pixels with DQ 0.
    orientat : float
        Position angle of the image y axis (deg east of north).
    meandark : float, optional
        Dark current subtracted (e-), read by AstroDrizzle.

    Returns
    -------
    astropy.io.fits.Header
    """
    h = fits.Header()
    h["EXTNAME"] = ("SCI", "extension name")
    h["EXTVER"] = (layout.extver, "extension version number")
    h["DATE"] = (FIXED_DATE, "date this file was written (yyyy-mm-dd)")
    h["INHERIT"] = (True, "inherit the primary header")
    h["EXPNAME"] = (member, "exposure identifier")
    h["BUNIT"] = ("ELECTRONS", "brightness units")
    h["CCDCHIP"] = (layout.ccdchip, "CCD chip (1 or 2)")
    _wcs_cards(h, layout, crval, crpix, cd)
    h["LTV1"] = (float(layout.ltv1), "offset in X to subsection start")
    h["LTV2"] = (float(layout.ltv2), "offset in Y to subsection start")
    h["LTM1_1"] = (1.0, "reciprocal of sampling rate in X")
    h["LTM2_2"] = (1.0, "reciprocal of sampling rate in Y")
    h["ORIENTAT"] = (round(orientat, 6), "position angle of image y axis (deg. e of n)")
    h["RA_APER"] = (crval[0], "RA of aperture reference position")
    h["DEC_APER"] = (crval[1], "Declination of aperture reference position")
    h["PA_APER"] = (round(orientat, 6), "Position Angle of reference aperture center (de")
    h["VAFACTOR"] = (1.0, "velocity aberration plate scale factor")
    h["CENTERA1"] = (int(layout.naxis1 // 2 - layout.ltv1 + 1), "subarray axis1 center pt in unbinned dect. pix")
    h["CENTERA2"] = (int(layout.naxis2 // 2 - layout.ltv2 + 1), "subarray axis2 center pt in unbinned dect. pix")
    h["SIZAXIS1"] = (layout.naxis1, "subarray axis1 size in unbinned detector pixels")
    h["SIZAXIS2"] = (layout.naxis2, "subarray axis2 size in unbinned detector pixels")
    h["BINAXIS1"] = (1, "axis1 data bin size in unbinned detector pixels")
    h["BINAXIS2"] = (1, "axis2 data bin size in unbinned detector pixels")
    h["NGOODPIX"] = (ngoodpix, "number of good pixels")
    h["SDQFLAGS"] = (31743, "serious data quality flags")
    h["MEANDARK"] = (meandark, "average of the dark values subtracted")
    h["MEANBLEV"] = (0.0, "average of all bias levels subtracted")
    return h


def _wcs_cards(h: fits.Header, layout: ChipLayout, crval, crpix, cd) -> None:
    h["WCSAXES"] = (2, "number of World Coordinate System axes")
    h["CRPIX1"] = (float(crpix[0]), "x-coordinate of reference pixel")
    h["CRPIX2"] = (float(crpix[1]), "y-coordinate of reference pixel")
    h["CRVAL1"] = (float(crval[0]), "first axis value at reference pixel")
    h["CRVAL2"] = (float(crval[1]), "second axis value at reference pixel")
    h["CTYPE1"] = ("RA---TAN", "the coordinate type for the first axis")
    h["CTYPE2"] = ("DEC--TAN", "the coordinate type for the second axis")
    h["CD1_1"] = (float(cd[0, 0]), "partial of first axis coordinate w.r.t. x")
    h["CD1_2"] = (float(cd[0, 1]), "partial of first axis coordinate w.r.t. y")
    h["CD2_1"] = (float(cd[1, 0]), "partial of second axis coordinate w.r.t. x")
    h["CD2_2"] = (float(cd[1, 1]), "partial of second axis coordinate w.r.t. y")


def aux_header(extname: str, sci: fits.Header) -> fits.Header:
    """ERR or DQ extension header: same WCS and geometry as its SCI extension."""
    h = fits.Header()
    h["EXTNAME"] = (extname, "extension name")
    h["EXTVER"] = (sci["EXTVER"], "extension version number")
    h["DATE"] = (FIXED_DATE, "date this file was written (yyyy-mm-dd)")
    h["INHERIT"] = (True, "inherit the primary header")
    h["EXPNAME"] = sci["EXPNAME"]
    if extname == "ERR":
        h["BUNIT"] = ("ELECTRONS", "brightness units")
    h["CCDCHIP"] = sci["CCDCHIP"]
    for key in ("WCSAXES", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CTYPE1", "CTYPE2",
                "CD1_1", "CD1_2", "CD2_1", "CD2_2", "LTV1", "LTV2", "LTM1_1", "LTM2_2"):
        h[key] = (sci[key], sci.comments[key])
    return h


def asn_hdulist(asn_id: str, members: list[str], *, ra_targ: float, dec_targ: float,
                date_obs: str, det: Detector | None = None,
                rows: list[tuple[str, str]] | None = None) -> fits.HDUList:
    """Association table: by default EXP-DTH rows for members and a PROD-DTH row for the product.

    Parameters
    ----------
    asn_id : str
        Association rootname (also the product name).
    members : list of str
        Exposure rootnames.
    ra_targ, dec_targ : float
        Target coordinates (deg).
    date_obs : str
        Date of the first exposure.
    det : Detector, optional
        Default ACS/WFC.
    rows : list of (str, str), optional
        ``(MEMNAME, MEMTYPE)`` of every row instead (`SimConfig.association_rows`).

    Returns
    -------
    astropy.io.fits.HDUList
    """
    instrume, detector = (det.instrume, det.detector) if det is not None else ("ACS", "WFC")
    if rows is None:
        rows = [(m.upper(), "EXP-DTH") for m in members] + [(asn_id.upper(), "PROD-DTH")]
    names, types = [name for name, _ in rows], [memtype for _, memtype in rows]
    table = fits.BinTableHDU.from_columns([
        fits.Column(name="MEMNAME", format="14A", array=np.array(names)),
        fits.Column(name="MEMTYPE", format="14A", array=np.array(types)),
        fits.Column(name="MEMPRSNT", format="L", array=np.ones(len(names), dtype=bool)),
    ], name="ASN")
    table.header["EXTVER"] = 1
    table.header["DATE"] = FIXED_DATE
    h = fits.Header()
    h["NEXTEND"] = (1, "Number of standard extensions")
    h["DATE"] = (FIXED_DATE, "date this file was written (yyyy-mm-dd)")
    h["FILENAME"] = (f"{asn_id.lower()}_asn.fits", "name of file")
    h["FILETYPE"] = ("ASN_TABLE", "type of data found in data file")
    h["TELESCOP"] = ("HST", "telescope used to acquire data")
    h["INSTRUME"] = (instrume, "identifier for instrument used to acquire data")
    h["DETECTOR"] = (detector, "detector in use")
    if (instrume, detector) == ("ACS", "WFC"):
        h.comments["DETECTOR"] = "detector in use: WFC, HRC, or SBC"
    h["EQUINOX"] = (2000.0, "equinox of celestial coord. system")
    h["ROOTNAME"] = (asn_id.lower(), "rootname of the observation set")
    h["PRIMESI"] = (instrume, "instrument designated as prime")
    h["TARGNAME"] = ("SIM-FIELD", "proposer's target name")
    h["RA_TARG"] = (ra_targ, "right ascension of the target (deg) (J2000)")
    h["DEC_TARG"] = (dec_targ, "declination of the target (deg) (J2000)")
    h["DATE-OBS"] = (date_obs, "UT date of start of first exposure")
    h["PROPOSID"] = (99999, "PEP proposal identifier")
    h["ASN_ID"] = (asn_id.upper(), "unique identifier assigned to association")
    h["ASN_TAB"] = (f"{asn_id.lower()}_asn.fits", "name of the association table")
    return fits.HDUList([fits.PrimaryHDU(header=h), table])
