"""The matched source pairs of an a posteriori fit, as a table.

tweakwcs fits each group of chips (all exposures together for drizzlepac's relative fit, one
exposure's chips for the 2dhist and default fits) to the reference catalog. Its ``fit_info`` gives,
per group, ``matched_input_idx`` (rows of the group catalog, the members' catalogs stacked in order,
empty ones left out), ``matched_ref_idx`` (rows of the reference catalog) and ``fitmask`` (the pairs
the fit kept after clipping). drizzlepac's FIT_RMS is the standard deviation of the separations of
the kept pairs of a group, the image positions taken through the fitted WCS, and TOTAL_RMS their
mean over the groups; the table carries those positions, so its residuals give these numbers again.
"""

from __future__ import annotations

import numpy as np

# Columns of the table, in order, with their units and meaning (written into the ECSV header).
COLUMNS = (
    ("exposure", None, "exposure file whose source this is"),
    ("chip", None, "SCI extension version"),
    ("x", "pix", "source position on the chip (as tweakwcs fitted it)"),
    ("y", "pix", "source position on the chip"),
    ("ra", "deg", "source position through the fitted WCS"),
    ("dec", "deg", "source position through the fitted WCS"),
    ("ref_index", None, "row of the reference catalog"),
    ("ref_ra", "deg", "reference position"),
    ("ref_dec", "deg", "reference position"),
    ("dra_mas", "mas", "source minus reference, along RA (times cos Dec)"),
    ("ddec_mas", "mas", "source minus reference, along Dec"),
    ("fitted", None, "the pair was kept by the fit (not clipped)"),
    ("group", None, "fit group: the chips fitted together as one"),
)


def _groups(imglist) -> list[list]:
    """The fitted correctors grouped as tweakwcs grouped them: by ``group_id``, in list order."""
    groups: dict = {}
    for item in imglist:
        groups.setdefault(item.meta.get("group_id"), []).append(item)
    return list(groups.values())


def matched_pairs(imglist, reference, catalog: str, method: str):
    """The matched pairs of one fit, one row per pair.

    Parameters
    ----------
    imglist : list of tweakwcs correctors
        The fit's correctors (drizzlepac's ``AlignmentTable.fit_dict[(catalog, method)]``), their WCSs
        already corrected by the fit.
    reference : astropy.table.Table
        The reference catalog the fit used (``RA``, ``DEC``).
    catalog, method : str
        The fit, for the table's metadata.

    Returns
    -------
    astropy.table.Table
        The columns of :data:`COLUMNS`; ``meta`` holds the catalog, the method, the numbers of
        pairs and kept pairs, and ``total_rms_mas``: the mean over the groups of the standard
        deviation of the kept pairs' separations, drizzlepac's TOTAL_RMS.
    """
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from astropy.table import Table

    rows = {name: [] for name, _, _ in COLUMNS}
    for g, group in enumerate(_groups(imglist)):
        info = group[0].meta.get("fit_info", {})
        if info.get("status") != "SUCCESS" or "matched_input_idx" not in info:
            continue
        members = [m for m in group if len(m.meta["catalog"]) > 0]
        starts = np.cumsum([0] + [len(m.meta["catalog"]) for m in members])
        fitmask = np.asarray(info["fitmask"], dtype=bool)
        for k, (i, j) in enumerate(zip(np.asarray(info["matched_input_idx"]), np.asarray(info["matched_ref_idx"]))):
            m = int(np.searchsorted(starts, i, side="right") - 1)
            member, row = members[m], int(i - starts[m])
            x, y = float(member.meta["catalog"]["x"][row]), float(member.meta["catalog"]["y"][row])
            ra, dec = member.det_to_world(x, y)
            rows["exposure"].append(str(member.meta["name"]))
            rows["chip"].append(int(member.meta["chip"]))
            rows["x"].append(x)
            rows["y"].append(y)
            rows["ra"].append(float(ra))
            rows["dec"].append(float(dec))
            rows["ref_index"].append(int(j))
            rows["ref_ra"].append(float(reference["RA"][j]))
            rows["ref_dec"].append(float(reference["DEC"][j]))
            rows["fitted"].append(bool(fitmask[k]))
            rows["group"].append(g)
    rms = None
    if rows["ra"]:
        image = SkyCoord(rows["ra"], rows["dec"], unit="deg")
        ref = SkyCoord(rows["ref_ra"], rows["ref_dec"], unit="deg")
        dra, ddec = ref.spherical_offsets_to(image)
        rows["dra_mas"], rows["ddec_mas"] = list(dra.to_value(u.mas)), list(ddec.to_value(u.mas))
        sep = image.separation(ref).to_value(u.mas)
        fitted, group = np.asarray(rows["fitted"], dtype=bool), np.asarray(rows["group"])
        per_group = [np.std(sep[fitted & (group == g)]) for g in np.unique(group[fitted])]
        rms = float(np.mean(per_group)) if per_group else None
    else:
        rows["dra_mas"], rows["ddec_mas"] = [], []
    dtypes = {"exposure": str, "chip": int, "ref_index": int, "fitted": bool, "group": int}
    table = Table({name: np.asarray(rows[name], dtype=dtypes.get(name, float)) for name, _, _ in COLUMNS})
    for name, unit, description in COLUMNS:
        table[name].unit = unit
        table[name].description = description
    table.meta.update({"catalog": catalog, "method": method, "pairs": len(table),
                       "fitted_pairs": int(np.sum(table["fitted"])), "total_rms_mas": rms})
    return table

