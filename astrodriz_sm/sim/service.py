"""Data of a local astrometry service for a simulated association.

`write_service_data` fills ``<outdir>/service/`` with what the STScI web
services would answer for the simulated exposures, so that the a priori and
a posteriori stages of the pipeline can run against a local stand-in:

``catalogs/<name>.ecsv``, one per catalog of `REFERENCE_CATALOGS`
    The truth-catalog stars down to the catalog's depth (`CatalogModel.mag_limit`,
    or the limit given in `SimConfig.catalog_limits`), over a disk somewhat
    larger than the footprint, at the catalog's epoch: the truth propagated
    there plus errors drawn at the catalog's accuracy.  Columns ``ra, dec``
    (deg), ``mag``, ``ra_error, dec_error`` (mas), ``pmra, pmdec`` (mas/yr, pmra
    including cos(dec)), ``pmra_error, pmdec_error`` (mas/yr), ``epoch``
    (decimal year) and ``objID`` (``objID - CatalogModel.objid_base`` is the
    row of the star in the truth catalog); catalogs without proper motions
    have no ``pm*`` columns.  The local service loads this one layout and
    answers each catalog with the columns drizzlepac reads for it (GSC242's
    ``raErr``, ``rapm``..., 2MASS's ``objid`` and ``jdate``; see
    `astrodriz_sm.services.data.answer_columns`).

    ========  ======  ==============  ============  ==========  ========  ========
    name      epoch   position (mas)  pm (mas/yr)   depth (ST)  of stars  mag
    ========  ======  ==============  ============  ==========  ========  ========
    GAIAeDR3  2016.0  0.1 - 0.5       0.05 - 0.3    25.3        65 %      ST - 4.3
    GAIADR2   2015.5  0.25 - 1.25     0.125 - 0.75  25.3        65 %      ST - 4.3
    GAIADR1   2015.0  1 - 2           none          25.3        65 %      ST - 4.3
    GSC242    2015.5  20 - 60         1 - 5         24.3        36 %      ST - 4.3
    2MASS     2000.0  60 - 100        none          21.3        6 %       ST - 5.8
    ========  ======  ==============  ============  ==========  ========  ========

    Errors are per coordinate, from the brightest star to one at the default
    depth.  The GAIA releases share the random stream `SERVICE_STREAM` (in this
    order); GSC242 and 2MASS have streams of their own, so neither depends on
    the others' depth.  A limit brighter than the default keeps a subset of
    the default catalog (the other catalogs stay as they are); a fainter one
    adds stars drawn from the catalog's `DEEPER_STREAM`.
``headerlets/`` (one headerlet file per solution, named by ``model.headerlet_name``)
    Two a priori solutions per exposure (FLT and FLC share the rootname and
    the WCS), made with ``stwcs.wcsutil.headerlet.create_headerlet`` from the
    exposure after ``updatewcs(use_db=False)`` with its reference point moved:
    ``IDC_<idcroot>-GSC240`` leaves `SimConfig.apriori_residual` of the common
    pointing error (exposure i's moved ``i * SimConfig.apriori_scatter`` arcsec
    further east), ``IDC_<idcroot>-HSC30`` leaves `HSC30_RESIDUAL` of it.
``astrometrydb.ecsv``
    Index of the headerlets: ``rootname, wcsname, headerlet`` (path relative to
    ``service/``) and ``best`` (True for GSC240).
``gsc_offsets.ecsv``
    Per exposure, the fields of the GSSS ``GSCconvert`` answer
    (``deltaRA, deltaDEC, deltaROLL, deltaSCALE, dGSinputRA, dGSinputDEC,
    dGSoutputRA, dGSoutputDEC, outputCatalog``) from which
    ``AstrometryDB.apply_new_apriori`` derives the same GSC240 correction.

How stwcs 1.7.7 reads these (``stwcs.updatewcs.astrometry_utils``):

- ``AstrometryDB.updateObs`` attaches a database headerlet only if the
  exposure's IDCTAB root occurs in its WCSNAME, then applies the one flagged
  best as primary (``force=True``, so DISTNAME need not match; DESTIM must
  equal the exposure's ROOTNAME).  With no applicable headerlet it calls
  ``apply_new_apriori``, which is what ``SimConfig.apriori_idctab_mismatch``
  provokes by labelling the solutions with `MISMATCH_IDCROOT`.
- ``find_gsc_offset`` moves the exposure's reference point by the offset of
  the guide star from ``(dGSinputRA, dGSinputDEC)`` to ``(dGSoutputRA,
  dGSoutputDEC)`` (decimal degrees, ICRS) measured in the guide star's own
  offset frame.  ``deltaRA``/``deltaDEC`` (here output minus input, decimal
  degrees) only gate the correction (both must be non-zero) and, like
  ``deltaROLL`` (deg) and ``deltaSCALE`` (ratio), are only recorded in the
  new headerlet (D_RA, D_DEC, D_ROLL, D_SCALE).  ``outputCatalog`` becomes
  the WCSNAME suffix (``IDC_<idcroot>-GSC240``).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.table import Table, vstack
from astropy.wcs import FITSFixedWarning

from ..model import headerlet_name
from .config import SimConfig
from .headers import FIXED_DATE, ChipLayout
from .render import MAG_RANGE, propagate
from .wcs import chip_center_offset, offset_radec

__all__ = [
    "DEEPER_STREAM",
    "GAIA_G_OFFSET",
    "GAIA_MAG_LIMIT",
    "GAIA_OBJID_BASE",
    "GAIA_RELEASES",
    "GSC242",
    "GSC_OBJID_BASE",
    "GUIDE_STAR_OFFSET",
    "HSC30_RESIDUAL",
    "MISMATCH_IDCROOT",
    "REFERENCE_CATALOGS",
    "SERVICE_STREAM",
    "TWOMASS",
    "TWOMASS_OBJID_BASE",
    "CatalogModel",
    "catalog_model",
    "guide_star_offsets",
    "reference_catalog",
    "write_service_data",
]

#: Truth-catalog (ST) magnitude of the faintest star in the GAIA-like catalogs:
#: about 65 % of the stars are brighter.
GAIA_MAG_LIMIT = 25.3
#: ST magnitude minus catalog magnitude, so that the limit falls at G = 21.
GAIA_G_OFFSET = 4.3
#: objID of the first truth-catalog row; Gaia-like 19-digit source identifiers.
GAIA_OBJID_BASE = 3_800_000_000_000_000_000
#: objID of the first truth-catalog row in GSC242 and in 2MASS.
GSC_OBJID_BASE = 24_200_000_000_000
TWOMASS_OBJID_BASE = 1_000_000_000
#: Fraction of the common pointing error the HSC30 solution leaves.
HSC30_RESIDUAL = 0.5
#: IDCTAB root of the solutions in ``apriori_idctab_mismatch`` mode (the
#: ACS/WFC distortion table in use before the simulator's and qbu1641sj).
MISMATCH_IDCROOT = "0461802ej"
#: (east, north) arcsec from the target to the guide star of the visit, an
#: FGS-like distance; only the guide star's offset enters the correction.
GUIDE_STAR_OFFSET = (400.0, -300.0)
#: Catalog named by the guide-star service for the corrected positions.
GSC_CATALOG = "GSC240"
HSC_CATALOG = "HSC30"
#: Largest acceptable difference (arcsec) between a solution's intended and measured residual.
RESIDUAL_TOLERANCE = 1.0e-3
#: Stream of ``SeedSequence(config.seed)`` feeding the catalog errors
#: (exposures use the first streams).
SERVICE_STREAM = 1000
#: Sub-stream of `SERVICE_STREAM` from which each catalog draws the stars that a
#: limit fainter than its default depth adds (``spawn_key=(SERVICE_STREAM,
#: DEEPER_STREAM, index in REFERENCE_CATALOGS)``).
DEEPER_STREAM = 100
_AUTHOR = "astrodriz_sm.sim"


@dataclass(frozen=True)
class CatalogModel:
    """Depth, epoch and error model of a simulated reference catalog.

    Attributes
    ----------
    name : str
        Catalog name as the catalog service knows it.
    epoch : float
        Decimal year of the positions.
    position_error : (float, float)
        Per-coordinate position error (mas) of the brightest star the truth
        catalog can hold and of a star at `mag_limit`; it grows geometrically
        with magnitude in between (and on, for the stars a fainter limit adds).
    pm_error : (float, float) or None
        Same for the proper motions (mas/yr); None: no proper motions.
    mag_limit : float
        Truth-catalog (ST) magnitude of the faintest star: the default depth.
    mag_offset : float
        ST magnitude minus the catalog's ``mag``.
    objid_base : int
        objID of the first truth-catalog row (``objID - objid_base`` is the row).
    stream : int or None
        Own random stream, ``SeedSequence(seed, spawn_key=(SERVICE_STREAM,
        stream))``; None: the stream `SERVICE_STREAM`, which the GAIA releases
        share in the order of `GAIA_RELEASES`.
    """

    name: str
    epoch: float
    position_error: tuple[float, float]
    pm_error: tuple[float, float] | None
    mag_limit: float = GAIA_MAG_LIMIT
    mag_offset: float = GAIA_G_OFFSET
    objid_base: int = GAIA_OBJID_BASE
    stream: int | None = None


GAIA_RELEASES = (
    CatalogModel("GAIAeDR3", 2016.0, (0.1, 0.5), (0.05, 0.3)),
    CatalogModel("GAIADR2", 2015.5, (0.25, 1.25), (0.125, 0.75)),
    CatalogModel("GAIADR1", 2015.0, (1.0, 2.0), None),
)
#: GSC 2.4.2: plate astrometry tied to Gaia DR2 (hence its epoch), errors of tens
#: of mas, a magnitude shallower than GAIA (limit G = 20), UCAC5-like proper motions.
GSC242 = CatalogModel("GSC242", 2015.5, (20.0, 60.0), (1.0, 5.0), mag_limit=24.3,
                      objid_base=GSC_OBJID_BASE, stream=1)
#: 2MASS: observed around 2000.0, errors of 60-100 mas, no proper motions, four
#: magnitudes shallower than GAIA; ``mag`` is J-like (limit J = 15.5).
TWOMASS = CatalogModel("2MASS", 2000.0, (60.0, 100.0), None, mag_limit=21.3, mag_offset=5.8,
                       objid_base=TWOMASS_OBJID_BASE, stream=2)
#: Every catalog the simulated service serves, in the order the files are written.
REFERENCE_CATALOGS = (*GAIA_RELEASES, GSC242, TWOMASS)


def catalog_model(name: str) -> CatalogModel:
    """The model of a reference catalog, by name in any case (drizzlepac writes ``GAIAedr3``).

    Raises
    ------
    KeyError
        For a name that is not in `REFERENCE_CATALOGS`; the message lists the known ones.
    """
    for model in REFERENCE_CATALOGS:
        if model.name.upper() == str(name).strip().upper():
            return model
    raise KeyError(f"unknown catalog {name!r} (known: {', '.join(m.name for m in REFERENCE_CATALOGS)})")


def _catalog_rows(truth: Table, rows: np.ndarray, model: CatalogModel, rng: np.random.Generator) -> Table:
    """Catalog entries of the truth stars ``rows``, with errors drawn from ``rng``."""
    stars = truth[rows]
    n = len(stars)
    mag = np.asarray(stars["mag"], dtype=float)
    # 0 for the brightest star the truth catalog can hold, 1 at the default depth.
    bright = MAG_RANGE[0]
    frac = np.clip((mag - bright) / (model.mag_limit - bright), 0.0, None)

    def errors(bounds: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = bounds
        base = lo * (hi / lo) ** frac
        # The two coordinates of a real catalog have somewhat different errors.
        return (np.round(base * rng.uniform(0.85, 1.15, n), 4),
                np.round(base * rng.uniform(0.85, 1.15, n), 4))

    ra_err, dec_err = errors(model.position_error)
    ra_true, dec_true = propagate(stars, model.epoch)
    dec = dec_true + rng.normal(0.0, dec_err) / 3.6e6
    # ra_error is along the great circle (as GAIA's), so divide by cos(dec) for RA.
    ra = (ra_true + rng.normal(0.0, ra_err) / 3.6e6 / np.cos(np.deg2rad(dec_true))) % 360.0

    table = Table()
    table["ra"] = ra
    table["dec"] = dec
    table["mag"] = np.round(mag - model.mag_offset, 4)
    table["ra_error"] = ra_err
    table["dec_error"] = dec_err
    if model.pm_error is not None:
        pmra_err, pmdec_err = errors(model.pm_error)
        table["pmra"] = np.round(np.asarray(stars["pmra"], dtype=float) + rng.normal(0.0, pmra_err), 4)
        table["pmdec"] = np.round(np.asarray(stars["pmdec"], dtype=float) + rng.normal(0.0, pmdec_err), 4)
        table["pmra_error"] = pmra_err
        table["pmdec_error"] = pmdec_err
    table["epoch"] = np.full(n, model.epoch)
    table["objID"] = (model.objid_base + rows).astype(np.int64)
    for name, unit in (("ra", "deg"), ("dec", "deg"), ("mag", "mag"), ("ra_error", "mas"),
                       ("dec_error", "mas"), ("pmra", "mas / yr"), ("pmdec", "mas / yr"),
                       ("pmra_error", "mas / yr"), ("pmdec_error", "mas / yr"), ("epoch", "yr")):
        if name in table.colnames:
            table[name].unit = unit
    return table


def reference_catalog(truth: Table, model: CatalogModel, rng: np.random.Generator,
                      mag_limit: float | None = None,
                      deeper_rng: np.random.Generator | None = None) -> Table:
    """Simulated reference catalog: the truth stars down to a magnitude limit, with errors.

    Positions are the truth propagated to the catalog epoch plus Gaussian
    errors of the model's size; proper motions, where the catalog has them,
    are the truth plus Gaussian errors.

    Parameters
    ----------
    truth : astropy.table.Table
        Truth catalog (see `astrodriz_sm.sim.render.make_truth_catalog`).
    model : CatalogModel
    rng : numpy.random.Generator
        Draws the errors of the stars down to the model's default depth.
    mag_limit : float, optional
        ST magnitude of the faintest star, instead of ``model.mag_limit``.  A
        brighter limit keeps the stars of the default catalog that pass it, so
        ``rng`` is consumed as for the default depth; a fainter one adds stars
        whose errors come from ``deeper_rng``.
    deeper_rng : numpy.random.Generator, optional
        Needed for a limit fainter than the default depth.

    Returns
    -------
    astropy.table.Table
        Columns ``ra, dec, mag, ra_error, dec_error[, pmra, pmdec, pmra_error,
        pmdec_error], epoch, objID``, in truth-catalog order.

    Raises
    ------
    ValueError
        For a limit fainter than the default depth without ``deeper_rng``.
    """
    limit = model.mag_limit if mag_limit is None else float(mag_limit)
    mag = np.asarray(truth["mag"], dtype=float)
    rows = np.flatnonzero(mag <= model.mag_limit)
    table = _catalog_rows(truth, rows, model, rng)
    if limit < model.mag_limit:
        table = table[mag[rows] <= limit]
    elif limit > model.mag_limit:
        if deeper_rng is None:
            raise ValueError(f"{model.name}: a limit fainter than {model.mag_limit} needs deeper_rng")
        extra = np.flatnonzero((mag > model.mag_limit) & (mag <= limit))
        table = vstack([table, _catalog_rows(truth, extra, model, deeper_rng)])
        table = table[np.argsort(np.concatenate([rows, extra]), kind="stable")]
    table.meta["catalog"] = model.name
    table.meta["epoch"] = model.epoch
    table.meta["description"] = (f"Simulated {model.name}-like catalog: truth stars with "
                                 f"mag <= {limit} (ST), mag column = ST - {model.mag_offset}")
    return table


def guide_star_offsets(ra_targ: float, dec_targ: float,
                       correction: tuple[float, float]) -> dict[str, float | str]:
    """GSCconvert answer whose guide-star move corrects a pointing by ``correction``.

    Parameters
    ----------
    ra_targ, dec_targ : float
        Target position (deg); the guide star lies `GUIDE_STAR_OFFSET` from it.
    correction : (float, float)
        (east, north) arcsec that stwcs' ``find_gsc_offset`` must move the
        exposure's reference point by.

    Returns
    -------
    dict
        ``deltaRA, deltaDEC, deltaROLL, deltaSCALE, dGSinputRA, dGSinputDEC,
        dGSoutputRA, dGSoutputDEC`` (deg; deltaSCALE a ratio) and ``outputCatalog``.
    """
    old = SkyCoord(*offset_radec(ra_targ, dec_targ, *GUIDE_STAR_OFFSET), unit="deg")
    if correction[0] == 0.0 and correction[1] == 0.0:
        # Exactly zero deltas: stwcs then leaves the WCS alone (a round trip through
        # the offset frame would leave 1e-16 deg and a null shift).
        new = old
    else:
        # stwcs measures the new guide-star position in the old one's offset frame and
        # applies that (lon, lat) at the reference point: build it the same way round.
        new = SkyCoord(correction[0] * u.arcsec, correction[1] * u.arcsec,
                       frame=old.skyoffset_frame()).icrs
    return {
        "deltaRA": float(new.ra.deg - old.ra.deg),
        "deltaDEC": float(new.dec.deg - old.dec.deg),
        "deltaROLL": 0.0,
        "deltaSCALE": 1.0,
        "dGSinputRA": float(old.ra.deg),
        "dGSinputDEC": float(old.dec.deg),
        "dGSoutputRA": float(new.ra.deg),
        "dGSoutputDEC": float(new.dec.deg),
        "outputCatalog": GSC_CATALOG,
    }


def _solution_headerlet(updated: Path, *, rootname: str, wcsname: str, shift: tuple[float, float],
                        catalog: str, nmatch: int, descrip: str, idcroot: str | None):
    """Headerlet of the updated exposure's WCS moved by ``shift`` (east, north arcsec).

    Moving CRVAL of every chip by the same tangent-plane offset translates the
    whole exposure on the sky; at 0.5" the rotation this implies stays far
    below a micro-arcsecond over a chip.
    """
    from stwcs.wcsutil import headerlet

    with fits.open(updated) as hdul:
        for hdu in hdul:
            if hdu.header.get("EXTNAME") == "SCI":
                h = hdu.header
                h["CRVAL1"], h["CRVAL2"] = offset_radec(h["CRVAL1"], h["CRVAL2"], *shift)
                h["WCSNAME"] = wcsname
        # logging=False: otherwise stwcs writes headerlet.log into the working directory.
        # stwcs' DESCRIP comments do not fit in a card; astropy shortens them, as intended.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)
            hlet = headerlet.create_headerlet(hdul, sciext="SCI", hdrname=f"{rootname}_{wcsname}",
                                              wcsname=wcsname, author=_AUTHOR, descrip=descrip,
                                              catalog=catalog, nmatch=nmatch, logging=False)
    primary = hlet[0].header
    # create_headerlet stamps the current time; the simulator's files must not vary.
    primary["DATE"] = (FIXED_DATE, "Date FITS file was generated")
    if idcroot is not None:
        # Present the solution as derived with another distortion table.
        # DISTNAME is SIPNAME followed by the NPOL and D2IM names.
        old_sip, new_sip = primary["SIPNAME"], f"{rootname}_{idcroot}"
        variable = str(primary.get("IDCTAB", "jref$")).partition("$")[0] or "jref"
        primary["IDCTAB"] = f"{variable}${idcroot}_idc.fits"
        primary["SIPNAME"] = new_sip
        primary["DISTNAME"] = new_sip + primary["DISTNAME"][len(old_sip):]
    return hlet


def _headerlet_wcs(hlet, layouts: list[ChipLayout]) -> list:
    from stwcs.wcsutil import HSTWCS

    # A headerlet's SIPWCS extensions have no data, hence NAXIS 0, which astropy notes.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return [HSTWCS(hlet, ext=("SIPWCS", lay.extver)) for lay in layouts]


def write_service_data(service_dir: Path, *, config: SimConfig, members: list[str], updated: list[Path],
                       truths: list[list], layouts: list[ChipLayout], injected: list[tuple[float, float]],
                       common: tuple[float, float], catalog: Table, idcroot: str) -> dict:
    """Write the astrometry-service data of a simulated association.

    Parameters
    ----------
    service_dir : Path
        Output directory (``<outdir>/service``), created if needed.
    config : SimConfig
    members : list of str
        Exposure rootnames.
    updated : list of Path
        Per exposure, a copy of its FLT after ``updatewcs(use_db=False)``.
    truths : list of list of HSTWCS
        Per exposure, the true WCS of every chip.
    layouts : list of ChipLayout
    injected : list of (float, float)
        Per exposure, the (east, north) arcsec header pointing error.
    common : (float, float)
        The part of it common to all exposures (east, north arcsec), which
        the a priori solutions partly correct.
    catalog : astropy.table.Table
        Truth catalog.
    idcroot : str
        Root of the exposures' IDCTAB.

    Returns
    -------
    dict
        What was written and the residual (east, north arcsec; solution minus
        truth at the chip centres) of every solution, for the truth JSON:
        ``{"service": {...}, "exposures": [{"apriori_residual_arcsec": ...,
        "apriori": {...}}, ...]}``.

    Raises
    ------
    RuntimeError
        If a headerlet's WCS is not off from the truth by its intended residual
        (to `RESIDUAL_TOLERANCE` at every chip centre).
    """
    service_dir = Path(service_dir)
    (service_dir / "catalogs").mkdir(parents=True, exist_ok=True)
    (service_dir / "headerlets").mkdir(parents=True, exist_ok=True)
    def stream(*key: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(SERVICE_STREAM, *key)))

    shared = stream()
    catalogs, tables = {}, {}
    for k, model in enumerate(REFERENCE_CATALOGS):
        limit = config.catalog_limits.get(model.name, model.mag_limit)
        table = tables[model.name] = reference_catalog(
            catalog, model, shared if model.stream is None else stream(model.stream), limit,
            deeper_rng=stream(DEEPER_STREAM, k))
        path = service_dir / "catalogs" / f"{model.name}.ecsv"
        table.write(path, format="ascii.ecsv", overwrite=True)
        catalogs[model.name] = {"file": path.relative_to(service_dir).as_posix(),
                                "epoch": model.epoch, "n_sources": len(table),
                                "proper_motions": model.pm_error is not None,
                                "mag_limit_st": float(limit), "default_mag_limit_st": model.mag_limit,
                                "mag_offset": model.mag_offset, "objid_base": model.objid_base,
                                "position_error_mas": list(model.position_error),
                                "pm_error_mas_per_yr": None if model.pm_error is None else list(model.pm_error)}

    # The a priori solutions correct the pointing error common to the visit (the
    # guide stars' catalog error), never the guiding failure of one exposure.
    fractions = {GSC_CATALOG: float(config.apriori_residual), HSC_CATALOG: HSC30_RESIDUAL}
    corrections = {name: (-(1.0 - f) * common[0], -(1.0 - f) * common[1]) for name, f in fractions.items()}
    label_root = MISMATCH_IDCROOT if config.apriori_idctab_mismatch else idcroot
    gsc = guide_star_offsets(config.ra, config.dec, corrections[GSC_CATALOG])

    ref_stars = tables[GAIA_RELEASES[0].name]
    index_rows, gsc_rows, exposures = [], [], []
    for i, member in enumerate(members):
        solutions = {}
        for name in (GSC_CATALOG, HSC_CATALOG):
            wcsname = f"IDC_{label_root}-{name}"
            if name == GSC_CATALOG:
                # The guide-star correction rests on two guide stars, as stwcs records it.
                nmatch, descrip = 2, "A Priori WCS based on ICRS guide star positions"
            else:
                nmatch = _stars_on_chips(ref_stars, truths[i], layouts)
                descrip = "A Priori WCS based on HSC v3.0 positions matched to GAIA"
            shift = corrections[name]
            if name == GSC_CATALOG:
                # A solution that is off differently per exposure misaligns them relative to each other.
                shift = (shift[0] + i * float(config.apriori_scatter), shift[1])
            hlet = _solution_headerlet(updated[i], rootname=member, wcsname=wcsname,
                                       shift=shift, catalog=name, nmatch=nmatch,
                                       descrip=descrip,
                                       idcroot=MISMATCH_IDCROOT if config.apriori_idctab_mismatch else None)
            if name == GSC_CATALOG:
                # The keywords apply_new_apriori writes into the headerlets it derives.
                for key, field, comment in (("D_RA", "deltaRA", "guide-star RA offset (deg)"),
                                            ("D_DEC", "deltaDEC", "guide-star Dec offset (deg)"),
                                            ("D_ROLL", "deltaROLL", "guide-star roll offset (deg)"),
                                            ("D_SCALE", "deltaSCALE", "guide-star scale ratio")):
                    hlet[0].header[key] = (gsc[field], comment)
            rel = f"headerlets/{headerlet_name(f'{member}_{wcsname}')}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", VerifyWarning)
                hlet.writeto(service_dir / rel, overwrite=True)

            expected = (injected[i][0] + shift[0], injected[i][1] + shift[1])
            measured = [chip_center_offset(t, w, lay.naxis1, lay.naxis2)
                        for t, w, lay in zip(truths[i], _headerlet_wcs(hlet, layouts), layouts)]
            for m in measured:
                if np.hypot(m[0] - expected[0], m[1] - expected[1]) > RESIDUAL_TOLERANCE:
                    raise RuntimeError(f"{member} {wcsname}: residual {m} differs from intended {expected}")
            best = name == GSC_CATALOG
            index_rows.append((member, wcsname, rel, best))
            solutions[name] = {"wcsname": wcsname, "hdrname": hlet[0].header["HDRNAME"],
                               "headerlet": rel, "best": best,
                               "residual_fraction": fractions[name],
                               "correction_arcsec": list(shift),
                               "residual_arcsec": list(expected),
                               "measured_residual_arcsec": [list(m) for m in measured]}
        gsc_rows.append({"rootname": member, **gsc})
        exposures.append({"apriori_residual_arcsec": solutions[GSC_CATALOG]["residual_arcsec"],
                          "apriori": solutions})

    index = Table(rows=index_rows, names=("rootname", "wcsname", "headerlet", "best"),
                  dtype=(str, str, str, bool))
    index.meta["description"] = "A priori WCS solutions per exposure; best is applied as primary"
    index.write(service_dir / "astrometrydb.ecsv", format="ascii.ecsv", overwrite=True)

    offsets = Table(rows=gsc_rows, names=list(gsc_rows[0]))
    for key in ("deltaRA", "deltaDEC", "deltaROLL", "dGSinputRA", "dGSinputDEC", "dGSoutputRA",
                "dGSoutputDEC"):
        offsets[key].unit = "deg"
    offsets.meta["description"] = ("GSSS GSCconvert answers: guide-star position before "
                                   "(dGSinput*) and after (dGSoutput*) the GAIA correction, deg")
    offsets.write(service_dir / "gsc_offsets.ecsv", format="ascii.ecsv", overwrite=True)

    return {
        "service": {
            "dir": service_dir.name,
            "catalogs": catalogs,
            "gaia_mag_limit_st": GAIA_MAG_LIMIT,
            "gaia_objid_base": GAIA_OBJID_BASE,
            "apriori_residual": float(config.apriori_residual),
            "hsc30_residual": HSC30_RESIDUAL,
            "apriori_idctab_mismatch": bool(config.apriori_idctab_mismatch),
            "apriori_idcroot": label_root,
            "common_pointing_error_arcsec": [float(c) for c in common],
            "guide_star": gsc,
        },
        "exposures": exposures,
    }


def _stars_on_chips(stars: Table, truth: list, layouts: list[ChipLayout]) -> int:
    """Reference stars falling on the chips of an exposure (linear WCS is close enough to count)."""
    ra, dec = np.asarray(stars["ra"], dtype=float), np.asarray(stars["dec"], dtype=float)
    count = 0
    for w, lay in zip(truth, layouts):
        x, y = w.wcs_world2pix(ra, dec, 0)
        count += int(np.sum((x >= 0) & (x <= lay.naxis1 - 1) & (y >= 0) & (y <= lay.naxis2 - 1)))
    return count
