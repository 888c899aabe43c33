"""Where a run reads and writes: every path of a run, from its rootname, its input and NEWPATH.

The runner, the handlers, the API, the views and the campaign ask a :class:`RunLayout`; none of
them joins a run's paths itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .exposures import manifest_name, qa_json_name, report_name, trailer_name
from .steps import STAGES

#: The event store ``start`` makes beside its input, and the other commands look for in the current directory.
STORE_NAME = "astrodriz_sm.db"


def store_path(directory: Path) -> Path:
    """``<directory>/astrodriz_sm.db``."""
    return Path(directory) / STORE_NAME


@dataclass(frozen=True)
class RunLayout:
    """Every path of one run.

    Attributes
    ----------
    root : str
        The association's (or exposure's) rootname.
    input : Path
        The resolved input file; the results are handed back beside it.
    newpath : Path or None
        runastrodriz's NEWPATH: the stages work in ``NEWPATH/<root>`` instead of beside the input.
    """

    root: str
    input: Path
    newpath: Path | None = None

    @classmethod
    def of(cls, config: Mapping, root: str) -> RunLayout:
        """The layout of a run from the ``config`` of its ``run.started`` event (or a store's run row)."""
        newpath = config.get("newpath")
        return cls(root, Path(config["input"]), Path(newpath) if newpath else None)

    @property
    def input_dir(self) -> Path:
        """The input's directory: what the run hands back goes here, and only in the promote step."""
        return self.input.parent

    @property
    def work_dir(self) -> Path:
        """Where the stage directories live: ``NEWPATH/<root>``, else the input's directory."""
        return self.newpath / self.root if self.newpath else self.input_dir

    def stage_dir(self, stage: str) -> Path:
        """``<work_dir>/<root>_<stage>``: where a stage works on its copies."""
        return self.work_dir / f"{self.root}_{stage}"

    @property
    def stage_dirs(self) -> tuple[Path, ...]:
        """The directory of every stage after init, in stage order."""
        return tuple(self.stage_dir(s) for s in STAGES[1:])

    @property
    def trailer(self) -> Path:
        """``<root>.tra`` beside the input."""
        return self.input_dir / trailer_name(self.root)

    @property
    def manifest(self) -> Path:
        """``<root>_manifest.txt`` beside the input (``-m``)."""
        return self.input_dir / manifest_name(self.root)

    def report(self, directory: Path | None = None) -> Path:
        """``<root>_report.html`` in ``directory``, by default beside the input."""
        return Path(directory or self.input_dir) / report_name(self.root)

    def qa_json(self, directory: Path | None = None) -> Path:
        """``<root>_qa.json`` in ``directory``, by default beside the input."""
        return Path(directory or self.input_dir) / qa_json_name(self.root)

    @property
    def store(self) -> Path:
        """The event store ``start`` makes beside the input."""
        return store_path(self.input_dir)

    def handed_back(self, products: Iterable[str], exposures: Iterable[str], headerlets: Iterable[str],
                    fit_matches: Iterable[str], quality: Iterable[str]) -> tuple[str, ...]:
        """The names of what a run hands back beside its input, in the manifest's order.

        The final stage promotes all but the last, the trailer, which the runner writes as the run goes.

        Parameters
        ----------
        products : the drizzled products
        exposures : the updated exposures
        headerlets : the headerlet files
        fit_matches : the matched pairs of the chosen a posteriori fit
        quality : the JSON files of drizzlepac's quality analysis (``PIPELINE_QUALITY_TESTING``); runastrodriz
            3.11 writes them beside the input too, but after its manifest, which therefore misses them

        Returns
        -------
        tuple of str
        """
        return (*products, *exposures, *headerlets, *fit_matches, *quality, self.trailer.name)
