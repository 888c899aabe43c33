"""AstroDrizzle in every stage: its parameters, one run or two at once, the child process of each."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import ProcessingError
from ..model import Product, StepResult
from ..plumbing import Timer, captured_output, copy_file, hashes, working_directory
from .common import StepContext

# Parameters runastrodriz imposes on every pipeline AstroDrizzle call (PIPELINE_PARS), plus the
# cosmic-ray settings of the default stage.
PIPELINE_PARS = {"stepsize": 10, "preserve": False, "build": True}
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
