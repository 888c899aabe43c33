"""Run configuration: command-line options and runastrodriz's environment variables.

The configuration is resolved once, before the run starts, and recorded in the
``run.started`` event; nothing downstream reads the environment again.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError, InputError
from .model import split_input_name
from .model.options import PRODUCT_SETTINGS, RunConfig
from .model.switches import (
    ENV_APPLY_APRIORI,
    ENV_COMPUTE_APOSTERIORI,
    ENV_QUALITY_TESTING,
    ENV_RESET_IDCTAB,
    ENV_STEP_CONTROL,
)

SERVICE_VARIABLES = ("ASTROMETRY_SERVICE_URL", "GSSS_WEBSERVICES_URL", "ASTROMETRIC_CATALOG_URL")
# Seconds each request to a service may take (connecting, and each read), before its one retry.
SERVICE_TIMEOUT_VARIABLE = "ASTRODRIZ_SM_SERVICE_TIMEOUT"
DEFAULT_SERVICE_TIMEOUT = 30.0
# What a resume takes from its own environment when it differs from the recorded one.
SERVICE_SETTINGS = (*SERVICE_VARIABLES, SERVICE_TIMEOUT_VARIABLE)
# Seconds a run's lease stays valid after its holder's last heartbeat; another host may take it then.
LEASE_EXPIRY_VARIABLE = "ASTRODRIZ_SM_LEASE_EXPIRY"
# Reference-file directories: stwcs joins them to file names as strings, so they end with '/'.
REFERENCE_VARIABLES = ("jref", "iref", "uref")
# Variables whose values go into the run-started event (what a reader needs to reproduce a run).
# CRDS's own variables: WFPC2 inputs get their best references from the cache they name.
CRDS_VARIABLES = ("CRDS_PATH", "CRDS_SERVER_URL", "CRDS_OBSERVATORY", "CRDS_READONLY_CACHE", "CRDS_CONTEXT",
                  "CRDS_MODE")
RECORDED_VARIABLES = (ENV_COMPUTE_APOSTERIORI, ENV_APPLY_APRIORI, ENV_STEP_CONTROL, ENV_RESET_IDCTAB,
                      ENV_QUALITY_TESTING, *REFERENCE_VARIABLES, *SERVICE_SETTINGS, *CRDS_VARIABLES)

_ON = {"on", "yes", "true"}
_OFF = {"off", "no", "false"}


def parse_switch(name: str, value: str | None, default: bool = True) -> bool:
    """Interpret an on/off environment variable as runastrodriz does.

    Parameters
    ----------
    name : str
        Variable name, for the error message.
    value : str or None
        Its value; None when unset.
    default : bool
        Value when unset.

    Returns
    -------
    bool

    Raises
    ------
    ConfigError
        When the value is neither on/yes/true nor off/no/false.
    """
    if value is None:
        return default
    v = value.strip().lower()
    if v in _ON:
        return True
    if v in _OFF:
        return False
    raise ConfigError(f"{name}={value!r}: expected one of on/yes/true or off/no/false")


def product_differences(recorded: dict, planned: RunConfig) -> list[str]:
    """The settings in which a recorded run configuration and a planned one would give other products.

    Parameters
    ----------
    recorded : dict
        The ``config`` of a ``run.started`` event.
    planned : RunConfig

    Returns
    -------
    list of str
        ``name: recorded -> planned`` for each option that changes products (not the cores, the
        working directory, the service URLs or the notes) and each reference
        directory that differs; empty when the products would be the same.
    """
    wanted = planned.as_dict()
    out = [f"{k}: {recorded.get(k)!r} -> {wanted[k]!r}" for k in PRODUCT_SETTINGS if recorded.get(k) != wanted[k]]
    then, now = recorded.get("environment", {}), planned.environment
    out += [f"{k}: {then.get(k)!r} -> {now.get(k)!r}" for k in REFERENCE_VARIABLES if then.get(k) != now.get(k)]
    return out


def switches_from_environment(environ: dict | None = None, align_to_gaia: bool = True) -> tuple[bool, bool, list[str]]:
    """Read the a priori / a posteriori switches.

    Parameters
    ----------
    environ : dict, optional
        Defaults to ``os.environ``.
    align_to_gaia : bool
        False for runastrodriz's ``-g``: the a posteriori default, which the variable overrides.

    Returns
    -------
    apply_apriori, compute_aposteriori : bool
    notes : list of str
        Remarks worth recording (use of the deprecated variable).
    """
    env = os.environ if environ is None else environ
    notes = []
    compute = parse_switch(ENV_COMPUTE_APOSTERIORI, env.get(ENV_COMPUTE_APOSTERIORI), default=align_to_gaia)
    if not align_to_gaia and env.get(ENV_COMPUTE_APOSTERIORI) is not None:
        notes.append(f"-g overridden: {ENV_COMPUTE_APOSTERIORI}={env[ENV_COMPUTE_APOSTERIORI]}")
    apply_apriori = parse_switch(ENV_APPLY_APRIORI, env.get(ENV_APPLY_APRIORI))
    step_control = env.get(ENV_STEP_CONTROL)
    if step_control is not None:
        # runastrodriz 3.11 does not read it: stwcs's AstrometryDB does, inside updatewcs(use_db=True), and
        # takes on or off only (anything else raises there, part-way through the run).
        if step_control.strip().lower() not in ("on", "off"):
            raise ConfigError(f"{ENV_STEP_CONTROL}={step_control!r}: stwcs accepts on or off only")
        if step_control.strip().lower() == "off":
            notes.append(f"{ENV_STEP_CONTROL}=off: the a priori stage runs, and stwcs applies no astrometry "
                         "database solution")
    return apply_apriori, compute, notes


def pipeline_switches_from_environment(environ: dict | None = None) -> tuple[bool, bool]:
    """Read runastrodriz's two processing switches, both off unless set.

    Parameters
    ----------
    environ : dict, optional
        Defaults to ``os.environ``.

    Returns
    -------
    reset_idctab : bool
        ``PIPELINE_RESET_IDCTAB``: reset IDCTAB in the FLT/FLC files to the RAW file's.
    quality_testing : bool
        ``PIPELINE_QUALITY_TESTING``: run drizzlepac's quality analysis on the final exposures.

    Raises
    ------
    ConfigError
        When a value is neither on/yes/true nor off/no/false.
    """
    env = os.environ if environ is None else environ
    return (parse_switch(ENV_RESET_IDCTAB, env.get(ENV_RESET_IDCTAB), default=False),
            parse_switch(ENV_QUALITY_TESTING, env.get(ENV_QUALITY_TESTING), default=False))


def recorded_environment(environ: dict | None = None) -> dict:
    """The subset of the environment that is recorded with the run.

    Reference-file directories get their trailing ``/`` (``jref=/crds/acs`` works as ``/crds/acs/``).

    Raises
    ------
    ConfigError
        When the service timeout is not a positive number of seconds.
    """
    env = os.environ if environ is None else environ
    out = {k: env[k] for k in RECORDED_VARIABLES if k in env}
    for k in REFERENCE_VARIABLES:
        if out.get(k) and not out[k].endswith("/"):
            out[k] += "/"
    if SERVICE_TIMEOUT_VARIABLE in out:
        try:
            ok = float(out[SERVICE_TIMEOUT_VARIABLE]) > 0
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(f"{SERVICE_TIMEOUT_VARIABLE}={out[SERVICE_TIMEOUT_VARIABLE]!r}: expected a positive "
                              "number of seconds")
    return out


def lease_expiry_from_environment(environ: dict | None, default: float) -> float:
    """Seconds a run's lease stays valid after a heartbeat: ``ASTRODRIZ_SM_LEASE_EXPIRY``, else ``default``.

    Raises
    ------
    ConfigError
        When the value is not a positive number of seconds.
    """
    env = os.environ if environ is None else environ
    text = env.get(LEASE_EXPIRY_VARIABLE)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ConfigError(f"{LEASE_EXPIRY_VARIABLE}={text!r}: expected a positive number of seconds")
    return value


def input_kind(path: Path) -> tuple[str, str]:
    """Classify the input file by its suffix.

    Returns
    -------
    kind : str
        ``'asn'``, ``'raw'``, ``'flt'`` or ``'flc'``.
    root : str
        The rootname that names the trailer: ``<root>.tra``.

    Raises
    ------
    InputError
        For any other file name.
    """
    parsed = split_input_name(path.name)
    if parsed is not None:
        return parsed
    raise InputError(f"{path}: expected an _asn, _raw, _flt or _flc FITS file (WFPC2: _c0m or _d0m)", str(path))


def require_input(path: Path) -> None:
    """Refuse an input file that is not there.

    ``start`` asks before it opens its store, so that a start on nothing leaves no store, trailer or
    directory behind; ``init/resolve_inputs`` asks again, as a resume may find the file gone.

    Raises
    ------
    InputError
        ``<path>: file not found``.
    """
    if not path.exists():
        raise InputError(f"{path}: file not found", str(path))


# What the stsci libraries cannot take in the path of a file they work on. drizzlepac makes names absolute and
# cuts them at '[', the start of a FITS extension ('/data [1]/j_flt.fits' is read as '/data '). Every other
# character tried works: the reference directories, where stsci.tools also reads '(name)' and 'name$' as
# variables and strips blanks, are shown to the libraries under a plain name (runner.plain_reference_directories).
LIBRARY_REFUSED_CHARACTERS = "["


def require_library_path(path: Path) -> None:
    """Refuse a path the libraries would misread, before anything is written.

    Raises
    ------
    InputError
        ``<path>: '[' in the path ...``, naming each character found.
    """
    found = sorted({c for c in str(path) if c in LIBRARY_REFUSED_CHARACTERS})
    if found:
        raise InputError(f"{path}: {', '.join(repr(c) for c in found)} in the path: drizzlepac reads '[' as the start "
                         "of a FITS extension; use a directory without it", str(path))
