"""The stage copies: each stage works on copies in ``<root>_<stage>/``.

The inputs in the run directory are touched only by the final stage's promote step.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from astropy.io import fits

from ..errors import ProcessingError
from ..model import StepResult
from ..model.events import NOTE
from ..plumbing import captured_output, copy_file, hashes, working_directory
from .common import StepContext

# The DQ bits of cosmic rays runastrodriz clears before identifying them again.
CR_DQ_BITS = "4096,8192"


def copy_into_stage(ctx: StepContext, source_dir: Path, expected: dict | None = None) -> dict:
    """Fresh copies of the calibrated exposures in this stage's directory.

    The directory is emptied first: a step redone after a crash starts from clean copies.

    Parameters
    ----------
    ctx : StepContext
    source_dir : Path
    expected : dict, optional
        ``{file: sha256}`` the source files must have (what their stage recorded).

    Raises
    ------
    ProcessingError
        When a source file no longer has the recorded content.
    """
    dest = ctx.stage_dir()
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    names = ctx.inputs.exposures.names
    for n in names:
        copy_file(source_dir / n, dest / n)
    copied = hashes(dest, names)
    for n, digest in copied.items():
        if expected and n in expected and expected[n] != digest:
            raise ProcessingError(f"{source_dir / n}: changed since its stage recorded it "
                                  f"(sha256 {digest[:12]} != {expected[n][:12]}); start a new run", str(source_dir / n))
    return {"directory": dest.name, "source": str(source_dir), "files": copied}


def stage_inputs(ctx: StepContext) -> StepResult:
    """Copy the exposures from the run directory into ``<root>_default/``.

    With ``PIPELINE_RESET_IDCTAB`` the copies whose IDCTAB differs from their RAW file's (as init
    found them) get the RAW file's IDCTAB, so that ``updatewcs`` builds the pipeline-default WCS
    from it; the inputs themselves change only when the final stage hands the results back.

    Returns
    -------
    StepResult
        The copies and their hashes; ``idctab_reset`` (``{file: {'from', 'to', 'raw'}}``) and a
        ``note`` per file reset.
    """
    from drizzlepac import resetbits

    staged = copy_into_stage(ctx, ctx.input_dir, ctx.inputs.input_hashes)
    names = ctx.inputs.exposures.names
    d = ctx.stage_dir()
    if ctx.decisions["alignment_follows"]["follows"]:
        # runastrodriz 3.11 verifies the default products when an alignment stage follows, on the
        # cosmic-ray path: the verified list's cosmic-ray flags (4096, 8192) are cleared first, in
        # the files it hands back (verify_alignment's find_crs=True).
        cleared = [e.name for e in ctx.inputs.exposures.verified]
        # Names relative to the stage directory: drizzlepac's file-name parsing would misread a
        # directory such as 'data (copy)' in an absolute one.
        with captured_output(), working_directory(d):
            for name in cleared:
                resetbits.reset_dq_bits(name, CR_DQ_BITS)
        staged.update(files=hashes(d, names), dq_bits_reset={"bits": CR_DQ_BITS, "files": cleared})
    resets = {n: change for n, change in ctx.inputs.idctab_reset.items() if n in names}
    if not resets:
        return StepResult(staged)
    for name, change in resets.items():
        with fits.open(d / name, mode="update") as hdul:
            hdul[0].header["IDCTAB"] = change["to"]
    staged.update(files=hashes(d, names), idctab_reset=resets)
    return StepResult(staged, facts=[
        (NOTE, {"message": f"PIPELINE_RESET_IDCTAB: IDCTAB of {name} reset from {change['from']} to {change['to']} "
                           f"(that of {change['raw']})"}) for name, change in resets.items()])
