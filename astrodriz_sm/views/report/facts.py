"""What a run's report shows, read from the run's events and the files it handed back.

:func:`run_facts` gathers it into one document: every number on the page and in the QA JSON comes
from here, and each is derived once. The page (:mod:`.page`) and the QA JSON (:mod:`.qa`) only
format it.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

from ...errors import InputError
from ...model import STAGE_LABELS, WCS_STAGES, RunLayout, wcsname_step
from ...plumbing import sha256
from ...statemachine import fold
from ...statemachine.state import (
    RUN_ENDED,
    RUN_RESUMED,
    RUN_STARTED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_INVALIDATED,
    STEP_STARTED,
)
from ..banner import log_facts
from ..explain import explain


def parse_utc(text: str) -> _dt.datetime:
    """An event's UTC time (``YYYY-mm-ddTHH:MM:SS.ffffffZ``) as an aware datetime."""
    return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=_dt.UTC)


@dataclass(frozen=True)
class Attempt:
    """One attempt at a step, as the log shows it.

    Attributes
    ----------
    stage, step : str
    process : int
        Which process ran it: 0 for the one that started the run, 1 for the first resume, ...
    start, end : float
        Seconds since the run started (``end`` is the last event of the process when it was interrupted).
    outcome : {'completed', 'failed', 'interrupted', 'running'}
        ``interrupted``: the process died (or was stopped) inside the step; ``running``: the log
        ends inside it and the run has not ended.
    invalidated : str or None
        Why a resume invalidated this completed attempt (it was then redone), if it did.
    """

    stage: str
    step: str
    process: int
    start: float
    end: float
    outcome: str
    invalidated: str | None = None


def timeline(events) -> dict:
    """The run's steps, processes, crashes and resumes, from the events' recorded times.

    Parameters
    ----------
    events : sequence of Event
        One run's events in ``seq`` order.

    Returns
    -------
    dict
        ``start_utc``; ``attempts`` (list of :class:`Attempt`); ``processes``: one dict per process
        (``index``, ``start``, ``end``, ``how_started`` ('started' or 'resumed'), ``how_ended``
        ('ended', 'interrupted' or 'running'), ``last_event`` (kind, stage/step of the last event
        it wrote), ``resumed_after`` (the resume's own words)); ``marks``: crashes, resumes and
        invalidations in time order (``kind``, ``time``, ``text``, ``process``).
    """
    if not events:
        return {"start_utc": None, "attempts": [], "processes": [], "marks": []}
    t0 = parse_utc(events[0].utc)

    def at(ev) -> float:
        return (parse_utc(ev.utc) - t0).total_seconds()

    attempts: list[dict] = []
    open_attempts: dict = {}
    processes = [{"index": 0, "start": 0.0, "how_started": "started", "resumed_after": None}]
    marks: list[dict] = []
    last = events[0]

    def close_process(how: str) -> None:
        # A step still open when the log ends is running (or its process died unseen); one open at a
        # resume, or at the end of an abandoned run, was interrupted.
        for key, a in list(open_attempts.items()):
            a.update(end=at(last), outcome="running" if how == "running" else "interrupted")
            del open_attempts[key]
        processes[-1].update(end=at(last), how_ended=how,
                             last_event={"kind": last.kind, "where": "/".join(p for p in (last.stage, last.step) if p)})

    for ev in events:
        key = (ev.stage, ev.step)
        if ev.kind == RUN_RESUMED:
            interrupted = [f"{s}/{st}" for s, st in open_attempts]
            close_process("interrupted")
            text = "process stopped"
            text += f" inside {', '.join(interrupted)}" if interrupted else f" after {processes[-1]['last_event']['where']}"
            marks.append({"kind": "crash", "time": at(last), "text": text, "process": processes[-1]["index"]})
            processes.append({"index": len(processes), "start": at(ev), "how_started": "resumed",
                              "resumed_after": ev.payload.get("after")})
            marks.append({"kind": "resume", "time": at(ev), "text": f"resumed after {ev.payload.get('after')}",
                          "process": processes[-1]["index"]})
        elif ev.kind == STEP_STARTED:
            open_attempts[key] = {"stage": ev.stage, "step": ev.step, "process": processes[-1]["index"],
                                  "start": at(ev), "end": at(ev), "outcome": "running", "invalidated": None}
            attempts.append(open_attempts[key])
        elif ev.kind in (STEP_COMPLETED, STEP_FAILED) and key in open_attempts:
            open_attempts.pop(key).update(end=at(ev), outcome="completed" if ev.kind == STEP_COMPLETED else "failed")
        elif ev.kind == STEP_INVALIDATED:
            done = [a for a in attempts if (a["stage"], a["step"]) == key and a["outcome"] == "completed"
                    and a["invalidated"] is None]
            if done:
                done[-1]["invalidated"] = ev.payload.get("reason")
            marks.append({"kind": "invalidated", "time": at(ev), "text": f"{ev.stage}/{ev.step} to be redone: "
                          f"{ev.payload.get('reason')}", "process": processes[-1]["index"]})
        last = ev
    close_process("ended" if events[-1].kind == RUN_ENDED else "running")
    return {"start_utc": events[0].utc, "attempts": [Attempt(**a) for a in attempts], "processes": processes,
            "marks": marks}


