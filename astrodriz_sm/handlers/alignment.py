"""The a priori and a posteriori stages: service probe, database solutions, fits to GAIA, conclusion.

The fitting itself is drizzlepac's (``align_utils.AlignmentTable``: analyze, source finding,
tweakwcs relative, 2dhist and default fits, ``determine_fit_quality``), in the order and with the
stopping rule of ``align.perform_align``; what it adds is that every fit is a ``candidate`` event
and the choice among them one ``decision`` event with its rule.
"""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

import numpy as np

from ..model import UPDATED_COPIES, StepResult, fit_matches_name
from ..model.events import CANDIDATE
from ..numerics.matches import matched_pairs
from ..plumbing import Timer, captured_output, copy_file, hashes, working_directory
from .centroids import refine_catalogs
from .common import StepContext
from .drizzle import identifies_cosmic_rays
from .staging import CR_DQ_BITS, copy_into_stage
from .matches import write_matched_pairs
from .network import PROBE_TIMEOUT, bounded_requests, probe, service_timeout, service_url
from .sources import alignment_table

STAGE_SERVICES = {"apriori": ("ASTROMETRY_SERVICE_URL", "GSSS_WEBSERVICES_URL"),
                  "aposteriori": ("ASTROMETRIC_CATALOG_URL",)}


def probe_service(ctx: StepContext) -> StepResult:
    """One short check per service before a stage relies on it.

    Returns
    -------
    StepResult
        Per service: URL, reachable, reason. Whether the stage goes on is the ``<stage>_service``
        decision the runner takes from them by its rule.
    """
    results = {}
    for variable in STAGE_SERVICES[ctx.stage]:
        url = service_url(ctx, variable)
        target = url + "availability" if variable == "ASTROMETRY_SERVICE_URL" else url
        with Timer() as t:
            ok, reason = probe(target, timeout=PROBE_TIMEOUT)
        results[variable] = {"url": url, "reachable": ok, "reason": reason, "seconds": t.elapsed}
    return StepResult({"services": results, "environment_update": {v: r["url"] for v, r in results.items()}})


def stage_inputs(ctx: StepContext) -> StepResult:
    """Copy the exposures of the best verified stage so far into this stage's directory.

    Which stage that is and whether the cosmic rays are identified again are the ``<stage>_source``
    and ``<stage>_cosmic_rays`` decisions the runner took before the step.
    """
    decision = ctx.decisions[f"{ctx.stage}_source"]
    source_dir, expected = exposures_directory(ctx, decision)
    payload = copy_into_stage(ctx, source_dir, expected)
    payload["source_stage"] = decision["source_stage"]
    crs = ctx.decisions[f"{ctx.stage}_cosmic_rays"]
    # The a priori stage clears them after its update (apriori_updatewcs), whose result a discarded
    # stage hands on as 3.11 leaves it beside the inputs: without this stage's clearing.
    if crs["identify"] and ctx.stage != "apriori":
        payload["dq_bits_reset"] = clear_cosmic_ray_flags(ctx)
        payload["files"] = hashes(ctx.stage_dir(), ctx.inputs.exposures.names)
    return StepResult(payload)


def clear_cosmic_ray_flags(ctx: StepContext) -> dict:
    """Clear DQ 4096 and 8192 of the verified list in this stage's copies (3.11's find_crs path).

    Misaligned products flag star cores as cosmic rays: those flags go before the sources are
    measured and the cosmic rays identified again.
    """
    from drizzlepac import resetbits

    d = ctx.stage_dir()
    cleared = [e.name for e in ctx.inputs.exposures.verified]
    with captured_output(), working_directory(d):  # relative names: see staging.stage_inputs
        for name in cleared:
            resetbits.reset_dq_bits(name, CR_DQ_BITS)
    return {"bits": CR_DQ_BITS, "files": cleared}


