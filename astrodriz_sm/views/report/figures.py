"""The report's figures, drawn with matplotlib and embedded in the page as PNG data URIs.

Figures are made with :class:`matplotlib.figure.Figure` directly, never through ``pyplot``: no
global backend or figure registry is touched, so a Python caller's own matplotlib state is left as
it was. Each function takes plain numbers (from :mod:`.facts`) and returns a figure; any page, a
run's or a campaign's, embeds it with :func:`data_uri`.
"""

from __future__ import annotations

import base64
import io
import math
import warnings
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

# Colours of outcomes and verdicts, shared by every figure.
COLOURS = {"completed": "#4c72b0", "failed": "#c44e52", "interrupted": "#dd8452", "running": "#8c8c8c",
           "pass": "#55a868", "fail": "#c44e52", "crash": "#c44e52", "resume": "#55a868",
           "clipped": "#c44e52", "fitted": "#222222"}
# The longest side of a product preview, in pixels of the page's image.
PREVIEW_PIXELS = 900
DPI = 100


def new_figure(width: float, height: float, **kw) -> Figure:
    """A figure of ``width`` x ``height`` inches, laid out to fit its labels."""
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained", **kw)


def data_uri(fig: Figure) -> str:
    """The figure as a ``data:image/png;base64,...`` URI.

    The PNG carries no software or date metadata, so the same numbers give the same bytes.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def histogram_figure(series: dict, xlabel: str, title: str, bins: int = 30) -> Figure:
    """Step histograms of several series on one axis (``label -> values``)."""
    fig = new_figure(5.0, 3.2)
    ax = fig.add_subplot()
    values = [np.asarray(v, dtype=float) for v in series.values()]
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
    edges = np.histogram_bin_edges(finite, bins=bins) if finite.size else bins
    for label, v in zip(series, values):
        ax.hist(v[np.isfinite(v)], bins=edges, histtype="step", linewidth=1.5, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pairs")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig


def timeline_figure(tl: dict) -> Figure:
    """The steps of every process of a run as bars, one panel per process; crashes and resumes marked.

    A run resumed hours later would squeeze every step into a sliver of one time axis: each process
    gets its own panel instead, as wide as its share of the time spent (a tenth at least).
    """
    attempts, processes = tl["attempts"], tl["processes"]
    rows = list(dict.fromkeys((a.stage, a.step) for a in attempts))
    durations = [max(p["end"] - p["start"], 1e-3) for p in processes]
    total = sum(durations)
    widths = [max(d / total, 0.1) for d in durations]
    fig = new_figure(10.0, 1.2 + 0.2 * max(len(rows), 1))
    axes = fig.subplots(1, len(processes), sharey=True, squeeze=False,
                        gridspec_kw={"width_ratios": widths})[0]
    for ax, proc in zip(axes, processes):
        mine = [a for a in attempts if a.process == proc["index"]]
        for a in mine:
            y = rows.index((a.stage, a.step))
            width = max(a.end - a.start, (proc["end"] - proc["start"]) * 0.004)
            ax.barh(y, width, left=a.start, height=0.7, color=COLOURS[a.outcome],
                    alpha=0.35 if a.invalidated else 1.0, hatch="//" if a.invalidated else None)
            if a.outcome == "interrupted":
                ax.plot(a.end, y, marker="X", markersize=9, color=COLOURS["crash"])
        if proc["how_started"] == "resumed":
            ax.axvline(proc["start"], color=COLOURS["resume"], linewidth=2)
        if proc.get("how_ended") == "interrupted":
            ax.axvline(proc["end"], color=COLOURS["crash"], linewidth=2, linestyle="--")
        ax.set_xlim(proc["start"] - 0.02 * durations[proc["index"]], proc["end"] + 0.04 * durations[proc["index"]])
        label = "process 1 (started)" if proc["index"] == 0 else f"process {proc['index'] + 1} (resumed)"
        ax.set_title(label + (", stopped" if proc.get("how_ended") == "interrupted" else ""), fontsize=9)
        ax.set_xlabel("seconds since the run started", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), [f"{s}/{st}" for s, st in rows], fontsize=7)
    axes[0].invert_yaxis()
    return fig


def residual_vector_figure(table) -> Figure:
    """Residual vectors of matched pairs at their reference positions (North up, East left)."""
    fig = new_figure(5.6, 5.0)
    ax = fig.add_subplot()
    ra, dec = np.asarray(table["ref_ra"], float), np.asarray(table["ref_dec"], float)
    ra0, dec0 = float(np.mean(ra)), float(np.mean(dec))
    xi = (ra - ra0) * math.cos(math.radians(dec0)) * 3600.0
    eta = (dec - dec0) * 3600.0
    dra, ddec = np.asarray(table["dra_mas"], float), np.asarray(table["ddec_mas"], float)
    fitted = np.asarray(table["fitted"], bool)
    size = max(float(np.ptp(xi)) if xi.size else 1.0, float(np.ptp(eta)) if eta.size else 1.0, 1e-3)
    typical = float(np.median(np.hypot(dra, ddec))) if dra.size else 1.0
    # A vector of the typical length spans about a thirtieth of the field.
    scale = max(typical, 1e-3) / (size / 30.0)
    quivers = {}
    for mask, what in ((fitted, "fitted"), (~fitted, "clipped")):
        if mask.any():
            quivers[what] = ax.quiver(xi[mask], eta[mask], dra[mask], ddec[mask], color=COLOURS[what], angles="xy",
                                      scale_units="xy", scale=scale, width=0.003,
                                      label=f"{what} ({int(mask.sum())})")
    if quivers:
        key = float(max(1, round(2 * typical)))
        ax.quiverkey(next(iter(quivers.values())), 0.78, 0.05, key, f"{key:g} mas", labelpos="E",
                     coordinates="axes", fontproperties={"size": 8})
    pad = 0.08 * size
    if xi.size:
        ax.set_xlim(xi.min() - pad, xi.max() + pad)
        ax.set_ylim(eta.min() - pad, eta.max() + pad)
    ax.set_aspect("equal")
    ax.invert_xaxis()
    ax.set_xlabel("east offset (arcsec)")
    ax.set_ylabel("north offset (arcsec)")
    ax.legend(fontsize=8, loc="lower left")
    return fig


def focus_figure(focus: list[dict]) -> Figure:
    """Each stage's focus check: single-drizzle values, their mean and 3-sigma band, the floor, the product."""
    fig = new_figure(max(3.2 * len(focus), 4.0), 3.4)
    axes = fig.subplots(1, len(focus), squeeze=False)[0]
    for ax, f in zip(axes, focus):
        n = len(f["single_focus"])
        x = np.arange(n)
        ax.axhspan(*f["band"], color="#4c72b0", alpha=0.15, label="mean ± 3σ")
        ax.axhline(f["mean"], color="#4c72b0", linewidth=1, label="mean of singles")
        ax.axhline(f["floor"], color="#8c8c8c", linestyle="--", linewidth=1, label="0.8 × mean")
        ax.plot(x, f["single_focus"], "o", color="#222222", label="single drizzle")
        ax.plot([n], [f["product_focus"]], marker="*", markersize=14, linestyle="none",
                color=COLOURS.get(f["verdict"], "#8c8c8c"), label="product")
        ax.set_xticks(list(x) + [n], [s.split("_")[0] for s in f["singles"]] + ["product"], rotation=45,
                      fontsize=7)
        ax.set_title(f"{f['stage']}: {f['verdict']}", fontsize=10)
        ax.set_ylabel("focus index")
        ax.set_xlim(-0.5, n + 0.5)
    axes[0].legend(fontsize=7, loc="lower left")
    return fig


