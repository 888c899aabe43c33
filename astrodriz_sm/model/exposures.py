"""Exposures, the lists a run drizzles, and the products made from them.

Every file name of a run is made here: calibrated exposures (``_flt``, ``_flc``), RAW files,
single-drizzle images, products (``_drz``, ``_drc``), AstroDrizzle runfiles, headerlets, the
trailer, the fit's matched pairs and the report; the paths a run gives them are :mod:`.layout`'s.
Other modules ask; none of them builds a name.
"""

from __future__ import annotations

from dataclasses import dataclass

FLT, FLC = "flt", "flc"
CALIBRATED_KINDS = (FLT, FLC)
# runastrodriz's inputs, by the suffix of their file name (WFPC2: the calibrated _c0m and the raw _d0m).
INPUT_KINDS = ("asn", "raw", FLT, FLC, "c0m", "d0m")
# The product each calibrated kind drizzles into.
PRODUCT_SUFFIX = {FLT: "drz", FLC: "drc"}
WFPC2_PRODUCT_SUFFIX = "drw"


def input_name(root: str, kind: str) -> str:
    """``<root>_<kind>.fits``: an ASN table, a RAW file or a calibrated exposure."""
    return f"{root}_{kind}.fits"


def split_input_name(name: str) -> tuple[str, str] | None:
    """``(kind, root)`` of a runastrodriz input file name, or None for any other name."""
    lower = name.lower()
    for kind in INPUT_KINDS:
        suffix = f"_{kind}.fits"
        if lower.endswith(suffix):
            return kind, lower[: -len(suffix)]
    return None


def trailer_name(root: str) -> str:
    """``<root>.tra``."""
    return f"{root}.tra"


def manifest_name(root: str) -> str:
    """``<root>_manifest.txt``: runastrodriz's ``-m`` list of the files handed back."""
    return f"{root}_manifest.txt"


def fit_matches_name(root: str) -> str:
    """``<root>_fit_matches.ecsv``: the matched source pairs of the chosen a posteriori fit."""
    return f"{root}_fit_matches.ecsv"


def report_name(root: str) -> str:
    """``<root>_report.html``: the run's report page."""
    return f"{root}_report.html"


def campaign_report_name(ledger_stem: str) -> str:
    """``<ledger stem>_campaign_report.html``: a campaign's report page."""
    return f"{ledger_stem}_campaign_report.html"


def qa_json_name(root: str) -> str:
    """``<root>_qa.json``: the run's quality figures in drizzlepac's ``HapDiagnostic`` layout."""
    return f"{root}_qa.json"


def focus_json_name(product: str, stage: str) -> str:
    """``<product stem>_<mode>_focus.json``: runastrodriz's ``-d`` record of a product's focus.

    The mode is runastrodriz 3.11's name of the stage: ``default-pipeline``, ``apriori``, ``aposteriori``.
    """
    mode = "default-pipeline" if stage == "default" else stage
    return f"{product.removesuffix('.fits')}_{mode}_focus.json"


# Inside the a priori stage's directory: its exposures as the database update left them, before
# any drizzle; a discarded stage restores the pipeline-default WCS in them and hands them on.
UPDATED_COPIES = "updated"


# Suffixes of the hidden files that exist only while a file is being written or replaced.
PARTIAL_SUFFIX, PROMOTED_SUFFIX, ORIGINAL_SUFFIX = ".partial", ".promoted", ".original"
TRANSIENT_SUFFIXES = (PARTIAL_SUFFIX, PROMOTED_SUFFIX, ORIGINAL_SUFFIX)


def partial_name(name: str) -> str:
    """``.<name>.partial``: a file being written, renamed over ``name`` once complete."""
    return f".{name}{PARTIAL_SUFFIX}"


def promoted_name(name: str) -> str:
    """``.<name>.promoted``: a new file written beside its target until the whole set is in place."""
    return f".{name}{PROMOTED_SUFFIX}"


def original_name(name: str) -> str:
    """``.<name>.original``: an input kept (hard-linked) while its replacement is put in place."""
    return f".{name}{ORIGINAL_SUFFIX}"


def headerlet_name(stem: str) -> str:
    """``<stem>_hlet.fits``: stwcs's and the astrometry database's headerlet file name."""
    return f"{stem}_hlet.fits"


