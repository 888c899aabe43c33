"""The pipeline as an explicit state machine.

Pure: given a folded :class:`RunState` it says what comes next. It reads no file, no clock and
no environment; the guards look only at the configuration and the facts in the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transitions import Machine

from .state import ENDS, STAGES, STATES, RunState

# Steps of each stage, in order. The final stage's list depends on the inputs (see plan()).
STAGE_STEPS = {
    "init": ("resolve_inputs",),
    "default": ("stage_inputs", "updatewcs", "astrodrizzle", "verify_alignment"),
    "apriori": (),
    "aposteriori": (),
    "final": ("choose_wcs", "stage_inputs", "copy_flc_wcs", "astrodrizzle", "promote", "cleanup"),
}

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
        if not self.run.environment.get("ASTROMETRY_SERVICE_URL"):
            return self._record("apriori_possible", False, "no astrometry service configured "
                                "(ASTROMETRY_SERVICE_URL unset)")
        return self._record("apriori_possible", False, "a priori alignment is not available in this version")

    def aposteriori_possible(self) -> bool:
        if not self.run.config.get("compute_aposteriori", True):
            return self._record("aposteriori_possible", False, "ASTROMETRY_COMPUTE_APOSTERIORI is off")
        if not self.run.environment.get("ASTROMETRIC_CATALOG_URL"):
            return self._record("aposteriori_possible", False, "no astrometric catalog service configured "
                                "(ASTROMETRIC_CATALOG_URL unset)")
        return self._record("aposteriori_possible", False,
                            "a posteriori alignment is not available in this version")


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
    if stage == "final" and not (run.inputs.get("flt") and run.inputs.get("flc")):
        steps.remove("copy_flc_wcs")  # only meaningful when both FLT and FLC exist
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


# WCS preference, best first, as drizzlepac's runastrodriz orders WCSNAMEs: a posteriori fits
# (relative before image, newer GAIA before older), then a priori, then the pipeline default.
WCS_STAGE_PREFERENCE = ("aposteriori", "apriori", "default")
WCS_RULE = ("the most refined stage whose alignment was verified: a posteriori, then a priori; "
            "the pipeline-default WCS when neither was verified")


def choose_wcs(run: RunState) -> dict:
    """Choose the stage whose WCS the final products use.

    Parameters
    ----------
    run : RunState

    Returns
    -------
    dict
        Payload of the ``decision`` event: candidates with their verdicts and numbers, the
        chosen stage and WCSNAME, and the rule.
    """
    candidates = []
    for stage in WCS_STAGE_PREFERENCE:
        done = run.output(stage, "astrodrizzle") if stage != "default" else run.output("default", "updatewcs")
        if not done and stage != "default":
            reason = next((t["reason"] for tr in run.transitions for t in tr["guards"]
                           if t["guard"].startswith(stage) and not t["result"]), "stage not run")
            candidates.append({"stage": stage, "wcsname": None, "verdict": "not run", "reason": reason})
            continue
        checks = run.verifications.get(stage, [])
        # 'n/a' (a single exposure) is neither a pass nor a fail: say so rather than 'not verified'.
        fallback = checks[0]["verdict"] if checks else "not verified"
        candidates.append({
            "stage": stage,
            "wcsname": run.output(stage, "updatewcs").get("wcsname"),
            "verdict": {True: "pass", False: "fail"}.get(run.verdict(stage), fallback),
            "verifications": checks,
        })
    chosen = next((c for c in candidates if c["stage"] != "default" and c["verdict"] == "pass"),
                  next(c for c in candidates if c["stage"] == "default"))
    return {"decision": "wcs", "chosen_stage": chosen["stage"], "chosen_wcsname": chosen["wcsname"],
            "rule": WCS_RULE, "candidates": candidates}
