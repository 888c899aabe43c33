"""Per-detector parameters: one table, as runastrodriz's ``focus_pars`` and its reference variables."""

from __future__ import annotations

from dataclasses import dataclass


# verify_alignment's default good_bits, which runastrodriz 3.11's default stage drizzles with.
DEFAULT_STAGE_GOOD_BITS = 512


@dataclass(frozen=True)
class DetectorParameters:
    """What the pipeline sets per instrument and detector.

    Attributes
    ----------
    instrument, detector : str
    focus_sigma : float
        Sigma of the Laplacian-of-Gaussian kernel of the focus index.
    good_bits : int
        DQ bits treated as good when drizzling without cosmic-ray identification.
    reference_variable : str
        The environment variable of ``<var>$name`` reference files (``jref``, ``iref``, ``uref``).
    good_pixels_keyword : str
        SCI keyword counting the good pixels (runastrodriz: WFPC2's GPIXELS, else NGOODPIX).
    raw_kind : str
        Suffix of the raw file DRIZCORR is read from (WFPC2: ``d0m``).
    """

    instrument: str
    detector: str
    focus_sigma: float
    good_bits: int
    reference_variable: str
    good_pixels_keyword: str = "NGOODPIX"
    raw_kind: str = "raw"

    def verification_good_bits(self, stage: str) -> int:
        """DQ bits treated as good by a stage's drizzles without cosmic-ray identification.

        runastrodriz 3.11 passes the detector's ``good_bits`` to the alignment stages' verification
        only; the default stage's ``verify_alignment`` call leaves it at its default, 512 (RA 601-606,
        1066), which ``reset_mdriztab_nocr`` then uses for ACS/SBC's single drizzles.
        """
        return DEFAULT_STAGE_GOOD_BITS if stage == "default" else self.good_bits

    @property
    def instdet(self) -> str:
        """``'ACS/WFC'`` and so on."""
        return f"{self.instrument}/{self.detector}"


DETECTORS = {
    (p.instrument, p.detector): p
    for p in (
        DetectorParameters("ACS", "WFC", focus_sigma=1.5, good_bits=1360, reference_variable="jref"),
        DetectorParameters("ACS", "HRC", focus_sigma=1.5, good_bits=1360, reference_variable="jref"),
        DetectorParameters("ACS", "SBC", focus_sigma=2.0, good_bits=0, reference_variable="jref"),
        DetectorParameters("WFC3", "UVIS", focus_sigma=1.5, good_bits=1360, reference_variable="iref"),
        DetectorParameters("WFC3", "IR", focus_sigma=2.0, good_bits=512, reference_variable="iref"),
        # wfpc2Data.wfpc2_to_flt writes DETECTOR='PC' into every converted WFPC2 file.
        DetectorParameters("WFPC2", "PC", focus_sigma=1.5, good_bits=1360, reference_variable="uref",
                           good_pixels_keyword="GPIXELS", raw_kind="d0m"),
    )
}


def detector_parameters(instrument: str, detector: str) -> DetectorParameters:
    """The row of :data:`DETECTORS`.

    Raises
    ------
    KeyError
        For a detector the pipeline does not process.
    """
    return DETECTORS[(instrument, detector)]
