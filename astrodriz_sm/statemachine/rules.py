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
# drizzlepac's fit quality: 1-3 valid, 4 suspect, 5 failed.
VALID_FIT_QUALITY = (1, 2, 3)
FIT_RULE = "among the valid fits (drizzlepac fit quality 1-3), the lowest RMS; more matches break ties"


def stop_reason(run: RunState, stage: str) -> str | None:
    """Why a step of ``stage`` stopped it early, or None."""
    return next((run.output(stage, s.step)[STOP_STAGE] for s in stage_steps(stage)
                 if s.may_stop and run.output(stage, s.step).get(STOP_STAGE)), None)


def conclude_stage(run: RunState, stage: str) -> dict:
    """Keep an alignment stage's WCS or discard it.

    Kept when no step stopped the stage and every verification passed.

    Returns
    -------
    dict
        Payload of the ``<stage>_stage`` decision: ``kept``, ``reason``, ``wcsname``.
    """
    stop = stop_reason(run, stage)
    if stop:
        kept, reason = False, stop
    elif run.verdict(stage):
        kept, reason = True, "alignment verified (focus and similarity)"
    else:
        failed = [f"{v['check']} {v['verdict']}" for v in run.verifications.get(stage, []) if v["verdict"] != "pass"]
        kept, reason = False, "verification failed: " + ", ".join(failed)
    return {"decision": f"{stage}_stage", "kept": kept, "reason": reason,
            "wcsname": run.output(stage, wcsname_step(stage)).get("wcsname")}


def is_kept(run: RunState, stage: str) -> bool:
    """True when an alignment stage concluded with its WCS kept."""
    return bool(run.output(stage, last_step(stage)).get("kept"))


def best_verified_stage(run: RunState) -> str:
    """The stage whose exposures the next stage starts from: the last one kept, else default."""
    return next((stage for stage in ("aposteriori", "apriori") if is_kept(run, stage)), "default")


def choose_fit(candidates: list[dict], method: str) -> dict:
    """Choose the a posteriori fit among the candidates (one per reference catalog).

    Parameters
    ----------
    candidates : list of dict
        Candidate payloads: ``catalog``, ``fit_quality``, ``valid``, ``rms_mas``, ``matches``.
    method : str
        The fit method the candidates were made with.

    Returns
    -------
    dict
        Payload of the ``aposteriori_fit`` decision. ``chosen_catalog`` is None, with a ``reason``,
        when no candidate is valid.
    """
    valid = [c for c in candidates if c.get("valid")]
    summary = [{k: c.get(k) for k in ("catalog", "fit_quality", "rms_mas", "matches", "valid")} for c in candidates]
    decision = {"decision": "aposteriori_fit", "chosen_catalog": None, "chosen_method": method, "rule": FIT_RULE,
                "candidates": summary}
    if not valid:
        decision["reason"] = "no valid fit to any reference catalog: " + "; ".join(
            f"{c['catalog']} quality {c['fit_quality']}" for c in candidates)
        return decision
    best = min(valid, key=lambda c: (c["rms_mas"], -c["matches"]))
    decision["chosen_catalog"] = best["catalog"]
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
