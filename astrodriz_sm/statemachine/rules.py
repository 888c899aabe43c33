"""Every decision of a run, as a pure function of recorded facts.

Each rule returns the payload of its ``decision`` event: what was chosen, from which candidates, and
the rule's text, so that ``explain`` and the trailer can say why without deriving anything again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..model import drizzles, last_step, stage_steps, wcsname_step
from .machine import FAIL_RUN, STOP_STAGE
from .state import VERIFICATION, RunState

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
        Payload of the ``<stage>_stage`` decision: ``kept``, ``outcome`` (``'kept'``, ``'discarded'``:
        not verified, or ``'skipped'``: a step stopped the stage), ``reason``, ``quality``, ``wcsname``.
    """
    stop = stop_reason(run, stage)
    verification = run.decision(f"{stage}_verification")
    if stop:
        kept, reason = False, stop
    else:
        kept = bool(verification.get("verified"))
        reason = verification.get("reason", "not verified")
    return {"decision": f"{stage}_stage", "kept": kept,
            "outcome": "kept" if kept else "skipped" if stop else "discarded", "reason": reason,
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


def fit_wcsname(default_wcsname, catalog: str, method: str) -> str | None:
    """The WCSNAME drizzlepac gives a fit: ``<default>-FIT_REL_<catalog>`` or ``<default>-FIT_IMG_<catalog>``."""
    base = default_wcsname[0] if isinstance(default_wcsname, list) else default_wcsname
    if not base:
        return None
    return f"{base}-FIT_{'REL' if method == 'relative' else 'IMG'}_{catalog}"


def _merit(candidate: dict) -> tuple:
    # drizzlepac's order of merit among valid fits: lower quality first, then more matches, then lower RMS.
    return candidate["fit_quality"], -(candidate.get("matches") or 0), _rms(candidate)


def _margin(chosen: dict, ranking: list[dict]) -> dict:
    """By how much the chosen fit won: its numbers against the best of the other valid fits."""
    numbers = (lambda c: {"catalog": c["catalog"], "method": c["method"], "fit_quality": c["fit_quality"],
                          "rms_mas": c.get("rms_mas"), "matches": c.get("matches")})
    runner_up = next((c for c in ranking if (c["catalog"], c["method"]) != (chosen["catalog"], chosen["method"])),
                     None)
    margin = {"chosen": numbers(chosen), "next_best": numbers(runner_up) if runner_up else None}
    if runner_up is not None:
        margin.update(rms_mas=(runner_up.get("rms_mas") or 0) - (chosen.get("rms_mas") or 0),
                      matches=(runner_up.get("matches") or 0) - (chosen.get("matches") or 0))
    return margin


def choose_fit(candidates: list[dict], max_rms: float, abandoned: str | None = None,
               default_wcsname=None) -> dict:
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
    default_wcsname : str or list, optional
        The pipeline-default WCSNAME the fits' WCSNAMEs are made from.

    Returns
    -------
    dict
        Payload of the ``aposteriori_fit`` decision. ``chosen_catalog`` and ``chosen_method`` are
        None, with a ``reason``, when no fit is applied. ``candidates`` carry each fit's ``wcsname``;
        ``ranking`` lists the valid fits (catalog, method) in drizzlepac's order of merit, and
        ``margin`` (for a chosen fit) its numbers against the best of the others and the differences.
    """
    summary = [{**{k: c.get(k) for k in ("catalog", "method", "fit_quality", "rms_mas", "matches", "valid")},
                "wcsname": fit_wcsname(default_wcsname, c.get("catalog"), c.get("method"))} for c in candidates]
    ranked = sorted((c for c in candidates if c.get("valid")), key=_merit)
    decision = {"decision": "aposteriori_fit", "chosen_catalog": None, "chosen_method": None, "rule": FIT_RULE,
                "max_rms_mas": max_rms, "candidates": summary,
                "ranking": [[c["catalog"], c["method"]] for c in ranked], "margin": None}
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
            decision.update(chosen_catalog=best["catalog"], chosen_method=best["method"],
                            chosen_wcsname=fit_wcsname(default_wcsname, best["catalog"], best["method"]),
                            margin=_margin(best, ranked))
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


# --- The service a stage relies on -------------------------------------------------------------------

# The service without which a stage cannot go on (the others are probed for the record).
REQUIRED_SERVICE = {"apriori": "ASTROMETRY_SERVICE_URL", "aposteriori": "ASTROMETRIC_CATALOG_URL"}
SERVICE_RULE = ("an alignment stage goes on only when the service it needs answers its probe: the astrometry "
                "database for the a priori stage, the catalog service for the a posteriori one; otherwise "
                "the stage is skipped rather than left waiting on the libraries' retries")
UNANSWERED_RULE = "a service that stopped answering in the middle of a step skips the stage"


def service_reachable(run: RunState, stage: str) -> dict:
    """Whether the service ``stage`` needs answered its probe, by :data:`SERVICE_RULE`.

    Returns
    -------
    dict
        Payload of the ``<stage>_service`` decision: ``service``, ``url``, ``reachable``, ``reason``,
        ``rule``, and ``stop_stage`` when the stage stops.
    """
    service = REQUIRED_SERVICE[stage]
    probed = run.output(stage, "probe_service")["services"][service]
    decision = {"decision": f"{stage}_service", "service": service, "url": probed["url"],
                "reachable": probed["reachable"], "reason": probed["reason"], "rule": SERVICE_RULE}
    if not probed["reachable"]:
        decision[STOP_STAGE] = f"{service} unreachable ({probed['reason']}): stage skipped"
    return decision


def _probe_outcome(run: RunState, stage: str) -> list[dict]:
    """The ``<stage>_service`` decision, when the probe recorded the services it tried."""
    return [service_reachable(run, stage)] if "services" in run.output(stage, "probe_service") else []


def _unanswered(run: RunState, stage: str, step: str) -> list[dict]:
    """The ``<stage>_unanswered`` decision when the step's service stopped answering (its ``unanswered``)."""
    what = run.output(stage, step).get("unanswered")
    if not what:
        return []
    return [{"decision": f"{stage}_unanswered", "step": step, "unanswered": what, "rule": UNANSWERED_RULE,
             STOP_STAGE: f"{what}: stage skipped"}]


def apriori_update_outcome(run: RunState, stage: str) -> list[dict]:
    """The decisions from the a priori update: a stop when its services stopped answering."""
    return _unanswered(run, stage, "updatewcs")


# --- The a posteriori fit ------------------------------------------------------------------------------

# drizzlepac's analyze_data rules (analyze.py 3.11.0 467-570), as runastrodriz gates the a posteriori fit.
EXCLUSION_RULE = ("drizzlepac analyze_data: not fitted when OBSTYPE is not IMAGING, MTFLAG=T, SCAN_TYP C or D, "
                  "a calibration target, EXPTIME ~ 0, CHINJECT not NONE, a BLOCK filter, or all-zero SCI")
SOURCES_RULE = ("drizzlepac 3.11 perform_align: no fit when analyze_data leaves no exposure to align, or when "
                "an exposure has fewer sources than MIN_OBSERVABLE_THRESHOLD")


def candidate_valid(quality: int, rms_mas: float | None) -> bool:
    """Whether a fit can be applied at all: drizzlepac's quality 1-4 and an RMS (a failed fit has none)."""
    return quality in VALID_FIT_QUALITY and rms_mas is not None


def too_few_sources(alignable: int, found: dict, threshold: int) -> str | None:
    """Why no fit is tried, by :data:`SOURCES_RULE`, or None when the fit search goes on.

    Parameters
    ----------
    alignable : int
        Exposures analyze_data left to align.
    found : dict
        Exposure -> sources found in it.
    threshold : int
        drizzlepac's ``MIN_OBSERVABLE_THRESHOLD``.
    """
    if not alignable:
        return "no exposure can be aligned (drizzlepac analyze excluded them all)"
    sparse = {n: k for n, k in found.items() if k < threshold}
    if sparse:
        return f"not enough sources for a fit: {sparse} found, at least {threshold} needed per exposure"
    return None


def catalog_search_ends(candidates: list[dict]) -> bool:
    """After one catalog's fit: True when perform_align tries no further catalog (a quality-1 fit)."""
    return bool(candidates) and candidates[-1]["fit_quality"] == 1


def align_outcome(run: RunState, stage: str) -> list[dict]:
    """The decisions from the a posteriori fit step, from its recorded measurements and candidates.

    In order: each exposure analyze_data excluded (``aposteriori_exclusion``), whether there are sources
    enough to fit (``aposteriori_sources``), a stop when the catalog service stopped answering, and the
    choice of fit (``aposteriori_fit``, :func:`choose_fit`). The first that stops the stage ends the list.
    """
    done = run.output(stage, "align")
    if "fit_limits" not in done:
        return []  # nothing measured, nothing to decide
    limits = done["fit_limits"]
    decisions = [{"decision": "aposteriori_exclusion", "exposure": name, "reason": why, "rule": EXCLUSION_RULE}
                 for name, why in done["excluded"].items()]
    stop = too_few_sources(limits["alignable"], done["sources_found"], limits["min_sources"])
    sources = {"decision": "aposteriori_sources", "alignable": limits["alignable"],
               "sources_found": done["sources_found"], "min_sources": limits["min_sources"], "rule": SOURCES_RULE}
    if stop:
        return [*decisions, {**sources, STOP_STAGE: stop}]
    decisions.append(sources)
    unanswered = _unanswered(run, stage, "align")
    if unanswered:
        return decisions + unanswered
    fit = choose_fit(run.candidates.get(stage, []), limits["max_rms_mas"], done.get("abandoned"),
                     run.output("default", "updatewcs").get("wcsname"))
    if fit["chosen_catalog"] is None:
        fit[STOP_STAGE] = fit["reason"]
    return [*decisions, fit]


# --- Verification, conclusion, the final WCS ---------------------------------------------------------


def stage_verification(run: RunState, stage: str) -> list[dict]:
    """The ``<stage>_verification`` decision from the checks the step recorded (:func:`verify_stage`)."""
    checks = [p for kind, p in run.facts.get((stage, "verify_alignment"), []) if kind == VERIFICATION]
    if not checks:
        return []  # nothing measured, nothing to decide
    matched = run.output(stage, "align").get("matched") if stage == "aposteriori" else None
    return [verify_stage(stage, checks, len(run.inputs.verified_product.drizzled), matched)]


ALIGNMENT_FOLLOWS_RULE = ("runastrodriz 3.11 verifies the default products, on the cosmic-ray path, only when an "
                          "alignment stage follows; otherwise it drizzles its final products at once")


def alignment_follows_decision(run: RunState, stage: str) -> dict:
    """Whether an alignment stage follows the default stage, by the transition guards (:data:`ALIGNMENT_FOLLOWS_RULE`).

    Returns
    -------
    dict
        Payload of the ``alignment_follows`` decision: ``follows``, ``guards`` (each guard's result and
        reason), ``rule``.
    """
    from .machine import _Guards

    guards = _Guards(run)
    follows = guards.apriori_possible() or guards.aposteriori_possible()
    return {"decision": "alignment_follows", "follows": follows, "guards": guards.evaluated,
            "rule": ALIGNMENT_FOLLOWS_RULE}


DRIZZLE_RULE = ("runastrodriz 3.11: the final parameters for the final products, and for the default stage's when no "
                "alignment stage follows; its verification parameters otherwise (RA 576-593), with no new cosmic-ray "
                "identification (reset_mdriztab_nocr) in an alignment stage whose starting alignment was verified; "
                "a verification drizzle (and every drizzle of WFPC2) of exposures whose EXPTIMEs differ by more "
                "than a factor of 2 combines with a median; on the cosmic-ray path a stage drizzles twice")


def _exptimes_differ(exptimes: list[float]) -> bool:
    """EXPTIMEs spread over more than a factor of 2 (a zero EXPTIME among others counts; all zero does not)."""
    low, high = min(exptimes), max(exptimes)
    return high / low > 2 if low > 0 else high > 0


def drizzle_plan(run: RunState, stage: str) -> dict:
    """How a stage drizzles, by :data:`DRIZZLE_RULE`.

    Returns
    -------
    dict
        Payload of the ``<stage>_drizzle`` decision: ``parameters`` (``'final'`` or ``'verification'``),
        ``no_cr_parameters``, ``median_combine`` (product -> bool, for the products it applies to),
        ``passes``, ``reason``, ``rule``.
    """
    follows = bool(run.decision("alignment_follows").get("follows"))
    identify = bool(run.decision(f"{stage}_cosmic_rays").get("identify"))
    alignment = stage in ("apriori", "aposteriori")
    if stage == "final":
        parameters, reason = "final", "the final products"
    elif stage == "default" and not follows:
        parameters, reason = "final", "no alignment stage follows: the default stage drizzles as the final one"
    else:
        parameters = "verification"
        reason = ("an alignment stage follows: verification drizzles" if stage == "default"
                  else "verification drizzles of an alignment stage")
    no_cr = parameters == "verification" and alignment and not identify
    median = {}
    if stage != "final" or run.inputs.instrument == "WFPC2":
        median = {p.name: _exptimes_differ([e.exptime for e in p.exposures])
                  for p in run.inputs.products(stage, stage == "default" and follows)}
    passes = 2 if (stage == "default" and follows) or (alignment and identify) else 1
    return {"decision": f"{stage}_drizzle", "parameters": parameters, "no_cr_parameters": no_cr,
            "median_combine": median, "passes": passes, "reason": reason, "rule": DRIZZLE_RULE}


# Parameters that change how AstroDrizzle runs, not what it writes into the product.
OPERATIONAL_PARS = ("clean", "in_memory", "num_cores")
REUSE_RULE = ("a final product is copied from the chosen stage when that stage drizzled the same product, with the "
              "same parameters (but for clean, in_memory, num_cores), from exposures byte-identical to the "
              "final stage's copies")


def reusable_product(run: RunState, product: str, inputs: list[str], parameters: dict) -> dict:
    """Whether the final stage may copy ``product`` from the chosen stage, by :data:`REUSE_RULE`.

    Parameters
    ----------
    run : RunState
        With the final stage's copies recorded (``stage_inputs``).
    product : str
    inputs : list of str
        The exposures it is drizzled from.
    parameters : dict
        The final stage's AstroDrizzle parameters for it.

    Returns
    -------
    dict
        ``reusable_from`` (the chosen stage's product entry, with its ``stage``, or None) and ``reason``.
    """
    chosen = run.decision("wcs").get("chosen_stage")
    done = run.output(chosen, "astrodrizzle") if chosen else {}
    entry = next((p for p in done.get("products", []) if p["product"] == product and not p.get("reused_from")), None)
    effective = (lambda pars: {k: v for k, v in pars.items() if k not in OPERATIONAL_PARS})
    staged = run.output("final", "stage_inputs").get("files", {})
    if entry is None or entry["inputs"] != inputs:
        reason = f"the {chosen} stage drizzled no {product} from these exposures"
    elif effective(entry["parameters"]) != effective(parameters):
        reason = f"the {chosen} stage drizzled {product} with other parameters"
    elif any(done["files"].get(n) != staged.get(n) for n in inputs):
        reason = f"the exposures differ from those the {chosen} stage drizzled"
    else:
        return {"reusable_from": {**entry, "stage": chosen}, "reason": f"the {chosen} stage's {product}: same "
                "inputs (sha256) and parameters"}
    return {"reusable_from": None, "reason": reason}


def final_reuse(run: RunState, stage: str) -> list[dict]:
    """The ``final_reuse`` decision from the final drizzle's recorded parameters (:func:`reusable_product`)."""
    products = {}
    for entry in run.output(stage, "astrodrizzle").get("products", []):
        verdict = reusable_product(run, entry["product"], entry["inputs"], entry["parameters"])
        source = verdict["reusable_from"]
        products[entry["product"]] = {"reusable_from": f"{source['stage']}/{entry['product']}" if source else None,
                                      "reason": verdict["reason"]}
    return [{"decision": "final_reuse", "products": products, "rule": REUSE_RULE}] if products else []


def _final_source(run: RunState, stage: str) -> dict | None:
    # DRIZCORR=OMIT: the exposures as delivered; no stage's exposures to choose.
    return exposures_source(run, stage) if drizzles(run.inputs, run.options) else None


# --- Guiding (-v) ------------------------------------------------------------------------------------

GUIDING_RULE = ("runastrodriz 3.11 -v: an exposure with bad guiding is removed from processing with its FLT and "
                "FLC files, unless -f; alignment is switched off, unless -a")


def bad_guiding(bad: list[str], removed: list[str], force: bool, force_alignment: bool) -> list[dict]:
    """What bad guiding changes, by :data:`GUIDING_RULE`.

    Parameters
    ----------
    bad : list of str
        Exposures whose guiding failed, in the order checked.
    removed : list of str
        The files those exposures take out of processing (their FLT and FLC).
    force, force_alignment : bool
        ``-f`` and ``-a``.

    Returns
    -------
    list of dict
        Payloads of the ``guiding_removal`` decision (without ``-f``) and the ``guiding_alignment``
        decision (``alignment`` on or off); empty when every exposure's guiding was good.
    """
    if not bad:
        return []
    names = ", ".join(bad)
    out = []
    if not force:
        out.append({"decision": "guiding_removal", "bad": bad, "removed": removed,
                    "reason": f"-v: removed from processing for bad guiding: {', '.join(removed)}",
                    "rule": GUIDING_RULE})
    reason = (f"-v: bad guiding in {names}: alignment kept on (-a)" if force_alignment
              else f"-v: bad guiding in {names}: no alignment")
    out.append({"decision": "guiding_alignment", "bad": bad, "alignment": force_alignment, "reason": reason,
                "rule": GUIDING_RULE})
    return out


NO_VIABLE_DATA = "no_viable_data"
NO_VIABLE_DATA_RULE = ("runastrodriz 3.11 -v: a run left with no exposure once those with bad guiding "
                       "are removed has no viable data (exit 65)")


def no_exposure_left(bad: list[str], left: list[str], input: str) -> list[dict]:
    """The ``no_viable_data`` decision, which fails the run, when bad guiding removed every exposure.

    Parameters
    ----------
    bad : list of str
        Exposures whose guiding failed, in the order checked.
    left : list of str
        The exposures processing goes on with once those are removed (all of them with ``-f``).
    input : str
        The run's input file, named in the failure.

    Returns
    -------
    list of dict
        The decision's payload, with :data:`FAIL_RUN`; empty while an exposure is left.
    """
    if not bad or left:
        return []
    message = f"{input}: no viable data: every exposure has bad guiding (-v): {', '.join(bad)}"
    return [{"decision": NO_VIABLE_DATA, "bad": bad, "left": left, "reason": message, "path": input,
             "rule": NO_VIABLE_DATA_RULE, FAIL_RUN: NO_VIABLE_DATA}]


def guiding_outcome(run: RunState, stage: str) -> list[dict]:
    """The guiding decisions from the checks the ``verify_guiding`` step recorded.

    :func:`no_exposure_left` when no exposure is left to process (the run fails), else :func:`bad_guiding`.
    """
    checks = [p for kind, p in run.facts.get((stage, "verify_guiding"), []) if kind == VERIFICATION]
    bad = [c["file"] for c in checks if c.get("guiding") == "bad"]
    removed = run.output(stage, "verify_guiding").get("removed", [])
    left = [n for n in run.inputs.exposures.names if n not in removed] if run.inputs is not None else []
    return (no_exposure_left(bad, left, run.options.input)
            or bad_guiding(bad, removed, run.options.force, run.options.force_alignment))


# --- Which rule the runner evaluates for which step -----------------------------------------------------

_ALIGNMENT_STAGES = ("apriori", "aposteriori")
# Evaluated on the state before the step: ``rule(run, stage) -> payload or None``. The handler reads the
# payloads in ``ctx.decisions``; the runner records them with the step's facts.
BEFORE_STEP = {
    ("default", "stage_inputs"): (alignment_follows_decision,),
    **{(s, "stage_inputs"): (exposures_source, cosmic_ray_path) for s in _ALIGNMENT_STAGES},
    **{(s, "conclude"): (conclude_stage,) for s in _ALIGNMENT_STAGES},
    ("final", "choose_wcs"): (lambda run, stage: choose_final_wcs(run),),
    ("final", "stage_inputs"): (_final_source,),
    **{(s, "astrodrizzle"): (drizzle_plan,) for s in ("default", *_ALIGNMENT_STAGES, "final")},
}
# Evaluated on the state with the step's facts and result folded in: ``rule(run, stage) -> [payload, ...]``.
# A payload with ``stop_stage`` stops the stage.
AFTER_STEP = {
    ("init", "verify_guiding"): (guiding_outcome,),
    **{(s, "probe_service"): (_probe_outcome,) for s in _ALIGNMENT_STAGES},
    ("apriori", "updatewcs"): (apriori_update_outcome,),
    ("aposteriori", "align"): (align_outcome,),
    **{(s, "verify_alignment"): (stage_verification,) for s in ("default", *_ALIGNMENT_STAGES)},
    ("final", "astrodrizzle"): (final_reuse,),
}


def decisions_before(run: RunState, stage: str, step: str) -> list[dict]:
    """The decisions a step works from, by the rules of :data:`BEFORE_STEP`."""
    return [d for rule in BEFORE_STEP.get((stage, step), ()) if (d := rule(run, stage)) is not None]


def decisions_after(run: RunState, stage: str, step: str) -> list[dict]:
    """The decisions from a step's results (``run`` has them folded in), by the rules of :data:`AFTER_STEP`."""
    return [d for rule in AFTER_STEP.get((stage, step), ()) for d in rule(run, stage)]


@dataclass(frozen=True)
class HandlerRules:
    """The rules a handler applies in the middle of its work; the runner records their outcome afterwards."""

    candidate_valid: Callable = candidate_valid
    too_few_sources: Callable = too_few_sources
    catalog_search_ends: Callable = catalog_search_ends
    fit_search_ends: Callable = fit_search_ends
    choose_fit: Callable = choose_fit
    verify_stage: Callable = verify_stage
    bad_guiding: Callable = bad_guiding
    reusable_product: Callable = reusable_product
    failed_fit_rms: float = FAILED_FIT_RMS


HANDLER_RULES = HandlerRules()
