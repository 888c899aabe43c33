"""Every decision of a run, as a pure function of recorded facts.

Each rule returns the payload of its ``decision`` event: what was chosen, from which candidates, and
the rule's text, so that ``explain`` and the trailer can say why without deriving anything again.
"""

from __future__ import annotations

from ..model import last_step, stage_steps, wcsname_step
from .machine import STOP_STAGE
from .state import RunState

# WCS preference, best first, as drizzlepac's runastrodriz orders WCSNAMEs: a posteriori fits, then
# a priori, then the pipeline default.
WCS_STAGE_PREFERENCE = ("aposteriori", "apriori", "default")
WCS_RULE = ("the most refined stage whose alignment was verified and kept: a posteriori, then a priori; "
            "the pipeline-default WCS otherwise")
# drizzlepac's fit quality (align.determine_fit_quality): 1 valid, 2 valid but compromised, 3 valid
# with an RMS above MAX_FIT_RMS, 4 both, 5 failed. perform_align accepts 1-4.
VALID_FIT_QUALITY = (1, 2, 3, 4)
FIT_RULE = ("drizzlepac 3.11 perform_align: for each fit method in turn (relative, 2dhist, default), the "
            "catalogs in order; the first quality-1 fit ends the search; otherwise the best quality wins, a "
            "fit of equal quality only with more matches and a lower RMS; the search ends after the relative "
            "fits when one reached quality 2-4; the chosen fit is applied only when 0 < RMS < MAX_FIT_LIMIT")
VERIFY_RULE = ("runastrodriz 3.11 verify_alignment: verified when the overlap difference passes (largest "
               "per-exposure distance <= 1), and the focus too when the a posteriori fit matched under 10 "
               "sources or under a tenth of the catalog; a single exposure is always verified. Quality 0 when "
               "verified, else 3; a similarity index to the pipeline-default product above 1 adds 3")


def stop_reason(run: RunState, stage: str) -> str | None:
    """Why a step of ``stage`` stopped it early, or None."""
    return next((run.output(stage, s.step)[STOP_STAGE] for s in stage_steps(stage)
                 if s.may_stop and run.output(stage, s.step).get(STOP_STAGE)), None)


def verify_stage(stage: str, checks: list[dict], n_exposures: int, matched: dict | None = None) -> dict:
    """Whether a stage's drizzled product verifies its alignment, as runastrodriz 3.11 decides it.

    Parameters
    ----------
    stage : str
    checks : list of dict
        The stage's verification payloads (``check``, ``verdict``): ``focus``, ``overlap_similarity``,
        and for the alignment stages ``similarity_to_default``.
    n_exposures : int
        Exposures in the verified product.
    matched : dict, optional
        For the a posteriori stage, the chosen fit's ``sources`` matched and their ``fraction`` of
        the reference catalog (runastrodriz's ``matchSources`` and ``catalogSources`` of the first
        exposure); the focus decides too when these are few.

    Returns
    -------
    dict
        Payload of the ``<stage>_verification`` decision: ``verified``, ``quality``, ``deciding``
        (the checks that decided), ``reason``, ``rule``.
    """
    by_check = {c["check"]: c for c in checks}
    if n_exposures < 2:
        verified, deciding, reason = True, [], "a single exposure: always verified"
    else:
        deciding = ["overlap_similarity"]
        if matched is not None and (matched["fraction"] < 0.1 or 0 <= matched["sources"] < 10):
            deciding.append("focus")
        failed = [f"{c} {by_check.get(c, {}).get('verdict', 'not measured')}" for c in deciding
                  if by_check.get(c, {}).get("verdict") != "pass"]
        verified = not failed
        reason = ("alignment verified: " + ", ".join(f"{c} pass" for c in deciding) if verified
                  else "verification failed: " + ", ".join(failed))
    quality = 0 if verified else 3
    similarity = by_check.get("similarity_to_default")
    if similarity is not None and not (verified and similarity["verdict"] == "pass"):
        quality += 3
    return {"decision": f"{stage}_verification", "verified": verified, "quality": quality,
            "deciding": deciding, "matched": matched, "reason": reason, "rule": VERIFY_RULE}


