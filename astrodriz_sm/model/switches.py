"""The names of runastrodriz's environment switches (read in :mod:`astrodriz_sm.config`)."""

ENV_COMPUTE_APOSTERIORI = "ASTROMETRY_COMPUTE_APOSTERIORI"
ENV_APPLY_APRIORI = "ASTROMETRY_APPLY_APRIORI"
ENV_STEP_CONTROL = "ASTROMETRY_STEP_CONTROL"  # deprecated alias of ASTROMETRY_APPLY_APRIORI
