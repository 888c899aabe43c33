"""Similarity in the region of overlap: drizzlepac's ``max_overlap_diff``, computed in parallel.

This follows ``drizzlepac.haputils.astrometric_utils.max_overlap_diff`` of drizzlepac 3.11.0 step
by step on arrays already read and returns the same values (the tests compare the two on the same
files). Two things differ, neither of them in the numbers:

- the per-exposure work (focus index and point-source detection in the product's region and in
  the single-drizzle image's region) runs as independent tasks on threads: the numpy and
  scipy.ndimage calls that dominate it release the GIL, so ``-n`` cores share it;
- the 5x5 median filter drizzlepac applies to low-background regions is computed by partitioning
  5x5 windows (:func:`median_filter5`), which selects the same elements as
  ``scipy.ndimage.median_filter`` about twice as fast. On full-frame ACS/WFC products that filter
  was over half of the verification time.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

# Rows of output per block in median_filter5: its temporaries are rows x width x 25 values, twice
# (np.partition copies). 32 rows keep them small and in cache: on a 4300x4300 image the filter
# took 2.5 s (3.3 s with 256 rows), and a full-frame overlap check on 2 threads peaked 0.38 GB lower.
_MEDIAN_BLOCK_ROWS = 32


def median_filter5(arr: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.median_filter(arr, size=5)`` for a 2-D array without NaN.

    scipy's default boundary mode 'reflect' (d c b a | a b c d) is numpy's 'symmetric' padding.
    A median selects one of the 25 values of its window, so partitioning the windows gives the
    very same result as scipy's rank filter.

    Parameters
    ----------
    arr : ndarray
        2-D image; NaN would order differently from scipy's filter and must be replaced first.

    Returns
    -------
    ndarray
        Filtered image, same shape and dtype.
    """
    padded = np.pad(arr, 2, mode="symmetric")
    out = np.empty_like(arr)
    for r in range(0, arr.shape[0], _MEDIAN_BLOCK_ROWS):
        rows = min(_MEDIAN_BLOCK_ROWS, arr.shape[0] - r)
        windows = sliding_window_view(padded[r:r + rows + 4], (5, 5)).reshape(rows, arr.shape[1], 25)
        out[r:r + rows] = np.partition(windows, 12, axis=-1)[..., 12]
    return out


def detect_point_sources(arr: np.ndarray, log_sigma: float = 3.0, nsigma: float = 4,
                         sigma: float = 3.0) -> tuple[np.ndarray, int]:
    """Label point sources as drizzlepac's ``detect_point_sources`` (scale 1, no given background).

    The background is ``mean + nsigma * std`` of a sigma-clipped region; a region whose clipped
    median is below both its standard deviation and 1.0 is median-filtered first. drizzlepac's
    exposure-time weighting of the clipping sigma sets 3.0 in every branch, so it is left out.

    Returns
    -------
    labels : ndarray of int
    number : int
    """
    from drizzlepac.haputils import astrometric_utils as amutils

    src = arr.copy()
    bkg_total, bkg = amutils.sigma_clipped_bkg(src, sigma=sigma, nsigma=nsigma)
    if bkg[1] < bkg[2] and bkg[1] < 1.0:
        src = median_filter5(src)
    src -= bkg_total
    src = np.clip(src, 0, src.max())
    srclog = -1 * ndimage.gaussian_laplace(src, sigma=log_sigma)
    srclog[srclog < 0] = 0
    labels, number = ndimage.label(srclog)
    return labels, number


def _overlap_region(sdata: np.ndarray, max_overlap: np.ndarray, min_overlap: np.ndarray) -> np.ndarray:
    """Where a single image has data within the region of maximum overlap (else of any overlap)."""
    smask = sdata > 0
    soverlap = smask * max_overlap
    if soverlap.sum() == 0:
        soverlap = smask * min_overlap
    return soverlap


