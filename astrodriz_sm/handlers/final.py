"""Final stage: choose the WCS, drizzle DRZ/DRC, promote into the run directory, clean up."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
from pathlib import Path

from astropy.io import fits

from ..errors import ProcessingError
from ..model import StepResult, drizzles, original_name, partial_name, promoted_name
from ..model.events import NOTE
from ..plumbing import Timer, captured_output, copy_file, hashes, sha256, working_directory
from .common import StepContext
from .alignment import database_headerlets_written, exposures_directory
from .drizzle import run_astrodrizzle
from .staging import copy_into_stage


def choose_wcs(ctx: StepContext) -> StepResult:
    """The chosen WCS: the ``wcs`` decision the runner took, by its rule, before the step."""
    decision = ctx.decisions["wcs"]
    return StepResult({"chosen_stage": decision["chosen_stage"], "chosen_wcsname": decision["chosen_wcsname"]})


def stage_inputs(ctx: StepContext) -> StepResult:
    """Copy the exposures carrying the chosen WCS into ``<root>_final/``.

    When that WCS is the a posteriori fit, the fit's matched pairs (``fit_matches``) are copied too:
    they are handed back with the products that carry the fit.
    """
    if not drizzles(ctx.inputs, ctx.config):
        # DRIZCORR=OMIT: the exposures as delivered, as init read them.
        return StepResult({**copy_into_stage(ctx, ctx.input_dir, ctx.inputs.input_hashes), "fit_matches": []})
    chosen = ctx.run.output("final", "choose_wcs")["chosen_stage"]
    # The chosen stage's exposures; after a discarded a priori stage, the ones it restored (with the
    # database's headerlets) even when the pipeline-default WCS is chosen.
    source = ctx.decisions["final_source"]
    payload = copy_into_stage(ctx, *exposures_directory(ctx, source))
    payload["source_stage"] = source["source_stage"]

    def copy_recorded(stage: str, name: str, digest: str) -> None:
        copy_file(ctx.stage_dir(stage) / name, ctx.stage_dir() / name)
        got = sha256(ctx.stage_dir() / name)
        if got != digest:
            raise ProcessingError(f"{ctx.stage_dir(stage) / name}: changed since its stage recorded it "
                                  f"(sha256 {got[:12]} != {digest[:12]}); start a new run",
                                  str(ctx.stage_dir(stage) / name))
        payload["files"][name] = got

    matches = ctx.run.output(chosen, "align").get("fit_matches")
    payload["fit_matches"] = []
    if matches:
        copy_recorded(chosen, matches["file"], matches["sha256"])
        payload["fit_matches"] = [matches["file"]]
    # runastrodriz 3.11 copies the alignment headerlets it applied to the FLT files beside the inputs:
    # they are the `<rootname>_flt_hlet.fits` handed back, in place of the OPUS ones.
    align = ctx.run.output(chosen, "align") if chosen == "aposteriori" else {}
    payload["alignment_headerlets"] = sorted(set(align.get("flt_headerlets", {}).values()))
    for name in payload["alignment_headerlets"]:
        copy_recorded(chosen, name, align["files"][name])
    payload["database_headerlets"] = database_headerlets_written(ctx.run)
    for name in payload["database_headerlets"]:
        copy_recorded("apriori", name, ctx.run.output("apriori", "updatewcs")["files"][name])
    return StepResult(payload)


def fit_matches(run) -> list[str]:
    """The matched-pairs file the final stage hands back (none unless the products carry the a posteriori fit)."""
    return run.output("final", "stage_inputs").get("fit_matches", [])


def write_headerlets(ctx: StepContext) -> StepResult:
    """Write each exposure's final WCS as its ``Exposure.final_headerlet`` (not with ``-b``).

    As runastrodriz 3.11 writes them: one per exposure of the first list (the FLT files, or the
    FLC files of an FLC-only delivery), AUTHOR=OPUS and DESCRIP the WCSTYPE; the alignment
    headerlet of the a posteriori fit, when the final stage copied one, stands instead, and a
    headerlet file already in the input directory is kept, not replaced.
    """
    from drizzlepac import updatehdr
    from stwcs.wcsutil import headerlet

    d = ctx.stage_dir()
    written, kept, notes = {}, [], []
    aligned = set(ctx.run.output("final", "stage_inputs").get("alignment_headerlets", []))
    with captured_output(), working_directory(d):
        for exposure in ctx.inputs.exposures.lists[0]:
            name, hname = exposure.name, exposure.final_headerlet
            if hname in aligned:
                continue
            if (ctx.input_dir / hname).exists():
                kept.append(hname)
                continue
            wcsname = fits.getval(name, "WCSNAME", ext=("SCI", 1))
            # logging=False must be explicit: stwcs's decorator otherwise opens headerlet.log and, with
            # no handler on its logger, fails on an unset variable.
            # HDRNAME as 3.11 gives it: the exposure's own file name with _hlet.
            try:
                headerlet.write_headerlet(name, exposure.headerlet, output="flt",
                                          wcskey="PRIMARY", author="OPUS",
                                          descrip=updatehdr.interpret_wcsname_type(wcsname),
                                          attach=False, clobber=True, logging=False)
            except ValueError as exc:
                # 3.11 passes over such a file (RA 840-841): stwcs cannot describe its WCS (for example an
                # exposure of a DRIZCORR=OMIT run, never given a distortion model).
                notes.append(f"no headerlet written for {name}: {exc}")
                with contextlib.suppress(FileNotFoundError):
                    (d / hname).unlink()
                continue
            written[hname] = wcsname
    return StepResult({"headerlets": written, "kept_existing": kept, "files": hashes(d, list(written))},
                      facts=[(NOTE, {"message": m}) for m in notes])


def update_headers(ctx: StepContext) -> StepResult:
    """runastrodriz 3.11's last header updates: WCSTYPE beside every WCSNAME, S_REGION and DRIZPARS of the products.

    A WCS key without a WCSNAME gets WCSNAME 'OPUS', as 3.11 does. DRIZPARS names the run's trailer
    (3.11 sets it after each AstroDrizzle run, in place of AstroDrizzle's own log name). A singleton's
    calibrated file gets DRIZCORR=COMPLETE (3.11 sets it on its ``_cal_prodname``; for an ASN that is
    a temporary copy of the table, so an association's files keep theirs).
    """
    from drizzlepac import updatehdr
    from drizzlepac.haputils import processing_utils
    from stsci.tools import fileutil
    from stwcs.wcsutil import altwcs

    d = ctx.stage_dir()
    names = ctx.inputs.exposures.names
    drizzled = drizzles(ctx.inputs, ctx.config)
    products = [p.name for p in ctx.inputs.products("final")] if drizzled else []
    completed = ctx.inputs.exposures.lists[0][0].name if drizzled and ctx.inputs.kind != "asn" else None
    with captured_output(), working_directory(d):
        for product in products:
            with fits.open(product, mode="update") as hdul:
                # As 3.11: only a product with data (every exposure empty leaves a header-only file).
                if any(h.name == "SCI" and h.data is not None for h in hdul):
                    processing_utils.compute_sregion(hdul)
                hdul[0].header["DRIZPARS"] = ctx.run.trailer
        for name in names:
            with fits.open(name, mode="update") as hdul:
                if not drizzled:
                    # DRIZCORR=OMIT: 3.11 writes S_REGION on its inputs before it reads DRIZCORR (RA 477-478);
                    # with PERFORM the default stage has written it from the same WCS.
                    processing_utils.compute_sregion(hdul)
                if name == completed:
                    hdul[0].header["DRIZCORR"] = "COMPLETE"
                for extver in range(1, fileutil.countExtn(hdul) + 1):
                    header = hdul[("SCI", extver)].header
                    for key in altwcs.wcskeys(hdul, ("SCI", extver)):
                        key = key.strip()
                        wcsname = header.setdefault(f"WCSNAME{key}", "OPUS")
                        header[f"WCSTYPE{key}"] = updatehdr.interpret_wcsname_type(wcsname)
    return StepResult({"files": hashes(d, names + products)})


def astrodrizzle(ctx: StepContext) -> StepResult:
    """The final DRZ (FLT) and DRC (FLC) products, with runastrodriz's final parameters."""
    return run_astrodrizzle(ctx, final=True)


def quality_analysis(ctx: StepContext) -> StepResult:
    """``PIPELINE_QUALITY_TESTING``: drizzlepac's ``quality_analysis.run_all`` on the final exposures.

    runastrodriz 3.11 runs it on the FLC files (else the FLT files) once they carry the final WCS,
    with the a posteriori fit's catalogs. Here it runs on the final stage's copies, the bytes about to
    be handed back, without catalogs: the fit's catalogs live only inside the a posteriori step (and
    its process, which a resume may not be). ``run_all`` then measures the exposures' relative
    alignment with its own source lists and writes ``<rootname>_cal_qa_astrometry_resids.json`` per
    exposure when the WCS is an a posteriori fit; it reports no GAIA residuals. The JSON files it
    writes are handed back with the products. A failure of this diagnosis does not fail the run.

    Returns
    -------
    StepResult
        ``examined``, ``written`` (the JSON files), their ``files`` hashes, the library's ``summary``
        line and log, ``error`` when it raised; one ``note`` with the outcome.

    Raises
    ------
    ProcessingError
        When the analysis changed an exposure it examined (the files handed back must be those verified).
    """
    from drizzlepac.haputils import quality_analysis as qa

    d = ctx.stage_dir()
    examined = [e.name for e in ctx.inputs.exposures.verified]
    before = {p.name for p in d.iterdir()}
    error = None
    ctx.progress(f"quality analysis of {len(examined)} exposures")
    with Timer() as t, captured_output() as out, working_directory(d):
        try:
            qa.run_all(Path(ctx.config.input).name, examined, catalogs=None)
        except Exception as exc:  # noqa: BLE001 - a diagnosis that fails is recorded, the products stand
            error = f"{type(exc).__name__}: {exc}"
    expected = ctx.run.stage_files("final")
    for name, digest in hashes(d, examined).items():
        if expected.get(name) not in (None, digest):
            raise ProcessingError(f"{d / name}: changed by the quality analysis", str(d / name))
    written = sorted(p.name for p in d.iterdir() if p.name not in before and p.suffix == ".json")
    lines = [ln for ln in out.getvalue().splitlines() if "quality statistics" in ln]
    summary = lines[-1] if lines else None
    if error:
        message = f"quality analysis (PIPELINE_QUALITY_TESTING) failed: {error}"
    elif written:
        message = f"quality analysis (PIPELINE_QUALITY_TESTING) wrote {', '.join(written)}"
    else:
        message = f"quality analysis (PIPELINE_QUALITY_TESTING) of {', '.join(examined)}: no statistics generated"
    return StepResult({"examined": examined, "written": written, "files": hashes(d, written), "summary": summary,
                       "error": error, "seconds": t.elapsed, "log": out.getvalue()},
                      facts=[(NOTE, {"message": message})])


# Room kept free beyond the promoted files themselves: file-system blocks and the trailer.
PROMOTE_MARGIN = 1 << 20


def _final_products(run) -> list[str]:
    """The products the final stage drizzled (none when DRIZCORR=OMIT)."""
    return [p["product"] for p in run.output("final", "astrodrizzle").get("products", [])]


def _handed_back_headerlets(run) -> list[str]:
    """Every headerlet file the final stage hands back: OPUS, alignment and astrometry-database ones."""
    staged = run.output("final", "stage_inputs")
    return (list(run.output("final", "write_headerlets").get("headerlets", {}))
            + staged.get("alignment_headerlets", []) + staged.get("database_headerlets", []))


def _handed_back(ctx: StepContext, headerlets: list[str]) -> tuple[str, ...]:
    """What the run hands back (:meth:`~astrodriz_sm.model.RunLayout.handed_back`), with these headerlets."""
    return ctx.layout.handed_back(_final_products(ctx.run), ctx.inputs.exposures.names, headerlets,
                                  fit_matches(ctx.run), ctx.run.output("final", "quality_analysis").get("written", []))


def _promoted_files(ctx: StepContext) -> list[str]:
    """What the final stage hands back: all the run does but the trailer, which the runner writes."""
    return list(_handed_back(ctx, _handed_back_headerlets(ctx.run))[:-1])


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
    products = _final_products(ctx.run)
    return StepResult({"files": hashes(folder, targets), "replaced": promoted["originals"], "products": products,
                       "headerlets": _handed_back_headerlets(ctx.run), "fit_matches": fit_matches(ctx.run)})


def manifest_headerlets(ctx: StepContext) -> list[str]:
    """The headerlet lines of runastrodriz 3.11's manifest, in its order (runastrodriz.py 3.11.0 814-859).

    First the HDRNAME of each OPUS headerlet it wrote (``<exposure>_hlet.fits``, which names the file
    only for an FLT), then per exposure of the first list the astrometry database's headerlets
    (``<exposure>_??????_hlet.fits``) and ``<exposure>_hlet.fits`` as found beside the inputs: so a
    headerlet written here is listed twice, as 3.11 lists it.
    """
    written = ctx.run.output("final", "write_headerlets").get("headerlets", {})
    first = ctx.inputs.exposures.lists[0]
    lines = [e.headerlet for e in first if e.final_headerlet in written]
    handed_back = set(ctx.run.output("final", "replace").get("headerlets", []))
    # 3.11 looks in its working directory: the input directory, or a NEWPATH copy holding only this run's files.
    present = (sorted(p.name for p in ctx.input_dir.iterdir()) if not ctx.config.newpath
               else sorted(handed_back))
    for e in first:
        lines += fnmatch.filter(present, e.database_headerlet_pattern)
        lines += [e.headerlet] if e.headerlet in present else []
    return lines


def write_manifest(ctx: StepContext) -> StepResult:
    """``<root>_manifest.txt`` (``-m``): as runastrodriz 3.11's, one file per line.

    The list the final stage promoted, with the headerlets as 3.11 lists them
    (:func:`manifest_headerlets`): products, exposures, headerlets, the matched pairs of the fit, the
    quality analysis's JSON files, then the trailer.
    """
    names = list(_handed_back(ctx, manifest_headerlets(ctx)))
    path = ctx.layout.manifest
    partial = path.with_name(partial_name(path.name))
    partial.write_text("".join(f"{n}\n" for n in names))
    os.replace(partial, path)
    return StepResult({"manifest": path.name, "listed": names, "files": hashes(ctx.input_dir, [path.name])})


def cleanup(ctx: StepContext) -> StepResult:
    """Remove the stage directories (kept with ``--debug``) and a NEWPATH working directory."""
    removed = []
    if ctx.config.debug:
        return StepResult({"removed": removed, "kept": "debug"})
    for p in ctx.layout.stage_dirs:
        if p.exists():
            shutil.rmtree(p)
            removed.append(p.name)
    if ctx.config.newpath and ctx.work_dir != ctx.input_dir and ctx.work_dir.exists():
        shutil.rmtree(ctx.work_dir)
        removed.append(str(ctx.work_dir))
    return StepResult({"removed": removed})
