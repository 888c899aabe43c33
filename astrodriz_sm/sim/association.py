"""Simulate an HST association (ACS/WFC, ACS/HRC, ACS/SBC, WFC3/UVIS, WFC3/IR) with a known truth.

For each exposure the simulator

1. writes a header with the *true* pointing (field centre plus a small box
   dither) and runs ``stwcs.updatewcs`` on a scratch copy: the resulting WCS
   (SIP, and NPOL/D2IM with real reference files) is the truth;
2. renders the truth catalog, propagated to the date of observation, through
   that WCS, and adds sky, noise and cosmic rays;
3. delivers FLT/FLC files whose OPUS-style headers (linear TAN WCS, no
   WCSNAME, no SIP) carry the pointing moved by the injected error, and checks
   by running updatewcs on a copy that the recovered WCS is off from the truth
   by exactly that error;
4. writes what the STScI astrometry services would answer for the exposures
   (reference catalogs, a priori headerlets, guide-star offsets) to
   ``<outdir>/service`` (see `astrodriz_sm.sim.service`), checking that each a
   priori solution is off from the truth by the residual it is meant to leave.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import vstack

from ..model import input_name
from . import headers as hdr
from . import wfpc2
from .config import POINTING_ERROR_PA, SimConfig, SimResult
from .instruments import Detector, chip_models, detector
from .reffiles import ReferenceSet, prepare_reference_files
from .render import (
    add_cosmic_rays,
    add_noise,
    make_truth_catalog,
    propagate,
    render_stars,
)
from .service import write_service_data
from .templates import Templates, load_templates, templated_aux, templated_primary, templated_sci
from .wcs import chip_center_offset, offset_radec, pixel_offset_to_arcsec, sci_wcs, updated_copy, updated_wcs

__all__ = ["CR_PER_MEGAPIXEL", "DITHER_BOX", "REFERENCE_FIELD_FACTOR", "simulate_association"]

#: Dither offsets of the first four exposures (pixels), an ACS-like box with
#: sub-pixel phases; later exposures repeat it shifted by a third of a pixel.
DITHER_BOX = ((0.0, 0.0), (5.0, 1.5), (2.5, 4.0), (-2.5, 2.5))
#: Cosmic-ray hits per million pixels in a 400 s ACS/WFC exposure (~300 on 512x512);
#: see `Detector.cr_per_megapixel` for the others.
CR_PER_MEGAPIXEL = 1150.0
#: Largest acceptable difference (arcsec) between injected and recovered header offsets.
OFFSET_TOLERANCE = 1.0e-3
#: Radius of the truth catalog's sky disk in units of the radius of the circle
#: around exposure 0's chips: reference catalogs must cover more than the
#: footprint, as a catalog query around a real field does.
REFERENCE_FIELD_FACTOR = 1.5
#: Pixels around each chip of exposure 0 over which the field stars are drawn.
FIELD_MARGIN = 12.0


def dither_offset(index: int) -> tuple[float, float]:
    """Detector-pixel dither of exposure ``index``."""
    dx, dy = DITHER_BOX[index % len(DITHER_BOX)]
    shift = (index // len(DITHER_BOX)) / 3.0
    return dx + shift, dy + shift


# FITS data types of the per-chip extensions.
_EXT_DTYPES = {"SCI": np.float32, "ERR": np.float32, "DQ": np.int16, "SAMP": np.int16, "TIME": np.float32}


def _exposure_hdul(primary: fits.Header, chips: list[tuple[fits.Header, dict[str, np.ndarray]]],
                   det: Detector, templates: Templates | None,
                   layouts: list[hdr.ChipLayout]) -> fits.HDUList:
    hdul = fits.HDUList([fits.PrimaryHDU(header=primary)])
    for (sci_header, arrays), lay in zip(chips, layouts):
        for extname in det.extensions:
            if extname == "SCI":
                header = sci_header
            elif templates is None:
                header = hdr.aux_header(extname, sci_header)
            else:
                header = templated_aux(templates, det, extname, sci_header, lay)
            hdul.append(fits.ImageHDU(arrays[extname].astype(_EXT_DTYPES[extname]), header=header))
    return hdul


def _pointing_file(path: Path, primary: fits.Header, layouts: list[hdr.ChipLayout],
                   member: str, crval: tuple[float, float], pa_v3: float,
                   det: Detector, templates: Templates | None) -> Path:
    """Header-only exposure (zero-filled SCI) whose reference chip points at ``crval``.

    Only the reference chip's CRVAL and every chip's CRPIX matter to makewcs
    (see `astrodriz_sm.sim.wcs`); the CD matrix is a rough guess that updatewcs
    replaces.
    """
    theta = np.deg2rad(pa_v3)
    scale = det.pixel_scale / 3600.0
    cd = scale * np.array([[-np.cos(theta), np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    hdul = fits.HDUList([fits.PrimaryHDU(header=primary)])
    for lay in layouts:
        zeros = np.zeros((lay.naxis2, lay.naxis1), dtype=np.uint8)
        if det.is_wfpc2:
            h = wfpc2.sci_header(det, layout=lay, member=member, crval=crval, crpix=lay.crpix, cd=cd,
                                 orientat=0.0)
        elif templates is None:
            h = hdr.sci_header(layout=lay, member=member, crval=crval, crpix=lay.crpix, cd=cd,
                               ngoodpix=lay.naxis1 * lay.naxis2, orientat=0.0)
        else:
            h = templated_sci(templates, det, layout=lay, member=member, crval=crval, crpix=lay.crpix,
                              cd=cd, orientat=0.0, data=zeros, err=zeros, dq=zeros)
        hdul.append(fits.ImageHDU(zeros, header=h))
    hdul.writeto(path, overwrite=True)
    return path


def _catalog_field(rng: np.random.Generator, config: SimConfig, wcs0: list,
                   layouts: list[hdr.ChipLayout], epoch: float):
    """Truth catalog: stars uniform over the chips of exposure 0 (plus a dither margin),
    then stars at the same density over a surrounding disk that no exposure sees.

    The surrounding stars are drawn after the field stars, so they leave the
    field stars (and hence the images) as they would be without them.
    """
    margin = FIELD_MARGIN
    n = config.n_stars
    chip_index = rng.integers(0, len(layouts), n)
    x = np.empty(n)
    y = np.empty(n)
    for k, lay in enumerate(layouts):
        sel = chip_index == k
        x[sel] = rng.uniform(-margin, lay.naxis1 - 1 + margin, sel.sum())
        y[sel] = rng.uniform(-margin, lay.naxis2 - 1 + margin, sel.sum())
    ra = np.empty(n)
    dec = np.empty(n)
    for k in range(len(layouts)):
        sel = chip_index == k
        if sel.any():
            ra[sel], dec[sel] = wcs0[k].all_pix2world(x[sel], y[sel], 0)
    field = make_truth_catalog(rng, ra, dec, epoch)
    ra_out, dec_out = _surrounding_positions(rng, n, wcs0, layouts, margin)
    if ra_out.size == 0:
        return field
    return vstack([field, make_truth_catalog(rng, ra_out, dec_out, epoch)], metadata_conflicts="silent")


def _surrounding_positions(rng: np.random.Generator, n_field: int, wcs0: list,
                           layouts: list[hdr.ChipLayout], margin: float):
    """Positions uniform over a disk around the field, outside the field's chip boxes.

    The disk is centred on the field and `REFERENCE_FIELD_FACTOR` times as
    large as the circle through the corners of the (margin-extended) chips;
    ``n_field`` stars over the boxes set the density.
    """
    corners, box_area = [], 0.0
    for w, lay in zip(wcs0, layouts):
        x0, y0, x1, y1 = -margin, -margin, lay.naxis1 - 1 + margin, lay.naxis2 - 1 + margin
        corners.append(w.all_pix2world([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], 0))
        box_area += (x1 - x0) * (y1 - y0) * abs(np.linalg.det(w.wcs.cd)) * 3600.0 ** 2
    corners = np.vstack(corners)
    xyz = SkyCoord(corners[:, 0], corners[:, 1], unit="deg").cartesian.xyz.value.mean(axis=1)
    center = SkyCoord(np.degrees(np.arctan2(xyz[1], xyz[0])) % 360.0,
                      np.degrees(np.arctan2(xyz[2], np.hypot(xyz[0], xyz[1]))), unit="deg")
    radius = REFERENCE_FIELD_FACTOR * float(
        center.separation(SkyCoord(corners[:, 0], corners[:, 1], unit="deg")).arcsec.max())
    n_draw = round(n_field * np.pi * radius ** 2 / box_area)
    r = radius * np.sqrt(rng.uniform(0.0, 1.0, n_draw))
    theta = rng.uniform(0.0, 2.0 * np.pi, n_draw)
    pos = center.spherical_offsets_by(r * np.sin(theta) * u.arcsec, r * np.cos(theta) * u.arcsec)
    ra, dec = pos.ra.deg, pos.dec.deg
    outside = np.ones(n_draw, dtype=bool)
    for w, lay in zip(wcs0, layouts):
        # Linear pre-selection (distortion moves chip corners by ~60 pixels at most).
        xl, yl = w.wcs_world2pix(ra, dec, 0)
        near = (xl > -margin - 200) & (xl < lay.naxis1 + margin + 200) & \
               (yl > -margin - 200) & (yl < lay.naxis2 + margin + 200)
        if near.any():
            x, y = w.all_world2pix(ra[near], dec[near], 0, tolerance=1e-6, maxiter=50, quiet=True)
            inside = (x >= -margin) & (x <= lay.naxis1 - 1 + margin) & \
                     (y >= -margin) & (y <= lay.naxis2 - 1 + margin)
            outside[np.flatnonzero(near)[inside]] = False
    return ra[outside], dec[outside]


def _render_chip(rng: np.random.Generator, truth, layout: hdr.ChipLayout, ra: np.ndarray,
                 dec: np.ndarray, flux: np.ndarray, n_cr_mean: float, det: Detector):
    """SCI, ERR, DQ (electrons) and cosmic-ray mask of one chip."""
    # Cheap linear pre-selection: the iterative inverse is only needed near the chip.
    xl, yl = truth.wcs_world2pix(ra, dec, 0)
    near = (xl > -60) & (xl < layout.naxis1 + 60) & (yl > -60) & (yl < layout.naxis2 + 60)
    if near.any():
        x, y = truth.all_world2pix(ra[near], dec[near], 0, tolerance=1e-7, maxiter=50)
    else:  # an empty field (stwcs's iterative inverse cannot take no points)
        x = y = np.empty(0)
    # One PSF on the sky: a chip with smaller pixels (the WFPC2 PC) sees it wider, in its own pixels.
    sigma = det.psf_sigma * det.pixel_scale / (abs(np.linalg.det(truth.wcs.cd)) ** 0.5 * 3600.0) \
        if det.is_wfpc2 else det.psf_sigma
    signal = render_stars((layout.naxis2, layout.naxis1), x, y, flux[near], sigma=sigma)
    data = add_noise(rng, signal, sky=det.sky_level, readnoise=det.readnoise)
    if det.cosmic_rays:
        crmask = add_cosmic_rays(rng, data, int(rng.poisson(n_cr_mean)))
    else:
        crmask = np.zeros(data.shape, dtype=np.uint8)
    dq = np.zeros(data.shape, dtype=np.int16)
    saturated = data >= det.saturation
    data[saturated] = det.saturation
    dq[saturated] = 8 if det.is_wfpc2 else 256  # WFPC2's A-to-D saturation flag
    err = np.sqrt(np.clip(data, 0.0, None) + det.readnoise ** 2)
    return data, err, dq, crmask


def _zero_exposure_chip(layout: hdr.ChipLayout, det: Detector):
    """SCI, ERR, DQ and cosmic-ray mask of a chip whose shutter never opened.

    Nothing reached the detector and the bias is removed, so SCI is zero;
    ERR is what the noise model gives for no signal, the read noise.
    """
    shape = (layout.naxis2, layout.naxis1)
    return (np.zeros(shape), np.full(shape, float(det.readnoise)), np.zeros(shape, dtype=np.int16),
            np.zeros(shape, dtype=np.uint8))


def _chip_arrays(det: Detector, data: np.ndarray, err: np.ndarray, dq: np.ndarray,
                 exptime: float) -> dict[str, np.ndarray]:
    """Extension arrays of one chip from its electrons; count-rate detectors get e-/s, SAMP and TIME."""
    if det.is_wfpc2:
        return {"SCI": data / det.gain, "DQ": dq}  # counts (DN), as the _c0m files hold them
    if not det.count_rate:
        return {"SCI": data, "ERR": err, "DQ": dq}
    # WFC3/IR: the ramp fit gives e-/s; TIME holds the integration time of each pixel.
    scale = 1.0 / exptime if exptime else 1.0
    return {"SCI": data * scale, "ERR": err * scale, "DQ": dq,
            "SAMP": np.full(data.shape, det.nsamp if exptime else 0, dtype=np.int16),
            "TIME": np.full(data.shape, float(exptime), dtype=np.float32)}


def _write_wfpc2_exposure(outdir: Path, member: str, primary, index: int, postarg,
                          chips: list[tuple[fits.Header, dict[str, np.ndarray]]]) -> Path:
    """Write a WFPC2 exposure's ``_c0m`` (SCI groups, counts) and ``_c1m`` (DQ groups) files."""
    c0m = outdir / input_name(member, "c0m")
    hdul = fits.HDUList([fits.PrimaryHDU(header=primary(index, "c0m", postarg))])
    for sci, arrays in chips:
        hdul.append(fits.ImageHDU(arrays["SCI"].astype(np.float32), header=sci))
    hdul.writeto(c0m, overwrite=True)
    wfpc2.dq_hdulist(primary(index, "c1m", postarg), [sci for sci, _ in chips],
                     [arrays["DQ"] for _, arrays in chips]).writeto(outdir / input_name(member, "c1m"),
                                                                    overwrite=True)
    return c0m


