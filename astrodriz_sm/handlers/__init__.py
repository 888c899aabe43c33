"""Handlers: the activities behind each step. Each takes a StepContext and returns the payload
of the step's completed event."""

from . import alignment, drizzle, final, init, verify
from .common import StepContext

HANDLERS = {
    ("init", "resolve_inputs"): init.resolve_inputs,
    ("default", "stage_inputs"): drizzle.stage_inputs,
    ("default", "updatewcs"): drizzle.updatewcs,
    ("default", "astrodrizzle"): drizzle.run_astrodrizzle,
    ("default", "verify_alignment"): verify.verify_alignment,
    ("apriori", "probe_service"): alignment.probe_service,
    ("apriori", "stage_inputs"): alignment.stage_inputs,
    ("apriori", "updatewcs"): alignment.apriori_updatewcs,
    ("apriori", "astrodrizzle"): drizzle.run_astrodrizzle,
    ("apriori", "verify_alignment"): verify.verify_alignment,
    ("apriori", "conclude"): alignment.conclude,
    ("aposteriori", "probe_service"): alignment.probe_service,
    ("aposteriori", "stage_inputs"): alignment.stage_inputs,
    ("aposteriori", "align"): alignment.align,
    ("aposteriori", "astrodrizzle"): drizzle.run_astrodrizzle,
    ("aposteriori", "verify_alignment"): verify.verify_alignment,
    ("aposteriori", "conclude"): alignment.conclude,
    ("final", "choose_wcs"): final.choose_wcs,
    ("final", "stage_inputs"): final.stage_inputs,
    ("final", "copy_flc_wcs"): final.copy_flc_wcs,
    ("final", "astrodrizzle"): final.astrodrizzle,
    ("final", "write_headerlets"): final.write_headerlets,
    ("final", "promote"): final.promote,
    ("final", "cleanup"): final.cleanup,
}

__all__ = ["HANDLERS", "StepContext"]
