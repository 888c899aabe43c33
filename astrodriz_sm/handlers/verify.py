"""Alignment verification: the focus index, with drizzlepac's own measurement code.

The focus index is the maximum of the Laplacian-of-Gaussian of a drizzled image with saturated
sources masked (``astrometric_utils.build_focus_dict``). The single-drizzle products give the
distribution of good values; the total product passes when its z-score lies within the range
``evaluate_focus`` derives from them.
"""

from __future__ import annotations

from pathlib import Path

from ..statemachine.state import VERIFICATION
from .common import StepContext, captured_output

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


def verify_alignment(ctx: StepContext) -> dict:
    """Verify the stage's drizzled product; each check is a ``verification`` event.

    The FLC product is checked when there is one (CTE-corrected data), as runastrodriz does.
    A single exposure has nothing to compare with and is recorded as not applicable.
    """
    inputs = ctx.run.inputs
    exposures = inputs["flc"] or inputs["flt"]
    product = f"{ctx.root}_{'drc' if inputs['flc'] else 'drz'}.fits"
    if len(exposures) < 2:
        result = {"check": "focus", "verdict": "n/a", "product": product,
                  "reason": "a single exposure: no relative alignment to verify"}
    else:
        ctx.progress(f"focus index of {product} against {len(exposures)} single-drizzle images")
        result = focus_check(ctx.stage_dir(), exposures, product, f"{inputs['instrument']}/{inputs['detector']}")
    ctx.emit(VERIFICATION, result)
    return {"verdict": result["verdict"]}
