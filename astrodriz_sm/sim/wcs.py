"""World coordinate systems of simulated exposures.

The truth of a simulated exposure is the WCS that ``stwcs.updatewcs`` (no
astrometry database) derives from a header carrying the *true* pointing: the
stars are rendered through it, so a pipeline that runs updatewcs on an
unperturbed file recovers exactly the positions the stars were drawn at.

How ``stwcs.updatewcs.makewcs`` rebuilds the basic WCS keywords (measured
with stwcs 1.7.7), and how the simulator uses it:

- Reference chip (CCDCHIP 2 when present, else the first SCI): the CD matrix
  is always recomputed from PA_V3 (rolled to the chip's V2/V3 position) and
  the IDCTAB's linear terms; the header CD is irrelevant then.
- With LTV1/LTV2 set (subarray), CRVAL and CRPIX are kept as they are; if
  CRPIX differs from (XREF, YREF) + LTV the distortion model is re-centred on
  CRPIX, so the sky position attached to the model's reference pixel moves.
- Without LTV (full frame), CRPIX is reset to (XREF, YREF) and CRVAL to the
  header WCS evaluated there (so the header CD matters unless CRPIX is
  already XREF, YREF).
- The other chip of a full-frame exposure gets CRVAL and CD from the
  reference chip through the V2/V3 offset of the two chip models; its own
  header CRVAL/CD are ignored.

The simulator therefore writes CRPIX = (XREF, YREF) + LTV and injects a
pointing error by moving CRVAL: the post-updatewcs WCS of every chip moves
rigidly on the sky by that offset (to better than 0.01 mas at the chip centres).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits

__all__ = [
    "chip_center_offset",
    "jref_environment",
    "offset_radec",
    "pixel_offset_to_arcsec",
    "reference_environment",
    "reference_variables",
    "sci_wcs",
    "updated_copy",
    "updated_wcs",
]


@contextlib.contextmanager
def reference_environment(directory: str | os.PathLike, *variables: str) -> Iterator[None]:
    """Temporarily point reference-file variables (``jref``, ``iref``, ``uref``) at ``directory``.

    stsci.tools expands ``iref$name`` by plain concatenation, so the value
    must end with a path separator.

    Parameters
    ----------
    directory : path-like
    *variables : str
        Variable names; none given: ``jref``.
    """
    variables = variables or ("jref",)
    previous = {var: os.environ.get(var) for var in variables}
    value = str(Path(directory).resolve()) + os.sep
    for var in variables:
        os.environ[var] = value
    try:
        yield
    finally:
        for var, old in previous.items():
            if old is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = old


def jref_environment(directory: str | os.PathLike, variable: str = "jref") -> contextlib.AbstractContextManager:
    """Temporarily point the ``jref`` (or another reference) variable at ``directory``.

    See `reference_environment`.
    """
    return reference_environment(directory, variable)


def reference_variables(path: str | os.PathLike) -> tuple[str, ...]:
    """Variables (``jref``, ``iref``, ...) the reference-file keywords of a file's primary header use."""
    header = fits.getheader(path)
    found = []
    for key in ("IDCTAB", "NPOLFILE", "D2IMFILE", "MDRIZTAB"):
        var, sep, _ = str(header.get(key, "")).partition("$")
        if sep and var not in found:
            found.append(var)
    return tuple(found) or ("jref",)


def offset_radec(ra: float, dec: float, east_arcsec: float, north_arcsec: float) -> tuple[float, float]:
    """Move a sky position by an offset in the tangent plane at that position.

    Parameters
    ----------
    ra, dec : float
        Position (deg).
    east_arcsec, north_arcsec : float
        Offset towards east (increasing RA) and north (arcsec).

    Returns
    -------
    (float, float)
        New (ra, dec) in deg.
    """
    moved = SkyCoord(ra * u.deg, dec * u.deg).spherical_offsets_by(east_arcsec * u.arcsec,
                                                                   north_arcsec * u.arcsec)
    return float(moved.ra.deg), float(moved.dec.deg)


def pixel_offset_to_arcsec(cd: np.ndarray, dx: float, dy: float) -> tuple[float, float]:
    """Sky offset (east, north; arcsec) of a pixel offset through a CD matrix.

    RA increases to the east, so the east component is ``+dRA cos(dec)``,
    which is what the first row of a CD matrix already expresses.
    """
    d_ra, d_dec = np.asarray(cd) @ np.array([dx, dy])
    return float(d_ra * 3600.0), float(d_dec * 3600.0)


def chip_center_offset(truth, other, naxis1: int, naxis2: int) -> tuple[float, float]:
    """Sky offset of ``other`` from ``truth`` at the centre of an image.

    Parameters
    ----------
    truth, other : astropy.wcs.WCS
        WCSs of the same image (with any distortion they carry).
    naxis1, naxis2 : int
        Image size; the centre is pixel ((naxis1 - 1) / 2, (naxis2 - 1) / 2), 0-based.

    Returns
    -------
    (float, float)
        (east, north) arcsec from the position ``truth`` gives the centre
        to the position ``other`` gives it.
    """
    center = [[(naxis1 - 1) / 2.0, (naxis2 - 1) / 2.0]]
    t = SkyCoord(*truth.all_pix2world(center, 0)[0], unit="deg")
    o = SkyCoord(*other.all_pix2world(center, 0)[0], unit="deg")
    east, north = t.spherical_offsets_to(o)
    return float(east.to_value(u.arcsec)), float(north.to_value(u.arcsec))


def updated_copy(path: str | os.PathLike, jref_dir: str | os.PathLike,
                 workdir: str | os.PathLike) -> Path:
    """Copy ``path`` into ``workdir`` and run ``updatewcs(use_db=False)`` on the copy.

    Parameters
    ----------
    path : path-like
        FLT/FLC file with an OPUS-style header; it is not modified.
    jref_dir : path-like
        Directory holding the reference files named in the header.
    workdir : path-like
        Directory for the copy (created if needed).

    Returns
    -------
    Path
        The updated copy, with the pipeline-default WCS (``IDC_<idcroot>``),
        SIP and any NPOL/D2IM extensions.
    """
    from stwcs import updatewcs

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    scratch = workdir / Path(path).name
    shutil.copyfile(path, scratch)
    # updatewcs reports each correction on stdout; keep the caller's output clean.
    with reference_environment(jref_dir, *reference_variables(scratch)), \
            contextlib.redirect_stdout(io.StringIO()):
        updatewcs.updatewcs(str(scratch), use_db=False, checkfiles=False)
    return scratch


def sci_wcs(path: str | os.PathLike) -> list:
    """HSTWCS of every SCI extension of a file, in EXTVER order."""
    from stwcs.wcsutil import HSTWCS

    with fits.open(path) as hdul:
        nsci = sum(1 for hdu in hdul if hdu.header.get("EXTNAME") == "SCI")
        return [HSTWCS(hdul, ext=("SCI", k)) for k in range(1, nsci + 1)]


def updated_wcs(path: str | os.PathLike, jref_dir: str | os.PathLike) -> list:
    """WCS of every SCI extension after ``updatewcs(use_db=False)``, on a scratch copy.

    Parameters
    ----------
    path : path-like
        FLT/FLC file with an OPUS-style header; it is not modified.
    jref_dir : path-like
        Directory holding the reference files named in the header.

    Returns
    -------
    list of stwcs.wcsutil.HSTWCS
        One per SCI extension, in EXTVER order, with SIP, NPOL and D2IM terms.
    """
    with tempfile.TemporaryDirectory(prefix="sim_wcs_") as tmp:
        return sci_wcs(updated_copy(path, jref_dir, tmp))