def similarity_figure(overlap: list[dict], similarity: list[dict]) -> Figure:
    """Overlap distances per single-drizzle image and similarity indices, against their limit of 1 (log scale)."""
    fig = new_figure(max(3.0 * (len(overlap) + 1), 5.0), 3.4)
    axes = fig.subplots(1, len(overlap) + (1 if similarity else 0), squeeze=False)[0]
    floor = 1e-5

    def bars(ax, labels, values, verdict, limit, title):
        values = [max(v, floor) if v is not None else floor for v in values]
        ax.bar(range(len(values)), values, color=COLOURS.get(verdict, "#8c8c8c"))
        ax.axhline(limit, color="#c44e52", linestyle="--", linewidth=1, label=f"limit {limit:g}")
        ax.set_yscale("log")
        ax.set_ylim(floor, max(10.0, max(values) * 3))
        ax.set_xticks(range(len(values)), labels, rotation=45, fontsize=7)
        ax.set_title(title, fontsize=10)

    for ax, o in zip(axes, overlap):
        bars(ax, [n.split("_")[0] for n in o["singles"]], list(o["singles"].values()), o["verdict"], o["limit"],
             f"{o['stage']} overlap: {o['verdict']}")
        ax.set_ylabel("distance")
    if similarity:
        ax = axes[-1]
        bars(ax, [s["stage"] for s in similarity], [s["index"] for s in similarity],
             "pass" if all(s["verdict"] == "pass" for s in similarity) else "fail", similarity[0]["limit"],
             "similarity to default")
        ax.set_ylabel("similarity index")
    axes[0].legend(fontsize=7)
    return fig


