"""Final stage: choose the WCS, drizzle DRZ/DRC, promote into the run directory, clean up."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import warnings

from astropy.io import fits

from ..errors import ProcessingError
from ..model import STAGES, StepResult, manifest_name, original_name, partial_name, promoted_name
from ..statemachine import choose_final_wcs, stage_files
from ..statemachine.state import DECISION
from .common import StepContext, captured_output, copy_file, hashes, sha256
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
    """Write each exposure's chosen WCS as a headerlet file (``Exposure.headerlet``; not with ``-b``)."""
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


# Room kept free beyond the promoted files themselves: file-system blocks and the trailer.
PROMOTE_MARGIN = 1 << 20


def _promoted_files(ctx: StepContext) -> list[str]:
    """What the final stage hands back: products, updated exposures, headerlets."""
    products = [p["product"] for p in ctx.run.output("final", "astrodrizzle")["products"]]
    headerlets = list(ctx.run.output("final", "write_headerlets").get("headerlets", {}))
    return products + ctx.inputs.exposures.names + headerlets


def promote(ctx: StepContext) -> StepResult:
    """Write every result beside its target in the input directory, not yet replacing anything.

    The whole set must fit on the input's file system at once: checked before anything is written,
    and a failure part-way removes what was written, so the inputs stay as they were.

    Raises
    ------
    ProcessingError
        When the set does not fit.
    """
    d = ctx.stage_dir()
    names = _promoted_files(ctx)
    needed = sum((d / n).stat().st_size for n in names)
    free = shutil.disk_usage(ctx.input_dir).free
    if needed + PROMOTE_MARGIN > free:
        raise ProcessingError(f"{ctx.input_dir}: no room to promote {len(names)} files ({needed / 1e6:.1f} MB "
                              f"needed, {free / 1e6:.1f} MB free); nothing was replaced", str(ctx.input_dir))
    ctx.progress(f"promoting {len(names)} files ({needed / 1e6:.1f} MB) into {ctx.input_dir}")
    written = []
    try:
        for n in names:
            written.append(ctx.input_dir / promoted_name(n))
            copy_file(d / n, written[-1])
            ctx.progress(f"wrote {written[-1].name}", point="promoted")
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    originals = {n: sha256(ctx.input_dir / n) for n in names if (ctx.input_dir / n).exists()}
    return StepResult({"files": hashes(ctx.input_dir, [promoted_name(n) for n in names]), "targets": names,
                       "originals": originals})


def replace(ctx: StepContext) -> StepResult:
    """Rename every promoted file over its target; the originals are kept until the set is in place.

    Redone after a crash, it completes what an interrupted attempt began (a file already renamed has
    no promoted copy left). An error part-way puts every original back.
    """
    promoted = ctx.run.output("final", "promote")
    targets = promoted["targets"]
    folder = ctx.input_dir
    done = []
    try:
        for n in targets:
            new, target, original = folder / promoted_name(n), folder / n, folder / original_name(n)
            if not new.exists():
                continue  # renamed by an attempt that was interrupted
            if target.exists() and not original.exists():
                os.link(target, original)
            os.replace(new, target)
            done.append(n)
            ctx.progress(f"replaced {n}", point="replaced")
    except OSError:
        for n in reversed(done):
            original, target = folder / original_name(n), folder / n
            with contextlib.suppress(OSError):
                if original.exists():
                    os.replace(original, target)
                else:
                    target.unlink()  # a new file: there was no original
        for n in targets:
            with contextlib.suppress(OSError):
                (folder / promoted_name(n)).unlink()
        raise
    for n in targets:
        with contextlib.suppress(FileNotFoundError):
            (folder / original_name(n)).unlink()
    products = [p["product"] for p in ctx.run.output("final", "astrodrizzle")["products"]]
    return StepResult({"files": hashes(folder, targets), "replaced": promoted["originals"], "products": products,
                       "headerlets": list(ctx.run.output("final", "write_headerlets").get("headerlets", {}))})


def write_manifest(ctx: StepContext) -> StepResult:
    """``<root>_manifest.txt`` (``-m``): products, exposures, headerlets and the trailer, one per line."""
    replaced = ctx.run.output("final", "replace")
    names = replaced["products"] + ctx.inputs.exposures.names + replaced["headerlets"] + [ctx.inputs.trailer]
    path = ctx.input_dir / manifest_name(ctx.root)
    partial = path.with_name(partial_name(path.name))
    partial.write_text("".join(f"{n}\n" for n in names))
    os.replace(partial, path)
    return StepResult({"manifest": path.name, "listed": names, "files": hashes(ctx.input_dir, [path.name])})


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
