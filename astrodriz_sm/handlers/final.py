"""Final stage: choose the WCS, drizzle DRZ/DRC, promote into the run directory, clean up."""

from __future__ import annotations

import re
import shutil
import warnings

from astropy.io import fits

from ..model import STAGES, StepResult
from ..statemachine import choose_final_wcs, stage_files
from ..statemachine.state import DECISION
from .common import StepContext, captured_output, copy_atomic, hashes, sha256
from .drizzle import copy_into_stage, run_astrodrizzle

# Keywords that make up the active WCS of a SCI header (linear WCS, SIP, distortion bookkeeping).
_WCS_KEY = re.compile(r"^(WCSNAME|WCSAXES|CRVAL[12]|CRPIX[12]|CD[12]_[12]|CTYPE[12]|CUNIT[12]|ORIENTAT|"
                      r"RA_APER|DEC_APER|PA_APER|IDCSCALE|IDCTHETA|IDCXREF|IDCYREF|IDCV2REF|IDCV3REF|"
                      r"[AB]P?_ORDER|[AB]P?_\d_\d|A_DMAX|B_DMAX|OCX1[01]|OCY1[01]|TDDALPHA|TDDBETA)$")


def choose_wcs(ctx: StepContext) -> StepResult:
    """Record the choice of WCS as one decision (see :func:`statemachine.choose_final_wcs`)."""
    decision = choose_final_wcs(ctx.run)
    return StepResult({"chosen_stage": decision["chosen_stage"], "chosen_wcsname": decision["chosen_wcsname"]},
                      facts=[(DECISION, decision)])


def stage_inputs(ctx: StepContext) -> StepResult:
    """Copy the exposures carrying the chosen WCS into ``<root>_final/``."""
    chosen = ctx.run.output("final", "choose_wcs")["chosen_stage"]
    return StepResult(copy_into_stage(ctx, ctx.stage_dir(chosen), stage_files(ctx.run, chosen)))


def copy_wcs(directory, sources: list[str], targets: list[str]) -> dict:
    """Copy each source exposure's active WCS keywords into the matching target exposure.

    Only keywords whose values differ are written, so a target that already carries the WCS stays
    byte-identical (and the final stage can recognise products it need not drizzle again).
    """
    copied = {}
    for target, source in zip(targets, sources):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(directory / source, memmap=False) as src:
                wanted = {ext.ver: [c for c in ext.header.cards if _WCS_KEY.match(c.keyword)]
                          for ext in src if ext.name == "SCI"}
                names = [str(ext.header.get("WCSNAME", "")) for ext in src if ext.name == "SCI"]
            with fits.open(directory / target, memmap=False) as dst:
                changes = {ver: [c for c in cards if dst[("SCI", ver)].header.get(c.keyword) != c.value]
                           for ver, cards in wanted.items()}
            if any(changes.values()):
                with fits.open(directory / target, mode="update") as dst:
                    for ver, cards in changes.items():
                        for card in cards:
                            dst[("SCI", ver)].header[card.keyword] = (card.value, card.comment)
        copied[target] = {"from": source, "wcsnames": names,
                          "keywords_changed": sum(len(c) for c in changes.values())}
    return copied


def copy_flc_wcs(ctx: StepContext) -> StepResult:
    """Copy each FLC's active WCS into its FLT, so both products share the chosen alignment."""
    d = ctx.stage_dir()
    exposures = ctx.inputs.exposures
    flt = [e.name for e in exposures.flt]
    copied = copy_wcs(d, [e.name for e in exposures.flc], flt)
    return StepResult({"copied": copied, "files": hashes(d, flt)})


def write_headerlets(ctx: StepContext) -> StepResult:
    """Write each exposure's chosen WCS as a headerlet file ``<exposure>_hlet.fits`` (not with ``-b``)."""
    from stwcs.wcsutil import headerlet

    d = ctx.stage_dir()
    written = {}
    with captured_output():
        for exposure in ctx.inputs.exposures.verified:
            name = exposure.name
            wcsname = fits.getval(d / name, "WCSNAME", ext=("SCI", 1))
            # logging=False must be explicit: stwcs's decorator otherwise opens headerlet.log and, with
            # no handler on its logger, fails on an unset variable.
            hlet = headerlet.create_headerlet(str(d / name), hdrname=f"{name.removesuffix('.fits')}_{wcsname}",
                                              wcsname=wcsname, logging=False)
            hlet.writeto(d / exposure.headerlet, overwrite=True)
            written[exposure.headerlet] = wcsname
    return StepResult({"headerlets": written, "files": hashes(d, list(written))})


def astrodrizzle(ctx: StepContext) -> StepResult:
    """The final DRZ (FLT) and DRC (FLC) products, with runastrodriz's final parameters."""
    return run_astrodrizzle(ctx, final=True)


def promote(ctx: StepContext) -> StepResult:
    """Move the verified results into the run directory.

    The only step that writes to the input directory: the updated exposures replace the
    originals and the products appear, each file atomically (copy, then rename).
    """
    d = ctx.stage_dir()
    products = [p["product"] for p in ctx.run.output("final", "astrodrizzle")["products"]]
    headerlets = list(ctx.run.output("final", "write_headerlets").get("headerlets", {}))
    names = products + ctx.inputs.exposures.names + headerlets
    ctx.progress(f"promoting {len(names)} files into {ctx.input_dir}")
    before = {n: sha256(ctx.input_dir / n) for n in names if (ctx.input_dir / n).exists()}
    for n in names:
        copy_atomic(d / n, ctx.input_dir / n)
    return StepResult({"files": hashes(ctx.input_dir, names), "replaced": before, "products": products,
                       "headerlets": headerlets})


def cleanup(ctx: StepContext) -> StepResult:
    """Remove the stage directories (kept with ``--debug``) and a NEWPATH working directory."""
    removed = []
    if ctx.config.get("debug"):
        return StepResult({"removed": removed, "kept": "debug"})
    for stage in STAGES[1:]:
        p = ctx.stage_dir(stage)
        if p.exists():
            shutil.rmtree(p)
            removed.append(p.name)
    if ctx.config.get("newpath") and ctx.work_dir != ctx.input_dir and ctx.work_dir.exists():
        shutil.rmtree(ctx.work_dir)
        removed.append(str(ctx.work_dir))
    return StepResult({"removed": removed})
