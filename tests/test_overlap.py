"""The overlap similarity computed in parallel equals drizzlepac's max_overlap_diff, value for value."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from drizzlepac.haputils import astrometric_utils as amutils
from scipy import ndimage

from astrodriz_sm.handlers.overlap import max_overlap_diff
from astrodriz_sm.numerics.overlap import median_filter5

SHAPE = (230, 260)


@pytest.mark.parametrize("shape", [(5, 5), (37, 300), (300, 41), (600, 97)])
def test_median_filter5_equals_scipy(shape):
    rng = np.random.default_rng(sum(shape))
    arr = rng.normal(0.3, 1.0, shape).astype(np.float32)
    arr[rng.random(shape) < 0.3] = 0.0  # ties, as in masked regions
    np.testing.assert_array_equal(median_filter5(arr), ndimage.median_filter(arr, size=5))


def _scene(rng, sky: float, shift: float, exptime: float) -> np.ndarray:
    """Stars on a sky, in counts per second; the overlap is everything but a 20-pixel left border."""
    y, x = np.mgrid[: SHAPE[0], : SHAPE[1]]
    img = np.zeros(SHAPE)
    for sx, sy, flux in zip(np.linspace(30, 240, 9).repeat(4), np.tile(np.linspace(25, 205, 4), 9),
                            np.linspace(50, 400, 36)):
        img += flux * np.exp(-((x - sx - shift) ** 2 + (y - sy) ** 2) / (2 * 1.3 ** 2))
    noise = rng.normal(0, np.sqrt(np.maximum(img + sky, 1) / exptime))
    out = (img + sky + noise).astype(np.float32)
    out[:, :20] = 0.0
    return out


def _write(tmp_path, sky: float, exptimes, shifts, blank: int | None = None):
    rng = np.random.default_rng(7)
    singles = []
    for i, (t, s) in enumerate(zip(exptimes, shifts)):
        data = np.zeros(SHAPE, np.float32) if i == blank else _scene(rng, sky, s, t)
        name = tmp_path / f"e{i}_single_sci.fits"
        fits.PrimaryHDU(data, header=fits.Header({"EXPTIME": t})).writeto(name)
        singles.append(str(name))
    product = np.mean([fits.getdata(s) for s in singles if fits.getdata(s).any()], axis=0).astype(np.float32)
    prod = tmp_path / "p_drz.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(product, name="SCI")]).writeto(prod)
    mask = np.full(SHAPE, len(singles), np.int16)
    mask[:, :20] = 0
    mask[:40, 20:60] = 1  # a corner covered by one exposure only: outside the maximum overlap
    return mask, singles, str(prod)


@pytest.mark.parametrize("sky,exptimes,shifts,blank", [
    (0.02, (400, 400, 100), (0.0, 0.4, 2.5), None),   # low sky: drizzlepac median-filters first
    (40.0, (400, 400, 100), (0.0, 0.4, 2.5), None),   # bright sky: no median filter
    (0.02, (300, 600, 600), (0.0, 0.0, 1.0), 1),      # one single without data
])
@pytest.mark.parametrize("workers", [1, 2])
def test_max_overlap_diff_equals_drizzlepac(tmp_path, sky, exptimes, shifts, blank, workers):
    mask, singles, prod = _write(tmp_path, sky, exptimes, shifts, blank)
    theirs = amutils.max_overlap_diff(mask, singles, prod, scale=1)
    ours = max_overlap_diff(mask, singles, prod, workers=workers)
    assert ours == theirs
    distances = [ours[s]["distance"] for s in singles]
    if blank is None:
        # The shifted single differs more than the aligned ones: the comparison has teeth.
        assert distances[2] > max(distances[:2]) > 0
        assert all(ours[s]["num_sources"] >= 20 for s in singles)
    else:
        assert distances[blank] == -1


@pytest.mark.parametrize("sky,median_filtered", [(0.02, True), (40.0, False)])
def test_the_cases_cover_both_background_paths(tmp_path, sky, median_filtered):
    """drizzlepac median-filters a region whose clipped median is below its std and below 1."""
    mask, singles, _ = _write(tmp_path, sky, (400, 400, 100), (0.0, 0.4, 2.5))
    overlap = mask == mask.max()
    ys, xs = np.where(overlap)
    region = (fits.getdata(singles[0]) * overlap)[ys.min():ys.max(), xs.min():xs.max()]
    _, (_, median, std) = amutils.sigma_clipped_bkg(region, sigma=3.0, nsigma=4)
    assert bool(median < std and median < 1.0) == median_filtered


@pytest.mark.parametrize("workers", [1, 2])
def test_build_focus_dict_equals_drizzlepac(tmp_path, workers):
    from astrodriz_sm.handlers.verify import build_focus_dict

    _, singles, prod = _write(tmp_path, 0.02, (400, 400, 100), (0.0, 0.4, 2.5))
    theirs = amutils.build_focus_dict(singles, prod, sigma=1.5)
    ours = build_focus_dict(singles, prod, sigma=1.5, workers=workers)
    assert ours == theirs
    # The shifted single is the least sharp against the same mask: real values, not placeholders.
    assert ours["exp"][2] < min(ours["exp"][:2])
    assert len(ours["exp"]) == 3 and ours["prod"][0] > 0
