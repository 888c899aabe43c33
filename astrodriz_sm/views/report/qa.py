"""The run's QA JSON in drizzlepac's ``HapDiagnostic`` layout (``haputils/diagnostic_utils.py``).

The file is written by drizzlepac's own ``HapDiagnostic`` class: a ``header`` section (the
product's primary header, trimmed as drizzlepac trims it), ``general information`` (telescope,
instrument, detector, filter, dataset, ...), and ``data`` items that drizzlepac's
``read_json_file`` turns back into dicts and astropy tables. The numbers are those of the report
(:func:`.facts.run_facts`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...model import partial_name
from ...plumbing import captured_output

DATA_SOURCE = "astrodriz-sm report"


def _header_file(f: dict) -> Path:
    """The file whose primary header heads the QA JSON: the final verified product, else an exposure."""
    finals = [p["path"] for p in f["products"] if p["stage"] == "final" and p["verified"]]
    if finals:
        return finals[0]
    input_dir = Path(f["input_dir"])
    exposures = [input_dir / n for n in f["explain"]["exposures"] if (input_dir / n).is_file()]
    if not exposures:
        raise InputError(f"{input_dir}: no product or exposure of run {f['run_id']} to take the QA header from",
                         str(input_dir))
    return exposures[0]


def _table(rows: list[dict], columns: dict):
    """An astropy Table of ``rows`` with ``columns`` (name -> dtype); None becomes NaN, '' or False."""
    from astropy.table import Table

    empty = {float: np.nan, str: "", bool: False, int: -1}
    data = {name: np.asarray([empty[t] if r.get(name) is None else r[name] for r in rows], dtype=t)
            for name, t in columns.items()}
    return Table(data) if rows else Table(names=list(columns), dtype=list(columns.values()))


def wcs_type(wcsname) -> str | None:
    """drizzlepac's description of a WCSNAME (``updatehdr.interpret_wcsname_type``)."""
    from drizzlepac import updatehdr

    if not isinstance(wcsname, str) or not wcsname:
        return None
    return updatehdr.interpret_wcsname_type(wcsname)


def exposure_rows(f: dict) -> list[dict]:
    """One row per exposure: its final WCS, where it came from, whether it is aligned to GAIA and how."""
    rows = []
    for name, cands in f["explain"]["exposures"].items():
        chosen = next((c for c in cands if c["chosen"]), None)
        wcsname = chosen["wcsname"] if chosen else None
        wcsname = ", ".join(wcsname) if isinstance(wcsname, list) else wcsname
        rows.append({"exposure": name, "wcsname": wcsname, "wcstype": wcs_type(wcsname),
                     "stage": chosen["stage"] if chosen else None,
                     "catalog": chosen["catalog"] if chosen else None,
                     "aligned_to_gaia": bool(wcsname and "GAIA" in wcsname.upper()),
                     "aposteriori": bool(chosen and chosen["stage"] == "aposteriori"),
                     "fit_rms_mas": chosen["rms_mas"] if chosen else None,
                     "matches": chosen["matches"] if chosen else None})
    return rows


def alignment_counts(rows: list[dict]) -> dict:
    """What a campaign adds up: exposures, those aligned to GAIA, those with an a posteriori fit, its RMS."""
    fitted = [r["fit_rms_mas"] for r in rows if r["aposteriori"] and r["fit_rms_mas"] is not None]
    return {"exposures": len(rows), "aligned_to_gaia": sum(r["aligned_to_gaia"] for r in rows),
            "aposteriori": sum(r["aposteriori"] for r in rows),
            "apriori": sum(r["stage"] == "apriori" for r in rows),
            "pipeline_default": sum(r["stage"] == "default" for r in rows),
            "max_fit_rms_mas": max(fitted) if fitted else None}


