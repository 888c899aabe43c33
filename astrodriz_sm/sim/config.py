"""Configuration and result of a simulated association, and their command-line options."""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .instruments import DEFAULT_INSTRUMENT, DETECTORS, detector

__all__ = ["SimConfig", "SimResult", "add_simulate_arguments", "config_from_args"]

#: Position angle (deg, east of north) of the common pointing error.
POINTING_ERROR_PA = 45.0


# The calibrated files a simulated exposure can have.
PRODUCT_KINDS = ("flt+flc", "flt", "flc", "c0m")


@dataclass
class SimConfig:
    """What to simulate.

    Attributes
    ----------
    n_exposures : int
        Number of exposures (association members).
    full_frame : bool
        False: one 512x512 (``subarray_size``) subarray on one chip (ACS/WFC:
        chip 1); True: every chip of the detector in full (ACS/WFC: both
        4096x2048 chips).
    subarray_size : int
        Side of the subarray in pixels.
    pointing_error : float
        Arcsec: offset of every exposure's header pointing from the truth,
        at position angle 45 deg (split equally between east and north).
    guiding_failure : float
        Pixels: exposure 1 has its header pointing off by this much more,
        along the detector +x axis of the reference chip.
    drizcorr : {'PERFORM', 'OMIT'}
        DRIZCORR written to the RAW, FLT and FLC primary headers.
    products : {'flt+flc', 'flt', 'flc'} or None
        Which calibrated products to write (``'flc'``: an FLC-only delivery);
        None: every kind the detector has (`Detector.kinds`: FLT and FLC for
        ACS/WFC, ACS/HRC and WFC3/UVIS, FLT only for WFC3/IR and ACS/SBC).
    n_stars : int
        Stars drawn over the field of exposure 0.  The truth catalog also
        holds stars at the same density in a surrounding disk that no
        exposure sees, so that reference catalogs extend beyond the footprint.
    seed : int
        Seed of every random draw.
    refdir : str or None
        ACS/WFC only.  None: self-contained simulated instrument.  Otherwise a
        directory with the real ACS/WFC files qbu1641sj_idc.fits,
        qbu16424j_npl.fits and new_wfc_d2i.fits, linked into the output directory.
    root : str or None
        Association rootname (9 characters starting with the detector's
        rootname letter: 'j' for ACS, 'i' for WFC3); None: the detector's
        default (`Detector.default_root`, ``jsm001010`` for ACS/WFC).
    exptime : float
        Seconds per exposure.
    ra, dec : float
        Pointing of the reference chip's reference pixel in exposure 0 (deg).
    pa_v3 : float
        Position angle of the V3 axis (deg).
    date_obs : str
        Date of the visit (after the catalog epoch 2016.0, so proper motions matter).
    service : bool
        Also write ``<outdir>/service/``: reference catalogs (GAIAeDR3, GAIADR2,
        GAIADR1, GSC242, 2MASS), a priori headerlets with their
        astrometry-database index, and guide-star offsets (see
        `astrodriz_sm.sim.service`).
    apriori_residual : float
        Fraction of the common pointing error that the GSC240 a priori solution
        leaves (0: it removes the error completely, 1: it removes nothing).
    apriori_idctab_mismatch : bool
        Label the database solutions as computed with another IDCTAB, so that
        updatewcs ignores them and derives the a priori WCS from the guide-star
        offsets instead.
    catalog_limits : dict of str to float
        Catalog name (any case) -> ST magnitude of its faintest star, instead of
        the catalog's default depth (`astrodriz_sm.sim.service.CatalogModel.mag_limit`);
        a limit brighter than every star (e.g. 10) leaves the catalog without a
        source, so that the a posteriori fit has to fall back on the next one.
        (name, limit) pairs are accepted too; the names are checked and stored
        as the service spells them.
    zero_exptime_members : int
        The last N exposures have EXPTIME = 0, as exposures whose shutter never
        opened: TEXPTIME 0, EXPEND = EXPSTART, SCI all zero (no sky, stars or
        cosmic rays), ERR the read noise, DQ 0.
    instrument : str
        Detector to simulate, a key of `astrodriz_sm.sim.instruments.DETECTORS`:
        'acs-wfc' (default), 'acs-hrc', 'acs-sbc', 'wfc3-uvis', 'wfc3-ir'.
    template_dir : str or None
        Directory with the real files whose headers the detectors other than
        ACS/WFC are modelled on; None: ``$ASTRODRIZ_SM_REFDATA`` or the
        shared ``refdata`` next to the project (see
        `astrodriz_sm.sim.instruments.template_directory`).
    skymethod : str or None
        Sky method written in every MDRIZTAB row instead of the table's
        'localmin' ('match', 'globalmin', 'globalmin+match'); None: the
        rows as written.  Not used for WFPC2, which has no MDRIZTAB.
    """

    n_exposures: int = 3
    full_frame: bool = False
    subarray_size: int = 512
    pointing_error: float = 0.0
    guiding_failure: float = 0.0
    drizcorr: str = "PERFORM"
    products: str | None = None
    n_stars: int | None = None
    seed: int = 1
    refdir: str | None = None
    root: str | None = None
    exptime: float = 400.0
    ra: float = 150.1
    dec: float = 2.2
    pa_v3: float = 120.0
    date_obs: str = "2019-05-01"
    service: bool = True
    apriori_residual: float = 0.25
    apriori_idctab_mismatch: bool = False
    catalog_limits: dict[str, float] = field(default_factory=dict)
    zero_exptime_members: int = 0
    instrument: str = DEFAULT_INSTRUMENT
    template_dir: str | None = None
    skymethod: str | None = None

    def __post_init__(self) -> None:
        det = detector(self.instrument)  # raises ValueError for an unknown name
        self.instrument = det.name
        if self.n_exposures < 1:
            raise ValueError("n_exposures must be at least 1")
        if self.drizcorr not in ("PERFORM", "OMIT"):
            raise ValueError(f"drizcorr must be PERFORM or OMIT, not {self.drizcorr!r}")
        if self.products is None:
            self.products = "+".join(det.kinds)
        if self.products not in PRODUCT_KINDS:
            raise ValueError(f"products must be one of {', '.join(PRODUCT_KINDS)}, not {self.products!r}")
        missing = set(self.products.split("+")) - set(det.kinds)
        if missing:
            raise ValueError(f"{det.name} has no {', '.join(sorted(missing)).upper()} files "
                             f"(its kinds: {'+'.join(det.kinds)})")
        if self.root is None:
            self.root = det.default_root
        if self.n_stars is None:
            self.n_stars = det.n_stars
        if len(self.root) != 9:
            raise ValueError(f"root {self.root!r} must have 9 characters")
        if self.root[0].lower() != det.letter:
            raise ValueError(f"{det.name} rootnames start with {det.letter!r}, not {self.root!r}")
        if self.refdir is not None and det.name != DEFAULT_INSTRUMENT:
            raise ValueError("refdir (real ACS/WFC reference files) applies to acs-wfc only")
        if self.template_dir is not None:
            self.template_dir = str(self.template_dir)
        if not self.full_frame and not 16 <= self.subarray_size <= 2048:
            raise ValueError("subarray_size must lie in 16..2048")
        if self.refdir is not None:
            self.refdir = str(self.refdir)
        if not math.isfinite(self.apriori_residual):
            raise ValueError("apriori_residual must be a finite number")
        self.catalog_limits = _checked_limits(self.catalog_limits)
        if not 0 <= self.zero_exptime_members <= self.n_exposures:
            raise ValueError(f"zero_exptime_members must lie in 0..{self.n_exposures} (n_exposures)")


