"""The a priori and a posteriori stages: service probe, database solutions, fits to GAIA, conclusion.

The fitting itself is drizzlepac's (``align_utils.AlignmentTable``: analyze, source finding,
tweakwcs relative and absolute fits, ``determine_fit_quality``); what differs from
``align.perform_align`` is that every catalog is tried, every fit is a ``candidate`` event, and the
choice among them is one ``decision`` event with its rule.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..model import StageStop, StepResult
from ..statemachine import best_verified_stage, choose_fit, conclude_stage, stage_files
from ..statemachine.rules import VALID_FIT_QUALITY
from ..statemachine.state import CANDIDATE, DECISION
from .common import StepContext, Timer, captured_output, hashes, working_directory
from .drizzle import copy_into_stage
from .network import bounded_requests, service_timeout

# The libraries' own defaults, used when the variables are unset (runastrodriz does the same).
DEFAULT_URLS = {
    "ASTROMETRY_SERVICE_URL": "https://mast.stsci.edu/portal/astrometryDB/",
    "GSSS_WEBSERVICES_URL": "https://gsss.stsci.edu/webservices",
    "ASTROMETRIC_CATALOG_URL": "https://gsss.stsci.edu/webservices",
}
# Each probe gets this long at most; a stage probes one or two services, so an unreachable
# network costs a run under 5 s in all instead of stwcs's minutes of retries.
PROBE_TIMEOUT = 1.5
STAGE_SERVICES = {"apriori": ("ASTROMETRY_SERVICE_URL", "GSSS_WEBSERVICES_URL"),
                  "aposteriori": ("ASTROMETRIC_CATALOG_URL",)}
REQUIRED_SERVICE = {"apriori": "ASTROMETRY_SERVICE_URL", "aposteriori": "ASTROMETRIC_CATALOG_URL"}
# The reference catalogs tried, newest first, as the runastrodriz description lists them: GAIA with
# proper motions, then GAIA DR1 without (better for fields of distant galaxies).
APOSTERIORI_CATALOGS = ("GAIAeDR3", "GAIADR2", "GAIADR1")
# RMS values (mas) from this size on are drizzlepac's mark of a failed fit, not a measurement.
FAILED_FIT_RMS = 1e8


def service_url(ctx: StepContext, variable: str) -> str:
    """The service URL a stage uses: the recorded environment, else the library default."""
    return ctx.run.environment.get(variable) or DEFAULT_URLS[variable]


def probe_service(ctx: StepContext) -> StepResult:
    """One short check per service before a stage relies on it.

    Returns
    -------
    StepResult
        Per service: URL, reachable, reason. A stop when the service the stage needs does not
        answer, so the stage is skipped instead of waiting on retries.
    """
    from ..services import probe

    results = {}
    for variable in STAGE_SERVICES[ctx.stage]:
        url = service_url(ctx, variable)
        target = url + "availability" if variable == "ASTROMETRY_SERVICE_URL" else url
        with Timer() as t:
            ok, reason = probe(target, timeout=PROBE_TIMEOUT)
        results[variable] = {"url": url, "reachable": ok, "reason": reason, "seconds": t.elapsed}
    payload = {"services": results,
               "environment_update": {v: r["url"] for v, r in results.items()}}
    needed = results[REQUIRED_SERVICE[ctx.stage]]
    stop = None
    if not needed["reachable"]:
        stop = StageStop(f"{REQUIRED_SERVICE[ctx.stage]} unreachable ({needed['reason']}): stage skipped")
    return StepResult(payload, stop=stop)


def stage_inputs(ctx: StepContext) -> StepResult:
    """Copy the exposures of the best verified stage so far into this stage's directory."""
    from drizzlepac import resetbits

    source = best_verified_stage(ctx.run)
    payload = copy_into_stage(ctx, ctx.stage_dir(source), stage_files(ctx.run, source))
    payload["source_stage"] = source
    if not ctx.run.verdict("default"):
        # Misaligned default products flag star cores as cosmic rays: clear those flags before the
        # sources are measured again (runastrodriz's find_crs path).
        d = ctx.stage_dir()
        names = ctx.inputs.exposures.names
        with captured_output():
            for name in names:
                resetbits.reset_dq_bits(str(d / name), "4096,8192")
        payload["dq_bits_reset"] = "4096,8192"
        payload["files"] = hashes(d, names)
    return StepResult(payload)


