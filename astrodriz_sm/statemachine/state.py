"""The run state, rebuilt from events by :func:`fold`.

Nothing else holds the state of a run: every command that needs it folds the log.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from ..model import ENDS, STAGES, STATES, Inputs, RunConfig, stage_steps, trailer_name  # noqa: F401 - re-exported

# Event kinds: the whole vocabulary of the log, named in the model (handlers return facts by kind).
from ..model.events import (  # noqa: F401 - re-exported
    CANDIDATE,
    DECISION,
    EVENT_KINDS,
    FACT_KINDS,
    LEASE_TAKEN_OVER,
    NOTE,
    RUN_ENDED,
    RUN_RESUMED,
    RUN_STARTED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_INVALIDATED,
    STEP_STARTED,
    TRANSITION,
    VERIFICATION,
    WARNING,
)


@dataclass
class RunState:
    """What the log says about one run.

    Attributes
    ----------
    run_id : str
    state : str or None
        Current state of the machine (a stage or an end); None before ``run.started``.
    config : dict
        The run configuration as ``run.started`` recorded it (with the input's rootname, ``root``).
    environment : dict
        Environment variables in force for handlers (recorded, then amended by steps).
    inputs : Inputs or None
        What the init stage learned (None before it completed).
    completed : dict
        ``(stage, step) -> payload`` of every ``step.completed`` event still valid.
    facts : dict
        ``(stage, step) -> [(kind, payload), ...]``: what each completed step learned
        (verifications, candidates, decisions, notes). Facts of an attempt that did not complete, or
        of a completed step later invalidated, are not here.
    in_progress : set
        Steps started and neither completed nor failed (a crash, or a running process).
    fingerprints : dict
        ``(stage, step) -> fingerprint`` recorded when the step last started.
    invalidations : list
        ``step.invalidated`` payloads: completed steps that resume found no longer valid.
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
    inputs: Inputs | None = None
    completed: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)
    in_progress: set = field(default_factory=set)
    fingerprints: dict = field(default_factory=dict)
    invalidations: list = field(default_factory=list)
    transitions: list = field(default_factory=list)
    failure: dict | None = None
    ended: dict | None = None
    resumes: int = 0
    last_seq: int = 0

    @property
    def options(self) -> RunConfig:
        """The recorded configuration, typed: what the rules and the handlers read (defaults before it)."""
        return RunConfig.from_dict(self.config)

    @property
    def root(self) -> str:
        """The rootname of products, trailer and stage directories (the input's until init completed)."""
        return self.inputs.root if self.inputs else self.config.get("root", "")

    @property
    def trailer(self) -> str:
        """``<input root>.tra``: runastrodriz names the trailer after its input (the ASN or the exposure)."""
        return trailer_name(self.config.get("root", ""))

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

    def facts_by_stage(self, kind: str) -> dict:
        """``stage -> [payload, ...]`` of the completed steps' facts of one kind, in the order recorded."""
        out: dict = {}
        for (stage, _), facts in self.facts.items():
            out.setdefault(stage, []).extend(payload for k, payload in facts if k == kind)
        return {stage: payloads for stage, payloads in out.items() if payloads}

    @property
    def verifications(self) -> dict:
        """``stage -> [verification payload, ...]``."""
        return self.facts_by_stage(VERIFICATION)

    @property
    def candidates(self) -> dict:
        """``stage -> [candidate payload, ...]``: each WCS fit considered, with its numbers."""
        return self.facts_by_stage(CANDIDATE)

    @property
    def decisions(self) -> list:
        """Payloads of the completed steps' ``decision`` events, in the order recorded."""
        return [p for (_, _), facts in self.facts.items() for k, p in facts if k == DECISION]

    @property
    def warnings(self) -> list:
        """``(stage, step, message)`` of the completed steps' library fallback warnings, in the order recorded."""
        return [(stage, step, p.get("message")) for (stage, step), facts in self.facts.items()
                for k, p in facts if k == WARNING]

    def decision(self, kind: str) -> dict:
        """The decision of a kind (``'wcs'``, ``'aposteriori_fit'``, ``'<stage>_stage'``), or ``{}``."""
        return next((d for d in reversed(self.decisions) if d.get("decision") == kind), {})

    def verdict(self, stage: str) -> bool | None:
        """Whether a stage's verification decision verified its alignment; None before it was made."""
        return self.decision(f"{stage}_verification").get("verified")

    def stage_files(self, stage: str) -> dict:
        """``{file: sha256}`` a stage directory must hold after the stage's completed steps.

        Each step that changes the directory records its files; later steps override earlier ones.
        """
        expected = {}
        for spec in stage_steps(stage):
            if spec.files_in == "stage" and self.is_completed(stage, spec.step):
                expected.update(self.output(stage, spec.step).get("files", {}))
        return expected

    def after_step(self, stage: str, step: str, facts: list, payload: dict) -> RunState:
        """The state once a step's facts and ``step.completed`` are folded in (this state is left as it is).

        The runner evaluates the rules that decide from a step's results on it, before it records them.
        """
        completed = {k: v for k, v in self.completed.items() if k != (stage, step)}
        completed[(stage, step)] = payload
        recorded = {k: v for k, v in self.facts.items() if k != (stage, step)}
        recorded[(stage, step)] = list(facts)
        # As fold reads a step.completed.
        inputs = Inputs.from_payload(payload["inputs"]) if stage == "init" and "inputs" in payload else self.inputs
        return replace(self, completed=completed, facts=recorded, in_progress=self.in_progress - {(stage, step)},
                       environment={**self.environment, **payload.get("environment_update", {})}, inputs=inputs)


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
    pending: dict = {}  # facts recorded for a step whose step.completed has not been read yet
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
            s.environment.update(p.get("environment_update", {}))
        elif ev.kind == STEP_STARTED:
            s.in_progress.add(key)
            s.fingerprints[key] = p.get("fingerprint")
            pending.pop(key, None)  # facts of an attempt that never completed
        elif ev.kind == STEP_INVALIDATED:
            # A completed step whose outputs or fingerprint no longer hold: it will be redone.
            s.completed.pop(key, None)
            s.facts.pop(key, None)
            s.invalidations.append({"stage": ev.stage, "step": ev.step, **p})
        elif ev.kind in FACT_KINDS:
            pending.setdefault(key, []).append((ev.kind, p))
        elif ev.kind == STEP_COMPLETED:
            s.in_progress.discard(key)
            s.completed.pop(key, None)
            s.completed[key] = p
            s.facts.pop(key, None)
            s.facts[key] = pending.pop(key, [])
            s.environment.update(p.get("environment_update", {}))
            if ev.stage == "init" and "inputs" in p:
                s.inputs = Inputs.from_payload(p["inputs"])
        elif ev.kind == STEP_FAILED:
            s.in_progress.discard(key)
            s.failure = p
            pending.pop(key, None)
        elif ev.kind == TRANSITION:
            s.transitions.append(p)
            s.state = p["to"]
        elif ev.kind == RUN_ENDED:
            s.ended = p
    return s
