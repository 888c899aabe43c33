"""The HST detectors the simulator can write, one `Detector` record each.

Every per-detector property lives in `DETECTORS`: geometry, PSF width, noise,
photometry keywords, the real file whose headers the simulated ones are
modelled on, the reference-file variable, the calibrated file kinds, the
rootname letter and whether cosmic rays survive calibration.

ACS/WFC keeps its self-contained instrument (see `astrodriz_sm.sim.reffiles`).
The other detectors take their headers from real MAST files (the
*templates*, in `template_directory`) and their distortion from the
template's own SCI headers: the linear IDCTAB terms are OCX10/OCX11/OCY10/OCY11
and the higher orders invert stwcs' SIP computation,
``[cx, cy][n, m] = [[OCX11, OCX10], [OCY11, OCY10]] @ [A_m_(n-m), B_m_(n-m)]``,
so that updatewcs rebuilds the template's SIP polynomial from the
simulator's IDCTAB.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

__all__ = [
    "DEFAULT_INSTRUMENT",
    "DETECTORS",
    "ChipModel",
    "Detector",
    "chip_models",
    "detector",
    "detector_of_header",
    "template_directory",
]

DEFAULT_INSTRUMENT = "acs-wfc"

#: Environment variable naming the directory with the template files.
TEMPLATE_DIR_VARIABLE = "ASTRODRIZ_SM_REFDATA"


@dataclass(frozen=True)
class Detector:
    """Everything the simulator needs to know about one HST detector.

    Attributes
    ----------
    name : str
        Name used by `SimConfig.instrument` and ``--instrument``.
    instrume, detector : str
        INSTRUME and DETECTOR keywords.
    letter : str
        First letter of its rootnames (ACS 'j', WFC3 'i', WFPC2 'u').
    default_root : str
        Association rootname when none is given.
    refvar : str
        Environment variable of its reference files (``jref``, ``iref``, ``uref``).
    kinds : tuple of str
        Calibrated files each exposure has (``('flt', 'flc')`` or ``('flt',)``).
    template : str or None
        Real file (in `template_directory`) whose headers are copied; None for
        the self-contained ACS/WFC instrument.
    template_scale : float
        Factor applied to the template's distortion coefficients (SBC, whose
        headers are adapted from HRC's, has 1.28 times larger pixels).
    chip_size : (int, int)
        Full-frame (NAXIS1, NAXIS2) of each chip.
    ccdchips : tuple of int or None
        CCDCHIP of each full-frame SCI extension in EXTVER order (None: the
        real headers have no CCDCHIP; stwcs then takes chip 1).
    subarray_chip : int
        Index in `ccdchips` of the chip a subarray is cut from.
    amps : tuple of str
        CCDAMP of each full-frame chip; `subarray_amp` of a subarray.
    subarray_amp : str
    aperture, subarray_aperture : str
        APERTURE of a full frame, and of a subarray (``{size}`` is its side).
    pixel_scale : float
        Arcsec per pixel (the IDCTAB SCALE).
    psf_sigma : float
        Gaussian PSF sigma in pixels.
    gain, readnoise : float
        e-/DN and e- written to ATODGN*/READNSE* of the amplifiers in use.
    sky_level : float
        Sky per pixel and exposure (e-).
    saturation : float
        Full well (e-): brighter pixels are clipped and flagged DQ 256.
    cosmic_rays : bool
        Whether cosmic rays are left in the calibrated files (MAMA detectors
        see none; IR up-the-ramp fitting removes them).
    cr_per_megapixel : float
        Cosmic-ray hits per million pixels in 400 s.
    photmode : str
    photflam, photplam, photbw, photzpt : float
        Photometry keywords; PHOTFLAM and PHOTZPT set the rendered count rates.
    filters : tuple of (str, str)
        Filter keywords and values (IDCTAB rows use the same names).
    bunit : str
        BUNIT of SCI and ERR: 'ELECTRONS', or 'ELECTRONS/S' for count rates.
    extensions : tuple of str
        Extensions per chip, SCI first.
    nsamp : int
        NSAMP of IR MULTIACCUM exposures (the SAMP array), else 0.
    n_stars : int
        Default number of field stars (`SimConfig.n_stars`).
    idctab, mdriztab : str
        File names of the simulator's IDCTAB and MDRIZTAB for this detector
        (9-character roots, as drizzlepac's WCS name patterns expect).
    """

    name: str
    instrume: str
    detector: str
    letter: str
    default_root: str
    refvar: str
    kinds: tuple[str, ...]
    template: str | None
    chip_size: tuple[int, int]
    ccdchips: tuple[int | None, ...]
    subarray_chip: int
    amps: tuple[str, ...]
    subarray_amp: str
    aperture: str
    subarray_aperture: str
    pixel_scale: float
    psf_sigma: float
    gain: float
    readnoise: float
    sky_level: float
    saturation: float
    cosmic_rays: bool
    cr_per_megapixel: float
    photmode: str
    photflam: float
    photplam: float
    photbw: float
    photzpt: float
    filters: tuple[tuple[str, str], ...]
    bunit: str
    extensions: tuple[str, ...]
    idctab: str
    mdriztab: str
    template_scale: float = 1.0
    nsamp: int = 0
    n_stars: int = 200

    @property
    def is_wfpc2(self) -> bool:
        """WFPC2: _c0m/_c1m files in counts, four chips, no MDRIZTAB (see `astrodriz_sm.sim.wfpc2`)."""
        return self.instrume == "WFPC2"

    @property
    def count_rate(self) -> bool:
        """True when SCI and ERR are e-/s (drizzlepac multiplies them by EXPTIME)."""
        return self.bunit.endswith("/S")

    @property
    def zero_point(self) -> float:
        """ST magnitude of a source giving 1 e-/s."""
        from .render import zero_point

        return zero_point(self.photflam, self.photzpt)

    def header_filters(self) -> dict[str, str]:
        """Filter keywords of the primary header."""
        return dict(self.filters)


_WFC = Detector(
    name="acs-wfc", instrume="ACS", detector="WFC", letter="j", default_root="jsm001010",
    refvar="jref", kinds=("flt", "flc"), template=None, chip_size=(4096, 2048),
    ccdchips=(2, 1), subarray_chip=1, amps=("CD", "AB"), subarray_amp="B",
    aperture="WFC", subarray_aperture="WFC1-{size}", pixel_scale=0.05, psf_sigma=1.0,
    gain=2.0, readnoise=4.0, sky_level=50.0, saturation=80000.0, cosmic_rays=True,
    cr_per_megapixel=1150.0, photmode="ACS WFC1 F606W", photflam=7.8624e-20, photplam=5921.1,
    photbw=672.3, photzpt=-21.1, filters=(("FILTER1", "F606W"), ("FILTER2", "CLEAR2L")),
    bunit="ELECTRONS", extensions=("SCI", "ERR", "DQ"),
    idctab="sm00001aj_idc.fits", mdriztab="sm00002aj_mdz.fits",
)

_HRC = Detector(
    name="acs-hrc", instrume="ACS", detector="HRC", letter="j", default_root="jsm002010",
    refvar="jref", kinds=("flt", "flc"), template="j8bt06nyq_sip_flt.fits", chip_size=(1024, 1024),
    ccdchips=(None,), subarray_chip=0, amps=("C",), subarray_amp="C",
    aperture="HRC", subarray_aperture="HRC-{size}", pixel_scale=0.025, psf_sigma=1.1,
    gain=2.216, readnoise=4.71, sky_level=20.0, saturation=140000.0, cosmic_rays=True,
    cr_per_megapixel=1150.0, photmode="ACS HRC F606W", photflam=1.2781042e-19, photplam=5887.9316,
    photbw=664.8866, photzpt=-21.1, filters=(("FILTER1", "F606W"), ("FILTER2", "CLEAR2S")),
    bunit="ELECTRONS", extensions=("SCI", "ERR", "DQ"),
    idctab="sm00003aj_idc.fits", mdriztab="sm00004aj_mdz.fits",
)

# SBC: the HRC headers adapted to the MAMA.  Its sensitivity (PHOTFLAM) is set
# near the optical detectors' so that the shared star field stays detectable;
# the real F150LP throughput is about a hundred times lower.
_SBC = Detector(
    name="acs-sbc", instrume="ACS", detector="SBC", letter="j", default_root="jsm003010",
    refvar="jref", kinds=("flt",), template="j8bt06nyq_sip_flt.fits", template_scale=1.28,
    chip_size=(1024, 1024), ccdchips=(None,), subarray_chip=0, amps=("N/A",), subarray_amp="N/A",
    aperture="SBC", subarray_aperture="SBC-{size}", pixel_scale=0.032, psf_sigma=1.3,
    gain=1.0, readnoise=0.0, sky_level=2.0, saturation=1.0e9, cosmic_rays=False,
    cr_per_megapixel=0.0, photmode="ACS SBC F150LP", photflam=1.2e-19, photplam=1612.0,
    photbw=40.0, photzpt=-21.1, filters=(("FILTER1", "F150LP"), ("FILTER2", "CLEAR2S")),
    bunit="ELECTRONS", extensions=("SCI", "ERR", "DQ"),
    idctab="sm00005aj_idc.fits", mdriztab="sm00006aj_mdz.fits",
)

_UVIS = Detector(
    name="wfc3-uvis", instrume="WFC3", detector="UVIS", letter="i", default_root="ism001010",
    refvar="iref", kinds=("flt", "flc"), template="sample_ipppssoot_flc.fits", chip_size=(4096, 2051),
    ccdchips=(2, 1), subarray_chip=1, amps=("CD", "AB"), subarray_amp="A",
    aperture="UVIS", subarray_aperture="UVIS1-C{size}A-SUB", pixel_scale=0.0396, psf_sigma=0.9,
    gain=1.56, readnoise=3.1, sky_level=30.0, saturation=63000.0, cosmic_rays=True,
    cr_per_megapixel=1150.0, photmode="WFC3 UVIS1 F555W", photflam=1.8379346e-19, photplam=5307.9121,
    photbw=517.13422, photzpt=-21.1, filters=(("FILTER", "F555W"),),
    bunit="ELECTRONS", extensions=("SCI", "ERR", "DQ"),
    idctab="sm00007ai_idc.fits", mdriztab="sm00008ai_mdz.fits",
)

_IR = Detector(
    name="wfc3-ir", instrume="WFC3", detector="IR", letter="i", default_root="ism002010",
    refvar="iref", kinds=("flt",), template="sample_svm_flt.fits", chip_size=(1014, 1014),
    ccdchips=(None,), subarray_chip=0, amps=("ABCD",), subarray_amp="ABCD",
    aperture="IR", subarray_aperture="IRSUB{size}", pixel_scale=0.128, psf_sigma=1.0,
    gain=2.35, readnoise=20.0, sky_level=200.0, saturation=80000.0, cosmic_rays=False,
    cr_per_megapixel=0.0, photmode="WFC3 IR F110W", photflam=1.5318e-20, photplam=11534.459,
    photbw=1428.4883, photzpt=-21.1, filters=(("FILTER", "F110W"),),
    bunit="ELECTRONS/S", extensions=("SCI", "ERR", "DQ", "SAMP", "TIME"), nsamp=14,
    idctab="sm00009ai_idc.fits", mdriztab="sm00010ai_mdz.fits",
)

# WFPC2: four chips (PC1, WF2-WF4) in counts, delivered as _c0m/_c1m files; the real IDCTAB
# (astrodriz_sm.sim.wfpc2), so no template.  Gain, read noise and the A-to-D saturation are the
# ATODGAIN=7 values; the PSF sigma is in WF pixels (the PC's, in its own pixels, is wider).  As for
# SBC, the sensitivity that renders the stars is ACS/WFC's (the real F555W one is about six times
# lower), so that the shared star field is measured as well; the headers carry WFPC2's PHOTFLAM.
_WFPC2 = Detector(
    name="wfpc2", instrume="WFPC2", detector="PC", letter="u", default_root="usm001010",
    refvar="uref", kinds=("c0m",), template=None, chip_size=(800, 800),
    ccdchips=(1, 2, 3, 4), subarray_chip=2, amps=("A", "A", "A", "A"), subarray_amp="A",
    aperture="WFALL", subarray_aperture="WFALL", pixel_scale=0.0996, psf_sigma=0.9,
    gain=7.0, readnoise=5.2, sky_level=30.0, saturation=4095 * 7.0, cosmic_rays=True,
    cr_per_megapixel=1150.0, photmode="WFPC2,3,A2D7,F555W,,CAL", photflam=7.8624e-20,
    photplam=5442.9, photbw=522.0, photzpt=-21.1, filters=(("FILTNAM1", "F555W"), ("FILTNAM2", "")),
    bunit="COUNTS", extensions=("SCI",), idctab="sad1946fu_idc.fits", mdriztab="N/A", n_stars=800,
)

#: Every detector, by `Detector.name`.
DETECTORS: dict[str, Detector] = {d.name: d for d in (_WFC, _HRC, _SBC, _UVIS, _IR, _WFPC2)}


def detector(name: str) -> Detector:
    """The `Detector` called ``name`` (any case).

    Raises
    ------
    ValueError
        For an unknown name; the message lists the known ones.
    """
    key = str(name).strip().lower()
    if key not in DETECTORS:
        raise ValueError(f"unknown instrument {name!r} (known: {', '.join(DETECTORS)})")
    return DETECTORS[key]


def detector_of_header(header: fits.Header) -> Detector:
    """The `Detector` whose INSTRUME/DETECTOR a (primary) header carries; ACS/WFC if none matches."""
    instrume = str(header.get("INSTRUME", "")).strip().upper()
    if instrume == "WFPC2":
        return _WFPC2
    det = str(header.get("DETECTOR", "")).strip().upper()
    for d in DETECTORS.values():
        if (d.instrume, d.detector) == (instrume, det):
            return d
    return _WFC


def template_directory(directory: str | os.PathLike | None = None) -> Path:
    """Directory holding the template files.

    ``directory`` if given, else ``$ASTRODRIZ_SM_REFDATA``, else the shared
    ``refdata`` directory next to the project checkout.
    """
    if directory is not None:
        return Path(directory)
    env = os.environ.get(TEMPLATE_DIR_VARIABLE)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "refdata"


def template_path(det: Detector, directory: str | os.PathLike | None = None) -> Path:
    """The template file of ``det``.

    Raises
    ------
    FileNotFoundError
        If it is not in the template directory.
    """
    path = template_directory(directory) / str(det.template)
    if not path.is_file():
        raise FileNotFoundError(f"{det.name} header template {path} not found "
                                f"(set SimConfig.template_dir or ${TEMPLATE_DIR_VARIABLE})")
    return path


@dataclass(frozen=True)
class ChipModel:
    """One IDCTAB row: the distortion model of one chip.

    Attributes
    ----------
    ccdchip : int
        DETCHIP (1 when the headers have no CCDCHIP).
    xsize, ysize : int
    xref, yref : float
        Model reference pixel (full-chip pixels, 1-based).
    v2ref, v3ref, theta, scale : float
        V2/V3 of the reference pixel (arcsec), IDCTHETA (deg), SCALE (arcsec/pixel).
    cx, cy : ndarray of shape (norder + 1, norder + 1)
        ``cx[n, m]`` multiplies ``x**(n-m) * y**m`` and gives V2 (arcsec).
    """

    ccdchip: int
    xsize: int
    ysize: int
    xref: float
    yref: float
    v2ref: float
    v3ref: float
    theta: float
    scale: float
    cx: np.ndarray
    cy: np.ndarray

    @property
    def norder(self) -> int:
        return self.cx.shape[0] - 1


def _idc_from_sip(header: fits.Header) -> tuple[np.ndarray, np.ndarray]:
    """IDCTAB coefficients reproducing a header's OCX/OCY and SIP A/B terms."""
    order = int(header["A_ORDER"])
    linear = np.array([[header["OCX11"], header["OCX10"]], [header["OCY11"], header["OCY10"]]])
    cx = np.zeros((order + 1, order + 1))
    cy = np.zeros_like(cx)
    for n in range(2, order + 1):
        for m in range(n + 1):
            sip = np.array([header.get(f"A_{m}_{n - m}", 0.0), header.get(f"B_{m}_{n - m}", 0.0)])
            cx[n, m], cy[n, m] = linear @ sip
    cx[1, 0], cx[1, 1] = header["OCX10"], header["OCX11"]
    cy[1, 0], cy[1, 1] = header["OCY10"], header["OCY11"]
    return cx, cy


def chip_models(det: Detector, directory: str | os.PathLike | None = None) -> list[ChipModel]:
    """IDCTAB rows of a templated detector, one per chip in EXTVER order.

    Parameters
    ----------
    det : Detector
        A detector with a template (not ACS/WFC).
    directory : path-like, optional
        Template directory (see `template_directory`).

    Returns
    -------
    list of ChipModel
    """
    with fits.open(template_path(det, directory)) as hdul:
        scis = [hdu.header for hdu in hdul if hdu.header.get("EXTNAME") == "SCI"]
        models = []
        for k, h in enumerate(scis[:len(det.ccdchips)]):
            cx, cy = _idc_from_sip(h)
            s = det.template_scale
            models.append(ChipModel(
                ccdchip=det.ccdchips[k] or 1, xsize=det.chip_size[0], ysize=det.chip_size[1],
                xref=float(h["IDCXREF"]), yref=float(h["IDCYREF"]),
                v2ref=float(h["IDCV2REF"]), v3ref=float(h["IDCV3REF"]),
                theta=float(h.get("IDCTHETA", 0.0)),
                scale=det.pixel_scale if s != 1.0 else float(h["IDCSCALE"]),
                cx=cx * s, cy=cy * s))
    return models
