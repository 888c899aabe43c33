"""The overlap similarity of a product's verification, read from its files.

The computation is :func:`astrodriz_sm.numerics.overlap.overlap_diff`; this reads the arrays and
exposure times it needs, as drizzlepac's ``max_overlap_diff`` reads them.
"""

from __future__ import annotations

from astropy.io import fits

from ..numerics.overlap import overlap_diff


def max_overlap_diff(total_mask, singlefiles: list[str], prodfile: str, sigma: float = 2.0,
                     lsigma: float = 3.0, workers: int = 1) -> dict:
    """drizzlepac's ``max_overlap_diff`` of a product and its single-drizzle images, by file name.

    Parameters
    ----------
    total_mask : ndarray
        Number of exposures contributing to each product pixel (``cell_utils.SkyFootprint``).
    singlefiles : list of str
        Single-drizzle images on the product's WCS.
    prodfile : str
        The drizzled product.
    sigma, lsigma, workers
        As for :func:`~astrodriz_sm.numerics.overlap.overlap_diff`.

    Returns
    -------
    dict
        :func:`~astrodriz_sm.numerics.overlap.overlap_diff`'s, keyed by ``singlefiles``.

    Raises
    ------
    ValueError
        The product's shape differs from the mask's.
    """
    drz = fits.getdata(prodfile, ext=("SCI", 1))
    if drz.shape != total_mask.shape:
        raise ValueError(f"{prodfile}: total mask shape {total_mask.shape} differs from the product's {drz.shape}")
    exptimes = [fits.getval(s, "exptime") for s in singlefiles]
    singles = {s: fits.getdata(s) for s in singlefiles}
    return overlap_diff(total_mask, drz, singles, exptimes, sigma=sigma, lsigma=lsigma, workers=workers)