def _wcs_summary(path: Path) -> dict:
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        primary = [str(h.header.get("WCSNAME", "")) for h in hdul if h.name == "SCI"]
        attached = sorted({str(h.header.get("WCSNAME", "")) for h in hdul if h.name == "HDRLET"})
    return {"wcsnames": primary, "headerlets": attached}


def apriori_updatewcs(ctx: StepContext) -> StepResult:
    """``updatewcs(use_db=True)``: fetch the database's solutions and apply the best one.

    Only solutions computed with the exposure's current IDCTAB are applied (stwcs's default);
    without one, stwcs computes a new a priori solution from the guide-star offsets.
    """
    from stwcs.updatewcs import updatewcs as stwcs_updatewcs

    from ..errors import ProcessingError

    d = ctx.stage_dir()
    default_name = ctx.run.output("default", "updatewcs").get("wcsname")
    groups = [[e.name for e in g] for g in ctx.inputs.exposures.lists]
    ctx.progress("updatewcs(use_db=True) against " + service_url(ctx, "ASTROMETRY_SERVICE_URL"))
    services = {service_url(ctx, v): what for v, what in (
        ("ASTROMETRY_SERVICE_URL", "the astrometry database"), ("GSSS_WEBSERVICES_URL", "the guide-star service"))}
    with Timer() as t, captured_output() as out, working_directory(d), \
            bounded_requests(service_timeout(ctx.run.environment)) as requests_log:
        failures = requests_log.failures
        for group in groups:
            try:
                stwcs_updatewcs(list(group), use_db=True, checkfiles=False)
            except Exception as exc:
                if failures:
                    break  # the service did not answer: said below, as the reason the stage stops
                raise ProcessingError(f"{d / group[0]}: updatewcs(use_db=True) failed: {exc}",
                                      str(d / group[0])) from exc
    if failures:
        first = failures[0]
        what = next((w for url, w in services.items() if first.url.startswith(url)), "a service")
        return StepResult({"seconds": t.elapsed, "log": out.getvalue(),
                           "requests_failed": [f.__dict__ for f in failures]},
                          stop=StageStop(f"{first.describe(what)}: stage skipped"))
    summary = {n: _wcs_summary(d / n) for g in groups for n in g}
    names = sorted({w for s in summary.values() for w in s["wcsnames"]})
    payload = {"wcsname": names[0] if len(names) == 1 else names, "exposures": summary,
               "files": hashes(d, [n for g in groups for n in g]), "seconds": t.elapsed, "log": out.getvalue()}
    stop = None
    if names == [default_name]:
        stop = StageStop(f"no a priori solution for IDCTAB {default_name}: "
                         "the exposures keep the pipeline-default WCS")
    elif len(names) != 1:
        stop = StageStop(f"exposures got different a priori WCSs {names}: not a consistent solution")
    return StepResult(payload, stop=stop)


