"""Simulator of HST associations with a known truth.

`simulate_association` writes what HST delivers for a dithered association
of ACS/WFC (the default), ACS/HRC, ACS/SBC, WFC3/UVIS or WFC3/IR (see
`astrodriz_sm.sim.instruments`; ASN table, RAW, FLT and, where the detector
has them, FLC files, reference files) plus the truth behind it
(star catalog, cosmic-ray masks, injected header offsets), so that every
pipeline stage can be checked against numbers that are known exactly.  It also
writes the data a local astrometry service needs to answer for the exposures
(reference catalogs, a priori headerlets, guide-star offsets; see
`astrodriz_sm.sim.service`).
"""

from .association import simulate_association
from .config import SimConfig, SimResult, add_simulate_arguments, config_from_args
from .instruments import DETECTORS, Detector, detector
from .measure import ProductAstrometry, measure_product_astrometry, observation_epoch
from .render import propagate
from .wcs import jref_environment, reference_environment, updated_wcs

__all__ = [
    "DETECTORS",
    "Detector",
    "ProductAstrometry",
    "SimConfig",
    "SimResult",
    "add_simulate_arguments",
    "config_from_args",
    "detector",
    "jref_environment",
    "measure_product_astrometry",
    "observation_epoch",
    "propagate",
    "reference_environment",
    "simulate_association",
    "updated_wcs",
]
