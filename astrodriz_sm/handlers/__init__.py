"""Handlers: the activities behind each step. Each takes a StepContext and returns the payload
of the step's completed event."""

from . import drizzle, final, init, verify
from .common import StepContext

HANDLERS = {
    ("init", "resolve_inputs"): init.resolve_inputs,
    ("default", "stage_inputs"): drizzle.stage_inputs,
    ("default", "updatewcs"): drizzle.updatewcs,
    ("default", "astrodrizzle"): drizzle.run_astrodrizzle,
    ("default", "verify_alignment"): verify.verify_alignment,
    ("final", "choose_wcs"): final.choose_wcs,
    ("final", "stage_inputs"): final.stage_inputs,
    ("final", "copy_flc_wcs"): final.copy_flc_wcs,
    ("final", "astrodrizzle"): final.astrodrizzle,
    ("final", "promote"): final.promote,
    ("final", "cleanup"): final.cleanup,
}

__all__ = ["HANDLERS", "StepContext"]