def exposures_directory(ctx: StepContext, decision: dict) -> tuple[Path, dict]:
    """Where the exposures of an ``exposures_source`` decision are, and the hashes they must have."""
    stage = decision["source_stage"]
    if decision["restored"]:
        return ctx.stage_dir(stage) / UPDATED_COPIES, ctx.run.output(stage, "conclude")["restored"]
    return ctx.stage_dir(stage), ctx.run.stage_files(stage)


def _wcs_summary(path: Path) -> dict:
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        primary = [str(h.header.get("WCSNAME", "")) for h in hdul if h.name == "SCI"]
        attached = sorted({str(h.header.get("WCSNAME", "")) for h in hdul if h.name == "HDRLET"})
    return {"wcsnames": primary, "headerlets": attached}


# CRVAL this far from RA_TARG/DEC_TARG makes runastrodriz call the database solution suspect (deg).
TARGET_SEPARATION_WARNING = 0.05


def apriori_checks(d: Path, names: list[str]) -> dict:
    """runastrodriz 3.11's checks after ``updatewcs(use_db=True)``, on the stage copies.

    ``confirm_aposteriori_hdrlets`` drops -FIT headerlets without SIP keywords; a reference pixel
    more than :data:`TARGET_SEPARATION_WARNING` from the target is warned about;
    ``verify_gaia_wcsnames`` appends ``-GSC240`` to a WCSNAME without one for data taken after
    2017-10-01 (their guide stars were already in that frame) and replaces a -FIT primary WCS
    by the newest a priori one.

    Returns
    -------
    dict
        ``warnings`` (one line each), ``exposures`` (each one's WCSNAMEs afterwards, as
        :func:`_wcs_summary`) and ``renamed`` (exposure -> [old, new] primary WCSNAMEs).
    """
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from astropy.io import fits
    from drizzlepac import runastrodriz

    warnings, before = [], {}
    for n in names:
        with working_directory(d):  # relative names: see staging.stage_inputs
            runastrodriz.confirm_aposteriori_hdrlets(n)
        h0, h1 = fits.getheader(d / n, 0), fits.getheader(d / n, 1)
        sep = SkyCoord(h1["CRVAL1"] * u.deg, h1["CRVAL2"] * u.deg).separation(
            SkyCoord(h0["RA_TARG"] * u.deg, h0["DEC_TARG"] * u.deg))
        if sep.deg > TARGET_SEPARATION_WARNING:
            warnings.append(f"{n}: WCS reference pixel is {sep.deg:.2f} degrees from the target position: "
                            "the astrometry database solution is suspect")
        before[n] = _wcs_summary(d / n)["wcsnames"]
    with working_directory(d):
        runastrodriz.verify_gaia_wcsnames(list(names))
    after = {n: _wcs_summary(d / n) for n in names}
    return {"warnings": warnings, "exposures": after,
            "renamed": {n: [before[n][0], after[n]["wcsnames"][0]] for n in names
                        if before[n] != after[n]["wcsnames"]}}


def database_headerlets(d: Path, exposures) -> list[str]:
    """The headerlet files stwcs's ``updatewcs(use_db=True)`` wrote in ``d`` for the astrometry database.

    runastrodriz 3.11 runs that update in the input directory, so these files stay beside the
    inputs whatever becomes of the a priori stage: they are handed back with the products.

    Returns
    -------
    list of str
        File names, exposure by exposure (FLT before FLC), each exposure's sorted.
    """
    present = sorted(p.name for p in d.iterdir())
    return [n for e in exposures for n in fnmatch.filter(present, e.database_headerlet_pattern)]


