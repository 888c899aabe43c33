"""Why a run's products carry the WCS they carry (``astrodriz-sm explain``).

Everything here is read from the run's events, folded into a :class:`RunState`: the candidate WCSs of
every exposure (pipeline default, a priori, one per a posteriori catalog fit) with their numbers and
verification verdicts, the one chosen and the rule that chose it, and every alignment stage that was
not run, skipped or discarded, with its reason. No handler runs and no FITS file is opened, so a run
can be explained after its working files are gone.
"""

from __future__ import annotations

import math

from ..model import STAGE_LABELS, WCS_STAGES, last_step
from ..statemachine import stop_reason
from ..statemachine.state import RunState

# The verification checks reported for each candidate, in this order.
CHECKS = ("focus", "overlap_similarity", "similarity_to_default")
# The guard whose failure keeps a stage from being entered.
STAGE_GUARDS = {"default": "drizcorr_perform", "apriori": "apriori_possible",
                "aposteriori": "aposteriori_possible"}
SOURCES = {"default": "pipeline default", "apriori": "astrometry database"}


def _finite(value):
    """A number as JSON can carry it: non-finite floats become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _one_name(names):
    """One WCSNAME for an exposure: the name when all its SCI extensions agree, else the list."""
    if isinstance(names, str) or names is None:
        return names
    unique = sorted(set(names))
    if not unique:
        return None
    return unique[0] if len(unique) == 1 else unique


def _verdicts(run: RunState, stage: str) -> dict:
    """``check -> verdict`` of a stage's verifications; None for a check that was not made."""
    found = {v.get("check"): v.get("verdict") for v in run.verifications.get(stage, [])}
    return {check: found.get(check) for check in CHECKS}


def _fit_wcsname(default_name, catalog: str, method: str) -> str:
    """The WCSNAME drizzlepac gives a fit: ``<default>-FIT_REL_<catalog>`` or ``<default>-FIT_IMG_<catalog>``."""
    base = default_name[0] if isinstance(default_name, list) else default_name
    return f"{base}-FIT_{'REL' if method == 'relative' else 'IMG'}_{catalog}"


def _per_exposure(fit: dict) -> dict:
    """``exposure file -> list of chip entries`` of a fit candidate's ``'name[chip]'`` keys."""
    out: dict[str, list] = {}
    for key, entry in sorted(fit.get("exposures", {}).items()):
        name = key.rsplit("[", 1)[0]
        out.setdefault(name, []).append(entry)
    return out


def _fit_numbers(fit: dict, exposure: str) -> tuple[str | None, int | None, float | None]:
    """The file whose fit numbers apply to an exposure, its matches and its fit RMS (mas).

    An exposure that was not fitted itself (an FLT file when the FLC files were fitted) takes the
    numbers of the fitted file of the same rootname, whose WCS it was given.
    """
    chips = _per_exposure(fit)
    name = exposure
    if name not in chips:
        root = exposure.rsplit("_", 1)[0]
        name = next((n for n in chips if n.rsplit("_", 1)[0] == root), None)
    if name is None:
        return None, None, None
    entries = chips[name]
    # The chips of one exposure are fitted as one group: they report the same numbers.
    matches = max(int(e.get("nmatches") or 0) for e in entries)
    rms = [r for r in (_finite(e.get("fit_rms_mas")) for e in entries) if r is not None]
    return name, matches, (max(rms) if rms else None)