@dataclass(frozen=True)
class Exposure:
    """One calibrated exposure file.

    Attributes
    ----------
    rootname : str
        The exposure's rootname (``ipppssoot``), lower case.
    kind : {'flt', 'flc'}
        FLT, or FLC (CTE-corrected).
    instrument, detector : str
        ``INSTRUME`` and ``DETECTOR`` of its primary header.
    exptime : float
        ``EXPTIME``, seconds.
    empty : str, optional
        Why runastrodriz 3.11 counts the exposure as holding no data (EXPTIME 0, or NGOODPIX 0 in
        SCI,1: RA 565-566): it is processed but chooses no drizzle parameters.
    dropped : str, optional
        Why AstroDrizzle leaves it out of its drizzles (``stsci.tools.check_files``: EXPTIME 0, or
        NGOODPIX 0 summed over every SCI extension of an ACS or WFC3 file): it writes no
        single-drizzle image of it.
    """

    rootname: str
    kind: str
    instrument: str = ""
    detector: str = ""
    exptime: float = 0.0
    empty: str | None = None
    dropped: str | None = None

    def __post_init__(self):
        if self.kind not in CALIBRATED_KINDS:
            raise ValueError(f"exposure kind must be one of {CALIBRATED_KINDS}, not {self.kind!r}")

    @classmethod
    def from_name(cls, name: str, **facts) -> Exposure:
        """The exposure of a file name ``<rootname>_flt.fits`` or ``<rootname>_flc.fits``."""
        parsed = split_input_name(name)
        if parsed is None or parsed[0] not in CALIBRATED_KINDS:
            raise ValueError(f"{name!r} is not an _flt or _flc file name")
        return cls(rootname=parsed[1], kind=parsed[0], **facts)

    @property
    def name(self) -> str:
        """The file name, free of any directory."""
        return input_name(self.rootname, self.kind)

    @property
    def single_sci(self) -> str:
        """AstroDrizzle's single-drizzle image of this exposure: ``<rootname>_single_sci.fits``.

        AstroDrizzle names it after the rootname only, so an FLT and an FLC list write the same names.
        """
        return f"{self.rootname}_single_sci.fits"

    @property
    def headerlet(self) -> str:
        """``<rootname>_<kind>_hlet.fits``: the headerlet of an a posteriori fit (drizzlepac's alignment)."""
        return headerlet_name(self.name[: -len(".fits")])

    @property
    def database_headerlet_pattern(self) -> str:
        """``<rootname>_<kind>_??????_hlet.fits``: the headerlets stwcs's ``updatewcs(use_db=True)`` writes.

        stwcs names each new WCS it computes for the astrometry database (the pipeline default it
        archives, a new a priori solution) after the first six hex digits of the WCSNAME's SHA-1.
        """
        return headerlet_name(f"{self.name[: -len('.fits')]}_??????")

    @property
    def alignment_headerlet(self) -> str:
        """``<rootname>_flt_hlet.fits``: the file drizzlepac's alignment writes the a posteriori fit to.

        ``align_utils.update_image_wcs_info`` without ``headerlet_filenames`` (as runastrodriz 3.11
        calls it) names it ``_flt_hlet`` for an FLC and an FLT alike.
        """
        return self.final_headerlet

    @property
    def final_headerlet(self) -> str:
        """``<rootname>_flt_hlet.fits``: the headerlet of the final WCS runastrodriz hands back.

        runastrodriz 3.11 names it ``_flt`` whatever the exposure's kind.
        """
        return headerlet_name(input_name(self.rootname, "flt")[: -len(".fits")])

    @property
    def instdet(self) -> str:
        """``'ACS/WFC'``, ``'WFC3/IR'`` and so on."""
        return f"{self.instrument}/{self.detector}"


