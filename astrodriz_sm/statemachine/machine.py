"""The pipeline as an explicit state machine.

Pure: given a folded :class:`RunState` it says what comes next. It reads no file, no clock and
no environment; the guards look only at the configuration and the facts in the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transitions import Machine

from ..model import ENDS, STAGES, STATES, stage_steps
from ..model.switches import ENV_APPLY_APRIORI, ENV_COMPUTE_APOSTERIORI
from .state import RunState

# The key of a completed step's payload (and of the decision) that stopped its stage early.
STOP_STAGE = "stop_stage"
# The key of a decision that ends the run as failed; its value names the failure (the runner's table of them).
FAIL_RUN = "fail_run"

# Guarded transitions, tried in order for the trigger 'advance': the first whose guards hold fires.
TRANSITIONS = [
    {"trigger": "advance", "source": "init", "dest": "default", "conditions": "drizcorr_perform"},
    # DRIZCORR=OMIT: runastrodriz 3.11 still writes S_REGION, WCSTYPE and the headerlets of the exposures as
    # delivered; the final stage does only that, and the run ends skipped.
    {"trigger": "advance", "source": "init", "dest": "final"},
    {"trigger": "advance", "source": "default", "dest": "apriori", "conditions": "apriori_possible"},
    {"trigger": "advance", "source": "default", "dest": "aposteriori", "conditions": "aposteriori_possible"},
    {"trigger": "advance", "source": "default", "dest": "final"},
    {"trigger": "advance", "source": "apriori", "dest": "aposteriori", "conditions": "aposteriori_possible"},
    {"trigger": "advance", "source": "apriori", "dest": "final"},
    {"trigger": "advance", "source": "aposteriori", "dest": "final"},
    {"trigger": "advance", "source": "final", "dest": "done", "conditions": "drizcorr_perform"},
    {"trigger": "advance", "source": "final", "dest": "skipped"},
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
        inputs = self.run.inputs
        if self.run.options.force:
            return self._record("drizcorr_perform", True, f"DRIZCORR={inputs.drizcorr}, forced by -f")
        ok = inputs.drizcorr == "PERFORM"
        return self._record("drizcorr_perform", ok, f"DRIZCORR={inputs.drizcorr} in {inputs.drizcorr_file}")

    def _alignment_possible(self, guard: str, switch: str, variable: str) -> bool:
        if self.run.inputs.no_alignment:
            return self._record(guard, False, self.run.inputs.no_alignment)
        on = getattr(self.run.options, switch)
        if (not on and switch == "compute_aposteriori" and not self.run.options.align_to_gaia
                and variable not in self.run.options.environment):
            return self._record(guard, False, "-g: no alignment to GAIA")
        return self._record(guard, on, f"{variable} is {'on' if on else 'off'}")

    def apriori_possible(self) -> bool:
        return self._alignment_possible("apriori_possible", "apply_apriori", ENV_APPLY_APRIORI)

    def aposteriori_possible(self) -> bool:
        if self.run.inputs.exposures.all_empty:
            # runastrodriz 3.11 drizzles them all and turns alignment to GAIA off (a priori stays).
            return self._record("aposteriori_possible", False,
                                "every exposure has EXPTIME=0 or NGOODPIX=0: no alignment to GAIA")
        return self._alignment_possible("aposteriori_possible", "compute_aposteriori", ENV_COMPUTE_APOSTERIORI)


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
    specs = [spec for spec in stage_steps(stage)
             if spec.applies is None or run.inputs is None or spec.applies(run.inputs, run.options)]
    for i, spec in enumerate(specs):
        if run.output(stage, spec.step).get(STOP_STAGE):
            return [s.step for s in specs[: i + 1]] + [s.step for s in specs[i + 1:] if s.after_stop]
    return [s.step for s in specs]


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


def stage_files(run: RunState, stage: str) -> dict:
    """``{file: sha256}`` a stage directory must hold after the stage's completed steps (:meth:`RunState.stage_files`)."""
    return run.stage_files(stage)
