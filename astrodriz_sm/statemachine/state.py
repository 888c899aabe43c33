"""The run state, rebuilt from events by :func:`fold`.

Nothing else holds the state of a run: every command that needs it folds the log.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

STAGES = ("init", "default", "apriori", "aposteriori", "final")
ENDS = ("done", "skipped", "failed")
STATES = STAGES + ENDS

# Event kinds: the whole vocabulary of the log.
RUN_STARTED = "run.started"
RUN_RESUMED = "run.resumed"
RUN_ENDED = "run.ended"
STEP_STARTED = "step.started"
STEP_COMPLETED = "step.completed"
STEP_FAILED = "step.failed"
STEP_INVALIDATED = "step.invalidated"
TRANSITION = "transition"
VERIFICATION = "verification"
DECISION = "decision"
CANDIDATE = "candidate"
NOTE = "note"
EVENT_KINDS = (RUN_STARTED, RUN_RESUMED, RUN_ENDED, STEP_STARTED, STEP_COMPLETED, STEP_FAILED,
               STEP_INVALIDATED, TRANSITION, VERIFICATION, DECISION, CANDIDATE, NOTE)


@dataclass
class RunState:
    """What the log says about one run.

    Attributes
    ----------
    run_id : str
    state : str or None
        Current state of the machine (a stage or an end); None before ``run.started``.
    config : dict
        The run configuration recorded in ``run.started``.
    environment : dict
        Environment variables in force for handlers (recorded, then amended by steps).
    inputs : dict
        What the init stage learned: rootname, DRIZCORR, FLT/FLC lists, ...
    completed : dict
        ``(stage, step) -> payload`` of every ``step.completed`` event.
    in_progress : set
        Steps started and neither completed nor failed (a crash, or a running process).
    fingerprints : dict
        ``(stage, step) -> fingerprint`` recorded when the step last started.
    invalidations : list
        ``step.invalidated`` payloads: completed steps that resume found no longer valid.
    verifications : dict
        ``stage -> list of verification payloads``.
    decisions : list
        Payloads of ``decision`` events, in order.
    candidates : dict
        ``stage -> list of candidate payloads`` (each a WCS fit considered, with its numbers).
    transitions : list
        Payloads of ``transition`` events, in order.
    failure : dict or None
        Payload of the ``step.failed`` event that ended the run.
    ended : dict or None
        Payload of ``run.ended``.
    resumes : int
        Number of ``run.resumed`` events.
    last_seq : int
    """

    run_id: str = ""
    state: str | None = None
    config: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    completed: dict = field(default_factory=dict)
    in_progress: set = field(default_factory=set)
    fingerprints: dict = field(default_factory=dict)
    invalidations: list = field(default_factory=list)
    verifications: dict = field(default_factory=dict)
    decisions: list = field(default_factory=list)
    candidates: dict = field(default_factory=dict)
    transitions: list = field(default_factory=list)
    failure: dict | None = None
    ended: dict | None = None
    resumes: int = 0
    last_seq: int = 0

    @property
    def is_ended(self) -> bool:
        """True once ``run.ended`` is in the log."""
        return self.ended is not None

    def is_completed(self, stage: str, step: str) -> bool:
        """True when the step's completed event is in the log."""
        return (stage, step) in self.completed

    def output(self, stage: str, step: str) -> dict:
        """Payload of a completed step (empty dict when not completed)."""
        return self.completed.get((stage, step), {})

    def verdict(self, stage: str) -> bool | None:
        """Overall verdict of a stage's verification: True, False, or None when not verified."""
        results = [v for v in self.verifications.get(stage, []) if v.get("verdict") in ("pass", "fail")]
        if not results:
            return None
        return all(v["verdict"] == "pass" for v in results)


def fold(events: Iterable) -> RunState:
    """Rebuild a run's state from its events.

    Parameters
    ----------
    events : iterable of Event
        The run's events in ``seq`` order (objects with ``run_id``, ``seq``, ``stage``, ``step``,
        ``kind`` and ``payload`` attributes).

    Returns
    -------
    RunState
    """
    s = RunState()
    for ev in events:
        s.run_id = ev.run_id
        s.last_seq = ev.seq
        p = ev.payload
        key = (ev.stage, ev.step)
        if ev.kind == RUN_STARTED:
            s.state = "init"
            s.config = p["config"]
            s.environment = dict(p["config"].get("environment", {}))
        elif ev.kind == RUN_RESUMED:
            s.resumes += 1
            # A step that was running when the process died is redone from scratch.
            s.in_progress.clear()
        elif ev.kind == STEP_STARTED:
            s.in_progress.add(key)
            s.fingerprints[key] = p.get("fingerprint")
        elif ev.kind == STEP_INVALIDATED:
            # A completed step whose outputs or fingerprint no longer hold: it will be redone.
            s.completed.pop(key, None)
            s.invalidations.append({"stage": ev.stage, "step": ev.step, **p})
        elif ev.kind == STEP_COMPLETED:
            s.in_progress.discard(key)
            s.completed[key] = p
            s.environment.update(p.get("environment_update", {}))
            if ev.stage == "init" and "inputs" in p:
                s.inputs = p["inputs"]
        elif ev.kind == STEP_FAILED:
            s.in_progress.discard(key)
            s.failure = p
        elif ev.kind == TRANSITION:
            s.transitions.append(p)
            s.state = p["to"]
        elif ev.kind == VERIFICATION:
            s.verifications.setdefault(ev.stage, []).append(p)
        elif ev.kind == DECISION:
            s.decisions.append(p)
        elif ev.kind == CANDIDATE:
            s.candidates.setdefault(ev.stage, []).append(p)
        elif ev.kind == RUN_ENDED:
            s.ended = p
    return s
