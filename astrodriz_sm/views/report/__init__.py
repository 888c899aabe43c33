"""A run's report: one self-contained HTML page and a QA JSON, from its events and the files it handed back.

:mod:`.facts` gathers the numbers, :mod:`.figures` draws them, :mod:`.page` renders the page from
the Jinja2 templates in ``templates/`` and :mod:`.qa` writes the QA JSON in drizzlepac's
``HapDiagnostic`` layout. :mod:`.campaign` makes a campaign's page, from the ledger's summary and each
run's events that :mod:`astrodriz_sm.campaign.report` hands it, with the same templates' frame and figures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...errors import InputError
from ...model import RunLayout, partial_name

__all__ = ["ReportFiles", "write_report"]


@dataclass(frozen=True)
class ReportFiles:
    """The files a report wrote.

    Attributes
    ----------
    html : Path
        ``<root>_report.html``.
    qa_json : Path
        ``<root>_qa.json``.
    """

    html: Path
    qa_json: Path


def write_report(row: dict, events, check, output: str | os.PathLike | None = None) -> ReportFiles:
    """Render a run's report page and QA JSON into ``output`` (default: the run's input directory).

    Parameters
    ----------
    row : dict
        The run's row of the store (``run_id``, ``input``, ``root``).
    events : sequence of Event
        The run's events.
    check : VerifyResult
        The store's check of their hash chain; when it failed, the page opens with a banner saying
        so and the QA JSON carries it.
    output : path, optional
        The directory to write to; made when it does not exist.

    Returns
    -------
    ReportFiles

    Raises
    ------
    InputError
        A file the log says the run handed back is missing or changed, or ``output`` cannot be written.
    """
    from .facts import run_facts
    from .page import render_run_page
    from .qa import write_qa_json

    facts = run_facts(row, events, check)
    layout = RunLayout(facts["root"], Path(row["input"]))
    html = layout.report(Path(output) if output else None)
    directory = html.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        partial = html.with_name(partial_name(html.name))
        partial.write_text(render_run_page(facts), encoding="utf-8")
        os.replace(partial, html)
        qa = write_qa_json(facts, layout.qa_json(directory))
    except OSError as exc:
        where = exc.filename or str(directory)
        raise InputError(f"{where}: cannot write the report: {exc.strerror or exc}", str(where)) from None
    return ReportFiles(html=html, qa_json=qa)
