"""Steps shared by the stages: stage copies, updatewcs, AstroDrizzle.

Each stage works on copies in ``<root>_<stage>/``; the inputs in the run directory are touched
only by the final stage's promote step.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..errors import ProcessingError
from ..model import Product, StepResult
from ..model.events import NOTE
from ..plumbing import Timer, captured_output, copy_file, hashes, working_directory
from .common import StepContext

# Parameters runastrodriz imposes on every pipeline AstroDrizzle call (PIPELINE_PARS), plus the
# cosmic-ray settings of the default stage.
PIPELINE_PARS = {"stepsize": 10, "preserve": False, "build": True}
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
        with captured_output():
            for name in cleared:
                resetbits.reset_dq_bits(str(d / name), CR_DQ_BITS)
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


def _wcsnames(path: Path) -> list[str]:
    with fits.open(path, memmap=False) as hdul:
        return [str(h.header.get("WCSNAME", "")) for h in hdul if h.name == "SCI"]


def _sky_footprint_key(name: str) -> tuple:
    """The SCI WCS keywords a file's sky footprint depends on."""
    with fits.open(name, memmap=False) as hdul:
        return tuple((h.header.get("NAXIS1"), h.header.get("NAXIS2"),
                      *(repr(v) for k, v in h.header.items() if k.startswith(("CRVAL", "CRPIX", "CD", "CTYPE",
                                                                               "A_", "B_", "D2IM", "NPOL"))))
                     for h in hdul if h.name == "SCI")


def _skycell_value(name: str) -> str:
    from drizzlepac.haputils.cell_utils import get_sky_cells

    return "; ".join(cell[8:] for cell in (get_sky_cells([name]) or {}))


def add_skycells(names: list[str], workers: int = 1) -> dict:
    """SKYCELL in every SCI header, as drizzlepac's ``add_skycell_to_header`` writes it.

    That function computes the sky cells of the whole file once per SCI extension; the value
    depends on the file's footprint only, so it is computed once per distinct WCS (an FLT and its
    FLC share theirs) and written to every extension, after S_REGION, as drizzlepac places it.
    The distinct footprints are computed in ``workers`` child processes (about 8 s each for a
    full-frame ACS/WFC exposure, in pure Python).

    Returns
    -------
    dict
        File name -> SKYCELL value ('' when drizzlepac finds none).
    """
    keys = {name: _sky_footprint_key(name) for name in names}
    first = {}  # footprint -> the first file that has it
    for name, key in keys.items():
        first.setdefault(key, name)
    if workers > 1 and len(first) > 1:
        with ProcessPoolExecutor(min(workers, len(first)), mp_context=multiprocessing.get_context("fork")) as pool:
            values = list(pool.map(_skycell_value, first.values()))
    else:
        values = [_skycell_value(name) for name in first.values()]
    known = dict(zip(first, values))
    written = {}
    for name in names:
        value = written[name] = known[keys[name]]
        if not value:
            continue
        with fits.open(name, mode="update") as hdul:
            for h in hdul:
                if h.name != "SCI":
                    continue
                if "SKYCELL" in h.header:
                    h.header["SKYCELL"] = (value, "Skycell(s) that this image occupies")
                else:
                    h.header.insert("S_REGION", ("SKYCELL", value, "Skycell(s) that this image occupies"),
                                    after=True)
    return written