def _focus(verification: dict, stage: str) -> dict:
    """The focus check of one stage, with the band and floor it was judged against (as recorded)."""
    return {"stage": stage, "verdict": verification["verdict"], "decides": verification.get("decides"),
            "product": verification["product"], "singles": verification["singles"],
            "single_focus": verification["single_focus"], "mean": verification["mean"], "std": verification["std"],
            "band": verification.get("band"), "floor": verification.get("floor"),
            "product_focus": verification["product_focus"], "product_z": verification["product_z"],
            "z_range": [verification["z_min"], verification["z_max"]], "rule": verification.get("rule")}


def checks(run) -> dict:
    """``focus``, ``overlap``, ``similarity``: each stage's verification numbers, or why there are none."""
    out = {"focus": [], "overlap": [], "similarity": [], "not_measured": []}
    for stage in WCS_STAGES:
        for v in run.verifications.get(stage, []):
            if "reason" in v and v["verdict"] in ("n/a", "error"):
                out["not_measured"].append({"stage": stage, "check": v["check"], "verdict": v["verdict"],
                                            "reason": v["reason"]})
            elif v["check"] == "focus":
                out["focus"].append(_focus(v, stage))
            elif v["check"] == "overlap_similarity":
                out["overlap"].append({"stage": stage, "verdict": v["verdict"], "decides": v.get("decides"),
                                       "max_distance": v["max_distance"], "limit": v["limit"],
                                       "singles": {n: s.get("distance") for n, s in v["singles"].items()},
                                       "rule": v.get("rule")})
            elif v["check"] == "similarity_to_default":
                out["similarity"].append({"stage": stage, "verdict": v["verdict"], "decides": v.get("decides"),
                                          "index": v["similarity_index"], "limit": v["limit"],
                                          "rule": v.get("rule")})
    return out


def fits_with_reasons(doc: dict) -> list[dict]:
    """The a posteriori fits of :func:`explain`, each with the one line on why it was or was not applied."""
    why = {}
    for cands in doc["exposures"].values():
        for c in cands:
            if c["catalog"] is not None:
                why.setdefault((c["catalog"], c["method"]), c["reason"])
    return [{**f, "why": why.get((f["catalog"], f["method"]), f["reason"])} for f in doc["aposteriori_fits"]]


def fit_margin(decision: dict) -> str | None:
    """By how much the chosen fit won, as the ``aposteriori_fit`` decision recorded it (its ``margin``)."""
    margin = decision.get("margin")
    if not margin:
        return None
    chosen, best = margin["chosen"], margin["next_best"]
    text = (f"{chosen['catalog']} {chosen['method']}: quality {chosen['fit_quality']}, "
            f"RMS {chosen['rms_mas']:.2f} mas over {chosen['matches']} matches")
    if best is None:
        return text + "; no other valid fit"
    return (text + f"; next best {best['catalog']} {best['method']}: quality {best['fit_quality']}, "
            f"RMS {best['rms_mas']:.2f} mas over {best['matches']} matches "
            f"({margin['rms_mas']:+.2f} mas, {margin['matches']:+d} matches)")


def _checked(path: Path, digest: str | None, what: str) -> Path:
    """``path``, once it exists and has the content the run recorded."""
    if not path.is_file():
        raise InputError(f"{path}: {what} is missing (the run's log lists it)", str(path))
    if digest is not None and sha256(path) != digest:
        raise InputError(f"{path}: {what} changed since the run recorded it (sha256 differs)", str(path))
    return path