def _checked_limit(name, mag) -> tuple[str, float]:
    """One ``catalog_limits`` entry as (the service's spelling of the name, finite float)."""
    from .service import catalog_model

    try:
        model = catalog_model(name)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    try:
        value = float(mag)
    except (TypeError, ValueError):
        raise ValueError(f"{model.name} limit {mag!r} is not a magnitude") from None
    if not math.isfinite(value):
        raise ValueError(f"{model.name} limit {mag!r} is not finite")
    return model.name, value


def _checked_limits(limits) -> dict[str, float]:
    """``catalog_limits`` from a mapping or (name, limit) pairs, checked."""
    pairs = limits.items() if isinstance(limits, Mapping) else limits
    checked = {}
    for name, mag in pairs:
        try:
            key, value = _checked_limit(name, mag)
        except ValueError as exc:
            raise ValueError(f"catalog_limits: {exc}") from None
        checked[key] = value
    return checked


@dataclass
class SimResult:
    """Files of a simulated association.

    Attributes
    ----------
    outdir : Path
        Directory holding everything (use ``<refvar>=<outdir>/``, e.g.
        ``jref=<outdir>/`` for ACS, ``iref=<outdir>/`` for WFC3).
    root : str
        Association rootname.
    asn : Path
        Association table.
    members : list of str
        Exposure rootnames.
    flt, flc, raw : list of Path
        Delivered products per member (``flt`` empty with ``products='flc'``, ``flc`` with ``'flt'``).
    truth_catalog : Path
        ECSV truth catalog.
    cr_masks : list of Path
        Per-exposure cosmic-ray truth masks.
    reference_files : dict of str to Path
        Reference files in ``outdir`` keyed by header keyword.
    truth_json : Path
        Configuration, injected/measured header offsets and, with the service
        data, the residual each a priori solution leaves.
    injected_offsets : list of (float, float)
        (east, north) arcsec header pointing error of each exposure.
    service_dir : Path or None
        ``<outdir>/service`` with the astrometry-service data, or None when
        ``SimConfig.service`` is False.
    instrument : str
        `SimConfig.instrument` of the simulation.
    refvar : str
        Environment variable the header reference-file names use (``jref``, ``iref``, ``uref``).
    c0m : list of Path
        WFPC2: the ``_c0m`` file of each member (each with its ``_c1m``; ``raw`` holds the ``_d0m``).
    environment : dict
        What a pipeline's environment needs for these files: ``<refvar>=<outdir>/`` and, for WFPC2,
        the CRDS cache (``CRDS_PATH`` and friends) that lets ``apply_bestrefs`` run with no server.
    """

    outdir: Path
    root: str
    asn: Path
    members: list[str]
    flt: list[Path]
    flc: list[Path]
    raw: list[Path]
    truth_catalog: Path
    cr_masks: list[Path]
    reference_files: dict[str, Path]
    truth_json: Path | None = None
    injected_offsets: list[tuple[float, float]] = field(default_factory=list)
    service_dir: Path | None = None
    instrument: str = DEFAULT_INSTRUMENT
    refvar: str = "jref"
    c0m: list[Path] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to ``parser`` (see `config_from_args`)."""
    d = SimConfig()
    g = parser.add_argument_group("simulation")
    g.add_argument("--instrument", choices=list(DETECTORS), default=d.instrument,
                   help=f"detector to simulate (default {d.instrument})")
    g.add_argument("--n-exposures", type=int, default=d.n_exposures, metavar="N",
                   help=f"exposures in the association (default {d.n_exposures})")
    g.add_argument("--full-frame", action="store_true",
                   help="every chip in full (ACS/WFC: two 4096x2048 chips) instead of one subarray")
    g.add_argument("--subarray-size", type=int, default=d.subarray_size, metavar="PIX",
                   help=f"subarray side in pixels (default {d.subarray_size})")
    g.add_argument("--pointing-error", type=float, default=d.pointing_error, metavar="ARCSEC",
                   help="common header pointing error of all exposures, at PA 45 deg")
    g.add_argument("--guiding-failure", type=float, default=d.guiding_failure, metavar="PIX",
                   help="extra header pointing error of exposure 1, along detector x")
    g.add_argument("--drizcorr", choices=["PERFORM", "OMIT"], default=d.drizcorr,
                   help="DRIZCORR switch in the RAW/FLT/FLC headers")
    g.add_argument("--kinds", choices=PRODUCT_KINDS, default=None,
                   help="calibrated files each exposure has (default: every kind the detector has)")
    g.add_argument("--flt-only", action="store_true", help="the same as --kinds flt")
    g.add_argument("--n-stars", type=int, default=None, metavar="N",
                   help=f"stars in the truth catalog (default {d.n_stars}; wfpc2, whose field is 30 times "
                        f"larger: {detector('wfpc2').n_stars})")
    g.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    g.add_argument("--refdir", default=None, metavar="DIR",
                   help="use the real ACS/WFC IDCTAB/NPOLFILE/D2IMFILE from DIR")
    g.add_argument("--root", default=None,
                   help=f"association rootname (default {d.root} for {d.instrument}, "
                        + ", ".join(f"{k.default_root} for {k.name}" for k in DETECTORS.values()
                                    if k.name != d.instrument) + ")")
    g.add_argument("--template-dir", default=None, metavar="DIR",
                   help="real HST files the non-ACS/WFC headers are modelled on "
                        "(default $ASTRODRIZ_SM_REFDATA or ../shared/refdata)")
    g.add_argument("--exptime", type=float, default=d.exptime, metavar="SEC",
                   help=f"exposure time (default {d.exptime:g})")
    g.add_argument("--no-service", action="store_true",
                   help="do not write the astrometry-service data (OUTDIR/service)")
    g.add_argument("--apriori-residual", type=float, default=d.apriori_residual, metavar="F",
                   help="fraction of the pointing error the GSC240 a priori solution leaves "
                        f"(default {d.apriori_residual:g})")
    g.add_argument("--apriori-idctab-mismatch", action="store_true",
                   help="label the a priori solutions with another IDCTAB, so that updatewcs "
                        "derives them from the guide-star offsets")
    from .service import REFERENCE_CATALOGS

    g.add_argument("--catalog-limit", action="append", type=_catalog_limit, default=[],
                   metavar="NAME=MAG", dest="catalog_limits",
                   help="ST magnitude limit of one reference catalog instead of its default depth; "
                        "repeatable; a bright limit such as 10 empties the catalog (catalogs: "
                        + ", ".join(f"{m.name} {m.mag_limit:g}" for m in REFERENCE_CATALOGS) + ")")
    g.add_argument("--zero-exptime-members", type=int, default=d.zero_exptime_members, metavar="N",
                   help="the last N exposures have EXPTIME=0 and an all-zero SCI array")


def _catalog_limit(text: str) -> tuple[str, float]:
    """Parse ``NAME=MAG`` of ``--catalog-limit`` (argparse turns the error into one usage line)."""
    name, sep, mag = text.partition("=")
    if not sep or not name.strip() or not mag.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=MAG")
    try:
        return _checked_limit(name, mag.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """Build a `SimConfig` from options added by `add_simulate_arguments`."""
    d = SimConfig()
    return SimConfig(
        n_exposures=getattr(args, "n_exposures", d.n_exposures),
        full_frame=getattr(args, "full_frame", d.full_frame),
        subarray_size=getattr(args, "subarray_size", d.subarray_size),
        pointing_error=getattr(args, "pointing_error", d.pointing_error),
        guiding_failure=getattr(args, "guiding_failure", d.guiding_failure),
        drizcorr=getattr(args, "drizcorr", d.drizcorr),
        products="flt" if getattr(args, "flt_only", False) else getattr(args, "kinds", None),
        n_stars=getattr(args, "n_stars", None),
        seed=getattr(args, "seed", d.seed),
        refdir=getattr(args, "refdir", d.refdir),
        root=getattr(args, "root", None),
        exptime=getattr(args, "exptime", d.exptime),
        service=not getattr(args, "no_service", False),
        apriori_residual=getattr(args, "apriori_residual", d.apriori_residual),
        apriori_idctab_mismatch=getattr(args, "apriori_idctab_mismatch", d.apriori_idctab_mismatch),
        catalog_limits=dict(getattr(args, "catalog_limits", None) or {}),
        zero_exptime_members=getattr(args, "zero_exptime_members", d.zero_exptime_members),
        instrument=getattr(args, "instrument", d.instrument),
        template_dir=getattr(args, "template_dir", None),
    )
