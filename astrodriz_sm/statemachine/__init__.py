"""The pure state machine: states, guarded transitions, fold and WCS preference."""

from .machine import STAGE_STEPS, TRANSITIONS, WCS_RULE, Action, choose_wcs, next_action, plan, transition
from .state import ENDS, EVENT_KINDS, STAGES, STATES, RunState, fold

__all__ = [
                      "ENDS",
                      "EVENT_KINDS",
                      "STAGES",
                      "STAGE_STEPS",
                      "STATES",
                      "TRANSITIONS",
                      "WCS_RULE",
                      "Action",
                      "RunState",
                      "choose_wcs",
                      "fold",
                      "next_action",
                      "plan",
                      "transition",
]
