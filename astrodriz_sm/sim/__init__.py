"""Simulator of HST ACS/WFC associations with a known truth.

`simulate_association` writes what HST delivers for a dithered association
(ASN table, RAW, FLT and FLC files, reference files) plus the truth behind it
(star catalog, cosmic-ray masks, injected header offsets), so that every
pipeline stage can be checked against numbers that are known exactly.  It also
writes the data a local astrometry service needs to answer for the exposures
(reference catalogs, a priori headerlets, guide-star offsets; see
`astrodriz_sm.sim.service`).
"""

from .association import simulate_association
from .config import SimConfig, SimResult, add_simulate_arguments, config_from_args
from .measure import ProductAstrometry, measure_product_astrometry, observation_epoch
from .render import propagate
from .wcs import jref_environment, updated_wcs

__all__ = [
    "ProductAstrometry",
    "SimConfig",
    "SimResult",
    "add_simulate_arguments",
    "config_from_args",
    "jref_environment",
    "measure_product_astrometry",
    "observation_epoch",
    "propagate",
    "simulate_association",
    "updated_wcs",
]