def updatewcs(ctx: StepContext) -> StepResult:
    """Apply the distortion model: ``updatewcs(use_db=False)`` to the pipeline-default WCS.

    As runastrodriz 3.11 does, S_REGION is computed first and SKYCELL after.

    Returns
    -------
    StepResult
        The WCSNAME every exposure got (``IDC_<idctab root>``), output hashes and the library log.

    Raises
    ------
    ProcessingError
        When stwcs fails or the resulting WCSNAME is not ``IDC_<idctab root>``.
    """
    from drizzlepac.haputils import processing_utils
    from stwcs.updatewcs import updatewcs as stwcs_updatewcs

    d = ctx.stage_dir()
    idctab = ctx.inputs.references.get("IDCTAB", "")
    expected = "IDC_" + Path(idctab.split("$")[-1]).name.split("_idc")[0] if idctab else None
    groups = [[e.name for e in g] for g in ctx.inputs.exposures.lists]
    ctx.progress(f"updatewcs(use_db=False) on {sum(map(len, groups))} exposures")
    with Timer() as t, captured_output() as out, working_directory(d):
        # runastrodriz 3.11 writes S_REGION from the header's WCS as delivered, before any updatewcs,
        # and SKYCELL from the pipeline-default WCS after it; later stages leave both alone.
        for name in (n for g in groups for n in g):
            processing_utils.compute_sregion(name)
        for group in [[e.name for e in g] for g in ctx.inputs.updated_lists]:
            try:
                stwcs_updatewcs(list(group), use_db=False, checkfiles=False)
            except Exception as exc:
                raise ProcessingError(f"{d / group[0]}: updatewcs failed: {exc}", str(d / group[0])) from exc
        add_skycells([n for g in groups for n in g], workers=ctx.cores)
    names = {n: _wcsnames(d / n) for g in groups for n in g}
    found = sorted({w for ws in names.values() for w in ws})
    if expected and found != [expected]:
        raise ProcessingError(f"{d}: updatewcs gave WCSNAME {found}, expected {expected}", str(d))
    return StepResult({"wcsname": found[0] if len(found) == 1 else found, "wcsnames": names,
                       "files": hashes(d, [n for g in groups for n in g]), "seconds": t.elapsed,
                       "log": out.getvalue()})


def identifies_cosmic_rays(run, stage: str) -> bool:
    """The recorded ``<stage>_cosmic_rays`` decision of an alignment stage: cosmic rays identified again."""
    return bool(run.decision(f"{stage}_cosmic_rays").get("identify"))


def alignment_follows(run) -> bool:
    """The recorded ``alignment_follows`` decision (the default stage's copies): an alignment stage follows."""
    return bool(run.decision("alignment_follows").get("follows"))


def no_cr_parameters(good_bits: int) -> dict:
    """runastrodriz 3.11's ``reset_mdriztab_nocr``: separate drizzles, no cosmic-ray identification."""
    return {"mdriztab": False, "build": True, "resetbits": 0, "static": False, "driz_separate": True,
            "driz_sep_bits": good_bits, "driz_sep_fillval": 0.0, "median": False, "blot": False,
            "driz_cr": False, "final_fillval": "INDEF"}


