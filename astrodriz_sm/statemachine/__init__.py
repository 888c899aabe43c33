"""The pure state machine: states, guarded transitions, fold and WCS preference."""

from .machine import (
                      STAGE_STEPS,
                      STOP_STAGE,
                      TRANSITIONS,
                      WCS_RULE,
                      Action,
                      best_verified_stage,
                      choose_wcs,
                      next_action,
                      plan,
                      stage_files,
                      transition,
)
from .state import ENDS, EVENT_KINDS, STAGES, STATES, RunState, fold

__all__ = ["ENDS", "EVENT_KINDS", "STAGES", "STAGE_STEPS", "STATES", "STOP_STAGE", "TRANSITIONS", "WCS_RULE",
           "Action", "RunState", "best_verified_stage", "choose_wcs", "fold", "next_action", "plan",
           "stage_files", "transition"]