def apriori_updatewcs(ctx: StepContext) -> StepResult:
    """``updatewcs(use_db=True)``: fetch the database's solutions and apply the best one.

    Only solutions computed with the exposure's current IDCTAB are applied (stwcs's default);
    without one, stwcs computes a new a priori solution from the guide-star offsets. As in
    runastrodriz 3.11, stwcs's input check stays on: it leaves an exposure with EXPTIME=0,
    NGOODPIX=0 or no PA_V3 out of the update, with the pipeline-default WCS.

    The updated exposures are kept aside (``updated/``) before this stage's cosmic-ray flags are
    cleared and its drizzle changes them: a discarded stage hands them on (:func:`conclude`).
    """
    from stwcs.updatewcs import updatewcs as stwcs_updatewcs

    from ..errors import ProcessingError

    d = ctx.stage_dir()
    default_name = ctx.run.output("default", "updatewcs").get("wcsname")
    groups = [[e.name for e in g] for g in ctx.inputs.exposures.lists]
    updated_groups = [[e.name for e in g] for g in ctx.inputs.updated_lists]
    ctx.progress("updatewcs(use_db=True) against " + service_url(ctx, "ASTROMETRY_SERVICE_URL"))
    services = {service_url(ctx, v): what for v, what in (
        ("ASTROMETRY_SERVICE_URL", "the astrometry database"), ("GSSS_WEBSERVICES_URL", "the guide-star service"))}
    with Timer() as t, captured_output() as out, working_directory(d), \
            bounded_requests(service_timeout(ctx.run.environment)) as requests_log:
        failures = requests_log.failures
        checks = {"warnings": [], "exposures": {}, "renamed": {}}
        for group in updated_groups:
            try:
                stwcs_updatewcs(list(group), use_db=True)
            except Exception as exc:
                if failures:
                    break  # the service did not answer: said below, as the reason the stage stops
                raise ProcessingError(f"{d / group[0]}: updatewcs(use_db=True) failed: {exc}",
                                      str(d / group[0])) from exc
            if failures:
                break
            # 3.11 checks each list right after its update (RA 618-646).
            part = apriori_checks(d, group)
            checks["warnings"] += part["warnings"]
            checks["exposures"].update(part["exposures"])
            for name, change in part["renamed"].items():
                checks["renamed"].setdefault(name, change)
    if failures:
        # The runner's apriori_unanswered decision stops the stage on it.
        first = failures[0]
        what = next((w for url, w in services.items() if first.url.startswith(url)), "a service")
        return StepResult({"seconds": t.elapsed, "log": out.getvalue(),
                           "requests_failed": [f.__dict__ for f in failures], "unanswered": first.describe(what)})
    names = sorted({w for s in checks["exposures"].values() for w in s["wcsnames"]})
    written = database_headerlets(d, ctx.inputs.exposures.all)
    # The exposures as 3.11 leaves them beside the inputs before it drizzles this stage: what a
    # discarded stage hands on, once the pipeline-default WCS is restored in them (conclude).
    updated = d / UPDATED_COPIES
    if updated.exists():
        shutil.rmtree(updated)
    updated.mkdir()
    for name in [n for g in groups for n in g]:
        copy_file(d / name, updated / name)
    cleared = clear_cosmic_ray_flags(ctx) if identifies_cosmic_rays(ctx.run, ctx.stage) else None
    payload = {"wcsname": names[0] if len(names) == 1 else names, **checks, "dq_bits_reset": cleared,
               "database_headerlets": written, "updated_copies": hashes(updated, [n for g in groups for n in g]),
               "files": hashes(d, [n for g in groups for n in g] + written), "seconds": t.elapsed,
               "log": out.getvalue()}
    # runastrodriz 3.11 drizzles and verifies the stage whatever updatewcs gave: no solution (the
    # pipeline-default WCS again) or different solutions per exposure are noted, not a stop.
    if names == [default_name]:
        payload["note"] = f"no a priori solution for IDCTAB {default_name}: the pipeline-default WCS is verified again"
    elif len(names) != 1:
        payload["note"] = f"the exposures got different a priori WCSs {names}"
    return StepResult(payload)


