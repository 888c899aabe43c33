"""Typed, frozen facts of a run: exposures, products, inputs, detector parameters, steps.

Pure: nothing here reads a file or the environment. File names are made here and nowhere else.
"""

from .detectors import DETECTORS, DetectorParameters, detector_parameters
from .exposures import (
    CALIBRATED_KINDS,
    FLC,
    FLT,
    INPUT_KINDS,
    TRANSIENT_SUFFIXES,
    Exposure,
    ExposureSet,
    Product,
    headerlet_name,
    input_name,
    original_name,
    partial_name,
    promoted_name,
    split_input_name,
    stage_directory_name,
    trailer_name,
)
from .inputs import Inputs
from .steps import (
    ENDS,
    STAGES,
    STATES,
    STEPS,
    WCS_STAGES,
    StageStop,
    StepResult,
    StepSpec,
    last_step,
    stage_steps,
    step_spec,
    wcsname_step,
)

__all__ = ["CALIBRATED_KINDS", "DETECTORS", "ENDS", "FLC", "FLT", "INPUT_KINDS", "STAGES", "STATES", "STEPS",
           "TRANSIENT_SUFFIXES", "WCS_STAGES", "DetectorParameters", "Exposure", "ExposureSet", "Inputs", "Product", "StageStop",
           "StepResult", "StepSpec", "detector_parameters", "headerlet_name", "input_name", "last_step", "original_name", "partial_name", "promoted_name",
           "split_input_name", "stage_directory_name", "stage_steps", "step_spec", "trailer_name",
           "wcsname_step"]