@dataclass(frozen=True)
class Product:
    """A drizzled product: the DRZ of the FLT list, or the DRC of the FLC list.

    Attributes
    ----------
    root : str
        The association (or exposure) rootname that names the product.
    exposures : tuple of Exposure
        The exposures drizzled into it, all of one kind.
    """

    root: str
    exposures: tuple[Exposure, ...]

    @property
    def kind(self) -> str:
        """``'flt'`` or ``'flc'``: the kind of the exposures."""
        return self.exposures[0].kind

    @property
    def suffix(self) -> str:
        """``'drz'`` or ``'drc'``; WFPC2's is ``'drw'`` (AstroDrizzle's, so the archive's ``_drz`` stay)."""
        if self.exposures[0].instrument == "WFPC2":
            return WFPC2_PRODUCT_SUFFIX
        return PRODUCT_SUFFIX[self.kind]

    @property
    def name(self) -> str:
        """``<root>_drz.fits``, ``<root>_drc.fits`` or WFPC2's ``<root>_drw.fits``."""
        return f"{self.root}_{self.suffix}.fits"

    @property
    def runfile(self) -> str:
        """AstroDrizzle's runfile (its log is ``<runfile>.log``)."""
        return f"{self.root}_{self.suffix}_astrodrizzle"

    @property
    def inputs(self) -> list[str]:
        """File names of the exposures, in drizzle order."""
        return [e.name for e in self.exposures]

    @property
    def drizzled(self) -> tuple[Exposure, ...]:
        """The exposures AstroDrizzle actually drizzles (see :attr:`Exposure.dropped`)."""
        return tuple(e for e in self.exposures if not e.dropped)

    @property
    def singles(self) -> list[str]:
        """Single-drizzle image names, one per drizzled exposure."""
        return [e.single_sci for e in self.drizzled]

    @property
    def mdriztab_inputs(self) -> list[str]:
        """The exposures that choose the MDRIZTAB row: those not empty, or all when every one is."""
        return [e.name for e in self.exposures if not e.empty] or self.inputs


@dataclass(frozen=True)
class ExposureSet:
    """The FLT and FLC lists of a run and what each stage does with them.

    Attributes
    ----------
    flt, flc : tuple of Exposure
        Either may be empty (an FLC-only delivery has no FLT list), not both.
    """

    flt: tuple[Exposure, ...] = ()
    flc: tuple[Exposure, ...] = ()

    @property
    def lists(self) -> tuple[tuple[Exposure, ...], ...]:
        """The non-empty lists, FLT before FLC: the FLC single-drizzle images are the ones left."""
        return tuple(g for g in (self.flt, self.flc) if g)

    @property
    def all(self) -> tuple[Exposure, ...]:
        """Every calibrated exposure file, FLT before FLC."""
        return self.flt + self.flc

    @property
    def names(self) -> list[str]:
        """File names of :attr:`all`."""
        return [e.name for e in self.all]

    @property
    def verified(self) -> tuple[Exposure, ...]:
        """The list whose product is verified and aligned: the CTE-corrected FLC list when there is one."""
        return self.flc or self.flt

    @property
    def unverified(self) -> tuple[Exposure, ...]:
        """The other list, which takes the verified list's WCS (FLT when FLC exist, else empty)."""
        return self.flt if self.flc else ()

    @property
    def all_empty(self) -> bool:
        """True when every exposure is empty (EXPTIME or NGOODPIX 0): runastrodriz aligns none to GAIA."""
        return all(e.empty for e in self.all)

    @property
    def has_both(self) -> bool:
        """True when there are FLT and FLC files, so the FLT files take the FLC WCS."""
        return bool(self.flt and self.flc)

    def drizzled_in(self, stage: str, alignment_follows: bool = False) -> tuple[tuple[Exposure, ...], ...]:
        """The lists a stage drizzles.

        The final stage drizzles both lists. The default stage drizzles with the final parameters,
        so that the final stage can reuse its products when the pipeline-default WCS is chosen: both
        lists when no alignment stage follows (its products are then the final ones), else only the
        verified list, the one every stage verifies (the other product is drizzled in the final
        stage should the default WCS be chosen after all). The alignment stages drizzle only the
        verified list: their products are never final.
        """
        if stage == "final" or (stage == "default" and not alignment_follows):
            return self.lists
        return (self.verified,)

    def products(self, root: str, stage: str, alignment_follows: bool = False) -> list[Product]:
        """The products a stage writes, FLT (DRZ) before FLC (DRC) (see :meth:`drizzled_in`)."""
        return [Product(root, group) for group in self.drizzled_in(stage, alignment_follows)]

    def verified_product(self, root: str) -> Product:
        """The product every stage verifies."""
        return Product(root, self.verified)
