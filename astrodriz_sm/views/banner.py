"""What every view says of a log whose hash chain does not verify.

A log that does not verify is rendered only when the reader asks for it (``--unverified``), and then
every output opens with the same banner, so that nothing shown from it passes for what the run recorded.
The check itself is the store's (:meth:`astrodriz_sm.store.eventstore.EventStore.verify`); these
functions take its result.
"""

from __future__ import annotations


def does_not_verify(check) -> str:
    """``run <id>: the log does not verify (first bad event: seq <n>: <why>)``.

    Parameters
    ----------
    check : VerifyResult
        The store's check of one run's hash chain, one that failed.
    """
    return f"run {check.run_id}: the log does not verify (first bad event: {check.reason})"


def unverified_banner(check) -> str | None:
    """The banner heading every output rendered from a log that does not verify; None when it verifies."""
    if check.ok:
        return None
    return (f"WARNING: {does_not_verify(check)}; shown anyway (--unverified): what follows may not be "
            "what the run recorded")


def log_facts(check) -> dict:
    """The check as the views carry it: ``verified``, ``events``, ``first_bad_seq``, ``reason``, ``banner``."""
    return {"verified": check.ok, "events": check.n_events, "first_bad_seq": check.first_bad_seq,
            "reason": check.reason, "banner": unverified_banner(check)}
