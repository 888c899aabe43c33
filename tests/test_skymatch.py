"""Sky matching through the pipeline gives what stsci.skypac's skymatch gives on the same files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from astrodriz_sm.statemachine import fold
from astrodriz_sm.store.eventstore import EventStore

from .conftest import NO_ALIGNMENT, run_cli

ROOT = "jsm001010"


def _mdrizsky(path: Path) -> list[float | None]:
    """MDRIZSKY of every SCI extension, in extension order (None where there is none)."""
    with fits.open(path) as hdul:
        return [h.header.get("MDRIZSKY") for h in hdul if h.name == "SCI"]


def _skymatch_directly(files: list[Path], pars: dict, workdir: Path) -> dict:
    """``stsci.skypac.skymatch`` on copies of ``files``, set up as drizzlepac.sky._skymatch sets it up.

    AstroDrizzle hands skymatch one mask per chip: the DQ mask (``sky_bits`` good) after
    ``resetbits`` cleared the cosmic-ray flags, combined with the static mask (pixels more than
    ``static_sig`` sigma below the chip's mode in any exposure with that chip); ``dq_bits`` is then
    None. The masks are built here from the files the same way.

    Returns
    -------
    dict
        ``{file name: [MDRIZSKY per SCI extension]}``.
    """
    from drizzlepac import buildmask
    from stsci.imagestats import ImageStats
    from stsci.skypac.parseat import FileExtMaskInfo
    from stsci.skypac.skymatch import skymatch
    from stsci.skypac.utils import MultiFileLog, temp_mask_file
    from stsci.tools.bitmask import interpret_bit_flags

    workdir.mkdir()
    copies = []
    for f in files:
        shutil.copy2(f, workdir / f.name)
        copies.append(workdir / f.name)
    sci_ext = {}
    static = {}
    with_static = pars["static"] and pars["use_static"]
    for path in copies:
        with fits.open(path, mode="update") as hdul:
            sci_ext[path] = [h.ver for h in hdul if h.name == "SCI"]
            for ver in sci_ext[path]:
                hdul["SCI", ver].header.pop("MDRIZSKY", None)
                dq = hdul["DQ", ver].data
                dq &= ~np.array(pars["resetbits"], dtype=dq.dtype)
                if not with_static:
                    continue
                data = hdul["SCI", ver].data
                stats = ImageStats(data, nclip=3, fields="mode", lower=np.nanmin(data), upper=np.nanmax(data))
                keep = static.setdefault(ver, np.ones(data.shape, dtype=np.int16))
                if len(stats.histogram) >= 2:
                    np.bitwise_and(keep, np.logical_not(data < stats.mode - pars["static_sig"] * stats.stddev), keep)
    sky_bits = interpret_bit_flags(pars["sky_bits"])
    infos = []
    for path in copies:
        fi = FileExtMaskInfo(default_ext=("SCI", "*"), default_mask_ext=0, clobber=False, doNotOpenDQ=True,
                             fnamesOnly=False, im_fmode="update", dq_fmode="readonly", msk_fmode="readonly")
        fi.image = str(path)
        fi.append_ext([("SCI", ver) for ver in sci_ext[path]])
        fi.finalize()
        fi.clear_masks()
        with fits.open(path) as hdul:
            for ver in sci_ext[path]:
                mask = None if sky_bits is None else buildmask.buildMask(hdul["DQ", ver].data, sky_bits)
                if with_static:
                    mask = static[ver] if mask is None else np.logical_and(mask, static[ver]).astype(np.uint8)
                if mask is None:  # neither DQ nor static mask: skymatch uses every pixel
                    fi.append_mask(None, None)
                    continue
                _, ref = temp_mask_file(mask, path.stem, prefix="", suffix="skymatch_mask", ext=("SCI", ver),
                                        randomize_prefix=False, dir=str(workdir))
                fi.append_mask(ref, 0)
                ref.release()
        fi.finalize()
        infos.append(fi)
    skymatch(infos, skymethod=pars["skymethod"], skystat=pars["skystat"], lower=pars["skylower"],
             upper=pars["skyupper"], nclip=pars["skyclip"], lsigma=pars["skylsigma"], usigma=pars["skyusigma"],
             binwidth=pars["skywidth"], skyuser_kwd="MDRIZSKY", units_kwd="BUNIT", readonly=not pars["skysub"],
             dq_bits=None, optimize="inmemory" if pars["in_memory"] else "balanced", clobber=True, clean=True,
             verbose=True, flog=MultiFileLog(console=False, enableBold=False), _taskname4history="AstroDrizzle")
    for fi in infos:
        fi.release_all_images()
    return {p.name: _mdrizsky(p) for p in copies}


@pytest.mark.parametrize("skymethod", ["match", "globalmin+match"])
def test_pipeline_sky_values_are_skymatch_values(simulated, tmp_path, skymethod):
    _, d = simulated("skymatch", n_exposures=4, skymethod=skymethod)
    proc = run_cli("start", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **NO_ALIGNMENT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = EventStore(d / "astrodriz_sm.db")
    run = fold(store.events(store.latest_run()["run_id"]))
    products = {p["product"]: p for p in run.output("final", "astrodrizzle")["products"]}
    assert set(products) == {f"{ROOT}_drz.fits", f"{ROOT}_drc.fits"}
    for product in products.values():
        pars = product["parameters"]
        assert pars["skymethod"] == skymethod and pars["skysub"]
        files = [d / name for name in product["inputs"]]
        assert len(files) == 4
        pipeline = {f.name: _mdrizsky(f) for f in files}
        print(product["product"], "pipeline", pipeline)
        direct = _skymatch_directly(files, pars, tmp_path / product["product"].split(".")[0])
        print(product["product"], "skymatch", direct)
        assert pipeline == direct
        # 'match' reports sky relative to one exposure: that one gets 0, the others their offsets;
        # 'globalmin+match' adds the lowest sky of all (about the simulated 50 e-) to every value.
        values = sorted(v for vs in direct.values() for v in vs)
        assert values[0] < values[-1]
        if skymethod == "match":
            assert values[0] == 0.0
        else:
            assert 45 < values[0] < 55