def _fit_candidate(rules, catalog: str, method: str, imglist, quality: int, rms: float, n_matches: int,
                   ref_count: int, status: dict) -> dict:
    per_image = {}
    for item in imglist:
        info = item.meta.get("fit_info", {})
        verdict = status.get(f"{item.meta['name']},{item.meta['chip']}", {})
        per_image[f"{item.meta['name']}[{item.meta['chip']}]"] = {
            "status": str(info.get("status")), "nmatches": int(info.get("nmatches", 0) or 0),
            "fit_rms_mas": float(info.get("FIT_RMS", np.nan) or np.nan),
            "valid": bool(verdict.get("valid", False)), "compromised": bool(verdict.get("compromised", False)),
            "reason": str(verdict.get("reason", "")),
        }
    # drizzlepac reports a fit that failed with a sentinel RMS (1e9 mas): that is no RMS at all.
    rms = float(rms) if np.isfinite(rms) and float(rms) < rules.failed_fit_rms else None
    cand = {"catalog": catalog, "method": method, "fit_quality": int(quality), "rms_mas": rms,
            "matches": int(n_matches), "reference_sources": int(ref_count),
            "valid": rules.candidate_valid(int(quality), rms), "exposures": per_image}
    if rms is None:
        cand["reason"] = "the fit failed (drizzlepac reported no RMS)"
    return cand


def _reference_catalog(table, catalog: str) -> list:
    """The reference catalog, fetched once per run of the step, as perform_align keeps it."""
    from drizzlepac import align as dp_align

    if catalog not in table.reference_catalogs:
        table.reference_catalogs[catalog] = dp_align.generate_astrometric_catalog(
            table.process_list, catalog=catalog, output=False)
    return table.reference_catalogs[catalog]


def _fit_to(rules, table, catalog: str, method: str, apars: dict, last: bool) -> dict:
    """The candidate of one reference catalog and fit method: its fit, or why there is none.

    As perform_align does it: ``configure_fit`` first (a fresh WCS list for every fit), group IDs
    reset, the fit, then ``determine_fit_quality``. A fit that raises (tweakwcs's
    ``MatchSourceConfusionError``, too few matches...) is an invalid candidate with the
    exception's text, never a failed run.

    Raises
    ------
    Exception
        When the reference catalog could not be had (the caller makes that the candidate's reason).
    """
    from drizzlepac import align as dp_align

    minimum = apars["determine_fit_quality"]["MIN_CATALOG_THRESHOLD"]
    reference = _reference_catalog(table, catalog)
    invalid = {"catalog": catalog, "method": method, "fit_quality": 5, "valid": False, "rms_mas": None,
               "matches": None, "reference_sources": len(reference)}
    if len(reference) < minimum:
        return {**invalid, "reason": f"only {len(reference)} reference sources (< {minimum})",
                "too_few_reference_sources": True}
    try:
        table.configure_fit()
        table.reset_group_id(len(reference))
        table.imglist = table.perform_fit(method, catalog, reference)
        rms, n_matches, quality, filtered, status = dp_align.determine_fit_quality(
            table.imglist, table.filtered_table, not last, apars, print_fit_parameters=False)
    except Exception as exc:  # noqa: BLE001 - any failure of the fit makes this candidate invalid
        return {**invalid, "reason": f"fit failed: {type(exc).__name__}: {exc}".replace("\n", " ")}
    table.filtered_table = filtered
    for item in table.fit_dict[(catalog, method)]:
        item.meta["fit method"] = method
        item.meta["fit quality"] = quality
    return _fit_candidate(rules, catalog, method, table.imglist, quality, rms, n_matches, len(reference), status)


def common_wcs(d: Path, files: list[str]) -> dict:
    """Give every exposure the same primary WCS before fitting, as runastrodriz 3.11 does.

    ``update_wcs_in_list`` makes the preferred WCS common to all exposures primary (its
    ``wcs_preference`` order), so that zero-point differences between astrometric frames are not
    imprinted into the fit.

    Returns
    -------
    dict
        Primary WCSNAME per exposure before and after.
    """
    from drizzlepac import runastrodriz

    from ..errors import ProcessingError

    before = {n: _wcs_summary(d / n)["wcsnames"] for n in files}
    if len(files) > 1:
        try:
            # File names relative to the stage directory: it writes them into HDRNAME where none is set.
            with working_directory(d):
                runastrodriz.update_wcs_in_list(list(files))
        except SystemExit as exc:  # its answer to exposures without a common WCS
            raise ProcessingError(f"{d / files[0]}: the exposures have no WCS solution in common",
                                  str(d / files[0])) from exc
    after = {n: _wcs_summary(d / n)["wcsnames"] for n in files}
    return {"before": before, "after": after, "changed": sorted(n for n in files if before[n] != after[n])}


