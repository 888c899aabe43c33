"""The steps of each stage, in one table, and what a step's handler gives back.

Every property of a step lives in its :class:`StepSpec` row: the runner, the state machine, the
resume check, ``explain`` and the trailer read it from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

STAGES = ("init", "default", "apriori", "aposteriori", "final")
ENDS = ("done", "skipped", "failed")
STATES = STAGES + ENDS
# The stages whose WCS the products can carry, in the order they run.
WCS_STAGES = ("default", "apriori", "aposteriori")
#: How the trailer, explain, the report and the campaign name each WCS stage.
STAGE_LABELS = {"default": "pipeline-default", "apriori": "a priori", "aposteriori": "a posteriori"}


@dataclass(frozen=True)
class StepSpec:
    """One step of the pipeline.

    Attributes
    ----------
    stage, step : str
    handler : str
        ``module.function`` in :mod:`astrodriz_sm.handlers`.
    reads_stage_directory : bool
        The step reads the stage directory's copies, so a resume must check them first.
    files_in : {'stage', 'input', None}
        Where the files its ``files`` entry lists live: the stage directory or the input directory.
    may_stop : bool
        A rule may stop the stage early from its result (a decision with ``stop_stage``).
    after_stop : bool
        It still runs when an earlier step stopped the stage (the stage's conclusion).
    yields_wcsname : bool
        Its result names the WCS the stage gave the exposures (``wcsname``).
    applies : callable, optional
        ``applies(inputs, config) -> bool``; without it the step always runs.
    """

    stage: str
    step: str
    handler: str
    reads_stage_directory: bool = False
    files_in: str | None = None
    may_stop: bool = False
    after_stop: bool = False
    yields_wcsname: bool = False
    applies: Callable | None = field(default=None, compare=False)


def _stage_work(stage: str, step: str, handler: str, **kw) -> StepSpec:
    """A step that works on the stage directory's copies."""
    return StepSpec(stage, step, handler, reads_stage_directory=True, files_in="stage", **kw)


def _alignment_stage(stage: str, fit: StepSpec) -> tuple[StepSpec, ...]:
    """An alignment stage: probe its service, copy the best kept exposures, ``fit``, drizzle, verify, conclude."""
    return (StepSpec(stage, "probe_service", "alignment.probe_service", may_stop=True),
            _stage_work(stage, "stage_inputs", "alignment.stage_inputs"),
            fit,
            _stage_work(stage, "astrodrizzle", "drizzle.run_astrodrizzle"),
            StepSpec(stage, "verify_alignment", "verify.verify_alignment", reads_stage_directory=True),
            StepSpec(stage, "conclude", "alignment.conclude", after_stop=True))


def drizzles(inputs, config) -> bool:
    """Whether the run drizzles at all: DRIZCORR is PERFORM, or ``-f``."""
    return config.force or inputs.drizcorr == "PERFORM"


STEPS = (
    StepSpec("init", "resolve_inputs", "init.resolve_inputs"),
    # -v: runastrodriz checks the guiding only of data it goes on to process, and never of WFPC2's (RA 336:
    # a loss of lock shows in the quality keywords its _analyze_exposure reads).
    StepSpec("init", "verify_guiding", "init.verify_guiding",
             applies=lambda inputs, config: config.verify_guiding and inputs.instrument != "WFPC2"
             and drizzles(inputs, config)),
    _stage_work("default", "stage_inputs", "staging.stage_inputs"),
    _stage_work("default", "updatewcs", "wcs.updatewcs", yields_wcsname=True),
    _stage_work("default", "astrodrizzle", "drizzle.run_astrodrizzle"),
    StepSpec("default", "verify_alignment", "verify.verify_alignment", reads_stage_directory=True),
    *_alignment_stage("apriori", _stage_work("apriori", "updatewcs", "alignment.apriori_updatewcs", may_stop=True,
                                             yields_wcsname=True)),
    *_alignment_stage("aposteriori", _stage_work("aposteriori", "align", "alignment.align", may_stop=True,
                                                 yields_wcsname=True)),
    # DRIZCORR=OMIT (without -f): no WCS to choose and nothing to drizzle; the exposures as delivered get
    # their header updates and headerlets, and are handed back.
    StepSpec("final", "choose_wcs", "final.choose_wcs", applies=lambda inputs, config: drizzles(inputs, config)),
    _stage_work("final", "stage_inputs", "final.stage_inputs"),
    _stage_work("final", "astrodrizzle", "final.astrodrizzle", applies=lambda inputs, config: drizzles(inputs, config)),
    # WCSTYPE for every WCS of the exposures, S_REGION of the products (runastrodriz 3.11).
    _stage_work("final", "update_headers", "final.update_headers"),
    # -b: runastrodriz's basic mode writes no headerlets.
    _stage_work("final", "write_headerlets", "final.write_headerlets",
                applies=lambda inputs, config: not config.basic),
    # PIPELINE_QUALITY_TESTING: drizzlepac's quality analysis of the exposures about to be handed back.
    _stage_work("final", "quality_analysis", "final.quality_analysis",
                applies=lambda inputs, config: config.quality_testing and drizzles(inputs, config)),
    # Every new file is written beside its target first (promote), then all are renamed into place
    # (replace), so the input directory never holds half of a result.
    StepSpec("final", "promote", "final.promote", reads_stage_directory=True, files_in="input"),
    StepSpec("final", "replace", "final.replace", files_in="input"),
    # -m: the list of the files handed back.
    StepSpec("final", "write_manifest", "final.write_manifest", files_in="input",
             applies=lambda inputs, config: config.manifest),
    StepSpec("final", "cleanup", "final.cleanup"),
)
_BY_KEY = {(s.stage, s.step): s for s in STEPS}


def stage_steps(stage: str) -> tuple[StepSpec, ...]:
    """The rows of ``stage``, in order (empty for an end state)."""
    return tuple(s for s in STEPS if s.stage == stage)


def step_spec(stage: str, step: str) -> StepSpec:
    """The row of one step.

    Raises
    ------
    KeyError
        For a step that is not in the table.
    """
    return _BY_KEY[(stage, step)]


def wcsname_step(stage: str) -> str:
    """The step of a WCS stage whose result names the WCS the stage gave the exposures."""
    return next(s.step for s in stage_steps(stage) if s.yields_wcsname)


def last_step(stage: str) -> str:
    """The step whose completion concludes a stage."""
    return stage_steps(stage)[-1].step


@dataclass
class StepResult:
    """What a handler gives back; the runner records all of it with ``step.completed``, in one transaction.

    Attributes
    ----------
    payload : dict
        The ``step.completed`` payload: output files with their hashes, metrics, library logs.
    facts : list of (str, dict)
        ``(event kind, payload)`` of what the step learned: verifications, candidates, notes. Decisions
        are the rules' (:mod:`astrodriz_sm.statemachine.rules`), taken and recorded by the runner.
    """

    payload: dict = field(default_factory=dict)
    facts: list = field(default_factory=list)