def conclude_stage(run: RunState, stage: str) -> dict:
    """Keep an alignment stage's WCS or discard it.

    Kept when no step stopped the stage and its verification decision says verified.

    Returns
    -------
    dict
        Payload of the ``<stage>_stage`` decision: ``kept``, ``reason``, ``wcsname``.
    """
    stop = stop_reason(run, stage)
    verification = run.decision(f"{stage}_verification")
    if stop:
        kept, reason = False, stop
    else:
        kept = bool(verification.get("verified"))
        reason = verification.get("reason", "not verified")
    return {"decision": f"{stage}_stage", "kept": kept, "reason": reason,
            "quality": verification.get("quality"),
            "wcsname": run.output(stage, wcsname_step(stage)).get("wcsname")}


def is_kept(run: RunState, stage: str) -> bool:
    """True when an alignment stage concluded with its WCS kept."""
    return bool(run.output(stage, last_step(stage)).get("kept"))


def best_verified_stage(run: RunState) -> str:
    """The stage whose exposures the next stage starts from: the last one kept, else default."""
    return next((stage for stage in ("aposteriori", "apriori") if is_kept(run, stage)), "default")


COSMIC_RAY_RULE = ("runastrodriz 3.11 find_crs: an alignment stage clears the cosmic-ray flags (DQ 4096, 8192) of "
                   "the verified list and identifies them again, drizzling twice, unless the alignment it starts "
                   "from was verified: the default products' or, for the a posteriori stage, a kept a priori "
                   "stage's")


def cosmic_ray_path(run: RunState, stage: str) -> dict:
    """Whether an alignment stage identifies cosmic rays again, by :data:`COSMIC_RAY_RULE`.

    Returns
    -------
    dict
        Payload of the ``<stage>_cosmic_rays`` decision: ``identify``, ``reason``, ``rule``.
    """
    if stage == "aposteriori" and is_kept(run, "apriori"):
        identify, reason = False, "the a priori stage was kept: its cosmic-ray flags hold"
    elif run.verdict("default") is False:
        identify, reason = True, "the default products were not verified: their cosmic-ray flags are suspect"
    else:
        identify, reason = False, "the default products were verified: their cosmic-ray flags hold"
    return {"decision": f"{stage}_cosmic_rays", "identify": identify, "reason": reason, "rule": COSMIC_RAY_RULE}


SOURCE_RULE = ("runastrodriz 3.11 works on the inputs in place: a stage starts from the exposures as the last "
               "kept stage left them; after a discarded a priori stage they keep the astrometry database's "
               "headerlets, with the pipeline-default WCS restored as primary (restore_pipeline_default)")


def exposures_source(run: RunState, stage: str) -> dict:
    """Which stage's exposures ``stage`` starts from, by :data:`SOURCE_RULE`.

    Returns
    -------
    dict
        Payload of the ``<stage>_source`` decision: ``source_stage``, ``restored`` (True for the
        discarded a priori stage's restored copies), ``reason``, ``rule``.
    """
    kept = best_verified_stage(run)
    restored = kept == "default" and bool(run.output("apriori", last_step("apriori")).get("restored"))
    if restored:
        reason = ("the a priori stage was discarded: its exposures, with the database's headerlets and the "
                  "pipeline-default WCS restored as primary")
    elif kept == "default":
        reason = "no alignment stage kept: the pipeline-default stage's exposures"
    else:
        reason = f"the {kept} stage was kept: its exposures"
    return {"decision": f"{stage}_source", "source_stage": "apriori" if restored else kept,
            "restored": restored, "reason": reason, "rule": SOURCE_RULE}


# drizzlepac's RMS of a fit that failed (determine_fit_quality's initial value), in mas.
FAILED_FIT_RMS = 1e9


def _rms(candidate: dict) -> float:
    rms = candidate.get("rms_mas")
    return FAILED_FIT_RMS if rms is None else rms


def _improves(best: dict | None, candidate: dict) -> bool:
    """True when ``candidate`` replaces ``best`` as perform_align's best fit (align.py 3.11, 421-466)."""
    quality = candidate["fit_quality"]
    if quality not in VALID_FIT_QUALITY:
        return False
    if best is None or quality == 1 or quality < best["fit_quality"]:
        return True
    return (quality == best["fit_quality"] and (candidate.get("matches") or 0) > (best.get("matches") or 0)
            and _rms(candidate) < _rms(best))


def best_fit(candidates: list[dict]) -> dict | None:
    """perform_align's best fit among the candidates, in the order they were fitted."""
    best = None
    for candidate in candidates:
        if best is not None and best["fit_quality"] == 1:
            break  # perform_align stops at its first quality-1 fit
        if _improves(best, candidate):
            best = candidate
    return best


