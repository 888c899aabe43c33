"""A campaign's report page, from its ledger and each association's event store.

:func:`campaign_facts` gathers every number of the page, each derived once: the counts the ledger
gives are those of ``campaign status`` (:func:`campaign.status.campaign_summary`), the rest comes
from the latest run of each association as its store records it. :func:`render_campaign_page`
only formats them; :func:`write_campaign_report` writes the page.
"""

from __future__ import annotations

import os
import statistics
from collections import Counter
from pathlib import Path

from ...campaign.ledger import Ledger, process_attempts, size_text, state_of
from ...campaign.status import campaign_summary
from ...errors import InputError
from ...model import partial_name, report_name
from ...statemachine import fold
from ...statemachine.state import STEP_FAILED
from ...store.eventstore import EventStore, StoreError
from ..explain import explain
from . import figures as fig
from .facts import timeline
from .qa import alignment_counts, exposure_rows

__all__ = ["campaign_facts", "campaign_report_name", "render_campaign_page", "write_campaign_report"]

# Runs listed as the slowest: enough to see the tail without listing a whole campaign.
SLOWEST = 10
# The exposure counts of drizzlepac#2157, in the order the page lists them (``alignment_counts`` keys).
EXPOSURE_COUNTS = ("aligned_to_gaia", "aposteriori", "apriori", "pipeline_default")
# What a run's store says when it cannot say anything about the run.
NO_RUN, STORE_MISSING, STORE_UNREADABLE, RUN_MISSING, READ = (
    "no run", "store missing", "store unreadable", "run not in its store", "read")
UNKNOWN_DETECTOR = "unknown"


def campaign_report_name(ledger: str | os.PathLike) -> str:
    """``<ledger stem>_campaign_report.html``: the campaign's report page."""
    return f"{Path(ledger).stem}_campaign_report.html"


def _read_run(run_id: str | None, store: str | None) -> tuple[str, str | None, list]:
    """A run's events: ``(what the store says, why not, events)``; events is empty unless READ."""
    if not run_id or not store:
        # The process stopped before it made a run (a missing ASN file, a bad name): no event log.
        return NO_RUN, "the run never started: no event log", []
    if not Path(store).is_file():
        return STORE_MISSING, f"{store}: the event store is gone", []
    try:
        events_store = EventStore(store, read_only=True)
    except StoreError as exc:
        return STORE_UNREADABLE, str(exc), []
    try:
        events = events_store.events(run_id)
    except StoreError as exc:
        return STORE_UNREADABLE, str(exc), []
    finally:
        events_store.close()
    if not events:
        return RUN_MISSING, f"{store}: no run {run_id} in it", []
    return READ, None, events


def association_facts(row: dict, output_dir: Path) -> dict:
    """One association: its latest attempt in the ledger and what its run's store says.

    Parameters
    ----------
    row : dict
        An entry of :meth:`Ledger.associations` (``input``, ``root``, ``attempts``).
    output_dir : Path
        Where the page goes: links to run reports are relative to it.

    Returns
    -------
    dict
        ``root``, ``input``, ``state``, ``exit_class``, ``exit_code``, ``message``, ``run_id``,
        ``store``, ``store_state`` (one of the module's ``NO_RUN`` ... ``READ``), ``store_problem``,
        ``attempts`` (the ledger's process attempts), ``detector``, ``exposures`` (the run's
        :func:`.qa.alignment_counts`, None unless read), ``wcs_stage``, ``fit`` (the align step's
        chosen fit: ``catalog``, ``method``, ``rms_mas``, ``matches``, ``applied``), ``failed_step``
        (``where``, ``message`` of the last ``step.failed``), ``interrupted`` (the steps a stopped
        process was inside), ``report`` (relative link to the run's own report page, when it exists).
    """
    attempts = row["attempts"]
    last = attempts[-1] if attempts else None
    out = {"root": row["root"], "input": row["input"], "state": state_of(attempts),
           "exit_class": last.exit_class if last else None, "exit_code": last.exit_code if last else None,
           "message": last.message if last else None, "run_id": last.run_id if last else None,
           "store": last.store if last else None,
           "attempts": [{"attempt": a.attempt, "action": a.action, "exit_class": a.exit_class, "verdict": a.verdict,
                         "wall_s": a.wall_s, "peak_rss_bytes": a.peak_rss_bytes, "host": a.host}
                        for a in process_attempts(attempts)],
           "detector": UNKNOWN_DETECTOR, "exposures": None, "wcs_stage": None, "fit": None, "failed_step": None,
           "interrupted": [], "report": None}
    state, problem, events = _read_run(out["run_id"], out["store"]) if last else (NO_RUN, "no attempt yet", [])
    out.update(store_state=state, store_problem=problem)
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
    page = Path(row["input"]).parent / report_name(run.root or row["root"])
    if page.is_file():
        out["report"] = Path(os.path.relpath(page, output_dir)).as_posix()
    return out


def _fraction(n: int, total: int) -> dict:
    return {"n": n, "of": total, "fraction": n / total if total else None}


def _rms_stats(values: list[float]) -> dict:
    return {"n": len(values), "min": min(values) if values else None,
            "median": statistics.median(values) if values else None, "max": max(values) if values else None}


def campaign_facts(ledger: Ledger, output_dir: Path) -> dict:
    """Everything the campaign's page shows.

    Parameters
    ----------
    ledger : Ledger
    output_dir : Path
        The page's directory (links to run reports are relative to it).

    Returns
    -------
    dict
        ``summary`` (:func:`campaign_summary`: counts by state and exit class, failed, retried,
        slowest), ``associations`` (one :func:`association_facts` per association, by input),
        ``wcs_fractions`` (associations ending with each final WCS type, of all associations),
        ``exposures`` (the runs' exposure counts summed, over ``runs_read`` runs), ``unread``
        (associations whose store could not say), ``detectors`` (per detector: associations, done,
        fits made and applied, RMS statistics of the applied fits, every fit's ``(rms, applied)``),
        ``failures_by_class``, ``failures_by_step``, ``slowest``.
    """
    summary = campaign_summary(ledger, slowest=SLOWEST)
    by_input = {r["input"]: association_facts(r, output_dir) for r in ledger.associations()}
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
        "unread": [r for r in records if r["store_state"] != READ],
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


def write_campaign_report(ledger_path: str | os.PathLike, output: str | os.PathLike | None = None) -> Path:
    """Render a campaign's report page into ``output`` (default: the ledger's directory).

    Parameters
    ----------
    ledger_path : path
        The campaign ledger.
    output : path, optional
        The directory to write to; made when it does not exist.

    Returns
    -------
    Path
        ``<ledger stem>_campaign_report.html``.

    Raises
    ------
    LedgerError
        No ledger at ``ledger_path`` (exit 7).
    LedgerCorrupt
        Not a campaign ledger (exit 8).
    InputError
        ``output`` cannot be written.
    """
    ledger = Ledger(ledger_path)
    try:
        directory = (Path(output) if output else ledger.path.parent).resolve()
        f = campaign_facts(ledger, directory)
    finally:
        ledger.close()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        html = directory / campaign_report_name(ledger.path)
        partial = html.with_name(partial_name(html.name))
        partial.write_text(render_campaign_page(f), encoding="utf-8")
        os.replace(partial, html)
    except OSError as exc:
        where = exc.filename or str(directory)
        raise InputError(f"{where}: cannot write the campaign report: {exc.strerror or exc}", str(where)) from None
    return html
