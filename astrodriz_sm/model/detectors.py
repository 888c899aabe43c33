"""Per-detector parameters: one table, as runastrodriz's ``focus_pars`` and its reference variables."""

from __future__ import annotations

from dataclasses import dataclass


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
        The environment variable of ``<var>$name`` reference files (``jref``, ``iref``).
    """

    instrument: str
    detector: str
    focus_sigma: float
    good_bits: int
    reference_variable: str

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
