"""Alignment verification: the focus index and the similarity indices, as drizzlepac measures them.

The focus index is the maximum of the Laplacian-of-Gaussian of a drizzled image with saturated
sources masked (``astrometric_utils.build_focus_dict``). The single-drizzle products give the
distribution of good values; the total product passes when its z-score lies within the range
``evaluate_focus`` derives from them.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..model import Product, StepResult, focus_json_name
from ..model.events import VERIFICATION
from ..plumbing import captured_output
from .common import StepContext
from .overlap import max_overlap_diff

# drizzlepac's evaluate_focus: the product's focus index is judged against the singles' mean plus or minus
# this many standard deviations, the lower edge at most this share of the mean.
FOCUS_SIGMAS = 3.0
FOCUS_FLOOR = 0.8


def build_focus_dict(singlefiles: list[str], prodfile: str, sigma: float = 2.0, workers: int = 1) -> dict:
    """drizzlepac's ``astrometric_utils.build_focus_dict``, its focus indices computed on threads.

    The same steps and the same values as drizzlepac 3.11.0's: the saturation mask common to the
    single-drizzle images, then the LoG focus index of each image and of the product with that mask
    applied. scipy's Gaussian filters release the GIL, so the images share ``workers`` cores.
    """
    import copy

    from astropy.io import fits
    from drizzlepac.haputils import astrometric_utils as amutils

    fd = copy.deepcopy(amutils.FOCUS_DICT)
    fd["expnames"], fd["prodname"] = singlefiles, prodfile
    full_sat_mask = None
    for f in singlefiles:
        sat_mask = amutils.compute_zero_mask(f)
        full_sat_mask = sat_mask if full_sat_mask is None else np.bitwise_and(full_sat_mask, sat_mask)

    def focus(path: str):
        arr = fits.getdata(path)
        arr[~full_sat_mask] = 0
        return amutils.determine_focus_index(np.nan_to_num(arr, nan=0), sigma=sigma)

    files = [*singlefiles, prodfile]
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            values = list(pool.map(focus, files))
    else:
        values = [focus(f) for f in files]
    for focus_val, focus_pos in values[:-1]:
        fd["exp"].append(float(focus_val))
        # drizzlepac keeps the position of the last single image only.
        fd["exp_pos"] = (int(focus_pos[0][0]), int(focus_pos[1][0]))
    focus_val, focus_pos = values[-1]
    fd["prod"].append(float(focus_val))
    fd["prod_pos"] = (int(focus_pos[0][0]), int(focus_pos[1][0]))
    exparr = np.array(fd["exp"])
    fd["stats"] = {"mean": exparr.mean(), "std": exparr.std(), "min": exparr.min(), "max": exparr.max()}
    return fd


def focus_check(stage_dir: Path, product: Product, sigma: float, json_path: Path | None = None,
                workers: int = 1) -> dict:
    """Measure the focus index of a product against its single-drizzle images.

    Parameters
    ----------
    stage_dir : Path
    product : Product
        The total drizzled product; AstroDrizzle wrote its exposures' single-drizzle images.
    sigma : float
        Sigma of the LoG kernel (the detector's ``focus_sigma``).
    json_path : Path, optional
        Also write drizzlepac's focus dictionary there, as runastrodriz ``-d`` does.
    workers : int
        Threads sharing the focus indices.

    Returns
    -------
    dict
        Verification payload: the focus values, z-scores, the accepted range and the verdict.
    """
    from drizzlepac.haputils import astrometric_utils as amutils

    singles = [str(stage_dir / name) for name in product.singles]
    missing = [s for s in singles if not Path(s).exists()]
    if missing:
        return {"check": "focus", "verdict": "error", "product": product.name,
                "reason": f"single-drizzle products missing: {[Path(m).name for m in missing]}"}
    with captured_output():
        fd = build_focus_dict(singles, str(stage_dir / product.name), sigma=sigma, workers=workers)
        verified = bool(amutils.evaluate_focus(fd))
    if json_path is not None:
        json_path.write_text(json.dumps([fd], default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
    s = fd["stats"]
    mean, std = float(s["mean"]), float(s["std"])
    # The same bounds evaluate_focus uses, recorded so the verdict can be audited from the log: a band of
    # FOCUS_SIGMAS standard deviations of the singles, its lower edge no higher than FOCUS_FLOOR of their mean.
    band, floor = [mean - FOCUS_SIGMAS * std, mean + FOCUS_SIGMAS * std], FOCUS_FLOOR * mean
    lo, hi = min(band[0], floor), band[1]
    z = (lambda v: float(amutils.compute_prob(v, mean, std)) if std > 0 else 0.0)
    return {
        "check": "focus", "verdict": "pass" if verified else "fail", "product": product.name,
        "sigma": sigma, "product_focus": float(fd["prod"][0]), "product_z": z(fd["prod"][0]),
        "single_focus": [float(v) for v in fd["exp"]],
        "single_z": [z(v) for v in fd["exp"]],
        "singles": [Path(x).name for x in singles],
        "mean": mean, "std": std, "band": band, "floor": floor, "z_min": z(lo), "z_max": z(hi),
        "product_position": [int(v) for v in fd["prod_pos"]],
        "rule": "pass when the product's z-score lies within [z_min, z_max] and std <= min(single focus)",
    }


def overlap_check(stage_dir: Path, product: Product, workers: int = 1) -> dict:
    """Similarity of the product to each single-drizzle image in their region of overlap.

    drizzlepac's ``max_overlap_diff`` (see :mod:`.overlap`, which computes it on ``workers``
    threads): the minimum of a Hamming distance between source masks and an MSE-like difference,
    per single image; the alignment passes when the largest is at most 1.
    """
    from drizzlepac.haputils import astrometric_utils as amutils
    from drizzlepac.haputils import cell_utils
    from stwcs.wcsutil import HSTWCS

    singles = [str(stage_dir / name) for name in product.singles]
    total = str(stage_dir / product.name)
    with captured_output():
        footprint = cell_utils.SkyFootprint(HSTWCS(total, ext=("SCI", 1)))
        footprint.build(singles)
        diffs = max_overlap_diff(footprint.total_mask, singles, total, workers=workers)
        verified, max_diff = amutils.evaluate_overlap_diffs(diffs)
    per_single = {Path(k).name: {kk: float(vv) for kk, vv in v.items() if isinstance(vv, (int, float))}
                  for k, v in diffs.items()}
    return {"check": "overlap_similarity", "verdict": "pass" if verified else "fail", "product": product.name,
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


def verify_alignment(ctx: StepContext) -> StepResult:
    """Verify the stage's drizzled product; each check is a ``verification`` fact, the verdict a ``decision``.

    As runastrodriz 3.11 does (``verify_alignment``, ``run_driz``): the FLC product is checked when
    there is one (CTE-corrected data); with two exposures or more the focus and the overlap
    difference are measured; the alignment stages also measure the similarity to the
    pipeline-default product. Which of them decide is the verification rule's (``ctx.rules.verify_stage``);
    the runner records its ``<stage>_verification`` decision from the checks recorded here.
    """
    product = ctx.inputs.verified_product
    d = ctx.stage_dir()
    results = []
    n_drizzled = len(product.drizzled)
    if n_drizzled < 2:
        results.append({"check": "focus", "verdict": "n/a", "product": product.name,
                        "reason": ("a single exposure" if n_drizzled else "no exposure")
                        + " drizzled: no relative alignment to verify"})
    else:
        ctx.progress(f"focus index and overlap difference of {product.name} against "
                     f"{n_drizzled} single-drizzle images")
        workers = ctx.cores
        results.append(focus_check(d, product, ctx.inputs.detector_parameters.focus_sigma,
                                   d / focus_json_name(product.name, ctx.stage) if ctx.config.debug else None,
                                   workers=workers))
        results.append(overlap_check(d, product, workers=workers))
    if ctx.stage != "default":
        results.append(similarity_to_default(d, ctx.stage_dir("default"), product.name))
    matched = ctx.run.output(ctx.stage, "align").get("matched") if ctx.stage == "aposteriori" else None
    decision = ctx.rules.verify_stage(ctx.stage, results, n_drizzled, matched)
    for r in results:
        r["decides"] = r["check"] in decision["deciding"]
    return StepResult({"verdicts": {r["check"]: r["verdict"] for r in results}, "verified": decision["verified"]},
                      facts=[(VERIFICATION, r) for r in results])