def _bounding_slices(mask: np.ndarray) -> tuple[slice, slice]:
    """drizzlepac's slices around a mask: from its first row (column) to its last, the last excluded.

    Found from the rows and columns that hold any pixel, not from ``np.where``, whose two index
    arrays would hold every pixel of a full-frame overlap (about 290 MB).
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1], 1), slice(cols[0], cols[-1], 1)


def overlap_diff(total_mask: np.ndarray, drz: np.ndarray, singles: dict, exptimes, sigma: float = 2.0,
                 lsigma: float = 3.0, workers: int = 1) -> dict:
    """Difference between a product and each single-drizzle image in their region of overlap.

    Parameters
    ----------
    total_mask : ndarray
        Number of exposures contributing to each product pixel (``cell_utils.SkyFootprint``).
    drz : ndarray
        The drizzled product's science array, the shape of ``total_mask``.
    singles : dict of str to ndarray
        Single-drizzle images on the product's WCS, by name, in the order of the result.
    exptimes : sequence of float
        Exposure time of each single image, in the order of ``singles``.
    sigma : float
        LoG sigma of the focus index.
    lsigma : float
        LoG sigma of the point-source detection.
    workers : int
        Threads sharing the per-exposure work.

    Returns
    -------
    dict
        Per single image, as drizzlepac's: ``distance`` (the minimum of the exposure-weighted
        Hamming distance of the source masks and twice the similarity index), ``xslice``,
        ``yslice``, ``product_num_sources``, ``num_sources``, ``focus``, ``focus_pos``,
        ``product_focus``, ``product_focus_pos``.
    """
    from drizzlepac.haputils import astrometric_utils as amutils

    singlefiles = list(singles)
    min_overlap = total_mask > 1
    max_overlap = total_mask == total_mask.max()
    exptimes = np.asarray(exptimes)
    exp_weights = exptimes / exptimes.max()
    # A single image without data gets drizzlepac's placeholder entry; the others their overlap
    # region and its bounding slices, shared by both sides' tasks.
    blank = [s for s in singlefiles if not (singles[s] > 0).any()]
    regions = {}
    for s in singlefiles:
        if s not in blank:
            soverlap = _overlap_region(singles[s], max_overlap, min_overlap)
            regions[s] = (soverlap, *_bounding_slices(soverlap))

    def measure(sfile: str, side: str):
        """Focus index and source mask of one side ('single' or 'product') of one single image."""
        soverlap, yslice, xslice = regions[sfile]
        region = np.nan_to_num((singles[sfile] if side == "single" else drz) * soverlap, copy=False, nan=0)
        focus_val, focus_pos = amutils.determine_focus_index(region, sigma=sigma)
        labels, number = detect_point_sources(region[yslice, xslice], log_sigma=lsigma)
        result = {"focus": float(focus_val), "focus_pos": (int(focus_pos[0][0]), int(focus_pos[1][0])),
                  "sources": np.clip(labels, 0, 1).astype(np.int16), "num": number}
        if side == "single":
            drz_arr = np.nan_to_num(drz[yslice, xslice] * soverlap[yslice, xslice], copy=False, nan=0)
            result["similarity"] = amutils.compute_similarity(region[yslice, xslice], drz_arr)
        return result

    tasks = [(s, side) for s in regions for side in ("single", "product")]
    if workers > 1 and len(tasks) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            measured = dict(zip(tasks, pool.map(lambda t: measure(*t), tasks)))
    else:
        measured = {t: measure(*t) for t in tasks}

    diff_dict = {}
    for sfile, exp_weight in zip(singlefiles, exp_weights):
        if sfile in blank:
            diff_dict[sfile] = {"distance": -1, "xslice": None, "yslice": None, "product_num_sources": 0,
                                "num_sources": 0, "focus": 0.0, "focus_pos": (None, None), "product_focus": 0.0,
                                "product_focus_pos": (None, None)}
            continue
        single, product = measured[(sfile, "single")], measured[(sfile, "product")]
        sfile_num = np.nonzero(single["sources"])[0].size
        dist = (np.abs(product["sources"] - single["sources"]).sum() / sfile_num) * exp_weight
        dist = min(dist, np.float64(single["similarity"]) * 2.0)
        _, yslice, xslice = regions[sfile]
        diff_dict[sfile] = {"distance": dist, "xslice": xslice, "yslice": yslice,
                            "product_num_sources": product["num"], "num_sources": single["num"],
                            "focus": single["focus"], "focus_pos": single["focus_pos"],
                            "product_focus": product["focus"], "product_focus_pos": product["focus_pos"]}
    return diff_dict