def _block_mean(data: np.ndarray, factor: int) -> np.ndarray:
    """``data`` reduced by ``factor`` along both axes (mean of the finite pixels of each block)."""
    if factor <= 1:
        return data.astype(float)
    h, w = (data.shape[0] // factor) * factor, (data.shape[1] // factor) * factor
    blocks = data[:h, :w].astype(np.float32).reshape(h // factor, factor, w // factor, factor)
    good = np.isfinite(blocks)
    total = np.where(good, blocks, 0).sum(axis=(1, 3))
    count = good.sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def display_limits(values: np.ndarray) -> tuple[float, float]:
    """Black and white of a preview: one sky sigma below the sky, and the 99.99th percentile.

    Stars cover a thousandth of a sparse full-frame field: a percentile range would be all sky noise.
    Sky and sigma are sigma-clipped, from at most a million of the pixels.
    """
    from astropy.stats import sigma_clipped_stats

    if values.size == 0:
        return 0.0, 1.0
    sample = values[:: max(1, values.size // 1_000_000)]
    _, sky, sigma = sigma_clipped_stats(sample, maxiters=3)
    top = float(np.percentile(values, 99.99))
    low = float(sky - sigma)
    return low, max(top, low + 10 * max(float(sigma), 1e-12))


def preview_figure(product: Path, exposures: list[Path], title: str) -> Figure:
    """A product's SCI image with an asinh stretch, each exposure's chips outlined.

    Parameters
    ----------
    product : Path
        A drizzled product (``SCI`` extension 1).
    exposures : list of Path
        The exposures drizzled into it, carrying the WCS the product was drizzled with; each SCI
        extension's footprint is drawn.
    title : str
    """
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyWarning
    from astropy.visualization import AsinhStretch, ImageNormalize
    from astropy.wcs import WCS
    from matplotlib.patches import Polygon

    with fits.open(product, memmap=True) as hdul, warnings.catch_warnings():
        # A drizzled product is distortion-free; SIP keywords some headers keep do not apply to it.
        warnings.simplefilter("ignore", AstropyWarning)
        sci = hdul[("SCI", 1)]
        wcs = WCS(sci.header)
        factor = max(1, math.ceil(max(sci.data.shape) / PREVIEW_PIXELS))
        image = _block_mean(sci.data, factor)
    finite = image[np.isfinite(image)]
    black, white = display_limits(finite)
    norm = ImageNormalize(vmin=black, vmax=white, stretch=AsinhStretch(a=0.02))
    h, w = image.shape
    fig = new_figure(7.0, 7.0 * h / w + 0.6)
    ax = fig.add_subplot()
    ax.imshow(np.nan_to_num(image, nan=float(np.min(finite)) if finite.size else 0.0), origin="lower",
              cmap="gray", norm=norm, interpolation="nearest")
    colours = ["#dd8452", "#55a868", "#4c72b0", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#ccb974"]
    for i, path in enumerate(exposures):
        for k, footprint in enumerate(chip_footprints(path)):
            x, y = wcs.world_to_pixel_values(footprint[:, 0], footprint[:, 1])
            # Product pixel centres to the centres of the reduced image's pixels.
            ax.add_patch(Polygon(np.column_stack([(x + 0.5) / factor - 0.5, (y + 0.5) / factor - 0.5]),
                                 closed=True, fill=False, edgecolor=colours[i % len(colours)], linewidth=1.2,
                                 label=path.name if k == 0 else None))
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(-0.5, h - 0.5)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(f"x (product pixels / {factor})" if factor > 1 else "x (product pixels)")
    ax.set_ylabel("y")
    if exposures:
        ax.legend(fontsize=7, loc="upper right")
    return fig


def chip_footprints(path: Path) -> list[np.ndarray]:
    """The sky footprint (4 x [RA, Dec], degrees) of each SCI extension of an exposure, distortion included."""
    from astropy.io import fits
    from stwcs.wcsutil import HSTWCS

    with fits.open(path) as hdul:
        n = sum(1 for h in hdul if h.name == "SCI")
        return [np.asarray(HSTWCS(hdul, ext=("SCI", k)).calc_footprint()) for k in range(1, n + 1)]


def counts_figure(panels: dict, colours: dict | None = None) -> Figure:
    """Bar charts of counts side by side, one panel per ``title -> {label: count}``.

    Parameters
    ----------
    panels : dict
        Panel title to its counts, in the order the bars are drawn.
    colours : dict, optional
        Colour of a bar by its label (default: one blue).
    """
    colours = colours or {}
    fig = new_figure(max(3.0 * len(panels), 4.0), 2.8)
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    for ax, (title, counts) in zip(axes, panels.items()):
        labels, values = list(counts), list(counts.values())
        bars = ax.bar(range(len(values)), values, color=[colours.get(k, "#4c72b0") for k in labels])
        ax.bar_label(bars, fontsize=8)
        ax.set_xticks(range(len(values)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, max(values, default=0) * 1.2 + 1)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="y", labelsize=7)
    return fig


def rms_by_detector_figure(fits: dict) -> Figure:
    """A posteriori fit RMS per detector: one point per run, filled when the products carry the fit.

    Parameters
    ----------
    fits : dict
        Detector (``'ACS/WFC'``) to a list of ``(rms_mas, applied)``; a fit not applied was made but
        its stage was discarded by verification.
    """
    fig = new_figure(max(1.4 * len(fits) + 2.0, 4.5), 3.2)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)  # a fixed jitter: the same numbers give the same bytes
    for i, values in enumerate(fits.values()):
        for applied in (True, False):
            rms = np.asarray([r for r, a in values if a is applied], dtype=float)
            if rms.size:
                x = i + rng.uniform(-0.15, 0.15, rms.size)
                ax.plot(x, rms, "o", markersize=6, color="#4c72b0", markerfacecolor="#4c72b0" if applied else "none",
                        linestyle="none", label="applied" if applied else "made, stage discarded")
        applied_rms = [r for r, a in values if a]
        if applied_rms:
            ax.hlines(float(np.median(applied_rms)), i - 0.3, i + 0.3, color="#222222", linewidth=1.5,
                      label="median of the applied")
    ax.set_xticks(range(len(fits)), [f"{d}\n({len(v)} fits)" for d, v in fits.items()], fontsize=8)
    ax.set_xlim(-0.6, len(fits) - 0.4)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("fit RMS (mas)")
    ax.set_title("a posteriori fit RMS per detector", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax.legend(unique.values(), unique.keys(), fontsize=8)
    return fig