def drizzle_parameters(ctx: StepContext, product: Product, final: bool) -> dict:
    """AstroDrizzle parameters as runastrodriz sets them.

    MDRIZTAB (when the header names one) gives the per-filter defaults; without it AstroDrizzle's
    own defaults apply. WFPC2 takes drizzlepac's own WFPC2 configuration instead, and runastrodriz
    3.11 drizzles it with its verification parameters every time, the final products included.
    Stage products keep their single-drizzle images for verification; final products honour ``-i``
    and clean up. Which parameters (final or verification, without a new cosmic-ray identification,
    a median combine) is the stage's ``<stage>_drizzle`` decision, taken before the step.
    """
    from drizzlepac import mdzhandler

    plan = ctx.decisions[f"{ctx.stage}_drizzle"]
    mdriztab = ctx.inputs.reference_paths.get("MDRIZTAB")
    wfpc2 = ctx.inputs.instrument == "WFPC2"
    d = ctx.stage_dir()
    if wfpc2:
        from drizzlepac.haputils import config_utils

        with captured_output():
            pars = dict(config_utils.get_wfpc2_pars(product.mdriztab_inputs)["astrodrizzle"].outpars)
        pars.pop("runfile")  # each product has its own runfile log (runastrodriz: astrodrizzle.log)
        source = "drizzlepac's WFPC2 parameters (config_utils.get_wfpc2_pars)"
    elif mdriztab:
        with captured_output(), working_directory(d):
            pars = mdzhandler.getMdriztabParameters(product.mdriztab_inputs)
        source = f"MDRIZTAB {ctx.inputs.references['MDRIZTAB']}"
    else:
        pars, source = {}, "AstroDrizzle defaults (no MDRIZTAB in the header)"
    pars = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in pars.items()}
    pars.update(PIPELINE_PARS)
    pars.update(mdriztab=False, resetbits=4096, crbit=4096,
                num_cores=ctx.config.num_cores)
    if wfpc2:
        pars.update(final_fillval="INDEF", driz_sep_kernel="turbo", driz_sep_fillval=0.0, resetbits=0)
    if final:
        pars.update(in_memory=ctx.config.inmemory, clean=True)
    elif plan["parameters"] == "final":
        # No alignment stage follows: runastrodriz 3.11 verifies nothing and drizzles its final products
        # at once. The default stage drizzles exactly as the final stage does, keeping its intermediate
        # files for its own check, so that the final stage reuses its products (the reuse rule).
        pars.update(in_memory=False, clean=False)
    else:
        # runastrodriz 3.11's verification drizzles (RA 576-593): the default stage's when an alignment
        # stage follows, and the alignment stages'. Their cosmic-ray flags are what the alignment stages
        # start from, so the parameters are 3.11's to the letter (resetbits 0: a second pass adds to the
        # flags of the first).
        pars.update(in_memory=False, clean=False, final_fillval="INDEF",
                    driz_sep_kernel="turbo", driz_sep_fillval=0.0, resetbits=0)
        if plan["no_cr_parameters"]:
            # The alignment this stage starts from was verified, so its cosmic-ray flags hold: keep them
            # (resetbits 0) and drizzle without a new identification, as runastrodriz's reset_mdriztab_nocr.
            pars.update(no_cr_parameters(ctx.inputs.detector_parameters.verification_good_bits(ctx.stage)))
            source += "; no new cosmic-ray identification (the alignment it starts from was verified)"
    if plan["median_combine"].get(product.name):
        # runastrodriz 3.11's verification drizzles (the default stage's too; all of WFPC2's) of exposures
        # whose EXPTIMEs differ by more than a factor 2. The final stage then drizzles again rather than
        # reuse the default stage's product.
        pars.update(combine_type="median", combine_nhigh=0)
    return {"parameters": pars, "source": source}


def _astrodrizzle(group: list[str], root: str, runfile: str, parameters: dict) -> str:
    """Run AstroDrizzle on ``group`` in the current directory.

    Returns
    -------
    str
        Its runfile log (or, without one, what it printed).
    """
    from drizzlepac import astrodrizzle

    with captured_output() as out:
        astrodrizzle.AstroDrizzle(input=list(group), output=root, runfile=runfile, configobj=None, **parameters)
    log_file = Path(f"{runfile}.log")
    return log_file.read_text(errors="replace") if log_file.exists() else out.getvalue()


def _move_contents(src: Path, dest: Path) -> None:
    """Move everything in ``src`` into ``dest`` (replacing files, merging directories), then remove ``src``."""
    for f in sorted(src.iterdir()):
        if f.is_dir() and (dest / f.name).is_dir():
            _move_contents(f, dest / f.name)
        else:
            os.replace(f, dest / f.name)
    src.rmdir()


