"""A campaign's report page, from what its ledger and each association's event store say.

:func:`campaign_facts` derives every number of the page once, from what the campaign hands in
(:func:`astrodriz_sm.campaign.report.campaign_report`): the summary of ``campaign status``
(:func:`astrodriz_sm.campaign.status.campaign_summary`) and, per association, its latest attempt and
the events of the run that attempt names. :func:`render_campaign_page` only formats them.
"""

from __future__ import annotations

import os
import statistics
from collections import Counter
from pathlib import Path

from ...model import RunLayout
from ...plumbing import size_text
from ...statemachine import fold
from ...statemachine.state import STEP_FAILED
from ..explain import explain
from . import figures as fig
from .facts import timeline
from .qa import alignment_counts, exposure_rows

__all__ = ["SLOWEST", "campaign_facts", "render_campaign_page"]

# Runs listed as the slowest: enough to see the tail without listing a whole campaign.
SLOWEST = 10
# The exposure counts of drizzlepac#2157, in the order the page lists them (``alignment_counts`` keys).
EXPOSURE_COUNTS = ("aligned_to_gaia", "aposteriori", "apriori", "pipeline_default")
UNKNOWN_DETECTOR = "unknown"


def association_facts(entry: dict, output_dir: Path) -> dict:
    """One association: its latest attempt in the ledger and what its run's events say.

    Parameters
    ----------
    entry : dict
        What the campaign gives of an association: ``root``, ``input``, ``state``, ``exit_class``,
        ``exit_code``, ``message``, ``run_id``, ``store`` (of its latest attempt), ``attempts`` (the
        ledger's process attempts), ``store_state`` and ``store_problem`` (what its store said),
        ``events`` (the run's events; empty when the store could not give them).
    output_dir : Path
        Where the page goes: links to run reports are relative to it.

    Returns
    -------
    dict
        ``entry`` without the events, and ``detector``, ``exposures`` (the run's
        :func:`.qa.alignment_counts`, None without events), ``wcs_stage``, ``fit`` (the align step's
        chosen fit: ``catalog``, ``method``, ``rms_mas``, ``matches``, ``applied``), ``failed_step``
        (``where``, ``message`` of the last ``step.failed``), ``interrupted`` (the steps a stopped
        process was inside), ``report`` (relative link to the run's own report page, when it exists).
    """
    events = entry["events"]
    out = {**{k: v for k, v in entry.items() if k != "events"},
           "detector": UNKNOWN_DETECTOR, "exposures": None, "wcs_stage": None, "fit": None, "failed_step": None,
           "interrupted": [], "report": None}
    if not events:
        return out
    run = fold(events)
    if run.inputs is not None:
        out["detector"] = ", ".join(sorted({e.instdet for e in run.inputs.exposures.all}))
    out["exposures"] = alignment_counts(exposure_rows({"explain": explain(run)}))
    out["wcs_stage"] = run.decision("wcs").get("chosen_stage")
    align = run.output("aposteriori", "align")
    if align.get("chosen_catalog"):
        out["fit"] = {"catalog": align["chosen_catalog"], "method": align.get("chosen_method"),
                      "rms_mas": align.get("rms_mas"), "matches": align.get("matches"),
                      "applied": out["wcs_stage"] == "aposteriori"}
    failed = [e for e in events if e.kind == STEP_FAILED]
    if failed:
        out["failed_step"] = {"where": f"{failed[-1].stage}/{failed[-1].step}",
                              "message": failed[-1].payload.get("message")}
    out["interrupted"] = [f"{a.stage}/{a.step}" for a in timeline(events)["attempts"] if a.outcome == "interrupted"]
    page = RunLayout(run.root or entry["root"], Path(entry["input"])).report()
    if page.is_file():
        out["report"] = Path(os.path.relpath(page, output_dir)).as_posix()
    return out


def _fraction(n: int, total: int) -> dict:
    return {"n": n, "of": total, "fraction": n / total if total else None}


def _rms_stats(values: list[float]) -> dict:
    return {"n": len(values), "min": min(values) if values else None,
            "median": statistics.median(values) if values else None, "max": max(values) if values else None}


