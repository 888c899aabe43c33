"""What the init stage learns about a run's input, to and from its event payload."""

from __future__ import annotations

from dataclasses import dataclass, field

from .detectors import DetectorParameters, detector_parameters
from .exposures import Exposure, ExposureSet, Product, trailer_name


@dataclass(frozen=True)
class Inputs:
    """The interpreted input of a run (``init/resolve_inputs``).

    Attributes
    ----------
    root : str
        Rootname of the products and the trailer (the ASN's product row, or the exposure).
    kind : {'asn', 'raw', 'flt', 'flc'}
        What the input file was.
    asn : str or None
        The ASN table's file name.
    members : tuple of str
        Exposure rootnames.
    exposures : ExposureSet
    raw : tuple of str
        RAW file names present.
    drizcorr, drizcorr_file : str
        DRIZCORR and the file it was read from.
    references : dict
        Reference-file keywords as the header names them (``jref$...``).
    reference_paths : dict
        The same, resolved to absolute paths.
    input_hashes : dict
        ``{file: sha256}`` of every input file read.
    notes : tuple of str
    no_alignment : str or None
        Why the exposures cannot be aligned at all: ``-v`` found bad guiding without ``-a``. (Every
        exposure empty turns only the a posteriori stage off: ``ExposureSet.all_empty``.)
    idctab_reset : dict
        ``{file: {'from': IDCTAB, 'to': IDCTAB, 'raw': RAW file}}``: the exposures whose IDCTAB
        differs from their RAW file's, to be reset in the stage copies (``PIPELINE_RESET_IDCTAB``).
    """

    root: str
    kind: str
    exposures: ExposureSet
    asn: str | None = None
    members: tuple[str, ...] = ()
    raw: tuple[str, ...] = ()
    drizcorr: str | None = None
    drizcorr_file: str | None = None
    references: dict = field(default_factory=dict)
    reference_paths: dict = field(default_factory=dict)
    input_hashes: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    no_alignment: str | None = None
    idctab_reset: dict = field(default_factory=dict)

    @property
    def instrument(self) -> str:
        """``INSTRUME`` of the exposures (init refuses a mixture)."""
        return self.exposures.all[0].instrument

    @property
    def detector(self) -> str:
        """``DETECTOR`` of the exposures."""
        return self.exposures.all[0].detector

    @property
    def detector_parameters(self) -> DetectorParameters:
        """This detector's row of the parameter table."""
        return detector_parameters(self.instrument, self.detector)

    @property
    def trailer(self) -> str:
        """``<root>.tra``."""
        return trailer_name(self.root)

    def products(self, stage: str, alignment_follows: bool = False) -> list[Product]:
        """The products ``stage`` drizzles (see :meth:`ExposureSet.drizzled_in`)."""
        return self.exposures.products(self.root, stage, alignment_follows)

    @property
    def updated_lists(self) -> tuple[tuple[Exposure, ...], ...]:
        """The lists runastrodriz 3.11 runs each ``updatewcs`` (and the a priori checks) on, in turn.

        Its FLT list, then its FLC list. For an ASN delivered as FLC files only, the FLC files are
        both: 3.11 builds its FLC list by renaming ``_flt`` to ``_flc`` in its list of calibrated files,
        which already are the FLC files (RA 463-466), so they are updated twice. (A singleton's FLC
        list is built only from a name other than the input's, RA 432-441.)
        """
        ex = self.exposures
        return (ex.flc, ex.flc) if self._flc_lists_doubled else ex.lists

    @property
    def fit_applied_to(self) -> tuple[Exposure, ...]:
        """The files runastrodriz 3.11 gives the a posteriori fit's headerlet after fitting the verified list.

        The FLT files beside FLC files, and the FLC files themselves when they are both of 3.11's lists
        (:attr:`updated_lists`, RA 1136-1137, 1217-1231); none for FLT or FLC files alone otherwise.
        """
        ex = self.exposures
        return ex.flc if self._flc_lists_doubled else ex.unverified

    @property
    def _flc_lists_doubled(self) -> bool:
        return self.kind == "asn" and bool(self.exposures.flc) and not self.exposures.flt

    @property
    def verified_product(self) -> Product:
        """The product each stage verifies."""
        return self.exposures.verified_product(self.root)

    def to_payload(self) -> dict:
        """Plain JSON for the ``step.completed`` event of ``init/resolve_inputs``."""
        ex = self.exposures
        return {
            "root": self.root, "kind": self.kind, "asn": self.asn, "members": list(self.members),
            "flt": [e.name for e in ex.flt], "flc": [e.name for e in ex.flc], "raw": list(self.raw),
            "drizcorr": self.drizcorr, "drizcorr_file": self.drizcorr_file, "trailer": self.trailer,
            "instrument": self.instrument, "detector": self.detector,
            "exptimes": {e.name: e.exptime for e in ex.all}, "empty": {e.name: e.empty for e in ex.all if e.empty},
            "dropped": {e.name: e.dropped for e in ex.all if e.dropped},
            "references": dict(self.references), "reference_paths": dict(self.reference_paths),
            "input_hashes": dict(self.input_hashes), "notes": list(self.notes), "no_alignment": self.no_alignment,
            "idctab_reset": dict(self.idctab_reset),
        }

    @classmethod
    def from_payload(cls, p: dict) -> Inputs:
        """Rebuild from :meth:`to_payload`'s form."""
        def dropped(name):
            # Logs written before "dropped" was recorded knew only AstroDrizzle's EXPTIME rule.
            if "dropped" in p:
                return p["dropped"].get(name)
            return f"EXPTIME={float(p['exptimes'][name]):g}" if float(p["exptimes"][name]) <= 0 else None

        def exposures(names):
            return tuple(Exposure.from_name(n, instrument=p["instrument"], detector=p["detector"],
                                            exptime=float(p["exptimes"][n]), empty=p.get("empty", {}).get(n),
                                            dropped=dropped(n))
                         for n in names)

        return cls(root=p["root"], kind=p["kind"], asn=p.get("asn"), members=tuple(p.get("members", ())),
                   exposures=ExposureSet(exposures(p["flt"]), exposures(p["flc"])), raw=tuple(p.get("raw", ())),
                   drizcorr=p.get("drizcorr"), drizcorr_file=p.get("drizcorr_file"),
                   references=dict(p.get("references", {})), reference_paths=dict(p.get("reference_paths", {})),
                   input_hashes=dict(p.get("input_hashes", {})), notes=tuple(p.get("notes", ())),
                   no_alignment=p.get("no_alignment"), idctab_reset=dict(p.get("idctab_reset", {})))
