"""Truth catalog and pixel rendering of simulated exposures.

Stars are Gaussian point sources integrated over each pixel (with ``erf``), so
the flux-weighted centroid of a rendered star is its true position; noise
(Poisson on sky and sources, Gaussian read noise) and cosmic rays are added
on top.  Everything is drawn from explicitly seeded generators.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from scipy.special import erf

from .headers import PHOTFLAM, PHOTZPT, READNOISE

__all__ = [
    "CATALOG_EPOCH",
    "PSF_SIGMA",
    "SATURATION",
    "SKY_LEVEL",
    "add_cosmic_rays",
    "add_noise",
    "make_truth_catalog",
    "propagate",
    "render_stars",
    "zero_point",
]

PSF_SIGMA = 1.0          # pixels
SKY_LEVEL = 50.0         # e- per pixel per exposure
SATURATION = 80000.0     # e-: full well; brighter pixels are clipped and flagged DQ 256
CATALOG_EPOCH = 2016.0   # decimal year of the catalog positions (Gaia DR3-like)
MAG_RANGE = (19.7, 26.2)  # ST magnitudes: the brightest stars peak near saturation in 400 s
PM_SIGMA = 3.0           # mas/yr, per component
_STAMP_RADIUS = 7        # pixels: 7 sigma, the stamp holds all but ~1e-12 of the flux


def zero_point(photflam: float = PHOTFLAM, photzpt: float = PHOTZPT) -> float:
    """ST magnitude of a source giving 1 e-/s (from PHOTFLAM and PHOTZPT; ACS/WFC's by default)."""
    return float(-2.5 * np.log10(photflam) + photzpt)


def make_truth_catalog(rng: np.random.Generator, ra: np.ndarray, dec: np.ndarray,
                       epoch: float) -> Table:
    """Truth catalog of stars seen at (``ra``, ``dec``) at ``epoch``.

    Magnitudes and proper motions are drawn here; the catalog positions are
    moved back to `CATALOG_EPOCH`, so that `propagate` to ``epoch`` returns
    ``ra``, ``dec`` (to rounding).

    Parameters
    ----------
    rng : numpy.random.Generator
    ra, dec : ndarray
        Positions at ``epoch`` (deg).
    epoch : float
        Decimal year of ``ra``, ``dec``.

    Returns
    -------
    astropy.table.Table
        Columns ra, dec [deg] at the catalog epoch, mag [ST mag], pmra
        (including the cos(dec) factor), pmdec [mas/yr], epoch [decimal year].
        The magnitudes follow a shallow power law, so most stars are faint but
        well detected (S/N 20-500) and a few approach saturation.
    """
    n = len(ra)
    # Inverse-CDF sampling of N(<m) ~ 10**(0.2 m) between the two limits.
    lo, hi = (10 ** (0.2 * m) for m in MAG_RANGE)
    mag = np.round(5.0 * np.log10(rng.uniform(lo, hi, n)), 4)
    pmra = np.round(rng.normal(0.0, PM_SIGMA, n), 4)
    pmdec = np.round(rng.normal(0.0, PM_SIGMA, n), 4)
    dt = epoch - CATALOG_EPOCH
    dec0 = np.asarray(dec) - pmdec * dt / 3.6e6
    ra0 = (np.asarray(ra) - pmra * dt / 3.6e6 / np.cos(np.deg2rad(dec0))) % 360.0
    table = Table()
    table["ra"] = ra0
    table["dec"] = dec0
    table["mag"] = mag
    table["pmra"] = pmra
    table["pmdec"] = pmdec
    table["epoch"] = np.full(n, CATALOG_EPOCH)
    table["ra"].unit = table["dec"].unit = "deg"
    table["mag"].unit = "mag"
    table["pmra"].unit = table["pmdec"].unit = "mas / yr"
    table["epoch"].unit = "yr"
    return table


def propagate(catalog: Table, epoch: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions of catalog stars at ``epoch`` (decimal year), from their proper motions.

    Linear motion in the tangent plane is exact to far below a micro-arcsec
    for motions of a few mas/yr over a few years.

    Returns
    -------
    ra, dec : ndarray
        Degrees.
    """
    dt = epoch - np.asarray(catalog["epoch"], dtype=float)
    dec = np.asarray(catalog["dec"], dtype=float) + np.asarray(catalog["pmdec"]) * dt / 3.6e6
    ra = np.asarray(catalog["ra"], dtype=float) + (
        np.asarray(catalog["pmra"]) * dt / 3.6e6 / np.cos(np.deg2rad(np.asarray(catalog["dec"]))))
    return ra, dec


def _pixel_fractions(center: float, start: int, n: int, sigma: float) -> np.ndarray:
    """Fraction of a 1-D Gaussian falling in pixels ``start..start+n-1`` (pixel i spans i±0.5)."""
    edges = np.arange(start, start + n + 1) - 0.5
    cdf = 0.5 * (1.0 + erf((edges - center) / (np.sqrt(2.0) * sigma)))
    return np.diff(cdf)


def render_stars(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, flux: np.ndarray,
                 sigma: float = PSF_SIGMA) -> np.ndarray:
    """Noise-free image of point sources.

    Parameters
    ----------
    shape : (int, int)
        (ny, nx).
    x, y : ndarray
        0-based pixel positions (pixel centres at integers).
    flux : ndarray
        Total electrons per star.
    sigma : float, optional
        Gaussian PSF width in pixels.

    Returns
    -------
    ndarray of float64
    """
    ny, nx = shape
    image = np.zeros(shape, dtype=np.float64)
    r = _STAMP_RADIUS
    for xc, yc, f in zip(x, y, flux):
        x0, y0 = int(np.floor(xc + 0.5)) - r, int(np.floor(yc + 0.5)) - r
        if x0 + 2 * r < 0 or y0 + 2 * r < 0 or x0 >= nx or y0 >= ny:
            continue
        fx = _pixel_fractions(xc, x0, 2 * r + 1, sigma)
        fy = _pixel_fractions(yc, y0, 2 * r + 1, sigma)
        stamp = f * np.outer(fy, fx)
        xs, ys = max(x0, 0), max(y0, 0)
        xe, ye = min(x0 + 2 * r + 1, nx), min(y0 + 2 * r + 1, ny)
        image[ys:ye, xs:xe] += stamp[ys - y0:ye - y0, xs - x0:xe - x0]
    return image


def add_noise(rng: np.random.Generator, signal: np.ndarray,
              sky: float = SKY_LEVEL, readnoise: float = READNOISE) -> np.ndarray:
    """Sky, photon noise and read noise on top of a noise-free source image.

    Returns
    -------
    ndarray of float64
        Electrons, sky included (as in an FLT file).
    """
    return rng.poisson(signal + sky).astype(np.float64) + rng.normal(0.0, readnoise, signal.shape)


def add_cosmic_rays(rng: np.random.Generator, data: np.ndarray, n_hits: int) -> np.ndarray:
    """Add cosmic-ray hits in place: short tracks or blobs of 1-6 pixels, 500-5000 e- each.

    Parameters
    ----------
    rng : numpy.random.Generator
    data : ndarray
        Image to modify.
    n_hits : int
        Number of hits.

    Returns
    -------
    ndarray of uint8
        Truth mask (1 where a cosmic ray deposited charge).
    """
    ny, nx = data.shape
    mask = np.zeros(data.shape, dtype=np.uint8)
    for _ in range(n_hits):
        length = int(rng.integers(1, 7))
        energy = float(rng.uniform(500.0, 5000.0))
        x, y = float(rng.uniform(0, nx)), float(rng.uniform(0, ny))
        if rng.random() < 0.5:
            # Track: a straight segment at a random angle.
            angle = rng.uniform(0.0, np.pi)
            steps = np.arange(length)
            xs = np.floor(x + steps * np.cos(angle)).astype(int)
            ys = np.floor(y + steps * np.sin(angle)).astype(int)
        else:
            # Blob: a compact random cluster around the impact point.
            xs = np.floor(x + rng.integers(-1, 2, length)).astype(int)
            ys = np.floor(y + rng.integers(-1, 2, length)).astype(int)
            xs[0], ys[0] = int(x), int(y)
        inside = (xs >= 0) & (xs < nx) & (ys >= 0) & (ys < ny)
        xs, ys = xs[inside], ys[inside]
        if xs.size == 0:
            continue
        weights = rng.uniform(0.5, 1.0, xs.size)
        np.add.at(data, (ys, xs), energy * weights / weights.sum())
        mask[ys, xs] = 1
    return mask