def _stage_entry(run: RunState, stage: str, entered: set) -> dict:
    """Outcome and reason of one WCS stage."""
    entry = {"stage": stage, "entered": stage in entered, "outcome": "not run", "reason": None}
    if stage not in entered:
        guard = STAGE_GUARDS[stage]
        failed = [g for t in run.transitions for g in t.get("guards", [])
                  if g.get("guard") == guard and not g.get("result")]
        if failed:
            entry["reason"] = failed[-1]["reason"]
        elif run.ended:
            entry["reason"] = f"not reached: the run ended {run.ended['status']}"
        else:
            entry["reason"] = "not reached: the run is unfinished"
        return entry
    failed_here = any(t.get("to") == "failed" and t.get("from") == stage for t in run.transitions)
    if not run.is_completed(stage, last_step(stage)):
        entry["outcome"] = "incomplete"
        if failed_here and run.failure:
            entry["reason"] = f"the run failed in this stage: {run.failure.get('message')}"
        else:
            entry["reason"] = "the stage has not finished: the run is unfinished"
        return entry
    if stage == "default":
        checks = ", ".join(f"{v.get('check')} {v.get('verdict')}" for v in run.verifications.get(stage, []))
        entry["outcome"] = "default"
        entry["reason"] = ("pipeline-default WCS (updatewcs without the astrometry database), the fallback "
                           "when no alignment stage is kept; verification: " + (checks or "none"))
        return entry
    conclusion = run.output(stage, last_step(stage))
    if conclusion.get("kept"):
        entry["outcome"] = "kept"
    else:
        entry["outcome"] = "skipped" if stop_reason(run, stage) else "discarded"
    entry["reason"] = conclusion.get("reason")
    return entry


def _candidate(stage: str, wcsname, source: str, verdicts: dict, applied: bool) -> dict:
    return {"stage": stage, "wcsname": wcsname, "source": source, "catalog": None, "method": None,
            "fit_quality": None, "valid": None, "fit_file": None, "matches": None, "rms_mas": None,
            "verdicts": dict(verdicts) if applied else {c: None for c in CHECKS}, "applied": applied,
            "chosen": False, "reason": None}


def _why(cand: dict, stages: dict, chosen: dict, chosen_fit: dict | None) -> str:
    """One line on why a candidate is, or is not, the chosen WCS."""
    stage = cand["stage"]
    if cand["catalog"] is not None and not cand["valid"]:
        return f"not a valid fit: {cand['reason'] or 'fit quality ' + str(cand['fit_quality'])}"
    if cand["catalog"] is not None and not cand["applied"]:
        if chosen_fit is None:
            return "valid, but not applied"
        return (f"valid (quality {cand['fit_quality']}), but the rule chose the {chosen_fit['catalog']} "
                f"{chosen_fit['method']} fit (quality {chosen_fit['fit_quality']})")
    outcome = stages[stage]["outcome"]
    if cand["chosen"]:
        if stage == "default":
            return (f"no alignment stage kept (a priori {stages['apriori']['outcome']}, "
                    f"a posteriori {stages['aposteriori']['outcome']})")
        if stage == "apriori":
            return f"a priori stage kept; a posteriori stage {stages['aposteriori']['outcome']}"
        return "a posteriori stage kept, with the fit drizzlepac's rule chose"
    if outcome in ("discarded", "skipped", "incomplete"):
        return f"{STAGE_LABELS[stage]} stage {outcome}: {stages[stage]['reason']}"
    if chosen.get("stage"):
        return f"the more refined {STAGE_LABELS[chosen['stage']]} stage was kept"
    return "no WCS chosen yet: the run is unfinished"