def apply_fit_to_flt(d: Path, fitted, others) -> dict:
    """Give each FLT the a posteriori fit of its FLC (runastrodriz 3.11 ``_update_wcs_fit_keywords``
    and ``apply_headerlet``).

    Returns
    -------
    dict
        FLT file -> the headerlet applied.
    """
    from drizzlepac import runastrodriz

    by_root = {e.rootname: e for e in fitted}
    applied = {}
    with working_directory(d):  # relative names: see staging.stage_inputs
        for flt in others:
            flc = by_root[flt.rootname]
            runastrodriz._update_wcs_fit_keywords(flt.name, flc.name)
            # An FLC drizzlepac did not fit (EXPTIME=0, say) has no headerlet: its FLT keeps its WCS.
            if Path(flc.alignment_headerlet).exists():
                runastrodriz.apply_headerlet(flt.name, flc.alignment_headerlet, flcfile=flc.name)
                applied[flt.name] = flc.alignment_headerlet
    return applied


def align(ctx: StepContext) -> StepResult:
    """A posteriori fit of the exposures to the reference catalogs, as drizzlepac 3.11's perform_align.

    Each fit is a ``candidate`` fact. The rules that end the search and choose the fit come with the
    context (``ctx.rules``); the runner records their outcome, from the candidates and ``fit_limits``,
    as the ``aposteriori_exclusion``, ``aposteriori_sources`` and ``aposteriori_fit`` decisions.

    Returns
    -------
    StepResult
        The chosen catalog and method, the WCSNAME, the matched sources the verification needs and
        ``fit_matches`` (the ECSV file of the chosen fit's matched pairs, its sha256, the numbers of
        pairs and the RMS they give); without a fit, what was measured until the search ended.
    """
    from drizzlepac import align as dp_align
    from drizzlepac.haputils import astrometric_utils as amutils

    d = ctx.stage_dir()
    inputs = ctx.inputs
    fitted = inputs.exposures.verified
    files = [e.name for e in fitted]
    # drizzlepac reads the catalog service URL at import time; set it for this step (the runner
    # restores the library's value afterwards).
    amutils.SERVICELOCATION = service_url(ctx, "ASTROMETRIC_CATALOG_URL")
    apars = dp_align.get_default_pars(inputs.instrument, inputs.detector)
    quality_pars = apars["determine_fit_quality"]
    quality_pars["min_xmatches"] = quality_pars["MIN_FIT_MATCHES"]
    catalogs = list(apars["run_align"]["catalog_list"])
    pars = {"MAX_SOURCES_PER_CHIP": apars["general"]["MAX_SOURCES_PER_CHIP"],
            # Verified default products mean trustworthy cosmic-ray flags: mask them too (runastrodriz).
            "sat_flags": 256 + 2048 + (0 if identifies_cosmic_rays(ctx.run, ctx.stage) else 4096 + 8192)}
    pars.update(apars)
    rules = ctx.rules
    stop, facts, decision, methods, centroids, abandoned, unanswered = None, [], None, [], None, None, None
    limits = {"alignable": 0, "min_sources": quality_pars["MIN_OBSERVABLE_THRESHOLD"],
              "max_rms_mas": quality_pars["MAX_FIT_LIMIT"]}
    with Timer() as t, captured_output() as out, working_directory(d), \
            bounded_requests(service_timeout(ctx.run.environment)) as requests_log:
        wcs = common_wcs(d, files)
        ctx.progress(f"source finding in {len(files)} exposures")
        table = alignment_table(files, workers=ctx.cores, **pars)
        try:
            limits["alignable"] = len(table.process_list or [])
            # doProcess says it (status is the later fit's, 9999 until a fit sets it).
            excluded = {str(r["imageName"]): str(r["processMsg"]) for r in table.filtered_table
                        if not r["doProcess"]}
            found = {}
            if limits["alignable"]:
                methods = table.get_fit_methods()
                if len(table.process_list) == 1:
                    methods.remove("relative")
                if ctx.config.centroids == "psf":
                    # Before the first configure_fit, which renames the position columns.
                    ctx.progress("PSF-fitted source positions")
                    refined = refine_catalogs(table.extracted_sources, mask_bits=pars["sat_flags"])
                    centroids = {name: {str(chip): v for chip, v in chips.items()} for name, chips in refined.items()}
                for name, chips in table.extracted_sources.items():
                    found[name] = int(sum(len(c) for c in (chips or {}).values() if c is not None))
            stop = rules.too_few_sources(limits["alignable"], found, limits["min_sources"])
            candidates = []
            if stop is None:
                for method in methods:
                    for i, catalog in enumerate(catalogs):
                        last = i == len(catalogs) - 1
                        ctx.progress(f"reference catalog {catalog} and {method} fit")
                        try:
                            cand = _fit_to(rules, table, catalog, method, apars, last=last)
                        except Exception as exc:  # noqa: BLE001 - a catalog the service lacks is one bad candidate
                            cand = {"catalog": catalog, "method": method, "fit_quality": 5, "valid": False,
                                    "rms_mas": None, "matches": None,
                                    "reason": f"reference catalog unavailable: {exc}"}
                        if requests_log.failures:
                            # The service itself did not answer: the other catalogs are on it too.
                            stop = unanswered = requests_log.failures[0].describe(f"the {catalog} catalog")
                            break
                        no_catalog = None
                        if not cand.get("reference_sources"):  # none, or the catalog could not be read
                            no_catalog = requests_log.no_catalog(amutils.SERVICELOCATION, catalog)
                            if no_catalog:
                                cand["reason"] = no_catalog
                        candidates.append(cand)
                        facts.append((CANDIDATE, cand))
                        ctx.progress(f"candidate {catalog} {method}: fit quality {cand['fit_quality']}"
                                     + (f", rms {cand['rms_mas']:.2f} mas" if cand.get("rms_mas") is not None
                                        else ""), point="fitted")
                        if cand.pop("too_few_reference_sources", False) and last:
                            # perform_align gives up here, whatever it found before (align.py 3.11).
                            # A service that sent no catalog is the reason, not the sky's lack of sources.
                            abandoned = (f"{no_catalog}; {catalog} is the last reference catalog" if no_catalog
                                         else f"only {cand['reference_sources']} sources in {catalog}, the last "
                                         "reference catalog") + ": drizzlepac abandons the alignment"
                            break
                        if rules.catalog_search_ends(candidates):
                            break
                    if stop is not None or abandoned or rules.fit_search_ends(candidates, method):
                        break
                if stop is None:
                    decision = rules.choose_fit(candidates, limits["max_rms_mas"], abandoned)
                    if decision["chosen_catalog"] is None:
                        stop = decision["reason"]
            matched = pairs = None
            if stop is None:
                table.select_fit(decision["chosen_catalog"], decision["chosen_method"])
                first = table.filtered_table[0]
                matched = {"sources": int(first["matchSources"]), "catalog_sources": int(first["catalogSources"]),
                           "fraction": float(first["matchSources"]) / max(1, int(first["catalogSources"]))}
                pairs = matched_pairs(table.selected_fit, table.reference_catalogs[decision["chosen_catalog"]],
                                      decision["chosen_catalog"], decision["chosen_method"])
                table.apply_fit(headerlet_filenames={e.name: e.alignment_headerlet for e in fitted})
        finally:
            table.close()
    payload = {"excluded": excluded, "sources_found": found, "catalogs": catalogs, "methods": methods,
               "centroids": {"method": ctx.config.centroids, "refined": centroids},
               "common_wcs": wcs, "fit_limits": limits, "seconds": t.elapsed, "log": out.getvalue(),
               "requests_failed": [f.__dict__ for f in requests_log.failures]}
    if abandoned:
        payload["abandoned"] = abandoned
    if unanswered:
        payload["unanswered"] = unanswered
    if stop is not None:
        # The decisions the runner takes from this payload and the candidates say why the stage stops.
        return StepResult(payload, facts=facts)
    # Exposures of the other kind (FLT when FLC were fitted) take the same WCS, as runastrodriz 3.11
    # gives it: the fit keywords copied, the FLC's headerlet applied as primary, the old WCS archived.
    applied = {}
    if inputs.fit_applied_to:
        # In the stage directory: stwcs's headerlet functions write their log in the working directory.
        with captured_output() as out, working_directory(d):
            applied = apply_fit_to_flt(d, fitted, inputs.fit_applied_to)
        payload["log"] += out.getvalue()
    names_all = inputs.exposures.names
    summary = {n: _wcs_summary(d / n) for n in names_all}
    names = sorted({w for s in summary.values() for w in s["wcsnames"]})
    best = next(c for c in candidates if (c["catalog"], c["method"]) ==
                (decision["chosen_catalog"], decision["chosen_method"]))
    # The chosen fit's matched pairs, for the residuals a report shows; handed back with the products.
    matches_file = fit_matches_name(ctx.root)
    write_matched_pairs(pairs, d / matches_file)
    files = hashes(d, [*names_all, matches_file, *sorted(set(applied.values()))])
    payload.update(wcsname=names[0] if len(names) == 1 else names, chosen_catalog=best["catalog"],
                   chosen_method=best["method"], rms_mas=best["rms_mas"], matches=best["matches"],
                   matched=matched, exposures=summary, files=files, flt_headerlets=applied,
                   fit_matches={"file": matches_file, "sha256": files[matches_file], "pairs": len(pairs),
                                "fitted_pairs": pairs.meta["fitted_pairs"],
                                "total_rms_mas": pairs.meta["total_rms_mas"]})
    return StepResult(payload, facts=facts)


