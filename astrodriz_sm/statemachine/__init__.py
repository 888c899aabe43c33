"""The pure state machine: states, guarded transitions, fold, and the rules of every decision."""

from .machine import FAIL_RUN, STOP_STAGE, TRANSITIONS, Action, next_action, plan, stage_files, transition
from .rules import (
    COSMIC_RAY_RULE,
    FIT_RULE,
    SOURCE_RULE,
    VERIFY_RULE,
    WCS_RULE,
    best_fit,
    best_verified_stage,
    choose_final_wcs,
    choose_fit,
    conclude_stage,
    cosmic_ray_path,
    exposures_source,
    fit_search_ends,
    is_kept,
    stop_reason,
    verify_stage,
)
from .state import ENDS, EVENT_KINDS, STAGES, STATES, RunState, fold

__all__ = ["ENDS", "EVENT_KINDS", "COSMIC_RAY_RULE", "FIT_RULE", "SOURCE_RULE", "STAGES", "STATES", "FAIL_RUN", "STOP_STAGE", "TRANSITIONS", "VERIFY_RULE",
           "WCS_RULE", "Action", "RunState", "best_fit", "best_verified_stage", "choose_final_wcs", "choose_fit",
           "conclude_stage", "cosmic_ray_path", "exposures_source", "fit_search_ends", "fold", "is_kept", "next_action", "plan", "stage_files",
           "stop_reason", "transition", "verify_stage"]