def explain(run: RunState) -> dict:
    """Explain a run's WCS choice from its folded events alone.

    Parameters
    ----------
    run : RunState
        The folded log of one run.

    Returns
    -------
    dict
        ``run_id``; ``status`` (the ended status, or ``'unfinished'``); ``exposures``: exposure file ->
        list of candidate dicts (``stage``, ``wcsname``, ``source``, ``catalog``, ``method``,
        ``fit_quality``, ``valid``, ``fit_file``, ``matches``, ``rms_mas``, ``verdicts`` (``focus``,
        ``overlap_similarity``, ``similarity_to_default``), ``applied``, ``chosen``, ``reason``);
        ``chosen`` (``stage``, ``wcsname``, ``catalog``); ``rule``; ``stages``: one dict per WCS stage
        (``stage``, ``entered``, ``outcome``, ``reason``); ``aposteriori_fits``: one summary per catalog
        fit; ``fit_rule``; ``library_warnings``: ``{stage, step, message}`` of every library fallback
        the steps recorded (a result other than the one asked for). Every key is always present (None when the log has no value for it).

    Notes
    -----
    A candidate's ``verdicts`` are those of the stage's drizzled product, so only the candidate whose
    WCS that product used (``applied``) carries them: an a posteriori fit that was not chosen was
    never drizzled or verified, and its verdicts are None. ``outcome`` is ``'default'`` for the
    default stage, ``'kept'``, ``'discarded'`` (verification failed) or ``'skipped'`` (cut short: no
    service, no solution, too few sources, no valid fit) for an alignment stage, ``'not run'`` for a
    stage never entered, and ``'incomplete'`` for a stage the run failed in or has not finished.
    """
    entered = {t.get("to") for t in run.transitions}
    stages = {s: _stage_entry(run, s, entered) for s in WCS_STAGES}
    wcs = run.decision("wcs")
    fit_decision = run.decision("aposteriori_fit")
    fits = run.candidates.get("aposteriori", [])
    chosen_catalog = fit_decision.get("chosen_catalog")
    chosen_key = (chosen_catalog, fit_decision.get("chosen_method"))
    align_output = run.output("aposteriori", "align")
    applied_key = (align_output.get("chosen_catalog"), align_output.get("chosen_method"))
    chosen = {"stage": wcs.get("chosen_stage"), "wcsname": wcs.get("chosen_wcsname"),
              "catalog": chosen_catalog if wcs.get("chosen_stage") == "aposteriori" else None}

    default_names = run.output("default", "updatewcs").get("wcsnames", {})
    apriori_names = run.output("apriori", "updatewcs").get("exposures", {})
    names = sorted(set(default_names) | set(apriori_names) or set(run.inputs.exposures.names if run.inputs else ()))
    verdicts = {s: _verdicts(run, s) for s in WCS_STAGES}

    exposures = {}
    for name in names:
        cands = []
        default_name = _one_name(default_names.get(name))
        if name in default_names:
            cands.append(_candidate("default", default_name, SOURCES["default"], verdicts["default"], True))
        if name in apriori_names:
            cands.append(_candidate("apriori", _one_name(apriori_names[name].get("wcsnames")),
                                    SOURCES["apriori"], verdicts["apriori"], True))
        for fit in fits:
            catalog, method = fit.get("catalog"), fit.get("method")
            cand = _candidate("aposteriori", _fit_wcsname(default_name, catalog, method) if default_name
                              else None, f"fit to {catalog}", verdicts["aposteriori"],
                              applied_key[0] is not None and (catalog, method) == applied_key)
            fit_file, matches, rms = _fit_numbers(fit, name)
            cand.update(catalog=catalog, method=method, fit_quality=fit.get("fit_quality"),
                        valid=bool(fit.get("valid")), fit_file=fit_file, matches=matches, rms_mas=rms,
                        reason=fit.get("reason"))
            cands.append(cand)
        for cand in cands:
            cand["chosen"] = bool(chosen["stage"] == cand["stage"] and
                                  (cand["stage"] != "aposteriori" or (cand["catalog"], cand["method"]) == chosen_key))
        chosen_fit = next((c for c in cands if c["catalog"] is not None and (c["catalog"], c["method"]) == applied_key),
                          None)
        for cand in cands:
            cand["reason"] = _why(cand, stages, chosen, chosen_fit)
        exposures[name] = cands

    fit_summaries = [{"catalog": f.get("catalog"), "method": f.get("method"),
                      "fit_quality": f.get("fit_quality"), "valid": bool(f.get("valid")),
                      "rms_mas": _finite(f.get("rms_mas")), "matches": f.get("matches"),
                      "reference_sources": f.get("reference_sources"), "reason": f.get("reason"),
                      "chosen": chosen_catalog is not None and (f.get("catalog"), f.get("method")) == chosen_key}
                     for f in fits]
    return {"run_id": run.run_id, "status": run.ended["status"] if run.ended else "unfinished",
            "exposures": exposures, "chosen": chosen, "rule": wcs.get("rule"),
            "stages": [stages[s] for s in WCS_STAGES], "aposteriori_fits": fit_summaries,
            "fit_rule": fit_decision.get("rule"),
            "aposteriori_excluded": {d["exposure"]: d["reason"] for d in run.decisions
                                     if d.get("decision") == "aposteriori_exclusion"},
            "library_warnings": [{"stage": stage, "step": step, "message": message}
                                 for stage, step, message in run.warnings]}