def _drizzle_concurrently(d: Path, jobs: list[tuple[Product, dict]]) -> dict:
    """Drizzle several exposure lists at once, each in a child process and a directory of its own.

    AstroDrizzle names the intermediate files of an FLT and an FLC list alike (single drizzles,
    median, blotted images, masks), so each list's files move into ``d/astrodrizzle_<suffix>/``
    while it runs and back into ``d`` afterwards, in list order: ``d`` then looks as after running
    the lists one after the other.

    Parameters
    ----------
    d : Path
        The stage directory.
    jobs : list of (Product, dict)
        Each product and its AstroDrizzle parameters.

    Returns
    -------
    dict
        ``{product: (seconds, log)}``.

    Raises
    ------
    ProcessingError
        For the first list whose AstroDrizzle failed.
    """
    running = []
    start = time.perf_counter()
    for product, parameters in jobs:
        sub = d / f"astrodrizzle_{product.suffix}"
        if sub.exists():
            shutil.rmtree(sub)
        sub.mkdir()
        for n in product.inputs:
            os.replace(d / n, sub / n)
        job = {"group": product.inputs, "root": product.root, "runfile": product.runfile, "parameters": parameters}
        (sub / "job.json").write_text(json.dumps(job))
        out = open(sub / "job.out", "w")  # noqa: SIM115 - closed after the child ends
        proc = subprocess.Popen([sys.executable, "-m", "astrodriz_sm.child", str(os.getpid()), "job.json"],
                                cwd=sub, stdout=out, stderr=subprocess.STDOUT)
        running.append((product, sub, proc, out))
    finished = {}
    while len(finished) < len(running):
        for product, _, proc, _ in running:
            if product.name not in finished and proc.poll() is not None:
                finished[product.name] = round(time.perf_counter() - start, 3)
        time.sleep(0.1)
    results, failure = {}, None
    for product, sub, proc, out in running:
        out.close()
        printed = (sub / "job.out").read_text(errors="replace")
        (sub / "job.out").unlink()
        (sub / "job.json").unlink()
        log_file = sub / f"{product.runfile}.log"
        log = log_file.read_text(errors="replace") if log_file.exists() else printed
        _move_contents(sub, d)
        if proc.returncode != 0 and failure is None:
            last = printed.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
            failure = ProcessingError(f"{d / product.name}: AstroDrizzle failed: {last[0]}",
                                      str(d / product.inputs[0]))
        results[product.name] = (finished[product.name], log)
    if failure is not None:
        raise failure
    return results


def _drizzle_singles(ctx: StepContext, products: list[Product], entries: dict) -> dict:
    """Drizzle again, as runastrodriz 3.11 does, products whose parameters wrote no single-drizzle images.

    With cosmic-ray rejection off (ACS/SBC's MDRIZTAB rows, say) AstroDrizzle writes no
    ``single_sci`` images, which the verification needs: the product is drizzled again with
    :func:`no_cr_parameters`, and its entry records the parameters it was made with.

    Returns
    -------
    dict
        ``{product: (seconds, log)}`` of the products drizzled again.
    """
    d = ctx.stage_dir()
    done = {}
    for p in products:
        pars = {**entries[p.name]["parameters"],
                **no_cr_parameters(ctx.inputs.detector_parameters.verification_good_bits(ctx.stage))}
        ctx.progress(f"{p.name}: no single-drizzle images; AstroDrizzle again without cosmic-ray rejection")
        with Timer() as t, working_directory(d):
            try:
                log = _astrodrizzle(p.inputs, p.root, p.runfile, pars)
            except Exception as exc:
                raise ProcessingError(f"{d / p.name}: AstroDrizzle failed: {exc}", str(d / p.inputs[0])) from exc
        entries[p.name].update(parameters=pars, redrizzled_for_singles=True,
                               parameter_source=entries[p.name]["parameter_source"]
                               + "; drizzled again for single-drizzle images (reset_mdriztab_nocr)")
        done[p.name] = (t.elapsed, log)
    return done