def campaign_facts(summary: dict, associations: list[dict], output_dir: Path) -> dict:
    """Everything the campaign's page shows.

    Parameters
    ----------
    summary : dict
        The ledger's summary (:func:`astrodriz_sm.campaign.status.campaign_summary`, its ``slowest``
        :data:`SLOWEST` long).
    associations : list of dict
        One entry per association, as :func:`association_facts` takes it.
    output_dir : Path
        The page's directory (links to run reports are relative to it).

    Returns
    -------
    dict
        ``summary`` (as given: counts by state and exit class, failed, retried, slowest), ``associations`` (one :func:`association_facts` per association, by input),
        ``wcs_fractions`` (associations ending with each final WCS type, of all associations),
        ``exposures`` (the runs' exposure counts summed, over ``runs_read`` runs), ``unread``
        (associations whose store could not say), ``detectors`` (per detector: associations, done,
        fits made and applied, RMS statistics of the applied fits, every fit's ``(rms, applied)``),
        ``failures_by_class``, ``failures_by_step``, ``slowest``.
    """
    by_input = {a["input"]: association_facts(a, output_dir) for a in associations}
    records = list(by_input.values())
    total = summary["associations"]
    read = [r for r in records if r["exposures"] is not None]
    exposures = {"exposures": sum(r["exposures"]["exposures"] for r in read),
                 **{k: sum(r["exposures"][k] for r in read) for k in EXPOSURE_COUNTS}}
    exposures["no_final_wcs"] = exposures["exposures"] - sum(exposures[k] for k in EXPOSURE_COUNTS[1:])
    detectors = {}
    for r in sorted(records, key=lambda r: (r["detector"] == UNKNOWN_DETECTOR, r["detector"])):
        d = detectors.setdefault(r["detector"], {"associations": 0, "done": 0, "fits": [], "applied": 0})
        d["associations"] += 1
        d["done"] += r["state"] == "done"
        if r["fit"] is not None and r["fit"]["rms_mas"] is not None:
            d["fits"].append((r["fit"]["rms_mas"], r["fit"]["applied"]))
            d["applied"] += r["fit"]["applied"]
    for d in detectors.values():
        d["rms"] = _rms_stats([rms for rms, applied in d["fits"] if applied])
    failed = [by_input[e["input"]] for e in summary["failed"]]
    return {
        "ledger": summary["ledger"], "summary": summary, "associations": by_input,
        "wcs_fractions": {t: _fraction(n, total) for t, n in summary["by_wcs_type"].items()},
        "exposures": exposures, "runs_read": len(read),
        "unread": [r for r in records if r["exposures"] is None],
        "detectors": detectors,
        "failures_by_class": dict(Counter(r["exit_class"] for r in failed)),
        "failures_by_step": dict(Counter(r["failed_step"]["where"] if r["failed_step"] else
                                         f"({r['store_state']})" for r in failed)),
        "failed": failed, "retried": [by_input[e["input"]] for e in summary["retried"]],
        "slowest": [{**by_input[e["input"]], "wall_s": e["wall_s"], "peak_rss_bytes": e["peak_rss_bytes"],
                     "n_attempts": e["attempts"], "wcs_type": e["wcs_type"]} for e in summary["slowest"]],
    }


def figures(f: dict) -> dict:
    """The page's figures as data URIs (``rms`` is None when the campaign made no a posteriori fit)."""
    summary = f["summary"]
    colours = {"done": fig.COLOURS["pass"], "failed": fig.COLOURS["failed"], "ok": fig.COLOURS["pass"],
               "unfinished": fig.COLOURS["interrupted"], "skipped": fig.COLOURS["running"]}
    # Every exit class but ok and skipped is a failure of some kind, drawn as failed is.
    colours.update({c: fig.COLOURS["failed"] for c in summary["by_exit_class"] if c not in colours})
    outcomes = fig.data_uri(fig.counts_figure({"associations by state": summary["by_state"],
                                               "by exit class": summary["by_exit_class"],
                                               "by final WCS": summary["by_wcs_type"]}, colours))
    fits = {d: v["fits"] for d, v in f["detectors"].items() if v["fits"]}
    return {"outcomes": outcomes, "rms": fig.data_uri(fig.rms_by_detector_figure(fits)) if fits else None}


def render_campaign_page(f: dict) -> str:
    """The HTML of a campaign's report page from its facts (:func:`campaign_facts`)."""
    from .page import environment

    env = environment()
    env.filters["size"] = size_text
    return env.get_template("campaign.html.j2").render(f=f, figures=figures(f))
