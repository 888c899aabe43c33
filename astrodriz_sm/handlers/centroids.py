"""PSF-fitted positions for the catalogs of drizzlepac's ``AlignmentTable``, read from the exposures.

The fit itself, and why it is free of pixel-phase bias, is :mod:`astrodriz_sm.numerics.centroids`;
this module reads each exposure's SCI, ERR and DQ arrays for it.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from ..numerics.centroids import estimate_sigma, refine_positions


def refine_catalogs(extracted_sources: dict, sigma=None, *, mask_bits: int = 256 + 2048,
                    xname: str = "xcentroid", yname: str = "ycentroid") -> dict:
    """Refine, in place, the per-chip catalogs of ``AlignmentTable.extracted_sources``.

    Each exposure file is read again (drizzlepac closed it after the source finding): the
    chip's SCI array is fitted with its ERR array as weights and the pixels whose DQ has any
    of ``mask_bits`` left out, by :func:`refine_positions`. Each refined table replaces its
    chip's entry, so the fits that follow (``configure_fit`` builds their catalogs from this
    dict) use the refined positions; it must run before the first ``configure_fit``, which
    renames the position columns of these tables to ``x``/``y``.

    Parameters
    ----------
    extracted_sources : dict
        ``{file name: {chip: Table or None}}``, file names as drizzlepac opened them.
    sigma : float or None, optional
        PSF sigma in pixels for every chip; None: measured per chip (:func:`estimate_sigma`).
    mask_bits : int, optional
        DQ bits of pixels to leave out of the fits (saturated pixels by default).
    xname, yname : str, optional
        Position columns.

    Returns
    -------
    dict
        ``{file name: {chip: {"sources", "refined", "flagged", "sigma"}}}``, for the record.
    """
    summary = {}
    for name, chips in extracted_sources.items():
        summary[name] = {}
        if not chips:
            continue
        with fits.open(name) as hdul:
            for chip, catalog in chips.items():
                if catalog is None or len(catalog) == 0:
                    continue
                sci = np.asarray(hdul["SCI", chip].data, dtype=np.float64)
                err = hdul["ERR", chip].data if ("ERR", chip) in hdul else None
                dq = hdul["DQ", chip].data if ("DQ", chip) in hdul else None
                mask = None if dq is None else (np.asarray(dq).astype(np.int64) & mask_bits) != 0
                chip_sigma = sigma
                if chip_sigma is None:
                    chip_sigma = estimate_sigma(sci, catalog, error=err, mask=mask, xname=xname, yname=yname)
                refined = refine_positions(sci, catalog, chip_sigma, error=err, mask=mask,
                                           xname=xname, yname=yname)
                chips[chip] = refined
                flagged = int(np.count_nonzero(refined["centroid_flag"]))
                summary[name][chip] = {"sources": len(refined), "refined": len(refined) - flagged,
                                       "flagged": flagged, "sigma": float(chip_sigma)}
    return summary