def _fit_candidate(catalog: str, method: str, imglist, quality: int, rms: float, n_matches: int,
                   ref_count: int) -> dict:
    per_image = {}
    for item in imglist:
        info = item.meta.get("fit_info", {})
        per_image[f"{item.meta['name']}[{item.meta['chip']}]"] = {
            "status": str(info.get("status")), "nmatches": int(info.get("nmatches", 0) or 0),
            "fit_rms_mas": float(info.get("FIT_RMS", np.nan) or np.nan),
        }
    # drizzlepac reports a fit that failed with a sentinel RMS (1e9 mas): that is no RMS at all.
    rms = float(rms) if np.isfinite(rms) and float(rms) < FAILED_FIT_RMS else None
    cand = {"catalog": catalog, "method": method, "fit_quality": int(quality), "rms_mas": rms,
            "matches": int(n_matches), "reference_sources": int(ref_count),
            "valid": int(quality) in VALID_FIT_QUALITY and rms is not None, "exposures": per_image}
    if rms is None:
        cand["reason"] = "the fit failed (drizzlepac reported no RMS)"
    return cand


def _fit_to(table, catalog: str, method: str, apars: dict, last: bool) -> dict:
    """The candidate of one reference catalog: its fit, or why there is none.

    A fit that raises (tweakwcs's ``MatchSourceConfusionError``, too few matches...) is an invalid
    candidate with the exception's text, never a failed run.

    Raises
    ------
    Exception
        When the reference catalog could not be had (the caller makes that the candidate's reason).
    """
    from drizzlepac import align as dp_align

    minimum = apars["determine_fit_quality"]["MIN_CATALOG_THRESHOLD"]
    reference = dp_align.generate_astrometric_catalog(table.process_list, catalog=catalog, output=False)
    invalid = {"catalog": catalog, "method": method, "fit_quality": 5, "valid": False, "rms_mas": None,
               "matches": None, "reference_sources": len(reference)}
    if len(reference) < minimum:
        return {**invalid, "reason": f"only {len(reference)} reference sources (< {minimum})"}
    table.reset_group_id(len(reference))
    try:
        table.imglist = table.perform_fit(method, catalog, reference)
        rms, n_matches, quality, filtered, _ = dp_align.determine_fit_quality(
            table.imglist, table.filtered_table, not last, apars, print_fit_parameters=False)
    except Exception as exc:  # noqa: BLE001 - any failure of the fit makes this candidate invalid
        return {**invalid, "reason": f"fit failed: {type(exc).__name__}: {exc}".replace("\n", " ")}
    table.filtered_table = filtered
    return _fit_candidate(catalog, method, table.imglist, quality, rms, n_matches, len(reference))


