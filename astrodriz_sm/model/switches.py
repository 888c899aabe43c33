"""The names of runastrodriz's environment switches (read in :mod:`astrodriz_sm.config`)."""

ENV_COMPUTE_APOSTERIORI = "ASTROMETRY_COMPUTE_APOSTERIORI"
ENV_APPLY_APRIORI = "ASTROMETRY_APPLY_APRIORI"
ENV_STEP_CONTROL = "ASTROMETRY_STEP_CONTROL"  # read by stwcs (on/off): its astrometry database step
# Reset IDCTAB in the FLT/FLC files to the RAW file's before processing (default off).
ENV_RESET_IDCTAB = "PIPELINE_RESET_IDCTAB"
# Run drizzlepac's quality analysis on the final exposures (default off).
ENV_QUALITY_TESTING = "PIPELINE_QUALITY_TESTING"
