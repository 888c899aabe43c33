"""``astrodriz-sm campaign status``: a campaign's ledger, summed up for an operator."""

from __future__ import annotations

from collections import Counter

from ..plumbing import size_text
from .ledger import Ledger, process_attempts, state_of
from .runs import NOT_VERIFIED, WCS_TYPES

STATES = ("done", "skipped", "failed", "unfinished", "pending", NOT_VERIFIED)
WCS_TYPE_ORDER = tuple(WCS_TYPES.values())


def campaign_summary(ledger: Ledger, slowest: int = 5, not_verified: frozenset = frozenset()) -> dict:
    """Counts by state, by exit class and by final WCS type; the failed, retried and slowest associations.

    The exit class and WCS type of an association are those of its latest attempt.

    Parameters
    ----------
    ledger : Ledger
    slowest : int
        How many of the slowest associations to list.
    not_verified : set of str
        The inputs whose latest run's log does not verify (the stores say so; the ledger alone
        does not): each counts in the state :data:`~astrodriz_sm.campaign.runs.NOT_VERIFIED`, with
        no final WCS type, whatever its attempt recorded.

    Returns
    -------
    dict
        ``associations``, ``attempts``, ``batches``, ``by_state``, ``by_exit_class``, ``by_wcs_type``
        (every type, zero included), ``failed``, ``retried`` and ``slowest`` (lists of dicts).
    """
    rows = ledger.associations()
    by_state, by_class, by_wcs = Counter(), Counter(), Counter(dict.fromkeys(WCS_TYPE_ORDER, 0))
    failed, retried, timed = [], [], []
    for row in rows:
        attempts = row["attempts"]
        state = NOT_VERIFIED if row["input"] in not_verified else state_of(attempts)
        by_state[state] += 1
        ran = process_attempts(attempts)
        if not attempts:
            continue
        last = attempts[-1]
        by_class[last.exit_class] += 1
        wcs_type = last.wcs_type if state == "done" else None
        if wcs_type:
            by_wcs[wcs_type] += 1
        entry = {"root": row["root"], "input": row["input"], "state": state, "exit_class": last.exit_class,
                 "exit_code": last.exit_code, "attempts": len(ran), "message": last.message,
                 "run_id": last.run_id, "store": last.store,
                 "history": [(a.attempt, a.action, a.exit_class, a.wall_s) for a in ran],
                 "wall_s": sum(a.wall_s or 0.0 for a in ran),
                 "peak_rss_bytes": max((a.peak_rss_bytes or 0 for a in ran), default=0), "wcs_type": wcs_type}
        if state == "failed":
            failed.append(entry)
        if len(ran) > 1:
            retried.append(entry)
        if ran:
            timed.append(entry)
    timed.sort(key=lambda e: -e["wall_s"])
    return {"ledger": str(ledger.path), "associations": len(rows),
            "attempts": sum(len(process_attempts(r["attempts"])) for r in rows), "batches": len(ledger.batches()),
            "by_state": {s: by_state[s] for s in STATES if by_state[s]}, "by_exit_class": dict(by_class),
            "by_wcs_type": dict(by_wcs), "failed": failed, "retried": retried, "slowest": timed[:slowest]}


def render_status(summary: dict) -> str:
    """The summary as the console shows it."""

    def counts(d: dict) -> str:
        return "  ".join(f"{k} {v}" for k, v in d.items()) or "-"

    def many(n: int, word: str, plural: str = "s") -> str:
        return f"{n} {word}{plural if n != 1 else ''}"

    lines = [(f"{summary['ledger']}: {many(summary['associations'], 'association')}, "
              f"{many(summary['attempts'], 'attempt')} in {many(summary['batches'], 'batch', 'es')}"),
             f"by state:       {counts(summary['by_state'])}",
             f"by exit class:  {counts(summary['by_exit_class'])}",
             f"by final WCS:   {counts(summary['by_wcs_type'])}"]
    if summary["failed"]:
        lines.append("failed:")
        for e in summary["failed"]:
            lines.append(f"  {e['root']}  exit {e['exit_code'] if e['exit_code'] is not None else '-'} "
                         f"({e['exit_class']}) after {e['attempts']} attempt{'s' if e['attempts'] != 1 else ''}: "
                         f"{e['message']}  [{e['input']}]")
    if summary["retried"]:
        lines.append("retried:")
        for e in summary["retried"]:
            history = ", then ".join(f"{action} {cls}" for _, action, cls, _ in e["history"])
            lines.append(f"  {e['root']}  {e['attempts']} attempts: {history}  [{e['input']}]")
    if summary["slowest"]:
        lines.append("slowest:")
        for e in summary["slowest"]:
            lines.append(f"  {e['root']}  {e['wall_s']:8.1f} s  peak {size_text(e['peak_rss_bytes']):>8s}  "
                         f"{e['attempts']} attempt{'s' if e['attempts'] != 1 else ''}  {e['state']}"
                         + (f" ({e['wcs_type']} WCS)" if e["wcs_type"] else "") + f"  [{e['input']}]")
    return "\n".join(lines) + "\n"