def align(ctx: StepContext) -> StepResult:
    """A posteriori fit of the exposures to each reference catalog; the best fit goes into the headers.

    Each fit is a ``candidate`` fact and the choice among them (:func:`statemachine.choose_fit`) a
    ``decision`` fact.

    Returns
    -------
    StepResult
        The chosen catalog and WCSNAME, or a stop with the reason no fit was usable.
    """
    from drizzlepac import align as dp_align
    from drizzlepac.haputils import align_utils
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
    catalogs = list(APOSTERIORI_CATALOGS)
    method = "relative" if len(files) > 1 else "default"
    pars = {"MAX_SOURCES_PER_CHIP": apars["general"]["MAX_SOURCES_PER_CHIP"],
            # Verified default products mean trustworthy cosmic-ray flags: mask them too (runastrodriz).
            "sat_flags": 256 + 2048 + (4096 + 8192 if ctx.run.verdict("default") else 0)}
    pars.update(apars)
    stop, facts, decision = None, [], None
    with Timer() as t, captured_output() as out, working_directory(d), \
            bounded_requests(service_timeout(ctx.run.environment)) as requests_log:
        table = align_utils.AlignmentTable(files, **pars)
        try:
            if table.process_list is None:
                stop = "no exposure can be aligned (drizzlepac analyze excluded them all)"
            excluded = {str(r["imageName"]): str(r["processMsg"]) for r in table.filtered_table
                        if r["status"] != 0 or r["imageName"] not in (table.process_list or [])}
            found = {}
            if stop is None:
                ctx.progress(f"source finding in {len(table.process_list)} exposures")
                table.find_alignment_sources(output=False)
                for name, chips in table.extracted_sources.items():
                    found[name] = int(sum(len(c) for c in (chips or {}).values() if c is not None))
                threshold = quality_pars["MIN_OBSERVABLE_THRESHOLD"]
                sparse = {n: k for n, k in found.items() if k < threshold}
                if sparse:
                    stop = (f"not enough sources for a fit: {sparse} found, at least {threshold} "
                            "needed per exposure")
            candidates = []
            if stop is None:
                table.configure_fit()
                for i, catalog in enumerate(catalogs):
                    ctx.progress(f"reference catalog {catalog} and {method} fit")
                    try:
                        cand = _fit_to(table, catalog, method, apars, last=i == len(catalogs) - 1)
                    except Exception as exc:  # noqa: BLE001 - a catalog the service lacks is one bad candidate
                        cand = {"catalog": catalog, "method": method, "fit_quality": 5, "valid": False,
                                "rms_mas": None, "matches": None, "reason": f"reference catalog unavailable: {exc}"}
                    if requests_log.failures:
                        # The service itself did not answer: the other catalogs are on it too.
                        stop = f"{requests_log.failures[0].describe(f'the {catalog} catalog')}: stage skipped"
                        break
                    if cand.get("reference_sources") == 0:
                        reply = requests_log.last_reply(amutils.SERVICELOCATION)
                        if reply is not None and (reply.length == 0 or "html" in reply.content_type.lower()):
                            cand["reason"] = (f"the {catalog} catalog service at {amutils.SERVICELOCATION} "
                                              f"answered with no catalog ({reply.describe()})")
                    candidates.append(cand)
                    facts.append((CANDIDATE, cand))
                    ctx.progress(f"candidate {catalog}: fit quality {cand['fit_quality']}"
                                 + (f", rms {cand['rms_mas']:.2f} mas" if cand.get("rms_mas") is not None else ""),
                                 point="fitted")
                if stop is None:
                    decision = choose_fit(candidates, method)
                    facts.append((DECISION, decision))
                    if decision["chosen_catalog"] is None:
                        stop = decision["reason"]
            if stop is None:
                table.select_fit(decision["chosen_catalog"], method)
                table.apply_fit(headerlet_filenames={e.name: e.headerlet for e in fitted})
        finally:
            table.close()
    payload = {"excluded": excluded, "sources_found": found, "catalogs": catalogs, "method": method,
               "seconds": t.elapsed, "log": out.getvalue(),
               "requests_failed": [f.__dict__ for f in requests_log.failures]}
    if stop is not None:
        return StepResult(payload, facts=facts, stop=StageStop(stop))
    # Exposures of the other kind (FLT when FLC were fitted) take the same WCS.
    if inputs.exposures.unverified:
        from .final import copy_wcs

        copy_wcs(d, files, [e.name for e in inputs.exposures.unverified])
    names_all = inputs.exposures.names
    summary = {n: _wcs_summary(d / n) for n in names_all}
    names = sorted({w for s in summary.values() for w in s["wcsnames"]})
    best = next(c for c in candidates if c["catalog"] == decision["chosen_catalog"])
    payload.update(wcsname=names[0] if len(names) == 1 else names, chosen_catalog=best["catalog"],
                   rms_mas=best["rms_mas"], matches=best["matches"], exposures=summary,
                   files=hashes(d, names_all))
    return StepResult(payload, facts=facts)


def conclude(ctx: StepContext) -> StepResult:
    """Keep the stage's WCS or discard its directory, as :func:`statemachine.conclude_stage` decides."""
    decision = conclude_stage(ctx.run, ctx.stage)
    d = ctx.stage_dir()
    discarded = False
    if not decision["kept"] and d.exists() and not ctx.config.get("debug"):
        shutil.rmtree(d)
        discarded = True
    return StepResult({"kept": decision["kept"], "reason": decision["reason"], "directory_removed": discarded},
                      facts=[(DECISION, decision)])