def run_astrodrizzle(ctx: StepContext, final: bool = False) -> StepResult:
    """Drizzle this stage's exposure lists: the FLT list into DRZ, the FLC list into DRC.

    In the final stage a product the chosen stage already drizzled identically is copied instead (by
    the reuse rule, recorded as the ``final_reuse`` decision); its entry says ``reused_from``. Two
    lists to drizzle run concurrently (:func:`_drizzle_concurrently`) when the step has a core for each; otherwise they run
    one after the other in this process.

    Returns
    -------
    StepResult
        Per product: inputs, parameters, output hash, wall time and the AstroDrizzle log.
    """
    d = ctx.stage_dir()
    products = ctx.inputs.products(ctx.stage, ctx.stage == "default" and alignment_follows(ctx.run))
    entries, jobs = {}, []
    for product in products:
        pars = drizzle_parameters(ctx, product, final)
        entries[product.name] = {"product": product.name, "inputs": product.inputs,
                                 "parameters": pars["parameters"], "parameter_source": pars["source"]}
        # The reuse rule judges by the record; the chosen stage's file must still be there as recorded.
        reuse = (ctx.rules.reusable_product(ctx.run, product.name, product.inputs, pars["parameters"])["reusable_from"]
                 if final else None)
        if reuse is not None and (ctx.stage_dir(reuse["stage"]) / product.name).exists():
            source = ctx.stage_dir(reuse["stage"]) / product.name
            with Timer() as t:
                copy_file(source, d / product.name)
            digest = hashes(d, [product.name])[product.name]
            if digest == reuse["sha256"]:
                ctx.progress(f"{product.name}: reusing the {reuse['stage']} stage's product "
                             "(same inputs and parameters)")
                entries[product.name].update(seconds=t.elapsed, sha256=digest,
                                             reused_from=f"{reuse['stage']}/{product.name}",
                                             log=f"reused {source}: same inputs (sha256) and parameters")
                continue
            (d / product.name).unlink()  # changed since its stage recorded it: drizzle it here instead
        jobs.append(product)
    # Side by side only with a core for each list: on one core (a campaign's -n 1) two drizzles would
    # take turns on it, each paying for an interpreter of its own.
    concurrent = 1 < len(jobs) <= ctx.cores
    ctx.progress(" and ".join(f"AstroDrizzle {p.name} from {len(p.exposures)} exposures" for p in jobs)
                 + (" (concurrently)" if concurrent else ""))
    # On the cosmic-ray path runastrodriz 3.11 drizzles a verified stage twice (verify_alignment's
    # find_crs run, then the verification run), with resetbits 0: the second identification starts
    # from the flags of the first. The default stage takes that path whenever an alignment stage follows.
    passes = ctx.decisions[f"{ctx.stage}_drizzle"]["passes"]
    if concurrent:
        # The lists share the cores (``-n`` or all usable ones): two drizzles each starting a worker
        # per core would only compete for them, and hold twice the memory.
        share = max(1, ctx.cores // len(jobs))
        for p in jobs:
            entries[p.name]["parameters"] = {**entries[p.name]["parameters"], "num_cores": share}
        for _ in range(passes):
            done = _drizzle_concurrently(d, [(p, entries[p.name]["parameters"]) for p in jobs])
    else:
        done = {}
        for p in jobs:
            for _ in range(passes):
                with Timer() as t, working_directory(d):
                    try:
                        log = _astrodrizzle(p.inputs, p.root, p.runfile, entries[p.name]["parameters"])
                    except Exception as exc:
                        raise ProcessingError(f"{d / p.name}: AstroDrizzle failed: {exc}",
                                              str(d / p.inputs[0])) from exc
            done[p.name] = (t.elapsed, log)
    for name in entries:
        entries[name]["passes"] = passes
    for name in done:
        if not (d / name).exists():
            raise ProcessingError(f"{d / name}: AstroDrizzle wrote no product", str(d / name))
    if not final:
        done.update(_drizzle_singles(ctx, [p for p in jobs if p.singles and not (d / p.singles[0]).exists()],
                                     entries))
    # The stage directory as this step leaves it (inputs' DQ and sky keywords change, products
    # appear); reused products were hashed when copied.
    files = hashes(d, [n for p in products for n in p.inputs] + list(done))
    files.update({name: e["sha256"] for name, e in entries.items() if name not in done})
    for name, (seconds, log) in done.items():
        entries[name].update(seconds=seconds, sha256=files[name], log=log)
    return StepResult({"products": list(entries.values()), "files": files})


def drizzle_job(job_file: str) -> int:
    """In a child of :func:`_drizzle_concurrently` (see :mod:`astrodriz_sm.child`): run one job here.

    Returns
    -------
    int
        0, or 1 with the failure on one line of standard output.
    """
    job = json.loads(Path(job_file).read_text())
    try:
        _astrodrizzle(job["group"], job["root"], job["runfile"], job["parameters"])
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        print(f"{type(exc).__name__}: {exc}".replace("\n", " "))
        return 1
    return 0