def fit_search_ends(candidates: list[dict], method: str) -> bool:
    """After the catalogs of ``method``: True when perform_align tries no further method."""
    best = best_fit(candidates)
    return bool(candidates) and (candidates[-1]["fit_quality"] == 1 or (
        best is not None and best["fit_quality"] in (2, 3, 4) and method == "relative"))


def choose_fit(candidates: list[dict], max_rms: float, abandoned: str | None = None) -> dict:
    """Choose the a posteriori fit among the candidates, by :data:`FIT_RULE`.

    Parameters
    ----------
    candidates : list of dict
        Candidate payloads in the order fitted: ``catalog``, ``method``, ``fit_quality``,
        ``rms_mas``, ``matches`` and per exposure ``valid``.
    max_rms : float
        drizzlepac's ``MAX_FIT_LIMIT`` (mas): a best fit with this RMS or more is not applied.
    abandoned : str, optional
        Why perform_align gave up the search before choosing (no source in the last catalog).

    Returns
    -------
    dict
        Payload of the ``aposteriori_fit`` decision. ``chosen_catalog`` and ``chosen_method`` are
        None, with a ``reason``, when no fit is applied.
    """
    summary = [{k: c.get(k) for k in ("catalog", "method", "fit_quality", "rms_mas", "matches", "valid")}
               for c in candidates]
    decision = {"decision": "aposteriori_fit", "chosen_catalog": None, "chosen_method": None, "rule": FIT_RULE,
                "max_rms_mas": max_rms, "candidates": summary}
    best = best_fit(candidates)
    if abandoned:
        decision["reason"] = abandoned
    elif best is None:
        decision["reason"] = "no fit of quality 1-4: " + "; ".join(
            f"{c['catalog']} {c['method']} quality {c['fit_quality']}" for c in candidates)
    elif not 0 < _rms(best) < max_rms:
        decision["reason"] = (f"the best fit, {best['catalog']} {best['method']}, has an RMS of "
                              f"{_rms(best):.4g} mas, outside (0, {max_rms}) mas")
    else:
        invalid = sorted(k for k, v in best.get("exposures", {}).items() if not v.get("valid", True))
        if invalid:
            decision["reason"] = (f"the best fit, {best['catalog']} {best['method']}, could not align "
                                  f"{', '.join(invalid)} to the absolute astrometric frame")
        else:
            decision.update(chosen_catalog=best["catalog"], chosen_method=best["method"])
    return decision


def _never_entered_reason(run: RunState, stage: str) -> str:
    for tr in run.transitions:
        for g in tr["guards"]:
            if g["guard"].startswith(stage) and not g["result"]:
                return g["reason"]
    return "stage not run"


def choose_final_wcs(run: RunState) -> dict:
    """Choose the stage whose WCS the final products use.

    Returns
    -------
    dict
        Payload of the ``wcs`` decision: every candidate with its WCSNAME, verifications and verdict,
        the chosen stage and WCSNAME, and the rule.
    """
    entered = {t["to"] for t in run.transitions}
    candidates = []
    for stage in WCS_STAGE_PREFERENCE:
        if stage not in entered:
            candidates.append({"stage": stage, "wcsname": None, "verdict": "not run",
                               "reason": _never_entered_reason(run, stage)})
            continue
        checks = run.verifications.get(stage, [])
        # 'n/a' (a single exposure) is neither a pass nor a fail: say so rather than 'not verified'.
        fallback = checks[0]["verdict"] if checks else "not verified"
        candidate = {"stage": stage, "wcsname": run.output(stage, wcsname_step(stage)).get("wcsname"),
                     "verdict": {True: "pass", False: "fail"}.get(run.verdict(stage), fallback),
                     "verifications": checks}
        if stage != "default":
            conclusion = run.output(stage, last_step(stage))
            candidate.update(kept=bool(conclusion.get("kept")), reason=conclusion.get("reason"))
        candidates.append(candidate)
    chosen = next((c for c in candidates if c.get("kept")),
                  next(c for c in candidates if c["stage"] == "default"))
    return {"decision": "wcs", "chosen_stage": chosen["stage"], "chosen_wcsname": chosen["wcsname"],
            "rule": WCS_RULE, "candidates": candidates}
