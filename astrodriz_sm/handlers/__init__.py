"""Handlers: the activities behind each step.

Each takes a :class:`StepContext` and returns a :class:`~astrodriz_sm.model.StepResult`; the step
table (:data:`astrodriz_sm.model.STEPS`) names the handler of every step.
"""

from importlib import import_module

from ..model import STEPS
from .common import StepContext


def _resolve(dotted: str):
    module, function = dotted.rsplit(".", 1)
    return getattr(import_module(f"{__name__}.{module}"), function)


HANDLERS = {(spec.stage, spec.step): _resolve(spec.handler) for spec in STEPS}

__all__ = ["HANDLERS", "StepContext"]