def _run_environment(outdir: Path, det: Detector) -> dict[str, str]:
    """Environment a pipeline needs for these files: the reference variable, and WFPC2's CRDS cache."""
    env = {det.refvar: f"{outdir.resolve()}/"}
    if det.is_wfpc2:
        env.update(wfpc2.crds_environment((outdir / "crds").resolve()))
    return env


def _config_json(config: SimConfig) -> dict:
    """The configuration for the truth JSON.

    Fields that select a detector other than ACS/WFC are written only when
    they are not at their defaults, so that an ACS/WFC truth file stays as
    it has always been.
    """
    values = dataclasses.asdict(config)
    defaults = SimConfig()
    for key in ("instrument", "template_dir"):
        if values[key] == getattr(defaults, key):
            del values[key]
    return values


def simulate_association(outdir: str | Path, config: SimConfig | None = None) -> SimResult:
    """Write a simulated association and its truth to ``outdir``.

    Parameters
    ----------
    outdir : path-like
        Output directory (created if needed).  Run the pipeline with the
        detector's reference variable pointing at it (``jref=<outdir>/`` for
        ACS, ``iref=<outdir>/`` for WFC3; `SimResult.refvar`).
    config : SimConfig, optional
        Defaults to ``SimConfig()``.

    Returns
    -------
    SimResult

    Raises
    ------
    RuntimeError
        If updatewcs on a delivered file does not reproduce the truth WCS
        moved by the injected offset (to 1 mas at the chip centre).
    """
    config = config or SimConfig()
    outdir = Path(outdir)
    truthdir = outdir / "truth"
    truthdir.mkdir(parents=True, exist_ok=True)

    det = detector(config.instrument)
    if det.is_wfpc2:
        chips = wfpc2.chip_models(config.template_dir)
    else:
        chips = chip_models(det, config.template_dir) if det.template is not None else None
    templates = load_templates(det, config.template_dir) if det.template is not None else None
    refs: ReferenceSet = prepare_reference_files(outdir, config.refdir,
                                                 max_images=max(4, config.n_exposures), det=det,
                                                 template_dir=config.template_dir,
                                                 skymethod=config.skymethod)
    layouts = hdr.chip_layouts(config.full_frame, config.subarray_size, det, chips)
    members = hdr.member_names(config.root, config.n_exposures)
    root = config.root.lower()
    seeds = np.random.SeedSequence(config.seed).spawn(config.n_exposures + 1)
    # The last zero_exptime_members exposures start on schedule but never open the shutter.
    exptimes = [0.0 if i >= config.n_exposures - config.zero_exptime_members else config.exptime
                for i in range(config.n_exposures)]
    timings = [hdr.exposure_timing(config.date_obs, config.exptime, i) for i in range(config.n_exposures)]
    timings = [t if exptime else dataclasses.replace(t, expend=t.expstart) for t, exptime in zip(timings, exptimes)]

    def primary(i: int, suffix: str, postarg=(0.0, 0.0)) -> fits.Header:
        kwargs = {"member": members[i], "asn_id": root, "suffix": suffix, "layouts": layouts,
                  "timing": timings[i], "refs": refs, "pa_v3": config.pa_v3,
                  "ra_targ": config.ra, "dec_targ": config.dec, "exptime": exptimes[i],
                  "drizcorr": config.drizcorr, "postarg": postarg}
        if det.is_wfpc2:
            return wfpc2.primary_header(det, **kwargs)
        if templates is None:
            return hdr.primary_header(**kwargs)
        return templated_primary(templates, det, **kwargs)

    with tempfile.TemporaryDirectory(prefix="sim_truth_") as tmp:
        tmp = Path(tmp)
        # Exposure 0 sits at the nominal pointing; its CD converts dithers to sky offsets.
        base = updated_wcs(_pointing_file(tmp / "base_flt.fits", primary(0, "flt"), layouts,
                                          members[0], (config.ra, config.dec), config.pa_v3,
                                          det, templates), outdir)
        ref_cd = base[0].wcs.cd
        pointings, postargs, truths = [], [], []
        for i in range(config.n_exposures):
            east, north = pixel_offset_to_arcsec(ref_cd, *dither_offset(i))
            pointing = offset_radec(config.ra, config.dec, east, north)
            pointings.append(pointing)
            # POSTARGs are in the aperture frame, close to detector x/y for this purpose.
            postargs.append(tuple(det.pixel_scale * d for d in dither_offset(i)))
            truths.append(base if i == 0 else updated_wcs(
                _pointing_file(tmp / f"{members[i]}_flt.fits", primary(i, "flt"), layouts,
                               members[i], pointing, config.pa_v3, det, templates), outdir))

        catalog = _catalog_field(np.random.default_rng(seeds[0]), config, truths[0], layouts,
                                 timings[0].decimal_year)
        flux = 10.0 ** (-0.4 * (np.asarray(catalog["mag"]) - det.zero_point)) * config.exptime

        # Header offsets (east, north arcsec) injected into each delivered exposure.
        pa = np.deg2rad(POINTING_ERROR_PA)
        common = (config.pointing_error * np.sin(pa), config.pointing_error * np.cos(pa))
        injected = []
        for i in range(config.n_exposures):
            east, north = common
            if i == 1 and config.guiding_failure:
                ge, gn = pixel_offset_to_arcsec(truths[i][0].wcs.cd, config.guiding_failure, 0.0)
                east, north = east + ge, north + gn
            injected.append((float(east), float(north)))

        flt_paths, flc_paths, raw_paths, cr_paths, exposures_json, updated = [], [], [], [], [], []
        c0m_paths: list[Path] = []
        n_cr_mean = det.cr_per_megapixel * config.exptime / 400.0 * 1e-6
        for i, member in enumerate(members):
            rng = np.random.default_rng(seeds[i + 1])
            ra, dec = propagate(catalog, timings[i].decimal_year)
            chips, masks = [], []
            for lay, truth in zip(layouts, truths[i]):
                if exptimes[i]:
                    data, err, dq, crmask = _render_chip(rng, truth, lay, ra, dec, flux,
                                                         n_cr_mean * lay.naxis1 * lay.naxis2, det)
                else:
                    data, err, dq, crmask = _zero_exposure_chip(lay, det)
                crval = offset_radec(*truth.wcs.crval, *injected[i])
                arrays = _chip_arrays(det, data, err, dq, exptimes[i])
                if det.is_wfpc2:
                    sci = wfpc2.sci_header(det, layout=lay, member=member, crval=crval,
                                           crpix=tuple(truth.wcs.crpix), cd=truth.wcs.cd,
                                           orientat=float(truth.orientat), dq=dq)
                elif templates is None:
                    sci = hdr.sci_header(layout=lay, member=member, crval=crval, crpix=tuple(truth.wcs.crpix),
                                         cd=truth.wcs.cd, ngoodpix=int((dq == 0).sum()),
                                         orientat=float(truth.orientat))
                else:
                    sci = templated_sci(templates, det, layout=lay, member=member, crval=crval,
                                        crpix=tuple(truth.wcs.crpix), cd=truth.wcs.cd,
                                        orientat=float(truth.orientat), data=arrays["SCI"],
                                        err=arrays["ERR"], dq=dq, exptime=exptimes[i])
                chips.append((sci, arrays))
                masks.append(crmask)

            if det.is_wfpc2:
                c0m_paths.append(_write_wfpc2_exposure(outdir, member, primary, i, postargs[i], chips))
            for kind, paths in (("flt", flt_paths), ("flc", flc_paths)):
                path = outdir / input_name(member, kind)
                if kind in config.products.split("+") and not det.is_wfpc2:
                    _exposure_hdul(primary(i, kind, postargs[i]), chips, det, templates,
                                   layouts).writeto(path, overwrite=True)
                    paths.append(path)
                elif path.exists():
                    # A stale file from an earlier simulation would be picked up by the pipeline.
                    path.unlink()

            raw = outdir / input_name(member, "d0m" if det.is_wfpc2 else "raw")
            raw_cards = [("EXTNAME", "SCI"), ("EXTVER", 1)]
            if layouts[0].header_ccdchip:
                raw_cards.append(("CCDCHIP", layouts[0].ccdchip))
            raw_sci = fits.ImageHDU(header=fits.Header(raw_cards))
            fits.HDUList([fits.PrimaryHDU(header=primary(i, raw.stem.split("_")[-1], postargs[i])),
                          raw_sci]).writeto(
                raw, overwrite=True)
            raw_paths.append(raw)

            cr_path = truthdir / f"{member}_crmask.fits"
            cr_hdul = fits.HDUList([fits.PrimaryHDU(header=fits.Header([("ROOTNAME", member),
                                                                        ("DATE", hdr.FIXED_DATE)]))])
            for lay, mask in zip(layouts, masks):
                cr_hdul.append(fits.ImageHDU(mask, header=fits.Header(
                    [("EXTNAME", "CRMASK"), ("EXTVER", lay.extver), ("CCDCHIP", lay.ccdchip)])))
            cr_hdul.writeto(cr_path, overwrite=True)
            cr_paths.append(cr_path)

            # The delivered header must recover the truth moved by exactly the injected offset.
            delivered = (flt_paths or flc_paths or c0m_paths)[-1]
            updated.append(updated_copy(delivered, outdir, tmp / "updated"))
            recovered = sci_wcs(updated[-1])
            measured = [chip_center_offset(t, r, lay.naxis1, lay.naxis2)
                        for t, r, lay in zip(truths[i], recovered, layouts)]
            for m in measured:
                if np.hypot(m[0] - injected[i][0], m[1] - injected[i][1]) > OFFSET_TOLERANCE:
                    raise RuntimeError(f"{member}: header offset {m} differs from injected {injected[i]}")
            exposures_json.append({
                "member": member,
                "dither_pixels": list(dither_offset(i)),
                "true_pointing_deg": list(pointings[i]),
                "injected_offset_arcsec": list(injected[i]),
                "measured_offset_arcsec": [list(m) for m in measured],
                "epoch": timings[i].decimal_year,
                "n_cosmic_ray_pixels": [int(m.sum()) for m in masks],
            })

        idcroot = refs.idctab.split("$")[-1].split("_")[0]
        service_dir = outdir / "service"
        if service_dir.exists():
            # Files of an earlier run (other solutions, other names) must not linger.
            shutil.rmtree(service_dir)
        service_json = None
        if config.service:
            service_json = write_service_data(service_dir, config=config, members=members,
                                              updated=updated, truths=truths, layouts=layouts,
                                              injected=injected, common=common, catalog=catalog,
                                              idcroot=idcroot)
            for entry, extra in zip(exposures_json, service_json["exposures"]):
                entry.update(extra)

    asn = outdir / f"{root}_asn.fits"
    hdr.asn_hdulist(root, members, ra_targ=config.ra, dec_targ=config.dec,
                    date_obs=timings[0].date_obs, det=det).writeto(asn, overwrite=True)

    truth_catalog = truthdir / f"{root}_truth.ecsv"
    catalog.write(truth_catalog, format="ascii.ecsv", overwrite=True)
    truth_json = truthdir / f"{root}_truth.json"
    truth = {
        "config": _config_json(config),
        "pointing_error_pa_deg": POINTING_ERROR_PA,
        "guiding_failure_axis": "detector +x of the reference chip, exposure 1",
        "reference_files": {k: v.name for k, v in refs.paths.items()},
        "wcsname": "IDC_" + idcroot,
        "n_field_stars": config.n_stars,
        "n_truth_stars": len(catalog),
        "exposures": exposures_json,
    }
    if templates is not None:
        truth["detector"] = {"instrument": det.instrume, "detector": det.detector, "refvar": det.refvar,
                             "kinds": list(det.kinds), "bunit": det.bunit, "template": det.template,
                             "psf_sigma_pixels": det.psf_sigma, "cosmic_rays": det.cosmic_rays}
    if service_json is not None:
        truth["service"] = service_json["service"]
    truth_json.write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n")

    return SimResult(outdir=outdir, root=root, asn=asn, members=members, flt=flt_paths,
                     flc=flc_paths, raw=raw_paths, truth_catalog=truth_catalog, cr_masks=cr_paths,
                     reference_files=dict(refs.paths), truth_json=truth_json,
                     injected_offsets=injected, service_dir=service_dir if config.service else None,
                     instrument=det.name, refvar=det.refvar, c0m=c0m_paths,
                     environment=_run_environment(outdir, det))