def _cell(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _table(rows: list[list[str]], marks: list[bool], indent: str = "    ") -> list[str]:
    """Columns padded to their widest cell; a marked row starts with ``'*'``."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for row, mark in zip(rows, marks):
        prefix = indent[:-2] + ("* " if mark else "  ")
        out.append((prefix + "  ".join(c.ljust(w) for c, w in zip(row, widths))).rstrip())
    return out


def render_explain(doc: dict) -> str:
    """Render the document of :func:`explain` as a text report.

    Parameters
    ----------
    doc : dict
        The result of :func:`explain`, with ``log`` (the check of the hash chain) when the API made it.

    Returns
    -------
    str
        The banner of a log that does not verify first, then a block per exposure listing its candidate WCSs (the chosen one marked with ``'*'``), then
        the stages with their outcome and reason, the a posteriori fits and the rules.
    """
    chosen = doc["chosen"]
    # A log that does not verify is shown only under its banner (the API adds ``log``).
    banner = (doc.get("log") or {}).get("banner")
    lines = [banner] if banner else []
    lines.append(f"run {doc['run_id']}: {doc['status']}")
    if chosen.get("stage"):
        lines.append(f"chosen WCS: {chosen['wcsname']} ({chosen['stage']} stage"
                     + (f", catalog {chosen['catalog']})" if chosen.get("catalog") else ")"))
    else:
        lines.append("chosen WCS: none yet (no WCS decision in the log)")
    head = ["stage", "WCSNAME", "source", "matches", "rms mas", "focus", "overlap", "similarity", "why"]
    for name, cands in doc["exposures"].items():
        lines += ["", name]
        rows = [head] + [[c["stage"], _cell(c["wcsname"]), c["source"], _cell(c["matches"]),
                          _cell(c["rms_mas"]), *(_cell(c["verdicts"][k]) for k in CHECKS), c["reason"] or ""]
                         for c in cands]
        lines += _table(rows, [False] + [c["chosen"] for c in cands])
    lines += ["", "stages"]
    lines += _table([[s["stage"], s["outcome"], s["reason"] or ""] for s in doc["stages"]],
                    [False] * len(doc["stages"]))
    if doc["aposteriori_fits"]:
        lines += ["", "a posteriori fits"]
        rows = [["catalog", "method", "quality", "valid", "matches", "rms mas", "reference sources", "note"]]
        rows += [[f["catalog"], _cell(f["method"]), _cell(f["fit_quality"]), "yes" if f["valid"] else "no",
                  _cell(f["matches"]), _cell(f["rms_mas"]), _cell(f["reference_sources"]), f["reason"] or ""]
                 for f in doc["aposteriori_fits"]]
        lines += _table(rows, [False] + [f["chosen"] for f in doc["aposteriori_fits"]])
        if doc["fit_rule"]:
            lines.append(f"fit rule: {doc['fit_rule']}")
    if doc.get("aposteriori_excluded"):
        lines += ["", "excluded from the a posteriori fit (drizzlepac analyze_data)"]
        lines += [f"    {name}: {why}" for name, why in doc["aposteriori_excluded"].items()]
    if doc.get("library_warnings"):
        lines += ["", "library fallbacks (a result other than the one asked for)"]
        lines += [f"    {w['stage']}/{w['step']}: {w['message']}" for w in doc["library_warnings"]]
    lines += ["", f"rule: {doc['rule'] or 'no WCS decision in the log yet'}"]
    return "\n".join(lines) + "\n"
