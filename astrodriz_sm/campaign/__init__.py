"""Reprocessing campaigns: many associations on a Dask cluster, resumable, with a ledger.

``astrodriz-sm batch`` (:func:`run_batch`) runs each association as ``astrodriz-sm start`` (or
``resume``) in a process of its own on a Dask worker; ``astrodriz-sm campaign status``
(:func:`campaign_summary`) sums up the ledger; ``astrodriz-sm report --campaign``
(:func:`astrodriz_sm.campaign.report.campaign_report`, imported on demand: it draws with matplotlib)
writes its report page. See ``docs/campaigns.md``.
"""

from .driver import BatchResult, judge, plan, read_input_list, run_batch
from .ledger import LEDGER_NAME, Attempt, Ledger, LedgerCorrupt, LedgerError
from .status import campaign_summary, render_status

__all__ = ["LEDGER_NAME", "Attempt", "BatchResult", "Ledger", "LedgerCorrupt", "LedgerError", "campaign_summary",
           "judge", "plan", "read_input_list", "render_status", "run_batch"]
