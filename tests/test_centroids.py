"""Source positions for the a posteriori fit: drizzlepac 3.11's against the pixel-integrated PSF fit.

Stars are rendered as the simulator renders them (pixel-integrated Gaussians, sky, photon and
read noise) into a WFC3/IR-like exposure, found by drizzlepac's own source finding with the
parameters the alignment step uses, then refined by :func:`refine_positions`. Both position
sets are compared with the truth.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from scipy.spatial import cKDTree

from astrodriz_sm.handlers.centroids import refine_catalogs
from astrodriz_sm.numerics.centroids import (
    FLAG_DIVERGED,
    FLAG_EDGE,
    FLAG_FAILED,
    FLAG_OK,
    estimate_sigma,
    refine_positions,
)
from astrodriz_sm.sim.render import SKY_LEVEL, add_noise, render_stars

PIXEL_SCALE_MAS = 128.0        # WFC3/IR
SHAPE = (1014, 1014)           # WFC3/IR science array
N_STARS = 250                  # the alignment keeps the 250 brightest per chip (MAX_SOURCES_PER_CHIP)
FLUX_RANGE = (10 ** 3.7, 1e5)  # e-: S/N 60-1000, the brightest peak well below saturation
READ_NOISE = 4.0               # e-
PHASE_BINS = np.linspace(-0.5, 0.5, 9)


def _truth(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Isolated stars (20 px apart at least, away from the edges) at random sub-pixel phases."""
    ny, nx = SHAPE
    x, y = [], []
    while len(x) < N_STARS:
        cx, cy = rng.uniform(20, nx - 20), rng.uniform(20, ny - 20)
        if not x or np.min(np.hypot(np.array(x) - cx, np.array(y) - cy)) > 20:
            x.append(cx)
            y.append(cy)
    flux = np.exp(rng.uniform(*np.log(FLUX_RANGE), N_STARS))
    return np.array(x), np.array(y), flux


def _write_exposure(path, sigma: float, seed: int):
    """A one-chip WFC3/IR-like FLT (SCI, ERR, DQ) of rendered stars; returns the truth and arrays."""
    rng = np.random.default_rng(seed)
    x, y, flux = _truth(rng)
    sci = add_noise(rng, render_stars(SHAPE, x, y, flux, sigma), sky=SKY_LEVEL, readnoise=READ_NOISE)
    err = np.sqrt(np.clip(sci, 0.0, None) + READ_NOISE ** 2)
    primary = fits.PrimaryHDU()
    primary.header.update(ROOTNAME="centroidsim", INSTRUME="WFC3", DETECTOR="IR", EXPTIME=1.0,
                          DATE_OBS="2020-01-01", TIME_OBS="00:00:00")
    h = fits.Header()
    h.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRPIX1=507.0, CRPIX2=507.0, CRVAL1=150.0,
             CRVAL2=2.0, CD1_1=-PIXEL_SCALE_MAS / 3.6e6, CD1_2=0.0, CD2_1=0.0,
             CD2_2=PIXEL_SCALE_MAS / 3.6e6, EXTVER=1, PHOTMODE="WFC3 IR F160W")
    fits.HDUList([primary, fits.ImageHDU(sci.astype(np.float32), h, name="SCI"),
                  fits.ImageHDU(err.astype(np.float32), h, name="ERR"),
                  fits.ImageHDU(np.zeros(SHAPE, np.int16), h, name="DQ")]).writeto(path)
    return x, y, flux, sci.astype(np.float32), err.astype(np.float32)


def _drizzlepac_catalog(path) -> Table:
    """The chip's catalog exactly as ``AlignmentTable`` builds it for a WFC3/IR exposure.

    ``AlignmentTable.__init__`` (align_utils.py:138, 189-214): the merged alignment
    parameters, ``compute_background`` and ``build_kernel``; ``classify`` is False for IR,
    so no CR cleaning. Then ``HAPImage.find_alignment_sources`` (align_utils.py:690) calls
    ``extract_sources`` with the ``starfind`` centering mode.
    """
    from drizzlepac import align as dp_align
    from drizzlepac.haputils.align_utils import HAPImage

    apars = dp_align.get_default_pars("WFC3", "IR")
    pars = dict(apars["run_align"])
    for section in ("general", "generate_source_catalogs", "determine_fit_quality"):
        pars.update(apars[section])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = HAPImage(str(path))
        img.compute_background(box_size=pars["box_size"], win_size=pars["win_size"],
                               nsigma=pars["nsigma"], bkg_estimator=pars["bkg_estimator"],
                               rms_estimator=pars["rms_estimator"], threshold_flag=pars["threshold"])
        img.build_kernel(pars["fwhmpsf"])
        img.find_alignment_sources(output=False, dqname="DQ", crclean=False, **pars)
    return img.catalog_table[1]