def products(run, input_dir: Path) -> list[dict]:
    """The products to preview: the final ones handed back, and each kept stage's when its directory was kept.

    Returns
    -------
    list of dict
        ``stage`` ('final' or a WCS stage), ``name``, ``path``, ``exposures`` (the files drizzled
        into it, in the directory whose WCSs match it), ``wcsname``.

    Raises
    ------
    InputError
        A product the log says was handed back is missing or changed.
    """
    out = []
    replaced = run.output("final", "replace")
    final_entries = {p["product"]: p for p in run.output("final", "astrodrizzle").get("products", [])}
    wcsname = run.decision("wcs").get("chosen_wcsname")
    verified = run.inputs.verified_product if run.inputs is not None else None
    for name in (run.ended or {}).get("products", []):
        path = _checked(input_dir / name, replaced.get("files", {}).get(name), "product")
        out.append({"stage": "final", "name": name, "path": path, "wcsname": wcsname,
                    "verified": verified is not None and name == verified.name,
                    "exposures": [input_dir / e for e in final_entries.get(name, {}).get("inputs", [])]})
    if verified is None:
        return out
    layout = RunLayout.of(run.config, run.root)
    for stage in WCS_STAGES:
        stage_dir = layout.stage_dir(stage)
        entry = next((p for p in run.output(stage, "astrodrizzle").get("products", [])
                      if p["product"] == verified.name), None)
        kept = stage == "default" or run.decision(f"{stage}_stage").get("kept")
        path = stage_dir / verified.name
        # Stage directories stay only with -d; a product there is shown only as its stage left it.
        if entry is None or not kept or not path.is_file() or sha256(path) != entry.get("sha256"):
            continue
        out.append({"stage": stage, "name": verified.name, "path": path, "verified": True,
                    "wcsname": run.output(stage, wcsname_step(stage)).get("wcsname"),
                    "exposures": [stage_dir / e for e in entry["inputs"]]})
    return out


def fit_matches(run, input_dir: Path) -> dict | None:
    """The chosen fit's matched pairs handed back with the products, read and checked against the log.

    Returns
    -------
    dict or None
        ``file``, ``sha256``, ``table`` (astropy Table) and the align step's record of it; None when
        the products carry no a posteriori fit.
    """
    from astropy.table import Table

    names = run.output("final", "replace").get("fit_matches", [])
    record = run.output("aposteriori", "align").get("fit_matches")
    if not names or not record:
        return None
    path = _checked(input_dir / names[0], record["sha256"], "the fit's matched pairs")
    return {**record, "path": path, "table": Table.read(path, format="ascii.ecsv")}


def run_facts(run_row: dict, events, verified) -> dict:
    """Everything a run's report shows, from its events and the files it handed back.

    Parameters
    ----------
    run_row : dict
        The run's row of the store (``run_id``, ``input``, ``root``).
    events : sequence of Event
        The run's events.
    verified : VerifyResult
        The store's check of the run's hash chain.

    Returns
    -------
    dict
        ``run_id``, ``root``, ``input``, ``status``, ``exit_code``, ``reason``, ``wcsname``,
        ``chosen_stage``, ``rule``, ``version``, ``libraries``, ``log`` (verified, events, first bad
        seq, reason, banner), ``started_utc``, ``ended_utc``, ``explain`` (:func:`views.explain.explain`),
        ``fits`` (:func:`fits_with_reasons`), ``fit_margin``, ``fit_applied`` (the align step's
        chosen catalog, method, RMS and matches), ``timeline``, ``checks``, ``products``,
        ``fit_matches``, ``stage_labels``.

    Raises
    ------
    InputError
        A file the log says was handed back (product, matched pairs) is missing or changed.
    """
    run = fold(events)
    input_dir = RunLayout.of(run_row, run_row["root"]).input_dir
    started = next((e.payload for e in events if e.kind == RUN_STARTED), {})
    ended = run.ended or {}
    wcs = run.decision("wcs")
    doc = explain(run)
    fits = fits_with_reasons(doc)
    align = run.output("aposteriori", "align")
    return {
        "run_id": run_row["run_id"], "root": run.root or run_row["root"], "input": run_row["input"],
        "input_dir": str(input_dir),
        "status": ended.get("status", "unfinished"), "exit_code": ended.get("exit_code"),
        "reason": ended.get("reason"), "wcsname": wcs.get("chosen_wcsname"), "chosen_stage": wcs.get("chosen_stage"),
        "rule": wcs.get("rule"), "version": started.get("version"), "libraries": started.get("libraries", {}),
        "log": log_facts(verified),
        "started_utc": events[0].utc if events else None,
        "ended_utc": events[-1].utc if events and events[-1].kind == RUN_ENDED else None,
        "explain": doc, "fits": fits, "fit_margin": fit_margin(run.decision("aposteriori_fit")),
        "fit_applied": {k: align.get(k) for k in ("chosen_catalog", "chosen_method", "rms_mas", "matches")}
        if align.get("chosen_catalog") else None,
        "timeline": timeline(events), "checks": checks(run), "products": products(run, input_dir),
        "fit_matches": fit_matches(run, input_dir), "stage_labels": STAGE_LABELS,
    }
