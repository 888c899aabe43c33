"""Alignment verification: the focus index and the similarity indices, as drizzlepac measures them.

The focus index is the maximum of the Laplacian-of-Gaussian of a drizzled image with saturated
sources masked (``astrometric_utils.build_focus_dict``). The single-drizzle products give the
distribution of good values; the total product passes when its z-score lies within the range
``evaluate_focus`` derives from them.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..statemachine.state import VERIFICATION
from .common import StepContext, captured_output
from .overlap import max_overlap_diff

# LoG sigma per instrument/detector, as runastrodriz's focus_pars.
FOCUS_SIGMA = {"WFC3/IR": 2.0, "WFC3/UVIS": 1.5, "ACS/WFC": 1.5, "ACS/SBC": 2.0, "ACS/HRC": 1.5}


def focus_check(stage_dir: Path, exposures: list[str], product: str, instdet: str) -> dict:
    """Measure the focus index of a product against its single-drizzle images.

    Parameters
    ----------
    stage_dir : Path
    exposures : list of str
        Calibrated exposures whose ``<root>_single_sci.fits`` were written by AstroDrizzle.
    product : str
        The total drizzled product.
    instdet : str
        ``'ACS/WFC'`` etc., for the LoG sigma.

    Returns
    -------
    dict
        Verification payload: the focus values, z-scores, the accepted range and the verdict.
    """
    from drizzlepac.haputils import astrometric_utils as amutils

    singles = [str(stage_dir / (e.rsplit("_", 1)[0] + "_single_sci.fits")) for e in exposures]
    missing = [s for s in singles if not Path(s).exists()]
    if missing:
        return {"check": "focus", "verdict": "error", "product": product,
                "reason": f"single-drizzle products missing: {[Path(m).name for m in missing]}"}
    sigma = FOCUS_SIGMA.get(instdet, 1.5)
    with captured_output():
        fd = amutils.build_focus_dict(singles, str(stage_dir / product), sigma=sigma)
        verified = bool(amutils.evaluate_focus(fd))
    s = fd["stats"]
    mean, std = float(s["mean"]), float(s["std"])
    # The same bounds evaluate_focus uses, recorded so the verdict can be audited from the log.
    lo = min(mean - 3.0 * std, 0.8 * mean)
    hi = mean + 3.0 * std
    z = (lambda v: float(amutils.compute_prob(v, mean, std)) if std > 0 else 0.0)
    return {
        "check": "focus", "verdict": "pass" if verified else "fail", "product": product,
        "sigma": sigma, "product_focus": float(fd["prod"][0]), "product_z": z(fd["prod"][0]),
        "single_focus": [float(v) for v in fd["exp"]],
        "single_z": [z(v) for v in fd["exp"]],
        "singles": [Path(x).name for x in singles],
        "mean": mean, "std": std, "z_min": z(lo), "z_max": z(hi),
        "product_position": [int(v) for v in fd["prod_pos"]],
        "rule": "pass when the product's z-score lies within [z_min, z_max] and std <= min(single focus)",
    }


def overlap_check(stage_dir: Path, exposures: list[str], product: str, workers: int = 1) -> dict:
    """Similarity of the product to each single-drizzle image in their region of overlap.

    drizzlepac's ``max_overlap_diff`` (see :mod:`.overlap`, which computes it on ``workers``
    threads): the minimum of a Hamming distance between source masks and an MSE-like difference,
    per single image; the alignment passes when the largest is at most 1.
    """
    from drizzlepac.haputils import astrometric_utils as amutils
    from drizzlepac.haputils import cell_utils
    from stwcs.wcsutil import HSTWCS

    singles = [str(stage_dir / (e.rsplit("_", 1)[0] + "_single_sci.fits")) for e in exposures]
    with captured_output():
        footprint = cell_utils.SkyFootprint(HSTWCS(str(stage_dir / product), ext=("SCI", 1)))
        footprint.build(singles)
        diffs = max_overlap_diff(footprint.total_mask, singles, str(stage_dir / product), workers=workers)
        verified, max_diff = amutils.evaluate_overlap_diffs(diffs)
    per_single = {Path(k).name: {kk: float(vv) for kk, vv in v.items() if isinstance(vv, (int, float))}
                  for k, v in diffs.items()}
    return {"check": "overlap_similarity", "verdict": "pass" if verified else "fail", "product": product,
            "max_distance": float(max_diff), "limit": 1.0, "singles": per_single,
            "rule": "pass when the largest per-exposure distance (min of Hamming and MSE variants) <= 1"}


def similarity_to_default(stage_dir: Path, default_dir: Path, product: str) -> dict:
    """drizzlepac's ``compute_similarity`` of this stage's product against the pipeline-default product."""
    from astropy.io import fits
    from drizzlepac.haputils import astrometric_utils as amutils

    ref = default_dir / product
    if not ref.exists():
        return {"check": "similarity_to_default", "verdict": "error", "product": product,
                "reason": f"{ref} not found"}
    with captured_output():
        index = float(amutils.compute_similarity(fits.getdata(stage_dir / product, ext=1),
                                                 fits.getdata(ref, ext=1)))
    return {"check": "similarity_to_default", "verdict": "pass" if index <= 1.0 else "fail",
            "product": product, "similarity_index": index, "limit": 1.0,
            "rule": "pass when the similarity index to the pipeline-default product is at most 1"}


def verify_alignment(ctx: StepContext) -> dict:
    """Verify the stage's drizzled product; each check is a ``verification`` event.

    The FLC product is checked when there is one (CTE-corrected data), as runastrodriz does.
    The default stage checks the focus; the alignment stages also check the similarity in the
    overlap region and against the default product. A single exposure has no relative alignment
    to verify and is recorded as not applicable.
    """
    inputs = ctx.run.inputs
    exposures = inputs["flc"] or inputs["flt"]
    product = f"{ctx.root}_{'drc' if inputs['flc'] else 'drz'}.fits"
    d = ctx.stage_dir()
    results = []
    if len(exposures) < 2:
        results.append({"check": "focus", "verdict": "n/a", "product": product,
                        "reason": "a single exposure: no relative alignment to verify"})
    else:
        ctx.progress(f"focus index of {product} against {len(exposures)} single-drizzle images")
        results.append(focus_check(d, exposures, product, f"{inputs['instrument']}/{inputs['detector']}"))
        if ctx.stage != "default":
            results.append(overlap_check(d, exposures, product, workers=ctx.config.get("num_cores") or os.cpu_count()))
    if ctx.stage != "default":
        results.append(similarity_to_default(d, ctx.stage_dir("default"), product))
    for r in results:
        ctx.emit(VERIFICATION, r)
    return {"verdicts": {r["check"]: r["verdict"] for r in results}}