def database_headerlets_written(run) -> list[str]:
    """The astrometry database's new headerlets the a priori update wrote (handed back whatever the verdict)."""
    if not run.is_completed("apriori", "updatewcs"):
        return []
    return list(run.output("apriori", "updatewcs").get("database_headerlets", []))


def conclude(ctx: StepContext) -> StepResult:
    """Keep the stage's WCS or discard its directory, as the ``<stage>_stage`` decision taken before the step says.

    A discarded a priori stage keeps only the database headerlets its update wrote: the final stage
    hands them back.
    """
    from drizzlepac import runastrodriz

    decision = ctx.decisions[f"{ctx.stage}_stage"]
    d = ctx.stage_dir()
    discarded, kept_files, restored = False, [], None
    updated = d / UPDATED_COPIES
    if ctx.stage == "apriori" and updated.exists():
        if decision["kept"]:
            if not ctx.config.debug:
                shutil.rmtree(updated)
        else:
            # runastrodriz 3.11's restore_pipeline_default: updatewcs(use_db=False) makes the
            # pipeline-default WCS primary again; the database's headerlets and alternate WCSs stay.
            names = ctx.inputs.exposures.names
            with captured_output(), working_directory(updated):
                runastrodriz.restore_pipeline_default(names)
            restored = hashes(updated, names)
    if not decision["kept"] and d.exists() and not ctx.config.debug:
        keep = set(database_headerlets_written(ctx.run)) if ctx.stage == "apriori" else set()
        if restored is not None:
            keep.add(UPDATED_COPIES)
        kept_files = sorted(keep)
        if keep:
            for p in d.iterdir():
                if p.name not in keep:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        else:
            shutil.rmtree(d)
        discarded = True
    payload = {"kept": decision["kept"], "reason": decision["reason"], "directory_removed": discarded,
               "kept_files": kept_files}
    if restored is not None:
        payload["restored"] = restored
    return StepResult(payload)
