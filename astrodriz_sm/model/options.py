"""The run options: one table from which the command line, the API's checks, a campaign's start
arguments, the trailer's lines and the steps' fingerprint all come.

Each row is one :class:`RunConfig` field chosen by the caller or by the run's
environment, in RunConfig's order (the order the trailer lists them in).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

#: Source positions the a posteriori fit can use: drizzlepac 3.11's, or PSF-fitted ones.
CENTROID_METHODS = ("drizzlepac", "psf")


@dataclass(frozen=True)
class Option:
    """One run option.

    Attributes
    ----------
    name : str
        The RunConfig field and the API keyword.
    flags : tuple of str
        Its ``start`` (and ``batch``) flags; empty for a setting read from the environment only.
    help : str
        The command line's help text.
    default : object
        The API's and ``start``'s default.
    type : type
        ``bool``, ``int`` or ``str``; an ``int`` option may also be None (unset).
    changes_products : bool
        Two runs of one input that differ in it may give other products: it is in every step's
        fingerprint, and a campaign runs an association again when it differs.
    inverted : bool
        The flag sets the option False (``-g`` is ``align_to_gaia=False``).
    choices : tuple of str
        The values a ``str`` option takes.
    minimum : int or None
        The smallest value of an ``int`` option.
    environment : str or None
        The variable that sets an option without a flag.
    """

    name: str
    flags: tuple[str, ...]
    help: str
    default: object
    type: type
    changes_products: bool
    inverted: bool = False
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    environment: str | None = None

    def check(self, value) -> str | None:
        """Why ``value`` is not a value of this option, or None when it is."""
        if self.type is bool:
            return None if isinstance(value, bool) else f"{self.name} must be True or False, not {value!r}"
        if self.type is int:
            if value is None and self.default is None:
                return None
            if not isinstance(value, int) or isinstance(value, bool) or (
                    self.minimum is not None and value < self.minimum):
                return f"{self.name} must be at least {self.minimum}, not {value}"
            return None
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}, not {value!r}"
        return None

    def arguments(self, value) -> list[str]:
        """The command-line form of ``value``: empty for the default, which the command line supplies."""
        if not self.flags or value == self.default:
            return []
        return [self.flags[0]] if self.type is bool else [self.flags[0], str(value)]


OPTIONS = (
    Option("force", ("-f", "--force"), "process even when DRIZCORR is OMIT", False, bool, True),
    Option("inmemory", ("-i", "--inmemory"), "final AstroDrizzle keeps intermediates in memory", False, bool, True),
    Option("basic", ("-b", "--basic"), "basic mode: write no headerlets", False, bool, True),
    # AstroDrizzle's products do not depend on how many processes drizzle them.
    Option("num_cores", ("-n", "--num-cores"), "cores for AstroDrizzle", None, int, False, minimum=1),
    Option("debug", ("-d", "--debug"),
           "keep the stage directories and write each verified product's focus JSON", False, bool, True),
    Option("align_to_gaia", ("-g", "--no-gaia"),
           "no a posteriori alignment to GAIA (ASTROMETRY_COMPUTE_APOSTERIORI overrides it)", True, bool, True,
           inverted=True),
    Option("manifest", ("-m", "--manifest"),
           "write <root>_manifest.txt: the products, exposures, headerlets, the fit's matched pairs, the "
           "quality analysis's JSON files and trailer handed back", False, bool, True),
    Option("force_alignment", ("-a", "--force-alignment"), "align even when -v finds bad guiding", False, bool, True),
    # runastrodriz 3.11 declares -v as taking a value (getopt 'v:'), which swallows the next argument;
    # it is a plain switch here.
    Option("verify_guiding", ("-v", "--verify-guiding"),
           "check each exposure's guiding; one with bad guiding is not processed (unless -f) and turns "
           "alignment off (unless -a)", False, bool, True),
    Option("apply_apriori", (), "apply the astrometry database's a priori solutions", True, bool, True,
           environment="ASTROMETRY_APPLY_APRIORI"),
    Option("compute_aposteriori", (), "compute the a posteriori alignment", True, bool, True,
           environment="ASTROMETRY_COMPUTE_APOSTERIORI"),
    Option("reset_idctab", (), "reset IDCTAB in the FLT/FLC files to the RAW file's", False, bool, True,
           environment="PIPELINE_RESET_IDCTAB"),
    Option("quality_testing", (), "run drizzlepac's quality analysis on the final exposures", False, bool, True,
           environment="PIPELINE_QUALITY_TESTING"),
    Option("centroids", ("--centroids",),
           "source positions of the a posteriori fit: drizzlepac's (default), or PSF-fitted ones, unbiased on "
           "undersampled PSFs (WFC3/IR)", CENTROID_METHODS[0], str, True, choices=CENTROID_METHODS),
)

OPTION = {o.name: o for o in OPTIONS}
#: The options a caller chooses (``start``'s flags, the API's keywords); the others come from the environment.
CHOSEN = tuple(o for o in OPTIONS if o.flags)
#: What makes two runs of one input give the same products, and what every step's fingerprint holds.
PRODUCT_SETTINGS = tuple(o.name for o in OPTIONS if o.changes_products)
#: The configuration lines of the trailer's run-started entry: where the run works, then every option.
TRAILER_KEYS = ("run_dir", "newpath", *(o.name for o in OPTIONS))


def chosen_options(given: dict) -> dict:
    """Every chosen option, ``given``'s value or the default, after checking each.

    Parameters
    ----------
    given : dict
        Option name to value; names of :data:`CHOSEN` only.

    Returns
    -------
    dict
        Name to value for every option of :data:`CHOSEN`.

    Raises
    ------
    TypeError
        A name that is not a chosen option (as Python says of an unknown keyword).
    ValueError
        A value the option does not take, naming both.
    """
    unknown = sorted(set(given) - {o.name for o in CHOSEN})
    if unknown:
        raise TypeError(f"unknown run option{'s' * (len(unknown) > 1)}: {', '.join(unknown)}")
    out = {o.name: given.get(o.name, o.default) for o in CHOSEN}
    for o in CHOSEN:
        if (problem := o.check(out[o.name])) is not None:
            raise ValueError(problem)
    return out


def start_arguments(options: dict) -> tuple[str, ...]:
    """``start``'s command-line arguments for these options (those at their default are left out)."""
    return tuple(a for o in CHOSEN for a in o.arguments(options.get(o.name, o.default)))


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what a run does, captured once at its start.

    Its option fields are the rows of :data:`astrodriz_sm.model.options.OPTIONS`, in that order.
    """

    # Always recorded by a run; empty only in a state folded from no run.started.
    input: str = ""
    run_dir: str = ""
    newpath: str | None = None
    force: bool = False
    inmemory: bool = False
    basic: bool = False
    num_cores: int | None = None
    debug: bool = False
    align_to_gaia: bool = True
    manifest: bool = False
    force_alignment: bool = False
    verify_guiding: bool = False
    apply_apriori: bool = True
    compute_aposteriori: bool = True
    reset_idctab: bool = False
    quality_testing: bool = False
    centroids: str = "drizzlepac"
    environment: dict = field(default_factory=dict)
    notes: tuple = ()

    def as_dict(self) -> dict:
        """Plain-JSON form for the run-started event."""
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Rebuild from the run-started event payload."""
        names = {f.name for f in fields(cls)}
        # The run-started event also holds the rootname, which is the run's, not the configuration's.
        d = {k: v for k, v in d.items() if k in names}
        d["notes"] = tuple(d.get("notes", ()))
        return cls(**d)