def _errors(catalog: Table, x: np.ndarray, y: np.ndarray):
    """Per-axis errors (px) against the nearest truth star and that star's sub-pixel phase."""
    _, i = cKDTree(np.column_stack([x, y])).query(
        np.column_stack([catalog["xcentroid"], catalog["ycentroid"]]))
    dx, dy = np.asarray(catalog["xcentroid"]) - x[i], np.asarray(catalog["ycentroid"]) - y[i]
    phase_x, phase_y = x[i] - np.round(x[i]), y[i] - np.round(y[i])
    return dx, dy, phase_x, phase_y


def _stats(dx, dy, px, py, rows) -> dict:
    """RMS error per axis and in 2-D, and the mean error per sub-pixel phase bin (both axes pooled)."""
    err, phase = np.r_[dx[rows], dy[rows]], np.r_[px[rows], py[rows]]
    bins = np.clip(np.digitize(phase, PHASE_BINS) - 1, 0, len(PHASE_BINS) - 2)
    return {"n": int(rows.sum()),
            "rms_px": float(np.sqrt(np.mean(err ** 2))),
            "rms2d_px": float(np.sqrt(np.mean(dx[rows] ** 2 + dy[rows] ** 2))),
            "rms2d_mas": float(PIXEL_SCALE_MAS * np.sqrt(np.mean(dx[rows] ** 2 + dy[rows] ** 2))),
            "phase_bias_px": np.array([err[bins == b].mean() for b in range(len(PHASE_BINS) - 1)])}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Factory: ``measured(sigma)`` gives both position sets and their statistics, once per sigma."""
    cache = {}

    def make(sigma: float) -> dict:
        if sigma not in cache:
            path = tmp_path_factory.mktemp("centroids") / "exposure_flt.fits"
            x, y, _, sci, err = _write_exposure(path, sigma, seed=20240611)
            catalog = _drizzlepac_catalog(path)
            start = time.perf_counter()
            refined = refine_positions(sci, catalog, sigma, error=err)
            seconds = time.perf_counter() - start
            dx, dy, px, py = _errors(catalog, x, y)
            # Rows where drizzlepac's position is a real star: a segment holding two stars
            # gives a position between them, which no centroiding can repair.
            real = np.hypot(dx, dy) < 1.0
            ok = np.asarray(refined["centroid_flag"]) == FLAG_OK
            rdx, rdy, rpx, rpy = _errors(refined, x, y)
            cache[sigma] = {"path": path, "catalog": catalog, "refined": refined, "seconds": seconds,
                            "sci": sci, "err": err, "real": real, "ok": ok,
                            "drizzlepac": _stats(dx, dy, px, py, real),
                            "psf": _stats(rdx, rdy, rpx, rpy, real & ok)}
        return cache[sigma]

    return make


def test_undersampled_positions_are_unbiased(measured):
    """sigma = 1 px: drizzlepac's positions err by ~0.030 px per axis, the PSF fit's by ~0.009 px."""
    m = measured(1.0)
    dp, psf = m["drizzlepac"], m["psf"]
    assert len(m["catalog"]) >= 240
    assert psf["n"] >= 0.98 * dp["n"]
    assert psf["rms_px"] < 0.013
    assert psf["rms2d_mas"] < 2.3
    assert dp["rms_px"] > 0.024
    assert dp["rms2d_mas"] > 4.5
    assert psf["rms_px"] < 0.5 * dp["rms_px"]


def test_undersampled_phase_bias_removed(measured):
    """sigma = 1 px: drizzlepac's mean error swings by ±0.04 px with the phase; the fit's is noise."""
    m = measured(1.0)
    dp, psf = m["drizzlepac"]["phase_bias_px"], m["psf"]["phase_bias_px"]
    # The outermost bins (star near a pixel edge) carry drizzlepac's bias, of opposite signs:
    # positions are pushed away from the centre of the brightest pixel.
    assert dp[0] < -0.025 and dp[-1] > 0.025
    assert dp[-1] - dp[0] > 0.05
    # About 60 measurements of ~0.009 px per bin: a standard error of ~0.0012 px.
    assert np.max(np.abs(psf)) < 0.006
    assert abs(psf[-1] - psf[0]) < 0.008


def test_well_sampled_no_worse(measured):
    """sigma = 2 px: the fit is no worse than drizzlepac (it is better) and has no phase bias.

    drizzlepac takes a segmentation centroid, sky included, for any source with more than
    three pixels within 10 % of its peak, meant for saturated stars; a well-sampled star
    near a pixel corner qualifies, so many positions here come from that branch.
    """
    m = measured(2.0)
    dp, psf = m["drizzlepac"], m["psf"]
    assert psf["n"] >= 0.98 * dp["n"]
    assert psf["rms_px"] <= dp["rms_px"]
    assert psf["rms_px"] < 0.03
    assert np.max(np.abs(psf["phase_bias_px"])) < 0.01


@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.0])
def test_noise_free_positions_are_exact(sigma):
    """Without noise the fit returns the true position at every phase, from a start 0.3 px off."""
    phases = np.linspace(-0.5, 0.5, 11)
    px, py = np.meshgrid(phases, phases)
    # One star per phase pair, on a grid 30 px apart: 11 x 11 stars in 11 rows.
    i = np.arange(px.size)
    x, y = 20.0 + 30.0 * (i % 11) + px.ravel(), 20.0 + 30.0 * (i // 11) + py.ravel()
    image = render_stars((360, 360), x, y, np.full(x.size, 2e4), sigma) + SKY_LEVEL
    start = Table({"xcentroid": x + 0.3, "ycentroid": y - 0.2})
    out = refine_positions(image, start, sigma)
    assert np.all(out["centroid_flag"] == FLAG_OK)
    assert np.max(np.abs(out["xcentroid"] - x)) < 1e-4
    assert np.max(np.abs(out["ycentroid"] - y)) < 1e-4


def test_rows_columns_and_speed(measured):
    """Same rows in the same order, every other column untouched, one flag column added, fast."""
    m = measured(1.0)
    catalog, refined = m["catalog"], m["refined"]
    assert refined.colnames == catalog.colnames + ["centroid_flag"]
    assert len(refined) == len(catalog)
    for name in catalog.colnames:
        if name not in ("xcentroid", "ycentroid"):
            assert np.array_equal(np.asarray(refined[name]), np.asarray(catalog[name])), name
    moved = np.hypot(refined["xcentroid"] - catalog["xcentroid"], refined["ycentroid"] - catalog["ycentroid"])
    assert np.all(moved[m["real"]] < 0.5)
    assert m["seconds"] < 2.0


def test_sigma_is_measured_from_the_image(measured):
    """With no sigma given it is measured on the brightest sources, and the positions stay as good."""
    for sigma in (1.0, 2.0):
        m = measured(sigma)
        assert estimate_sigma(m["sci"], m["catalog"], error=m["err"]) == pytest.approx(sigma, abs=0.05)
    m = measured(1.0)
    refined = refine_positions(m["sci"], m["catalog"], error=m["err"])
    assert np.allclose(refined["xcentroid"], m["refined"]["xcentroid"], atol=2e-3)


def test_failed_fits_keep_their_position_and_are_flagged():
    """Off-image, masked and non-finite sources keep their input position with a flag."""
    rng = np.random.default_rng(3)
    truth_x, truth_y = np.array([20.3, 40.6, 60.1, 1.2]), np.array([20.7, 40.2, 30.5, 50.0])
    image = add_noise(rng, render_stars((80, 80), truth_x, truth_y, np.full(4, 3e4)), sky=SKY_LEVEL)
    mask = np.zeros(image.shape, dtype=bool)
    mask[27:35, 56:65] = True          # all of star 3's cutout
    catalog = Table({"xcentroid": [20.0, 40.0, 60.0, -5.0, np.nan, 1.2],
                     "ycentroid": [21.0, 40.0, 30.0, 50.0, 10.0, 50.0],
                     "flux": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    out = refine_positions(image, catalog, 1.0, mask=mask)
    assert list(out["flux"]) == list(catalog["flux"])
    flags = list(out["centroid_flag"])
    assert flags[:2] == [FLAG_OK, FLAG_OK]
    assert abs(out["xcentroid"][0] - 20.3) < 0.05 and abs(out["ycentroid"][1] - 40.2) < 0.05
    assert flags[2] & FLAG_EDGE and flags[3] & FLAG_EDGE and flags[4] & FLAG_FAILED
    # A star cut by the image edge still has more than half its cutout: it is fitted.
    assert flags[5] == FLAG_OK and abs(out["xcentroid"][5] - 1.2) < 0.05
    for i in (2, 3):
        assert out["xcentroid"][i] == catalog["xcentroid"][i]
    assert np.isnan(out["xcentroid"][4])
    # A start 1.7 px from a star: the fit finds the star, further than max_shift allows.
    far = refine_positions(image, Table({"xcentroid": [22.0], "ycentroid": [20.7]}), 1.0)
    assert far["centroid_flag"][0] == FLAG_DIVERGED and far["xcentroid"][0] == 22.0
    assert refine_positions(image, far[["xcentroid", "ycentroid"]], 1.0,
                            max_shift=2.0)["centroid_flag"][0] == FLAG_OK
    empty = refine_positions(image, catalog[:0], 1.0)
    assert len(empty) == 0 and "centroid_flag" in empty.colnames


def test_refine_catalogs_replaces_the_chip_tables(measured):
    """The AlignmentTable-shaped dict gets refined tables, read from the exposure files."""
    m = measured(1.0)
    name = str(m["path"])
    sources = {name: {1: m["catalog"].copy()}, "missing_flt.fits": None}
    summary = refine_catalogs(sources, 1.0)
    n = len(m["catalog"])
    assert summary == {name: {1: {"sources": n, "refined": n, "flagged": 0, "sigma": 1.0}},
                       "missing_flt.fits": {}}
    assert np.allclose(sources[name][1]["xcentroid"], m["refined"]["xcentroid"], atol=1e-9, rtol=0)
    assert np.allclose(sources[name][1]["ycentroid"], m["refined"]["ycentroid"], atol=1e-9, rtol=0)
    measured_sigma = refine_catalogs({name: {1: m["catalog"].copy(), 2: None}})
    assert measured_sigma[name][1]["sigma"] == pytest.approx(1.0, abs=0.05)
