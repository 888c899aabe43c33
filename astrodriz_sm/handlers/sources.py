"""Source finding for the a posteriori fit: drizzlepac's ``AlignmentTable``, one process per exposure.

``align_utils.AlignmentTable.__init__`` of drizzlepac 3.11.0 computes, exposure after exposure,
the background (``Background2D`` at up to four exclusion percentiles), the PSF kernel, the
single-image cosmic-ray clean and the background and kernel again; ``find_alignment_sources``
then extracts each exposure's sources. On full-frame ACS/WFC that is about 20 s per exposure, on
one core. Each exposure's work depends on the others through one number only: the kernel FWHM
of the first exposure with a kernel becomes the starting FWHM of the later ones. So the first
exposures run one at a time until that FWHM is known, and the rest run in parallel, in child
processes. The source tables are the same as drizzlepac's own, row for row (the tests compare
them on the same files); the table is built as its ``__init__`` builds it, without that loop.
"""

from __future__ import annotations

import logging
import multiprocessing
import traceback
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from ..plumbing import captured_output

log = logging.getLogger(__name__)


def _exposure_sources(image: str, fwhmpsf: float, alignment_pars: dict, dqname: str):
    """One exposure's sources, as ``AlignmentTable.__init__`` and ``find_alignment_sources`` find them.

    Returns
    -------
    catalog_table : dict of int to Table, or None
        Sources per SCI extension; None when the set-up (background, kernel) raised, as drizzlepac
        then stops adding exposures.
    fwhmpsf : float or None
        The exposure's kernel FWHM (arcsec) when a kernel was found, else None.
    text : str
        What drizzlepac logged meanwhile, and the traceback of a failed set-up.
    """
    from astropy.io import fits
    from drizzlepac.haputils import align_utils
    from drizzlepac.haputils import astrometric_utils as amutils

    p = alignment_pars
    background = {"box_size": p["box_size"], "win_size": p["win_size"], "nsigma": p["nsigma"],
                  "bkg_estimator": p["bkg_estimator"], "rms_estimator": p["rms_estimator"],
                  "threshold_flag": p["threshold"]}
    with captured_output() as out:
        img = None
        try:
            hdr0 = fits.getheader(image)
            wfpc2_pc = hdr0.get("instrume", "").lower() == "wfpc2" and "detector" not in hdr0
            detector = "PC" if wfpc2_pc else hdr0.get("detector")
            img = align_utils.SBCHAPImage(image) if detector == "SBC" else align_utils.HAPImage(image)
            img.compute_background(**background)
            img.build_kernel(fwhmpsf)
            img.crclean = p["classify"]
            if img.crclean:
                for chip in range(1, img.num_sci + 1):
                    img.imghdu[("SCI", chip)].data = amutils.crclean_image(
                        img.imghdu[("SCI", chip)].data, img.threshold[chip], img.kernel, img.kernel_fwhm,
                        background=img.bkg[chip])
                img.compute_background(**background)
                img.build_kernel(fwhmpsf)
        except Exception:  # noqa: BLE001 - drizzlepac logs a failed set-up and keeps what it had
            log.error("Problem encountered in setting up alignment to a catalog")
            traceback.print_exc()
            if img is not None:
                img.close()
            return None, None, out.getvalue()
        found_fwhm = img.fwhmpsf if img.kernel is not None else None
        try:
            img.find_alignment_sources(output=False, dqname=dqname, crclean=False, **p)
        finally:
            img.close()
    return img.catalog_table, found_fwhm, out.getvalue()


def alignment_table(files: list[str], workers: int = 1, **pars):
    """drizzlepac's ``AlignmentTable`` of ``files`` with its sources found (``extracted_sources``).

    Parameters
    ----------
    files : list of str
        Exposures, in the current directory.
    workers : int
        Processes that share the exposures once the first kernel FWHM is known; 1 does everything
        in this process, in drizzlepac's order.
    **pars
        drizzlepac's alignment parameters (``align.get_default_pars`` and the run's additions).

    Returns
    -------
    drizzlepac.haputils.align_utils.AlignmentTable
        ``process_list`` None when ``analyze_data`` excluded every exposure. An exposure whose
        set-up raises ends the source finding there, as in drizzlepac: it and the later exposures
        have no sources.
    """
    from drizzlepac.haputils import align_utils, analyze

    table = align_utils.AlignmentTable.__new__(align_utils.AlignmentTable)
    # The attributes AlignmentTable.__init__ sets, in its way (drizzlepac 3.11.0 align_utils.py 77-235).
    table.fit_methods = {"relative": align_utils.match_relative_fit, "2dhist": align_utils.match_2dhist_fit,
                         "default": align_utils.match_default_fit}
    table.fit_pars = {"relative": pars["match_relative_fit"], "2dhist": pars["match_2dhist_fit"],
                      "default": pars["match_default_fit"]}
    table.alignment_pars = pars["run_align"].copy()
    for group in ("general", "generate_source_catalogs", "determine_fit_quality"):
        table.alignment_pars.update(pars[group])
    for key in table.fit_pars:
        table.fit_pars[key]["pars"] = pars["determine_fit_quality"]
        table.fit_pars[key]["pars"]["minobj"] = table.alignment_pars["mosaic_fitgeom_list"]
    table.dqname = "DQ"
    table.haplist = []
    table.process_list = None
    table.imglist, table.reference_catalogs, table.group_id_dict = [], {}, {}
    table.fit_dict, table.selected_fit = {}, None
    table.extracted_sources = {}
    table.filtered_table, _ = analyze.analyze_data(files, type="")
    if table.filtered_table["doProcess"].sum() == 0:
        return table
    table.process_list = list(table.filtered_table["imageName"][np.where(table.filtered_table["doProcess"])])

    fwhmpsf, fwhm_known = table.alignment_pars.get("fwhmpsf"), False
    pending = list(table.process_list)
    executor = None
    try:
        # One at a time until an exposure yields a kernel FWHM, then the rest together.
        while pending:
            if fwhm_known and workers > 1 and len(pending) > 1:
                executor = ProcessPoolExecutor(min(workers, len(pending)),
                                               mp_context=multiprocessing.get_context("fork"))
                batch = [(n, executor.submit(_exposure_sources, n, fwhmpsf, table.alignment_pars, table.dqname))
                         for n in pending]
                results = ((n, f.result()) for n, f in batch)
            else:
                name = pending[0]
                results = iter([(name, _exposure_sources(name, fwhmpsf, table.alignment_pars, table.dqname))])
            for name, (catalog_table, fwhm, text) in results:
                pending.remove(name)
                print(text, end="")
                if catalog_table is None:
                    pending = []
                    break
                table.extracted_sources[name] = catalog_table
                if not fwhm_known and fwhm is not None:
                    fwhmpsf, fwhm_known = fwhm, True
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    return table
