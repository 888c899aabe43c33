"""``astrodriz-sm report --campaign``: a campaign's report page, from its ledger and each association's store.

The ledger and the stores are read here, once; the page's numbers are derived and formatted by the
view (:mod:`astrodriz_sm.views.report.campaign`) from what this module hands it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from ..model import campaign_report_name, partial_name
from ..views.report.campaign import SLOWEST, campaign_facts, render_campaign_page
from .ledger import Ledger, process_attempts, state_of
from .runs import NO_RUN, NOT_VERIFIED, StoredRun, read_run
from .status import campaign_summary

__all__ = ["campaign_report"]


def association_entry(row: dict) -> dict:
    """One association for the page: its latest attempt and the events of the run that attempt names.

    Parameters
    ----------
    row : dict
        An entry of :meth:`Ledger.associations` (``input``, ``root``, ``attempts``).

    Returns
    -------
    dict
        As :func:`astrodriz_sm.views.report.campaign.association_facts` takes it; a run whose log does
        not verify gives no events, and its state is :data:`~.runs.NOT_VERIFIED` whatever the ledger says.
    """
    attempts = row["attempts"]
    last = attempts[-1] if attempts else None
    stored = read_run(last.store, run_id=last.run_id) if last else StoredRun(NO_RUN, "no attempt yet")
    state = NOT_VERIFIED if stored.state == NOT_VERIFIED else state_of(attempts)
    return {"root": row["root"], "input": row["input"], "state": state,
            "exit_class": last.exit_class if last else None, "exit_code": last.exit_code if last else None,
            "message": last.message if last else None, "run_id": last.run_id if last else None,
            "store": last.store if last else None,
            "attempts": [{"attempt": a.attempt, "action": a.action, "exit_class": a.exit_class, "verdict": a.verdict,
                          "wall_s": a.wall_s, "peak_rss_bytes": a.peak_rss_bytes, "host": a.host}
                         for a in process_attempts(attempts)],
            "store_state": stored.state, "store_problem": stored.problem,
            "first_bad_seq": stored.first_bad_seq, "events": stored.events}


def campaign_report(ledger: str | os.PathLike, *, output: str | os.PathLike | None = None) -> Path:
    """Write a campaign's report page: ``<ledger stem>_campaign_report.html``.

    One self-contained HTML page from the ledger and each association's event store: outcomes by
    state and exit class, the associations and exposures ending with each kind of WCS, the a
    posteriori fit RMS by detector, the failures by exit class and by the step that failed, the
    retried associations and the slowest runs, linked to their own reports where those exist.

    Parameters
    ----------
    ledger : path
        The campaign ledger (``campaign.db``).
    output : path, optional
        The directory to write into; made when it does not exist. Default: the ledger's directory.

    Returns
    -------
    pathlib.Path
        The page.

    Raises
    ------
    LedgerError
        No ledger at that path (exit 7).
    LedgerCorrupt
        The file is not a campaign ledger (exit 8).
    InputError
        ``output`` cannot be written.
    """
    opened = Ledger(ledger)
    try:
        directory = (Path(output) if output else opened.path.parent).resolve()
        associations = [association_entry(row) for row in opened.associations()]
        not_verified = frozenset(a["input"] for a in associations if a["state"] == NOT_VERIFIED)
        summary = campaign_summary(opened, slowest=SLOWEST, not_verified=not_verified)
    finally:
        opened.close()
    page = render_campaign_page(campaign_facts(summary, associations, directory))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        html = directory / campaign_report_name(opened.path.stem)
        partial = html.with_name(partial_name(html.name))
        partial.write_text(page, encoding="utf-8")
        os.replace(partial, html)
    except OSError as exc:
        where = exc.filename or str(directory)
        raise InputError(f"{where}: cannot write the campaign report: {exc.strerror or exc}", str(where)) from None
    return html
