"""The report page: the facts of :mod:`.facts` through a Jinja2 template, figures embedded.

Templates live in ``templates/``: ``base.html.j2`` (the page frame and its styles) and
``macros.html.j2`` (figures, verdicts) serve any report page; ``run.html.j2`` is a run's.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from urllib.parse import quote

import jinja2

from . import figures as fig


def environment() -> jinja2.Environment:
    """The Jinja2 environment of the report templates, with the number filters they use."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("astrodriz_sm.views.report", "templates"),
                             autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["num"] = number
    env.filters["href"] = href
    env.filters["join_list"] = lambda v: ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else (v or "-")
    return env


def href(path: str | os.PathLike) -> str:
    """A relative path as a link target: each segment URL-quoted, so no name can make it a scheme or a host.

    A directory named ``javascript:alert(1)`` would otherwise be read by a browser as the scheme
    ``javascript``; quoting every segment (``:`` included) keeps the link a path to that directory.

    Raises
    ------
    ValueError
        For an absolute path: pages link only relative to where they are written.
    """
    posix = PurePosixPath(os.fspath(path).replace(os.sep, "/"))
    if posix.is_absolute():
        raise ValueError(f"{path}: a page links only relative paths")
    return "/".join(quote(part, safe="") for part in posix.parts) or "."


def number(value, digits: int = 2) -> str:
    """A number as the page shows it: ``digits`` decimals, ``-`` for none."""
    if value is None or isinstance(value, bool):
        return "-" if value is None else str(value)
    if isinstance(value, int) and digits == 0:
        return str(value)
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def figures(f: dict) -> dict:
    """Every figure of a run's page, as data URIs (None for a figure the run has no numbers for)."""
    out = {"timeline": fig.data_uri(fig.timeline_figure(f["timeline"])), "residual_vectors": None,
           "residual_histogram": None, "focus": None, "similarity": None, "previews": []}
    matches = f["fit_matches"]
    if matches is not None:
        table = matches["table"]
        kept = table[table["fitted"]]
        out["residual_vectors"] = fig.data_uri(fig.residual_vector_figure(table))
        out["residual_histogram"] = fig.data_uri(fig.histogram_figure(
            {"RA × cos Dec": kept["dra_mas"], "Dec": kept["ddec_mas"]}, "residual (mas)",
            f"{len(kept)} kept pairs, RMS {matches['total_rms_mas']:.2f} mas"))
    checks = f["checks"]
    if checks["focus"]:
        out["focus"] = fig.data_uri(fig.focus_figure(checks["focus"]))
    if checks["overlap"] or checks["similarity"]:
        out["similarity"] = fig.data_uri(fig.similarity_figure(checks["overlap"], checks["similarity"]))
    for p in f["products"]:
        wcsname = p["wcsname"] if isinstance(p["wcsname"], str) else ", ".join(p["wcsname"] or [])
        out["previews"].append(fig.data_uri(fig.preview_figure(p["path"], p["exposures"],
                                                               f"{p['stage']}: {p['name']} ({wcsname})")))
    return out


def render_run_page(f: dict) -> str:
    """The HTML of a run's report page from its facts (:func:`.facts.run_facts`)."""
    return environment().get_template("run.html.j2").render(f=f, figures=figures(f))
