"""Data of a local astrometry service for a simulated association.

`write_service_data` fills ``<outdir>/service/`` with what the STScI web
services would answer for the simulated exposures, so that the a priori and
a posteriori stages of the pipeline can run against a local stand-in:

``catalogs/GAIAeDR3.ecsv``, ``catalogs/GAIADR2.ecsv``, ``catalogs/GAIADR1.ecsv``
    GAIA-like reference catalogs of the stars of the truth catalog brighter
    than `GAIA_MAG_LIMIT`, over a disk somewhat larger than the footprint.
    Columns ``ra, dec`` (deg), ``mag``, ``ra_error, dec_error`` (mas),
    ``pmra, pmdec`` (mas/yr, pmra including cos(dec)), ``pmra_error,
    pmdec_error`` (mas/yr), ``epoch`` (decimal year) and ``objID``
    (``objID - GAIA_OBJID_BASE`` is the row of the star in the truth catalog).
    GAIADR1 has no proper-motion columns.
``headerlets/`` (one headerlet file per solution, named by ``model.headerlet_name``)
    Two a priori solutions per exposure (FLT and FLC share the rootname and
    the WCS), made with ``stwcs.wcsutil.headerlet.create_headerlet`` from the
    exposure after ``updatewcs(use_db=False)`` with its reference point moved:
    ``IDC_<idcroot>-GSC240`` leaves `SimConfig.apriori_residual` of the common
    pointing error, ``IDC_<idcroot>-HSC30`` leaves `HSC30_RESIDUAL` of it.
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
from astropy.table import Table
from astropy.wcs import FITSFixedWarning

from ..model import headerlet_name
from .config import SimConfig
from .headers import FIXED_DATE, ChipLayout
from .render import MAG_RANGE, propagate
from .wcs import chip_center_offset, offset_radec

__all__ = [
    "GAIA_G_OFFSET",
    "GAIA_MAG_LIMIT",
    "GAIA_OBJID_BASE",
    "GAIA_RELEASES",
    "GUIDE_STAR_OFFSET",
    "HSC30_RESIDUAL",
    "MISMATCH_IDCROOT",
    "GaiaRelease",
    "guide_star_offsets",
    "reference_catalog",
    "write_service_data",
]

#: Truth-catalog (ST) magnitude of the faintest star in the reference catalogs:
#: about 65 % of the stars are brighter.
GAIA_MAG_LIMIT = 25.3
#: ST magnitude minus catalog magnitude, so that the limit falls at G = 21.
GAIA_G_OFFSET = 4.3
#: objID of the first truth-catalog row; Gaia-like 19-digit source identifiers.
GAIA_OBJID_BASE = 3_800_000_000_000_000_000
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
_AUTHOR = "astrodriz_sm.sim"


@dataclass(frozen=True)
class GaiaRelease:
    """Epoch and error model of a GAIA-like catalog release.

    Attributes
    ----------
    name : str
        Catalog name as the catalog service knows it.
    epoch : float
        Decimal year of the positions.
    position_error : (float, float)
        Per-coordinate position error (mas) of the brightest and of the
        faintest stars; it grows geometrically with magnitude in between.
    pm_error : (float, float) or None
        Same for the proper motions (mas/yr); None: no proper motions.
    """

    name: str
    epoch: float
    position_error: tuple[float, float]
    pm_error: tuple[float, float] | None


GAIA_RELEASES = (
    GaiaRelease("GAIAeDR3", 2016.0, (0.1, 0.5), (0.05, 0.3)),
    GaiaRelease("GAIADR2", 2015.5, (0.25, 1.25), (0.125, 0.75)),
    GaiaRelease("GAIADR1", 2015.0, (1.0, 2.0), None),
)


def reference_catalog(truth: Table, release: GaiaRelease, rng: np.random.Generator) -> Table:
    """GAIA-like catalog of the truth stars brighter than `GAIA_MAG_LIMIT`.

    Positions are the truth propagated to the release epoch plus Gaussian
    errors of the listed size; proper motions are the truth plus Gaussian
    errors.

    Parameters
    ----------
    truth : astropy.table.Table
        Truth catalog (see `astrodriz_sm.sim.render.make_truth_catalog`).
    release : GaiaRelease
    rng : numpy.random.Generator

    Returns
    -------
    astropy.table.Table
        Columns ``ra, dec, mag, ra_error, dec_error[, pmra, pmdec, pmra_error,
        pmdec_error], epoch, objID``, in truth-catalog order.
    """
    rows = np.flatnonzero(np.asarray(truth["mag"], dtype=float) <= GAIA_MAG_LIMIT)
    stars = truth[rows]
    n = len(stars)
    mag = np.asarray(stars["mag"], dtype=float)
    # 0 for the brightest star the truth catalog can hold, 1 at the limit.
    bright = MAG_RANGE[0]
    frac = np.clip((mag - bright) / (GAIA_MAG_LIMIT - bright), 0.0, 1.0)

    def errors(bounds: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = bounds
        base = lo * (hi / lo) ** frac
        # The two coordinates of a real catalog have somewhat different errors.
        return (np.round(base * rng.uniform(0.85, 1.15, n), 4),
                np.round(base * rng.uniform(0.85, 1.15, n), 4))

    ra_err, dec_err = errors(release.position_error)
    ra_true, dec_true = propagate(stars, release.epoch)
    dec = dec_true + rng.normal(0.0, dec_err) / 3.6e6
    # ra_error is along the great circle (as GAIA's), so divide by cos(dec) for RA.
    ra = (ra_true + rng.normal(0.0, ra_err) / 3.6e6 / np.cos(np.deg2rad(dec_true))) % 360.0

    table = Table()
    table["ra"] = ra
    table["dec"] = dec
    table["mag"] = np.round(mag - GAIA_G_OFFSET, 4)
    table["ra_error"] = ra_err
    table["dec_error"] = dec_err
    if release.pm_error is not None:
        pmra_err, pmdec_err = errors(release.pm_error)
        table["pmra"] = np.round(np.asarray(stars["pmra"], dtype=float) + rng.normal(0.0, pmra_err), 4)
        table["pmdec"] = np.round(np.asarray(stars["pmdec"], dtype=float) + rng.normal(0.0, pmdec_err), 4)
        table["pmra_error"] = pmra_err
        table["pmdec_error"] = pmdec_err
    table["epoch"] = np.full(n, release.epoch)
    table["objID"] = (GAIA_OBJID_BASE + rows).astype(np.int64)
    for name, unit in (("ra", "deg"), ("dec", "deg"), ("mag", "mag"), ("ra_error", "mas"),
                       ("dec_error", "mas"), ("pmra", "mas / yr"), ("pmdec", "mas / yr"),
                       ("pmra_error", "mas / yr"), ("pmdec_error", "mas / yr"), ("epoch", "yr")):
        if name in table.colnames:
            table[name].unit = unit
    table.meta["catalog"] = release.name
    table.meta["epoch"] = release.epoch
    table.meta["description"] = (f"Simulated {release.name}-like catalog: truth stars with "
                                 f"mag <= {GAIA_MAG_LIMIT} (ST), mag column = ST - {GAIA_G_OFFSET}")
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
        primary["IDCTAB"] = f"jref${idcroot}_idc.fits"
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
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(SERVICE_STREAM,)))

    catalogs, tables = {}, {}
    for release in GAIA_RELEASES:
        table = tables[release.name] = reference_catalog(catalog, release, rng)
        path = service_dir / "catalogs" / f"{release.name}.ecsv"
        table.write(path, format="ascii.ecsv", overwrite=True)
        catalogs[release.name] = {"file": path.relative_to(service_dir).as_posix(),
                                  "epoch": release.epoch, "n_sources": len(table),
                                  "proper_motions": release.pm_error is not None}

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
            hlet = _solution_headerlet(updated[i], rootname=member, wcsname=wcsname,
                                       shift=corrections[name], catalog=name, nmatch=nmatch,
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

            expected = (injected[i][0] + corrections[name][0], injected[i][1] + corrections[name][1])
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
                               "correction_arcsec": list(corrections[name]),
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
