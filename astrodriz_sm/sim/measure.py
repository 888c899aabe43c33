"""Astrometric accuracy of a drizzled product, measured against the simulation truth."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from scipy.special import erf

from .instruments import detector_of_header
from .render import propagate

__all__ = ["ProductAstrometry", "measure_product_astrometry", "observation_epoch"]


def _peak_fraction(sigma: float) -> float:
    """Fraction of a star's flux in its brightest pixel, at most (star centred on the pixel)."""
    return float(erf(0.5 / (np.sqrt(2.0) * sigma)) ** 2)


@dataclass(frozen=True)
class ProductAstrometry:
    """Centroid offsets of truth stars in a drizzled product.

    Attributes
    ----------
    n_stars : int
        Stars measured.
    rms : float
        Root mean square of the 2-D offsets (pixels of the product).
    mean_dx, mean_dy : float
        Mean offsets (measured minus predicted), pixels.
    n_rejected : int
        Stars left out as outliers (a cosmic ray in the centroiding box), see :func:`_clipped`.
    """

    n_stars: int
    rms: float
    mean_dx: float
    mean_dy: float
    n_rejected: int = 0


def observation_epoch(truth_json: str | Path) -> float:
    """Decimal-year epoch of the first exposure, from a simulation's truth JSON."""
    return float(json.loads(Path(truth_json).read_text())["exposures"][0]["epoch"])


def measure_product_astrometry(product: str | Path, truth_catalog: str | Path, epoch: float,
                               exptime: float = 400.0, isolation: float = 10.0,
                               box_size: int = 7) -> ProductAstrometry:
    """Compare centroids of isolated, unsaturated truth stars with their predicted positions.

    The positions are predicted by the product's own WCS from the truth
    catalog propagated to ``epoch``; centroids come from a 2-D Gaussian fit
    (photutils ``centroid_2dg``) in a small box.  The detector (INSTRUME and
    DETECTOR of the product) sets the fluxes, PSF width, sky and full well
    used to leave out saturated stars.

    Parameters
    ----------
    product : path-like
        Drizzled product with a SCI and WHT extension (``_drz``/``_drc``).
    truth_catalog : path-like
        ECSV truth catalog written by the simulator.
    epoch : float
        Decimal year of the observation.
    exptime : float, optional
        Exposure time of each input (to recognise saturated stars).
    isolation : float, optional
        A star is used only if no other star brighter than 2 % of its flux lies
        within this many product pixels.
    box_size : int, optional
        Centroiding box (pixels).

    Returns
    -------
    ProductAstrometry
        Over the stars whose offsets agree within 5 sigma (:func:`_clipped`).
    """
    from photutils.centroids import centroid_2dg, centroid_sources
    from stwcs.wcsutil import HSTWCS

    catalog = Table.read(truth_catalog, format="ascii.ecsv")
    ra, dec = propagate(catalog, epoch)
    mag = np.asarray(catalog["mag"], dtype=float)
    with fits.open(product) as hdul:
        det = detector_of_header(hdul[0].header)
        sci = np.nan_to_num(hdul["SCI", 1].data.astype(np.float64))
        wht = hdul["WHT", 1].data
        wcs = HSTWCS(hdul, ext=("SCI", 1))
    flux = 10.0 ** (-0.4 * (mag - det.zero_point)) * exptime
    peak_fraction = _peak_fraction(det.psf_sigma)
    x, y = wcs.all_world2pix(ra, dec, 0)
    ny, nx = sci.shape
    edge = box_size + 3
    use = []
    for i in range(len(x)):
        if not (edge <= x[i] < nx - edge and edge <= y[i] < ny - edge):
            continue
        if flux[i] * peak_fraction + det.sky_level > 0.8 * det.saturation:
            continue
        d = np.hypot(x - x[i], y - y[i])
        d[i] = np.inf
        if np.any((d < isolation) & (flux > 0.02 * flux[i])):
            continue
        iy, ix = int(np.rint(y[i])), int(np.rint(x[i]))
        if np.all(wht[iy - 3:iy + 4, ix - 3:ix + 4] > 0):
            use.append(i)
    use = np.array(use, dtype=int)
    if use.size == 0:
        return ProductAstrometry(0, float("nan"), float("nan"), float("nan"))
    data = sci - np.median(sci[wht > 0])
    with warnings.catch_warnings():
        # A faint star's Gaussian fit that stops early is one noisy centroid (the clipping below takes
        # out the wild ones), not something to print for each of hundreds of stars.
        warnings.simplefilter("ignore")
        cx, cy = centroid_sources(data, x[use], y[use], box_size=box_size, centroid_func=centroid_2dg)
    dx, dy = cx - x[use], cy - y[use]
    ok = np.isfinite(dx) & np.isfinite(dy)
    keep = _clipped(dx[ok], dy[ok])
    dx, dy = dx[ok][keep], dy[ok][keep]
    return ProductAstrometry(n_stars=int(keep.sum()), rms=float(np.sqrt(np.mean(dx ** 2 + dy ** 2))),
                             mean_dx=float(dx.mean()), mean_dy=float(dy.mean()), n_rejected=int((~keep).sum()))


def _clipped(dx: np.ndarray, dy: np.ndarray, nsigma: float = 5.0, floor: float = 0.04) -> np.ndarray:
    """Stars whose offsets agree with the others': iterative 5-sigma clipping about the median.

    A cosmic ray in a centroiding box (a product made without cosmic-ray rejection, from one
    exposure) drags that centroid by pixels; a misaligned product moves every star alike, which
    clipping about the median keeps. Sigma is the MAD-based standard deviation, at least ``floor``
    pixels so that a tight set does not reject its own scatter.
    """
    from astropy.stats import mad_std

    keep = np.ones(dx.size, dtype=bool)
    while keep.sum() > 2:
        limits = [max(floor, float(mad_std(v[keep]))) * nsigma for v in (dx, dy)]
        new = (np.abs(dx - np.median(dx[keep])) <= limits[0]) & (np.abs(dy - np.median(dy[keep])) <= limits[1])
        if np.array_equal(new, keep):
            break
        keep = new
    return keep
