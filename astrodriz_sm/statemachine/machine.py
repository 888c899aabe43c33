"""The pipeline as an explicit state machine.

Pure: given a folded :class:`RunState` it says what comes next. It reads no file, no clock and
no environment; the guards look only at the configuration and the facts in the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transitions import Machine

from .state import ENDS, STAGES, STATES, RunState

# Steps of each stage, in order. plan() drops the ones that do not apply to a run.
STAGE_STEPS = {
    "init": ("resolve_inputs",),
    "default": ("stage_inputs", "updatewcs", "astrodrizzle", "verify_alignment"),
    "apriori": ("probe_service", "stage_inputs", "updatewcs", "astrodrizzle", "verify_alignment", "conclude"),
    "aposteriori": ("probe_service", "stage_inputs", "align", "astrodrizzle", "verify_alignment", "conclude"),
    "final": ("choose_wcs", "stage_inputs", "copy_flc_wcs", "astrodrizzle", "write_headerlets", "promote",
              "cleanup"),
}
# A completed step whose payload has this key ends its stage early: only 'conclude' remains.
STOP_STAGE = "stop_stage"

# Guarded transitions, tried in order for the trigger 'advance': the first whose guards hold fires.
TRANSITIONS = [
    {"trigger": "advance", "source": "init", "dest": "default", "conditions": "drizcorr_perform"},
    {"trigger": "advance", "source": "init", "dest": "skipped"},
    {"trigger": "advance", "source": "default", "dest": "apriori", "conditions": "apriori_possible"},
    {"trigger": "advance", "source": "default", "dest": "aposteriori", "conditions": "aposteriori_possible"},
    {"trigger": "advance", "source": "default", "dest": "final"},
    {"trigger": "advance", "source": "apriori", "dest": "aposteriori", "conditions": "aposteriori_possible"},
    {"trigger": "advance", "source": "apriori", "dest": "final"},
    {"trigger": "advance", "source": "aposteriori", "dest": "final"},
    {"trigger": "advance", "source": "final", "dest": "done"},
    {"trigger": "fail", "source": list(STAGES), "dest": "failed"},
]


class _Guards:
    """Model for ``transitions``: holds the state name and evaluates the guards.

    Each guard records its result and reason, so that the transition event can say why a
    stage was entered or passed over.
    """

    def __init__(self, run: RunState):
        self.run = run
        self.state = run.state
        self.evaluated: list[dict] = []

    def _record(self, name: str, result: bool, reason: str) -> bool:
        self.evaluated.append({"guard": name, "result": result, "reason": reason})
        return result

    def drizcorr_perform(self) -> bool:
        drizcorr = self.run.inputs.get("drizcorr")
        if self.run.config.get("force"):
            return self._record("drizcorr_perform", True, f"DRIZCORR={drizcorr}, forced by -f")
        ok = drizcorr == "PERFORM"
        return self._record("drizcorr_perform", ok, f"DRIZCORR={drizcorr} in {self.run.inputs.get('drizcorr_file')}")

    def apriori_possible(self) -> bool:
        if not self.run.config.get("apply_apriori", True):
            return self._record("apriori_possible", False, "ASTROMETRY_APPLY_APRIORI is off")
        return self._record("apriori_possible", True, "ASTROMETRY_APPLY_APRIORI is on")

    def aposteriori_possible(self) -> bool:
        if not self.run.config.get("compute_aposteriori", True):
            return self._record("aposteriori_possible", False, "ASTROMETRY_COMPUTE_APOSTERIORI is off")
        return self._record("aposteriori_possible", True, "ASTROMETRY_COMPUTE_APOSTERIORI is on")


def _machine(model: _Guards) -> Machine:
    return Machine(model=model, states=list(STATES), transitions=TRANSITIONS, initial=model.state,
                   auto_transitions=False, ignore_invalid_triggers=False)


def plan(run: RunState, stage: str) -> list[str]:
    """Steps of ``stage`` for this run, in order.

    Parameters
    ----------
    run : RunState
    stage : str

    Returns
    -------
    list of str
    """
    steps = list(STAGE_STEPS.get(stage, ()))
    if stage == "final":
        if not (run.inputs.get("flt") and run.inputs.get("flc")):
            steps.remove("copy_flc_wcs")  # only meaningful when both FLT and FLC exist
        if run.config.get("basic"):
            steps.remove("write_headerlets")  # -b: runastrodriz's basic mode
    for i, step in enumerate(steps):
        if run.output(stage, step).get(STOP_STAGE):
            return steps[: i + 1] + (["conclude"] if "conclude" in steps[i + 1:] else [])
    return steps


@dataclass(frozen=True)
class Action:
    """What the runner does next.

    Attributes
    ----------
    kind : str
        ``'step'`` (run a handler), ``'transition'`` (record a transition event), ``'end'``
        (record ``run.ended``) or ``'none'`` (the run has ended).
    stage, step : str
    transition : dict
        For ``'transition'``: ``{'trigger', 'from', 'to', 'guards'}``.
    """

    kind: str
    stage: str = ""
    step: str = ""
    transition: dict = field(default_factory=dict)


def transition(run: RunState, trigger: str = "advance") -> dict:
    """Evaluate a trigger from the run's current state.

    Parameters
    ----------
    run : RunState
    trigger : str
        ``'advance'`` or ``'fail'``.

    Returns
    -------
    dict
        ``{'trigger', 'from', 'to', 'guards'}``, ready to be the payload of a transition event.
    """
    model = _Guards(run)
    _machine(model)
    source = model.state
    getattr(model, trigger)()
    return {"trigger": trigger, "from": source, "to": model.state, "guards": model.evaluated}


def next_action(run: RunState) -> Action:
    """Decide the next thing to do.

    Parameters
    ----------
    run : RunState

    Returns
    -------
    Action
    """
    if run.is_ended:
        return Action("none")
    if run.state is None:
        raise ValueError("the run has no run.started event")
    if run.state in ENDS:
        return Action("end", stage=run.state)
    if run.failure is not None:
        return Action("transition", stage=run.state, transition=transition(run, "fail"))
    for step in plan(run, run.state):
        if not run.is_completed(run.state, step):
            return Action("step", stage=run.state, step=step)
    return Action("transition", stage=run.state, transition=transition(run, "advance"))


# Steps whose outputs live in the input directory, not the stage directory.
_INPUT_DIRECTORY_STEPS = {"resolve_inputs", "promote", "cleanup"}


def stage_files(run: RunState, stage: str) -> dict:
    """``{file: sha256}`` a stage directory must hold after the stage's completed steps.

    Each step that changes the directory records its files; later steps override earlier ones.
    """
    expected = {}
    for step in plan(run, stage):
        if run.is_completed(stage, step) and step not in _INPUT_DIRECTORY_STEPS:
            expected.update(run.output(stage, step).get("files", {}))
    return expected


# WCS preference, best first, as drizzlepac's runastrodriz orders WCSNAMEs: a posteriori fits
# (relative before image, newer GAIA before older), then a priori, then the pipeline default.
WCS_STAGE_PREFERENCE = ("aposteriori", "apriori", "default")
WCS_RULE = ("the most refined stage whose alignment was verified and kept: a posteriori, then a priori; "
            "the pipeline-default WCS otherwise")
WCSNAME_STEP = {"default": "updatewcs", "apriori": "updatewcs", "aposteriori": "align"}


def _never_entered_reason(run: RunState, stage: str) -> str:
    for tr in run.transitions:
        for g in tr["guards"]:
            if g["guard"].startswith(stage) and not g["result"]:
                return g["reason"]
    return "stage not run"


def choose_wcs(run: RunState) -> dict:
    """Choose the stage whose WCS the final products use.

    Parameters
    ----------
    run : RunState

    Returns
    -------
    dict
        Payload of the ``decision`` event: every candidate with its WCSNAME, verifications and
        verdict, the chosen stage and WCSNAME, and the rule.
    """
    entered = {t["to"] for t in run.transitions}
    candidates = []
    for stage in WCS_STAGE_PREFERENCE:
        if stage not in entered:
            candidates.append({"stage": stage, "wcsname": None, "verdict": "not run",
                               "reason": _never_entered_reason(run, stage)})
            continue
        checks = run.verifications.get(stage, [])
        # 'n/a' (a single exposure) is neither a pass nor a fail: say so rather than 'not verified'.
        fallback = checks[0]["verdict"] if checks else "not verified"
        candidate = {"stage": stage, "wcsname": run.output(stage, WCSNAME_STEP[stage]).get("wcsname"),
                     "verdict": {True: "pass", False: "fail"}.get(run.verdict(stage), fallback),
                     "verifications": checks}
        if stage != "default":
            conclusion = run.output(stage, "conclude")
            candidate.update(kept=bool(conclusion.get("kept")), reason=conclusion.get("reason"))
        candidates.append(candidate)
    chosen = next((c for c in candidates if c.get("kept")),
                  next(c for c in candidates if c["stage"] == "default"))
    return {"decision": "wcs", "chosen_stage": chosen["stage"], "chosen_wcsname": chosen["wcsname"],
            "rule": WCS_RULE, "candidates": candidates}


def best_verified_stage(run: RunState) -> str:
    """The stage whose exposures the next stage starts from: the last one kept, else default."""
    for stage in ("aposteriori", "apriori"):
        if run.output(stage, "conclude").get("kept"):
            return stage
    return "default"