def qa_diagnostic(f: dict):
    """The run's ``HapDiagnostic``, filled from its facts.

    Returns
    -------
    drizzlepac.haputils.diagnostic_utils.HapDiagnostic
    """
    from drizzlepac.haputils import diagnostic_utils as du

    from .facts import parse_utc

    when = parse_utc(f["ended_utc"] or f["timeline"]["start_utc"])
    diag = du.HapDiagnostic()
    cwd = os.getcwd()
    with captured_output():
        try:
            # HapDiagnostic stamps its time as local MM/DD/YYYYTHH:MM:SS; the run's own end (UTC) is used
            # so that the same log gives the same file.
            diag.instantiate_from_fitsfile(str(_header_file(f)), data_source=DATA_SOURCE,
                                           description=f"astrodriz-sm run {f['run_id']}: WCS decision, fits, "
                                                       "verification and timeline",
                                           timestamp=when.strftime("%m/%d/%YT%H:%M:%S"),
                                           time_since_epoch=when.timestamp())
        finally:
            os.chdir(cwd)  # its git look-up changes directory
    info = diag.out_dict["general information"]
    # drizzlepac puts its own git commit here; the software that made the numbers is this one.
    info["commit id"] = f"astrodriz-sm {f['version']}"
    header = diag.out_dict["header"]
    for key, value in list(header.items()):
        if not isinstance(value, (str, int, float, bool)) and value is not None:
            header[key] = str(value)

    rows = exposure_rows(f)
    diag.add_data_item({"run_id": f["run_id"], "status": f["status"], "exit_code": f["exit_code"],
                        "reason": f["reason"], "final_wcsname": f["wcsname"], "chosen_stage": f["chosen_stage"],
                        "rule": f["rule"], "astrodriz_sm": f["version"], "libraries": f["libraries"],
                        "log_verified": f["log"]["verified"], "log_first_bad_seq": f["log"]["first_bad_seq"],
                        "log_banner": f["log"]["banner"], "events": f["log"]["events"],
                        "processes": len(f["timeline"]["processes"]), "fit": f["fit_applied"],
                        "fit_margin": f["fit_margin"]},
                       "run", item_description="outcome of the run and the rule that chose its WCS")
    diag.add_data_item(alignment_counts(rows), "alignment counts",
                       item_description="exposures, those aligned to GAIA, with an a posteriori fit, a priori or "
                                        "pipeline-default WCS, and the largest fit RMS (mas)")
    diag.add_data_item(_table(rows, {"exposure": str, "wcsname": str, "wcstype": str, "stage": str, "catalog": str,
                                     "aligned_to_gaia": bool, "aposteriori": bool, "fit_rms_mas": float,
                                     "matches": int}),
                       "exposures", item_description="final WCS of each exposure",
                       units={"fit_rms_mas": "mas"})
    diag.add_data_item(_table(f["fits"], {"catalog": str, "method": str, "fit_quality": int, "valid": bool,
                                          "matches": int, "rms_mas": float, "reference_sources": int,
                                          "chosen": bool, "why": str}),
                       "candidate fits", item_description="each a posteriori fit drizzlepac's rule considered",
                       units={"rms_mas": "mas"})
    if f["fit_matches"] is not None:
        table = f["fit_matches"]["table"].copy(copy_data=True)
        table.meta.clear()
        diag.add_data_item(table, "fit matches",
                           item_description=f"matched source pairs of the chosen fit ({f['fit_matches']['file']})",
                           units={c: str(table[c].unit) for c in table.colnames if table[c].unit is not None})
    checks = f["checks"]
    diag.add_data_item({c["stage"]: {k: v for k, v in c.items() if k != "stage"} for c in checks["focus"]},
                       "focus", item_description="focus index of each stage's single-drizzle images and product")
    diag.add_data_item({c["stage"]: {k: v for k, v in c.items() if k != "stage"} for c in checks["overlap"]},
                       "overlap", item_description="overlap distance of each single-drizzle image, limit 1")
    diag.add_data_item({c["stage"]: {k: v for k, v in c.items() if k != "stage"} for c in checks["similarity"]},
                       "similarity", item_description="similarity index to the pipeline-default product, limit 1")
    diag.add_data_item(_table([dataclasses.asdict(a) for a in f["timeline"]["attempts"]],
                              {"stage": str, "step": str, "process": int, "start": float, "end": float,
                               "outcome": str, "invalidated": str}),
                       "timeline", item_description="each step attempt: seconds since the run started",
                       units={"start": "s", "end": "s"})
    return diag


def write_qa_json(f: dict, path: Path) -> Path:
    """Write the run's QA JSON to ``path`` (atomically) and return it."""
    diag = qa_diagnostic(f)
    partial = path.with_name(partial_name(path.name))
    with captured_output():
        diag.write_json_file(str(partial), clobber=True)
    os.replace(partial, path)
    return path
